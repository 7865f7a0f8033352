"""``.npy`` / ``.npz`` files as model input: a folder of them, or one file.

- ``.npy`` holds one array, so it feeds single-input models only. It is opened with
  ``mmap_mode='r'``: only the samples selected for a batch are read from disk.
- ``.npz`` holds one array per input, keyed by input name (a single-input model
  also takes one unnamed array, ``np.savez(path, array)``; extra keys are ignored). A member is read whole
  when its file is first needed and dropped when the next file starts: keep big
  data sets in ``.npy`` files (or many ``.npz`` files) to stream them.

The rank rule, per array, with ``R`` the rank of the model input it feeds and its
batch axis as :mod:`trtq.graph.batch` finds it (axis 0 for most inputs, axis 1 for an
LSTM/GRU state ``[layers, batch, hidden]``):

- rank ``R``: the batch axis counts samples -- a stack of ``k`` samples (``k`` may be
  1, and may differ from the model's batch size: samples are re-batched);
- rank ``R - 1``: exactly one sample, without the batch axis;
- any other rank: a DataError naming the file, with the shapes it expects.

An input without a batch axis (a scalar such as a sample rate, a configuration
tensor) takes its array whole, rank ``R`` (a rank-0 array for a scalar); every file
must give it the same value. All batched arrays of one ``.npz`` must hold the same
number of samples. Shapes and dtypes
are checked from the file headers when the source is opened (no data read), and the
data itself (NaN/Inf, integer ranges) when it is read. Sample ids are the file's
path relative to the data folder, with ``[i]`` appended for files of several samples.
"""

from __future__ import annotations

import logging
import os
import zipfile
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from ..errors import DataError
from ..graph.model import TensorSpec
from .source import FileSource, Piece, check_regular, preprocess_json, warn_unused_preprocess
from .spec import DataSpec
from .validate import check_header, pick_arrays, target_dtypes

log = logging.getLogger("trtq.data")

Header = Tuple[Tuple[int, ...], np.dtype]


def _read_header(handle) -> Header:
    fmt = np.lib.format
    version = fmt.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = fmt.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = fmt.read_array_header_2_0(handle)
    else:  # (3, 0): utf-8 field names; numpy has no public reader for it
        shape, _, dtype = fmt._read_array_header(handle, version)
    return tuple(int(d) for d in shape), np.dtype(dtype)


def array_headers(path: Path, origin: str) -> Dict[str, Header]:
    """``{key: (shape, dtype)}`` of a ``.npy`` (key ``""``) or ``.npz`` file, read from headers only."""
    try:
        if path.suffix.lower() == ".npy":
            with open(path, "rb") as handle:
                return {"": _read_header(handle)}
        headers = {}
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if info.filename.endswith("/"):
                    continue
                key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                with archive.open(info) as member:
                    headers[key] = _read_header(member)
        return headers
    except FileNotFoundError:
        check_regular(path, origin)  # a dangling symlink says so
        raise DataError(f"{origin}: file disappeared while reading") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, SyntaxError) as exc:
        kind = "a .npz archive of .npy arrays" if path.suffix.lower() == ".npz" else "a .npy array"
        raise DataError(f"{origin}: not readable as {kind} ({type(exc).__name__}: {exc})") from None


def read_arrays(path: Path, keys: Dict[str, str], origin: str) -> Dict[str, np.ndarray]:
    """``{input_name: array}`` of one file: memory-mapped for ``.npy``, loaded for ``.npz`` members."""
    try:
        if path.suffix.lower() == ".npy":
            array = np.load(path, mmap_mode="r", allow_pickle=False)
            return {name: array for name in keys}
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[key] for name, key in keys.items()}
    except FileNotFoundError:
        check_regular(path, origin)  # a dangling symlink says so
        raise DataError(f"{origin}: file disappeared while reading") from None
    except Exception as exc:  # noqa: BLE001 -- numpy raises ValueError, OSError, BadZipFile, EOFError...
        raise DataError(f"{origin}: cannot read arrays ({type(exc).__name__}: {exc})") from None


