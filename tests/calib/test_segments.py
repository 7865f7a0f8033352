"""Cutting a model into consecutive pieces: every node runs once, the pieces give what the whole model gives."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from trtq.calib import collect, segments
from trtq.calib.collect import CollectionReport, collect_histograms
from trtq.calib.segments import cut_segments, value_types
from trtq.ort import create_session


def skip_model(width: int = 2048) -> onnx.ModelProto:
    """x -> a -> b -> Split(c1, c2) -> d = c1 * k (k a Constant) -> e = d + a (a skip from the first piece) -> y."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width // 2])
    nodes = [
        helper.make_node("Constant", [], ["k"], value=helper.make_tensor("kv", TensorProto.FLOAT, [1], [0.5])),
        helper.make_node("Add", ["x", "one"], ["a"], name="add_one"),
        helper.make_node("Mul", ["a", "two"], ["b"], name="mul_two"),
        helper.make_node("Split", ["b", "halves"], ["c1", "c2"], name="split", axis=1),
        helper.make_node("Mul", ["c1", "k"], ["d"], name="mul_k"),
        helper.make_node("Slice", ["a", "starts", "ends", "axes"], ["a_half"], name="slice"),
        helper.make_node("Add", ["d", "a_half"], ["e"], name="skip_add"),
        helper.make_node("Sub", ["e", "c2"], ["y"], name="sub"),
    ]
    inits = [helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0]),
             helper.make_tensor("two", TensorProto.FLOAT, [1], [-2.0]),
             helper.make_tensor("halves", TensorProto.INT64, [2], [width // 2, width // 2]),
             helper.make_tensor("starts", TensorProto.INT64, [1], [0]),
             helper.make_tensor("ends", TensorProto.INT64, [1], [width // 2]),
             helper.make_tensor("axes", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "skip", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _run_pieces(pieces, feed):
    carried, values = {}, {}
    for piece in pieces:
        session = create_session(piece.model)
        out = dict(zip(piece.outputs, session.run(piece.outputs, {n: carried.get(n, feed.get(n)) for n in piece.inputs})))
        values.update({n: out[n] for n in piece.observed})
        carried.update({n: out[n] for n in piece.carry})
        for name in piece.release:
            carried.pop(name)
    return values, carried


def test_pieces_run_every_node_once_and_give_the_whole_models_values():
    model = skip_model()
    observed = ["a", "b", "c1", "c2", "d", "a_half", "e", "y"]
    groups = [["a", "b", "c1"], ["c2", "d", "a_half"], ["e", "y"]]  # a Split's outputs in two groups
    pieces = cut_segments(model, groups, value_types(model))
    assert pieces is not None and len(pieces) == 3
    ran = [node.name for piece in pieces for node in piece.model.graph.node if node.op_type != "Constant"]
    assert sorted(ran) == sorted(n.name for n in model.graph.node if n.op_type != "Constant")  # each once
    assert [p.observed for p in pieces] == [["a", "b", "c1", "c2"], ["d", "a_half"], ["e", "y"]]
    assert "c2" in pieces[0].carry and "c2" not in pieces[1].inputs and "c2" in pieces[2].inputs  # over a piece
    assert "a" in pieces[1].inputs and "a" in pieces[1].release and "a" not in pieces[2].inputs
    feed = {"x": np.random.default_rng(0).standard_normal((3, 2048)).astype(np.float32)}
    values, left = _run_pieces(pieces, feed)
    whole = create_session(collect.augmented_model(model, observed)).run(observed, feed)
    for name, expected in zip(observed, whole):
        np.testing.assert_array_equal(values[name], expected)
    assert left == {}  # nothing carried past the last piece that reads it


def test_a_model_without_types_is_not_cut():
    model = skip_model()
    assert cut_segments(model, [["a", "b"], ["c1", "y"]], {}) is None
    assert cut_segments(model, [["a", "b", "y"]], value_types(model)) is None  # one group: nothing to cut


def _budgeted(monkeypatch, model, batches, per_run_bytes):
    monkeypatch.setattr(collect, "_current_rss", lambda: 0)
    monkeypatch.setattr(collect, "MIN_ACTIVATION_BUDGET", 1)
    report = CollectionReport()
    budget = per_run_bytes * collect.ALIVE_RUNS + model.ByteSize()
    return collect_histograms(model, batches, max_memory=budget, report=report), report


def _same(a, b):
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name].counts, b[name].counts)
        assert a[name].range == b[name].range and a[name].max_abs == b[name].max_abs


def test_collection_over_budget_runs_pieces_with_the_same_histograms(monkeypatch):
    """One sample's activations over a run's share: the graph runs in pieces (each node once per sample, counted
    by the pieces' runs), and the histograms are those of an unbounded collection; without types it groups."""
    model = skip_model()
    rng = np.random.default_rng(1)
    batches = [{"x": rng.standard_t(3, size=(4, 2048)).astype(np.float32)} for _ in range(3)]
    reference = collect_histograms(model, batches, max_memory=None)
    runs = []
    real_cut = segments.cut_segments

    def counting_cut(*args):
        pieces = real_cut(*args)
        runs.append([len(p.model.graph.node) for p in pieces or ()])
        return pieces

    monkeypatch.setattr(segments, "cut_segments", counting_cut)
    pieces_result, report = _budgeted(monkeypatch, model, batches, per_run_bytes=3 * 2048 * 4)
    _same(pieces_result, reference)
    assert report.cut and report.groups > 1 and report.run_batch == 1
    assert runs and sum(runs[-1]) - report.groups + 1 <= len(model.graph.node)  # the Constant aside, each node once

    monkeypatch.setattr(segments, "value_types", lambda model: {})
    grouped, report = _budgeted(monkeypatch, model, batches, per_run_bytes=3 * 2048 * 4)
    _same(grouped, reference)
    assert not report.cut and report.groups > 1
