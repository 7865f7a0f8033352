"""Tiny ONNX models built with onnx.helper for the eval/bench/report/ort tests.

Nothing here uses trtq's own quantizer: :func:`hand_qdq` writes the Q/DQ graph by
hand so the evaluation code is tested against an independent construction.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
INPUT_SHAPE = (3, 16, 16)


def _model(nodes, inputs, outputs, initializers, name="toy") -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def classifier(batch="N", classes: int = 10, seed: int = 0, first_weight_scale: Optional[Sequence[float]] = None
               ) -> onnx.ModelProto:
    """x[N,3,16,16] -> conv1 3x3 -> Relu -> conv2 1x1 -> Relu -> GlobalAveragePool -> Flatten -> fc (Gemm) -> y[N,C].

    ``first_weight_scale``: per input channel factor on conv1's weights (e.g. ``(1e-4, 1, 1)``
    makes conv1 nearly ignore channel 0).
    """
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.4
    if first_weight_scale is not None:
        w1 *= np.asarray(first_weight_scale, dtype=np.float32)[None, :, None, None]
    b1 = rng.standard_normal(8).astype(np.float32) * 0.1
    w2 = rng.standard_normal((8, 8, 1, 1)).astype(np.float32) * 0.5
    b2 = rng.standard_normal(8).astype(np.float32) * 0.1
    fc = rng.standard_normal((8, classes)).astype(np.float32)
    fcb = rng.standard_normal(classes).astype(np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fcb"], ["y"], name="fc"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"),
                                                          (fc, "fc"), (fcb, "fcb"))]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *INPUT_SHAPE])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, classes])], inits, "classifier")


def two_outputs(batch="N", seed: int = 1) -> onnx.ModelProto:
    """x[N,3,16,16] -> conv -> feature map out ``fmap`` [N,4,16,16] and class scores ``logits`` [N,6,1,1]."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32) * 0.3
    head = rng.standard_normal((6, 4, 1, 1)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["fmap"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["fmap"], ["pooled"], name="gap"),
        helper.make_node("Conv", ["pooled", "head"], ["logits"], name="head"),
    ]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, *INPUT_SHAPE])],
                  [helper.make_tensor_value_info("fmap", TensorProto.FLOAT, [batch, 4, 16, 16]),
                   helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 6, 1, 1])],
                  [numpy_helper.from_array(w, "w"), numpy_helper.from_array(head, "head")], "two_outputs")


def activation_amax(model: onnx.ModelProto, x: np.ndarray) -> Dict[str, float]:
    """max |t| of every graph input and node output on ``x`` (a plain min/max calibration)."""
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    names = [o for n in model.graph.node for o in n.output]
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(names, {"x": x})))
    values["x"] = x
    return {name: float(np.abs(v).max()) for name, v in values.items()}


