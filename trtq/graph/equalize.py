"""Cross-layer equalization, high-bias absorption and bias correction: a float graph rewrite before INT8.

Per-channel weight scales already absorb different ranges across a convolution's
*output* channels; what they cannot help is a tensor whose channels have very different
ranges (one per-tensor activation scale) or a depthwise convolution whose filters differ
by orders of magnitude. Nagel et al., "Data-Free Quantization Through Weight Equalization
and Bias Correction" (ICCV 2019), rewrite the float model so the ranges meet:

- **cross-layer equalization** (CLE): for a convolution ``P`` followed (through up to three
  positively homogeneous ops: Relu, LeakyRelu, PRelu, MaxPool, Identity, or nothing) by
  a convolution ``C`` reading only it, output channel ``i`` of ``P`` is divided by
  ``s_i`` and input channel ``i`` of ``C`` multiplied by it, with
  ``s_i = sqrt(r1_i / r2_i)`` (``r1_i`` = max|W_P[i]|, ``r2_i`` = max|W_C[:, i]|), so both
  become ``sqrt(r1_i * r2_i)``. ``f(x / s) = f(x) / s`` for those ops and ``s > 0``: the
  float model computes exactly the same outputs (to float rounding). ``C`` may be a
  depthwise convolution (its filter ``i`` is scaled instead). Chains (pointwise ->
  depthwise -> pointwise) are iterated until the scales settle.
- **high-bias absorption**: CLE can leave a channel of ``P`` with a large bias, which
  widens the activation range. Where ``P -> Relu -> C`` and the pre-activation of
  channel ``i`` is never below ``c_i > 0`` on the calibration samples, ``relu(x) =
  relu(x - c) + c``: ``c_i`` moves out of ``P``'s bias into ``C``'s (``b_C +=
  sum_k W_C[:, i, k] * c_i``). Only where ``C`` is 1x1 without padding, so the move is
  exact at the borders too.
- **re-centring** of asymmetric activations: a tensor whose channels sit off zero (HardSwish
  output in [-0.375, inf), Relu and Sigmoid outputs, a squeeze-excite gate's product) spends
  part of the symmetric int8 grid on values it never takes. Where a reader of the tensor is
  a Conv without padding or a Gemm, that reader gets ``x - c`` instead (one Sub node, ``c``
  the per-channel midpoint of the calibration range) and its bias ``+= W c`` (a Conv: summed
  over the kernel), which is exact: ``W (x - c) + b + W c = W x + b``. TensorRT keeps its rules
  (symmetric per-tensor activations): only the tensor it quantizes is narrower. Padded
  convolutions (the depthwise ones) are left alone: their borders would read ``-c``.
- **bias correction**: rounding a weight to int8 shifts the expected output of its layer
  by ``(W_q - W) E[x]``; the float bias is lowered by that amount, with ``E[x]`` per input
  channel measured on the calibration samples (padding ignored).

The result is an ordinary float ONNX model: TensorRT's implicit path builds it with its
cache, the explicit path quantizes it (weights and Q/DQ), and the sidecar records what
was done and the rewritten model's sha256 (:class:`EqualizeReport`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

log = logging.getLogger(__name__)

#: Ops between two convolutions that commute with a positive per-channel scale.
HOMOGENEOUS_OPS = frozenset({"Relu", "LeakyRelu", "PRelu", "MaxPool", "Identity"})
#: Homogeneous ops allowed between the two convolutions of a pair.
_MAX_BETWEEN = 3
#: Sweeps over the pairs (a chain's scales settle within a few).
EQUALIZE_ITERATIONS = 20
#: Scales are clipped to this range per sweep (a channel of zeros must not divide by zero).
_SCALE_RANGE = (1e-4, 1e4)
#: The rewrite's steps, in order: cross-layer equalization, high-bias absorption, re-centring, bias correction
#: (last: it corrects the weights' rounding on the inputs the convolutions then read).
STEPS = ("cle", "absorb", "centre", "bias")
#: A tensor is re-centred for its Conv/Gemm readers only where that narrows its symmetric range by at least this
#: share (a channel midpoint of almost zero buys nothing and costs a Sub node).
CENTRE_MIN_NARROWING = 0.1


def parse_steps(value) -> Tuple[str, ...]:
    """``True``/``"all"`` -> every step; a comma-separated string or a sequence -> those (checked); falsy -> ()."""
    from ..errors import TrtqError

    if value is True or value == "all":
        return STEPS
    if not value:
        return ()
    parts = [p.strip() for p in (value.split(",") if isinstance(value, str) else value) if str(p).strip()]
    unknown = [p for p in parts if p not in STEPS]
    if unknown:
        raise TrtqError(f"--equalize: unknown step {unknown[0]!r}; choose from {', '.join(STEPS)} or all")
    return tuple(step for step in STEPS if step in parts)


@dataclass
class Pair:
    """Two convolutions CLE can equalize: ``producer`` -> (``between``) -> ``consumer``."""

    producer: int                       # node index
    consumer: int
    between: Optional[int] = None       # the first homogeneous op between them, if any
    single: bool = True                 # ``between`` is the only op between them
    depthwise: bool = False             # the consumer is depthwise (group == channels)


@dataclass
class EqualizeReport:
    """What :func:`equalize` changed, for the sidecar and the summary."""

    pairs: List[Tuple[str, str]] = field(default_factory=list)     # (producer, consumer) node names equalized
    iterations: int = 0
    absorbed_channels: int = 0                                       # channels whose bias moved downstream
    absorbed_layers: List[str] = field(default_factory=list)
    centred_tensors: List[str] = field(default_factory=list)         # tensors re-centred for their readers
    corrected_layers: List[str] = field(default_factory=list)        # layers whose bias was corrected
    steps: List[str] = field(default_factory=list)                   # the steps run (see STEPS)
    samples: int = 0                                                 # samples the statistics came from
    source_sha256: Optional[str] = None                              # the model rewritten
    sha256: Optional[str] = None                                     # the rewritten model (its serialized bytes)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["pairs"] = [list(p) for p in self.pairs]
        return data


# --------------------------------------------------------------------------- weights in place


class _Weights:
    """Read and replace float weights held in initializers or Constant nodes (one of each name)."""

    def __init__(self, model):
        from onnx import numpy_helper

        self.model = model
        self.numpy_helper = numpy_helper
        self.holders: Dict[str, object] = {}
        for init in model.graph.initializer:
            self.holders[init.name] = init
        for node in model.graph.node:
            if node.op_type == "Constant" and node.output:
                for attr in node.attribute:
                    if attr.name == "value":
                        self.holders[node.output[0]] = attr.t
        readers: Dict[str, int] = {}
        for node in model.graph.node:
            for tensor in node.input:
                readers[tensor] = readers.get(tensor, 0) + 1
        self.readers = readers
        self.graph_outputs = {o.name for o in model.graph.output}

    def get(self, name: str) -> Optional[np.ndarray]:
        holder = self.holders.get(name)
        if holder is None or holder.data_type != 1:  # FLOAT only
            return None
        return self.numpy_helper.to_array(holder).astype(np.float32)

    def private(self, name: str) -> bool:
        """Read by one node only and not a graph output: safe to rewrite for that node."""
        return self.readers.get(name, 0) == 1 and name not in self.graph_outputs

    def set(self, name: str, array: np.ndarray) -> None:
        holder = self.holders[name]
        holder.CopyFrom(self.numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), holder.name))

    def bias(self, node, channels: int) -> Tuple[str, np.ndarray]:
        """The node's bias (input 2), created as zeros when it has none."""
        if len(node.input) >= 3 and node.input[2]:
            values = self.get(node.input[2])
            if values is None or not self.private(node.input[2]):
                raise ValueError("bias not a private float weight")
            return node.input[2], values
        name = _unique(self.model, f"{node.name or node.output[0]}_trtq_bias")
        init = self.numpy_helper.from_array(np.zeros(channels, np.float32), name)
        self.model.graph.initializer.append(init)
        self.holders[name] = self.model.graph.initializer[-1]
        self.readers[name] = 1
        while len(node.input) < 2:
            node.input.append("")
        if len(node.input) == 2:
            node.input.append(name)
        else:
            node.input[2] = name
        return name, np.zeros(channels, np.float32)


