"""Command-line front end: ``trtq <command> ...`` / ``python -m trtq <command> ...``.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``; the
parser's ``func`` turns parsed arguments into an API call. Modules import heavy
dependencies only inside that function, so every ``--help`` works without torch,
TensorRT or CUDA.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import sys
from typing import List, Optional

from .. import __version__
from ..errors import EXIT_FIDELITY, FidelityError, TrtqError

#: Subcommand modules, in the order ``trtq --help`` lists them.
COMMANDS = ("quickstart", "calibrate", "quantize", "eval", "bench", "export", "build", "deploy", "inspect",
            "info")

EXIT_USER_ERROR = 2

log = logging.getLogger("trtq")


class Parser(argparse.ArgumentParser):
    """argparse with trtq's error form: one line (``trtq CMD: error: ...``), exit 2, no usage block."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        raise UsageError(f"{self.prog}: error: {message} (see {self.prog} --help)")


class UsageError(Exception):
    """A command line argparse refused; :func:`main` prints it as one line and returns 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
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
    from .options import COMMAND_PARSER, validate_option_values

    validate_option_values(parser)  # one range check of every numeric option, at parse time
    for command in sub.choices.values():  # -q / -v also after the command: trtq calibrate ... -q
        command.set_defaults(**{COMMAND_PARSER: command})  # the options given, for a command a hint prints
        command.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                             help="more log output (-vv for debug)")
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="no progress bars, warnings and errors only")
    return parser


def _setup_logging(verbose: int, quiet: bool) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    from rich.console import Console

    console = Console(stderr=True)
    if console.is_terminal:
        handler: logging.Handler = RichHandler(show_time=False, show_path=False, markup=False,
                                               rich_tracebacks=False, console=console)
    else:  # a log or a file: one whole line per message, no padding to the terminal's width
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)-8s %(message)s"))
    root = logging.getLogger("trtq")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


#: Signals a run ends on like Ctrl-C: temporary files removed, exit code 128 + the signal's number.
#: (systemd, Kubernetes, CI runners and ``timeout`` send SIGTERM; a closed terminal SIGHUP.)
HANDLED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def _on_signal(signum, frame) -> None:
    import signal

    from ..errors import Terminated

    for name in HANDLED_SIGNALS:  # the cleanup that follows runs once, uninterrupted
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), signal.SIG_IGN)
    raise Terminated(signum)


@contextlib.contextmanager
def _signals_handled():
    """SIGINT, SIGTERM and SIGHUP raise :class:`~trtq.errors.Terminated` while a command runs (main thread only)."""
    import signal
    import threading

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in HANDLED_SIGNALS:
            if hasattr(signal, name):
                number = getattr(signal, name)
                previous[number] = signal.signal(number, _on_signal)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def signal_name(signum: int) -> str:
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USER_ERROR
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USER_ERROR
    _setup_logging(args.verbose, args.quiet)
    try:
        with _signals_handled(), _quiet_stdout(args.quiet):
            result = args.func(args)
            _flush_stdout()
    except FidelityError as exc:
        print(f"trtq {args.command}: failed: {exc}", file=sys.stderr)
        return EXIT_FIDELITY
    except TrtqError as exc:
        print(f"trtq {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt as exc:
        import signal

        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"trtq {args.command}: interrupted ({signal_name(signum)}); no partial output was left behind",
              file=sys.stderr)
        return 128 + int(signum)
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


class _QuietStdout:
    """Standard output under ``-q``: reports and tables are dropped; a ``warning:`` line (the INT8 verdict's)
    goes to stderr, beside the log's warnings."""

    encoding = "utf-8"

    def __init__(self):
        self._line = ""

    def write(self, text: str) -> int:
        self._line += text
        *lines, self._line = self._line.split("\n")
        for line in lines:
            if line.lstrip().lower().startswith("warning:"):
                print(line.strip(), file=sys.stderr)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


class _GuardedStdout:
    """Standard output that meets a write failure (``> /dev/full``, a closed pipe) as one :class:`OutputError`
    line, not a traceback now or an "Exception ignored" at interpreter exit."""

    def __init__(self, raw):
        self._raw = raw

    def __getattr__(self, name):
        return getattr(self._raw, name)

    def _failed(self, exc: OSError):
        _silence_stdout()
        from ..errors import OutputError
        from ..fileio import os_reason

        return OutputError(f"standard output could not be written ({os_reason(exc)}); the report was lost (files "
                           "the command wrote before are complete)")

    def write(self, text: str) -> int:
        try:
            return self._raw.write(text)
        except OSError as exc:
            raise self._failed(exc) from None

    def flush(self) -> None:
        try:
            self._raw.flush()
        except OSError as exc:
            raise self._failed(exc) from None


def _silence_stdout() -> None:
    """Point file descriptor 1 at /dev/null: nothing more goes to a broken standard output, also not at exit."""
    import os

    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
        os.close(devnull)


@contextlib.contextmanager
def _quiet_stdout(quiet: bool):
    """``-q``: nothing on standard output (tables, summaries); warnings and errors still reach stderr.
    Otherwise standard output is guarded (:class:`_GuardedStdout`)."""
    saved = sys.stdout
    sys.stdout = _QuietStdout() if quiet else _GuardedStdout(saved)
    try:
        yield
    finally:
        sys.stdout = saved


def _flush_stdout() -> None:
    """Meet a standard output that cannot be written while the command's errors are still reported."""
    sys.stdout.flush()
