"""Backend behaviour at the edges that needs no TensorRT bindings: version refusals, the runner with a fake
engine, types numpy lacks, calibration data types, import and driver failures, engine benchmarks, DLA rules,
engine sessions in `trtq eval`. What needs the real bindings is checked in trt_contract.py (on every
TensorRT version, by test_contract.py)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from backend_fakes import FakeDeviceMemory, batches

from trtq.backend import policy
from trtq.backend.calibrator import CalibratorCore
from trtq.backend.runner import EngineRunner, TensorInfo
from trtq.errors import BackendUnavailable, ModelError, TrtqError

# --- --explicit on TensorRT 8.6 -------------------------------------------------------------

@pytest.mark.parametrize("major", [8, 9])
def test_explicit_below_10_is_refused_in_one_line(major):
    with pytest.raises(TrtqError, match="--explicit needs TensorRT 10.0") as info:
        policy.plan_build(major, "int8", explicit=True)
    assert "\n" not in str(info.value)
    with pytest.raises(TrtqError, match="drop --explicit"):
        policy.check_explicit_supported((8, 6, 1))
    policy.check_explicit_supported((10, 0, 1))


# --- the runner, with a fake engine and context ----------------------------------

class FakeContext:
    def __init__(self):
        self.shapes, self.addresses = {}, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return (self.shapes["images"][0], 10)

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr


class OldEngine:  # TensorRT 8.6 / 10.0: no device_memory_size_v2
    device_memory_size = 1000


def _runner(monkeypatch, engine=None, tensors=None):
    import trtq.backend.cuda as cuda

    memory = FakeDeviceMemory()
    monkeypatch.setattr(cuda, "allocate", memory)
    runner = EngineRunner.__new__(EngineRunner)
    runner.engine, runner.context, runner.label = engine or OldEngine(), FakeContext(), "m.engine"
    runner.tensors = tensors or [
        TensorInfo("images", True, np.dtype(np.float32), (-1, 3, 640, 640),
                   ((1, 3, 640, 640), (8, 3, 640, 640), (32, 3, 640, 640))),
        TensorInfo("out", False, np.dtype(np.float32), (-1, 10))]
    runner._buffers, runner._shapes, runner.batch_size = {}, {}, None
    return runner, memory


def test_device_memory_without_device_memory_size_v2(monkeypatch):
    runner, _ = _runner(monkeypatch)
    runner.trt = type("OldTrt", (), {"ICudaEngine": OldEngine})
    runner.set_batch_size(2)
    assert runner.device_memory_bytes() == 1000 + 2 * 3 * 640 * 640 * 4 + 2 * 10 * 4


@pytest.mark.parametrize("batch", [1, 8, 32])
def test_shape_option_keeps_the_batch_axis_of_the_row(monkeypatch, batch):
    runner, memory = _runner(monkeypatch)
    runner.set_batch_size(batch, {"images": (1, 3, 640, 640)})
    assert runner.context.shapes["images"] == (batch, 3, 640, 640)
    assert memory.live[runner.context.addresses["images"]].nbytes == batch * 3 * 640 * 640 * 4


def test_vectorized_formats_pad_the_vectorized_axis():
    chw32 = TensorInfo("x", True, np.dtype(np.int8), (1, 3, 8, 8), vectorized_dim=1, components=32)
    assert chw32.nbytes((1, 3, 8, 8)) == 32 * 8 * 8
    assert TensorInfo("y", True, np.dtype(np.float16), (1, 3)).nbytes((2, 3)) == 12


# --- BF16/FP8 tensors -----------------------------------------------------------------------

class FakeDataType:
    def __init__(self, name):
        self.name = name


class NoBf16Trt:
    @staticmethod
    def nptype(data_type):
        if data_type.name == "FLOAT":
            return np.float32
        raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


def test_types_numpy_lacks_are_raw_bytes_or_a_clear_refusal():
    from trtq.backend.runner import numpy_dtype

    assert numpy_dtype(NoBf16Trt, FakeDataType("FLOAT")) == np.float32
    bf16 = numpy_dtype(NoBf16Trt, FakeDataType("BF16"))
    assert bf16.kind == "V" and bf16.itemsize == 2
    assert numpy_dtype(NoBf16Trt, FakeDataType("FP8")).itemsize == 1
    with pytest.raises(ModelError, match="INT4") as info:
        numpy_dtype(NoBf16Trt, FakeDataType("INT4"), "w")
    assert "\n" not in str(info.value)


# --- calibration data in the dtype TensorRT reads -------------------------------------------

def test_fp16_and_fp64_calibration_data_is_fed_as_float32():
    memory = FakeDeviceMemory()
    data = [{name: array.astype(np.float16) for name, array in batch.items()} for batch in batches(1)]
    data[0]["b"] = data[0]["b"].astype(np.float64)
    calibrator = CalibratorCore(data, batch_size=4, trt_version=100300, allocator=memory,
                                input_dtypes={"a": np.float16})
    a, b = calibrator.get_batch(["a", "b"])
    calibrator.raise_pending()
    np.testing.assert_array_equal(memory.read(a, np.float32, (4, 2, 5)), data[0]["a"].astype(np.float32))
    np.testing.assert_array_equal(memory.read(b, np.float32, (4, 3)), data[0]["b"].astype(np.float32))
    assert memory.live[a].nbytes == 4 * 2 * 5 * 4


def test_int64_inputs_follow_the_network_input_type():
    memory = FakeDeviceMemory()
    ids = {"ids": np.arange(8, dtype=np.int64).reshape(4, 2)}
    calibrator = CalibratorCore([ids], batch_size=4, trt_version=8601, allocator=memory,
                                input_dtypes={"ids": np.int32})
    (ptr,) = calibrator.get_batch(["ids"])
    np.testing.assert_array_equal(memory.read(ptr, np.int32, (4, 2)), ids["ids"])


# --- pre-quantized models on the implicit path -----------------------------------------------

def test_prequantized_model_needs_no_calibrator():
    plan = policy.plan_build(10, "int8", prequantized=True)
    assert plan.path == "implicit" and "INT8" in plan.builder_flags and not plan.calibrator
    assert not policy.plan_build(10, "int8", explicit=True, prequantized=True).qdq_graph
    assert policy.plan_build(10, "int8").calibrator


# --- the reason TensorRT cannot be imported ---------------------------------------------------

def test_broken_install_reason_is_not_hidden(monkeypatch):
    import trtq.backend as backend

    def fake_import(name):
        if name == "tensorrt":
            raise ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt")
        raise ImportError("libnvinfer.so.10: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(importlib, "import_module", fake_import)
    with pytest.raises(BackendUnavailable) as info:
        backend.import_tensorrt()
    text = str(info.value)
    assert text.index("libnvinfer.so.10") < text.index("No module named"), text


# --- old cuda-python without a driver raises RuntimeError from every call ---------------------

def test_runtime_error_from_cuda_python_is_backend_unavailable(monkeypatch):
    import trtq.backend.cuda as cuda

    class OldCudart:
        __name__ = "cuda.cudart"

        class cudaError_t:
            cudaSuccess = 0

        @staticmethod
        def cudaGetDeviceCount():
            raise RuntimeError("Failed to dlopen libcuda.so.1")

    monkeypatch.setattr(cuda, "_cudart", cuda._Guarded(OldCudart))
    monkeypatch.setattr(cuda, "_layer", None)
    monkeypatch.setattr(cuda, "_chosen", "cuda-python")
    with pytest.raises(BackendUnavailable, match="libcuda.so.1"):
        cuda.device_info()


# --- engine benchmarks -----------------------------------------------------------------

def _onnx_model(path, batch):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_static_batch_model_gets_skipped_rows_not_an_abort(tmp_path, monkeypatch):
    import trtq.pipeline.benchmarking as trt_bench
    import trtq.pipeline.building as build

    built = []
    monkeypatch.setattr(build, "build_engine", lambda options: built.append(options))
    monkeypatch.setattr(trt_bench, "benchmark_engines", lambda paths, sizes, **kw: [
        trt_bench.BenchResult(model="m", precision=p, backend="tensorrt", batch_size=b) for p in kw["precisions"]
        for b in sizes])
    rows = trt_bench.build_and_benchmark(_onnx_model(tmp_path / "m.onnx", 1), ["fp32", "fp16"], [1, 8, 32])
    assert [o.batch_sizes for o in built] == [[1], [1]]
    assert sorted((r.precision, r.batch_size, bool(r.note)) for r in rows) == [
        ("fp16", 1, False), ("fp16", 8, True), ("fp16", 32, True),
        ("fp32", 1, False), ("fp32", 8, True), ("fp32", 32, True)]
    assert all("fixed at 1" in r.note for r in rows if r.note)


def test_shape_for_one_input_leaves_the_others_on_the_bench_batch_sizes(tmp_path, monkeypatch):
    """--shape for some inputs; the rest span the benchmark's batch sizes, not 1..64."""
    import trtq.pipeline.benchmarking as trt_bench
    import trtq.pipeline.building as build
    from trtq.backend.profiles import profile_shapes
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs

    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Add", ["x", "y"], ["z"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
                               helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4])])
    model = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    built = []
    monkeypatch.setattr(build, "build_engine", lambda options: built.append(options))
    monkeypatch.setattr(trt_bench, "benchmark_engines", lambda *a, **kw: [])
    trt_bench.build_and_benchmark(model, ["fp32"], [2, 8], shapes={"x": (1, 4)})
    (options,) = built
    table = profile_shapes(input_specs(load_onnx(model)), options.batch_sizes, options.min_shapes,
                           options.opt_shapes, options.max_shapes)
    assert table["x"] == ((2, 4), (8, 4), (8, 4)) and table["y"] == ((2, 4), (8, 4), (8, 4))


