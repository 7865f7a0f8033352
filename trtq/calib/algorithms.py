"""Calibration algorithms: pure functions from a |x| histogram to an amax.

Every function takes ``counts`` (``num_bins`` non-negative counts) and ``edges``
(``num_bins + 1`` increasing edges, ``edges[0] == 0``) as produced by
:class:`~trtq.calib.histogram.AbsHistogram`, and returns a Python float. They are
vectorised over the candidate thresholds: a 2048-bin search takes a few
milliseconds, not seconds.

Zero tensors: a histogram that holds no non-zero value has no meaningful amax; the
functions return ``0.0`` and :func:`compute_amax` does the same. The cache layer
clamps amax to :data:`trtq.cache.MIN_AMAX` when it writes a scale, so a zero amax
never reaches TensorRT. Every other result is finite and > 0.

Tie-breaking: where two candidates score exactly the same, the larger threshold wins
(less clipping), as in NVIDIA's pytorch-quantization.
"""

from __future__ import annotations

import functools
import inspect
import numpy as np

from .. import defaults
from ..errors import TrtqError

#: int8 quantises |x| into 128 levels (0..127; the sign is separate).
NUM_QUANTIZED_BINS = 128
#: First candidate threshold of the entropy and mse searches: bin 128 (TensorRT's).
START_BIN = 128
#: Largest quantised level of symmetric int8.
INT8_MAX = 127


class CalibrationAlgorithmError(TrtqError, ValueError):
    """An unknown calibration algorithm, or an option it does not take / a bad value."""


# ------------------------------------------------------------------------ helpers
def _as_histogram(counts, edges):
    c = np.asarray(counts)
    e = np.asarray(edges, dtype=np.float64)
    if c.ndim != 1 or e.ndim != 1 or e.size != c.size + 1 or c.size == 0:
        raise ValueError(f"need counts of n >= 1 bins and n + 1 edges, got {c.shape} and {e.shape}")
    c = c.astype(np.float64)
    if np.any(c < 0) or not np.all(np.isfinite(c)):
        raise ValueError("counts must be finite and non-negative")
    if not np.all(np.isfinite(e)) or np.any(np.diff(e) < 0) or e[0] < 0:
        raise ValueError("edges must be finite, non-negative and non-decreasing")
    return c, e


def _last_nonzero(c: np.ndarray) -> int:
    nz = np.flatnonzero(c)
    return int(nz[-1]) if nz.size else -1


def _is_zero(c: np.ndarray, e: np.ndarray) -> bool:
    """Nothing to calibrate: no counts, or a zero range (an all-zero tensor)."""
    return not c.any() or e[-1] == 0


_BLOCK = 256  # candidates per block: keeps the (block, levels) temporaries in cache


@functools.lru_cache(maxsize=8)
def _level_segments(num_bins: int, levels: int, first: int):
    """Where the levels of every entropy candidate lie, as indices into a segment table.

    For candidate ``i`` (``first .. num_bins``) level ``g`` spans bins
    ``[b_g, b_{g+1})`` with ``b_g = ceil(g * i / levels)``; every level is a segment
    (start, width) with width ``floor(i / levels)`` or one more. Returns
    ``(index, last, max_width)``: ``index[k, g] = width * (num_bins + 1) + start`` for
    candidate ``first + k``, ``last[k]`` the same for the level holding bin ``i - 1``.
    Only ~num_bins * max_width distinct segments exist, so per-segment terms (and
    their logarithms) are computed once and gathered, not once per (candidate, level).
    Read-only, cached.
    """
    cand = np.arange(first, num_bins + 1, dtype=np.int64)
    g = np.arange(levels + 1, dtype=np.int64)
    bounds = (cand[:, None] * g[None, :] + (levels - 1)) // levels
    start = bounds[:, :-1]
    width = bounds[:, 1:] - start
    index = (width * (num_bins + 1) + start).astype(np.intp)
    g_last = (cand - 1) * levels // cand  # level of bin i - 1 (the last level once i >= levels)
    last = index[np.arange(cand.size), g_last]
    index.setflags(write=False)
    last.setflags(write=False)
    return index, last, int(width.max())


