"""trtq.graph.equalize: cross-layer equalization, high-bias absorption, bias correction; and --equalize end to end."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtq.errors import TrtqError
from trtq.graph import equalize as eq
from trtq.graph.qdq import quantize_model, quantize_weight
from trtq.pipeline.quantization import quantize

CHANNELS = 8


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _snr(ref, out):
    ref, out = ref.astype(np.float64), out.astype(np.float64)
    return 10 * np.log10((ref ** 2).sum() / ((ref - out) ** 2).sum())


def _build(nodes, inits, out_channels=16):
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "C", "H", "W"])],
                              [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def separable_chain(seed: int = 0, between: str = "Relu"):
    """stem 3x3 (output channels spanning 3 decades) -> Relu -> depthwise 3x3 -> PRelu -> pointwise 1x1 -> MaxPool
    -> 1x1 head: the ranges a per-tensor activation scale and a depthwise filter cannot share."""
    rng = np.random.default_rng(seed)
    spread = np.logspace(-1.5, 1.5, CHANNELS).astype(np.float32)
    inits = {
        "w_stem": rng.standard_normal((CHANNELS, 3, 3, 3)) * 0.3 * spread[:, None, None, None],
        "b_stem": rng.standard_normal(CHANNELS) * 0.1 * spread,
        "w_dw": rng.standard_normal((CHANNELS, 1, 3, 3)) * 0.5 / spread[:, None, None, None],
        "b_dw": rng.standard_normal(CHANNELS) * 0.1,
        "slope": np.full((CHANNELS, 1, 1), 0.25),
        "w_pw": rng.standard_normal((16, CHANNELS, 1, 1)) * 0.3,
        "b_pw": rng.standard_normal(16) * 0.1,
        "w_head": rng.standard_normal((4, 16, 1, 1)) * 0.3,
    }
    nodes = [
        helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
        helper.make_node(between, ["c1"], ["a1"], name="act1"),
        helper.make_node("Conv", ["a1", "w_dw", "b_dw"], ["c2"], name="dw", pads=[1, 1, 1, 1], group=CHANNELS),
        helper.make_node("PRelu", ["c2", "slope"], ["a2"], name="act2"),
        helper.make_node("Conv", ["a2", "w_pw", "b_pw"], ["c3"], name="pw"),
        helper.make_node("MaxPool", ["c3"], ["p3"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p3", "w_head"], ["y"], name="head"),
    ]
    return _build(nodes, inits)


def _x(count=16, seed=1):
    return np.random.default_rng(seed).random((count, 3, 12, 12), dtype=np.float32)


def _minmax(model, x):
    names = [o for n in model.graph.node for o in n.output]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(helper.make_empty_tensor_value_info(n) for n in names)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip(names, session.run(names, {"x": x})))
    return {"x": float(np.abs(x).max()), **{k: float(np.abs(v).max()) for k, v in values.items()}}


def test_cle_keeps_the_float_model_and_equalizes_the_ranges():
    model = separable_chain()
    x = _x()
    rewritten, report = eq.equalize(model, steps=["cle"])
    assert [tuple(p) for p in report.pairs] == [("stem", "dw"), ("dw", "pw"), ("pw", "head")]
    assert report.sha256 != report.source_sha256 and report.steps == ["cle"]
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-4, atol=1e-4 * np.abs(_run(model, x)).max())
    weights = {i.name: numpy_helper.to_array(i) for i in rewritten.graph.initializer}
    stem = np.abs(weights["w_stem"]).reshape(CHANNELS, -1).max(1)
    dw = np.abs(weights["w_dw"]).reshape(CHANNELS, -1).max(1)
    np.testing.assert_allclose(stem, dw, rtol=0.05)  # both sqrt(r1 * r2) once the chain has settled
    before = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "w_stem"))
    assert np.ptp(np.log10(stem)) < np.ptp(np.log10(np.abs(before).reshape(CHANNELS, -1).max(1))) / 2


def test_cle_raises_the_int8_fidelity_of_a_depthwise_chain():
    model = separable_chain()
    x = _x(32)
    ref = _run(model, x)
    rewritten, _ = eq.equalize(model, steps=["cle"])
    plain = _snr(ref, _run(quantize_model(model, _minmax(model, x), target="trt")[0], x))
    equalized = _snr(ref, _run(quantize_model(rewritten, _minmax(rewritten, x), target="trt")[0], x))
    assert equalized > plain + 3


@pytest.mark.parametrize("case", ["not homogeneous", "shared weight", "two readers", "grouped"])
def test_pairs_are_only_made_where_the_rescale_is_exact(case):
    if case == "not homogeneous":  # HardSwish(x / s) != HardSwish(x) / s
        model = separable_chain(between="HardSwish")
        assert ("stem", "dw") not in [(model.graph.node[p.producer].name, model.graph.node[p.consumer].name)
                                      for p in eq.find_pairs(model)]
        return
    model = separable_chain()
    if case == "shared weight":  # the pointwise weight also read by a second conv
        model.graph.node.append(helper.make_node("Conv", ["a2", "w_pw"], ["extra"], name="extra"))
        model.graph.output.append(helper.make_empty_tensor_value_info("extra"))
    elif case == "two readers":  # the depthwise output read twice
        model.graph.node.append(helper.make_node("Identity", ["c2"], ["extra"], name="extra"))
        model.graph.output.append(helper.make_empty_tensor_value_info("extra"))
    else:  # a grouped (not depthwise) consumer
        model = separable_chain()
        node = model.graph.node[2]
        next(a for a in node.attribute if a.name == "group").i = 2
        init = next(i for i in model.graph.initializer if i.name == "w_dw")
        init.CopyFrom(numpy_helper.from_array(np.ones((CHANNELS, CHANNELS // 2, 3, 3), np.float32), "w_dw"))
    names = [(model.graph.node[p.producer].name, model.graph.node[p.consumer].name) for p in eq.find_pairs(model)]
    dropped, left = {"shared weight": ([("dw", "pw"), ("pw", "head")], 1), "two readers": ([("dw", "pw")], 2),
                     "grouped": ([("stem", "dw")], 2)}[case]
    assert not set(dropped) & set(names) and len(names) == left
    x = _x(4)
    np.testing.assert_allclose(_run(eq.equalize(model, steps=["cle"])[0], x)[..., :1], _run(model, x)[..., :1],
                               rtol=1e-4, atol=1e-3)


def test_a_chain_of_homogeneous_ops_makes_one_pair():
    """MTCNN's Conv -> PRelu -> MaxPool -> Conv: both ops commute with the rescale."""
    model = separable_chain()
    pw = next(n for n in model.graph.node if n.name == "pw")
    pw.input[0] = "pooled"
    at = [n.name for n in model.graph.node].index("pw")
    model.graph.node.insert(at, helper.make_node("MaxPool", ["a2"], ["pooled"], name="pool0", kernel_shape=[1, 1]))
    pairs = [(model.graph.node[p.producer].name, model.graph.node[p.consumer].name, p.single)
             for p in eq.find_pairs(model)]
    assert ("dw", "pw", False) in pairs
    x = _x(4)
    np.testing.assert_allclose(_run(eq.equalize(model, steps=["cle"])[0], x), _run(model, x), rtol=1e-4, atol=1e-4)


