"""What a model's inputs and outputs *mean*, read once from its graph: :class:`ModelSignature`.

Every path (calibration feeds, auto and the verdict, quantize, eval, bench, build profiles,
the engine runner, streaming, deploy configs) reads this one reading instead of guessing
again. It is found with ONNX shape inference and by following an axis through the ops that
keep, move or reshape it (:func:`map_axis`), and each entry can be overridden by a flag
(``--batch-axis``, ``--class-output``, ``--feedback``).

**Inputs**, each with a *role* and a *batch axis*:

- ``scalar`` (rank 0) and ``shape`` (consumed only as a shape, size, count or condition:
  ``Reshape``'s shape, ``Slice`` bounds, ``If``'s condition...): no batch axis, fed unchanged;
- otherwise the batch axis is, in this order: (1) the axis that reaches a recurrent op's batch
  axis (``LSTM``/``GRU``/``RNN``: ``X``, ``sequence_lens``, ``initial_h``/``initial_c``), followed
  through ``Gather``/``Slice``/``Squeeze``/``Unsqueeze``/``Transpose``/``Reshape``... (a state
  ``[2, batch, 128]`` split into ``h`` and ``c`` before its LSTM -> axis 1); (2) a *named* dim
  shared with those or with axis 0 of the others (``?``, empty and unnamed dims are independent
  unknowns, never one shared size); (3) an input whose axis 0 is fixed and which has exactly
  one dynamic axis, beside inputs whose axis 0 is dynamic; (4) an input whose dims are all
  fixed beside symbolically batched inputs is ``config`` (no batch axis); (5) a graph whose
  dims are all fixed is called one sample at a time: an input whose axis 0 is not 1 is batched
  on its first axis of size 1 when it has one; (6) axis 0;
- ``state``: an input that is the other half of a state pair (below).

**Outputs**, each with its batch axis (an axis that carries an input's batch symbol, or that
the batch axis reaches through the graph, else axis 1 of a recurrent ``Y_h``/``Y_c``, else 0)
and a *decision*:

- ``class``: made by ``Softmax``/``LogSoftmax`` (or read by ``ArgMax``/``TopK``), possibly
  through ``Identity``/``Cast``/``Reshape``/``Transpose``/``Squeeze``/``Unsqueeze``/``Flatten``;
  the class axis is followed through them (``[N*T, C]`` reshaped to ``[N, T, C]`` -> axis 2);
- ``mask``: a ``Sigmoid`` (through those ops and ``Resize``/``ReduceMean``...) whose output has a
  singleton channel axis (``[N, 1, H, W]``, ``[N, H, W, 1]``, ``[N, 1]``): a binary decision per
  position at 0.5, judged by agreement and IoU;
- ``channels``: a small fixed feature axis (detection fields) judged channel by channel;
- ``regression``: anything else, judged whole (channel groups only on an axis a ``Concat``
  joins, never guessed from one batch);
- ``state``: the output of a state pair: never ranks candidates or gates a run.

**State pairs** ``output -> input``: same rank, dtype and fixed dims, *and* graph evidence on
both sides: the input reaches a recurrent op's initial state and the output comes from a
recurrent op's ``Y_h``/``Y_c`` (through ``Slice``/``Gather``/``Squeeze``/``Concat``/
``Unsqueeze``...). ``h`` pairs with ``Y_h``, ``c`` with ``Y_c``; names (``state``/``stateN``,
``h0``/``hn``) only break a remaining tie.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, defaultdict
from dataclasses import dataclass, replace
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

from .model import Dim, TensorSpec, tensor_spec
from .view import _MAX_STEPS, DECISION_PASS, RECURRENT_OPS, GraphView, _attr, recurrent_batch_axis

log = logging.getLogger(__name__)

# Input roles.
DATA, SCALAR, SHAPE, CONFIG, STATE = "data", "scalar", "shape", "config", "state"
# Output decisions (STATE too).
CLASS, MASK, CHANNELS, REGRESSION = "class", "mask", "channels", "regression"

#: (op type, input index) pairs that read a shape, size, count or condition, never per-sample data.
SHAPE_OPERANDS = {
    ("Reshape", 1), ("Expand", 1), ("Tile", 1), ("ConstantOfShape", 0), ("Range", 0), ("Range", 1), ("Range", 2),
    ("Slice", 1), ("Slice", 2), ("Slice", 3), ("Slice", 4), ("Resize", 1), ("Resize", 2), ("Resize", 3),
    ("Upsample", 1), ("TopK", 1), ("If", 0), ("Loop", 0), ("Loop", 1), ("OneHot", 1), ("Pad", 1), ("Pad", 2),
    ("Squeeze", 1), ("Unsqueeze", 1), ("ReduceSum", 1), ("ReduceMean", 1), ("ReduceMax", 1), ("ReduceMin", 1),
    ("Split", 1), ("CumSum", 1), ("NonMaxSuppression", 2), ("NonMaxSuppression", 3), ("NonMaxSuppression", 4),
}

#: A probability stays a probability through these too (a mask is followed back through them to its Sigmoid).
_PROBABILITY_PASS = DECISION_PASS + ("Resize", "Upsample", "ReduceMean", "ReduceMax", "ReduceMin", "Slice",
                                     "Gather", "MaxPool", "AveragePool", "Pad", "Clip", "Concat")
#: What recurrent state travels through between a graph input/output and the recurrent op.
_STATE_PASS = ("Identity", "Cast", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice", "Gather",
               "Split", "Concat", "Add")


# --------------------------------------------------------------------------- the signature


@dataclass(frozen=True)
class OutputSignature:
    """One graph output: shape, dtype, the axis that counts samples, and what it decides."""

    spec: TensorSpec                     # batch_axis: the axis that counts samples
    kind: str = REGRESSION               # class | mask | channels | regression | state
    axis: Optional[int] = None           # class axis, mask channel axis, or feature axis
    why: str = ""                        # how the kind was found (for `trtq inspect` and logs)
    group_axes: Tuple[int, ...] = ()     # axes a Concat joins: where channel groups may be looked for

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(frozen=True)
class StatePair:
    """An output fed back as an input on the next call (``stateN -> state``)."""

    output: str
    input: str
    why: str = ""

    def text(self) -> str:
        return f"{self.output}={self.input}"


@dataclass(frozen=True)
class ModelSignature:
    """Every input's role and batch axis, every output's batch axis and decision, and the state pairs."""

    inputs: Tuple[TensorSpec, ...]
    roles: Tuple[Tuple[str, str], ...]           # (input, role)
    outputs: Tuple[OutputSignature, ...]
    pairs: Tuple[StatePair, ...] = ()
    notes: Tuple[str, ...] = ()                  # rules that decided something unusual, for the log

    def role(self, name: str) -> str:
        return dict(self.roles).get(name, DATA)

    def output(self, name: str) -> Optional[OutputSignature]:
        return next((o for o in self.outputs if o.name == name), None)

    def class_axes(self) -> Dict[str, Tuple[int, str]]:
        """``{output: (class axis, why)}``."""
        return {o.name: (o.axis, o.why) for o in self.outputs if o.kind == CLASS and o.axis is not None}

    def mask_axes(self) -> Dict[str, int]:
        """``{output: its singleton channel axis}`` of the per-position binary (Sigmoid) outputs."""
        return {o.name: o.axis for o in self.outputs if o.kind == MASK and o.axis is not None}

    def feature_axes(self) -> Dict[str, Optional[int]]:
        """``{output: small feature axis, or None}``: outputs judged channel by channel, and those that are not;
        an output whose deciding dim the graph leaves open is not listed (its data decide)."""
        return {o.name: (o.axis if o.kind == CHANNELS else None) for o in self.outputs
                if not (o.kind == REGRESSION and o.axis == UNKNOWN_AXIS)}

    def group_axes(self) -> Dict[str, Tuple[int, ...]]:
        return {o.name: o.group_axes for o in self.outputs}

    def batch_axes(self) -> Dict[str, Optional[int]]:
        """``{input or output: the axis that counts samples, None for a scalar or configuration tensor}``: what an
        engine runner cuts and pads a batch along (``--batch-axis`` overrides included)."""
        axes = {s.name: (s.batch_axis if s.batched else None) for s in self.inputs}
        axes.update({o.name: (o.spec.batch_axis if o.spec.batched else None) for o in self.outputs})
        return axes

    def output_axes(self) -> Dict[str, int]:
        """``{output: the axis that counts samples}``."""
        return {o.name: (o.spec.batch_axis or 0) for o in self.outputs}

    def state_outputs(self) -> List[str]:
        return [p.output for p in self.pairs]

    def judged_outputs(self) -> List[str]:
        """The outputs that judge a candidate (state fed back never does)."""
        fed = set(self.state_outputs())
        return [o.name for o in self.outputs if o.name not in fed]

    def with_pairs(self, pairs: Sequence) -> "ModelSignature":
        """This signature with ``pairs`` (``--feedback``: objects with ``output`` and ``input``) as its state pairs."""
        pairs = tuple(p if isinstance(p, StatePair) else StatePair(p.output, p.input, "--feedback") for p in pairs)
        fed_in = {p.input for p in pairs}
        fed_out = {p.output for p in pairs}
        roles = tuple((n, STATE if n in fed_in else (r if r != STATE else DATA)) for n, r in self.roles)
        axes = {s.name: s.batch_axis for s in self.inputs}  # a state output is batched as the input it becomes
        outputs = tuple(replace(o, kind=STATE, axis=None, why=f"fed back as {_fed_as(pairs, o.name)!r}",
                                spec=replace(o.spec, batch_axis=axes.get(_fed_as(pairs, o.name), o.spec.batch_axis)))
                        if o.name in fed_out else (replace(o, kind=REGRESSION, why="") if o.kind == STATE else o)
                        for o in self.outputs)
        return replace(self, roles=roles, outputs=outputs, pairs=pairs)

    def to_dict(self) -> dict:
        """The sidecar's ``signature`` record."""
        return {
            "inputs": [{"name": s.name, "role": self.role(s.name), "batch_axis": s.batch_axis if s.batched else None}
                       for s in self.inputs],
            "outputs": [{"name": o.name, "batch_axis": o.spec.batch_axis, "decision": o.kind,
                         "axis": None if o.axis == UNKNOWN_AXIS else o.axis,
                         "why": o.why} for o in self.outputs],
            "pairs": [{"output": p.output, "input": p.input, "why": p.why} for p in self.pairs],
        }

    def rows(self) -> List[Tuple[str, str, str, str, str, str]]:
        """``(in/out, name, shape, role or decision, batch axis, why)`` rows for ``trtq inspect``."""
        rows = []
        for spec in self.inputs:
            role = self.role(spec.name)
            fed = next((p.output for p in self.pairs if p.input == spec.name), None)
            why = f"fed back from {fed!r}" if fed else ""
            rows.append(("input", spec.name, f"{spec.dtype} {spec.shape_text() or 'scalar'}", role,
                         "-" if not spec.batched else str(spec.batch_axis), why))
        for out in self.outputs:
            decision = out.kind + ("" if out.axis in (None, UNKNOWN_AXIS) else f" (axis {out.axis})")
            rows.append(("output", out.name, f"{out.spec.dtype} {out.spec.shape_text() or 'scalar'}", decision,
                         str(out.spec.batch_axis), out.why))
        return rows


