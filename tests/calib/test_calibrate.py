"""``trtq calibrate`` end to end: a real model with real images, and every bad input a user can cause.

Bad input must give one line on stderr (no traceback), exit code 2, and no output file.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from trtq import cache
from trtq.backend import default_trt_version
from trtq.calib.collect import activation_tensors
from trtq.cli import main
from trtq.data.spec import DataSpec
from trtq.graph.model import file_sha256
from trtq.pipeline.calibration import calibrate


def _save(model, path):
    onnx.save(model, str(path))
    return path


def conv_model(path, channels: int = 3, dtype=TensorProto.FLOAT):
    """Conv -> Relu -> GlobalAveragePool on Nx<channels>x8x8."""
    x = helper.make_tensor_value_info("x", dtype, ["N", channels, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    w = helper.make_tensor("w", TensorProto.FLOAT, [4, channels, 3, 3],
                           np.random.default_rng(0).normal(size=4 * channels * 9).astype(np.float32))
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="pool")]
    graph = helper.make_graph(nodes, "conv", [x], [y], [w])
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)


def _npy_folder(folder, count=6, shape=(3, 8, 8), dtype=np.float32, fill=None):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(count):
        sample = rng.normal(size=shape).astype(dtype) if fill is None else np.full(shape, fill, dtype=dtype)
        np.save(folder / f"s{i}.npy", sample)
    return folder


def run_cli(args, capsys):
    code = main(["-q", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.err


def assert_clean_failure(code, err, out_dir, fragment, expected_code=2):
    assert code == expected_code
    assert "Traceback" not in err, err
    lines = [line for line in err.strip().splitlines() if line.startswith("trtq ")]  # warnings may precede it
    assert len(lines) == 1, err
    assert fragment.lower() in lines[0].lower(), lines[0]
    leftovers = [p.name for p in out_dir.iterdir() if p.suffix in (".cache", ".json", ".tmp") or ".tmp" in p.name]
    assert leftovers == [], leftovers


# -- the happy path on a real model -------------------------------------------------------------


@pytest.mark.slow
def test_yolov8n_real_photos_end_to_end(yolo_model_path, photo_crops_folder, tmp_path, capsys):
    out = tmp_path / "yolo.calib.cache"
    code, err = run_cli(["calibrate", yolo_model_path, "--calib", photo_crops_folder, "--samples", 8,
                         "--batch-size", 4, "--size", "320x320", "-o", out], capsys)
    assert code == 0, err
    parsed = cache.read_cache(out)
    model = onnx.load(str(yolo_model_path))
    assert parsed.header == f"TRT-{default_trt_version()}-EntropyCalibration2"
    # every float activation got a scale, the network input included, in graph order
    assert list(parsed.scales) == activation_tensors(model)
    assert all(scale > 0 for scale in parsed.scales.values())
    # the input was scaled to [0, 1]: its amax is the largest pixel value seen (at most 1)
    assert 0.5 < parsed.amax["images"] <= 1.0 + 1e-6
    side = parsed.sidecar
    assert side["model"]["sha256"] == file_sha256(yolo_model_path)
    assert side["data"]["samples"] == 8 and side["algorithm"]["name"] == "auto"
    assert side["algorithm"]["chosen"] in ("entropy", "minmax", "percentile", "mse")
    assert side["data"]["held_back_samples"] == 2 and side["data"]["statistics_samples"] == 6
    assert side["verdict"]["samples"] == 2 and side["verdict"]["held_back"]
    cache.check_cache_matches(parsed, model, file_sha256(yolo_model_path), parsed.scales)


def test_api_returns_amax_and_writes_nothing_without_cache_path(tmp_path):
    model = conv_model(tmp_path / "m.onnx")
    data = _npy_folder(tmp_path / "data")
    result = calibrate(model, DataSpec(str(data), samples=6, batch_size=4), algorithm="minmax", holdout=0)
    assert set(result.amax) == {"x", "c", "r", "y"} and not result.verdict.held_back
    samples = np.stack([np.load(p) for p in sorted(data.iterdir())])
    assert result.amax["x"] == pytest.approx(np.abs(samples).max(), rel=1e-6)
    assert result.num_samples == 6 and result.num_batches == 2 and result.files_written == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "m.onnx"]


def test_all_algorithms_and_trt_version_option(tmp_path, capsys):
    model = conv_model(tmp_path / "m.onnx")
    data = _npy_folder(tmp_path / "data")
    amax = {}
    for algo in ("entropy", "minmax", "percentile", "mse"):
        out = tmp_path / f"{algo}.cache"
        code, err = run_cli(["calibrate", model, "--calib", data, "--algo", algo, "--trt-version", "8.6.1",
                             "-o", out], capsys)
        assert code == 0, err
        parsed = cache.read_cache(out)
        assert parsed.trt_version == 8601
        assert parsed.algorithm == cache.TRT_ALGORITHM_NAMES[algo]
        amax[algo] = parsed.amax["x"]
    assert max(amax.values()) == pytest.approx(amax["minmax"], rel=1e-6)  # nothing exceeds the true max


def test_same_seed_same_cache(tmp_path, capsys):
    model = conv_model(tmp_path / "m.onnx")
    data = _npy_folder(tmp_path / "data", count=12)
    outputs = []
    for name in ("a", "b"):
        out = tmp_path / f"{name}.cache"
        assert run_cli(["calibrate", model, "--calib", data, "--samples", 5, "--seed", 3, "-o", out], capsys)[0] == 0
        outputs.append(out.read_bytes())
    assert outputs[0] == outputs[1]


# -- bad input ---------------------------------------------------------------------------------


@pytest.fixture
def model(tmp_path):
    return conv_model(tmp_path / "m.onnx")


def test_missing_calib_folder(model, tmp_path, capsys):
    code, err = run_cli(["calibrate", model, "--calib", tmp_path / "nope", "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "nope")


def test_empty_calib_folder(model, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, err = run_cli(["calibrate", model, "--calib", tmp_path / "empty", "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "empty")


def test_corrupt_image(tmp_path, capsys):
    model = conv_model(tmp_path / "m.onnx")
    folder = tmp_path / "imgs"
    folder.mkdir()
    from PIL import Image

    Image.new("RGB", (8, 8), (10, 20, 30)).save(folder / "good.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    code, err = run_cli(["calibrate", model, "--calib", folder, "--seed", 0,
                         "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "broken.jpg")


def test_wrong_shape(model, tmp_path, capsys):
    data = _npy_folder(tmp_path / "data", shape=(3, 9, 9))
    code, err = run_cli(["calibrate", model, "--calib", data, "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "s")
    assert "8" in err and "9" in err  # expected vs got


def test_wrong_channel_count(model, tmp_path, capsys):
    data = _npy_folder(tmp_path / "data", shape=(4, 8, 8))
    code, err = run_cli(["calibrate", model, "--calib", data, "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, ".npy")


def test_wrong_dtype_for_integer_input(tmp_path, capsys):
    x = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    table = helper.make_tensor("table", TensorProto.FLOAT, [10, 2], np.arange(20, dtype=np.float32))
    graph = helper.make_graph([helper.make_node("Gather", ["table", "ids"], ["y"])], "g", [x], [y], [table])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
                  tmp_path / "ids.onnx")
    data = _npy_folder(tmp_path / "data", shape=(4,), dtype=np.float32)
    code, err = run_cli(["calibrate", model, "--calib", data, "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "ids")


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_nan_or_inf_in_data(model, tmp_path, capsys, value):
    data = _npy_folder(tmp_path / "data", fill=value)
    code, err = run_cli(["calibrate", model, "--calib", data, "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, ".npy")


def test_file_that_is_not_onnx(tmp_path, capsys):
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"this is a text file, not a protobuf")
    data = _npy_folder(tmp_path / "data")
    code, err = run_cli(["calibrate", fake, "--calib", data, "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "onnx")


def test_input_trtq_cannot_feed(tmp_path, capsys):
    x = helper.make_tensor_value_info("text", TensorProto.STRING, ["N"])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, ["N"])
    graph = helper.make_graph([helper.make_node("Identity", ["text"], ["y"])], "g", [x], [y])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
                  tmp_path / "text.onnx")
    data = _npy_folder(tmp_path / "data", shape=(), dtype=np.float32)
    code, err = run_cli(["calibrate", model, "--calib", data, "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "text")


def test_unwritable_output_path(model, tmp_path, capsys):
    data = _npy_folder(tmp_path / "data")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be")
    code, err = run_cli(["calibrate", model, "--calib", data, "-o", blocker / "sub" / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "blocker")


def test_ctrl_c_in_the_middle_leaves_nothing(model, tmp_path, capsys, monkeypatch):
    from trtq.calib import collect

    data = _npy_folder(tmp_path / "data", count=12)
    out = tmp_path / "o.cache"
    seen = []
    real_observe = collect.HistogramCollector.observe

    def observe_then_interrupt(self, tensors, batch_index=0):
        seen.append(batch_index)
        if batch_index == 1:
            raise KeyboardInterrupt
        return real_observe(self, tensors, batch_index)

    monkeypatch.setattr(collect.HistogramCollector, "observe", observe_then_interrupt)
    code, err = run_cli(["calibrate", model, "--calib", data, "--batch-size", 2, "-o", out], capsys)
    assert_clean_failure(code, err, tmp_path, "interrupted (SIGINT)", expected_code=130)
    assert seen == [0, 1]  # the interrupt came in the second batch, not before or after


def test_existing_cache_survives_a_failed_run(model, tmp_path, capsys):
    data = _npy_folder(tmp_path / "data")
    out = tmp_path / "o.cache"
    assert run_cli(["calibrate", model, "--calib", data, "-o", out], capsys)[0] == 0
    before = out.read_bytes(), cache.sidecar_path(out).read_bytes()
    bad = _npy_folder(tmp_path / "bad", fill=np.nan)
    code, _ = run_cli(["calibrate", model, "--calib", bad, "-o", out], capsys)
    assert code == 2
    assert (out.read_bytes(), cache.sidecar_path(out).read_bytes()) == before


def test_infinite_and_huge_tensors_stay_float_and_are_reported(tmp_path, capsys):
    """Tensors at +-inf or |x| >= UNQUANTIZED_ABS are left out of the cache and named; calibration goes on."""
    from trtq.cache import read_cache
    from trtq.pipeline.calibration import calibrate

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    big = helper.make_tensor("big", TensorProto.FLOAT, [1], [1e30])
    graph = helper.make_graph([helper.make_node("Mul", ["x", "big"], ["m"]), helper.make_node("Mul", ["m", "big"], ["y"])],
                              "g", [x], [y], [big])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
                  tmp_path / "overflow.onnx")
    data = _npy_folder(tmp_path / "data", shape=(4,), fill=10.0)
    result = calibrate(model, data, cache_path=tmp_path / "o.cache")
    assert set(result.unquantized) == {"m", "y"}  # m = 1e31 (huge), y = inf (overflow)
    assert "inf" in result.unquantized["y"] and "1e+31" in result.unquantized["m"]
    assert set(result.amax) == {"x"}
    assert set(read_cache(tmp_path / "o.cache").amax) == {"x"}
    code, err = run_cli(["calibrate", model, "--calib", data, "-o", tmp_path / "o2.cache"], capsys)
    assert code == 0


def test_nan_activation_is_an_error_naming_the_tensor(tmp_path, capsys):
    """NaN in a real activation stops calibration with one line that also fits token-id models."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Log", ["x"], ["l"]), helper.make_node("Sqrt", ["l"], ["y"])],
                              "g", [x], [y])
    model = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9),
                  tmp_path / "nan.onnx")
    data = _npy_folder(tmp_path / "data", shape=(4,), fill=0.5)  # log(0.5) < 0 -> sqrt is NaN
    code, err = run_cli(["calibrate", model, "--calib", data, "-o", tmp_path / "o.cache"], capsys)
    assert_clean_failure(code, err, tmp_path, "'y' holds NaN")
    assert "token ids" in err


def test_sampled_binning_keeps_exact_max_and_range(tmp_path):
    """--max-binned bins a strided sample, but the range and minmax follow every value."""
    from trtq.calib.collect import HistogramCollector

    rng = np.random.default_rng(5)
    batches = [rng.normal(size=(4, 1000)).astype(np.float32) for _ in range(3)]
    batches[2][1, 7] = 50.0  # an outlier a strided sample is unlikely to hit
    exact, sampled = HistogramCollector(max_binned=None), HistogramCollector(max_binned=256)
    for index, batch in enumerate(batches):
        exact.observe({"t": batch}, index)
        sampled.observe({"t": batch}, index)
    e, s = exact.histograms["t"], sampled.histograms["t"]
    assert s.max_abs == e.max_abs == 50.0
    assert s.range == e.range
    assert e.num_values == 12000 and s.num_values == 3 * 4000 // 16
    assert sampled.values_seen["t"] == 12000
