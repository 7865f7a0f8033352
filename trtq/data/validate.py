"""Checking sample arrays against the model inputs, and turning them into what the model is fed.

Every sample array passes through :func:`conform` before it joins a batch: rank,
static dims, dtype and finiteness are checked there, with a message that names the
file (or script yield) the array came from, e.g.::

    calib_data/x.npy: input 'images' expects shape Nx3x320x320, got 1x3x224x224

Each input has its own batch axis (:mod:`trtq.graph.batch`: axis 1 for an LSTM's
``[layers, batch, hidden]`` state, none for a scalar). Sample arrays are checked in the
model's layout, with their samples along that axis; a one-sample array of rank ``R - 1``
(the batch axis left out) is given it by :func:`with_sample_axis`. An input without a
batch axis is checked whole and goes unchanged with every batch.
"""

from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from ..graph.model import TensorSpec

log = logging.getLogger("trtq.data")

#: numpy dtype kinds trtq can feed: bool, signed/unsigned integers, floats.
FEEDABLE_KINDS = "biuf"


def shape_text(shape: Sequence) -> str:
    """``(1, 3, 224, 224)`` -> ``"1x3x224x224"``; a rank-0 shape -> ``"scalar"``."""
    if len(shape) == 0:
        return "scalar"
    return "x".join("?" if d is None else str(d) for d in shape)


def expected_text(spec: TensorSpec) -> str:
    """The shape a sample batch must have, batch axis shown as ``N``: ``"Nx3x320x320"``, ``"2xNx128"``."""
    if spec.rank == 0:
        return "scalar"
    dims = []
    for axis, d in enumerate(spec.shape):
        dims.append("N" if axis == spec.batch_axis else str(d) if isinstance(d, int) and d > 0 else (d or "?"))
    return "x".join(dims)


def _one_sample_text(spec: TensorSpec) -> str:
    """The shape of one sample without its batch axis: ``"3x320x320"``, ``"2x128"``."""
    parts = expected_text(spec).split("x")
    if spec.batched:
        del parts[spec.batch_axis]
    return "x".join(parts) or "scalar"


def check_inputs(inputs: Sequence[TensorSpec]) -> None:
    """Fail early on model inputs trtq cannot make data for."""
    if not inputs:
        raise DataError("the model has no inputs to feed calibration data to")
    names = [spec.name for spec in inputs]
    if len(set(names)) != len(names):
        raise DataError(f"the model lists an input name twice ({', '.join(names)})")
    for spec in inputs:
        if spec.dtype.kind not in FEEDABLE_KINDS:
            raise DataError(
                f"input {spec.name!r} has dtype {spec.dtype}; trtq can only feed numeric and bool tensors "
                f"(float, int, uint, bool)")


def effective_batch_size(inputs: Sequence[TensorSpec], requested: int) -> int:
    """The batch size to feed: ``requested``, unless the model fixes the batch axis of its inputs.

    A static batch dim (e.g. 1) wins over the request (logged). Inputs that fix
    different batch sizes cannot be fed together from one sample stream.
    """
    if not isinstance(requested, (int, np.integer)) or isinstance(requested, bool) or requested < 1:
        raise DataError(f"batch size must be a positive integer, got {requested!r}")
    fixed = {spec.name: spec.batch_dim for spec in inputs if spec.static_batch()}
    values = set(fixed.values())
    if len(values) > 1:
        listing = ", ".join(f"{name!r}: {value}" for name, value in fixed.items())
        raise DataError(f"the model's inputs fix different batch sizes ({listing}); trtq cannot batch samples for it. "
                        f"Give each input's batch axis with --batch-axis NAME:AXIS (NAME:none for an input "
                        f"fed unchanged)")
    if values:
        static = values.pop()
        if static != requested:
            names = ", ".join(repr(name) for name in fixed)
            log.info("model input %s has a fixed batch of %d: using batch size %d (asked for %d)",
                     names, static, static, requested)
        return int(static)
    return int(requested)