def _fed_as(pairs, output: str) -> str:
    return next(p.input for p in pairs if p.output == output)


def _is_symbol(dim: Dim) -> bool:
    return isinstance(dim, str) and bool(dim)


def infer_roles(view: GraphView, specs: Sequence[TensorSpec]) -> Tuple[Dict[str, Optional[int]], Dict[str, str],
                                                                       List[str]]:
    """Per input: its batch axis and role (rules in the module docstring), and notes on unusual rulings."""
    axes: Dict[str, Optional[int]] = {}
    roles: Dict[str, str] = {}
    notes: List[str] = []
    recurrent = any(n.op_type in RECURRENT_OPS for n in view.nodes)
    for spec in specs:
        uses = view.consumers.get(spec.name, [])
        if spec.rank == 0:
            axes[spec.name], roles[spec.name] = None, SCALAR
            continue
        if uses and all((n.op_type, i) in SHAPE_OPERANDS for n, i in uses):
            axes[spec.name], roles[spec.name] = None, SHAPE
            continue
        if recurrent:
            for axis in range(spec.rank):
                hits = [(n, i) for n, i, at, _ in view.trace_forward(spec.name, axis)
                        if n.op_type in RECURRENT_OPS and at == recurrent_batch_axis(n, i)]
                if hits:
                    axes[spec.name] = axis
                    break
    symbols = {spec.shape[axes[spec.name]] for spec in specs
               if axes.get(spec.name) is not None and _is_symbol(spec.shape[axes[spec.name]])}
    if not symbols:
        symbols = {spec.shape[0] for spec in specs if spec.name not in axes and spec.rank and _is_symbol(spec.shape[0])}
    open_batch = any(spec.rank and not spec.is_static(0) for spec in specs if spec.name not in axes)
    all_fixed = all(spec.is_static(a) for spec in specs for a in range(spec.rank))
    for spec in specs:
        roles.setdefault(spec.name, DATA)
        if spec.name in axes:
            continue
        shared = [axis for axis, dim in enumerate(spec.shape) if _is_symbol(dim) and dim in symbols]
        dynamic = [axis for axis in range(spec.rank) if not spec.is_static(axis)]
        if shared:
            axes[spec.name] = shared[0]
        elif open_batch and spec.rank > 1 and spec.is_static(0) and len(dynamic) == 1:
            axes[spec.name] = dynamic[0]
        elif symbols and all(spec.is_static(axis) for axis in range(spec.rank)):
            axes[spec.name], roles[spec.name] = None, CONFIG  # a fixed configuration tensor beside batched inputs
        elif all_fixed and spec.shape[0] != 1 and 1 in spec.shape:
            axes[spec.name] = list(spec.shape).index(1)  # a fixed graph runs one sample per call
            notes.append(f"{spec.name!r}: every dim is fixed; batched on axis {axes[spec.name]} (size 1): one "
                         f"sample per call")
        else:
            axes[spec.name] = 0
    return axes, roles, notes


