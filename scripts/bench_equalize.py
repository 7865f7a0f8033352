#!/usr/bin/env python3
"""INT8 fidelity with and without ``--equalize`` (cross-layer equalization + high-bias absorption + bias
correction, trtq/graph/equalize.py) on real models, measured on held-out data.

    python scripts/bench_equalize.py [--models mobilenet,digits,yolo,minilm,mtcnn] [--algos auto,minmax]
                                     [--quick]

Models (scripts/_bench_models.py; nothing is downloaded) plus ``mobilenet``: a depthwise-separable
net (MobileNet-v1 style: 3x3 stem, four depthwise 3x3 + pointwise 1x1 blocks with BatchNorm + ReLU,
global pooling, linear) trained here for a few epochs on scikit-learn's digits (8x8 upsampled to
32x32; 1100 training images, calibration drawn from them, the other 697 held out), seeded.

Per model and algorithm: ``trtq.pipeline.calibration.calibrate`` (statistics, held-back scoring, auto) with
``equalize`` off and on; the TensorRT-form Q/DQ model of the result (``quantize_model(...,
target="trt")`` of the model calibrated: the rewritten one with ``equalize``) is compared with the
*original* float model on the held-out samples (``trtq.pipeline.evaluation.evaluate``): worst output SNR, worst
cosine, and top-1 agreement where an output holds class scores. The run is deterministic.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_models as models  # noqa: E402

COUNTS = {"mobilenet": (512, 697), "digits": (500, 300), "yolo": (96, 48), "minilm": (200, 100),
          "mtcnn": (256, 128)}
QUICK_COUNTS = {"mobilenet": (256, 300), "digits": (200, 100), "yolo": (24, 16), "minilm": (48, 24),
                "mtcnn": (96, 48)}


def _mobilenet_module():
    import torch
    from torch import nn

    def dw_pw(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), nn.ReLU(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class MobileNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                dw_pw(16, 32, 2), dw_pw(32, 64, 2), dw_pw(64, 64, 1), dw_pw(64, 128, 2))
            self.classifier = nn.Linear(128, 10)

        def forward(self, image):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(image), 1), 1))

    return MobileNet()


def mobilenet(work: Path, samples: int, holdout: int) -> models.Setup:
    """A MobileNet-style net trained on sklearn digits (seeded), exported to ONNX with BatchNorm folded."""
    import torch
    from sklearn.datasets import load_digits

    from trtq.data.spec import DataSpec
    from trtq.graph.export import export_onnx

    path = work / "mobilenet_digits.onnx"
    calib, held = work / "mobilenet_calib.npy", work / "mobilenet_holdout.npy"
    digits = load_digits()
    images = torch.nn.functional.interpolate(torch.tensor(digits.images[:, None] / 16.0, dtype=torch.float32),
                                             size=(32, 32), mode="bilinear", align_corners=False)
    labels = torch.tensor(digits.target)
    train = 1100
    if not path.exists():
        torch.manual_seed(0)
        net = _mobilenet_module()
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        generator = torch.Generator().manual_seed(0)
        for _ in range(8):
            net.train()
            order = torch.randperm(train, generator=generator)
            for start in range(0, train, 64):
                index = order[start:start + 64]
                loss = torch.nn.functional.cross_entropy(net(images[index]), labels[index])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        net.eval()
        with torch.no_grad():
            accuracy = float((net(images[train:]).argmax(1) == labels[train:]).float().mean())
        print(f"mobilenet: held-out accuracy after training {accuracy:.3f}", flush=True)
        export_onnx(net, images[:2], path, input_names=["image"], output_names=["logits"], dynamic_batch=True)
        np.save(calib, images[:train].numpy())
        np.save(held, images[train:].numpy())
        np.save(work / "mobilenet_holdout_labels.npy", labels[train:].numpy())
    return models.Setup("mobilenet (digits)", path, DataSpec(path=str(calib), samples=samples, batch_size=32),
                        DataSpec(path=str(held), samples=holdout, batch_size=32, shuffle=False),
                        class_outputs=("logits",), notes=["MobileNet-v1 style, trained here on sklearn digits"])


LOADERS = {"mobilenet": mobilenet, **models.LOADERS}


def measure(setup: models.Setup, algorithm: str, equalize: str, work: Path) -> dict:
    from trtq.graph.model import load_onnx
    from trtq.graph.qdq import quantize_model
    from trtq.pipeline.calibration import calibrate
    from trtq.pipeline.evaluation import evaluate

    started = time.perf_counter()
    result = calibrate(setup.model, setup.calib, algorithm=algorithm,
                       equalize=False if equalize == "off" else equalize.replace("+", ","))
    model = result.model if result.model is not None else load_onnx(setup.model)
    quantized, _ = quantize_model(model, result.amax, target="trt")
    candidate = work / f"candidate-{abs(hash((setup.name, algorithm, equalize)))}.onnx"
    candidate.write_bytes(quantized.SerializeToString())
    report = evaluate(setup.model, candidate, setup.holdout, class_outputs=list(setup.class_outputs) or None)
    snr = min(o.worst_snr_db for o in report.outputs)
    cosine = min(o.worst_cosine for o in report.outputs)
    agreement = next((o.top1_agreement for o in report.outputs if o.top1_agreement is not None), None)
    eq = result.equalize
    return {"model": setup.name, "algo": algorithm if result.auto is None else f"auto->{result.auto.chosen}",
            "equalize": equalize, "snr": snr, "cosine": cosine, "agreement": agreement,
            "held_back_snr": result.verdict.snr_db, "seconds": time.perf_counter() - started,
            "pairs": len(eq.pairs) if eq else 0, "absorbed": eq.absorbed_channels if eq else 0,
            "corrected": len(eq.corrected_layers) if eq else 0}


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mobilenet,digits,yolo,minilm,mtcnn")
    parser.add_argument("--algos", default="auto,minmax")
    parser.add_argument("--variants", default="off,cle,cle+bias,all",
                        help="equalize steps per row: off, all, or steps joined by + (cle, absorb, bias)")
    parser.add_argument("--quick", action="store_true", help="fewer samples (a smoke run)")
    args = parser.parse_args(argv)
    counts = QUICK_COUNTS if args.quick else COUNTS
    rows: List[dict] = []
    with tempfile.TemporaryDirectory(prefix="trtq-bench-eq-") as scratch:
        work = Path(scratch)
        for name in [m.strip() for m in args.models.split(",") if m.strip()]:
            samples, holdout = counts[name]
            try:
                setups = LOADERS[name](work, samples, holdout)
            except models.Unavailable as exc:
                print(f"{name}: unavailable ({exc})", flush=True)
                continue
            for setup in setups if isinstance(setups, list) else [setups]:
                for algorithm in [a.strip() for a in args.algos.split(",") if a.strip()]:
                    for equalize in [v.strip() for v in args.variants.split(",") if v.strip()]:
                        row = measure(setup, algorithm, equalize, work)
                        rows.append(row)
                        agreement = "" if row["agreement"] is None else f"{100 * row['agreement']:.1f} %"
                        print(f"{row['model']:<28} {row['algo']:<18} equalize={equalize:<9} "
                              f"SNR {row['snr']:6.2f} dB  cos {row['cosine']:.5f}  top-1 agree {agreement:>7}  "
                              f"(held-back {row['held_back_snr']:.2f} dB; pairs {row['pairs']}, absorbed "
                              f"{row['absorbed']}, corrected {row['corrected']}; {row['seconds']:.0f} s)", flush=True)
    print("\n| model | algorithm | equalize | worst SNR dB | worst cosine | top-1 agreement |")
    print("| --- | --- | --- | --- | --- | --- |")
    for row in rows:
        agreement = "" if row["agreement"] is None else f"{100 * row['agreement']:.1f} %"
        print(f"| {row['model']} | {row['algo']} | {row['equalize']} | {row['snr']:.2f} | "
              f"{row['cosine']:.5f} | {agreement} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
