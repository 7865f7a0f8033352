"""``trtq inspect ENGINE``: the TensorRT version and GPU an engine was built for, and its layers."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "inspect",
        help="per-layer precision/format table of a TensorRT engine, its TensorRT version and GPU",
        description="Load an engine and print what TensorRT's engine inspector says of each layer (name, type, "
        "precision, I/O formats; TensorRT 10.x and newer, from engines trtq built: they keep detailed "
        "profiling info), plus the TensorRT version and GPU from the build report beside the engine. Needs "
        "TensorRT and a GPU that can load the engine.",
    )
    parser.add_argument("engine", help="engine file (.engine/.plan)")
    parser.add_argument("--json", action="store_true", help="print the inspector's JSON as it is")
    parser.add_argument("--plugins", action="append", default=[], metavar="PATH",
                        help="plugin library the engine needs; repeat for several")
    from .info import add_cuda_argument

    add_cuda_argument(parser)
    parser.set_defaults(func=run)


def layer_rows(information: dict) -> list:
    """(name, type, precision, formats) per layer of the inspector's JSON (pure; tested without TensorRT)."""
    rows = []
    for layer in (information or {}).get("Layers", []):
        if isinstance(layer, str):  # built without detailed profiling: names only
            rows.append((layer, "", "", ""))
            continue
        formats = ", ".join(str(t.get("Format/Datatype", "")) for t in layer.get("Outputs", []) if isinstance(t, dict))
        rows.append((str(layer.get("Name", "")), str(layer.get("LayerType", "")),
                     str(layer.get("Precision", layer.get("TacticName", ""))), formats))
    return rows


def run(args: argparse.Namespace) -> int:
    import json

    from ..backend.runner import EngineRunner, read_build_report
    from ..report import report_console
    from .info import apply_cuda_argument

    apply_cuda_argument(args)
    report = read_build_report(args.engine) or {}
    with EngineRunner(args.engine, plugins=args.plugins) as runner:
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
    table = Table("layer", "type", "precision", "output formats")
    for row in layer_rows(information):
        table.add_row(*row)
    console.print(table)
    return 0
