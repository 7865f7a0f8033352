"""Comparison (trtq.compare), evaluation and mixed precision: fidelity metrics against numpy references, streaming, accuracy, sensitivity, mixed precision."""

from __future__ import annotations

import json
import math
import re

import _toys
import numpy as np
import onnxruntime as ort
import pytest

from trtq import defaults
from trtq.compare.accumulate import AccuracyAccumulator, OutputAccumulator, compare_outputs, padding_mask
from trtq.compare.decisions import decision_axes, decision_of, feature_axes, feature_axis, parse_class_output, worst_of
from trtq.compare.metrics import (
    channel_groups,
    class_scores,
    cosine_similarity,
    max_abs_error,
    snr_db,
    top1_accuracy,
    topk_agreement,
)
from trtq.compare.struct import LayerSensitivity
from trtq.compare.usermetric import UserMetric
from trtq.compare.verdict import Verdict
from trtq.errors import DataError, TrtqError
from trtq.graph.qdq import amax_from_qdq, qdq_form
from trtq.pipeline.evaluation import evaluate, resolve_amax
from trtq.precision.search import auto_exclude, layer_sensitivity, sort_sensitivity
from trtq.runtime.replay import Replay


def outputs(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def np_cos(a, b):
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


# --------------------------------------------------------------------------- pure math


def test_metrics_match_numpy():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 12)).astype(np.float32)
    cand = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.1
    assert cosine_similarity(ref, cand) == pytest.approx(np_cos(ref, cand), rel=1e-12)
    r64, c64 = ref.astype(np.float64), cand.astype(np.float64)
    assert snr_db(ref, cand) == pytest.approx(10 * np.log10(np.sum(r64 ** 2) / np.sum((r64 - c64) ** 2)), rel=1e-12)
    assert max_abs_error(ref, cand) == pytest.approx(np.max(np.abs(r64 - c64)))
    assert topk_agreement(ref, cand, 1) == pytest.approx(np.mean(ref.argmax(1) == cand.argmax(1)))
    top5 = np.argsort(-cand, axis=1)[:, :5]
    expected = np.mean([ref[i].argmax() in top5[i] for i in range(len(ref))])
    assert topk_agreement(ref, cand, 5) == pytest.approx(expected)
    labels = rng.integers(0, 12, 50)
    assert top1_accuracy(ref, labels) == pytest.approx(np.mean(ref.argmax(1) == labels))


def test_edge_cases():
    x = np.arange(6, dtype=np.float32)
    assert snr_db(x, x) == math.inf
    assert snr_db(np.zeros(3), np.ones(3)) == -math.inf
    assert cosine_similarity(np.zeros(3), np.zeros(3)) == 1.0
    assert cosine_similarity(np.zeros(3), np.ones(3)) == 0.0
    assert cosine_similarity(x, -x) == pytest.approx(-1.0)
    zeros = OutputAccumulator("z")
    zeros.update(np.zeros((2, 3)), np.zeros((2, 3)))
    assert zeros.metrics().cosine_min == 1.0 and zeros.metrics().snr_db == math.inf
    zeros.update(np.array([[1.0, 0, 0]]), np.zeros((1, 3)))
    assert zeros.metrics().cosine_min == 0.0


def test_class_score_heuristic():
    assert class_scores(np.zeros((4, 10), np.float32)).shape == (4, 10)
    assert class_scores(np.zeros((4, 10, 1, 1), np.float32)).shape == (4, 10)
    assert class_scores(np.zeros((4, 22, 2100), np.float32)) is None  # a detection head
    assert class_scores(np.zeros((4, 1), np.float32)) is None
    assert class_scores(np.zeros((4, 10), np.int64)) is None


def test_streaming_equals_one_shot():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((37, 20)).astype(np.float32)
    cand = ref + rng.standard_normal(ref.shape).astype(np.float32) * 0.3
    acc = OutputAccumulator("y", scores=True)
    for start, stop in ((0, 5), (5, 6), (6, 30), (30, 37)):
        acc.update(ref[start:stop], cand[start:stop])
    m = acc.metrics()
    assert m.samples == 37 and m.shape == [5, 20] and m.classes == 20
    assert m.cosine == pytest.approx(cosine_similarity(ref, cand), rel=1e-12)
    assert m.snr_db == pytest.approx(snr_db(ref, cand), rel=1e-12)
    assert m.max_abs_error == pytest.approx(max_abs_error(ref, cand))
    assert m.mean_abs_error == pytest.approx(np.mean(np.abs(ref.astype(np.float64) - cand)), rel=1e-12)
    assert m.ref_abs_max == pytest.approx(np.abs(ref).max())
    assert m.cosine_min == pytest.approx(min(np_cos(r, c) for r, c in zip(ref, cand)), rel=1e-12)
    assert m.cosine_mean == pytest.approx(np.mean([np_cos(r, c) for r, c in zip(ref, cand)]), rel=1e-12)
    assert m.top1_agreement == pytest.approx(topk_agreement(ref, cand, 1))
    assert m.top5_agreement == pytest.approx(topk_agreement(ref, cand, 5))


def test_few_classes_have_no_top5_and_a_declared_map_is_judged_per_position():
    rng = np.random.default_rng(2)
    few = compare_outputs([({"y": rng.random((4, 5))}, {"y": rng.random((4, 5))})], class_outputs=["y"])[0]
    assert few.top1_agreement is not None and few.top5_agreement is None
    ref, cand = rng.random((2, 4, 8, 8)), rng.random((2, 4, 8, 8))
    fmap = compare_outputs([({"f": ref}, {"f": cand})], class_outputs=["f"])[0]  # [N, C, H, W]: axis 1
    agree = np.argmax(ref, axis=1) == np.argmax(cand, axis=1)
    assert fmap.class_axis == 1 and fmap.classes == 4 and fmap.positions == 64 and fmap.top5_agreement is None
    assert fmap.top1_agreement == pytest.approx(agree.mean())
    assert fmap.sample_agreement == pytest.approx(agree.reshape(2, -1).all(axis=1).mean())


def test_an_undeclared_output_is_never_scored_as_classes():
    """A 384-wide embedding is [N, C] too: its argmax means nothing unless the user says it is class scores."""
    rng = np.random.default_rng(3)
    embedding = rng.standard_normal((8, 384))
    (m,) = compare_outputs([({"e": embedding}, {"e": embedding + 0.1})])
    assert m.classes is None and m.top1_agreement is None and m.cosine > 0.99


