"""The :class:`DataSource` every data kind implements: selection, re-batching, ids, fingerprint.

A source reads its data as *pieces*: ``(sample_ids, {input_name: array}, origin)``
in the model's layout, where every batched input holds ``len(sample_ids)`` samples
along its own batch axis (:mod:`trtq.graph.batch`), an input without a batch axis its
one value, and ``origin`` names the file (or script) the piece came from. The base
class checks each piece against the model inputs (:func:`~trtq.data.validate.conform`),
checks that the unbatched inputs keep one value, re-batches pieces into batches of
:attr:`DataSource.batch_size` and keeps at most one batch (plus the piece being split)
in memory. A piece marked *whole* (a loader script's feed that already fits the model)
is yielded as its own batch, never split or merged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import DataError
from ..graph.model import TensorSpec
from .spec import DataSpec
from ..graph.batch import sample_major
from .validate import check_symbols, concat_batch, conform, effective_batch_size, same_fixed_value

log = logging.getLogger("trtq.data")

#: Image files an image folder may hold (compared case-insensitively).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
#: Array files: one array (``.npy``) or one array per input name (``.npz``).
ARRAY_EXTENSIONS = (".npy", ".npz")
#: A Python loader script with a ``load_data()`` generator.
SCRIPT_EXTENSIONS = (".py",)

Piece = Tuple[List[str], Dict[str, np.ndarray], str]
Batch = Dict[str, np.ndarray]

_FINGERPRINT_VERSION = "trtq-data-1"


class DataSource:
    """Batches of model inputs, read lazily from files or a loader script.

    Attributes every source has:

    - ``num_samples``: samples iteration yields. For a loader script it is the
      sample limit (``None``: no limit) until a first full pass has run, and the
      number the script actually gave after it (a script that runs out early gives
      fewer, with a warning)
    - ``batch_size``: samples per batch (the last batch may be smaller unless the
      model fixes its batch dim, in which case every batch has exactly that size)
    - ``num_batches`` / ``len(source)``: batches iteration yields (``len`` raises
      ``TypeError`` where ``num_batches`` is ``None``)
    - ``description``: one line for humans, e.g.
      ``"1000 images from calib_data/ (resized to 320x320, RGB, NCHW float32)"``
    """

    kind = "data"
    #: samples of different lengths on dynamic dims are zero-padded within a batch (loader scripts)
    pad_ragged = False
    #: origins of pieces that are whole feeds (see the module docstring); a loader script fills it
    _whole_origins: frozenset = frozenset()
    _pass_batches: Optional[int] = None

    def __init__(self, spec: DataSpec, inputs: Sequence[TensorSpec]):
        self.spec = spec
        self.inputs: List[TensorSpec] = list(inputs)
        self.batch_size: int = effective_batch_size(self.inputs, spec.batch_size)
        self.static_batch: bool = any(s.static_batch() for s in self.inputs)
        self.num_samples: Optional[int] = None
        self.description: str = ""
        self._dtypes: Dict[str, np.dtype] = {s.name: s.dtype for s in self.inputs}

    # -- what subclasses implement -------------------------------------------------
    def _pieces(self) -> Iterator[Piece]:
        raise NotImplementedError

    def _fingerprint_parts(self) -> Iterator[Union[str, bytes]]:
        raise NotImplementedError

    def sample_ids(self) -> Optional[List[str]]:
        """Ids of the selected samples in iteration order (``None`` where unknown before iterating)."""
        return None

    def all_ids(self) -> Optional[List[str]]:
        """Ids of every available sample in sorted file order, before selection (for positional labels)."""
        return None

    def input_shapes(self) -> Dict[str, Tuple[Optional[int], ...]]:
        """Shape of one full batch per input as far as known without reading data (``None`` = unknown)."""
        return {s.name: tuple(self.batch_size if s.batched and axis == s.batch_axis else
                              d if isinstance(d, int) and d > 0 else None for axis, d in enumerate(s.shape))
                for s in self.inputs}

    # -- the public interface ------------------------------------------------------
    @property
    def num_batches(self) -> Optional[int]:
        if self.num_samples is None:
            return None
        return -(-self.num_samples // self.batch_size)

    def __len__(self) -> int:
        if self.num_batches is None:
            raise TypeError(f"{self.description}: the number of batches is unknown until the loader script has run "
                            f"(num_batches is None)")
        return self.num_batches

    def __iter__(self) -> Iterator[Batch]:
        for _, batch in self.iter_with_ids():
            yield batch

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {self.description}, batch size {self.batch_size}>"

    def iter_with_ids(self) -> Iterator[Tuple[List[str], Batch]]:
        """Yield ``(sample_ids, {input_name: array})`` batches of ``batch_size`` samples (a whole feed
        from a loader script is one batch of its own size)."""
        batches = 0
        for item in self._batched():
            batches += 1
            yield item
        self._pass_batches = batches

    def _batched(self) -> Iterator[Tuple[List[str], Batch]]:
        size = self.batch_size
        buffer: List[Piece] = []
        count = 0
        noticed = set()
        fixed: Dict[str, Tuple[np.ndarray, str]] = {}
        for ids, arrays, origin in self._pieces():
            for s in self.inputs:
                kind = np.asarray(arrays[s.name]).dtype
                if kind.kind in "biu" and self._dtypes[s.name].kind == "f" and s.name not in noticed:
                    noticed.add(s.name)  # one line per input, not one per file
                    log.warning("%s: input %r is %s but the data is %s: values cast to %s (and any other integer "
                                "data for it)", origin, s.name, self._dtypes[s.name], kind, self._dtypes[s.name])
            checked = {s.name: conform(arrays[s.name], s, self._dtypes[s.name], origin) for s in self.inputs}
            check_symbols(checked, self.inputs, origin)
            for s in self.inputs:
                if not s.batched:
                    if s.name in fixed:
                        same_fixed_value(s, fixed[s.name], checked[s.name], origin)
                    else:
                        fixed[s.name] = (checked[s.name], origin)
            checked = {s.name: sample_major(checked[s.name], s) for s in self.inputs}
            if origin in self._whole_origins:  # a feed that fits the model: its own batch, as it is
                if buffer:
                    yield [i for piece in buffer for i in piece[0]], concat_batch(buffer, self.inputs, pad=self.pad_ragged)
                    buffer, count = [], 0
                yield list(ids), concat_batch([(ids, checked, origin)], self.inputs)
                continue
            start, total = 0, len(ids)
            while start < total:
                take = min(size - count, total - start)
                if take == total:  # the whole piece: no slicing (a view would be copied again later)
                    buffer.append((ids, checked, origin))
                else:
                    part = slice(start, start + take)
                    buffer.append((ids[part], {name: a[part] for name, a in checked.items()}, origin))
                count += take
                start += take
                if count == size:
                    yield [i for piece in buffer for i in piece[0]], concat_batch(buffer, self.inputs, pad=self.pad_ragged)
                    buffer, count = [], 0
        if buffer:
            if self.static_batch:
                log.warning("%s: dropped the last %d sample(s): the model takes batches of exactly %d",
                            self.description, count, size)
            else:
                yield [i for piece in buffer for i in piece[0]], concat_batch(buffer, self.inputs, pad=self.pad_ragged)

    def fingerprint(self) -> str:
        """sha256 over what was selected and how it is preprocessed; reads no sample data."""
        digest = hashlib.sha256()
        digest.update(_FINGERPRINT_VERSION.encode())
        digest.update(self.kind.encode())
        if any(s.batch_axis != 0 for s in self.inputs if s.rank):  # the axis samples are cut along
            digest.update(",".join(f"{s.name}:{s.batch_axis if s.batched else 'none'}" for s in self.inputs).encode())
        for part in self._fingerprint_parts():
            digest.update(b"\0")
            digest.update(part if isinstance(part, bytes) else part.encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def labels(self, path: str) -> np.ndarray:
        """Labels for the selected samples, in iteration order (see :func:`trtq.data.labels.load_labels`)."""
        from .labels import load_labels

        ids = self.sample_ids()
        if ids is None:
            raise DataError(f"{self.description}: sample ids are known only while iterating; "
                            f"call load_labels() with the ids from iter_with_ids()")
        return load_labels(path, ids, order=self.all_ids())


def warn_unused_preprocess(spec: DataSpec) -> None:
    """Image preprocessing set for a non-image source is ignored: say so once."""
    from .spec import Preprocess

    given, default = spec.preprocess.to_dict(), Preprocess().to_dict()
    ignored = [name for name, value in default.items() if name != "dtype" and given[name] != value]
    if ignored:
        log.warning("%s: image preprocessing (%s) applies to image files only; it is ignored here",
                    spec.path, ", ".join(ignored))


def display_path(root: str, rel: str) -> str:
    """How a file is named in messages: the data path as the user gave it, joined with the file."""
    return os.path.join(root, rel) if rel else root


def _links_upward(path: str, top: str, quiet: bool = False) -> bool:
    """A symlinked folder that points at the data folder itself or above it (``up -> ..``): not followed,
    or the walk would read the parent's files as data."""
    if not os.path.islink(path):
        return False
    target = os.path.realpath(path)
    if top == target or top.startswith(target.rstrip(os.sep) + os.sep):
        if not quiet:
            log.warning("%s links to %s, which holds the data folder; not followed", path, target)
        return True
    return False


