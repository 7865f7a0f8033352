"""The batch axis of each model input: inferred from the graph, overridden by the user, applied to feeds.

trtq batches samples along each input's *own* batch axis, not axis 0 of all. The
axis is found, in this order:

1. **no batch axis** for a scalar (rank 0), and for an input consumed only as a shape,
   size, count or condition (``Reshape``'s shape, ``Expand``/``Tile``/``ConstantOfShape``/
   ``Resize``/``Slice``/``TopK``/``Range`` operands, ``If``'s and ``Loop``'s condition and
   trip count): those are configuration, not samples, and a batch of them would change
   what the graph computes;
2. **the consumer's semantics**: ``LSTM``/``GRU``/``RNN`` read ``initial_h`` and
   ``initial_c`` as ``[num_directions * layers, batch, hidden]`` (axis 1), ``X`` as
   ``[seq, batch, features]`` with ``layout=0`` (axis 1) or ``[batch, seq, features]``
   with ``layout=1`` (axis 0), and ``sequence_lens`` as ``[batch]``;
3. **a shared ``dim_param``**: the symbolic dims found at the batch axis of the inputs
   ruled on above (else at axis 0 of the others) name the batch; another input that
   carries one of them has its batch axis there (``state: [2, batch, 128]`` -> 1);
4. an input whose axis 0 is fixed and which has exactly one dynamic axis, beside inputs
   whose axis 0 is dynamic, is batched on that axis (``state: [2, ?, 128]`` next to
   ``input: [?, ?]``: a fixed axis 0 cannot be the batch of a model that takes any batch);
5. an input whose dims are all fixed while the others carry a symbolic batch is a fixed
   configuration tensor (no batch axis); anything else keeps axis 0.

Consumers are found in subgraphs too (an ``LSTM`` inside an ``If`` branch reading the
outer ``state``).

``--batch-axis NAME:AXIS`` (``AXIS`` an integer, negative counting from the end, or
``none``) overrides the result for one input. An input without a batch axis is fed
unchanged with every batch; its value must be the same for every sample of a run.
"""

from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import TrtqError
from .model import TensorSpec

#: (op type, input index) pairs that read a shape, size, count or condition, never per-sample data.
SHAPE_OPERANDS = {
    ("Reshape", 1), ("Expand", 1), ("Tile", 1), ("ConstantOfShape", 0), ("Range", 0), ("Range", 1), ("Range", 2),
    ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4), ("Resize", 1), ("Resize", 2), ("Resize", 3),
    ("Upsample", 1), ("TopK", 1), ("If", 0), ("Loop", 0), ("Loop", 1), ("OneHot", 1), ("Pad", 1), ("Pad", 2),
    ("Squeeze", 1), ("Unsqueeze", 1), ("ReduceSum", 1), ("ReduceMean", 1), ("ReduceMax", 1), ("ReduceMin", 1),
    ("Split", 1), ("CumSum", 1), ("NonMaxSuppression", 2), ("NonMaxSuppression", 3), ("NonMaxSuppression", 4),
}
#: Recurrent ops: input index -> batch axis (``X`` depends on ``layout``, see :func:`_recurrent_axis`).
RECURRENT_OPS = ("LSTM", "GRU", "RNN")


class BatchAxisError(TrtqError):
    """A ``--batch-axis`` that names no input, or an axis the input does not have."""


def _recurrent_axis(node, index: int) -> Optional[int]:
    layout = next((a.i for a in node.attribute if a.name == "layout"), 0)
    if index == 0:  # X
        return 0 if layout else 1
    if index == 4:  # sequence_lens: [batch]
        return 0
    if index in (5, 6):  # initial_h, initial_c
        return 0 if layout else 1
    return None


def infer_batch_axes(model, specs: Sequence[TensorSpec]) -> Dict[str, Optional[int]]:
    """Per input name, its batch axis as the graph tells it (rules in the module docstring)."""
    consumers: Dict[str, List[Tuple[object, int]]] = {s.name: [] for s in specs}

    def walk(graph) -> None:
        for node in graph.node:
            for index, name in enumerate(node.input):
                if name in consumers:
                    consumers[name].append((node, index))
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    walk(sub)

    walk(model.graph)
    axes: Dict[str, Optional[int]] = {}
    for spec in specs:
        uses = consumers[spec.name]
        if spec.rank == 0 or (uses and all((n.op_type, i) in SHAPE_OPERANDS for n, i in uses)):
            axes[spec.name] = None
            continue
        ruled = [_recurrent_axis(n, i) for n, i in uses if n.op_type in RECURRENT_OPS]
        ruled = [a for a in ruled if a is not None and a < spec.rank]
        if ruled:
            axes[spec.name] = ruled[0]
    symbols = {spec.shape[axes[spec.name]] for spec in specs
               if axes.get(spec.name) is not None and isinstance(spec.shape[axes[spec.name]], str)}
    if not symbols:
        symbols = {spec.shape[0] for spec in specs if spec.name not in axes and isinstance(spec.shape[0], str)}
    open_batch = any(spec.rank and not spec.is_static(0) for spec in specs if spec.name not in axes)
    for spec in specs:
        if spec.name in axes:
            continue
        shared = [axis for axis, dim in enumerate(spec.shape) if isinstance(dim, str) and dim in symbols]
        dynamic = [axis for axis in range(spec.rank) if not spec.is_static(axis)]
        if shared:
            axes[spec.name] = shared[0]
        elif open_batch and spec.rank > 1 and spec.is_static(0) and len(dynamic) == 1:
            axes[spec.name] = dynamic[0]
        elif symbols and all(spec.is_static(axis) for axis in range(spec.rank)):
            axes[spec.name] = None  # a fixed configuration tensor beside symbolically batched inputs
        else:
            axes[spec.name] = 0
    return axes


def output_batch_axes(model, inputs: Sequence[TensorSpec]) -> Dict[str, int]:
    """Per graph output, the axis that counts samples: where it carries a symbol on an input's batch axis, axis 1
    for an ``LSTM``/``GRU``/``RNN`` ``Y_h``/``Y_c`` (``[layers, batch, hidden]``, through ``Identity``), else 0.
    Metrics per sample cut outputs along it."""
    from .model import output_specs

    symbols = {s.batch_dim for s in inputs if s.batched and isinstance(s.batch_dim, str)}
    producers = {out: (node, index) for node in model.graph.node for index, out in enumerate(node.output)}
    axes = {}
    for spec in output_specs(model):
        shared = [axis for axis, dim in enumerate(spec.shape) if isinstance(dim, str) and dim in symbols]
        if shared:
            axes[spec.name] = shared[0]
            continue
        name, hops = spec.name, 0
        while name in producers and producers[name][0].op_type == "Identity" and hops < 8:
            name, hops = producers[name][0].input[0], hops + 1
        node, index = producers.get(name, (None, 0))
        layout = next((a.i for a in node.attribute if a.name == "layout"), 0) if node is not None else 0
        recurrent_state = node is not None and node.op_type in RECURRENT_OPS and index in (1, 2) and not layout
        axes[spec.name] = 1 if recurrent_state and spec.rank == 3 else 0
    return axes


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
