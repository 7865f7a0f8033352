"""The rewrite before INT8 (:mod:`trtq.graph.equalize`) in the calibrate flow: its statistics, where the rewritten
model is written, and auto's trial of it.

The rewrite helps some models and costs others (cross-layer equalization lifted a depthwise net by 0.9 dB and cost
MTCNN's ONet 3.8 dB), so auto measures it per model: each variant of :data:`trtq.defaults.AUTO_EQUALIZE_VARIANTS`
that would change the model gets its own statistics pass (over the tensors its Q/DQ model reads) and its own
choice, and is scored with the unmodified
model's choice on the same held-back samples, against the same float reference. A rewrite is kept only when it
wins beyond the bootstrap noise (on decisions, else on worst SNR by at least
:data:`~trtq.defaults.AUTO_EQUALIZE_MIN_GAIN_DB`) and its decisions are not below the unmodified model's: within
noise the unmodified model stays, the rewrite being a change to the model the user ships that
only evidence should buy.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import defaults

log = logging.getLogger(__name__)
PathLike = Union[str, Path]
Feed = Dict[str, np.ndarray]

#: ``calibrate(equalize=...)``: the trial (auto's default), never, or the rewrite whatever it scores.
TRIAL, OFF = "auto", "off"


def channel_statistics(feeds: Sequence[Feed], threads: Optional[int] = None):
    """A ``(model, tensors) -> {tensor: (per-channel min, per-channel mean, per-channel max)}`` over ``feeds``
    (channel = axis 1), the statistics :func:`trtq.graph.equalize.equalize` needs for absorption, re-centring and
    bias correction."""
    def measure(model, tensors: Sequence[str]) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        from ..calib.collect import augmented_model
        from ..ort import create_session, run

        session = create_session(augmented_model(model, list(tensors)), threads=threads)
        low: Dict[str, np.ndarray] = {}
        high: Dict[str, np.ndarray] = {}
        total: Dict[str, np.ndarray] = {}
        count: Dict[str, float] = {}
        for feed in feeds:
            for name, value in run(session, feed, list(tensors)).items():
                value = np.asarray(value)
                if value.ndim < 2:
                    continue
                # (N, C, positions): reduced along the contiguous positions first, sums in float64
                rows = value.reshape(value.shape[0], value.shape[1], -1)
                here = rows.min(axis=2).min(axis=0).astype(np.float64)
                low[name] = here if name not in low else np.minimum(low[name], here)
                top = rows.max(axis=2).max(axis=0).astype(np.float64)
                high[name] = top if name not in high else np.maximum(high[name], top)
                total[name] = rows.sum(axis=2, dtype=np.float64).sum(axis=0) + total.get(name, 0.0)
                count[name] = count.get(name, 0.0) + value.size / value.shape[1]
        return {name: (low[name], total[name] / count[name], high[name]) for name in low}

    return measure


def equalize_model(model, feeds: Sequence[Feed], threads: Optional[int] = None, steps=True):
    """``model`` rewritten by :func:`trtq.graph.equalize.equalize` (``steps``: True for all, or names) with
    statistics from ``feeds``; returns ``(rewritten model, EqualizeReport)``."""
    from ..graph.equalize import equalize, parse_steps

    rewritten, report = equalize(model, channel_statistics(feeds, threads), steps=parse_steps(steps))
    report.samples = sum(len(next(iter(f.values()))) for f in feeds)
    return rewritten, report


def default_equalized_path(model_path: PathLike, cache_path: Optional[PathLike] = None) -> Path:
    """``model.onnx`` -> ``model.equalized.onnx`` beside the cache (beside the model without one): the rewrite a
    ``--equalize`` cache belongs to. Beside the cache, a folder the user chose to write to, never into the
    model's (a model inside site-packages or a read-only mount); the default cache is beside the model anyway."""
    name = Path(model_path).stem + ".equalized.onnx"
    return (Path(cache_path) if cache_path is not None else Path(model_path)).with_name(name)


