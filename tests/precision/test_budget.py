"""The accuracy budget (``--max-drop``): decisions measured, fewest layers float, recorded and honoured."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trtq.compare.accumulate import kept_noise
from trtq.compare.decisions import decisions_kept, drop_points
from trtq.compare.struct import Fidelity, MetricScore, OutputMetrics, SampleScores
from trtq.data.spec import DataSpec
from trtq.errors import TrtqError
from trtq.pipeline.calibration import calibrate
from trtq.pipeline.quantization import quantize
from trtq.precision import budget
from trtq.precision.targets import FidelityTarget


def _output(name, agreement=None, iou=None, positions=1, mask=False):
    return OutputMetrics(name, [1, 4], 8, 1.0, 1.0, 30.0, 0.0, 0.0, 1.0, top1_agreement=agreement,
                         mask_axis=1 if mask else None, mask_iou=iou, positions=positions)


def test_decisions_kept_reads_the_worst_decision_masks_by_iou_and_the_users_metric_first():
    masks = [_output("mask", agreement=0.999, iou=0.95, positions=64, mask=True), _output("cls", agreement=0.97)]
    assert decisions_kept(masks) == ("mask IoU of 'mask'", 0.95)  # per-pixel agreement hides the loss
    assert decisions_kept([_output("cls", agreement=0.97), _output("emb")]) == (
        "top-1 agreement of 'cls'", 0.97)
    assert decisions_kept([_output("emb")]) is None
    with_metric = fidelity_with([_output("cls", agreement=0.5)], MetricScore("task", 0.99, 8))
    assert decisions_kept(with_metric) == ("metric task", 0.99)
    assert drop_points(0.985) == pytest.approx(1.5)


def _scored(name, agree, mask_iou=None):
    """An output with per-sample decisions: ``agree`` [n] of 1 position each (or per-sample mask IoU)."""
    agree = np.asarray(agree, dtype=np.int64)
    n = len(agree)
    zeros = np.zeros((n, 0))
    scores = SampleScores(np.ones(n), np.zeros(n), zeros, zeros, zeros, zeros, agree, np.ones(n, dtype=np.int64),
                          None if mask_iou is None else np.asarray(mask_iou, dtype=np.float64))
    if mask_iou is not None:
        return OutputMetrics(name, [1, 1, 8, 8], n, 1.0, 1.0, 30.0, 0.0, 0.0, 1.0, top1_agreement=1.0,
                             mask_axis=1, mask_iou=float(np.mean(mask_iou)), positions=64, per_sample=scores)
    return OutputMetrics(name, [1, 4], n, 1.0, 1.0, 30.0, 0.0, 0.0, 1.0, top1_agreement=float(agree.mean()),
                         positions=1, per_sample=scores)


def test_the_noise_of_the_decisions_kept_is_the_bootstrap_deviation_of_the_decision_that_lost_most():
    assert kept_noise([_scored("cls", [1] * 100)]) == 0.0  # nothing lost: nothing to resample
    one_lost = kept_noise([_scored("cls", [1] * 99 + [0])])
    assert one_lost == pytest.approx(np.sqrt(0.99 * 0.01 / 100), rel=0.3)  # a proportion's standard error
    # the mask decides by IoU (its pixels all agree here); the classifier beside it lost nothing
    masks = [_scored("mask", [1] * 50, mask_iou=[1.0] * 25 + [0.8] * 25), _scored("cls", [1] * 50)]
    assert kept_noise(masks) == pytest.approx(0.1 / np.sqrt(50), rel=0.3)
    assert kept_noise([_output("emb")]) is None


def test_a_budget_met_on_the_held_back_samples_only_within_their_noise_is_not_met():
    """99 of 100 decisions kept is 1.0 point lost, exactly a 1-point budget; with the samples' noise it is not."""
    class Replay(_FakeReplay):
        samples = 100

        def score(self, model, threads=None):
            dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
            quantized = {n.name for n in model.graph.node if n.input and n.input[0] in dequantized}
            lost = 0 if "conv1" not in quantized else 1
            return [_scored("y", [1] * (100 - lost) + [0] * lost)]

    import _toys

    model = _toys.classifier()
    amax = _toys.activation_amax(model, _toys.images(4))
    outcome = budget.BudgetOutcome(1.0, "top-1", 1.0, 1.0, False, [], 100)
    measure = budget._Measure(model, amax, Replay(None), 0.99, (), None, outcome)
    assert measure([["conv2"]], "double")[:2] == (False, 0.99)
    assert measure([["conv1"]], "double")[:2] == (True, 1.0)
    assert outcome.steps[0]["noise"] > 0.5 and outcome.steps[1]["noise"] == 0.0


