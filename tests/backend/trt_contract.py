"""Contract checks against one real TensorRT Python bindings wheel, run in a subprocess.

Usage (what tests/backend/conftest.py does)::

    PYTHONPATH=<bindings site>:<repo>:<this folder> LD_LIBRARY_PATH=<stub libs> python trt_contract.py VERSION

Prints one JSON object: the bindings' API surface (``dir()`` two levels deep) and the
outcome of every check ("ok", "skip: why" or "fail: why"). One process per TensorRT
version, because two versions of the bindings cannot be imported in one process.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import json
import logging
import sys
import tempfile
import traceback
from pathlib import Path

import numpy as np

CHECKS = []


def check(func):
    CHECKS.append(func)
    return func


class Skip(Exception):
    pass


def api_surface(trt) -> list:
    names = []
    for name in dir(trt):
        if name.startswith("__"):
            continue
        names.append(name)
        obj = getattr(trt, name)
        if inspect.isclass(obj):
            names += [f"{name}.{member}" for member in dir(obj) if not member.startswith("__")]
    return sorted(names)


def resolve(trt, dotted: str) -> bool:
    obj = trt
    for part in dotted.split("."):
        if not hasattr(obj, part):
            return False
        obj = getattr(obj, part)
    return True


def context():
    from trtq.backend import import_tensorrt, tensorrt_major

    trt = import_tensorrt()
    return trt, tensorrt_major(trt)


@check
def import_through_trtq(expected):
    from trtq.backend import TENSORRT_MODULES, tensorrt_version

    trt, _ = context()
    assert trt.__name__ in TENSORRT_MODULES, trt.__name__
    assert trt.__version__ == expected, (trt.__version__, expected)
    assert tensorrt_version() == expected


@check
def declared_api_exists_for_served_versions(expected):
    from trtq.backend.policy import PATH_API, PATH_SERVES

    trt, major = context()
    served = [path for path, majors in PATH_SERVES.items() if major in majors]
    assert served, f"no path serves TensorRT {major}"
    problems = {path: [n for n in PATH_API[path] if not any(resolve(trt, alt) for alt in n.split("|"))]
                for path in served}
    problems = {path: missing for path, missing in problems.items() if missing}
    assert not problems, f"declared names missing from TensorRT {trt.__version__}: {problems}"


@check
def removed_names_present_in_10_gone_in_11(expected):
    from trtq.backend.policy import REMOVED_IN_11

    trt, major = context()
    present = [n for n in REMOVED_IN_11 if resolve(trt, n)]
    if major >= 11:
        assert not present, f"TensorRT {trt.__version__} still has {present}"
    else:
        assert present == list(REMOVED_IN_11), f"TensorRT {trt.__version__} lacks {set(REMOVED_IN_11) - set(present)}"


@check
def calibrator_classes_on_11_say_why(expected):
    from trtq.backend.calibrator import calibrator_classes
    from trtq.errors import BackendUnavailable

    trt, major = context()
    if major < 11:
        raise Skip("TensorRT < 11 has calibrators")
    try:
        calibrator_classes(trt)
    except BackendUnavailable as exc:
        assert "11" in str(exc) and "\n" not in str(exc)
    else:
        raise AssertionError("calibrator_classes() worked on TensorRT 11")


def _calibrators():
    from trtq.backend.calibrator import calibrator_classes

    trt, major = context()
    if major >= 11:
        raise Skip("no implicit calibrators on TensorRT 11")
    return trt, calibrator_classes(trt)


@check
def calibrators_subclass_the_real_bases(expected):
    from backend_fakes import FakeDeviceMemory, batches

    import trtq.backend.calibrator as module

    trt, classes = _calibrators()
    assert classes is module.calibrator_classes(trt), "classes must be built once and cached"
    assert module.EntropyCalibrator is classes["entropy"] and module.MinMaxCalibrator is classes["minmax"]
    cases = {"entropy": (trt.IInt8EntropyCalibrator2, trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2),
             "minmax": (trt.IInt8MinMaxCalibrator, trt.CalibrationAlgoType.MINMAX_CALIBRATION)}
    for algorithm, (base, algo) in cases.items():
        cls = classes[algorithm]
        assert issubclass(cls, base) and issubclass(cls, trt.IInt8Calibrator), cls.__mro__
        calibrator = cls(batches(1), batch_size=4, trt_version=100300, allocator=FakeDeviceMemory())
        assert isinstance(calibrator, base)
        assert calibrator.get_algorithm() == algo, calibrator.get_algorithm()
        assert calibrator.get_batch_size() == 4


@check
def get_batch_returns_pointers_in_order_then_none(expected):
    from backend_fakes import FakeDeviceMemory, batches

    trt, classes = _calibrators()
    memory = FakeDeviceMemory()
    data = batches(2, extra_short=True)
    seen = []
    calibrator = classes["entropy"](data, batch_size=4, trt_version=100300, allocator=memory,
                                    shapes={"a": (4, 2, 5), "b": (4, 3)}, progress=lambda d, t: seen.append(d))
    first = calibrator.get_batch(["a", "b"])
    assert isinstance(first, list) and len(first) == 2 and all(isinstance(p, int) for p in first)
    np.testing.assert_array_equal(memory.read(first[0], np.float32, (4, 2, 5)), data[0]["a"])
    np.testing.assert_array_equal(memory.read(first[1], np.float32, (4, 3)), data[0]["b"])
    second = calibrator.get_batch(["b", "a"])
    assert second == [first[1], first[0]], "one buffer per input, reused, in the order of names"
    np.testing.assert_array_equal(memory.read(second[0], np.float32, (4, 3)), data[1]["b"])
    assert calibrator.get_batch(["a", "b"]) is None, "the short last batch is skipped, then the end"
    assert calibrator.skipped_batches == 1 and calibrator.batches_read == 2 and seen == [4, 8]
    calibrator.raise_pending()
    calibrator.close()
    assert not memory.live and sorted(memory.freed) == sorted(first)


@check
def errors_in_get_batch_are_raised_after_the_build(expected):
    from backend_fakes import FakeDeviceMemory, batches

    from trtq.errors import DataError

    trt, classes = _calibrators()
    bad = batches(2)
    bad[1]["a"] = bad[1]["a"][:, :1]  # wrong shape in the second batch
    calibrator = classes["entropy"](bad, batch_size=4, trt_version=100300, allocator=FakeDeviceMemory(),
                                    shapes={"a": (4, 2, 5), "b": (4, 3)})
    assert calibrator.get_batch(["a", "b"]) is not None
    assert calibrator.get_batch(["a", "b"]) is None, "TensorRT must see the end of data"
    try:
        calibrator.raise_pending()
    except DataError as exc:
        assert "shape" in str(exc)
    else:
        raise AssertionError("the shape error was swallowed")
    calibrator.close()


@check
def cache_round_trip_and_restamping(expected):
    from backend_fakes import FakeDeviceMemory, Untouchable

    from trtq import cache as cache_io
    from trtq.cache import trt_version_int

    trt, classes = _calibrators()
    running = trt_version_int(trt.__version__)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.cache"
        payload = cache_io.format_cache({"input": 1.0, "conv1/Relu_output_0": 2.5, "odd: name [0]": 0.5},
                                        running, "EntropyCalibration2")
        sidecar = {"model_path": Path(tmp) / "model.onnx", "model_sha256": "ab" * 32,
                   "inputs": [{"name": "input", "shape": [None, 3], "dtype": "float32"}], "data": {"path": "x"}}
        writer = classes["entropy"](Untouchable(), batch_size=4, trt_version=running, cache_path=path,
                                    sidecar=sidecar, allocator=FakeDeviceMemory())
        writer.write_calibration_cache(memoryview(payload))  # TensorRT hands over a buffer
        writer.raise_pending()
        assert path.read_bytes() == payload, "TensorRT's bytes are written as they are"
        stored = cache_io.read_cache(path)
        assert stored.sidecar is not None and stored.sidecar["model"]["sha256"] == "ab" * 32
        assert stored.sidecar["header"]["trt_version"] == running

        reader = classes["entropy"](Untouchable(), batch_size=4, trt_version=running, cache=stored,
                                    cache_verified=True, allocator=FakeDeviceMemory())
        assert reader.read_calibration_cache() == payload and reader.cache_handed_over

        old = cache_io.parse_cache(cache_io.format_cache({"input": 1.0}, 8601, "MinMaxCalibration"))
        restamped = classes["entropy"](Untouchable(), batch_size=4, trt_version=running, cache=old,
                                       cache_verified=True, allocator=FakeDeviceMemory()).read_calibration_cache()
        again = cache_io.parse_cache(restamped)
        assert (again.trt_version, again.algorithm) == (running, "EntropyCalibration2"), again.header
        assert again.scales == old.scales
        minmax = classes["minmax"](None, batch_size=1, trt_version=running, cache=old, cache_verified=True,
                                   allocator=FakeDeviceMemory()).read_calibration_cache()
        assert cache_io.parse_cache(minmax).header == f"TRT-{running}-MinMaxCalibration"
        unverified = classes["entropy"](None, batch_size=1, trt_version=running, cache=old,
                                        allocator=FakeDeviceMemory()).read_calibration_cache()
        assert cache_io.parse_cache(unverified).header == "TRT-8601-MinMaxCalibration"


def _tiny_model(path: Path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@check
def build_without_a_gpu_is_backend_unavailable(expected):
    from trtq.backend.build import BuildOptions
    from trtq.errors import BackendUnavailable
    from trtq.pipeline.building import build_engine

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "tiny.onnx"
        _tiny_model(model)
        for precision in ("fp32", "fp16"):
            options = BuildOptions(model_path=model, output_path=Path(tmp) / f"tiny.{precision}.engine",
                                   precision=precision, batch_sizes=[1, 4])
            try:
                build_engine(options)
            except BackendUnavailable as exc:
                assert "builder" in str(exc) and "\n" not in str(exc), str(exc)
            else:
                raise AssertionError("build_engine worked without a GPU")
            assert not options.output_path.exists() and not options.report_path.exists()


@check
def runner_without_a_gpu_is_backend_unavailable(expected):
    from trtq.backend.runner import EngineRunner
    from trtq.errors import BackendUnavailable

    try:
        EngineRunner(b"not an engine")
    except BackendUnavailable as exc:
        assert "runtime" in str(exc) and "\n" not in str(exc), str(exc)
    else:
        raise AssertionError("EngineRunner worked without a GPU")


@check
def cli_info_names_tensorrt_and_what_is_missing(expected):
    from trtq.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["info"]) == 0  # the report is the result; --require makes a missing GPU an error
    assert "missing       gpu" in out.getvalue(), out.getvalue()
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["info", "--require"])
    assert code == 2, (code, out.getvalue(), err.getvalue())
    assert expected in out.getvalue(), out.getvalue()
    assert "INT8 path" in out.getvalue()
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    assert len(lines) == 1 and "gpu" in lines[0] and "Traceback" not in err.getvalue(), err.getvalue()


# --- every call trtq makes, checked against this version's pybind11 signatures -----------------

def _onnx_model(path: Path, batch="batch", qdq: bool = False, names=("conv_a", "conv_a_1", "mm_c")):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name=names[0]),
             helper.make_node("Relu", ["h"], ["y"], name=names[1]),
             helper.make_node("MatMul", ["y", "w"], ["z"], name=names[2])]
    inits = [w]
    if qdq:
        inits += [numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                  numpy_helper.from_array(np.array(0, np.int8), "z")]
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="q"),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dq"),
                 helper.make_node("MatMul", ["xd", "w"], ["h"], name=names[0]),
                 helper.make_node("Relu", ["h"], ["y"], name=names[1]),
                 helper.make_node("MatMul", ["y", "w"], ["z"], name=names[2])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                              [helper.make_tensor_value_info("z", TensorProto.FLOAT, [batch, 4])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _world(trt, model_path: Path, timing_ok: bool = True):
    """A World whose network mirrors the ONNX model; the builder drives calibrators via the vtable."""
    import onnx
    from trt_signatures import Fake, World, drive_calibrator

    from trtq.cache import format_cache, trt_version_int

    world = World(trt)
    model = onnx.load(str(model_path))
    inputs = [(i.name, tuple(d.dim_value or -1 for d in i.type.tensor_type.shape.dim)) for i in model.graph.input]
    layers = [n.name for n in model.graph.node]
    order = world.drove

    def tensor(name, shape):
        t = Fake(world, "ITensor")
        world.sets[(id(t), "name")], world.sets[(id(t), "shape")] = name, shape
        world.sets[(id(t), "dtype")] = trt.DataType.FLOAT
        return t

    net_inputs = [tensor(n, s) for n, s in inputs]
    net_layers = []
    for name in layers:
        layer = Fake(world, "ILayer")
        world.sets[(id(layer), "name")], world.sets[(id(layer), "num_outputs")] = name, 1
        net_layers.append(layer)
    world.layers = net_layers
    world.script.update({
        "Builder.num_DLA_cores": 2,
        "INetworkDefinition.num_inputs": len(net_inputs),
        "INetworkDefinition.get_input": lambda self, i: net_inputs[i],
        "INetworkDefinition.num_layers": len(net_layers),
        "INetworkDefinition.get_layer": lambda self, i: net_layers[i],
        "OnnxParser.__init__": lambda *a: order.append("OnnxParser"),
        "Runtime.__init__": lambda *a: None,
        "OnnxParser.parse_from_file": lambda self, path: Path(path).exists(),
        "OnnxParser.num_errors": 0,
        "ITensor.is_shape_tensor": False,  # as TensorRT answers for a data input
        "IBuilderConfig.set_timing_cache": lambda self, cache, ignore: timing_ok or cache._world.calls.count(
            ("IBuilderConfig", "create_timing_cache", (b"",))) > 0,
        "ITimingCache.serialize": lambda self: b"timing-cache",
    })
    running = trt_version_int(trt.__version__)
    world.cache_payload = format_cache({n: 1.0 for n, _ in inputs} | {"h": 2.0, "y": 2.0, "z": 4.0}, running,
                                       "EntropyCalibration2")

    def build(self, network, config):
        calibrator = config.was_set("int8_calibrator")
        if calibrator is not None:
            drive_calibrator(trt, calibrator, [n for n, _ in inputs], world.cache_payload, order)
        return b"serialized-engine"

    world.script["Builder.build_serialized_network"] = build
    real_init = trt.init_libnvinfer_plugins

    def init_plugins(logger, namespace):
        order.append("init_libnvinfer_plugins")
        real_init(logger, namespace)  # the real binding checks its own arguments (the stub library returns 0)
        return True  # what libnvinfer_plugin answers on a GPU machine

    world.init_plugins = init_plugins
    return world


@contextlib.contextmanager
def _installed(trt, world):
    from backend_fakes import FakeDeviceMemory

    import trtq.backend.cuda as cuda

    saved_alloc, saved_init = cuda.allocate, trt.init_libnvinfer_plugins
    world.memory = cuda.allocate = FakeDeviceMemory()
    trt.init_libnvinfer_plugins = world.init_plugins
    try:
        with world:
            yield world
    finally:
        cuda.allocate, trt.init_libnvinfer_plugins = saved_alloc, saved_init


UNKNOWN_TYPES = set()


def _assert_clean(world):
    UNKNOWN_TYPES.update(world.unknown_types)
    assert not world.unknown_types, f"signature types the checker cannot judge: {sorted(world.unknown_types)}"
    assert not world.violations, "calls that do not match TensorRT %s:\n%s" % (world.trt.__version__,
                                                                              "\n".join(world.violations))


def _npy_data(folder: Path, count=8):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        np.save(folder / f"{i}.npy", rng.normal(size=(4,)).astype(np.float32))
    return folder


def _build(tmp, name="m", **kwargs):
    from trtq.backend.build import BuildOptions
    from trtq.pipeline.building import build_engine

    kwargs.setdefault("batch_sizes", [1, 4])
    return build_engine(BuildOptions(model_path=Path(tmp) / "m.onnx", output_path=Path(tmp) / f"{name}.engine",
                                     **kwargs))


def _calls(world, cls, member):
    return [args for c, m, args in world.calls if c == cls and m == member]


@check
def build_calls_match_signatures_fp32_fp16(expected):
    trt, major = context()
    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx")
        for precision in ("fp32", "fp16"):
            world = _world(trt, Path(tmp) / "m.onnx")
            with _installed(trt, world):
                result = _build(tmp, precision, precision=precision, timing_cache=Path(tmp) / "t.cache")
            _assert_clean(world)
            flags_cleared = [a[0] for a in _calls(world, "IBuilderConfig", "clear_flag")]
            assert trt.BuilderFlag.TF32 in flags_cleared, "TF32 must be off for fp32/fp16 unless --tf32"
            set_flags = [a[0] for a in _calls(world, "IBuilderConfig", "set_flag")]
            if precision == "fp16" and major < 11:
                assert trt.BuilderFlag.FP16 in set_flags
            assert _calls(world, "IOptimizationProfile", "set_shape"), "dynamic batch needs a profile"
            assert (Path(tmp) / f"{precision}.engine").read_bytes() == b"serialized-engine"
            assert (Path(tmp) / "t.cache").read_bytes() == b"timing-cache"
            assert world.drove.index("init_libnvinfer_plugins") < world.drove.index("OnnxParser"), world.drove
            assert result.report["tensorrt"]["path"] == ("explicit" if major >= 11 else "implicit")


@check
def build_features_set_their_flags(expected):
    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx")
        world = _world(trt, Path(tmp) / "m.onnx")
        with _installed(trt, world):
            result = _build(tmp, precision="fp16", sparsity=True, version_compatible=True, tf32=True,
                            hardware_compatibility="ampere_plus")
        _assert_clean(world)
        set_flags = [a[0] for a in _calls(world, "IBuilderConfig", "set_flag")]
        assert trt.BuilderFlag.SPARSE_WEIGHTS in set_flags and trt.BuilderFlag.VERSION_COMPATIBLE in set_flags
        assert not _calls(world, "IBuilderConfig", "clear_flag"), "--tf32 leaves TF32 on"
        assert [a for c, m, a in world.calls if m == "hardware_compatibility_level="] == [
            (trt.HardwareCompatibilityLevel.AMPERE_PLUS,)]
        assert {"SPARSE_WEIGHTS", "VERSION_COMPATIBLE", "TF32"} <= set(result.report["tensorrt"]["builder_flags"])
        from trtq.errors import TrtqError

        with _installed(trt, _world(trt, Path(tmp) / "m.onnx")):
            try:
                _build(tmp, "bad", precision="fp16", hardware_compatibility="volta_plus")
            except TrtqError as exc:
                assert "ampere_plus" in str(exc) and "\n" not in str(exc), str(exc)
            else:
                raise AssertionError("an unknown hardware-compatibility level was accepted")


@check
def implicit_int8_calibrates_through_the_vtable(expected):
    trt, major = context()
    if major >= 11:
        raise Skip("no implicit calibrators on TensorRT 11")
    from trtq import cache as cache_io
    from trtq.data.spec import DataSpec

    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx")
        data = _npy_data(Path(tmp) / "calib")
        for algorithm, algo in (("entropy", trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2),
                                ("minmax", trt.CalibrationAlgoType.MINMAX_CALIBRATION)):
            world = _world(trt, Path(tmp) / "m.onnx")
            cache = Path(tmp) / f"{algorithm}.cache"
            with _installed(trt, world):
                result = _build(tmp, algorithm, precision="int8", calib=DataSpec(path=str(data), batch_size=4),
                                cache_path=cache, algorithm=algorithm)
            _assert_clean(world)
            assert f"getAlgorithm={int(algo)}" in world.drove, world.drove
            assert "readCalibrationCache=NULL" in world.drove and "getBatchSize=4" in world.drove
            got = [line for line in world.drove if line.startswith("getBatch=")]
            assert len(got) == 2, world.drove  # 8 samples in batches of 4
            pointer = int(got[0].split("=")[1], 16)
            assert world.memory.sizes[pointer] == 4 * 4 * 4, "float32 batch of 4x4"
            assert cache.read_bytes() == world.cache_payload, "TensorRT's cache is written as it is"
            assert cache_io.read_cache(cache).sidecar["data"]["calibrated_by"] == "tensorrt"
            assert result.report["calibration"]["samples"] == 8
            assert not world.memory.live, "calibration buffers are freed"
            assert trt.BuilderFlag.INT8 in [a[0] for a in _calls(world, "IBuilderConfig", "set_flag")]

        # the cache just written is handed over: no data is read, TensorRT gets the exact bytes
        world = _world(trt, Path(tmp) / "m.onnx")
        with _installed(trt, world):
            result = _build(tmp, "again", precision="int8", cache_path=Path(tmp) / "entropy.cache")
        _assert_clean(world)
        assert f"readCalibrationCache={len(world.cache_payload)}" in world.drove, world.drove
        assert not [line for line in world.drove if line.startswith("getBatch=")]
        assert result.report["calibration"]["source"] == "cache"


@check
def percentile_on_the_implicit_path_is_trtq_calibrated(expected):
    trt, major = context()
    if major >= 11:
        raise Skip("no implicit calibrators on TensorRT 11")
    from trtq.data.spec import DataSpec

    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx")
        data = _npy_data(Path(tmp) / "calib")
        for algorithm in ("percentile", "auto"):  # auto: the default, calibrated on the CPU with its verdict
            world = _world(trt, Path(tmp) / "m.onnx")
            with _installed(trt, world):
                result = _build(tmp, algorithm, precision="int8", calib=DataSpec(path=str(data), batch_size=4),
                                algorithm=algorithm, cache_path=Path(tmp) / f"{algorithm}.cache")
            _assert_clean(world)
            calibration = result.report["calibration"]
            assert calibration["algorithm"] == algorithm and calibration["calibrated_by"] == "trtq-cpu", calibration
            assert calibration["verdict"]["samples"] >= 1 and "INT8 fidelity" in calibration["verdict"]["line"]
            assert f"getAlgorithm={int(trt.CalibrationAlgoType.ENTROPY_CALIBRATION_2)}" in world.drove, world.drove
            handed = [line for line in world.drove if line.startswith("readCalibrationCache=")]
            assert handed and handed[0] != "readCalibrationCache=NULL", world.drove


@check
def explicit_path_flags_and_refusal_below_10(expected):
    from trtq.cli import main

    trt, major = context()
    with tempfile.TemporaryDirectory() as tmp:
        model = _onnx_model(Path(tmp) / "m.onnx")
        world = _world(trt, model)
        err = io.StringIO()
        with _installed(trt, world), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(["build", str(model), "--fp16", "--explicit", "--batch-sizes", "1,4", "-o",
                         str(Path(tmp) / "e.engine")])
        if major < 10:  # one line, exit 2, before any work
            assert code == 2 and "--explicit needs TensorRT 10" in err.getvalue(), err.getvalue()
            assert "Traceback" not in err.getvalue() and not world.calls, world.calls
            return
        assert code == 0, err.getvalue()
        _assert_clean(world)
        flags = _calls(world, "Builder", "create_network")[0][0]
        wanted = 0 if major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        assert flags == wanted, (flags, wanted)
        assert not _calls(world, "IBuilderConfig", "set_flag") or trt.BuilderFlag.FP16 not in [
            a[0] for a in _calls(world, "IBuilderConfig", "set_flag")]


@check
def mixed_precision_layers_stay_float(expected):
    from trtq import cache as cache_io

    trt, major = context()
    with tempfile.TemporaryDirectory() as tmp:
        model = _onnx_model(Path(tmp) / "m.onnx")
        cache = Path(tmp) / "m.cache"
        from trtq.graph.model import file_sha256, load_onnx
        from trtq.graph.signature import input_specs

        loaded = load_onnx(model)
        amax = {"x": 1.0, "h": 2.0, "y": 2.0, "z": 4.0}
        running = cache_io.trt_version_int(trt.__version__)
        sidecar = cache_io.make_sidecar(model_path=model, model_sha256=file_sha256(model),
                                        inputs=cache_io.input_records(input_specs(loaded)), algorithm="entropy",
                                        amax=amax, trt_version=running)
        sidecar["mixed_precision"] = {"float_layers": ["conv_a"], "source": "test"}
        cache_io.write_cache(cache, amax, trt_version=running, sidecar=sidecar)
        world = _world(trt, model)
        with _installed(trt, world):
            result = _build(tmp, "mp", precision="int8", cache_path=cache)
        _assert_clean(world)
        assert result.report["mixed_precision"]["float_layers"] == ["conv_a"]
        if major >= 11:  # explicit: the node gets no Q/DQ (checked by quantize_model's exclude)
            assert result.report["calibration"]["quantized_layers"] == 1, result.report["calibration"]
            return
        conv, relu, matmul = world.layers
        assert conv.was_set("precision") == trt.DataType.FLOAT
        assert relu.was_set("precision") is None and matmul.was_set("precision") is None
        assert _calls(world, "ILayer", "set_output_type") == [(0, trt.DataType.FLOAT)]
        assert trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS in [a[0] for a in _calls(world, "IBuilderConfig", "set_flag")]


def _cli(argv):
    """``trtq ARGV`` as a user runs it: (exit code, stdout, stderr)."""
    from trtq.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(map(str, argv)))
    return code, out.getvalue(), err.getvalue()


def _one_line(code, err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, (code, err)
    for needle in needles:
        assert needle in lines[0], lines[0]


@check
def dla_core_with_gpu_fallback(expected):
    """--dla-core on a batch range is refused before the build (DLA has no dynamic shapes); with one batch
    size the layers that cannot run on DLA are named, none on DLA is refused, and the report says what runs where;
    Releases without DLA on Linux/Jetson (10.8-11.4.0) are refused by version."""
    from trtq.backend.policy import NO_DLA, parse_version

    trt, _ = context()
    no_dla = NO_DLA[0] <= parse_version(trt.__version__) < NO_DLA[1]
    with tempfile.TemporaryDirectory() as tmp:
        model = _onnx_model(Path(tmp) / "m.onnx")  # layers conv_a, conv_a_1, mm_c; input x ["batch", 4]
        engine = Path(tmp) / "dla.engine"
        world = _world(trt, model)
        with _installed(trt, world):  # trtq's default profile spans batch 1..64
            code, _, err = _cli(["build", model, "--fp16", "--dla-core", "0", "-o", engine])
        if no_dla:
            _one_line(code, err, "has no DLA support", "10.7")
            assert not [c for c in world.calls if c[0] == "Builder"], "refused before TensorRT builds anything"
            return
        _one_line(code, err, "DLA needs static shapes", "--batch-sizes 1")
        assert not [c for c in world.calls if c[0] == "Builder"] and not engine.exists()

        on_dla = {"conv_a": True, "conv_a_1": True, "mm_c": False}
        world = _world(trt, model)
        world.script["IBuilderConfig.can_run_on_DLA"] = lambda self, layer: on_dla[layer.name]
        records = []
        handler = logging.Handler()
        handler.emit = records.append
        logging.getLogger("trtq.backend.build").addHandler(handler)
        try:
            with _installed(trt, world):
                code, _, err = _cli(["build", model, "--fp16", "--dla-core", "1", "--batch-sizes", "1", "-o", engine])
        finally:
            logging.getLogger("trtq.backend.build").removeHandler(handler)
        assert code == 0, err
        _assert_clean(world)
        assert _calls(world, "IOptimizationProfile", "set_shape") == [("x", (1, 4), (1, 4), (1, 4))]
        assert [a for c, m, a in world.calls if c == "IBuilderConfig" and m == "DLA_core="] == [(1,)]
        assert [a for c, m, a in world.calls if m == "default_device_type="] == [(trt.DeviceType.DLA,)]
        assert trt.BuilderFlag.GPU_FALLBACK in [a[0] for a in _calls(world, "IBuilderConfig", "set_flag")]
        checked = [c for c, m, a in world.calls if m == "can_run_on_DLA"]
        assert len(checked) == 3, world.calls
        report = json.loads(Path(str(engine) + ".json").read_text())["tensorrt"]
        assert report["dla_core"] == 1 and report["dla"] == {"core": 1, "layers_on_dla": 2,
                                                             "gpu_fallback_layers": ["mm_c"]}, report
        assert any("fall back to the GPU: mm_c" in r.getMessage() for r in records), [r.getMessage() for r in records]

        world = _world(trt, model)  # no layer can run on DLA: no engine that claims DLA and runs on the GPU
        world.script["IBuilderConfig.can_run_on_DLA"] = lambda self, layer: False
        with _installed(trt, world):
            code, _, err = _cli(["build", model, "--fp16", "--dla-core", "0", "--batch-sizes", "4", "-o",
                                 Path(tmp) / "none.engine"])
        _one_line(code, err, "no layer of m.onnx can run on DLA core 0", "drop --dla-core")
        assert not (Path(tmp) / "none.engine").exists() and not (Path(tmp) / "none.engine.json").exists()
        assert not _calls(world, "Builder", "build_serialized_network"), "refused before the build"

        with _installed(trt, _world(trt, model)):
            code, _, err = _cli(["build", model, "--fp16", "--dla-core", "2", "--batch-sizes", "1", "-o",
                                 Path(tmp) / "two.engine"])
        _one_line(code, err, "--dla-core 2", "2 DLA core")

        # the engine trtq built for core 1 is loaded with runtime.DLA_core = 1, set before
        # deserializing (trtexec's order; IRuntime's default is -1)
        import trtq.backend.cuda as cuda
        from trtq.backend.runner import EngineRunner

        world, _ = _engine_world(trt)
        saved = cuda.Stream
        cuda.Stream = _FakeStream
        try:
            with _installed(trt, world):
                EngineRunner(engine)._buffers.clear()
        finally:
            cuda.Stream = saved
        _assert_clean(world)
        order = [(c, m, a) for c, m, a in world.calls if c == "Runtime"]
        assert ("Runtime", "DLA_core=", (1,)) in order, order
        assert order.index(("Runtime", "DLA_core=", (1,))) < [m for _, m, _ in order].index("deserialize_cuda_engine")


@check
def timing_cache_refused_is_replaced(expected):
    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx")
        stale = Path(tmp) / "t.cache"
        stale.write_bytes(b"from another GPU")
        world = _world(trt, Path(tmp) / "m.onnx", timing_ok=False)
        with _installed(trt, world):
            _build(tmp, precision="fp32", timing_cache=stale)
        _assert_clean(world)
        assert [a[0] for a in _calls(world, "IBuilderConfig", "create_timing_cache")] == [b"from another GPU", b""]
        assert stale.read_bytes() == b"timing-cache", "the refused file is refreshed"


@check
def prequantized_model_needs_no_calibration_data(expected):
    trt, major = context()
    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx", qdq=True)
        world = _world(trt, Path(tmp) / "m.onnx")
        with _installed(trt, world):
            result = _build(tmp, precision="int8")
        _assert_clean(world)
        assert result.report["tensorrt"]["prequantized"]
        assert not [line for line in world.drove if line.startswith("getBatch")], world.drove
        if major < 11:
            assert trt.BuilderFlag.INT8 in [a[0] for a in _calls(world, "IBuilderConfig", "set_flag")]


@check
def plugins_and_profile_errors_are_one_line(expected):
    from trtq.errors import ModelError, TrtqError

    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx")
        try:
            _build(tmp, precision="fp32", plugins=[Path(tmp) / "nope.so"])
        except TrtqError as exc:
            assert "--plugins" in str(exc) and "\n" not in str(exc)
        else:
            raise AssertionError("a missing plugin library was accepted")
        world = _world(trt, Path(tmp) / "m.onnx")

        def bad_shape(self, name, lo, opt, hi):
            raise ValueError("min > opt")

        world.script["IOptimizationProfile.set_shape"] = bad_shape
        with _installed(trt, world):
            try:
                _build(tmp, precision="fp32")
            except ModelError as exc:
                assert "refused the profile" in str(exc) and "\n" not in str(exc)
            else:
                raise AssertionError("set_shape's ValueError escaped or was swallowed")


@check
def signature_checker_catches_wrong_calls(expected):
    """The stand-ins are not vacuous: each kind of mistake they exist to catch is caught on this version."""
    from trt_signatures import Fake, World

    trt, _ = context()
    world = World(trt)
    config, builder, runtime = Fake(world, "IBuilderConfig"), Fake(world, "Builder"), Fake(world, "Runtime")
    config.set_flag(0)                                                    # int where an enum is wanted
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1.5)      # float where int is wanted
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE)           # missing argument
    runtime.deserialize_cuda_engine("engine.plan")                        # str where a buffer is wanted
    builder.num_DLA_cores = 3                                             # read-only property
    config.DLA_core = "0"                                                 # setter of the wrong type
    try:
        builder.no_such_member_anywhere()
    except AttributeError:
        pass
    assert len(world.violations) == 7, "\n".join(world.violations)
    clean = World(trt)
    config = Fake(clean, "IBuilderConfig")
    config.set_flag(trt.BuilderFlag.TF32)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    config.DLA_core = 0
    Fake(clean, "IOptimizationProfile").set_shape("x", (1, 4), (4, 4), (8, 4))  # tuples convert to Dims
    Fake(clean, "Runtime").deserialize_cuda_engine(b"engine")
    assert not clean.violations, clean.violations


@check
def failed_build_names_first_and_last_tensorrt_error(expected):
    from trtq.errors import TrtqError

    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx")
        world = _world(trt, Path(tmp) / "m.onnx")

        def failing(self, network, config):
            logger = next(args[0] for c, m, args in world.calls if c == "Builder" and m == "__init__")
            logger.log(trt.Logger.ERROR, "[conv_a] unsupported data type")      # TensorRT calls its ILogger
            logger.log(trt.Logger.ERROR, "Error Code 4: API Usage Error")
            return None

        world.script["Builder.build_serialized_network"] = failing
        with _installed(trt, world):
            try:
                _build(tmp, precision="fp32")
            except TrtqError as exc:
                assert "unsupported data type ... Error Code 4" in str(exc) and "\n" not in str(exc), str(exc)
            else:
                raise AssertionError("a failed build was not reported")
        _assert_clean(world)
        assert not (Path(tmp) / "m.engine").exists() and not (Path(tmp) / "m.engine.json").exists()


@check
def parser_errors_are_one_line(expected):
    from trtq.errors import ModelError

    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        _onnx_model(Path(tmp) / "m.onnx")
        world = _world(trt, Path(tmp) / "m.onnx")
        world.script.update({"OnnxParser.parse_from_file": lambda self, path: False, "OnnxParser.num_errors": 2,
                             "OnnxParser.get_error": lambda self, i: f"node {i}: unsupported\n  op"})
        with _installed(trt, world):
            try:
                _build(tmp, precision="fp32")
            except ModelError as exc:
                assert "rejected m.onnx: node 0: unsupported op (and 1 more)" in str(exc), str(exc)
            else:
                raise AssertionError("a parser failure was not reported")
        _assert_clean(world)
        assert _calls(world, "OnnxParser", "get_error") == [(0,), (1,)]
        assert not (Path(tmp) / "m.engine").exists()


def _engine_world(trt, dtype=None, location=None):
    from trt_signatures import World

    world = World(trt)
    tensors = [("images", trt.TensorIOMode.INPUT, (-1, 3, 8, 8)), ("out", trt.TensorIOMode.OUTPUT, (-1, 10))]
    shapes = {}
    world.script.update({
        "ICudaEngine.num_io_tensors": 2,
        "ICudaEngine.get_tensor_name": lambda self, i: tensors[i][0],
        "ICudaEngine.get_tensor_mode": lambda self, n: dict((t[0], t[1]) for t in tensors)[n],
        "ICudaEngine.get_tensor_dtype": lambda self, n: dtype or trt.DataType.FLOAT,
        "ICudaEngine.get_tensor_shape": lambda self, n: dict((t[0], t[2]) for t in tensors)[n],
        "ICudaEngine.get_tensor_profile_shape": lambda self, n, i: [(1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)],
        "ICudaEngine.get_tensor_location": lambda self, n: location or trt.TensorLocation.DEVICE,
        "ICudaEngine.get_tensor_vectorized_dim": lambda self, n: -1,
        "ICudaEngine.get_tensor_components_per_element": lambda self, n: 1,
        "ICudaEngine.device_memory_size": 4096, "ICudaEngine.device_memory_size_v2": 4096,
        "IExecutionContext.set_input_shape": lambda self, n, s: shapes.__setitem__(n, tuple(s)) or True,
        "IExecutionContext.get_tensor_shape": lambda self, n: (shapes["images"][0], 10),
        "IExecutionContext.execute_async_v3": lambda self, stream: True,
        "ICudaEngine.get_tensor_format": lambda self, n: trt.TensorFormat.LINEAR,
        "EngineInspector.get_engine_information": lambda self, fmt: (
            Path(__file__).parent / "data" / "inspector_qat.graph.json").read_text(),
    })
    real_init = trt.init_libnvinfer_plugins
    world.init_plugins = lambda logger, ns: world.drove.append("init_libnvinfer_plugins") or \
        real_init(logger, ns) or True  # the real binding checks its arguments; a GPU machine answers True
    return world, shapes


class _FakeStream:
    handle = 7
    raw = None

    def synchronize(self):
        pass

    def close(self):
        pass


@check
def runner_calls_match_signatures(expected):
    import trtq.backend.cuda as cuda
    from trtq.backend.runner import EngineRunner

    trt, _ = context()
    world, shapes = _engine_world(trt)
    saved_stream = cuda.Stream
    cuda.Stream = _FakeStream
    try:
        with _installed(trt, world):
            runner = EngineRunner(b"engine-bytes")
            runner.set_batch_size(4, {"images": (1, 3, 8, 8)})
            runner.execute()
            memory = runner.device_memory_bytes()
            info = runner.engine_information()
            runner._buffers.clear()
    finally:
        cuda.Stream = saved_stream
    _assert_clean(world)
    assert shapes["images"] == (4, 3, 8, 8), shapes
    assert memory == 4096 + 4 * 3 * 8 * 8 * 4 + 4 * 10 * 4  # on every version
    assert info["Layers"][0]["Name"] == "QuantizeLinear_2" and "Precision" not in info["Layers"][0]
    assert world.drove == ["init_libnvinfer_plugins"]  # before deserializing
    assert _calls(world, "IExecutionContext", "execute_async_v3") == [(7,)]
    assert not [c for c in world.calls if c[1] == "engine_host_code_allowed="], "only for version-compatible plans"

    # a --version-compatible engine trtq built embeds the lean runtime: it loads only with host code allowed
    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / "vc.engine"
        engine.write_bytes(b"engine")
        Path(str(engine) + ".json").write_text(json.dumps({"tensorrt": {"builder_flags": ["VERSION_COMPATIBLE"]}}))
        world, _ = _engine_world(trt)
        cuda.Stream = _FakeStream
        try:
            with _installed(trt, world):
                EngineRunner(engine)._buffers.clear()
        finally:
            cuda.Stream = saved_stream
        _assert_clean(world)
        assert [a for c, m, a in world.calls if m == "engine_host_code_allowed="] == [(True,)]


@check
def engine_io_reads_profile_through_signatures(expected):
    """trtq deploy triton's engine reader: names, dtypes, dynamic dims and profile 0, no context or stream."""
    from trtq.backend.engine_io import read_engine_io

    trt, _ = context()
    world, _ = _engine_world(trt)
    with _installed(trt, world):
        tensors = read_engine_io(b"engine-bytes")
    _assert_clean(world)
    assert [(t.name, t.is_input, t.shape) for t in tensors] == [("images", True, (-1, 3, 8, 8)),
                                                                 ("out", False, (-1, 10))], tensors
    assert tensors[0].profile == ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8)), tensors[0].profile
    assert str(tensors[0].dtype) == "float32" and tensors[1].profile is None
    assert not _calls(world, "ICudaEngine", "create_execution_context"), "reading I/O needs no context"


