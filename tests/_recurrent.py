"""Small models with inputs that are not "axis 0 of everything", trained here on real data.

- :func:`recurrent_classifier`: a GRU or LSTM over the rows of scikit-learn's digits
  (8 steps of 8 pixels), exported by torch with its state as explicit inputs and outputs
  in ONNX's own layout ``[layers, batch, hidden]`` and a dynamic batch, as streaming
  models ship (``x, h0[, c0] -> logits, hN[, cN]``).
- :func:`scalar_branch_classifier`: ``x[N, 64]`` and an int64 scalar ``mode`` that selects,
  through an ``If``, which of two logistic regressions (trained on the digits) runs.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict, Tuple

import numpy as np

HIDDEN = 16
LAYERS = 1


@functools.lru_cache(maxsize=None)
def digits() -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return (data.images / 16.0).astype(np.float32), data.target.astype(np.int64)


@functools.lru_cache(maxsize=None)
def _trained(cell: str):
    import torch

    torch.manual_seed(0)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            kind = torch.nn.LSTM if cell == "lstm" else torch.nn.GRU
            self.rnn = kind(8, HIDDEN, num_layers=LAYERS, batch_first=True)
            self.head = torch.nn.Linear(HIDDEN, 10)

        def forward(self, x, h0, c0=None):
            if cell == "lstm":
                out, (h, c) = self.rnn(x, (h0, c0))
                return self.head(out[:, -1]), h, c
            out, h = self.rnn(x, h0)
            return self.head(out[:, -1]), h

    images, labels = digits()
    x, y = torch.from_numpy(images[:1400]), torch.from_numpy(labels[:1400])
    net = Net()
    optimizer = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(60):
        optimizer.zero_grad()
        zeros = torch.zeros(LAYERS, len(x), HIDDEN)
        logits = net(x, zeros, zeros)[0] if cell == "lstm" else net(x, zeros)[0]
        torch.nn.functional.cross_entropy(logits, y).backward()
        optimizer.step()
    return net.eval()


def recurrent_classifier(path: Path, cell: str = "gru") -> Path:
    """Export the digits ``cell`` ("gru" / "lstm") classifier to ``path``; returns the path."""
    import torch

    net = _trained(cell)
    x = torch.zeros(2, 8, 8)
    h0 = torch.zeros(LAYERS, 2, HIDDEN)
    names_in = ["x", "h0"] + (["c0"] if cell == "lstm" else [])
    names_out = ["logits", "hN"] + (["cN"] if cell == "lstm" else [])
    axes = {"x": {0: "batch", 1: "rows"}, "logits": {0: "batch"}}  # rows: whole digits, or one per call
    axes.update({name: {1: "batch"} for name in names_in[1:] + names_out[1:]})
    args = (x, h0, h0.clone()) if cell == "lstm" else (x, h0)
    torch.onnx.export(net, args, str(path), input_names=names_in, output_names=names_out, dynamic_axes=axes,
                      opset_version=17, dynamo=False)
    return path


def recurrent_samples(cell: str = "gru", count: int = 64, start: int = 1400) -> Dict[str, np.ndarray]:
    """Per-sample arrays for the recurrent classifier: ``x`` [count, 8, 8], states [LAYERS, count, HIDDEN]
    (samples along the state's own batch axis 1), zeros as a fresh stream starts."""
    images, _ = digits()
    feed = {"x": images[start:start + count], "h0": np.zeros((LAYERS, count, HIDDEN), np.float32)}
    if cell == "lstm":
        feed["c0"] = np.zeros((LAYERS, count, HIDDEN), np.float32)
    return feed


@functools.lru_cache(maxsize=None)
def _regressions() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    images, labels = digits()
    flat = images.reshape(len(images), -1)[:1400]
    first = LogisticRegression(max_iter=300).fit(flat, labels[:1400])
    second = LogisticRegression(max_iter=300, C=0.05).fit(flat, labels[:1400])
    return (first.coef_.T.astype(np.float32), first.intercept_.astype(np.float32),
            second.coef_.T.astype(np.float32), second.intercept_.astype(np.float32))


def scalar_branch_classifier(path: Path) -> Path:
    """``x[batch, 64]``, ``mode`` (int64 scalar) -> ``If(mode > 0)``: a hidden layer + logistic regression
    (MatMul, Relu, MatMul) or the plain logistic regression (MatMul) -> ``logits[batch, 10]``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w1, b1, w2, b2 = _regressions()
    rng = np.random.default_rng(0)
    mix = np.eye(64, dtype=np.float32) + rng.standard_normal((64, 64)).astype(np.float32) * 0.01
    out = lambda name: helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 10])  # noqa: E731
    then_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "mix"], ["hidden"], name="then_mix"),
         helper.make_node("Relu", ["hidden"], ["hidden_relu"], name="then_relu"),
         helper.make_node("MatMul", ["hidden_relu", "w1"], ["then_mm"], name="then_matmul"),
         helper.make_node("Add", ["then_mm", "b1"], ["then_out"], name="then_add")],
        "then", [], [out("then_out")])
    else_branch = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w2"], ["else_mm"], name="else_matmul"),
         helper.make_node("Add", ["else_mm", "b2"], ["else_out"], name="else_add")],
        "else", [], [out("else_out")])
    nodes = [
        helper.make_node("Mul", ["x_raw", "gain"], ["x"], name="gain"),
        helper.make_node("Greater", ["mode", "zero"], ["cond"], name="mode_positive"),
        helper.make_node("If", ["cond"], ["logits"], name="branch", then_branch=then_branch,
                         else_branch=else_branch),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in (
        (w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"), (mix, "mix"),
        (np.array(1.0, np.float32), "gain"), (np.array(0, np.int64), "zero"))]
    graph = helper.make_graph(
        nodes, "scalar_branch",
        [helper.make_tensor_value_info("x_raw", TensorProto.FLOAT, ["batch", 64]),
         helper.make_tensor_value_info("mode", TensorProto.INT64, [])],
        [out("logits")], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


STATE = 16


def integrator_stream(path: Path) -> Path:
    """A streaming model whose INT8 error compounds: ``state' = state @ A + x @ B`` with ``A`` orthogonal (a
    lossless integrator of the digits' rows, ``x[batch, 8]``), ``scores = state' @ W`` (4 classes) and
    ``stateN = state'`` fed back. Per call, with the float state given, INT8 barely moves it; streamed, each
    call's rounding of the state is kept and summed, and the decisions drift."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    a, _ = np.linalg.qr(rng.standard_normal((STATE, STATE)))
    b = rng.standard_normal((8, STATE)) * 0.5
    w = rng.standard_normal((STATE, 4))
    nodes = [helper.make_node("MatMul", ["state", "A"], ["carried"], name="carry"),
             helper.make_node("MatMul", ["x", "B"], ["added"], name="input"),
             helper.make_node("Add", ["carried", "added"], ["stateN"], name="integrate"),
             helper.make_node("MatMul", ["stateN", "W"], ["scores"], name="decide")]
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for v, n in ((a, "A"), (b, "B"), (w, "W"))]
    graph = helper.make_graph(
        nodes, "integrator",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, ["batch", STATE])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, ["batch", STATE])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def digit_sequences(folder: Path, count: int = 8, digits_per_sequence: int = 25, start: int = 0) -> Path:
    """``count`` .npz sequences of the digits' rows (``x``: [T, 8], T = 8 rows per digit), zero-mean."""
    folder.mkdir(parents=True, exist_ok=True)
    images, _ = digits()
    rows = images.reshape(-1, 8) - images.mean()
    per = digits_per_sequence * 8
    for i in range(count):
        np.savez(folder / f"seq{i:02d}.npz", x=rows[start + i * per:start + (i + 1) * per])
    return folder