def test_high_bias_absorption_is_exact_where_the_bound_holds():
    """stem's channel biases are large and positive, so its pre-activation never reaches zero: the bias
    moves into the 1x1 conv after the Relu, the outputs stay, and the activation range shrinks."""
    rng = np.random.default_rng(3)
    inits = {"w1": rng.standard_normal((CHANNELS, 3, 1, 1)) * 0.1, "b1": np.linspace(5, 12, CHANNELS),
             "w2": rng.standard_normal((4, CHANNELS, 1, 1)), "b2": np.zeros(4)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="c1"),
             helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["y"], name="c2")]
    model = _build(nodes, inits)
    x = _x()
    from trtq.pipeline.calibration import channel_statistics

    rewritten, report = eq.equalize(model, channel_statistics([{"x": x}]), steps=["absorb"])
    assert report.absorbed_channels == CHANNELS and report.absorbed_layers == ["c1"]
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-4, atol=1e-4)
    assert _minmax(rewritten, x)["r1"] < _minmax(model, x)["r1"] / 3


def test_bias_correction_removes_the_mean_shift_of_weight_rounding():
    rng = np.random.default_rng(5)
    inits = {"w1": rng.standard_normal((CHANNELS, 3, 3, 3)) * 0.05 + 0.02}
    model = _build([helper.make_node("Conv", ["x", "w1"], ["y"], name="c1")], inits)
    x = _x(32) + 2.0  # a large input mean: rounding errors add up
    from trtq.pipeline.calibration import channel_statistics

    rewritten, report = eq.equalize(model, channel_statistics([{"x": x}]), steps=["bias"])
    assert report.corrected_layers == ["c1"]

    def rounded(m):  # the weights as int8 rounds them, the rest float
        out = onnx.ModelProto()
        out.CopyFrom(m)
        init = next(i for i in out.graph.initializer if i.name == "w1")
        q, scale = quantize_weight(numpy_helper.to_array(init), axis=0)
        init.CopyFrom(numpy_helper.from_array((q * scale[:, None, None, None]).astype(np.float32), "w1"))
        return out

    ref = _run(model, x)
    shift_before = np.abs((_run(rounded(model), x) - ref).mean(axis=(0, 2, 3))).max()
    shift_after = np.abs((_run(rounded(rewritten), x) - ref).mean(axis=(0, 2, 3))).max()
    assert shift_after < shift_before / 10


