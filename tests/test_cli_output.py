"""What the commands print for someone new: the next command after every file written, notes that explain a
surprising number (INT8 slower than FP32, eval on the calibration data), each message once."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from trtq.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo model, a 200-sample calibration and both Q/DQ forms, made once."""
    from trtq.assets import DEMO_ONNX

    where = tmp_path_factory.mktemp("demo")
    model = where / "demo.onnx"
    shutil.copy(DEMO_ONNX, model)
    assert main(["-q", "calibrate", str(model), "--calib", str(ROOT / "calib_data/digits"), "--samples", "200",
                 "--algo", "minmax", "-o", str(where / "demo.calib.cache")]) == 0
    for form, name in (("trt", "demo.int8.onnx"), ("cpu", "demo.int8-cpu.onnx")):
        assert main(["-q", "quantize", str(model), "--cache", str(where / "demo.calib.cache"), "--for", form,
                     "-o", str(where / name)]) == 0
    return where


def test_calibrate_and_quantize_end_with_the_command_to_run_next(demo, capsys):
    cache = demo / "again.calib.cache"
    assert main(["calibrate", str(demo / "demo.onnx"), "--calib", str(ROOT / "calib_data/digits"), "--samples", "64",
                 "--algo", "minmax", "-o", str(cache)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2] == f"next: trtq quantize {demo / 'demo.onnx'} --cache {cache} -o {demo / 'demo.int8.onnx'}"
    assert out[-1].startswith(f"  or: trtq build {demo / 'demo.onnx'} --int8 --cache {cache}")
    assert main(["quantize", str(demo / "demo.onnx"), "--cache", str(cache), "--for", "cpu", "-o",
                 str(demo / "again.int8-cpu.onnx")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == \
        f"next: trtq bench {demo / 'demo.onnx'} {demo / 'again.int8-cpu.onnx'}"


def test_a_slower_int8_model_is_explained_by_the_kernels_onnx_runtime_runs(demo):
    """The TensorRT form runs in float on ONNX Runtime (no int8 kernel fuses its Q/DQ pairs): the note says so
    and points to the CPU form; the CPU form's note counts its int8 kernels."""
    from trtq.bench import ort_kernels, slow_int8_notes
    from trtq.report import BenchResult

    def row(model, precision, speedup):
        return BenchResult(model, precision, "ort-cpu", 1, throughput=100.0, speedup=speedup)

    rows = [row("demo.onnx", "fp32", 1.0), row("demo.int8.onnx", "int8", 0.42), row("demo.int8-cpu.onnx", "int8", 0.9)]
    notes = slow_int8_notes(rows, [demo / "demo.int8.onnx", demo / "demo.int8-cpu.onnx"])
    assert len(notes) == 2
    assert notes[0].startswith("demo.int8.onnx runs slower than FP32 here (0.42× at batch 1)")
    assert "none of its layers in int8 kernels" in notes[0] and "--for cpu" in notes[0]
    kernels = ort_kernels(demo / "demo.int8-cpu.onnx")
    assert f"runs {kernels['QLinearConv'] + kernels.get('QLinearGlobalAveragePool', 0)} layer(s) in int8" in notes[1]
    assert "1 Gemm in float" in notes[1]  # the classifier's last layer: its DQ -> Gemm is not fused
    assert slow_int8_notes([row("demo.int8-cpu.onnx", "int8", 1.7)], [demo / "demo.int8-cpu.onnx"]) == []


def test_eval_on_the_calibration_data_says_so(demo, capsys):
    args = [str(demo / "demo.onnx"), str(demo / "demo.int8.onnx"), "--samples", "16"]
    assert main(["eval", *args, "--data", str(ROOT / "calib_data/digits")]) == 0
    out = capsys.readouterr().out
    assert "note: " in out and "is the data demo.calib.cache was calibrated on" in out
    assert main(["eval", *args, "--data", str(ROOT / "eval_data/digits")]) == 0
    assert "was calibrated on" not in capsys.readouterr().out


def test_the_opset_conversion_is_said_once_per_run(caplog):
    """One calibration builds a dozen Q/DQ models of an opset-11 graph: the conversion is one INFO line."""
    import onnx
    from onnx import helper

    from trtq.graph import qdq

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 11)])
    qdq._CONVERSIONS_SAID.discard(11)
    with caplog.at_level(logging.DEBUG, logger="trtq"):
        for _ in range(3):
            qdq._ensure_opset(model)
    said = [r for r in caplog.records if "converted the model from opset 11" in r.getMessage()]
    assert [r.levelno for r in said] == [logging.INFO, logging.DEBUG, logging.DEBUG]


def test_eval_with_a_report_ends_with_the_next_step_for_its_form(demo, capsys, tmp_path):
    for candidate, expected in (("demo.int8-cpu.onnx", "next: trtq bench"), ("demo.int8.onnx", "next: trtq build")):
        assert main(["eval", str(demo / "demo.onnx"), str(demo / candidate), "--data", str(ROOT / "eval_data/digits"),
                     "--samples", "16", "--json", str(tmp_path / f"{candidate}.json")]) == 0
        assert capsys.readouterr().out.splitlines()[-1].startswith(expected)
