"""trtq.pipeline: held-back samples, --algo auto, the verdict and its gate, on models built to need each choice."""

from __future__ import annotations

import json
import re

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtq.data.spec import DataSpec
from trtq.errors import FidelityError, TrtqError
from trtq.pipeline import calibration
from trtq.pipeline.calibration import calibrate
from trtq.pipeline.choose import Candidate, CandidateScorer, choose_amax, compare, estimate_noise, improves, rank
from trtq.pipeline.holdout import holdout_count, split_holdout
from trtq.pipeline.quantization import check_recorded_verdict, quantize
from trtq.precision.targets import FidelityTarget

FEATURES, OUTPUTS = 64, 16


def matmul_model(path, weight: np.ndarray) -> str:
    """x[N, 64] -> MatMul(W) -> y[N, 16]: one quantized activation (x), so its amax decides everything."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="matmul")], "m",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUTPUTS])],
        [numpy_helper.from_array(weight.astype(np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def write_samples(folder, samples: np.ndarray) -> str:
    folder.mkdir()
    for i, sample in enumerate(samples):
        np.save(folder / f"{i:04d}.npy", sample[None].astype(np.float32))
    return str(folder)


def test_holdout_count_and_split():
    assert holdout_count(1000) == 32 and holdout_count(100) == 25
    assert holdout_count(3) == 0 and holdout_count(None) == 32
    batches = [{"x": np.full((4, 2), i)} for i in range(5)]
    held, rest = split_holdout(batches, 6)
    assert [len(f["x"]) for f in held] == [4, 2] and held[1]["x"][0, 0] == 1
    assert [len(f["x"]) for f in rest] == [4, 4, 4, 2]
    held, rest = split_holdout(batches, 6, whole_batches=True)  # a model with a fixed batch size
    assert [len(f["x"]) for f in held] == [4, 4] and [len(f["x"]) for f in rest] == [4, 4, 4]


def test_auto_keeps_the_rare_large_values_that_carry_the_signal(tmp_path):
    """Sparse activations: 99.7% near-zero noise, 0.3% large values that the output is made of.
    Entropy's KL threshold lands on the bulk and clips the signal; auto must keep the range."""
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.05, (400, FEATURES))
    spikes = rng.random(x.shape) < 0.003
    x[spikes] = rng.uniform(4, 8, spikes.sum()) * rng.choice([-1, 1], spikes.sum())
    model = matmul_model(tmp_path / "m.onnx", rng.standard_normal((FEATURES, OUTPUTS)))
    data = write_samples(tmp_path / "data", x)
    result = calibrate(model, DataSpec(data, samples=None, batch_size=16))
    scores = {c.name: c.snr_db for c in result.auto.candidates}
    assert scores["entropy"] < scores["minmax"] - 6, scores  # entropy really does clip the signal here
    assert result.auto.chosen != "entropy"
    assert result.amax["x"] >= 0.9 * np.abs(x).max()  # minmax-like: the spikes survive
    # the leaders may be rescored on the reserve samples: the verdict is on the samples the choice was made on
    final = {c.name: c.snr_db for c in result.auto.reserve} or scores
    assert result.verdict.snr_db >= max(final.values()) - 0.3


def test_auto_clips_outliers_the_model_ignores(tmp_path):
    """Gaussian activations with huge outliers in a channel the next layer barely reads: clipping
    them (entropy) keeps fine steps for the signal; minmax wastes 127 levels on the outliers."""
    rng = np.random.default_rng(1)
    x = rng.normal(0, 1, (400, FEATURES))
    x[:, 0] = rng.normal(0, 1, 400) * 200  # the outlier channel
    weight = rng.standard_normal((FEATURES, OUTPUTS))
    weight[0] *= 1e-5
    model = matmul_model(tmp_path / "m.onnx", weight)
    data = write_samples(tmp_path / "data", x)
    result = calibrate(model, DataSpec(data, samples=None, batch_size=16))
    scores = {c.name: c.snr_db for c in result.auto.candidates}
    assert scores["entropy"] > scores["minmax"] + 10, scores
    assert result.auto.chosen != "minmax" and result.amax["x"] < 0.2 * np.abs(x).max()
    assert scores[result.auto.chosen] >= scores["entropy"]
    side = result.sidecar
    assert side["algorithm"]["name"] == "auto" and side["algorithm"]["chosen"] == result.auto.chosen
    assert set(side["algorithm"]["candidates"]) == {"entropy", "minmax", "percentile", "mse"}


