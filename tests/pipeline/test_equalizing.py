"""Auto's equalization trial: each rewrite that would change the model is scored like auto's candidates and kept
only when it wins beyond noise; the rewrite kept travels with the cache to quantize and build."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "graph"))
from test_equalize import _x, separable_chain  # noqa: E402  (the depthwise chain CLE lifts)

from trtq.cache import sidecar_path  # noqa: E402
from trtq.errors import CacheError, FidelityError  # noqa: E402
from trtq.graph.model import file_sha256, model_sha256  # noqa: E402
from trtq.pipeline import equalizing  # noqa: E402
from trtq.pipeline.calibration import calibrate  # noqa: E402
from trtq.pipeline.choose import Candidate  # noqa: E402
from trtq.pipeline.quantization import quantize  # noqa: E402


def balanced_pair(seed: int = 3):
    """conv 3x3 (8 channels of one range) -> Relu -> 1x1 head: nothing for a rewrite to fix."""
    rng = np.random.default_rng(seed)
    inits = {"w1": rng.standard_normal((8, 3, 3, 3)) * 0.3, "b1": rng.standard_normal(8) * 0.05,
             "w2": rng.standard_normal((4, 8, 1, 1)) * 0.3, "b2": rng.standard_normal(4) * 0.05}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["a1"], name="act"),
             helper.make_node("Conv", ["a1", "w2", "b2"], ["y"], name="head")]
    graph = helper.make_graph(nodes, "pair", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4, 12, 12])],
                              [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def matmul_only():
    """A MatMul classifier (MatMul + Add, as MiniLM's exports): no convolution and no Gemm, so no rewrite applies
    (a Gemm's input could be re-centred)."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
         helper.make_node("MatMul", ["f", "w"], ["m"], name="fc"),
         helper.make_node("Add", ["m", "b"], ["y"], name="fc_bias")],
        "fc", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(rng.standard_normal((432, 10)).astype(np.float32) * 0.05, "w"),
         numpy_helper.from_array(np.zeros(10, np.float32), "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def anti_equalize(model, feeds, threads=None, steps=True):
    """A rewrite exact in float and bad for INT8: the stem's output channels spread over four decades (what CLE
    undoes), the head compensating."""
    from trtq.graph.equalize import EqualizeReport

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    weights = {i.name: i for i in rewritten.graph.initializer}
    spread = np.logspace(-2, 2, 8).astype(np.float32)
    for name, change in (("w1", lambda w: w * spread[:, None, None, None]), ("b1", lambda b: b * spread),
                         ("w2", lambda w: w / spread[None, :, None, None])):
        weights[name].CopyFrom(numpy_helper.from_array(change(numpy_helper.to_array(weights[name])), name))
    return rewritten, EqualizeReport(steps=list(equalizing.trial_variants(model)[0]), sha256=model_sha256(rewritten))


def same_numbers(model, feeds, threads=None, steps=True):
    """A rewrite that computes exactly what the model does (another file, the same numbers): a tie."""
    from trtq.graph.equalize import EqualizeReport

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    rewritten.doc_string = "rewritten"
    return rewritten, EqualizeReport(steps=list(equalizing.trial_variants(model)[0]), sha256=model_sha256(rewritten))


@pytest.fixture
def workspace(tmp_path):
    data = tmp_path / "x.npy"
    np.save(data, _x(400, seed=2))
    return tmp_path, data


def save(model, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_auto_keeps_the_rewrite_where_it_wins_and_the_cache_belongs_to_it(workspace):
    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    cache = tmp_path / "chain.calib.cache"
    result = calibrate(model_path, str(data), cache_path=cache)
    trial = result.equalize_trial
    assert trial.kept == "all" and [r["equalize"] for r in trial.tried] == ["off", "all", "bias"]
    off, kept = trial.tried[0], trial.tried[1]
    assert kept["kept"] and not off["kept"] and kept["snr_db"] > off["snr_db"] + 10
    assert kept["samples"] == off["samples"] == trial.samples > 0
    assert result.model is not None and result.equalize is not None  # the calibrated model is the rewrite
    rewritten = tmp_path / "chain.equalized.onnx"
    assert rewritten in result.files_written and rewritten.is_file()
    sidecar = json.loads(sidecar_path(cache).read_text())
    assert sidecar["model"]["file"] == rewritten.name and sidecar["model"]["sha256"] == file_sha256(rewritten)
    assert sidecar["equalize"]["source_file_sha256"] == file_sha256(model_path)
    assert sidecar["equalize"]["chosen_by"] == "auto's equalization trial"
    assert sidecar["equalize_trial"]["kept"] == "all"
    assert [r["kept"] for r in sidecar["equalize_trial"]["tried"]] == [False, True, False]
    assert "beyond noise" in sidecar["equalize_trial"]["reason"]


def test_the_trial_refines_only_where_a_rewrite_ranks_first_before_refinement(workspace, monkeypatch):
    """Each model gets its own statistics and is scored with auto's choice before per-tensor refinement; only
    where a rewrite then ranks first are it and the unmodified model refined and compared again. A rewrite behind
    or tied is not refined, and the unmodified model is refined once, after the trial."""
    from trtq.calib import collect
    from trtq.pipeline import calibration

    tmp_path, data = workspace
    passes, refined = [], []
    real_collect, real_refine = collect.collect_histograms, calibration.refine
    monkeypatch.setattr(collect, "collect_histograms", lambda *a, **k: passes.append(1) or real_collect(*a, **k))
    monkeypatch.setattr(calibration, "refine", lambda ranking, *a, **k: refined.append(ranking) or real_refine(
        ranking, *a, **k))
    result = calibrate(save(separable_chain(), tmp_path / "chain.onnx"), str(data))
    trial = result.equalize_trial
    assert [r["equalize"] for r in trial.tried] == ["off", "all", "bias"] and trial.kept == "all"
    assert len(passes) == 4  # the model's, each rewrite's, and the kept rewrite's over the tensors it did not bin
    assert [r["refined"] for r in trial.tried] == [True, True, False]  # bias correction alone ranked behind
    assert len(refined) == 2 and refined[1].model is result.model
    assert all(r.scorer is None for r in refined)  # no scoring session outlives its refinement
    assert "before refinement" in trial.reason and "after refinement" in trial.reason
    for rewrite, count in ((same_numbers, 1), (anti_equalize, 1)):  # tied, behind: only the model, once
        refined.clear()
        monkeypatch.setattr(equalizing, "equalize_model", rewrite)
        kept = calibrate(save(balanced_pair(), tmp_path / "pair.onnx"), str(data))
        assert kept.equalize_trial.kept == "off" and kept.model is None
        assert len(refined) == count and not any(r["refined"] for r in kept.equalize_trial.tried)
    # a rewrite refined with the model that still ties after: the model kept, as refined in the trial
    refined.clear()
    monkeypatch.setattr(equalizing, "equalize_model", same_numbers)
    monkeypatch.setattr(equalizing, "contends", lambda rewrite, unmodified: True)
    tied = calibrate(save(balanced_pair(), tmp_path / "pair.onnx"), str(data))
    assert tied.equalize_trial.kept == "off" and [r["refined"] for r in tied.equalize_trial.tried] == [True, True]
    assert len(refined) == 2 and tied.auto.snr_db == tied.equalize_trial.tried[0]["snr_db"]
    assert tied.verdict.snr_db == tied.auto.snr_db


def test_on_many_samples_the_trial_compares_on_the_first_ones_and_only_the_kept_model_sees_them_all(tmp_path,
                                                                                                  monkeypatch):
    """With at least twice AUTO_EQUALIZE_STATISTICS_SAMPLES statistics samples, the models are compared with
    ranges from the first ones (the main pass's early snapshot, each rewrite's pass over the same batches); the
    model kept then gets its pass over every sample and its choice from it."""
    from trtq import defaults
    from trtq.calib import collect

    data = tmp_path / "x.npy"
    np.save(data, _x(500, seed=2))  # 436 statistics samples after the held-back 64
    monkeypatch.setattr(defaults, "AUTO_EQUALIZE_STATISTICS_SAMPLES", 200)
    passes = []
    real = collect.collect_histograms

    def counting(model, batches, **k):
        seen = []

        def read():
            for feed in batches:
                seen.append(len(feed["x"]))
                yield feed

        histograms = real(model, read(), **k)
        passes.append((k.get("early_snapshot"), sum(seen), k["report"]))
        return histograms

    monkeypatch.setattr(collect, "collect_histograms", counting)
    result = calibrate(save(separable_chain(), tmp_path / "chain.onnx"), str(data))
    trial = result.equalize_trial
    main, *rewrites, final = passes
    assert main[0] == 200 and main[1] == 436 and 200 <= main[2].early_samples < 232  # a batch boundary
    assert [p[1] for p in rewrites] == [main[2].early_samples] * 2  # all, bias: the same first samples
    assert trial.kept == "all" and trial.first_samples and trial.statistics_samples == main[2].early_samples
    assert final[1] == 436 and result.model is not None  # the rewrite kept, over every statistics sample
    assert "ranges from the first" in trial.line()
    assert result.collection is final[2]  # its pass, not the comparison's
    # below twice the trial's samples every model gets every sample, as before
    passes.clear()
    few = tmp_path / "few.npy"
    np.save(few, _x(400, seed=2))
    monkeypatch.setattr(defaults, "AUTO_EQUALIZE_STATISTICS_SAMPLES", 256)
    assert calibrate(save(separable_chain(), tmp_path / "chain.onnx"), str(few)).equalize_trial.kept == "all"
    assert [p[1] for p in passes] == [336] * 4 and passes[0][0] is None  # the kept rewrite's over the rest


def test_a_rewrites_pass_observes_what_its_scoring_reads_and_the_kept_one_then_every_other_tensor(workspace,
                                                                                                  monkeypatch):
    """A rewrite is ranked, refined and judged through its TensorRT-form Q/DQ model: its statistics pass observes
    only the tensors that model quantizes. The rewrite kept then gets a pass over every tensor its trial pass did
    not bin (on the same samples): its cache holds them all, its choice (ranked where the histograms are the
    same) and overrides as they were."""
    from trtq.calib import amax_from_histograms, collect
    from trtq.calib.collect import activation_tensors, qdq_tensors

    tmp_path, data = workspace
    observed = []
    real = collect.collect_histograms
    monkeypatch.setattr(collect, "collect_histograms",
                        lambda model, batches, **k: observed.append((model, k.get("tensors"))) or real(model, batches,
                                                                                                      **k))
    result = calibrate(save(separable_chain(), tmp_path / "chain.onnx"), str(data))
    assert result.equalize_trial.kept == "all"
    (main, everything), (kept, trt_form), (_, bias_form), (final, final_tensors) = observed
    assert everything is None and final is kept is result.model
    assert final_tensors == [t for t in activation_tensors(kept) if t not in trt_form]  # nothing binned twice
    assert list(result.histograms) == activation_tensors(kept)  # both passes, merged in graph order
    assert trt_form == qdq_tensors(kept, forms=("trt",)) and bias_form and set(bias_form) < set(
        activation_tensors(result.model))
    assert list(result.amax) == activation_tensors(result.model)  # every tensor, in graph order
    chosen = amax_from_histograms(result.histograms, result.auto.chosen)
    others = [name for name in result.amax if name not in trt_form]
    assert others and all(result.amax[name] == chosen[name] for name in others)
    for tensor in trt_form:  # the quantized ones: the choice's, or the override the refinement kept
        assert result.amax[tensor] == chosen[tensor] or tensor in result.auto.overrides


def test_the_kept_rewrites_merged_passes_equal_one_pass_over_every_tensor(workspace, monkeypatch):
    """The kept rewrite's histograms from its trial pass and its pass over the other tensors are those of one
    pass over every tensor (a histogram reads only its own tensor's values): the same cache, histograms, half-way
    snapshot and convergence record."""
    from trtq.calib.collect import activation_tensors
    from trtq.pipeline import calibration

    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    merged = calibrate(model_path, str(data), cache_path=tmp_path / "merged.cache")
    monkeypatch.setattr(calibration, "_rest_of_pass", lambda model, binned, report, observed, collect: collect(
        observed if observed is not None else activation_tensors(model)))
    whole = calibrate(model_path, str(data), cache_path=tmp_path / "whole.cache")
    assert merged.equalize_trial.kept == whole.equalize_trial.kept == "all"
    assert (tmp_path / "merged.cache").read_bytes() == (tmp_path / "whole.cache").read_bytes()
    assert list(merged.histograms) == list(whole.histograms)
    for name, histogram in whole.histograms.items():
        other = merged.histograms[name]
        assert np.array_equal(other.counts, histogram.counts) and other.range == histogram.range
        assert other.max_abs == histogram.max_abs and other.num_values == histogram.num_values
    half, whole_half = merged.collection.half, whole.collection.half
    assert list(half) == list(whole_half) and merged.collection.half_samples == whole.collection.half_samples
    assert all(np.array_equal(half[n].counts, whole_half[n].counts) for n in half)
    assert merged.convergence == whole.convergence and merged.amax == whole.amax


def test_a_kept_rewrite_is_written_beside_the_cache_never_into_the_models_folder(workspace):
    """A model in a folder the user does not write to (site-packages, a read-only mount) with the cache elsewhere:
    the rewrite goes beside the cache, the model's folder is left as it was, and quantize finds the rewrite."""
    import os
    import stat

    tmp_path, data = workspace
    shipped = tmp_path / "site-packages"
    shipped.mkdir()
    model_path = save(separable_chain(), shipped / "chain.onnx")
    shipped.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        out = tmp_path / "out"
        out.mkdir()
        cache = out / "chain.calib.cache"
        result = calibrate(model_path, str(data), cache_path=cache)
        assert result.equalize_trial.kept == "all"
        assert (out / "chain.equalized.onnx").is_file() and os.listdir(shipped) == ["chain.onnx"]
        assert quantize(model_path, tmp_path / "q.onnx", cache=cache).equalized_model == out / "chain.equalized.onnx"
    finally:
        shipped.chmod(stat.S_IRWXU)


def test_quantize_with_the_cache_of_a_kept_rewrite_quantizes_the_rewrite_without_a_flag(workspace):
    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    cache = tmp_path / "chain.calib.cache"
    calibrate(model_path, str(data), cache_path=cache)
    rewritten = tmp_path / "chain.equalized.onnx"
    outcome = quantize(model_path, tmp_path / "q.onnx", cache=cache)
    assert outcome.equalized_model == rewritten
    by_name = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "q.onnx")).graph.initializer}
    from_rewrite = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(rewritten)).graph.initializer}
    assert np.array_equal(by_name["b_stem"], from_rewrite["b_stem"])  # float biases stay float: the rewrite's
    assert not np.array_equal(by_name["b_stem"], numpy_helper.to_array(
        next(i for i in separable_chain().graph.initializer if i.name == "b_stem")))
    # the rewrite is what the scales fit: without it the cache is refused, saying where it should be
    rewritten.unlink()
    with pytest.raises(CacheError, match="chain.equalized.onnx"):
        quantize(model_path, tmp_path / "q2.onnx", cache=cache)