def _xlogx(v: np.ndarray) -> np.ndarray:
    """v * log(v) with 0 * log(0) = 0."""
    out = np.zeros_like(v, dtype=np.float64)
    pos = v > 0
    out[pos] = v[pos] * np.log(v[pos])
    return out


# ------------------------------------------------------------------------ minmax
def minmax_amax(max_abs: float) -> float:
    """The largest |x| seen: no clipping, coarsest resolution. 0.0 for an all-zero tensor."""
    value = float(max_abs)
    if not np.isfinite(value) or value < 0:
        raise ValueError(f"max_abs must be finite and >= 0, got {max_abs!r}")
    return value


# -------------------------------------------------------------------- percentile
def percentile_amax(counts, edges, percentile: float = defaults.PERCENTILE) -> float:
    """amax below which ``percentile`` % of the values lie.

    Interpolates linearly inside the bin where the cumulative count reaches the
    target (values are taken as uniform within a bin), so the result moves smoothly
    with the data instead of jumping by whole bins. NVIDIA's pytorch-quantization and
    ONNX Runtime return that bin's *lower* edge instead; the difference is at most one
    bin width. ``percentile=100`` gives the upper edge of the last non-empty bin.
    """
    p = float(percentile)
    if not 0.0 < p <= 100.0:
        raise CalibrationAlgorithmError(f"percentile must be in (0, 100], got {percentile!r}")
    c, e = _as_histogram(counts, edges)
    if _is_zero(c, e):
        return 0.0
    cum = np.cumsum(c)
    total = cum[-1]
    if p == 100.0:
        return float(e[_last_nonzero(c) + 1])
    target = total * (p / 100.0)  # 0 < target < total
    idx = min(int(np.searchsorted(cum, target, side="left")), c.size - 1)  # first bin reaching target
    before = cum[idx] - c[idx]
    frac = min(max((target - before) / c[idx], 0.0), 1.0)  # c[idx] > 0 as before < target <= cum[idx]
    return float(e[idx] + frac * (e[idx + 1] - e[idx]))


# ----------------------------------------------------------------------- entropy
def entropy_divergences(counts, num_quantized_bins: int = NUM_QUANTIZED_BINS, start_bin: int = START_BIN,
                        zero_bin: str = "neighbour"):
    """KL(P || Q) for every candidate threshold bin ``i`` in ``start_bin .. num_bins``.

    Returns ``(candidates, divergences)``; ``divergences[k]`` belongs to threshold
    ``edges[candidates[k]]``. ``inf`` marks a candidate whose Q misses mass that P has
    (the last kept bin is empty while values lie beyond it). See :func:`entropy_amax`.
    """
    c = np.asarray(counts, dtype=np.float64).copy()
    n = c.size
    q_levels = int(num_quantized_bins)
    if q_levels < 1:
        raise CalibrationAlgorithmError(f"num_quantized_bins must be >= 1, got {num_quantized_bins!r}")
    if zero_bin == "neighbour":
        if n > 1:
            c[0] = c[1]
    elif zero_bin != "keep":
        raise CalibrationAlgorithmError(f"zero_bin must be 'neighbour' or 'keep', got {zero_bin!r}")
    first = min(max(int(start_bin), 1), n)
    cand = np.arange(first, n + 1, dtype=np.int64)
    total = c.sum()
    if total == 0:
        return cand, np.zeros(cand.size)

    cum = np.concatenate(([0.0], np.cumsum(c)))
    cum_nz = np.concatenate(([0.0], np.cumsum(c > 0))).astype(np.float64)
    cum_xlogx = np.concatenate(([0.0], np.cumsum(_xlogx(c))))

    # Bin j < i goes to level floor(j * L / i), so level g spans bins [b_g, b_{g+1}) with
    # b_g = ceil(g * i / L). With G_g the mass of level g and n_g its non-empty bins, Q is
    # q_j = G_g / n_g on those bins, and over level g
    #     sum_j c_j log(c_j / q_j) = sum_j c_j log c_j - G_g log(G_g / n_g).
    # The first part summed over all levels is just cum_xlogx[i]; the second is a
    # function of the segment [b_g, b_{g+1}) alone, tabulated once per (start, width).
    index, last_index, max_width = _level_segments(n, q_levels, first)
    starts = np.arange(n + 1)
    seg_q = np.zeros((max_width + 1, n + 1))      # G / n per segment (0 if G == 0)
    seg_term = np.zeros((max_width + 1, n + 1))   # G log(G / n) per segment
    for w in range(1, max_width + 1):
        s0 = starts[: n + 1 - w]
        mass = cum[s0 + w] - cum[s0]
        nonempty = np.maximum(cum_nz[s0 + w] - cum_nz[s0], 1.0)
        q = mass / nonempty
        seg_q[w, : s0.size] = q
        seg_term[w, : s0.size] = mass * np.log(np.where(mass > 0, q, 1.0))
    seg_term = seg_term.reshape(-1)
    level_terms = seg_term[index].sum(axis=1)
    q_last = seg_q.reshape(-1)[last_index]
    kl_unnorm = cum_xlogx[cand] - level_terms

    # P folds every count beyond the threshold into the last kept bin i - 1.
    last = c[cand - 1]
    outliers = total - cum[cand]
    kept = cum[cand]  # sum of Q before normalisation
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(np.where(q_last > 0, q_last, 1.0))
        folded = last + outliers
        correction = np.where(outliers > 0, _xlogx(folded) - _xlogx(last) - outliers * log_q, 0.0)
        kl = (kl_unnorm + correction) / total + np.log(np.where(kept > 0, kept, 1.0) / total)
    kl = np.where(((outliers > 0) & (last == 0)) | (kept == 0), np.inf, kl)
    kl = np.maximum(kl, 0.0)  # rounding can push an exact 0 a hair below it
    return cand, kl


