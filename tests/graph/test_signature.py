"""The model signature read from hand-built graphs, one per pattern real exporters write.

Each test pins one rule of :mod:`trtq.graph.signature`: breaking the rule fails the test.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trtq.graph.signature import CHANNELS, CLASS, CONFIG, DATA, MASK, REGRESSION, SCALAR, SHAPE, STATE, read_signature
from trtq.graph.view import reshape_axis

HIDDEN = 8


def _model(nodes, inputs, outputs, inits=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _const(name, value, dtype=np.float32):
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def _vad_like(static: bool = True):
    """A streaming VAD as shipped: ``input [1, 16]``, ``state [2, 1, H]`` split into h and c (Gather, Unsqueeze)
    before the LSTM, ``output [1, 1]`` a Sigmoid, ``stateN [2, 1, H]`` made of Y_h and Y_c (Squeeze, Unsqueeze,
    Concat)."""
    rng = np.random.default_rng(0)
    batch = 1 if static else "batch"
    inits = [_const("W", rng.standard_normal((1, 4 * HIDDEN, 16)) * 0.1),
             _const("R", rng.standard_normal((1, 4 * HIDDEN, HIDDEN)) * 0.1),
             _const("zero", 0, np.int64), _const("one", 1, np.int64), _const("ax0", [0], np.int64),
             _const("Wd", rng.standard_normal((HIDDEN, 1)) * 0.1)]
    nodes = [helper.make_node("Unsqueeze", ["input", "ax0"], ["x3"]),               # [1, batch, 16]
             helper.make_node("Gather", ["state", "zero"], ["h"], axis=0),           # [batch, H]
             helper.make_node("Gather", ["state", "one"], ["c"], axis=0),
             helper.make_node("Unsqueeze", ["h", "ax0"], ["h3"]),                    # [1, batch, H]
             helper.make_node("Unsqueeze", ["c", "ax0"], ["c3"]),
             helper.make_node("LSTM", ["x3", "W", "R", "", "", "h3", "c3"], ["Y", "Yh", "Yc"], hidden_size=HIDDEN),
             helper.make_node("Squeeze", ["Yh", "ax0"], ["hn"]),
             helper.make_node("Squeeze", ["Yc", "ax0"], ["cn"]),
             helper.make_node("Unsqueeze", ["hn", "ax0"], ["hn3"]),
             helper.make_node("Unsqueeze", ["cn", "ax0"], ["cn3"]),
             helper.make_node("Concat", ["hn3", "cn3"], ["stateN"], axis=0),
             helper.make_node("MatMul", ["hn", "Wd"], ["logit"]),
             helper.make_node("Sigmoid", ["logit"], ["output"])]
    return _model(nodes,
                  [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 16]),
                   helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, batch, HIDDEN])],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 1]),
                   helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, batch, HIDDEN])], inits)


def test_state_sliced_before_its_lstm_is_batched_on_axis_1_and_paired():
    signature = read_signature(_vad_like(static=True))
    axes = {s.name: s.batch_axis for s in signature.inputs}
    assert axes == {"input": 0, "state": 1}  # traced through Gather + Unsqueeze to the LSTM's initial_h
    assert [(p.output, p.input) for p in signature.pairs] == [("stateN", "state")]
    assert signature.role("state") == STATE and signature.role("input") == DATA
    assert signature.output("stateN").kind == STATE and signature.output("stateN").spec.batch_axis == 1
    assert signature.judged_outputs() == ["output"]
    assert signature.output("output").kind == MASK and signature.output("output").axis == 1


def test_state_pair_needs_graph_evidence_on_both_sides():
    model = _vad_like(static=False)
    # the output no longer comes from the LSTM's Y_h/Y_c: same shape and dtype, but no pair
    concat = next(n for n in model.graph.node if n.op_type == "Concat")
    concat.input[:] = ["h3", "c3"]
    assert read_signature(model).pairs == ()


def test_h_pairs_with_y_h_and_c_with_y_c():
    rng = np.random.default_rng(1)
    inits = [_const("W", rng.standard_normal((1, 4 * HIDDEN, 4))), _const("R", rng.standard_normal((1, 4 * HIDDEN, HIDDEN)))]
    nodes = [helper.make_node("LSTM", ["x", "W", "R", "", "", "h0", "c0"], ["Y", "cn", "hn"], hidden_size=HIDDEN)]
    # outputs named against the grain: 'cn' is Y_h, 'hn' is Y_c; the op's own slots decide, not the names
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, "b", 4]),
                           helper.make_tensor_value_info("h0", TensorProto.FLOAT, [1, "b", HIDDEN]),
                           helper.make_tensor_value_info("c0", TensorProto.FLOAT, [1, "b", HIDDEN])],
                   [helper.make_tensor_value_info("cn", TensorProto.FLOAT, [1, "b", HIDDEN]),
                    helper.make_tensor_value_info("hn", TensorProto.FLOAT, [1, "b", HIDDEN])], inits)
    pairs = {p.input: p.output for p in read_signature(model).pairs}
    assert pairs == {"h0": "cn", "c0": "hn"}
    assert {s.name: s.batch_axis for s in read_signature(model).inputs} == {"x": 1, "h0": 1, "c0": 1}


def test_question_mark_dims_are_independent_and_softmax_found_through_identity():
    """paddle2onnx: ``x [-1, 3, ?, ?]`` and ``Softmax -> Identity`` as the output."""
    inits = [_const("w", np.ones((4, 3, 3, 3)) * 0.1), _const("fc", np.ones((4, 2)))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("GlobalAveragePool", ["c"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("MatMul", ["f", "fc"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
             helper.make_node("Identity", ["probs"], ["out"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["?", 3, "?", "?"])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["?", 2])], inits)
    signature = read_signature(model)
    assert signature.inputs[0].shape == (None, 3, None, None)  # no shared '?' size across axes
    assert signature.inputs[0].batch_axis == 0
    assert signature.class_axes() == {"out": (1, "Softmax through Identity")}


def test_softmax_before_reshape_is_a_class_axis_per_position():
    """A CTC reader: Softmax on ``[N*T, C]`` then Reshape to ``[N, T, C]``: the class axis is followed by size
    and position."""
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["rows"]),
             helper.make_node("MatMul", ["rows", "w"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=1),
             helper.make_node("Reshape", ["probs", "back"], ["out"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10, 6])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 10, 11])],
                   [_const("flat", [-1, 6], np.int64), _const("back", [-1, 10, 11], np.int64),
                    _const("w", np.ones((6, 11)))])
    out = read_signature(model).output("out")
    assert (out.kind, out.axis) == (CLASS, 2)
    assert "Reshape" in out.why


def test_transpose_moves_the_class_axis():
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=-1),
             helper.make_node("Transpose", ["p"], ["out"], perm=[0, 2, 1])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 7, 5])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 5, 7])])
    assert read_signature(model).class_axes()["out"][0] == 1


def test_sigmoid_with_one_channel_is_a_mask_and_wide_sigmoid_is_not():
    inits = [_const("w1", np.ones((1, 3, 1, 1))), _const("w8", np.ones((8, 3, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]), helper.make_node("Sigmoid", ["c1"], ["mask"]),
             helper.make_node("Conv", ["x", "w8"], ["c8"]), helper.make_node("Sigmoid", ["c8"], ["labels"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 64, 48])],
                   [helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["N", 1, 64, 48]),
                    helper.make_tensor_value_info("labels", TensorProto.FLOAT, ["N", 8, 64, 48])], inits)
    signature = read_signature(model)
    assert (signature.output("mask").kind, signature.output("mask").axis) == (MASK, 1)
    # multi-label scores: per channel, never a mask, and never a channel group guessed from the width
    assert signature.output("labels").kind == CHANNELS and signature.output("labels").axis == 1
    assert signature.output("mask").group_axes == ()


def test_channel_groups_only_on_an_axis_a_concat_joins():
    nodes = [helper.make_node("Concat", ["boxes", "scores"], ["out"], axis=1),
             helper.make_node("Relu", ["scores"], ["plain"])]
    model = _model(nodes, [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", 4, 100]),
                           helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 80, 100])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 84, 100]),
                    helper.make_tensor_value_info("plain", TensorProto.FLOAT, ["N", 80, 100])])
    signature = read_signature(model)
    assert signature.output("out").group_axes == (1,) and signature.output("out").kind == REGRESSION
    assert signature.output("plain").group_axes == ()


def test_input_roles_scalar_shape_config():
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Mul", ["r", "gain"], ["m"]),
             helper.make_node("Add", ["m", "bias"], ["out"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 12]),
                           helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
                           helper.make_tensor_value_info("gain", TensorProto.FLOAT, []),
                           helper.make_tensor_value_info("bias", TensorProto.FLOAT, [12])],
                   [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", 12])])
    signature = read_signature(model)
    assert dict(signature.roles) == {"x": DATA, "shape": SHAPE, "gain": SCALAR, "bias": CONFIG}
    assert [s.batch_axis if s.batched else None for s in signature.inputs] == [0, None, None, None]


def test_shared_named_dim_and_the_fixed_axis_0_rule():
    nodes = [helper.make_node("Identity", ["a"], ["oa"]), helper.make_node("Identity", ["b"], ["ob"]),
             helper.make_node("Identity", ["c"], ["oc"])]
    model = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", 5]),
                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [3, "n", 2]),
                           helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, None, 4])],
                   [helper.make_tensor_value_info("oa", TensorProto.FLOAT, ["n", 5]),
                    helper.make_tensor_value_info("ob", TensorProto.FLOAT, [3, "n", 2]),
                    helper.make_tensor_value_info("oc", TensorProto.FLOAT, [2, None, 4])])
    signature = read_signature(model)
    assert {s.name: s.batch_axis for s in signature.inputs} == {"a": 0, "b": 1, "c": 1}
    assert signature.output_axes() == {"oa": 0, "ob": 1, "oc": 1}  # the symbol, then the traced batch axis


def test_all_fixed_graph_runs_one_sample_per_call():
    nodes = [helper.make_node("Identity", ["a"], ["oa"]), helper.make_node("Identity", ["s"], ["os"])]
    model = _model(nodes, [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 5]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, [2, 1, 3])],
                   [helper.make_tensor_value_info("oa", TensorProto.FLOAT, [1, 5]),
                    helper.make_tensor_value_info("os", TensorProto.FLOAT, [2, 1, 3])])
    signature = read_signature(model)
    assert {s.name: s.batch_axis for s in signature.inputs} == {"a": 0, "s": 1}
    assert signature.notes and "one sample per call" in signature.notes[0]


def test_sequence_first_gru():
    rng = np.random.default_rng(2)
    inits = [_const("W", rng.standard_normal((1, 3 * HIDDEN, 8))), _const("R", rng.standard_normal((1, 3 * HIDDEN, HIDDEN)))]
    nodes = [helper.make_node("GRU", ["X", "W", "R"], ["Y", "Yh"], hidden_size=HIDDEN),
             helper.make_node("Squeeze", ["Yh", "zero"], ["last"])]
    model = _model(nodes, [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["seq", "batch", 8])],
                   [helper.make_tensor_value_info("last", TensorProto.FLOAT, ["batch", HIDDEN])],
                   inits + [_const("zero", [0], np.int64)])
    signature = read_signature(model)
    assert signature.inputs[0].batch_axis == 1
    assert signature.output_axes() == {"last": 0}


def test_overrides_win_entry_by_entry():
    model = _vad_like(static=False)
    signature = read_signature(model, {"state": None}, {"output": None}, feedback=[])
    assert signature.role("state") in (CONFIG, STATE) and not signature.inputs[1].batched
    assert signature.output("output").kind == CLASS and signature.output("output").why == "declared"


def test_reshape_axis_by_size_and_position():
    assert reshape_axis(("N", 10, 11), ("N", 110), 0) == 0
    assert reshape_axis((20, 11), ("N", 10, 11), 1) == 2      # trailing elements match
    assert reshape_axis(("N", 10, 11), ("N", 11, 10), 1) is None  # same sizes, other memory: unknown
    assert reshape_axis(("N", 4, 4), ("N", 16), 1) is None


def test_sidecar_record_round_trip():
    record = read_signature(_vad_like()).to_dict()
    assert json.loads(json.dumps(record))["pairs"][0]["input"] == "state"
    assert [i["role"] for i in record["inputs"]] == [DATA, STATE]


@pytest.mark.slow
def test_vad_like_graph_calibrates_without_flags_per_call_and_streamed(tmp_path, capsys):
    """Per-call data with recorded states calibrate per call (the state never ranks); sequences without the
    state stream it: no --batch-axis and no --feedback in either."""
    from trtq.cli import main

    model = tmp_path / "vad.onnx"
    onnx.save(_vad_like(static=True), str(model))
    rng = np.random.default_rng(5)
    calls, sequences = tmp_path / "calls", tmp_path / "sequences"
    calls.mkdir()
    sequences.mkdir()
    for i in range(48):
        np.savez(calls / f"{i:03d}.npz", input=rng.standard_normal(16).astype(np.float32),
                 state=(rng.standard_normal((2, HIDDEN)) * 0.3).astype(np.float32))
    for i in range(8):
        np.savez(sequences / f"seq{i}.npz", input=rng.standard_normal((12, 16)).astype(np.float32))
    assert main(["calibrate", str(model), "--calib", str(calls), "-o", str(tmp_path / "calls.cache")]) == 0
    sidecar = json.loads((tmp_path / "calls.cache.json").read_text())
    assert sidecar["signature"]["state_mode"] == "per call"
    assert [o["name"] for o in sidecar["verdict"]["outputs"]] == ["output"]
    assert main(["calibrate", str(model), "--calib", str(sequences), "-o", str(tmp_path / "seq.cache")]) == 0
    sidecar = json.loads((tmp_path / "seq.cache.json").read_text())
    assert sidecar["signature"]["state_mode"] == "streamed"
    assert sidecar["feedback"] == [{"output": "stateN", "input": "state"}]
    assert [o["name"] for o in sidecar["verdict"]["outputs"]] == ["output"]