def test_a_rewrite_that_loses_or_ties_is_not_kept(workspace, monkeypatch):
    tmp_path, data = workspace
    model_path = save(balanced_pair(), tmp_path / "pair.onnx")
    cache = tmp_path / "pair.calib.cache"
    monkeypatch.setattr(equalizing, "equalize_model", same_numbers)
    tied = calibrate(model_path, str(data), cache_path=cache)
    assert tied.equalize_trial.kept == "off" and tied.model is None
    assert tied.equalize_trial.reason == "all: within noise: the unmodified model is kept before refinement"
    monkeypatch.setattr(equalizing, "equalize_model", anti_equalize)
    lost = calibrate(model_path, str(data), cache_path=cache)
    off, rewrite = lost.equalize_trial.tried
    assert lost.equalize_trial.kept == "off" and rewrite["snr_db"] < off["snr_db"] - 3
    assert "behind beyond noise" in lost.equalize_trial.reason
    sidecar = json.loads(sidecar_path(cache).read_text())
    assert sidecar["model"]["sha256"] == file_sha256(model_path) and "equalize" not in sidecar
    assert sidecar["equalize_trial"]["kept"] == "off"
    assert not (tmp_path / "pair.equalized.onnx").exists()
    assert quantize(model_path, tmp_path / "q.onnx", cache=cache).equalized_model is None


