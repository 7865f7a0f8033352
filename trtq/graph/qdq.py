"""Explicit INT8 quantization: QuantizeLinear/DequantizeLinear (Q/DQ) insertion.

Placement follows TensorRT's "Q/DQ layer-placement recommendations" (see
:mod:`trtq.graph.placement` for the rules and why); this module turns a placement
into graph edits and writes the result.

Two forms of the same quantization come out of one amax table:

``target="trt"``
    What TensorRT's explicit-quantization path (strongly typed networks, TRT 10/11)
    expects: activations int8 with zero point 0 and scale ``amax / 127``; Q/DQ only
    where the placement rules put them (TensorRT fuses the rest itself).

``target="cpu"``
    The same activation grid for ONNX Runtime on x86: activations uint8 with zero point
    128 and the *same* scale (``q_u8 = q_s8 + 128`` exactly), because ORT's fast VNNI/AMX
    kernels are u8 x s8. Weights are stored so that no CPU's integer kernel can overflow
    (:func:`weight_code`): MatMul/Gemm weights as uint8 (the int8 grid shifted by 128),
    convolution weights as int8 in [-64, 64] (7 bits: one bit coarser than TensorRT's).
    ORT only swaps float ops for integer kernels where a Q/DQ
    pattern surrounds them (``DQ -> Conv -> Q`` becomes QLinearConv), so the cpu form
    also quantizes the outputs of quantized weighted ops and of the cheap ops between
    them, inside regions that stay quantized, and folds Relus into the op before them
    with a zero point of 0 (rules 5-7 in :mod:`trtq.graph.placement`). The trt form run in ORT is *slower* than FP32
    (every DQ runs in float, no fusion): it is meant for TensorRT.

Weights are stored as 8-bit initializers behind a DequantizeLinear (no QuantizeLinear):
the file is ~4x smaller, every runtime sees the same integer weights, and it is the form
both TensorRT and ONNX Runtime consume directly (TensorRT: "when using pre-quantized weights,
an IDequantizeLayer is required between the weights and the linear operator").
Biases stay float. Weights must be initializers (not Constant nodes, not behind a
Transpose/Identity): a weight computed at run time is treated as an activation.

Nodes without a name get ``f"{op_type}_{index}"`` (index = position in the graph,
with a ``_<n>`` suffix if that name is taken) in the output model, so summaries,
``--exclude`` and sensitivity results can name every layer. :func:`quantizable_layers`
uses the same names.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import defaults
from ..errors import ModelError, TrtqError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

TARGETS = ("trt", "cpu")
#: Ops whose presence means the model is already quantized (QAT export, ORT quantizer output).
QUANTIZED_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger", "QLinearAdd", "QLinearMul", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
})
_MAX_PROTO_BYTES = 2 ** 31 - 1
_INT8_MAX = np.float32(127.0)

#: Weight codes (how a weight's int8 grid is stored): ``int8`` [-127, 127], zero point 0 (TensorRT form);
#: ``int7`` int8 in [-64, 64], zero point 0; ``uint8`` the int8 grid shifted by 128 (zero point 128).
WEIGHT_CODES = ("int8", "int7", "uint8")
#: The largest |int8 weight| of the cpu form's int7 code: 255 * 64 * 2 = 32640 fits VPMADDUBSW's int16 pairs.
INT7_WEIGHT_MAX = 64
#: Ops whose weights the cpu form stores as uint8 (ONNX Runtime's exact u8 x u8 GEMM); the others get int7.
UINT8_WEIGHT_OPS = frozenset({"MatMul", "Gemm"})


@dataclass
class QuantizeSummary:
    """What :func:`quantize_model` did, for the CLI table, reports and tests."""

    target: str
    quantized: List[str] = field(default_factory=list)           # weighted-op node names now running in INT8
    excluded: Dict[str, str] = field(default_factory=dict)       # node name -> why it stays float
    missing_amax: List[str] = field(default_factory=list)        # activation tensors with no amax (left float)
    per_channel_weights: int = 0                                 # weights quantized per output channel
    per_tensor_weights: int = 0                                  # constant inputs quantized per tensor
    residual_inputs: List[str] = field(default_factory=list)     # skip-connection Add inputs given Q/DQ
    extra_outputs: List[str] = field(default_factory=list)       # cpu form: tensors quantized for ORT's fusions
    quantized_tensors: int = 0                                   # activation tensors with a Q/DQ pair
    activation_tensors: List[str] = field(default_factory=list)  # their names
    activation_uses: Dict[str, List[str]] = field(default_factory=dict)  # tensor -> nodes reading its Q/DQ
    dequantized: Dict[str, str] = field(default_factory=dict)    # tensor -> its DequantizeLinear output
    renamed_nodes: int = 0                                       # unnamed nodes given a name
    unmatched_exclude: List[str] = field(default_factory=list)   # --exclude entries that matched nothing
    opset: Optional[int] = None                                  # ai.onnx opset of the result
    already_quantized: bool = False
    output_path: Optional[str] = None

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- helpers


def _onnx():
    import onnx  # noqa: PLC0415 - heavy import kept out of `import trtq`

    return onnx


def is_quantized(model) -> bool:
    """True when the graph already carries Q/DQ or integer ops (a QAT or ORT-quantized model)."""
    return any(node.op_type in QUANTIZED_OPS for node in _all_nodes(model.graph))


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _all_nodes(attr.g)
            for sub in attr.graphs:
                yield from _all_nodes(sub)


def node_names(model) -> List[str]:
    """Node names as the quantized model will carry them: unnamed nodes get ``{op_type}_{index}``."""
    taken = {n.name for n in model.graph.node if n.name}
    names = []
    for index, node in enumerate(model.graph.node):
        if node.name:
            names.append(node.name)
            continue
        base = f"{node.op_type}_{index}"
        name, suffix = base, 1
        while name in taken:
            name, suffix = f"{base}_{suffix}", suffix + 1
        taken.add(name)
        names.append(name)
    return names


def _scale_from_amax(amax: float) -> np.float32:
    """amax -> float32 scale amax/127; zero or tiny amax gives the smallest scale, never zero."""
    from ..cache import MIN_AMAX

    if not np.isfinite(amax) or amax < 0:
        raise TrtqError(f"amax {amax!r} is not a finite, non-negative number")
    return np.float32(max(float(amax), MIN_AMAX)) / _INT8_MAX


def quantize_weight(weight: np.ndarray, axis: Optional[int],
                    min_scale: Optional[np.ndarray] = None, levels: int = 127) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of a float weight: per channel along ``axis`` or per tensor.

    Returns ``(int8 values, float32 scales)``; scale = max|w| / ``levels`` per channel (127;
    the cpu form's int7 code: :data:`INT7_WEIGHT_MAX`), values in [-levels, levels]. A channel
    of zeros (a pruned filter) takes the largest scale of the tensor: its int8 values are 0
    whatever the scale, and a degenerate scale of ~1e-9 would overflow the int32 bias an
    integer kernel computes as ``bias / (input scale * weight scale)`` (ONNX Runtime's
    QLinearConv: measured 39 dB -> 0.3 dB on a conv with one pruned channel and a bias).
    ``min_scale`` (per channel or scalar): a floor on the scales, see :func:`bias_scale_floor`.
    """
    from ..cache import MIN_AMAX

    w = np.asarray(weight, dtype=np.float32)
    if axis is None:
        amax = np.array(np.abs(w).max() if w.size else 0.0, dtype=np.float32)
        scale = np.maximum(amax, np.float32(MIN_AMAX)) / np.float32(levels)
        if min_scale is not None:
            scale = np.maximum(scale, np.float32(np.max(min_scale)))
        q = np.clip(np.rint(w / scale), -levels, levels).astype(np.int8)
        return q, np.asarray(scale, dtype=np.float32)
    reduce_axes = tuple(a for a in range(w.ndim) if a != axis)
    amax = np.abs(w).max(axis=reduce_axes) if w.size else np.zeros(w.shape[axis], np.float32)
    amax = amax.astype(np.float32)
    if amax.size and amax.max() > 0:
        amax = np.where(amax > 0, amax, amax.max())  # pruned channels: the tensor's own largest step
    scale = (np.maximum(amax, np.float32(MIN_AMAX)) / np.float32(levels)).astype(np.float32)
    if min_scale is not None:
        scale = np.maximum(scale, np.asarray(min_scale, dtype=np.float32)).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -levels, levels).astype(np.int8)
    return q, scale


