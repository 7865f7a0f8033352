"""``--algo auto``: score every candidate amax table on held-back samples and choose with bootstrap noise."""

from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import defaults
from ..progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """One amax table scored as the TensorRT-form Q/DQ model on the held-back samples."""

    name: str
    snr_db: float                          # worst output / channel group / judged channel
    cosine: float                          # worst output / channel group (mean per-sample cosine)
    seconds: float = 0.0
    metrics: list = field(default_factory=list, repr=False, compare=False)  # per output, for the verdict
    decision: Optional[float] = None       # trtq.compare.decisions.decisions_kept: the user's metric, else the lowest
    #                                        top-1 agreement or mask IoU (what the verdict's drop and --max-drop read)
    decision_name: str = ""
    decision_noise: Optional[float] = None  # bootstrap standard deviation of ``decision`` over the samples
    snr_noise: Optional[float] = None       # and of ``snr_db``
    samples: int = 0
    output_snr_db: float = math.nan         # worst whole output / channel group (judged channels left out)
    stopped: bool = False                   # a refinement trial ended after ``samples``: it could not be kept
    outputs: list = field(default_factory=list, repr=False, compare=False)  # kept for a reserve rescoring

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


def _resampled(candidate: Candidate) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """(decision, worst SNR with channels) on the bootstrap draws."""
    from ..compare.accumulate import resampled_scores
    from ..compare.decisions import bootstrap_index

    decision, snr = resampled_scores(candidate.metrics, bootstrap_index(candidate.samples))
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
    override bought with SNR would lose it on every sample like it. Otherwise it must win
    beyond noise (:func:`compare`): on decisions, or on worst SNR by at least
    AUTO_REFINE_MIN_GAIN_DB (a per-tensor override for less is not worth its record). A lead
    within noise is not enough, unlike the choice among algorithms (which must pick one): the
    best of up to AUTO_REFINE_TRIALS trials scored on the same samples leads partly by chance
    (on the bench segmenter, an override 0.17 dB ahead on 24 held-back samples was 0.33 dB
    behind on 48 held-out ones; MiniLM's overrides, kept beyond noise, gained 0.3-1.1 dB there)."""
    if loses_decisions(trial, current):
        return False
    sign, level = compare(trial, current)
    gain = trial.snr_db - current.snr_db
    return sign > 0 and (level == "decision" or gain >= defaults.AUTO_REFINE_MIN_GAIN_DB)


def loses_decisions(trial: Candidate, current: Candidate) -> bool:
    """Is ``trial``'s decision score (point estimate) below ``current``'s? A missing or NaN one loses to a real one."""
    if current.decision is None or math.isnan(current.decision):
        return False
    return trial.decision is None or math.isnan(trial.decision) or trial.decision < current.decision


def _on_first(metrics, samples: int) -> Tuple[Optional[float], float]:
    """(decision, worst SNR with judged channels) of ``metrics`` on their first ``samples`` samples."""
    from ..compare.accumulate import resampled_scores

    decision, snr = resampled_scores(metrics, np.arange(samples)[None])
    return None if decision is None else float(decision[0]), float(snr[0])


def cannot_improve(completed, current: Candidate) -> bool:
    """Can a refinement trial, scored on part of the held-back samples, no longer be kept by :func:`improves`,
    whatever the rest give? ``completed``: its metrics with every sample not yet scored taken as the reference's
    own, its ceiling (every SNR, agreement and sample count is then at least the trial's final one).

    improves() keeps a trial only when its decisions do not end below the current ones and it leads on
    decisions or gains AUTO_REFINE_MIN_GAIN_DB of worst SNR; when even the ceiling misses that, no sample
    still to score can change it. A certainty, not a
    guess from the samples scored so far: errors are heavy-tailed (a trial equal to the choice on the
    first 8 of 32 samples of YOLOv8n was 2.8 dB apart on all 32), so a guess could drop a trial the full
    scoring keeps. Keep this in step with improves()."""
    from ..compare.decisions import decisions_kept, worst_of

    ceiling_snr = worst_of(completed)[0]
    ceiling_decision = decisions_kept(completed)
    if loses_decisions(Candidate("ceiling", ceiling_snr, math.nan,
                                  decision=None if ceiling_decision is None else ceiling_decision[1]), current):
        return True  # its decisions end below the current ones: improves() never keeps it
    behind_on_decisions = (ceiling_decision is None or current.decision is None
                           or not ceiling_decision[1] > current.decision)
    return behind_on_decisions and not ceiling_snr >= current.snr_db + defaults.AUTO_REFINE_MIN_GAIN_DB


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
    a bias floor moved) falls back to its own session. Its threads do not spin between runs, as
    the statistics' do: on 2 shared cores, 32 YOLOv8n samples scored in 8.6 s instead of 11.4 s.
    """

    def __init__(self, model, amax: Mapping[str, float], exclude: Sequence[str] = (), threads: Optional[int] = None):
        from ..graph.qdq import quantize_model, scales_as_inputs
        from ..ort import create_session

        self.model, self.exclude, self.threads = model, tuple(exclude), threads
        quantized, _ = quantize_model(model, amax, target="trt", exclude=self.exclude)
        self.scoring, self.names = scales_as_inputs(quantized)
        self.session = create_session(self.scoring, threads=threads, spinning=False)

    def metrics(self, replay, amax: Mapping[str, float], stop=None, known=(), keep=None):
        """``replay``'s metrics of the TensorRT-form Q/DQ model of ``amax``, and the samples scored (all of them
        unless ``stop``, see :meth:`trtq.runtime.replay.Replay.score_session_until`, ended the scoring early)."""
        from ..graph.qdq import quantize_model, scale_feeds
        from ..ort import create_session

        quantized, _ = quantize_model(self.model, amax, target="trt", exclude=self.exclude)
        try:
            feeds = scale_feeds(quantized, self.names, self.scoring)
        except KeyError:  # another placement: its own session
            return replay.score_session_until(create_session(quantized, threads=self.threads, spinning=False), None,
                                              stop, known, keep)
        return replay.score_session_until(self.session, feeds, stop, known, keep)


def score(replay, model, amax: Mapping[str, float], exclude: Sequence[str] = (), name: str = "",
          scorer: Optional[CandidateScorer] = None, trial_of: Optional[Candidate] = None,
          keep: bool = False, known: Sequence = ()) -> Candidate:
    """Decision, worst SNR and cosine of the TensorRT-form Q/DQ model of ``amax`` on ``replay`` (with its metrics
    and noise); ``scorer``: the one session that scores every table (when ``replay`` can use it).
    ``trial_of``: ``amax`` is a refinement trial of this candidate: scoring ends as soon as the trial
    :func:`cannot_improve` on it (``stopped``, scores on the samples scored). ``keep``: the candidate keeps its
    outputs (``outputs``); ``known``: its outputs on ``replay``'s first batches, not run again (a reserve
    rescoring of a candidate scored with ``keep``)."""
    from ..compare.accumulate import output_snr_db
    from ..compare.decisions import decisions_kept, worst_of
    from ..graph.qdq import quantize_model

    started = time.perf_counter()
    outputs: Optional[list] = None
    if scorer is not None and hasattr(replay, "score_session_until"):
        stop = None if trial_of is None else (lambda samples, completed: cannot_improve(completed, trial_of))
        outputs = [] if keep else None
        metrics, samples = scorer.metrics(replay, amax, stop, known, outputs)
        if samples < replay.samples:
            decision, snr = _on_first(metrics, samples)
            return Candidate(name, snr, math.nan, time.perf_counter() - started, [], decision,
                             samples=samples, stopped=True)
    else:
        quantized, _ = quantize_model(model, amax, target="trt", exclude=exclude)
        metrics = replay.score(quantized)
    snr, cosine, _ = worst_of(metrics)
    decision = decisions_kept(metrics)
    candidate = Candidate(name, snr, cosine, time.perf_counter() - started, metrics,
                          None if decision is None else decision[1], "" if decision is None else decision[0],
                          samples=replay.samples, output_snr_db=output_snr_db(metrics), outputs=outputs or [])
    return estimate_noise(candidate)


def every_tensor(amax: Mapping[str, float], histograms: Mapping[str, object], algorithm: str,
                 percentile: float = defaults.PERCENTILE) -> Dict[str, float]:
    """``amax`` (the tensors auto scored: those the TensorRT-form Q/DQ model reads, overrides included) with every
    other tensor of ``histograms`` by ``algorithm``, in the histograms' order: the cache holds every tensor
    (TensorRT's implicit INT8 reads them all), the candidates need only what their Q/DQ models quantize."""
    from ..calib import amax_from_histograms

    table = amax_from_histograms({name: h for name, h in histograms.items() if name not in amax}, algorithm,
                                 **({"percentile": percentile} if algorithm == "percentile" else {}))
    table.update(amax)
    return {name: table[name] for name in [*histograms, *amax]}


@dataclass
class Ranking:
    """auto's candidate tables ranked on the held-back samples, before per-tensor refinement: what
    :func:`refine` starts from. Auto's equalization trial ranks the unmodified model and each rewrite this far,
    compares them, and refines only the one it keeps. ``tables`` hold the tensors the TensorRT-form Q/DQ models
    read; :attr:`amax` is the chosen one over every tensor of ``histograms``."""

    model: object = field(repr=False)
    tables: Dict[str, Dict[str, float]] = field(repr=False)
    quantized: List[str] = field(repr=False)          # the activation tensors every table quantizes
    scorer: Optional[CandidateScorer] = field(repr=False)
    exclude: Tuple[str, ...]
    best: Candidate                                   # the chosen table, as scored on ``replay``
    verdict_candidate: Candidate                      # its widest scoring (the reserve's when rescored)
    choice: AutoChoice
    step: int = 0                                     # progress steps done of ``total_steps``
    total_steps: int = 0
    one_session: bool = True
    histograms: Mapping[str, object] = field(default_factory=dict, repr=False)
    percentile: float = defaults.PERCENTILE

    def complete(self, amax: Mapping[str, float]) -> Dict[str, float]:
        """``amax`` (one of its tables, perhaps refined) with every other tensor by the chosen algorithm: those
        come from the chosen table over every tensor, computed once (the trial reads it, then the refinement)."""
        table = dict(self._chosen)
        table.update(amax)
        return table

    @functools.cached_property
    def _chosen(self) -> Dict[str, float]:
        return every_tensor(self.tables[self.best.name], self.histograms, self.best.name, self.percentile)

    @property
    def amax(self) -> Dict[str, float]:
        return dict(self._chosen)

    def release(self) -> None:
        """Close the scoring session until :func:`refine` needs one (it opens another): a ranking kept while
        other models are collected and ranked (auto's equalization trial) holds no session meanwhile."""
        self.scorer = None


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
    early_stop: bool = True,
) -> Tuple[Dict[str, float], AutoChoice, list]:
    """``--algo auto``: the amax table whose TensorRT-form model ranks best on ``replay``, its choice record
    and its per-output metrics (the verdict): :func:`rank_tables`, then :func:`refine`.

    ``one_session``: score every table through one :class:`CandidateScorer` (False: a session per table, the
    reference the scorer must match). ``early_stop``: a trial's scoring ends once it :func:`cannot_improve`
    (False: every trial on every held-back sample, the reference the early stop must match).
    """
    ranking = rank_tables(model, histograms, replay, exclude=exclude, percentile=percentile, reserve=reserve,
                          progress=progress, one_session=one_session, refine_trials=refine_trials)
    return refine(ranking, replay, refine_trials=refine_trials, progress=progress, early_stop=early_stop)


