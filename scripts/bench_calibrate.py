#!/usr/bin/env python3
"""Calibration speed and memory, side by side in one run, on a real conv net and real images.

    python scripts/bench_calibrate.py [--samples 1000] [--batch-size 8]

Model: YOLOv8n (nudenet's 320n.onnx, from PyPI). Data: distinct 320x320 crops of
scikit-image's photographs. Variants, each in its own process (wall time includes
loading the data; peak RSS is the process's):

  (a) plain FP32 ONNX Runtime inference over the same samples (trtq's data loader)
  (b) trtq calibrate, entropy (2048 bins), at N and at N/4 samples; (b') the same
      with --max-binned 65536 (a strided sample of each tensor binned; for information)
  (c) ONNX Runtime quantize_static calibration, Entropy (num_bins 2048) and MinMax

Targets (issue #2): (b) <= 1.5x (a) in time; (b)'s peak RSS at N within 10% of its
peak at N/4; (b) faster than (c) Entropy.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

SIZE = 320
#: --max-binned for the informational (b') row: an evenly strided sample of each tensor binned.
SAMPLED_MAX_BINNED = 1 << 16


def _spec(data: str, samples: int, batch_size: int):
    from trtq.data.spec import DataSpec, Preprocess

    return DataSpec(path=data, samples=samples, batch_size=batch_size, preprocess=Preprocess(size=(SIZE, SIZE)))


def _source(model_path: Path, data: str, samples: int, batch_size: int):
    from trtq.data import open_source
    from trtq.graph.model import input_specs, load_onnx

    return open_source(_spec(data, samples, batch_size), input_specs(load_onnx(model_path)))


def worker(mode: str, model_path: Path, data: str, samples: int, batch_size: int, scratch: Path) -> dict:
    started = time.perf_counter()
    if mode == "fp32":
        from trtq.ort import create_session

        session = create_session(str(model_path))
        for feed in _source(model_path, data, samples, batch_size):
            session.run(None, feed)
    elif mode in ("trtq", "trtq-sampled"):
        from trtq.pipeline import calibrate

        calibrate(model_path, _spec(data, samples, batch_size), algorithm="entropy", cache_path=scratch / "y.cache",
                  max_binned=SAMPLED_MAX_BINNED if mode == "trtq-sampled" else None)
    elif mode in ("ort-entropy", "ort-minmax"):
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        common.ort_entropy_with_bins(2048)
        method = CalibrationMethod.Entropy if mode == "ort-entropy" else CalibrationMethod.MinMax
        reader = common.single_sample_reader(_source(model_path, data, samples, batch_size))
        quantize_static(str(model_path), str(scratch / f"{mode}.onnx"), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                                                "CalibTensorRangeSymmetric": True})
    else:
        raise SystemExit(f"unknown mode {mode}")
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": common.peak_rss_mib()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--mem-cap-gib", type=float, default=16.0, help="stop a variant whose RSS exceeds this")
    parser.add_argument("--data", default=None, help="folder of crops to reuse (made if missing)")
    parser.add_argument("--worker", nargs=2, metavar=("MODE", "DATA"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    model = common.yolo_model()
    if args.worker:
        mode, data = args.worker
        with tempfile.TemporaryDirectory() as scratch:
            result = worker(mode, model, data, args.samples, args.batch_size, Path(scratch))
        print(json.dumps(result))
        return 0

    data = Path(args.data or Path(tempfile.gettempdir()) / "trtq-bench-crops")
    common.photo_crops(data, args.samples, SIZE)
    quarter = max(1, args.samples // 4)
    eighth = max(1, args.samples // 8)
    plan = [
        ("(a) FP32 inference, ORT", "fp32", args.samples),
        ("(b) trtq calibrate entropy", "trtq", args.samples),
        ("(b) trtq calibrate entropy", "trtq", quarter),
        ("(b') same, --max-binned 65536", "trtq-sampled", args.samples),
        ("(c) ORT quantize_static Entropy", "ort-entropy", args.samples),
        ("(c) ORT quantize_static Entropy", "ort-entropy", eighth),
        ("(c) ORT quantize_static MinMax", "ort-minmax", args.samples),
    ]
    # (c) Entropy keeps every activation of every sample: at N it may hit the memory cap,
    # so it also runs at N/8, to compare its time with (b) at N/4 (twice the samples).
    print(f"model {model.name} (YOLOv8n), {args.samples} real 320x320 photo crops, batch {args.batch_size}, "
          f"memory cap {args.mem_cap_gib:g} GiB\n")
    rows = []
    for label, mode, samples in plan:
        extra = ["--samples", str(samples), "--batch-size", str(args.batch_size)]
        result = common.run_worker(Path(__file__), [mode, str(data), *extra], args.mem_cap_gib)
        rows.append((label, samples, result))
        note = "" if result["ok"] else result["note"]
        print(f"{label:34s} {samples:6d} samples {result['seconds']:8.1f} s {result['peak_rss_mib']:9.0f} MiB  {note}",
              flush=True)

    fp32 = rows[0][2]
    trtq_full, trtq_quarter, ort_entropy, ort_entropy_quarter = rows[1][2], rows[2][2], rows[4][2], rows[5][2]
    print()
    if fp32["ok"] and trtq_full["ok"]:
        ratio = trtq_full["seconds"] / fp32["seconds"]
        print(f"time  (b)/(a)                    = {ratio:.2f}x   target <= 1.5x   {'PASS' if ratio <= 1.5 else 'FAIL'}")
    if trtq_full["ok"] and trtq_quarter["ok"]:
        growth = trtq_full["peak_rss_mib"] / trtq_quarter["peak_rss_mib"] - 1
        print(f"RSS   (b) {args.samples} vs {quarter} samples    = {growth:+.1%}  target within 10%  "
              f"{'PASS' if abs(growth) <= 0.10 else 'FAIL'}")
    if trtq_full["ok"]:
        if ort_entropy["ok"]:
            speed = ort_entropy["seconds"] / trtq_full["seconds"]
            print(f"speed (c) Entropy / (b)          = {speed:.2f}x   target > 1   {'PASS' if speed > 1 else 'FAIL'}")
        else:
            print(f"speed (c) Entropy did not finish ({ort_entropy['note']}); (b) finished: PASS")
    if trtq_quarter["ok"] and ort_entropy_quarter["ok"]:
        speed = ort_entropy_quarter["seconds"] / trtq_quarter["seconds"]
        print(f"speed (c) Entropy at {eighth} / (b) at {quarter} = {speed:.2f}x   target > 1   "
              f"{'PASS' if speed > 1 else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
