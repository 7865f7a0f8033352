"""What calibration sees of a model whose compute sits inside ``If`` / ``Loop`` / ``Scan`` subgraphs.

ONNX Runtime runs a subgraph as one node: its inner tensors cannot be requested as
outputs, so trtq's histograms (and its Q/DQ placement, which works on the main graph)
never reach them. TensorRT then has no scale for them: on the implicit path it warns
"Missing scale and zero-point for tensor ..." and runs the layers that read or write
them in FP16/FP32; on the explicit path a layer without Q/DQ runs in float. Such a model
must never look quantized when it is not, so :func:`weighted_coverage` counts the
weighted ops (Conv, ConvTranspose, MatMul, Gemm) that got scales and lists the ones
inside subgraphs by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Collection, List, Tuple

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
    in_subgraphs: List[Tuple[str, str, str]] = field(default_factory=list)

    @property
    def share(self) -> float:
        return self.scaled / self.total if self.total else 1.0

    def line(self) -> str:
        """One line for the report; empty when every weighted op sits in the main graph."""
        if not self.in_subgraphs:
            return ""
        holders = sorted({holder for _, _, holder in self.in_subgraphs})
        names = ", ".join(name for name, _, _ in self.in_subgraphs[:4])
        more = f" and {len(self.in_subgraphs) - 4} more" if len(self.in_subgraphs) > 4 else ""
        return (f"{self.scaled} of {self.total} Conv/MatMul/Gemm ops got INT8 scales ({self.share:.0%}); "
                f"{len(self.in_subgraphs)} sit inside {', '.join(holders)} subgraphs ({names}{more}), which ONNX "
                f"Runtime cannot expose to calibration: TensorRT finds no scale for them and runs them in "
                f"FP16/FP32")

    def to_dict(self) -> dict:
        return {"weighted_ops": self.total, "with_scales": self.scaled,
                "in_subgraphs": [{"name": n, "op": op, "inside": holder} for n, op, holder in self.in_subgraphs]}


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
        if holder:
            coverage.in_subgraphs.append((node.name or node.output[0], node.op_type, holder))
        elif any(name in scaled for name in node.input[:2]):
            coverage.scaled += 1
    return coverage
