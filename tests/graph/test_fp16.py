"""FP16 graph copies: structure (what stays FP32) and numerics (ONNX Runtime on the CPU, against FP32)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from trtq.graph.fp16 import KEEP_FP32_OPS, to_fp16  # noqa: E402

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16


def _run(model, feed):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feed)


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # raises on any type mismatch
    graph = inferred.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(graph.value_info) + list(graph.input) + list(graph.output)}
    types.update({init.name: init.data_type for init in graph.initializer})
    return types


def _model(nodes, inputs, outputs, initializers=(), opset=17):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _transformer_block():
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.2, (16, 16)).astype(np.float32), "w")
    gamma = numpy_helper.from_array(np.ones(16, np.float32), "gamma")
    beta = numpy_helper.from_array(np.zeros(16, np.float32), "beta")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Add", ["h", "w"], ["h2"], name="add_w"),
        helper.make_node("LayerNormalization", ["h2", "gamma", "beta"], ["n"], name="ln", axis=-1),
        helper.make_node("Softmax", ["n"], ["s"], name="softmax", axis=-1),
        helper.make_node("Pow", ["s", "two"], ["p"], name="pow"),
        helper.make_node("Relu", ["p"], ["r"], name="relu"),
        helper.make_node("ReduceMean", ["r"], ["y"], name="mean", keepdims=1, axes=[-1]),
        helper.make_node("Mul", ["r", "two"], ["z"], name="mul"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [2, 16, 16])],
                  [helper.make_tensor_value_info("y", FLOAT, [2, 16, 1]), helper.make_tensor_value_info("z", FLOAT, [2, 16, 16])],
                  [w, gamma, beta, two])


def test_sensitive_ops_run_in_fp32_and_the_rest_in_fp16():
    model = _transformer_block()
    half = to_fp16(model)
    types = _types(half)
    nodes = {node.name: node for node in half.graph.node}
    for name in ("ln", "softmax", "pow", "mean"):
        assert nodes[name].op_type in KEEP_FP32_OPS
        assert all(types[i] == FLOAT for i in nodes[name].input if i), name
    for name in ("matmul", "add_w", "relu", "mul"):
        assert all(types[i] == HALF for i in nodes[name].input if i), name
    # a weight read by an FP32 node (Pow) and an FP16 node (Mul) is kept in both forms; "w" only as FP16
    inits = {init.name: init.data_type for init in half.graph.initializer}
    assert inits["two"] == FLOAT and inits["two__fp16"] == HALF
    assert "w" not in inits and inits["w__fp16"] == HALF
    assert [vi.type.tensor_type.elem_type for vi in half.graph.input] == [FLOAT]
    assert [vi.type.tensor_type.elem_type for vi in half.graph.output] == [FLOAT, FLOAT]
    assert [vi.name for vi in half.graph.output] == ["y", "z"]


def test_fp16_copy_matches_fp32_numerically():
    model = _transformer_block()
    x = np.random.default_rng(1).normal(size=(2, 16, 16)).astype(np.float32)
    ref = _run(model, {"x": x})
    got = _run(to_fp16(model), {"x": x})
    for a, b in zip(ref, got):
        assert b.dtype == np.float32
        np.testing.assert_allclose(b, a, rtol=2e-2, atol=2e-3)


def test_original_model_is_not_modified():
    model = _transformer_block()
    before = model.SerializeToString()
    to_fp16(model)
    assert model.SerializeToString() == before


def test_resize_scales_and_constants():
    scales = helper.make_node("Constant", [], ["scales"], value=numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32)))
    shape = helper.make_node("Shape", ["x"], ["shape"])
    zeros = helper.make_node("ConstantOfShape", ["shape"], ["zeros"],
                             value=numpy_helper.from_array(np.array([0.5], np.float32)))
    add = helper.make_node("Add", ["x", "zeros"], ["x2"])
    resize = helper.make_node("Resize", ["x2", "", "scales"], ["y"], mode="nearest", name="resize")
    model = _model([scales, shape, zeros, add, resize], [helper.make_tensor_value_info("x", FLOAT, [1, 2, 4, 4])],
                   [helper.make_tensor_value_info("y", FLOAT, [1, 2, 8, 8])])
    half = to_fp16(model)
    types = _types(half)
    node = next(n for n in half.graph.node if n.name == "resize")
    assert types[node.input[0]] == HALF and types[node.input[2]] == FLOAT
    x = np.random.default_rng(2).normal(size=(1, 2, 4, 4)).astype(np.float32)
    np.testing.assert_allclose(_run(half, {"x": x})[0], _run(model, {"x": x})[0], rtol=1e-3, atol=1e-3)


def test_out_of_range_weights_are_clipped_with_a_warning(caplog):
    big = numpy_helper.from_array(np.array([1e6, -1e6, 1.0], np.float32), "big")
    model = _model([helper.make_node("Mul", ["x", "big"], ["y"])], [helper.make_tensor_value_info("x", FLOAT, [3])],
                   [helper.make_tensor_value_info("y", FLOAT, [3])], [big])
    with caplog.at_level(logging.WARNING, logger="trtq.graph.fp16"):
        half = to_fp16(model)
    assert "clipped" in caplog.text
    weights = [numpy_helper.to_array(i) for i in half.graph.initializer if i.data_type == HALF]
    assert np.isfinite(weights[0]).all() and weights[0].max() == np.float16(65504)


def test_qdq_model_gets_fp16_scales_at_opset_19():
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.3, (4, 2, 3, 3)).astype(np.float32)
    w_scale = np.abs(w).reshape(4, -1).max(axis=1) / 127
    w_q = np.clip(np.round(w / w_scale[:, None, None, None]), -127, 127).astype(np.int8)
    inits = [numpy_helper.from_array(w_q, "w_q"), numpy_helper.from_array(w_scale.astype(np.float32), "w_scale"),
             numpy_helper.from_array(np.zeros(4, np.int8), "w_zp"),
             numpy_helper.from_array(np.array(3.0 / 127, np.float32), "x_scale"),
             numpy_helper.from_array(np.array(0, np.int8), "x_zp")]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zp"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xdq"]),
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zp"], ["wdq"], axis=0),
        helper.make_node("Conv", ["xdq", "wdq"], ["y"], pads=[1, 1, 1, 1]),
    ]
    model = _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [1, 2, 8, 8])],
                   [helper.make_tensor_value_info("y", FLOAT, [1, 4, 8, 8])], inits, opset=13)
    half = to_fp16(model)
    assert {o.version for o in half.opset_import if o.domain in ("", "ai.onnx")} == {19}
    types = _types(half)
    assert types[next(n for n in half.graph.node if n.op_type == "Conv").input[0]] == HALF
    x = rng.uniform(-3, 3, (1, 2, 8, 8)).astype(np.float32)
    ref, got = _run(model, {"x": x})[0], _run(half, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=2e-2, atol=2e-2)


def test_subgraph_outer_reads_stay_fp32():
    then_graph = helper.make_graph([helper.make_node("Identity", ["h"], ["t"])], "then", [],
                                   [helper.make_tensor_value_info("t", FLOAT, [2])])
    else_graph = helper.make_graph([helper.make_node("Neg", ["h"], ["e"])], "else", [],
                                   [helper.make_tensor_value_info("e", FLOAT, [2])])
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu"),
             helper.make_node("If", ["c"], ["y"], then_branch=then_graph, else_branch=else_graph)]
    model = _model(nodes, [helper.make_tensor_value_info("x", FLOAT, [2]), helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
                   [helper.make_tensor_value_info("y", FLOAT, [2])])
    half = to_fp16(model)
    x = np.array([-1.0, 2.0], np.float32)
    for cond in (True, False):
        np.testing.assert_allclose(_run(half, {"x": x, "c": np.array(cond)})[0], _run(model, {"x": x, "c": np.array(cond)})[0])


def test_yolov8_fp16_copy_is_close_to_fp32(yolo_model_path):
    model = onnx.load(str(yolo_model_path))
    half = to_fp16(model)
    onnx.checker.check_model(half)
    _types(half)
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    ref = _run(model, {"images": x})[0]
    got = _run(half, {"images": x})[0]
    assert got.dtype == np.float32 and got.shape == ref.shape
    # boxes are pixel coordinates up to 320 (fp16 step 0.25 there); class scores are in [0, 1]
    assert np.abs(got - ref).max() < 1.0
    assert np.abs(got[:, 4:] - ref[:, 4:]).max() < 5e-3
    assert np.abs(got - ref).mean() / np.abs(ref).mean() < 1e-3
