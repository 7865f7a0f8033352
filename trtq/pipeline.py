"""The flows that compose trtq's layers: calibrate -> choose -> verdict -> write, and quantize from any source.

The layers below never call up into this module: ``trtq.calib`` turns batches into
histograms and histograms into amax, ``trtq.graph`` turns a model and amax into a Q/DQ
model, ``trtq.evaluate`` scores outputs. What needs all three lives here:

- **held-back samples**: the first :data:`~trtq.defaults.HOLDOUT_SAMPLES` calibration
  samples (after the seeded shuffle) are kept out of the statistics; the float model's
  outputs on them are the reference every INT8 candidate is scored against.
- **``--algo auto``** (the default): one pass of histograms, amax for every single
  algorithm from it (milliseconds), the TensorRT-form Q/DQ model of each scored on the
  held-back samples (worst output, worst channel group), the best kept, then refined
  per tensor where a measured trial raises the score.
- **the verdict**: every INT8 result ends with its fidelity on the held-back samples,
  a warning line when it is poor, and a failure (:class:`~trtq.errors.FidelityError`,
  nothing written) when the caller set ``min_snr`` / ``min_cosine``.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import defaults
from .errors import TrtqError
from .progress import ProgressCallback, no_progress

def model_reads(model_path: PathLike) -> List[Tuple[str, Path]]:
    """The model and its external-data files: what the output guard must never write onto."""
    from .graph.model import external_data_files

    return [("the model", Path(model_path))] + [("the external data of the model", p)
                                                for p in external_data_files(model_path)]


log = logging.getLogger(__name__)

PathLike = Union[str, Path]
Feed = Dict[str, np.ndarray]


# --------------------------------------------------------------------------- held-back samples


def holdout_count(total: Optional[int], wanted: int = defaults.HOLDOUT_SAMPLES) -> int:
    """Samples to hold back out of ``total`` (see :data:`trtq.defaults.HOLDOUT_SAMPLES`)."""
    if wanted <= 0:
        return 0
    if total is None or total >= 4 * wanted:
        return wanted
    return total // 4


def split_holdout(batches: Iterable[Mapping[str, np.ndarray]], count: int,
                  whole_batches: bool = False, specs: Optional[Sequence] = None) -> Tuple[List[Feed], Iterator[Feed]]:
    """The first ``count`` samples of ``batches``, and an iterator over the rest.

    A batch is split where ``count`` falls inside it, along each input's batch axis
    (``specs``: the model's :class:`~trtq.graph.model.TensorSpec` list; default axis 0 of
    every input), its remainder coming last in the rest, unless ``whole_batches`` (a
    model with a fixed batch size): then whole batches are held back until ``count``
    is reached.
    """
    from .graph.batch import feed_samples, take_samples
    from .graph.model import TensorSpec

    iterator = iter(batches)
    held: List[Feed] = []
    have = 0
    remainder: Optional[Feed] = None
    while have < count:
        try:
            feed = {k: np.asarray(v) for k, v in next(iterator).items()}
        except StopIteration:
            break
        if specs is None:
            specs = [TensorSpec(k, tuple(v.shape), v.dtype, 0 if v.ndim else None) for k, v in feed.items()]
        n = feed_samples(feed, specs)
        take = n if whole_batches else min(n, count - have)
        held.append(take_samples(feed, specs, slice(0, take)) if take < n else feed)
        have += take
        if take < n:
            remainder = take_samples(feed, specs, slice(take, None))

    def rest() -> Iterator[Feed]:
        yield from iterator
        if remainder is not None:  # last: the first batch collection sees is a whole one (memory budget)
            yield remainder

    return held, rest()


# --------------------------------------------------------------------------- scoring and the auto choice


@dataclass
class Candidate:
    """One amax table scored as the TensorRT-form Q/DQ model on the held-back samples."""

    name: str
    snr_db: float                          # worst output / channel group / judged channel
    cosine: float                          # worst output / channel group (mean per-sample cosine)
    seconds: float = 0.0
    metrics: list = field(default_factory=list, repr=False, compare=False)  # per output, for the verdict
    decision: Optional[float] = None       # trtq.evaluate.decision_of: the user's metric, else top-1 agreement
    decision_name: str = ""
    decision_noise: Optional[float] = None  # bootstrap standard deviation of ``decision`` over the samples
    snr_noise: Optional[float] = None       # and of ``snr_db``
    samples: int = 0
    output_snr_db: float = math.nan         # worst whole output / channel group (judged channels left out)

    def key(self) -> Tuple[float, float, float, float]:
        """Point estimates in the order the tie rule reads them (higher is better): worst SNR with judged
        channels, worst whole output / channel group SNR, decision, cosine."""
        def low(value: Optional[float]) -> float:
            return -math.inf if value is None or math.isnan(value) else value

        return low(self.snr_db), low(self.output_snr_db), low(self.decision), low(self.cosine)

    def to_dict(self) -> dict:
        return {"snr_db": self.snr_db, "output_snr_db": self.output_snr_db, "cosine": self.cosine,
                "decision": self.decision_name or None, "agreement": self.decision,
                "agreement_noise": self.decision_noise, "snr_noise_db": self.snr_noise, "samples": self.samples}


# --------------------------------------------------------------------------- the ranking seam
# How scored candidates are ORDERED (auto's choice and its refinement trials use this and
# nothing else). WHAT is measured comes from trtq.evaluate (compare_outputs, decision_of,
# resampled_scores); HOW a candidate's outputs are produced is score()'s business.
#
# Rule (docs/accuracy.md): decisions first, worst SNR with judged channels next, each
# compared with its noise (paired bootstrap over the same held-back samples): a difference
# counts only beyond NOISE_SIGMAS bootstrap standard deviations. Leaders within noise of each
# other are scored on HOLDOUT_RESERVE more held-back samples (once); a tie that remains is
# broken by the point estimates of the worst SNR with channels, then of the worst whole output
# / channel group SNR, then decision, then cosine, then the order of SINGLE_ALGORITHMS. (The
# whole-output SNR is never a level of its own: it is what hides a broken objectness channel.)
# Refinement trials are kept by the same rule (improves), with AUTO_REFINE_MIN_GAIN_DB on SNR,
# and never when they lower the decision score, even within noise.


def _draws(samples: int, draws: int = defaults.BOOTSTRAP_DRAWS) -> np.ndarray:
    """``[draws, samples]`` resampling indices, seeded: every candidate on these samples gets the same ones."""
    return np.random.default_rng(samples).integers(0, samples, size=(draws, samples))


def _resampled(candidate: Candidate) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """(decision, worst SNR with channels) on the bootstrap draws."""
    from .evaluate import resampled_scores

    decision, snr = resampled_scores(candidate.metrics, _draws(candidate.samples))
    return decision, np.clip(snr, -300.0, 300.0)  # +-inf (identical / all error) as far-away finite values


def estimate_noise(candidate: Candidate) -> Candidate:
    """Fill ``candidate``'s bootstrap noise (standard deviation over resampled held-back samples)."""
    if candidate.samples > 1 and candidate.metrics:
        decision, snr = _resampled(candidate)
        candidate.snr_noise = float(np.std(snr))
        candidate.decision_noise = None if decision is None else float(np.std(decision))
    return candidate