def equalize_mode(equalize, algorithm: str) -> Tuple[str, Tuple[str, ...]]:
    """``calibrate``'s ``equalize`` read as ``(mode, steps)``: ``("auto", ())`` the trial, ``("off", ())`` no
    rewrite, ``("on", steps)`` the rewrite whatever it scores. ``None`` (the default): the trial with
    ``--algo auto``, none with a single algorithm (a named algorithm is a user's explicit choice: asking for the
    trial with it is ``"auto"``). ``False``/``"off"``: none; ``True``/``"all"``/steps: on."""
    from ..graph.equalize import parse_steps

    if equalize is None:
        return (TRIAL, ()) if algorithm == "auto" else (OFF, ())
    if equalize is False or equalize == OFF:
        return OFF, ()
    if equalize == TRIAL:
        return TRIAL, ()
    steps = parse_steps(equalize)
    return ("on", steps) if steps else (OFF, ())


def trial_variants(model, variants: Sequence[str] = defaults.AUTO_EQUALIZE_VARIANTS) -> List[Tuple[str, ...]]:
    """The distinct step lists of ``variants`` that can change ``model`` (:func:`~trtq.graph.equalize.applicable_steps`):
    empty for a model without convolutions, one list where a model has no convolution pair (every variant is then
    bias correction alone)."""
    from ..graph.equalize import applicable_steps, parse_steps

    found: List[Tuple[str, ...]] = []
    for variant in variants:
        steps = applicable_steps(model, parse_steps(variant))
        if steps and steps not in found:
            found.append(steps)
    return found


@dataclass
class Outcome:
    """One model auto chose on: the unmodified one (``steps`` empty) or a rewrite, with its choice and scores."""

    steps: Tuple[str, ...]
    model: object = field(repr=False)
    report: Optional[object] = None          # trtq.graph.equalize.EqualizeReport (None: the unmodified model)
    histograms: dict = field(default_factory=dict, repr=False)
    collection: Optional[object] = field(default=None, repr=False)  # its CollectionReport
    amax: dict = field(default_factory=dict, repr=False)
    choice: Optional[object] = None          # AutoChoice (None with a single algorithm)
    metrics: list = field(default_factory=list, repr=False)  # its verdict's metrics
    ranking: Optional[object] = field(default=None, repr=False)  # choose.Ranking, before refinement
    refined: bool = False                    # amax, choice and metrics are after per-tensor refinement
    judged: Optional[object] = None          # choose.Candidate on the comparison samples
    seconds: float = 0.0

    @property
    def name(self) -> str:
        from ..graph.equalize import STEPS

        return "all" if tuple(self.steps) == STEPS else "+".join(self.steps) if self.steps else OFF

    def record(self, kept: bool) -> dict:
        judged = self.judged
        record = {"equalize": self.name, "steps": list(self.steps), "kept": kept, "seconds": round(self.seconds, 3),
                  "chosen": self.choice.chosen if self.choice is not None else None, "refined": self.refined,
                  "overrides": len(self.choice.overrides) if self.choice is not None else 0}
        if judged is not None:
            record.update({"snr_db": judged.snr_db, "decision": judged.decision_name or None,
                           "agreement": judged.decision, "agreement_noise": judged.decision_noise,
                           "snr_noise_db": judged.snr_noise, "samples": judged.samples})
        if self.report is not None:
            record.update({"pairs": len(self.report.pairs), "absorbed_channels": self.report.absorbed_channels,
                           "centred_tensors": len(self.report.centred_tensors),
                           "corrected_layers": len(self.report.corrected_layers)})
        return record