def _output_batch_axis(view: GraphView, spec: TensorSpec, inputs: Sequence[TensorSpec],
                       reached: Mapping[str, Set[int]]) -> int:
    symbols = {s.batch_dim for s in inputs if s.batched and _is_symbol(s.batch_dim)}
    shared = [axis for axis, dim in enumerate(spec.shape) if _is_symbol(dim) and dim in symbols]
    if shared:
        return shared[0]
    hits = sorted(reached.get(spec.name, ()))
    if len(hits) == 1:
        return hits[0]
    found = view.comes_from(spec.name, ("Identity",), RECURRENT_OPS)
    producer = view.producers.get(spec.name)
    layout = _attr(producer[0], "layout", 0) if producer is not None else 0
    if any(index in (1, 2) for _, index in found) and not layout and spec.rank == 3:
        return 1
    return 0


def _batch_reach(view: GraphView, inputs: Sequence[TensorSpec], outputs: Set[str]) -> Dict[str, Set[int]]:
    """``{output: axes its inputs' batch axes reach}`` (followed through the graph)."""
    reached: Dict[str, Set[int]] = defaultdict(set)
    for spec in inputs:
        if not spec.batched:
            continue
        seen = set()
        queue = [(spec.name, spec.batch_axis)]
        while queue and len(seen) < _MAX_STEPS:
            tensor, axis = queue.pop(0)
            if (tensor, axis) in seen:
                continue
            seen.add((tensor, axis))
            if tensor in outputs:
                reached[tensor].add(axis)
            for node, index in view.consumers.get(tensor, ()):
                queue.extend(view.map_axis(node, index, axis))
    return reached


