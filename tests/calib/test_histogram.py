"""AbsHistogram: counts are never lost, growth is exact, edge cases are defined.

What is exactly provable (see trtq/calib/histogram.py): with the binning rule
``bin = floor(fl(|x| * scale))`` (float32 arithmetic for float16/32 input), doubling
the range halves ``scale`` exactly and merges bin pairs, so the streamed histogram is
*identical* to applying the rule once at the final range to all values, however the
values were split into batches (and into internal chunks). Against ``np.histogram``
over the same range (different arithmetic: edges from linspace) the only allowed
differences are values that lie within float rounding of a bin edge.
"""

from __future__ import annotations

import numpy as np
import pytest

from trtq.calib import histogram as histogram_module
from trtq.calib.histogram import AbsHistogram


def one_shot(values: np.ndarray, hist: AbsHistogram, first_peak: float) -> np.ndarray:
    """The binning rule applied once at ``hist``'s final range (the slow, obvious way)."""
    n = hist.num_bins
    doublings = int(round(np.log2(hist.range / first_peak)))
    assert first_peak * 2.0 ** doublings == hist.range
    scale = np.float32((n / first_peak) * 0.5 ** doublings)
    y = np.abs(values.astype(np.float32)) * scale
    idx = np.floor(y).astype(np.int64)
    assert idx.max() <= n  # only values at the very top edge reach n
    counts = np.bincount(idx, minlength=n + 1)
    counts[n - 1] += counts[n]
    return counts[:n]


def growing_batches(rng, num_batches=40):
    batches = []
    for k in range(num_batches):
        size = int(rng.integers(1, 5000))
        kind = k % 4
        if kind == 0:
            b = rng.standard_normal(size)
        elif kind == 1:
            b = rng.laplace(size=size)
        elif kind == 2:
            b = rng.uniform(-1, 1, size)
        else:
            b = np.zeros(size)
        batches.append((b * 1.35 ** k).astype(np.float32))
    return batches


def test_growth_keeps_every_count_and_equals_one_shot():
    rng = np.random.default_rng(0)
    batches = growing_batches(rng)
    hist = AbsHistogram(2048)
    seen = 0
    for b in batches:
        hist.update(b)
        seen += b.size
        assert hist.counts.sum() == seen == hist.num_values
    everything = np.concatenate(batches)
    assert hist.range > 100 * float(np.abs(batches[0]).max())  # it really grew, many times
    assert hist.max_abs == float(np.abs(everything).max())
    np.testing.assert_array_equal(hist.counts, one_shot(everything, hist, float(np.abs(batches[0]).max())))
    edges = hist.edges
    assert edges.shape == (2049,) and edges.dtype == np.float64 and edges[0] == 0.0 and edges[-1] == hist.range
    assert hist.counts.dtype == np.int64 and hist.counts.shape == (2048,)


def test_batch_split_does_not_matter(monkeypatch):
    """Same first batch, different splits of the rest (and tiny internal chunks): identical counts."""
    rng = np.random.default_rng(1)
    first = rng.standard_normal(3000).astype(np.float32)
    rest = np.concatenate([rng.standard_normal(20000) * s for s in (1, 3, 0.5, 9, 40)]).astype(np.float32)
    whole = AbsHistogram(512)
    whole.update(first)
    whole.update(rest)
    monkeypatch.setattr(histogram_module, "CHUNK", 777)  # growth now also happens mid-batch
    monkeypatch.setattr(histogram_module, "_scratch", type(histogram_module._scratch)())
    pieces = AbsHistogram(512)
    pieces.update(first)
    for part in np.array_split(rest, 13):
        pieces.update(part)
    np.testing.assert_array_equal(whole.counts, pieces.counts)
    assert whole.range == pieces.range and whole.max_abs == pieces.max_abs
    np.testing.assert_array_equal(whole.counts, one_shot(np.concatenate([first, rest]), whole, float(np.abs(first).max())))