def compare(a: Candidate, b: Candidate) -> Tuple[int, str]:
    """(+1 a better, -1 b better, 0 within noise) and the level that decided: decision, then worst SNR
    (judged channels included)."""
    if a.metrics is b.metrics:
        return 0, "same model"
    paired = a.samples == b.samples and a.samples > 1
    boot_a, boot_b = (_resampled(a), _resampled(b)) if paired else ((None, None), (None, None))
    levels = [("decision", a.decision, b.decision, boot_a[0], boot_b[0]),
              ("worst SNR", a.snr_db, b.snr_db, boot_a[1], boot_b[1])]
    for level, va, vb, ba, bb in levels:
        if va is None or vb is None or math.isnan(va) or math.isnan(vb) or va == vb:
            continue
        if math.isinf(va) or math.isinf(vb):
            return (1 if va > vb else -1), level
        noise = float(np.std(ba - bb)) if ba is not None and bb is not None else 0.0
        if abs(va - vb) > defaults.NOISE_SIGMAS * noise:
            return (1 if va > vb else -1), level
    return 0, "within noise"


def rank(candidates: Sequence[Candidate]) -> Tuple[Candidate, List[Candidate]]:
    """The best candidate and the others within noise of it (see the rule above)."""
    best = candidates[0]
    for candidate in candidates[1:]:
        sign, _ = compare(candidate, best)
        if sign > 0 or (sign == 0 and candidate.key() > best.key()):
            best = candidate
    ties = [c for c in candidates if c is not best and c.metrics is not best.metrics and compare(c, best)[0] == 0]
    return best, ties


def improves(trial: Candidate, current: Candidate) -> bool:
    """Is a refinement trial kept? Decisions first, then the worst SNR (judged channels included).

    A trial whose decision score is lower than the current one's is never kept, even within
    noise: on a few dozen held-back samples one lost decision is inside the noise, and an
    override bought with SNR would lose it on every sample like it. Otherwise the ranking of
    the choice: it wins beyond noise (on decisions, or on worst SNR), or within noise the tie
    rule prefers it; a gain in SNR must also reach AUTO_REFINE_MIN_GAIN_DB (a per-tensor
    override for less is not worth its record)."""
    if _loses_decisions(trial, current):
        return False
    sign, level = compare(trial, current)
    gain = trial.snr_db - current.snr_db
    if sign != 0:
        return sign > 0 and (level == "decision" or gain >= defaults.AUTO_REFINE_MIN_GAIN_DB)
    return trial.key() > current.key() and gain >= defaults.AUTO_REFINE_MIN_GAIN_DB


def _loses_decisions(trial: Candidate, current: Candidate) -> bool:
    """Is ``trial``'s decision score (point estimate) below ``current``'s? A missing or NaN one loses to a real one."""
    if current.decision is None or math.isnan(current.decision):
        return False
    return trial.decision is None or math.isnan(trial.decision) or trial.decision < current.decision


@dataclass
class AutoChoice:
    """What ``--algo auto`` measured and chose; goes into the summary and the sidecar."""

    chosen: str
    samples: int
    candidates: List[Candidate]
    overrides: Dict[str, str] = field(default_factory=dict)      # tensor -> algorithm whose amax it took
    trials: List[dict] = field(default_factory=list)             # every refinement trial, kept or not
    snr_db: float = math.nan                                     # final worst SNR (after refinement)
    cosine: float = math.nan
    held_back: bool = True                                       # False: scored on statistics samples (too few)
    decision: Optional[float] = None                             # final decision score (after refinement)
    decision_name: str = ""
    reserve: List[Candidate] = field(default_factory=list)       # leaders rescored on the reserve samples too
    reason: str = ""                                             # why the chosen one won

    def to_dict(self) -> dict:
        """The record the sidecar keeps (scores, not per-output metrics)."""
        return {"chosen": self.chosen, "samples": self.samples, "reason": self.reason,
                "candidates": {c.name: c.to_dict() for c in self.candidates},
                "reserve": {c.name: c.to_dict() for c in self.reserve},
                "overrides": dict(self.overrides), "refinement_trials": list(self.trials),
                "snr_db": self.snr_db, "cosine": self.cosine, "decision": self.decision_name or None,
                "agreement": self.decision, "held_back": self.held_back}


class CandidateScorer:
    """One ONNX Runtime session that scores every amax table of a model (auto's candidates and trials).

    The session runs the TensorRT-form Q/DQ model with its activation scales as inputs
    (:func:`trtq.graph.qdq.scales_as_inputs`); a table is scored by feeding its own Q/DQ
    model's scales: the same numbers as a session of that model, without building a session
    per table. A table whose Q/DQ model differs in anything else (placement, or weight scales
    a bias floor moved) falls back to its own session.
    """

    def __init__(self, model, amax: Mapping[str, float], exclude: Sequence[str] = (), threads: Optional[int] = None):
        from .graph.qdq import quantize_model, scales_as_inputs
        from .ort import create_session

        self.model, self.exclude, self.threads = model, tuple(exclude), threads
        quantized, _ = quantize_model(model, amax, target="trt", exclude=self.exclude)
        self.scoring, self.names = scales_as_inputs(quantized)
        self.session = create_session(self.scoring, threads=threads)

    def metrics(self, replay, amax: Mapping[str, float]):
        """``replay``'s metrics of the TensorRT-form Q/DQ model of ``amax``."""
        from .graph.qdq import quantize_model, scale_feeds

        quantized, _ = quantize_model(self.model, amax, target="trt", exclude=self.exclude)
        try:
            feeds = scale_feeds(quantized, self.names, self.scoring)
        except KeyError:  # another placement: its own session
            return replay.score(quantized, threads=self.threads)
        return replay.score_session(self.session, feeds)


def score(replay, model, amax: Mapping[str, float], exclude: Sequence[str] = (), name: str = "",
          scorer: Optional[CandidateScorer] = None) -> Candidate:
    """Decision, worst SNR and cosine of the TensorRT-form Q/DQ model of ``amax`` on ``replay`` (with its metrics
    and noise); ``scorer``: the one session that scores every table (when ``replay`` can use it)."""
    from .evaluate import decision_of, output_snr_db, worst_of
    from .graph.qdq import quantize_model

    started = time.perf_counter()
    if scorer is not None and hasattr(replay, "score_session"):
        metrics = scorer.metrics(replay, amax)
    else:
        quantized, _ = quantize_model(model, amax, target="trt", exclude=exclude)
        metrics = replay.score(quantized)
    snr, cosine, _ = worst_of(metrics)
    decision = decision_of(metrics)
    candidate = Candidate(name, snr, cosine, time.perf_counter() - started, metrics,
                          None if decision is None else decision[1], "" if decision is None else decision[0],
                          samples=replay.samples, output_snr_db=output_snr_db(metrics))
    return estimate_noise(candidate)