#: Image formats trtq does not read, named when a data folder holds them (instead of skipping them silently).
UNREAD_IMAGE_EXTENSIONS = (".tif", ".tiff", ".gif", ".ppm", ".pgm", ".pbm", ".heic", ".avif", ".jp2", ".exr",
                           ".dng", ".ico")


def check_regular(path: Union[str, Path], origin: Optional[str] = None, error=DataError) -> None:
    """Refuse, by name, a data file that is not a regular file (see :func:`trtq.fileio.check_regular`)."""
    from ..fileio import check_regular as check

    check(path, origin or str(path), error, "remove it from the data folder or give another path")


def list_files(root: Path, quiet: bool = False) -> Tuple[List[str], List[str], List[str]]:
    """Image files, array files and other files under ``root`` (recursive, hidden entries skipped).

    Paths are relative, ``/``-separated and sorted as plain strings: the order
    positional labels refer to. Symlinked folders are followed, except one that points
    at the data folder or an ancestor of it (``up -> ..``).
    """
    images: List[str] = []
    arrays: List[str] = []
    other: List[str] = []
    visited = set()
    top = os.path.realpath(root)
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a symlink loop
            dirs[:] = []
            continue
        visited.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"
                   and not _links_upward(os.path.join(folder, d), top, quiet)]
        base = Path(folder).relative_to(root)
        for name in files:
            if name.startswith("."):
                continue
            rel = (base / name).as_posix()
            ext = os.path.splitext(name)[1].lower()
            if ext in IMAGE_EXTENSIONS or ext in ARRAY_EXTENSIONS:  # refused by name before anything opens it
                check_regular(os.path.join(folder, name), display_path(str(root), rel))
            (images if ext in IMAGE_EXTENSIONS else arrays if ext in ARRAY_EXTENSIONS else other).append(rel)
    unread = [rel for rel in other if os.path.splitext(rel)[1].lower() in UNREAD_IMAGE_EXTENSIONS]
    if unread and (images or arrays) and not quiet:
        kinds = ", ".join(sorted({os.path.splitext(rel)[1].lower() for rel in unread}))
        log.warning("%s: skipped %d image(s) in a format trtq does not read (%s; e.g. %s); it reads %s: convert "
                    "them to use them", root, len(unread), kinds, unread[0], " ".join(IMAGE_EXTENSIONS))
    return sorted(images), sorted(arrays), sorted(other)