def test_engine_benchmarks_get_data_and_max_seconds(tmp_path, monkeypatch):
    import trtq.backend as backend
    import trtq.pipeline.benchmarking as trt_bench
    from trtq.pipeline.benchmarking import benchmark

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\0")
    seen = {}
    monkeypatch.setattr(backend, "import_tensorrt", lambda: None)
    monkeypatch.setattr(trt_bench, "benchmark_engines", lambda paths, sizes, **kw: seen.update(kw) or [])
    benchmark([str(engine)], [1], data=str(tmp_path), max_seconds=2.5)
    assert seen["data"] == str(tmp_path) and seen["max_seconds"] == 2.5


def test_time_runner_stops_at_max_seconds(monkeypatch):
    import trtq.backend.cuda as cuda
    from trtq.backend.bench import time_runner

    class FakeEvent:
        def __init__(self):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        record = synchronize = lambda self, *a: None

        def elapsed_ms(self, start):
            return 400.0

    class Runner:
        runs = 0

        class stream:
            @staticmethod
            def synchronize():
                pass

        def execute(self):
            Runner.runs += 1

    monkeypatch.setattr(cuda, "Event", FakeEvent)
    assert time_runner(Runner(), 100, 0, max_seconds=1.0) == [400.0, 400.0, 400.0]
    assert len(time_runner(Runner(), 5, 0)) == 5


