"""Device memory, streams and events: one small interface over cuda-python or pycuda.

Two CUDA layers sit behind :class:`DeviceBuffer`, :class:`Stream`, :class:`Event` and the
device queries; which one is picked once per process:

- ``cuda-python`` (``from cuda.bindings import runtime``, cuda-python >= 12.6; ``from cuda
  import cudart`` on older releases): the CUDA runtime API. Every call goes through
  :func:`check`, the one place its error codes become Python exceptions.
- ``pycuda`` (``pycuda.driver``): the CUDA driver API, common on Jetson images. trtq
  retains the device's *primary* context (the one the CUDA runtime, and so TensorRT, uses)
  and makes it current, instead of ``pycuda.autoinit``'s private context.

:func:`select_layer` (``--cuda pycuda|cuda-python``, or ``TRTQ_CUDA``) picks one; by default
cuda-python when importable, else pycuda. A missing driver or GPU is
:class:`~trtq.errors.BackendUnavailable`, anything else :class:`CudaError`.

Pointers are plain ``int`` (what TensorRT's ``set_tensor_address`` and a calibrator's
``get_batch`` take). Host arrays are copied from/to their own memory; they must be
C-contiguous (copies are made where they are not).
"""

from __future__ import annotations

import logging
import os
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

#: pycuda.driver names the pycuda layer uses (checked against pycuda's sources by the tests).
PYCUDA_API = (
    "init", "Device", "Device.count", "Device.name", "Device.compute_capability", "Device.total_memory",
    "Device.retain_primary_context", "Context.push", "Context.pop", "Context.get_current", "mem_get_info",
    "get_version", "get_driver_version", "mem_alloc", "DeviceAllocation.free", "memcpy_htod", "memcpy_htod_async",
    "memcpy_dtoh", "memcpy_dtoh_async", "Stream", "Stream.synchronize", "Stream.handle", "Event", "Event.record",
    "Event.synchronize", "Event.time_since", "Error", "MemoryError",
)
#: The CUDA layers, in the order tried when none is chosen.
LAYERS = ("cuda-python", "pycuda")
#: Environment variable that picks a layer (what ``--cuda`` sets).
LAYER_ENV = "TRTQ_CUDA"

#: Errors that mean "no usable GPU here" rather than a failed operation.
_UNAVAILABLE = ("cudaErrorNoDevice", "cudaErrorInsufficientDriver", "cudaErrorInitializationError",
                "cudaErrorSystemDriverMismatch", "cudaErrorCompatNotSupportedOnDevice", "cudaErrorStubLibrary")

_cudart = None
_layer = None          # the layer object in use (picked on first use)
_chosen: Optional[str] = None