def test_keeps_needs_a_win_beyond_noise_and_decisions_not_lower():
    def candidate(snr, decision=None, noise=0.1):
        return Candidate("c", snr, 0.99, decision=decision, decision_noise=noise, snr_noise=noise)

    assert equalizing.keeps(candidate(30.0), candidate(20.0)) == (True, "ahead beyond noise on worst SNR")
    assert not equalizing.keeps(candidate(20.0), candidate(30.0))[0]
    assert not equalizing.keeps(candidate(30.0, decision=0.95), candidate(20.0, decision=0.96))[0]
    assert equalizing.keeps(candidate(20.0, decision=0.99, noise=0.001), candidate(30.0, decision=0.9))[0]
    small = equalizing.keeps(candidate(20.2, noise=0.01), candidate(20.0, noise=0.01))
    assert small == (False, "ahead by 0.20 dB, under the 0.3 dB a rewrite must gain")


def test_no_trial_where_nothing_can_change_or_it_was_not_asked(workspace, monkeypatch):
    tmp_path, data = workspace
    from trtq.calib import collect

    passes = []

    real = collect.collect_histograms
    monkeypatch.setattr(collect, "collect_histograms", lambda *a, **k: passes.append(1) or real(*a, **k))
    # no convolution: nothing to rewrite, one statistics pass (the trial costs nothing)
    result = calibrate(save(matmul_only(), tmp_path / "fc.onnx"), str(data))
    assert result.equalize_trial.tried == [] and "nothing to rewrite" in result.equalize_trial.reason
    assert len(passes) == 1
    chain = save(separable_chain(), tmp_path / "chain.onnx")
    # a named algorithm is the user's choice: no trial unless asked; --equalize off: none with auto either
    assert calibrate(chain, str(data), algorithm="minmax").equalize_trial is None
    assert calibrate(chain, str(data), equalize="off").equalize_trial is None
    asked = calibrate(chain, str(data), algorithm="minmax", equalize="auto")
    assert asked.equalize_trial.kept == "all" and asked.auto is None
    # a dozen held-back samples cannot tell a rewrite from noise: the model stays as it is, untried
    few = tmp_path / "few.npy"
    np.save(few, _x(48, seed=2))
    passes.clear()
    untried = calibrate(chain, str(few))
    assert untried.equalize_trial.tried == [] and "cannot tell" in untried.equalize_trial.reason
    assert untried.model is None and len(passes) == 1


