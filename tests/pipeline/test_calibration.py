"""The calibrate flow's shared pieces: what is computed once for every step that reads it."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "graph"))
from test_equalize import _x, separable_chain  # noqa: E402

from trtq.pipeline import calibration  # noqa: E402


def test_the_reserve_reference_is_run_once_for_auto_the_trial_and_its_rankings(tmp_path, monkeypatch):
    """auto's reserve rescoring, the equalization trial's judging and each rewrite's ranking read the same FP32
    reference of the reserve samples: it is run once."""
    model = tmp_path / "chain.onnx"
    onnx.save(separable_chain(), str(model))
    data = tmp_path / "x.npy"
    np.save(data, _x(400, seed=2))
    runs = []
    real = calibration.reference_replay
    monkeypatch.setattr(calibration, "reference_replay", lambda model, feeds, **k: runs.append(len(feeds)) or real(
        model, feeds, **k))
    from trtq.pipeline import choose

    real_rank = choose.rank

    def all_tied(candidates):  # every ranking rescoring its candidates on the reserve
        best, _ = real_rank(candidates)
        return best, [c for c in candidates if c.metrics is not best.metrics]

    monkeypatch.setattr(choose, "rank", all_tied)
    result = calibration.calibrate(model, str(data))
    assert result.auto.reserve  # the ranking was rescored on the reserve
    assert result.equalize_trial.samples == 64  # judged on the held-back samples and the reserve
    assert len(runs) == 2  # the held-back samples, then the reserve: once


def test_candidate_tables_hold_what_their_models_read_and_the_cache_every_tensor(tmp_path, monkeypatch):
    """auto computes each algorithm's amax only for the tensors the TensorRT-form Q/DQ model reads; the table
    written holds every observed tensor, the ones no Q/DQ model reads by the chosen algorithm."""
    import trtq.calib
    from trtq.calib.collect import qdq_tensors

    model = tmp_path / "chain.onnx"
    onnx.save(separable_chain(), str(model))
    data = tmp_path / "x.npy"
    np.save(data, _x(300, seed=2))
    asked = []
    real = trtq.calib.amax_from_histograms
    monkeypatch.setattr(trtq.calib, "amax_from_histograms",
                        lambda histograms, algorithm="entropy", **k: asked.append((algorithm, set(histograms))) or real(
                            histograms, algorithm, **k))
    result = calibration.calibrate(model, str(data), equalize="off")
    read = set(qdq_tensors(onnx.load(str(model)), forms=("trt",)))
    assert read and set(result.histograms) - read  # the chain has tensors no Q/DQ model reads
    ranked = [names for algorithm, names in asked[:4]]
    assert [a for a, _ in asked[:4]] == ["entropy", "minmax", "percentile", "mse"] and all(n == read for n in ranked)
    assert list(result.amax) == list(result.histograms)  # every tensor, in the histograms' order
    chosen = real(result.histograms, result.auto.chosen)
    assert all(result.amax[name] == chosen[name] for name in result.histograms if name not in read)
