"""Device memory, streams and events through cuda-python's runtime bindings.

``from cuda.bindings import runtime`` (cuda-python >= 12.6; ``from cuda import cudart``
on older releases) is imported on first use. Every runtime call goes through
:func:`check`, the one place CUDA errors become Python exceptions: a missing driver or
GPU is :class:`~trtq.errors.BackendUnavailable`, anything else :class:`CudaError`.

Pointers are plain ``int`` (what TensorRT's ``set_tensor_address`` and a calibrator's
``get_batch`` take). Host arrays are copied from/to their own memory; they must be
C-contiguous (copies are made where they are not).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

import numpy as np

from ..errors import BackendUnavailable, TrtqError

log = logging.getLogger(__name__)

#: cuda-python runtime names this module uses (checked against the bindings by the tests).
CUDART_API = (
    "cudaError_t", "cudaGetErrorName", "cudaGetErrorString", "cudaGetDeviceCount", "cudaGetDevice",
    "cudaGetDeviceProperties", "cudaMemGetInfo", "cudaRuntimeGetVersion", "cudaDriverGetVersion",
    "cudaMalloc", "cudaFree", "cudaMemcpy", "cudaMemcpyAsync", "cudaMemcpyKind",
    "cudaStreamCreate", "cudaStreamDestroy", "cudaStreamSynchronize",
    "cudaEventCreate", "cudaEventDestroy", "cudaEventRecord", "cudaEventSynchronize", "cudaEventElapsedTime",
)

#: Errors that mean "no usable GPU here" rather than a failed operation.
_UNAVAILABLE = ("cudaErrorNoDevice", "cudaErrorInsufficientDriver", "cudaErrorInitializationError",
                "cudaErrorSystemDriverMismatch", "cudaErrorCompatNotSupportedOnDevice", "cudaErrorStubLibrary")

_cudart = None


class CudaError(TrtqError):
    """A CUDA runtime call failed (out of memory, invalid pointer, a failed kernel...)."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def cudart():
    """The cuda-python runtime module; :class:`BackendUnavailable` when cuda-python is not installed."""
    global _cudart
    if _cudart is None:
        try:
            from cuda.bindings import runtime as module  # cuda-python >= 12.6
        except ImportError:
            try:
                from cuda import cudart as module  # older cuda-python
            except ImportError:
                raise BackendUnavailable(
                    "cuda-python is not installed; TensorRT builds and runs need it for device memory "
                    "(pip install 'cuda-python>=12' matching your CUDA major, or pip install 'trtq[gpu]')"
                ) from None
        _cudart = module
    return _cudart


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-python result ``(error, *values)``: raise on error, else return the value(s)."""
    rt = cudart()
    if isinstance(result, tuple):
        error, values = result[0], result[1:]
    else:
        error, values = result, ()
    if error != rt.cudaError_t.cudaSuccess:
        name = getattr(error, "name", str(error))
        text = rt.cudaGetErrorString(error)
        text = text[1].decode() if isinstance(text, tuple) and isinstance(text[1], bytes) else str(text)
        if name in _UNAVAILABLE:
            raise BackendUnavailable(f"no usable NVIDIA GPU: {what} failed with {name} ({text})")
        if name == "cudaErrorMemoryAllocation":
            raise CudaError(f"{what}: the GPU is out of memory ({text}); use smaller batch sizes or free GPU memory",
                            code=name)
        raise CudaError(f"{what} failed: {name} ({text})", code=name)
    if not values:
        return None
    return values[0] if len(values) == 1 else values


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: Tuple[int, int]
    total_memory: int

    @property
    def sm(self) -> str:
        return f"{self.compute_capability[0]}.{self.compute_capability[1]}"


def device_count() -> int:
    return int(check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount"))


def device_info(index: Optional[int] = None) -> DeviceInfo:
    """Name, compute capability and memory of GPU ``index`` (the current device by default)."""
    rt = cudart()
    if index is None:
        if device_count() < 1:
            raise BackendUnavailable("no NVIDIA GPU is visible (cudaGetDeviceCount is 0; check CUDA_VISIBLE_DEVICES)")
        index = int(check(rt.cudaGetDevice(), "cudaGetDevice"))
    props = check(rt.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = props.name
    name = name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
    return DeviceInfo(index, name.strip(), (int(props.major), int(props.minor)), int(props.totalGlobalMem))


def memory_info() -> Tuple[int, int]:
    """(free, total) device memory in bytes."""
    free, total = check(cudart().cudaMemGetInfo(), "cudaMemGetInfo")
    return int(free), int(total)


def versions() -> Tuple[int, int]:
    """(runtime, driver) CUDA versions as integers (12040 = 12.4)."""
    rt = cudart()
    return (int(check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
            int(check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")))


def _contiguous(array: np.ndarray) -> np.ndarray:
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


class Stream:
    """A CUDA stream; ``handle`` is the int TensorRT's ``execute_async_v3`` takes."""

    def __init__(self):
        self._stream = check(cudart().cudaStreamCreate(), "cudaStreamCreate")

    @property
    def handle(self) -> int:
        return int(self._stream)

    @property
    def raw(self):
        return self._stream

    def synchronize(self) -> None:
        check(cudart().cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

    def close(self) -> None:
        if self._stream is not None:
            check(cudart().cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Event:
    """A CUDA event for timing work on a stream."""

    def __init__(self):
        self._event = check(cudart().cudaEventCreate(), "cudaEventCreate")

    def record(self, stream: Optional[Stream] = None) -> None:
        check(cudart().cudaEventRecord(self._event, stream.raw if stream is not None else 0), "cudaEventRecord")

    def synchronize(self) -> None:
        check(cudart().cudaEventSynchronize(self._event), "cudaEventSynchronize")

    def elapsed_ms(self, start: "Event") -> float:
        """Milliseconds from ``start`` to this event (both recorded; this one synchronized)."""
        return float(check(cudart().cudaEventElapsedTime(start._event, self._event), "cudaEventElapsedTime"))

    def close(self) -> None:
        if self._event is not None:
            check(cudart().cudaEventDestroy(self._event), "cudaEventDestroy")
            self._event = None

    def __enter__(self) -> "Event":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class DeviceBuffer:
    """``nbytes`` of device memory at ``ptr``; freed by :meth:`free` or leaving a ``with`` block."""

    def __init__(self, nbytes: int):
        if nbytes < 0:
            raise ValueError(f"cannot allocate {nbytes} bytes")
        self.nbytes = int(nbytes)
        self._pending_host: Optional[np.ndarray] = None
        # cudaMalloc(0) is legal but may return a null pointer; keep one byte so every buffer has an address.
        self.ptr = int(check(cudart().cudaMalloc(max(self.nbytes, 1)), f"cudaMalloc({self.nbytes} bytes)"))

    def copy_from_host(self, array: np.ndarray, stream: Optional[Stream] = None) -> "DeviceBuffer":
        """Copy ``array`` into the buffer (asynchronously on ``stream`` when given)."""
        host = _contiguous(np.asarray(array))
        if host.nbytes > self.nbytes:
            raise ValueError(f"array of {host.nbytes} bytes does not fit a {self.nbytes}-byte device buffer")
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        if stream is None:
            check(rt.cudaMemcpy(self.ptr, host.ctypes.data, host.nbytes, kind), "cudaMemcpy host->device")
        else:
            check(rt.cudaMemcpyAsync(self.ptr, host.ctypes.data, host.nbytes, kind, stream.raw),
                  "cudaMemcpyAsync host->device")
            # the host array must outlive the copy: keep it until the next copy into this buffer
            self._pending_host = host
        return self

    def copy_to_host(self, out: np.ndarray, stream: Optional[Stream] = None) -> np.ndarray:
        """Copy the buffer's first ``out.nbytes`` into ``out`` (C-contiguous); synchronizes ``stream``."""
        if not out.flags.c_contiguous:
            raise ValueError("copy_to_host needs a C-contiguous output array")
        if out.nbytes > self.nbytes:
            raise ValueError(f"output of {out.nbytes} bytes is larger than the {self.nbytes}-byte device buffer")
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if stream is None:
            check(rt.cudaMemcpy(out.ctypes.data, self.ptr, out.nbytes, kind), "cudaMemcpy device->host")
        else:
            check(rt.cudaMemcpyAsync(out.ctypes.data, self.ptr, out.nbytes, kind, stream.raw),
                  "cudaMemcpyAsync device->host")
            stream.synchronize()
        return out

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            check(cudart().cudaFree(ptr), "cudaFree")
        self._pending_host = None

    def __enter__(self) -> "DeviceBuffer":
        return self

    def __exit__(self, *exc) -> None:
        self.free()

    def __repr__(self) -> str:
        return f"DeviceBuffer(ptr=0x{self.ptr:x}, nbytes={self.nbytes})"


def allocate(nbytes: int) -> DeviceBuffer:
    """The default allocator of calibrators and engine runners (tests inject a fake one)."""
    return DeviceBuffer(nbytes)


def free_all(buffers: List[DeviceBuffer]) -> None:
    """Free every buffer, raising the first error only after trying them all."""
    first: Optional[BaseException] = None
    for buffer in buffers:
        try:
            buffer.free()
        except Exception as exc:  # keep freeing the others
            first = first or exc
    if first is not None:
        raise first


__all__ = ["CUDART_API", "CudaError", "cudart", "check", "DeviceInfo", "device_count", "device_info", "memory_info",
           "versions", "Stream", "Event", "DeviceBuffer", "allocate", "free_all"]