def test_a_failed_gate_after_a_kept_rewrite_writes_nothing(workspace):
    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    cache = tmp_path / "chain.calib.cache"
    with pytest.raises(FidelityError):
        calibrate(model_path, str(data), cache_path=cache, min_snr=90.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.onnx", "x.npy"]


def test_someone_elses_file_where_the_rewrite_goes_ends_the_trial_not_the_calibration(workspace):
    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    foreign = tmp_path / "chain.equalized.onnx"
    foreign.write_text("mine")
    cache = tmp_path / "chain.calib.cache"
    result = calibrate(model_path, str(data), cache_path=cache)
    assert result.equalize_trial.tried == [] and "not a trtq" in result.equalize_trial.reason
    assert foreign.read_text() == "mine" and result.model is None
    assert json.loads(sidecar_path(cache).read_text())["model"]["sha256"] == file_sha256(model_path)


def test_the_trial_reads_the_statistics_samples_again_in_the_same_order(workspace):
    from trtq.data.spec import DataSpec
    from trtq.graph.model import load_onnx
    from trtq.pipeline.calibration import _split_data
    from trtq.progress import no_progress

    tmp_path, data = workspace
    model = load_onnx(save(separable_chain(), tmp_path / "chain.onnx"))
    split = _split_data(model, DataSpec(path=str(data)), [], 32, "auto", None, no_progress)
    first, again = list(split.batches), list(split.again())
    assert len(first) == len(again) > 1
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(first, again))
    held = np.concatenate([f["x"] for f in split.held + split.reserve_feeds])
    assert not any((np.abs(held[:, None] - f["x"][None]).reshape(len(held), len(f["x"]), -1).max(-1) == 0).any()
                   for f in again)  # never a held-back sample