def rank_tables(
    model,
    histograms: Mapping[str, object],
    replay,
    *,
    exclude: Sequence[str] = (),
    percentile: float = defaults.PERCENTILE,
    reserve=None,
    progress: ProgressCallback = no_progress,
    one_session: bool = True,
    refine_trials: int = defaults.AUTO_REFINE_TRIALS,
) -> Ranking:
    """Every single algorithm's table (from the same histograms) scored on ``replay`` and ranked.

    Tables that give the same Q/DQ model are scored once. The ranking is :func:`rank`'s (decisions first, then
    worst SNR, each beyond its bootstrap noise). ``reserve``: a callable giving a wider replay (``replay``'s
    samples and more held-back ones); when the leaders are within noise they are rescored on it once (only its
    new samples are run: their outputs on ``replay`` are kept until then). ``refine_trials``: only for the
    progress total (the trials :func:`refine` will add).
    """
    # Long because the ranking and its reserve rescoring share one scorer and one set of held-back metrics.
    from ..calib import amax_from_histograms
    from ..calib.collect import qdq_tensors
    from ..graph.qdq import quantize_model

    read = qdq_tensors(model, list(histograms), forms=("trt",))  # every other tensor: the choice's, at the end
    scored = {name: histograms[name] for name in read if name in histograms}
    tables: Dict[str, Dict[str, float]] = {}
    for algorithm in defaults.SINGLE_ALGORITHMS:
        options = {"percentile": percentile} if algorithm == "percentile" else {}
        tables[algorithm] = amax_from_histograms(scored, algorithm, **options)
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
            seen[signature] = candidate = score(replay, model, table, exclude, algorithm, scorer,
                                                keep=reserve is not None)
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
                                                                   candidate.name, scorer, known=candidate.outputs)
                    again.append(twin)
                else:
                    again.append(Candidate(candidate.name, twin.snr_db, twin.cosine, 0.0, twin.metrics, twin.decision,
                                           twin.decision_name, twin.decision_noise, twin.snr_noise, twin.samples,
                                           twin.output_snr_db))
            choice.reserve = ranked = again
            verdict_candidate, ties = rank(again)
            best = next(c for c in candidates if c.name == verdict_candidate.name)
            choice.chosen, choice.samples = best.name, wide.samples
    for candidate in candidates:
        candidate.outputs = []  # kept for the reserve only
    if ties:
        choice.reason = (f"within noise of {', '.join(c.name for c in ties)} on {choice.samples} samples: the tie "
                         "goes to the higher worst SNR (channels included), then worst output SNR, then decision, "
                         "then cosine, then the earlier algorithm")
    else:
        others = [c for c in ranked if c.metrics is not verdict_candidate.metrics]
        levels = sorted({compare(verdict_candidate, c)[1] for c in others})
        choice.reason = (f"ahead beyond noise on {' and '.join(levels)} ({choice.samples} samples)" if others
                         else "every algorithm gave the same model")
    return Ranking(model, tables, quantized, scorer, tuple(exclude), best, verdict_candidate, choice, step,
                   total_steps, one_session, histograms, percentile)