@check
def runner_handles_types_numpy_lacks(expected):
    from trtq.backend.runner import EngineRunner
    from trtq.errors import ModelError

    trt, _ = context()
    import trtq.backend.cuda as cuda

    for name in ("BF16", "FP8", "INT4", "FP4"):
        if not hasattr(trt.DataType, name):
            continue
        world, _ = _engine_world(trt, dtype=getattr(trt.DataType, name))
        saved = cuda.Stream
        cuda.Stream = _FakeStream
        try:
            with _installed(trt, world):
                try:
                    runner = EngineRunner(b"engine")
                except ModelError as exc:
                    assert name in ("INT4", "FP4") and name in str(exc), str(exc)
                else:
                    assert name in ("BF16", "FP8")
                    runner.set_batch_size(2)
                    size = {"BF16": 2, "FP8": 1}[name]
                    assert runner._buffers["images"].nbytes == 2 * 3 * 8 * 8 * size
                    runner._buffers.clear()
        finally:
            cuda.Stream = saved
        _assert_clean(world)
    world, _ = _engine_world(trt, location=trt.TensorLocation.HOST)
    saved = cuda.Stream
    cuda.Stream = _FakeStream
    try:
        with _installed(trt, world):
            try:
                EngineRunner(b"engine")
            except ModelError as exc:
                assert "host memory" in str(exc)
            else:
                raise AssertionError("a host (shape-tensor) input was given a device pointer")
    finally:
        cuda.Stream = saved


