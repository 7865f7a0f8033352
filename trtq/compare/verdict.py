"""The verdict: does a candidate keep its reference's outputs and decisions, and which gate fails."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Dict, List, Optional, Tuple

from .. import defaults
from .decisions import decision_drops, decision_line, decision_of
from .struct import (
    Accuracy,
    AutoExcludeResult,
    LayerSensitivity,
    MetricScore,
    OutputMetrics,
    _fmt_db,
    _nan_low,
    channel_label,
)


@dataclass
class Verdict:
    """INT8-vs-float fidelity of one result: per output (and channel group), worst first, with a warning when poor.

    ``held_back``: scored on samples kept out of the calibration statistics (False when
    there were too few samples to hold any back, and the verdict says so). The line names
    the decisions (top-1 agreement, the worst judged channel, the user's metric) beside
    the SNR; the warning fires when the SNR/cosine is poor *or* a decision dropped.
    """

    outputs: List[OutputMetrics]
    samples: int
    held_back: bool = True
    form: str = "TensorRT Q/DQ form"
    min_snr_db: float = defaults.VERDICT_MIN_SNR_DB
    min_cosine: float = defaults.VERDICT_MIN_COSINE
    on: str = ""                            # where it was measured, when not held-back calibration samples
    min_metric: Optional[float] = None      # the user's --min-metric: what their --metric must reach
    budget_estimate: Optional[dict] = None  # decisions lost beyond the hint: trtq.precision.budget.BudgetEstimate

    def _rows(self) -> List[Tuple[str, float, float]]:
        """(where, SNR dB, cosine; inf where there is none) of every output, channel group and judged channel."""
        rows = []
        for o in self.outputs:
            cosine = o.cosine_mean if o.has_cosine else math.inf
            rows.append((repr(o.name), o.snr_db, cosine))
            rows += [(f"{o.name!r} channels {g.label}", g.snr_db, g.cosine_mean) for g in o.groups]
            rows += [(channel_label(o.name, o.channel_axis, len(o.shape), c.index), c.snr_db,
                      c.cosine_mean if not math.isnan(c.cosine_mean) else math.inf) for c in o.channels]
        return rows

    @property
    def worst(self) -> Tuple[str, float, float]:
        """(where, SNR dB, cosine) of the worst output, channel group or judged channel."""
        return min(self._rows(), key=lambda r: (_nan_low(r[1]), _nan_low(r[2])))

    def failed_tests(self) -> List[str]:
        """The poor-result tests that failed, each with where and its true numbers (``'y': SNR 14.20 dB < 20 dB``);
        a test that passed is not named."""
        rows = self._rows()
        poor: Dict[str, List[str]] = {}
        worst_snr = min(rows, key=lambda r: _nan_low(r[1]), default=None)
        if worst_snr is not None and not worst_snr[1] >= self.min_snr_db:
            poor.setdefault(worst_snr[0], []).append(f"SNR {_fmt_db(worst_snr[1])} < {self.min_snr_db:g} dB")
        with_cosine = [r for r in rows if r[2] != math.inf]
        worst_cos = min(with_cosine, key=lambda r: _nan_low(r[2]), default=None)
        if worst_cos is not None and not (math.isnan(worst_cos[2]) or worst_cos[2] >= self.min_cosine):
            poor.setdefault(worst_cos[0], []).append(f"cosine {worst_cos[2]:.4f} < {self.min_cosine:g}")
        failed = [f"INT8 output {where} is poor: {', '.join(tests)}" for where, tests in poor.items()]
        drops = self.drops
        if drops:
            failed.append("decisions changed: " + "; ".join(drops))
        return failed

    @property
    def snr_db(self) -> float:
        return min((o.worst_snr_db for o in self.outputs), key=_nan_low, default=math.nan)

    @property
    def cosine(self) -> float:
        value = min((o.worst_cosine for o in self.outputs), key=_nan_low, default=math.nan)
        return math.nan if value == math.inf else value

    @property
    def metric(self) -> Optional[MetricScore]:
        return getattr(self.outputs, "metric", None)

    @property
    def decision(self) -> Optional[Tuple[str, float]]:
        """The lowest top-1 agreement (what ``--min-agreement`` judges; the user's metric is :attr:`metric`)."""
        return decision_of(self.outputs, metric=False)

    @property
    def drops(self) -> List[str]:
        return decision_drops(self.outputs, min_metric=self.min_metric)

    @property
    def poor(self) -> bool:
        cosine_ok = math.isnan(self.cosine) or self.cosine >= self.min_cosine
        return not (self.snr_db >= self.min_snr_db and cosine_ok) or bool(self.drops)

    def line(self) -> str:
        """One line: the decisions, then the worst output's SNR and cosine, and where they were measured."""
        where, snr, cosine = self.worst
        on = self.on or (f"{self.samples} held-back calibration samples" if self.held_back else
                         f"{self.samples} calibration samples (too few to hold any back)")
        decisions = decision_line(self.outputs)
        cos = f", cosine {cosine:.4f}" if math.isfinite(cosine) else ""
        return (f"INT8 fidelity ({self.form}, {on}): {decisions + '; ' if decisions else ''}"
                f"worst {where}: SNR {_fmt_db(snr)}{cos}")

    def warning(self) -> Optional[str]:
        """The one warning line for a poor result: only the tests that failed, with their numbers. What to do
        depends on the command that prints it (its options): see :func:`trtq.cli.options.verdict_fixes`."""
        if not self.poor:
            return None
        return "; ".join(self.failed_tests()) or "INT8 result is poor"

    def decision_drop(self) -> Optional[dict]:
        """``{"decision": what, "points": lost}``: the decision that lost most against FP32, in points (what
        ``--max-drop`` budgets); None when nothing decides."""
        from .decisions import decisions_kept, drop_points

        kept = decisions_kept(self.outputs)
        return None if kept is None else {"decision": kept[0], "points": drop_points(kept[1])}

    def failure(self, min_snr_db: Optional[float] = None, min_cosine: Optional[float] = None,
                min_agreement: Optional[float] = None, min_metric: Optional[float] = None) -> Optional[str]:
        """Why the result misses a gate the caller set (``--min-snr`` / ``--min-cosine`` / ``--min-agreement`` /
        ``--min-metric``)."""
        decision, metric = self.decision, self.metric
        return gate_failure(self.snr_db, None if math.isnan(self.cosine) else self.cosine, self.worst[0],
                            min_snr_db, min_cosine, None if decision is None else decision[1], min_agreement,
                            None if decision is None else decision[0],
                            None if metric is None else metric.value, min_metric,
                            None if metric is None else metric.name)

    def to_dict(self) -> dict:
        decision = self.decision
        worst_channel = min((o.worst_channel for o in self.outputs if o.worst_channel is not None),
                            key=lambda c: _nan_low(c[1]), default=None)
        positions = [o for o in self.outputs if o.top1_agreement is not None]
        return {"samples": self.samples, "held_back": self.held_back, "form": self.form,
                "snr_db": self.snr_db, "cosine": self.cosine, "worst": self.worst[0], "poor": self.poor,
                "decision": None if decision is None else decision[0],
                "agreement": None if decision is None else decision[1],
                "sample_agreement": min((o.sample_agreement for o in positions if o.sample_agreement is not None),
                                        default=None),
                "worst_channel": None if worst_channel is None else {"where": worst_channel[0],
                                                                     "snr_db": worst_channel[1]},
                "metric": None if self.metric is None else self.metric.to_dict(),
                "decision_drops": self.drops, "decision_drop": self.decision_drop(),
                "budget_estimate": self.budget_estimate,
                "thresholds": {"snr_db": self.min_snr_db, "cosine": self.min_cosine,
                               "agreement": defaults.VERDICT_MIN_AGREEMENT,
                               "sample_agreement": defaults.VERDICT_MIN_SAMPLE_AGREEMENT,
                               "metric": self.min_metric},
                "line": self.line(), "warning": self.warning(),
                "outputs": [o.to_dict() for o in self.outputs]}


def gate_failure(snr_db: Optional[float], cosine: Optional[float], worst: str, min_snr_db: Optional[float],
                 min_cosine: Optional[float], agreement: Optional[float] = None,
                 min_agreement: Optional[float] = None, decision: Optional[str] = None,
                 metric: Optional[float] = None, min_metric: Optional[float] = None,
                 metric_name: Optional[str] = None) -> Optional[str]:
    """The message of a missed ``--min-snr`` / ``--min-cosine`` / ``--min-agreement`` / ``--min-metric`` gate, else
    None. Only the gates missed are named, each with its true value; a missing value misses, in words.
    ``agreement``: the lowest top-1 agreement (``decision`` says of what); ``metric``: the user's score."""
    misses = []
    if min_snr_db is not None and not (snr_db is not None and snr_db >= min_snr_db):
        misses.append(f"no output has an SNR to judge for --min-snr {min_snr_db:g}" if snr_db is None else
                      f"SNR {_fmt_db(snr_db)} < --min-snr {min_snr_db:g}")
    if min_cosine is not None and not (cosine is not None and cosine >= min_cosine):
        misses.append(f"no output has a cosine to judge for --min-cosine {min_cosine:g}" if cosine is None else
                      f"cosine {cosine:.4f} < --min-cosine {min_cosine:g}")
    if min_agreement is not None and not (agreement is not None and agreement >= min_agreement):
        if agreement is None:
            misses.append(f"no output with a class axis has a top-1 agreement to judge for --min-agreement "
                          f"{min_agreement:g} (a --metric score is judged by --min-metric)")
        else:
            misses.append(f"{decision or 'agreement'} {agreement:.4f} < --min-agreement {min_agreement:g}")
    if min_metric is not None and not (metric is not None and metric >= min_metric):
        misses.append(f"no --metric score to judge for --min-metric {min_metric:g}" if metric is None else
                      f"metric {metric_name or ''} {metric:.4g} < --min-metric {min_metric:g}".replace("  ", " "))
    return f"INT8 fidelity gate failed ({', '.join(misses)}; worst {worst})" if misses else None


@dataclass
class EvalReport:
    reference: str
    candidate: str
    samples: int
    outputs: List[OutputMetrics]
    data: str = ""
    reference_precision: str = ""
    candidate_precision: str = ""
    batches: int = 0
    seconds: float = 0.0
    accuracy: Optional[Accuracy] = None
    sensitivity: Optional[List[LayerSensitivity]] = None
    sensitivity_samples: Optional[int] = None
    amax_source: str = ""
    auto_exclude: Optional[AutoExcludeResult] = None

    @property
    def metric(self) -> Optional["MetricScore"]:
        return getattr(self.outputs, "metric", None)

    def verdict(self, min_metric: Optional[float] = None) -> "Verdict":
        """The same verdict calibrate prints, on this report's data (``trtq eval`` prints it and its warning);
        ``min_metric``: the user's threshold for their ``--metric``."""
        return Verdict(self.outputs, self.samples, form=f"{self.candidate} vs {self.reference}",
                       on=self.data or f"{self.samples} samples", min_metric=min_metric)

    def worst_snr_db(self) -> float:
        """Worst SNR over outputs and their channel groups (what verdicts and gates read)."""
        return min((o.worst_snr_db for o in self.outputs), default=math.nan, key=_nan_low)

    def to_dict(self) -> dict:
        """Plain data for JSON (non-finite floats are made JSON-safe by :func:`trtq.report.write_json`)."""
        data = asdict(replace(self, outputs=[]))
        data["outputs"] = [o.to_dict() for o in self.outputs]
        if self.accuracy is not None:
            data["accuracy"]["drop"] = self.accuracy.drop
        data["worst_snr_db"] = self.worst_snr_db()
        data["metric"] = None if self.metric is None else self.metric.to_dict()
        data["verdict"] = self.verdict().to_dict()
        return data
