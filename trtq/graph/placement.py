"""Where Q/DQ go: TensorRT's placement recommendations as rules over an ONNX graph.

Rules (TensorRT Developer Guide, "Q/DQ layer-placement recommendations"):

1. Quantize every input of weighted ops -- Conv, ConvTranspose, Gemm, MatMul.
   Activations per tensor (scale = amax/127), weights per output channel:

   ========================  ===========================  =====================================
   op                        weight layout                per-channel axis
   ========================  ===========================  =====================================
   Conv                      [M, C/group, k...]           0 (depthwise too: M = C)
   ConvTranspose             [C, M/group, k...]           1 (see note on groups)
   Gemm transB=1             [N, K]                       0
   Gemm transB=0             [K, N]                       1
   MatMul, constant 2-D B    [K, N]                       1 (last axis)
   MatMul, constant B > 2-D  [..., K, N]                  per tensor (TensorRT takes per-channel
                                                          MatMul weights only for 2-D operands)
   ========================  ===========================  =====================================

   A MatMul/Gemm whose second input is not constant (activation x activation, e.g.
   attention) gets per-tensor Q/DQ on both inputs. A constant first operand is
   quantized per tensor. Bias (Conv/ConvTranspose input 2, Gemm C) stays float.

   ConvTranspose with group > 1: output channel ``o = g * (M/group) + j`` is not one
   axis of the weight, so axis 1 (length M/group) is used with each scale covering
   channel j of every group (amax taken over all groups): still symmetric per-axis
   quantization that every DequantizeLinear implementation computes exactly, just
   coarser than per output channel. For group == 1 it is exactly per output channel.

2. Do not quantize weighted-op outputs (TensorRT fuses bias, BN, activation and a
   residual Add into the op, and a Q on its output would split such fusions).
3. Do not simulate BN/ReLU fusion: Q/DQ go before the weighted op, never between it
   and its BatchNormalization/activation.
4. Quantize the residual input of skip-connection Adds. An Add with two non-constant
   inputs where one input comes from a quantized Conv/ConvTranspose (directly or through
   ops TensorRT fuses into it: BN, Relu/SiLU/..., a constant scale or bias) and the
   other does not: the other (residual) input gets Q/DQ, so TensorRT fuses the Add
   into the conv and reads the skip tensor in INT8. When both inputs come from
   weighted ops (a projection shortcut), the branch with the shorter path from the
   inputs' common ancestor is the residual one.

   Only after convolutions, as the guide's residual example (a ResNet block) has it: a
   transformer's Add after a MatMul carries the residual stream, whose outlier channels
   one per-tensor int8 scale cannot hold, and TensorRT's transformer fusions do not need
   it in INT8. Measured on all-MiniLM-L6-v2 (300 real sentences, mse scales, TensorRT
   form, 64 held-out sentences): with the 18 MatMul-branch residuals quantized, 12.97 dB /
   cosine 0.974 on the hidden states; without them 14.96 dB / 0.984 (sentence embedding
   14.7 -> 17.7 dB). Conv nets are unchanged.

The ``cpu`` target adds, for ONNX Runtime (which swaps a float op for an integer kernel
only where Q/DQ surround it; the cast TensorRT would fuse on its own):

5. Outputs of quantized weighted ops (``DQ -> Conv -> Q`` becomes QLinearConv; without
   the Q, ORT runs a float Conv on dequantized values, slower than FP32).
6. Inputs and outputs of the cheap ops between quantized ops (Add, Mul, Concat,
   Sigmoid, MaxPool, Resize, Split, ...: :data:`CPU_QUANTIZABLE_OPS`), so SiLU, C2f
   splits/concats and upsampling run on uint8 (QLinearSigmoid, QLinearMul, ...).

   Rules 5 and 6 apply only inside a region that stays quantized: an op qualifies when
   its float inputs are quantized or come from qualifying ops and every consumer of its
   output is a quantized weighted op or a qualifying op. A conv whose output feeds
   float post-processing (YOLO's last head convs, whose logits go to Sigmoid and box
   decoding) keeps a float output: a clipping calibrator (entropy) may give such logits
   an amax of ~1, and quantizing them would turn every "no object" logit of -10 into a
   score of 0.2. Tensors the TensorRT form quantizes keep their scale in the cpu form
   (identical grids); Sigmoid outputs use their exact range [0, 1]
   (:data:`FIXED_RANGE_OPS`); pure data-movement ops reuse their input's scale.
7. A Relu that is the only consumer of a conv (or Add, ...) output is folded: that output
   gets no Q, the Relu output gets uint8 zero point 0 with its usual scale, and ORT
   removes the Relu (a Q whose range starts at 0 clamps exactly like it), so
   Conv -> Relu runs as one QLinearConv. On [0, amax] the grid is the int8 one; values
   above amax (outliers calibration did not see) saturate at 2*amax instead of amax.
"""