def fidelity_with(outputs, metric):
    fidelity = Fidelity(outputs)
    fidelity.metric = metric
    return fidelity


class _FakeReplay:
    """Decisions kept as a function of which layers are float (read from the Q/DQ model's quantized nodes)."""

    samples = 8

    def __init__(self, kept_of):
        self.kept_of = kept_of

    def score(self, model, threads=None):
        dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
        quantized = {n.name for n in model.graph.node if n.input and n.input[0] in dequantized}
        float_nodes = frozenset({"conv1", "conv2", "fc"} - quantized)
        return [_output("y", agreement=self.kept_of(float_nodes))]


def _measure(kept_of, outcome=None):
    import _toys

    model = _toys.classifier()
    amax = _toys.activation_amax(model, _toys.images(4))
    outcome = outcome or budget.BudgetOutcome(1.0, "top-1", 10.0, 10.0, False, [], 8)
    return budget._Measure(model, amax, _FakeReplay(kept_of), 0.99, (), None, outcome)


def test_the_shortest_prefix_is_found_by_doubling_then_bisection():
    """Ranked groups g0..g4; the decisions hold once g0..g2 are float: 1, 2, 4 (holds), then 3 (holds)."""
    groups = [["conv1"], ["conv2"], ["fc"], ["x1"], ["x2"]]
    needed = {"conv1", "conv2", "fc"}
    measure = _measure(lambda float_nodes: 1.0 if needed <= float_nodes else 0.5)
    k, metrics, best = budget.shortest_prefix(groups, measure, None)
    assert k == 3 and metrics[0].top1_agreement == 1.0
    assert [(s["phase"], s["layers"]) for s in measure.outcome.steps] == [
        ("double", 1), ("double", 2), ("double", 4), ("bisect", 3)]
    assert budget.shortest_prefix(groups, _measure(lambda float_nodes: 0.5), None)[:2] == (0, None)
    assert budget.shortest_prefix(groups, measure, 2)[:2] == (0, None)  # --max-layers 2: not within reach


def test_pruning_quantizes_again_a_group_the_budget_holds_without():
    """The prefix conv1, conv2 keeps the decisions; conv2 alone does too: conv1 is INT8 again."""
    measure = _measure(lambda float_nodes: 1.0 if "conv2" in float_nodes else 0.9)
    groups, dropped, metrics = budget.prune([["conv1"], ["conv2"]], measure)
    assert groups == [["conv2"]] and dropped == ["conv1"] and metrics[0].top1_agreement == 1.0
    needs_both = _measure(lambda float_nodes: 1.0 if {"conv1", "conv2"} <= float_nodes else 0.9)
    assert budget.prune([["conv1"], ["conv2"]], needs_both)[:2] == ([["conv1"], ["conv2"]], [])


def _outlier_data(tmp_path, count=48, outlier=1000.0):
    import _toys

    tmp_path.mkdir(parents=True, exist_ok=True)
    model = _toys.save(_toys.classifier(first_weight_scale=(1e-3, 1.0, 1.0)), tmp_path / "m.onnx")
    data = tmp_path / "data"
    data.mkdir()
    for i, sample in enumerate(_toys.images(count, seed=7, outlier_channel=outlier)):
        np.save(data / f"{i:04d}.npy", sample[None])
    return model, data