def _decision(view: GraphView, spec: TensorSpec) -> Tuple[str, Optional[int], str]:
    """(kind, axis, why) of one output from the ops that make it (pairs are applied later)."""
    chain, producer = view.pass_chain(spec.name)
    source = producer[0] if producer is not None else None
    through = f" through {', '.join(dict.fromkeys(n.op_type for n in chain if n.op_type != 'Identity' or len(chain) == 1))}" \
        if chain else ""
    if source is not None and source.op_type in ("Softmax", "LogSoftmax") and spec.dtype.kind == "f":
        rank = view.rank(source.output[0])
        if rank is None and all(n.op_type in ("Identity", "Cast") for n in chain):
            rank = spec.rank  # shape inference stopped short; Identity/Cast keep the declared output's rank
        axis = _attr(source, "axis", -1 if view.opset >= 13 else 1)
        if rank is not None:
            axis = view.follow(chain, axis % rank)
            if axis is not None:
                return CLASS, axis, source.op_type + through
    readers = [(n, i) for n, i in view.consumers.get(spec.name, ()) if n.op_type in ("ArgMax", "TopK") and i == 0]
    for node, _ in readers:
        axis = _attr(node, "axis", 0 if node.op_type == "ArgMax" else -1)
        if spec.rank and axis % spec.rank != 0:
            return CLASS, axis % spec.rank, f"{node.op_type} reader"
    if spec.dtype.kind == "f" and spec.rank >= 2:
        made = view.comes_from(spec.name, _PROBABILITY_PASS, ("Sigmoid", "HardSigmoid"))
        if made:
            for axis in ([1, spec.rank - 1] if spec.rank > 2 else [1]):
                if spec.shape[axis] == 1:
                    return MASK, axis, f"Sigmoid, one channel (axis {axis})"
    return REGRESSION, None, ""