def test_matches_np_histogram_up_to_edge_rounding():
    rng = np.random.default_rng(2)
    batches = growing_batches(rng, 25)
    hist = AbsHistogram(1024)
    for b in batches:
        hist.update(b)
    values = np.abs(np.concatenate(batches)).astype(np.float64)
    reference, _ = np.histogram(values, bins=1024, range=(0.0, hist.range))
    # Values binned differently must sit within float32 rounding of an edge.
    width = hist.range / 1024
    ours = np.minimum(np.floor(one_shot_positions(values, hist, float(np.abs(batches[0]).max()))), 1023)
    theirs = np.minimum(np.floor(values / width), 1023)
    moved = ours != theirs
    distance = np.abs(values[moved] / width - np.round(values[moved] / width))
    assert np.all(distance < 1e-3), distance.max()
    assert np.abs(hist.counts - reference).sum() <= 2 * moved.sum()
    assert moved.mean() < 1e-3


def one_shot_positions(values, hist, first_peak):
    doublings = int(round(np.log2(hist.range / first_peak)))
    scale = np.float32((hist.num_bins / first_peak) * 0.5 ** doublings)
    return (values.astype(np.float32) * scale).astype(np.float64)


def test_value_at_top_edge_moves_like_one_shot():
    hist = AbsHistogram(8)
    hist.update(np.array([1.0], dtype=np.float32))  # range 1.0, value at the top edge
    np.testing.assert_array_equal(hist.counts, [0, 0, 0, 0, 0, 0, 0, 1])
    hist.update(np.array([-1.5], dtype=np.float32))  # range doubles to 2.0
    assert hist.range == 2.0
    # one-shot at range 2: 1.0 -> floor(4.0) = bin 4; 1.5 -> floor(6.0) = bin 6
    np.testing.assert_array_equal(hist.counts, [0, 0, 0, 0, 1, 0, 1, 0])
    assert hist.max_abs == 1.5


def test_first_range_is_first_nonzero_batch_max_and_zeros_land_in_bin_zero():
    hist = AbsHistogram(16)
    hist.update(np.zeros((3, 4), dtype=np.float32))
    assert hist.num_values == 12 and hist.max_abs == 0.0 and hist.range == 0.0
    assert hist.counts[0] == 12 and hist.counts.sum() == 12
    assert np.all(hist.edges == 0.0) and hist.edges.shape == (17,)
    hist.update(np.array([0.0, -2.0, 0.5], dtype=np.float32))
    assert hist.range == 2.0 and hist.max_abs == 2.0
    assert hist.counts[0] == 13 and hist.counts[4] == 1 and hist.counts[15] == 1
    hist.update(np.zeros(5, dtype=np.float16))
    assert hist.counts[0] == 18 and hist.counts.sum() == hist.num_values == 20


def test_empty_arrays_are_a_no_op():
    hist = AbsHistogram(16)
    hist.update(np.zeros((0, 3), dtype=np.float32))
    assert hist.num_values == 0 and hist.counts.sum() == 0 and hist.range == 0.0
    hist.update(np.ones(4, dtype=np.float32))
    before = hist.counts
    hist.update(np.empty(0, dtype=np.float64))
    np.testing.assert_array_equal(hist.counts, before)
    assert hist.num_values == 4


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.bool_])
def test_dtypes_and_shapes(dtype):
    rng = np.random.default_rng(3)
    values = (rng.standard_normal((2, 3, 5, 7)) * 4).astype(dtype)
    hist = AbsHistogram(64)
    hist.update(values)
    hist.update(values[:, :, ::2, 1:].transpose(3, 0, 2, 1))  # non-contiguous view
    expected = values.size + values[:, :, ::2, 1:].size
    assert hist.counts.sum() == hist.num_values == expected
    assert hist.max_abs == float(np.abs(values.astype(np.float64)).max())