def entropy_amax(counts, edges, num_quantized_bins: int = NUM_QUANTIZED_BINS, start_bin: int = START_BIN,
                 zero_bin: str = "neighbour") -> float:
    """TensorRT's EntropyCalibration2 threshold: the one with the smallest KL(P || Q).

    For every candidate ``i`` from ``start_bin`` to ``num_bins`` (threshold
    ``edges[i]``, the upper edge of the last kept bin):

    - P: ``counts[:i]`` with every count beyond the threshold added to bin ``i - 1``;
    - Q: ``counts[:i]`` merged into ``L = num_quantized_bins`` levels (bin ``j`` goes to
      level ``floor(j * L / i)``, so levels differ by at most one bin in width), each
      level's mass then spread evenly over its non-empty bins (empty bins stay 0);
    - P and Q are normalised to sum 1 and ``KL = sum p log(p / q)``.

    ``zero_bin="neighbour"`` (default) first replaces bin 0 by bin 1, as NVIDIA's
    pytorch-quantization does: after a ReLU half of all values are exactly 0 and that
    one spike would otherwise dominate the KL and drive the threshold down to its
    smallest candidate. ``"keep"`` uses the counts as they are (ONNX Runtime's way).

    Degenerate histograms: all zero -> 0.0; ``num_bins < start_bin`` -> the only
    candidate is the full range; a result above the last non-empty bin is lowered to
    that bin's upper edge (no candidate clips anything there; the smaller range only
    gains resolution), so data that fills fewer than ``start_bin`` bins gets the top of
    its data, like minmax. Ties go to the larger threshold.
    """
    c, e = _as_histogram(counts, edges)
    if _is_zero(c, e):
        return 0.0
    last_nonzero = _last_nonzero(c)
    cand, kl = entropy_divergences(c, num_quantized_bins=num_quantized_bins, start_bin=start_bin, zero_bin=zero_bin)
    best = cand.size - 1 - int(np.argmin(kl[::-1]))
    i = min(int(cand[best]), last_nonzero + 1)
    return float(e[i])


