"""Fidelity metrics: pure functions on numpy arrays (cosine, SNR, top-k agreement, channel groups)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .. import defaults

log = logging.getLogger(__name__)


#: k of the "top-k agreement" reported next to top-1.
TOP_K = 5


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