def target_dtype(spec: TensorSpec, override: Optional[str] = None) -> np.dtype:
    """The dtype fed to ``spec``: the model's, or a float ``override`` for a float input."""
    if override is None:
        return spec.dtype
    try:
        wanted = np.dtype(override)
    except TypeError:
        raise DataError(f"dtype {override!r} is not a numpy dtype name (e.g. float32, float16)") from None
    if wanted == spec.dtype:
        return wanted
    if spec.dtype.kind == "f" and wanted.kind == "f":
        return wanted
    raise DataError(f"input {spec.name!r} is {spec.dtype}; data of dtype {wanted} cannot be fed to it "
                    f"(leave the dtype unset to use the model's)")


def target_dtypes(inputs: Sequence[TensorSpec], override: Optional[str] = None) -> Dict[str, np.dtype]:
    """Per input, the dtype fed: a float ``override`` applies to the float inputs only."""
    return {spec.name: target_dtype(spec, override if spec.dtype.kind == "f" else None) for spec in inputs}


def sample_count(shape: Sequence[int], spec: TensorSpec, origin: str) -> Tuple[int, bool]:
    """How many samples an array of ``shape`` holds for ``spec``, and whether it has a sample axis.

    The rank rule: rank ``R`` (the input's rank) -> the batch axis counts samples (a
    stack, possibly of one); rank ``R - 1`` -> one sample without the batch axis. An
    input without a batch axis takes its array whole (rank ``R``): ``(1, True)``.
    """
    rank = len(shape)
    if not spec.batched:
        if rank != spec.rank:
            raise DataError(f"{origin}: input {spec.name!r} has no batch axis and expects shape "
                            f"{expected_text(spec)} (rank {spec.rank}), got {shape_text(shape)} (rank {rank})")
        return 1, True
    if rank == spec.rank:
        if shape[spec.batch_axis] == 0:
            raise DataError(f"{origin}: input {spec.name!r} array has shape {shape_text(shape)}, which holds no samples")
        return int(shape[spec.batch_axis]), True
    if rank == spec.rank - 1:
        return 1, False
    one = _one_sample_text(spec)
    raise DataError(
        f"{origin}: input {spec.name!r} expects shape {expected_text(spec)} (a stack of samples, rank {spec.rank}) "
        f"or {one} (one sample, rank {spec.rank - 1}), got {shape_text(shape)} (rank {rank})")


def check_header(shape: Sequence[int], dtype: np.dtype, spec: TensorSpec, target: np.dtype, origin: str) -> int:
    """Check what a file header says (no data read): rank, static dims, dtype. Returns the sample count."""
    count, stacked = sample_count(shape, spec, origin)
    full = tuple(shape) if stacked else tuple(np.expand_dims(np.empty(shape, dtype=np.bool_), spec.batch_axis).shape)
    _check_dims(full, spec, origin)
    _check_kind(np.dtype(dtype), spec, target, origin)
    return count


def _check_dims(shape: Tuple[int, ...], spec: TensorSpec, origin: str) -> None:
    if len(shape) != spec.rank or any(spec.is_static(axis) and shape[axis] != spec.shape[axis]
                                      for axis in range(spec.rank) if axis != spec.batch_axis or not spec.batched):
        raise DataError(f"{origin}: input {spec.name!r} expects shape {expected_text(spec)}, got {shape_text(shape)}")


def _check_kind(source: np.dtype, spec: TensorSpec, target: np.dtype, origin: str) -> None:
    if source.kind not in FEEDABLE_KINDS:
        raise DataError(f"{origin}: input {spec.name!r} got an array of dtype {source}; "
                        f"save numeric arrays ({target} for this input)")
    if target.kind in "iu" and source.kind == "f":
        raise DataError(f"{origin}: input {spec.name!r} expects integers ({target}), got {source}; "
                        f"save integer arrays (trtq does not round floats into integer inputs)")
    if target.kind == "b" and source.kind == "f":
        raise DataError(f"{origin}: input {spec.name!r} expects bool, got {source}; save bool or 0/1 integer arrays")


