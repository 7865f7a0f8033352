"""trtq.ort: session creation, errors in one line, feeds and batch runs."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

import _toys
from trtq.errors import DataError, ModelError
from trtq.ort import (as_feed, create_session, input_names, ort_reason, output_names, run, run_batches,
                      session_options)


@pytest.fixture(scope="module")
def model():
    return _toys.classifier()


def test_session_from_proto_path_and_bytes(model, tmp_path):
    path = _toys.save(model, tmp_path / "m.onnx")
    x = _toys.images(2)
    results = [run(create_session(source), x)["y"] for source in (model, path, model.SerializeToString())]
    for other in results[1:]:
        np.testing.assert_array_equal(results[0], other)
    session = create_session(model)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert input_names(session) == ["x"] and output_names(session) == ["y"]


def test_options():
    import onnxruntime as ort

    options = session_options()
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options = session_options(threads=2, optimization="basic")
    assert options.intra_op_num_threads == 2
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    with pytest.raises(ValueError, match="optimization must be one of"):
        session_options(optimization="max")


def test_missing_and_refused_models(model, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        create_session(tmp_path / "nope.onnx")
    with pytest.raises(ModelError, match="is a folder"):
        create_session(tmp_path)
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    broken.graph.node[0].op_type = "NoSuchOp"
    with pytest.raises(ModelError) as info:
        create_session(broken)
    message = str(info.value)
    assert "ONNX Runtime cannot load" in message and "NoSuchOp" in message
    assert "\n" not in message and "[ONNXRuntimeError]" not in message
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model at all")
    with pytest.raises(ModelError, match="ONNX Runtime cannot load .*garbage.onnx"):
        create_session(garbage)


def test_ort_reason_strips_prefix_and_newlines():
    exc = RuntimeError("[ONNXRuntimeError] : 10 : INVALID_GRAPH : Load model failed:\nThis is\n  invalid")
    assert ort_reason(exc) == "Load model failed: This is invalid"


def test_feed_forms_and_casts(model):
    session = create_session(model)
    x64 = _toys.images(3).astype(np.float64)
    for batch in (x64, [x64], {"x": x64, "unused": np.zeros(1)}):
        feed = as_feed(session, batch)
        assert list(feed) == ["x"] and feed["x"].dtype == np.float32
    with pytest.raises(DataError, match="no array for model input"):
        as_feed(session, {"image": x64})
    with pytest.raises(DataError, match="needs float32 data"):
        as_feed(session, x64.astype(np.int32))
    with pytest.raises(DataError, match="2 arrays"):
        as_feed(session, [x64, x64])


def test_refused_batch_is_a_data_error(model):
    session = create_session(model)
    with pytest.raises(DataError, match="ONNX Runtime refused the batch"):
        run(session, np.zeros((1, 3, 8), np.float32))


def test_run_batches_matches_one_shot(model):
    session = create_session(model)
    x = _toys.images(10)
    whole = run(session, x)["y"]
    parts = [out["y"] for out in run_batches(session, [x[:4], x[4:8], x[8:]])]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6, atol=1e-6)
    assert len(list(run_batches(session, x))) == 1  # one array is one batch
    only = next(run_batches(session, [{"x": x}], output_names=["y"]))
    assert list(only) == ["y"]
