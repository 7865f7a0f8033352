"""An accuracy budget: the fewest layers left in float so that the decisions stay within N points of FP32.

``--max-drop PTS`` (NNCF's ``max_drop`` in spirit) on calibrate, quantize and build. The
decisions are the ones the verdict judges, measured against the float model on held-back
calibration samples (:func:`trtq.compare.decisions.decisions_kept`): the user's ``--metric``
(1 = identical), top-1 agreement per position of every output with a class axis, IoU of every
binary mask. A drop
in agreement with FP32 bounds the drop in accuracy against labels (each changed decision
changes at most one right answer), so a budget on agreement holds for accuracy too.

The search is the mixed-precision search of ``trtq eval --auto-exclude`` with the decisions
as its target (layers ranked by their measured sensitivity, each step measured), followed
by a pruning pass: every layer the search left in float is quantized again, one at a time,
where the decisions stay within the budget without it. The result records the layers, the
decisions reached and the CPU latency of the float, INT8 and mixed models side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .. import defaults
from ..compare.decisions import decisions_kept, drop_points
from ..errors import TrtqError
from ..progress import ProgressCallback, no_progress


@dataclass
class LatencyCost:
    """Batch-1 median latency (ms) on ONNX Runtime CPU of the float, the INT8 and the mixed model (CPU Q/DQ form)."""

    float_ms: Optional[float] = None
    int8_ms: Optional[float] = None
    mixed_ms: Optional[float] = None

    def to_dict(self) -> dict:
        return {"float_ms": self.float_ms, "int8_ms": self.int8_ms, "mixed_ms": self.mixed_ms}

    def line(self) -> str:
        parts = [f"{name} {value:.2f} ms" for name, value in
                 (("float", self.float_ms), ("INT8", self.int8_ms), ("mixed", self.mixed_ms)) if value is not None]
        return "CPU latency (batch 1, ONNX Runtime): " + ", ".join(parts) if parts else ""


@dataclass
class BudgetOutcome:
    """What the budget search did: the layers, the decisions before and after, the latency cost."""

    max_drop: float                         # points
    decision: str                           # which decision lost most (what the budget judges)
    start_points: float                     # points lost by the model as calibrated
    reached_points: float                   # points lost with ``float_layers`` in float
    met: bool
    float_layers: List[str]                 # the nodes the budget leaves in float (beyond those given)
    samples: int
    searched: List[str] = field(default_factory=list)   # what the search left in float before pruning
    requantized: List[str] = field(default_factory=list)  # layers the pruning pass quantized again
    latency: LatencyCost = field(default_factory=LatencyCost)

    def to_dict(self) -> dict:
        return {"max_drop": self.max_drop, "decision": self.decision, "start_drop": self.start_points,
                "reached_drop": self.reached_points, "met": self.met, "float_layers": list(self.float_layers),
                "samples": self.samples, "searched": list(self.searched), "requantized": list(self.requantized),
                "latency": self.latency.to_dict()}

    def line(self) -> str:
        """``decisions within 1 point: top-1 agreement of 'y' lost 0.8 points (6.2 before) with 2 layer(s) float``."""
        head = (f"decisions within {self.max_drop:g} point(s)" if self.met else
                f"decisions NOT within {self.max_drop:g} point(s)")
        return (f"{head}: {self.decision} lost {self.reached_points:.1f} point(s) ({self.start_points:.1f} "
                f"fully INT8) with {len(self.float_layers)} layer(s) in float on {self.samples} held-back samples")


def check_max_drop(max_drop: float) -> float:
    """``max_drop`` as points in [0, 100), or a :class:`~trtq.errors.TrtqError` naming the option."""
    if not (isinstance(max_drop, (int, float)) and math.isfinite(max_drop) and 0.0 <= max_drop < 100.0):
        raise TrtqError(f"--max-drop is the points of decisions the INT8 model may lose against FP32, in [0, 100); "
                        f"got {max_drop}")
    return float(max_drop)


def no_decisions_error(model_name: str = "the model") -> TrtqError:
    return TrtqError(f"--max-drop budgets decisions, and no output of {model_name} decides anything trtq can see "
                     "(no class axis, binary mask or --metric): name the class output with --class-output NAME, "
                     "give your task's --metric FILE.py:NAME, or use --target-snr DB / --target-cosine C")


def prune(model, amax, replay, search_excluded: Sequence[Sequence[str]], kept_target: float, *,
          exclude: Sequence[str] = (), threads: Optional[int] = None,
          progress: ProgressCallback = no_progress) -> Tuple[List[str], List[str], Optional[list]]:
    """Quantize again every group of layers the search left in float where the decisions stay within the budget
    without it (the search adds greedily: a later group can make an earlier one unnecessary).

    ``search_excluded``: the groups in the order the search kept them. Returns ``(float layers,
    layers quantized again, metrics of the final model or None when nothing changed)``.
    """
    from ..graph.qdq import quantize_model

    groups = [list(g) for g in search_excluded]
    dropped: List[str] = []
    final_metrics = None
    for index in range(len(groups)):
        progress(index, len(groups))
        if len(groups) <= 1:
            break
        trial = [g for j, g in enumerate(groups) if j != index and g]
        if not groups[index] or not trial:
            continue
        layers = [n for g in trial for n in g]
        quantized, _ = quantize_model(model, amax, target="trt", exclude=list(exclude) + layers)
        metrics = replay.score(quantized, threads=threads)
        kept = decisions_kept(metrics)
        if kept is not None and kept[1] >= kept_target:
            dropped += groups[index]
            groups[index] = []
            final_metrics = metrics
    progress(len(groups), len(groups))
    return [n for g in groups for n in g], dropped, final_metrics


def latency_cost(model, amax, replay, float_layers: Sequence[str], *, exclude: Sequence[str] = (),
                 threads: Optional[int] = None) -> LatencyCost:
    """Batch-1 CPU latency of the float model, the INT8 model and the mixed one, each in the Q/DQ form ONNX Runtime
    runs fast on a CPU (``target="cpu"``)."""
    from ..graph.qdq import quantize_model

    cost = LatencyCost(float_ms=replay.latency_ms(model, threads=threads))
    int8, _ = quantize_model(model, amax, target="cpu", exclude=list(exclude))
    cost.int8_ms = replay.latency_ms(int8, threads=threads)
    if float_layers:
        mixed, _ = quantize_model(model, amax, target="cpu", exclude=list(exclude) + list(float_layers))
        cost.mixed_ms = replay.latency_ms(mixed, threads=threads)
    else:
        cost.mixed_ms = cost.int8_ms
    return cost


def kept_groups(search) -> List[List[str]]:
    """The node groups an :class:`~trtq.compare.struct.AutoExcludeResult` left in float, in the order it kept them."""
    groups, before = [], []
    for step in search.steps:
        if step.kept and step.layer is not None:
            groups.append([n for n in step.excluded if n not in before])
            before = list(step.excluded)
    return groups



def reach_budget(model, amax, replay, metrics: list, max_drop: float, *, exclude: Sequence[str] = (),
                 max_layers: int = defaults.AUTO_EXCLUDE_MAX_LAYERS, threads: Optional[int] = None,
                 measure_latency: bool = True, progress: ProgressCallback = no_progress):
    """Leave the fewest layers in float that keep the decisions on ``replay`` within ``max_drop`` points of FP32.

    ``metrics``: the verdict's per-output metrics of the model as calibrated (``exclude`` float).
    Returns ``(search, outcome, metrics)``: the :class:`~trtq.compare.struct.AutoExcludeResult` of the
    search (None when the model as calibrated is already within the budget), the
    :class:`BudgetOutcome` and the metrics of the final model (the verdict's).
    """
    from .search import auto_exclude

    max_drop = check_max_drop(max_drop)
    start = decisions_kept(metrics)
    if start is None:
        raise no_decisions_error()
    kept_target = 1.0 - max_drop / 100.0
    outcome = BudgetOutcome(max_drop, start[0], drop_points(start[1]), drop_points(start[1]),
                            bool(start[1] >= kept_target), [], replay.samples)
    search = None
    if not outcome.met:
        search, mixed = auto_exclude(model, amax, target_decisions=kept_target, max_layers=max_layers, replay=replay,
                                     exclude=exclude, measure_speed=False, threads=threads, progress=progress)
        outcome.searched = list(search.excluded)
        outcome.start_points = drop_points(search.steps[0].metric)  # measured on the search's own samples
        if search.met:
            if search.excluded:
                layers, outcome.requantized, pruned = prune(model, amax, replay, kept_groups(search), kept_target,
                                                            exclude=exclude, threads=threads)
                metrics = pruned if pruned is not None else replay.score(mixed, threads=threads)
                search.excluded = outcome.float_layers = layers
            outcome.met = True
            outcome.decision, kept = decisions_kept(metrics)
            outcome.reached_points = drop_points(kept)
        else:  # not met: nothing changes; the best it measured is reported
            best = max((s.metric for s in search.steps), key=lambda v: -math.inf if math.isnan(v) else v)
            outcome.reached_points = drop_points(best)
    if measure_latency:
        outcome.latency = latency_cost(model, amax, replay, outcome.float_layers, exclude=exclude, threads=threads)
    return search, outcome, metrics
