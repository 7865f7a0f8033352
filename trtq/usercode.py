"""Running the user's own Python code (loader scripts, ``--metric`` files, export factories) inside trtq.

That code runs in trtq's process, so it could end or redirect the run: ``sys.exit()`` would
end trtq with the script's exit code (0 with nothing written, 3 read as a fidelity failure),
``os.chdir()`` would make every relative path the user gave (the model, ``-o``) point
elsewhere, and replacing ``sys.stdout`` would swallow trtq's report. :func:`user_code` wraps
every call into it:

    with user_code("metric file m.py: score()", error=DataError):
        value = score(reference, candidate, inputs)

- ``SystemExit`` becomes one ``error`` line naming the code (exit 2; nothing is written);
- the working directory, ``sys.stdout``/``sys.stderr``/``sys.stdin`` and the handlers of the
  signals trtq ends on are put back as they were, with one warning per script naming it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator, Set, Tuple, Type

from .errors import TrtqError

log = logging.getLogger("trtq")

#: (who, what) already warned about: a metric called once per sample warns once.
_warned: Set[Tuple[str, str]] = set()

_STREAMS = ("stdout", "stderr", "stdin")


def _warn_once(who: str, what: str) -> None:
    key = (who.split(":")[0], what)
    if key not in _warned:
        _warned.add(key)
        log.warning("%s %s; trtq put it back", who, what)


def _signal_handlers() -> dict:
    import signal
    import threading

    from .fileio import DEFERRED_SIGNALS

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {getattr(signal, name): signal.getsignal(getattr(signal, name)) for name in DEFERRED_SIGNALS
            if hasattr(signal, name)}


def _cwd_fd() -> int:
    try:
        return os.open(".", os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return -1


def _same_folder(fd: int) -> bool:
    try:
        here, there = os.stat("."), os.fstat(fd)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


@contextlib.contextmanager
def user_code(who: str, error: Type[TrtqError] = TrtqError) -> Iterator[None]:
    """Run the user's code in the block without letting it end or redirect trtq (see the module doc).

    ``who`` names the code in messages (``"loader script prep.py: load_data()"``); ``error``
    is the :class:`~trtq.errors.TrtqError` class a ``sys.exit()`` becomes.
    """
    folder = _cwd_fd()
    streams = {name: getattr(sys, name) for name in _STREAMS}
    handlers = _signal_handlers()
    try:
        yield
    except SystemExit as exc:
        raise error(f"{who} called sys.exit({exc.code!r}); code trtq runs must return (or raise an exception), "
                    "not end trtq: nothing was written") from None
    finally:
        if folder >= 0:
            if not _same_folder(folder):
                with contextlib.suppress(OSError):
                    moved_to = os.getcwd()
                    _warn_once(who, f"changed the working directory (to {moved_to})")
                with contextlib.suppress(OSError):
                    os.fchdir(folder)
            os.close(folder)
        for name, stream in streams.items():
            if getattr(sys, name) is not stream:
                setattr(sys, name, stream)
                _warn_once(who, f"replaced sys.{name}")
        if handlers:
            import signal

            for number, handler in handlers.items():
                if signal.getsignal(number) is not handler and handler is not None:
                    signal.signal(number, handler)
                    _warn_once(who, f"changed the handler of {signal.Signals(number).name}")


__all__ = ["user_code"]