def _unique(model, base: str) -> str:
    taken = {i.name for i in model.graph.initializer} | {t for n in model.graph.node for t in list(n.input) + list(n.output)}
    name, n = base, 1
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def _attr(node, name: str, default):
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


# --------------------------------------------------------------------------- finding pairs


def _conv_weight(node, weights: _Weights) -> Optional[np.ndarray]:
    if node.op_type != "Conv" or len(node.input) < 2:
        return None
    w = weights.get(node.input[1])
    if w is None or w.ndim < 3 or not weights.private(node.input[1]):
        return None
    if len(node.input) >= 3 and node.input[2] and (weights.get(node.input[2]) is None
                                                    or not weights.private(node.input[2])):
        return None
    return w


def find_pairs(model) -> List[Pair]:
    """Every ``Conv -> [homogeneous op] -> Conv`` CLE can rescale exactly (private weights, single readers)."""
    weights = _Weights(model)
    nodes = list(model.graph.node)
    consumers: Dict[str, List[int]] = {}
    for index, node in enumerate(nodes):
        for tensor in node.input:
            consumers.setdefault(tensor, []).append(index)
    outputs = {o.name for o in model.graph.output}

    def only_reader(tensor: str) -> Optional[int]:
        readers = consumers.get(tensor, [])
        if len(readers) != 1 or tensor in outputs:
            return None
        return readers[0]

    pairs: List[Pair] = []
    for index, node in enumerate(nodes):
        w1 = _conv_weight(node, weights)
        if w1 is None or len(node.output) != 1:
            continue
        nxt = only_reader(node.output[0])
        between, last, chain_ok, count = None, node.output[0], True, 0
        for _ in range(_MAX_BETWEEN):  # Conv -> PRelu -> MaxPool -> Conv (MTCNN) is a pair too
            if nxt is None or nodes[nxt].op_type not in HOMOGENEOUS_OPS:
                break
            middle = nodes[nxt]
            if middle.op_type == "PRelu" and (len(middle.input) < 2 or weights.get(middle.input[1]) is None):
                chain_ok = False  # a slope computed at run time
            if middle.op_type == "MaxPool" and len(middle.output) > 1 and middle.output[1]:
                chain_ok = False  # the indices output
            if middle.input[0] != last:
                chain_ok = False
            between = nxt if between is None else between
            count += 1
            last, nxt = middle.output[0], only_reader(middle.output[0])
        if nxt is None or not chain_ok:
            continue
        consumer = nodes[nxt]
        w2 = _conv_weight(consumer, weights)
        if w2 is None or consumer.input[0] != last:
            continue
        channels = w1.shape[0]
        group = int(_attr(consumer, "group", 1))
        if group == 1 and w2.shape[1] == channels:
            pairs.append(Pair(index, nxt, between, single=count <= 1, depthwise=False))
        elif group == channels and w2.shape[0] == channels and w2.shape[1] == 1:
            pairs.append(Pair(index, nxt, between, single=count <= 1, depthwise=True))
    return pairs