from __future__ import annotations

import fnmatch
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

log = logging.getLogger(__name__)

WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: Ops TensorRT fuses into a preceding weighted op (walked back through to find a conv branch).
FUSIBLE_EPILOGUE_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Clip", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Selu",
    "Softplus", "Gelu", "Mish", "BatchNormalization",
})
_CONV_BRANCH_DEPTH = 8
_LCA_DEPTH = 64

Use = Tuple[int, int]  # (node index, input slot)


@dataclass
class LayerPlan:
    """How one weighted op would be quantized (``reason`` set: it cannot be)."""

    index: int
    name: str
    op_type: str
    activations: List[Tuple[int, str]] = field(default_factory=list)                    # (slot, tensor)
    weights: List[Tuple[int, str, Optional[int]]] = field(default_factory=list)         # (slot, initializer, axis)
    reason: Optional[str] = None


@dataclass
class Plan:
    """The full placement: which tensors get Q/DQ and which node inputs read them."""

    activations: Dict[str, List[Use]] = field(default_factory=dict)
    weights: Dict[Tuple[str, Optional[int]], List[Use]] = field(default_factory=dict)
    quantized: List[str] = field(default_factory=list)
    excluded: Dict[str, str] = field(default_factory=dict)
    missing_amax: List[str] = field(default_factory=list)
    residual_inputs: List[str] = field(default_factory=list)
    extra_outputs: List[str] = field(default_factory=list)
    unmatched_exclude: List[str] = field(default_factory=list)
    scale_source: Dict[str, str] = field(default_factory=dict)   # tensor -> tensor whose amax it uses
    amax_override: Dict[str, float] = field(default_factory=dict)  # tensor -> amax known from its op
    unsigned: Set[str] = field(default_factory=set)                 # cpu form: non-negative, uint8 zero point 0
    weight_tensors: Dict[str, object] = field(default_factory=dict)  # weight name -> float TensorProto
    weight_nodes: Dict[str, int] = field(default_factory=dict)      # weight name -> its Constant node, if any

    def amax_of(self, tensor: str, amax: Mapping[str, float]) -> float:
        source = self.scale_source.get(tensor, tensor)
        return float(self.amax_override[source] if source in self.amax_override else amax[source])

    def use_activation(self, tensor: str, use: Use) -> None:
        uses = self.activations.setdefault(tensor, [])
        if use not in uses:
            uses.append(use)

    def missing(self, tensor: str) -> None:
        if tensor not in self.missing_amax:
            self.missing_amax.append(tensor)


