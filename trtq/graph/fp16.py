"""An FP16 copy of an ONNX graph, for strongly typed TensorRT builds (TensorRT 11 has no FP16 flag).

The graph's inputs and outputs stay FP32 (a Cast at each boundary), so callers feed
and read the same arrays as with the FP32 model. Float tensors inside become FP16,
except around ops that lose accuracy in FP16 (:data:`KEEP_FP32_OPS`: reductions that
accumulate, Softmax, normalizations, Exp/Log/Pow, ...), which run in FP32 with a Cast
on each side. Weights are converted once (clipped to the FP16 range, with a warning);
a weight read both by an FP16 and an FP32 node is kept in both forms.

Q/DQ models: DequantizeLinear's output type is its scale's type, so scales become
FP16 too; FP16 QuantizeLinear needs opset 19, and a Q/DQ model below it is converted
with onnx's version converter first.

Nodes with subgraphs (If/Loop/Scan) and custom-domain nodes stay FP32, as does every
producer of a tensor a subgraph reads from the outer scope.
"""

from __future__ import annotations

import logging
from typing import Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

import numpy as np

from ..errors import ModelError

log = logging.getLogger(__name__)

#: Ops computed in FP32 inside an FP16 graph.
KEEP_FP32_OPS: FrozenSet[str] = frozenset({
    # reductions that accumulate
    "ReduceMean", "ReduceSum", "ReduceSumSquare", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
    "ReduceProd", "CumSum",
    # softmax family
    "Softmax", "LogSoftmax", "Hardmax",
    # normalizations
    "LayerNormalization", "BatchNormalization", "InstanceNormalization", "GroupNormalization",
    "LpNormalization", "MeanVarianceNormalization", "SimplifiedLayerNormalization",
    # range-sensitive elementwise math
    "Exp", "Log", "Pow", "Erf",
    # ops the ONNX spec defines for float32 only
    "NonMaxSuppression", "Range",
    # control flow (subgraphs are not converted)
    "If", "Loop", "Scan",
})

#: Inputs (op type -> slots) that must stay float32 whatever the node computes in.
FP32_INPUT_SLOTS: Dict[str, FrozenSet[int]] = {
    "Resize": frozenset({1, 2}),   # roi, scales
    "Upsample": frozenset({1}),    # scales
}

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
#: FP16 inputs to QuantizeLinear (and FP16 DequantizeLinear scales) need this ai.onnx opset.
QDQ_FP16_OPSET = 19

_FP16_MAX = float(np.finfo(np.float16).max)


def to_fp16(model, keep_fp32_ops: Iterable[str] = KEEP_FP32_OPS, keep_fp32_nodes: Iterable[str] = ()):
    """A converted copy of ``model`` (an ``onnx.ModelProto``); see the module docstring."""
    # Long because one pass over the graph that keeps every cast decision (inputs, initializers, ops kept
    # float) next to each other so the rules read in order.
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from .model import opset_version

    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    if any(node.op_type in QDQ_OPS for node in graph.node) and (opset_version(result) or 0) < QDQ_FP16_OPSET:
        result = _upgrade_opset(result, QDQ_FP16_OPSET)
        graph = result.graph

    _constants_to_initializers(graph)
    types = _tensor_types(result)
    FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

    def is_float(name: str) -> bool:
        return bool(name) and types.get(name) == FLOAT

    keep_ops = frozenset(keep_fp32_ops)
    keep_nodes = set(keep_fp32_nodes)
    outer = _outer_scope_reads(graph)
    initializers = {init.name: init for init in graph.initializer}
    graph_inputs = {vi.name for vi in graph.input}

    def node_in_fp16(node) -> bool:
        if node.op_type in keep_ops or node.name in keep_nodes or node.domain not in ("", "ai.onnx"):
            return False
        if any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in node.attribute):
            return False
        return not any(out in outer for out in node.output)

    precision: Dict[str, int] = {name: FLOAT for name in graph_inputs if is_float(name)}
    converted: Dict[Tuple[str, int], str] = {}   # (tensor, precision) -> name holding it in that precision
    taken: Set[str] = _all_names(graph)
    new_nodes: List = []
    new_initializers: List = []
    clipped: List[str] = []

    def unique(base: str) -> str:
        name, index = base, 1
        while name in taken:
            name, index = f"{base}_{index}", index + 1
        taken.add(name)
        return name

    def tensor_as(name: str, want: int) -> str:
        """``name`` in precision ``want``: itself, a converted weight, or the output of a (shared) Cast."""
        if name in initializers and name not in precision:
            if want == FLOAT:
                return name
            key = (name, want)
            if key not in converted:
                array = numpy_helper.to_array(initializers[name])
                if np.any(np.abs(array[np.isfinite(array)]) > _FP16_MAX):
                    clipped.append(name)
                    array = np.clip(array, -_FP16_MAX, _FP16_MAX)
                fp16_name = unique(f"{name}__fp16")
                new_initializers.append(numpy_helper.from_array(array.astype(np.float16), fp16_name))
                converted[key] = fp16_name
            return converted[key]
        have = precision.get(name, FLOAT)
        if have == want:
            return name
        key = (name, want)
        if key not in converted:
            cast_name = unique(f"{name}__{'fp16' if want == HALF else 'fp32'}")
            new_nodes.append(helper.make_node("Cast", [name], [cast_name], to=want, name=unique(f"Cast_{cast_name}")))
            converted[key] = cast_name
        return converted[key]

    for original in graph.node:
        node = onnx.NodeProto()
        node.CopyFrom(original)
        fp16 = node_in_fp16(node)
        want = HALF if fp16 else FLOAT
        if node.op_type == "Cast":
            to = next((a for a in node.attribute if a.name == "to"), None)
            if fp16 and to is not None and to.i == FLOAT:
                to.i = HALF
                precision[node.output[0]] = HALF
            elif to is not None and to.i == FLOAT:
                precision[node.output[0]] = FLOAT
            new_nodes.append(node)
            continue
        fixed = FP32_INPUT_SLOTS.get(node.op_type, frozenset())
        for slot, name in enumerate(node.input):
            if is_float(name):
                node.input[slot] = tensor_as(name, FLOAT if slot in fixed else want)
        if node.op_type == "ConstantOfShape" and fp16:
            _constant_of_shape_to_fp16(node, types, helper, numpy_helper, TensorProto)
        for out in node.output:
            if is_float(out):
                precision[out] = want
        new_nodes.append(node)

    # Graph outputs stay float32: an FP16 producer writes to a renamed tensor, a Cast restores the name.
    renames: Dict[str, str] = {}
    tail: List = []
    for vi in graph.output:
        if is_float(vi.name) and precision.get(vi.name) == HALF:
            inner = unique(f"{vi.name}__fp16")
            renames[vi.name] = inner
            tail.append(helper.make_node("Cast", [inner], [vi.name], to=FLOAT, name=unique(f"Cast_{vi.name}_out")))
    if renames:
        for node in new_nodes:
            for index, name in enumerate(node.input):
                if name in renames:
                    node.input[index] = renames[name]
            for index, name in enumerate(node.output):
                if name in renames:
                    node.output[index] = renames[name]

    del graph.node[:]
    graph.node.extend(new_nodes + tail)
    graph.initializer.extend(new_initializers)
    used = {name for node in graph.node for name in node.input} | {vi.name for vi in graph.output}
    kept = [init for init in graph.initializer if init.name in used or init.name in graph_inputs]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    del graph.value_info[:]  # stale types; consumers re-infer what they need
    if clipped:
        log.warning("%d weight tensor(s) exceed the FP16 range and were clipped to +-65504 (e.g. %r)",
                    len(clipped), clipped[0])
    return result