#: A feature axis the graph leaves open (an exporter-named dim): the accumulator decides it from the data, and
#: drops it to the whole-output SNR when a later batch changes that axis's size.
UNKNOWN_AXIS = -1


def _feature_axis(spec: TensorSpec, lengths: Set[str]) -> Optional[int]:
    """The small fixed feature axis of an output of rank >= 3 (see trtq.compare.decisions.feature_axis), None, or
    :data:`UNKNOWN_AXIS` where the deciding dim is neither a number nor an input's length."""
    from .. import defaults

    rank = spec.rank
    if rank < 3:
        return None
    for axis in ([rank - 1, 1] if rank == 3 else [1, rank - 1]):
        dim = spec.shape[axis]
        if isinstance(dim, int) and dim > 0:
            if 2 <= dim <= defaults.FEATURE_MAX_CHANNELS:
                return axis
            continue
        if _is_symbol(dim) and dim in lengths:
            continue
        return UNKNOWN_AXIS
    return None


def _refined(spec: TensorSpec, view: GraphView) -> TensorSpec:
    """``spec`` with the sizes shape inference found where the declaration names a dim only by the exporter's
    words (``Concatoutput_dim_1`` -> 64)."""
    inferred = view.inferred.get(spec.name)
    if inferred is None or len(inferred) != spec.rank:
        return spec
    shape = tuple(i if isinstance(i, int) and not isinstance(d, int) else d for d, i in zip(spec.shape, inferred))
    return replace(spec, shape=shape)


def _group_axes(view: GraphView, spec: TensorSpec) -> Tuple[int, ...]:
    """Axes of an output that a ``Concat`` joins (boxes beside scores), followed through reshaping ops."""
    chain, producer = view.pass_chain(spec.name)
    if producer is None or producer[0].op_type != "Concat":
        return ()
    node = producer[0]
    rank = view.rank(node.output[0]) or spec.rank
    axis = view.follow(chain, _attr(node, "axis", 0) % max(rank, 1))
    if axis is None:
        return ()
    if axis == (spec.batch_axis or 0) or not isinstance(spec.shape[axis] if axis < spec.rank else None, int):
        return ()
    return (axis,) if spec.shape[axis] >= 4 else ()


