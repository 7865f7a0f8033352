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
    problems = {path: [n for n in PATH_API[path] if not resolve(trt, n)] for path in served}
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
    import trtq.backend.calibrator as module
    from backend_fakes import FakeDeviceMemory, batches

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
    from trtq.backend.build import BuildOptions, build_engine
    from trtq.errors import BackendUnavailable

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
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