def conform(array, spec: TensorSpec, target: np.dtype, origin: str) -> np.ndarray:
    """Check one sample array (with its leading sample axis) and cast it to ``target``.

    Raises :class:`DataError` naming ``origin`` for a wrong rank or static dim, a float
    array for an integer input, integer values out of the input's range, NaN/Inf, or
    floats beyond float16 range.
    """
    array = np.asarray(array)
    _check_dims(array.shape, spec, origin)
    _check_kind(array.dtype, spec, target, origin)
    if array.dtype.kind == "f":
        _check_finite(array, spec, origin)
    if array.dtype == target:
        return array
    if target.kind == "f":
        with np.errstate(over="ignore"):
            cast = array.astype(target)
        if array.dtype.kind == "f" and target.itemsize < array.dtype.itemsize and not np.isfinite(cast).all():
            peak = float(np.max(np.abs(array)))
            raise DataError(f"{origin}: input {spec.name!r} holds values beyond {target} range "
                            f"(max |x| = {peak:g}); scale the data down")
        return cast
    if target.kind == "b":
        if array.dtype.kind in "iu" and array.size and not np.isin(array, (0, 1)).all():
            raise DataError(f"{origin}: input {spec.name!r} expects bool, got integers other than 0 and 1")
        return array.astype(target)
    # integer target from an integer or bool source: values must fit
    if array.size and array.dtype.kind in "iu" and not np.can_cast(array.dtype, target):
        info = np.iinfo(target)
        low, high = int(array.min()), int(array.max())
        if low < info.min or high > info.max:
            raise DataError(f"{origin}: input {spec.name!r} is {target}, but the {array.dtype} data spans "
                            f"{low}..{high}, beyond {info.min}..{info.max}")
    return array.astype(target)


def _check_finite(array: np.ndarray, spec: TensorSpec, origin: str) -> None:
    if array.size == 0 or np.isfinite(array).all():
        return
    nans = int(np.isnan(array).sum())
    infs = int(np.isinf(array).sum())
    parts = [f"{count} {what}" for count, what in ((nans, "NaN"), (infs, "Inf")) if count]
    raise DataError(f"{origin}: input {spec.name!r} holds {' and '.join(parts)} values "
                    f"(of {array.size}); calibration needs finite data")


def check_symbols(arrays: Dict[str, np.ndarray], inputs: Sequence[TensorSpec], origin: str) -> None:
    """Inputs that share a symbolic dim (e.g. ``seq``) must agree on its size in one sample."""
    seen: Dict[str, Tuple[str, int]] = {}
    for spec in inputs:
        array = arrays[spec.name]
        for axis in range(spec.rank):
            if spec.batched and axis == spec.batch_axis:
                continue
            dim = spec.shape[axis]
            if isinstance(dim, str) and dim:
                size = int(array.shape[axis])
                if dim in seen and seen[dim][1] != size:
                    other, value = seen[dim]
                    raise DataError(f"{origin}: inputs {other!r} and {spec.name!r} share dim {dim!r} but got "
                                    f"{value} and {size}")
                seen.setdefault(dim, (spec.name, size))


#: Keys that name no input: a ``.npy`` file's one array, and ``np.savez(path, array)``'s positional key.
UNNAMED_KEYS = ("", "arr_0")


def pick_arrays(found: Dict[str, object], inputs: Sequence[TensorSpec], origin: str, what: str = "keys") -> Dict[str, object]:
    """Match the arrays of one file or yield to the model's input names.

    Every input name must be present (extra names are ignored with a debug note). A
    single-input model also takes one unnamed array: a ``.npy`` file, or a ``.npz``
    saved as ``np.savez(path, array)`` (key ``arr_0``). A wrong name is an error, not
    a guess: it usually means the data was made for another model.
    """
    names = [spec.name for spec in inputs]
    if len(inputs) == 1:
        name = names[0]
        if name in found:
            return {name: found[name]}
        unnamed = [key for key in found if key in UNNAMED_KEYS]
        if len(found) == 1 and unnamed:
            return {name: found[unnamed[0]]}
        listing = ", ".join(repr(key) for key in found) or "none"
        raise DataError(f"{origin}: holds {what} {listing}, but the model's input is named {name!r}; "
                        f"name the array {name!r} (np.savez(path, {name}=array), or {{{name!r}: array}} from a "
                        "loader script), or save it unnamed (.npy)")
    missing = [name for name in names if name not in found]
    if missing:
        listing = ", ".join(repr(key) for key in found) or "none"
        raise DataError(f"{origin}: missing input {', '.join(repr(n) for n in missing)} "
                        f"(model inputs: {', '.join(names)}; found {what} {listing})")
    extra = [key for key in found if key not in names]
    if extra:
        log.debug("%s: ignoring %s %s that are not model inputs", origin, what, ", ".join(extra))
    return {name: found[name] for name in names}


