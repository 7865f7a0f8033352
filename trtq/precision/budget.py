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
would need one round per layer.

The search reads its samples many times and keeps what passed on them, so its own count
flatters what it kept. What it keeps is therefore checked on samples it never read (the
check, :data:`~trtq.defaults.BUDGET_CHECK_SAMPLES`, held back beside the others), within
BUDGET_CHECK_SIGMAS deviations; where the check fails, longer prefixes of the ranking are
left float (doubling, up to all of it, which is the float model) until it holds. The
check's margin is at least what one more sample would lose, as the samples that lost
decisions fully INT8 lose on average: a set that happened to lose nothing shows no spread
(a budget met "+- 0" on 64 scenes lost 1.6 points on 300 new ones). The result records the
layers, the decisions reached on both sets, every measured step and the CPU latency of the
float, INT8 and mixed models side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .. import defaults
from ..compare.accumulate import kept_noise, sample_losses
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
    check_samples: int = 0                  # samples the search never read that checked its result (0: none)
    check_start_points: Optional[float] = None  # points lost fully INT8 on them
    check_points: Optional[float] = None    # points lost on them with ``float_layers`` in float
    check_noise_points: float = 0.0         # the check's margin (BUDGET_CHECK_SIGMAS deviations, at least a sample)
    widened: List[str] = field(default_factory=list)     # layers the check left float beyond the search's choice
    check_needs: int = 0                    # without a check: the calibration samples that would give one

    def to_dict(self) -> dict:
        return {"max_drop": self.max_drop, "decision": self.decision, "start_drop": self.start_points,
                "reached_drop": self.reached_points, "noise_points": self.noise_points, "met": self.met,
                "float_layers": list(self.float_layers),
                "samples": self.samples, "searched": list(self.searched), "requantized": list(self.requantized),
                "check": {"samples": self.check_samples, "start_drop": self.check_start_points,
                          "reached_drop": self.check_points, "noise_points": self.check_noise_points,
                          "widened": list(self.widened)},
                "latency": self.latency.to_dict(), "steps": list(self.steps)}

    def final_points(self) -> float:
        """The points lost with ``float_layers`` in float on the samples that judge the result: the check's where
        it ran (the search never read them), else the search's."""
        return self.check_points if self.check_points is not None else self.reached_points

    def line(self) -> str:
        """``decisions within 1 point: top-1 agreement of 'y' lost 0.4 +- 0.3 point(s) (2.1 fully INT8) with 2
        layer(s) in float on 128 samples the search never read; the search: 0.0 on 64 held-back samples``."""
        head = (f"decisions within {self.max_drop:g} point(s)" if self.met else
                f"decisions NOT within {self.max_drop:g} point(s)")
        if self.check_points is None:
            noise = f" +- {self.noise_points:.1f}" if self.noise_points else ""
            unchecked = ("" if not self.met else
                         "; not checked on samples the search never read" + (
                             f" (give at least {self.check_needs} calibration samples for that)"
                             if self.check_needs else ""))
            return (f"{head}: {self.decision} lost {self.reached_points:.1f}{noise} point(s) ({self.start_points:.1f} "
                    f"fully INT8) with {len(self.float_layers)} layer(s) in float on {self.samples} held-back "
                    f"samples{unchecked}")
        noise = f" +- {self.check_noise_points:.1f}" if self.check_noise_points else ""
        widened = (f"; the check left {len(self.widened)} more layer(s) float than the search chose" if self.widened
                   else "")
        return (f"{head}: {self.decision} lost {self.check_points:.1f}{noise} point(s) "
                f"({self.check_start_points:.1f} fully INT8) with {len(self.float_layers)} layer(s) in float on "
                f"{self.check_samples} samples the search never read; the search: {self.reached_points:.1f} on "
                f"{self.samples} held-back samples{widened}")


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
    """Decisions kept by the model with given groups of layers in float (each measurement recorded), within
    ``sigmas`` deviations and at least ``typical`` (:func:`typical_loss`) over the samples."""

    def __init__(self, model, amax, replay, kept_target: float, exclude: Sequence[str], threads: Optional[int],
                 outcome: BudgetOutcome, sigmas: float = defaults.BUDGET_NOISE_SIGMAS, typical: float = 0.0):
        self.model, self.amax, self.replay, self.kept_target = model, amax, replay, kept_target
        self.exclude, self.threads, self.outcome = list(exclude), threads, outcome
        self.sigmas, self.typical = sigmas, typical

    def __call__(self, groups: Sequence[Sequence[str]], phase: str) -> Tuple[bool, float, list]:
        from ..graph.qdq import quantize_model

        layers = layers_of(groups)
        quantized, _ = quantize_model(self.model, self.amax, target="trt", exclude=self.exclude + layers)
        return self.judge(self.replay.score(quantized, threads=self.threads), phase, len(layers))

    def judge(self, metrics: list, phase: str, layers: int) -> Tuple[bool, float, list]:
        """Whether ``metrics`` keep the budget with the margin: ``(within, share kept, metrics)``, recorded."""
        found = decisions_kept(metrics)
        kept = math.nan if found is None else found[1]
        margin = noise_margin(metrics, self.sigmas, self.typical)
        self.outcome.steps.append({"phase": phase, "layers": layers, "drop": drop_points(kept),
                                   "noise": 100.0 * margin})
        return bool(kept - margin >= self.kept_target), kept, metrics