#: The largest |bias| an integer kernel's int32 bias may hold, with headroom for the accumulated products.
INT32_BIAS_LIMIT = float(2 ** 30)


def bias_scale_floor(bias: np.ndarray, input_amax: float) -> np.ndarray:
    """Smallest weight scale per output channel that keeps ``bias / (input scale * weight scale)`` in int32.

    Integer kernels (ONNX Runtime's QLinearConv/QLinearMatMul fused from DQ -> Conv -> Q,
    TensorRT's INT8 convolutions) add the bias in the int32 accumulator, quantized with
    the product of the input's and the weight's scales. A channel whose weights are tiny
    beside its bias (pruned, or BatchNorm-folded with a near-zero variance) would overflow
    it: the weight's scale is raised just enough (ONNX Runtime's own quantizer does the same).
    """
    x_scale = float(_scale_from_amax(input_amax))
    return (np.abs(np.asarray(bias, dtype=np.float64)) / (x_scale * INT32_BIAS_LIMIT)).astype(np.float32)


# --------------------------------------------------------------------------- graph edits


class _Editor:
    """Collects Q/DQ nodes and initializers and rewires consumers; one Q/DQ pair per tensor."""

    def __init__(self, model, target: str, names: Sequence[str]):
        self.onnx = _onnx()
        self.target = target
        self.graph = model.graph
        self.taken = set(names)
        for node in self.graph.node:
            self.taken.update(node.output)
            self.taken.update(node.input)
        self.taken.update(init.name for init in self.graph.initializer)
        self.taken.update(vi.name for vi in list(self.graph.input) + list(self.graph.output))
        self.activation_dq: Dict[str, str] = {}              # tensor -> DQ output
        self.weight_dq: Dict[Tuple[str, Optional[int]], str] = {}
        self.new_initializers: list = []
        self.after: Dict[str, list] = {}                      # produced tensor -> its Q/DQ, emitted right after the producer
        self.head: list = []                                   # emitted first: Q/DQ of graph inputs, weight DQs
        self.rewire: Dict[Tuple[int, int], str] = {}          # (node index, input slot) -> new tensor

    def unique(self, name: str) -> str:
        candidate, n = name, 1
        while candidate in self.taken:
            candidate, n = f"{name}_{n}", n + 1
        self.taken.add(candidate)
        return candidate

    def _initializer(self, name: str, array: np.ndarray) -> str:
        name = self.unique(name)
        self.new_initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def activation(self, tensor: str, amax: float, anchor: Optional[str], unsigned: bool = False) -> str:
        """Q/DQ pair for an activation tensor (reused); returns the DQ output name.

        ``unsigned`` (cpu form, a Relu output): uint8 with zero point 0 -- the same steps
        as int8 on [0, amax], which is all a non-negative tensor uses.
        """
        if tensor in self.activation_dq:
            return self.activation_dq[tensor]
        helper = self.onnx.helper
        scale = self._initializer(f"{tensor}_scale", np.array(_scale_from_amax(amax), dtype=np.float32))
        if self.target == "cpu":
            zero = self._initializer(f"{tensor}_zero_point", np.array(0 if unsigned else 128, dtype=np.uint8))
        else:
            zero = self._initializer(f"{tensor}_zero_point", np.array(0, dtype=np.int8))
        quantized = self.unique(f"{tensor}_quantized")
        dequantized = self.unique(f"{tensor}_dequantized")
        nodes = [
            helper.make_node("QuantizeLinear", [tensor, scale, zero], [quantized], name=self.unique(f"{tensor}_QuantizeLinear")),
            helper.make_node("DequantizeLinear", [quantized, scale, zero], [dequantized],
                             name=self.unique(f"{tensor}_DequantizeLinear")),
        ]
        if anchor is None:
            self.head.extend(nodes)
        else:
            self.after.setdefault(anchor, []).extend(nodes)
        self.activation_dq[tensor] = dequantized
        return dequantized

    def weight(self, name: str, init, axis: Optional[int], min_scale: Optional[np.ndarray] = None,
               code: str = "int8") -> str:
        """Integer initializer (``code``: one of :data:`WEIGHT_CODES`) + DequantizeLinear for a float weight
        (reused per (weight, axis))."""
        key = (name, axis)
        if key in self.weight_dq:
            return self.weight_dq[key]
        helper = self.onnx.helper
        values = self.onnx.numpy_helper.to_array(init)
        q, scale = quantize_weight(values, axis, min_scale, levels=INT7_WEIGHT_MAX if code == "int7" else 127)
        zero = np.zeros(scale.shape, dtype=np.int8)
        if code == "uint8":  # q_u8 = q_s8 + 128 with zero point 128: the same values
            q = (q.astype(np.int16) + 128).astype(np.uint8)
            zero = np.full(scale.shape, 128, dtype=np.uint8)
        q_name = self._initializer(f"{name}_quantized", q)
        scale_name = self._initializer(f"{name}_scale", scale)
        zero_name = self._initializer(f"{name}_zero_point", zero)
        dequantized = self.unique(f"{name}_dequantized")
        attrs = {} if axis is None else {"axis": int(axis)}
        self.head.append(helper.make_node("DequantizeLinear", [q_name, scale_name, zero_name], [dequantized],
                                          name=self.unique(f"{name}_DequantizeLinear"), **attrs))
        self.weight_dq[key] = dequantized
        return dequantized

    def build(self, names: Sequence[str], unused_weights: Iterable[str], dead_nodes: Iterable[int] = ()) -> None:
        """Write the edits into the graph, keeping nodes in topological order."""
        graph = self.graph
        emitted = list(self.head)
        dead = set(dead_nodes)
        for index, node in enumerate(list(graph.node)):
            if index in dead:
                continue
            new = self.onnx.NodeProto()
            new.CopyFrom(node)
            new.name = names[index]
            for slot in range(len(new.input)):
                replacement = self.rewire.get((index, slot))
                if replacement:
                    new.input[slot] = replacement
            emitted.append(new)
            for out in node.output:
                emitted.extend(self.after.pop(out, []))
        del graph.node[:]
        graph.node.extend(emitted)
        drop = set(unused_weights)
        if drop:
            keep = [init for init in graph.initializer if init.name not in drop]
            del graph.initializer[:]
            graph.initializer.extend(keep)
            keep_inputs = [vi for vi in graph.input if vi.name not in drop]
            del graph.input[:]
            graph.input.extend(keep_inputs)
        graph.initializer.extend(self.new_initializers)