def test_float64_values_bin_in_float64():
    values = np.array([0.1, 0.25, 1.0, 0.9999999999999], dtype=np.float64)
    hist = AbsHistogram(4)
    hist.update(values)
    np.testing.assert_array_equal(hist.counts, [1, 1, 0, 2])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nonfinite_values_raise_and_leave_the_histogram_unchanged(bad, monkeypatch):
    monkeypatch.setattr(histogram_module, "CHUNK", 100)
    monkeypatch.setattr(histogram_module, "_scratch", type(histogram_module._scratch)())
    first = AbsHistogram(32)
    with pytest.raises(ValueError, match="NaN or Inf"):
        first.update(np.array([1.0, bad, 2.0], dtype=np.float32))
    assert first.num_values == 0 and first.range == 0.0 and first.counts.sum() == 0

    hist = AbsHistogram(32)
    hist.update(np.linspace(-1, 1, 50, dtype=np.float32))
    state = (hist.counts, hist.range, hist.max_abs, hist.num_values)
    batch = np.concatenate([np.full(150, 5.0), [bad], np.ones(10)]).astype(np.float32)  # grows, then fails
    with pytest.raises(ValueError):
        hist.update(batch)
    np.testing.assert_array_equal(hist.counts, state[0])
    assert (hist.range, hist.max_abs, hist.num_values) == state[1:]
    hist.update(np.full(3, 0.5, dtype=np.float32))  # and it still works
    assert hist.counts.sum() == 53


def test_huge_and_tiny_ranges():
    hist = AbsHistogram(2048)
    hist.update(np.array([1e-20, 3e-20], dtype=np.float32))
    hist.update(np.array([1e20], dtype=np.float32))
    assert hist.counts.sum() == 3 and hist.max_abs == pytest.approx(1e20, rel=1e-6)
    assert hist.range >= hist.max_abs
    assert hist.counts[0] == 2 and hist.counts[-1] + hist.counts[1024:].sum() >= 1

    tiny = AbsHistogram(2048)  # float32 subnormals: binned in float64, no overflow of the scale
    values = np.array([1e-40, -3e-41, 0.0], dtype=np.float32)
    tiny.update(values)
    assert tiny.counts.sum() == 3 and tiny.max_abs == float(np.float32(1e-40))


def test_merge_is_exact_for_power_of_two_ranges():
    rng = np.random.default_rng(4)
    first = rng.standard_normal(1000).astype(np.float32)
    a_rest = (rng.standard_normal(5000) * 10).astype(np.float32)
    b_rest = (rng.standard_normal(5000) * 0.7).astype(np.float32)
    a, b, both = AbsHistogram(256), AbsHistogram(256), AbsHistogram(256)
    for h, rest in ((a, a_rest), (b, b_rest)):
        h.update(first)
        h.update(rest)
    assert a.range != b.range
    both.update(first)
    both.update(a_rest)
    both.update(first)
    both.update(b_rest)
    merged = AbsHistogram(256)
    merged.merge(b)  # into an empty one
    merged.merge(a)  # a's range is larger: merged grows
    np.testing.assert_array_equal(merged.counts, both.counts)
    assert merged.num_values == both.num_values and merged.max_abs == both.max_abs
    b.merge(a)
    np.testing.assert_array_equal(b.counts, both.counts)

    zeros = AbsHistogram(256)
    zeros.update(np.zeros(7, dtype=np.float32))
    b.merge(zeros)
    assert b.counts.sum() == both.num_values + 7

    other = AbsHistogram(256)
    other.update(np.array([3.0], dtype=np.float32))  # 3 / first-peak is not a power of two
    with pytest.raises(ValueError, match="power of two"):
        both.merge(other)
    with pytest.raises(ValueError):
        both.merge(AbsHistogram(128))


@pytest.mark.parametrize("bins", [0, 1, 7, -2])
def test_bad_num_bins(bins):
    with pytest.raises(ValueError):
        AbsHistogram(bins)


def test_memory_does_not_grow():
    hist = AbsHistogram(128)
    for k in range(50):
        hist.update(np.full(1000, float(k + 1), dtype=np.float32))
    assert hist._counts.nbytes == 129 * 8
    assert hist.num_values == 50_000