def typical_loss(metrics: Sequence) -> float:
    """The share of decisions a sample that lost any lost, on average (0 when none lost any): one more such
    sample is the least a count of these samples can miss."""
    losses = sample_losses(metrics)
    lost = losses[losses > 1e-12] if losses is not None else np.zeros(0)
    return float(lost.mean()) if lost.size else 0.0


def _outputs_differ(metrics: Sequence) -> bool:
    """Whether any judged output differs from FP32 at all (a model with every layer float does not: it can lose
    nothing, on any sample)."""
    return any(m.per_sample is None or float(np.sum(m.per_sample.err2)) > 0.0 for m in metrics)


def noise_margin(metrics: Sequence, sigmas: float = defaults.BUDGET_NOISE_SIGMAS, typical: float = 0.0) -> float:
    """The share of decisions a budget keeps in reserve for the samples' noise: ``sigmas`` bootstrap standard
    deviations of the share kept, and at least ``typical`` (:func:`typical_loss`) over the samples where the
    outputs differ from FP32 at all (0 when nothing can be resampled or nothing differs)."""
    noise = kept_noise(metrics)
    spread = 0.0 if noise is None or not math.isfinite(noise) else sigmas * noise
    samples = max((m.samples for m in metrics), default=0)
    floor = typical / samples if typical > 0 and samples and _outputs_differ(metrics) else 0.0
    return max(spread, floor)


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
                 progress: ProgressCallback = no_progress, check=None) -> Tuple[BudgetOutcome, list]:
    """Leave the fewest layers in float that keep the decisions on ``replay`` within ``max_drop`` points of FP32.

    ``metrics``: the verdict's per-output metrics of the model as calibrated (``exclude`` float);
    ``max_layers``: at most this many layers in float (None: as many as the budget needs);
    ``check``: a replay of samples the search never reads, that what it keeps must hold on too (:func:`_check`).
    Returns the :class:`BudgetOutcome` and the metrics of the final model (the verdict's: on the check's samples
    where it ran; the ones given when the budget already holds unchecked or cannot be met).
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
    typical = typical_loss(metrics)  # fully INT8, on the search's samples: the check's floor where its own lose none
    outcome = BudgetOutcome(max_drop, start[0], drop_points(start[1]), drop_points(start[1]),
                            bool(start[1] - margin >= kept_target), [], replay.samples, noise_points=100.0 * margin)
    ranked: List[List[List[str]]] = []

    def groups() -> List[List[str]]:
        """The sensitivity ranking's groups, run once and only where needed."""
        if not ranked:
            ranking = layer_sensitivity(model, amax, replay=replay, exclude=exclude, threads=threads)
            ranked.append([entry.nodes() for entry in ranking if entry.own_snr_db is not None])
        return ranked[0]

    k = 0
    if not outcome.met:
        measure = _Measure(model, amax, replay, kept_target, exclude, threads, outcome)
        k, found, best = shortest_prefix(groups(), measure, max_layers, progress)
        if found is None:  # not met: nothing changes; the best it measured is reported
            outcome.reached_points = drop_points(best) if math.isfinite(best) else outcome.start_points
            outcome.noise_points = 0.0
        else:
            outcome.searched = layers_of(groups()[:k])
            kept_groups, outcome.requantized, pruned = prune(groups()[:k], measure)
            metrics = pruned if pruned is not None else found
            outcome.float_layers = layers_of(kept_groups)
            outcome.met = True
            outcome.decision, kept = decisions_kept(metrics)
            outcome.reached_points = drop_points(kept)
            outcome.noise_points = 100.0 * noise_margin(metrics)
    if outcome.met and check is not None and check.samples:
        metrics = _check(model, amax, check, outcome, groups, k, kept_target, exclude=exclude, max_layers=max_layers,
                         threads=threads, typical=typical, progress=progress)
    if measure_latency:
        outcome.latency = latency_cost(model, amax, replay, outcome.float_layers, exclude=exclude, threads=threads)
    return outcome, metrics


