"""Calibration convergence: the half-way snapshot is exact, the drift and the recommendation follow from it."""

from __future__ import annotations

from pathlib import Path

import _toys  # noqa: E402  (tests/_toys.py)
import numpy as np
import pytest

from trtq import defaults
from trtq.calib import amax_from_histograms
from trtq.calib.collect import CollectionReport, collect_histograms
from trtq.calib.convergence import amax_convergence, relative_drift
from trtq.calib.histogram import AbsHistogram


def _hist(values) -> AbsHistogram:
    hist = AbsHistogram()
    hist.update(np.asarray(values, dtype=np.float32))
    return hist


def test_relative_drift():
    assert relative_drift(1.0, 1.0) == 0.0
    assert relative_drift(0.5, 1.0) == pytest.approx(0.5)
    assert relative_drift(0.0, 0.0) == 0.0 and relative_drift(1.0, 0.0) == 1.0


def test_settled_tensors_give_no_recommendation_and_moved_ones_do():
    rng = np.random.default_rng(0)
    same = rng.standard_normal(20000)
    half = {f"t{i}": _hist(same) for i in range(10)}
    full = {f"t{i}": _hist(same) for i in range(10)}
    amax = amax_from_histograms(full, "minmax")
    settled = amax_convergence(half, full, amax, "minmax", half_samples=50, samples=100)
    assert settled.quantile_drift == 0.0 and settled.recommendation is None
    grown = {name: _hist(np.concatenate([same, same * 3])) for name in full}  # the second half reaches 3x further
    grown_amax = amax_from_histograms(grown, "minmax")
    moved = amax_convergence(half, grown, grown_amax, "minmax", half_samples=50, samples=100)
    assert moved.quantile_drift == pytest.approx(2 / 3, rel=1e-6)
    assert moved.to_dict()["worst"][0]["drift"] == pytest.approx(2 / 3, rel=1e-5)
    assert moved.recommendation is None  # minmax's running max always grows: its drift is no verdict
    grown_mse = amax_from_histograms(grown, "mse")
    moved_mse = amax_convergence(half, grown, grown_mse, "mse", half_samples=50, samples=100)
    assert moved_mse.quantile_drift > defaults.CONVERGENCE_MAX_DRIFT and "--samples" in moved_mse.recommendation


def test_per_tensor_algorithms_are_applied():
    rng = np.random.default_rng(1)
    values = rng.standard_normal(50000)
    half, full = {"a": _hist(values[:25000])}, {"a": _hist(values)}
    from trtq.calib.algorithms import compute_amax

    amax = {"a": float(compute_amax(full["a"], "percentile", percentile=defaults.PERCENTILE))}
    result = amax_convergence(half, full, amax, "minmax", half_samples=1, samples=2, per_tensor={"a": "percentile"})
    expected = relative_drift(float(compute_amax(half["a"], "percentile", percentile=defaults.PERCENTILE)), amax["a"])
    assert result.drift["a"] == pytest.approx(expected)


def test_half_snapshot_is_exactly_the_first_half():
    model = _toys.classifier()
    x = _toys.images(64, seed=3)
    batches = [{"x": x[i:i + 8]} for i in range(0, 64, 8)]
    report = CollectionReport()
    full = collect_histograms(model, iter(batches), total_samples=64, report=report, half_snapshot=True,
                              max_memory=None)
    first_half = collect_histograms(model, iter(batches[:4]), total_samples=32, max_memory=None)
    assert (report.half_samples, report.samples) == (32, 64)
    assert set(report.half) == set(full) == set(first_half)
    for name, hist in first_half.items():
        snapshot = report.half[name]
        assert snapshot.range == hist.range and snapshot.num_values == hist.num_values
        np.testing.assert_array_equal(snapshot.counts, hist.counts)


def test_unknown_total_snapshots_at_a_power_of_two():
    model = _toys.classifier()
    x = _toys.images(48, seed=4)
    report = CollectionReport()
    collect_histograms(model, ({"x": x[i:i + 4]} for i in range(0, 48, 4)), report=report, half_snapshot=True,
                       max_memory=None)
    assert report.samples == 48 and report.half_samples == 16  # the last power of two at or below half


def test_calibrate_records_convergence_in_the_sidecar(tmp_path):
    from trtq.assets import DEMO_ONNX
    from trtq.data.spec import DataSpec
    from trtq.pipeline.calibration import calibrate

    spec = DataSpec(path=str(Path(__file__).resolve().parents[2] / "calib_data" / "digits"), samples=96)
    result = calibrate(DEMO_ONNX, spec, algorithm="minmax", cache_path=tmp_path / "d.cache")
    record = result.sidecar["convergence"]
    assert record["samples"] == result.num_samples and 0 < record["half_samples"] < record["samples"]
    assert set(record["drift"]) <= set(result.amax) and record["algorithm"] == "minmax"
    assert record["max_drift"] == max(record["drift"].values())
    assert result.convergence.recommendation == record["recommendation"]
