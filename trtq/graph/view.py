"""Walking an ONNX graph: producers and consumers, shape inference, and following one axis through
the ops that move it (Transpose, Reshape, Squeeze, Gather, ...). What :mod:`trtq.graph.signature` reads with."""

from __future__ import annotations

from collections import defaultdict
from typing import Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from .model import Dim

RECURRENT_OPS = ("LSTM", "GRU", "RNN")
#: Ops that keep every axis where it is (one data input, output of the same shape).
_SAME_SHAPE = {
    "Identity", "Cast", "CastLike", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
    "Softmax", "LogSoftmax", "Hardmax", "Exp", "Log", "Neg", "Abs", "Sqrt", "Reciprocal", "Floor", "Ceil", "Round",
    "Sign", "Clip", "Elu", "Selu", "Celu", "Gelu", "Erf", "Softplus", "Softsign", "Mish", "Sin", "Cos", "Not",
    "Dropout", "QuantizeLinear", "DequantizeLinear", "BatchNormalization", "InstanceNormalization",
    "LayerNormalization", "LpNormalization", "LRN", "MeanVarianceNormalization", "IsNaN", "IsInf", "CumSum",
    "Shrink", "ThresholdedRelu", "Slice", "Pad", "Resize", "Upsample", "Trilu",
}
#: Elementwise ops with numpy broadcasting: axes align from the right.
_BROADCAST = {
    "Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where", "Equal", "Greater", "Less",
    "GreaterOrEqual", "LessOrEqual", "And", "Or", "Xor", "Mod", "BitShift", "Expand",
}
#: Ops that keep the batch axis (axis 0 of input 0) and change the others (channels, positions).
_KEEP_AXIS_0 = {"Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "MaxPool", "AveragePool", "LpPool",
                "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool", "SpaceToDepth", "DepthToSpace", "MaxUnpool",
                "RoiAlign", "GridSample"}
_REDUCE = {"ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
           "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"}
