"""``trtq export``: PyTorch model -> ONNX, verified against PyTorch in ONNX Runtime."""

from __future__ import annotations

import argparse

from .. import defaults

_MODEL_HELP = """\
the PyTorch model, one of:
  package.module:factory   a callable returning a torch.nn.Module (imported; e.g. trtq.assets.demo_model:pretrained)
  path/to/file.py:factory  the same, from a Python file
  model.pt / model.ts      a TorchScript file (torch.jit.save)
  model.pt / model.pth     a whole module saved with torch.save(model, ...)
Trust: a factory runs the Python code it names, and a torch.save pickle is loaded with
torch.load(weights_only=False), which runs any code the file carries. Export only models
whose files you would also run as a script. A state_dict (weights only) is not a model:
give package.module:factory code that builds the module and loads it."""


def _input_shape(text: str):
    from ..graph.export import parse_input_shape

    try:
        return parse_input_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub) -> None:
    from ..graph.export import EXPORTERS, INPUT_DTYPES

    parser = sub.add_parser(
        "export",
        help="export a PyTorch model to ONNX and verify it against PyTorch",
        description="Export a PyTorch model to ONNX with torch.onnx.export, run the ONNX file in ONNX Runtime on the "
        "same random inputs as PyTorch and report the largest output difference. A difference above the tolerance "
        "is an error and writes nothing. Needs torch: pip install 'trtq[torch]'.",
        formatter_class=argparse.RawTextHelpFormatter,
        epilog="examples:\n"
        "  trtq export trtq.assets.demo_model:pretrained --input-shape image:1x1x32x32 --dynamic-batch -o demo.onnx\n"
        "  trtq export model.ts --input-shape 1x3x224x224 -o model.onnx\n"
        "  trtq export my_nlp.py:build --input-shape input_ids:1x128:int64 \\\n"
        "      --input-shape attention_mask:1x128:int64 --dynamic-batch \\\n"
        "      --dynamic-axis input_ids:1 --dynamic-axis attention_mask:1 -o encoder.onnx",
    )
    parser.add_argument("model", help=_MODEL_HELP)
    parser.add_argument("-o", "--output", required=True, help="ONNX file to write")
    parser.add_argument(
        "--input-shape", dest="input_shapes", action="append", type=_input_shape, required=True,
        metavar="[NAME:]SHAPE[:DTYPE]",
        help="one per forward() argument, in order: 1x3x224x224, image:1x3x224x224, ids:1x128:int64.\n"
        "NAME becomes the ONNX input name (default: forward()'s parameter name); name all or none.\n"
        f"DTYPE: {', '.join(INPUT_DTYPES[:5])},\n{', '.join(INPUT_DTYPES[5:])} (default float32).\n"
        f"Random inputs: floats N(0,1); integers in [0, {defaults.EXPORT_INT_HIGH}), but all 1 if the name\n"
        "contains 'mask' and all 0 if it contains 'type' (token_type_ids); bools random")
    parser.add_argument("--output-name", dest="output_names", action="append", metavar="NAME",
                        help="ONNX output name, once per output in order (default: output, or output_0, output_1...)")
    parser.add_argument("--dynamic-batch", action="store_true",
                        help="make dim 0 of inputs and outputs symbolic ('batch') and verify a second batch size")
    parser.add_argument("--dynamic-axis", dest="dynamic_axes", action="append", default=[], metavar="NAME:AXIS",
                        help="also make axis AXIS of input NAME symbolic, e.g. input_ids:1 and attention_mask:1 for\n"
                        "the sequence length of a transformer (repeatable); outputs that follow it become\n"
                        "symbolic too, and a one-longer input is verified")
    parser.add_argument("--opset", type=int, default=defaults.EXPORT_OPSET,
                        help=f"ONNX opset (default {defaults.EXPORT_OPSET}: TensorRT 8.6+, ONNX Runtime; Q/DQ needs "
                        f">= {defaults.QDQ_MIN_OPSET})")
    parser.add_argument("--exporter", choices=EXPORTERS, default="auto",
                        help="torchscript: torch.onnx.export(dynamo=False), needs only torch; dynamo: dynamo=True,\n"
                        "needs onnxscript; auto (default): torchscript where this torch has it")
    parser.add_argument("--tolerance", type=float, default=defaults.EXPORT_RTOL, metavar="RTOL",
                        help="allowed max|ONNX - PyTorch| as a fraction of max|PyTorch output|\n"
                        f"(default {defaults.EXPORT_RTOL:g}, plus {defaults.EXPORT_ATOL:g} absolute)")
    parser.add_argument("--no-verify", action="store_true", help="skip the ONNX Runtime check")
    parser.add_argument("--seed", type=int, default=defaults.SEED, help="seed of the random example inputs")
    parser.add_argument("--force", action="store_true", help="replace an existing -o file that is not an ONNX model")
    parser.set_defaults(func=run)


def source_files(model: str) -> list:
    """The files ``model`` names (a model file, or the .py of file.py:factory): the output may not be one."""
    from pathlib import Path

    head, sep, _ = model.rpartition(":")
    candidates = [Path(model)] + ([Path(head)] if sep and head.endswith(".py") else [])
    return [p for p in candidates if p.is_file()]


def run(args: argparse.Namespace) -> int:
    from ..graph.export import export_onnx, forward_input_names, parse_dynamic_axis, random_inputs
    from ..graph.torchload import load_torch_model
    from .guard import Output, guard, print_notes

    notes = guard([Output(args.output, "onnx")], [("the PyTorch model", p) for p in source_files(args.model)],
                  force=args.force)
    requests = args.input_shapes
    named = [r.name for r in requests if r.name]
    if named and len(named) != len(requests):
        from ..errors import TrtqError

        raise TrtqError("name every --input-shape or none of them (NAME:SHAPE)")
    dynamic_axes = [parse_dynamic_axis(text) for text in args.dynamic_axes]
    model = load_torch_model(args.model)
    inputs = random_inputs(requests, seed=args.seed, names=forward_input_names(model, len(requests)))
    result = export_onnx(model, inputs, args.output, input_names=named or None, output_names=args.output_names,
                         dynamic_batch=args.dynamic_batch, dynamic_axes=dynamic_axes, opset=args.opset, verify=not args.no_verify,
                         exporter=args.exporter, rtol=args.tolerance)
    ins = ", ".join(f"{s.name} {s.shape_text()} {s.dtype}" for s in result.inputs)
    outs = ", ".join(f"{s.name} {s.shape_text()} {s.dtype}" for s in result.outputs)
    print(f"wrote {result.path} (opset {result.opset}, {result.exporter} exporter, {result.seconds:.1f} s)")
    print(f"  inputs:  {ins}")
    print(f"  outputs: {outs}")
    if result.verified:
        print(f"  ONNX Runtime matches PyTorch: max abs diff {result.max_abs_diff:.3g} "
              f"(tolerance {result.tolerance:.3g})")
    else:
        print("  not verified (--no-verify)")
    print_notes(notes)
    from pathlib import Path

    from ..report import next_command, print_next, report_console

    print_next(report_console(), next_command("trtq", "calibrate", result.path, "--calib", "<calibration samples>",
                                              "-o", Path(str(result.path)).with_suffix(".calib.cache")))
    return 0