def choose_amax(
    model,
    histograms: Mapping[str, object],
    replay,
    *,
    exclude: Sequence[str] = (),
    percentile: float = defaults.PERCENTILE,
    refine_trials: int = defaults.AUTO_REFINE_TRIALS,
    reserve=None,
    progress: ProgressCallback = no_progress,
    one_session: bool = True,
) -> Tuple[Dict[str, float], AutoChoice, list]:
    """``--algo auto``: the amax table whose TensorRT-form model ranks best on ``replay``, its choice record
    and its per-output metrics (the verdict).

    Every single algorithm's table comes from the same histograms; tables that give the
    same Q/DQ model are scored once. The ranking is :func:`rank`'s (decisions first, then
    worst SNR, each beyond its bootstrap noise). ``reserve``: a callable giving a wider
    replay (``replay``'s samples and more held-back ones); when the leaders are within
    noise they are rescored on it once. Then, for the quantized tensors whose candidates
    disagree most, the largest and the smallest other amax are tried one tensor at a time;
    a change is kept only when :func:`improves` says so. ``one_session``: score every table through
    one :class:`CandidateScorer` (False: a session per table, the reference the scorer must match).
    """
    from .calib import amax_from_histograms
    from .graph.qdq import quantize_model

    tables: Dict[str, Dict[str, float]] = {}
    for algorithm in defaults.SINGLE_ALGORITHMS:
        options = {"percentile": percentile} if algorithm == "percentile" else {}
        tables[algorithm] = amax_from_histograms(histograms, algorithm, **options)
    _, plan_summary = quantize_model(model, tables[defaults.SINGLE_ALGORITHMS[0]], target="trt", exclude=exclude)
    quantized = [t for t in plan_summary.activation_tensors if all(t in table for table in tables.values())]
    scorer = CandidateScorer(model, tables[defaults.SINGLE_ALGORITHMS[0]], exclude) if one_session and hasattr(
        replay, "score_session") else None
    total_steps = len(tables) + refine_trials
    step = 0
    progress(step, total_steps)

    candidates: List[Candidate] = []
    seen: Dict[Tuple, Candidate] = {}
    for algorithm, table in tables.items():
        signature = tuple(np.float32(table[t]).item() for t in quantized)
        if signature in seen:
            earlier = seen[signature]
            candidates.append(Candidate(algorithm, earlier.snr_db, earlier.cosine, 0.0, earlier.metrics,
                                        earlier.decision, earlier.decision_name, earlier.decision_noise,
                                        earlier.snr_noise, earlier.samples, earlier.output_snr_db))
        else:
            seen[signature] = candidate = score(replay, model, table, exclude, algorithm, scorer)
            candidates.append(candidate)
        step += 1
        progress(step, total_steps)
    best, ties = rank(candidates)
    verdict_candidate = best  # whose metrics the verdict reads (the widest scoring of the final choice)
    choice = AutoChoice(best.name, replay.samples, candidates)
    ranked = candidates
    if ties and reserve is not None:
        wide = reserve()
        if wide is not None and wide.samples > replay.samples:
            rescored: Dict[int, Candidate] = {}
            again: List[Candidate] = []
            for candidate in [best] + ties:
                twin = rescored.get(id(candidate.metrics))
                if twin is None:
                    twin = rescored[id(candidate.metrics)] = score(wide, model, tables[candidate.name], exclude,
                                                                   candidate.name, scorer)
                    again.append(twin)
                else:
                    again.append(Candidate(candidate.name, twin.snr_db, twin.cosine, 0.0, twin.metrics, twin.decision,
                                           twin.decision_name, twin.decision_noise, twin.snr_noise, twin.samples,
                                           twin.output_snr_db))
            choice.reserve = ranked = again
            verdict_candidate, ties = rank(again)
            best = next(c for c in candidates if c.name == verdict_candidate.name)
            choice.chosen, choice.samples = best.name, wide.samples
    if ties:
        choice.reason = (f"within noise of {', '.join(c.name for c in ties)} on {choice.samples} samples: the tie "
                         "goes to the higher worst SNR (channels included), then worst output SNR, then decision, "
                         "then cosine, then the earlier algorithm")
    else:
        others = [c for c in ranked if c.metrics is not verdict_candidate.metrics]
        levels = sorted({compare(verdict_candidate, c)[1] for c in others})
        choice.reason = (f"ahead beyond noise on {' and '.join(levels)} ({choice.samples} samples)" if others
                         else "every algorithm gave the same model")
    amax = dict(tables[best.name])
    current = best

    ratios = []
    for tensor in quantized:
        values = [table[tensor] for table in tables.values()]
        low, high = min(values), max(values)
        if low > 0 and high / low > defaults.AUTO_REFINE_MIN_RATIO:
            ratios.append((high / low, tensor))
    ratios.sort(reverse=True)
    trials = 0
    for _, tensor in ratios:
        if trials >= refine_trials:
            break
        here = amax[tensor]
        others = {}
        for algorithm, table in tables.items():
            value = table[tensor]
            if abs(math.log(value / here)) > math.log(1.05):
                others.setdefault(value, algorithm)
        kept = None
        for value in sorted({max(others), min(others)}, reverse=True) if others else ():
            if trials >= refine_trials:
                break
            trial_amax = dict(amax)
            trial_amax[tensor] = value
            result = score(replay, model, trial_amax, exclude, f"{tensor}<-{others[value]}", scorer)
            trials += 1
            step += 1
            progress(step, total_steps)
            gain = result.snr_db - current.snr_db
            record = {"tensor": tensor, "algorithm": others[value], "amax": value, "from_amax": here,
                      "snr_db": result.snr_db, "gain_db": gain, "agreement": result.decision, "kept": False}
            choice.trials.append(record)
            if improves(result, current) and (kept is None or improves(result, kept[1])):
                kept = (record, result, value)
        if kept is not None:
            record, result, value = kept
            record["kept"] = True
            amax[tensor] = value
            choice.overrides[tensor] = record["algorithm"]
            current = verdict_candidate = result
    progress(total_steps, total_steps)
    choice.snr_db, choice.cosine = verdict_candidate.snr_db, verdict_candidate.cosine
    choice.decision, choice.decision_name = verdict_candidate.decision, verdict_candidate.decision_name
    log.info("auto calibration chose %s (%.2f dB) with %d per-tensor override(s)", best.name, current.snr_db,
             len(choice.overrides))
    return amax, choice, verdict_candidate.metrics


# --------------------------------------------------------------------------- mixed precision to a target


@dataclass(frozen=True)
class FidelityTarget:
    """What the mixed-precision search must reach on the held-back samples: one of the three metrics.

    ``snr_db``: worst output and channel group SNR; ``cosine``: worst output cosine;
    ``agreement``: top-1 agreement on a class-score output (the first output that looks like
    ``[N, C]`` class scores unless the replay names its class outputs). The search is
    :func:`trtq.evaluate.auto_exclude` (the same as ``trtq eval --auto-exclude``).
    ``max_drop``: an accuracy budget, the points of decisions the INT8 model may lose against
    FP32 (:mod:`trtq.precision.budget`: the fewest layers float that keep them).
    """

    snr_db: Optional[float] = None
    cosine: Optional[float] = None
    agreement: Optional[float] = None
    max_layers: int = defaults.AUTO_EXCLUDE_MAX_LAYERS
    max_drop: Optional[float] = None

    def given(self) -> bool:
        return any(v is not None for v in (self.snr_db, self.cosine, self.agreement, self.max_drop))

    def label(self) -> str:
        if self.max_drop is not None:
            return f"decisions within {self.max_drop:g} point(s) of FP32"
        return ", ".join(f"{name} >= {value:g}" for name, value in
                         (("SNR", self.snr_db), ("cosine", self.cosine), ("top-1 agreement", self.agreement))
                         if value is not None)