def test_entropy_reproduces_the_plain_histogram_choice(tmp_path):
    """--algo entropy is TensorRT's EntropyCalibration2 on the statistics samples: no scoring changes it."""
    from trtq.calib import amax_from_histograms

    rng = np.random.default_rng(2)
    model = matmul_model(tmp_path / "m.onnx", rng.standard_normal((FEATURES, OUTPUTS)))
    data = write_samples(tmp_path / "data", rng.laplace(size=(64, FEATURES)))
    result = calibrate(model, DataSpec(data, samples=None, batch_size=8), algorithm="entropy")
    assert result.auto is None and result.amax == amax_from_histograms(result.histograms, "entropy")
    assert result.num_samples == 48 and result.verdict.samples == 16


def test_gate_fails_with_exit_3_and_writes_nothing(tmp_path, capsys):
    from trtq.cli import main

    rng = np.random.default_rng(3)
    model = matmul_model(tmp_path / "m.onnx", rng.standard_normal((FEATURES, OUTPUTS)))
    data = write_samples(tmp_path / "data", rng.normal(size=(40, FEATURES)))
    cache = tmp_path / "m.calib.cache"
    assert main(["-q", "calibrate", model, "--calib", data, "-o", str(cache), "--min-snr", "500",
                 "--samples", "all"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("trtq calibrate: failed: INT8 fidelity gate failed") and "nothing was written" in err
    assert err.count("\n") == 1 and not cache.exists() and not list(tmp_path.glob(".*tmp"))
    assert main(["calibrate", model, "--calib", data, "-o", str(cache), "--min-cosine", "0.9",
                 "--samples", "all"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "INT8 fidelity (TensorRT Q/DQ form, 10 held-back calibration samples)" in out and cache.exists()
    with pytest.raises(FidelityError):
        quantize(model, tmp_path / "q.onnx", cache=cache, min_snr=500)
    assert not (tmp_path / "q.onnx").exists()


def test_a_poor_result_prints_one_warning_line(tmp_path, capsys):
    """y = x@W1 - x@W2 with W2 = W1 + a tiny delta: int8 weights cannot hold the difference, whatever the
    calibration, so the verdict must warn, once, and name the fixes."""
    from trtq.cli import main

    rng = np.random.default_rng(4)
    w1 = rng.standard_normal((FEATURES, OUTPUTS))
    w2 = w1 + 1e-3 * rng.standard_normal(w1.shape)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["a"], name="mm1"),
         helper.make_node("MatMul", ["x", "w2"], ["b"], name="mm2"),
         helper.make_node("Sub", ["a", "b"], ["y"], name="sub")], "cancel",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", FEATURES])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", OUTPUTS])],
        [numpy_helper.from_array(w1.astype(np.float32), "w1"), numpy_helper.from_array(w2.astype(np.float32), "w2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "cancel.onnx"
    onnx.save(model, str(path))
    data = write_samples(tmp_path / "data", rng.normal(size=(40, FEATURES)))
    assert main(["calibrate", str(path), "--calib", data, "-o", str(tmp_path / "c.cache")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.count("warning:") == 1 and "is poor" in out and "--target-snr" in out and "--algo" in out
    assert "--auto-exclude" not in out  # an option of eval, not of calibrate
    assert re.search(r"INT8 output '\S+' is poor: SNR -?[\d.]+ dB < 20 dB", out)  # the test that failed, true numbers
    assert "cosine inf" not in out


# --------------------------------------------------------------------------- ranking by decisions


def _candidate(name, ref, cand, class_outputs=None, metric=None, masks=None):
    from trtq.compare.accumulate import compare_outputs, output_snr_db
    from trtq.compare.decisions import decisions_kept, worst_of

    metrics = compare_outputs([({"y": ref}, {"y": cand})], class_outputs=class_outputs, metric=metric,
                              feeds=[{"x": np.zeros((len(ref), 1))}], masks=masks)
    snr, cosine, _ = worst_of(metrics)
    decision = decisions_kept(metrics)
    return estimate_noise(Candidate(name, snr, cosine, 0.0, metrics,
                                                      None if decision is None else decision[1],
                                                      "" if decision is None else decision[0], samples=len(ref),
                                                      output_snr_db=output_snr_db(metrics)))


def _probs(rng, n=48, steps=8, classes=6):
    logits = rng.normal(0, 2, (n, steps, classes))
    return np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)


def test_a_mask_is_ranked_by_its_iou_not_by_how_many_pixels_agree():
    """Losing a small object costs few pixels and all of its IoU: the candidate that keeps every object with a
    few extra pixels around it ranks first, as --max-drop and the verdict judge masks."""
    n = 48
    ref = np.zeros((n, 1, 8, 8), dtype=np.float32)
    ref[:, 0, 2:4, 2:4] = 1.0  # a 4-pixel object in every sample
    drops_objects = ref.copy()
    drops_objects[: 3 * n // 4] = 0.0  # gone in three samples of four: 94 % of pixels agree, IoU 0.25
    fringe = ref.copy()
    fringe[:, 0, 5, 2:7] = 1.0  # five background pixels on: 92 % of pixels agree, IoU 0.44
    a = _candidate("drops", ref, drops_objects, masks={"y": 1})
    b = _candidate("fringe", ref, fringe, masks={"y": 1})
    assert a.metrics[0].top1_agreement > b.metrics[0].top1_agreement
    assert b.decision_name == "mask IoU of 'y'" and b.decision == pytest.approx(4 / 9)
    assert a.decision_noise == pytest.approx(np.sqrt(0.25 * 0.75 / n), rel=0.3)  # the noise of the IoU, resampled
    best, ties = rank([a, b])
    assert best is b and not ties


def test_decisions_rank_before_snr():
    """A candidate that flips a quarter of the decisions by a tiny change outranks none with a lower SNR but
    every decision kept; the flipping one wins on SNR alone."""
    rng = np.random.default_rng(10)
    ref = _probs(rng)
    order = np.argsort(ref, axis=-1)
    top, second = order[..., -1], order[..., -2]
    chosen = rng.random(ref.shape[:2]) < 0.25
    flips = ref.copy()
    for i, t in zip(*np.nonzero(chosen)):  # near-ties in the reference; the candidate tips them the other way
        ref[i, t, second[i, t]] = ref[i, t, top[i, t]] - 1e-3
        flips[i, t, second[i, t]] = ref[i, t, top[i, t]] + 1e-3
    scaled = ref * 0.93  # every decision kept, SNR ~23 dB
    a = _candidate("flips", ref, flips, {"y": 2})
    b = _candidate("scaled", ref, scaled, {"y": 2})
    assert a.snr_db > b.snr_db and a.decision < b.decision == 1.0
    best, ties = rank([a, b])
    assert best is b and not ties and compare(b, a) == (1, "decision")


def test_within_noise_is_a_tie_broken_by_the_documented_rule():
    rng = np.random.default_rng(11)
    ref = rng.standard_normal((32, 20, 6))
    one = _candidate("one", ref, ref + rng.normal(0, 0.1, ref.shape))
    two = _candidate("two", ref, ref + rng.normal(0, 0.1, ref.shape))
    assert one.snr_noise > 0 and one.decision is None
    assert compare(one, two) == (0, "within noise") and one.output_snr_db >= one.snr_db
    best, ties = rank([one, two])
    assert ties == [one if best is two else two]
    assert best.key() == max(one.key(), two.key())  # the higher worst SNR point estimate wins the tie
    far = _candidate("far", ref, ref + rng.normal(0, 0.5, ref.shape))
    assert compare(one, far) == (1, "worst SNR")
    assert improves(one, far) and not improves(far, one)
    for x, y in ((one, two), (two, one)):  # within noise: the choice takes the tie rule, a refinement keeps nothing
        assert not improves(x, y)


def test_a_refinement_trial_that_loses_decisions_is_not_kept_for_snr():
    """A trial that raises the worst SNR by 4 dB but flips two decisions (both within noise on 48 samples) is
    not kept: refinement ranks decisions first; the same SNR gain without the flips is kept."""
    rng = np.random.default_rng(15)
    ref = _probs(rng)
    order = np.argsort(ref, axis=-1)
    top, second = order[..., -1], order[..., -2]
    for i in range(len(ref)):  # wide margins: small noise keeps every decision
        for t in range(ref.shape[1]):
            ref[i, t, top[i, t]] += 0.2
    noisy = ref + rng.normal(0, 0.02, ref.shape)
    clean = ref + rng.normal(0, 0.002, ref.shape)
    flipped = clean.copy()
    for i, t in ((3, 1), (17, 5)):  # two positions of two samples tip to their second class
        flipped[i, t, second[i, t]] = ref[i, t, top[i, t]] + 1e-3
    current = _candidate("current", ref, noisy, {"y": 2})
    trial = _candidate("trial", ref, flipped, {"y": 2})
    better = _candidate("better", ref, clean, {"y": 2})
    assert current.decision == better.decision == 1.0 and trial.decision < 1.0
    assert compare(trial, current) == (0, "within noise")  # the decision loss too
    assert trial.snr_db - current.snr_db > 1.0 and trial.key() > current.key()  # the SNR tie rule prefers it
    assert not improves(trial, current)
    assert improves(better, current)
    from trtq.pipeline.choose import cannot_improve

    # the early stop agrees: a trial whose decisions already end below is skipped, the better one is not
    assert cannot_improve(trial.metrics, current) and not cannot_improve(better.metrics, current)


def test_auto_scores_the_reserve_when_leaders_tie_and_records_it(tmp_path):
    """Many samples: HOLDOUT_RESERVE more are held back, and scored for the leaders when they are within noise."""
    from trtq import defaults

    rng = np.random.default_rng(12)
    model = matmul_model(tmp_path / "m.onnx", rng.standard_normal((FEATURES, OUTPUTS)))
    data = write_samples(tmp_path / "data", rng.normal(size=(300, FEATURES)))
    result = calibrate(model, DataSpec(data, samples=None, batch_size=16))
    side = result.sidecar
    assert side["data"]["held_back_samples"] == defaults.HOLDOUT_SAMPLES
    assert side["data"]["reserve_samples"] == defaults.HOLDOUT_RESERVE
    assert side["data"]["statistics_samples"] == 300 - defaults.HOLDOUT_SAMPLES - defaults.HOLDOUT_RESERVE
    auto = result.auto
    for record in side["algorithm"]["candidates"].values():
        assert record["snr_noise_db"] is not None and record["samples"] == defaults.HOLDOUT_SAMPLES
    assert auto.reason
    if auto.reserve:  # gaussian data: minmax/percentile/mse are usually within noise of each other
        assert {c.samples for c in auto.reserve} == {defaults.HOLDOUT_SAMPLES + defaults.HOLDOUT_RESERVE}
        assert auto.chosen in {c.name for c in auto.reserve} and "within noise" in auto.reason or "beyond" in auto.reason
        if not auto.overrides:
            assert result.verdict.samples == defaults.HOLDOUT_SAMPLES + defaults.HOLDOUT_RESERVE


def test_calibrate_with_a_user_metric_and_min_metric(tmp_path, capsys):
    from trtq.cli import main

    rng = np.random.default_rng(13)
    model = matmul_model(tmp_path / "m.onnx", rng.standard_normal((FEATURES, OUTPUTS)))
    data = write_samples(tmp_path / "data", rng.normal(size=(40, FEATURES)))
    (tmp_path / "task.py").write_text("import numpy as np\n\n"
                                      "def same_top(ref, cand, inputs):\n"
                                      "    return float(np.argmax(ref['y']) == np.argmax(cand['y']))\n")
    cache = tmp_path / "m.calib.cache"
    metric = f"{tmp_path / 'task.py'}:same_top"
    assert main(["-q", "calibrate", model, "--calib", data, "-o", str(cache), "--metric", metric,
                 "--samples", "all"]) == 0
    side = json.loads(cache.with_name(cache.name + ".json").read_text())
    verdict = side["verdict"]
    assert verdict["metric"]["name"] == "same_top" and 0.0 <= verdict["metric"]["value"] <= 1.0
    assert verdict["decision"] is None and verdict["agreement"] is None  # no class axis: --min-agreement has nothing
    assert all(c["decision"] == "metric same_top" for c in side["algorithm"]["candidates"].values())
    capsys.readouterr()
    cache2 = tmp_path / "m2.calib.cache"
    assert main(["-q", "calibrate", model, "--calib", data, "-o", str(cache2), "--metric", metric,
                 "--samples", "all", "--min-metric", "1.01"]) == 3
    err = capsys.readouterr().err
    assert "metric same_top" in err and "< --min-metric 1.01" in err and not cache2.exists()
    # the recorded verdict gates quantize --cache; a sidecar from before decisions misses --min-agreement
    with pytest.raises(FidelityError, match="min-metric"):
        quantize(model, tmp_path / "q.onnx", cache=cache, min_metric=1.01)
    with pytest.raises(FidelityError, match="min-agreement"):
        quantize(model, tmp_path / "q.onnx", cache=cache, min_agreement=0.5)
    old = dict(side["verdict"])
    for key in ("agreement", "decision", "sample_agreement", "metric", "worst_channel", "decision_drops"):
        old.pop(key)
    assert check_recorded_verdict({"verdict": old}, None, None, "c.cache") == old
    with pytest.raises(FidelityError, match="no output with a class axis has a top-1 agreement to judge"):
        check_recorded_verdict({"verdict": old}, None, None, "c.cache", min_agreement=0.5)


def test_auto_reads_the_class_axis_from_the_graph(tmp_path):
    """A Softmax output: auto's candidates carry their top-1 agreement without any flag."""
    import _toys

    path = _toys.save(_toys.sequence_reader(), tmp_path / "reader.onnx")
    rng = np.random.default_rng(14)
    folder = tmp_path / "data"
    folder.mkdir()
    for i in range(48):
        np.save(folder / f"{i:03d}.npy", rng.standard_normal((1, 6, 8)).astype(np.float32))
    result = calibrate(path, DataSpec(str(folder), samples=None, batch_size=8))
    assert all(c.decision_name == "top-1 agreement of 'probs'" for c in result.auto.candidates)
    assert result.sidecar["verdict"]["agreement"] is not None
    assert "of positions of 'probs'" in result.verdict.line()


def test_a_target_leaves_the_costly_layer_in_float_and_every_consumer_applies_it(tmp_path, capsys):
    """conv1's input has one channel ~1000x the others that conv1 barely uses: one per-tensor int8 scale
    wipes out the channels that matter, whatever the algorithm. ``--target-snr`` runs the search on the
    held-back samples, records conv1 in the sidecar, and quantize --cache and quantize --calib apply it."""
    import json

    import _toys

    from trtq.cli import main

    model = _toys.save(_toys.classifier(first_weight_scale=(1e-3, 1.0, 1.0)), tmp_path / "m.onnx")
    data = tmp_path / "data"
    data.mkdir()
    for i, sample in enumerate(_toys.images(48, seed=7, outlier_channel=1000.0)):
        np.save(data / f"{i:04d}.npy", sample[None])
    cache = tmp_path / "m.calib.cache"
    plain = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax")
    assert plain.verdict.snr_db < 20 and plain.mixed_precision is None
    assert main(["calibrate", model, "--calib", str(data), "--samples", "all", "--algo", "minmax",
                 "-o", str(cache), "--target-snr", "30"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "mixed precision:" in out and "conv1" in out
    sidecar = json.loads((tmp_path / "m.calib.cache.json").read_text())
    record = sidecar["mixed_precision"]
    assert record["float_layers"] == ["conv1"] and record["target"] == {"snr_db": 30.0} and record["reached"] >= 30
    assert "--target" in record["source"] and sidecar["verdict"]["snr_db"] >= 30  # the verdict is the mixed model's

    outcome = quantize(model, tmp_path / "q.onnx", cache=cache)
    assert outcome.float_layers == ["conv1"] and "conv1" not in outcome.summary.quantized
    fidelity = FidelityTarget(snr_db=30)
    outcome = quantize(model, tmp_path / "q2.onnx", calib=DataSpec(path=str(data), samples=None),
                                algorithm="minmax", fidelity=fidelity)
    assert outcome.float_layers == ["conv1"] and set(outcome.summary.quantized) == {"conv2", "fc"}
    assert outcome.verdict["snr_db"] >= 30
    with pytest.raises(TrtqError, match="--calib"):
        quantize(model, tmp_path / "q3.onnx", cache=cache, fidelity=fidelity)

    # already met: nothing is searched, nothing recorded; unreachable: nothing changes, and it says so
    met = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax",
                             target=FidelityTarget(snr_db=-100))
    assert met.mixed_precision is None and "mixed_precision" not in met.sidecar
    unmet = calibrate(model, DataSpec(path=str(data), samples=None), algorithm="minmax",
                               target=FidelityTarget(snr_db=500, max_layers=1))
    assert not unmet.mixed_precision.met and "mixed_precision" not in unmet.sidecar
    assert unmet.verdict.snr_db == pytest.approx(plain.verdict.snr_db)


def test_target_options_parse_into_one_target():
    import argparse

    from trtq.cli.options import OptionError, add_target_arguments, fidelity_target_from_args

    parser = argparse.ArgumentParser()
    add_target_arguments(parser)
    assert fidelity_target_from_args(parser.parse_args([])) is None
    target = fidelity_target_from_args(parser.parse_args(["--target-agreement", "0.99", "--max-layers", "3"]))
    assert target == FidelityTarget(agreement=0.99, max_layers=3) and target.given()
    with pytest.raises(SystemExit):
        parser.parse_args(["--target-snr", "30", "--target-cosine", "0.9"])
    for bad in (["--target-agreement", "1.5"], ["--max-layers", "2"], ["--target-snr", "3", "--max-layers", "-1"]):
        with pytest.raises(OptionError):
            fidelity_target_from_args(parser.parse_args(bad))


def _family(name: str, tmp_path):
    """A model and calibration data of one family, held-back samples in batches of 8 (so a trial can stop)."""
    from pathlib import Path

    import _toys

    rng = np.random.default_rng(4)
    if name == "digits":
        model = str(Path(__file__).resolve().parents[1] / "trtq" / "assets" / "demo_digits.onnx")
        return model, DataSpec(str(Path(__file__).resolve().parents[1] / "calib_data" / "digits"), samples=160,
                               batch_size=8)
    if name == "sequence reader":
        model = str(_toys.save(_toys.sequence_reader(), tmp_path / "reader.onnx"))
        return model, DataSpec(write_samples(tmp_path / "data", rng.standard_normal((160, 6, 8))), samples=None,
                               batch_size=8)
    if name == "spiky matmul":  # rare large inputs: errors heavy-tailed across samples, reserve scored
        rng = np.random.default_rng(0)
        x = rng.normal(0, 0.05, (400, FEATURES))
        spikes = rng.random(x.shape) < 0.003
        x[spikes] = rng.uniform(4, 8, spikes.sum()) * rng.choice([-1, 1], spikes.sum())
        model = matmul_model(tmp_path / "m.onnx", rng.standard_normal((FEATURES, OUTPUTS)))
        return model, DataSpec(write_samples(tmp_path / "data", x), samples=None, batch_size=8)
    model = matmul_model(tmp_path / "m.onnx", rng.standard_normal((FEATURES, OUTPUTS)))
    return model, DataSpec(write_samples(tmp_path / "data", rng.standard_normal((160, FEATURES)) ** 3),
                           samples=None, batch_size=8)


@pytest.mark.parametrize("family", ["digits", "sequence reader", "matmul", "spiky matmul"])
def test_one_session_and_early_stop_give_the_choice_and_scores_of_the_slow_path(tmp_path, family, monkeypatch):
    """auto scores every table through one session whose activation scales are inputs, and ends a refinement
    trial's scoring once even identical outputs on the samples left could not get it kept; the choice, the
    per-tensor overrides, every candidate's scores and the verdict equal those of a session per table scoring
    every trial on every held-back sample."""
    model, data = _family(family, tmp_path)
    original = choose_amax
    results, trials, sessions = {}, {}, []
    real = CandidateScorer.__init__

    def counting(self, *a, **k):
        sessions.append(1)
        real(self, *a, **k)

    monkeypatch.setattr(CandidateScorer, "__init__", counting)
    for one, early in ((False, False), (True, False), (True, True)):
        sessions.clear()
        monkeypatch.setattr(calibration, "choose_amax",
                            lambda *a, **k: original(*a, **{**k, "one_session": one, "early_stop": early}))
        result = calibrate(model, data, equalize="off")  # one choice (the equalization trial makes one per rewrite)
        auto = result.auto
        results[one, early] = (auto.chosen, sorted(auto.overrides.items()),
                               [(c.name, c.snr_db, c.decision) for c in auto.candidates],
                               [(c.name, c.snr_db, c.decision, c.samples) for c in auto.reserve],
                               auto.snr_db, auto.decision, result.verdict.snr_db, result.verdict.to_dict())
        trials[one, early] = auto.trials
        assert len(sessions) == (1 if one else 0)
    assert results[True, False] == results[False, False]
    assert results[True, True] == results[False, False]
    full = result.sidecar["data"]["held_back_samples"]  # what trials are scored on (the reserve never)
    assert [(t["tensor"], t["snr_db"], t["samples"]) for t in trials[True, False]] == \
        [(t["tensor"], t["snr_db"], full) for t in trials[False, False]]
    early = trials[True, True]
    assert [t["tensor"] for t in early] == [t["tensor"] for t in trials[False, False]]
    for fast, slow in zip(early, trials[False, False]):
        assert fast["samples"] <= full and fast["kept"] == slow["kept"]
        if fast["samples"] == full:
            assert fast["snr_db"] == slow["snr_db"]
    if family != "sequence reader":  # (its one quantized tensor gets no trial) a hopeless trial ends early
        assert any(t["samples"] < full for t in early)
    if family == "spiky matmul":  # leaders within noise: rescored on the reserve, its new samples only run
        assert auto.reserve and all(c.samples > full for c in auto.reserve)
        assert all(not c.outputs for c in auto.candidates)


def test_auto_scoring_sessions_do_not_spin_between_runs(tmp_path, monkeypatch):
    """The held-back reference and the candidates' scoring session, like the statistics, leave idle threads
    asleep (on shared cores a spinning pool took a third longer to score the same samples)."""
    from trtq import ort

    spins = []
    real = ort.create_session

    def recording(model, **kwargs):
        spins.append(kwargs.get("spinning", True))
        return real(model, **kwargs)

    monkeypatch.setattr(ort, "create_session", recording)
    model, data = _family("matmul", tmp_path)
    result = calibrate(model, data)
    assert result.auto is not None and spins and not any(spins)
