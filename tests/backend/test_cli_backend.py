"""`trtq info`, `trtq build` and `trtq bench` with engines on a machine without TensorRT:
one clear line on stderr, exit code 2, no traceback. Argument errors come before TensorRT is needed."""

from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

from trtq import cache as cache_io  # noqa: E402
from trtq.backend import tensorrt_version  # noqa: E402
from trtq.cli import main  # noqa: E402

needs_no_tensorrt = pytest.mark.skipif(tensorrt_version() is not None, reason="TensorRT is installed here")


def _model(path, batch="batch"):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _one_line_error(capsys, code, *needles):
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert code == 2, captured
    assert "Traceback" not in captured.err and "Traceback" not in captured.out
    assert len(lines) == 1, captured.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0], captured.out


@needs_no_tensorrt
def test_info_without_tensorrt(capsys):
    assert main(["info"]) == 0  # the report is the result; what is missing is part of it
    out = capsys.readouterr().out
    assert "TensorRT      not available" in out and "tensorrt: TensorRT is not importable" in out
    line, out = _one_line_error(capsys, main(["info", "--require"]), "tensorrt", "TensorRT is not importable")
    assert "TensorRT      not available" in out


@needs_no_tensorrt
def test_info_json_without_tensorrt(capsys):
    code = main(["info", "--json", "--require"])
    captured = capsys.readouterr()
    assert code == 2
    assert json.loads(captured.out)["missing"]["tensorrt"].startswith("TensorRT is not importable")


@needs_no_tensorrt
@pytest.mark.parametrize("extra", [[], ["--fp16"], ["--precision", "best", "--explicit", "--cache", "nope.cache",
                                                   "--calib", "."]])
def test_build_without_tensorrt(tmp_path, capsys, extra):
    model = _model(tmp_path / "m.onnx")
    engine = tmp_path / "m.engine"
    code = main(["build", str(model), "-o", str(engine), "--batch-sizes", "1,4", *extra])
    _one_line_error(capsys, code, "trtq build: error:", "TensorRT is not importable")
    assert not engine.exists() and not (tmp_path / "m.engine.json").exists()


@needs_no_tensorrt
def test_bench_engine_without_tensorrt(tmp_path, capsys):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    code = main(["bench", str(engine), "--batch-sizes", "1", "--no-files"])
    _one_line_error(capsys, code, "trtq bench: error:", "TensorRT")


def test_build_rejects_a_fixed_batch_with_other_batch_sizes(tmp_path, capsys):
    model = _model(tmp_path / "m.onnx", batch=1)
    code = main(["build", str(model), "-o", str(tmp_path / "m.engine"), "--batch-sizes", "1,8"])
    _one_line_error(capsys, code, "fixed batch size of 1")


def test_build_refuses_a_cache_from_another_model(tmp_path, capsys):
    model = _model(tmp_path / "m.onnx")
    cache = tmp_path / "other.cache"
    sidecar = cache_io.make_sidecar(model_path=tmp_path / "other.onnx", model_sha256="ee" * 32,
                                    inputs=cache_io.input_records([]), algorithm="entropy", amax={"x": 1.0},
                                    trt_version=100300)
    cache_io.write_cache(cache, {"x": 1.0}, trt_version=100300, sidecar=sidecar)
    code = main(["build", str(model), "--int8", "--cache", str(cache), "-o", str(tmp_path / "m.engine")])
    _one_line_error(capsys, code, "refusing cache", "other.onnx")


@pytest.mark.parametrize("args, needle", [
    (["--precision", "fp32", "--int8"], "contradicts"),
    (["--workspace", "0"], "--workspace"),
    (["--calib", "."], "--calib is calibration data for INT8"),
    (["--min-shapes", "x=1"], "NAME:DIMS"),
])
def test_build_argument_errors(tmp_path, capsys, args, needle):
    model = _model(tmp_path / "m.onnx")
    _one_line_error(capsys, main(["build", str(model), *args]), needle)


def test_missing_model(tmp_path, capsys):
    _one_line_error(capsys, main(["build", str(tmp_path / "nope.onnx")]), "does not exist")