class _StopBeforeTensorRT(Exception):
    pass


def test_build_with_the_cache_of_a_kept_rewrite_builds_the_rewrite(workspace, monkeypatch):
    """prepare_build (every check before TensorRT) takes the rewrite the cache belongs to in the model's place:
    TensorRT's implicit path parses that file with the cache, the explicit path quantizes it."""
    import trtq.backend as backend
    from trtq.backend.build import BuildOptions, prepare_build

    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    cache = tmp_path / "chain.calib.cache"
    calibrate(model_path, str(data), cache_path=cache)

    def stop():
        raise _StopBeforeTensorRT

    monkeypatch.setattr(backend, "import_tensorrt", stop)
    options = BuildOptions(model_path, tmp_path / "chain.engine", precision="int8", cache_path=cache)
    with pytest.raises(_StopBeforeTensorRT):
        prepare_build(options)
    assert options.model_path == tmp_path / "chain.equalized.onnx"


def test_build_calibrating_with_a_cache_builds_the_rewrite_auto_kept(workspace):
    from types import SimpleNamespace

    from trtq.backend.build import BuildOptions
    from trtq.pipeline.building import _calibrate

    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    options = BuildOptions(model_path, tmp_path / "chain.engine", precision="int8", calib=str(data),
                           algorithm="auto", cache_path=tmp_path / "chain.calib.cache")
    prepared = SimpleNamespace(keep_float=[], model=None, sha=None)
    result = _calibrate(options, prepared, lambda *a: None)
    assert result.equalize_trial.kept == "all"
    assert options.model_path == tmp_path / "chain.equalized.onnx" and prepared.model is result.model
    assert prepared.sha == file_sha256(options.model_path)
    # without a cache there is nowhere to keep the rewrite beside: the model is built as it is
    plain = BuildOptions(model_path, tmp_path / "plain.engine", precision="int8", calib=str(data), algorithm="auto")
    assert _calibrate(plain, SimpleNamespace(keep_float=[], model=None, sha=None), lambda *a: None).model is None
    assert plain.model_path == model_path


