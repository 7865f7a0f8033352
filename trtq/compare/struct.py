"""Result types of a comparison: per-output metrics, accuracy, sensitivity and exclusion steps, the eval report."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any, List, Optional, Tuple

import numpy as np


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
    iou: Optional[np.ndarray] = None        # [n] IoU of the thresholded mask (binary masks only)


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
    def judged_by_iou(self) -> bool:
        """A binary mask over more than one position decides by its IoU (its per-pixel agreement hides a lost
        object in the background): what auto ranks, the verdict warns on and ``--max-drop`` budgets."""
        return self.mask_axis is not None and (self.positions or 1) > 1

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


def _pct(value: float) -> str:
    return f"{100 * value:.1f} %"


def _fmt_db(value: Optional[float]) -> str:
    if value is None:
        return "unknown"
    return "inf dB" if value == math.inf else f"{value:.2f} dB"