def _detection_head(rng, n=6, anchors=300, classes=18):
    """[N, 4 + classes, A]: boxes in pixels (0-320) and sigmoid class scores, as YOLOv8 lays them out."""
    boxes = rng.uniform(0, 320, (n, 4, anchors))
    scores = 1 / (1 + np.exp(-rng.normal(-6, 2, (n, classes, anchors))))
    return np.concatenate([boxes, scores], axis=1)


def test_channel_groups_split_boxes_from_scores_only():
    rng = np.random.default_rng(4)
    head = _detection_head(rng)
    groups = channel_groups(head)
    assert [(g.axis, g.start, g.stop) for g in groups] == [(1, 0, 4), (1, 4, 22)]
    transposed = np.swapaxes(head, 1, 2)  # [N, A, 22], YOLOv5 style: channels on the last axis
    assert [(g.axis, g.start, g.stop) for g in channel_groups(transposed)] == [(2, 0, 4), (2, 4, 22)]
    # one kind of channel: feature maps, embeddings, logits of uneven classes are never split
    assert channel_groups(rng.standard_normal((2, 16, 8, 8)) * np.linspace(0.5, 4, 16)[None, :, None, None]) == []
    assert channel_groups(rng.standard_normal((4, 384))) == []
    assert channel_groups(rng.standard_normal((2, 40, 97))) == []


def test_worst_channel_group_exposes_a_broken_part_the_whole_snr_hides():
    """80 classes + 4 box rows (a COCO head): too wide to judge each channel, so two groups."""
    rng = np.random.default_rng(5)
    head = _detection_head(rng, classes=80)
    broken = head.copy()
    broken[:, 4:] += rng.normal(0, 0.05, broken[:, 4:].shape)  # scores ruined, boxes intact
    (m,) = compare_outputs([({"out": head}, {"out": broken})])
    boxes, scores = m.groups
    assert m.channel_axis is None and not m.channels
    assert m.snr_db > 50 and boxes.snr_db == math.inf
    assert scores.snr_db == pytest.approx(snr_db(head[:, 4:], broken[:, 4:]), rel=1e-9) and scores.snr_db < 10
    assert m.worst_snr_db == scores.snr_db


def test_a_small_feature_axis_is_judged_channel_by_channel():
    """[N, 4 + 18, A]: every channel on its own; the worst names the output and the channel, groups are not
    needed (a group's SNR is never below its worst channel's)."""
    rng = np.random.default_rng(5)
    head = _detection_head(rng)
    broken = head.copy()
    broken[:, 7] += rng.normal(0, 0.05, broken[:, 7].shape)  # one class channel ruined
    (m,) = compare_outputs([({"out": head}, {"out": broken})])
    assert m.channel_axis == 1 and not m.groups and len(m.channels) == 22
    assert m.worst_channel == ("'out'[:, 7, ...]", pytest.approx(snr_db(head[:, 7], broken[:, 7]), rel=1e-9))
    assert m.worst_snr_db == m.worst_channel[1] < 10 < m.snr_db


def test_verdict_warns_when_poor_and_gates_fail():
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((16, 10))
    good = Verdict(compare_outputs([({"y": ref}, {"y": ref + 0.001})]), 16)
    assert not good.poor and good.warning() is None and good.failure(min_snr_db=30, min_cosine=0.999) is None
    poor = Verdict(compare_outputs([({"y": ref}, {"y": ref + rng.standard_normal(ref.shape) * 0.5})]), 16)
    assert poor.poor and re.fullmatch(r"INT8 output 'y' is poor: SNR 6\.\d\d dB < 20 dB, cosine 0\.\d{4} < 0\.99",
                                      poor.warning()), poor.warning()
    assert "--min-snr 20" in poor.failure(min_snr_db=20) and poor.failure(min_cosine=0.5) is None
    record = poor.to_dict()
    assert record["warning"] == poor.warning() and record["snr_db"] == poor.snr_db


def test_verdict_warning_names_only_the_test_that_failed():
    """SNR above its threshold, cosine below: the warning states the cosine, with its value, and no SNR inequality."""
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((16, 10))
    verdict = Verdict(compare_outputs([({"y": ref}, {"y": ref + rng.standard_normal(ref.shape) * 0.5})]), 16,
                         min_snr_db=5)
    warning = verdict.warning()
    assert re.fullmatch(r"INT8 output 'y' is poor: cosine 0\.\d{4} < 0\.99", warning), warning
    assert "inf" not in warning and "SNR" not in warning
    assert "cosine 0.8" in verdict.failure(min_cosine=0.95) and "inf" not in verdict.failure(min_cosine=0.95)


def test_user_metric_is_judged_by_its_own_threshold_only():
    """A continuous --metric (0.976 where rounding alone costs that much) is not a "decision changed" at a fixed
    0.99: it is reported, and judged by --min-metric when given; --min-agreement judges top-1 agreement only."""
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((16, 10))
    metric = UserMetric(lambda r, c, i: 0.976, "landmarks", "lm.py")
    metrics = compare_outputs([({"y": ref}, {"y": ref + 0.001})], metric=metric,
                                 feeds=[{"x": np.zeros((16, 1))}])
    unjudged = Verdict(metrics, 16)
    assert not unjudged.poor and unjudged.warning() is None and "0.976" in unjudged.line()
    judged = Verdict(metrics, 16, min_metric=0.98)
    assert judged.poor and "metric landmarks 0.976 < 0.98" in judged.warning()
    assert "metric landmarks 0.976 < --min-metric 0.98" in unjudged.failure(min_metric=0.98)
    assert unjudged.failure(min_metric=0.97) is None
    assert "no output with a class axis" in unjudged.failure(min_agreement=0.9)


def test_shape_mismatch_is_reported():
    with pytest.raises(TrtqError, match="shape"):
        OutputAccumulator("y").update(np.zeros((2, 3)), np.zeros((2, 4)))


def test_accuracy_accumulator():
    rng = np.random.default_rng(3)
    ref, cand = rng.random((30, 7)), rng.random((30, 7))
    labels = rng.integers(0, 7, 30)
    labels[:4] = -1  # unlabeled
    acc = AccuracyAccumulator("y")
    acc.update(ref[:10], cand[:10], labels[:10])
    acc.update(ref[10:], cand[10:], labels[10:])
    result = acc.result()
    known = labels >= 0
    assert result.labeled_samples == 26 and result.unlabeled_samples == 4
    assert result.reference_top1 == pytest.approx(top1_accuracy(ref[known], labels[known]))
    assert result.candidate_top1 == pytest.approx(top1_accuracy(cand[known], labels[known]))
    with pytest.raises(DataError, match="out of range"):
        acc.update(ref[:1], cand[:1], np.array([9]))