def _check(model, amax, check, outcome: BudgetOutcome, groups, k: int, kept_target: float, *,
           exclude: Sequence[str], max_layers: Optional[int], threads: Optional[int], typical: float,
           progress: ProgressCallback = no_progress) -> list:
    """Check the search's result on ``check`` (samples it never read): the layers it kept, then the prefix of the
    ranking it found before pruning, then prefixes twice as long each time, up to the whole ranking (or
    ``max_layers``), until one keeps the budget within BUDGET_CHECK_SIGMAS deviations. Fills the outcome's
    ``check_*`` fields (``met`` False and no layer float when none does) and returns the metrics on ``check`` of
    the model kept (of the fully INT8 model when none holds)."""
    from ..graph.qdq import quantize_model

    start_metrics = check.score(quantize_model(model, amax, target="trt", exclude=list(exclude))[0], threads=threads)
    outcome.check_samples = check.samples
    outcome.check_start_points = drop_points(decisions_kept(start_metrics)[1])
    measure = _Measure(model, amax, check, kept_target, exclude, threads, outcome,
                       sigmas=defaults.BUDGET_CHECK_SIGMAS, typical=typical_loss(start_metrics) or typical)
    chosen = list(outcome.float_layers)

    def candidates() -> Iterator[List[str]]:
        """What the search kept, its prefix before pruning, then prefixes doubling to the whole ranking (computed
        only when what came before failed)."""
        yield chosen
        if k and layers_of(groups()[:k]) != chosen:
            yield layers_of(groups()[:k])
        size, total = (2 * k if k else 1), len(groups())
        while True:
            size = min(size, total)
            if size > k:
                yield layers_of(groups()[:size])
            if size >= total:
                return
            size *= 2

    for layers in candidates():
        if max_layers is not None and len(layers) > max_layers:
            break
        if layers:
            ok, kept, metrics = measure([layers], "check")
        else:
            ok, kept, metrics = measure.judge(start_metrics, "check", 0)
        progress(len(outcome.steps), len(outcome.steps) + 1)
        if ok:
            outcome.widened = [n for n in layers if n not in chosen]
            outcome.float_layers = list(layers)
            outcome.check_points = drop_points(kept)
            outcome.check_noise_points = outcome.steps[-1]["noise"]  # the margin judge() just applied
            return metrics
    outcome.met, outcome.float_layers = False, []
    outcome.check_points = outcome.check_start_points
    return start_metrics