def test_max_drop_leaves_the_costly_layer_float_records_it_and_quantize_applies_it(tmp_path, capsys):
    """conv1's input has one channel ~1000x the others that conv1 barely uses: fully INT8 loses decisions; the
    budget leaves conv1 in float, the sidecar records it with the decisions reached and the latency, and
    quantize --cache applies it."""
    from trtq.cli import main

    model, data = _outlier_data(tmp_path)
    plain = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax",
                               class_outputs=["y"])
    lost = drop_points(decisions_kept(plain.verdict.outputs)[1])
    assert lost > 1.0
    cache = tmp_path / "m.calib.cache"
    assert main(["calibrate", model, "--calib", str(data), "--samples", "all", "--algo", "minmax",
                 "--class-output", "y", "-o", str(cache), "--max-drop", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "budget: decisions within 1 point(s)" in out and "float: conv1" in out and "CPU latency" in out
    record = json.loads((tmp_path / "m.calib.cache.json").read_text())["mixed_precision"]
    assert record["float_layers"] == ["conv1"] and record["target"] == {"max_drop": 1.0}
    assert "not checked on samples the search never read (give at least 288 calibration samples" in out
    assert record["source"] == "trtq calibrate --max-drop 1"
    assert record["reached"] <= 1.0 and record["budget"]["start_drop"] == pytest.approx(lost)
    assert record["budget"]["latency"]["float_ms"] > 0 and record["budget"]["latency"]["mixed_ms"] > 0
    outcome = quantize(model, tmp_path / "q.onnx", cache=cache)
    assert outcome.float_layers == ["conv1"] and "conv1" not in outcome.summary.quantized
    from trtq.deploy.calibration import read_calibration

    assert read_calibration(cache).float_layers == ["conv1"]  # what the Triton and DeepStream writers keep float
    calibrated = quantize(model, tmp_path / "q2.onnx", calib=DataSpec(path=str(data), samples=None),
                                   algorithm="minmax", class_outputs=["y"],
                                   fidelity=FidelityTarget(max_drop=1))
    assert calibrated.float_layers == ["conv1"] and calibrated.mixed_precision["budget"]["met"]


def test_max_drop_already_met_records_the_budget_with_no_layer(tmp_path):
    model, data = _outlier_data(tmp_path, outlier=None)
    result = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax",
                                class_outputs=["y"], target=FidelityTarget(max_drop=50))
    assert result.mixed_precision.met and result.mixed_precision.excluded == []
    record = result.sidecar["mixed_precision"]
    assert record["float_layers"] == [] and record["budget"]["met"]


def test_max_drop_needs_a_decision_and_a_range(tmp_path, capsys):
    from trtq.cli import main

    model, data = _outlier_data(tmp_path)
    with pytest.raises(TrtqError, match="--max-drop budgets decisions"):
        calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax",
                           target=FidelityTarget(max_drop=1))
    for bad in ("-1", "100", "nan"):
        assert main(["calibrate", model, "--calib", str(data), "--max-drop", bad]) == 2
        assert "--max-drop" in capsys.readouterr().err
    assert main(["calibrate", model, "--calib", str(data), "--max-drop", "1", "--target-snr", "20"]) == 2


def test_max_drop_on_a_model_that_decides_nothing_is_refused_before_any_work(tmp_path, monkeypatch):
    """An embedding model (no class axis, no mask in its signature) and no --metric / --class-output: refused at
    once, not after the statistics and the choice (MiniLM: half a minute)."""
    import trtq.calib.collect as collect_module

    model, data = _outlier_data(tmp_path)

    def no_statistics(*args, **kwargs):
        raise AssertionError("the statistics ran before the refusal")

    monkeypatch.setattr(collect_module, "collect_histograms", no_statistics)
    with pytest.raises(TrtqError, match="--max-drop budgets decisions.*m.onnx"):
        calibrate(model, DataSpec(path=str(data), samples=None), target=FidelityTarget(max_drop=1))
    monkeypatch.undo()
    result = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax", class_outputs=["y"],
                       target=FidelityTarget(max_drop=50))  # named: it decides
    assert result.mixed_precision.met