# --------------------------------------------------------------------------- hand-built Q/DQ models


@pytest.fixture(scope="module")
def toy():
    model = _toys.classifier()
    x = _toys.images(48, seed=5)
    amax = _toys.activation_amax(model, x)
    return model, x, amax


def test_hand_qdq_fidelity_and_forms(toy):
    model, x, amax = toy
    ref = outputs(model, x)[0]
    int8 = outputs(_toys.hand_qdq(model, amax), x)[0]
    uint8 = outputs(_toys.hand_qdq(model, amax, uint8=True), x)[0]
    np.testing.assert_array_equal(int8, uint8)  # uint8 + zero point 128 is the same grid
    m = compare_outputs([({"y": ref[:20]}, {"y": int8[:20]}), ({"y": ref[20:]}, {"y": int8[20:]})],
                           class_outputs=["y"])[0]
    assert m.snr_db == pytest.approx(snr_db(ref, int8), rel=1e-12)
    assert 30 < m.snr_db < 80 and m.cosine > 0.999 and m.top1_agreement >= 0.9


def test_amax_read_back_from_qdq(toy):
    model, _, amax = toy
    for uint8, form in ((False, "trt"), (True, "cpu")):
        qdq = _toys.hand_qdq(model, amax, uint8=uint8)
        found = amax_from_qdq(qdq)
        assert set(found) == {"x", "r1", "f"}  # inputs of conv1, conv2, fc; never weights
        for name, value in found.items():
            assert value == pytest.approx(amax[name], rel=1e-6)
        assert qdq_form(qdq) == form
    assert amax_from_qdq(model) == {}


def test_sort_sensitivity_worst_first():
    rows = [LayerSensitivity("a", "Conv", 40.0), LayerSensitivity("b", "Conv", None, note="x"),
            LayerSensitivity("c", "Conv", float("nan")), LayerSensitivity("d", "Gemm", 12.0)]
    assert [r.layer for r in sort_sensitivity(rows)] == ["c", "d", "a", "b"]


# --------------------------------------------------------------------------- end to end (trtq.data, trtq.graph.qdq)


@pytest.fixture(scope="module")
def files(tmp_path_factory, toy):
    model, x, amax = toy
    folder = tmp_path_factory.mktemp("eval")
    np.save(folder / "held_out.npy", x)
    ref = outputs(model, x)[0]
    labels = ref.argmax(1)
    labels[::4] = (labels[::4] + 1) % 10  # the reference is right on 3 of 4
    np.save(folder / "labels.npy", labels)
    return {
        "reference": _toys.save(model, folder / "toy.onnx"),
        "candidate": _toys.save(_toys.hand_qdq(model, amax, uint8=True), folder / "toy.int8.onnx"),
        "data": str(folder / "held_out.npy"),
        "labels": str(folder / "labels.npy"),
        "x": x,
        "folder": folder,
    }


def test_evaluate_end_to_end(files, toy):
    from trtq.data.spec import DataSpec
    from trtq.report import json_text

    model, x, amax = toy
    seen = []
    report = evaluate(files["reference"], files["candidate"], DataSpec(files["data"], samples=None, batch_size=10),
                         labels=files["labels"], progress=lambda done, total: seen.append((done, total)))
    ref = outputs(model, x)[0]
    cand = outputs(_toys.hand_qdq(model, amax, uint8=True), x)[0]
    assert report.samples == 48 and report.batches == 5 and seen[-1] == (48, 48)
    assert (report.reference_precision, report.candidate_precision) == ("fp32", "int8")
    (m,) = report.outputs
    assert m.snr_db == pytest.approx(snr_db(ref, cand), rel=1e-9)
    assert m.cosine == pytest.approx(cosine_similarity(ref, cand), rel=1e-9)
    assert m.top1_agreement == pytest.approx(topk_agreement(ref, cand, 1))
    labels = np.load(files["labels"])
    assert report.accuracy.reference_top1 == pytest.approx(top1_accuracy(ref, labels)) == pytest.approx(0.75)
    assert report.accuracy.candidate_top1 == pytest.approx(top1_accuracy(cand, labels))
    data = json.loads(json_text(report.to_dict()))
    assert data["outputs"][0]["name"] == "y" and data["accuracy"]["labeled_samples"] == 48


def test_evaluate_identical_models_and_bad_labels(files):
    report = evaluate(files["reference"], files["reference"], files["data"], class_outputs=["y"])
    assert report.outputs[0].snr_db == math.inf and report.outputs[0].top1_agreement == 1.0
    assert evaluate(files["reference"], files["reference"], files["data"]).outputs[0].top1_agreement is None
    with pytest.raises(DataError, match="labels"):
        evaluate(files["reference"], files["candidate"], files["data"], labels=np.zeros(3, np.int64))


@pytest.fixture(scope="module")
def sensitive(tmp_path_factory):
    """conv1 sees an input whose channel 0 is ~1000x the others but barely uses it: one per-tensor
    int8 scale for that input rounds channels 1-2 to zero, so quantizing conv1 ruins the output
    while conv2 and fc quantize well."""
    folder = tmp_path_factory.mktemp("sensitive")
    model = _toys.classifier(first_weight_scale=(1e-3, 1.0, 1.0))
    x = _toys.images(32, seed=7, outlier_channel=1000.0)
    np.save(folder / "x.npy", x)
    amax = _toys.activation_amax(model, x)
    return {"model": model, "amax": amax, "data": str(folder / "x.npy"),
            "path": _toys.save(model, folder / "sensitive.onnx"), "folder": folder,
            "candidate": _toys.save(_toys.hand_qdq(model, amax), folder / "sensitive.int8.onnx")}


