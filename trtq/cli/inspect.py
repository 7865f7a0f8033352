"""``trtq inspect MODEL|ENGINE``: what an ONNX model's inputs and outputs mean (its signature), or the TensorRT
version and GPU an engine was built for, and its layers."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "inspect",
        help="an ONNX model's signature (input roles, batch axes, decisions, state pairs), or an engine's layers",
        description="An ONNX model (.onnx): print what trtq reads from its graph, the one reading every command "
        "uses: each input's role (data, scalar, shape, config, state) and batch axis, each output's batch axis and "
        "decision (class axis, binary mask, detection channels, regression, state) and the state pairs fed back "
        "(--batch-axis, --class-output and --feedback override entries). An engine: load it and print what TensorRT's engine inspector says of each layer (name, type, "
        "precision as its tensors' formats carry it, input -> output where they differ, output formats, tactic; "
        "from engines built with detailed profiling, as trtq builds them), plus the TensorRT version and GPU from "
        "the build report beside the engine. Needs TensorRT and a GPU that can load the engine.",
    )
    parser.add_argument("engine", metavar="MODEL|ENGINE", help="ONNX model (.onnx) or engine file (.engine/.plan)")
    parser.add_argument("--json", action="store_true", help="print the inspector's JSON as it is")
    from .info import add_engine_arguments

    add_engine_arguments(parser)
    parser.set_defaults(func=run)


#: Words of the inspector's ``Format/Datatype`` text -> precision, most specific first ("BFloat16" before
#: "Float"). The text is e.g. "Row major linear FP32" or "Thirty-two wide channel vectorized row major Int8 format"
#: (NVIDIA's published engine-inspector dumps); trex and Polygraphy read a layer's precision from it the same way.
_PRECISION_WORDS = (("BFLOAT16", "BF16"), ("BF16", "BF16"), ("FP8", "FP8"), ("FP4", "FP4"), ("INT4", "INT4"),
                    ("FP16", "FP16"), ("HALF", "FP16"), ("FP32", "FP32"), ("FLOAT", "FP32"), ("UINT8", "UINT8"),
                    ("INT8", "INT8"), ("INT32", "INT32"), ("INT64", "INT64"), ("BOOL", "BOOL"))


def tensor_precision(format_datatype: str) -> str:
    """``"Four wide channel vectorized row major Int8 format"`` -> ``"INT8"``; ``""`` when unknown."""
    text = str(format_datatype).upper()
    for word, precision in _PRECISION_WORDS:
        if word in text:
            return precision
    return ""


def _tensors(layer: dict, key: str) -> list:
    return [t for t in layer.get(key) or [] if isinstance(t, dict)]


def layer_rows(information: dict) -> list:
    """(name, type, precision, output formats, tactic) per layer of the inspector's JSON (pure).

    The inspector has no precision key: a layer's precision is what its tensors carry
    (``Outputs[*]["Format/Datatype"]``, the inputs where a layer has no outputs), as trex and
    Polygraphy read it; several precisions (an INT8 conv writing FP16) are listed input -> output.
    """
    rows = []
    for layer in (information or {}).get("Layers", []):
        if isinstance(layer, str):  # built without detailed profiling: names only
            rows.append((layer, "", "", "", ""))
            continue
        outputs, inputs = _tensors(layer, "Outputs"), _tensors(layer, "Inputs")
        formats = ", ".join(str(t.get("Format/Datatype", "")) for t in outputs)
        into = [p for p in (tensor_precision(t.get("Format/Datatype", "")) for t in inputs[:1]) if p]
        out = list(dict.fromkeys(p for p in (tensor_precision(t.get("Format/Datatype", "")) for t in outputs) if p))
        precision = "/".join(out) if not into or into == out[:1] or not out else f"{into[0]} -> {'/'.join(out)}"
        rows.append((str(layer.get("Name", "")), str(layer.get("LayerType", "")), precision or "/".join(into),
                     formats, str(layer.get("TacticName", ""))))
    return rows


def signature_table(signature):
    """A rich table of a :class:`~trtq.graph.signature.ModelSignature` (one row per input and output)."""
    from rich.table import Table

    table = Table("", "name", "dtype and shape", "role / decision", "batch axis", "why")
    for row in signature.rows():
        table.add_row(*row)
    return table


def _inspect_model(args: argparse.Namespace) -> int:
    import json

    from ..graph.model import load_onnx
    from ..graph.signature import read_signature
    from ..report import report_console

    signature = read_signature(load_onnx(args.engine, load_external_data=False))
    if args.json:
        print(json.dumps(signature.to_dict(), indent=2))
        return 0
    console = report_console()
    console.print(f"model {args.engine}: what trtq reads from the graph", markup=False, highlight=False)
    console.print(signature_table(signature))
    for note in signature.notes:
        console.print(f"note: {note}", markup=False, highlight=False)
    return 0


def run(args: argparse.Namespace) -> int:
    import json

    from ..runtime.base import is_engine_path

    if not is_engine_path(args.engine):
        return _inspect_model(args)
    from ..backend.runner import EngineRunner, read_build_report
    from ..report import report_console
    from .info import apply_cuda_argument

    apply_cuda_argument(args)
    report = read_build_report(args.engine) or {}
    with EngineRunner(args.engine, plugins=args.plugins, dla_core=args.dla_core) as runner:
        information = runner.engine_information()
        version = runner.trt.__version__
    if args.json:
        print(json.dumps(information, indent=2))
        return 0
    from rich.table import Table

    built = report.get("tensorrt", {}).get("version")
    gpu = (report.get("gpu") or {}).get("name")
    console = report_console()
    console.print(f"engine {args.engine}: loaded by TensorRT {version}"
                  + (f"; built with TensorRT {built}" if built else "")
                  + (f" on {gpu}" if gpu else "") + (f", precision {report['precision']}" if report.get("precision")
                                                     else ""), markup=False, highlight=False)
    table = Table("layer", "type", "precision", "output formats", "tactic")
    for row in layer_rows(information):
        table.add_row(*row)
    console.print(table)
    return 0
