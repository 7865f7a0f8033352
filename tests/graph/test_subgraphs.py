"""If branches selected by fixed inputs are exposed to calibration; the rest is reported, not hidden."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _recurrent as R  # noqa: E402

from trtq.graph.signature import input_specs  # noqa: E402
from trtq.graph.signature import input_specs
from trtq.graph.subgraphs import inline_fixed_branches, weighted_coverage  # noqa: E402


def test_the_branch_a_scalar_selects_is_inlined_with_the_same_outputs(tmp_path):
    model = onnx.load(str(R.scalar_branch_classifier(tmp_path / "m.onnx")))
    x = R.digits()[0].reshape(-1, 64)[:16]
    for mode, inner in ((1, "then_mm"), (0, "else_mm")):
        feed = {"x_raw": x, "mode": np.array(mode)}
        exposed, inlined = inline_fixed_branches(model, input_specs(model), feed)
        assert inlined == ["branch"] and not any(n.op_type == "If" for n in exposed.graph.node)
        want = ort.InferenceSession(model.SerializeToString()).run(None, feed)[0]
        session = ort.InferenceSession(_with_output(exposed, inner).SerializeToString())
        got, hidden = session.run(["logits", inner], feed)
        np.testing.assert_array_equal(got, want)
        assert hidden.shape == (16, 10)


def test_a_condition_on_batched_data_is_left_alone(tmp_path):
    model = onnx.load(str(R.scalar_branch_classifier(tmp_path / "m.onnx")))
    data_driven = onnx.ModelProto()
    data_driven.CopyFrom(model)
    greater = next(n for n in data_driven.graph.node if n.op_type == "Greater")
    greater.input[0] = "x_peak"  # the branch now follows the data: max over the batch, cast to int64
    nodes = [onnx.helper.make_node("ReduceMax", ["x_raw"], ["x_peak_f"], keepdims=0),
             onnx.helper.make_node("Cast", ["x_peak_f"], ["x_peak"], to=onnx.TensorProto.INT64)]
    nodes += list(data_driven.graph.node)
    del data_driven.graph.node[:]
    data_driven.graph.node.extend(nodes)
    exposed, inlined = inline_fixed_branches(data_driven, input_specs(data_driven),
                                             {"x_raw": np.ones((1, 64), np.float32), "mode": np.array(1)})
    assert inlined == [] and exposed is data_driven
    coverage = weighted_coverage(model, {"x", "x_raw"})
    assert coverage.total == 3 and coverage.scaled == 0  # a branch op needs its output's scale too
    assert "3 (else_matmul, then_mix, then_matmul) calibration cannot reach" in coverage.line()


def _with_output(model, name):
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    copy.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return copy