# --- what `trtq info` calls the CUDA runtime --------------------------------------------------

def test_info_says_whose_cuda_runtime_it_is():
    from trtq.cli.info import format_info

    lines = format_info({"trtq": "0", "tensorrt": "10.3.0", "missing": {},
                         "gpu": {"name": "Orin", "compute_capability": "8.7", "memory_bytes": 1 << 33},
                         "cuda": {"runtime": "13.0", "driver": "12.6", "layer": "cuda-python",
                                  "tensorrt_cuda": "12"}})
    cuda_line = next(line for line in lines if line.startswith("CUDA"))
    assert "driver 12.6" in cuda_line and "not TensorRT's" in cuda_line and "CUDA 12" in cuda_line


# --- --dla-core ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version, precision, cores, core, needle", [
    ((11, 4, 0), "int8", 2, 0, "no DLA support"),
    ((10, 16, 1), "fp16", 2, 0, "10.7 was the last 10.x with DLA"),  # JetPack 7.0-7.2 run 10.13-10.16
    ((10, 8, 0), "fp16", 2, 0, "no DLA support"),
    ((10, 3, 0), "fp16", 0, 0, "TensorRT 8.6-10.7, or Orin with TensorRT 11.4.1"),
    ((10, 3, 0), "fp32", 2, 0, "FP16 and INT8"),
    ((10, 3, 0), "int8", 0, 0, "no DLA cores"),
    ((10, 3, 0), "fp16", 2, 2, "2 DLA core"),
    ((10, 3, 0), "fp16", 2, -1, "0 or more"),
])
def test_dla_refusals(version, precision, cores, core, needle):
    assert needle in policy.dla_refusal(version, precision, cores, core)