# --------------------------------------------------------------------------- public API


def check_target(target: str) -> None:
    if target not in TARGETS:
        raise TrtqError(f"unknown quantization target {target!r}; choose 'trt' (TensorRT) or 'cpu' (ONNX Runtime)")


def _ensure_opset(model):
    """Return a model at ai.onnx opset >= QDQ_MIN_OPSET (converted with onnx's version converter)."""
    from .model import opset_version

    current = opset_version(model)
    if current is None:
        raise ModelError("the model imports no ai.onnx opset; cannot add QuantizeLinear/DequantizeLinear")
    if current >= defaults.QDQ_MIN_OPSET:
        return model
    onnx = _onnx()
    try:
        converted = onnx.version_converter.convert_version(model, defaults.QDQ_MIN_OPSET)
        onnx.checker.check_model(converted)
    except Exception as exc:
        raise ModelError(
            f"the model uses opset {current}; Q/DQ with per-channel weights needs opset {defaults.QDQ_MIN_OPSET} "
            f"and onnx's version converter could not convert it ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Re-export the model with opset {defaults.QDQ_MIN_OPSET} or newer "
            f"(torch.onnx.export(..., opset_version=17))") from None
    # One calibration builds a dozen Q/DQ models of one graph: say it once, not once per model.
    level = logging.DEBUG if current in _CONVERSIONS_SAID else logging.INFO
    _CONVERSIONS_SAID.add(current)
    log.log(level, "converted the model from opset %d to %d for Q/DQ", current, defaults.QDQ_MIN_OPSET)
    return converted


