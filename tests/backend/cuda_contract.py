"""trtq.backend.cuda against the real cuda-python runtime bindings, run in a subprocess.

On a machine without an NVIDIA driver every runtime call fails with
cudaErrorInsufficientDriver / cudaErrorNoDevice: that must surface as one clear
BackendUnavailable line. Prints one JSON object {check: outcome}.
"""

from __future__ import annotations

import json
import sys
import traceback

CHECKS = []


def check(func):
    CHECKS.append(func)
    return func


@check
def declared_runtime_names_exist():
    from trtq.backend import cuda

    runtime = cuda.cudart()
    assert runtime.__name__ == "cuda.bindings.runtime", runtime.__name__
    missing = [name for name in cuda.CUDART_API if not hasattr(runtime, name)]
    assert not missing, missing
    assert hasattr(runtime.cudaMemcpyKind, "cudaMemcpyHostToDevice")
    assert hasattr(runtime.cudaMemcpyKind, "cudaMemcpyDeviceToHost")
    assert all(hasattr(runtime.cudaError_t, name) for name in ("cudaSuccess", "cudaErrorMemoryAllocation"))


@check
def check_unpacks_results_and_maps_errors():
    from trtq.backend import cuda
    from trtq.errors import BackendUnavailable

    rt = cuda.cudart()
    ok = rt.cudaError_t.cudaSuccess
    assert cuda.check((ok,), "x") is None
    assert cuda.check((ok, 5), "x") == 5
    assert cuda.check((ok, 1, 2), "x") == (1, 2)
    for name, kind, text in (("cudaErrorMemoryAllocation", cuda.CudaError, "out of memory"),
                             ("cudaErrorInvalidValue", cuda.CudaError, "cudaErrorInvalidValue"),
                             ("cudaErrorNoDevice", BackendUnavailable, "no usable NVIDIA GPU")):
        try:
            cuda.check((getattr(rt.cudaError_t, name), None), "cudaMalloc")
        except kind as exc:
            assert text in str(exc) and "\n" not in str(exc), str(exc)
        else:
            raise AssertionError(f"{name} was not raised")


@check
def no_driver_is_backend_unavailable():
    from trtq.backend import cuda
    from trtq.errors import BackendUnavailable

    try:
        cuda.device_info()
    except BackendUnavailable as exc:
        assert "\n" not in str(exc), str(exc)
    else:
        return  # a real GPU is here: nothing to check about its absence
    for make in (lambda: cuda.DeviceBuffer(16), cuda.Stream, cuda.Event):
        try:
            make()
        except BackendUnavailable:
            pass
        else:
            raise AssertionError(f"{make} worked without a driver")


def main() -> int:
    outcomes = {}
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