def test_dla_allowed():
    assert policy.dla_refusal((10, 3, 0), "best", 2, 1) == ""
    assert policy.dla_refusal((10, 7, 0), "fp16", 2, 0, static_profile=True) == ""
    assert policy.dla_refusal((11, 4, 1), "int8", 2, 0) == ""


def test_dla_needs_a_static_profile():
    """DLA has no dynamic dimensions; a batch range would put every layer on the GPU."""
    refusal = policy.dla_refusal((10, 3, 0), "fp16", 2, 0, static_profile=False)
    assert "static shapes" in refusal and "--batch-sizes 1" in refusal


def test_min_trt_names_the_jetpack_that_has_it():
    """TensorRT 8.6 is JetPack 6.0's; JetPack 5 has 8.5 (and Python 3.8)."""
    with pytest.raises(BackendUnavailable, match=r"JetPack 6\.0\+") as info:
        policy.check_supported("8.5.2")
    assert "JetPack 5" not in str(info.value)


def test_float_layers_reader():
    from trtq.cache import float_layers

    assert float_layers(None) == [] and float_layers({}) == [] and float_layers({"mixed_precision": None}) == []
    assert float_layers({"mixed_precision": {"float_layers": ["/a/Conv"], "source": "x"}}) == ["/a/Conv"]


# --- trtq eval MODEL ENGINE: the engine as the candidate session ----------------------------------

def test_eval_runs_an_engine_candidate_through_the_runner(tmp_path, monkeypatch):
    """evaluate() with a .engine candidate uses EngineSession (an EngineRunner behind ORT's session API)."""
    import trtq.backend.runner as runner_module
    from trtq.pipeline.evaluation import evaluate

    model = _onnx_model(tmp_path / "m.onnx", "batch")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.save(data / f"{i}.npy", rng.normal(size=(4,)).astype(np.float32))
    engine = tmp_path / "m.int8.engine"
    engine.write_bytes(b"engine")
    chunks = []

    class FakeRunner:  # what EngineRunner does on a GPU: Relu, at most 4 samples per run
        def __init__(self, path, **kwargs):
            assert str(path) == str(engine)
            self.inputs = [TensorInfo("x", True, np.dtype(np.float32), (-1, 4))]
            self.outputs = [TensorInfo("y", False, np.dtype(np.float32), (-1, 4))]

        def batch_range(self):
            return 1, 4

        def infer(self, feed):
            chunks.append(len(feed["x"]))
            return {"y": np.maximum(feed["x"], 0) + 0.01}

        def close(self):
            pass

    monkeypatch.setattr(runner_module, "EngineRunner", FakeRunner)
    from trtq.data.spec import DataSpec

    report = evaluate(model, engine, DataSpec(path=str(data), batch_size=6))
    assert report.samples == 6 and report.candidate == "m.int8.engine" and report.candidate_precision == "int8"
    assert chunks == [4, 2], "a batch above the engine's profile runs in chunks"
    (output,) = report.outputs
    assert 0.99 < output.cosine < 1.0


