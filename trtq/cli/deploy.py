"""``trtq deploy``: Triton and DeepStream configs that match a calibration, and a check of existing ones."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import defaults


def triton_model_name(text: str) -> str:
    """``--name``: one folder of the model repository (argparse type; :func:`trtq.deploy.triton.model_name_problem`)."""
    from ..deploy.triton import model_name_problem

    problem = model_name_problem(text)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return text


def add_parser(sub) -> None:
    from ..deploy.deepstream import MAX_BATCH_SIZE
    from .calibrate import parse_trt_version
    from .options import DefaultsFormatter, Value

    parser = sub.add_parser(
        "deploy", help="write Triton / DeepStream configs that match a calibration, or check one",
        description="Serving pipelines preprocess inputs themselves; an engine fed other inputs than it was "
        "calibrated on (another channel order, per-channel std instead of 1/255) is silently wrong. These "
        "commands write the config that matches a calibration cache's sidecar, and check an existing one.",
        formatter_class=DefaultsFormatter)
    targets = parser.add_subparsers(dest="target", metavar="TARGET")

    triton = targets.add_parser(
        "triton", help="a Triton model repository (config.pbtxt + model.plan or Q/DQ model.onnx)",
        description="From a TensorRT engine: repo/NAME/1/model.plan and a config.pbtxt with the engine's inputs, "
        "outputs, data types and dims, max_batch_size and dynamic batching from its optimization profile (read by "
        "TensorRT where installed, else from trtq's build report beside the engine and the ONNX model). From the "
        "float ONNX model the cache calibrated: its Q/DQ INT8 form for Triton's ONNX Runtime backend with the "
        "TensorRT accelerator (precision_mode INT8; the scales travel in the model).",
        formatter_class=DefaultsFormatter)
    triton.add_argument("model", help="a TensorRT engine (.engine/.plan) or the calibrated float ONNX model")
    triton.add_argument("--cache", required=True, help="the calibration cache (with its trtq sidecar)")
    triton.add_argument("-o", "--output", required=True, metavar="REPO", help="model repository folder")
    triton.add_argument("--name", type=triton_model_name,
                        help="model name in the repository, one folder name (default: the model file's stem)")
    triton.add_argument("--model", dest="onnx_model", metavar="ONNX",
                        help="the ONNX model an engine was built from (without TensorRT here: its I/O types)")
    triton.add_argument("--max-batch", type=int, default=None, metavar="B",
                        help=f"max_batch_size (default: the engine profile's max; an ONNX model with a dynamic "
                        f"batch axis: {defaults.DEPLOY_MAX_BATCH})")
    triton.add_argument("--trt-cache-path", metavar="DIR", default=None,
                        help="ONNX model: the folder where ONNX Runtime's TensorRT accelerator keeps the engines it "
                        "builds (trt_engine_cache_path; writable on the server) (default: "
                        "/tmp/trtq-trt-engine-cache/NAME)")
    triton.add_argument("--force", action="store_true", help="replace existing files that trtq did not write")
    triton.set_defaults(func=run_triton)

    deepstream = targets.add_parser(
        "deepstream", help="a DeepStream nvinfer config (config_infer.txt)",
        description="onnx-file, int8-calib-file, network-mode, batch-size, infer-dims, model-color-format, "
        "net-scale-factor and offsets from the calibration's preprocessing (nvinfer computes "
        "net-scale-factor * (x - offsets[c]) on 0..255 pixels). Per-channel std has no nvinfer form: --fold writes a "
        "model whose first layer absorbs it (verified against the original on the calibration samples), its cache "
        "and an exact config.", formatter_class=DefaultsFormatter)
    deepstream.add_argument("model", help="the calibrated float ONNX model")
    deepstream.add_argument("--cache", required=True, help="the calibration cache (with its trtq sidecar)")
    deepstream.add_argument("-o", "--output", required=True, metavar="CONFIG", help="config file to write")
    deepstream.add_argument("--engine", help="a prebuilt engine for model-engine-file (else nvinfer builds one)")
    deepstream.add_argument("--batch-size", type=Value(int, 1, MAX_BATCH_SIZE), default=None,
                            help=f"batch-size, 1 to {MAX_BATCH_SIZE} as nvinfer accepts (default: the model's, else 1)")
    deepstream.add_argument("--fold", action="store_true",
                            help="fold per-channel std into the model so the config is exact (writes "
                            "<model>.folded.onnx and its cache beside the config)")
    deepstream.add_argument("--calib", metavar="PATH", help="calibration data to verify the folded model on "
                            "(default: the sidecar's data path)")
    deepstream.add_argument("--network-type", default="other",
                            choices=("detector", "classifier", "segmentation", "instance-segmentation", "other"),
                            help="nvinfer network-type ('other' attaches the raw output tensors as metadata)")
    deepstream.add_argument("--trt-version", type=parse_trt_version, default=None,
                            help="TensorRT version on the target (JetPack 6: 10.3.0): warns when the cache's differs")
    deepstream.add_argument("--force", action="store_true", help="replace existing files that trtq did not write")
    deepstream.set_defaults(func=run_deepstream)

    check = targets.add_parser(
        "check", help="report every mismatch between a DeepStream/Triton config and a calibration",
        description="Reads an nvinfer key file or a Triton config.pbtxt and compares it with the calibration "
        "cache's sidecar: scale, offsets, channel order, input size and layout, batch, precision, the cache file, "
        "the model, and the cache's TensorRT version against the target's. Exit code 2 when a mismatch changes the "
        "numbers the engine computes.", formatter_class=DefaultsFormatter)
    check.add_argument("config", help="config_infer.txt (DeepStream) or config.pbtxt (Triton)")
    check.add_argument("--cache", required=True, help="the calibration cache (with its trtq sidecar)")
    check.add_argument("--trt-version", type=parse_trt_version, default=None,
                       help="TensorRT version on the target (e.g. 10.3.0 on JetPack 6)")
    check.set_defaults(func=run_check)
    for target in (triton, deepstream, check):  # -q / -v after the target too, as for every command
        target.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                            help="more log output (-vv for debug)")
        target.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                            help="no progress bars, warnings and errors only")
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 2


def _print_notes(console, notes) -> None:
    from rich.markup import escape

    for note in notes:
        console.print(f"  note: {escape(str(note))}", highlight=False, soft_wrap=True)


def run_triton(args: argparse.Namespace) -> int:
    from ..report import report_console
    from rich.markup import escape

    from ..deploy.triton import write_repository

    result = write_repository(args.model, args.cache, args.output, name=args.name, onnx_model=args.onnx_model,
                              max_batch=args.max_batch, force=args.force, trt_cache_path=args.trt_cache_path)
    console = report_console()
    plan = result["plan"]
    console.print(f"[bold green]wrote[/] {escape(str(result['config']))} and {escape(str(result['model']))} "
                  f"({plan.platform}, max_batch_size {plan.max_batch_size})")
    _print_notes(console, result["notes"] + plan.comments)
    from ..report import next_command, print_next

    print_next(console, next_command("tritonserver", "--model-repository", args.output))
    return 0


def run_deepstream(args: argparse.Namespace) -> int:
    from ..report import report_console
    from rich.markup import escape

    from ..deploy.deepstream import write_config

    result = write_config(args.model, args.cache, args.output, engine=args.engine, batch_size=args.batch_size,
                          fold=args.fold, calib=args.calib, network_type=args.network_type,
                          trt_version=args.trt_version, force=args.force)
    console = report_console()
    for path in result["written"]:
        console.print(f"[bold green]wrote[/] {escape(str(path))}")
    norm = result["normalization"]
    console.print(f"  net-scale-factor {norm.net_scale_factor:.9g}, offsets "
                  f"{', '.join(f'{o:.6g}' for o in norm.offsets)} (exact)", highlight=False)
    _print_notes(console, result["notes"])
    from ..report import next_command, print_next

    print_next(console, next_command("trtq", "deploy", "check", result["config"], "--cache", args.cache))
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..report import report_console
    from rich.markup import escape

    from ..deploy.check import check_config

    report = check_config(args.config, args.cache, trt_version=args.trt_version)
    console = report_console()
    name = Path(args.config).name
    if not report.mismatches:
        console.print(f"[bold green]ok[/] {escape(name)} ({report.kind}) matches {escape(report.calibration.describe())}")
        return 0
    console.print(f"{escape(name)} ({report.kind}) against {escape(report.calibration.describe())}:")
    for m in report.mismatches:
        label = "[red]changes numbers[/]" if m.changes_numbers else "[yellow]note[/]"
        console.print(f"  {label} {escape(m.what)}: config {escape(m.config)}; calibration {escape(m.calibration)}"
                      + (f"; fix: {escape(m.fix)}" if m.fix else ""), highlight=False, soft_wrap=True)
    numbers = sum(m.changes_numbers for m in report.mismatches)
    if numbers:
        console.print(f"[red]{numbers} mismatch(es) change the numbers the engine computes[/]")
        return 2
    return 0
