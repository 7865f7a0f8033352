"""Replaying held-back samples: the latency of several models timed in turns."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from trtq.runtime.replay import Replay


def _matmul(width: int) -> onnx.ModelProto:
    """x[N, 64] -> MatMul by [64, width] -> MatMul by [width, 64]: work grows with ``width``."""
    rng = np.random.default_rng(0)
    a = numpy_helper.from_array(rng.standard_normal((64, width)).astype(np.float32), "a")
    b = numpy_helper.from_array(rng.standard_normal((width, 64)).astype(np.float32), "b")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "a"], ["h"]), helper.make_node("MatMul", ["h", "b"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 64])], [a, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_latencies_are_timed_in_turns_one_median_per_model(tmp_path, monkeypatch):
    small, large = _matmul(8), _matmul(8192)
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(1).standard_normal((4, 64)).astype(np.float32))
    replay = Replay.collect(small, str(data), samples=4)
    order = []
    import trtq.ort as ort

    real = ort.time_session

    def recording(session, feed, iterations, warmup, max_seconds=None):
        order.append((session, iterations))
        return real(session, feed, iterations, warmup, max_seconds)

    monkeypatch.setattr(ort, "time_session", recording)
    fast, slow = replay.latencies_ms([small, large], iterations=5)
    assert 0 < fast < slow  # 64x8 vs 64x8192 weights, both ways
    timed = [session for session, iterations in order if iterations == 1]
    assert len(timed) == 10 and all(timed[i] is not timed[i + 1] for i in range(9))  # alternating, not in blocks
