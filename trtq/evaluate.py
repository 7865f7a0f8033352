"""How close a quantized model stays to its float reference, on data calibration did not see.

Per output, over all evaluated samples:

- **cosine**: cosine similarity of the flattened reference and candidate outputs
  (all samples together); **cosine_mean** / **cosine_min**: the mean and the lowest
  per-sample cosine (what the verdict, the gates and ``--target-cosine`` read: a sentence
  embedding or a box set is judged sample by sample).
- **snr_db**: ``10·log10(Σ ref² / Σ (ref − cand)²)``; ``inf`` when the outputs are identical.
- **max_abs_error** and **mean_abs_error**: of ``ref − cand``; **ref_abs_max** for scale.
- **top1/top5 agreement** for outputs declared to be class scores (``class_outputs``,
  or the first ``[N, C]`` output when labels are given; see :func:`class_scores` for
  the shape rule): the fraction of samples whose reference top-1 class is the
  candidate's top-1 (top-5: is among the candidate's 5 highest scores; reported only
  for more than 5 classes, below that it is always 1). An embedding or a box tensor is
  never scored as classes by guesswork: its argmax means nothing.
- **channel groups**: an output whose channels differ in kind (a detection head
  carrying boxes in pixels and class scores in [0, 1] in one tensor) gets SNR and
  cosine per group too (:func:`channel_groups`); the worst group is what the verdict
  and the gates use, because one SNR over the whole tensor is dominated by the
  largest values and hides a broken part.
- **accuracy** (with labels): true top-1 accuracy of both models on the first
  class-score output.

Everything streams: each batch updates running sums (float64) and is dropped, so
memory depends on the batch size, not the sample count. Layer sensitivity and
mixed-precision search re-run many model variants; they replay a fixed, small set of
samples (:data:`SENSITIVITY_SAMPLES`, kept in memory with the reference outputs).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import defaults
from .errors import DataError, ModelError, TrtqError
from .progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Samples replayed for each layer in sensitivity analysis and each step of --auto-exclude.
SENSITIVITY_SAMPLES = defaults.SENSITIVITY_SAMPLES
#: Most layers --auto-exclude leaves in float before it gives up.
AUTO_EXCLUDE_MAX_LAYERS = defaults.AUTO_EXCLUDE_MAX_LAYERS
#: k of the "top-k agreement" reported next to top-1.
TOP_K = 5
#: Timed runs (after 2 warm-up runs) when --auto-exclude measures each step's speed at batch 1.
SPEED_ITERATIONS = 10

# ---------------------------------------------------------------------------------------------
# One-shot reference math (tests compare the streaming results against these)


def _cos(dot: float, ref2: float, cand2: float) -> float:
    if ref2 == 0.0 and cand2 == 0.0:
        return 1.0  # both all zeros: identical
    if ref2 == 0.0 or cand2 == 0.0:
        return 0.0
    return float(dot / math.sqrt(ref2 * cand2))


def _cos_rows(dot: np.ndarray, ref2: np.ndarray, cand2: np.ndarray) -> np.ndarray:
    """:func:`_cos` per row (vectorized, same zero conventions)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = dot / np.sqrt(ref2 * cand2)
    cos = np.where((ref2 == 0) | (cand2 == 0), 0.0, cos)
    return np.where((ref2 == 0) & (cand2 == 0), 1.0, cos)


def _snr(ref2: float, err2: float) -> float:
    if err2 == 0.0:
        return math.inf
    if ref2 == 0.0:
        return -math.inf
    return float(10.0 * math.log10(ref2 / err2))


