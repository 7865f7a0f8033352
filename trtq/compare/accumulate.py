"""Streaming comparison: running sums per output (float64), so memory depends on the batch, not the sample count."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import defaults
from ..errors import DataError, ModelError
from .decisions import ClassOutputs, _resolve_axis, class_axes, default_class_axis, feature_axis
from .metrics import TOP_K, ChannelGroup, _cos, _cos_rows, _snr, channel_groups, class_scores, top_k
from .struct import Accuracy, ChannelMetrics, Fidelity, GroupMetrics, MetricScore, OutputMetrics, SampleScores, _nan_low
from .usermetric import UserMetric


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
                                  np.concatenate(self.valid_rows) if self.valid_rows else None,
                                  np.concatenate(self._iou_rows) if self._iou_rows else None)
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
    indices; each is ``[draws]`` (decision None when there is none: else the share kept of
    :func:`~trtq.compare.decisions.decisions_kept`, the user's metric or the lowest of top-1
    agreement and mask IoU). ``channels``: the worst SNR
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
        if metric is not None:
            continue
        if m.judged_by_iou and scores.iou is not None:
            kept = scores.iou[index].mean(axis=1)
        elif m.top1_agreement is not None and scores.agree is not None:
            kept = scores.agree[index].sum(axis=1) / np.maximum(scores.counted[index].sum(axis=1), 1)
        else:
            continue
        decision = kept if decision is None else np.minimum(decision, kept)
    return decision, snr


def _resampled_count(metrics: Sequence[OutputMetrics]) -> int:
    """The samples ``metrics`` hold per-sample rows for (0 where an output's rows do not match the count)."""
    samples = max((m.samples for m in metrics), default=0)
    if any(m.per_sample is not None and len(m.per_sample.ref2) != samples for m in metrics):
        return 0
    return samples


def kept_noise(metrics: Sequence[OutputMetrics]) -> Optional[float]:
    """Bootstrap standard deviation of :func:`~trtq.compare.decisions.decisions_kept`'s share over the samples
    (None: nothing decides, or nothing to resample)."""
    from .decisions import bootstrap_index

    samples = _resampled_count(metrics)
    if samples < 2:
        return None
    decision, _ = resampled_scores(metrics, bootstrap_index(samples))
    return None if decision is None else float(np.std(decision))


def sample_losses(metrics: Sequence[OutputMetrics]) -> Optional[np.ndarray]:
    """``[samples]``: the share of decisions each sample lost (the decision
    :func:`~trtq.compare.decisions.decisions_kept` reads, per sample); None when nothing decides or there is
    nothing per sample."""
    samples = _resampled_count(metrics)
    if samples < 1:
        return None
    kept, _ = resampled_scores(metrics, np.arange(samples)[:, None], channels=False)
    return None if kept is None else 1.0 - kept


def output_snr_db(metrics: Sequence[OutputMetrics]) -> float:
    """The worst SNR over whole outputs and channel groups, judged channels left out (less noisy than
    the worst channel: what auto compares next when channels tie)."""
    return min([m.snr_db for m in metrics] + [g.snr_db for m in metrics for g in m.groups],
               key=_nan_low, default=math.nan)


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
