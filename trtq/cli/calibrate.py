"""``trtq calibrate``: GPU-free calibration that writes a TensorRT calibration cache."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import defaults


def parse_trt_version(text: str) -> int:
    """Accept '10.3.0', '10.3', '8.6.1' or the header integer '100300' / '8601'."""
    from ..cache import trt_version_int

    text = text.strip()
    if text.isdigit() and len(text) >= 4:
        return int(text)
    if not text or not all(part.isdigit() for part in text.split(".")):
        raise argparse.ArgumentTypeError(f"expected a TensorRT version like 10.3.0 or 100300, got {text!r}")
    return trt_version_int(text)


def parse_memory(text: str) -> int:
    """Bytes from '1.5G', '800M', '2GiB', '1073741824'."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?b)?\s*", text.lower())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a size like 1.5G, 800M or a number of bytes, got {text!r}")
    value = float(match.group(1)) * 1024 ** " kmgt".index(match.group(2) or " ")
    if value < 1:
        raise argparse.ArgumentTypeError(f"memory budget must be positive, got {text!r}")
    return int(value)


def add_parser(sub) -> None:
    from .options import (
        DefaultsFormatter,
        add_algorithm_argument,
        add_data_arguments,
        add_feedback_argument,
        add_fidelity_arguments,
        add_target_arguments,
    )

    parser = sub.add_parser(
        "calibrate",
        help="calibrate on the CPU and write a TensorRT calibration cache",
        description="Run the model over representative samples with ONNX Runtime on the CPU, build a histogram "
        "of |x| for every floating-point tensor, pick a per-tensor amax (by default the algorithm whose INT8 "
        f"model stays closest to FP32 on {defaults.HOLDOUT_SAMPLES} calibration samples held back from the "
        "statistics; --algo entropy is TensorRT's EntropyCalibration2) and write a TensorRT calibration cache "
        "plus a JSON sidecar that ties the cache to this model and data and records the choice and the INT8 "
        "verdict. No GPU or TensorRT needed.",
        formatter_class=DefaultsFormatter,
    )
    parser.add_argument("model", help="ONNX model to calibrate")
    add_data_arguments(parser, flag="--calib", required=True)
    add_feedback_argument(parser)
    parser.add_argument("-o", "--output", help="cache file to write (default: <model>.calib.cache beside the model); "
                        "the sidecar is written to <output>.json")
    add_algorithm_argument(parser)
    parser.add_argument("--percentile", type=float, default=defaults.PERCENTILE,
                        help="percentile of |x| kept by --algo percentile")
    parser.add_argument("--num-bins", type=int, default=defaults.NUM_BINS, help="histogram bins per tensor")
    parser.add_argument("--trt-version", type=parse_trt_version, default=None,
                        help="TensorRT version written in the cache header (e.g. 10.3.0 or 100300); default: the "
                        f"installed TensorRT's, else {defaults.TRT_VERSION} (TensorRT 10.3, JetPack 6)")
    parser.add_argument("--max-binned", type=int, default=defaults.HIST_MAX_BINNED, metavar="N",
                        help="bin at most N values of each tensor per batch (an evenly strided sample; the exact "
                        "max |x| still sets the range): faster on activation-heavy models, but the cache no longer "
                        "follows TensorRT's every-value histograms exactly. Default: every value")
    parser.add_argument("--exact", action="store_true",
                        help="bin every value of every tensor (as TensorRT's calibrator does), whatever --max-binned "
                        "says; this is also the default, so it only matters with --max-binned")
    parser.add_argument("--max-memory", type=parse_memory, default=defaults.CALIB_MAX_MEMORY, metavar="SIZE",
                        help="memory calibration may use (e.g. 1.5G, 800M): the activations alive at once are kept "
                        "within it by running fewer samples at a time or requesting outputs in groups (you are told "
                        "when); default suits an 8 GB Jetson")
    parser.add_argument("--observe", default="all", metavar="WHICH",
                        help="tensors to observe: 'all' (every float tensor, which TensorRT's implicit INT8 path "
                        "reads from the cache), 'qdq' (only the Q/DQ placement points: faster, but the cache then "
                        "serves explicit builds and trtq quantize only) or comma-separated tensor names")
    parser.add_argument("--threads", type=int, default=None, help="ONNX Runtime intra-op threads (default: all cores)")
    parser.add_argument("--force", action="store_true",
                        help="replace existing output files that trtq did not write (-o, its sidecar, the "
                        "--equalize model)")
    add_fidelity_arguments(parser)
    add_target_arguments(parser)
    from .options import add_equalize_argument

    add_equalize_argument(parser)
    parser.set_defaults(func=run)


def default_cache_path(model: str) -> Path:
    path = Path(model)
    return path.with_name(path.stem + ".calib.cache")


