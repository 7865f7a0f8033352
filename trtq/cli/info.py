"""``trtq info``: TensorRT version, GPU, fast precisions and the INT8 path trtq takes here."""

from __future__ import annotations

import argparse


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "info",
        help="TensorRT version, GPU, fast FP16/INT8, and which INT8 path trtq takes on this machine",
        description="Report what this machine offers for engine builds: the TensorRT version, the GPU and its "
        "compute capability, whether FP16 and INT8 are fast on it, and which INT8 path trtq will take "
        "(TensorRT <= 10: implicit calibrator unless --explicit; TensorRT 11: explicit Q/DQ on a strongly typed "
        "network). The report is the result: it exits 0 and lists what is missing and why. With --require, a missing "
        "TensorRT or GPU exits 2 with one line naming it (for scripts: trtq info --require && trtq build ...).",
    )
    parser.add_argument("--require", action="store_true",
                        help="exit 2 with one error line when TensorRT or a usable GPU is missing")
    parser.add_argument("--explicit", action="store_true",
                        help="show the INT8 path as `trtq build --explicit` would take it")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    add_cuda_argument(parser)
    parser.set_defaults(func=run)


def add_cuda_argument(parser) -> None:
    """``--cuda pycuda|cuda-python``: the CUDA Python layer for device memory (default: cuda-python, else pycuda)."""
    parser.add_argument("--cuda", choices=("cuda-python", "pycuda"), default=None,
                        help="CUDA Python layer for device memory and streams (default: cuda-python if installed, "
                             "else pycuda; also TRTQ_CUDA)")


def add_engine_arguments(parser) -> None:
    """What loading an engine may need: ``--plugins`` (its plugin libraries), ``--dla-core`` (the DLA core a DLA
    engine runs on) and ``--cuda`` (the CUDA layer)."""
    parser.add_argument("--plugins", action="append", default=[], metavar="PATH",
                        help="plugin library an engine needs (loaded before the engine; the libraries its build "
                             "report lists are loaded too); repeat for several")
    parser.add_argument("--dla-core", type=_dla_core, default=None, metavar="N",
                        help="DLA core a DLA engine runs on (default: the core its trtq build report names; an "
                             "engine without one, e.g. from trtexec --useDLACore, needs this)")
    add_cuda_argument(parser)


def _dla_core(text: str) -> int:
    try:
        core = int(text)
    except ValueError:
        core = -1
    if core < 0:
        raise argparse.ArgumentTypeError(f"must be a DLA core number (0, 1, ...), got {text!r}")
    return core


def apply_cuda_argument(args) -> None:
    """Select the ``--cuda`` layer (no import happens until the first CUDA call)."""
    if getattr(args, "cuda", None):
        from ..backend.cuda import select_layer

        select_layer(args.cuda)


def format_info(info: dict) -> list:
    """The report lines (pure; tested without TensorRT)."""
    lines = [f"trtq          {info['trtq']}"]
    lines.append(f"TensorRT      {info['tensorrt'] or 'not available'}")
    gpu = info.get("gpu")
    if gpu:
        lines.append(f"GPU           {gpu['name']} (compute capability {gpu['compute_capability']}, "
                     f"{gpu['memory_bytes'] / (1 << 30):.1f} GiB)")
        cuda = info.get("cuda") or {}
        tensorrt_cuda = cuda.get("tensorrt_cuda")
        lines.append(f"CUDA          driver {cuda.get('driver', '?')}; {cuda.get('layer', 'cuda-python')} runtime "
                     f"{cuda.get('runtime', '?')} (its own, not TensorRT's); TensorRT wheels for CUDA "
                     f"{tensorrt_cuda or 'unknown (not a pip install)'}")
    else:
        lines.append("GPU           not available")
    fast = info.get("fast")
    if fast:
        yes = lambda flag: "fast" if flag else "not fast"  # noqa: E731
        lines.append(f"FP16 / INT8   {yes(fast['fp16'])} / {yes(fast['int8'])} (from the {fast['source']})")
    if info.get("int8_path"):
        lines.append(f"INT8 path     {info['int8_path']}")
    if info.get("missing"):
        lines.append(f"missing       {', '.join(info['missing'])}")
        for name, why in info["missing"].items():
            lines.append(f"  {name}: {why}")
    return lines


def run(args: argparse.Namespace) -> int:
    import json

    from ..backend.info import gather
    from ..errors import BackendUnavailable

    apply_cuda_argument(args)
    info = gather(explicit=args.explicit)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(format_info(info)))
    missing = info["missing"]
    if missing and args.require:
        names = " and ".join(missing)
        raise BackendUnavailable(f"{names} not usable here: {'; '.join(missing.values())}")
    return 0
