"""A Python loader script as model input (Polygraphy's data loader convention).

    # prep.py
    def load_data():
        for path in sorted(glob.glob("frames/*.png")):
            yield {"images": preprocess(path)}      # {input_name: array}

``--calib prep.py`` calls ``load_data()``; ``--calib prep.py:my_func`` calls
``my_func()`` instead. Each yield is a dict of arrays (numpy, or anything with a
``.numpy()`` method such as a torch tensor) keyed by input name (the name is
checked for single-input models too). Whether a yield is one sample or a batch
is decided per array by its rank, as for ``.npy`` files: rank ``R`` (the input's) is
a stack of samples along the input's batch axis (:mod:`trtq.graph.batch`), rank
``R - 1`` is one sample; an input without a batch axis (a scalar, rank 0) is given
whole and must keep one value.

A yield whose arrays all have the model's rank *fits the model* (Polygraphy's
contract: the loader hands complete feeds) and is fed as it is: one batch, never
split or joined with others (a model that fixes its batch size must get exactly that
many samples per such feed, else they are re-batched). Yields of single samples are
re-batched to the batch size; samples of different lengths on dims the model declares
dynamic (token sequences) are right-padded with zeros to the batch's longest. The script is imported once when the source is opened, from its
own folder (which is put on ``sys.path`` while it runs); ``load_data()`` is called
anew for every pass over the data. With a sample limit the script stops being read
after that many samples. Seed and shuffle are the script's own business.

Any error in the script (on import, or raised from ``load_data()``) becomes a
DataError naming the script and the line. The script runs under :func:`trtq.usercode.user_code`:
a ``sys.exit()`` in it is an error, and a working directory or standard stream it changes
is put back.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import re
import sys
import traceback
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError, TrtqError
from ..graph.model import TensorSpec
from .source import DataSource, Piece, warn_unused_preprocess
from .spec import DataSpec
from ..graph.batch import take_samples
from .validate import pick_arrays, sample_count, target_dtypes

log = logging.getLogger("trtq.data")

DEFAULT_FUNCTION = "load_data"


def split_script_path(path: str) -> Optional[Tuple[str, str]]:
    """``"prep.py"`` -> ``("prep.py", "load_data")``; ``"prep.py:fn"`` -> ``("prep.py", "fn")``; else None."""
    match = re.fullmatch(r"(.+\.py)(?::([A-Za-z_][A-Za-z0-9_]*))?", str(path), flags=re.IGNORECASE)
    if not match:
        return None
    return match.group(1), match.group(2) or DEFAULT_FUNCTION


def _where(exc: BaseException, script: Path) -> str:
    """`` (line N)`` of the deepest frame inside ``script``, or ``""``."""
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename).resolve() == script.resolve():
        return f" (line {exc.lineno})"
    lines = [frame.lineno for frame in traceback.extract_tb(exc.__traceback__)
             if frame.filename and os.path.abspath(frame.filename) == str(script.resolve())]
    return f" (line {lines[-1]})" if lines else ""


@contextlib.contextmanager
def _on_path(folder: str):
    sys.path.insert(0, folder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(folder)


@contextlib.contextmanager
def running(script: Path, who: str):
    """The user's ``script`` runs in the block: from its own folder on ``sys.path``, unable to end or redirect
    trtq (:func:`trtq.usercode.user_code`; ``who`` names it)."""
    from ..usercode import user_code

    with user_code(who, error=DataError), _on_path(str(script.resolve().parent)):
        yield


def load_function(script: Path, function: str, shown: str, what: str = "loader script") -> Callable:
    """Import ``script`` and return its ``function``; every failure is a DataError naming the script.

    The one loader of every ``file.py:function`` trtq takes (``what`` names it in messages:
    a loader script, a ``--metric`` file).
    """
    if not script.exists():
        raise DataError(f"{what} {shown} does not exist")
    if not script.is_file():
        raise DataError(f"{what} {shown} is not a file")
    digest = hashlib.sha256(str(script.resolve()).encode()).hexdigest()[:12]
    name = f"_trtq_loader_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, str(script.resolve()))
    if module_spec is None or module_spec.loader is None:
        raise DataError(f"{what} {shown} cannot be imported as Python")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module  # dataclasses and pickle look their module up there
    try:
        with running(script, f"{what} {shown} (on import)"):
            module_spec.loader.exec_module(module)
    except TrtqError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:  # noqa: BLE001 -- the user's code may raise anything
        sys.modules.pop(name, None)
        raise DataError(f"{what} {shown} failed on import{_where(exc, script)}: "
                        f"{type(exc).__name__}: {exc}") from exc
    func = getattr(module, function, None)
    if func is None:
        raise DataError(f"{what} {shown} defines no {function}() function"
                        + (f"; it must define {function}() yielding {{input_name: array}} dicts"
                           if what == "loader script" else ""))
    if not callable(func):
        raise DataError(f"{what} {shown}: {function} is not a function")
    return func


def _to_numpy(value, origin: str, key: str) -> np.ndarray:
    if hasattr(value, "detach") and hasattr(value, "cpu"):  # torch.Tensor
        value = value.detach().cpu()
    if not isinstance(value, np.ndarray) and hasattr(value, "numpy"):
        value = value.numpy()
    try:
        return np.asarray(value)
    except Exception as exc:  # noqa: BLE001
        raise DataError(f"{origin}: value for {key!r} is not an array ({type(exc).__name__}: {exc})") from None


class ScriptSource(DataSource):
    """Samples yielded by a loader script's ``load_data()``."""

    kind = "script"
    pad_ragged = True

    def __init__(self, spec: DataSpec, inputs: Sequence[TensorSpec], script: str, function: str = DEFAULT_FUNCTION):
        super().__init__(spec, inputs)
        wanted = spec.samples
        if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, (int, np.integer)) or wanted < 1):
            raise DataError(f"samples must be a positive integer or None (all), got {wanted!r}")
        self.script = Path(script).expanduser()
        self.function = function
        self.shown = script if function == DEFAULT_FUNCTION else f"{script}:{function}"
        self._dtypes = target_dtypes(self.inputs, spec.preprocess.dtype)
        warn_unused_preprocess(spec)
        if os.path.lexists(self.script):
            from .source import check_regular

            check_regular(self.script, f"loader script {script}")
        self._func = load_function(self.script, function, self.shown)
        if wanted is not None and self.static_batch and wanted % self.batch_size:
            wanted -= wanted % self.batch_size
            if wanted == 0:
                raise DataError(f"{spec.samples} sample(s) asked for, but the model takes batches of exactly "
                                f"{self.batch_size}")
        self.num_samples = None if wanted is None else int(wanted)
        self._whole_origins = set()
        self._had_whole = False
        limit = "all samples" if wanted is None else f"up to {wanted} samples"
        self.description = f"{limit} from loader script {self.shown}"
        if spec.shuffle:
            log.debug("loader script %s picks its own samples: shuffle and seed are not applied", self.shown)

    @property
    def num_batches(self) -> Optional[int]:
        """Batches of the last full pass where whole feeds came (they are not of ``batch_size``)."""
        if self._had_whole:
            return self._pass_batches
        return super().num_batches

    def _fingerprint_parts(self) -> Iterator[str]:
        try:
            yield hashlib.sha256(self.script.read_bytes()).hexdigest()
        except OSError:
            yield "unreadable"
        yield self.function
        yield str(self.num_samples)
        yield ",".join(f"{name}:{dtype}" for name, dtype in sorted(self._dtypes.items()))

    def _error(self, exc: BaseException, what: str) -> DataError:
        return DataError(f"loader script {self.shown} raised {type(exc).__name__} in {what}{_where(exc, self.script)}: "
                         f"{exc}")

    def _pieces(self) -> Iterator[Piece]:
        limit = self.num_samples
        call = f"{self.function}()"
        who = f"loader script {self.shown}: {call}"
        try:
            with running(self.script, who):
                result = self._func()
        except TrtqError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(exc, call) from exc
        try:
            yields = iter(result)
        except TypeError:
            raise DataError(f"loader script {self.shown}: {call} returned {type(result).__name__}; it must yield "
                            f"(or return a list of) {{input_name: array}} dicts") from None
        produced = 0
        index = 0
        feeds = 0
        self._whole_origins.clear()
        try:
            while limit is None or produced < limit:
                try:
                    with running(self.script, who):
                        item = next(yields)
                except StopIteration:
                    break
                except TrtqError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    raise self._error(exc, call) from exc
                index += 1
                origin = f"{self.shown} (yield {index})"
                if not isinstance(item, dict):
                    raise DataError(f"{origin}: {call} must yield dicts {{input_name: array}}, got "
                                    f"{type(item).__name__}")
                arrays = {k: _to_numpy(v, origin, k) for k, v in pick_arrays(item, self.inputs, origin, "names").items()}
                counts = {}
                whole = True
                for spec in self.inputs:
                    count, stacked = sample_count(arrays[spec.name].shape, spec, origin)
                    if not spec.batched:
                        continue
                    counts[spec.name] = count
                    if not stacked:
                        whole = False
                        arrays[spec.name] = np.expand_dims(arrays[spec.name], spec.batch_axis)
                if len(set(counts.values())) > 1:
                    listing = ", ".join(f"{name!r}: {count}" for name, count in counts.items())
                    raise DataError(f"{origin}: arrays hold different numbers of samples ({listing})")
                count = next(iter(counts.values()), 1)
                if limit is not None and produced + count > limit:
                    count = limit - produced  # the sample limit is the one cut a whole feed gets
                    arrays = take_samples(arrays, self.inputs, slice(0, count))
                if whole and (not self.static_batch or count == self.batch_size):
                    self._whole_origins.add(origin)
                    feeds += 1
                stem = Path(self.shown).name
                ids = [f"{stem}[{produced + i}]" for i in range(count)]
                produced += count
                yield ids, arrays, origin
        finally:
            close = getattr(yields, "close", None)
            if close is not None:
                with contextlib.suppress(Exception), running(self.script, who):
                    close()
        # a full pass happened: from now on the count is known
        self.num_samples = produced - produced % self.batch_size if self.static_batch else produced
        self._had_whole = feeds > 0
        if limit is not None and produced < limit:
            log.warning("loader script %s yielded %d sample(s), fewer than the %d asked for: using all of them",
                        self.shown, produced, limit)
