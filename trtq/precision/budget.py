"""An accuracy budget: the fewest layers left in float so that the decisions stay within N points of FP32.

``--max-drop PTS`` (NNCF's ``max_drop`` in spirit) on calibrate, quantize and build. The
decisions are the ones the verdict judges, measured against the float model on held-back
calibration samples (:func:`trtq.compare.decisions.decisions_kept`): the user's ``--metric``
(1 = identical), top-1 agreement per position of every output with a class axis, IoU of every
binary mask. A drop
in agreement with FP32 bounds the drop in accuracy against labels (each changed decision
changes at most one right answer), so a budget on agreement holds for accuracy too.

The search walks the ranking of :func:`trtq.precision.search.layer_sensitivity` (one run:
the noise each quantized tensor's Q/DQ adds where it is read) and measures the decisions of
the model with the first k entries in float: k doubles until the budget holds, a bisection
finds the shortest such prefix, and a pruning pass quantizes again, one at a time, entries
of that prefix the budget holds without (the ranking is an estimate, the measurement the
truth). A model is within budget when the points it loses on the held-back samples plus
BUDGET_NOISE_SIGMAS bootstrap standard deviations of them are (those samples are a sample:
a model that just meets the budget on them misses it on new data about half the time).
Some 20-30 scored models whatever the size of the model, where adding one layer at a time
would need one round per layer. The result records the layers, the decisions reached,
every measured step and the CPU latency of the float, INT8 and mixed models side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from .. import defaults
from ..compare.accumulate import kept_noise
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
    met: bool                               # reached_points + noise_points within max_drop
    float_layers: List[str]                 # the nodes the budget leaves in float (beyond those given)
    samples: int
    noise_points: float = 0.0               # BUDGET_NOISE_SIGMAS bootstrap deviations of reached_points
    searched: List[str] = field(default_factory=list)   # the shortest prefix of the ranking within budget
    requantized: List[str] = field(default_factory=list)  # layers the pruning pass quantized again
    latency: LatencyCost = field(default_factory=LatencyCost)
    steps: List[dict] = field(default_factory=list)       # every measured model: phase, layers float, points lost

    def to_dict(self) -> dict:
        return {"max_drop": self.max_drop, "decision": self.decision, "start_drop": self.start_points,
                "reached_drop": self.reached_points, "noise_points": self.noise_points, "met": self.met,
                "float_layers": list(self.float_layers),
                "samples": self.samples, "searched": list(self.searched), "requantized": list(self.requantized),
                "latency": self.latency.to_dict(), "steps": list(self.steps)}

    def line(self) -> str:
        """``decisions within 1 point: top-1 agreement of 'y' lost 0.8 points (6.2 before) with 2 layer(s) float``."""
        head = (f"decisions within {self.max_drop:g} point(s)" if self.met else
                f"decisions NOT within {self.max_drop:g} point(s)")
        noise = f" +- {self.noise_points:.1f}" if self.noise_points else ""
        return (f"{head}: {self.decision} lost {self.reached_points:.1f}{noise} point(s) ({self.start_points:.1f} "
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


def check_budget_can_run(signature, *, metric=None, class_outputs=None, streamed: bool = False,
                         model_name: str = "the model") -> None:
    """Refuse ``--max-drop`` before any work where it cannot run (a :class:`~trtq.errors.TrtqError`): a streamed
    model, or one whose signature (:class:`~trtq.graph.signature.ModelSignature`) shows no output that decides and
    the user named none (``metric``, ``class_outputs``). An output whose deciding axis the graph leaves open
    may turn out to decide on the data: that is left to the search."""
    from ..graph.signature import CLASS, MASK, REGRESSION, UNKNOWN_AXIS

    if streamed:
        raise _streamed_error()
    if metric is not None or class_outputs:
        return
    judged = set(signature.judged_outputs())
    if not any(o.kind in (CLASS, MASK) or (o.kind == REGRESSION and o.axis == UNKNOWN_AXIS)
               for o in signature.outputs if o.name in judged):
        raise no_decisions_error(model_name)


def _streamed_error() -> TrtqError:
    return TrtqError("--max-drop ranks layers by their sensitivity on single calls, and a streamed model "
                     "(--feedback) is judged on whole sequences: not supported yet; calibrate without --max-drop")


def latency_cost(model, amax, replay, float_layers: Sequence[str], *, exclude: Sequence[str] = (),
                 threads: Optional[int] = None) -> LatencyCost:
    """Batch-1 CPU latency of the float model, the INT8 model and the mixed one, each in the Q/DQ form ONNX Runtime
    runs fast on a CPU (``target="cpu"``), timed in turns so that their ratios hold on a busy machine."""
    from ..graph.qdq import quantize_model

    int8, _ = quantize_model(model, amax, target="cpu", exclude=list(exclude))
    models = [model, int8]
    if float_layers:
        models.append(quantize_model(model, amax, target="cpu", exclude=list(exclude) + list(float_layers))[0])
    timed = replay.latencies_ms(models, threads=threads)
    return LatencyCost(float_ms=timed[0], int8_ms=timed[1], mixed_ms=timed[2] if float_layers else timed[1])


#: At most this many entries of the shortest prefix are tried for quantizing again.
PRUNE_TRIALS = 12


class _Measure:
    """Decisions kept by the model with given groups of layers in float (each measurement recorded)."""

    def __init__(self, model, amax, replay, kept_target: float, exclude: Sequence[str], threads: Optional[int],
                 outcome: BudgetOutcome):
        self.model, self.amax, self.replay, self.kept_target = model, amax, replay, kept_target
        self.exclude, self.threads, self.outcome = list(exclude), threads, outcome

    def __call__(self, groups: Sequence[Sequence[str]], phase: str) -> Tuple[bool, float, list]:
        from ..graph.qdq import quantize_model

        layers = layers_of(groups)
        quantized, _ = quantize_model(self.model, self.amax, target="trt", exclude=self.exclude + layers)
        metrics = self.replay.score(quantized, threads=self.threads)
        found = decisions_kept(metrics)
        kept = math.nan if found is None else found[1]
        margin = noise_margin(metrics)
        self.outcome.steps.append({"phase": phase, "layers": len(layers), "drop": drop_points(kept),
                                   "noise": 100.0 * margin})
        return bool(kept - margin >= self.kept_target), kept, metrics


def noise_margin(metrics: Sequence) -> float:
    """The share of decisions a budget keeps in reserve for the samples' noise: BUDGET_NOISE_SIGMAS bootstrap
    standard deviations of the share kept (0 when it cannot be resampled)."""
    noise = kept_noise(metrics)
    return 0.0 if noise is None or not math.isfinite(noise) else defaults.BUDGET_NOISE_SIGMAS * noise


def layers_of(groups: Sequence[Sequence[str]]) -> List[str]:
    """The nodes of ``groups``, each once, in order."""
    seen: List[str] = []
    for group in groups:
        seen += [n for n in group if n not in seen]
    return seen


def shortest_prefix(groups: Sequence[Sequence[str]], measure: _Measure, max_layers: Optional[int],
                    progress: ProgressCallback = no_progress) -> Tuple[int, Optional[list], float]:
    """The fewest leading ``groups`` in float that keep the decisions within budget: ``(k, metrics, best kept)``;
    k = 0 with metrics None when no prefix within ``max_layers`` layers does."""
    fails, passes, metrics, best = 0, None, None, -math.inf
    k = 1
    while k <= len(groups) and (max_layers is None or len(layers_of(groups[:k])) <= max_layers):
        ok, kept, found = measure(groups[:k], "double")
        progress(len(measure.outcome.steps), len(measure.outcome.steps) + 1)
        best = max(best, kept) if not math.isnan(kept) else best
        if ok:
            passes, metrics = k, found
            break
        fails = k
        k = len(groups) if k < len(groups) < 2 * k else 2 * k
    if passes is None:
        return 0, None, best
    while passes - fails > 1:
        middle = (passes + fails) // 2
        ok, kept, found = measure(groups[:middle], "bisect")
        progress(len(measure.outcome.steps), len(measure.outcome.steps) + 1)
        if ok:
            passes, metrics = middle, found
        else:
            fails = middle
    return passes, metrics, best


def prune(groups: Sequence[Sequence[str]], measure: _Measure, trials: int = PRUNE_TRIALS
          ) -> Tuple[List[List[str]], List[str], Optional[list]]:
    """Quantize again the groups the budget holds without, trying the last ones of the prefix first (the least
    sensitive by the ranking); the last group is needed (the prefix without it failed). Returns ``(groups kept,
    layers quantized again, metrics of the final model or None when nothing changed)``."""
    kept = [list(g) for g in groups]
    dropped: List[str] = []
    metrics = None
    for index in list(range(len(kept) - 2, -1, -1))[:trials]:
        trial = [g for j, g in enumerate(kept) if j != index and g]
        if not kept[index] or not trial:
            continue
        ok, _, found = measure(trial, "prune")
        if ok:
            dropped += [n for n in kept[index] if n not in layers_of(trial)]
            kept[index] = []
            metrics = found
    return [g for g in kept if g], dropped, metrics


@dataclass
class BudgetEstimate:
    """How many layers ``--max-drop`` would leave in float, estimated where a result lost too many decisions and
    no budget was asked for: the shortest prefix of the sensitivity ranking within the budget (the doubling and
    bisection of :func:`shortest_prefix`, without the pruning pass that may quantize some of it again), measured
    on the held-back samples the verdict was judged on."""

    max_drop: float                 # points
    layers: Optional[int]           # float layers of the shortest prefix within budget; None: no prefix is
    ranked: int                     # layers the sensitivity ranks (the most a budget can leave in float)
    samples: int
    measured: int                   # models scored
    seconds: float
    best_points: Optional[float] = None  # with no prefix within budget: the fewest points a measured one lost

    def to_dict(self) -> dict:
        return {"max_drop": self.max_drop, "layers": self.layers, "ranked": self.ranked, "samples": self.samples,
                "measured": self.measured, "seconds": round(self.seconds, 3), "best_points": self.best_points}


def estimate_budget(model, amax, replay, metrics: list, max_drop: float = defaults.BUDGET_HINT_POINTS, *,
                    exclude: Sequence[str] = (), threads: Optional[int] = None) -> Optional[BudgetEstimate]:
    """The :class:`BudgetEstimate` of ``model`` as calibrated (``metrics``: its verdict's, on ``replay``), or None
    where the budget cannot run (nothing decides, a streamed replay, nothing ranked) or already holds.

    Bounded: one sensitivity run and at most about 2 log2(ranked layers) scored models, and only called where the
    decisions already lost more than ``max_drop``; the budget's own search adds the pruning and the reserve."""
    import time

    from .search import layer_sensitivity

    start = decisions_kept(metrics)
    if start is None or not hasattr(replay, "tensors"):
        return None
    kept_target = 1.0 - check_max_drop(max_drop) / 100.0
    if start[1] - noise_margin(metrics) >= kept_target:
        return None
    started = time.perf_counter()
    ranking = layer_sensitivity(model, amax, replay=replay, exclude=exclude, threads=threads)
    groups = [entry.nodes() for entry in ranking if entry.own_snr_db is not None]
    if not groups:
        return None
    outcome = BudgetOutcome(max_drop, start[0], drop_points(start[1]), drop_points(start[1]), False, [],
                            replay.samples)
    k, found, best = shortest_prefix(groups, _Measure(model, amax, replay, kept_target, exclude, threads, outcome),
                                     None)
    return BudgetEstimate(max_drop, len(layers_of(groups[:k])) if found is not None else None,
                          len(layers_of(groups)), replay.samples, len(outcome.steps), time.perf_counter() - started,
                          best_points=None if found is not None or not math.isfinite(best) else drop_points(best))


def budget_estimate_of(verdict, model, amax, replay, metrics: list, exclude: Sequence[str] = (),
                       threads: Optional[int] = None, over_memory: str = "") -> Optional[dict]:
    """The verdict's ``budget_estimate`` (:meth:`BudgetEstimate.to_dict`) where its decisions lost more than
    :data:`~trtq.defaults.BUDGET_HINT_POINTS` on held-back samples, else None (no work: a result whose decisions
    are fine pays nothing). ``over_memory``: why the estimate's sensitivity run would not fit the memory budget
    (it holds every quantized node's output and its float twin's for a batch at once): then only that reason is
    recorded (``not_estimated``); on PP-OCRv4's 640x640 detector it took the calibration from 2.0 to 4.2 GB."""
    drop = verdict.decision_drop()
    if drop is None or not drop["points"] > defaults.BUDGET_HINT_POINTS or not verdict.held_back:
        return None  # (samples the statistics saw would flatter the count)
    if over_memory:
        return {"max_drop": defaults.BUDGET_HINT_POINTS, "not_estimated": over_memory}
    estimate = estimate_budget(model, amax, replay, metrics, defaults.BUDGET_HINT_POINTS, exclude=exclude,
                               threads=threads)
    return None if estimate is None else estimate.to_dict()


def reach_budget(model, amax, replay, metrics: list, max_drop: float, *, exclude: Sequence[str] = (),
                 max_layers: Optional[int] = None, threads: Optional[int] = None, measure_latency: bool = True,
                 progress: ProgressCallback = no_progress) -> Tuple[BudgetOutcome, list]:
    """Leave the fewest layers in float that keep the decisions on ``replay`` within ``max_drop`` points of FP32.

    ``metrics``: the verdict's per-output metrics of the model as calibrated (``exclude`` float);
    ``max_layers``: at most this many layers in float (None: as many as the budget needs).
    Returns the :class:`BudgetOutcome` and the metrics of the final model (the verdict's; the
    ones given when the budget already holds or cannot be met).
    """
    from .search import layer_sensitivity

    max_drop = check_max_drop(max_drop)
    start = decisions_kept(metrics)
    if start is None:
        raise no_decisions_error()
    if not hasattr(replay, "tensors"):  # the sensitivity run reads each call's tensors
        raise _streamed_error()
    kept_target = 1.0 - max_drop / 100.0
    margin = noise_margin(metrics)
    outcome = BudgetOutcome(max_drop, start[0], drop_points(start[1]), drop_points(start[1]),
                            bool(start[1] - margin >= kept_target), [], replay.samples, noise_points=100.0 * margin)
    if not outcome.met:
        ranking = layer_sensitivity(model, amax, replay=replay, exclude=exclude, threads=threads)
        groups = [entry.nodes() for entry in ranking if entry.own_snr_db is not None]
        measure = _Measure(model, amax, replay, kept_target, exclude, threads, outcome)
        k, found, best = shortest_prefix(groups, measure, max_layers, progress)
        if found is None:  # not met: nothing changes; the best it measured is reported
            outcome.reached_points = drop_points(best) if math.isfinite(best) else outcome.start_points
            outcome.noise_points = 0.0
        else:
            outcome.searched = layers_of(groups[:k])
            kept_groups, outcome.requantized, pruned = prune(groups[:k], measure)
            metrics = pruned if pruned is not None else found
            outcome.float_layers = layers_of(kept_groups)
            outcome.met = True
            outcome.decision, kept = decisions_kept(metrics)
            outcome.reached_points = drop_points(kept)
            outcome.noise_points = 100.0 * noise_margin(metrics)
    if measure_latency:
        outcome.latency = latency_cost(model, amax, replay, outcome.float_layers, exclude=exclude, threads=threads)
    return outcome, metrics