@pytest.mark.parametrize("args, needle", [
    (["--dla-core", "0"], "DLA runs FP16 and INT8 layers only"),
    (["--fp16", "--dla-core", "-1"], "--dla-core must be 0 or more"),
    (["--plugins", "no_such_plugin.so"], "--plugins: no_such_plugin.so does not exist"),
])
def test_build_feature_errors_come_before_tensorrt(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)
    model = _model(tmp_path / "m.onnx")
    _one_line_error(capsys, main(["build", str(model), *args]), needle)


def test_build_flags_reach_the_build_options(tmp_path):
    from trtq.cli import build_parser
    from trtq.cli.build import options_from_args

    model = _model(tmp_path / "m.onnx")
    args = build_parser().parse_args(["build", str(model), "--int8", "--cache", "m.cache", "--dla-core", "1",
                                      "--sparsity", "--tf32", "--version-compatible", "--hardware-compatibility",
                                      "ampere_plus", "--plugins", "a.so", "--plugins", "b.so", "--cuda", "pycuda"])
    options = options_from_args(args)
    assert (options.dla_core, options.sparsity, options.tf32, options.version_compatible) == (1, True, True, True)
    assert options.hardware_compatibility == "ampere_plus" and [p.name for p in options.plugins] == ["a.so", "b.so"]
    assert args.cuda == "pycuda" and options.target is None
    args = build_parser().parse_args(["build", str(model), "--int8", "--calib", str(tmp_path), "--target-cosine",
                                      "0.99", "--max-layers", "4"])
    target = options_from_args(args).target
    assert (target.cosine, target.max_layers, target.snr_db) == (0.99, 4, None)


def test_cuda_option_selects_the_layer(monkeypatch):
    import trtq.backend.cuda as cuda
    from trtq.cli.info import apply_cuda_argument

    monkeypatch.setattr(cuda, "_chosen", None)
    monkeypatch.setattr(cuda, "_layer", None)
    apply_cuda_argument(type("Args", (), {"cuda": "pycuda"})())
    assert cuda._chosen == "pycuda"


@needs_no_tensorrt
def test_inspect_without_tensorrt(tmp_path, capsys):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0" * 64)
    _one_line_error(capsys, main(["inspect", str(engine)]), "trtq inspect: error:", "TensorRT")


def test_inspect_layer_rows_read_the_inspectors_real_schema():
    """The inspector's JSON has no "Precision" key; a layer's precision is its tensors' Format/Datatype."""
    from pathlib import Path

    from trtq.cli.inspect import layer_rows, tensor_precision

    dump = json.loads((Path(__file__).parent / "data" / "inspector_qat.graph.json").read_text())
    assert not any("Precision" in layer for layer in dump["Layers"])
    rows = layer_rows(dump)
    assert [row[2] for row in rows] == ["FP32 -> INT8", "INT8", "INT8", "INT8 -> FP16", "FP16 -> INT8", "FP32"]
    assert rows[1][4].startswith("volta_int8x4") and rows[2][4] == "", "the tactic has its own column"
    assert not any("volta" in row[2] or "sm75" in row[2] for row in rows)
    assert rows[3][3] == "Thirty-two wide channel vectorized row major FP16 format"
    assert [tensor_precision(t) for t in ("Row major linear BFloat16", "Row major linear Float", "Int64", "N/A")] \
        == ["BF16", "FP32", "INT64", ""]
    assert layer_rows({"Layers": ["conv1", "relu1"]}) == [("conv1", "", "", "", ""), ("relu1", "", "", "", "")]
    assert layer_rows(None) == []


def test_int8_build_ends_with_the_verdict_or_says_where_to_get_one(capsys):
    from trtq.cli.build import _print_build_verdict

    verdict = {"line": "INT8 fidelity (TensorRT Q/DQ form, 32 held-back calibration samples): worst 'y': SNR 12.00 dB",
               "warning": "INT8 output 'y' is poor (SNR 12.00 dB < 20 dB ...): leave ... with --auto-exclude"}
    _print_build_verdict({"precision": "int8", "calibration": {"verdict": verdict}})
    out = " ".join(capsys.readouterr().out.split())
    assert "INT8 fidelity" in out and "warning: INT8 output 'y' is poor" in out and "trtq eval MODEL ENGINE" in out
    _print_build_verdict({"precision": "int8", "calibration": {"calibrated_by": "tensorrt"}})
    assert "no INT8 verdict: TensorRT calibrated on the GPU" in " ".join(capsys.readouterr().out.split())
    _print_build_verdict({"precision": "fp16", "calibration": {}})
    assert capsys.readouterr().out == ""
