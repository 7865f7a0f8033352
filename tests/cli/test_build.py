"""``trtq build --equalize``: the calibration a build runs takes calibrate's option, so a pipeline can turn auto's
equalization trial off or force a rewrite on the command it already runs. TensorRT is faked where the build would
start: everything up to it (the checks, the calibration on the CPU, the files written) is real."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "graph"))
from test_equalize import _x, separable_chain  # noqa: E402  (the depthwise chain equalization lifts)

from trtq.cli import main  # noqa: E402


class _Built(Exception):
    """Raised where TensorRT would build: carries the options and the prepared build it was handed."""

    def __init__(self, options, prepared):
        super().__init__("built")
        self.options, self.prepared = options, prepared


@pytest.fixture
def chain(tmp_path):
    model = tmp_path / "chain.onnx"
    onnx.save(separable_chain(), str(model))
    data = tmp_path / "x.npy"
    np.save(data, _x(400, seed=2))
    return model, data


@pytest.fixture
def no_tensorrt(monkeypatch):
    """prepare_build without TensorRT: the explicit path's plan (trtq calibrates on the CPU, then builds the Q/DQ
    copy); build_prepared stops with what it was handed. ``calibrator=True`` is the implicit path instead."""
    import trtq.backend.build as backend_build
    from trtq.graph.model import file_sha256, load_onnx

    def prepare(options, calibrator=False):
        return SimpleNamespace(cache=None, keep_float=[], model=load_onnx(options.model_path),
                               sha=file_sha256(options.model_path), plan=SimpleNamespace(calibrator=calibrator),
                               cpu_calibration_needed=False, qdq_calibration_needed=not calibrator)

    def build(options, prepared, progress, **kwargs):
        raise _Built(options, prepared)

    monkeypatch.setattr(backend_build, "prepare_build", prepare)
    monkeypatch.setattr(backend_build, "build_prepared", build)
    return monkeypatch, backend_build, prepare


def _build(model, data, *extra):
    return ["-q", "build", str(model), "--int8", "--calib", str(data), "--batch-size", "32", *extra]


def test_equalize_off_turns_the_trial_off_where_the_build_writes_a_cache(chain, no_tensorrt):
    model, data = chain
    cache = model.with_name("chain.calib.cache")
    with pytest.raises(_Built) as built:
        main(_build(model, data, "--cache", str(cache), "--equalize", "off"))
    assert built.value.options.model_path == model  # the model as it is
    assert not model.with_name("chain.equalized.onnx").exists()
    sidecar = json.loads(Path(f"{cache}.json").read_text())
    assert "equalize_trial" not in sidecar and "equalize" not in sidecar


def test_without_equalize_the_trial_runs_where_the_build_writes_a_cache(chain, no_tensorrt):
    """What --equalize off changes: by default auto keeps the rewrite of this chain and the engine is built from it."""
    model, data = chain
    with pytest.raises(_Built) as built:
        main(_build(model, data, "--cache", str(model.with_name("chain.calib.cache"))))
    assert built.value.options.model_path == model.with_name("chain.equalized.onnx")


def test_equalize_steps_force_the_rewrite_and_the_engine_is_built_from_it(chain, no_tensorrt):
    model, data = chain
    cache = model.with_name("chain.calib.cache")
    with pytest.raises(_Built) as built:
        main(_build(model, data, "--cache", str(cache), "--equalize", "bias"))
    rewrite = model.with_name("chain.equalized.onnx")
    assert built.value.options.model_path == rewrite and rewrite.exists()
    sidecar = json.loads(Path(f"{cache}.json").read_text())
    assert sidecar["equalize"]["steps"] == ["bias"] and "equalize_trial" not in sidecar


@pytest.mark.parametrize("extra, says", [
    (["--equalize", "cle"], "--cache PATH"),                     # nowhere for the rewrite to travel with
    (["--equalize", "auto"], "--cache PATH"),
    (["--equalize", "sharpen", "--cache", "c.cache"], "sharpen"),  # an unknown step
])
def test_equalize_a_build_cannot_honour_is_one_line_before_any_work(chain, no_tensorrt, capsys, extra, says):
    monkeypatch, backend_build, _ = no_tensorrt

    def never(options):
        raise AssertionError("the build was prepared")

    monkeypatch.setattr(backend_build, "prepare_build", never)
    model, data = chain
    assert main(_build(model, data, *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("trtq build: error: --equalize") and says in err[0]


def test_equalize_without_calibration_data_is_refused(chain, no_tensorrt, capsys):
    model, _ = chain
    assert main(["-q", "build", str(model), "--int8", "--cache", str(model.with_name("c.cache")),
                 "--equalize", "bias"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("trtq build: error: --equalize bias rewrites the model") and "--calib DATA" in err


def test_equalize_with_tensorrts_own_calibrator_is_refused(chain, no_tensorrt, capsys):
    """--algo entropy on the implicit path is TensorRT's calibrator on the GPU: no CPU calibration to rewrite for."""
    monkeypatch, backend_build, prepare = no_tensorrt
    monkeypatch.setattr(backend_build, "prepare_build", lambda options: prepare(options, calibrator=True))
    model, data = chain
    assert main(_build(model, data, "--cache", str(model.with_name("c.cache")), "--algo", "entropy",
                       "--equalize", "all")) == 2
    err = capsys.readouterr().err.strip()
    assert "TensorRT's own calibrator" in err and "\n" not in err