#: Source opsets whose conversion this process has already reported.
_CONVERSIONS_SAID: set = set()


def quantizable_layers(model) -> List[str]:
    """Names of the weighted-op nodes (Conv, ConvTranspose, Gemm, MatMul) the rules would quantize.

    Given amax for every activation, these are exactly the nodes :func:`quantize_model`
    quantizes with no ``exclude``/``include_only``. Unnamed nodes are named as in the
    quantized model (``{op_type}_{index}``).
    """
    from .placement import plan_weighted_ops

    if is_quantized(model):
        return []
    names = node_names(model)
    plans = plan_weighted_ops(model, names)
    return [plan.name for plan in plans if plan.reason is None]


def quantize_model(
    model,
    amax: Mapping[str, float],
    *,
    target: str = "trt",
    exclude: Iterable[str] = (),
    include_only: Optional[Iterable[str]] = None,
) -> tuple:
    """Insert Q/DQ into a copy of ``model``; returns ``(quantized model, QuantizeSummary)``.

    ``amax``: per-tensor |x| maximum for activations (graph inputs and node outputs).
    ``exclude``: node names or op types (``"Conv"``, ``"/model.22/Concat"``; ``*``/``?``
    wildcards match names) that stay float. ``include_only``: quantize only these
    weighted nodes (sensitivity analysis: "only this layer quantized").

    A model that already holds Q/DQ or integer ops is returned unchanged (a copy that
    serializes to the same bytes) with ``summary.already_quantized``.
    """
    from .placement import plan_quantization, stored_weights

    check_target(target)
    onnx = _onnx()
    summary = QuantizeSummary(target=target)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    if is_quantized(model):
        from .model import opset_version

        summary.already_quantized = True
        summary.opset = opset_version(model)
        log.info("the model already carries Q/DQ (or integer) nodes; returned unchanged")
        return result, summary

    result = _ensure_opset(result)
    names = node_names(result)
    summary.renamed_nodes = sum(1 for node in result.graph.node if not node.name)
    plan = plan_quantization(result, names, amax, target=target, exclude=exclude, include_only=include_only)

    editor = _Editor(result, target, names)
    producers = {out: index for index, node in enumerate(result.graph.node) for out in node.output}
    for tensor, consumers in plan.activations.items():
        anchor = tensor if tensor in producers else None
        dq = editor.activation(tensor, plan.amax_of(tensor, amax), anchor, unsigned=tensor in plan.unsigned)
        summary.dequantized[tensor] = dq
        summary.activation_uses[tensor] = list(dict.fromkeys(names[index] for index, _ in consumers))
        for index, slot in consumers:
            editor.rewire[(index, slot)] = dq
    stored = stored_weights(result.graph)[0] if plan.weights else {}  # the biases, read once
    for (name, axis), consumers in plan.weights.items():
        readers = {result.graph.node[index].op_type for index, _ in consumers}
        dq = editor.weight(name, plan.weight_tensors[name], axis,
                           _bias_floor(result, consumers, axis, plan, amax, stored), weight_code(target, readers))
        for index, slot in consumers:
            editor.rewire[(index, slot)] = dq
    # A float weight no longer read by any node is dropped (its int8 copy replaces it).
    still_read = set()
    for index, node in enumerate(result.graph.node):
        for slot, tensor in enumerate(node.input):
            if (index, slot) not in editor.rewire:
                still_read.add(tensor)
    still_read.update(vi.name for vi in result.graph.output)
    unused = {name for name, _ in plan.weights if name not in still_read}
    editor.build(names, unused, [plan.weight_nodes[name] for name in unused if name in plan.weight_nodes])

    from .model import opset_version

    summary.quantized = plan.quantized
    summary.excluded = plan.excluded
    summary.missing_amax = plan.missing_amax
    summary.per_channel_weights = sum(1 for (_, axis) in plan.weights if axis is not None)
    summary.per_tensor_weights = sum(1 for (_, axis) in plan.weights if axis is None)
    summary.residual_inputs = plan.residual_inputs
    summary.extra_outputs = plan.extra_outputs
    summary.quantized_tensors = len(plan.activations)
    summary.activation_tensors = list(plan.activations)
    summary.unmatched_exclude = plan.unmatched_exclude
    summary.opset = opset_version(result)
    return result, summary