def test_deploy_with_the_cache_of_a_kept_rewrite_ships_the_rewrite(workspace):
    from trtq.deploy.triton import write_repository

    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    cache = tmp_path / "chain.calib.cache"
    calibrate(model_path, str(data), cache_path=cache)
    payload = write_repository(model_path, cache, tmp_path / "repo")["model"]
    shipped = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(payload)).graph.initializer}
    rewrite = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(tmp_path / "chain.equalized.onnx")).graph.initializer}
    assert np.array_equal(shipped["b_stem"], rewrite["b_stem"])


def test_sensitivity_with_the_cache_of_a_kept_rewrite_requantizes_the_rewrite(workspace):
    from trtq.pipeline.evaluation import resolve_amax
    from trtq.precision.search import layer_sensitivity
    from trtq.runtime.replay import Replay

    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    cache = tmp_path / "chain.calib.cache"
    calibrate(model_path, str(data), cache_path=cache)
    amax, where, requantized = resolve_amax(model_path, cache=cache)
    assert requantized == tmp_path / "chain.equalized.onnx" and "chain.equalized.onnx" in where
    replay = Replay.collect(model_path, str(data), samples=32)  # the original's float outputs judge it
    ranked = layer_sensitivity(requantized, amax, replay=replay)
    wrong = layer_sensitivity(model_path, amax, replay=replay)  # the rewrite's scales on the original
    assert min(r.own_snr_db for r in ranked) > min(r.own_snr_db for r in wrong) + 10  # 34 vs 16 dB