# -- the compiled kernel against the numpy path --------------------------------------------------

needs_kernel = pytest.mark.skipif(not histogram_module.kernel_available(),
                                  reason="the optional C kernel is not built (no compiler at install)")


def _kernel_datasets():
    rng = np.random.default_rng(11)
    spike = np.zeros(300_000, dtype=np.float32)
    spike[123_457] = -7.5
    return {
        "heavy-tailed": [(rng.standard_t(1.3, size=200_000) * 0.1).astype(np.float32) for _ in range(4)],
        "gaussian": [rng.standard_normal(150_000).astype(np.float32) for _ in range(4)],
        "all-zero": [np.zeros(70_000, dtype=np.float32), np.zeros(5, dtype=np.float32)],
        "single-spike": [spike, np.zeros(1000, dtype=np.float32)],
        "range-doubling": [(rng.laplace(size=90_000) * 1.9 ** k).astype(np.float32) for k in range(12)],
        "float16": [rng.standard_normal((64, 1000)).astype(np.float16) * 3 for _ in range(3)],
        "float64": [rng.standard_normal(100_000) * 10.0 ** k for k in range(3)],
        "non-contiguous": [rng.standard_normal((300, 400)).astype(np.float32).T[::2] for _ in range(3)],
        "tiny-range": [(rng.standard_normal(80_000) * 1e-33).astype(np.float32) for _ in range(2)],
    }


@needs_kernel
@pytest.mark.parametrize("kind", list(_kernel_datasets()))
def test_kernel_histograms_are_identical_to_numpy(kind):
    """The fused kernel bins value for value as numpy does: same counts, range, max, amax."""
    from trtq.calib.algorithms import compute_amax

    batches = _kernel_datasets()[kind]
    results = []
    for enabled in (True, False):
        previous = histogram_module.use_kernel(enabled)
        try:
            hist = AbsHistogram(2048)
            for batch in batches:
                hist.update(batch)
        finally:
            histogram_module.use_kernel(previous)
        results.append(hist)
    fast, slow = results
    np.testing.assert_array_equal(fast._counts, slow._counts)
    assert (fast.range, fast.max_abs, fast.num_values) == (slow.range, slow.max_abs, slow.num_values)
    for algorithm in ("entropy", "minmax", "percentile", "mse"):
        assert compute_amax(fast, algorithm) == compute_amax(slow, algorithm)


@needs_kernel
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_kernel_rejects_nonfinite_and_leaves_the_histogram_unchanged(bad):
    hist = AbsHistogram(256)
    hist.update(np.linspace(-1, 1, 1000, dtype=np.float32))
    before = (hist._counts.copy(), hist.range, hist.max_abs, hist.num_values)
    batch = np.full(200_000, 5.0, dtype=np.float32)  # would grow the range first
    batch[150_000] = bad
    with pytest.raises(ValueError):
        hist.update(batch)
    np.testing.assert_array_equal(hist._counts, before[0])
    assert (hist.range, hist.max_abs, hist.num_values) == before[1:]


@needs_kernel
def test_kernel_releases_the_gil():
    """Another Python thread runs *during* one update: binning overlaps with ONNX Runtime's next run."""
    import threading
    import time

    values = np.random.default_rng(0).standard_normal(4_000_000).astype(np.float32)
    hist = AbsHistogram(2048)
    hist.update(values[:10])
    ticks = []
    stop = threading.Event()

    def ticker():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0)

    thread = threading.Thread(target=ticker)
    thread.start()
    windows = []
    try:
        for _ in range(5):
            start = time.perf_counter()
            hist.update(values)
            windows.append((start, time.perf_counter()))
    finally:
        stop.set()
        thread.join()
    # the other thread runs Python (it needs the GIL) *during* an update call, not only between calls
    inside = [t for t in ticks if any(start < t < end for start, end in windows)]
    assert inside