def weight_code(target: str, readers: Iterable[str]) -> str:
    """How the ``target`` form stores a weight read by ops ``readers``: one of :data:`WEIGHT_CODES`.

    The TensorRT form: int8. The cpu form must compute the same on every CPU, and ONNX Runtime's
    fused u8 x s8 kernels add two products in a saturating int16 on x86 CPUs without VNNI
    (VPMADDUBSW: 255 * 127 * 2 = 64770 > 32767); an all-int8 cpu form of the demo CNN agreed
    with FP32 on 12 % of digits on an AVX2 EPYC. MatMul/Gemm weights are uint8: ONNX Runtime
    multiplies u8 x u8 exactly everywhere, with its u8 x s8 kernels where the CPU has
    VNNI/AMX (flipping the weights' sign bit: same speed as int8) and by widening to int16
    on AVX2 (slower: MiniLM ran at 1.22x FP32 there, against 1.45x with int7 weights whose
    hidden states read 4.7 dB instead of 13.4 dB: one FFN layer with an outlier channel).
    Convolution weights are int8 in [-64, 64]: |q| <= 64 cannot saturate and keeps ORT's
    fast symmetric-conv kernels (uint8 conv weights ran at 0.9-1.1x FP32 on AVX2); 7 bits
    cost conv nets 2.4-4.9 dB of SNR and no digit's top-1. Measured with
    scripts/bench_cpu_form.py (docs/benchmarks.md).
    """
    if target != "cpu":
        return "int8"
    return "uint8" if set(readers) & UINT8_WEIGHT_OPS else "int7"