def with_sample_axis(array: np.ndarray, spec: TensorSpec, origin: str) -> np.ndarray:
    """Give a one-sample array (rank R-1) its batch axis; leave stacks (rank R) alone."""
    _, stacked = sample_count(array.shape, spec, origin)
    return array if stacked else np.expand_dims(array, spec.batch_axis)


def same_fixed_value(spec: TensorSpec, kept: Tuple[np.ndarray, str], array: np.ndarray, origin: str) -> None:
    """An input without a batch axis goes unchanged with every batch: every sample must give the same value."""
    first, first_origin = kept
    if first.shape == array.shape and np.array_equal(first, array):
        return
    show = lambda a: (str(a.tolist()) if a.size <= 4 else f"an array of shape {shape_text(a.shape)}")  # noqa: E731
    raise DataError(f"input {spec.name!r} has no batch axis (it is fed unchanged with every batch), so every sample "
                    f"must give it the same value: {first_origin} has {show(first)}, {origin} has {show(array)}. "
                    f"Calibrate one value per run, or give its batch axis with --batch-axis {spec.name}:AXIS")


def concat_batch(pieces: List[Tuple[List[str], Dict[str, np.ndarray], str]],
                 inputs: Sequence[TensorSpec], pad: bool = False) -> Dict[str, np.ndarray]:
    """Join checked pieces into one batch in the model's layout; samples must agree on every dim
    (ragged -> DataError).

    The pieces hold batched inputs sample-major (:func:`~trtq.graph.batch.sample_major`: the
    batch axis first); an input without a batch axis is taken from the first piece as it is.
    ``pad=True`` (loader scripts): samples that differ only on dims the model declares
    dynamic are right-padded with zeros to the batch's longest, which is what tokenizers do
    with ``padding=True`` (pad id 0 and attention mask 0 for BERT-family vocabularies).
    """
    from ..graph.batch import major_spec, model_major

    batch = {}
    for model_spec in inputs:
        spec = major_spec(model_spec)
        if not spec.batched or len(pieces) == 1:
            array = model_major(pieces[0][1][spec.name], model_spec)
            # own, writable, C-ordered memory: not a read-only view of a memory-mapped file
            if not (array.flags.c_contiguous and array.flags.writeable and array.flags.owndata):
                array = np.array(array, order="C")
            batch[spec.name] = array
            continue
        first_origin, first = pieces[0][2], pieces[0][1][spec.name]
        ragged = False
        for _, arrays, origin in pieces[1:]:
            other = arrays[spec.name]
            if other.shape[1:] == first.shape[1:]:
                continue
            dynamic = all(other.shape[axis] == first.shape[axis] or not spec.is_static(axis)
                          for axis in range(1, min(first.ndim, other.ndim)))
            if pad and other.ndim == first.ndim and dynamic:
                ragged = True
                continue
            raise DataError(
                f"input {spec.name!r}: samples in one batch differ in shape: {first_origin} has "
                f"{shape_text(model_major(first[:1], model_spec).shape)}, {origin} has "
                f"{shape_text(model_major(other[:1], model_spec).shape)}; "
                f"give all samples the same shape, or use batch size 1"
                + ("" if pad else " (loader scripts may yield samples of different lengths: they are padded)"))
        if ragged:
            longest = tuple(max(arrays[spec.name].shape[axis] for _, arrays, _ in pieces) for axis in range(1, first.ndim))
            total = sum(arrays[spec.name].shape[0] for _, arrays, _ in pieces)
            out = np.zeros((total, *longest), dtype=first.dtype)
            row = 0
            for _, arrays, _ in pieces:
                a = arrays[spec.name]
                out[(slice(row, row + a.shape[0]),) + tuple(slice(0, n) for n in a.shape[1:])] = a
                row += a.shape[0]
            batch[spec.name] = np.ascontiguousarray(model_major(out, model_spec))
        else:
            joined = np.concatenate([arrays[spec.name] for _, arrays, _ in pieces], axis=0)
            batch[spec.name] = np.ascontiguousarray(model_major(joined, model_spec))
    return batch
