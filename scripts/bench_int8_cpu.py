#!/usr/bin/env python3
"""INT8 on the CPU, side by side in one run: FP32 vs trtq INT8 vs ONNX Runtime's quantizer.

    python scripts/bench_int8_cpu.py [--calib-samples 100] [--eval-samples 64] [--iterations 20]

Model: YOLOv8n (nudenet's 320n.onnx, from PyPI). Data: real 320x320 crops of
scikit-image's photographs; calibration and held-out crops are drawn with different
seeds (no crop is in both sets). Every variant is calibrated on the same samples.

  FP32          the original model, ONNX Runtime CPU
  trtq INT8     trtq calibrate (entropy) + trtq quantize --for cpu (uint8 activations,
                zero point 128: TensorRT's symmetric grid, shifted; also quantizes the
                tensors between quantized layers so ONNX Runtime fuses QLinear kernels)
  trtq INT8 (TRT form)  the same scales as trtq quantize --for trt writes them for
                TensorRT (fidelity only: ONNX Runtime has no fast kernels for it)
  ORT <method>  onnxruntime.quantization.quantize_static, QDQ, per-channel, symmetric
                int8 weights and activations, for MinMax, Entropy and Percentile;
                the most faithful of the three is compared with trtq

Fidelity on the held-out crops: SNR (dB) and cosine similarity of the detection output
against FP32. Throughput at batch 1 and 32 (samples/s, ONNX Runtime, all cores).
Targets (issue #3): trtq INT8 at batch 32 >= 2x FP32; trtq at least as faithful and at
least as fast as the best ONNX Runtime variant.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

SIZE = 320


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calib-samples", type=int, default=100,
                        help="calibration samples for every variant (ONNX Runtime's Entropy/Percentile keep all "
                        "activations in memory, so this stays small enough for them)")
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--work", default=None, help="folder for data and models (default: a temp folder)")
    args = parser.parse_args()

    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

    from trtq.bench import benchmark, parse_batch_sizes
    from trtq.calib import calibrate
    from trtq.data import open_source
    from trtq.data.spec import DataSpec, Preprocess
    from trtq.evaluate import evaluate
    from trtq.graph.model import input_specs, load_onnx
    from trtq.graph.qdq import quantize

    work = Path(args.work or tempfile.mkdtemp(prefix="trtq-int8-"))
    model = common.yolo_model()
    calib_dir = common.photo_crops(work / "calib", args.calib_samples, SIZE, seed=0)
    heldout_dir = common.photo_crops(work / "heldout", args.eval_samples, SIZE, seed=12345)
    pre = Preprocess(size=(SIZE, SIZE))
    calib_spec = DataSpec(path=str(calib_dir), samples=args.calib_samples, batch_size=8, preprocess=pre)
    eval_spec = DataSpec(path=str(heldout_dir), samples=args.eval_samples, batch_size=8, shuffle=False, preprocess=pre)
    batch_sizes = parse_batch_sizes(args.batch_sizes)
    print(f"model {model.name} (YOLOv8n); {args.calib_samples} calibration crops, {args.eval_samples} held-out crops; "
          f"batch sizes {list(batch_sizes)}\n", flush=True)

    variants = {"FP32": model}
    started = time.perf_counter()
    result = calibrate(model, calib_spec, algorithm="entropy", cache_path=work / "yolo.calib.cache")
    quantize(model, work / "yolo.int8-cpu.onnx", cache=work / "yolo.calib.cache", target="cpu")
    quantize(model, work / "yolo.int8.onnx", cache=work / "yolo.calib.cache", target="trt")
    variants["trtq INT8"] = work / "yolo.int8-cpu.onnx"
    # The TensorRT form (int8 activations) is what a TensorRT 11 build receives; ONNX Runtime
    # runs it slowly (no fast S8S8 kernels), so it is measured for fidelity only.
    variants["trtq INT8 (TRT form)"] = work / "yolo.int8.onnx"
    print(f"trtq: calibrated {len(result.amax)} tensors and quantized in {time.perf_counter() - started:.1f} s",
          flush=True)

    inputs = input_specs(load_onnx(model))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(open_source(calib_spec, inputs))

        def get_next(self):
            return common.next_single_sample(self)

    common.ort_entropy_with_bins(2048)
    for method in ("MinMax", "Entropy", "Percentile"):
        out = work / f"yolo.ort-{method.lower()}.onnx"
        started = time.perf_counter()
        try:
            quantize_static(str(model), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method),
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "CalibTensorRangeSymmetric": True})
        except Exception as exc:  # report, keep the other variants
            print(f"ORT {method}: failed ({type(exc).__name__}: {exc})")
            continue
        variants[f"ORT {method}"] = out
        print(f"ORT {method}: quantized in {time.perf_counter() - started:.1f} s", flush=True)

    fidelity = {}
    for name, path in variants.items():
        if name == "FP32":
            continue
        report = evaluate(model, path, eval_spec)
        output = report.outputs[0]
        fidelity[name] = (output.snr_db, output.cosine)

    ort_names = [n for n in fidelity if n.startswith("ORT")]
    best_ort = max(ort_names, key=lambda n: fidelity[n][0]) if ort_names else None
    timed = ["FP32", "trtq INT8"] + ([best_ort] if best_ort else [])
    rows = benchmark([variants[n] for n in timed], batch_sizes, iterations=args.iterations, warmup=3,
                     shapes={"images": (1, 3, SIZE, SIZE)})
    by_file = {Path(variants[n]).name: n for n in timed}
    throughput = {(by_file[r.model], r.batch_size): r.throughput for r in rows}

    print()
    header = f"{'variant':22s} {'SNR dB':>8s} {'cosine':>8s}" + "".join(f" {'b' + str(b) + ' /s':>10s}" for b in batch_sizes)
    print(header)
    print("-" * len(header))
    for name in variants:
        snr, cos = fidelity.get(name, (float("inf"), 1.0))
        cells = "".join(f" {throughput[(name, b)]:10.1f}" if throughput.get((name, b)) else f" {'-':>10s}"
                        for b in batch_sizes)
        print(f"{name:22s} {snr:8.2f} {cos:8.5f}{cells}")
    big = max(batch_sizes)
    print()
    fp32_t, trtq_t = throughput.get(("FP32", big)), throughput.get(("trtq INT8", big))
    if fp32_t and trtq_t:
        ratio = trtq_t / fp32_t
        print(f"trtq INT8 / FP32 throughput at batch {big}: {ratio:.2f}x  target >= 2x  {'PASS' if ratio >= 2 else 'FAIL'}")
    if best_ort:
        for name in ("trtq INT8", "trtq INT8 (TRT form)"):
            better = fidelity[name][0] >= fidelity[best_ort][0]
            print(f"fidelity: {name} {fidelity[name][0]:.2f} dB vs {best_ort} {fidelity[best_ort][0]:.2f} dB  "
                  f"{'PASS' if better else 'FAIL'}")
        ort_t = throughput.get((best_ort, big))
        if ort_t and trtq_t:
            print(f"speed at batch {big}: trtq {trtq_t:.1f}/s vs {best_ort} {ort_t:.1f}/s  "
                  f"{'PASS' if trtq_t >= ort_t else 'FAIL'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
