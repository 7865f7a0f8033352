"""The pycuda CUDA layer of trtq.backend.cuda.

- Always: every pycuda name the layer uses is in the API recorded from pycuda's own sources
  (src/wrapper/wrap_cudadrv.cpp and pycuda/driver.py of inducer/pycuda at 19bed90, release 2026.1).
- With a pycuda built from its sdist (conftest.py; ``TRTQ_PYCUDA_BUILD=1`` builds it once, against
  the CUDA headers and the host-memory libcuda of cuda_fake.c): the layer for real, in a subprocess.
"""

from __future__ import annotations

import pytest

from trtq.backend import cuda

#: pycuda.driver names defined in pycuda's sources (py::def / class_ / DEF_SIMPLE_METHOD / add_property),
#: the subset a CUDA memory layer can reach; recorded from inducer/pycuda 19bed90.
RECORDED_PYCUDA_API = {
    "init", "Device", "Device.count", "Device.name", "Device.compute_capability", "Device.total_memory",
    "Device.get_attribute", "Device.make_context", "Device.retain_primary_context", "Context", "Context.push",
    "Context.pop", "Context.detach", "Context.get_current", "Context.synchronize", "Context.get_device",
    "mem_get_info", "get_version", "get_driver_version", "mem_alloc", "DeviceAllocation", "DeviceAllocation.free",
    "memcpy_htod", "memcpy_htod_async", "memcpy_dtoh", "memcpy_dtoh_async", "memcpy_dtod", "pagelocked_empty",
    "Stream", "Stream.synchronize", "Stream.is_done", "Stream.handle", "Event", "Event.record",
    "Event.synchronize", "Event.query", "Event.time_since", "Event.time_till", "Error", "MemoryError",
    "LogicError", "LaunchError", "RuntimeError",
}


def test_pycuda_names_are_in_the_recorded_api():
    assert set(cuda.PYCUDA_API) <= RECORDED_PYCUDA_API, sorted(set(cuda.PYCUDA_API) - RECORDED_PYCUDA_API)


def test_unknown_layer_is_refused():
    from trtq.errors import TrtqError

    with pytest.raises(TrtqError, match="choose one of cuda-python, pycuda"):
        cuda.select_layer("cupy")


@pytest.mark.parametrize("check", ["declared_pycuda_names_exist", "picked_when_cuda_python_is_missing",
                                   "device_queries_and_round_trip", "out_of_memory_is_a_clear_error",
                                   "calibrator_allocates_through_pycuda", "no_device_is_backend_unavailable"])
def test_pycuda_layer_for_real(pycuda_contract, check):
    assert pycuda_contract.get(check) == "ok", pycuda_contract.get(check, "the check did not run")