def _bias_floor(model, consumers, axis: Optional[int], plan, amax: Mapping[str, float],
                stored: Mapping[str, object]) -> Optional[np.ndarray]:
    """The largest :func:`bias_scale_floor` over the weighted nodes reading a weight (None: no float bias);
    ``stored``: the graph's stored tensors (:func:`trtq.graph.placement.stored_weights`)."""
    floor: Optional[np.ndarray] = None
    for index, slot in consumers:
        node = model.graph.node[index]
        if slot != 1 or len(node.input) < 3 or not node.input[2] or node.input[0] not in plan.activations:
            continue
        bias = stored.get(node.input[2])
        if bias is None or bias.data_type != 1:  # FLOAT
            continue
        values = bias_scale_floor(_onnx().numpy_helper.to_array(bias).reshape(-1),
                                  plan.amax_of(node.input[0], amax))
        if axis is None or values.size != plan.weight_tensors[node.input[1]].dims[axis]:
            values = np.array(values.max() if values.size else 0.0, dtype=np.float32)  # grouped ConvTranspose
        floor = values if floor is None else np.maximum(floor, values)
    return floor


def default_output_path(model_path: PathLike, target: str = "trt") -> Path:
    """``model.onnx`` -> ``model.int8.onnx`` (trt) or ``model.int8-cpu.onnx`` (cpu), beside the model."""
    path = Path(model_path)
    suffix = ".int8.onnx" if target == "trt" else ".int8-cpu.onnx"
    return path.with_name(path.stem + suffix)


def check_exclude(model, exclude: Sequence[str], option: str = "--exclude") -> None:
    """Refuse ``exclude`` entries (node names, op types, name patterns) that match nothing in ``model``, naming
    the closest node names and op types: a typo would otherwise quantize the layer it meant to keep float."""
    import difflib

    from .placement import _Matcher

    names = node_names(model)
    nodes = list(model.graph.node)
    unmatched = _Matcher(exclude).unmatched(names, nodes)
    if not unmatched:
        return
    known = list(dict.fromkeys(names + [n.op_type for n in nodes]))
    parts = []
    for pattern in unmatched:
        close = difflib.get_close_matches(pattern, known, n=3, cutoff=0.5)
        parts.append(f"{pattern!r}" + (f" (closest: {', '.join(repr(c) for c in close)})" if close else ""))
    raise TrtqError(f"{option} {', '.join(parts)} matches no node name or op type of the model; nothing was "
                    "written. Give node names as trtq inspect lists them, op types (Conv, MatMul) or patterns "
                    "(/model.22/*)")