def applicable_steps(model, steps: Sequence[str] = STEPS) -> Tuple[str, ...]:
    """The steps of ``steps`` that can change ``model`` (read from the graph alone, before any statistics):
    ``cle`` and ``absorb`` need a convolution pair (:func:`find_pairs`), ``bias`` a Conv with float weights.
    ``centre`` a Conv without padding or a Gemm reading an activation (:func:`centre_readers`). Empty for a
    transformer of MatMuls: nothing to rewrite."""
    steps = parse_steps(list(steps))
    weights = _Weights(model)
    centre = "centre" in steps and bool(centre_readers(model))
    convs = any(node.op_type == "Conv" and len(node.input) >= 2 and node.input[0]
                and (w := weights.get(node.input[1])) is not None and w.ndim >= 3 for node in model.graph.node)
    pairs = bool(find_pairs(model)) if convs and {"cle", "absorb"} & set(steps) else False
    return tuple(step for step in steps if (step == "bias" and convs) or (step == "centre" and centre)
                 or (step in ("cle", "absorb") and pairs))


# --------------------------------------------------------------------------- the rewrites


def _ranges_out(w: np.ndarray) -> np.ndarray:
    return np.abs(w).reshape(w.shape[0], -1).max(axis=1)


def _ranges_in(w: np.ndarray, depthwise: bool) -> np.ndarray:
    if depthwise:
        return _ranges_out(w)
    return np.abs(np.moveaxis(w, 1, 0)).reshape(w.shape[1], -1).max(axis=1)