class FileSource(DataSource):
    """A source over files that each hold a known number of samples.

    Selection: with ``shuffle`` the file list is permuted with ``seed`` and walked
    until ``samples`` samples are found (a file holding several samples contributes
    a seeded random subset when only part of it is needed); without, files are taken
    in sorted order. Only the files walked are ever opened.
    """

    def __init__(self, spec: DataSpec, inputs: Sequence[TensorSpec], root: Path, files: List[str]):
        super().__init__(spec, inputs)
        self.root = root
        self.files = files
        # (rel path, sample indices in file, samples the file holds)
        self._selection: List[Tuple[str, np.ndarray, int]] = []

    def _count(self, rel: str) -> int:
        """Samples ``rel`` holds (reading at most its header; validates it)."""
        return 1

    def _origin(self, rel: str) -> str:
        return display_path(str(self.spec.path), rel)

    def _path(self, rel: str) -> Path:
        return self.root / rel if rel else self.root

    def _select(self) -> None:
        spec = self.spec
        wanted = spec.samples
        if wanted is not None and (isinstance(wanted, bool) or not isinstance(wanted, (int, np.integer)) or wanted < 1):
            raise DataError(f"samples must be a positive integer or None (all), got {wanted!r}")
        if spec.shuffle and (isinstance(spec.seed, bool) or not isinstance(spec.seed, (int, np.integer)) or spec.seed < 0):
            raise DataError(f"seed must be a non-negative integer, got {spec.seed!r}")
        rng = np.random.default_rng(spec.seed) if spec.shuffle else None
        order = rng.permutation(len(self.files)) if rng is not None else range(len(self.files))
        total = 0
        for index in order:
            rel = self.files[int(index)]
            count = self._count(rel)
            indices = rng.permutation(count) if (rng is not None and count > 1) else np.arange(count)
            if wanted is not None:
                indices = indices[: wanted - total]
            self._selection.append((rel, indices, count))
            total += len(indices)
            if wanted is not None and total >= wanted:
                break
        if wanted is not None and total < wanted:
            log.warning("%s holds %d sample(s), fewer than the %d asked for: using all of them",
                        self.spec.path, total, wanted)
        if self.static_batch and total % self.batch_size:
            keep = total - total % self.batch_size
            if keep == 0:
                raise DataError(f"{self.spec.path}: {total} sample(s) found, but the model takes batches of exactly "
                                f"{self.batch_size}; give at least {self.batch_size} samples")
            log.warning("%s: using %d of %d samples: the model takes batches of exactly %d",
                        self.spec.path, keep, total, self.batch_size)
            self._trim(keep)
            total = keep
        self.num_samples = total

    def _trim(self, keep: int) -> None:
        kept, total = [], 0
        for rel, indices, count in self._selection:
            if total >= keep:
                break
            indices = indices[: keep - total]
            kept.append((rel, indices, count))
            total += len(indices)
        self._selection = kept

    def _ids(self, rel: str, indices: Sequence[int], count: int) -> List[str]:
        name = rel or Path(self.spec.path).name
        if count == 1:
            return [name]
        return [f"{name}[{int(i)}]" for i in indices]

    def sample_ids(self) -> List[str]:
        return [i for rel, indices, count in self._selection for i in self._ids(rel, indices, count)]

    def all_ids(self) -> List[str]:
        return [i for rel in self.files for count in (self._count(rel),) for i in self._ids(rel, range(count), count)]

    def _preprocess_parts(self) -> Iterator[str]:
        return iter(())

    def _fingerprint_parts(self) -> Iterator[Union[str, bytes]]:
        yield from self._preprocess_parts()
        for rel, indices, _ in self._selection:
            try:
                stat = self._path(rel).stat()
                yield f"{rel}|{stat.st_size}|{stat.st_mtime_ns}"
            except OSError:
                yield f"{rel}|missing"
            yield np.asarray(indices, dtype=np.int64).tobytes()


def preprocess_json(values: dict) -> str:
    return json.dumps(values, sort_keys=True, default=str)