def _computing_world(trt, inputs, outputs, compute, profiles=None, formats=None):
    """A World whose engine computes: ``inputs``/``outputs`` are ``[(name, DataType, shape with -1)]``,
    ``profiles`` ``{input: (min, opt, max)}``, ``compute(feed) -> {output: array}`` runs on what trtq copied into
    the input buffers, and its results are written into the output buffers trtq reads back."""
    from trt_signatures import World

    world = World(trt)
    tensors = {n: (trt.TensorIOMode.INPUT, d, s) for n, d, s in inputs}
    tensors.update({n: (trt.TensorIOMode.OUTPUT, d, s) for n, d, s in outputs})
    names = list(tensors)
    shapes, addresses = {}, {}
    world.input_shapes = []

    def np_type(name):
        return np.dtype(trt.nptype(tensors[name][1]))

    def feed():
        return {n: world.memory.read(addresses[n], np_type(n), shapes[n]) for n, _, _ in inputs}

    def set_input_shape(self, name, shape):
        shapes[name] = tuple(shape)
        world.input_shapes.append((name, tuple(shape)))
        return True

    def output_shape(self, name):
        zeros = {n: np.zeros(shapes[n], np_type(n)) for n, _, _ in inputs}
        return tuple(compute(zeros)[name].shape)

    def execute(self, stream):
        for name, array in compute(feed()).items():
            array = np.ascontiguousarray(array, dtype=np_type(name))
            world.memory.live[addresses[name]].data[: array.nbytes] = array.tobytes()
        return True

    world.script.update({
        "ICudaEngine.num_io_tensors": len(names),
        "ICudaEngine.get_tensor_name": lambda self, i: names[i],
        "ICudaEngine.get_tensor_mode": lambda self, n: tensors[n][0],
        "ICudaEngine.get_tensor_dtype": lambda self, n: tensors[n][1],
        "ICudaEngine.get_tensor_shape": lambda self, n: tensors[n][2],
        "ICudaEngine.get_tensor_profile_shape": lambda self, n, i: list((profiles or {})[n]),
        "ICudaEngine.get_tensor_location": lambda self, n: trt.TensorLocation.DEVICE,
        "ICudaEngine.get_tensor_format": lambda self, n: (formats or {}).get(n, trt.TensorFormat.LINEAR),
        "ICudaEngine.get_tensor_vectorized_dim": lambda self, n: -1,
        "ICudaEngine.get_tensor_components_per_element": lambda self, n: 1,
        "ICudaEngine.device_memory_size": 4096, "ICudaEngine.device_memory_size_v2": 4096,
        "IExecutionContext.set_input_shape": set_input_shape,
        "IExecutionContext.get_tensor_shape": output_shape,
        "IExecutionContext.set_tensor_address": lambda self, n, ptr: addresses.__setitem__(n, ptr),
        "IExecutionContext.execute_async_v3": execute,
    })
    real_init = trt.init_libnvinfer_plugins
    world.init_plugins = lambda logger, ns: world.drove.append("init_libnvinfer_plugins") or \
        real_init(logger, ns) or True
    return world


