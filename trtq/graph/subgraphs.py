"""What calibration sees of a model whose compute sits inside ``If`` / ``Loop`` / ``Scan`` subgraphs.

ONNX Runtime runs a subgraph as one node: its inner tensors cannot be requested as
outputs. Where an ``If``'s condition is fixed for the run (computed from initializers
and inputs without a batch axis, such as a sample rate), :func:`inline_fixed_branches`
gives calibration a copy of the model with the branch taken inlined, so its tensors get
histograms and scales under their own names (the names TensorRT gives them when it builds
the conditional): the cache carries them for TensorRT's implicit INT8. The rest (the
branch not taken, ``Loop``/``Scan`` bodies, conditions that depend on the data) stay
unreached: TensorRT has no scale for them, warns "Missing scale and zero-point for tensor
..." and runs those layers in FP16/FP32. trtq's Q/DQ placement works on the main graph
only, so on the explicit path every layer inside a subgraph runs in float. Such a model
must never look quantized when it is not: :func:`weighted_coverage` counts the weighted
ops (Conv, ConvTranspose, MatMul, Gemm) that got scales and lists the ones inside
subgraphs by name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Collection, List, Tuple

import numpy as np

log = logging.getLogger(__name__)

#: Ops whose inputs carry the INT8 compute (the Q/DQ placement quantizes their inputs).
WEIGHTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
#: Ops that hold subgraphs.
CONTROL_FLOW_OPS = ("If", "Loop", "Scan")


@dataclass
class Coverage:
    """Weighted ops of a model: how many, how many got a scale on their activation input, and which sit
    in subgraphs (name, op type, the control-flow node that holds them)."""

    total: int = 0
    scaled: int = 0
    #: (name, op type, the control-flow node that holds it, whether calibration gave its input a scale)
    in_subgraphs: List[Tuple[str, str, str, bool]] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.scaled / self.total if self.total else 1.0

    def line(self) -> str:
        """One line for the report; empty when every weighted op sits in the main graph."""
        if not self.in_subgraphs:
            return ""
        holders = sorted({holder for _, _, holder, _ in self.in_subgraphs})
        reached = [name for name, _, _, scaled in self.in_subgraphs if scaled]
        missed = [name for name, _, _, scaled in self.in_subgraphs if not scaled]
        parts = [f"{self.scaled} of {self.total} Conv/MatMul/Gemm ops got INT8 scales ({self.share:.0%}); "
                 f"{len(self.in_subgraphs)} sit inside {', '.join(holders)} subgraphs"]
        if reached:
            parts.append(f"{len(reached)} of those ({_names(reached)}) were calibrated through the branch the fixed "
                         f"inputs select: their scales are in the cache for TensorRT's implicit INT8, but the Q/DQ "
                         f"model places no Q/DQ inside subgraphs, so the explicit path runs them in float")
        if missed:
            parts.append(f"{len(missed)} ({_names(missed)}) calibration cannot reach (a branch the data does not "
                         f"take, a loop body, or a condition that depends on the data): TensorRT finds no scale for "
                         f"them and runs them in FP16/FP32")
        return "; ".join(parts)

    def to_dict(self) -> dict:
        return {"weighted_ops": self.total, "with_scales": self.scaled,
                "in_subgraphs": [{"name": n, "op": op, "inside": holder, "scaled": scaled}
                                 for n, op, holder, scaled in self.in_subgraphs]}


def _names(names: List[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _walk(graph, holder: str, found: list) -> None:
    for node in graph.node:
        found.append((node, holder))
        if node.op_type in CONTROL_FLOW_OPS or any(a.g.node or a.graphs for a in node.attribute):
            for attribute in node.attribute:
                for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                    _walk(sub, f"{node.op_type} {node.name or node.output[0]!r}", found)


def weighted_coverage(model, scaled_tensors: Collection[str]) -> Coverage:
    """Count the weighted ops of ``model`` (subgraphs included) with a scale on an activation input in
    ``scaled_tensors`` (the calibrated amax table)."""
    found: list = []
    _walk(model.graph, "", found)
    coverage = Coverage()
    scaled = set(scaled_tensors)
    for node, holder in found:
        if node.op_type not in WEIGHTED_OPS:
            continue
        coverage.total += 1
        has_scale = any(name in scaled for name in node.input[:2])
        if holder:  # only TensorRT's implicit path can use it: a layer runs INT8 there with its output's scale too
            has_scale = has_scale and bool(node.output) and node.output[0] in scaled
        coverage.scaled += int(has_scale)
        if holder:
            coverage.in_subgraphs.append((node.name or node.output[0], node.op_type, holder, has_scale))
    return coverage


#: Ops whose output is not a function of their inputs: never treated as fixed.
_NONDETERMINISTIC = ("RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                     "Bernoulli")


def _fixed_tensors(graph, fixed_inputs) -> set:
    """Tensors of ``graph`` that are the same for every batch of a run: initializers, inputs without a batch
    axis, and what plain nodes compute from them alone (nodes holding subgraphs are not followed)."""
    fixed = set(fixed_inputs) | {init.name for init in graph.initializer}
    for node in graph.node:  # ONNX graphs are topologically sorted
        if node.op_type in _NONDETERMINISTIC or any(a.HasField("g") or a.graphs for a in node.attribute):
            continue
        if all(not name or name in fixed for name in node.input):
            fixed.update(name for name in node.output if name)
    return fixed


def inline_fixed_branches(model, inputs, feed, max_levels: int = 8):
    """A copy of ``model`` in which every ``If`` whose condition is fixed for the run (computed from initializers
    and inputs without a batch axis only, such as a sample rate) is replaced by the branch it takes on ``feed``,
    so ONNX Runtime can expose the tensors inside it to calibration. Returns ``(model, names of the Ifs
    inlined)``; the model is ``model`` itself when there is none. The branch's tensors keep their names, the
    names TensorRT gives them when it builds the conditional.
    """
    import onnx
    from onnx import helper

    from ..ort import create_session, run

    fixed_inputs = [s.name for s in inputs if not s.batched]
    current, inlined = model, []
    for _ in range(max_levels):
        fixed = _fixed_tensors(current.graph, fixed_inputs)
        chosen = [node for node in current.graph.node if node.op_type == "If" and node.input[0] in fixed]
        if not chosen:
            break
        probe = onnx.ModelProto()
        probe.CopyFrom(current)
        del probe.graph.output[:]
        probe.graph.output.extend(helper.make_tensor_value_info(n.input[0], onnx.TensorProto.BOOL, None) for n in chosen)
        try:
            values = run(create_session(probe), {k: v for k, v in feed.items()
                                                 if k in {i.name for i in probe.graph.input}})
        except Exception as exc:  # noqa: BLE001 -- an If we cannot evaluate stays as it is
            log.debug("cannot evaluate If conditions (%s); subgraphs stay unexposed", exc)
            break
        taken = {n.name or n.output[0]: bool(np.asarray(values[n.input[0]]).reshape(-1)[0]) for n in chosen}
        result = onnx.ModelProto()
        result.CopyFrom(current)
        nodes = []
        known_inits = {i.name for i in result.graph.initializer}
        for node in current.graph.node:
            key = node.name or (node.output[0] if node.output else "")
            if node.op_type != "If" or key not in taken:
                nodes.append(node)
                continue
            branch = next(a.g for a in node.attribute if a.name == ("then_branch" if taken[key] else "else_branch"))
            nodes.extend(branch.node)
            for init in branch.initializer:
                if init.name not in known_inits:
                    result.graph.initializer.append(init)
                    known_inits.add(init.name)
            for inner, outer in zip(branch.output, node.output):
                nodes.append(helper.make_node("Identity", [inner.name], [outer], name=f"{key}/inlined/{outer}"))
            inlined.append(key)
        del result.graph.node[:]
        result.graph.node.extend(nodes)
        current = result
    return current, inlined