def _equalize_pairs(model, pairs: List[Pair], iterations: int) -> int:
    """Rescale every pair in place, sweeping until the scales settle; returns the sweeps run."""
    weights = _Weights(model)
    nodes = model.graph.node
    sweeps = 0
    for sweeps in range(1, iterations + 1):
        largest = 0.0
        for pair in pairs:
            producer, consumer = nodes[pair.producer], nodes[pair.consumer]
            w1, w2 = weights.get(producer.input[1]), weights.get(consumer.input[1])
            r1, r2 = _ranges_out(w1), _ranges_in(w2, pair.depthwise)
            ok = (r1 > 0) & (r2 > 0)
            scale = np.ones_like(r1)
            scale[ok] = np.sqrt(r1[ok] / r2[ok])
            scale = np.clip(scale, *_SCALE_RANGE).astype(np.float32)
            largest = max(largest, float(np.abs(np.log(scale)).max()) if scale.size else 0.0)
            shape1 = (-1,) + (1,) * (w1.ndim - 1)
            weights.set(producer.input[1], w1 / scale.reshape(shape1))
            if len(producer.input) >= 3 and producer.input[2]:
                weights.set(producer.input[2], weights.get(producer.input[2]) / scale)
            if pair.between is not None and nodes[pair.between].op_type == "PRelu":
                pass  # PRelu(x / s) = PRelu(x) / s for s > 0: its slope stays
            if pair.depthwise:
                weights.set(consumer.input[1], w2 * scale.reshape(shape1))
            else:
                shape2 = (1, -1) + (1,) * (w2.ndim - 2)
                weights.set(consumer.input[1], w2 * scale.reshape(shape2))
        if largest < 1e-3:
            break
    return sweeps