def test_sensitivity_ranks_the_outlier_layer_first(sensitive):
    seen = []
    ranking = layer_sensitivity(sensitive["model"], sensitive["amax"], sensitive["data"], samples=16,
                                   progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (1, 1)  # one run, whatever the layer count
    first = ranking[0]
    assert first.layer == "x" and first.layers == ["conv1"] and first.op_type == "Conv" and first.own_snr_db < 5
    assert all(r.own_snr_db > first.own_snr_db + 20 for r in ranking[1:]) and {r.layer for r in ranking} == {"x", "r1", "f"}
    assert [r.layers for r in ranking[1:]] in ([["conv2"], ["fc"]], [["fc"], ["conv2"]])


def test_auto_exclude_leaves_the_sensitive_layer_in_float(sensitive):
    result, model = auto_exclude(sensitive["model"], sensitive["amax"], sensitive["data"], target_snr=30,
                                    samples=16)
    assert result.met and result.excluded == ["conv1"]
    # one round measured the three candidates from the fully quantized model and kept conv1's
    assert [(s.layer, s.kept, s.met) for s in result.steps] == [(None, True, False), ("x", True, True),
                                                                 ("r1", False, False), ("f", False, False)]
    assert result.steps[0].snr_db < 5 and result.steps[1].snr_db >= 30
    assert result.steps[1].latency_ms > 0 and result.float_latency_ms > 0 and result.steps[2].latency_ms is None
    assert "conv1" in result.message
    names = {n.name for n in model.graph.node}
    assert "conv1" in names and not any(n.startswith("x_QuantizeLinear") for n in names)

    replay = Replay.collect(sensitive["model"], sensitive["data"], samples=16)
    with pytest.raises(TrtqError, match="class scores"):
        auto_exclude(sensitive["model"], sensitive["amax"], target_agreement=0.95, replay=replay)
    replay.class_outputs = ("y",)
    agreement, _ = auto_exclude(sensitive["model"], sensitive["amax"], target_agreement=0.95, replay=replay,
                                   measure_speed=False)
    assert agreement.met and agreement.excluded == ["conv1"] and all(s.latency_ms is None for s in agreement.steps)
    cosine, _ = auto_exclude(sensitive["model"], sensitive["amax"], target_cosine=0.999, replay=replay,
                                measure_speed=False)
    assert cosine.met and cosine.excluded == ["conv1"] and cosine.steps[1].cosine >= 0.999
    default, _ = auto_exclude(sensitive["model"], sensitive["amax"], replay=replay, measure_speed=False)
    assert default.target_metric == "snr_db" and default.target == defaults.VERDICT_MIN_SNR_DB and default.met


def test_auto_exclude_reports_an_unreachable_target(sensitive):
    result, _ = auto_exclude(sensitive["model"], sensitive["amax"], sensitive["data"], target_snr=30,
                                max_layers=0, samples=8, measure_speed=False)
    assert not result.met and result.excluded == [] and len(result.steps) == 1
    assert "not met" in result.message and "--max-layers" in result.message
    result, _ = auto_exclude(sensitive["model"], sensitive["amax"], sensitive["data"], target_snr=500,
                                samples=8, max_layers=2, measure_speed=False)
    assert not result.met and len(result.excluded) == 2 and result.excluded[0] == "conv1"
    assert "--max-layers 2 reached" in result.message
    only_conv1 = [LayerSensitivity("conv1", "Conv", 0.0)]
    result, _ = auto_exclude(sensitive["model"], sensitive["amax"], sensitive["data"], target_snr=500,
                                samples=8, ranking=only_conv1, measure_speed=False)
    assert not result.met and result.excluded == ["conv1"] and "raise --max-layers" in result.message
    with pytest.raises(TrtqError, match="one target"):
        auto_exclude(sensitive["model"], sensitive["amax"], sensitive["data"], target_snr=1, target_cosine=0.5)


def test_auto_exclude_undoes_a_step_that_does_not_help(sensitive):
    """Each trial is measured: leaving conv2 in float changes little, so it stays INT8; conv1 is what helps."""
    ranking = [LayerSensitivity("conv2", "Conv", 9.0), LayerSensitivity("conv1", "Conv", 20.0)]
    result, _ = auto_exclude(sensitive["model"], sensitive["amax"], sensitive["data"], target_snr=30,
                                samples=16, ranking=ranking, measure_speed=False)
    assert result.met and result.excluded == ["conv1"]
    assert [(s.layer, s.kept) for s in result.steps] == [(None, True), ("conv2", False), ("conv1", True)]
    assert result.steps[1].excluded == []  # the trial that did not help leaves the list as it was


@pytest.mark.parametrize("storage", ["constant_nodes", "shared", "external_data"])
def test_sensitivity_and_auto_exclude_on_every_weight_storage(sensitive, storage, tmp_path):
    """Weights held in Constant nodes (PaddlePaddle's exporter), one weight read by two convs, and
    weights in an external-data file: the same ranking and the same mixed-precision result."""
    import onnx

    model = sensitive["model"]
    if storage == "constant_nodes":
        model = _toys.constant_weights(model)
        assert not model.graph.initializer
    elif storage == "shared":
        model = _toys.shared_weights(model)
    x = np.load(sensitive["data"])
    amax = _toys.activation_amax(model, x)
    reference = model
    if storage == "external_data":
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        reference = str(tmp_path / "external.onnx")
        onnx.save(copy, reference, save_as_external_data=True, all_tensors_to_one_file=True,
                  location="external.onnx.data", size_threshold=0)
        assert (tmp_path / "external.onnx.data").stat().st_size > 0
    replay = Replay.collect(reference, sensitive["data"], samples=16)
    ranking = layer_sensitivity(reference, amax, replay=replay)
    assert ranking[0].layer == "x" and ranking[0].layers == ["conv1"]
    assert all(r.own_snr_db is not None and r.own_snr_db > ranking[0].own_snr_db + 20 for r in ranking[1:])
    if storage == "shared":
        assert {tuple(r.layers) for r in ranking} >= {("conv2",), ("conv3",)}
    result, mixed = auto_exclude(reference, amax, target_snr=30, ranking=ranking, replay=replay,
                                    measure_speed=False)
    assert result.met and result.excluded == ["conv1"]
    assert worst_of(replay.score(mixed))[0] >= 30


def test_resolve_amax(sensitive, tmp_path):
    from trtq.cache import write_cache
    from trtq.errors import CacheError

    amax, where, _ = resolve_amax(sensitive["path"], sensitive["candidate"])
    assert "Q/DQ scales" in where and set(amax) == {"x", "r1", "f"}
    cache = tmp_path / "c.cache"
    write_cache(cache, sensitive["amax"])
    amax, where, requantized = resolve_amax(sensitive["path"], cache=cache)
    assert requantized == sensitive["path"]
    assert "calibration cache" in where and amax["x"] == pytest.approx(sensitive["amax"]["x"], rel=1e-6)
    with pytest.raises(TrtqError, match="--cache"):
        resolve_amax(sensitive["path"], sensitive["path"])
    bad = tmp_path / "other.cache"
    write_cache(bad, {"nothing_here": 1.0})
    with pytest.raises(CacheError):
        resolve_amax(sensitive["path"], cache=bad)


# --------------------------------------------------------------------------- the real YOLOv8n on real photos

#: INT8 (ONNX Runtime form, entropy calibration on 16 photo crops) against FP32 on 13 whole photos.
#: Measured: cosine 0.9994, SNR 29.3 dB (output0 = boxes in pixels + class scores).
YOLO_MIN_COSINE = 0.995
YOLO_MIN_SNR_DB = 22.0


@pytest.fixture(scope="module")
def yolo_int8(yolo_model_path, photo_crops_folder, tmp_path_factory):
    from trtq.data.spec import DataSpec, Preprocess
    from trtq.graph.model import load_onnx
    from trtq.graph.qdq import quantize_model
    from trtq.pipeline.calibration import calibrate

    folder = tmp_path_factory.mktemp("yolo")
    spec = DataSpec(str(photo_crops_folder), samples=16, batch_size=8, preprocess=Preprocess(size=(320, 320)))
    amax = calibrate(yolo_model_path, spec).amax
    quantized, summary = quantize_model(load_onnx(yolo_model_path), amax, target="cpu")
    assert len(summary.quantized) == 64 and not summary.missing_amax
    return _toys.save(quantized, folder / "320n.int8-cpu.onnx")


@pytest.mark.slow
def test_yolo_int8_fidelity_on_photos(yolo_model_path, yolo_int8, photo_folder):
    from trtq.data.spec import DataSpec, Preprocess

    spec = DataSpec(str(photo_folder), samples=None, batch_size=8, shuffle=False,
                    preprocess=Preprocess(size=(320, 320)))
    report = evaluate(yolo_model_path, yolo_int8, spec)
    (out,) = report.outputs
    assert report.samples == 13 and out.name == "output0" and out.shape[1:] == [22, 2100]
    assert out.classes is None and out.top1_agreement is None  # a detection head, not class scores
    assert out.cosine > YOLO_MIN_COSINE and out.cosine_min > 0.99
    assert YOLO_MIN_SNR_DB < out.snr_db < 60, out.snr_db


@pytest.mark.slow
def test_yolo_bench_batch1_is_consistent(yolo_model_path, yolo_int8):
    from trtq.pipeline.benchmarking import benchmark

    rows = benchmark([yolo_model_path, yolo_int8], [1, 2], iterations=3, warmup=1,
                     shapes={"images": (1, 3, 320, 320)})
    fp32, _, int8, _ = rows
    assert (fp32.precision, int8.precision) == ("fp32", "int8")
    for r in rows:
        assert not r.skipped and r.iterations == 3
        assert r.throughput == r.batch_size * 1000.0 / r.latency_ms_mean
    assert fp32.speedup == 1.0 and int8.speedup == pytest.approx(int8.throughput / fp32.throughput)
    assert int8.size_bytes < fp32.size_bytes / 3  # int8 weights


# --------------------------------------------------------------------------- CLI


def test_cli_eval_prints_and_writes_json(files, tmp_path, capsys):
    from trtq.cli import main

    out = tmp_path / "eval.json"
    code = main(["eval", files["reference"], files["candidate"], "--data", files["data"],
                 "--labels", files["labels"], "--batch-size", "16", "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "SNR dB" in printed and "top-1 accuracy on 48 labeled samples" in printed
    data = json.loads(out.read_text())
    assert data["samples"] == 48 and data["candidate_precision"] == "int8" and data["sensitivity"] is None


def test_cli_auto_exclude_writes_the_mixed_model(sensitive, tmp_path, capsys):
    import onnx

    from trtq.cli import main

    out = tmp_path / "mixed.onnx"
    report = tmp_path / "r.json"
    code = main(["eval", sensitive["path"], sensitive["candidate"], "--data", sensitive["data"],
                 "--auto-exclude", "--target-snr", "30", "--sensitivity-samples", "16", "--no-speed",
                 "-o", str(out), "--json", str(report)])
    printed = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert code == 0, printed
    assert "left in float: conv1" in printed and "scales from Q/DQ scales of sensitive.int8.onnx" in printed
    model = onnx.load(str(out))
    quantized_inputs = {n.input[0] for n in model.graph.node if n.op_type == "QuantizeLinear"}
    assert "x" not in quantized_inputs and "r1" in quantized_inputs  # conv1 float, conv2 int8
    assert qdq_form(model) == "trt"  # the candidate's form
    data = json.loads(report.read_text())
    assert data["auto_exclude"]["excluded"] == ["conv1"] and data["auto_exclude"]["output_path"] == str(out)
    assert data["sensitivity"][0]["layer"] == "x" and data["sensitivity"][0]["layers"] == ["conv1"]


def test_cli_auto_exclude_unmet_target_writes_nothing(sensitive, tmp_path, capsys):
    from trtq.cli import main

    out = tmp_path / "mixed.onnx"
    code = main(["eval", sensitive["path"], sensitive["candidate"], "--data", sensitive["data"],
                 "--auto-exclude", "--target-snr", "30", "--max-layers", "0", "--sensitivity-samples", "8",
                 "--no-speed", "-o", str(out)])
    printed = capsys.readouterr().out
    assert code == 1 and "not met" in printed and "no model written" in printed
    assert not out.exists() and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize("extra, message", [
    (["--auto-exclude", "--target-agreement", "0.9", "--no-speed"], "--target-agreement needs an output declared"),
    (["--class-output", "nope"], "--class-output nope: no such output"),
    (["--target-snr", "30"], "belong to --auto-exclude"),
    (["--cache", "c.cache"], "used by --sensitivity and --auto-exclude only"),
    (["--sensitivity", "--cache", "missing.cache"], "calibration cache missing.cache does not exist"),
    (["--auto-exclude", "--target-agreement", "0.9", "-o", "{reference}"], "would overwrite"),
])
def test_cli_eval_errors_are_one_line(sensitive, capsys, extra, message):
    from trtq.cli import main

    extra = [a.format(reference=sensitive["path"]) for a in extra]
    code = main(["eval", sensitive["path"], sensitive["candidate"], "--data", sensitive["data"], *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("trtq eval: error:") and err.count("\n") == 1


def test_cli_eval_missing_model(sensitive, tmp_path, capsys):
    from trtq.cli import main

    code = main(["eval", str(tmp_path / "nope.onnx"), sensitive["candidate"], "--data", sensitive["data"]])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err


def test_cli_eval_fidelity_gate_exits_3(sensitive, capsys):
    from trtq.cli import main

    base = ["eval", sensitive["path"], sensitive["candidate"], "--data", sensitive["data"]]
    assert main(base + ["--min-snr", "-50"]) == 0
    capsys.readouterr()
    assert main(base + ["--min-snr", "500"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("trtq eval: failed: INT8 fidelity gate failed") and "--min-snr 500" in err
    assert err.count("\n") == 1


def test_padded_positions_do_not_count():
    """A tokenizer's attention mask keeps padded positions out of token-level metrics: what the model computes
    there is read by no one. Other outputs, and feeds without such a mask, are scored whole."""
    rng = np.random.default_rng(9)
    hidden = rng.standard_normal((2, 5, 8))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=np.int64)
    candidate = hidden + 0.01 * rng.standard_normal(hidden.shape)
    candidate[0, 3:] += 100.0  # garbage at the padding only
    feed = {"input_ids": np.ones((2, 5), np.int64), "attention_mask": mask}
    np.testing.assert_array_equal(padding_mask(feed), mask.astype(bool))
    (masked,) = compare_outputs([({"h": hidden}, {"h": candidate})], feeds=[feed])
    valid = mask.astype(bool)
    assert masked.snr_db == pytest.approx(snr_db(hidden[valid], candidate[valid]), rel=1e-9) and masked.snr_db > 30
    (whole,) = compare_outputs([({"h": hidden}, {"h": candidate})])
    assert whole.snr_db < 0
    assert padding_mask({"x": np.zeros((2, 5), np.float32)}) is None  # no mask input
    assert padding_mask({"mask": np.full((2, 5), 3, np.int64)}) is None  # not 0/1


def test_auto_exclude_records_its_layers_for_quantize(sensitive, tmp_path, capsys):
    """eval --auto-exclude --cache writes the layer list into the sidecar; quantize --cache keeps them float."""
    import onnx

    from trtq.cache import float_layers, read_cache
    from trtq.cli import main
    from trtq.pipeline.calibration import calibrate

    cache = tmp_path / "s.calib.cache"
    calibrate(sensitive["path"], sensitive["data"], algorithm="entropy", cache_path=cache)
    assert main(["eval", sensitive["path"], sensitive["candidate"], "--data", sensitive["data"],
                 "--auto-exclude", "--target-snr", "30", "--cache", str(cache), "--no-speed",
                 "-o", str(tmp_path / "mixed.onnx")]) == 0
    assert float_layers(read_cache(cache).sidecar) == ["conv1"]
    told = " ".join(capsys.readouterr().out.split())  # where it was recorded, what it changes, how to undo it
    assert f"recorded in {cache}.json: every later trtq quantize/build from {cache} keeps these 1 layer(s)" in told
    assert "to undo, delete the sidecar's" in told
    out = tmp_path / "q.onnx"
    assert main(["quantize", sensitive["path"], "--cache", str(cache), "-o", str(out)]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "warning: 1 layer(s) kept in float as recorded in" in printed and "by trtq eval --auto-exclude" in printed
    assert 'delete the sidecar\'s "mixed_precision" entry' in printed  # how to undo it
    quantized_inputs = {n.input[0] for n in onnx.load(str(out)).graph.node if n.op_type == "QuantizeLinear"}
    assert "x" not in quantized_inputs and "r1" in quantized_inputs


# --------------------------------------------------------------------------- decisions


@pytest.mark.parametrize("head, opset, want", [
    ("Softmax", 17, {"probs": (2, "Softmax")}),       # the default axis -1, resolved against the graph's rank
    ("LogSoftmax", 17, {"probs": (2, "LogSoftmax")}),
    ("Softmax", 11, {"probs": (2, "Softmax")}),       # before opset 13 the axis is written out (default 1)
    ("ArgMax", 17, {"probs": (2, "ArgMax reader")}),  # logits an ArgMax inside the graph reads
    ("Sigmoid", 17, {}),                              # multi-label: no argmax decision
    ("none", 17, {}),                                 # plain logits: nothing says they are classes
])
def test_class_axis_is_found_from_the_graph(head, opset, want):
    assert decision_axes(_toys.sequence_reader(head=head, opset=opset)) == want


def test_sequence_decisions_per_position_and_per_sample():
    """[N, T, C] Softmax: top-1 agreement per position, and the share of samples whose every position agrees."""
    model = _toys.sequence_reader()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6, 8)).astype(np.float32)
    ref = _toys.run_model(model, {"x": x})["probs"]
    cand = ref + rng.normal(0, 0.08, ref.shape).astype(np.float32)
    axes = {name: axis for name, (axis, _) in decision_axes(model).items()}
    (m,) = compare_outputs([({"probs": ref}, {"probs": cand})], class_outputs=axes)
    agree = np.argmax(ref, -1) == np.argmax(cand, -1)
    assert m.class_axis == 2 and m.classes == 5 and m.positions == 6
    assert m.top1_agreement == pytest.approx(agree.mean()) and m.sample_agreement == pytest.approx(agree.all(1).mean())
    assert 0 < m.sample_agreement < m.top1_agreement < 1
    verdict = Verdict(compare_outputs([({"probs": ref}, {"probs": cand})], class_outputs=axes), 40)
    assert f"{100 * m.top1_agreement:.1f} % of positions of 'probs'" in verdict.line()
    assert f"{100 * m.sample_agreement:.1f} % of samples entirely" in verdict.line()
    assert verdict.poor and "decisions changed" in verdict.warning()  # far below 98 %
    record = verdict.to_dict()
    assert record["agreement"] == m.top1_agreement and record["sample_agreement"] == m.sample_agreement


def test_declared_class_output_takes_an_axis_of_any_rank():
    rng = np.random.default_rng(1)
    ref = rng.standard_normal((4, 3, 7, 2))  # classes on axis 2
    cand = ref + rng.normal(0, 0.3, ref.shape)
    (m,) = compare_outputs([({"y": ref}, {"y": cand})], class_outputs=["y:2"])
    assert m.class_axis == 2 and m.classes == 7 and m.positions == 6
    assert m.top1_agreement == pytest.approx(np.mean(np.argmax(ref, 2) == np.argmax(cand, 2)))
    assert parse_class_output("a:b:-1") == ("a:b", -1) and parse_class_output("probs") == ("probs", None)


def test_padding_does_not_count_in_agreement():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal((2, 5, 4))
    cand = ref.copy()
    cand[:, 3:] = -ref[:, 3:]  # every decision at the padded positions 3-4 flips
    feed = {"attention_mask": np.array([[1, 1, 1, 0, 0], [1, 1, 1, 0, 0]], np.int64)}
    (m,) = compare_outputs([({"h": ref}, {"h": cand})], class_outputs=["h"], feeds=[feed])
    assert m.top1_agreement == 1.0 and m.sample_agreement == 1.0


def test_whole_snr_and_decisions_disagree_on_a_fused_head():
    """Large box coordinates beside small scores: a model that ruins objectness keeps a high whole-output SNR;
    judged channel by channel it is the worse one, and its verdict warns naming the channel."""
    x = np.random.default_rng(3).standard_normal((16, 48, 8)).astype(np.float32)
    ref = _toys.run_model(_toys.fused_head(), {"x": x})["output"]
    broken_objectness = _toys.run_model(_toys.fused_head(noise={4: 1.5}), {"x": x})["output"]
    noisy_boxes = _toys.run_model(_toys.fused_head(noise={0: 0.05, 1: 0.05, 2: 0.05, 3: 0.05}), {"x": x})["output"]
    (a,) = compare_outputs([({"output": ref}, {"output": broken_objectness})])
    (b,) = compare_outputs([({"output": ref}, {"output": noisy_boxes})])
    assert a.snr_db > b.snr_db          # the whole output prefers the broken objectness ...
    assert a.worst_snr_db < b.worst_snr_db  # ... its channels do not
    assert a.channel_axis == 2 and a.worst_channel[0] == "'output'[..., 4]" and not a.groups
    assert a.worst_channel[1] == pytest.approx(snr_db(ref[..., 4], broken_objectness[..., 4]), rel=1e-9)
    verdict = Verdict(compare_outputs([({"output": ref}, {"output": broken_objectness})]), 16)
    assert "worst channel 'output'[..., 4]" in verdict.line() and verdict.poor
    assert "'output'[..., 4]" in verdict.warning()


def test_constant_channels_are_not_judged_alone():
    rng = np.random.default_rng(4)
    ref = rng.standard_normal((8, 30, 6))
    ref[..., 3] = 0.0       # a pruned channel
    ref[..., 5] = 2.5       # a bias-only channel
    cand = ref + rng.normal(0, 1e-3, ref.shape)
    (m,) = compare_outputs([({"y": ref}, {"y": cand})])
    assert m.constant_channels == [3, 5] and [c.index for c in m.channels] == [0, 1, 2, 4]
    assert feature_axis([8, 30, 6]) == 2 and feature_axis([8, 6, 300]) == 1
    assert feature_axis([8, 16, 9, 9]) == 1 and feature_axis([8, 10]) is None
    assert feature_axis([8, 40, 97]) is None  # too wide: channel groups (or nothing) instead


def test_one_value_per_sample_has_no_per_sample_cosine():
    rng = np.random.default_rng(5)
    ref = rng.standard_normal((16, 1))
    (m,) = compare_outputs([({"score": ref}, {"score": ref * 1.01})])
    assert not m.has_cosine and m.worst_cosine == math.inf
    verdict = Verdict([m], 16)
    assert "cosine" not in verdict.line() and not verdict.poor


def _metric_file(tmp_path, body: str) -> str:
    path = tmp_path / "metric.py"
    path.write_text("import numpy as np\n\n" + body)
    return f"{path}:score"


def test_user_metric_is_called_per_sample_and_judged(tmp_path):
    spec = _metric_file(tmp_path, "def score(ref, cand, inputs):\n"
                                  "    assert len(inputs['x']) == 1 and ref['y'].shape[0] == 1\n"
                                  "    return float(np.argmax(ref['y']) == np.argmax(cand['y']))\n")
    metric = UserMetric.load(spec)
    rng = np.random.default_rng(6)
    ref = rng.standard_normal((10, 4))
    cand = ref.copy()
    cand[:3] = -cand[:3]  # three samples decide otherwise
    fidelity = compare_outputs([({"y": ref}, {"y": cand})], feeds=[{"x": np.zeros((10, 2))}], metric=metric)
    assert fidelity.metric.value == pytest.approx(0.7) and fidelity.metric.samples == 10
    assert decision_of(fidelity) == ("metric score", pytest.approx(0.7))
    verdict = Verdict(fidelity, 10, min_metric=0.99)
    assert "metric score 0.7" in verdict.line() and "metric score 0.7 < 0.99" in verdict.warning()
    assert "--min-metric 0.9" in verdict.failure(min_metric=0.9) and verdict.failure(min_metric=0.5) is None
    assert worst_of(fidelity)[2] == pytest.approx(0.7)  # the hook mixed precision reads


@pytest.mark.parametrize("spec, message", [
    ("nofile.py:score", "does not exist"),
    ("metric.py", "expected FILE.py:NAME"),
    ("metric.py:other", "defines no other()"),
])
def test_user_metric_errors_are_one_line(tmp_path, spec, message):
    (tmp_path / "metric.py").write_text("def score(ref, cand, inputs):\n    return 1.0\n")
    with pytest.raises(TrtqError, match=message):
        UserMetric.load(str(tmp_path / spec))


def test_user_metric_that_raises_or_returns_nan(tmp_path):
    rng = np.random.default_rng(7)
    pair = [({"y": rng.standard_normal((2, 3))}, {"y": rng.standard_normal((2, 3))})]
    broken = UserMetric.load(_metric_file(tmp_path, "def score(ref, cand, inputs):\n    return 1 / 0\n"))
    with pytest.raises(TrtqError, match="ZeroDivisionError"):
        compare_outputs(pair, feeds=[{"x": np.zeros((2, 1))}], metric=broken)


def test_worked_metric_examples_in_the_docs(tmp_path):
    """docs/examples: a CTC reader's string agreement and a detector's matched-box recall."""
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "docs" / "examples"
    ctc = UserMetric.load(f"{examples / 'ctc_string_agreement.py'}:string_agreement")
    blank = 4
    steps = np.full((3, 6), blank)
    steps[:, 0], steps[:, 1], steps[:, 3] = 1, 1, 2    # reads "1 2"
    ref = np.eye(5)[steps] * 0.9 + 0.02
    cand = ref.copy()
    cand[1, 2] = np.eye(5)[1] * 0.9 + 0.02            # "1 1 2" -> "1 2": the repeat merges, same string
    cand[2, 3] = np.eye(5)[3] * 0.9 + 0.02            # "1 3": another string
    values = ctc({"probs": ref}, {"probs": cand}, {"x": np.zeros((3, 1))})
    assert values.tolist() == [1.0, 1.0, 0.0]

    boxes = UserMetric.load(f"{examples / 'box_recall.py'}:matched_box_recall")
    head = np.zeros((1, 8, 7))                        # 8 anchors: x, y, w, h, objectness, 2 classes
    head[0, 0] = [10, 10, 8, 8, 0.9, 0.9, 0.1]
    head[0, 1] = [40, 40, 8, 8, 0.9, 0.1, 0.9]
    head[0, 2] = [41, 40, 8, 8, 0.8, 0.1, 0.9]        # suppressed by NMS (same class, overlaps anchor 1)
    lost = head.copy()
    lost[0, 0, 4] = 0.1                               # objectness collapses: that box is no longer found
    moved = head.copy()
    moved[0, 1, :2] = [44, 41]                        # still IoU > 0.5
    assert boxes({"out": head}, {"out": head}, {})[0] == 1.0
    assert boxes({"out": head}, {"out": lost}, {})[0] == 0.5
    assert boxes({"out": head}, {"out": moved}, {})[0] == 1.0


def test_eval_prints_the_verdict_and_gates_on_agreement(tmp_path, capsys):
    """trtq eval: the calibrate verdict line and warning on the user's data; --min-agreement exits 3."""
    from trtq.cli import main

    model = _toys.sequence_reader()
    noisy = _toys.sequence_reader(seed=2)
    w = next(i for i in noisy.graph.initializer if i.name == "w")
    from onnx import numpy_helper

    weight = numpy_helper.to_array(w) + np.random.default_rng(8).normal(0, 0.4, (8, 5)).astype(np.float32)
    w.CopyFrom(numpy_helper.from_array(weight, "w"))
    ref_path, cand_path = _toys.save(model, tmp_path / "ref.onnx"), _toys.save(noisy, tmp_path / "cand.onnx")
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(9).standard_normal((32, 6, 8)).astype(np.float32))
    base = ["eval", ref_path, cand_path, "--data", str(data)]
    assert main(base + ["--json", str(tmp_path / "r.json")]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    record = json.loads((tmp_path / "r.json").read_text())
    assert record["verdict"]["line"] in out and "of positions of 'probs'" in record["verdict"]["line"]
    assert "samples entirely" in record["verdict"]["line"]
    assert f"warning: {record['verdict']['warning']}" in out and "decisions changed" in out
    assert 0 < record["verdict"]["agreement"] < 0.98 and record["outputs"][0]["class_source"] == "Softmax"
    assert main(["-q"] + base + ["--min-agreement", "0.999"]) == 3
    err = capsys.readouterr().err
    assert "--min-agreement 0.999" in err and "top-1 agreement of 'probs'" in err
    assert main(["-q"] + base + ["--min-agreement", "0.01"]) == 0


def test_a_symbolic_axis_holds_positions_not_channels():
    """[batch, sequence, 384] (a transformer's hidden states): the sequence axis is short but symbolic in the
    graph, and it changes between batches: never judged channel by channel."""
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["h"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "sequence", 384])],
                              [helper.make_tensor_value_info("h", TensorProto.FLOAT, ["batch", "sequence", 384]),
                               helper.make_tensor_value_info("head", TensorProto.FLOAT, ["batch", 22, 2100]),
                               helper.make_tensor_value_info("fused", TensorProto.FLOAT, ["batch", "Concat_dim_1",
                                                                                          "Concat_dim_2"])])
    model = helper.make_model(graph)
    assert feature_axes(model) == {"h": None, "head": 1}  # "fused": exporter names, its first batch decides
    rng = np.random.default_rng(8)
    pairs = [({"h": a}, {"h": a + 0.01}) for a in (rng.standard_normal((2, 12, 384)), rng.standard_normal((2, 9, 384)))]
    (m,) = compare_outputs(pairs)  # no graph: the first batch's axis 1 looked like channels, the second says no
    assert m.channel_axis is None and not m.channels
    (m,) = compare_outputs(pairs, feature_axes=feature_axes(model))
    assert m.channel_axis is None


def test_replay_scoring_reuses_known_outputs_and_stops_where_told():
    """A replay widened by more samples runs a candidate only on the batches it has not seen (same metrics as
    running them all), and a scoring told to stop ends after the batch it stopped on, its metrics then taking
    the samples not scored as the reference's own."""
    from trtq.graph.qdq import quantize_model

    model = _toys.classifier(seed=3)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = [{"x": _toys.images(8, seed=s)} for s in range(4)]
    replay = Replay(feeds, [{"y": session.run(None, f)[0]} for f in feeds], 32)
    quantized, _ = quantize_model(model, _toys.activation_amax(model, feeds[0]["x"]), target="trt")
    candidate = ort.InferenceSession(quantized.SerializeToString(), providers=["CPUExecutionProvider"])

    class Counting:
        runs = 0

        def __getattr__(self, name):
            return getattr(candidate, name)

        def run(self, *args, **kwargs):
            Counting.runs += 1
            return candidate.run(*args, **kwargs)

    kept: list = []
    whole, samples = replay.score_session_until(Counting(), keep=kept)
    assert samples == 32 and Counting.runs == 4 and len(kept) == 4
    Counting.runs = 0
    again, _ = replay.score_session_until(Counting(), known=kept[:3])
    assert Counting.runs == 1 and worst_of(again) == worst_of(whole)
    asked = []
    stopped, samples = replay.score_session_until(Counting(), stop=lambda n, m: asked.append(n) or n >= 16)
    assert asked == [8, 16] and samples == 16
    assert worst_of(stopped)[0] >= worst_of(whole)[0]  # the samples not scored count as exact: a ceiling
