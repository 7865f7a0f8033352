"""What a model decides and how well a candidate keeps it: class axes, feature axes, the decision score."""

from __future__ import annotations

import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import defaults
from .metrics import class_scores
from .struct import OutputMetrics, _fmt_db, _nan_low, _pct


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

def decisions_kept(metrics: Sequence) -> Optional[Tuple[str, float]]:
    """(what, share kept in [0, 1]) of the decision that lost most against FP32; None when nothing decides.

    The user's metric when the replay has one (its scale is 1 = identical), else the lowest of
    the top-1 agreement per position of the outputs with a class axis and the IoU of the binary
    masks (a mask's per-pixel agreement hides a lost object in its background).
    """
    metric = getattr(metrics, "metric", None)
    if metric is not None:
        return f"metric {metric.name}", float(metric.value)
    scored = []
    for m in metrics:
        if m.judged_by_iou and m.mask_iou is not None:
            scored.append((f"mask IoU of {m.name!r}", float(m.mask_iou)))
        elif m.top1_agreement is not None:
            scored.append((f"{m.decision_word} agreement of {m.name!r}", float(m.top1_agreement)))
    if not scored:
        return None
    return min(scored, key=lambda s: _nan_low(s[1]))


def bootstrap_index(samples: int, draws: int = defaults.BOOTSTRAP_DRAWS) -> np.ndarray:
    """``[draws, samples]`` resampling indices, seeded by ``samples``: every model scored on the same samples
    gets the same draws, so differences between two of them are paired."""
    return np.random.default_rng(samples).integers(0, samples, size=(draws, samples))


def drop_points(kept: float) -> float:
    """Points of decisions lost (100 x (1 - share kept))."""
    return 100.0 * (1.0 - kept)

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
        if m.judged_by_iou:
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
    from ..graph.signature import read_signature

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
    from ..graph.signature import read_signature

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