def absorb_high_bias(model, pairs: Iterable[Pair], lower: Mapping[str, np.ndarray]) -> Tuple[int, List[str]]:
    """Move ``c = max(0, lower bound)`` of each channel out of ``P``'s bias into ``C``'s (see the module notes).

    ``lower``: per-channel minimum of ``P``'s output (the pre-activation) on the calibration
    samples. Only ``P -> Relu -> C`` with ``C`` 1x1, unpadded, ungrouped or depthwise.
    """
    weights = _Weights(model)
    nodes = model.graph.node
    channels_moved, layers = 0, []
    for pair in pairs:
        producer, consumer = nodes[pair.producer], nodes[pair.consumer]
        if pair.between is None or not pair.single or nodes[pair.between].op_type != "Relu":
            continue
        w2 = weights.get(consumer.input[1])
        pads = _attr(consumer, "pads", None) or []
        if w2 is None or any(k != 1 for k in w2.shape[2:]) or any(p != 0 for p in pads) \
                or _attr(consumer, "auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
            continue
        low = lower.get(producer.output[0])
        if low is None or len(producer.input) < 3 or not producer.input[2]:
            continue
        c = np.maximum(np.asarray(low, np.float32), 0.0)
        if not (c > 0).any():
            continue
        try:
            name2, b2 = weights.bias(consumer, w2.shape[0])
        except ValueError:
            continue
        b1 = weights.get(producer.input[2])
        weights.set(producer.input[2], b1 - c)
        if pair.depthwise:
            b2 = b2 + w2.reshape(w2.shape[0]) * c
        else:
            b2 = b2 + w2.reshape(w2.shape[0], w2.shape[1]) @ c
        weights.set(name2, b2)
        channels_moved += int((c > 0).sum())
        layers.append(producer.name)
    return channels_moved, layers


def _unpadded(node) -> bool:
    pads = _attr(node, "pads", None) or []
    return all(p == 0 for p in pads) and _attr(node, "auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET", b"VALID", "VALID")


def centre_readers(model) -> List[Tuple[str, int]]:
    """``(activation, node index)`` of every reader whose input can be re-centred exactly: a Conv without padding
    or a Gemm (``transA`` 0, ``alpha`` and ``beta`` 1) reading a float activation, with a private float weight and
    a private float bias or none (the bias absorbs ``W c``)."""
    weights = _Weights(model)
    found = []
    for index, node in enumerate(model.graph.node):
        if node.op_type not in ("Conv", "Gemm") or len(node.input) < 2 or not node.input[0]:
            continue
        w = weights.get(node.input[1])
        if w is None or not weights.private(node.input[1]) or node.input[0] in weights.holders:
            continue
        if len(node.input) >= 3 and node.input[2] and (weights.get(node.input[2]) is None
                                                        or not weights.private(node.input[2])):
            continue
        if node.op_type == "Conv" and w.ndim >= 3 and _unpadded(node):
            found.append((node.input[0], index))
        elif (node.op_type == "Gemm" and w.ndim == 2 and not _attr(node, "transA", 0)
              and _attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0
              and (len(node.input) < 3 or not node.input[2] or weights.get(node.input[2]).ndim <= 1)):
            found.append((node.input[0], index))
    return found


def _reader_shift(node, w: np.ndarray, centre: np.ndarray) -> Optional[np.ndarray]:
    """``W c`` per output channel of ``node`` (a Conv summed over its kernel, grouped or not; a Gemm), None where
    the channel counts do not match."""
    if node.op_type == "Gemm":
        matrix = w if _attr(node, "transB", 0) else w.T  # [N, K]
        return matrix.astype(np.float64) @ centre if matrix.shape[1] == centre.shape[0] else None
    group = int(_attr(node, "group", 1))
    per_in = w.reshape(w.shape[0], w.shape[1], -1).sum(axis=2).astype(np.float64)  # [O, I/g]
    out_channels, in_per_group = per_in.shape
    if centre.shape[0] != in_per_group * group or out_channels % group:
        return None
    out_per_group = out_channels // group
    shift = np.empty(out_channels, np.float64)
    for g in range(group):
        rows = slice(g * out_per_group, (g + 1) * out_per_group)
        shift[rows] = per_in[rows] @ centre[g * in_per_group:(g + 1) * in_per_group]
    return shift


def centre_activations(model, ranges: Mapping[str, Tuple[np.ndarray, np.ndarray]]) -> List[str]:
    """Re-centre, for its :func:`centre_readers`, every tensor whose symmetric range that narrows by
    :data:`CENTRE_MIN_NARROWING` or more (see the module notes); returns the tensors re-centred.

    ``ranges``: per-channel (min, max) of each tensor on the calibration samples. One Sub node per tensor, placed
    right after its producer; readers that cannot absorb the shift keep reading the tensor itself. Unnamed nodes
    get the names they had (``{op_type}_{index}``, :func:`trtq.graph.qdq.node_names`) before anything is
    inserted, so ``--exclude`` and mixed precision still find them."""
    from onnx import helper

    from .qdq import node_names

    weights = _Weights(model)
    nodes = model.graph.node
    plans: Dict[str, List[Tuple[int, np.ndarray]]] = {}
    centres: Dict[str, np.ndarray] = {}
    for tensor, index in centre_readers(model):
        if tensor not in ranges:
            continue
        if tensor not in centres:
            low, high = (np.asarray(v, np.float64) for v in ranges[tensor])
            centre = (low + high) / 2
            before = max(np.abs(low).max(), np.abs(high).max()) if low.size else 0.0
            after = max(np.abs(low - centre).max(), np.abs(high - centre).max()) if low.size else 0.0
            if not np.all(np.isfinite(centre)) or not after <= (1 - CENTRE_MIN_NARROWING) * before:
                continue
            centres[tensor] = centre
        node = nodes[index]
        shift = _reader_shift(node, weights.get(node.input[1]), centres[tensor])
        if shift is not None:
            plans.setdefault(tensor, []).append((index, shift))
    if not plans:
        return []
    for node, name in zip(nodes, node_names(model)):
        node.name = name
    producers = {out: index for index, node in enumerate(nodes) for out in node.output if out}
    inserts = []
    for tensor, readers in plans.items():
        centred = _unique(model, f"{tensor}_trtq_centred")
        constant = _unique(model, f"{tensor}_trtq_centre")
        ranks = {weights.get(nodes[i].input[1]).ndim if nodes[i].op_type == "Conv" else 2 for i, _ in readers}
        if len(ranks) != 1:
            continue  # one tensor read as an image and as a matrix: no one constant's layout fits both
        shape = (1, -1) + (1,) * (ranks.pop() - 2)
        model.graph.initializer.append(
            weights.numpy_helper.from_array(centres[tensor].astype(np.float32).reshape(shape), constant))
        for index, shift in readers:
            node = nodes[index]
            name, bias = weights.bias(node, shift.shape[0])
            weights.set(name, (bias.astype(np.float64) + shift).astype(np.float32))
            node.input[0] = centred
        inserts.append((producers.get(tensor, -1), helper.make_node(
            "Sub", [tensor, constant], [centred], name=_unique(model, f"{tensor}_trtq_centre_sub"))))
    order = list(nodes)
    for position, sub in sorted(inserts, key=lambda item: item[0], reverse=True):
        order.insert(position + 1, sub)
    del nodes[:]
    nodes.extend(order)
    return [sub.input[0] for _, sub in inserts]


def correct_bias(model, means: Mapping[str, np.ndarray]) -> List[str]:
    """Lower each Conv's float bias by the expected shift its int8 weight rounding causes: ``(W_q - W) E[x]``.

    ``means``: per input channel mean of each Conv's data input (by tensor name) on the
    calibration samples. The weights are rounded exactly as :func:`trtq.graph.qdq.quantize_weight`
    rounds them (per output channel).
    """
    from .qdq import quantize_weight

    weights = _Weights(model)
    corrected = []
    for node in model.graph.node:
        if node.op_type != "Conv" or len(node.input) < 2:
            continue
        w = weights.get(node.input[1])
        mean = means.get(node.input[0])
        if w is None or mean is None or w.ndim < 3:
            continue
        q, scale = quantize_weight(w, axis=0)
        delta = q.astype(np.float32) * scale.reshape((-1,) + (1,) * (w.ndim - 1)) - w  # [O, I/g, k...]
        group = int(_attr(node, "group", 1))
        per_in = delta.reshape(delta.shape[0], delta.shape[1], -1).sum(axis=2)  # [O, I/g]
        out_channels, in_per_group = per_in.shape
        if mean.shape[0] != in_per_group * group:
            continue
        out_per_group = out_channels // group
        shift = np.empty(out_channels, np.float64)
        for g in range(group):
            rows = slice(g * out_per_group, (g + 1) * out_per_group)
            shift[rows] = per_in[rows] @ mean[g * in_per_group:(g + 1) * in_per_group]
        if not np.any(shift):
            continue
        try:
            name, bias = weights.bias(node, out_channels)
        except ValueError:
            continue
        weights.set(name, bias - shift.astype(np.float32))
        corrected.append(node.name)
    return corrected


def equalize(model, statistics=None, *, steps: Sequence[str] = STEPS, iterations: int = EQUALIZE_ITERATIONS
             ) -> Tuple[object, EqualizeReport]:
    """A rewritten copy of ``model`` (CLE, then absorption, re-centring and bias correction: ``steps``) and what was
    done.

    ``statistics``: a callable ``(model, tensors) -> {tensor: (per-channel min, per-channel
    mean, per-channel max)}`` over the calibration samples (:func:`trtq.pipeline.calibration.channel_statistics`); without
    it only the data-free CLE runs. Unnamed nodes are left unnamed (node names decide
    ``--exclude`` and mixed precision, so the rewrite keeps them).
    """
    import onnx

    from .model import model_sha256

    result = onnx.ModelProto()
    result.CopyFrom(model)
    steps = parse_steps(list(steps))
    report = EqualizeReport(source_sha256=model_sha256(model), steps=list(steps))
    pairs = find_pairs(result) if "cle" in steps or "absorb" in steps else []
    names = [n.name or f"{n.op_type}_{i}" for i, n in enumerate(result.graph.node)]
    if pairs and "cle" in steps:
        report.iterations = _equalize_pairs(result, pairs, iterations)
        report.pairs = [(names[p.producer], names[p.consumer]) for p in pairs]
    if statistics is not None and "absorb" in steps and pairs:
        wanted = [result.graph.node[p.producer].output[0] for p in pairs
                  if p.between is not None and p.single and result.graph.node[p.between].op_type == "Relu"]
        if wanted:
            stats = statistics(result, wanted)
            report.absorbed_channels, report.absorbed_layers = absorb_high_bias(
                result, pairs, {t: v[0] for t, v in stats.items()})
    if statistics is not None and "centre" in steps:
        readers = sorted({tensor for tensor, _ in centre_readers(result)})
        if readers:
            stats = statistics(result, readers)
            report.centred_tensors = centre_activations(result, {t: (v[0], v[2]) for t, v in stats.items()})
    if statistics is not None and "bias" in steps:
        inputs = sorted({n.input[0] for n in result.graph.node if n.op_type == "Conv" and n.input})
        if inputs:
            stats = statistics(result, inputs)
            report.corrected_layers = correct_bias(result, {t: v[1] for t, v in stats.items()})
    report.sha256 = model_sha256(result)
    log.info("equalized %d convolution pair(s) in %d sweep(s); %d channel(s) absorbed; %d tensor(s) re-centred; "
             "%d bias(es) corrected", len(report.pairs), report.iterations, report.absorbed_channels,
             len(report.centred_tensors), len(report.corrected_layers))
    return result, report
