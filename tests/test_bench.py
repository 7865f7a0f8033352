"""trtq.bench: ONNX Runtime benchmark rows, precision labels, skipped batch sizes, inputs."""

from __future__ import annotations

import json
import os

import _toys
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from trtq import bench
from trtq.errors import ModelError, TrtqError
from trtq.graph.model import infer_precision
from trtq.graph.signature import input_specs
from trtq.pipeline import benchmarking


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench")
    fp32 = _toys.classifier()
    amax = _toys.activation_amax(fp32, _toys.images(16))
    return {
        "fp32": _toys.save(fp32, folder / "toy.onnx"),
        "int8": _toys.save(_toys.hand_qdq(fp32, amax, uint8=True), folder / "toy.int8.onnx"),
        "static": _toys.save(_toys.classifier(batch=1), folder / "toy_b1.onnx"),
    }


def test_rows_are_consistent(models):
    rows = benchmarking.benchmark([models["fp32"], models["int8"]], [1, 4], iterations=7, warmup=1)
    assert [(r.model, r.precision, r.batch_size) for r in rows] == [
        ("toy.onnx", "fp32", 1), ("toy.onnx", "fp32", 4), ("toy.int8.onnx", "int8", 1), ("toy.int8.onnx", "int8", 4)]
    for r in rows:
        assert r.backend == "ort-cpu" and r.iterations == 7 and not r.skipped and r.note == ""
        assert r.throughput == r.batch_size * 1000.0 / r.latency_ms_mean  # exactly the documented formula
        assert 0 < r.latency_ms_p50 <= r.latency_ms_p90 <= r.latency_ms_p99
        assert r.size_bytes == os.path.getsize(models["int8" if "int8" in r.model else "fp32"])
        assert r.extra["inputs"] == "random"
    base = {r.batch_size: r for r in rows if r.precision == "fp32"}
    for r in rows:
        assert r.speedup == pytest.approx(r.throughput / base[r.batch_size].throughput, rel=1e-12)
    assert all(r.speedup == 1.0 for r in base.values())


def test_static_batch_gives_skipped_rows_with_a_note(models):
    progress = []
    rows = benchmarking.benchmark([models["static"]], [1, 8], iterations=3, warmup=0,
                           progress=lambda done, total: progress.append((done, total)))
    ok, skipped = rows
    assert not ok.skipped and ok.batch_size == 1
    assert skipped.skipped and skipped.batch_size == 8 and skipped.speedup is None
    assert "fixed at 1" in skipped.note and skipped.latency_ms_mean is None
    assert progress[-1] == (2, 2)


