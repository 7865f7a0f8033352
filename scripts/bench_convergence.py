#!/usr/bin/env python3
"""INT8 fidelity against calibration sample count, beside the convergence trtq reports.

    python scripts/bench_convergence.py [--models digits,yolo] [--counts 64,128,256,512,1000]
                                        [--seeds 0,1,2] [--algos entropy,minmax,percentile,mse] [--holdout N]

Why: ``trtq calibrate`` reports how far each tensor's amax moved between the first half and
all of the samples (trtq.calib.convergence) and recommends more samples when the p90 of
those moves exceeds ``trtq.defaults.CONVERGENCE_MAX_DRIFT``. This script is the measurement
that threshold rests on: per model family, sample count, data draw (seed) and algorithm,

- the convergence trtq would report (p90 and max relative amax drift, half -> all), and
- the fidelity of the TensorRT-form Q/DQ model against FP32 on held-out data the
  calibration never saw (worst output / channel group SNR in dB, and its cosine),

so one can read at which drift the fidelity stops depending on the draw. Models and data
(nothing downloaded): trtq's digits CNN (calib_data/digits) and YOLOv8n (nudenet's
320n.onnx) on crops of scikit-image photographs (scripts/_bench_models.py).

Collection runs once per (family, count, seed) with the half-way snapshot; every
algorithm's amax comes from the same histograms. Deterministic for fixed seeds.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _bench_models as models  # noqa: E402


def measure(setup, counts, seeds, algos, holdout: int):
    """Rows of (count, seed, algorithm, p90 drift, max drift, worst SNR dB, worst cosine)."""
    from trtq.calib import amax_from_histograms
    from trtq.calib.collect import CollectionReport, collect_histograms
    from trtq.calib.convergence import amax_convergence
    from trtq.compare.decisions import worst_of
    from trtq.data import open_source
    from trtq.graph.model import load_onnx
    from trtq.graph.qdq import quantize_model
    from trtq.graph.signature import input_specs
    from trtq.runtime.replay import Replay

    model = load_onnx(setup.model)
    inputs = input_specs(model)
    replay = Replay.collect(setup.model, setup.holdout, samples=holdout)
    rows = []
    for count in counts:
        for seed in seeds:
            spec = dataclasses.replace(setup.calib, samples=count, seed=seed, shuffle=True)
            source = open_source(spec, inputs)
            report = CollectionReport()
            started = time.perf_counter()
            histograms = collect_histograms(model, iter(source), total_samples=source.num_samples, report=report,
                                            half_snapshot=True)
            seconds = time.perf_counter() - started
            for algo in algos:
                amax = amax_from_histograms(histograms, algo)
                conv = amax_convergence(report.half or {}, histograms, amax, algo, half_samples=report.half_samples,
                                        samples=report.samples)
                quantized, _ = quantize_model(model, amax, target="trt")
                snr, cosine, worst = worst_of(replay.score(quantized))
                rows.append({"count": report.samples, "seed": seed, "algo": algo, "p90": conv.quantile_drift,
                             "max": conv.max_drift, "snr": snr, "cosine": cosine, "worst": worst,
                             "half": report.half_samples, "seconds": seconds})
                print(f"  {setup.name} n={report.samples:5d} seed={seed} {algo:10s} p90 drift {conv.quantile_drift:6.1%} "
                      f"max {conv.max_drift:6.1%}  SNR {snr:6.2f} dB  cos {cosine:.5f}", flush=True)
    return rows


def table(name: str, rows) -> str:
    """Markdown: per count and algorithm, the drift and fidelity over the seeds (mean, min..max)."""
    lines = [f"### {name}", "",
             "| samples | algorithm | p90 amax drift (mean over draws) | max drift | worst SNR dB: mean (min..max over draws) |",
             "| ---: | --- | ---: | ---: | --- |"]
    keys = sorted({(r["count"], r["algo"]) for r in rows}, key=lambda k: (k[1], k[0]))
    for count, algo in keys:
        group = [r for r in rows if r["count"] == count and r["algo"] == algo]
        snrs = [r["snr"] for r in group]
        lines.append(f"| {count} | {algo} | {statistics.mean(r['p90'] for r in group):.1%} | "
                     f"{statistics.mean(r['max'] for r in group):.1%} | "
                     f"{statistics.mean(snrs):.2f} ({min(snrs):.2f}..{max(snrs):.2f}) |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="digits,yolo")
    parser.add_argument("--counts", default="64,128,256,512,1000")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--algos", default="entropy,minmax,percentile,mse")
    parser.add_argument("--holdout", type=int, default=128, help="held-out samples the fidelity is measured on")
    parser.add_argument("--work", default=None, help="folder for generated data (default: a temporary folder)")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work or tmp)
        out = []
        for name in args.models.split(","):
            try:
                setup = getattr(models, name)(work, max(counts), args.holdout)
            except models.Unavailable as exc:
                out.append(f"### {name}\n\nnot run: {exc}")
                continue
            out.append(table(name, measure(setup, counts, seeds, algos, args.holdout)))
    print()
    print("\n\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