@contextlib.contextmanager
def _engine_installed(trt, world):
    """The World plus a stream and events that need no GPU (the runner's and the benchmark's)."""
    import trtq.backend.cuda as cuda

    class Event:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            pass

        def record(self, stream=None):
            pass

        def synchronize(self):
            pass

        def elapsed_ms(self, start):
            return 1.0

    saved = cuda.Stream, cuda.Event
    cuda.Stream, cuda.Event = _FakeStream, Event
    try:
        with _installed(trt, world):
            yield world
    finally:
        cuda.Stream, cuda.Event = saved


def _rows_times(images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """``images`` flattened per row times ``weights``, each row the same number whatever the batch: in float64,
    then float32 (a float32 BLAS blocks a 5-row and a 36-row product differently on some CPUs, AVX2-only ones
    among them, so a row's last bit would depend on the batch it came in)."""
    flat = images.reshape(len(images), -1).astype(np.float64)
    return (flat @ weights.astype(np.float64)).astype(np.float32)


def _image_model(folder: Path, samples: int):
    """ref.onnx (images [N,3,8,8] -> out [N,10], a real MatMul) and ``samples`` .npy samples; returns (model, data folder, weights)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.random.default_rng(7).normal(size=(192, 10)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["images", "shape"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["out"])],
        "g", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 10])],
        initializer=[numpy_helper.from_array(weights, "w"),
                     numpy_helper.from_array(np.array([0, -1], np.int64), "shape")])
    model = folder / "ref.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    data = folder / "data"
    data.mkdir()
    for i in range(samples):
        np.save(data / f"{i:03d}.npy", np.random.default_rng(i).random((3, 8, 8), dtype=np.float32))
    return model, data, weights


@check
def eval_pads_to_the_engines_smallest_batch(expected):
    """`trtq eval ref.onnx m.engine` on an engine built with --batch-sizes 8,32 (and on a fixed batch-8 engine),
    36 samples in loader batches of 32: the last 4 are padded to 8, the padding dropped, all 36 scored."""
    from trtq.backend.runner import EngineSession

    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        model, data, weights = _image_model(Path(tmp), 36)
        engine = Path(tmp) / "m.engine"
        engine.write_bytes(b"engine")
        compute = lambda feed: {"out": _rows_times(feed["images"], weights)}  # noqa: E731
        for shape, profile in (((-1, 3, 8, 8), ((8, 3, 8, 8), (32, 3, 8, 8), (32, 3, 8, 8))),
                               ((8, 3, 8, 8), None)):
            world = _computing_world(trt, [("images", trt.DataType.FLOAT, shape)],
                                     [("out", trt.DataType.FLOAT, (shape[0], 10))], compute,
                                     profiles={"images": profile} if profile else None)
            report = Path(tmp) / "eval.json"
            report.unlink(missing_ok=True)
            with _engine_installed(trt, world):
                code, out, err = _cli(["eval", model, engine, "--data", data, "-q", "--json", report,
                                       "--min-cosine", "0.9999"])
                assert code == 0, err[-800:]
                batches = [s[0] for n, s in world.input_shapes]
                assert batches == ([32, 8] if profile else [8, 8, 8, 8, 8]), batches
                assert json.loads(report.read_text())["samples"] == 36
                session = EngineSession(engine)  # the same, library-level: exactly the rows given, in order
                x = np.stack([np.load(data / f"{i:03d}.npy") for i in range(36)])
                # float32 matmuls of other batch sizes sum in another order: a few ulps, not a wrong row
                np.testing.assert_allclose(session.run(None, {"images": x[:5]})[0], compute({"images": x[:5]})["out"],
                                           rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(session.run(None, {"images": x})[0], compute({"images": x})["out"],
                                           rtol=1e-5, atol=1e-5)
                session.runner._buffers.clear()
            _assert_clean(world)


@check
def eval_int64_data_on_an_int32_engine_input(expected):
    """TensorRT 8.6's parser makes an INT64 ONNX input INT32 (onnx-tensorrt 8.6-GA convertDtype); `trtq eval`
    feeds int64 ids as int32 when they fit and refuses, in one line naming the engine, ids that do not (not
    "ONNX Runtime refused")."""
    import onnx
    from onnx import TensorProto, helper

    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        graph = helper.make_graph([helper.make_node("Cast", ["ids"], ["emb"], to=TensorProto.FLOAT)], "g",
                                  [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5])],
                                  [helper.make_tensor_value_info("emb", TensorProto.FLOAT, ["batch", 5])])
        model = Path(tmp) / "m.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
        engine = Path(tmp) / "m.engine"
        engine.write_bytes(b"engine")
        for name, top in (("fits", 30000), ("wide", 3_000_000_000)):
            data = Path(tmp) / name
            data.mkdir()
            for i in range(4):
                np.save(data / f"{i}.npy", np.random.default_rng(i).integers(0, 100, size=(5,)).astype(np.int64))
            np.save(data / "4.npy", np.array([1, 2, 3, 4, top], np.int64))
            seen = []

            def compute(feed):
                seen.append(feed["ids"].dtype)
                return {"emb": feed["ids"].astype(np.float32)}

            world = _computing_world(trt, [("ids", trt.DataType.INT32, (-1, 5))], [("emb", trt.DataType.FLOAT, (-1, 5))],
                                     compute, profiles={"ids": ((1, 5), (64, 5), (64, 5))})
            with _engine_installed(trt, world):
                code, out, err = _cli(["eval", model, engine, "--data", data, "-q", "--min-cosine", "0.9999"])
            if name == "fits":
                assert code == 0, err[-800:]
                assert seen and set(seen) == {np.dtype(np.int32)}, seen
            else:
                _one_line(code, err, "input 'ids' holds 3000000000", "int32")
                assert "ONNX Runtime" not in err and not seen, err
            _assert_clean(world)


@check
def engine_layouts_and_types_numpy_lacks_are_refused_with_real_data(expected):
    """A vectorized input (trtexec --inputIOFormats=int8:chw32) or a BF16/FP8 input gets no linear float32
    data in `trtq eval` or `trtq bench --data`: one line naming the input and its layout or type."""
    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        model, data, weights = _image_model(Path(tmp), 4)
        engine = Path(tmp) / "m.engine"
        engine.write_bytes(b"engine")
        cases = [("CHW32", trt.DataType.FLOAT, {"images": trt.TensorFormat.CHW32})]
        cases += [(kind, getattr(trt.DataType, kind), None) for kind in ("BF16", "FP8") if hasattr(trt.DataType, kind)]
        for needle, dtype, formats in cases:
            world = _computing_world(trt, [("images", dtype, (-1, 3, 8, 8))], [("out", trt.DataType.FLOAT, (-1, 10))],
                                     lambda feed: {"out": np.zeros((len(feed["images"]), 10), np.float32)},
                                     profiles={"images": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))}, formats=formats)
            world.script["IExecutionContext.get_tensor_shape"] = lambda self, n: (4, 10)
            with _engine_installed(trt, world):
                code, _, err = _cli(["eval", model, engine, "--data", data, "-q"])
                _one_line(code, err, "'images'", needle)
                code, _, err = _cli(["bench", engine, "--data", data, "--batch-sizes", "4", "--iterations", "1",
                                     "--warmup", "0", "--no-files", "-q"])
                _one_line(code, err, "'images'", needle)
            _assert_clean(world)


@check
def version_compatible_engine_loads_without_its_report(expected):
    """An engine built with --version-compatible (or trtexec --versionCompatible) and moved without its .json
    loads: a failed load is tried once more with engine host code allowed; an engine that still fails is one line."""
    from trtq.backend.runner import EngineRunner

    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / "moved.engine"
        engine.write_bytes(b"vc-engine")
        from trt_signatures import Fake

        for version_compatible in (True, False):
            world, _ = _engine_world(trt)

            def deserialize(self, data):  # TensorRT runs a plan's lean runtime only with host code allowed
                allowed = world.sets.get((id(self), "engine_host_code_allowed"))
                return Fake(world, "ICudaEngine") if version_compatible and allowed else None

            world.script["Runtime.deserialize_cuda_engine"] = deserialize
            with _engine_installed(trt, world):
                if version_compatible:
                    EngineRunner(engine)._buffers.clear()
                else:
                    code, _, err = _cli(["inspect", engine])
                    _one_line(code, err, "cannot load engine", "--version-compatible")
            _assert_clean(world)
            runtime = [m for c, m, a in world.calls if c == "Runtime"]
            assert runtime.count("deserialize_cuda_engine") == 2, runtime
            assert runtime.index("engine_host_code_allowed=") > runtime.index("deserialize_cuda_engine"), \
                "first without host code: only plans that need it run it"


@check
def corrupt_timing_cache_is_one_warning(expected):
    """A corrupt --timing-cache (TensorRT logs "Error Code 1: Serialization" and may give no cache) never reaches
    set_timing_cache as None; the build goes on with a fresh cache, and a later build error is the build's own."""
    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        model = _onnx_model(Path(tmp) / "m.onnx")
        stale = Path(tmp) / "t.cache"
        for answer in (None, "refused"):
            stale.write_bytes(b"not a timing cache")
            world = _world(trt, model)

            def create(self, data):
                if data:
                    builder_logger = [a[0] for c, m, a in world.calls if c == "Builder" and m == "__init__"][-1]
                    builder_logger.log(trt.Logger.ERROR, "Error Code 1: Serialization (Magic tag does not match)")
                    if answer is None:
                        return None
                from trt_signatures import Fake

                return Fake(world, "ITimingCache")

            def failing(self, network, config):
                builder_logger = [a[0] for c, m, a in world.calls if c == "Builder" and m == "__init__"][-1]
                builder_logger.log(trt.Logger.ERROR, "[mm_c] unsupported")
                return None

            world.script["IBuilderConfig.create_timing_cache"] = create
            world.script["IBuilderConfig.set_timing_cache"] = lambda self, cache, ignore: cache is not None and \
                world.calls.count(("IBuilderConfig", "create_timing_cache", (b"",))) > 0
            with _installed(trt, world):
                code, _, err = _cli(["build", model, "--timing-cache", stale, "--batch-sizes", "1,4", "-o",
                                     Path(tmp) / "m.engine"])
            assert code == 0, err
            _assert_clean(world)
            assert stale.read_bytes() == b"timing-cache", "the corrupt file is replaced after the build"
            scripted = dict(world.script, **{"Builder.build_serialized_network": failing})
            world = _world(trt, model)
            world.script.update(scripted)
            stale.write_bytes(b"not a timing cache")
            with _installed(trt, world):
                code, _, err = _cli(["build", model, "--timing-cache", stale, "--batch-sizes", "1,4", "-o",
                                     Path(tmp) / "m2.engine"])
            lines = [line for line in err.splitlines() if line.startswith("trtq build: error:")]
            assert code == 2 and len(lines) == 1 and "[mm_c] unsupported" in lines[0], err
            assert "Magic tag" not in lines[0], "the timing cache's error is not the build's"


@check
def native_instancenorm_for_compatible_engines_on_8_6(expected):
    """On TensorRT 8.6, --version-compatible and --hardware-compatibility parse InstanceNormalization as a
    layer (OnnxParserFlag.NATIVE_INSTANCENORM), as Polygraphy does; 10.0+ does it by default."""
    trt, major = context()
    with tempfile.TemporaryDirectory() as tmp:
        model = _onnx_model(Path(tmp) / "m.onnx")
        for extra in (["--version-compatible"], ["--hardware-compatibility", "ampere_plus"], []):
            world = _world(trt, model)
            with _installed(trt, world):
                code, _, err = _cli(["build", model, "--fp16", "--batch-sizes", "1,4", "-o", Path(tmp) / "c.engine",
                                     *extra])
            assert code == 0, err
            _assert_clean(world)
            flags = _calls(world, "OnnxParser", "set_flag")
            want = [(trt.OnnxParserFlag.NATIVE_INSTANCENORM,)] if major < 10 and extra else []
            assert flags == want, (extra, flags)


@check
def plugins_reach_eval_bench_and_inspect(expected):
    """`trtq eval`, `trtq bench` and `trtq inspect` load --plugins and the plugin libraries an engine's build
    report lists, before deserializing it; they take --cuda."""
    import ctypes
    import os

    trt, major = context()
    stub_dir = Path(os.environ["LD_LIBRARY_PATH"].split(os.pathsep)[0])
    recorded, given = stub_dir / f"libnvinfer_plugin.so.{major}", stub_dir / f"libnvonnxparser.so.{major}"
    with tempfile.TemporaryDirectory() as tmp:
        model, data, weights = _image_model(Path(tmp), 4)
        engine = Path(tmp) / "m.engine"
        engine.write_bytes(b"engine")
        Path(str(engine) + ".json").write_text(json.dumps({"tensorrt": {"plugins": [str(recorded)]},
                                                           "precision": "fp16"}))
        loaded = []
        real_cdll = ctypes.CDLL

        def cdll(path, *args, **kwargs):
            loaded.append(Path(path))
            return real_cdll(path, *args, **kwargs)

        compute = lambda feed: {"out": _rows_times(feed["images"], weights)}  # noqa: E731
        commands = [["eval", model, engine, "--data", data, "-q"],
                    ["bench", engine, "--batch-sizes", "2", "--iterations", "2", "--warmup", "0", "--no-files", "-q"],
                    ["inspect", engine, "--json"]]
        import trtq.backend.cuda as cuda

        for command in commands:
            world = _computing_world(trt, [("images", trt.DataType.FLOAT, (-1, 3, 8, 8))],
                                     [("out", trt.DataType.FLOAT, (-1, 10))], compute,
                                     profiles={"images": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))})
            world.script["EngineInspector.get_engine_information"] = lambda self, fmt: "{}"
            loaded.clear()
            ctypes.CDLL = cdll
            try:
                with _engine_installed(trt, world):
                    code, out, err = _cli([*command, "--plugins", given, "--cuda", "pycuda"])
            finally:
                ctypes.CDLL = real_cdll
                chosen = cuda._chosen
                cuda.select_layer(None)
            assert code == 0, (command[0], err[-800:])
            _assert_clean(world)
            assert loaded == [given, recorded], (command[0], loaded)
            assert world.drove[0] == "init_libnvinfer_plugins", world.drove
            assert chosen == "pycuda", (command[0], chosen)


