#!/usr/bin/env python3
"""The ONNX Runtime (cpu) form's weight code, measured on real models: what each choice computes and costs.

    python scripts/bench_cpu_form.py [--models digits,yolo,minilm] [--rounds 7]

ONNX Runtime's fused integer kernels multiply uint8 activations by int8 weights. On x86
CPUs without VNNI (AVX2, AVX-512 without VNNI) they use VPMADDUBSW, which adds two u8 x s8
products into a saturating int16: 255 * 127 * 2 = 64770 does not fit in 32767, so the result
depends on the CPU. On VNNI/AMX CPUs the products accumulate in int32 (exact).

Variants of one calibration (trtq calibrate, default algorithm) per model:

  trt form       int8 activations and weights, run with session.disable_quant_qdq=1
                 (what TensorRT computes: the cache's meaning)
  cpu int8       uint8 activations, every weight int8 in [-127, 127] (trtq's cpu form before)
  cpu int7       every weight int8 in [-64, 64] (ONNX Runtime's reduce_range idea):
                 255 * 64 * 2 = 32640 fits int16, so no CPU can saturate
  cpu uint8      every weight uint8 with zero point 128 (the int8 grid shifted): ONNX
                 Runtime's u8 x u8 kernels widen to int16 first (exact)
  cpu trtq       what trtq quantize --for cpu writes (trtq.graph.qdq.weight_code): int7 for
                 convolutions, uint8 for MatMul/Gemm

Each cpu variant runs twice: "fused" (ONNX Runtime's defaults: its integer kernels, here on
this CPU) and "exact" (session.disable_quant_qdq=1: DequantizeLinear -> float op, the numbers
a VNNI/AMX CPU's int32 accumulation gives, up to float rounding). Scores against FP32 on
held-out data: top-1 agreement where the output has classes (digits), SNR of each output
(YOLOv8n: boxes and class-score channel groups), cosine. Speed: throughput of each variant
and of FP32, timed in interleaved rounds (FP32, then each variant, repeated) so that a
machine loaded by other work slows every variant alike; the ratio to FP32 is the median
over rounds of (variant / FP32 of the same round).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_models as models  # noqa: E402

CPU_VARIANTS = ("int8", "int7", "uint8", "trtq")


def session(path: Path, exact: bool):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4
    if exact:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def held_out_batches(setup) -> List[Dict[str, np.ndarray]]:
    from trtq.data import open_source
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs

    source = open_source(setup.holdout, input_specs(load_onnx(setup.model)))
    return [dict(batch) for batch in source]


def snr_db(reference: np.ndarray, got: np.ndarray) -> float:
    reference, got = reference.astype(np.float64), got.astype(np.float64)
    noise = float(np.sum((reference - got) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(float(np.sum(reference ** 2)) / noise)


def cosine(reference: np.ndarray, got: np.ndarray) -> float:
    a, b = reference.ravel().astype(np.float64), got.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-30))


def scores(setup, outputs: Dict[str, List[np.ndarray]], reference: Dict[str, List[np.ndarray]]) -> Dict[str, float]:
    """SNR per output (and per channel group), top-1 agreement per class output, cosine of the last output
    (batches may differ in length along other axes: every score is over all values of all batches)."""

    def flat(chunks, axis=None, part=None):
        if axis is None:
            return np.concatenate([c.ravel() for c in chunks])
        return np.concatenate([np.take(c, np.arange(c.shape[axis])[part], axis=axis).ravel() for c in chunks])

    result = {}
    for name, chunks in outputs.items():
        for label, axis, part in setup.groups.get(name) or [("", None, None)]:
            key = f"{name} {label.split()[0]} SNR" if label else f"{name} SNR"
            result[key] = snr_db(flat(reference[name], axis, part), flat(chunks, axis, part))
        if name in setup.class_outputs:
            got, want = np.concatenate(chunks), np.concatenate(reference[name])
            result[f"{name} top-1 agree"] = float(np.mean(got.argmax(-1) == want.argmax(-1)))
    last = list(outputs)[-1]
    result["cosine"] = cosine(flat(reference[last]), flat(outputs[last]))
    return result


def run_all(sess, batches) -> Dict[str, List[np.ndarray]]:
    names = [o.name for o in sess.get_outputs()]
    out: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    for batch in batches:
        for name, value in zip(names, sess.run(names, batch)):
            out[name].append(value)
    return out


def timed_rounds(paths: Dict[str, Path], batch: Dict[str, np.ndarray], rounds: int, seconds: float):
    """Samples/s per variant per round, all variants in each round (FP32 first)."""
    sessions = {label: session(path, exact=False) for label, path in paths.items()}
    size = next(iter(batch.values())).shape[0]
    for sess in sessions.values():  # warm up
        for _ in range(3):
            sess.run(None, batch)
    per_round = {label: [] for label in paths}
    for _ in range(rounds):
        for label, sess in sessions.items():
            runs, started = 0, time.perf_counter()
            while True:
                sess.run(None, batch)
                runs += 1
                elapsed = time.perf_counter() - started
                if elapsed >= seconds and runs >= 3:
                    break
            per_round[label].append(runs * size / elapsed)
    return per_round


def compare(setup, work: Path, rounds: int, seconds: float, algorithm: str, reuse: bool) -> None:
    import trtq.graph.qdq as qdq
    from trtq.cache import read_cache
    from trtq.fileio import write_bytes_atomic
    from trtq.graph.model import load_onnx
    from trtq.pipeline import calibrate

    label = setup.name.split()[0]
    print(f"== {setup.name}: {Path(setup.model).name}", flush=True)
    for note in setup.notes:
        print(f"   {note}")
    cache = work / f"{label}.calib.cache"
    if reuse and cache.exists():
        print(f"   reused {cache}")
    else:
        started = time.perf_counter()
        calibrate(setup.model, setup.calib, cache_path=cache, algorithm=algorithm)
        print(f"   calibrated ({algorithm}) in {time.perf_counter() - started:.0f} s", flush=True)
    amax = read_cache(cache).amax
    float_model = load_onnx(setup.model)
    paths = {"FP32": Path(setup.model)}
    quantized, _ = qdq.quantize_model(float_model, amax, target="trt")
    paths["trt form"] = work / f"{label}.trt.onnx"
    write_bytes_atomic(paths["trt form"], quantized.SerializeToString())
    chosen = qdq.weight_code
    try:
        for variant in CPU_VARIANTS:
            qdq.weight_code = chosen if variant == "trtq" else (lambda target, readers, code=variant: code)
            quantized, _ = qdq.quantize_model(float_model, amax, target="cpu")
            paths[f"cpu {variant}"] = work / f"{label}.cpu-{variant}.onnx"
            write_bytes_atomic(paths[f"cpu {variant}"], quantized.SerializeToString())
    finally:
        qdq.weight_code = chosen

    batches = held_out_batches(setup)
    reference = run_all(session(paths["FP32"], exact=False), batches)
    rows = []
    for name, path in paths.items():
        if name == "FP32":
            continue
        modes = ("exact",) if name == "trt form" else ("fused", "exact")
        for mode in modes:
            rows.append((f"{name} {mode}", scores(setup, run_all(session(path, exact=mode == "exact"), batches),
                                                  reference)))
    keys = list(rows[0][1])
    print(f"   {len(batches)} held-out batches, {sum(next(iter(b.values())).shape[0] for b in batches)} samples")
    print(f"   {'variant':16s}" + "".join(f" {k[-24:]:>24s}" for k in keys))
    for name, values in rows:
        cells = "".join(f" {values[k]:24.2%}" if "agree" in k else f" {values[k]:24.4f}" if k == "cosine"
                        else f" {values[k]:24.2f}" for k in keys)
        print(f"   {name:16s}{cells}")

    timed = {k: v for k, v in paths.items() if k != "trt form"}
    bench_batch = max(batches, key=lambda b: next(iter(b.values())).shape[0])
    per_round = timed_rounds(timed, bench_batch, rounds, seconds)
    size = next(iter(bench_batch.values())).shape[0]
    print(f"   throughput, batch {size}, {rounds} interleaved rounds of >= {seconds:g} s per variant "
          f"(samples/s median; ratio = median over rounds of variant / FP32 of the same round)")
    for name, values in per_round.items():
        ratios = [v / f for v, f in zip(values, per_round["FP32"])]
        print(f"   {name:16s} {statistics.median(values):10.1f}/s   {statistics.median(ratios):5.2f}x FP32   "
              f"(rounds {min(ratios):.2f}-{max(ratios):.2f}x)")
    print(flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits,yolo,minilm",
                        help=f"comma-separated, of: {', '.join(models.LOADERS)} (MiniLM: padded batches of 8)")
    parser.add_argument("--algorithm", default="auto", help="trtq calibrate --algo (default: auto)")
    parser.add_argument("--samples", type=int, default=64, help="calibration samples (digits: 1000)")
    parser.add_argument("--holdout", type=int, default=64, help="held-out samples (digits: all 500)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed seconds per variant per round")
    parser.add_argument("--reuse-cache", action="store_true", help="reuse a calibration cache found in --work")
    parser.add_argument("--work", default=None, help="folder for data and models (default: a temp folder)")
    args = parser.parse_args()

    import os
    import platform

    work = Path(args.work or tempfile.mkdtemp(prefix="trtq-cpu-form-"))
    work.mkdir(parents=True, exist_ok=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}; "
          f"ONNX Runtime {__import__('onnxruntime').__version__}; fused u8 x s8 saturates here: "
          f"{'yes' if _saturating_cpu() else 'no'}\n")
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    for name in wanted:
        if name not in models.LOADERS:
            raise SystemExit(f"unknown model {name!r}; choose from {', '.join(models.LOADERS)}")
        samples = 1000 if name == "digits" else args.samples
        holdout = None if name == "digits" else args.holdout
        try:
            setups = models.LOADERS[name](work, samples, holdout)
        except models.Unavailable as exc:
            print(f"== {name}: skipped ({exc})\n")
            continue
        setups = setups[:1] if isinstance(setups, list) else [setups]  # MiniLM: the padded batches
        for setup in setups:
            if name == "reader":  # per time step class scores: agreement of the argmax per step
                from trtq.graph.model import load_onnx

                setup.class_outputs = (load_onnx(setup.model).graph.output[0].name,)
            compare(setup, work, args.rounds, args.seconds, args.algorithm, args.reuse_cache)
    return 0


def _saturating_cpu() -> bool:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return False
    return not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags)


if __name__ == "__main__":
    raise SystemExit(main())