class ArraySource(FileSource):
    """Samples from ``.npy`` / ``.npz`` files."""

    kind = "arrays"

    def __init__(self, spec: DataSpec, inputs: Sequence[TensorSpec], root: Path, files: List[str]):
        super().__init__(spec, inputs, root, files)
        self._dtypes = target_dtypes(self.inputs, spec.preprocess.dtype)
        self._layouts: Dict[str, Tuple[int, Dict[str, str], Dict[str, Tuple[int, ...]]]] = {}
        warn_unused_preprocess(spec)
        self._select()
        counts: Dict[str, int] = {}
        for rel, _, _ in self._selection:
            ext = os.path.splitext(rel or str(root))[1].lower()
            counts[ext] = counts.get(ext, 0) + 1
        noun = "sample" if self.num_samples == 1 else "samples"
        dtypes = ", ".join(sorted({str(d) for d in self._dtypes.values()}))
        if root.is_file():
            self.description = f"{self.num_samples} {noun} from {spec.path} ({dtypes})"
        else:
            kinds = ", ".join(f"{n} {ext}" for ext, n in sorted(counts.items()))
            self.description = (f"{self.num_samples} {noun} from {str(spec.path).rstrip('/' + os.sep)}/ "
                                f"({kinds} file{'s' if len(self._selection) != 1 else ''}, {dtypes})")

    def _layout(self, rel: str) -> Tuple[int, Dict[str, str], Dict[str, Tuple[int, ...]]]:
        """(sample count, {input: key}, {input: shape}) of one file, checked against the inputs."""
        if rel in self._layouts:
            return self._layouts[rel]
        path, origin = self._path(rel), self._origin(rel)
        headers = array_headers(path, origin)
        if path.suffix.lower() == ".npy" and len(self.inputs) > 1:
            names = ", ".join(s.name for s in self.inputs)
            raise DataError(f"{origin}: a .npy file holds one array, but the model has {len(self.inputs)} inputs "
                            f"({names}); save .npz files with one array per input name")
        chosen = pick_arrays({k: k for k in headers}, self.inputs, origin)
        counts = {}
        shapes = {}
        for spec in self.inputs:
            shape, dtype = headers[chosen[spec.name]]
            count = check_header(shape, dtype, spec, self._dtypes[spec.name], origin)
            if spec.batched:
                counts[spec.name] = count
            shapes[spec.name] = shape
        if len(set(counts.values())) > 1:
            listing = ", ".join(f"{name!r}: {count}" for name, count in counts.items())
            raise DataError(f"{origin}: arrays hold different numbers of samples ({listing}); "
                            f"every input needs one array entry per sample")
        layout = (next(iter(counts.values()), 1), dict(chosen), shapes)
        self._layouts[rel] = layout
        return layout

    def _count(self, rel: str) -> int:
        return self._layout(rel)[0]

    def input_shapes(self):
        shapes = super().input_shapes()
        if self._selection:
            _, _, first = self._layout(self._selection[0][0])
            for spec in self.inputs:
                shape = tuple(first[spec.name])
                if spec.batched:
                    shape = shape if len(shape) == spec.rank else (*shape[:spec.batch_axis], 1, *shape[spec.batch_axis:])
                    shape = (*shape[:spec.batch_axis], self.batch_size, *shape[spec.batch_axis + 1:])
                shapes[spec.name] = shape
        return shapes

    def _preprocess_parts(self) -> Iterator[str]:
        yield preprocess_json({name: str(dtype) for name, dtype in self._dtypes.items()})

    def _pieces(self) -> Iterator[Piece]:
        size = self.batch_size
        for rel, indices, count in self._selection:
            _, keys, _ = self._layout(rel)
            origin = self._origin(rel)
            arrays = read_arrays(self._path(rel), keys, origin)
            ids = self._ids(rel, indices, count)
            for start in range(0, len(indices), size):
                part = indices[start:start + size]
                piece = {}
                for spec in self.inputs:
                    array = arrays[spec.name]
                    if not spec.batched:
                        piece[spec.name] = np.asarray(array)
                    elif array.ndim == spec.rank:
                        # fancy indexing copies only these rows, even from a memory map
                        piece[spec.name] = np.asarray(np.take(array, part, axis=spec.batch_axis))
                    else:
                        piece[spec.name] = np.expand_dims(np.asarray(array), spec.batch_axis)
                yield ids[start:start + size], piece, origin
            del arrays