def cosine_similarity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine of the two arrays flattened (1.0 for two all-zero arrays, 0.0 if only one is)."""
    r = np.asarray(reference, dtype=np.float64).ravel()
    c = np.asarray(candidate, dtype=np.float64).ravel()
    return _cos(float(r @ c), float(r @ r), float(c @ c))


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """``10·log10(Σ ref² / Σ (ref − cand)²)`` in dB (``inf`` for identical arrays)."""
    r = np.asarray(reference, dtype=np.float64)
    e = r - np.asarray(candidate, dtype=np.float64)
    return _snr(float(np.sum(r * r)), float(np.sum(e * e)))


def max_abs_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    diff = np.abs(np.asarray(reference, dtype=np.float64) - np.asarray(candidate, dtype=np.float64))
    return float(diff.max()) if diff.size else 0.0


def class_scores(output: np.ndarray) -> Optional[np.ndarray]:
    """The ``[N, C]`` view of an output that looks like class scores, else ``None``.

    Heuristic: a floating output that is 2-D ``[N, C]`` with ``C >= 2`` after
    dropping trailing size-1 axes (``[N, C, 1, 1]`` from a 1x1 conv head counts).
    Detection heads (``[N, 84, 8400]``), feature maps and embeddings of rank > 2 do not.
    Logits, probabilities and log-probabilities all work: only the order matters.
    """
    array = np.asarray(output)
    if array.dtype.kind != "f":
        return None
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array.reshape(array.shape[:-1])
    if array.ndim == 2 and array.shape[1] >= 2:
        return array
    return None


@dataclass(frozen=True)
class ChannelGroup:
    """A contiguous range of channels ``[start, stop)`` along ``axis`` of an output (batch axis included)."""

    axis: int
    start: int
    stop: int

    @property
    def label(self) -> str:
        return f"axis {self.axis} [{self.start}:{self.stop}]"


def channel_groups(reference: np.ndarray, decades: float = defaults.CHANNEL_GROUP_DECADES,
                   max_channels: int = defaults.CHANNEL_GROUP_MAX_CHANNELS,
                   axes: Optional[Sequence[int]] = None) -> List[ChannelGroup]:
    """Split an output's channels into two groups of different kind, if it plausibly has them; else ``[]``.

    Rule (documented, deterministic): for an output of rank >= 3, on axis 1 and on the
    last axis (``[N, 84, 8400]`` YOLOv8 heads, ``[N, 8400, 85]`` YOLOv5 heads), each with
    4 to ``max_channels`` channels, the log10 root-mean-square of every channel is taken
    over this batch; the contiguous split that best separates them (largest between-group
    variance, Otsu's criterion, at least 2 channels each side) is kept when the two sides'
    median RMS differ by more than ``decades`` powers of ten, the axis with the larger
    difference winning. Channels of one kind (class logits, an embedding, feature maps)
    differ far less than 10x in RMS; boxes in pixels vs scores in [0, 1] differ by 100x
    or more. At most one split: class channels are never split among themselves.
    ``axes``: the axes the model's signature says hold channels (an axis a ``Concat`` joins);
    without them, axis 1 and the last axis.
    """
    array = np.asarray(reference)
    if array.dtype.kind != "f" or array.ndim < 3:
        return []
    best: Optional[Tuple[float, ChannelGroup, ChannelGroup]] = None
    for axis in sorted({1, array.ndim - 1} if axes is None else {a for a in axes if 0 < a < array.ndim}):
        channels = array.shape[axis]
        if not 4 <= channels <= max_channels:
            continue
        moved = np.moveaxis(array.astype(np.float64, copy=False), axis, 0).reshape(channels, -1)
        rms = np.sqrt(np.mean(moved * moved, axis=1))
        log_rms = np.log10(np.maximum(rms, np.finfo(np.float64).tiny))
        splits = range(2, channels - 1)
        between = [split * (channels - split) * (log_rms[:split].mean() - log_rms[split:].mean()) ** 2
                   for split in splits]
        split = splits[int(np.argmax(between))]
        gap = abs(float(np.median(log_rms[:split]) - np.median(log_rms[split:])))
        if gap > decades and (best is None or gap > best[0]):
            best = (gap, ChannelGroup(axis, 0, split), ChannelGroup(axis, split, channels))
    return [best[1], best[2]] if best else []


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row (unordered), shape ``[N, min(k, C)]``."""
    k = min(k, scores.shape[1])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def topk_agreement(reference_scores: np.ndarray, candidate_scores: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose reference top-1 class is among the candidate's top ``k``."""
    ref_top1 = np.argmax(reference_scores, axis=1)
    if k == 1:
        return float(np.mean(np.argmax(candidate_scores, axis=1) == ref_top1))
    return float(np.mean(np.any(top_k(candidate_scores, k) == ref_top1[:, None], axis=1)))


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class ChannelMetrics:
    """SNR and mean per-sample cosine of one channel of an output judged channel by channel."""

    index: int
    snr_db: float
    cosine_mean: float = math.nan


@dataclass
class SampleScores:
    """Per-sample sums behind an output's SNRs and agreements: what auto resamples to estimate noise.

    Arrays have one row per sample (``[n]`` or ``[n, k]``); summing rows of any subset and
    taking the ratios gives that subset's metrics (see :func:`resampled_scores`).
    """

    ref2: np.ndarray
    err2: np.ndarray
    group_ref2: np.ndarray                  # [n, groups]
    group_err2: np.ndarray
    channel_ref2: np.ndarray                # [n, judged channels]
    channel_err2: np.ndarray
    agree: Optional[np.ndarray] = None      # [n] positions whose top-1 agrees
    counted: Optional[np.ndarray] = None    # [n] positions counted (padding is not)


@dataclass
class OutputMetrics:
    """Fidelity of one output of the candidate against the reference."""

    name: str
    shape: List[Any]                        # per-batch shape seen first (batch axis first)
    samples: int
    cosine: float
    cosine_min: float                       # worst single sample
    snr_db: float
    max_abs_error: float
    mean_abs_error: float
    ref_abs_max: float                      # largest |reference| value, to read max_abs_error against
    classes: Optional[int] = None           # set when the output has a class axis
    top1_agreement: Optional[float] = None  # share of positions (samples for [N, C]) whose top-1 class agrees
    top5_agreement: Optional[float] = None  # only for one position per sample and more than 5 classes
    groups: List["GroupMetrics"] = field(default_factory=list)  # per channel group (see channel_groups)
    cosine_mean: float = math.nan           # mean per-sample cosine (verdicts and targets read this one)
    class_axis: Optional[int] = None        # the axis whose argmax is the decision (batch axis is 0)
    class_source: str = ""                  # why: "Softmax", "ArgMax reader", "declared", "labels", ...
    positions: Optional[int] = None         # decisions per sample (1 for [N, C], T for [N, T, C])
    sample_agreement: Optional[float] = None  # share of samples whose top-1 agrees at every position
    channel_axis: Optional[int] = None      # set when the output is judged channel by channel
    channels: List[ChannelMetrics] = field(default_factory=list)  # the judged channels
    constant_channels: List[int] = field(default_factory=list)    # near-constant channels, not judged alone
    values_per_sample: int = 0              # elements of one sample (1: a per-sample cosine means nothing)
    per_sample: Optional[SampleScores] = field(default=None, repr=False, compare=False)
    mask_axis: Optional[int] = None         # set for a binary (Sigmoid) mask: top1_agreement is per position
    mask_iou: Optional[float] = None        # mean per-sample IoU of the thresholded masks (empty vs empty: 1)

    @property
    def decision_word(self) -> str:
        """How its decisions are named in texts: ``mask`` (thresholded) or ``top-1``."""
        return "mask" if self.mask_axis is not None else "top-1"

    @property
    def worst_channel(self) -> Optional[Tuple[str, float]]:
        """(``'name'[..., k]``, SNR dB) of the worst judged channel, or None."""
        if not self.channels:
            return None
        worst = min(self.channels, key=lambda c: _nan_low(c.snr_db))
        return channel_label(self.name, self.channel_axis, len(self.shape), worst.index), worst.snr_db

    @property
    def worst_snr_db(self) -> float:
        """The lowest of the whole output's SNR, its worst channel group's and its worst judged channel's."""
        return min([self.snr_db] + [g.snr_db for g in self.groups] + [c.snr_db for c in self.channels],
                   key=_nan_low)

    @property
    def has_cosine(self) -> bool:
        """A per-sample cosine is a figure only for more than one value per sample (of one value it is its sign)."""
        return self.values_per_sample != 1

    @property
    def worst_cosine(self) -> float:
        """The lowest mean per-sample cosine of the whole output, its channel groups and judged channels
        (``inf`` for one value per sample: there is no cosine to judge)."""
        if not self.has_cosine:
            return math.inf
        values = [self.cosine_mean] + [g.cosine_mean for g in self.groups]
        values += [c.cosine_mean for c in self.channels if not math.isnan(c.cosine_mean)]
        return min(values, key=_nan_low)

    def to_dict(self) -> dict:
        data = asdict(replace(self, per_sample=None))
        data.pop("per_sample", None)
        data["worst_snr_db"] = self.worst_snr_db
        worst = self.worst_channel
        data["worst_channel"] = None if worst is None else {"where": worst[0], "snr_db": worst[1]}
        return data


def channel_label(name: str, axis: Optional[int], rank: int, index: int) -> str:
    """``'out'[..., 4]`` (last axis) or ``'out'[:, 4]`` (axis 1): where one channel of an output is."""
    if axis is None:
        return repr(name)
    if axis == rank - 1:
        return f"{name!r}[..., {index}]"
    return f"{name!r}[{', '.join([':'] * axis + [str(index)])}{', ...' if axis < rank - 1 else ''}]"


@dataclass
class GroupMetrics:
    """SNR and cosine of one channel group of an output."""

    label: str
    snr_db: float
    cosine: float
    cosine_mean: float = math.nan           # mean per-sample cosine of the group


def _nan_low(value: float) -> float:
    """Sort key that puts NaN below everything (a NaN metric is the worst one)."""
    return -math.inf if math.isnan(value) else value


@dataclass
class Accuracy:
    """True top-1 accuracy of both models against labels, on one class-score output."""

    output: str
    labeled_samples: int
    reference_top1: float
    candidate_top1: float
    unlabeled_samples: int = 0

    @property
    def drop(self) -> float:
        return self.reference_top1 - self.candidate_top1


@dataclass
class LayerSensitivity:
    """How much error one quantized activation's Q/DQ injects (see :func:`layer_sensitivity`).

    ``layer`` is the quantized tensor; ``layers`` the nodes that read its Q/DQ (what a
    mixed-precision step leaves in float; just ``[layer]`` when built by hand).
    """

    layer: str
    op_type: str                            # op types of the nodes reading it
    own_snr_db: Optional[float]             # worst reader's output against its float twin; None: not measured
    note: str = ""
    layers: List[str] = field(default_factory=list)

    def nodes(self) -> List[str]:
        return list(self.layers) or [self.layer]


@dataclass
class ExcludeStep:
    """One step of the mixed-precision search: the model with ``excluded`` layers left in float."""

    step: int
    layer: Optional[str]                    # layer left in float at this step (None: the fully quantized start)
    excluded: List[str]
    snr_db: float                           # worst output
    top1_agreement: Optional[float]
    metric: float                           # the value compared with the target
    met: bool
    latency_ms: Optional[float] = None      # batch-1 median latency on ONNX Runtime, when measured
    speedup: Optional[float] = None         # float-model latency / this latency
    cosine: Optional[float] = None          # worst output's mean per-sample cosine
    kept: bool = True                       # False: measured, not kept (its layers stay INT8)
    helped: bool = True                     # it raised the metric (kept, or another helped more)


@dataclass
class AutoExcludeResult:
    target_metric: str                      # "snr_db", "cosine", "top1_agreement" or "decisions"
    target: float
    met: bool
    excluded: List[str]
    steps: List[ExcludeStep]
    samples: int
    max_layers: int
    float_latency_ms: Optional[float] = None
    output_path: Optional[str] = None
    message: str = ""
    quantizable_layers: int = 0             # layers the fully quantized model quantizes
    budget: Optional[Any] = None            # trtq.precision.budget.BudgetOutcome of a --max-drop search


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


@dataclass
class MetricScore:
    """The user's own metric (``--metric FILE.py:NAME``) of the candidate: the mean over samples."""

    name: str
    value: float
    samples: int
    per_sample: Optional[np.ndarray] = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "samples": self.samples}


class Fidelity(list):
    """The :class:`OutputMetrics` of every output (a list), with the user's metric when one was given."""

    metric: Optional[MetricScore] = None


def decision_of(metrics: Sequence[OutputMetrics], metric: bool = True) -> Optional[Tuple[str, float]]:
    """(what, value) of the decision a candidate is judged by first, higher is better; None when there is none.

    The user's ``--metric`` when given (it knows the task; with ``metric`` False it is left
    out), else the lowest top-1 agreement per position over the outputs with a class axis.
    """
    score = getattr(metrics, "metric", None) if metric else None
    if score is not None:
        return f"metric {score.name}", score.value
    scored = [m for m in metrics if m.top1_agreement is not None]
    if not scored:
        return None
    worst = min(scored, key=lambda m: _nan_low(m.top1_agreement))
    return f"{worst.decision_word} agreement of {worst.name!r}", worst.top1_agreement


def decision_line(metrics: Sequence[OutputMetrics]) -> str:
    """The decisions in words: ``top-1 agrees on 97.1 % of positions of 'probs', 79 % of samples entirely;
    worst channel 'output'[..., 4]: 16.0 dB`` (empty when the outputs decide nothing)."""
    parts = []
    metric = getattr(metrics, "metric", None)
    if metric is not None:
        parts.append(f"metric {metric.name} {metric.value:.4g} (1 = identical)")
    for m in metrics:
        if m.top1_agreement is None:
            continue
        if m.mask_axis is not None:
            where = "positions" if (m.positions or 1) > 1 else "samples"
            text = f"mask agrees on {_pct(m.top1_agreement)} of {where} of {m.name!r}"
            if m.mask_iou is not None and (m.positions or 1) > 1:
                text += f", IoU {m.mask_iou:.3f}"
            parts.append(text)
            continue
        if (m.positions or 1) > 1:
            text = f"top-1 agrees on {_pct(m.top1_agreement)} of positions of {m.name!r}"
            if m.sample_agreement is not None:
                text += f", {_pct(m.sample_agreement)} of samples entirely"
        else:
            text = f"top-1 agrees on {_pct(m.top1_agreement)} of samples of {m.name!r}"
        parts.append(text)
    channels = [(m.worst_channel, m) for m in metrics if m.worst_channel is not None]
    if channels:
        (where, snr), _ = min(channels, key=lambda c: _nan_low(c[0][1]))
        parts.append(f"worst channel {where}: {_fmt_db(snr)}")
    return "; ".join(parts)


def decision_drops(metrics: Sequence[OutputMetrics], min_agreement: float = defaults.VERDICT_MIN_AGREEMENT,
                   min_sample_agreement: float = defaults.VERDICT_MIN_SAMPLE_AGREEMENT,
                   min_metric: Optional[float] = None) -> List[str]:
    """Every decision that dropped noticeably (thresholds in trtq.defaults), in words; empty when none did.

    The user's metric is on its own scale (a landmark accuracy, a recall): it is judged only
    against the user's own ``min_metric`` (``--min-metric``), never against a constant meant
    for top-1 agreement.
    """
    drops = []
    metric = getattr(metrics, "metric", None)
    if metric is not None and min_metric is not None and not metric.value >= min_metric:
        drops.append(f"metric {metric.name} {metric.value:.4g} < {min_metric:g}")
    for m in metrics:
        if m.mask_axis is not None and (m.positions or 1) > 1:
            if m.mask_iou is not None and not m.mask_iou >= defaults.VERDICT_MIN_MASK_IOU:
                drops.append(f"mask {m.name!r} IoU {m.mask_iou:.3f} < {defaults.VERDICT_MIN_MASK_IOU:g}")
            continue
        if m.top1_agreement is not None and not m.top1_agreement >= min_agreement:
            drops.append(f"{m.decision_word} of {m.name!r} agrees on {_pct(m.top1_agreement)} of "
                         f"{'positions' if (m.positions or 1) > 1 else 'samples'} < {min_agreement:.0%}")
        elif (m.sample_agreement is not None and (m.positions or 1) > 1
              and not m.sample_agreement >= min_sample_agreement):
            drops.append(f"only {_pct(m.sample_agreement)} of samples of {m.name!r} keep every top-1 "
                         f"< {min_sample_agreement:.0%}")
    return drops


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


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
        from .precision.budget import decisions_kept, drop_points

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


def _fmt_db(value: Optional[float]) -> str:
    if value is None:
        return "unknown"
    return "inf dB" if value == math.inf else f"{value:.2f} dB"


# ---------------------------------------------------------------------------------------------
# Streaming accumulation


class _Sums:
    """Running sums of one slice of an output (the whole of it, a channel group, or one channel)."""

    __slots__ = ("ref2", "cand2", "dot", "err2", "cos_sum", "rows", "ref2_rows", "err2_rows")

    def __init__(self):
        self.ref2 = self.cand2 = self.dot = self.err2 = self.cos_sum = 0.0
        self.rows = 0
        self.ref2_rows: List[np.ndarray] = []   # per sample, for the bootstrap (one float each)
        self.err2_rows: List[np.ndarray] = []

    def add(self, r: np.ndarray, c: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Add ``r``, ``c`` (``[samples, values]``, float64); returns (``r - c``, the per-sample cosines)."""
        with np.errstate(invalid="ignore"):  # an output that is inf in both (an overflowing model) gives NaN metrics
            e = r - c
        ref2, cand2, dot = np.einsum("ij,ij->i", r, r), np.einsum("ij,ij->i", c, c), np.einsum("ij,ij->i", r, c)
        err2 = np.einsum("ij,ij->i", e, e)
        self.ref2 += float(ref2.sum())
        self.cand2 += float(cand2.sum())
        self.dot += float(dot.sum())
        self.err2 += float(err2.sum())
        cosines = _cos_rows(dot, ref2, cand2)
        self.cos_sum += float(cosines.sum())
        self.rows += len(ref2)
        self.ref2_rows.append(ref2)
        self.err2_rows.append(err2)
        return e, cosines

    def snr(self) -> float:
        return _snr(self.ref2, self.err2) if self.rows else math.nan

    def cosine_mean(self) -> float:
        return self.cos_sum / self.rows if self.rows else math.nan

    def per_sample(self) -> Tuple[np.ndarray, np.ndarray]:
        if not self.ref2_rows:
            return np.zeros(0), np.zeros(0)
        return np.concatenate(self.ref2_rows), np.concatenate(self.err2_rows)


def feature_axis(shape: Sequence[Any], max_channels: int = defaults.FEATURE_MAX_CHANNELS) -> Optional[int]:
    """The small feature axis of an output judged channel by channel, or None (see docs/accuracy.md).

    Only outputs with positions (rank >= 3): a channel is then one field at every position
    (a detection head's x, y, w, h, objectness). Rank 3 ``[N, A, K]`` (YOLOv5/YOLOX heads):
    the last axis first, then axis 1 (``[N, K, A]``, YOLOv8); rank >= 4 ``[N, K, H, W]``:
    axis 1 first, then the last. The axis must have 2 to ``max_channels`` channels and, in a
    graph's declared shape, be a fixed number (a symbolic dimension is a sequence or batch
    length, not channels: ``[batch, sequence, 384]`` has none). A rank-2 ``[N, K]`` output is
    one vector per sample (logits, an embedding, a box) and is judged whole.
    """
    rank = len(shape)
    if rank < 3:
        return None
    order = [rank - 1, 1] if rank == 3 else [1, rank - 1]
    for axis in order:
        if isinstance(shape[axis], (int, np.integer)) and 2 <= int(shape[axis]) <= max_channels:
            return axis
    return None


def feature_axes(model) -> Dict[str, Optional[int]]:
    """``{graph output: its small feature axis or None}`` as the model's signature reads it
    (:mod:`trtq.graph.signature`: a fixed axis of 2 to FEATURE_MAX_CHANNELS, never a length
    named like an input's dim, never decided from a batch)."""
    from .graph.signature import read_signature

    return read_signature(model).feature_axes()


def default_class_axis(output: np.ndarray) -> Optional[int]:
    """The class axis of a declared class output given without ``:AXIS``: 1 for ``[N, C]`` (trailing
    1-dims ignored) and for ``[N, C, H, W]`` (rank >= 4), the last axis for ``[N, T, C]``."""
    shape = np.shape(output)
    if class_scores(np.asarray(output)) is not None or len(shape) >= 4:
        return 1
    return len(shape) - 1 if len(shape) >= 2 else None


def _resolve_axis(axis: Optional[int], rank: int) -> Optional[int]:
    if axis is None:
        return None
    resolved = axis + rank if axis < 0 else axis
    return resolved if 1 <= resolved < rank else None


class OutputAccumulator:
    """Running sums for one output; :meth:`metrics` gives the same numbers as the one-shot functions.

    ``scores`` / ``class_axis``: judge the output's decisions along a class axis (top-1
    agreement per position and per sample; ``scores`` without an axis: axis 1 when the
    output is ``[N, C]`` after trailing 1-dims, else the last axis). Otherwise an output
    with a small feature axis (:func:`feature_axis`) is judged channel by channel
    (``channels=False`` turns it off); an output with a wider one gets the two channel
    groups of :func:`channel_groups` (``groups``: ``None`` finds them on the first batch,
    ``()`` turns them off).
    """

    def __init__(self, name: str, scores: bool = False, groups: Optional[Sequence[ChannelGroup]] = None,
                 class_axis: Optional[int] = None, class_source: str = "", channels: bool = True,
                 channel_axis: Optional[int] = None, mask_axis: Optional[int] = None,
                 group_axes: Optional[Sequence[int]] = None, threshold: float = defaults.MASK_THRESHOLD):
        self.name = name
        self._mask_axis_given = mask_axis
        self.mask_axis: Optional[int] = None
        self.threshold = threshold
        self._iou_rows: List[np.ndarray] = []
        self._group_axes = group_axes
        self.shape: Optional[List[Any]] = None
        self.samples = 0
        self.elements = 0
        self.whole = _Sums()
        self.abs_err = 0.0
        self.max_abs = 0.0
        self.ref_abs_max = 0.0
        self.cos_min = math.inf
        self.classes: Optional[int] = None
        self.top1 = 0
        self.topk = 0
        self.all_agree = 0
        self.agree_rows: List[np.ndarray] = []
        self.valid_rows: List[np.ndarray] = []
        self.counted = 0
        self._scores = bool(scores or class_axis is not None)
        self._class_axis_given = class_axis
        self.class_axis: Optional[int] = None
        self.class_source = class_source or ("declared" if self._scores else "")
        self.positions = 0
        self._channels_wanted = channels
        self._channel_axis_given = channel_axis
        self._channel_mismatch = False
        self.channel_axis: Optional[int] = None
        self._channel_sums: List[_Sums] = []
        self._channel_moments: Optional[np.ndarray] = None  # [K, 3]: count, sum, sum of squares of the reference
        self._groups_given = groups
        self.groups: Optional[List[ChannelGroup]] = None
        self._group_sums: List[_Sums] = []

    def _first_batch(self, reference: np.ndarray) -> None:
        self.shape = list(reference.shape)
        rank = reference.ndim
        if self._scores and reference.dtype.kind == "f":
            axis = _resolve_axis(self._class_axis_given, rank)
            if axis is None:
                axis = default_class_axis(reference)
            if axis is not None and reference.shape[axis] >= 2:
                self.class_axis = axis
                self.classes = int(reference.shape[axis])
                self.positions = int(np.prod([d for i, d in enumerate(reference.shape) if i not in (0, axis)]))
        mask = _resolve_axis(self._mask_axis_given, rank)
        if self.class_axis is None and mask is not None and reference.dtype.kind == "f" and reference.shape[mask] == 1:
            self.mask_axis = mask
            self.positions = int(np.prod([d for i, d in enumerate(reference.shape) if i not in (0, mask)]))
            self.class_source = self.class_source or "Sigmoid"
        if self.class_axis is None and self.mask_axis is None:
            self._scores = False
            if self._channels_wanted and reference.dtype.kind == "f":
                given = _resolve_axis(self._channel_axis_given, rank)
                self.channel_axis = given if given is not None else feature_axis(reference.shape)
        if self.channel_axis is not None:
            k = int(reference.shape[self.channel_axis])
            self._channel_sums = [_Sums() for _ in range(k)]
            self._channel_moments = np.zeros((k, 3))
            self.groups = []
        elif self.class_axis is not None or self.mask_axis is not None:
            self.groups = [] if self._groups_given is None else list(self._groups_given)
        else:
            self.groups = (channel_groups(reference, axes=self._group_axes) if self._groups_given is None
                           else list(self._groups_given))
        self._group_sums = [_Sums() for _ in self.groups]

    def update(self, reference: np.ndarray, candidate: np.ndarray, valid: Optional[np.ndarray] = None) -> None:
        """Add a batch; ``valid`` (``[N, S]``, from :func:`padding_mask`) zeroes padded positions of an
        output whose leading axes are ``[N, S]`` in both models, so they count for nothing."""
        reference = np.asarray(reference)
        candidate = np.asarray(candidate)
        if reference.shape != candidate.shape:
            raise ModelError(f"output {self.name!r} has shape {list(candidate.shape)} in the candidate but "
                             f"{list(reference.shape)} in the reference; the models do not compute the same thing")
        keep = None
        if valid is not None and reference.ndim >= 2 and reference.shape[:2] == valid.shape:
            keep = valid.reshape(valid.shape + (1,) * (reference.ndim - 2))
            reference, candidate = np.where(keep, reference, 0), np.where(keep, candidate, 0)
        if self.shape is None:
            self._first_batch(reference)
        n = int(reference.shape[0]) if reference.ndim else 1
        r = reference.astype(np.float64, copy=False).reshape(n, -1)
        c = candidate.astype(np.float64, copy=False).reshape(n, -1)
        e, cosines = self.whole.add(r, c)
        abs_e = np.abs(e)
        if abs_e.size:
            self.abs_err += float(abs_e.sum())
            self.max_abs = max(self.max_abs, float(abs_e.max()))
            self.ref_abs_max = max(self.ref_abs_max, float(np.abs(r).max()))
        if n:
            self.cos_min = min(self.cos_min, float(cosines.min()))
        for group, sums in zip(self.groups, self._group_sums):
            index = [slice(None)] * reference.ndim
            index[group.axis] = slice(group.start, group.stop)
            sums.add(reference[tuple(index)].astype(np.float64).reshape(n, -1),
                     candidate[tuple(index)].astype(np.float64).reshape(n, -1))
        if self.channel_axis is not None and reference.shape[self.channel_axis] != len(self._channel_sums):
            self._channel_mismatch = True  # the axis changed size between batches: it holds positions, not channels
        if self.channel_axis is not None and not self._channel_mismatch:
            ref_k = np.moveaxis(reference.astype(np.float64, copy=False), self.channel_axis, 1).reshape(
                n, reference.shape[self.channel_axis], -1)
            cand_k = np.moveaxis(candidate.astype(np.float64, copy=False), self.channel_axis, 1).reshape(ref_k.shape)
            for k, sums in enumerate(self._channel_sums):
                sums.add(ref_k[:, k], cand_k[:, k])
            self._channel_moments[:, 0] += ref_k.shape[0] * ref_k.shape[2]
            self._channel_moments[:, 1] += ref_k.sum(axis=(0, 2))
            self._channel_moments[:, 2] += np.einsum("nkp,nkp->k", ref_k, ref_k)
        self.samples += n
        self.elements += r.size
        if self._scores and self.class_axis is not None:
            self._update_scores(reference, candidate, keep)
        elif self.mask_axis is not None:
            self._update_mask(reference, candidate)

    def _update_mask(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        """Binary decisions per position (value >= threshold): agreement and IoU per sample."""
        n = reference.shape[0]
        ref_on = (reference >= self.threshold).reshape(n, -1)
        cand_on = (candidate >= self.threshold).reshape(n, -1)
        per_sample = (ref_on == cand_on).sum(axis=1)
        counted = np.full(n, ref_on.shape[1])
        self.agree_rows.append(per_sample)
        self.valid_rows.append(counted)
        self.top1 += int(per_sample.sum())
        self.counted += int(counted.sum())
        self.all_agree += int(np.sum(per_sample == counted))
        union = (ref_on | cand_on).sum(axis=1)
        inter = (ref_on & cand_on).sum(axis=1)
        self._iou_rows.append(np.where(union > 0, inter / np.maximum(union, 1), 1.0))

    def _update_scores(self, reference: np.ndarray, candidate: np.ndarray, keep: Optional[np.ndarray]) -> None:
        axis = self.class_axis
        n = reference.shape[0]
        ref_top1 = np.argmax(reference, axis=axis)
        agree = (np.argmax(candidate, axis=axis) == ref_top1).reshape(n, -1)
        real = np.ones_like(agree)
        if keep is not None and axis >= 2:  # padded positions decide nothing: they are not counted
            real = np.broadcast_to(keep, reference.shape).take(0, axis=axis).reshape(n, -1)
        per_sample = (agree & real).sum(axis=1)
        counted = real.sum(axis=1)
        self.agree_rows.append(per_sample)
        self.valid_rows.append(counted)
        self.top1 += int(per_sample.sum())
        self.counted += int(counted.sum())
        self.all_agree += int(np.sum(per_sample == counted))
        if self.positions == 1 and self.classes > TOP_K:
            ref_scores, cand_scores = (np.moveaxis(a, axis, -1).reshape(n, -1) for a in (reference, candidate))
            self.topk += int(np.sum(np.any(top_k(cand_scores, TOP_K) == ref_top1.reshape(n)[:, None], axis=1)))

    @property
    def is_scores(self) -> bool:
        return bool(self._scores) or self.mask_axis is not None

    def _judged_channels(self) -> List[int]:
        """Channels judged on their own: not near-constant, not negligible (docs/accuracy.md)."""
        count, total, squares = self._channel_moments.T
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / np.maximum(count, 1)
            rms = np.sqrt(squares / np.maximum(count, 1))
            std = np.sqrt(np.maximum(squares / np.maximum(count, 1) - mean * mean, 0.0))
        largest = float(rms.max()) if rms.size else 0.0
        return [k for k in range(len(rms))
                if rms[k] > defaults.FEATURE_NEGLIGIBLE_RMS * largest and std[k] > defaults.FEATURE_CONSTANT_RTOL * rms[k]]

    def metrics(self) -> OutputMetrics:
        n = self.samples
        if self._channel_mismatch:
            self.channel_axis, self._channel_sums = None, []
        judged = self._judged_channels() if self.channel_axis is not None else []
        constant = [k for k in range(len(self._channel_sums)) if k not in judged]
        ref2, err2 = self.whole.per_sample()

        def stack(sums_list: Sequence[_Sums]) -> Tuple[np.ndarray, np.ndarray]:
            if not sums_list:
                return np.zeros((len(ref2), 0)), np.zeros((len(ref2), 0))
            pairs = [s.per_sample() for s in sums_list]
            return np.stack([p[0] for p in pairs], axis=1), np.stack([p[1] for p in pairs], axis=1)

        group_ref2, group_err2 = stack(self._group_sums)
        channel_ref2, channel_err2 = stack([self._channel_sums[k] for k in judged])
        per_sample = SampleScores(ref2, err2, group_ref2, group_err2, channel_ref2, channel_err2,
                                  np.concatenate(self.agree_rows) if self.agree_rows else None,
                                  np.concatenate(self.valid_rows) if self.valid_rows else None)
        return OutputMetrics(
            name=self.name,
            shape=self.shape or [],
            samples=n,
            cosine=_cos(self.whole.dot, self.whole.ref2, self.whole.cand2),
            cosine_min=self.cos_min if n else math.nan,
            cosine_mean=self.whole.cosine_mean(),
            snr_db=self.whole.snr(),
            max_abs_error=self.max_abs,
            mean_abs_error=self.abs_err / self.elements if self.elements else math.nan,
            ref_abs_max=self.ref_abs_max,
            classes=self.classes,
            top1_agreement=self.top1 / self.counted if self.is_scores and self.counted else None,
            top5_agreement=self.topk / n if self.class_axis is not None and n and self.positions == 1
            and self.classes > TOP_K else None,
            groups=[GroupMetrics(g.label, sums.snr(), _cos(sums.dot, sums.ref2, sums.cand2), sums.cosine_mean())
                    for g, sums in zip(self.groups or (), self._group_sums)],
            class_axis=self.class_axis,
            class_source=self.class_source if self.class_axis is not None else "",
            positions=self.positions if self.is_scores else None,
            sample_agreement=self.all_agree / n if self.is_scores and n else None,
            mask_axis=self.mask_axis,
            mask_iou=float(np.concatenate(self._iou_rows).mean()) if self._iou_rows else None,
            channel_axis=self.channel_axis,
            channels=[ChannelMetrics(k, self._channel_sums[k].snr(),
                                     self._channel_sums[k].cosine_mean() if self.positions_per_channel > 1
                                     else math.nan) for k in judged],
            constant_channels=constant,
            values_per_sample=self.elements // n if n else 0,
            per_sample=per_sample,
        )

    @property
    def positions_per_channel(self) -> int:
        """Values of one channel in one sample (a per-sample cosine of one value is only its sign)."""
        if self.channel_axis is None or not self.shape:
            return 0
        return int(np.prod([d for i, d in enumerate(self.shape) if i not in (0, self.channel_axis)]))


class AccuracyAccumulator:
    """Top-1 hits of both models on labeled samples (label < 0 or None: unlabeled, not counted)."""

    def __init__(self, output: str):
        self.output = output
        self.labeled = 0
        self.unlabeled = 0
        self.ref_hits = 0
        self.cand_hits = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> None:
        ref_scores, cand_scores = class_scores(reference), class_scores(candidate)
        labels = np.asarray(labels, dtype=np.int64)
        known = labels >= 0
        self.unlabeled += int(np.sum(~known))
        if not known.any():
            return
        if labels[known].max() >= ref_scores.shape[1]:
            raise DataError(f"label {int(labels[known].max())} is out of range for output {self.output!r} "
                            f"with {ref_scores.shape[1]} classes; labels must be 0-based class indices")
        self.labeled += int(known.sum())
        self.ref_hits += int(np.sum(np.argmax(ref_scores[known], axis=1) == labels[known]))
        self.cand_hits += int(np.sum(np.argmax(cand_scores[known], axis=1) == labels[known]))

    def result(self) -> Optional[Accuracy]:
        if not self.labeled:
            return None
        return Accuracy(self.output, self.labeled, self.ref_hits / self.labeled, self.cand_hits / self.labeled,
                        self.unlabeled)


ClassOutputs = Union[Iterable[str], Mapping[str, Optional[int]]]


def class_axes(class_outputs: Optional[ClassOutputs]) -> Dict[str, Optional[int]]:
    """``{output: class axis or None}`` from names, ``NAME:AXIS`` strings or a mapping."""
    if not class_outputs:
        return {}
    if isinstance(class_outputs, Mapping):
        return {str(k): (None if v is None else int(v)) for k, v in class_outputs.items()}
    axes: Dict[str, Optional[int]] = {}
    for entry in class_outputs:
        name, axis = parse_class_output(str(entry))
        axes[name] = axis
    return axes


def parse_class_output(text: str) -> Tuple[str, Optional[int]]:
    """``"probs"`` -> ``("probs", None)``; ``"probs:-1"`` -> ``("probs", -1)`` (``--class-output NAME[:AXIS]``)."""
    name, sep, axis = text.rpartition(":")
    if sep and name and re.fullmatch(r"-?\d+", axis.strip()):
        return name, int(axis)
    return text, None


def decision_axes(model) -> Dict[str, Tuple[int, str]]:
    """``{graph output: (class axis, why)}`` for outputs the graph itself says are class scores.

    Read from the model's signature (:mod:`trtq.graph.signature`): the output is made by
    Softmax or LogSoftmax, possibly through Identity/Cast/Reshape/Transpose/Squeeze/Unsqueeze/
    Flatten (the axis followed through them), or an ArgMax / TopK inside the graph reads it.
    Sigmoid alone is not a class axis (a one-channel Sigmoid is a mask; multi-label scores are
    judged per channel).
    """
    from .graph.signature import read_signature

    return read_signature(model).class_axes()


def _class_spec(model, declared: Optional[ClassOutputs]) -> Tuple[Dict[str, Optional[int]], Dict[str, str]]:
    """Class axes of ``model``'s outputs: declared ones (their axis, else the graph's) and the graph's own."""
    axes: Dict[str, Optional[int]] = {}
    sources: Dict[str, str] = {}
    inferred = decision_axes(model) if model is not None else {}
    for name, (axis, why) in inferred.items():
        axes[name], sources[name] = axis, why
    for name, axis in class_axes(declared).items():
        if axis is None and name in inferred:
            continue
        axes[name], sources[name] = axis, "declared"
    return axes, sources


class UserMetric:
    """The user's own task metric, ``--metric FILE.py:NAME``.

    ``NAME(reference_outputs, candidate_outputs, inputs) -> float``: dicts of arrays for one
    sample (batch axis of length 1), higher is better, 1.0 for identical outputs. It is
    called once per sample; the score is the mean over samples (so auto can resample it
    to estimate its noise). Loaded by :func:`trtq.data.script.load_function`, the loader of
    every ``file.py:function`` trtq takes.
    """

    def __init__(self, function, name: str, source: str = ""):
        self.function = function
        self.name = name
        self.source = source  # the file, for messages

    @property
    def shown(self) -> str:
        """``m.py:score``: the metric as the user gave it."""
        return f"{self.source}:{self.name}" if self.source else self.name

    @classmethod
    def load(cls, spec: str) -> "UserMetric":
        from .data.script import load_function, split_script_path

        parts = split_script_path(spec) if ":" in str(spec) else None
        if parts is None:
            raise TrtqError(f"--metric {spec}: expected FILE.py:NAME, a Python file and the function in it")
        script, function = parts
        return cls(load_function(Path(script), function, script, what="metric file"), function, script)

    def __call__(self, reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray],
                 feed: Mapping[str, np.ndarray]) -> np.ndarray:
        """The metric of each sample of one batch, ``[n]``."""
        from .usercode import user_code

        n = len(next(iter(reference.values())))
        values = np.empty(n)
        for i in range(n):
            one = slice(i, i + 1)
            try:
                with user_code(f"--metric {self.shown}"):
                    value = self.function({k: v[one] for k, v in reference.items()},
                                          {k: v[one] for k, v in candidate.items()},
                                          {k: np.asarray(v)[one] for k, v in feed.items()})
                values[i] = float(value)
            except TrtqError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the user's code may raise anything
                raise TrtqError(f"--metric {self.name} failed: {type(exc).__name__}: {exc}") from exc
            if math.isnan(values[i]):
                raise TrtqError(f"--metric {self.name} returned NaN; it must return a number, higher is better")
        return values


def compare_outputs(pairs: Iterable[Tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
                    names: Optional[Sequence[str]] = None, class_outputs: Optional[ClassOutputs] = (),
                    feeds: Optional[Iterable[Mapping[str, np.ndarray]]] = None,
                    metric: Optional[UserMetric] = None, class_sources: Optional[Mapping[str, str]] = None,
                    feature_axes: Optional[Mapping[str, Optional[int]]] = None,
                    output_axes: Optional[Mapping[str, int]] = None, masks: Optional[Mapping[str, int]] = None,
                    group_axes: Optional[Mapping[str, Sequence[int]]] = None) -> Fidelity:
    """Metrics for an iterable of ``(reference outputs, candidate outputs)`` batches, streamed.

    ``output_axes``: ``{output: the axis that counts samples}`` where it is not 0 (an LSTM
    state output is ``[layers, N, hidden]``; the model signature's output axes):
    moved first, so that per-sample metrics and their bootstrap cut samples.

    ``class_outputs``: outputs whose decisions are judged along a class axis (names,
    ``NAME:AXIS`` strings, or ``{name: axis or None}``; see :func:`decision_axes` for the
    graph's own). ``feeds``: the input batches, aligned with ``pairs``: their attention
    mask, if any, keeps padded positions out of the metrics (:func:`padding_mask`); the
    user's ``metric`` reads them too. ``feature_axes``: ``{output: small feature axis or None}``
    from the graph (:func:`feature_axes`); outputs not in it are judged from their first batch.
    ``masks``: ``{output: singleton channel axis}`` of binary Sigmoid masks (agreement and IoU at
    0.5); ``group_axes``: ``{output: axes}`` where channel groups may be looked for (both from
    the model's signature, :mod:`trtq.graph.signature`).
    """
    axes = class_axes(class_outputs)
    features = dict(feature_axes or {})
    sources = dict(class_sources or {})
    accumulators: Dict[str, OutputAccumulator] = {}
    feeds = iter(feeds) if feeds is not None else None
    values: List[np.ndarray] = []
    for ref, cand in pairs:
        feed = next(feeds) if feeds is not None else {}
        valid = padding_mask(feed) if feeds is not None else None
        for name in names or list(ref):
            if name not in accumulators:
                accumulators[name] = OutputAccumulator(name, scores=name in axes, class_axis=axes.get(name),
                                                       class_source=sources.get(name, ""),
                                                       channels=features.get(name, -1) is not None,
                                                       channel_axis=features.get(name),
                                                       mask_axis=(masks or {}).get(name),
                                                       group_axes=(group_axes or {}).get(name))
            r, c = ref[name], cand[name]
            axis = (output_axes or {}).get(name, 0)
            if axis and np.ndim(r) > axis and np.ndim(c) > axis:
                r, c = np.moveaxis(r, axis, 0), np.moveaxis(c, axis, 0)
            accumulators[name].update(r, c, valid)
        if metric is not None:
            values.append(metric(ref, cand, feed))
    result = Fidelity(acc.metrics() for acc in accumulators.values())
    if metric is not None:
        per_sample = np.concatenate(values) if values else np.zeros(0)
        result.metric = MetricScore(metric.name, float(per_sample.mean()) if per_sample.size else math.nan,
                                    int(per_sample.size), per_sample)
    return result


def resampled_scores(metrics: Sequence[OutputMetrics], index: np.ndarray, channels: bool = True
                     ) -> Tuple[Optional[np.ndarray], np.ndarray]:
    """(decision, worst SNR dB) of ``metrics`` on resampled sample sets: ``index`` is ``[draws, n]`` sample
    indices; each is ``[draws]`` (decision None when there is none). ``channels``: the worst SNR
    includes the judged channels (else only whole outputs and channel groups). The bootstrap
    behind auto's noise."""
    snr = np.full(len(index), np.inf)

    def ratio_db(ref2: np.ndarray, err2: np.ndarray) -> np.ndarray:
        r, e = ref2[index].sum(axis=1), err2[index].sum(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            db = 10 * np.log10(r / e)
        db = np.where(e == 0, np.inf, db)
        return np.where(np.isnan(db), -np.inf, db)

    decision = None
    metric = getattr(metrics, "metric", None)
    if metric is not None and metric.per_sample is not None and metric.per_sample.size:
        decision = metric.per_sample[index].mean(axis=1)
    for m in metrics:
        scores = m.per_sample
        if scores is None or not scores.ref2.size:
            continue
        snr = np.minimum(snr, ratio_db(scores.ref2, scores.err2))
        for k in range(scores.group_ref2.shape[1]):
            snr = np.minimum(snr, ratio_db(scores.group_ref2[:, k], scores.group_err2[:, k]))
        for k in range(scores.channel_ref2.shape[1] if channels else 0):
            snr = np.minimum(snr, ratio_db(scores.channel_ref2[:, k], scores.channel_err2[:, k]))
        if metric is None and scores.agree is not None:
            counted = scores.counted[index].sum(axis=1)
            agreement = scores.agree[index].sum(axis=1) / np.maximum(counted, 1)
            decision = agreement if decision is None else np.minimum(decision, agreement)
    return decision, snr


def output_snr_db(metrics: Sequence[OutputMetrics]) -> float:
    """The worst SNR over whole outputs and channel groups, judged channels left out (less noisy than
    the worst channel: what auto compares next when channels tie)."""
    return min([m.snr_db for m in metrics] + [g.snr_db for m in metrics for g in m.groups],
               key=_nan_low, default=math.nan)


# ---------------------------------------------------------------------------------------------
# Models and data


def _load(model: Union[PathLike, Any]):
    """(ModelProto, display name) for a path or an in-memory model."""
    from .graph.model import load_onnx

    if hasattr(model, "graph"):
        return model, (model.graph.name or "in-memory model")
    return load_onnx(model), Path(model).name


def _eval_spec(data):
    """A DataSpec for evaluation: file order (no shuffle); a bare path means all samples."""
    from .data.spec import DataSpec

    if isinstance(data, DataSpec):
        return replace(data, shuffle=False)
    return DataSpec(path=str(data), samples=None, shuffle=False)


def _check_same_io(ref_session, cand_session, ref_name: str, cand_name: str) -> Dict[str, str]:
    """Candidate output name for each reference output (by name, else by position)."""
    from .ort import input_names, output_names

    if sorted(input_names(ref_session)) != sorted(input_names(cand_session)):
        raise ModelError(f"{cand_name} has inputs {input_names(cand_session)}, {ref_name} has "
                         f"{input_names(ref_session)}; compare a model with its own quantized version")
    ref_out, cand_out = output_names(ref_session), output_names(cand_session)
    if set(ref_out) <= set(cand_out):
        return {name: name for name in ref_out}
    if len(ref_out) == len(cand_out):
        log.warning("output names differ (%s vs %s); matching them by position", ref_out, cand_out)
        return dict(zip(ref_out, cand_out))
    raise ModelError(f"{cand_name} has outputs {cand_out}, {ref_name} has {ref_out}; they cannot be matched")


class _Labels:
    """Labels per batch: a label file (``trtq.data.load_labels``) or class indices in sample order."""

    def __init__(self, labels, source):
        self.path: Optional[str] = None
        self.ordered: Optional[np.ndarray] = None
        self.order = None
        if isinstance(labels, (str, Path)):
            from .data import load_labels

            self.path = str(labels)
            ids = source.sample_ids() if hasattr(source, "sample_ids") else None
            self.order = source.all_ids() if hasattr(source, "all_ids") else None
            if ids is not None:  # file-backed sources know their ids up front: read the label file once
                self.ordered = load_labels(self.path, ids, order=self.order)
        else:
            self.ordered = np.asarray(labels, dtype=np.int64).ravel()

    def batch(self, ids: Optional[List[str]], offset: int, count: int) -> np.ndarray:
        if self.ordered is None:  # a loader script: ids are known batch by batch
            from .data import load_labels

            if ids is None:
                raise DataError("this data source does not name its samples; give labels in sample order")
            return load_labels(self.path, ids, order=self.order)
        chunk = self.ordered[offset:offset + count]
        if chunk.size < count:
            raise DataError(f"{count + offset} samples evaluated but only {self.ordered.size} labels given; "
                            "give one label per sample")
        return chunk


def padding_mask(feed: Mapping[str, np.ndarray]) -> Optional[np.ndarray]:
    """``[N, S]`` bool: which token positions are real, from an attention-mask input; None when there is none.

    Rule (documented): the one input whose name contains "mask" (case-insensitive), integer
    or bool, rank 2, holding only 0 and 1 (a tokenizer's ``attention_mask``). Outputs whose
    leading axes are that ``[N, S]`` are scored on the positions where it is 1: what a
    model computes at padding is read by no one, and its INT8 error there means nothing.
    """
    found = [np.asarray(v) for k, v in feed.items() if "mask" in k.lower()]
    if len(found) != 1:
        return None
    mask = found[0]
    if mask.ndim != 2 or mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
        return None
    return mask.astype(bool)


def _scored_outputs(outputs: Mapping[str, np.ndarray], names: Sequence[str], axes: Mapping[str, Optional[int]],
                    declared: Mapping[str, Optional[int]], labelled: bool) -> Dict[str, Optional[int]]:
    """Outputs judged along a class axis: the graph's and the declared ones, plus the first ``[N, C]`` output
    when labels are given. A declared output must have that axis with 2 or more classes."""
    for name, axis in declared.items():
        shape = np.shape(outputs[name])
        resolved = _resolve_axis(axis, len(shape)) if axis is not None else default_class_axis(outputs[name])
        if resolved is None or shape[resolved] < 2:
            raise TrtqError(f"--class-output {name}{'' if axis is None else f':{axis}'}: output {name!r} has shape "
                            f"{list(shape)}; a class axis (not the batch axis) with 2 or more classes is needed "
                            "(NAME:AXIS picks the axis)")
    chosen = dict(axes)
    if labelled and not any(class_scores(outputs[n]) is not None for n in chosen):
        first = [n for n in names if class_scores(outputs[n]) is not None][:1]
        chosen.update({n: None for n in first})
    return chosen


def _batches_with_ids(source) -> Iterable[Tuple[Optional[List[str]], Dict[str, np.ndarray]]]:
    if hasattr(source, "iter_with_ids"):
        yield from source.iter_with_ids()
        return
    from .ort import batch_inputs

    for item in source:
        yield None, batch_inputs(item)


def evaluate(
    reference: Union[PathLike, Any],
    candidate: Union[PathLike, Any],
    data,
    *,
    labels=None,
    class_outputs: Optional[ClassOutputs] = None,
    metric: Optional[UserMetric] = None,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    plugins: Sequence[PathLike] = (),
    dla_core: Optional[int] = None,
) -> EvalReport:
    """Compare ``candidate`` (e.g. the INT8 Q/DQ model) with ``reference`` (the float model) on ``data``.

    ``reference``/``candidate``: ONNX paths or ``onnx.ModelProto``. ``data``: a
    :class:`~trtq.data.spec.DataSpec` or a path (then every sample, in file order).
    ``labels``: a label file (see :func:`trtq.data.load_labels`: ``id,label`` rows or
    one label per sample) or a sequence of class indices in sample order; adds true
    top-1 accuracy of both models on the first class-score output. ``class_outputs``:
    outputs that are class scores (names or ``NAME:AXIS``, any rank: top-1 agreement per
    position and per sample), beside those the graph marks (:func:`decision_axes`) and,
    with ``labels``, the first ``[N, C]`` output. ``metric``: the user's own
    (:class:`UserMetric`), reported and judged by the verdict. Runs both models with ONNX
    Runtime on the CPU; a ``candidate`` that is a TensorRT engine (``.engine``/``.plan``) runs
    on the GPU through trtq.backend (``plugins``: the plugin libraries it needs; ``dla_core``: the DLA core
    a DLA engine runs on, default the one its build report names).
    """
    from .bench import infer_precision, is_engine_path
    from .data import open_source
    from .graph.batch import feed_samples
    from .graph.signature import read_signature
    from .ort import create_session, run

    progress = progress or no_progress
    started = time.perf_counter()
    ref_model, ref_name = _load(reference)
    ref_session = create_session(ref_model, threads=threads)
    if not hasattr(candidate, "graph") and is_engine_path(candidate):  # a TensorRT engine: trtq.backend runs it
        from .backend.bench import engine_precision
        from .backend.runner import EngineSession

        cand_name, cand_precision, cand_session = Path(candidate).name, engine_precision(candidate), \
            EngineSession(candidate, model=ref_model, plugins=plugins, dla_core=dla_core)
    else:
        cand_model, cand_name = _load(candidate)
        cand_session = create_session(cand_model, threads=threads)
        cand_precision = infer_precision(cand_model)
    output_map = _check_same_io(ref_session, cand_session, ref_name, cand_name)
    spec = _eval_spec(data)
    signature = read_signature(ref_model, spec.batch_axes)
    source = open_source(spec, list(signature.inputs))
    out_axes = signature.output_axes()
    state = set(signature.state_outputs())  # fed back, not a decision: never judged
    output_map = {k: v for k, v in output_map.items() if k not in state} or output_map
    total = getattr(source, "num_samples", None)
    label_lookup = _Labels(labels, source) if labels is not None else None

    axes, sources = _class_spec(ref_model, class_outputs)
    declared = class_axes(class_outputs)
    unknown = sorted(set(declared) - set(output_map))
    if unknown:
        raise TrtqError(f"--class-output {', '.join(unknown)}: no such output; the model's outputs are "
                        f"{', '.join(output_map)}")
    axes = {k: v for k, v in axes.items() if k in output_map}
    accumulators: Dict[str, OutputAccumulator] = {}
    accuracy: Optional[AccuracyAccumulator] = None
    metric_values: List[np.ndarray] = []
    done = batches = 0
    progress(0, total)
    for ids, feed in _batches_with_ids(source):
        ref_out = run(ref_session, feed)
        cand_out = run(cand_session, feed, list(output_map.values()))
        if not accumulators:
            scored = _scored_outputs(ref_out, list(output_map), axes, declared, labels is not None)
            features, masks, groups = signature.feature_axes(), signature.mask_axes(), signature.group_axes()
            accumulators = {name: OutputAccumulator(name, scores=name in scored, class_axis=scored.get(name),
                                                    class_source=sources.get(name, "labels"),
                                                    channels=features.get(name, -1) is not None,
                                                    channel_axis=features.get(name),
                                                    mask_axis=None if name in scored else masks.get(name),
                                                    group_axes=groups.get(name))
                            for name in output_map}
        valid = padding_mask(feed)
        for name, cand_key in output_map.items():  # samples first (an LSTM state output is [layers, N, hidden])
            axis = out_axes.get(name, 0)
            ref, cand = ref_out[name], cand_out[cand_key]
            if axis and np.ndim(ref) > axis and np.ndim(cand) > axis:
                ref, cand = np.moveaxis(ref, axis, 0), np.moveaxis(cand, axis, 0)
            accumulators[name].update(ref, cand, valid)
        if metric is not None:
            metric_values.append(metric({n: ref_out[n] for n in output_map},
                                        {n: cand_out[k] for n, k in output_map.items()}, feed))
        count = len(ids) if ids is not None else feed_samples(feed, source.inputs)
        if label_lookup is not None:
            if accuracy is None:
                scored = [n for n, acc in accumulators.items() if acc.is_scores and class_scores(ref_out[n]) is not None]
                if not scored:
                    raise DataError("labels were given but no model output looks like class scores "
                                    "([N, C] with C >= 2); accuracy needs a classifier")
                accuracy = AccuracyAccumulator(scored[0])
            accuracy.update(ref_out[accuracy.output], cand_out[output_map[accuracy.output]],
                            label_lookup.batch(ids, done, count))
        done += count
        batches += 1
        progress(done, total)
    if not done:
        raise DataError(f"{getattr(source, 'description', spec.path)}: no samples to evaluate")
    fidelity = Fidelity(acc.metrics() for acc in accumulators.values())
    if metric is not None:
        per_sample = np.concatenate(metric_values)
        fidelity.metric = MetricScore(metric.name, float(per_sample.mean()), int(per_sample.size), per_sample)
    return EvalReport(
        reference=ref_name,
        candidate=cand_name,
        samples=done,
        batches=batches,
        outputs=fidelity,
        data=str(getattr(source, "description", spec.path)) + "".join(
            f"; state output {p.output!r} (fed back as {p.input!r}) not judged" for p in signature.pairs),
        reference_precision=infer_precision(ref_model),
        candidate_precision=cand_precision,
        seconds=time.perf_counter() - started,
        accuracy=accuracy.result() if accuracy is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# Scales for re-quantizing: from a calibration cache, or read back from a Q/DQ model


def amax_from_qdq(model) -> Dict[str, float]:
    """amax per activation tensor, read back from a Q/DQ model's QuantizeLinear nodes (scale × 127).

    Only activations (QuantizeLinear inputs that are not initializers) with a scalar
    scale are returned; weights are re-quantized from the float weights anyway.
    """
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    constants = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    amax: Dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2 or node.input[0] in initializers:
            continue
        scale_name = node.input[1]
        if scale_name in initializers:
            scale = numpy_helper.to_array(initializers[scale_name])
        elif scale_name in constants:
            scale = constants[scale_name]
        else:
            continue
        if np.size(scale) != 1:
            continue
        amax[node.input[0]] = float(np.float32(np.asarray(scale).reshape(())) * np.float32(127.0))
    return amax


def qdq_form(model) -> str:
    """``"cpu"`` when activation zero points are uint8 (trtq's ONNX Runtime form), else ``"trt"``."""
    from onnx import TensorProto

    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in initializers:
            if initializers[node.input[2]].data_type == TensorProto.UINT8:
                return "cpu"
    return "trt"


def resolve_amax(reference, candidate=None, cache: Optional[PathLike] = None, force: bool = False
                 ) -> Tuple[Dict[str, float], str]:
    """amax for re-quantizing ``reference``: from ``cache`` (checked against the model) or the candidate's Q/DQ.

    Returns ``(amax, where it came from)``. Raises :class:`~trtq.errors.TrtqError`
    when neither gives any scale.
    """
    ref_model, ref_name = _load(reference)
    if cache is not None:
        from .cache import check_cache_matches, read_cache
        from .graph.model import file_sha256, model_sha256
        from .graph.qdq import tensor_names

        table = read_cache(cache)
        digest = file_sha256(reference) if not hasattr(reference, "graph") else model_sha256(ref_model)
        check_cache_matches(table, ref_model, digest, tensor_names(ref_model), force=force)
        return table.amax, f"calibration cache {Path(cache).name}"
    if candidate is not None:
        cand_model, cand_name = _load(candidate)
        amax = amax_from_qdq(cand_model)
        if amax:
            return amax, f"Q/DQ scales of {cand_name}"
    raise TrtqError("sensitivity analysis and --auto-exclude re-quantize the float model layer by layer and need its "
                    "scales: give the calibration cache with --cache CACHE (or a Q/DQ candidate model to read "
                    "them from)")


# ---------------------------------------------------------------------------------------------
# Replay set for sensitivity and mixed precision


@dataclass
class Replay:
    """A fixed set of input batches with the reference model's outputs, kept in memory."""

    feeds: List[Dict[str, np.ndarray]]
    outputs: List[Dict[str, np.ndarray]]
    samples: int
    class_outputs: ClassOutputs = ()        # outputs judged along a class axis: names, NAME:AXIS, or {name: axis}
    metric: Optional[UserMetric] = None     # the user's own metric (--metric), scored beside the outputs
    feature_axes: Optional[Dict[str, Optional[int]]] = None  # small feature axes from the graph (feature_axes())
    output_axes: Optional[Dict[str, int]] = None  # the axis that counts samples, per output (the signature's)
    masks: Optional[Dict[str, int]] = None  # binary Sigmoid masks: {output: channel axis} (the signature's)
    group_axes: Optional[Dict[str, Tuple[int, ...]]] = None  # where channel groups may be (the signature's)
    judged: Optional[List[str]] = None  # outputs compared (state fed back is not); None: every output

    def judging(self) -> dict:
        """What :func:`compare_outputs` needs besides the outputs (for replays made from this one)."""
        return dict(class_outputs=self.class_outputs, metric=self.metric, feature_axes=self.feature_axes,
                    output_axes=self.output_axes, masks=self.masks, group_axes=self.group_axes, judged=self.judged)

    @classmethod
    def collect(cls, reference, data, *, samples: int = SENSITIVITY_SAMPLES, threads: Optional[int] = None
                ) -> "Replay":
        from .data import open_source
        from .graph.batch import feed_samples, take_samples
        from .graph.signature import read_signature
        from .ort import batch_inputs, create_session, run

        ref_model, _ = _load(reference)
        spec = replace(_eval_spec(data), samples=samples, shuffle=False)
        signature = read_signature(ref_model, spec.batch_axes)
        source = open_source(spec, list(signature.inputs))
        session = create_session(ref_model, threads=threads)
        feeds, outputs, count = [], [], 0
        for item in source:
            feed = {k: np.asarray(v) for k, v in batch_inputs(item).items()}
            n = feed_samples(feed, source.inputs)
            if count + n > samples:
                feed = take_samples(feed, source.inputs, slice(0, samples - count))
                n = samples - count
            feeds.append(feed)
            outputs.append(run(session, feed))
            count += n
            if count >= samples:
                break
        if not count:
            raise DataError(f"{getattr(source, 'description', spec.path)}: no samples for sensitivity analysis")
        return cls(feeds, outputs, count, **signature_judging(signature))

    def score(self, model, *, threads: Optional[int] = None) -> List[OutputMetrics]:
        """Output metrics of ``model`` (ModelProto or path) against the stored reference outputs."""
        from .ort import create_session, run

        return self.score_session(create_session(model, threads=threads))

    def score_session(self, session, extra: Optional[Mapping[str, np.ndarray]] = None) -> List[OutputMetrics]:
        """:meth:`score` with an open session, ``extra`` fed beside every batch (the scales of a scoring model
        whose Q/DQ scales are inputs: one session for every candidate)."""
        from .ort import run

        names = [n for n in self.outputs[0] if self.judged is None or n in self.judged]
        extra = dict(extra or {})
        return compare_outputs(((ref, run(session, {**feed, **extra}, names))
                                for feed, ref in zip(self.feeds, self.outputs)), names,
                               class_outputs=self.class_outputs, feeds=self.feeds, metric=self.metric,
                               feature_axes=self.feature_axes, output_axes=self.output_axes, masks=self.masks,
                               group_axes=self.group_axes)

    def tensors(self, model, names: Sequence[str], *, threads: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
        """``model``'s values of the tensors ``names``, batch by batch (the graph augmented to expose them)."""
        from .calib.collect import augmented_model
        from .ort import create_session, run

        session = create_session(augmented_model(model, names), threads=threads)
        for feed in self.feeds:
            yield run(session, feed, list(names))

    def latency_ms(self, model, *, threads: Optional[int] = None, iterations: int = SPEED_ITERATIONS) -> float:
        """Median batch-1 latency (ms) of ``model`` on the first sample (2 warm-up runs)."""
        from .bench import time_session
        from .ort import as_feed, create_session

        session = create_session(model, threads=threads)
        feed = as_feed(session, {k: v[:1] for k, v in self.feeds[0].items()})
        return float(np.median(time_session(session, feed, iterations, 2)))


def signature_judging(signature) -> dict:
    """How a :class:`Replay` judges outputs, from a :class:`~trtq.graph.signature.ModelSignature`: feature and
    sample axes, masks, channel-group axes, and the outputs judged (state outputs are not)."""
    return dict(feature_axes=signature.feature_axes(), output_axes=signature.output_axes(),
                masks=signature.mask_axes(), group_axes=signature.group_axes(), judged=signature.judged_outputs())


def worst_of(metrics: Sequence[OutputMetrics]) -> Tuple[float, float, Optional[float]]:
    """(worst SNR, worst cosine, decision score), channel groups and judged channels included.

    The decision score is :func:`decision_of`'s: the user's ``--metric`` when the replay
    has one, else the lowest top-1 agreement per position (None when nothing decides).
    This is the hook mixed precision reads its ``--target-agreement`` from.
    """
    snr = min((m.worst_snr_db for m in metrics), key=_nan_low)
    cosine = min((m.worst_cosine for m in metrics), key=_nan_low)
    decision = decision_of(metrics)
    return snr, cosine, None if decision is None else decision[1]


def _op_types(model) -> Dict[str, str]:
    from .graph.qdq import node_names

    return dict(zip(node_names(model), (n.op_type for n in model.graph.node)))


def layer_sensitivity(
    reference,
    amax: Mapping[str, float],
    data=None,
    *,
    replay: Optional[Replay] = None,
    exclude: Sequence[str] = (),
    samples: int = SENSITIVITY_SAMPLES,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> List[LayerSensitivity]:
    """Every quantized activation ranked by the noise its Q/DQ adds where it is read, from one run; worst first.

    The TensorRT-form Q/DQ model (``amax``, ``exclude`` left float) runs once over the
    replay samples with a float twin beside every node that reads a Q/DQ: the twin takes
    the same (already perturbed) float inputs before quantization and the float weights,
    so the two outputs differ by exactly that node's own quantization, at the operating
    point the quantized model really has. Its ``own SNR`` is ``10 log10(twin^2 / (out -
    twin)^2)``; an entry's score is the worst over the nodes reading it, so rounding is
    weighed by what the node does with it (a conv that ignores an outlier channel loses
    nothing when it is clipped). Each entry names those nodes (``layers``): leaving them
    in float removes the Q/DQ, so they are the unit the mixed-precision search excludes
    together (a tensor read by a transformer's Q, K and V projections is one Q/DQ:
    excluding one of the three changes nothing). One run for any number of layers, where
    quantizing one layer at a time costs one scored model per layer.
    """
    from .graph.qdq import quantize_model

    progress = progress or no_progress
    ref_model, _ = _load(reference)
    replay = replay or Replay.collect(ref_model, data, samples=samples, threads=threads)
    progress(0, 1)
    quantized, summary = quantize_model(ref_model, amax, target="trt", exclude=exclude)
    tensors = [t for t in summary.activation_tensors if summary.activation_uses.get(t)]
    probe, pairs = _float_twins(ref_model, quantized, {n for t in tensors for n in summary.activation_uses[t]})
    if not pairs:
        return []
    sums = {node: [0.0, 0.0] for node in pairs}
    for values in replay.tensors(probe, [name for pair in pairs.values() for name in pair], threads=threads):
        for node, (out, twin) in pairs.items():
            clean = values[twin].astype(np.float64)
            e = values[out].astype(np.float64) - clean
            sums[node][0] += float(np.vdot(clean, clean))
            sums[node][1] += float(np.vdot(e, e))
    progress(1, 1)
    own = {node: _snr(ref2, err2) for node, (ref2, err2) in sums.items()}
    ops = _op_types(ref_model)
    results = []
    for tensor in tensors:
        layers = summary.activation_uses[tensor]
        measured = [own[n] for n in layers if n in own]
        worst = min(measured, key=_nan_low) if measured else None
        kinds = "/".join(sorted({ops.get(layer, "?") for layer in layers}))
        results.append(LayerSensitivity(tensor, kinds, worst, layers=list(layers),
                                        note=f"read by {len(layers)} node(s)"))
    return sort_sensitivity(results)


def _float_twins(ref_model, quantized, readers: Iterable[str]) -> Tuple[Any, Dict[str, Tuple[str, str]]]:
    """A copy of ``quantized`` where each reader node has a float twin; ``{node: (its output, twin's output)}``."""
    import onnx

    from .graph.placement import GraphIndex

    probe = onnx.ModelProto()
    probe.CopyFrom(quantized)
    ref_nodes = dict(zip(_node_names(ref_model), ref_model.graph.node))
    # Float weights as the placement sees them: initializers and Constant nodes' tensors (which
    # quantize_model drops with the float weight they held), shared or not.
    initializers = GraphIndex(ref_model).weights
    present = {init.name for init in probe.graph.initializer}
    pairs: Dict[str, Tuple[str, str]] = {}
    for name in sorted(readers):
        node = ref_nodes.get(name)
        if node is None or len(node.output) != 1 or not node.output[0]:
            continue
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name = f"{name}__trtq_float_twin"
        for slot, tensor in enumerate(node.input):
            if tensor in initializers:  # quantize_model dropped or replaced the float weight: bring it back
                copy_name = f"{tensor}__trtq_float"
                if copy_name not in present:
                    weight = onnx.TensorProto()
                    weight.CopyFrom(initializers[tensor])
                    weight.name = copy_name
                    probe.graph.initializer.append(weight)
                    present.add(copy_name)
                twin.input[slot] = copy_name
        twin.output[0] = f"{node.output[0]}__trtq_float_twin"
        probe.graph.node.append(twin)
        pairs[name] = (node.output[0], twin.output[0])
    return probe, pairs


def _node_names(model) -> List[str]:
    from .graph.qdq import node_names

    return node_names(model)


def _helps(metric: str, value: Optional[float], before: Optional[float]) -> bool:
    """Did a mixed-precision step raise ``metric`` measurably (by AUTO_EXCLUDE_MIN_GAIN_DB; any gain for agreement)?"""
    value, before = _nan_low(value if value is not None else math.nan), _nan_low(before if before is not None else math.nan)
    if metric in ("top1_agreement", "decisions") or not math.isfinite(before):
        return value > before
    if metric == "cosine":  # as dB of the residual 1 - cos
        value, before = (-10 * math.log10(max(1.0 - v, 1e-30)) if math.isfinite(v) else v for v in (value, before))
    return value - before >= defaults.AUTO_EXCLUDE_MIN_GAIN_DB


def sort_sensitivity(results: Iterable[LayerSensitivity]) -> List[LayerSensitivity]:
    """Lowest own SNR (NaN first) first; entries that could not be measured last."""
    def key(r: LayerSensitivity):
        if r.own_snr_db is None:
            return (1, 0.0)
        return (0, _nan_low(r.own_snr_db))

    return sorted(results, key=key)


def auto_exclude(
    reference,
    amax: Mapping[str, float],
    data=None,
    *,
    target_snr: Optional[float] = None,
    target_cosine: Optional[float] = None,
    target_agreement: Optional[float] = None,
    max_layers: int = AUTO_EXCLUDE_MAX_LAYERS,
    ranking: Optional[Sequence[LayerSensitivity]] = None,
    target_decisions: Optional[float] = None,
    replay: Optional[Replay] = None,
    exclude: Sequence[str] = (),
    samples: int = SENSITIVITY_SAMPLES,
    measure_speed: bool = True,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> Tuple[AutoExcludeResult, Optional[Any]]:
    """Leave layers in float, measuring every step, until the target is met.

    Targets (exactly one; default ``target_snr`` = :data:`trtq.defaults.VERDICT_MIN_SNR_DB`):
    ``target_snr`` on the worst output and channel group (boxes, embeddings, CTC
    sequences: any output), ``target_cosine`` likewise, ``target_agreement`` top-1
    agreement on a class-score output (the replay's ``class_outputs``), ``target_decisions``
    the share of decisions kept (:func:`trtq.precision.budget.decisions_kept`: the user's
    metric, top-1 agreement, mask IoU; what ``--max-drop`` budgets). Starts from the
    TensorRT-form model (``exclude`` already float), walks the ranking of
    :func:`layer_sensitivity` (noisiest quantized tensor first), and for each entry
    measures the model with the nodes reading that tensor left in float: each round
    measures the next :data:`~trtq.defaults.AUTO_EXCLUDE_LOOKAHEAD` entries from the
    current model and keeps the one that raises the metric most; a trial that does not
    help is recorded, not kept, so the result is never worse than the step before it.
    Decisions come in whole samples and stay flat over several steps: with
    ``target_decisions`` a step that keeps them and raises the worst SNR helps too (decisions
    first, then the worst output or channel, as auto ranks).
    Stops at the target, after ``max_layers`` nodes kept in float, or after
    ``AUTO_EXCLUDE_LOOKAHEAD * max_layers + 1`` trials. Returns ``(result, the TensorRT-form Q/DQ model of the result)``.
    """
    from .graph.qdq import quantize_model

    given = [t for t in (target_snr, target_cosine, target_agreement, target_decisions) if t is not None]
    if len(given) > 1:
        raise TrtqError("give one target: --target-snr DB, --target-cosine C or --target-agreement FRACTION")
    if not given:
        target_snr = defaults.VERDICT_MIN_SNR_DB
    if target_agreement is not None and not 0.0 < target_agreement <= 1.0:
        raise TrtqError(f"--target-agreement is a fraction in (0, 1], got {target_agreement}")
    if target_cosine is not None and not -1.0 <= target_cosine <= 1.0:
        raise TrtqError(f"--target-cosine is a cosine in [-1, 1], got {target_cosine}")
    if max_layers < 0:
        raise TrtqError(f"--max-layers must be 0 or more, got {max_layers}")
    progress = progress or no_progress
    ref_model, _ = _load(reference)
    replay = replay or Replay.collect(ref_model, data, samples=samples, threads=threads)
    if target_agreement is not None and not replay.class_outputs:
        raise TrtqError("--target-agreement needs an output declared as class scores (--labels or --class-output "
                        "NAME); for embeddings, boxes or sequences use --target-snr or --target-cosine")
    metric_name, target = (("snr_db", target_snr) if target_snr is not None else
                           ("cosine", target_cosine) if target_cosine is not None else
                           ("decisions", target_decisions) if target_decisions is not None else
                           ("top1_agreement", target_agreement))
    target = float(target)
    if ranking is None:
        ranking = layer_sensitivity(ref_model, amax, replay=replay, exclude=exclude, threads=threads)
    candidates = [r for r in ranking if r.own_snr_db is not None]
    float_latency = replay.latency_ms(ref_model, threads=threads) if measure_speed else None

    def measure(excluded: List[str]):
        model, summary = quantize_model(ref_model, amax, target="trt", exclude=list(exclude) + excluded)
        metrics = replay.score(model, threads=threads)
        snr, cosine, agreement = worst_of(metrics)
        if metric_name == "decisions":
            from .precision.budget import decisions_kept

            kept = decisions_kept(metrics)
            value = math.nan if kept is None else kept[1]
        else:
            value = {"snr_db": snr, "cosine": cosine, "top1_agreement": agreement}[metric_name]
        return model, snr, cosine, agreement, value

    steps: List[ExcludeStep] = []
    excluded: List[str] = []
    budget = defaults.AUTO_EXCLUDE_LOOKAHEAD * max(max_layers, 1) + 1
    progress(0, budget + 1)
    model, snr, cosine, agreement, value = measure(excluded)
    latency = replay.latency_ms(model, threads=threads) if measure_speed else None
    steps.append(ExcludeStep(0, None, [], snr, agreement, value, bool(value >= target), latency,
                             (float_latency / latency) if (latency and float_latency) else None, cosine=cosine))
    best_value, best_model, best_snr = value, model, snr
    pool = list(candidates)
    trials = 0
    tried_here: set = set()  # entries measured from the current model (reset when a step is kept)
    while trials < budget and not best_value >= target and len(excluded) < max_layers:
        # Measure the next few entries of the ranking from here and keep the one that helps most:
        # the ranking is one run's estimate, the measurement is the truth.
        batch = [e for e in pool if id(e) not in tried_here][:defaults.AUTO_EXCLUDE_LOOKAHEAD]
        if not batch:
            break
        measured = []
        for entry in batch:
            if trials >= budget:
                break
            trial = excluded + [n for n in entry.nodes() if n not in excluded]
            model, snr, cosine, agreement, value = measure(trial)
            trials += 1
            progress(trials + 1, budget + 1)
            step = ExcludeStep(len(steps), entry.layer, list(excluded), snr, agreement, value, False, None, None,
                               cosine=cosine, kept=False)
            steps.append(step)
            measured.append((entry, trial, model, value, step))
            tried_here.add(id(entry))
        helping = [m for m in measured if _helps(metric_name, m[3], best_value)
                   or (metric_name == "decisions" and m[3] == best_value and _helps("snr_db", m[4].snr_db, best_snr))]
        for *_, step in measured:
            step.helped = any(step is h[4] for h in helping)
        for entry, *_ in measured:  # what did not help from here goes to the back: it may once a worse one is gone
            if all(entry is not h[0] for h in helping):
                pool.remove(entry)
                pool.append(entry)
        if not helping:
            continue
        entry, trial, model, value, step = max(helping, key=lambda m: (
            _nan_low(m[3]), _nan_low(m[4].snr_db) if metric_name == "decisions" else 0.0))
        pool.remove(entry)
        tried_here.clear()
        excluded, best_value, best_model, best_snr = trial, value, model, step.snr_db
        step.kept, step.excluded, step.met = True, list(trial), bool(value >= target)
        if measure_speed:
            step.latency_ms = replay.latency_ms(model, threads=threads)
            step.speedup = (float_latency / step.latency_ms) if (step.latency_ms and float_latency) else None
    progress(budget + 1, budget + 1)
    met = bool(best_value >= target)
    unit = " dB" if metric_name == "snr_db" else ""
    label = {"snr_db": "SNR", "cosine": "cosine", "top1_agreement": "top-1 agreement",
             "decisions": "decisions kept"}[metric_name]
    if met and not excluded:
        message = f"the fully quantized model already meets {label} >= {target:g}{unit} ({best_value:.4g}{unit})"
    elif met:
        message = (f"{label} {best_value:.4g}{unit} >= {target:g}{unit} with {len(excluded)} layer(s) "
                   f"left in float: {', '.join(excluded)}")
    else:
        message = (f"target {label} >= {target:g}{unit} not met: best {best_value:.4g}{unit} with "
                   f"{len(excluded)} layer(s) left in float after {len(steps) - 1} measured step(s)"
                   + (f" (--max-layers {max_layers} reached; raise it, or lower the target)"
                      if len(excluded) >= max_layers else
                      " (raise --max-layers, lower the target, or recalibrate with another --algo or more data)"))
    from .graph.qdq import quantizable_layers

    result = AutoExcludeResult(metric_name, target, met, list(excluded), steps, replay.samples, max_layers,
                               float_latency, message=message, quantizable_layers=len(quantizable_layers(ref_model)))
    return result, best_model