def hardswish_block(seed: int = 7):
    """stem 3x3 -> HardSwish (output in [-0.375, inf), one channel far from zero) read by a 1x1 conv (re-centrable),
    a padded 3x3 conv (not: its borders would read -c) -> y, z."""
    rng = np.random.default_rng(seed)
    inits = {"w_stem": rng.standard_normal((CHANNELS, 3, 3, 3)) * 0.5, "b_stem": np.linspace(0.5, 4, CHANNELS),
             "w_pw": rng.standard_normal((16, CHANNELS, 1, 1)) * 0.3, "b_pw": rng.standard_normal(16) * 0.1,
             "w_pad": rng.standard_normal((4, CHANNELS, 3, 3)) * 0.3}
    nodes = [helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["c1"], pads=[1, 1, 1, 1]),  # unnamed
             helper.make_node("HardSwish", ["c1"], ["h1"], name="act"),
             helper.make_node("Conv", ["h1", "w_pw", "b_pw"], ["y"], name="pw"),
             helper.make_node("Conv", ["h1", "w_pad"], ["z"], name="padded", pads=[1, 1, 1, 1])]
    model = _build(nodes, inits)
    model.graph.output.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", 4, 12, 12]))
    return model


def _run_all(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in model.graph.output], session.run(None, {"x": x})))


def test_recentring_is_exact_and_narrows_the_tensor_the_1x1_reader_quantizes():
    from trtq.graph.qdq import node_names
    from trtq.pipeline.calibration import channel_statistics

    model = hardswish_block()
    x = _x(32)
    names_before = node_names(model)
    rewritten, report = eq.equalize(model, channel_statistics([{"x": x}]), steps=["centre"])
    assert report.centred_tensors == ["h1"] and report.steps == ["centre"]
    onnx.checker.check_model(rewritten)
    readers = {n.name: n.input[0] for n in rewritten.graph.node if n.op_type == "Conv"}
    assert readers["padded"] == "h1" and readers["pw"] != "h1"  # only the unpadded reader reads x - c
    assert [n for n in node_names(rewritten) if "trtq_centre" not in n] == names_before  # unnamed nodes keep theirs
    before, after = _run_all(model, x), _run_all(rewritten, x)
    for name in before:
        np.testing.assert_allclose(after[name], before[name], rtol=1e-5, atol=1e-5 * np.abs(before[name]).max())
    ranges = _minmax(rewritten, x)
    assert ranges[readers["pw"]] < 0.7 * ranges["h1"]
    ref = before["y"]
    plain = _snr(ref, _run_all(quantize_model(model, _minmax(model, x), target="trt")[0], x)["y"])
    centred = _snr(ref, _run_all(quantize_model(rewritten, ranges, target="trt")[0], x)["y"])
    assert centred > plain + 2