@check
def inspect_shows_the_precision_of_each_layer(expected):
    """`trtq inspect` reads each layer's precision from its tensors' Format/Datatype (the inspector's real
    JSON has no Precision key); the tactic has its own column."""
    trt, _ = context()
    dump = (Path(__file__).parent / "data" / "inspector_qat.graph.json").read_text()
    with tempfile.TemporaryDirectory() as tmp:
        engine = Path(tmp) / "m.engine"
        engine.write_bytes(b"engine")
        world, _ = _engine_world(trt)
        world.script["EngineInspector.get_engine_information"] = lambda self, fmt: dump
        with _engine_installed(trt, world):
            code, out, err = _cli(["inspect", engine])
        assert code == 0, err
        _assert_clean(world)
        assert _calls(world, "EngineInspector", "get_engine_information") == [(trt.LayerInformationFormat.JSON,)]
        body = [line.split("│") for line in out.splitlines() if line.count("│") == 6]  # layer|type|precision|...
        assert "precision" in out and "tactic" in out, out
        precisions = [row[3].strip() for row in body if row[3].strip()]
        assert precisions == ["FP32 -> INT8", "INT8", "INT8", "INT8 -> FP16", "FP16 -> INT8", "FP32"], precisions
        assert any(row[5].strip().startswith("volta_int8x4") for row in body), out


