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