def run(args: argparse.Namespace) -> int:
    from ..cache import sidecar_path
    from ..pipeline.calibration import calibrate
    from ..progress import progress_bar
    from ..report import report_console
    from .guard import Output, data_reads, guard, metric_reads, model_reads, print_notes
    from .options import (budget_command_from_args, data_spec_from_args, feedback_from_args, fidelity_options,
                          fidelity_target_from_args)

    spec = data_spec_from_args(args, flag_dest="calib", shuffle=True)
    feedback = feedback_from_args(args)
    fidelity = fidelity_target_from_args(args)
    output = Path(args.output) if args.output else default_cache_path(args.model)
    outputs = [Output(output, "cache", default=not args.output),
               Output(sidecar_path(output), "sidecar", option="the sidecar of -o")]  # the cache's note covers it
    if args.equalize not in (None, "auto", "off"):
        from ..pipeline.calibration import default_equalized_path

        outputs.append(Output(default_equalized_path(args.model, output), "onnx", option="--equalize", fixed=True))
    notes = guard(outputs, model_reads(args.model) + data_reads(args.calib) + metric_reads(args.metric),
                  force=args.force)
    bars = None if not args.quiet else False
    with progress_bar("calibrating", enabled=bars) as progress, \
            progress_bar("scoring INT8 candidates", unit="models", enabled=bars and args.algo == "auto") as scoring:
        result = calibrate(args.model, spec, algorithm=args.algo, cache_path=output, trt_version=args.trt_version,
                           num_bins=args.num_bins, percentile=args.percentile, threads=args.threads,
                           max_binned=args.max_binned, exact=args.exact, max_memory=args.max_memory,
                           observe=args.observe if args.observe in ("all", "qdq")
                           else [name.strip() for name in args.observe.split(",") if name.strip()],
                           **fidelity_options(args), target=fidelity, equalize=args.equalize,
                           progress=progress, choice_progress=scoring, feedback=feedback, force=args.force)
    console = report_console()
    print_calibration(console, result, args.model, budget_command=budget_command_from_args(args, "calibrate"))
    print_notes(notes)
    from ..report import next_command, print_next

    stem = output.parent / Path(args.model).stem  # the Q/DQ model beside the cache it is made from
    print_next(console, next_command("trtq", "quantize", args.model, "--cache", output, "-o", f"{stem}.int8.onnx"),
               next_command("trtq", "build", args.model, "--int8", "--cache", output) + "   (GPU with TensorRT)")
    return 0


def print_calibration(console, result, model: str, fixes_for: str = "calibrate", budget_command: str = "") -> None:
    """Summary of a calibration: what was calibrated, what stays float, the auto choice, files, the verdict.

    (A batch lowered or split for --max-memory is logged by the collection itself.)
    """
    from rich.markup import escape

    from ..report import auto_choice_table, print_verdict

    algorithm = result.algorithm if result.auto is None else f"auto (chose {result.auto.chosen})"
    console.print(f"[bold green]calibrated[/] {len(result.amax)} tensors of {escape(Path(model).name)} "
                  f"on {result.num_samples} samples ({result.num_batches} batches) in {result.seconds:.1f} s "
                  f"with {escape(algorithm)}")
    if result.unquantized:
        names = list(result.unquantized)
        shown = ", ".join(escape(n) for n in names[:4]) + (f" (+{len(names) - 4} more)" if len(names) > 4 else "")
        reason = next(iter(result.unquantized.values()))
        console.print(f"  {len(names)} tensor(s) stay float, left out of the cache: {shown}; the first "
                      f"{escape(reason)}; the sidecar lists them all")
    if result.auto is not None:
        console.print(auto_choice_table(result.auto))
        for tensor, algo in result.auto.overrides.items():
            console.print(f"  override: {escape(tensor)} takes {algo}'s amax", highlight=False)
    convergence = getattr(result, "convergence", None)
    if convergence is not None:
        console.print(f"  {escape(convergence.line())}", highlight=False)
        if convergence.recommendation:
            console.print(f"  [yellow]warning:[/] {escape(convergence.recommendation)}", highlight=False)
    print_mixed_precision(console, result)
    print_equalize(console, result.equalize)
    print_equalize_trial(console, getattr(result, "equalize_trial", None))
    for path in result.files_written:
        console.print(f"  wrote {escape(str(path))}")
    from ..report import verdict_fixes

    print_verdict(console, result.verdict.to_dict() if result.verdict is not None else None,
                  fixes=verdict_fixes(fixes_for), budget_command=budget_command)


def print_mixed_precision(console, result) -> None:
    """What the search to --target-* / --max-drop did: met with N layers in float, met already, or not met (nothing
    changed); for a budget also the layers, the decisions reached and the CPU latency of float, INT8 and mixed."""
    from rich.markup import escape

    search = getattr(result, "mixed_precision", None)
    if search is None:
        return
    style = "green" if search.met else "yellow"
    tail = "" if search.met else "; no layer was left in float"
    budget = getattr(search, "budget", None)
    console.print(f"[{style}]{'budget' if budget is not None else 'mixed precision'}: {escape(search.message)}"
                  f"{tail}[/]", highlight=False)
    if budget is None:
        return
    if budget.met and budget.float_layers:
        layers = budget.float_layers
        console.print("  float: " + ", ".join(layers[:6]) + (f" (+{len(layers) - 6} more)" if len(layers) > 6 else ""),
                      highlight=False, markup=False)
    if budget.requantized:
        console.print(f"  {len(budget.requantized)} layer(s) the search had left in float are INT8 again: the "
                      "budget holds without them", highlight=False, markup=False)
    latency = budget.latency.line()
    if latency:
        console.print(f"  {latency}", highlight=False, markup=False)


def print_equalize_trial(console, trial) -> None:
    """What auto's equalization trial tried and kept (one line), when it tried something."""
    if trial is None or not (trial.tried or trial.skipped):
        return
    console.print(f"  {trial.line()}", highlight=False, markup=False)


def print_equalize(console, report) -> None:
    """What --equalize rewrote (one line), when it ran."""
    if report is None:
        return
    console.print(f"  equalized: {len(report.pairs)} convolution pair(s) ({report.iterations} sweep(s)), "
                  f"{report.absorbed_channels} channel bias(es) absorbed, {len(report.centred_tensors)} tensor(s) "
                  f"re-centred, {len(report.corrected_layers)} bias(es) "
                  f"corrected for weight rounding; steps {', '.join(report.steps) or 'none'}; statistics from "
                  f"{report.samples} calibration samples", highlight=False, markup=False)