class GraphIndex:
    """Producers, consumers, constants and element types of a graph's tensors."""

    def __init__(self, model):
        from onnx import TensorProto

        graph = model.graph
        self.nodes = list(graph.node)
        self.initializers = {init.name: init for init in graph.initializer}
        self.producer: Dict[str, int] = {}
        self.consumers: Dict[str, List[Use]] = {}
        for index, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = index
            for slot, tensor in enumerate(node.input):
                if tensor:
                    self.consumers.setdefault(tensor, []).append((index, slot))
        #: float weights stored in the file: initializers and Constant nodes' ``value`` tensors
        self.weights, self.constant_nodes = stored_weights(graph)
        self.constant: Set[str] = set(self.initializers)
        for node in self.nodes:
            inputs = [i for i in node.input if i]
            if node.op_type == "Constant" or (inputs and all(i in self.constant for i in inputs)):
                self.constant.update(o for o in node.output if o)
        self.types = element_types(model)
        self.FLOAT = TensorProto.FLOAT
        self.graph_outputs = {vi.name for vi in graph.output}

    def is_float(self, tensor: str) -> Optional[bool]:
        """True/False when the element type is known, None when it is not."""
        if tensor in self.weights:
            return self.weights[tensor].data_type == self.FLOAT
        elem = self.types.get(tensor)
        return None if not elem else elem == self.FLOAT

    def is_constant(self, tensor: str) -> bool:
        return tensor in self.constant

    def producer_node(self, tensor: str):
        index = self.producer.get(tensor)
        return None if index is None else self.nodes[index]


def stored_weights(graph) -> Tuple[Dict[str, object], Dict[str, int]]:
    """The tensors a graph stores (initializers and Constant nodes' ``value``) by name, and the Constant
    nodes' indices: what a weight or bias can be read from without running the graph."""
    weights = {init.name: init for init in graph.initializer}
    constant_nodes: Dict[str, int] = {}
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and node.output and any(a.name == "value" for a in node.attribute):
            weights[node.output[0]] = next(a.t for a in node.attribute if a.name == "value")
            constant_nodes[node.output[0]] = index
    return weights, constant_nodes


#: element types by :func:`_structure_key`: auto plans the same graph once per candidate table and refinement
#: trial (41 plans of YOLOv8n in a default calibration), and shape inference serializes the whole model, weights
#: included, each time (2.2 s of YOLOv8n's 67 s default)
_TYPES_SEEN: "Dict[str, Dict[str, int]]" = {}
_TYPES_KEPT = 8


def _structure_key(model) -> str:
    """A digest of what element types depend on: opsets, nodes (their attributes and subgraphs), functions, the
    graph's inputs, outputs and value_info, and each initializer's name, type and dims, never the weights' values
    (a Cast's ``to`` is an attribute: types never read a stored value)."""
    import hashlib

    graph = model.graph
    digest = hashlib.sha256()
    digest.update(str(model.ir_version).encode())
    for part in [*model.opset_import, *graph.node, *graph.input, *graph.output, *graph.value_info,
                 *getattr(model, "functions", ())]:
        digest.update(part.SerializeToString())
        digest.update(b"\0")
    for init in graph.initializer:
        digest.update(f"{init.name}:{init.data_type}:{list(init.dims)}:{init.data_location}".encode())
        digest.update(b"\0")
    return digest.hexdigest()


def element_types(model) -> Dict[str, int]:
    """name -> element type (``onnx.TensorProto`` enum) of every tensor shape inference types (none where it
    fails: custom ops, > 2 GB). Inferred once per graph structure (weights' values do not type anything)."""
    key = _structure_key(model)
    if key not in _TYPES_SEEN:
        if len(_TYPES_SEEN) >= _TYPES_KEPT:
            _TYPES_SEEN.pop(next(iter(_TYPES_SEEN)))
        _TYPES_SEEN[key] = _inferred_types(model)
    return dict(_TYPES_SEEN[key])


def _inferred_types(model) -> Dict[str, int]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # inference is best effort (custom ops, >2 GB): unknown types pass
        log.debug("shape inference failed (%s); element types unknown", exc)
        inferred = model
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            types[vi.name] = vi.type.tensor_type.elem_type
    return types


def _attr(node, name: str, default):
    for attr in node.attribute:
        if attr.name == name:
            import onnx

            return onnx.helper.get_attribute_value(attr)
    return default


