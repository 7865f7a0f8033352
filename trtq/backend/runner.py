"""Running a serialized TensorRT engine: deserialize, size the buffers, execute on a stream.

Uses only :data:`trtq.backend.policy.RUNTIME_API` (TensorRT 10.x and 11.x) and
:mod:`trtq.backend.cuda`. An engine is tied to the TensorRT version and GPU that built
it: ``deserialize_cuda_engine`` returns ``None`` for any other, and :class:`EngineRunner`
turns that into a message saying so.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import BackendUnavailable, ModelError, TrtqError

log = logging.getLogger(__name__)

#: Which declared API list each function here may use (checked by the tests).
FUNCTION_PATHS = {"_load_engine": "runtime", "EngineRunner.__init__": "runtime", "_io_tensors": "runtime", "EngineRunner.set_batch_size": "runtime",
                  "EngineRunner.execute": "runtime", "EngineRunner.device_memory_bytes": "runtime"}

PathLike = Union[str, Path]


class TensorInfo:
    """One engine input or output: name, numpy dtype, engine shape (-1: dynamic), profile range for inputs."""

    def __init__(self, name: str, is_input: bool, dtype: np.dtype, shape: Tuple[int, ...],
                 profile: Optional[Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]] = None):
        self.name, self.is_input, self.dtype, self.shape, self.profile = name, is_input, dtype, shape, profile

    def __repr__(self) -> str:
        return f"TensorInfo({self.name!r}, {'input' if self.is_input else 'output'}, {self.dtype}, {self.shape})"


def _load_engine(trt, logger, data: bytes, label: str):
    try:
        runtime = trt.Runtime(logger)
    except (TypeError, RuntimeError) as exc:  # pybind11: "factory function returned nullptr"
        raise BackendUnavailable(f"TensorRT {trt.__version__} could not create a runtime ({exc}); it needs an "
                                 "NVIDIA GPU and a working CUDA driver") from None
    engine = runtime.deserialize_cuda_engine(data)
    if engine is None:
        errors = logger.messages.errors
        said = f" (TensorRT: {' '.join(errors[-1].split())})" if errors else ""
        raise TrtqError(f"TensorRT {trt.__version__} cannot load engine {label}{said}. An engine only runs on the "
                        "TensorRT version and GPU model that built it; rebuild it here with `trtq build`")
    return runtime, engine


def _io_tensors(trt, engine) -> List[TensorInfo]:
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        shape = tuple(engine.get_tensor_shape(name))
        profile = None
        if is_input and -1 in shape:
            lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
            profile = (tuple(lo), tuple(opt), tuple(hi))
        tensors.append(TensorInfo(name, is_input, dtype, shape, profile))
    return tensors


def read_build_report(engine_path: PathLike) -> Optional[dict]:
    """The JSON report ``trtq build`` wrote beside an engine, if any."""
    from .build import report_path_for

    path = report_path_for(engine_path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


class EngineRunner:
    """An engine, one execution context, one stream and device buffers for the current shapes.

    ``with EngineRunner("m.engine") as runner: outputs = runner.infer({"images": batch})``
    """

    def __init__(self, engine: Union[PathLike, bytes], *, verbose: bool = False):
        from . import import_tensorrt
        from .build import _logger_class
        from .cuda import Stream

        self.trt = trt = import_tensorrt()
        if isinstance(engine, (bytes, bytearray, memoryview)):
            data, self.label = bytes(engine), "(in memory)"
        else:
            path = Path(engine)
            if not path.is_file():
                raise ModelError(f"engine file {path} does not exist")
            data, self.label = path.read_bytes(), str(path)
        self.engine_bytes = len(data)
        self.logger = _logger_class(trt)(verbose)
        self.runtime, self.engine = _load_engine(trt, self.logger, data, self.label)
        self.tensors = _io_tensors(trt, self.engine)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise TrtqError(f"TensorRT could not create an execution context for {self.label} (out of GPU memory?)")
        self.stream = Stream()
        self._buffers: Dict[str, object] = {}
        self._shapes: Dict[str, Tuple[int, ...]] = {}
        self.batch_size: Optional[int] = None

    # -- shapes -----------------------------------------------------------------------------

    @property
    def inputs(self) -> List[TensorInfo]:
        return [t for t in self.tensors if t.is_input]

    @property
    def outputs(self) -> List[TensorInfo]:
        return [t for t in self.tensors if not t.is_input]

    def batch_range(self) -> Tuple[int, int]:
        """(smallest, largest) batch size the engine accepts (a fixed batch gives (n, n))."""
        lo, hi = 1, None
        for tensor in self.inputs:
            if tensor.profile is not None and tensor.shape and tensor.shape[0] == -1:
                lo, hi = max(lo, tensor.profile[0][0]), min(hi or 1 << 30, tensor.profile[2][0])
            elif tensor.shape:
                lo = hi = tensor.shape[0]
        return lo, (hi if hi is not None else lo)

    def input_shape(self, tensor: TensorInfo, batch_size: int) -> Tuple[int, ...]:
        """The shape ``tensor`` gets at ``batch_size`` (non-batch dynamic axes take the profile's opt)."""
        if tensor.profile is None:
            return tensor.shape
        opt = tensor.profile[1]
        shape = tuple(opt[axis] if d == -1 else d for axis, d in enumerate(tensor.shape))
        return (batch_size,) + shape[1:] if tensor.shape[0] == -1 else shape

    def set_batch_size(self, batch_size: int, shapes: Optional[Mapping[str, Sequence[int]]] = None) -> None:
        """Set every input's shape for ``batch_size`` and (re)allocate buffers; outside the profile is an error."""
        from .cuda import allocate

        lo, hi = self.batch_range()
        if not lo <= batch_size <= hi:
            raise TrtqError(f"batch size {batch_size} is outside what engine {Path(self.label).name} accepts "
                            f"({lo}..{hi}: its optimization profile); rebuild it with --batch-sizes or --max-shapes "
                            "covering it")
        context = self.context
        for tensor in self.inputs:
            shape = tuple(shapes[tensor.name]) if shapes and tensor.name in shapes else self.input_shape(tensor,
                                                                                                        batch_size)
            if tensor.profile is not None:
                outside = [a for a, (s, l, h) in enumerate(zip(shape, tensor.profile[0], tensor.profile[2]))
                           if not l <= s <= h]
                if outside:
                    raise TrtqError(f"input {tensor.name!r} shape {list(shape)} is outside the engine's profile "
                                    f"{list(tensor.profile[0])}..{list(tensor.profile[2])}")
            if not context.set_input_shape(tensor.name, shape):
                raise TrtqError(f"TensorRT refused shape {list(shape)} for input {tensor.name!r}")
            self._shapes[tensor.name] = shape
        for tensor in self.outputs:
            shape = tuple(context.get_tensor_shape(tensor.name))
            if any(d < 0 for d in shape):
                raise TrtqError(f"output {tensor.name!r} has a data-dependent shape {list(shape)}; trtq's runner "
                                "needs outputs whose shape follows from the inputs")
            self._shapes[tensor.name] = shape
        for tensor in self.tensors:
            nbytes = int(np.prod(self._shapes[tensor.name], dtype=np.int64)) * tensor.dtype.itemsize
            buffer = self._buffers.get(tensor.name)
            if buffer is None or buffer.nbytes < nbytes:
                if buffer is not None:
                    buffer.free()
                buffer = self._buffers[tensor.name] = allocate(nbytes)
            context.set_tensor_address(tensor.name, buffer.ptr)
        self.batch_size = batch_size

    # -- running ----------------------------------------------------------------------------

    def execute(self) -> None:
        """Enqueue one inference on the runner's stream (inputs already on the device)."""
        if not self.context.execute_async_v3(self.stream.handle):
            raise TrtqError(f"TensorRT failed to run {Path(self.label).name} (execute_async_v3 returned False)")

    def infer(self, feed: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
        """Run one batch from host arrays; returns host arrays per output."""
        first = np.asarray(next(iter(feed.values())))
        shapes = {name: np.shape(value) for name, value in feed.items()}
        self.set_batch_size(int(first.shape[0]) if first.ndim else 1, shapes)
        for tensor in self.inputs:
            if tensor.name not in feed:
                raise TrtqError(f"no data for engine input {tensor.name!r}")
            array = np.ascontiguousarray(feed[tensor.name], dtype=tensor.dtype)
            self._buffers[tensor.name].copy_from_host(array, self.stream)
        self.execute()
        results = {}
        for tensor in self.outputs:
            out = np.empty(self._shapes[tensor.name], dtype=tensor.dtype)
            self._buffers[tensor.name].copy_to_host(out, self.stream)
            results[tensor.name] = out
        return results

    def fill_random(self, seed: int = 0) -> None:
        """Put random inputs of the current shapes on the device (benchmarks)."""
        rng = np.random.default_rng(seed)
        for tensor in self.inputs:
            shape = self._shapes[tensor.name]
            if np.issubdtype(tensor.dtype, np.floating):
                array = rng.random(shape, dtype=np.float32).astype(tensor.dtype)
            else:
                array = np.zeros(shape, dtype=tensor.dtype)
            self._buffers[tensor.name].copy_from_host(array, self.stream)
        self.stream.synchronize()

    def device_memory_bytes(self) -> int:
        """The engine's activation memory plus the I/O buffers now allocated."""
        return int(self.engine.device_memory_size_v2) + sum(b.nbytes for b in self._buffers.values())

    def close(self) -> None:
        from .cuda import free_all

        buffers, self._buffers = list(self._buffers.values()), {}
        try:
            free_all(buffers)
        finally:
            if self.stream is not None:
                self.stream.close()
                self.stream = None
            self.context = self.engine = self.runtime = None

    def __enter__(self) -> "EngineRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["EngineRunner", "TensorInfo", "read_build_report", "FUNCTION_PATHS"]