def test_recentring_a_gemm_reader_moves_the_centre_into_its_bias():
    from trtq.pipeline.calibration import channel_statistics

    rng = np.random.default_rng(11)
    inits = {"w_stem": rng.standard_normal((CHANNELS, 3, 3, 3)) * 0.5, "b_stem": np.linspace(1, 3, CHANNELS),
             "w_fc": rng.standard_normal((CHANNELS, 5)), "shape": np.asarray([0, -1])}
    nodes = [helper.make_node("Conv", ["x", "w_stem", "b_stem"], ["c1"], name="stem", pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c1"], ["s1"], name="gate"),
             helper.make_node("GlobalAveragePool", ["s1"], ["p1"], name="pool"),
             helper.make_node("Flatten", ["p1"], ["f1"], name="flat"),
             helper.make_node("Gemm", ["f1", "w_fc"], ["y"], name="fc")]  # transB 0, no bias: one is made
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    x = _x(16)
    assert "centre" in eq.applicable_steps(model)
    rewritten, report = eq.equalize(model, channel_statistics([{"x": x}]), steps=["centre"])
    assert report.centred_tensors == ["f1"]
    fc = next(n for n in rewritten.graph.node if n.name == "fc")
    assert fc.input[0] != "f1" and len(fc.input) == 3
    np.testing.assert_allclose(_run(rewritten, x), _run(model, x), rtol=1e-5, atol=1e-5)


def test_recentring_leaves_a_tensor_centred_on_zero_alone():
    from trtq.pipeline.calibration import channel_statistics

    model = hardswish_block()
    x = _x(8) - 0.5
    ranges = {"h1": (-np.ones(CHANNELS), np.ones(CHANNELS) * 1.05)}  # a midpoint of 0.025: nothing to gain
    assert eq.centre_activations(model, ranges) == []
    assert eq.applicable_steps(separable_chain(), ["centre"]) == ("centre",)  # the 1x1 head reads a MaxPool
    rewritten, report = eq.equalize(model, channel_statistics([{"x": x}]), steps=["cle"])
    assert report.centred_tensors == []


def test_equalize_steps_are_checked():
    from trtq.errors import TrtqError

    assert eq.parse_steps(True) == eq.STEPS and eq.parse_steps("bias,cle") == ("cle", "bias") and eq.parse_steps(None) == ()
    with pytest.raises(TrtqError, match="unknown step"):
        eq.parse_steps("cle,smooth")


def test_calibrate_equalize_lists_every_file_it_wrote(tmp_path):
    """The rewritten model is written beside the cache, so it is among the files the result (and the
    command's "wrote" lines) name, with the cache and its sidecar."""
    from trtq.cache import sidecar_path
    from trtq.pipeline.calibration import calibrate

    model_path = tmp_path / "chain.onnx"
    onnx.save(separable_chain(), str(model_path))
    data = tmp_path / "x.npy"
    np.save(data, _x(48, seed=2))
    cache = tmp_path / "chain.calib.cache"
    result = calibrate(model_path, str(data), algorithm="minmax", cache_path=cache, equalize=True)
    assert set(result.files_written) == {tmp_path / "chain.equalized.onnx", cache, sidecar_path(cache)}


def test_calibrate_equalize_writes_the_rewritten_model_its_cache_belongs_to(tmp_path, capsys):
    from trtq.cli import main
    from trtq.errors import CacheError
    from trtq.graph.model import file_sha256

    model_path = tmp_path / "chain.onnx"
    onnx.save(separable_chain(), str(model_path))
    data = tmp_path / "x.npy"
    np.save(data, _x(48, seed=2))
    cache = tmp_path / "chain.calib.cache"
    assert main(["calibrate", str(model_path), "--calib", str(data), "--samples", "all", "--algo", "minmax",
                 "-o", str(cache), "--equalize"]) == 0
    assert "equalized: 3 convolution pair(s)" in " ".join(capsys.readouterr().out.split())
    rewritten = tmp_path / "chain.equalized.onnx"
    sidecar = json.loads((tmp_path / "chain.calib.cache.json").read_text())
    record = sidecar["equalize"]
    assert sidecar["model"]["sha256"] == file_sha256(rewritten) and sidecar["model"]["file"] == rewritten.name
    assert record["source_file_sha256"] == file_sha256(model_path)
    assert record["steps"] == list(eq.STEPS) and len(record["pairs"]) == 3 and "--equalize" in record["reproduce"]
    # the cache belongs to the rewritten model: quantize (explicit path) takes it, and given the original it
    # quantizes the rewrite beside it; another model is refused
    outcome = quantize(rewritten, tmp_path / "q.onnx", cache=cache)
    assert set(outcome.summary.quantized) == {"stem", "dw", "pw", "head"}
    assert quantize(model_path, tmp_path / "q2.onnx", cache=cache).equalized_model == rewritten
    other = tmp_path / "other.onnx"
    onnx.save(separable_chain(seed=5), str(other))
    with pytest.raises(CacheError):
        quantize(other, tmp_path / "q5.onnx", cache=cache)
    # the rewrite is deterministic: calibrating again gives the same file
    first = file_sha256(rewritten)
    assert main(["-q", "calibrate", str(model_path), "--calib", str(data), "--samples", "all", "--algo", "minmax",
                 "-o", str(cache), "--equalize"]) == 0
    assert file_sha256(rewritten) == first
    # quantize --calib --equalize: the Q/DQ model carries the rewritten weights, judged against the original
    outcome = quantize(model_path, tmp_path / "q3.onnx", calib=str(data), algorithm="minmax", equalize=True)
    assert outcome.equalize is not None and outcome.verdict["snr_db"] > 0
    with pytest.raises(TrtqError, match="--calib"):
        quantize(model_path, tmp_path / "q4.onnx", cache=cache, equalize=True)