# --------------------------------------------------------------------------- mse
def _count_below(x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``np.searchsorted(x, t, side="left")`` (number of x < t) for sorted ``x``.

    Fast path for evenly spaced ``x`` (histogram bin centers): guess from the spacing,
    then correct the guess by comparing with ``x`` itself, so the result is exactly
    searchsorted's.
    """
    n = x.size
    if n < 2:
        return np.searchsorted(x, t, side="left")
    step = (x[-1] - x[0]) / (n - 1)
    if not step > 0 or np.max(np.abs(np.diff(x) - step)) > 1e-6 * step:
        return np.searchsorted(x, t, side="left")
    idx = np.clip(np.ceil((t - x[0]) / step), 0, n).astype(np.intp)
    for _ in range(4):  # the guess is off by at most one; settle it exactly
        below = idx > 0
        down = below & (x[np.maximum(idx - 1, 0)] >= t)
        up = (idx < n) & (x[np.minimum(idx, n - 1)] < t)
        if not (down.any() or up.any()):
            return idx
        idx = idx - down + up
    return np.searchsorted(x, t, side="left")


@functools.lru_cache(maxsize=8)
def _uniform_level_cuts(num_bins: int, first: int) -> np.ndarray:
    """Level boundaries of the mse search for evenly spaced edges, in exact integers.

    With edges ``j * w``, centers ``(j + .5) w`` and amax ``i * w``, center ``j`` lies
    below the boundary ``(k + .5) * amax / 127`` iff ``j < ((2k + 1) i - 127) / 254``.
    Row ``i - first``: ``[0, cut_0, ..., cut_126, num_bins]``. Read-only, cached.
    """
    cand = np.arange(first, num_bins + 1, dtype=np.int64)[:, None]
    k = np.arange(INT8_MAX, dtype=np.int64)[None, :]
    numerator = (2 * k + 1) * cand - INT8_MAX
    below = -((-numerator) // (2 * INT8_MAX))  # ceil
    cuts = np.empty((cand.size, INT8_MAX + 2), dtype=np.intp)
    cuts[:, 0] = 0
    cuts[:, -1] = num_bins
    cuts[:, 1:-1] = np.clip(below, 0, num_bins)
    cuts.setflags(write=False)
    return cuts


def mse_errors(counts, edges, start_bin: int = START_BIN):
    """Mean squared int8 quantize-dequantize error for every candidate threshold.

    Returns ``(candidates, errors)``: ``errors[k]`` is the error with amax
    ``edges[candidates[k]]``. See :func:`mse_amax`.
    """
    c, e = _as_histogram(counts, edges)
    n = c.size
    total = c.sum()
    first = min(max(int(start_bin), 1), n)
    cand = np.arange(first, n + 1, dtype=np.int64)
    if total == 0:
        return cand, np.zeros(cand.size)
    x = 0.5 * (e[:-1] + e[1:])
    cum0 = np.concatenate(([0.0], np.cumsum(c)))
    cum1 = np.concatenate(([0.0], np.cumsum(c * x)))
    cum2 = np.concatenate(([0.0], np.cumsum(c * x * x)))
    # x goes to level k = min(round(x / s), 127), s = amax / 127: level k holds
    # x in [(k - .5) s, (k + .5) s), level 127 everything from 126.5 s up (clipped).
    # Over level k, sum c (x - k s)^2 = S2 - 2 k s S1 + (k s)^2 S0 from cumulative sums.
    half_steps = np.arange(INT8_MAX, dtype=np.float64) + 0.5
    levels = np.arange(INT8_MAX + 1, dtype=np.float64)
    uniform = e[0] == 0 and np.max(np.abs(e - np.linspace(0.0, e[-1], n + 1))) <= 1e-9 * e[-1]
    err = np.empty(cand.size)
    for lo in range(0, cand.size, _BLOCK):
        scale = e[cand[lo:lo + _BLOCK]] / INT8_MAX
        rows = scale.size
        if uniform:
            cuts = _uniform_level_cuts(n, first)[lo:lo + _BLOCK]
        else:
            cuts = np.empty((rows, INT8_MAX + 2), dtype=np.intp)
            cuts[:, 0] = 0
            cuts[:, -1] = n
            cuts[:, 1:-1] = _count_below(x, half_steps[None, :] * scale[:, None])
        at = cum0[cuts]
        s0 = at[:, 1:] - at[:, :-1]
        at = cum1[cuts]
        s1 = at[:, 1:] - at[:, :-1]
        at = cum2[cuts]
        s2 = at[:, 1:] - at[:, :-1]
        v = levels[None, :] * scale[:, None]  # dequantised value of each level
        s1 *= v
        s1 *= -2.0
        s0 *= v
        s0 *= v
        s2 += s1
        s2 += s0
        np.maximum(s2, 0.0, out=s2)
        err[lo:lo + rows] = s2.sum(axis=1)
    err /= total
    return cand, err


def mse_amax(counts, edges, start_bin: int = START_BIN) -> float:
    """amax minimising the mean squared error of symmetric int8 quantize-dequantize.

    Every value of bin ``j`` is taken at the bin's center ``x_j``; with amax ``a`` and
    scale ``s = a / 127`` it dequantises to ``s * min(round(x_j / s), 127)``. The
    candidates are the bin edges ``edges[i]``, ``i = start_bin .. num_bins`` (the last is
    the full range, i.e. no clipping; the first, with the default 128 of 2048 bins, is
    1/16 of it). NVIDIA's pytorch-quantization takes bin centers as candidates and
    stops one bin short of the full range. The errors come from cumulative sums
    (exact to ~1e-9 relative); all-zero histogram -> 0.0; ties go to the larger
    threshold.
    """
    c, e = _as_histogram(counts, edges)
    if _is_zero(c, e):
        return 0.0
    cand, err = mse_errors(c, e, start_bin=start_bin)
    best = cand.size - 1 - int(np.argmin(err[::-1]))
    return float(e[cand[best]])


# ---------------------------------------------------------------------- dispatch
_ALGORITHMS = {
    "entropy": entropy_amax,
    "percentile": percentile_amax,
    "mse": mse_amax,
}


def _options_of(func) -> list:
    params = list(inspect.signature(func).parameters.values())
    return [p.name for p in params if p.name not in ("counts", "edges", "max_abs")]


def check_algorithm(algorithm: str) -> None:
    """Raise :class:`CalibrationAlgorithmError` unless ``algorithm`` is one of ``defaults.SINGLE_ALGORITHMS``.

    (``auto`` chooses among these per model; it is not a histogram-to-amax function.)
    """
    if algorithm not in defaults.SINGLE_ALGORITHMS:
        raise CalibrationAlgorithmError(
            f"unknown calibration algorithm {algorithm!r}; choose one of: {', '.join(defaults.SINGLE_ALGORITHMS)}")


def compute_amax(hist, algorithm: str = "entropy", **options) -> float:
    """amax of one tensor's :class:`AbsHistogram` with ``algorithm`` (one of ``defaults.SINGLE_ALGORITHMS``).

    ``options`` go to the algorithm's function (``percentile=``, ``start_bin=``, ...).
    The result is capped at the largest |x| seen (a threshold above it clips nothing
    and only wastes resolution). An all-zero or empty tensor gives 0.0, which the cache
    layer clamps to ``MIN_AMAX``; every other result is finite and > 0.
    """
    check_algorithm(algorithm)
    func = minmax_amax if algorithm == "minmax" else _ALGORITHMS[algorithm]
    accepted = _options_of(func)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise CalibrationAlgorithmError(
            f"calibration algorithm {algorithm!r} takes no option {', '.join(map(repr, unknown))}; "
            f"it takes: {', '.join(accepted) or 'no options'}")
    max_abs = float(hist.max_abs)
    if not max_abs > 0.0:
        return 0.0
    if algorithm == "minmax":
        amax = minmax_amax(max_abs)
    else:
        amax = func(hist.counts, hist.edges, **options)
    amax = min(float(amax), max_abs)
    if not (np.isfinite(amax) and amax > 0.0):  # cannot happen for a non-zero histogram; be loud if it does
        raise RuntimeError(f"{algorithm} calibration produced amax {amax!r} for a histogram with max |x| {max_abs}")
    return amax