@check
def recurrent_state_and_scalar_inputs_on_their_own_batch_axes(expected):
    """The trained digits LSTM ([layers, batch, hidden] state) and the If model driven by an int64 scalar, built
    with implicit INT8: the profile spans each input's own batch axis, the calibrator fills each buffer in the
    model's layout, and the scalar goes as it is with every batch."""
    import os
    import shutil

    trt, major = context()
    if major >= 11:
        raise Skip("no implicit calibrators on TensorRT 11")
    from trtq.data.spec import DataSpec

    models = Path(os.environ["TRTQ_CONTRACT_MODELS"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        shutil.copy(models / "lstm.onnx", tmp / "m.onnx")
        lstm_data = tmp / "lstm"
        lstm_data.mkdir()
        for i in range(8):  # one sample per file: the state without its batch axis
            np.savez(lstm_data / f"{i}.npz", x=rng.random((8, 8), np.float32),
                     h0=np.zeros((1, 16), np.float32), c0=np.zeros((1, 16), np.float32))
        world = _world(trt, tmp / "m.onnx")
        with _installed(trt, world):
            result = _build(tmp, "lstm", precision="int8", calib=DataSpec(path=str(lstm_data), batch_size=4),
                            cache_path=tmp / "lstm.cache", algorithm="entropy", opt_shapes={"x": (4, 8, 8)})
        _assert_clean(world)
        shapes = {}  # input -> every (min, opt, max) set: the engine's profile, then the calibration profile
        for args in _calls(world, "IOptimizationProfile", "set_shape"):
            shapes.setdefault(args[0], []).append(tuple(tuple(d) for d in args[1:]))
        assert shapes["h0"] == [((1, 1, 16), (1, 4, 16), (1, 4, 16)), ((1, 4, 16),) * 3], shapes
        assert shapes["x"] == [((1, 8, 8), (4, 8, 8), (4, 8, 8)), ((4, 8, 8),) * 3], shapes
        got = [line for line in world.drove if line.startswith("getBatch=")]
        assert len(got) == 2, world.drove
        sizes = sorted(world.memory.sizes[int(p, 16)] for p in got[0].split("=")[1].split(","))
        assert sizes == [1 * 4 * 16 * 4, 1 * 4 * 16 * 4, 4 * 8 * 8 * 4], sizes
        assert result.report["calibration"]["samples"] == 8

        shutil.copy(models / "branch.onnx", tmp / "m.onnx")
        branch_data = tmp / "branch"
        branch_data.mkdir()
        for i in range(8):
            np.savez(branch_data / f"{i}.npz", x_raw=rng.random(64).astype(np.float32), mode=np.array(1))
        world = _world(trt, tmp / "m.onnx")
        with _installed(trt, world):
            result = _build(tmp, "branch", precision="int8", calib=DataSpec(path=str(branch_data), batch_size=4),
                            cache_path=tmp / "branch.cache", algorithm="entropy")
        _assert_clean(world)
        shapes = {}
        for args in _calls(world, "IOptimizationProfile", "set_shape"):
            shapes.setdefault(args[0], []).append(tuple(tuple(d) for d in args[1:]))
        assert set(shapes["mode"]) == {((), (), ())}, shapes
        got = [line for line in world.drove if line.startswith("getBatch=")]
        assert len(got) == 2, world.drove
        names = [n for n in ("x_raw", "mode")]  # the world's network input order
        pointers = [int(p, 16) for p in got[0].split("=")[1].split(",")]
        assert [world.memory.sizes[p] for p in pointers] == [4 * 64 * 4, 4], names  # the scalar, as it is


@check
def dla_core_option_for_engines_without_a_report(expected):
    """`trtq eval/bench/inspect --dla-core N` load an engine without a trtq build report (trtexec --useDLACore)
    with runtime.DLA_core = N, set before deserializing; a negative core is refused by the option."""
    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        model, data, weights = _image_model(Path(tmp), 4)
        engine = Path(tmp) / "dla.engine"
        engine.write_bytes(b"engine")
        compute = lambda feed: {"out": _rows_times(feed["images"], weights)}  # noqa: E731
        commands = [["eval", model, engine, "--data", data, "-q"],
                    ["bench", engine, "--batch-sizes", "2", "--iterations", "2", "--warmup", "0", "--no-files", "-q"],
                    ["inspect", engine, "--json"]]
        for command in commands:
            world = _computing_world(trt, [("images", trt.DataType.FLOAT, (-1, 3, 8, 8))],
                                     [("out", trt.DataType.FLOAT, (-1, 10))], compute,
                                     profiles={"images": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))})
            world.script["EngineInspector.get_engine_information"] = lambda self, fmt: "{}"
            with _engine_installed(trt, world):
                code, out, err = _cli([*command, "--dla-core", "1"])
            assert code == 0, (command[0], err[-800:])
            _assert_clean(world)
            order = [m for c, m, a in world.calls if c == "Runtime"]
            assert [a for c, m, a in world.calls if c == "Runtime" and m == "DLA_core="] == [(1,)], command[0]
            assert order.index("DLA_core=") < order.index("deserialize_cuda_engine"), (command[0], order)
        code, _, err = _cli(["inspect", engine, "--dla-core", "-1"])
        assert code == 2 and "DLA core number" in err, err


@check
def engine_errors_are_worded_as_the_engines(expected):
    """Whatever the engine runner raises while running a batch (here the binding's RuntimeError from
    execute_async_v3) reaches `trtq eval` as one line naming the engine, never as ONNX Runtime's refusal."""
    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        model, data, weights = _image_model(Path(tmp), 4)
        engine = Path(tmp) / "m.engine"
        engine.write_bytes(b"engine")

        def failing(feed):
            raise RuntimeError("CUDA error 700: an illegal memory access was encountered")

        world = _computing_world(trt, [("images", trt.DataType.FLOAT, (-1, 3, 8, 8))],
                                 [("out", trt.DataType.FLOAT, (-1, 10))], failing,
                                 profiles={"images": ((1, 3, 8, 8), (4, 3, 8, 8), (8, 3, 8, 8))})
        world.script["IExecutionContext.get_tensor_shape"] = lambda self, n: (4, 10)
        with _engine_installed(trt, world):
            code, out, err = _cli(["eval", model, engine, "--data", data, "-q"])
        _one_line(code, err, "engine m.engine", "illegal memory access")
        assert "ONNX Runtime" not in err, err


