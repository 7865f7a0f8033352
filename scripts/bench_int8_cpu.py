#!/usr/bin/env python3
"""INT8 on the CPU, side by side in one run: FP32 vs trtq INT8 vs ONNX Runtime's quantizer.

    python scripts/bench_int8_cpu.py [--models demo,yolo] [--iterations 20]

Two real pretrained conv nets, each with real data:

  demo  trtq's bundled digits CNN (ReLU, trained on scikit-learn's digits), calibrated on
        calib_data/digits, accuracy on the 500 labelled held-out digits
  yolo  YOLOv8n (nudenet's 320n.onnx, SiLU), calibrated on real 320x320 crops of
        scikit-image's photographs; fidelity on other crops (different seed)

Every variant of a model is calibrated on the same samples:

  FP32          the original model, ONNX Runtime CPU
  trtq INT8     trtq calibrate (the default, auto) + trtq quantize --for cpu (uint8 activations,
                zero point 128: TensorRT's symmetric grid, shifted; weights no CPU's kernel
                can overflow: MatMul/Gemm uint8, convolutions 7-bit; also quantizes the
                tensors between quantized layers so ONNX Runtime fuses QLinear kernels)
  trtq INT8 (TRT form)  the scales as trtq quantize --for trt writes them for TensorRT
                (fidelity only: ONNX Runtime has no fast kernels for int8 activations)
  trtq <algo>   trtq's entropy / minmax / percentile / mse from the same histograms, both forms,
                so trtq's best is compared with ONNX Runtime's best on equal terms
  ORT <method>  onnxruntime.quantization.quantize_static, QDQ, per-channel, symmetric
                int8 weights and activations, MinMax / Entropy (2048 bins) / Percentile;
                the most faithful of the three is timed and compared with trtq

Fidelity is what ONNX Runtime computes on this CPU: on x86 without VNNI its u8 x s8 kernels
saturate (see scripts/bench_cpu_form.py), which trtq's cpu form avoids by its weight codes.

Throughput at batch 1 and 32 (samples/s, ONNX Runtime, all cores). Targets (issue #3):
trtq INT8 at batch 32 >= 2x FP32; trtq at least as accurate and as fast as the best ORT.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
YOLO_SIZE = 320


def model_setups(names, work: Path, yolo_calib: int, yolo_eval: int):
    """(label, onnx path, calibration DataSpec, evaluation DataSpec, labels file, bench shapes) per model."""
    from trtq.data.spec import DataSpec, Preprocess

    setups = []
    if "demo" in names:
        from trtq.assets import DEMO_ONNX

        digits = REPO / "calib_data" / "digits"
        setups.append(("demo", DEMO_ONNX, DataSpec(path=str(digits), samples=1000, batch_size=32),
                       DataSpec(path=str(REPO / "eval_data" / "digits"), samples=None, batch_size=32, shuffle=False),
                       str(REPO / "eval_data" / "digits" / "labels.csv"), None))
    if "yolo" in names:
        pre = Preprocess(size=(YOLO_SIZE, YOLO_SIZE))
        calib_dir = common.photo_crops(work / "yolo-calib", yolo_calib, YOLO_SIZE, seed=0)
        eval_dir = common.photo_crops(work / "yolo-heldout", yolo_eval, YOLO_SIZE, seed=12345)
        setups.append(("yolo", common.yolo_model(),
                       DataSpec(path=str(calib_dir), samples=yolo_calib, batch_size=8, preprocess=pre),
                       DataSpec(path=str(eval_dir), samples=yolo_eval, batch_size=8, shuffle=False, preprocess=pre),
                       None, {"images": (1, 3, YOLO_SIZE, YOLO_SIZE)}))
    return setups


def compare(label, model, calib_spec, eval_spec, labels, shapes, batch_sizes, iterations, work: Path) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from trtq.calib import amax_from_histograms
    from trtq.data import open_source
    from trtq.fileio import write_bytes_atomic
    from trtq.graph.model import load_onnx
    from trtq.graph.qdq import quantize_model
    from trtq.graph.signature import input_specs
    from trtq.pipeline.benchmarking import benchmark
    from trtq.pipeline.calibration import calibrate
    from trtq.pipeline.evaluation import evaluate
    from trtq.pipeline.quantization import quantize

    print(f"== {label}: {Path(model).name}, {calib_spec.samples} calibration samples from {calib_spec.path}", flush=True)
    variants = {"FP32": Path(model)}
    started = time.perf_counter()
    cache = work / f"{label}.calib.cache"
    calibration = calibrate(model, calib_spec, cache_path=cache)
    variants["trtq INT8"] = work / f"{label}.int8-cpu.onnx"
    quantize(model, variants["trtq INT8"], cache=cache, target="cpu")
    variants["trtq INT8 (TRT form)"] = work / f"{label}.int8.onnx"
    quantize(model, variants["trtq INT8 (TRT form)"], cache=cache, target="trt")
    print(f"trtq: calibrated (auto chose {calibration.auto.chosen}, {len(calibration.auto.overrides)} per-tensor "
          f"override(s)) and quantized in {time.perf_counter() - started:.1f} s", flush=True)
    # ONNX Runtime gets the best of its three methods on the held-out data; for a symmetric
    # comparison trtq's other algorithms are built from the same histograms (no re-run).
    float_model = load_onnx(model)
    for algorithm in ("entropy", "minmax", "percentile", "mse"):
        amax = amax_from_histograms(calibration.histograms, algorithm)
        for target, suffix in (("cpu", ""), ("trt", " (TRT form)")):
            quantized, _ = quantize_model(float_model, amax, target=target)
            path = work / f"{label}.{algorithm}.{target}.onnx"
            write_bytes_atomic(path, quantized.SerializeToString())
            variants[f"trtq {algorithm}{suffix}"] = path

    inputs = input_specs(load_onnx(model))

    common.ort_entropy_with_bins(2048)
    for method in ("MinMax", "Entropy", "Percentile"):
        out = work / f"{label}.ort-{method.lower()}.onnx"
        started = time.perf_counter()
        try:
            reader = common.single_sample_reader(open_source(calib_spec, inputs))
            quantize_static(str(model), str(out), reader, quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=getattr(CalibrationMethod, method),
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                           "CalibTensorRangeSymmetric": True})
        except Exception as exc:  # report, keep the other variants
            print(f"ORT {method}: failed ({type(exc).__name__}: {exc})")
            continue
        variants[f"ORT {method}"] = out
        print(f"ORT {method}: quantized in {time.perf_counter() - started:.1f} s", flush=True)

    quality = {}
    for name, path in variants.items():
        if name == "FP32":
            continue
        report = evaluate(model, path, eval_spec, labels=labels)
        out0 = report.outputs[0]
        accuracy = report.accuracy
        # worst SNR over outputs and channel groups: YOLOv8n's whole-output SNR is its boxes' SNR
        quality[name] = (report.worst_snr_db(), out0.worst_cosine, accuracy.candidate_top1 if accuracy else None)
        if accuracy and "FP32" not in quality:
            quality["FP32"] = (float("inf"), 1.0, accuracy.reference_top1)
    quality.setdefault("FP32", (float("inf"), 1.0, None))

    ort_names = [n for n in quality if n.startswith("ORT")]
    metric = (lambda n: quality[n][2]) if labels else (lambda n: quality[n][0])
    best_ort = max(ort_names, key=lambda n: (metric(n), quality[n][0])) if ort_names else None
    timed = ["FP32", "trtq INT8"] + ([best_ort] if best_ort else [])
    rows = benchmark([variants[n] for n in timed], batch_sizes, iterations=iterations, warmup=3, shapes=shapes)
    by_file = {Path(variants[n]).name: n for n in timed}
    throughput = {(by_file[r.model], r.batch_size): r.throughput for r in rows}

    print()
    header = (f"{'variant':26s} {'top-1':>7s} {'SNR dB':>8s} {'cosine':>8s}"
              + "".join(f" {'b' + str(b) + ' /s':>10s}" for b in batch_sizes))
    print(header)
    print("-" * len(header))
    for name in ["FP32"] + [n for n in variants if n != "FP32"]:
        snr, cos, top1 = quality[name]
        cells = "".join(f" {throughput[(name, b)]:10.1f}" if throughput.get((name, b)) else f" {'-':>10s}"
                        for b in batch_sizes)
        top1_text = f"{top1:7.2%}" if top1 is not None else f"{'-':>7s}"
        print(f"{name:26s} {top1_text} {snr:8.2f} {cos:8.5f}{cells}")
    big = max(batch_sizes)
    print()
    fp32_t, trtq_t = throughput.get(("FP32", big)), throughput.get(("trtq INT8", big))
    if fp32_t and trtq_t:
        ratio = trtq_t / fp32_t
        print(f"[{label}] trtq INT8 / FP32 throughput at batch {big}: {ratio:.2f}x  target >= 2x  "
              f"{'PASS' if ratio >= 2 else 'FAIL'}")
    if best_ort:
        what = "top-1" if labels else "SNR"
        trtq_forms = [n for n in quality if n.startswith("trtq")]
        best_trtq_trt = max([n for n in trtq_forms if "TRT form" in n], key=lambda n: (metric(n), quality[n][0]))
        best_trtq_cpu = max([n for n in trtq_forms if "TRT form" not in n], key=lambda n: (metric(n), quality[n][0]))
        for name in dict.fromkeys(("trtq INT8", "trtq INT8 (TRT form)", best_trtq_cpu, best_trtq_trt)):
            ok = metric(name) >= metric(best_ort)
            mine, theirs = metric(name), metric(best_ort)
            fmt = (lambda v: f"{v:.2%}") if labels else (lambda v: f"{v:.2f} dB")
            print(f"[{label}] {what}: {name} {fmt(mine)} vs {best_ort} {fmt(theirs)}  {'PASS' if ok else 'FAIL'}")
        ort_t = throughput.get((best_ort, big))
        if ort_t and trtq_t:
            print(f"[{label}] speed at batch {big}: trtq {trtq_t:.1f}/s vs {best_ort} {ort_t:.1f}/s  "
                  f"{'PASS' if trtq_t >= ort_t else 'FAIL'}")
    print(flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,yolo", help="comma-separated: demo, yolo")
    parser.add_argument("--yolo-calib-samples", type=int, default=100,
                        help="YOLOv8n calibration samples for every variant (ONNX Runtime's Entropy/Percentile keep "
                        "all activations in memory, so this stays small enough for them)")
    parser.add_argument("--yolo-eval-samples", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--batch-sizes", default="1,32")
    parser.add_argument("--work", default=None, help="folder for data and models (default: a temp folder)")
    args = parser.parse_args()

    from trtq.bench import parse_batch_sizes

    work = Path(args.work or tempfile.mkdtemp(prefix="trtq-int8-"))
    batch_sizes = parse_batch_sizes(args.batch_sizes)
    names = {n.strip() for n in args.models.split(",") if n.strip()}
    for setup in model_setups(names, work, args.yolo_calib_samples, args.yolo_eval_samples):
        compare(*setup, batch_sizes, args.iterations, work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