def refine(ranking: Ranking, replay, *, refine_trials: int = defaults.AUTO_REFINE_TRIALS,
           progress: ProgressCallback = no_progress, early_stop: bool = True
           ) -> Tuple[Dict[str, float], AutoChoice, list]:
    """Per-tensor refinement of ``ranking``'s choice: for the quantized tensors whose candidates disagree most, the
    largest and the smallest other amax are tried one tensor at a time on ``replay``; a change is kept only when
    :func:`improves` says so. Returns the amax table, the choice record and the verdict's metrics."""
    model, tables, quantized, scorer, exclude = (ranking.model, ranking.tables, ranking.quantized, ranking.scorer,
                                                 ranking.exclude)
    best, verdict_candidate, choice = ranking.best, ranking.verdict_candidate, ranking.choice
    step, total_steps = ranking.step, max(ranking.total_steps, len(tables) + refine_trials)
    reopen = scorer is None and ranking.one_session and hasattr(replay, "score_session")  # released meanwhile
    ranking.release()  # its session ends with the refinement
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
            if reopen:
                scorer, reopen = CandidateScorer(model, tables[defaults.SINGLE_ALGORITHMS[0]], exclude), False
            result = score(replay, model, trial_amax, exclude, f"{tensor}<-{others[value]}", scorer,
                           trial_of=current if early_stop else None)
            trials += 1
            step += 1
            progress(step, total_steps)
            gain = result.snr_db - (_on_first(current.metrics, result.samples)[1] if result.stopped else current.snr_db)
            record = {"tensor": tensor, "algorithm": others[value], "amax": value, "from_amax": here,
                      "snr_db": result.snr_db, "gain_db": gain, "agreement": result.decision, "kept": False,
                      "samples": result.samples}
            choice.trials.append(record)
            if result.stopped:
                continue
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
    return ranking.complete(amax), choice, verdict_candidate.metrics