def find_state_pairs(view: GraphView, inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> List[StatePair]:
    """Outputs fed back as inputs, by shape, dtype and graph evidence (see the module docstring)."""
    if not any(n.op_type in RECURRENT_OPS for n in view.nodes):
        return []
    into = {s.name: view.reaches(s.name, _STATE_PASS, RECURRENT_OPS) for s in inputs if s.rank}
    into = {k: {i for _, i in v if i in (5, 6)} for k, v in into.items()}
    out_of = {s.name: {i for _, i in view.comes_from(s.name, _STATE_PASS, RECURRENT_OPS) if i in (1, 2)}
              for s in outputs if s.rank}
    candidates = []
    for out in outputs:
        for spec in inputs:
            if not into.get(spec.name) or not out_of.get(out.name) or not _same_kind(out, spec):
                continue
            kinds_in = {5: "h", 6: "c"}
            kinds_out = {1: "h", 2: "c"}
            same_kind = {kinds_in[i] for i in into[spec.name]} == {kinds_out[i] for i in out_of[out.name]}
            candidates.append(((same_kind, _name_affinity(out.name, spec.name)), out.name, spec.name))
    pairs: List[StatePair] = []
    used_in, used_out = set(), set()
    for (same_kind, _), out, name in sorted(candidates, key=lambda c: c[0], reverse=True):
        if out in used_out or name in used_in:
            continue
        used_out.add(out)
        used_in.add(name)
        state = "/".join(sorted({"initial_h" if i == 5 else "initial_c" for i in into[name]}))
        pairs.append(StatePair(out, name, f"{name!r} reaches a recurrent {state}; {out!r} comes from its "
                                          f"{'/'.join(sorted({'Y_h' if i == 1 else 'Y_c' for i in out_of[out]}))}"))
    return pairs


def _same_kind(out: TensorSpec, spec: TensorSpec) -> bool:
    if out.rank != spec.rank or out.dtype != spec.dtype:
        return False
    return all(not (isinstance(a, int) and isinstance(b, int)) or a == b for a, b in zip(out.shape, spec.shape))


def _name_affinity(output: str, input_name: str) -> int:
    """How alike two names are (a tie-breaker only): ``stateN``/``state``, ``hn``/``h0``, ``cn``/``c``."""
    a, b = output.lower(), input_name.lower()
    common = 0
    for x, y in zip(a, b):
        if x != y:
            break
        common += 1
    return common


# --------------------------------------------------------------------------- reading and caching

_CACHE: "OrderedDict[Tuple[int, str], Tuple[object, ModelSignature]]" = OrderedDict()
_CACHE_SIZE = 8


def read_signature(model, batch_axes: Optional[Mapping[str, Optional[int]]] = None,
                   class_outputs: Optional[Mapping[str, Optional[int]]] = None,
                   feedback: Optional[Sequence] = None) -> ModelSignature:
    """The signature of ``model`` (an ``onnx.ModelProto``), read once per model and cached.

    Overrides, entry by entry: ``batch_axes`` (``--batch-axis``: ``{input: axis or None}``),
    ``class_outputs`` (``--class-output``: ``{output: class axis or None}``), ``feedback``
    (``--feedback`` pairs: they replace the pairs found in the graph).
    """
    declared = b"".join(v.SerializeToString() for v in list(model.graph.input) + list(model.graph.output))
    key = (id(model), repr((len(model.graph.node), declared, sorted((batch_axes or {}).items()),
                            sorted((class_outputs or {}).items()),
                            [(getattr(p, "output", p), getattr(p, "input", "")) for p in feedback or ()])))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is model:
        _CACHE.move_to_end(key)
        return hit[1]
    signature = _read(model, batch_axes, class_outputs, feedback)
    _CACHE[key] = (model, signature)
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return signature


def _read(model, batch_axes, class_outputs, feedback) -> ModelSignature:
    from .batch import with_batch_axes

    view = GraphView(model)
    initializers = {init.name for init in model.graph.initializer}
    specs = [tensor_spec(vi) for vi in model.graph.input if vi.name not in initializers]
    axes, roles, notes = infer_roles(view, specs)
    inputs = with_batch_axes(specs, batch_axes, axes)
    for name, axis in (batch_axes or {}).items():
        if axis is None and roles.get(name) == DATA:
            roles[name] = CONFIG
    raw_outputs = [tensor_spec(vi) for vi in model.graph.output]
    reached = _batch_reach(view, inputs, {o.name for o in raw_outputs})
    lengths = {d for s in specs for d in s.shape if _is_symbol(d)}
    outputs = []
    for spec in raw_outputs:
        spec = replace(spec, batch_axis=_output_batch_axis(view, spec, inputs, reached) if spec.rank else None)
        kind, axis, why = _decision(view, spec)
        if kind == REGRESSION:
            feature = _feature_axis(_refined(spec, view), lengths)
            if feature == UNKNOWN_AXIS:
                axis = UNKNOWN_AXIS
            elif feature is not None and feature != spec.batch_axis:
                kind, axis, why = CHANNELS, feature, f"{_refined(spec, view).shape[feature]} fixed channels"
        if axis is not None and axis == spec.batch_axis and kind not in (REGRESSION, CHANNELS):
            kind, axis, why = REGRESSION, None, ""
        outputs.append(OutputSignature(spec, kind, axis, why, _group_axes(view, spec) if kind == REGRESSION else ()))
    for name, axis in (class_outputs or {}).items():
        index = next((i for i, o in enumerate(outputs) if o.name == name), None)
        if index is not None:
            current = outputs[index]
            outputs[index] = replace(current, kind=CLASS, axis=current.axis if axis is None and current.kind == CLASS
                                     else axis, why="declared", group_axes=())
    signature = ModelSignature(tuple(inputs), tuple((s.name, roles[s.name]) for s in inputs), tuple(outputs), (),
                               tuple(notes))
    pairs = list(feedback) if feedback else find_state_pairs(view, inputs, raw_outputs)
    return signature.with_pairs(pairs) if pairs else signature


def input_specs(model, batch_axes: Optional[Mapping[str, Optional[int]]] = None) -> List[TensorSpec]:
    """The model's real inputs, each with its batch axis as the graph says (``batch_axes``: ``--batch-axis``
    overrides)."""
    return list(read_signature(model, batch_axes).inputs)


def describe_signature(signature: ModelSignature) -> str:
    """One line for logs: decisions and state pairs (empty when nothing is worth saying)."""
    parts = []
    for out in signature.outputs:
        if out.kind in (CLASS, MASK):
            parts.append(f"{out.name!r}: {out.kind} axis {out.axis} ({out.why})")
    for pair in signature.pairs:
        parts.append(f"state {pair.output!r} -> {pair.input!r}")
    return "; ".join(parts)