def _weight_axis(node, slot: int, rank: int) -> Optional[int]:
    """Per-channel axis of a constant input (None: per tensor), following the table above."""
    if slot != 1:
        return None
    op = node.op_type
    if op == "Conv":
        axis = 0
    elif op == "ConvTranspose":
        axis = 1
    elif op == "Gemm":
        axis = 0 if _attr(node, "transB", 0) else 1
    else:  # MatMul: per-channel only for a 2-D [K, N] weight
        axis = 1 if rank == 2 else None
    return axis if axis is not None and axis < rank else None


def _plan_layer(index: int, name: str, node, graph: GraphIndex) -> LayerPlan:
    plan = LayerPlan(index=index, name=name, op_type=node.op_type)
    inputs = list(node.input)
    if len(inputs) < 2 or not inputs[0] or not inputs[1]:
        plan.reason = "fewer than two inputs"
        return plan
    for slot in (0, 1):  # data and weight; bias (slot 2) stays float
        tensor = inputs[slot]
        if graph.is_float(tensor) is False:
            plan.reason = f"input {tensor!r} is not float32"
            plan.activations, plan.weights = [], []
            return plan
        weight = graph.weights.get(tensor)
        if weight is not None:
            plan.weights.append((slot, tensor, _weight_axis(node, slot, len(weight.dims))))
        else:  # activations, and weights computed at run time (Transpose/Identity of a constant)
            plan.activations.append((slot, tensor))
    return plan


def plan_weighted_ops(model, names: Sequence[str], graph: Optional[GraphIndex] = None) -> List[LayerPlan]:
    """A :class:`LayerPlan` for every weighted op, in graph order."""
    graph = graph or GraphIndex(model)
    return [_plan_layer(index, names[index], node, graph)
            for index, node in enumerate(graph.nodes) if node.op_type in WEIGHTED_OPS]