def tensor_names(model) -> List[str]:
    """Graph inputs and every node output: the names a calibration cache may hold."""
    names = [vi.name for vi in model.graph.input]
    names += [out for node in model.graph.node for out in node.output if out]
    return names


def check_quantized(quantized, summary: QuantizeSummary, model_name: str) -> None:
    """Refuse a Q/DQ model that quantizes nothing, is too large for one protobuf, or fails onnx's checker."""
    if not summary.quantized:
        reasons = "; ".join(f"{name}: {why}" for name, why in list(summary.excluded.items())[:5])
        raise ModelError(f"nothing in {model_name} can be quantized: no Conv, ConvTranspose, Gemm or "
                         "MatMul with float inputs"
                         + (f" was left to quantize ({reasons})" if reasons else " was found"))
    payload_size = quantized.ByteSize()
    if payload_size > _MAX_PROTO_BYTES:
        raise ModelError(f"the quantized model is {payload_size / 2**30:.1f} GiB; models over 2 GiB "
                         "(external-data ONNX) are not supported by trtq quantize yet")
    onnx = _onnx()
    try:
        onnx.checker.check_model(quantized)
    except onnx.checker.ValidationError as exc:  # a bug in trtq, not the user's doing: say so
        raise ModelError(f"the quantized model failed onnx's checker ({str(exc)[:300]}); "
                         "please report this with the model") from None


def scales_as_inputs(quantized) -> Tuple[object, List[str]]:
    """``quantized`` (a Q/DQ model) with its activations' Q/DQ scales made graph inputs; returns the model and
    those input names.

    One ONNX Runtime session of it scores any amax table whose Q/DQ model differs only in
    those scales (:func:`scale_feeds`). Weights and their scales stay initializers, so ONNX
    Runtime still folds their DequantizeLinear once at session creation.
    """
    onnx = _onnx()
    result = onnx.ModelProto()
    result.CopyFrom(quantized)
    graph = result.graph
    slots = {node.input[1] for node in graph.node if node.op_type == "QuantizeLinear"}
    moved = [init for init in graph.initializer if init.name in slots]
    keep = [init for init in graph.initializer if init.name not in slots]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    for init in moved:
        graph.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
    return result, [init.name for init in moved]


def scale_feeds(quantized, names: Iterable[str], scoring) -> Dict[str, np.ndarray]:
    """The activation scales ``names`` of a Q/DQ model as arrays (the feeds of :func:`scales_as_inputs`'s
    model ``scoring``); raises ``KeyError`` when the model differs from ``scoring`` in anything else (another
    placement, or weight scales a bias floor moved)."""
    wanted = set(names)
    found = {}
    fixed = {init.name: init for init in scoring.graph.initializer}
    for init in quantized.graph.initializer:
        if init.name in wanted:
            found[init.name] = _onnx().numpy_helper.to_array(init)
        elif init.name not in fixed or fixed[init.name].raw_data != init.raw_data:
            raise KeyError(init.name)
    missing = wanted - set(found)
    if missing or len(quantized.graph.node) != len(scoring.graph.node):
        raise KeyError(sorted(missing)[0] if missing else "nodes")
    return found


def amax_from_qdq(model) -> Dict[str, float]:
    """amax per activation tensor, read back from a Q/DQ model's QuantizeLinear nodes (scale × 127).

    Only activations (QuantizeLinear inputs that are not initializers) with a scalar
    scale are returned; weights are re-quantized from the float weights anyway.
    """
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    constants = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    amax: Dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2 or node.input[0] in initializers:
            continue
        scale_name = node.input[1]
        if scale_name in initializers:
            scale = numpy_helper.to_array(initializers[scale_name])
        elif scale_name in constants:
            scale = constants[scale_name]
        else:
            continue
        if np.size(scale) != 1:
            continue
        amax[node.input[0]] = float(np.float32(np.asarray(scale).reshape(())) * np.float32(127.0))
    return amax


def qdq_form(model) -> str:
    """``"cpu"`` when activation zero points are uint8 (trtq's ONNX Runtime form), else ``"trt"``."""
    from onnx import TensorProto

    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in initializers:
            if initializers[node.input[2]].data_type == TensorProto.UINT8:
                return "cpu"
    return "trt"