@check
def deploy_triton_falls_back_when_tensorrt_cannot_load_the_engine(expected):
    """`trtq deploy triton ENGINE` where TensorRT is installed but refuses the plan (built on a Jetson or another
    TensorRT): the config comes from the build report and the ONNX model, as without TensorRT, and says so."""
    import shutil

    from trtq.backend.profiles import profile_shapes
    from trtq.data.spec import DataSpec
    from trtq.graph.model import file_sha256, load_onnx
    from trtq.graph.signature import input_specs
    from trtq.pipeline.calibration import calibrate

    trt, _ = context()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model, data, _ = _image_model(tmp, 16)
        calibrate(model, DataSpec(path=str(data), batch_size=8), algorithm="minmax", cache_path=tmp / "m.cache")
        engine = tmp / "m.engine"
        engine.write_bytes(b"a plan TensorRT 8.6.1 built on the Jetson")
        profile = profile_shapes(input_specs(load_onnx(model)), batch_sizes=[1, 16])
        Path(str(engine) + ".json").write_text(json.dumps({
            "format": "trtq-build-report", "model": {"file": model.name, "sha256": file_sha256(model)},
            "precision": "int8", "tensorrt": {"version": "8.6.1", "dla_core": 1},
            "profile": {n: {"min": list(a), "opt": list(b), "max": list(c)} for n, (a, b, c) in profile.items()}}))
        world, _ = _engine_world(trt)
        world.script["Runtime.deserialize_cuda_engine"] = lambda self, data: None
        with _engine_installed(trt, world):
            code, out, err = _cli(["deploy", "triton", engine, "--cache", tmp / "m.cache", "-o", tmp / "repo"])
        assert code == 0, err[-800:]
        _assert_clean(world)
        assert "cannot load engine" in " ".join(out.split()), out
        config = (tmp / "repo" / "m" / "config.pbtxt").read_text()
        assert "max_batch_size: 16" in config and "dims: [ 3, 8, 8 ]" in config, config
        assert "kind: KIND_NVDLA device_id: 1" in config, config
        shutil.rmtree(tmp / "repo")