class _Matcher:
    """``--exclude`` entries: node names, op types, or name patterns with * ? [ ]."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = [p for p in (str(p).strip() for p in patterns) if p]

    def __call__(self, name: str, op_type: str) -> Optional[str]:
        for pattern in self.patterns:
            if self._hit(pattern, name, op_type):
                return pattern
        return None

    def unmatched(self, names: Sequence[str], nodes) -> List[str]:
        """Patterns that name no node and no op type of the graph (typos worth a warning)."""
        return [p for p in self.patterns
                if not any(self._hit(p, name, node.op_type) for name, node in zip(names, nodes))]

    @staticmethod
    def _hit(pattern: str, name: str, op_type: str) -> bool:
        return pattern == name or pattern == op_type or (
            any(c in pattern for c in "*?[") and fnmatch.fnmatchcase(name, pattern))


#: Weighted ops whose output Add takes a quantized residual input (rule 4).
RESIDUAL_FUSING_OPS = ("Conv", "ConvTranspose")


def _conv_branch(tensor: str, graph: GraphIndex, quantized_nodes: Set[int], depth: int = _CONV_BRANCH_DEPTH) -> Optional[int]:
    """Index of the quantized Conv/ConvTranspose ``tensor`` comes from through fusible epilogue ops, else None."""
    index = graph.producer.get(tensor)
    if index is None or depth <= 0:
        return None
    node = graph.nodes[index]
    if index in quantized_nodes:
        return index if node.op_type in RESIDUAL_FUSING_OPS else None
    if node.op_type in FUSIBLE_EPILOGUE_OPS:
        return _conv_branch(node.input[0], graph, quantized_nodes, depth - 1)
    if node.op_type in ("Mul", "Add", "Sub", "Div") and len(node.input) == 2:
        a, b = node.input
        # SiLU / swish: x * Sigmoid(x)
        for x, s in ((a, b), (b, a)):
            producer = graph.producer_node(s)
            if node.op_type == "Mul" and producer is not None and producer.op_type == "Sigmoid" and producer.input[0] == x:
                return _conv_branch(x, graph, quantized_nodes, depth - 1)
        # constant scale or bias
        if graph.is_constant(b) and not graph.is_constant(a):
            return _conv_branch(a, graph, quantized_nodes, depth - 1)
        if graph.is_constant(a) and not graph.is_constant(b) and node.op_type in ("Mul", "Add"):
            return _conv_branch(b, graph, quantized_nodes, depth - 1)
    return None


def _ancestor_distances(tensor: str, graph: GraphIndex) -> Dict[int, int]:
    """Backward BFS from ``tensor``: node index -> number of nodes walked through."""
    distances: Dict[int, int] = {}
    start = graph.producer.get(tensor)
    if start is None:
        return distances
    queue = deque([(start, 0)])
    while queue:
        index, dist = queue.popleft()
        if index in distances or dist > _LCA_DEPTH:
            continue
        distances[index] = dist
        for inp in graph.nodes[index].input:
            parent = graph.producer.get(inp)
            if parent is not None and not graph.is_constant(inp):
                queue.append((parent, dist + 1))
    return distances


def _residual_of_two_branches(a: str, b: str, graph: GraphIndex) -> str:
    """Both Add inputs come from weighted ops: the branch closer to the common ancestor is the residual."""
    da, db = _ancestor_distances(a, graph), _ancestor_distances(b, graph)
    common = set(da) & set(db)
    if not common:
        return b
    lca = min(common, key=lambda n: (da[n] + db[n], n))
    return a if da[lca] < db[lca] else b


#: cpu form: ops that only move or select values (the output holds a subset of the input's
#: values), so their output reuses the input's scale and ORT runs them on uint8 directly.
CPU_SAME_SCALE_OPS = frozenset({
    "Relu", "MaxPool", "GlobalMaxPool", "Resize", "Reshape", "Transpose", "Split", "Slice", "Squeeze", "Unsqueeze",
    "Flatten",
})
#: cpu form: ops ORT has uint8 kernels for (QLinearAdd, QLinearMul, QLinearConcat, QLinearSigmoid,
#: QLinearLeakyRelu, QLinearAveragePool, QLinearGlobalAveragePool) when Q/DQ surround them.
CPU_REQUANTIZE_OPS = frozenset({
    "Add", "Mul", "Concat", "Sigmoid", "LeakyRelu", "AveragePool", "GlobalAveragePool",
})
CPU_QUANTIZABLE_OPS = CPU_SAME_SCALE_OPS | CPU_REQUANTIZE_OPS
#: cpu form: ops whose output range is known exactly; their Q uses it instead of the calibrated
#: amax. A clipping calibrator (entropy) may pick amax 0.5 for a Sigmoid inside SiLU
#: (x * sigmoid(x)): clipping the gate there scales every large activation by half.
FIXED_RANGE_OPS = {"Sigmoid": 1.0}


def plan_quantization(
    model,
    names: Sequence[str],
    amax: Mapping[str, float],
    *,
    target: str = "trt",
    exclude: Iterable[str] = (),
    include_only: Optional[Iterable[str]] = None,
) -> Plan:
    """The complete Q/DQ placement for ``model`` (nodes named ``names``) with the given amax table."""
    graph = GraphIndex(model)
    plan = Plan()
    matcher = _Matcher(exclude)
    only = None if include_only is None else {str(n) for n in include_only}
    quantized_nodes: Set[int] = set()

    for layer in plan_weighted_ops(model, names, graph):
        pattern = matcher(layer.name, layer.op_type)
        if pattern is not None:
            plan.excluded[layer.name] = f"excluded ({pattern})"
            continue
        if only is not None and layer.name not in only:
            plan.excluded[layer.name] = "not in include_only"
            continue
        if layer.reason:
            plan.excluded[layer.name] = layer.reason
            continue
        missing = [tensor for _, tensor in layer.activations if tensor not in amax]
        if missing:
            for tensor in missing:
                plan.missing(tensor)
            computed = [t for t in missing if graph.is_constant(t)]
            plan.excluded[layer.name] = "no amax for " + ", ".join(repr(t) for t in missing) + (
                " (a weight computed from constants at run time: fold constants first, e.g. with onnxsim)"
                if computed else "")
            continue
        for slot, tensor in layer.activations:
            plan.use_activation(tensor, (layer.index, slot))
        for slot, weight, axis in layer.weights:
            plan.weights.setdefault((weight, axis), []).append((layer.index, slot))
            plan.weight_tensors[weight] = graph.weights[weight]
            if weight in graph.constant_nodes:
                plan.weight_nodes[weight] = graph.constant_nodes[weight]
        quantized_nodes.add(layer.index)
        plan.quantized.append(layer.name)

    # Rule 4: residual inputs of skip-connection Adds.
    for index, node in enumerate(graph.nodes):
        if node.op_type != "Add" or len(node.input) != 2 or matcher(names[index], node.op_type) is not None:
            continue
        a, b = node.input
        if graph.is_constant(a) or graph.is_constant(b) or not (graph.is_float(a) is not False and graph.is_float(b) is not False):
            continue
        from_a = _conv_branch(a, graph, quantized_nodes)
        from_b = _conv_branch(b, graph, quantized_nodes)
        if from_a is None and from_b is None:
            continue
        if from_a is not None and from_b is not None:
            residual = _residual_of_two_branches(a, b, graph)
        else:
            residual = b if from_a is not None else a
        if residual not in amax:
            plan.missing(residual)
            continue
        plan.use_activation(residual, (index, (a, b).index(residual)))
        if residual not in plan.residual_inputs:
            plan.residual_inputs.append(residual)

    if target == "cpu":
        _plan_cpu_extras(graph, names, amax, plan, quantized_nodes, matcher)

    plan.unmatched_exclude = matcher.unmatched(names, graph.nodes)
    return plan


def _plan_cpu_extras(graph: GraphIndex, names: Sequence[str], amax: Mapping[str, float], plan: Plan,
                     quantized_nodes: Set[int], matcher: _Matcher) -> None:
    """Rules 5 and 6 (ONNX Runtime): keep quantized regions in uint8 from op to op.

    A fixed point decides which weighted-op outputs get a Q (rule 5) and which cheap ops
    run in uint8 (rule 6): an op qualifies when every float input is already quantized or
    comes from a qualifying op, and every consumer of its outputs is a quantized weighted
    op or a qualifying op (never a graph output). So a quantized region never ends in a
    float consumer: a detection head's logits feeding float post-processing (Sigmoid,
    box decoding) keep their float values, as they do in the TensorRT form. Only tensors
    known to be float32 are touched: a shape or index tensor never gets a Q/DQ.
    """
    def float_inputs(node):
        return [(slot, t) for slot, t in enumerate(node.input)
                if t and not graph.is_constant(t) and graph.is_float(t)]

    def float_outputs(node):
        return [t for t in node.output if t and graph.is_float(t)]

    def has_range(tensor: str, op_type: str) -> bool:
        return tensor in amax or op_type in FIXED_RANGE_OPS

    quantized_tensors = set(plan.activations)  # rules 1 and 4
    candidates: Set[int] = set()
    for index, node in enumerate(graph.nodes):
        if node.op_type not in CPU_QUANTIZABLE_OPS or matcher(names[index], node.op_type) is not None:
            continue
        outs, ins = float_outputs(node), float_inputs(node)
        if not outs or not ins or any(t in graph.graph_outputs for t in outs):
            continue
        if node.op_type in CPU_SAME_SCALE_OPS:
            if len(ins) != 1:
                continue
        elif not all(has_range(t, node.op_type) for t in outs):
            continue
        candidates.add(index)
    with_output = {index for index in quantized_nodes
                   if graph.nodes[index].output[0] in amax and graph.nodes[index].output[0] not in graph.graph_outputs}

    def read_only_by_region(node) -> bool:
        return all(consumer in candidates or consumer in quantized_nodes
                   for t in float_outputs(node) for consumer, _ in graph.consumers.get(t, []))

    changed = True
    while changed:
        changed = False
        for index in sorted(with_output):
            if not read_only_by_region(graph.nodes[index]):
                with_output.discard(index)
                changed = True
        for index in sorted(candidates):
            node = graph.nodes[index]
            ok_in = all(t in quantized_tensors or graph.producer.get(t) in candidates
                        or graph.producer.get(t) in with_output for _, t in float_inputs(node))
            if not (ok_in and read_only_by_region(node)):
                candidates.discard(index)
                changed = True

    # Rule 7: a Relu right after a conv or requantizing op (its only consumer) is folded: the
    # producer's output is not quantized, the Relu's output gets uint8 zero point 0 (same
    # scale), and ORT drops the Relu (a Q whose range starts at 0 clamps as Relu does), so
    # Conv -> Relu runs as one QLinearConv instead of QLinearConv, DQ, Relu, Q.
    folded: Set[str] = set()
    for index in sorted(candidates):
        node = graph.nodes[index]
        if node.op_type != "Relu" or node.output[0] not in amax:
            continue
        source = node.input[0]
        producer = graph.producer.get(source)
        if (len(graph.consumers.get(source, [])) == 1 and source not in quantized_tensors
                and (producer in with_output
                     or (producer in candidates and graph.nodes[producer].op_type in CPU_REQUANTIZE_OPS))):
            folded.add(source)
            plan.unsigned.add(node.output[0])

    for index in sorted(with_output):  # rule 5: DQ -> Conv -> Q, so ORT fuses a QLinearConv
        if graph.nodes[index].output[0] not in folded:
            _quantize_all_uses(graph.nodes[index].output[0], graph, plan)
    for index in sorted(candidates):  # graph order: a same-scale op's input scale is settled first
        node = graph.nodes[index]
        ins = float_inputs(node)
        for slot, tensor in ins:
            if tensor not in folded:
                plan.use_activation(tensor, (index, slot))
        for out in float_outputs(node):
            if out in folded:
                continue
            if out in quantized_tensors or out in plan.unsigned:
                pass  # keeps its own scale (tensors of the TensorRT form: the grids stay identical)
            elif node.op_type in CPU_SAME_SCALE_OPS:
                source = ins[0][1]
                plan.scale_source[out] = plan.scale_source.get(source, source)
                if source in plan.unsigned and node.op_type != "Resize":
                    # same values, same grid: a MaxPool after a folded Relu keeps zero point 0,
                    # so ORT drops its DQ/Q and pools in uint8 (cubic Resize could undershoot 0)
                    plan.unsigned.add(out)
            elif node.op_type in FIXED_RANGE_OPS:
                plan.amax_override[out] = FIXED_RANGE_OPS[node.op_type]
            _quantize_all_uses(out, graph, plan)

    # Rule 8: a max pool whose output has a TensorRT scale of its own, fed by a folded Relu
    # read by nothing else: the Relu output takes the pooled tensor's scale (zero point 0 for
    # both), so ONNX Runtime pools in uint8 and drops the DQ/Q pair around the pool. Max
    # pooling commutes with the quantizer, and on non-negative values zero point 0 is the
    # int8 grid: the pooled tensor keeps its TensorRT numerics exactly.
    for index in sorted(candidates):
        node = graph.nodes[index]
        if node.op_type not in ("MaxPool", "GlobalMaxPool"):
            continue
        source, out = node.input[0], node.output[0]
        if (out in quantized_tensors and source in plan.unsigned and source not in quantized_tensors
                and len(graph.consumers.get(source, [])) == 1):
            plan.scale_source[source] = out
            plan.unsigned.add(out)


def _quantize_all_uses(tensor: str, graph: GraphIndex, plan: Plan) -> None:
    for use in graph.consumers.get(tensor, []):
        plan.use_activation(tensor, use)
    if tensor not in plan.extra_outputs:
        plan.extra_outputs.append(tensor)
