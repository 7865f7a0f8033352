"""Command-line front end: ``trtq <command> ...`` / ``python -m trtq <command> ...``.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the
parser's ``func`` turns parsed arguments into an API call. Modules import heavy
dependencies only inside that function, so every ``--help`` works without torch,
TensorRT or CUDA.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import List, Optional

from .. import __version__
from ..errors import EXIT_FIDELITY, FidelityError, TrtqError

#: Subcommand modules, in the order ``trtq --help`` lists them.
COMMANDS = ("quickstart", "calibrate", "quantize", "eval", "bench", "export", "build", "inspect", "info")

EXIT_USER_ERROR = 2

log = logging.getLogger("trtq")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trtq",
        description="Calibrate, quantize and benchmark INT8 models for TensorRT. "
        "Calibration, Q/DQ models, evaluation and ONNX Runtime benchmarks run on any CPU; "
        "engine builds need TensorRT and an NVIDIA GPU.",
    )
    parser.add_argument("--version", action="version", version=f"trtq {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"{__name__}.{name}")
        module.add_parser(sub)
    for command in sub.choices.values():  # -q / -v also after the command: trtq calibrate ... -q
        command.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                             help="more log output (-vv for debug)")
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars, warnings and errors only")
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    handler = RichHandler(show_time=False, show_path=False, markup=False, rich_tracebacks=False)
    from rich.console import Console

    handler.console = Console(stderr=True)
    root = logging.getLogger("trtq")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    _setup_logging(args.verbose, args.quiet)
    try:
        result = args.func(args)
    except FidelityError as exc:
        print(f"trtq {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FIDELITY
    except TrtqError as exc:
        print(f"trtq {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"trtq {args.command}: interrupted; no partial output was left behind", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # a file trtq was given could not be read (writes are OutputErrors already)
        from ..fileio import os_reason

        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"trtq {args.command}: error: {where}{os_reason(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except MemoryError:
        print(f"trtq {args.command}: error: out of memory; use smaller batch sizes or fewer samples",
              file=sys.stderr)
        return EXIT_USER_ERROR
    return int(result or 0)