def test_eval_cuts_an_engine_candidates_batches_along_the_batch_axis_the_user_gave(tmp_path, monkeypatch):
    """--batch-axis reaches the engine runner: it cuts and pads batches along the axis the evaluation reads, not
    along the one it would guess from the ONNX model alone."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    import trtq.backend.runner as runner_module
    from trtq.data.spec import DataSpec
    from trtq.pipeline.evaluation import evaluate

    model = tmp_path / "m.onnx"
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["a", "b"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    data = tmp_path / "x.npy"
    np.save(data, np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32))  # 5 samples on axis 1
    engine = tmp_path / "m.int8.engine"
    engine.write_bytes(b"engine")
    given = {}

    class FakeRunner:
        def __init__(self, path, **kwargs):
            given.update(kwargs.get("batch_axes") or {})
            self.inputs = [TensorInfo("x", True, np.dtype(np.float32), (3, -1))]
            self.outputs = [TensorInfo("y", False, np.dtype(np.float32), (3, -1))]

        def batch_range(self):
            return 1, 8

        def infer(self, feed):
            return {"y": np.maximum(feed["x"], 0)}

        def close(self):
            pass

    monkeypatch.setattr(runner_module, "EngineRunner", FakeRunner)
    report = evaluate(model, engine, DataSpec(path=str(data), batch_axes={"x": 1}))
    assert given["x"] == 1 and given["y"] == 1
    assert report.samples == 5


def test_eval_refuses_engine_sensitivity_without_a_cache(tmp_path, capsys):
    from trtq.cli import main

    model = _onnx_model(tmp_path / "m.onnx", "batch")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    code = main(["eval", str(model), str(engine), "--data", str(tmp_path), "--sensitivity"])
    assert code == 2 and "add --cache" in capsys.readouterr().err


# --- what an engine session feeds (the contract drives them through the CLI) -------

def test_engine_input_casts_integers_only_when_they_fit():
    from trtq.errors import DataError

    ids = TensorInfo("ids", True, np.dtype(np.int32), (-1, 5))
    fed = ids.host_array(np.array([[0, 1, 2, 2**31 - 1, -2**31]], np.int64))
    assert fed.dtype == np.int32 and fed.tolist() == [[0, 1, 2, 2**31 - 1, -2**31]]
    with pytest.raises(DataError, match="holds 2147483648"):
        ids.host_array(np.array([[2**31]], np.int64))
    with pytest.raises(DataError, match="takes int32 data, the batch holds float32"):
        ids.host_array(np.zeros((1, 5), np.float32))
    half = TensorInfo("x", True, np.dtype(np.float16), (-1, 3))
    assert half.host_array(np.ones((2, 3))).dtype == np.float16


@pytest.mark.parametrize("tensor, needle", [
    (TensorInfo("x", True, np.dtype((np.void, 2)), (-1, 3), trt_dtype="BF16"), "is BF16"),
    (TensorInfo("x", True, np.dtype(np.int8), (-1, 32, 8, 8), vectorized_dim=1, components=32,
                tensor_format="CHW32"), "CHW32 layout"),
])
def test_engine_tensors_trtq_cannot_lay_out_refuse_real_data(tensor, needle):
    assert needle in tensor.real_data_refusal()
    with pytest.raises(ModelError, match=needle):
        tensor.host_array(np.zeros((1, 3), np.float32))


def test_engine_session_pads_to_the_smallest_batch_and_drops_the_padding():
    from trtq.backend.runner import EngineSession

    calls = []

    class MinBatchRunner:  # an engine built with --batch-sizes 8,32
        label = "engines/m.engine"
        inputs = [TensorInfo("x", True, np.dtype(np.float32), (-1, 2))]
        outputs = [TensorInfo("y", False, np.dtype(np.float32), (-1, 2))]

        def batch_range(self):
            return 8, 32

        def infer(self, feed):
            calls.append(len(feed["x"]))
            assert 8 <= len(feed["x"]) <= 32
            return {"y": feed["x"] * 2}

    session = EngineSession.__new__(EngineSession)
    session.runner = MinBatchRunner()
    x = np.arange(36 * 2, dtype=np.float32).reshape(36, 2)
    np.testing.assert_array_equal(session.run(None, {"x": x})[0], x * 2)
    np.testing.assert_array_equal(session.run(None, {"x": x[:3]})[0], x[:3] * 2)
    assert calls == [32, 8, 8]
    session.runner = None
