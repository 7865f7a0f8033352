"""trtq.backend.cuda's pycuda layer against the real pycuda (built from its sdist) and a host-memory
libcuda (cuda_fake.c), run in a subprocess. Prints one JSON object {check: outcome}."""

from __future__ import annotations

import json
import os
import sys
import traceback

sys.setdlopenflags(os.RTLD_LAZY | os.RTLD_GLOBAL)  # the fake libcuda defines only what trtq reaches

import numpy as np  # noqa: E402

CHECKS = []


def check(func):
    CHECKS.append(func)
    return func


@check
def declared_pycuda_names_exist():
    import pycuda.driver as driver
    from trtq.backend import cuda

    missing = []
    for name in cuda.PYCUDA_API:
        obj = driver
        for part in name.split("."):
            if not hasattr(obj, part):
                missing.append(name)
                break
            obj = getattr(obj, part)
    assert not missing, missing


@check
def picked_when_cuda_python_is_missing():
    from trtq.backend import cuda

    cuda.select_layer(None)
    assert cuda.layer_name() == "pycuda", cuda.layer_name()


@check
def device_queries_and_round_trip():
    from trtq.backend import cuda

    cuda.select_layer("pycuda")
    info = cuda.device_info()
    assert (info.name, info.compute_capability, info.total_memory) == ("trtq fake GPU", (8, 7), 8 << 30), info
    runtime, driver = cuda.versions()
    assert driver == 12060 and runtime >= 11000, (runtime, driver)
    host = np.arange(4096, dtype=np.float32)
    with cuda.Stream() as stream, cuda.DeviceBuffer(host.nbytes) as buffer, cuda.Event() as start, \
            cuda.Event() as end:
        assert isinstance(stream.handle, int) and stream.handle != 0
        free_before = cuda.memory_info()[0]
        start.record(stream)
        buffer.copy_from_host(host, stream)
        end.record(stream)
        back = buffer.copy_to_host(np.empty_like(host), stream)
        end.synchronize()
        assert end.elapsed_ms(start) == 0.25
        assert free_before == (8 << 30) - host.nbytes
        synchronous = cuda.DeviceBuffer(16).copy_from_host(np.ones(4, np.float32))
        assert (synchronous.copy_to_host(np.empty(4, np.float32)) == 1).all()
        synchronous.free()
    np.testing.assert_array_equal(back, host)
    assert cuda.memory_info()[0] == 8 << 30, "every buffer was freed"


@check
def out_of_memory_is_a_clear_error():
    from trtq.backend import cuda

    cuda.select_layer("pycuda")
    try:
        cuda.DeviceBuffer(1 << 50)
    except cuda.CudaError as exc:
        assert "out of memory" in str(exc) and "\n" not in str(exc), str(exc)
    else:
        raise AssertionError("a 1 PiB allocation succeeded")


@check
def calibrator_allocates_through_pycuda():
    from trtq.backend import cuda
    from trtq.backend.calibrator import CalibratorCore

    cuda.select_layer("pycuda")
    data = [{"x": np.full((2, 3), 7, np.float16)}]
    calibrator = CalibratorCore(data, batch_size=2, trt_version=100300)
    (pointer,) = calibrator.get_batch(["x"])
    calibrator.raise_pending()
    back = np.empty((2, 3), np.float32)
    import pycuda.driver as driver

    driver.memcpy_dtoh(back, pointer)
    assert (back == 7).all(), back
    calibrator.close()


def main() -> int:
    outcomes = {}
    if os.environ.get("TRTQ_FAKE_CUDA_NODEVICE"):
        from trtq.backend import cuda
        from trtq.errors import BackendUnavailable

        try:
            cuda.select_layer("pycuda")
            cuda.device_info()
            outcomes["no_device_is_backend_unavailable"] = "fail: device_info worked without a device"
        except BackendUnavailable as exc:
            ok = "no CUDA-capable device" in str(exc) and "\n" not in str(exc)
            outcomes["no_device_is_backend_unavailable"] = "ok" if ok else f"fail: {exc}"
        print(json.dumps(outcomes))
        return 0
    for func in CHECKS:
        try:
            func()
            outcomes[func.__name__] = "ok"
        except BaseException as exc:  # noqa: BLE001
            outcomes[func.__name__] = f"fail: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
    print(json.dumps(outcomes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