def reach_target(model, amax: Mapping[str, float], replay, metrics: list, target: FidelityTarget, *,
                 exclude: Sequence[str] = (), threads: Optional[int] = None,
                 progress: ProgressCallback = no_progress):
    """Leave layers in float until ``target`` is met on ``replay``: ``(AutoExcludeResult or None, metrics)``.

    ``metrics``: the verdict's per-output metrics of the model as it is (``exclude`` float).
    Returns ``(None, metrics)`` when they already meet an SNR or cosine target (nothing run);
    otherwise the search's result and, when it met the target with layers left in float,
    the metrics of that mixed model (else the ones given: an unmet search changes nothing).
    """
    from .evaluate import auto_exclude, class_scores, worst_of

    if target.max_drop is not None:
        return _reach_budget(model, amax, replay, metrics, target, exclude=exclude, threads=threads,
                             progress=progress)
    snr, cosine, _ = worst_of(metrics)
    if (target.snr_db is not None and snr >= target.snr_db) or \
            (target.cosine is not None and cosine >= target.cosine):
        return None, metrics
    if target.agreement is not None and not replay.class_outputs:
        replay.class_outputs = tuple(name for name, value in replay.outputs[0].items()
                                     if class_scores(value) is not None)[:1]
    result, mixed = auto_exclude(model, amax, target_snr=target.snr_db, target_cosine=target.cosine,
                                 target_agreement=target.agreement, max_layers=target.max_layers, replay=replay,
                                 exclude=exclude, measure_speed=False, threads=threads, progress=progress)
    if result.met and result.excluded and mixed is not None:
        metrics = replay.score(mixed, threads=threads)
    return result, metrics


def _reach_budget(model, amax, replay, metrics: list, target: FidelityTarget, *, exclude: Sequence[str] = (),
                  threads: Optional[int] = None, progress: ProgressCallback = no_progress):
    """:func:`reach_target` for ``--max-drop``: always an AutoExcludeResult, with its ``budget`` outcome."""
    from .evaluate import AutoExcludeResult
    from .precision.budget import reach_budget

    search, outcome, metrics = reach_budget(model, amax, replay, metrics, target.max_drop, exclude=exclude,
                                            max_layers=target.max_layers, threads=threads, progress=progress)
    if search is None:
        search = AutoExcludeResult("decisions", 1.0 - target.max_drop / 100.0, True, [], [], replay.samples,
                                   target.max_layers)
    search.budget = outcome
    search.message = outcome.line() + (
        "" if outcome.met else f" (--max-layers {target.max_layers}: raise it, or raise --max-drop)")
    return search, metrics


def mixed_precision_record(exclude: Sequence[str], search, source: str) -> Optional[dict]:
    """The sidecar's ``mixed_precision``: the layers every consumer leaves in float, and who chose them."""
    budget = getattr(search, "budget", None)
    if budget is not None:
        record = {"float_layers": list(exclude) + [n for n in budget.float_layers if n not in exclude] if budget.met
                  else list(exclude), "source": source, "target": {"max_drop": budget.max_drop},
                  "reached": budget.reached_points, "budget": budget.to_dict()}
        if exclude:
            record["given"] = list(exclude)
        return record
    if search is None or not (search.met and search.excluded):
        return {"float_layers": list(exclude), "source": "exclude"} if exclude else None
    record = {"float_layers": list(exclude) + [n for n in search.excluded if n not in exclude], "source": source,
              "target": {search.target_metric: search.target},
              "reached": search.steps[-1].metric if search.steps else None}
    kept = [s for s in search.steps if s.kept and s.layer is not None]
    if kept:
        record["reached"] = kept[-1].metric
    if exclude:
        record["given"] = list(exclude)
    return record


# --------------------------------------------------------------------------- equalization


