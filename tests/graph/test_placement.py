"""Placement's graph index: element types are inferred once per graph structure."""

from __future__ import annotations

import numpy as np
import pytest

from graph_helpers import make_model

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402


def _conv_cast(weight: np.ndarray, to: int = TensorProto.FLOAT16):
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="conv")
    cast = helper.make_node("Cast", ["y"], ["z"], name="cast", to=to)
    model = make_model([conv], {"x": [1, 2, 4, 4]}, {"y": [1, weight.shape[0], 4, 4]}, {"w": weight})
    model.graph.node.append(cast)
    del model.graph.output[:]
    model.graph.output.append(helper.make_tensor_value_info("z", to, [1, weight.shape[0], 4, 4]))
    return model


@pytest.fixture
def inferences(monkeypatch):
    """Counts ONNX shape inference runs (fresh memo: what an earlier test planned is forgotten)."""
    import trtq.graph.placement as placement

    monkeypatch.setattr(placement, "_TYPES_SEEN", {}, raising=False)
    calls = []
    real = onnx.shape_inference.infer_shapes

    def counted(model, *args, **kwargs):
        calls.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(onnx.shape_inference, "infer_shapes", counted)
    return calls


def test_same_graph_with_other_weights_is_typed_once(inferences):
    """Auto plans one graph per candidate table: the weights differ between plans (a rewrite, a bias floor), the
    types cannot, so shape inference (which serializes every weight) runs once."""
    from trtq.graph.placement import element_types, plan_quantization
    from trtq.graph.qdq import node_names

    first = _conv_cast(np.ones((3, 2, 1, 1), np.float32))
    second = _conv_cast(np.full((3, 2, 1, 1), 0.5, np.float32))
    types = element_types(first)
    assert types["y"] == TensorProto.FLOAT and types["z"] == TensorProto.FLOAT16
    assert element_types(second) == types
    for amax in ({"x": 1.0}, {"x": 2.0}):
        plan_quantization(second, node_names(second), amax)
    assert len(inferences) == 1


def test_another_structure_is_typed_again(inferences):
    """A node's attribute (a Cast's target type) or a weight's shape changes the types: inferred anew, never the
    memo's."""
    from trtq.graph.placement import element_types

    weight = np.ones((3, 2, 1, 1), np.float32)
    assert element_types(_conv_cast(weight))["z"] == TensorProto.FLOAT16
    assert element_types(_conv_cast(weight, to=TensorProto.DOUBLE))["z"] == TensorProto.DOUBLE
    element_types(_conv_cast(np.ones((5, 2, 1, 1), np.float32)))
    assert len(inferences) == 3


def test_the_memo_returns_a_copy(inferences):
    from trtq.graph.placement import element_types

    model = _conv_cast(np.ones((3, 2, 1, 1), np.float32))
    element_types(model)["y"] = TensorProto.INT8
    assert element_types(model)["y"] == TensorProto.FLOAT
