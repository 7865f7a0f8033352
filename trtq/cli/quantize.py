"""``trtq quantize``: write an explicit-quantization (Q/DQ) ONNX model for TensorRT or ONNX Runtime."""

from __future__ import annotations

import argparse
from typing import Iterable, List


def split_names(values: Iterable[str]) -> List[str]:
    """``--exclude a,b --exclude c`` -> ``["a", "b", "c"]`` (blank entries dropped)."""
    names: List[str] = []
    for value in values or ():
        names.extend(part.strip() for part in value.split(",") if part.strip())
    return names


def add_parser(sub) -> None:
    from .options import (
        add_algorithm_argument,
        add_data_arguments,
        add_feedback_argument,
        add_fidelity_arguments,
        add_target_arguments,
    )

    parser = sub.add_parser(
        "quantize",
        help="insert Q/DQ nodes: an explicit INT8 ONNX model for TensorRT or ONNX Runtime",
        description="Insert QuantizeLinear/DequantizeLinear nodes where TensorRT's placement recommendations put "
        "them (inputs of Conv/ConvTranspose/Gemm/MatMul, residual Add inputs; weights per output channel), with "
        "scales from a calibration cache (--cache) or from calibrating on data first (--calib). "
        "--for trt writes int8 activations for TensorRT 10/11 strongly typed builds; --for cpu writes the same "
        "activation grid as uint8 (zero point 128) with the extra Q/DQ ONNX Runtime needs for its fast integer "
        "kernels, and weights no CPU's kernel can overflow (MatMul/Gemm uint8, convolutions 7-bit).",
    )
    parser.add_argument("model", help="float ONNX model")
    parser.add_argument("--cache", help="TensorRT calibration cache (from trtq calibrate) holding the scales")
    add_data_arguments(parser, flag="--calib", required=False)
    add_feedback_argument(parser)
    parser.add_argument("-o", "--output", help="Q/DQ model to write (default: <model>.int8.onnx, "
                        "or <model>.int8-cpu.onnx with --for cpu, beside the model)")
    parser.add_argument("--for", dest="target", choices=("trt", "cpu"), default="trt",
                        help="trt (default): int8 Q/DQ for TensorRT; cpu: uint8 activations (same scales) for ONNX Runtime")
    parser.add_argument("--exclude", action="append", default=[], metavar="NAME_OR_OPTYPE",
                        help="node name, op type (Conv, MatMul) or name pattern (/model.22/*) to keep in float; "
                        "repeat or give a comma-separated list")
    add_algorithm_argument(parser, "with --calib:")
    parser.add_argument("--force", action="store_true",
                        help="use a cache whose sidecar says it was made for another model; replace an existing "
                             "-o file that is not an ONNX model")
    add_fidelity_arguments(parser)
    add_target_arguments(parser)
    from .options import add_equalize_argument

    add_equalize_argument(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import TrtqError
    from ..pipeline.quantization import quantize
    from ..progress import progress_bar
    from ..report import print_verdict, report_console, verdict_fixes
    from .options import feedback_from_args, fidelity_options

    calib = None
    if getattr(args, "calib", None):
        from .options import data_spec_from_args

        calib = data_spec_from_args(args, flag_dest="calib", shuffle=True)
    from .options import fidelity_target_from_args

    fidelity = fidelity_target_from_args(args)
    if calib is None and not args.cache:
        raise TrtqError("give the scales: --cache model.calib.cache (from trtq calibrate) or --calib DATA to "
                        "calibrate first")
    if calib is not None and args.cache:
        raise TrtqError("give either --cache or --calib, not both")
    from ..graph.qdq import default_output_path
    from .guard import Output, cache_reads, data_reads, guard, metric_reads, model_reads, print_notes

    output = args.output or default_output_path(args.model, args.target)
    notes = guard([Output(output, "onnx", default=not args.output)],
                  model_reads(args.model) + cache_reads(args.cache) + data_reads(getattr(args, "calib", None))
                  + metric_reads(args.metric),
                  force=args.force)
    bar_enabled = None if calib is not None and not args.quiet else False  # a bar only while calibrating
    with progress_bar("calibrating", enabled=bar_enabled) as progress:
        outcome = quantize(args.model, args.output, cache=args.cache, calib=calib,
                           algorithm=args.algo if calib is not None else None, target=args.target,
                           exclude=split_names(args.exclude), force=args.force, **fidelity_options(args),
                           fidelity=fidelity, equalize=args.equalize, progress=progress,
                           feedback=feedback_from_args(args))
    console = report_console()
    if outcome.calibration is not None and outcome.calibration.auto is not None:
        from ..report import auto_choice_table

        console.print(auto_choice_table(outcome.calibration.auto))
    if outcome.calibration is not None:
        from .calibrate import print_mixed_precision

        print_mixed_precision(console, outcome.calibration)
        from .calibrate import print_equalize

        print_equalize(console, outcome.equalize)
        from .calibrate import print_equalize_trial

        print_equalize_trial(console, getattr(outcome.calibration, "equalize_trial", None))
    if outcome.equalized_model is not None:
        console.print(f"  the cache belongs to {outcome.equalized_model.name}, this model rewritten by --equalize "
                      f"({outcome.equalize_steps}): quantized that file", highlight=False, markup=False)
    print_summary(outcome.summary)
    if outcome.float_layers:
        if outcome.calibration is None:
            print_recorded_float_layers(console, outcome.float_layers, outcome.mixed_precision, args.cache)
        else:
            console.print(f"{len(outcome.float_layers)} layer(s) left in float by the search to the target",
                          highlight=False, markup=False)
    from .options import budget_command_from_args

    print_verdict(console, outcome.verdict, outcome.verdict_source, fixes=verdict_fixes("quantize"),
                  budget_command=budget_command_from_args(args, "quantize"))
    print_notes(notes)
    from ..report import next_command, print_next

    if args.target == "cpu":
        print_next(console, next_command("trtq", "bench", args.model, output))
    else:
        print_next(console, next_command("trtq", "eval", args.model, output, "--data", "<held-out samples>"))
    return 0


def print_recorded_float_layers(console, layers, record: dict, cache) -> None:
    """Say loudly that a cache's sidecar kept layers float (``trtq eval --auto-exclude --cache`` records them), which
    layers, where the record is and how to undo it: a recorded exploration must not change a build silently."""
    from rich.markup import escape

    from ..cache import sidecar_path

    shown = ", ".join(layers[:5]) + (f" (+{len(layers) - 5} more)" if len(layers) > 5 else "")
    reached = ""
    if record.get("reached") is not None and record.get("target"):
        (metric, target), = record["target"].items()
        reached = f", which reached {metric} {record['reached']:.4g} (target {target:g}) on its samples"
    later = record.get("source") == "trtq eval --auto-exclude"  # after calibration: its verdict predates it
    text = (f"{len(layers)} layer(s) kept in float as recorded in {sidecar_path(cache)} by "
            f"{record.get('source') or 'an earlier run'}{reached}: {shown}. To quantize them, delete the sidecar's "
            '"mixed_precision" entry, or recalibrate'
            + ("; the verdict below was recorded before, with those layers quantized" if later else ""))
    console.print(f"[bold yellow]warning:[/] {escape(text)}", highlight=False, soft_wrap=True)


def print_summary(summary) -> None:
    from rich.table import Table

    from ..report import report_console

    console = report_console()
    if summary.already_quantized:
        console.print("[bold yellow]the model already carries Q/DQ nodes[/] (quantization-aware training?); "
                      "copied unchanged to:")
        console.print(str(summary.output_path), markup=False, highlight=False, soft_wrap=True)
        return
    form = "TensorRT (int8)" if summary.target == "trt" else "ONNX Runtime CPU (uint8)"
    table = Table(show_header=False)
    table.add_row("Q/DQ model for", form)
    table.add_row("layers quantized", str(len(summary.quantized)))
    table.add_row("weights per channel", str(summary.per_channel_weights))
    table.add_row("tensors with Q/DQ", str(summary.quantized_tensors))
    table.add_row("residual Add inputs", str(len(summary.residual_inputs)))
    table.add_row("layers kept float", str(len(summary.excluded)))
    console.print(table)
    console.print(f"wrote {summary.output_path}", markup=False, highlight=False, soft_wrap=True)
    if summary.excluded:
        console.print("[bold]kept in float:[/]")
        for name, reason in summary.excluded.items():
            console.print(f"  {name}: {reason}", markup=False, highlight=False, soft_wrap=True)
    if summary.missing_amax:
        console.print(f"[bold yellow]{len(summary.missing_amax)} tensor(s) had no scale in the cache[/] "
                      "(their layers stay float; recalibrate with this model to quantize them):")
        for name in summary.missing_amax:
            console.print(f"  {name}", markup=False, highlight=False)
    if summary.unmatched_exclude:
        console.print("[bold yellow]--exclude matched no node or op type:[/]")
        for name in summary.unmatched_exclude:
            console.print(f"  {name}", markup=False, highlight=False)