def test_the_verdict_prints_the_budget_command_when_decisions_drop_more_than_a_point(tmp_path, capsys):
    from trtq.cli import main

    model, data = _outlier_data(tmp_path)
    cache = tmp_path / "m.calib.cache"
    assert main(["calibrate", model, "--calib", str(data), "--algo", "minmax", "--class-output", "y",
                 "-o", str(cache), "--batch-size", "4", "--samples", "all", "--seed", "3"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "budget: top-1 agreement of 'y' lost 100.0 points against FP32" in out
    # the user's command, every option kept (the data options too: other samples calibrate another model)
    assert (f"trtq calibrate {model} --calib {data} --samples all --batch-size 4 --seed 3 --output {cache} "
            "--algo minmax --class-output y --max-drop 1") in out
    drop = json.loads((tmp_path / "m.calib.cache.json").read_text())["verdict"]["decision_drop"]
    assert drop == {"decision": "top-1 agreement of 'y'", "points": 100.0}
    assert main(["calibrate", model, "--calib", str(data), "--algo", "minmax", "--class-output", "y",
                 "-o", str(cache), "--max-drop", "1"]) == 0
    assert "budget: top-1" not in capsys.readouterr().out  # the budget ran: no hint
    clean, clean_data = _outlier_data(tmp_path / "clean", outlier=None)
    assert main(["calibrate", clean, "--calib", str(clean_data), "--class-output", "y"]) == 0
    assert "--max-drop 1" not in capsys.readouterr().out  # within a point: no hint


def test_lost_decisions_come_with_the_layers_a_budget_would_need_and_fine_ones_cost_nothing(tmp_path, capsys,
                                                                                           monkeypatch):
    """The default run (no budget asked for) that lost more than a point estimates, from one sensitivity run and
    the prefix search, how many layers --max-drop 1 would leave float: the count the budget then reaches. A run
    whose decisions are fine never ranks a layer."""
    from trtq.cli import main
    from trtq.precision import search

    model, data = _outlier_data(tmp_path)
    cache = tmp_path / "m.calib.cache"
    assert main(["calibrate", model, "--calib", str(data), "--algo", "minmax", "--class-output", "y",
                 "-o", str(cache)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    estimate = json.loads((tmp_path / "m.calib.cache.json").read_text())["verdict"]["budget_estimate"]
    assert estimate["layers"] == 1 and estimate["ranked"] == 3 and estimate["measured"] >= 1
    assert (f"about 1 of 3 layers in float keep it within 1 point (estimated on {estimate['samples']} held-back "
            "samples") in out
    budgeted = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax", class_outputs=["y"],
                         target=FidelityTarget(max_drop=1))
    assert len(budgeted.sidecar["mixed_precision"]["float_layers"]) == estimate["layers"]
    assert budgeted.verdict.budget_estimate is None  # the budget ran: nothing to estimate

    def no_ranking(*args, **kwargs):
        raise AssertionError("a result whose decisions are fine paid for a sensitivity run")

    monkeypatch.setattr(search, "layer_sensitivity", no_ranking)
    # a model whose batch's activations exceed --max-memory (the statistics ran fewer samples at a time): the
    # estimate's single run would hold them all at once, so it says why there is no count instead
    tight = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax", class_outputs=["y"],
                      max_memory=1)
    assert tight.collection.run_batch < tight.collection.data_batch
    assert tight.verdict.budget_estimate["not_estimated"].startswith("a batch's activations exceed --max-memory")
    clean, clean_data = _outlier_data(tmp_path / "clean", outlier=None)
    fine = calibrate(clean, DataSpec(path=str(clean_data), samples=None), class_outputs=["y"])
    assert fine.verdict.budget_estimate is None and fine.sidecar["verdict"]["budget_estimate"] is None


def test_the_estimate_says_when_no_prefix_keeps_the_budget(monkeypatch):
    """Every prefix measured loses more than the budget: no count, the fewest points lost instead."""
    import _toys

    import trtq.precision.search as search
    from trtq.compare.struct import LayerSensitivity

    class Replay(_FakeReplay):
        def tensors(self, *args, **kwargs):
            raise AssertionError("not reached: the ranking is given")

    model = _toys.classifier()
    amax = _toys.activation_amax(model, _toys.images(4))
    ranking = [LayerSensitivity(layer=n, op_type="Conv", own_snr_db=10.0 + i) for i, n in
               enumerate(("conv1", "conv2", "fc"))]
    monkeypatch.setattr(search, "layer_sensitivity", lambda *args, **kwargs: ranking)
    estimate = budget.estimate_budget(model, amax, Replay(lambda float_nodes: 0.9 + 0.02 * len(float_nodes)),
                                      [_output("y", agreement=0.9)], 1.0)
    assert estimate.layers is None and estimate.ranked == 3 and estimate.best_points == pytest.approx(4.0)
    assert estimate.measured == 3  # 1, 2, then all 3 layers: bounded by the doubling


def test_the_check_holds_back_its_own_samples_beside_the_held_back_ones_and_the_reserve(tmp_path):
    """A budget holds back up to BUDGET_CHECK_SAMPLES more samples (a third of the data at most, less those already
    held back), disjoint from the statistics, the held-back samples and the reserve; too few data: none."""
    from trtq.pipeline.calibration import _split_data
    from trtq.pipeline.holdout import budget_check_count, budget_check_needs
    from trtq.progress import no_progress

    assert budget_check_count(None, 64) == 192 and budget_check_count(600, 64) == 136
    assert budget_check_count(1000, 64) == 192 and budget_check_count(250, 64) == 0  # 19 < BUDGET_CHECK_MIN
    assert budget_check_needs() == 288  # 32 held back + 32 reserve + 32 checked, a third of 288
    model, data = _outlier_data(tmp_path, count=300)
    split = _split_data(_load(model), DataSpec(path=str(data), samples=None, batch_size=8, shuffle=False), [], 32,
                        "auto", None, no_progress, budget=True)
    counts = [sum(len(f["x"]) for f in feeds) for feeds in (split.held, split.reserve_feeds, split.check_feeds)]
    assert counts == [32, 32, 36] and split.stats_total == 300 - 100
    seen = [f["x"] for feeds in (split.held, split.reserve_feeds, split.check_feeds, split.batches) for f in feeds]
    rows = np.concatenate(seen).reshape(300, -1)
    assert len(np.unique(rows, axis=0)) == 300  # every sample once: nothing the search reads is checked again
    plain = _split_data(_load(model), DataSpec(path=str(data), samples=None, batch_size=8, shuffle=False), [], 32,
                        "auto", None, no_progress)
    assert plain.check_feeds == [] and plain.stats_total == 300 - 64


def _load(path):
    from trtq.graph.model import load_onnx

    return load_onnx(path)


def _per_sample(name, lost, samples, err=1.0):
    """A classifier output scored on ``samples`` samples, the first ``lost`` of which changed their top-1;
    ``err``: the squared error of every sample (0: identical to FP32)."""
    agree = np.array([0] * lost + [1] * (samples - lost), dtype=np.int64)
    zeros = np.zeros((samples, 0))
    scores = SampleScores(np.ones(samples), np.full(samples, err), zeros, zeros, zeros, zeros, agree,
                          np.ones(samples, dtype=np.int64), None)
    return OutputMetrics(name, [1, 4], samples, 1.0, 1.0, 30.0, 0.0, 0.0, 1.0, top1_agreement=float(agree.mean()),
                         positions=1, per_sample=scores)


def test_the_checks_margin_is_at_least_one_more_sample_lost_where_the_outputs_differ():
    """No sample lost a decision: the bootstrap sees no spread, yet one more sample like those INT8 loses is the
    least that count can miss; a model identical to FP32 can lose nothing, on any sample."""
    lossy = [_per_sample("y", 0, 100)]
    assert budget.noise_margin(lossy, 2.0) == 0.0  # the bootstrap alone: "+- 0"
    assert budget.noise_margin(lossy, 2.0, typical=1.0) == pytest.approx(0.01)
    assert budget.noise_margin([_per_sample("y", 0, 100, err=0.0)], 2.0, typical=1.0) == 0.0
    assert budget.typical_loss([_per_sample("y", 3, 100)]) == pytest.approx(1.0)
    mask = [_scored("mask", [1] * 50, mask_iou=[1.0] * 40 + [0.8] * 10)]
    assert budget.typical_loss(mask) == pytest.approx(0.2) and budget.typical_loss(lossy) == 0.0
    assert budget.noise_margin([_per_sample("y", 2, 100)], 2.0, typical=1.0) > 0.02  # the spread, when larger


def test_the_check_leaves_more_of_the_ranking_float_where_the_searchs_choice_fails_on_unseen_samples():
    """The search kept conv1 float (enough on its samples); on the check's samples that still loses 2 points,
    so the check doubles the prefix: conv1 and conv2 float keep every decision there."""
    import _toys

    lost_of = {frozenset(): 10, frozenset({"conv1"}): 4}

    class Check(_FakeReplay):
        samples = 200

        def score(self, model, threads=None):
            dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
            quantized = {n.name for n in model.graph.node if n.input and n.input[0] in dequantized}
            float_nodes = frozenset({"conv1", "conv2", "fc"} - quantized)
            return [_per_sample("y", lost_of.get(float_nodes, 0), 200)]

    model = _toys.classifier()
    amax = _toys.activation_amax(model, _toys.images(4))
    outcome = budget.BudgetOutcome(1.0, "top-1", 5.0, 0.0, True, ["conv1"], 64)
    metrics = budget._check(model, amax, Check(None), outcome, lambda: [["conv1"], ["conv2"], ["fc"]], 1, 0.99,
                            exclude=(), max_layers=None, threads=None, typical=1.0)
    assert outcome.met and outcome.float_layers == ["conv1", "conv2"] and outcome.widened == ["conv2"]
    assert outcome.check_samples == 200 and outcome.check_start_points == pytest.approx(5.0)
    assert outcome.check_points == 0.0 and outcome.check_noise_points == pytest.approx(0.5)  # one sample of 200
    assert metrics[0].top1_agreement == 1.0
    assert [(s["phase"], s["layers"]) for s in outcome.steps] == [("check", 1), ("check", 2)]
    assert "on 200 samples the search never read" in outcome.line() and "1 more layer(s) float" in outcome.line()
    capped = budget.BudgetOutcome(1.0, "top-1", 5.0, 0.0, True, ["conv1"], 64)
    budget._check(model, amax, Check(None), capped, lambda: [["conv1"], ["conv2"], ["fc"]], 1, 0.99,
                  exclude=(), max_layers=1, threads=None, typical=1.0)
    assert not capped.met and capped.float_layers == []  # --max-layers 1: the check cannot widen


def test_max_drop_with_enough_samples_is_judged_on_samples_its_search_never_read(tmp_path):
    """With 300 samples the budget searches on 64 held-back ones and checks on 36 more; the verdict and the
    recorded points are the check's."""
    model, data = _outlier_data(tmp_path, count=300)
    result = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax", class_outputs=["y"],
                       target=FidelityTarget(max_drop=1))
    outcome = result.mixed_precision.budget
    assert outcome.met and outcome.samples == 64 and outcome.check_samples == 36
    assert result.verdict.samples == 36 and "samples the search never read" in outcome.line()
    record = result.sidecar["mixed_precision"]
    assert record["reached"] == outcome.check_points and record["budget"]["check"]["samples"] == 36