def _upgrade_opset(model, version: int):
    import onnx

    from .model import opset_version

    try:
        converted = onnx.version_converter.convert_version(model, version)
    except Exception as exc:
        raise ModelError(f"an FP16 Q/DQ model needs opset {version} (FP16 QuantizeLinear), but onnx's version "
                         f"converter could not convert opset {opset_version(model)}: {str(exc)[:200]}") from None
    log.info("converted the Q/DQ model to opset %d for FP16 QuantizeLinear/DequantizeLinear", version)
    return converted


def _constants_to_initializers(graph) -> None:
    """Float ``Constant`` nodes become initializers (same name), so weights are converted in one place."""
    from onnx import NodeProto, TensorProto, numpy_helper

    kept = []
    for original in graph.node:
        node = NodeProto()
        node.CopyFrom(original)
        if node.op_type == "Constant" and len(node.attribute) == 1:
            attr = node.attribute[0]
            array = None
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                array = numpy_helper.to_array(attr.t)
            elif attr.name == "value_float":
                array = np.array(attr.f, dtype=np.float32)
            elif attr.name == "value_floats":
                array = np.array(list(attr.floats), dtype=np.float32)
            if array is not None:
                graph.initializer.append(numpy_helper.from_array(array.astype(np.float32), node.output[0]))
                continue
        kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def _tensor_types(model) -> Dict[str, int]:
    """Element type per tensor name (shape inference where it works, declared types always)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # inference is best effort; declared types still apply
        log.debug("shape inference failed (%s)", exc)
        inferred = model
    types: Dict[str, int] = {}
    graph = inferred.graph
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def _constant_of_shape_to_fp16(node, types, helper, numpy_helper, TensorProto) -> None:
    value = next((a for a in node.attribute if a.name == "value"), None)
    if value is None:  # default: float32 zero
        node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1, np.float16))))
    elif value.t.data_type == TensorProto.FLOAT:
        array = numpy_helper.to_array(value.t).astype(np.float16)
        value.t.CopyFrom(numpy_helper.from_array(array, value.t.name))


def _all_names(graph) -> Set[str]:
    names = {vi.name for vi in list(graph.input) + list(graph.output) + list(graph.value_info)}
    names |= {init.name for init in graph.initializer}
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        if node.name:
            names.add(node.name)
    return names


def _outer_scope_reads(graph) -> Set[str]:
    """Tensors of ``graph`` that its nodes' subgraphs read by name (implicit inputs)."""
    reads: Set[str] = set()

    def visit(sub, outer_visible: Optional[Set[str]] = None) -> None:
        local = {vi.name for vi in sub.input} | {init.name for init in sub.initializer}
        for node in sub.node:
            for name in node.input:
                if name and name not in local:
                    reads.add(name)
            local.update(node.output)
            for attr in node.attribute:
                for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    visit(g)

    for node in graph.node:
        for attr in node.attribute:
            for g in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                visit(g)
    return reads


__all__ = ["KEEP_FP32_OPS", "FP32_INPUT_SLOTS", "QDQ_FP16_OPSET", "to_fp16"]