@check
def recurrent_profiles_on_their_own_batch_axes_on_every_path(expected):
    """The digits LSTM ([layers, batch, hidden] state) and the If model (a rank-0 input) built on the paths every
    version has (FP32; on 10.x and 11.x the explicit Q/DQ INT8 path too): each input's profile spans its own batch
    axis and the scalar's profile is rank 0."""
    import os
    import shutil

    from trtq.data.spec import DataSpec

    trt, major = context()
    models = Path(os.environ["TRTQ_CONTRACT_MODELS"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        lstm_data = tmp / "lstm"
        lstm_data.mkdir()
        for i in range(16):
            np.savez(lstm_data / f"{i}.npz", x=rng.random((8, 8), np.float32),
                     h0=np.zeros((1, 16), np.float32), c0=np.zeros((1, 16), np.float32))
        builds = [("lstm.onnx", dict(precision="fp32"))]
        if major >= 10:
            builds.append(("lstm.onnx", dict(precision="int8", explicit=True, algorithm="minmax",
                                             calib=DataSpec(path=str(lstm_data), batch_size=4),
                                             cache_path=tmp / "lstm.cache")))
        builds.append(("branch.onnx", dict(precision="fp32")))
        for source, options in builds:
            shutil.copy(models / source, tmp / "m.onnx")
            world = _world(trt, tmp / "m.onnx")
            with _installed(trt, world):
                _build(tmp, "e", opt_shapes={"x": (4, 8, 8)} if source == "lstm.onnx" else None, **options)
            _assert_clean(world)
            shapes = {}
            for args in _calls(world, "IOptimizationProfile", "set_shape"):
                shapes.setdefault(args[0], []).append(tuple(tuple(d) for d in args[1:]))
            if source == "lstm.onnx":
                assert shapes["x"][0] == ((1, 8, 8), (4, 8, 8), (4, 8, 8)), (options, shapes)
                assert shapes["h0"][0] == shapes["c0"][0] == ((1, 1, 16), (1, 4, 16), (1, 4, 16)), (options, shapes)
            else:
                assert shapes["mode"][0] == ((), (), ()), shapes
                assert shapes["x_raw"][0][0][0] == 1 and shapes["x_raw"][0][2][0] > 1, shapes


def _ranked(world, ranks):
    """TensorRT's setInputShape refuses a shape of another rank than the engine tensor's (NVIDIA/TensorRT#588)."""
    plain = world.script["IExecutionContext.set_input_shape"]
    world.script["IExecutionContext.set_input_shape"] = lambda self, n, s: len(tuple(s)) == ranks[n] and \
        plain(self, n, s)
    return world


@check
def recurrent_and_scalar_engines_through_eval_and_bench(expected):
    """`trtq eval` and `trtq bench` on engines of the digits LSTM (state [layers, batch, hidden], batch on axis 1)
    and of the If model (a rank-0 `mode`; INT32 on 8.6): each input is shaped from its own array on its own batch
    axis, the scalar stays rank 0, and random data never picks `mode` silently. The engines compute with ONNX
    Runtime on what trtq copied into their buffers, so a wrong batch or rank fails as it would in TensorRT."""
    import os

    from trtq.backend.profiles import profile_shapes
    from trtq.backend.runner import EngineSession
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs
    from trtq.ort import create_session

    trt, major = context()
    models = Path(os.environ["TRTQ_CONTRACT_MODELS"])
    F = trt.DataType.FLOAT
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        # the LSTM, with exactly the profile `trtq build --batch-sizes 1,32` gives it
        lstm = models / "lstm.onnx"
        session = create_session(str(lstm))
        refused = []

        def lstm_compute(feed):
            try:
                return dict(zip(["logits", "hN", "cN"], session.run(None, feed)))
            except Exception as exc:  # noqa: BLE001 - TensorRT cannot run mismatched batches either
                refused.append(str(exc)[-120:])
                return {"logits": np.zeros((0, 10), np.float32), "hN": np.zeros((1, 0, 16), np.float32),
                        "cN": np.zeros((1, 0, 16), np.float32)}

        profile = profile_shapes(input_specs(load_onnx(lstm)), batch_sizes=[1, 32], opt_shapes={"x": (32, 8, 8)})
        inputs = [("x", F, (-1, -1, 8)), ("h0", F, (1, -1, 16)), ("c0", F, (1, -1, 16))]
        outputs = [("logits", F, (-1, 10)), ("hN", F, (1, -1, 16)), ("cN", F, (1, -1, 16))]
        data = tmp / "lstm-data"
        data.mkdir()
        for i in range(40):  # one sample per file; the state without its batch axis
            np.savez(data / f"{i:03d}.npz", x=rng.random((8, 8), np.float32), h0=np.zeros((1, 16), np.float32),
                     c0=np.zeros((1, 16), np.float32))
        engine = tmp / "lstm.engine"
        engine.write_bytes(b"engine")
        report = tmp / "eval.json"
        runs = [["eval", lstm, engine, "--data", data, "-q", "--json", report],
                ["bench", engine, "--batch-sizes", "1,8", "--shape", "x:1x8x8", "--no-files", "-q", "--iterations",
                 "1", "--warmup", "0"],
                ["bench", engine, "--data", data, "--batch-sizes", "1,8", "--no-files", "-q", "--iterations", "1",
                 "--warmup", "0"]]
        for argv in runs:
            world = _ranked(_computing_world(trt, inputs, outputs, lstm_compute, profiles=profile),
                            {"x": 3, "h0": 3, "c0": 3})
            with _engine_installed(trt, world):
                code, out, err = _cli(argv)
            assert code == 0, (argv[0], err[-600:])
            assert not refused, (argv[0], refused[:2])
            _assert_clean(world)
            shapes = dict(world.input_shapes[:3])
            batch = shapes["x"][0]
            assert shapes["h0"] == shapes["c0"] == (1, batch, 16), (argv[0], world.input_shapes[:6])
            if argv[0] == "bench":
                assert "outside the engine's profile" not in out, out
                assert [s for n, s in world.input_shapes if n == "h0"][-1] == (1, 8, 16), world.input_shapes
        assert json.loads(report.read_text())["samples"] == 40

        # the If model: x_raw [batch, 64] and a scalar `mode` (8.6's parser makes INT64 INT32)
        branch = models / "branch.onnx"
        session_b = create_session(str(branch))
        modes = []

        def branch_compute(feed):
            modes.append(int(np.asarray(feed["mode"]).reshape(-1)[0]))
            return {"logits": session_b.run(None, {"x_raw": feed["x_raw"],
                                                   "mode": np.asarray(feed["mode"], np.int64)})[0]}

        mode_type = trt.DataType.INT32 if major < 10 else trt.DataType.INT64
        profile = profile_shapes(input_specs(load_onnx(branch)), batch_sizes=[1, 32])
        data = tmp / "branch-data"
        data.mkdir()
        for i in range(40):
            np.savez(data / f"{i:03d}.npz", x_raw=rng.random(64).astype(np.float32), mode=np.array(1))
        engine = tmp / "branch.engine"
        engine.write_bytes(b"engine")

        def branch_world():
            world = _ranked(_computing_world(trt, [("x_raw", F, (-1, 64)), ("mode", mode_type, ())],
                                             [("logits", F, (-1, 10))], branch_compute, profiles=profile),
                            {"x_raw": 2, "mode": 0})
            # the output shape from the last x_raw shape set (no compute: `modes` records executions only)
            world.script["IExecutionContext.get_tensor_shape"] = lambda self, n: (
                [s for name, s in world.input_shapes if name == "x_raw"][-1][0], 10)
            return world

        for argv in (["eval", branch, engine, "--data", data, "-q"],
                     ["bench", engine, "--data", data, "--batch-sizes", "4", "--no-files", "-q", "--iterations", "1",
                      "--warmup", "0"]):
            modes.clear()
            world = branch_world()
            with _engine_installed(trt, world):
                code, out, err = _cli(argv)
            assert code == 0, (argv[0], err[-600:])
            _assert_clean(world)
            assert {s for n, s in world.input_shapes if n == "mode"} == {()}, world.input_shapes
            assert modes and set(modes) == {1}, (argv[0], modes)
        world = branch_world()
        with _engine_installed(trt, world):
            engine_session = EngineSession(engine, model=branch)
            got = engine_session.run(None, {"x_raw": rng.random((4, 64), np.float32), "mode": np.array(1)})
            engine_session.runner._buffers.clear()
            modes.clear()
            code, out, err = _cli(["bench", engine, "--batch-sizes", "4", "--no-files", "--iterations", "1",
                                   "--warmup", "0"])
        assert got[0].shape == (4, 10), got[0].shape
        assert code == 1 and not modes, (code, modes)  # nothing timed with a made-up mode
        assert "'mode' is an integer configuration input" in " ".join(out.split()), out


def _reshape_by_input(path: Path) -> Path:
    """x [N, 8] reshaped by the int64 input `target` (a Reshape shape fed from outside: a shape tensor)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
                               helper.make_tensor_value_info("target", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


@check
def shape_tensor_inputs_get_value_ranges_and_host_memory(expected):
    """An input TensorRT treats as a shape tensor (ITensor.is_shape_tensor): `trtq build` sets the range of its
    values in the profile (IOptimizationProfile.set_shape_input, from --shape-values; without them one line
    naming the option), and `trtq bench --data` hands its values to TensorRT in host memory before the output
    shapes are asked for; random data never invents them."""
    import ctypes

    trt, major = context()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = _reshape_by_input(tmp / "m.onnx")

        def shape_world():
            world = _world(trt, model)
            world.script["ITensor.is_shape_tensor"] = lambda self: world.sets[(id(self), "name")] == "target"
            return world

        world = shape_world()
        with _installed(trt, world):
            code, _, err = _cli(["build", model, "--batch-sizes", "1,4", "-o", tmp / "m.engine"])
        _one_line(code, err, "'target' as a shape tensor", "--shape-values target:")
        world = shape_world()
        with _installed(trt, world):
            code, _, err = _cli(["build", model, "--batch-sizes", "1,4", "--shape-values", "target:1,8/2,16/4,16",
                                 "-o", tmp / "m.engine"])
        assert code == 0, err[-600:]
        _assert_clean(world)
        values = [(a[0], tuple(a[1]), tuple(a[2]), tuple(a[3])) for a in _calls(world, "IOptimizationProfile",
                                                                               "set_shape_input")]
        assert values == [("target", (1, 8), (2, 16), (4, 16))], values
        report = json.loads((tmp / "m.engine.json").read_text())
        assert report["shape_values"] == {"target": {"min": [1, 8], "opt": [2, 16], "max": [4, 16]}}, report

        # the engine: x on the device, target in host memory (TensorLocation.HOST, is_shape_inference_io)
        target_type = trt.DataType.INT32 if major < 10 else trt.DataType.INT64
        target_dtype = np.dtype(trt.nptype(target_type))
        host_addresses, seen = {}, []

        def host_values(name="target"):
            return np.ctypeslib.as_array((ctypes.c_byte * (2 * target_dtype.itemsize)).from_address(
                host_addresses[name])).view(target_dtype).copy()

        def compute(feed):
            seen.append(tuple(int(v) for v in host_values()))
            return {"y": feed["x"].reshape(tuple(host_values()))}

        def engine_world():
            world = _computing_world(trt, [("x", trt.DataType.FLOAT, (-1, 8))], [("y", trt.DataType.FLOAT, (-1, -1))],
                                     compute, profiles={"x": ((1, 8), (4, 8), (8, 8))})
            world.script["ICudaEngine.get_tensor_shape"] = lambda self, n: {"x": (-1, 8), "target": (2,),
                                                                            "y": (-1, -1)}[n]
            names = ["x", "target", "y"]
            modes = {"x": trt.TensorIOMode.INPUT, "target": trt.TensorIOMode.INPUT, "y": trt.TensorIOMode.OUTPUT}
            world.script.update({
                "ICudaEngine.num_io_tensors": 3,
                "ICudaEngine.get_tensor_name": lambda self, i: names[i],
                "ICudaEngine.get_tensor_mode": lambda self, n: modes[n],
                "ICudaEngine.get_tensor_dtype": lambda self, n: target_type if n == "target" else trt.DataType.FLOAT,
                "ICudaEngine.get_tensor_location": lambda self, n: trt.TensorLocation.HOST if n == "target" else
                trt.TensorLocation.DEVICE,
                "ICudaEngine.is_shape_inference_io": lambda self, n: n == "target",
                # TensorRT sizes y from the values it reads on the host: they must be set before this is asked
                "IExecutionContext.get_tensor_shape": lambda self, n: tuple(int(v) for v in host_values()),
            })
            plain_address = world.script["IExecutionContext.set_tensor_address"]

            def set_address(self, name, pointer):
                if name == "target":
                    host_addresses[name] = pointer
                    return None
                return plain_address(self, name, pointer)

            world.script["IExecutionContext.set_tensor_address"] = set_address
            plain_execute = world.script["IExecutionContext.execute_async_v3"]
            world.script["IExecutionContext.execute_async_v3"] = lambda self, stream: plain_execute(self, stream)
            return world

        data = tmp / "data"
        data.mkdir()
        for i in range(4):
            np.savez(data / f"{i}.npz", x=np.arange(8, dtype=np.float32) + i, target=np.array([2, 16]))
        engine = tmp / "shape.engine"
        engine.write_bytes(b"engine")
        world = engine_world()
        with _engine_installed(trt, world):
            code, out, err = _cli(["bench", engine, "--data", data, "--batch-sizes", "4", "--no-files", "-q",
                                   "--iterations", "1", "--warmup", "0"])
        assert code == 0, err[-600:]
        _assert_clean(world)
        assert seen and set(seen) == {(2, 16)}, seen
        assert "target" not in [a[0] for a in _calls(world, "IExecutionContext", "set_input_shape")
                                if tuple(a[1]) != (2,)], "the shape tensor's own shape is its [2]"
        seen.clear()
        world = engine_world()
        with _engine_installed(trt, world):
            code, out, err = _cli(["bench", engine, "--batch-sizes", "4", "--no-files", "--iterations", "1",
                                   "--warmup", "0"])
        assert code == 1 and not seen and "'target'" in out, (code, out[-400:], err[-400:])


@check
def streamed_engine_with_its_state_fed_back(expected):
    """`trtq eval lstm.onnx lstm.engine --feedback hN=h0 --feedback cN=c0` on sequences: the engine itself is
    streamed one row per call with its own state fed back (h0/c0 [1, 1, 16] each step), as the ONNX candidate is."""
    import os

    from trtq.ort import create_session

    trt, _ = context()
    models = Path(os.environ["TRTQ_CONTRACT_MODELS"])
    lstm = models / "lstm.onnx"
    session = create_session(str(lstm))
    steps = []

    def compute(feed):
        steps.append(feed["x"].shape)
        return dict(zip(["logits", "hN", "cN"], session.run(None, feed)))

    F = trt.DataType.FLOAT
    world = _computing_world(trt, [("x", F, (-1, -1, 8)), ("h0", F, (1, -1, 16)), ("c0", F, (1, -1, 16))],
                             [("logits", F, (-1, 10)), ("hN", F, (1, -1, 16)), ("cN", F, (1, -1, 16))], compute,
                             profiles={"x": ((1, 1, 8), (1, 8, 8), (32, 8, 8)), "h0": ((1, 1, 16), (1, 1, 16),
                                       (1, 32, 16)), "c0": ((1, 1, 16), (1, 1, 16), (1, 32, 16))})
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sequences = tmp / "rows"
        sequences.mkdir()
        for i in range(4):  # one digit-like sequence each, one row ([rows=1, 8]) per call
            np.savez(sequences / f"d{i}.npz", x=rng.random((8, 1, 8), np.float32))
        engine = tmp / "lstm.engine"
        engine.write_bytes(b"engine")
        with _engine_installed(trt, world):
            code, out, err = _cli(["eval", lstm, engine, "--data", sequences, "--feedback", "hN=h0", "--feedback",
                                   "cN=c0", "--no-speed"])
        assert code == 0, err[-600:]
        _assert_clean(world)
        assert "4 sequences (32 steps)" in " ".join(out.split()), out
        executed = [shape for shape in steps if shape[0] == 1]
        assert len(executed) >= 32 and set(executed) == {(1, 1, 8)}, steps[:6]
        assert {s for n, s in world.input_shapes if n == "h0"} == {(1, 1, 16)}, world.input_shapes[:6]


@check
def bench_profile_spans_each_inputs_batch_axis(expected):
    """`trtq bench lstm.onnx --backend trt --shape ...`: the engine it builds has each input's batch sizes on that
    input's own batch axis (h0/c0 on axis 1), the --shape dims elsewhere."""
    import os
    import shutil

    trt, _ = context()
    models = Path(os.environ["TRTQ_CONTRACT_MODELS"])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        shutil.copy(models / "lstm.onnx", tmp / "m.onnx")
        world = _world(trt, tmp / "m.onnx")
        with _installed(trt, world):
            _cli(["bench", tmp / "m.onnx", "--backend", "trt", "--precisions", "fp32", "--batch-sizes", "1,8",
                  "--shape", "x:1x8x8", "--shape", "h0:1x1x16", "--shape", "c0:1x1x16", "--no-files", "-q"])
        _assert_clean(world)
        shapes = {args[0]: tuple(tuple(d) for d in args[1:]) for args in _calls(world, "IOptimizationProfile",
                                                                                    "set_shape")}
        assert shapes["x"] == ((1, 8, 8), (8, 8, 8), (8, 8, 8)), shapes
        assert shapes["h0"] == shapes["c0"] == ((1, 1, 16), (1, 8, 16), (1, 8, 16)), shapes


@check
def calibrator_vtable_as_tensorrt_calls_it(expected):
    """The probe's technique on trtq's classes: names in TensorRT's order, cache length, NULL without cache."""
    import ctypes

    from backend_fakes import FakeDeviceMemory, batches
    from trt_signatures import vtable_function

    from trtq.cache import format_cache, parse_cache, trt_version_int

    trt, classes = _calibrators()
    running = trt_version_int(trt.__version__)
    memory = FakeDeviceMemory()
    data = batches(2, extra_short=True)
    cal = classes["entropy"](data, batch_size=4, trt_version=running, allocator=memory,
                             shapes={"a": (4, 2, 5), "b": (4, 3)})
    get_batch = vtable_function(trt, cal, "getBatch", ctypes.c_bool, ctypes.POINTER(ctypes.c_void_p),
                                ctypes.POINTER(ctypes.c_char_p), ctypes.c_int32)
    names = (ctypes.c_char_p * 2)(b"b", b"a")
    results = []
    for index in range(4):
        bindings = (ctypes.c_void_p * 2)(0, 0)
        ok = get_batch(bindings, names, 2)
        results.append(ok)
        if ok:
            np.testing.assert_array_equal(memory.read(bindings[0], np.float32, (4, 3)), data[index]["b"])
            np.testing.assert_array_equal(memory.read(bindings[1], np.float32, (4, 2, 5)), data[index]["a"])
    assert results == [True, True, False, False], results
    cal.raise_pending()
    cal.close()
    payload = format_cache({"input": 1.0, "conv: x [0]": 0.5}, running, "EntropyCalibration2")
    reader = classes["minmax"](None, batch_size=1, trt_version=running, cache=parse_cache(payload),
                               cache_verified=True, allocator=FakeDeviceMemory())
    assert vtable_function(trt, reader, "getAlgorithm", ctypes.c_int32)() == int(
        trt.CalibrationAlgoType.MINMAX_CALIBRATION)
    length = ctypes.c_size_t(0)
    pointer = vtable_function(trt, reader, "readCalibrationCache", ctypes.c_void_p,
                              ctypes.POINTER(ctypes.c_size_t))(ctypes.byref(length))
    import gc

    gc.collect()  # the binding must keep the returned bytes alive, not the Python caller
    got = parse_cache(ctypes.string_at(pointer, length.value))
    assert got.header == f"TRT-{running}-MinMaxCalibration" and got.scales == parse_cache(payload).scales
    none = classes["entropy"](batches(1), batch_size=4, trt_version=running, allocator=FakeDeviceMemory())
    length = ctypes.c_size_t(99)
    assert not vtable_function(trt, none, "readCalibrationCache", ctypes.c_void_p,
                               ctypes.POINTER(ctypes.c_size_t))(ctypes.byref(length))


def main(version: str) -> int:
    logging.basicConfig(level=logging.CRITICAL)
    result = {"version": version, "checks": {}, "api": []}
    try:
        trt, _ = context()
        result["api"] = api_surface(trt)
        result["module"] = trt.__name__
    except Exception as exc:  # reported as a failed import
        result["checks"]["import_through_trtq"] = f"fail: {type(exc).__name__}: {exc}"
        print(json.dumps(result))
        return 0
    for func in CHECKS:
        try:
            func(version)
            outcome = "ok"
        except Skip as exc:
            outcome = f"skip: {exc}"
        except BaseException as exc:  # noqa: BLE001 - every check reports, none stops the others
            outcome = f"fail: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
        result["checks"][func.__name__] = outcome
    result["unknown_types"] = sorted(UNKNOWN_TYPES)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