@dataclass
class EqualizeTrial:
    """What auto's equalization trial measured and kept (printed after the auto table, recorded in the sidecar)."""

    tried: List[dict] = field(default_factory=list)   # Outcome.record() of the unmodified model and each rewrite
    kept: str = OFF                                     # the variant kept: "off" (the unmodified model) or its steps
    reason: str = ""
    samples: int = 0                                    # held-back samples the comparison scored
    statistics_samples: int = 0                         # statistics samples each model's ranges came from
    first_samples: bool = False                         # only the first ones of them: the kept model then got all
    seconds: float = 0.0                                # the trial's extra time (rewrites, passes, choices, scoring)
    skipped: Dict[str, str] = field(default_factory=dict)  # rewrites not tried, and why (a budget's rule)

    def to_dict(self) -> dict:
        return {"kept": self.kept, "reason": self.reason, "samples": self.samples,
                "statistics_samples": self.statistics_samples, "first_samples_only": self.first_samples,
                "seconds": round(self.seconds, 3), "tried": list(self.tried), "skipped": dict(self.skipped),
                "rule": f"a rewrite is kept only when it wins beyond noise (decisions, else worst SNR by "
                        f"{defaults.AUTO_EQUALIZE_MIN_GAIN_DB:g} dB or more) and its decisions are not lower; "
                        "within noise the unmodified model is kept; each is first scored with auto's choice "
                        "before per-tensor refinement, and refined (with the unmodified model) only where it then "
                        "ranks first"}

    def line(self) -> str:
        """One line for the summary."""
        def one(r: dict) -> str:
            score = f"{r['snr_db']:.2f} dB" if isinstance(r.get("snr_db"), float) else "?"
            if r.get("agreement") is not None:
                score += f", {r['decision'] or 'decisions'} {r['agreement']:.4f}"
            return f"{r['equalize']}" + (f" ({r['chosen']})" if r.get("chosen") else "") + f": {score}"

        if not self.tried:
            return f"equalization: not tried ({self.reason})"
        kept = "kept " + self.kept if self.kept != OFF else "kept the unmodified model"
        ranges = (f" (ranges from the first {self.statistics_samples} statistics samples)"
                  if self.statistics_samples and self.first_samples else "")
        return (f"equalization tried on {self.samples} held-back samples{ranges}: "
                + "; ".join(one(r) for r in self.tried)
                + f" -> {kept} ({self.reason}; {self.seconds:.1f} s more)")


def keeps(rewrite, unmodified) -> Tuple[bool, str]:
    """Is a rewrite kept over the unmodified model (both :class:`~trtq.pipeline.choose.Candidate` on the same
    samples)? Only ahead beyond noise (:func:`~trtq.pipeline.choose.compare`), decisions not lower, and by at least
    :data:`~trtq.defaults.AUTO_EQUALIZE_MIN_GAIN_DB` when the lead is on worst SNR alone."""
    from .choose import compare, loses_decisions

    if loses_decisions(rewrite, unmodified):
        return False, "its decisions are lower"
    sign, level = compare(rewrite, unmodified)
    gain = rewrite.snr_db - unmodified.snr_db
    if sign > 0 and level != "decision" and not gain >= defaults.AUTO_EQUALIZE_MIN_GAIN_DB:
        return False, f"ahead by {gain:.2f} dB, under the {defaults.AUTO_EQUALIZE_MIN_GAIN_DB:g} dB a rewrite must gain"
    if sign > 0:
        return True, f"ahead beyond noise on {level}"
    if sign < 0:
        return False, f"behind beyond noise on {level}"
    return False, "within noise: the unmodified model is kept"


def contends(rewrite, unmodified) -> bool:
    """Is a rewrite, scored before per-tensor refinement, worth refining to compare again? Where it ranks first
    against the unmodified model (:func:`~trtq.pipeline.choose.rank`'s rule) with decisions not lower. A rewrite
    behind is not refined: refining every rewrite tried cost YOLOv8n 11 s of a 50 s default to keep nothing,
    while the digits CNN's cross-layer rewrite, 0.08 dB ahead before refinement, led by 1.7 dB after it."""
    from .choose import compare, loses_decisions

    if loses_decisions(rewrite, unmodified):
        return False
    sign, _ = compare(rewrite, unmodified)
    return sign > 0 or (sign == 0 and rewrite.key() > unmodified.key())