def hand_qdq(model: onnx.ModelProto, amax: Dict[str, float], layers: Optional[Sequence[str]] = None,
             uint8: bool = False) -> onnx.ModelProto:
    """Q/DQ by hand: each listed Conv/Gemm gets its data input fake-quantized per tensor
    (scale amax/127, int8 zp 0, or uint8 zp 128 with ``uint8``) and its weight stored int8
    per output channel behind a DequantizeLinear. Unlisted layers stay float."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    graph = result.graph
    inits = {i.name: i for i in graph.initializer}
    new_nodes, new_inits = [], []
    for node in graph.node:
        if node.op_type in ("Conv", "Gemm") and (layers is None or node.name in layers):
            data, weight = node.input[0], node.input[1]
            scale = np.float32(amax[data]) / np.float32(127)
            zp = np.array(128, np.uint8) if uint8 else np.array(0, np.int8)
            tag = node.name
            new_inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{tag}_in_scale"),
                          numpy_helper.from_array(zp, f"{tag}_in_zp")]
            new_nodes += [
                helper.make_node("QuantizeLinear", [data, f"{tag}_in_scale", f"{tag}_in_zp"], [f"{tag}_in_q"],
                                 name=f"{tag}_in_Q"),
                helper.make_node("DequantizeLinear", [f"{tag}_in_q", f"{tag}_in_scale", f"{tag}_in_zp"],
                                 [f"{tag}_in_dq"], name=f"{tag}_in_DQ"),
            ]
            w = numpy_helper.to_array(inits[weight])
            axis = 0 if node.op_type == "Conv" else 1  # Gemm weight is [K, C]: output channels on axis 1
            reduce = tuple(a for a in range(w.ndim) if a != axis)
            w_scale = (np.abs(w).max(axis=reduce) / 127).astype(np.float32)
            shape = [1] * w.ndim
            shape[axis] = -1
            w_q = np.clip(np.rint(w / w_scale.reshape(shape)), -127, 127).astype(np.int8)
            new_inits += [numpy_helper.from_array(w_q, f"{tag}_w_q"),
                          numpy_helper.from_array(w_scale, f"{tag}_w_scale"),
                          numpy_helper.from_array(np.zeros_like(w_scale, dtype=np.int8), f"{tag}_w_zp")]
            new_nodes.append(helper.make_node("DequantizeLinear", [f"{tag}_w_q", f"{tag}_w_scale", f"{tag}_w_zp"],
                                              [f"{tag}_w_dq"], name=f"{tag}_w_DQ", axis=axis))
            replacement = onnx.NodeProto()
            replacement.CopyFrom(node)
            replacement.input[0] = f"{tag}_in_dq"
            replacement.input[1] = f"{tag}_w_dq"
            new_nodes.append(replacement)
        else:
            new_nodes.append(node)
    del graph.node[:]
    graph.node.extend(new_nodes)
    still_read = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in still_read]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    onnx.checker.check_model(result)
    return result


def images(count: int, seed: int = 0, outlier_channel: Optional[float] = None) -> np.ndarray:
    """Float32 samples [count, 3, 16, 16] in [0, 1); channel 0 times ``outlier_channel`` if given."""
    x = np.random.default_rng(seed).random((count, *INPUT_SHAPE), dtype=np.float32)
    if outlier_channel is not None:
        x[:, 0] *= np.float32(outlier_channel)
    return x


def save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def sequence_reader(batch="N", steps: int = 6, features: int = 8, classes: int = 5, seed: int = 2,
                    head: str = "Softmax", opset: int = OPSET) -> onnx.ModelProto:
    """x[N, T, F] -> MatMul(W) -> logits [N, T, C] -> ``head`` -> ``probs`` [N, T, C].

    ``head``: ``Softmax`` / ``LogSoftmax`` (axis -1), ``ArgMax`` (``probs`` are the logits and an
    ArgMax node reads them into a second output ``ids``), ``Sigmoid`` or ``none`` (plain logits).
    """
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, classes)).astype(np.float32)
    out = [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [batch, steps, classes])]
    if head in ("Softmax", "LogSoftmax"):
        attrs = {"axis": -1} if opset >= 13 else {"axis": 2}
        nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="matmul"),
                 helper.make_node(head, ["logits"], ["probs"], name="head", **attrs)]
    elif head == "Sigmoid":
        nodes = [helper.make_node("MatMul", ["x", "w"], ["logits"], name="matmul"),
                 helper.make_node("Sigmoid", ["logits"], ["probs"], name="head")]
    else:
        nodes = [helper.make_node("MatMul", ["x", "w"], ["probs"], name="matmul")]
        if head == "ArgMax":
            nodes.append(helper.make_node("ArgMax", ["probs"], ["ids"], name="argmax", axis=2, keepdims=0))
            out.append(helper.make_tensor_value_info("ids", TensorProto.INT64, [batch, steps]))
    graph = helper.make_graph(nodes, "reader", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            [batch, steps, features])],
                              out, [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def fused_head(batch="N", anchors: int = 48, features: int = 8, classes: int = 1, seed: int = 3,
               box_scale: float = 100.0, noise: Optional[Dict[int, float]] = None) -> onnx.ModelProto:
    """x[N, A, F] -> MatMul(W) -> [N, A, 4 + 1 + C]: boxes (x ``box_scale``, pixels) beside sigmoid
    objectness and class scores in [0, 1], concatenated as a YOLOX / YOLOv5 head is.

    ``noise``: ``{channel: std}`` added to that column of W (a candidate model that got one channel wrong).
    """
    rng = np.random.default_rng(seed)
    width = 5 + classes
    w = rng.standard_normal((features, width)).astype(np.float32)
    for channel, std in (noise or {}).items():
        w[:, channel] += np.random.default_rng(100 + channel).normal(0, std, features).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="matmul"),
        helper.make_node("Slice", ["h", "zero", "four", "last"], ["box_raw"], name="box_slice"),
        helper.make_node("Slice", ["h", "four", "end", "last"], ["score_raw"], name="score_slice"),
        helper.make_node("Mul", ["box_raw", "scale"], ["box"], name="box_scale"),
        helper.make_node("Sigmoid", ["score_raw"], ["score"], name="score_sigmoid"),
        helper.make_node("Concat", ["box", "score"], ["output"], name="concat", axis=-1),
    ]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([4], np.int64), "four"),
             numpy_helper.from_array(np.array([width], np.int64), "end"),
             numpy_helper.from_array(np.array([-1], np.int64), "last"),
             numpy_helper.from_array(np.array(box_scale, np.float32), "scale")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, anchors, features])],
                  [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, anchors, width])], inits,
                  "fused_head")


def run_model(model: onnx.ModelProto, feed: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Every output of ``model`` on ``feed`` (ONNX Runtime, CPU)."""
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))


def constant_weights(model):
    """The same graph with every initializer held in a Constant node (PaddlePaddle-style export)."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    constants = [helper.make_node("Constant", [], [init.name], name=f"const_{init.name}", value=init)
                 for init in result.graph.initializer]
    nodes = constants + list(result.graph.node)
    del result.graph.initializer[:]
    del result.graph.node[:]
    result.graph.node.extend(nodes)
    onnx.checker.check_model(result)
    return result


def shared_weights(model):
    """conv2's weight read by a second 1x1 conv after it (conv3): one initializer, two nodes."""
    result = onnx.ModelProto()
    result.CopyFrom(model)
    nodes = list(result.graph.node)
    at = next(i for i, n in enumerate(nodes) if n.name == "relu2")
    nodes[at + 1].input[0] = "r3"  # gap reads the new branch
    new = [helper.make_node("Conv", ["r2", "w2", "b2"], ["c3"], name="conv3"),
           helper.make_node("Relu", ["c3"], ["r3"], name="relu3")]
    del result.graph.node[:]
    result.graph.node.extend(nodes[:at + 1] + new + nodes[at + 1:])
    onnx.checker.check_model(result)
    return result