def test_observing_the_qdq_tensors_observes_the_rewrites_own(workspace):
    """``observe="qdq"`` (what ``quantize --calib`` calibrates with) names the tensors of the model observed: a
    rewrite's are its own, so a re-centred input (a tensor the unmodified model does not have) is observed,
    scored quantized, and in the table of the rewrite kept."""
    from trtq.calib.collect import qdq_tensors

    tmp_path, data = workspace
    result = calibrate(save(separable_chain(), tmp_path / "chain.onnx"), str(data), observe="qdq")
    assert result.equalize_trial.kept == "all" and result.equalize.centred_tensors
    centred = [n.output[0] for n in result.model.graph.node if n.op_type == "Sub"]
    assert centred and all(name in result.amax for name in centred)
    assert set(qdq_tensors(result.model)) <= set(result.amax)


def test_entropy_with_a_forced_re_centring_is_warned_about(workspace, caplog):
    """``--algo entropy --equalize`` with tensors re-centred: the log says entropy can clip them and names the
    steps without ``centre``; another algorithm, or a rewrite that centres nothing, is not warned about."""
    import logging

    tmp_path, data = workspace
    model_path = save(separable_chain(), tmp_path / "chain.onnx")
    with caplog.at_level(logging.WARNING, logger="trtq"):
        result = calibrate(model_path, str(data), algorithm="entropy", equalize=True)
    assert result.equalize.centred_tensors
    warned = [r.getMessage() for r in caplog.records if "re-centred" in r.getMessage()]
    assert len(warned) == 1 and "--equalize cle,absorb,bias" in warned[0] and "--algo auto" in warned[0]
    for algorithm, steps in (("mse", True), ("entropy", "cle,absorb,bias")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="trtq"):
            calibrate(model_path, str(data), algorithm=algorithm, equalize=steps)
        assert not [r for r in caplog.records if "re-centred" in r.getMessage()]


def float_changed(model, feeds, threads=None, steps=True):
    """A rewrite whose float model decides otherwise (the head's last output channel scaled up): what bias
    correction or an inexact absorption can do to decisions near a threshold."""
    from trtq.graph.equalize import EqualizeReport

    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    head = next(i for i in rewritten.graph.initializer if i.name == "w_head")
    weights = numpy_helper.to_array(head).copy()
    weights[-1] *= 5.0
    head.CopyFrom(numpy_helper.from_array(weights, "w_head"))
    return rewritten, EqualizeReport(steps=list(equalizing.trial_variants(model)[0]), sha256=model_sha256(rewritten))


def test_with_a_budget_a_rewrite_whose_float_model_loses_decisions_is_not_tried(workspace, monkeypatch):
    """A budget leaves layers float down to the whole model and must reach FP32's decisions there: a rewrite
    whose float model already decides otherwise cannot carry it, so it is not tried (no statistics pass) and the
    trial says why. Without a budget the same rewrite is tried as any other."""
    from trtq.calib import collect
    from trtq.precision.targets import FidelityTarget

    tmp_path, data = workspace
    passes = []
    real_collect = collect.collect_histograms
    monkeypatch.setattr(collect, "collect_histograms", lambda *a, **k: passes.append(1) or real_collect(*a, **k))
    monkeypatch.setattr(equalizing, "equalize_model", float_changed)
    model = save(separable_chain(), tmp_path / "chain.onnx")
    budgeted = calibrate(model, str(data), class_outputs=["y:1"], target=FidelityTarget(max_drop=50))
    trial = budgeted.equalize_trial
    assert trial.kept == "off" and trial.tried == [] and len(passes) == 1
    assert trial.skipped["all"].startswith("its float model already loses")
    assert "not tried (all: its float model already loses" in trial.line()
    assert budgeted.mixed_precision.budget.met
    passes.clear()
    plain = calibrate(model, str(data), class_outputs=["y:1"])
    assert [r["equalize"] for r in plain.equalize_trial.tried] == ["off", "all"] and len(passes) == 2