def run_trial(unmodified: Outcome, variants: Sequence[Tuple[str, ...]], *,
              fitting: Callable[[], List[Feed]], threads: Optional[int],
              collect: Callable[[object], Tuple[dict, object]],
              choose: Callable[..., Tuple[dict, Optional[object], list, Optional[object]]],
              judge: Callable[[Outcome], object],
              refine: Optional[Callable[[Outcome], Tuple[dict, object, list]]] = None,
              ineligible: Optional[Callable[[object], str]] = None) -> Tuple[Outcome, EqualizeTrial]:
    """Auto's equalization trial: each of ``variants`` (step lists) rewrites the model (statistics from
    ``fitting()``), gets its own statistics (``collect(model) -> (histograms, CollectionReport)``) and choice
    (``choose(model, histograms) -> (amax, AutoChoice or None, metrics, choose.Ranking or None)``: auto's ranking
    without its per-tensor refinement); every outcome, ``unmodified`` included, is scored by ``judge(outcome)``
    on the same samples. Where a rewrite then :func:`contends`, it and the unmodified model are refined
    (``refine(outcome) -> (amax, AutoChoice, metrics)``) and scored again; the winner (see :func:`keeps`) and the
    record. The outcome returned is ``refined`` or not: the caller refines it then. A rewrite identical to the
    model or to an earlier one is not scored again.

    A rewrite's ranges are its own: bias correction alone moved the CTC reader's enough that, scored with the
    unmodified model's, it fell 3.4 dB behind on the held-back samples where with its own it led by 2.9 dB.

    ``ineligible(rewritten model)``: why a rewrite may not be kept (empty: it may), asked before its statistics
    pass (a budget's: a rewrite whose float model already loses decisions)."""
    from ..graph.model import model_sha256

    started = time.perf_counter()
    outcomes = [unmodified]
    seen = {model_sha256(unmodified.model)}
    skipped: Dict[str, str] = {}  # rewrites not tried, and why
    if unmodified.ranking is not None:
        unmodified.ranking.release()  # no scoring session held while the rewrites are collected and ranked
    feeds = fitting()
    for steps in variants:
        begun = time.perf_counter()
        model, report = equalize_model(unmodified.model, feeds, threads=threads, steps=list(steps))
        if report.sha256 in seen:
            log.info("equalize %s gives a model already scored: not scored again", "+".join(steps))
            continue
        seen.add(report.sha256)
        why = ineligible(model) if ineligible is not None else ""
        if why:
            name = Outcome(tuple(steps), model).name
            log.info("equalize %s is not tried: %s", name, why)
            skipped[name] = why
            continue
        log.info("auto: trying the model rewritten by equalize %s (%d pair(s), %d bias(es) corrected): its own "
                 "statistics pass and choice", "+".join(steps), len(report.pairs), len(report.corrected_layers))
        histograms, collection = collect(model)
        amax, choice, metrics, ranking = choose(model, histograms)
        if ranking is not None:
            ranking.release()
        outcomes.append(Outcome(steps, model, report, histograms, collection, amax, choice, metrics, ranking,
                                seconds=time.perf_counter() - begun))
    trial = EqualizeTrial(skipped=skipped)
    if len(outcomes) == 1:
        trial.reason = "; ".join(f"{name}: {why}" for name, why in skipped.items()) or \
            "every rewrite left the model as it was"
        trial.seconds = time.perf_counter() - started
        return unmodified, trial
    for outcome in outcomes:
        begun = time.perf_counter()
        outcome.judged = judge(outcome)
        if outcome is not unmodified:
            outcome.seconds += time.perf_counter() - begun
    contenders = [o for o in outcomes[1:] if contends(o.judged, unmodified.judged)] if refine is not None else []
    reasons = {o.name: keeps(o.judged, unmodified.judged)[1] + " before refinement"
               for o in outcomes[1:] if o not in contenders}
    for outcome in [unmodified] + contenders if contenders else ():
        begun = time.perf_counter()
        outcome.amax, outcome.choice, outcome.metrics = refine(outcome)
        outcome.refined = True
        outcome.judged = judge(outcome)
        if outcome is not unmodified:
            outcome.seconds += time.perf_counter() - begun
    winners = []
    for outcome in contenders or outcomes[1:]:
        kept, why = keeps(outcome.judged, unmodified.judged)
        reasons.setdefault(outcome.name, why + (" after refinement" if outcome.refined else ""))
        if kept:
            winners.append(outcome)
    reasons = [f"{o.name}: {reasons[o.name]}" for o in outcomes[1:]] + [f"{n}: {w}" for n, w in skipped.items()]
    best = unmodified
    if winners:
        from .choose import rank

        leader, _ = rank([w.judged for w in winners])
        best = next(w for w in winners if w.judged is leader)
    trial.tried = [o.record(o is best) for o in outcomes]
    trial.kept, trial.reason = best.name, "; ".join(reasons)
    trial.samples = unmodified.judged.samples
    trial.seconds = time.perf_counter() - started
    log.debug("%s", trial.line())
    return best, trial