def channel_statistics(feeds: Sequence[Feed], threads: Optional[int] = None):
    """A ``(model, tensors) -> {tensor: (per-channel min, per-channel mean)}`` over ``feeds`` (channel = axis 1),
    the statistics :func:`trtq.graph.equalize.equalize` needs for absorption and bias correction."""
    def measure(model, tensors: Sequence[str]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        from .calib.collect import augmented_model
        from .ort import create_session, run

        session = create_session(augmented_model(model, list(tensors)), threads=threads)
        low: Dict[str, np.ndarray] = {}
        total: Dict[str, np.ndarray] = {}
        count: Dict[str, float] = {}
        for feed in feeds:
            for name, value in run(session, feed, list(tensors)).items():
                value = np.asarray(value, dtype=np.float64)
                if value.ndim < 2:
                    continue
                axes = tuple(a for a in range(value.ndim) if a != 1)
                here = value.min(axis=axes)
                low[name] = here if name not in low else np.minimum(low[name], here)
                total[name] = value.sum(axis=axes) + total.get(name, 0.0)
                count[name] = count.get(name, 0.0) + value.size / value.shape[1]
        return {name: (low[name], total[name] / count[name]) for name in low}

    return measure


def equalize_model(model, feeds: Sequence[Feed], threads: Optional[int] = None, steps=True):
    """``model`` rewritten by :func:`trtq.graph.equalize.equalize` (``steps``: True for all, or names) with
    statistics from ``feeds``; returns ``(rewritten model, EqualizeReport)``."""
    from .graph.equalize import equalize, parse_steps

    rewritten, report = equalize(model, channel_statistics(feeds, threads), steps=parse_steps(steps))
    report.samples = sum(len(next(iter(f.values()))) for f in feeds)
    return rewritten, report


def _take_samples(batches: Iterator[Feed], count: int) -> Tuple[List[Feed], Iterator[Feed]]:
    """The first batches of ``batches`` holding ``count`` samples, and an iterator that still yields them all."""
    taken: List[Feed] = []
    have = 0
    for feed in batches:
        taken.append(feed)
        have += len(next(iter(feed.values())))
        if have >= count:
            break
    return taken, itertools.chain(taken, batches)


# --------------------------------------------------------------------------- calibrate


def default_equalized_path(model_path: PathLike) -> Path:
    """``model.onnx`` -> ``model.equalized.onnx`` beside it: the rewrite a ``--equalize`` cache belongs to."""
    path = Path(model_path)
    return path.with_name(path.stem + ".equalized.onnx")


#: How a streamed verdict names what it measured (the steps of held-back sequences, each model with its own state).
STREAMED_FORM = "TensorRT Q/DQ form, streamed with its own state fed back"


def feedback_pairs(model, feedback: Sequence) -> list:
    """``--feedback`` pairs (strings ``OUT=IN`` or :class:`~trtq.stream.FeedbackPair`) checked against ``model``."""
    if not feedback:
        return []
    from .stream import FeedbackPair, check_feedback, parse_feedback

    pairs = [p if isinstance(p, FeedbackPair) else parse_feedback([p])[0] for p in feedback]
    check_feedback(model, pairs)
    return pairs


#: How a model with state pairs was calibrated and judged (said in the log, recorded in the sidecar).
STREAMED, PER_CALL = "streamed", "per call"


def state_pairs(model, feedback: Sequence, spec) -> Tuple[list, str]:
    """The state pairs a calibration streams, and how it runs them: ``--feedback``'s (streamed), else the
    graph's (:mod:`trtq.graph.signature`): streamed when the data are sequences, per call when every input,
    state included, is given per sample (state outputs are then not judged). ``("", [])``-like without any."""
    pairs = feedback_pairs(model, feedback)
    if pairs:
        return pairs, STREAMED
    from .graph.signature import describe_signature, read_signature
    from .stream import FeedbackPair, is_sequence_data

    signature = read_signature(model, spec.batch_axes)
    if not signature.pairs:
        return [], ""
    found = [FeedbackPair(p.output, p.input) for p in signature.pairs]
    listing = ", ".join(p.text() for p in found)
    if is_sequence_data(spec, signature.inputs, found):
        log.info("state pairs from the graph (%s): the data are sequences, streamed with the state fed back "
                 "(as --feedback %s)", describe_signature(signature), " --feedback ".join(p.text() for p in found))
        return found, STREAMED
    log.info("state pairs from the graph (%s): the data give the state per sample, so each call is judged "
             "with the recorded state and state outputs do not rank or gate; give sequences (or --feedback "
             "%s) to stream them", listing, listing)
    return [], PER_CALL


def reference_replay(model, feeds: Sequence[Feed], threads: Optional[int] = None, class_outputs=None,
                     metric=None, specs: Optional[Sequence] = None, signature=None):
    """A :class:`trtq.evaluate.Replay` of ``feeds`` with the float model's outputs (the verdict's reference).

    Its class outputs are the graph's own (:func:`trtq.evaluate.decision_axes`) and the
    declared ``class_outputs``; ``metric`` is the user's (:class:`trtq.evaluate.UserMetric`);
    ``specs`` (the model's inputs, default from the model) say which axis counts the samples;
    ``signature`` (default: the model's, :mod:`trtq.graph.signature`) what each output decides
    (state outputs are not judged).
    """
    from .evaluate import Replay, _class_spec, signature_judging
    from .graph.batch import feed_samples
    from .graph.signature import read_signature
    from .ort import create_session, run

    signature = read_signature(model) if signature is None else signature
    specs = list(signature.inputs) if specs is None else specs
    session = create_session(model, threads=threads)
    outputs = [run(session, feed) for feed in feeds]
    axes, _ = _class_spec(model, class_outputs)
    unknown = sorted(set(axes) - set(outputs[0])) if outputs else []
    if unknown:
        raise TrtqError(f"--class-output {', '.join(unknown)}: no such output; the model's outputs are "
                        f"{', '.join(outputs[0])}")
    return Replay(list(feeds), outputs, sum(feed_samples(f, specs) for f in feeds), class_outputs=axes,
                  metric=metric, **signature_judging(signature))


def _widened(replay, extra):
    """``replay`` with ``extra``'s samples appended (same reference model, class outputs and metric)."""
    from .evaluate import Replay

    return Replay(replay.feeds + extra.feeds, replay.outputs + extra.outputs, replay.samples + extra.samples,
                  **replay.judging())


def calibrate(
    model_path: PathLike,
    data,
    *,
    algorithm: str = defaults.ALGORITHM,
    cache_path: Optional[PathLike] = None,
    trt_version: Optional[int] = None,
    num_bins: int = defaults.NUM_BINS,
    percentile: float = defaults.PERCENTILE,
    threads: Optional[int] = None,
    max_binned: Optional[int] = defaults.HIST_MAX_BINNED,
    exact: bool = False,
    max_memory: Optional[int] = defaults.CALIB_MAX_MEMORY,
    observe: Union[str, Sequence[str]] = "all",
    holdout: int = defaults.HOLDOUT_SAMPLES,
    exclude: Sequence[str] = (),
    min_snr: Optional[float] = None,
    min_cosine: Optional[float] = None,
    min_agreement: Optional[float] = None,
    class_outputs=None,
    metric=None,
    target: Optional[FidelityTarget] = None,
    min_metric: Optional[float] = None,
    equalize: Union[bool, str, Sequence[str]] = False,
    equalized_path: Optional[PathLike] = None,
    progress: ProgressCallback = no_progress,
    choice_progress: ProgressCallback = no_progress,
    feedback: Sequence = (),
    force: bool = False,
):
    """Calibrate ``model_path`` on ``data`` (a DataSpec or a path): amax per tensor, verdict, cache.

    ``algorithm``: ``auto`` (default) or one of :data:`trtq.defaults.SINGLE_ALGORITHMS`.
    ``exact``: bin every value (overrides ``max_binned``). ``max_memory``: bytes the
    calibration may use (None: unbounded). ``observe``: ``"all"`` float tensors (what
    TensorRT's implicit path reads from a cache), ``"qdq"`` (only the Q/DQ placement points
    of both Q/DQ forms) or a list of tensor names.
    ``holdout`` samples are kept out of the statistics and score the result (see
    :func:`holdout_count`). ``exclude``: layers left in float in the scored Q/DQ model
    (recorded in the sidecar's ``mixed_precision``). With ``cache_path``, writes the
    TensorRT calibration cache and its JSON sidecar atomically (the location is checked
    before any work). ``min_snr`` / ``min_cosine`` / ``min_agreement`` (lowest top-1 agreement) /
    ``min_metric`` (the user's ``metric``, on its own scale): raise
    :class:`~trtq.errors.FidelityError` and write nothing when the verdict misses them.
    ``feedback``: ``OUT=IN`` pairs (strings or :class:`~trtq.stream.FeedbackPair`) of a streaming model: the
    data are then sequences, calibrated on the steps of the float model's own stream and scored streamed
    (see :mod:`trtq.stream`).
    ``class_outputs`` (names or ``NAME:AXIS``) and ``metric`` (``"FILE.py:NAME"`` or a
    :class:`~trtq.evaluate.UserMetric`): what the decisions are, beside what the graph says.
    With ``auto``, :data:`~trtq.defaults.HOLDOUT_RESERVE` more samples are held back (when
    there are at least 4x as many samples, or the count is unknown) and scored only when
    the leading candidates are within noise of each other.
    ``target`` (a :class:`FidelityTarget`): when the verdict is below it, layers are left in
    float on the held-back samples until it is met (:func:`reach_target`); they are recorded
    in the sidecar's ``mixed_precision`` and the verdict is the mixed model's. A budget
    (``target.max_drop``) holds back the reserve too and is judged on every held-back sample.
    ``equalize`` (True, or steps of :data:`trtq.graph.equalize.STEPS`): calibrate (and score) the
    model rewritten by :func:`equalize_model` (statistics
    from the first :data:`~trtq.defaults.EQUALIZE_SAMPLES` calibration samples, never the
    held-back ones); with ``cache_path`` the rewritten ONNX is written to ``equalized_path``
    (default ``<model>.equalized.onnx``), which the cache then belongs to: build that file.
    ``result.model`` is the model calibrated.
    ``force``: replace an existing file at an output path (the cache, its sidecar, the
    equalized model) that is not a trtq file of that kind; without it such a file is refused
    before any work.
    """
    from . import cache as cache_io
    from .calib import CalibrationResult, amax_from_histograms, check_calibration_options
    from .calib.collect import CollectionReport, collect_histograms, qdq_tensors
    from .data import open_source
    from .data.spec import DataSpec
    from .errors import FidelityError
    from .evaluate import Verdict
    from .fileio import Output, guard_outputs
    from .graph.batch import describe_batch_axes, feed_samples
    from .graph.subgraphs import inline_fixed_branches, weighted_coverage
    from .graph.model import file_sha256, load_onnx, model_fingerprint
    from .graph.signature import input_specs, read_signature

    check_calibration_options(algorithm, percentile, num_bins, max_binned, observe, max_memory)
    if exact:
        max_binned = None
    spec = data if isinstance(data, DataSpec) else DataSpec(path=str(data))
    if equalize and cache_path is not None and equalized_path is None:
        equalized_path = default_equalized_path(model_path)
    if cache_path is not None:  # never onto the model or the data, and writable, before any work
        from .data import data_files

        outputs = [Output(cache_path, "cache", option="cache_path"),
                   Output(cache_io.sidecar_path(cache_path), "sidecar", option="the sidecar of cache_path")]
        if equalize:
            outputs.append(Output(equalized_path, "onnx", option="--equalize", fixed=True))
        guard_outputs(outputs, model_reads(model_path) + [("a calibration data file", p) for p in data_files(spec.path)],
                      force=force)
    model = load_onnx(model_path)
    source_sha = None
    fingerprint = model_fingerprint(model)  # before collection touches the graph
    pairs, state_mode = state_pairs(model, feedback, spec)
    if isinstance(metric, str):
        from .evaluate import UserMetric

        metric = UserMetric.load(metric)
    reserve_feeds: List[Feed] = []
    started = time.perf_counter()
    if pairs:
        from .stream import StreamReplay, calibration_steps, open_sequences, split_sequences, step_source

        inputs = input_specs(model, spec.batch_axes)
        sequences = open_sequences(spec, inputs, pairs)
        total_steps = sum(len(s.steps) for s in sequences)
        held_sequences, rest_sequences = split_sequences(sequences, holdout_count(total_steps, holdout))
        held_back = len(sequences) > 1
        steps = calibration_steps(model, rest_sequences, pairs, spec.samples, spec.seed, threads=threads)
        source = step_source(spec, inputs, steps, len(rest_sequences))
        log.info("calibrating on %s", source.description)
        progress(0, source.num_samples)
        batches: Iterable[Feed] = iter(source)
        stats_total: Optional[int] = source.num_samples
        replay = StreamReplay.collect(model, held_sequences, pairs, threads=threads)
    else:
        source = open_source(spec, input_specs(model, spec.batch_axes))
        inputs = source.inputs
        static_batch = any(s.static_batch() for s in inputs)
        budget = target is not None and target.max_drop is not None  # judged on every held-back sample
        reserve_count = defaults.HOLDOUT_RESERVE if (algorithm == "auto" or budget) and holdout > 0 and (
            source.num_samples is None or source.num_samples >= 4 * (holdout + defaults.HOLDOUT_RESERVE)) else 0
        wanted = holdout_count(source.num_samples, holdout) + reserve_count
        held, rest = split_holdout(iter(source), wanted, whole_batches=static_batch, specs=inputs)
        held_count = sum(feed_samples(f, inputs) for f in held)
        if reserve_count and held_count > wanted - reserve_count:
            held, reserve_iter = split_holdout(iter(held), wanted - reserve_count, whole_batches=static_batch,
                                               specs=inputs)
            reserve_feeds = list(reserve_iter)
        first = next(rest, None)
        held_back = bool(held) and first is not None
        if first is None:  # every sample went to the hold-out (a short loader script): score on them all
            held, reserve_feeds = held + reserve_feeds, []
            batches = iter(held)
            stats_total = held_count
        else:
            batches = itertools.chain([first], rest)
            stats_total = None if source.num_samples is None else source.num_samples - held_count
            if not held:  # too few samples to hold any back: the verdict is scored on the first batch
                held = [first]
        log.info("calibrating on %s%s", source.description,
                 f": {stats_total} for the statistics, {held_count} held back to judge the result"
                 if held_back and stats_total is not None else "")
        progress(0, stats_total)  # one total from the first update on: the samples the statistics read
    if any(s.batch_axis != 0 for s in inputs if s.rank):
        log.info("batch axes: %s", describe_batch_axes(inputs))
    equalized = None
    original = model
    if equalize:
        fitting, batches = _take_samples(iter(batches), defaults.EQUALIZE_SAMPLES)
        model, equalized = equalize_model(model, fitting, threads=threads, steps=equalize)
        fingerprint = model_fingerprint(model)
        source_sha = file_sha256(model_path)
    observed_model = model
    if weighted_coverage(model, ()).in_subgraphs:  # If branches the fixed inputs select: exposed to calibration
        probe = steps[0][1] if pairs else held[0]
        observed_model, inlined = inline_fixed_branches(model, inputs, probe)
        if inlined:
            log.info("calibrating inside %d If node(s) through the branch the fixed inputs select: %s",
                     len(inlined), ", ".join(inlined[:4]) + (", ..." if len(inlined) > 4 else ""))
    tensors = None if observe == "all" else qdq_tensors(model) if observe == "qdq" else list(observe)
    if tensors == [] and observe == "qdq":
        coverage = weighted_coverage(model, ())
        raise TrtqError(f"{Path(model_path).name} has no Q/DQ placement point in its main graph, so nothing would "
                        f"be quantized" + (f": {coverage.line()}" if coverage.in_subgraphs else ""))
    report = CollectionReport()
    histograms = collect_histograms(observed_model, batches, num_bins=num_bins, total_samples=stats_total,
                                    threads=threads, max_binned=max_binned, tensors=tensors, max_memory=max_memory,
                                    report=report, half_snapshot=True, progress=progress, inputs=inputs)
    if report.unquantized:
        log.info("%d tensor(s) stay float (+-inf or huge by construction, e.g. attention-mask biases): %s%s",
                 len(report.unquantized), ", ".join(list(report.unquantized)[:3]),
                 ", ..." if len(report.unquantized) > 3 else "")
    if not histograms:  # checked before anything is written: an earlier good cache stays as it was
        if report.unquantized:
            name, reason = next(iter(report.unquantized.items()))
            raise TrtqError(f"every floating-point tensor of {Path(model_path).name} is +-inf or huge "
                            f"({len(report.unquantized)} tensor(s); the first, {name!r}, {reason}), so none can be "
                            "calibrated; check the data and its preprocessing (--scale, --mean, --std, raw integer "
                            "data), nothing was written")
        raise TrtqError(f"no floating-point tensors were found to calibrate in {Path(model_path).name}; "
                        "nothing was written")
    stats_seconds = time.perf_counter() - started
    if not pairs:  # the float model is the reference, always (also with --equalize)
        replay = reference_replay(original, held, threads=threads, class_outputs=class_outputs, metric=metric,
                                  specs=inputs, signature=read_signature(original, spec.batch_axes))

    def reserve():
        return _widened(replay, reference_replay(original, reserve_feeds, threads=threads, class_outputs=class_outputs,
                                                 metric=metric, specs=inputs,
                                                 signature=read_signature(original, spec.batch_axes))
                        ) if reserve_feeds else None

    choice: Optional[AutoChoice] = None
    options = {"percentile": percentile} if algorithm == "percentile" else {}
    if algorithm == "auto":
        amax, choice, metrics = choose_amax(model, histograms, replay, exclude=exclude, percentile=percentile,
                                            reserve=reserve, progress=choice_progress)
        choice.held_back = held_back
    else:
        amax = amax_from_histograms(histograms, algorithm, **options)
        metrics = score(replay, model, amax, exclude, algorithm).metrics
    search = None
    if target is not None and target.given():
        judged_on = replay
        if target.max_drop is not None and reserve_feeds:  # a budget on decisions: every held-back sample
            judged_on = reserve()
            metrics = score(judged_on, model, amax, exclude).metrics
        search, metrics = reach_target(model, amax, judged_on, metrics, target, exclude=exclude, threads=threads,
                                       progress=choice_progress)
        if search is not None:
            log.info("mixed precision: %s", search.message)
    verdict = Verdict(metrics, metrics[0].samples if metrics else replay.samples, held_back=held_back,
                      min_metric=min_metric, **({"form": STREAMED_FORM} if pairs else {}))
    coverage = weighted_coverage(model, amax)
    if coverage.in_subgraphs:
        log.warning("%s", coverage.line())
    seconds = time.perf_counter() - started
    failure = verdict.failure(min_snr, min_cosine, min_agreement, min_metric)
    if failure:
        raise FidelityError(f"{failure}; nothing was written. {verdict.line()}")

    written: List[Path] = []
    sidecar_model_path, sidecar_sha = model_path, None
    if equalized is not None:
        from .fileio import write_bytes_atomic

        if cache_path is not None:
            payload = model.SerializeToString()
            write_bytes_atomic(equalized_path, payload)
            written.append(Path(equalized_path))
            sidecar_model_path = equalized_path
            import hashlib

            sidecar_sha = hashlib.sha256(payload).hexdigest()
    version = trt_version if trt_version is not None else cache_io.default_trt_version()
    algorithm_record = {"num_bins": num_bins, "max_binned": max_binned,
                        "observe": observe if isinstance(observe, str) else "list", **options}
    if report.unquantized:
        algorithm_record["unquantized"] = dict(report.unquantized)
    if choice is not None:
        algorithm_record.update({"percentile": percentile, **choice.to_dict()})
    sidecar = cache_io.make_sidecar(
        model_path=sidecar_model_path,
        model_sha256=sidecar_sha or file_sha256(model_path),
        inputs=cache_io.input_records(inputs),
        algorithm=algorithm,
        amax=amax,
        trt_version=version,
        data={"source": source.description, "kind": getattr(source, "kind", None), "path": str(spec.path),
              "samples": source.num_samples,
              "statistics_samples": stats_total, "held_back_samples": replay.samples if held_back else 0,
              "reserve_samples": sum(len(next(iter(f.values()))) for f in reserve_feeds),
              "batch_size": source.batch_size, "seed": spec.seed, "shuffle": spec.shuffle,
              "preprocess": spec.preprocess.to_dict(), "fingerprint": source.fingerprint()},
        algorithm_options=algorithm_record,
        fingerprint=fingerprint,
    )
    sidecar["verdict"] = verdict.to_dict()
    if pairs:
        sidecar["feedback"] = [{"output": p.output, "input": p.input} for p in pairs]
    sidecar["signature"] = {**read_signature(original, spec.batch_axes, feedback=pairs or None).to_dict(),
                            **({"state_mode": state_mode} if state_mode else {})}
    if coverage.in_subgraphs:
        sidecar["coverage"] = coverage.to_dict()
    convergence = _convergence(report, histograms, amax, algorithm, choice, percentile)
    if convergence is not None:
        sidecar["convergence"] = convergence.to_dict()
    chooser = "" if not target else (f"trtq calibrate --max-drop {target.max_drop:g}" if target.max_drop is not None
                                     else f"trtq calibrate --target ({target.label()})")
    mixed = mixed_precision_record(exclude, search, chooser)
    if mixed:
        sidecar["mixed_precision"] = mixed
    if equalized is not None:
        sidecar["equalize"] = {**equalized.to_dict(), "source_model": str(model_path), "source_file_sha256": source_sha,
                               "statistics_samples": equalized.samples,
                               "reproduce": f"trtq calibrate {Path(model_path).name} --equalize (same --calib, "
                                            "--samples, --seed): the rewrite is deterministic"}
    written: List[Path] = []
    if cache_path is not None:
        written += cache_io.write_cache(cache_path, amax, algorithm=algorithm, trt_version=version, sidecar=sidecar)
    return CalibrationResult(amax=amax, algorithm=algorithm, num_samples=stats_total if stats_total is not None else 0,
                             num_batches=len(source), seconds=seconds, data_description=source.description,
                             files_written=written, sidecar=sidecar, histograms=histograms, verdict=verdict,
                             auto=choice, statistics_seconds=stats_seconds, unquantized=report.unquantized,
                             collection=report, convergence=convergence, mixed_precision=search,
                             equalize=equalized, model=model if equalized is not None else None)


def _convergence(report, histograms, amax, algorithm: str, choice: Optional["AutoChoice"], percentile: float):
    """How far the amax moved between half and all of the statistics samples (None without a snapshot)."""
    from .calib.convergence import convergence_or_none

    if choice is not None:
        return convergence_or_none(report, histograms, amax, choice.chosen, choice.overrides, percentile)
    return convergence_or_none(report, histograms, amax, algorithm, percentile=percentile)


# --------------------------------------------------------------------------- quantize


@dataclass
class QuantizeOutcome:
    """What :func:`quantize` wrote, with the verdict of the scales it used (when known)."""

    summary: object                        # trtq.graph.qdq.QuantizeSummary
    calibration: Optional[object] = None   # CalibrationResult, when it calibrated itself
    verdict: Optional[dict] = None         # the verdict (as recorded in a cache's sidecar, or just computed)
    verdict_source: str = ""
    float_layers: List[str] = field(default_factory=list)
    mixed_precision: dict = field(default_factory=dict)  # the cache sidecar's record of them (who, target, reached)
    equalize: Optional[object] = None      # trtq.graph.equalize.EqualizeReport when --equalize rewrote the model


def quantize(
    model_path: PathLike,
    output_path: Optional[PathLike] = None,
    *,
    cache: Optional[PathLike] = None,
    amax: Optional[Mapping[str, float]] = None,
    calib=None,
    algorithm: Optional[str] = None,
    target: str = "trt",
    exclude: Iterable[str] = (),
    force: bool = False,
    min_snr: Optional[float] = None,
    min_cosine: Optional[float] = None,
    min_agreement: Optional[float] = None,
    metric=None,
    class_outputs=None,
    fidelity: Optional[FidelityTarget] = None,
    min_metric: Optional[float] = None,
    equalize: Union[bool, str, Sequence[str]] = False,
    progress: ProgressCallback = no_progress,
    feedback: Sequence = (),
) -> QuantizeOutcome:
    """Quantize an ONNX file and write the Q/DQ model; exactly one of ``cache``, ``amax``, ``calib``.

    ``cache``: a TensorRT calibration cache (its trtq sidecar must match the model
    unless ``force``); the layers its sidecar records as mixed precision stay float too.
    ``calib``: a :class:`~trtq.data.spec.DataSpec` (or path) to calibrate on first, with
    ``algorithm`` (default ``auto``). ``output_path`` defaults to
    :func:`trtq.graph.qdq.default_output_path`. ``min_snr``/``min_cosine``/``min_agreement``/``min_metric`` gate on the
    verdict (computed when calibrating, read from the sidecar with a cache): nothing is
    written when it misses them. ``feedback``: a streaming model's ``OUT=IN`` pairs, for ``calib``
    (see :func:`calibrate`).
    written when it misses them. ``fidelity``: with ``calib``, the mixed-precision search of
    :func:`calibrate` (the layers it leaves in float stay float in the written model).
    ``equalize``: with ``calib``, the model is rewritten first (see :func:`calibrate`); the
    Q/DQ model written carries the rewritten weights.
    """
    from .cache import check_cache_matches, float_layers, read_cache, sidecar_path
    from .fileio import Output, guard_outputs, write_bytes_atomic
    from .graph.model import file_sha256, load_onnx
    from .graph.qdq import (check_quantized, check_target, default_output_path, is_quantized, quantize_model,
                            tensor_names)

    check_target(target)
    sources = [name for name, value in (("cache", cache), ("amax", amax), ("calib", calib)) if value is not None]
    if len(sources) != 1:
        raise TrtqError("give exactly one source of scales: a calibration cache (--cache), calibration data "
                        f"(--calib) or an amax table (got {', '.join(sources) or 'none'})")
    if equalize and calib is None:
        raise TrtqError("--equalize rewrites the model with statistics of calibration data: give --calib DATA "
                        "(a cache made with --equalize belongs to the .equalized.onnx it wrote: quantize that file)")
    if fidelity is not None and fidelity.given() and calib is None:
        raise TrtqError("--target-snr/--target-cosine/--target-agreement run the search on held-back calibration "
                        "samples: give --calib DATA (for a cache, trtq eval --auto-exclude --cache records it)")
    output = Path(output_path) if output_path is not None else default_output_path(model_path, target)
    reads = model_reads(model_path)
    if cache is not None:
        reads += [("the calibration cache", cache), ("the cache's sidecar", sidecar_path(cache))]
    guard_outputs([Output(output, "onnx", option="output")], reads, force=force)  # before any work
    model = load_onnx(model_path)
    exclude = list(exclude)
    if exclude and not is_quantized(model):
        from .graph.qdq import check_exclude

        check_exclude(model, exclude)  # a typo would quantize the layer meant to stay float

    if is_quantized(model):
        _, summary = quantize_model(model, {}, target=target)
        write_bytes_atomic(output, Path(model_path).read_bytes())
        summary.output_path = str(output)
        return QuantizeOutcome(summary)

    outcome = QuantizeOutcome(None)
    if cache is not None:
        table = read_cache(cache)
        check_cache_matches(table, model, file_sha256(model_path), tensor_names(model), force=force)
        amax = table.amax
        outcome.float_layers = float_layers(table.sidecar)
        outcome.mixed_precision = dict((table.sidecar or {}).get("mixed_precision") or {})
        exclude += [layer for layer in outcome.float_layers if layer not in exclude]
        if metric is not None or class_outputs:
            raise TrtqError("--metric and --class-output judge a calibration; with --cache the verdict recorded at "
                            "calibration is used: calibrate with them (or check with trtq eval ... --metric)")
        outcome.verdict = check_recorded_verdict(table.sidecar, min_snr, min_cosine, str(cache), min_agreement,
                                                 min_metric)
        outcome.verdict_source = f"recorded at calibration in {Path(cache).name}.json" if outcome.verdict else ""
    elif calib is not None:
        options = {"algorithm": algorithm} if algorithm else {}
        # no cache is written here: observing the Q/DQ placement points is enough (and faster)
        result = calibrate(model_path, calib, progress=progress, exclude=exclude, min_snr=min_snr,
                           min_cosine=min_cosine, min_agreement=min_agreement, min_metric=min_metric, metric=metric,
                           class_outputs=class_outputs, observe="qdq", feedback=feedback, target=fidelity,
                           equalize=equalize, **options)
        if result.model is not None:
            model = result.model
            outcome.equalize = result.equalize
        outcome.calibration = result
        outcome.verdict, outcome.verdict_source = result.verdict.to_dict(), "held-back calibration samples"
        amax = result.amax
        outcome.mixed_precision = dict(result.sidecar.get("mixed_precision") or {})
        outcome.float_layers = [n for n in outcome.mixed_precision.get("float_layers", []) if n not in exclude]
        exclude += outcome.float_layers

    quantized, summary = quantize_model(model, amax, target=target, exclude=exclude)
    check_quantized(quantized, summary, Path(model_path).name)
    write_bytes_atomic(output, quantized.SerializeToString())
    summary.output_path = str(output)
    outcome.summary = summary
    return outcome


def check_recorded_verdict(sidecar: Optional[dict], min_snr: Optional[float], min_cosine: Optional[float],
                           cache: str, min_agreement: Optional[float] = None,
                           min_metric: Optional[float] = None) -> Optional[dict]:
    """The verdict a cache's sidecar recorded at calibration, checked against the gates; None when there is none.

    Sidecars written before decisions were recorded have no ``agreement``: they still
    read, and ``--min-agreement`` then misses (a missing value misses, and says so).
    Raises :class:`~trtq.errors.FidelityError` when it misses a gate, and
    :class:`~trtq.errors.TrtqError` when a gate is set but no verdict was recorded.
    """
    from .errors import FidelityError
    from .evaluate import gate_failure

    recorded = (sidecar or {}).get("verdict")
    gated = any(v is not None for v in (min_snr, min_cosine, min_agreement, min_metric))
    if not recorded:
        if gated:
            raise TrtqError(f"--min-snr/--min-cosine/--min-agreement/--min-metric need a verdict, and "
                            f"{Path(cache).name} has no trtq sidecar recording one; calibrate with --calib DATA "
                            "instead, or check with trtq eval")
        return None
    metric = recorded.get("metric") if isinstance(recorded.get("metric"), dict) else {}
    decision = recorded.get("decision")
    agreement = recorded.get("agreement") if not str(decision or "").startswith("metric ") else None  # older sidecars
    failure = gate_failure(recorded.get("snr_db"), recorded.get("cosine"), str(recorded.get("worst")),
                           min_snr, min_cosine, agreement, min_agreement, decision,
                           metric.get("value"), min_metric, metric.get("name"))
    if failure:
        raise FidelityError(f"{failure}, as recorded at calibration in {Path(cache).name}.json; nothing was written")
    return recorded
