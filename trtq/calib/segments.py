"""Consecutive pieces of a model, so that collection runs the model once however its outputs are grouped.

When one sample's observed activations exceed a run's share of the memory budget, collection
requests them in groups (:func:`trtq.calib.collect.plan_runs`). Asking a session of the whole
model for each group runs the whole model once per group: twice per sample on a 640x640
detector. The groups are consecutive in graph order, so the graph can be cut after each
group's last tensor instead: each piece holds the nodes up to that point that the earlier
pieces did not run, takes the tensors it reads from the data and from the earlier pieces
(carried), and gives its group and what later pieces read. Every node runs once per sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Set


@dataclass
class Segment:
    """One piece of the graph: its model, what it reads, and what it gives."""

    model: object                                      # onnx.ModelProto of this piece
    inputs: List[str]                                  # from the data or from earlier pieces
    observed: List[str]                                # its outputs that are histogrammed
    outputs: List[str]                                 # observed, then carried
    carry: List[str] = field(default_factory=list)     # its outputs later pieces read
    release: List[str] = field(default_factory=list)   # carried tensors no later piece reads


def _subgraph_reads(node) -> Set[str]:
    """Names a node's subgraphs (If, Loop, Scan bodies) read, their own tensors included (an over-estimate
    that only matters where a name is also made in the outer graph)."""
    names: Set[str] = set()
    for attr in node.attribute:
        graphs = list(attr.graphs) + ([attr.g] if attr.HasField("g") else [])
        for graph in graphs:
            for inner in graph.node:
                names.update(i for i in inner.input if i)
                names |= _subgraph_reads(inner)
    return names


def cut_segments(model, groups: Sequence[Sequence[str]], types: Dict[str, object]) -> Optional[List[Segment]]:
    """Pieces of ``model`` (in order) whose outputs are ``groups`` (observed node outputs, consecutive in graph
    order), or None when it cannot be cut: a tensor a piece reads or gives has no known element type (``types``:
    :func:`value_types`), or the model has sparse initializers."""
    import onnx

    graph = model.graph
    if len(groups) < 2 or len(graph.sparse_initializer):
        return None
    nodes = list(graph.node)
    producer: Dict[str, int] = {}
    for index, node in enumerate(nodes):
        for out in node.output:
            if out:
                producer[out] = index
    constants = {out for node in nodes if node.op_type == "Constant" for out in node.output if out}
    initializers = {init.name: init for init in graph.initializer}
    reads = [({i for i in node.input if i} | _subgraph_reads(node)) for node in nodes]

    ends = sorted({max(producer[t] for t in group if t in producer) for group in groups if
                   any(t in producer for t in group)})
    if len(ends) < 2 or any(t not in producer for group in groups for t in group):
        return None
    bounds = list(zip([-1] + ends[:-1], ends))  # (last node of the previous piece, last node of this one)
    owner = {}
    for position, (start, end) in enumerate(bounds):
        for index in range(start + 1, end + 1):
            owner[index] = position
    observed = [[t for group in groups for t in group if owner[producer[t]] == position] for position in
                range(len(bounds))]
    pieces = []
    for position, (start, end) in enumerate(bounds):
        members = [i for i in range(start + 1, end + 1) if nodes[i].op_type != "Constant"]
        made = {o for i in members for o in nodes[i].output if o}
        wanted: Set[str] = set()
        for i in members:
            wanted |= reads[i]
        constant_nodes = sorted({producer[n] for n in wanted if n in constants})
        outer = [n for n in sorted(wanted - made - constants, key=lambda n: (producer.get(n, -1), n))
                 if n not in initializers and (n in producer or n in {vi.name for vi in graph.input})]
        pieces.append((members, constant_nodes, made, wanted, outer))
    segments: List[Segment] = []
    for position, (members, constant_nodes, made, wanted, outer) in enumerate(pieces):
        later: Set[str] = set()
        for _, _, _, _, their_outer in pieces[position + 1:]:
            later.update(their_outer)
        carry = sorted(made & later, key=lambda n: producer[n])
        outputs = observed[position] + [n for n in carry if n not in set(observed[position])]
        missing = [n for n in outer + outputs if n not in types]
        if missing:
            return None
        piece = onnx.ModelProto()
        piece.ir_version = model.ir_version
        piece.opset_import.extend(model.opset_import)
        piece.functions.extend(model.functions)
        piece.graph.name = f"{graph.name or 'graph'}_piece{position}"
        piece.graph.node.extend(nodes[i] for i in constant_nodes + members)
        piece.graph.initializer.extend(initializers[n] for n in sorted(wanted & set(initializers)))
        for name in outer:  # element types only: the data's shapes are the ones that hold
            piece.graph.input.append(onnx.helper.make_tensor_value_info(name, types[name], None))
        for name in outputs:
            piece.graph.output.append(onnx.helper.make_tensor_value_info(name, types[name], None))
        segments.append(Segment(piece, outer, observed[position], outputs, carry))
    released: Set[str] = set()
    for position, segment in enumerate(segments):  # after the last piece that reads it, a carried tensor goes
        still = {n for later_segment in segments[position + 1:] for n in later_segment.inputs}
        segment.release = [n for before in segments[:position + 1] for n in before.carry
                           if n not in still and n not in released]
        released.update(segment.release)
    return segments


def value_types(model) -> Dict[str, object]:
    """name -> element type of every tensor shape inference types (:func:`trtq.graph.placement.element_types`);
    without types the model is not cut (collection groups instead)."""
    from ..graph.placement import element_types

    return element_types(model)
