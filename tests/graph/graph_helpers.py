"""Helpers for graph tests: tiny ONNX models built with onnx.helper, run in ONNX Runtime.

A plain module (not conftest.py): test files import it by name, and two conftest modules
(tests/ and tests/graph/) would shadow each other under `from conftest import`.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def make_model(nodes, inputs: Mapping[str, Sequence], outputs: Mapping[str, Optional[Sequence]],
               initializers: Mapping[str, np.ndarray] = (), opset: int = 17):
    """A float32 model: ``inputs``/``outputs`` map names to shapes (None: unknown shape)."""
    graph = helper.make_graph(
        list(nodes), "toy",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in outputs.items()],
        [numpy_helper.from_array(np.asarray(value, dtype=np.float32), name) for name, value in dict(initializers).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def session(model, threads: int = 1):
    """The session trtq itself would open (a TensorRT-form model runs its Q/DQ in float: trtq.ort.tensorrt_form)."""
    from trtq.ort import create_session

    return create_session(model, threads=threads)


def run(model, feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
    return session(model).run(None, dict(feeds))


def float_tensors(model) -> List[str]:
    """Graph inputs and float node outputs (what a calibration measures)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi.type.tensor_type.elem_type
             for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    constants = {init.name for init in model.graph.initializer}
    names = [vi.name for vi in model.graph.input if vi.name not in constants]
    names += [out for node in model.graph.node for out in node.output if types.get(out) == TensorProto.FLOAT]
    return names


def minmax_amax(model, batches: Iterable[Mapping[str, np.ndarray]]) -> Dict[str, float]:
    """max |x| of every float tensor over ``batches``: a minimal stand-in for calibration."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    names = float_tensors(model)
    present = {vi.name for vi in augmented.graph.output}
    inputs = {vi.name for vi in model.graph.input}
    for name in names:
        if name not in present and name not in inputs:
            augmented.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    sess = session(augmented)
    outputs = [o.name for o in sess.get_outputs()]
    amax: Dict[str, float] = {}
    for feeds in batches:
        values = dict(zip(outputs, sess.run(None, dict(feeds))))
        values.update(feeds)
        for name in names:
            if name in values:
                amax[name] = max(amax.get(name, 0.0), float(np.abs(values[name]).max()))
    return amax


def nodes_of(model, op_type: str):
    return [node for node in model.graph.node if node.op_type == op_type]


def producer_of(model, tensor: str):
    return next((node for node in model.graph.node if tensor in node.output), None)


def initializer(model, name: str) -> np.ndarray:
    return numpy_helper.to_array(next(init for init in model.graph.initializer if init.name == name))


def attribute(node, name: str, default=None):
    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def quantized_inputs(model) -> List[str]:
    """Tensors fed to a QuantizeLinear (the activations that were quantized)."""
    return [node.input[0] for node in nodes_of(model, "QuantizeLinear")]


def source_of(model, tensor: str) -> str:
    """The float tensor behind ``tensor``: follows DequantizeLinear <- QuantizeLinear back; else ``tensor``."""
    dq = producer_of(model, tensor)
    if dq is None or dq.op_type != "DequantizeLinear":
        return tensor
    q = producer_of(model, dq.input[0])
    if q is None:  # int8 weight initializer behind a DQ
        return dq.input[0]
    return q.input[0]