def test_runtime_refusal_is_a_skipped_row(tmp_path):
    """A dynamic input whose graph reshapes to a fixed batch runs at batch 1 only; other sizes are noted."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    graph = helper.make_graph(nodes, "fixed_reshape", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                              [numpy_helper.from_array(np.array([1, 4], np.int64), "shape")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = _toys.save(model, tmp_path / "reshape.onnx")
    rows = benchmarking.benchmark([path], [1, 2], iterations=2, warmup=0)
    assert not rows[0].skipped
    assert rows[1].skipped and rows[1].note.startswith("ONNX Runtime cannot run batch 2")


def test_precision_inference_and_labels(models):
    assert infer_precision(onnx.load(models["fp32"])) == "fp32"
    assert infer_precision(onnx.load(models["int8"])) == "int8"
    fp16 = _toys.classifier()
    for init in fp16.graph.initializer:
        array = numpy_helper.to_array(init).astype(np.float16)
        init.CopyFrom(numpy_helper.from_array(array, init.name))
    assert infer_precision(fp16) == "fp16"
    rows = benchmarking.benchmark([models["fp32"], models["int8"]], [1], iterations=2, warmup=0, labels="fp16,int8")
    assert [r.precision for r in rows] == ["fp16", "int8"]
    assert rows[1].speedup is None  # no fp32 row left to compare with
    with pytest.raises(TrtqError, match="1 precision labels for 2 models"):
        benchmarking.benchmark([models["fp32"], models["int8"]], [1], labels=["fp32"])


def test_dynamic_dims_need_shapes(tmp_path):
    model = _toys.classifier()
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    path = _toys.save(model, tmp_path / "dyn.onnx")
    with pytest.raises(ModelError, match=r"--shape x:1x3xNxN"):
        benchmarking.benchmark([path], [1], iterations=1)
    rows = benchmarking.benchmark([path], [2], iterations=2, warmup=0, shapes=bench.parse_shapes("x:1x3x24x24"))
    assert not rows[0].skipped


def test_random_feed_shapes_and_dtypes(models):
    specs = input_specs(onnx.load(models["fp32"]))
    feed, note = bench.random_feed(specs, 5)
    assert note == "" and feed["x"].shape == (5, 3, 16, 16) and feed["x"].dtype == np.float32
    assert 0.0 <= feed["x"].min() and feed["x"].max() < 1.0
    static = input_specs(onnx.load(models["static"]))
    assert bench.random_feed(static, 2) == (None, bench.batch_refusal(static, 2))


def test_parsers():
    assert bench.parse_batch_sizes("1, 8,32,8") == (1, 8, 32)
    for bad in ("0", "a", "", "1,-2"):
        with pytest.raises(TrtqError):
            bench.parse_batch_sizes(bad)
    assert bench.parse_shapes("images:1x3x320x320,a:b:2x4") == {"images": (1, 3, 320, 320), "a:b": (2, 4)}
    with pytest.raises(TrtqError, match="NAME:DIMS"):
        bench.parse_shapes("images=1x3")


def test_errors_before_timing(models, tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        benchmarking.benchmark([models["fp32"], tmp_path / "missing.onnx"], [1])
    with pytest.raises(TrtqError, match="unknown backend"):
        benchmarking.benchmark([models["fp32"]], [1], backend="cuda")
    with pytest.raises(TrtqError, match="iterations"):
        benchmarking.benchmark([models["fp32"]], [1], iterations=0)


def test_engines_go_to_the_tensorrt_backend(tmp_path, monkeypatch):
    """.engine paths are dispatched to the TensorRT rows; they join the ORT rows and get speed-ups."""
    import types

    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"\0")
    calls = {}

    def benchmark_engines(paths, batch_sizes, iterations, warmup, progress, precisions, shapes, data=None,
                          max_seconds=None, plugins=(), dla_core=None):
        calls["engines"] = (paths, batch_sizes, iterations, warmup, precisions, shapes)
        return [bench.latency_row(bench.BenchResult("m.fp16.engine", "fp16", "tensorrt", b), np.array([1.0, 3.0]))
                for b in batch_sizes]

    import trtq.backend

    monkeypatch.setattr(benchmarking, "benchmark_engines", benchmark_engines)
    monkeypatch.setattr(trtq.backend, "import_tensorrt", lambda: types.ModuleType("tensorrt"))
    rows = benchmarking.benchmark([str(engine)], [1, 2], iterations=5, warmup=1)
    assert calls["engines"] == ([str(engine)], [1, 2], 5, 1, None, None)
    assert [r.throughput for r in rows] == [500.0, 1000.0]


def test_time_budget_stops_early_with_a_note(models):
    (row,) = benchmarking.benchmark([models["fp32"]], [1], iterations=50, warmup=0, max_seconds=1e-9)
    assert row.iterations == 1 and "stopped after 1 of 50 runs" in row.note
    assert row.throughput == 1000.0 / row.latency_ms_mean


def test_without_tensorrt_engines_fail_before_any_timing(models, tmp_path, monkeypatch):
    import trtq.backend
    from trtq.errors import BackendUnavailable

    if trtq.backend.tensorrt_version() is not None:
        pytest.skip("TensorRT is importable here; this checks the message on machines without it")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    monkeypatch.setattr(benchmarking, "benchmark_ort", lambda *a, **k: pytest.fail("ONNX Runtime timing ran first"))
    with pytest.raises(BackendUnavailable, match="TensorRT is not importable"):
        benchmarking.benchmark([models["fp32"], str(engine)], [1])
    with pytest.raises(BackendUnavailable):
        benchmarking.benchmark([models["fp32"]], [1], backend="trt")


# --------------------------------------------------------------------------- CLI


def test_cli_writes_table_and_files_with_skipped_rows(models, tmp_path, capsys):
    from trtq.cli import main

    out = tmp_path / "report"
    code = main(["bench", models["fp32"], models["static"], models["int8"], "--batch-sizes", "1,4",
                 "--iterations", "2", "--warmup", "0", "--out", str(out), "--stem", "toy"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "fixed at 1" in printed and "toy_b1.onnx" in printed and "int8" in printed
    data = json.loads((out / "toy.json").read_text())
    rows = data["results"]
    assert len(rows) == 6 and data["meta"]["batch_sizes"] == [1, 4]
    skipped = [r for r in rows if r["throughput"] is None]
    assert [(r["model"], r["batch_size"]) for r in skipped] == [("toy_b1.onnx", 4)]
    assert (out / "toy.csv").exists() and (out / "toy.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("argv, message", [
    (["missing.onnx"], "model file missing.onnx does not exist"),
    (["{fp32}", "--batch-sizes", "0,1"], "batch sizes must be positive integers"),
    (["{fp32}", "--precisions", "fp16"], "add --backend trt"),
    (["{fp32}", "--precisions", "int4", "--backend", "trt"], "unknown precision"),
    (["{fp32}", "--shape", "x=1x3"], "NAME:DIMS"),
    (["{garbage}"], "not a readable ONNX model"),
])
def test_cli_errors_are_one_line(models, tmp_path, capsys, argv, message):
    from trtq.cli import main

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"nope")
    argv = [a.format(fp32=models["fp32"], garbage=garbage) for a in argv]
    code = main(["bench", *argv, "--iterations", "1", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("trtq bench: error:") and err.count("\n") == 1
    assert not (tmp_path / "out" / "bench.json").exists()


def test_random_data_never_chooses_an_integer_configuration_input(tmp_path):
    """The If model's `mode` (a rank-0 int64 that picks the branch) gets no made-up value: the random-data row is
    skipped with the reason; with --data its recorded value is used."""
    import _recurrent

    from trtq.pipeline.benchmarking import benchmark

    model = _recurrent.scalar_branch_classifier(tmp_path / "branch.onnx")
    rows = benchmark([model], [2], iterations=1, warmup=0)
    assert [r.skipped for r in rows] == [True] and "'mode' is an integer configuration input" in rows[0].note
    data = tmp_path / "data"
    data.mkdir()
    for i in range(4):
        np.savez(data / f"{i}.npz", x_raw=np.random.default_rng(i).random(64).astype(np.float32), mode=np.array(1))
    rows = benchmark([model], [2], iterations=1, warmup=0, data=str(data))
    assert not rows[0].skipped, rows[0].note
