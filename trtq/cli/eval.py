"""``trtq eval``: how far a quantized model strays from its float reference, layer sensitivity, mixed precision."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Optional

from .. import defaults


def add_parser(sub) -> None:
    from .options import add_data_arguments, add_feedback_argument

    parser = sub.add_parser(
        "eval",
        help="compare a quantized model with its float reference on held-out data",
        description="Run the reference (float) and candidate (e.g. INT8 Q/DQ) models with ONNX Runtime on the CPU "
        "over data the calibration did not see, and report per output: cosine similarity, SNR in dB "
        "(10*log10(sum ref^2 / sum (ref-cand)^2)), max and mean absolute error, and the same per channel group "
        "when an output mixes kinds (boxes and scores of a detection head); top-1/top-5 agreement for class-score "
        "outputs (--class-output, or the first [N, C] output with --labels); top-1 accuracy of both with --labels. "
        "--sensitivity ranks the quantized layers by the noise each adds itself (one run); --auto-exclude leaves "
        "layers in float, measuring each step, until a target is met. Both re-quantize the reference (TensorRT "
        "form) and need its scales: --cache, or they are read from the candidate's Q/DQ nodes. --min-snr / "
        "--min-cosine make a poor result exit 3.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("reference", help="float ONNX model (the reference)")
    parser.add_argument("candidate", help="model to judge, e.g. the Q/DQ model from trtq quantize, or a TensorRT "
                                          "engine (.engine/.plan: runs on the GPU; needs TensorRT)")
    add_feedback_argument(parser)
    add_data_arguments(parser, flag="--data", required=True, default_samples=None,
                       help_text="held-out samples (not the calibration set): a folder of images or .npy/.npz "
                                 "files, one such file, or a .py loader script")
    parser.add_argument("--labels", metavar="FILE",
                        help="class labels for top-1 accuracy: a .csv/.txt of 'id,label' rows (id = file path "
                             "relative to --data, with or without extension), or one label per sample in sorted "
                             "file order (.txt or .npy)")
    parser.add_argument("--class-output", action="append", default=[], metavar="NAME[:AXIS]",
                        help="an output that holds class scores along AXIS, any rank (default: 1 for [N, C] and "
                             "[N, C, H, W], the last for [N, T, C]): top-1 agreement per position and per sample; "
                             "repeatable. Softmax/LogSoftmax outputs and outputs an ArgMax/TopK reads are found "
                             "without it; a small feature axis (a detection head's [..., 4 + 1 + C]) is judged "
                             "channel by channel; other outputs get cosine and SNR")
    parser.add_argument("--metric", metavar="FILE.py:NAME",
                        help="your own task metric, NAME(reference_outputs, candidate_outputs, inputs) -> float "
                             "per sample, higher is better, 1.0 = identical: reported, judged by --min-metric, and "
                             "the target of --auto-exclude --target-agreement")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--json", metavar="PATH", help="also write the full report as JSON")
    parser.add_argument("--min-snr", type=float, metavar="DB", default=None,
                        help="exit 3 unless the worst output (and channel group) SNR is at least DB")
    parser.add_argument("--min-cosine", type=float, metavar="C", default=None,
                        help="exit 3 unless the worst output cosine is at least C")
    parser.add_argument("--min-agreement", type=float, metavar="F", default=None,
                        help="exit 3 unless the lowest top-1 agreement per position of a class output is at least F")
    parser.add_argument("--min-metric", type=float, metavar="M", default=None,
                        help="exit 3 (and warn) unless your --metric scores at least M, on its own scale; without it "
                             "the metric is reported, not judged")
    from .info import add_engine_arguments

    add_engine_arguments(parser)  # a TensorRT engine candidate: --plugins, --cuda

    group = parser.add_argument_group(
        "sensitivity and mixed precision",
        "Both re-quantize the reference model in the TensorRT form (what an engine computes) and replay the "
        "first --sensitivity-samples samples of --data.")
    group.add_argument("--sensitivity", action="store_true",
                       help="rank quantized layers by the SNR their own quantization costs (noisiest first; "
                            "two runs of the replay samples)")
    group.add_argument("--cache", metavar="CACHE",
                       help="calibration cache of the reference (its sidecar must match the model); "
                            "default: scales read back from the candidate's QuantizeLinear nodes")
    group.add_argument("--force", action="store_true", help="use a --cache whose sidecar names another model; "
                       "replace an existing --json or -o file that is not a trtq report or ONNX model")
    group.add_argument("--sensitivity-samples", type=int, default=None, metavar="N",
                       help="samples replayed per variant (default: 64)")
    group.add_argument("--auto-exclude", action="store_true",
                       help="leave the noisiest layers in float, measuring every step (a step that does not help is "
                            "undone), until the target is met; writes the mixed-precision model to -o and, with "
                            "--cache, records the layer list in the cache's sidecar for quantize and build")
    target = group.add_mutually_exclusive_group()
    target.add_argument("--target-snr", type=float, metavar="DB",
                        help=f"target: worst output and channel group SNR >= DB (default: "
                             f"{defaults.VERDICT_MIN_SNR_DB:g}; works for any output)")
    target.add_argument("--target-cosine", type=float, metavar="C",
                        help="target: worst output cosine >= C (e.g. 0.99 for embeddings)")
    target.add_argument("--target-agreement", type=float, metavar="F",
                        help="target: top-1 agreement with the reference >= F (e.g. 0.99; needs a class-score "
                             "output: --labels or --class-output)")
    group.add_argument("--max-layers", type=int, default=None, metavar="N",
                       help="give up after leaving N layers in float (default: 10)")
    group.add_argument("-o", "--output", metavar="PATH",
                       help="mixed-precision model to write (default: <candidate>.mixed.onnx beside the candidate)")
    group.add_argument("--for", dest="target_form", choices=("trt", "cpu"), default=None,
                       help="form of the written model: trt (int8 Q/DQ) or cpu (uint8 activations); "
                            "default: the candidate's form")
    group.add_argument("--no-speed", action="store_true", help="do not time each mixed-precision step at batch 1")
    parser.set_defaults(func=run)


def default_mixed_path(candidate: str) -> Path:
    path = Path(candidate)
    return path.with_name(path.stem + ".mixed.onnx")


def calibration_data_overlap(data: str, cache: Optional[str], candidate: str) -> str:
    """A sentence when the evaluation data is the calibration's own (the path the cache's sidecar records, a
    folder inside it or around it), else "". INT8 measured on its calibration samples reads better than it
    will on new data. The cache is ``--cache``, else the one trtq's default names put beside the candidate
    (``m.calib.cache`` for ``m.int8.onnx``)."""
    from ..cache import sidecar_path
    from ..jsonio import try_read_json

    candidates = [Path(cache)] if cache else [Path(candidate).with_name(Path(candidate).name.split(".")[0]
                                                                          + ".calib.cache")]
    for path in candidates:
        sidecar = try_read_json(sidecar_path(path), lambda d: isinstance(d, dict))
        recorded = ((sidecar or {}).get("data") or {}).get("path")
        if not isinstance(recorded, str) or not recorded:
            continue
        try:
            ours, theirs = Path(data).resolve(), Path(recorded).resolve()
        except OSError:
            continue
        if ours == theirs or theirs in ours.parents or ours in theirs.parents:
            return (f"{data} is the data {path.name} was calibrated on ({recorded}): INT8 reads better on the "
                    "samples it was calibrated on than on new ones; evaluate on held-out data")
    return ""


def run(args: argparse.Namespace) -> int:

    # Long because the eval command's options map one by one onto the evaluate, streamed, sensitivity and
    # exclusion flows, and the tables that print each.
    from rich.markup import escape

    from ..compare.usermetric import UserMetric
    from ..errors import TrtqError
    from ..graph.model import load_onnx
    from ..graph.qdq import qdq_form
    from ..pipeline.evaluation import evaluate, resolve_amax
    from ..precision.search import AUTO_EXCLUDE_MAX_LAYERS, auto_exclude, layer_sensitivity
    from ..progress import progress_bar
    from ..report import eval_tables, print_verdict, report_console, write_json
    from ..runtime.replay import SENSITIVITY_SAMPLES, Replay
    from .options import data_spec_from_args, feedback_from_args

    spec = data_spec_from_args(args, flag_dest="data", shuffle=False)
    bars = None if not args.quiet else False
    requantize = args.sensitivity or args.auto_exclude
    targets = (args.target_snr, args.target_cosine, args.target_agreement)
    if not args.auto_exclude and (any(t is not None for t in targets) or args.output or args.max_layers is not None):
        raise TrtqError("--target-snr, --target-cosine, --target-agreement, --max-layers and -o belong to "
                        "--auto-exclude; add it")
    if args.min_metric is not None and not args.metric:
        raise TrtqError("--min-metric judges your --metric FILE.py:NAME: add it")
    if not requantize and (args.cache or args.sensitivity_samples is not None):
        raise TrtqError("--cache and --sensitivity-samples are used by --sensitivity and --auto-exclude only")
    from ..runtime.base import is_engine_path

    if requantize and is_engine_path(args.candidate) and not args.cache:
        raise TrtqError("--sensitivity/--auto-exclude on an engine need the scales it was built with: add --cache")
    if args.sensitivity_samples is not None and args.sensitivity_samples < 1:
        raise TrtqError(f"--sensitivity-samples must be at least 1, got {args.sensitivity_samples}")
    from .guard import Output, cache_reads, data_reads, file_reads, guard, metric_reads, model_reads, print_notes

    output = None
    outputs = []
    if args.auto_exclude:
        output = Path(args.output) if args.output else default_mixed_path(args.candidate)
        outputs.append(Output(output, "onnx", default=not args.output))
    if args.json:
        outputs.append(Output(args.json, "eval-json", option="--json"))
    notes = guard(outputs, model_reads(args.reference, what="the reference model")
                  + model_reads(args.candidate, what="the candidate model") + data_reads(args.data)
                  + file_reads(args.labels, "the labels file") + cache_reads(args.cache) + metric_reads(args.metric),
                  force=args.force)

    from .info import apply_cuda_argument

    apply_cuda_argument(args)
    feedback = feedback_from_args(args)
    if feedback and (requantize or args.labels or args.metric):
        raise TrtqError("--feedback streams the two models over sequences; --labels, --metric, --sensitivity and "
                        "--auto-exclude are not supported with it")
    if not feedback and not (requantize or args.labels or args.metric):
        from ..pipeline.calibration import STREAMED, state_pairs

        found, mode = state_pairs(load_onnx(args.reference), (), spec)
        feedback = found if mode == STREAMED else feedback
    metric = UserMetric.load(args.metric) if args.metric else None
    with progress_bar("evaluating", enabled=bars) as progress:
        if feedback:
            from ..pipeline.streaming import evaluate_stream

            report = evaluate_stream(args.reference, args.candidate, spec, feedback, threads=args.threads,
                                     class_outputs=args.class_output or None, progress=progress,
                                     plugins=args.plugins, dla_core=args.dla_core)
        else:
            report = evaluate(args.reference, args.candidate, spec, labels=args.labels,
                                 class_outputs=args.class_output or None, metric=metric, threads=args.threads,
                                 progress=progress, plugins=args.plugins,
                                 dla_core=args.dla_core)
    code = 0
    model = None
    if requantize:
        amax, report.amax_source, requantized = resolve_amax(args.reference, args.candidate, cache=args.cache,
                                                             force=args.force)
        samples = min(args.sensitivity_samples or SENSITIVITY_SAMPLES, report.samples)
        replay = Replay.collect(args.reference, spec, samples=samples, threads=args.threads)
        replay.class_outputs = {o.name: o.class_axis for o in report.outputs if o.top1_agreement is not None}
        replay.metric = metric  # --target-agreement reads the decision score (trtq.compare.decisions.worst_of)
        report.sensitivity_samples = replay.samples
        with progress_bar("layer sensitivity", unit="runs", enabled=bars) as progress:
            report.sensitivity = layer_sensitivity(requantized, amax, replay=replay, threads=args.threads,
                                                      progress=progress)
        if not report.sensitivity:
            raise TrtqError(f"{Path(args.reference).name} has no layer trtq can quantize (Conv, ConvTranspose, "
                            "Gemm, MatMul with float inputs); nothing to rank")
        if args.auto_exclude:
            max_layers = AUTO_EXCLUDE_MAX_LAYERS if args.max_layers is None else args.max_layers
            with progress_bar("mixed precision", unit="steps", enabled=bars) as progress:
                result, trt_model = auto_exclude(requantized, amax, target_snr=args.target_snr,
                                                    target_cosine=args.target_cosine,
                                                    target_agreement=args.target_agreement, max_layers=max_layers,
                                                    ranking=report.sensitivity, replay=replay,
                                                    measure_speed=not args.no_speed, threads=args.threads,
                                                    progress=progress)
            report.auto_exclude = result
            if result.met:
                model = _write_mixed(args, amax, result, output, trt_model)
                if args.cache:
                    _record_float_layers(args.cache, result)
            else:
                code = 1
    console = report_console()
    console.print(f"[bold]{escape(report.data)}[/]", highlight=False)
    overlap = calibration_data_overlap(args.data, args.cache, args.candidate)
    if overlap:
        console.print(f"[bold yellow]note:[/] {escape(overlap)}", highlight=False)
    for part in eval_tables(report, json_path=args.json):
        console.print(part, highlight=False)
    verdict = report.verdict(min_metric=args.min_metric)
    if feedback:  # streamed: error that compounds through the state counts; judged on the streamed outputs
        from ..pipeline.calibration import STREAMED_FORM

        verdict = replace(verdict, form=STREAMED_FORM, on=f"{report.samples} steps of held-out sequences")
    from ..report import verdict_fixes

    print_verdict(console, verdict.to_dict(), fixes=verdict_fixes("eval"))
    if requantize and not is_engine_path(args.candidate) and qdq_form(load_onnx(args.candidate)) == "cpu":
        console.print("note: the first table measured the candidate's ONNX Runtime (cpu) form, whose folded Relus "
                      "saturate at 2x amax and whose conv weights have 7 bits; sensitivity and mixed precision measure "
                      "the TensorRT form, what an engine computes, so their step 0 can read differently",
                      highlight=False, markup=False)
    if report.auto_exclude is not None:
        auto = report.auto_exclude
        style = "green" if auto.met else "red"
        console.print(f"[bold {style}]{escape(auto.message)}[/]", highlight=False)
        if model is not None:
            console.print(f"  wrote {auto.output_path}", highlight=False, markup=False)
            from ..report import next_command, print_next

            print_next(console, next_command("trtq", "bench", args.reference, auto.output_path))
        elif not auto.met:
            console.print("  no model written", highlight=False)
    if args.json:
        write_json(args.json, report.to_dict())
        console.print(f"  wrote {args.json}", highlight=False, markup=False)
    print_notes(notes)
    if args.json and model is None and not is_engine_path(args.candidate):
        from ..report import next_command, print_next

        if qdq_form(load_onnx(args.candidate)) == "cpu":
            print_next(console, next_command("trtq", "bench", args.reference, args.candidate))
        else:  # the TensorRT form: what an engine computes
            print_next(console, next_command("trtq", "build", args.reference, "--int8", "--cache",
                                             args.cache or "<its calibration cache>") + "   (GPU with TensorRT)")
    failure = verdict.failure(args.min_snr, args.min_cosine, args.min_agreement, args.min_metric)
    if failure:
        from ..errors import FidelityError

        raise FidelityError(f"{failure} of {Path(args.candidate).name} on {report.samples} samples")
    return code


def _record_float_layers(cache: str, result) -> None:
    """Write the mixed-precision layer list into the cache's sidecar (atomically), for quantize and build."""
    from ..cache import read_cache, sidecar_bytes, sidecar_path
    from ..fileio import write_bytes_atomic

    table = read_cache(cache)
    if table.sidecar is None:
        result.message += f"; not recorded for later builds ({cache} has no trtq sidecar)"
        return
    table.sidecar["mixed_precision"] = {"float_layers": list(result.excluded), "source": "trtq eval --auto-exclude",
                                        "target": {result.target_metric: result.target},
                                        "reached": result.steps[-1].metric if result.steps else None}
    write_bytes_atomic(sidecar_path(cache), sidecar_bytes(table.sidecar))
    result.message += (f"; recorded in {sidecar_path(cache)}: every later trtq quantize/build from {cache} keeps "
                       f"these {len(result.excluded)} layer(s) in float (to undo, delete the sidecar's "
                       '"mixed_precision" entry, or recalibrate)')


def _write_mixed(args, amax, result, output: Path, trt_model):
    """The reference quantized with the chosen layers left in float, in the candidate's form, written atomically."""
    from ..fileio import write_bytes_atomic
    from ..graph.model import load_onnx
    from ..graph.qdq import qdq_form, quantize_model
    from ..runtime.base import is_engine_path

    form = args.target_form or ("trt" if is_engine_path(args.candidate) else qdq_form(load_onnx(args.candidate)))
    model = trt_model
    if form != "trt" or model is None:
        model, _ = quantize_model(load_onnx(args.reference), amax, target=form, exclude=result.excluded)
    write_bytes_atomic(output, model.SerializeToString())
    result.output_path = str(output)
    return model
