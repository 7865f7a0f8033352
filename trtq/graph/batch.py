"""Batch axes applied: ``--batch-axis`` overrides, and feeds cut and joined along each input's own batch axis.

Which axis batches each input is read from the graph once, by :mod:`trtq.graph.signature`
(rules there). ``--batch-axis NAME:AXIS`` (``AXIS`` an integer, negative counting from the
end, or ``none``) overrides the result for one input. An input without a batch axis is fed
unchanged with every batch; its value must be the same for every sample of a run.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import TrtqError
from .model import TensorSpec


class BatchAxisError(TrtqError):
    """A ``--batch-axis`` that names no input, or an axis the input does not have."""


def with_batch_axes(specs: Sequence[TensorSpec], overrides: Optional[Mapping[str, Optional[int]]] = None,
                    inferred: Optional[Mapping[str, Optional[int]]] = None) -> List[TensorSpec]:
    """``specs`` with their batch axes set: ``overrides`` (checked) win over ``inferred`` (default: the
    specs' own)."""
    from dataclasses import replace

    by_name = {s.name: s for s in specs}
    overrides = dict(overrides or {})
    for name, axis in overrides.items():
        if name not in by_name:
            raise BatchAxisError(f"--batch-axis {name}:{axis}: the model has no input {name!r}; its inputs are "
                                 f"{', '.join(by_name)}")
        spec = by_name[name]
        if axis is not None and not -spec.rank <= axis < spec.rank:
            raise BatchAxisError(f"--batch-axis {name}:{axis}: input {name!r} has rank {spec.rank} "
                                 f"({spec.shape_text() or 'a scalar'}), so the axis must be in "
                                 f"{-spec.rank}..{spec.rank - 1}" if spec.rank else
                                 f"--batch-axis {name}:{axis}: input {name!r} is a scalar; it has no axis "
                                 f"(use {name}:none)")
    result = []
    for spec in specs:
        axis = (overrides[spec.name] if spec.name in overrides else
                spec.batch_axis if inferred is None else inferred.get(spec.name, 0))
        if axis is not None:
            axis = axis % spec.rank if spec.rank else None
        result.append(replace(spec, batch_axis=axis))
    return result


def parse_batch_axes(values: Optional[Sequence[str]]) -> Dict[str, Optional[int]]:
    """``["state:1", "sr:none"]`` -> ``{"state": 1, "sr": None}`` (the last ``:`` splits: names may hold colons)."""
    result: Dict[str, Optional[int]] = {}
    for value in values or ():
        name, sep, axis = str(value).rpartition(":")
        if not sep or not name:
            raise BatchAxisError(f"--batch-axis {value}: expected NAME:AXIS, e.g. state:1 (or NAME:none)")
        text = axis.strip().lower()
        if text in ("none", "-"):
            result[name] = None
            continue
        try:
            result[name] = int(text)
        except ValueError:
            raise BatchAxisError(f"--batch-axis {value}: AXIS must be an integer or 'none', got {axis!r}") from None
    return result


def describe_batch_axes(specs: Sequence[TensorSpec]) -> str:
    """One line for logs: ``x: axis 0, state: axis 1, sr: none (fed unchanged)``."""
    return ", ".join(f"{s.name}: axis {s.batch_axis}" if s.batched else f"{s.name}: none (fed unchanged)"
                     for s in specs)


# --------------------------------------------------------------------------- feeds


def feed_samples(feed: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> int:
    """Samples in a model feed: the batch-axis length of its first batched input (1 when none has one)."""
    for spec in specs:
        if spec.batched and spec.name in feed:
            array = np.asarray(feed[spec.name])
            if array.ndim > spec.batch_axis:
                return int(array.shape[spec.batch_axis])
    return 1


def take_samples(feed: Mapping[str, np.ndarray], specs: Sequence[TensorSpec], part: slice) -> Dict[str, np.ndarray]:
    """The samples ``part`` of a feed, cut along each input's batch axis; unbatched inputs as they are."""
    by_name = {s.name: s for s in specs}
    out = {}
    for name, array in feed.items():
        spec = by_name.get(name)
        array = np.asarray(array)
        if spec is None or not spec.batched:
            out[name] = array
        else:
            index = [slice(None)] * array.ndim
            index[spec.batch_axis] = part
            out[name] = array[tuple(index)]
    return out


def sample_major(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """``array`` (the model's layout) with its batch axis moved to the front (a view)."""
    return np.moveaxis(array, spec.batch_axis, 0) if spec.batched and spec.batch_axis else array


def model_major(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """The inverse of :func:`sample_major`: the leading sample axis back at the input's batch axis."""
    return np.moveaxis(array, 0, spec.batch_axis) if spec.batched and spec.batch_axis else array


def major_spec(spec: TensorSpec) -> TensorSpec:
    """``spec`` as seen in sample-major arrays: the batch dim first (dims otherwise in order)."""
    from dataclasses import replace

    if not spec.batched or spec.batch_axis == 0:
        return spec
    shape = list(spec.shape)
    batch = shape.pop(spec.batch_axis)
    return replace(spec, shape=(batch, *shape), batch_axis=0)