class CudaError(TrtqError):
    """A CUDA runtime call failed (out of memory, invalid pointer, a failed kernel...)."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def select_layer(name: Optional[str]) -> None:
    """Use ``name`` ("cuda-python" or "pycuda"; ``None``: automatic) from now on in this process."""
    global _chosen, _layer
    if name is not None and name not in LAYERS:
        raise TrtqError(f"--cuda {name}: choose one of {', '.join(LAYERS)}")
    if name != _chosen:
        _chosen, _layer = name, None


def layer_name() -> str:
    """The CUDA layer in use ("cuda-python" or "pycuda"), picking it if needed."""
    return _get_layer().name


def _get_layer():
    global _layer
    if _layer is None:
        wanted = _chosen or os.environ.get(LAYER_ENV) or None
        if wanted is not None and wanted not in LAYERS:
            raise TrtqError(f"{LAYER_ENV}={wanted}: choose one of {', '.join(LAYERS)}")
        if wanted == "pycuda":
            _layer = _PyCudaLayer()
        elif wanted == "cuda-python":
            cudart()
            _layer = _CudaPythonLayer()
        else:
            try:
                cudart()
                _layer = _CudaPythonLayer()
            except BackendUnavailable as first:
                try:
                    _layer = _PyCudaLayer()
                except BackendUnavailable as second:
                    raise BackendUnavailable(f"no CUDA Python layer: {first}; and {second}") from None
    return _layer


class _Guarded:
    """cuda-python's runtime module with its calls' RuntimeErrors (old cuda-python without a driver:
    "Failed to dlopen libcuda.so.1") turned into :class:`BackendUnavailable`."""

    def __init__(self, module):
        self._module = module
        self.__name__ = module.__name__

    def __getattr__(self, name: str):
        value = getattr(self._module, name)
        if not callable(value) or isinstance(value, type):
            return value

        def call(*args, **kwargs):
            try:
                return value(*args, **kwargs)
            except RuntimeError as exc:
                raise BackendUnavailable(f"no usable NVIDIA GPU: {name} failed ({str(exc).strip()})") from None

        return call


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
                    "cuda-python is not installed; TensorRT builds and runs need it (or pycuda) for device memory "
                    "(pip install 'trtq[gpu-cu12]' or 'trtq[gpu-cu13]' matching your driver; see docs/tensorrt.md)"
                ) from None
        _cudart = _Guarded(module)
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
    return int(_get_layer().device_count())


def device_info(index: Optional[int] = None) -> DeviceInfo:
    """Name, compute capability and memory of GPU ``index`` (the current device by default)."""
    layer = _get_layer()
    if index is None:
        if device_count() < 1:
            raise BackendUnavailable("no NVIDIA GPU is visible (no CUDA device; check CUDA_VISIBLE_DEVICES)")
        index = layer.current_device()
    name, cc, memory = layer.device_info(index)
    return DeviceInfo(index, name.strip(), (int(cc[0]), int(cc[1])), int(memory))


def memory_info() -> Tuple[int, int]:
    """(free, total) device memory in bytes."""
    free, total = _get_layer().memory_info()
    return int(free), int(total)


def versions() -> Tuple[int, int]:
    """(runtime, driver) CUDA versions as integers (12040 = 12.4).

    "runtime" is the CUDA the layer itself carries (cuda-python links its own static cudart;
    pycuda reports the CUDA it was compiled against), not necessarily the CUDA TensorRT uses.
    """
    return _get_layer().versions()


def _contiguous(array: np.ndarray) -> np.ndarray:
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)


class _CudaPythonLayer:
    """The CUDA runtime API through cuda-python (every call through :func:`check`)."""

    name = "cuda-python"

    def device_count(self) -> int:
        return int(check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount"))

    def current_device(self) -> int:
        return int(check(cudart().cudaGetDevice(), "cudaGetDevice"))

    def device_info(self, index: int):
        props = check(cudart().cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
        name = props.name
        name = name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, (bytes, bytearray)) else str(name)
        return name, (props.major, props.minor), props.totalGlobalMem

    def memory_info(self):
        return check(cudart().cudaMemGetInfo(), "cudaMemGetInfo")

    def versions(self):
        rt = cudart()
        return (int(check(rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")),
                int(check(rt.cudaDriverGetVersion(), "cudaDriverGetVersion")))

    def malloc(self, nbytes: int) -> int:
        return int(check(cudart().cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes)"))

    def free(self, ptr: int) -> None:
        check(cudart().cudaFree(ptr), "cudaFree")

    def htod(self, ptr: int, host: np.ndarray, stream) -> None:
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        if stream is None:
            check(rt.cudaMemcpy(ptr, host.ctypes.data, host.nbytes, kind), "cudaMemcpy host->device")
        else:
            check(rt.cudaMemcpyAsync(ptr, host.ctypes.data, host.nbytes, kind, stream), "cudaMemcpyAsync host->device")

    def dtoh(self, out: np.ndarray, ptr: int, stream) -> None:
        rt = cudart()
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        if stream is None:
            check(rt.cudaMemcpy(out.ctypes.data, ptr, out.nbytes, kind), "cudaMemcpy device->host")
        else:
            check(rt.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, kind, stream), "cudaMemcpyAsync device->host")

    def stream_create(self):
        return check(cudart().cudaStreamCreate(), "cudaStreamCreate")

    def stream_handle(self, stream) -> int:
        return int(stream)

    def stream_sync(self, stream) -> None:
        check(cudart().cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream) -> None:
        check(cudart().cudaStreamDestroy(stream), "cudaStreamDestroy")

    def event_create(self):
        return check(cudart().cudaEventCreate(), "cudaEventCreate")

    def event_record(self, event, stream) -> None:
        check(cudart().cudaEventRecord(event, stream if stream is not None else 0), "cudaEventRecord")

    def event_sync(self, event) -> None:
        check(cudart().cudaEventSynchronize(event), "cudaEventSynchronize")

    def event_elapsed(self, start, end) -> float:
        return float(check(cudart().cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def event_destroy(self, event) -> None:
        check(cudart().cudaEventDestroy(event), "cudaEventDestroy")


class _PyCudaLayer:
    """The CUDA driver API through pycuda, in the device's primary context (shared with TensorRT)."""

    name = "pycuda"

    def __init__(self):
        try:
            import pycuda.driver as driver
        except ImportError as exc:
            missing = isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith("pycuda")
            raise BackendUnavailable(
                "pycuda is not installed (pip install pycuda, or use cuda-python: see docs/tensorrt.md)" if missing
                else f"pycuda cannot load ({str(exc).strip()}); it needs the NVIDIA driver's libcuda.so.1") from None
        except OSError as exc:
            raise BackendUnavailable(f"pycuda cannot load ({exc}); it needs the NVIDIA driver's libcuda.so.1") from None
        self.driver = driver
        self._context = None
        self._allocations: dict = {}  # pointer -> DeviceAllocation, freed explicitly, never by the collector
        self._guard(driver.init, "cuInit")

    # pycuda raises pycuda.driver.Error subclasses (MemoryError for an exhausted GPU)
    def _guard(self, func, what: str, *args):
        driver = self.driver
        try:
            return func(*args)
        except driver.MemoryError as exc:
            raise CudaError(f"{what}: the GPU is out of memory ({exc}); use smaller batch sizes or free GPU memory",
                            code="CUDA_ERROR_OUT_OF_MEMORY") from None
        except driver.Error as exc:
            text = " ".join(str(exc).split())
            if any(key in text.lower() for key in ("no cuda-capable device", "insufficient", "cuinit failed",
                                                   "not initialized", "stub library", "system has unsupported")):
                raise BackendUnavailable(f"no usable NVIDIA GPU: {what} failed ({text})") from None
            raise CudaError(f"{what} failed: {text}", code=type(exc).__name__) from None

    def _current(self):
        """Make device 0's primary context current once (what the CUDA runtime and TensorRT use)."""
        if self._context is None:
            driver = self.driver
            if self._guard(driver.Device.count, "cuDeviceGetCount") < 1:
                raise BackendUnavailable("no NVIDIA GPU is visible (no CUDA device; check CUDA_VISIBLE_DEVICES)")
            device = self._guard(driver.Device, "cuDeviceGet", 0)
            context = self._guard(device.retain_primary_context, "cuDevicePrimaryCtxRetain")
            self._guard(context.push, "cuCtxPushCurrent")
            self._context = context
            import atexit

            atexit.register(self._release)  # pycuda aborts the process if a pushed context is left at exit
        return self._context

    def _release(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            for allocation in list(self._allocations.values()):
                allocation.free()
            self._allocations.clear()
            self.driver.Context.pop()
            context.detach()

    def device_count(self) -> int:
        return int(self._guard(self.driver.Device.count, "cuDeviceGetCount"))

    def current_device(self) -> int:
        self._current()
        return 0

    def device_info(self, index: int):
        device = self._guard(self.driver.Device, "cuDeviceGet", index)
        return (str(self._guard(device.name, "cuDeviceGetName")),
                tuple(self._guard(device.compute_capability, "cuDeviceGetAttribute")),
                int(self._guard(device.total_memory, "cuDeviceTotalMem")))

    def memory_info(self):
        self._current()
        return self._guard(self.driver.mem_get_info, "cuMemGetInfo")

    def versions(self):
        major, minor, _ = self.driver.get_version()  # the CUDA pycuda was compiled against
        return major * 1000 + minor * 10, int(self._guard(self.driver.get_driver_version, "cuDriverGetVersion"))

    def malloc(self, nbytes: int):
        self._current()
        allocation = self._guard(self.driver.mem_alloc, f"cuMemAlloc({nbytes} bytes)", nbytes)
        self._allocations[int(allocation)] = allocation
        return int(allocation)

    def free(self, ptr: int) -> None:
        allocation = self._allocations.pop(int(ptr), None)
        if allocation is not None:
            self._guard(allocation.free, "cuMemFree")

    def htod(self, ptr: int, host: np.ndarray, stream) -> None:
        if stream is None:
            self._guard(self.driver.memcpy_htod, "cuMemcpyHtoD", ptr, host)
        else:
            self._guard(self.driver.memcpy_htod_async, "cuMemcpyHtoDAsync", ptr, host, stream)

    def dtoh(self, out: np.ndarray, ptr: int, stream) -> None:
        if stream is None:
            self._guard(self.driver.memcpy_dtoh, "cuMemcpyDtoH", out, ptr)
        else:
            self._guard(self.driver.memcpy_dtoh_async, "cuMemcpyDtoHAsync", out, ptr, stream)

    def stream_create(self):
        self._current()
        return self._guard(self.driver.Stream, "cuStreamCreate")

    def stream_handle(self, stream) -> int:
        return int(stream.handle)

    def stream_sync(self, stream) -> None:
        self._guard(stream.synchronize, "cuStreamSynchronize")

    def stream_destroy(self, stream) -> None:
        return None  # pycuda destroys a stream when its last reference goes

    def event_create(self):
        self._current()
        return self._guard(self.driver.Event, "cuEventCreate")

    def event_record(self, event, stream) -> None:
        self._guard(event.record, "cuEventRecord", stream)

    def event_sync(self, event) -> None:
        self._guard(event.synchronize, "cuEventSynchronize")

    def event_elapsed(self, start, end) -> float:
        return float(self._guard(end.time_since, "cuEventElapsedTime", start))

    def event_destroy(self, event) -> None:
        return None  # pycuda destroys an event when its last reference goes


class Stream:
    """A CUDA stream; ``handle`` is the int TensorRT's ``execute_async_v3`` takes."""

    def __init__(self):
        self._layer = _get_layer()
        self._stream = self._layer.stream_create()

    @property
    def handle(self) -> int:
        return self._layer.stream_handle(self._stream)

    @property
    def raw(self):
        return self._stream

    def synchronize(self) -> None:
        self._layer.stream_sync(self._stream)

    def close(self) -> None:
        if self._stream is not None:
            stream, self._stream = self._stream, None
            self._layer.stream_destroy(stream)

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Event:
    """A CUDA event for timing work on a stream."""

    def __init__(self):
        self._layer = _get_layer()
        self._event = self._layer.event_create()

    def record(self, stream: Optional[Stream] = None) -> None:
        self._layer.event_record(self._event, stream.raw if stream is not None else None)

    def synchronize(self) -> None:
        self._layer.event_sync(self._event)

    def elapsed_ms(self, start: "Event") -> float:
        """Milliseconds from ``start`` to this event (both recorded; this one synchronized)."""
        return self._layer.event_elapsed(start._event, self._event)

    def close(self) -> None:
        if self._event is not None:
            event, self._event = self._event, None
            self._layer.event_destroy(event)

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
        self._layer = _get_layer()
        # cudaMalloc(0) is legal but may return a null pointer; keep one byte so every buffer has an address.
        self.ptr = int(self._layer.malloc(max(self.nbytes, 1)))

    def copy_from_host(self, array: np.ndarray, stream: Optional[Stream] = None) -> "DeviceBuffer":
        """Copy ``array`` into the buffer (asynchronously on ``stream`` when given)."""
        host = _contiguous(np.asarray(array))
        if host.nbytes > self.nbytes:
            raise ValueError(f"array of {host.nbytes} bytes does not fit a {self.nbytes}-byte device buffer")
        self._layer.htod(self.ptr, host, stream.raw if stream is not None else None)
        if stream is not None:
            # the host array must outlive the copy: keep it until the next copy into this buffer
            self._pending_host = host
        return self

    def copy_to_host(self, out: np.ndarray, stream: Optional[Stream] = None) -> np.ndarray:
        """Copy the buffer's first ``out.nbytes`` into ``out`` (C-contiguous); synchronizes ``stream``."""
        if not out.flags.c_contiguous:
            raise ValueError("copy_to_host needs a C-contiguous output array")
        if out.nbytes > self.nbytes:
            raise ValueError(f"output of {out.nbytes} bytes is larger than the {self.nbytes}-byte device buffer")
        self._layer.dtoh(out, self.ptr, stream.raw if stream is not None else None)
        if stream is not None:
            stream.synchronize()
        return out

    def free(self) -> None:
        if self.ptr:
            ptr, self.ptr = self.ptr, 0
            self._layer.free(ptr)
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


__all__ = ["CUDART_API", "PYCUDA_API", "LAYERS", "LAYER_ENV", "select_layer", "layer_name", "CudaError", "cudart",
           "check", "DeviceInfo", "device_count", "device_info", "memory_info",
           "versions", "Stream", "Event", "DeviceBuffer", "allocate", "free_all"]