#: Ops a decision is followed back through (they move or reshape axes, never the values).
DECISION_PASS = ("Identity", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten")
#: Ops whose every input is followed back (the others: the data input only). ``Add``/``Mul`` appear where an
#: exporter ties an unused input in (Silero VAD: ``stateN = Concat(h, c) + 0 * sr``).
_ALL_INPUTS = ("Concat", "Add", "Mul", "Sub")
#: Hops a trace follows at most (a guard against pathological graphs, far above real chains).
_MAX_STEPS = 20000


def _attr(node, name: str, default=None):
    for attribute in node.attribute:
        if attribute.name == name:
            from onnx import helper

            return helper.get_attribute_value(attribute)
    return default


def recurrent_batch_axis(node, index: int) -> Optional[int]:
    """The batch axis of a recurrent op's input ``index`` (``X``, ``sequence_lens``, ``initial_h``/``c``)."""
    layout = _attr(node, "layout", 0)
    if index == 0:
        return 0 if layout else 1
    if index == 4:
        return 0
    if index in (5, 6):
        return 0 if layout else 1
    return None


class GraphView:
    """The graph flattened for tracing: producers and consumers over the main graph and every subgraph
    (an ``If`` output is produced by its branches' outputs), shapes from ONNX shape inference, constants."""

    def __init__(self, model):
        from onnx import helper

        self.model = model
        self.opset = _opset(model)
        self.producers: Dict[str, Tuple[object, int]] = {}
        self.consumers: Dict[str, List[Tuple[object, int]]] = defaultdict(list)
        self.constants: Dict[str, object] = {}
        self.shapes: Dict[str, Tuple[Dim, ...]] = {}
        self.elem_types: Dict[str, int] = {}
        self.nodes: List[object] = []
        self.branch_outputs: Dict[str, List[str]] = defaultdict(list)  # If output -> each branch's output

        def walk(graph) -> None:
            for init in graph.initializer:
                self.constants[init.name] = init
            for node in graph.node:
                self.nodes.append(node)
                for index, name in enumerate(node.input):
                    if name:
                        self.consumers[name].append((node, index))
                for index, name in enumerate(node.output):
                    if name and node.op_type != "If":  # an If's outputs are its branches' (below)
                        self.producers.setdefault(name, (node, index))
                if node.op_type == "Constant" and node.output:
                    value = _attr(node, "value")
                    if value is not None:
                        self.constants[node.output[0]] = value
                branches = [a.g for a in node.attribute if a.HasField("g")] + [g for a in node.attribute
                                                                               for g in a.graphs]
                for branch in branches:
                    walk(branch)
                    if node.op_type == "If":  # the If output is its branches' output: an Identity of each
                        for index, out in enumerate(node.output):
                            if index < len(branch.output) and out:
                                alias = helper.make_node("Identity", [branch.output[index].name], [out])
                                self.consumers[branch.output[index].name].append((alias, 0))
                                self.producers.setdefault(out, (alias, 0))
                                self.branch_outputs[out].append(branch.output[index].name)

        walk(model.graph)
        self._read_shapes(model)

    def _read_shapes(self, model) -> None:
        try:
            import onnx

            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
        except Exception:  # noqa: BLE001 - a model shape inference cannot read (>2 GB, custom ops): declared shapes
            inferred = model

        def take(values) -> None:
            for vi in values:
                if vi.type.HasField("tensor_type"):
                    self.elem_types.setdefault(vi.name, vi.type.tensor_type.elem_type)
                    if vi.type.tensor_type.HasField("shape"):
                        self.shapes.setdefault(vi.name, _dims(vi.type))

        def walk(graph) -> None:
            take(graph.input)
            take(graph.output)
            take(graph.value_info)
            for node in graph.node:
                for attribute in node.attribute:
                    for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                        walk(sub)

        walk(model.graph)  # declared shapes first: they are the user's
        walk(inferred.graph)
        self.inferred = {vi.name: _dims(vi.type) for vi in list(inferred.graph.output) + list(inferred.graph.value_info)
                         if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape")}
        for name, init in self.constants.items():
            if hasattr(init, "dims"):
                self.shapes.setdefault(name, tuple(int(d) for d in init.dims))

    # ---------------------------------------------------------------- helpers

    def rank(self, name: str) -> Optional[int]:
        shape = self.shapes.get(name)
        return None if shape is None else len(shape)

    def constant(self, name: str) -> Optional[np.ndarray]:
        tensor = self.constants.get(name)
        if tensor is None:
            return None
        from onnx import numpy_helper

        try:
            return numpy_helper.to_array(tensor)
        except Exception:  # noqa: BLE001 - external data not loaded: not a constant we can read
            return None

    def _axes(self, node, position: int = 1) -> Optional[List[int]]:
        """An op's ``axes``: the attribute (older opsets) or the constant input at ``position``."""
        axes = _attr(node, "axes")
        if axes is None and len(node.input) > position and node.input[position]:
            value = self.constant(node.input[position])
            axes = None if value is None else [int(v) for v in np.ravel(value)]
        return None if axes is None else list(axes)

    # ---------------------------------------------------------------- axis mapping

    def map_axis(self, node, index: int, axis: int) -> List[Tuple[str, int]]:
        """Where axis ``axis`` of ``node``'s input ``index`` lands in its outputs: ``[(output, axis)]``
        (empty where the op consumes the axis, or does not say)."""
        op = node.op_type
        outputs = [o for o in node.output if o]
        if not outputs:
            return []
        in_rank = self.rank(node.input[index]) if index < len(node.input) else None
        if in_rank is not None and not 0 <= axis < in_rank:
            return []
        first = outputs[0]
        if op in _SAME_SHAPE:
            return [(first, axis)] if index == 0 else []
        if op in _BROADCAST:
            out_rank = self.rank(first)
            if in_rank is None or out_rank is None:  # ranks unknown: the same rank is the common case
                return [(first, axis)]
            return [(first, axis + out_rank - in_rank)]
        if op == "Concat":
            return [(first, axis)]
        if op == "Split" and index == 0:
            return [(o, axis) for o in outputs]
        if op in _KEEP_AXIS_0 and index == 0:
            return [(first, 0)] if axis == 0 else []
        if op == "Squeeze" and index == 0:
            axes = self._axes(node)
            shape = self.shapes.get(node.input[0])
            if axes is None:
                if shape is None:
                    return []
                axes = [a for a, d in enumerate(shape) if d == 1]
            axes = [a % in_rank if in_rank else a for a in axes]
            if axis in axes:
                return []
            return [(first, axis - sum(a < axis for a in axes))]
        if op == "Unsqueeze" and index == 0:
            axes = self._axes(node)
            if axes is None or in_rank is None:
                return []
            out_rank = in_rank + len(axes)
            inserted = {a % out_rank for a in axes}
            kept = [a for a in range(out_rank) if a not in inserted]
            return [(first, kept[axis])] if axis < len(kept) else []
        if op == "Transpose" and index == 0:
            perm = _attr(node, "perm")
            if perm is None:
                if in_rank is None:
                    return []
                perm = list(range(in_rank))[::-1]
            perm = list(perm)
            return [(first, perm.index(axis))] if axis in perm else []
        if op == "Gather" and index == 0:
            gathered = _attr(node, "axis", 0)
            gathered = gathered % in_rank if in_rank else gathered
            indices = self.rank(node.input[1])
            if indices is None:
                value = self.constant(node.input[1])
                indices = None if value is None else value.ndim
            if axis < gathered:
                return [(first, axis)]
            if axis == gathered or indices is None:
                return []
            return [(first, axis + indices - 1)]
        if op in ("Reshape", "Flatten") and index == 0:
            mapped = reshape_axis(self.shapes.get(node.input[0]), self.shapes.get(first), axis)
            return [] if mapped is None else [(first, mapped)]
        if op in _REDUCE and index == 0:
            axes = _attr(node, "axes")
            if op in ("ArgMax", "ArgMin"):
                axes = [_attr(node, "axis", 0)]
            elif axes is None:
                axes = self._axes(node)
            if axes is None or in_rank is None:
                return []
            keep = _attr(node, "keepdims", 1)
            axes = [a % in_rank for a in axes]
            if axis in axes:
                return []
            return [(first, axis if keep else axis - sum(a < axis for a in axes))]
        if op == "MatMul":
            out_rank = self.rank(first)
            if in_rank is None or out_rank is None:
                return []
            if index == 0 and axis < in_rank - 1:
                return [(first, axis + out_rank - in_rank)]
            if index == 1 and (axis == in_rank - 1 or axis < in_rank - 2):
                return [(first, axis + out_rank - in_rank)]
            return []
        if op == "Gemm":
            trans = _attr(node, "transA" if index == 0 else "transB", 0)
            if index == 0 and axis == (1 if trans else 0):
                return [(first, 0)]
            if index == 1 and axis == (0 if trans else 1):
                return [(first, 1)]
            return []
        if op in RECURRENT_OPS and index in (0, 4, 5, 6) and axis == recurrent_batch_axis(node, index):
            layout = _attr(node, "layout", 0)
            found = []
            for out_index, out in enumerate(node.output):
                if out:
                    found.append((out, (0 if layout else 2) if out_index == 0 else (0 if layout else 1)))
            return found
        return []

    def trace_forward(self, name: str, axis: int) -> Iterable[Tuple[object, int, int, str]]:
        """Every consumer an axis reaches: ``(node, input index, axis there, tensor)``, breadth first."""
        seen: Set[Tuple[str, int]] = set()
        queue = [(name, axis)]
        steps = 0
        while queue and steps < _MAX_STEPS:
            tensor, at = queue.pop(0)
            if (tensor, at) in seen:
                continue
            seen.add((tensor, at))
            for node, index in self.consumers.get(tensor, ()):
                steps += 1
                yield node, index, at, tensor
                queue.extend(self.map_axis(node, index, at))

    def _search(self, name: str, step) -> Set[Tuple[str, int]]:
        """Breadth-first from ``name``: ``step(tensor)`` gives ``(found, next tensors)``; the union of found."""
        found: Set[Tuple[str, int]] = set()
        seen: Set[str] = set()
        queue = [name]
        while queue and len(seen) < _MAX_STEPS:
            tensor = queue.pop(0)
            if tensor in seen:
                continue
            seen.add(tensor)
            hits, more = step(tensor)
            found.update(hits)
            queue.extend(more)
        return found

    def reaches(self, name: str, ops: Sequence[str], targets) -> Set[Tuple[str, int]]:
        """``(op type, input index)`` of the ``targets`` ops that ``name`` reaches through ``ops``."""
        def step(tensor):
            hits, more = [], []
            for node, index in self.consumers.get(tensor, ()):
                if node.op_type in targets:
                    hits.append((node.op_type, index))
                elif node.op_type in ops and (index == 0 or node.op_type == "Concat"):
                    more.extend(o for o in node.output if o)
            return hits, more

        return self._search(name, step)

    def comes_from(self, name: str, ops: Sequence[str], targets) -> Set[Tuple[str, int]]:
        """``(op type, output index)`` of the ``targets`` ops that produce ``name`` through ``ops``."""
        def step(tensor):
            if tensor in self.branch_outputs:  # every branch of an If
                return (), self.branch_outputs[tensor]
            producer = self.producers.get(tensor)
            if producer is None:
                return (), ()
            node, index = producer
            if node.op_type in targets:
                return [(node.op_type, index)], ()
            if node.op_type in ops:
                return (), [i for i in node.input[:None if node.op_type in _ALL_INPUTS else 1] if i]
            return (), ()

        return self._search(name, step)

    def pass_chain(self, name: str) -> Tuple[List[object], Optional[Tuple[object, int]]]:
        """The :data:`DECISION_PASS` nodes that make ``name`` (output side first) and the producer before them."""
        chain = []
        producer = self.producers.get(name)
        while producer is not None and producer[0].op_type in DECISION_PASS and len(chain) < 64:
            chain.append(producer[0])
            producer = self.producers.get(producer[0].input[0])
        return chain, producer

    def follow(self, chain: Sequence[object], axis: int) -> Optional[int]:
        """Where ``axis`` of the tensor before ``chain`` lands after it (None where a step loses it)."""
        for node in reversed(chain):
            mapped = [a for out, a in self.map_axis(node, 0, axis) if out == node.output[0]]
            if not mapped:
                return None
            axis = mapped[0]
        return axis


def _opset(model) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return 13


def _dims(type_proto) -> Tuple[Dim, ...]:
    from .model import _dims as dims

    return dims(type_proto)


def reshape_axis(before: Optional[Sequence[Dim]], after: Optional[Sequence[Dim]], axis: int) -> Optional[int]:
    """Where axis ``axis`` of a tensor of shape ``before`` is after a reshape to ``after``: the axis of the same
    size whose leading (or trailing) elements match, so the axis is the same run of memory; None when unknown."""
    if before is None or after is None or not 0 <= axis < len(before):
        return None
    size = before[axis]
    if not isinstance(size, (int, str)) or size == 1:
        return None

    def product(dims: Sequence[Dim]) -> Optional[Tuple[int, Tuple[str, ...]]]:
        count, symbols = 1, []
        for dim in dims:
            if isinstance(dim, int):
                count *= dim
            elif isinstance(dim, str):
                symbols.append(dim)
            else:
                return None
        return count, tuple(sorted(symbols))

    matches = []
    for index, dim in enumerate(after):
        if dim != size:
            continue
        lead = product(before[:axis])
        trail = product(before[axis + 1:])
        if (lead is not None and lead == product(after[:index])) or (
                trail is not None and trail == product(after[index + 1:])):
            matches.append(index)
    return matches[0] if len(matches) == 1 else None
