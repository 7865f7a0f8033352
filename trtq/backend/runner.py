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

from ..errors import BackendUnavailable, DataError, ModelError, TrtqError

log = logging.getLogger(__name__)

#: Which declared API list each function here may use (checked by the tests).
FUNCTION_PATHS = {"_load_engine": "runtime", "EngineRunner.__init__": "runtime", "_io_tensors": "runtime",
                  "EngineRunner.set_batch_size": "runtime", "EngineRunner.execute": "runtime",
                  "EngineRunner.device_memory_bytes": "runtime", "numpy_dtype": "runtime",
                  "engine_information": "runtime", "_deserialize": "runtime"}

#: TensorRT types numpy has no dtype for: bytes per element (sub-byte types are refused).
RAW_ITEMSIZE = {"BF16": 2, "FP8": 1, "E8M0": 1, "INT4": None, "FP4": None}

PathLike = Union[str, Path]


class EngineLoadError(TrtqError):
    """TensorRT is here but refused to deserialize the engine (another TensorRT version or GPU, a missing plugin).

    Writers that only need the engine's inputs and outputs (``trtq deploy triton``) fall back to its build report
    on this, as they do without TensorRT.
    """


class TensorInfo:
    """One engine input or output: name, numpy dtype, engine shape (-1: dynamic), profile range for inputs."""

    def __init__(self, name: str, is_input: bool, dtype: np.dtype, shape: Tuple[int, ...],
                 profile: Optional[Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]] = None,
                 trt_dtype: str = "", vectorized_dim: int = -1, components: int = 1, tensor_format: str = "LINEAR",
                 host: bool = False):
        self.name, self.is_input, self.dtype, self.shape, self.profile = name, is_input, dtype, shape, profile
        self.trt_dtype = trt_dtype or str(dtype)
        self.vectorized_dim, self.components = vectorized_dim, max(1, int(components))
        self.format = tensor_format  # TensorFormat member name: LINEAR, or a vectorized/HWC layout
        #: the axis that counts samples (None: a scalar or configuration tensor, the same with every batch)
        self.batch_axis: Optional[int] = (0 if shape else None)
        #: a shape-tensor input: TensorRT reads its values from host memory (no device buffer)
        self.host = bool(host)

    @property
    def raw(self) -> bool:
        """True for types numpy cannot hold (BF16, FP8): the buffer is bytes, ``dtype`` a void type."""
        return self.dtype.kind == "V"

    def nbytes(self, shape: Sequence[int]) -> int:
        """Bytes of a buffer for ``shape``, the vectorized axis padded as its format (e.g. CHW32) needs."""
        dims = list(shape)
        if self.components > 1 and 0 <= self.vectorized_dim < len(dims):
            c = self.components
            dims[self.vectorized_dim] = -(-dims[self.vectorized_dim] // c) * c
        return int(np.prod(dims, dtype=np.int64)) * self.dtype.itemsize

    def real_data_refusal(self) -> str:
        """Why host data cannot be copied into (or read from) this tensor as a plain array, or ``""``.

        trtq copies row-major linear arrays; a vectorized or HWC layout (trtexec ``--inputIOFormats=int8:chw32``)
        or a type numpy lacks (BF16, FP8) would be read as garbage, so such data is refused by name.
        """
        role = "input" if self.is_input else "output"
        if self.raw:
            return (f"engine {role} {self.name!r} is {self.trt_dtype}, which numpy cannot hold: trtq cannot feed or "
                    "read it with real data (random-data benchmarks still run); rebuild the engine with FP32/FP16 "
                    "I/O (e.g. trtexec --inputIOFormats=fp32:chw --outputIOFormats=fp32:chw)")
        if self.format != "LINEAR":
            return (f"engine {role} {self.name!r} uses the {self.format} layout, not row-major linear: trtq copies "
                    "linear arrays and would feed or read it wrongly (random-data benchmarks still run); rebuild "
                    "with linear I/O (trtexec --inputIOFormats=<type>:chw)")
        return ""

    def host_array(self, array) -> np.ndarray:
        """``array`` as this input's dtype, contiguous; refuses what would change values or be laid out wrongly.

        Floats are cast to the engine's float type. Integers are cast to the engine's integer type only when
        every value fits: TensorRT 8.6's ONNX parser turns INT64 inputs into INT32 (onnx-tensorrt
        ``convertDtype``), so token ids of an INT64 model are fed as int32 there, and an id above 2**31-1
        is an error, not a wrapped number.
        """
        refusal = self.real_data_refusal()
        if refusal:
            raise ModelError(refusal)
        array = np.asarray(array)
        want = self.dtype
        # np.require, not np.ascontiguousarray: that makes a scalar (rank 0) a shape-[1] array, a shape TensorRT
        # refuses for a rank-0 input
        if array.dtype == want:
            return np.require(array, requirements="C")
        if array.dtype.kind == "f" and want.kind == "f":
            return np.require(array, dtype=want, requirements="C")
        if array.dtype.kind in "iub" and want.kind in "iu":
            if array.size:
                info = np.iinfo(want)
                lo, hi = array.min(), array.max()
                if lo < info.min or hi > info.max:
                    bad = hi if hi > info.max else lo
                    raise DataError(f"input {self.name!r} holds {int(bad)}, which the engine's {want} input cannot "
                                    f"hold (TensorRT 8.6 turns INT64 inputs into INT32); values must lie in "
                                    f"{info.min}..{info.max}")
            return np.require(array, dtype=want, requirements="C")
        raise DataError(f"input {self.name!r}: the engine takes {want} data, the batch holds {array.dtype}")

    def __repr__(self) -> str:
        return f"TensorInfo({self.name!r}, {'input' if self.is_input else 'output'}, {self.dtype}, {self.shape})"


def model_batch_axes(model) -> Tuple[Dict[str, Optional[int]], Dict[str, Optional[int]]]:
    """Per input and per output of the ONNX ``model`` (a path or ModelProto): the axis that counts samples, None
    for a scalar or configuration tensor, from the model's signature (:func:`trtq.graph.signature.read_signature`).
    The one place the engine runner and the deploy writers read it."""
    from ..graph.model import load_onnx
    from ..graph.signature import read_signature

    if not hasattr(model, "graph"):
        model = load_onnx(model)
    signature = read_signature(model)
    axes = signature.batch_axes()
    return ({s.name: axes[s.name] for s in signature.inputs}, {o.name: axes[o.name] for o in signature.outputs})


def tensor_specs(tensors: Sequence["TensorInfo"]) -> list:
    """Engine tensors as :class:`trtq.graph.model.TensorSpec` with their batch axes (the shared batch dim named
    ``batch``, other dynamic dims by tensor and axis), for trtq's data sources and feed helpers."""
    from ..graph.model import TensorSpec

    specs = []
    for t in tensors:
        dims = tuple(d if d >= 0 else ("batch" if axis == t.batch_axis else f"{t.name}:dim{axis}")
                     for axis, d in enumerate(t.shape))
        specs.append(TensorSpec(t.name, dims, np.dtype(np.float32) if t.raw else t.dtype, batch_axis=t.batch_axis))
    return specs


def engine_batch_axis(tensor: "TensorInfo") -> Optional[int]:
    """The batch axis an engine tensor shows by itself: the axis its profile spans (min != max), else its first
    dynamic axis, else 0; None for a scalar. Used where no ONNX model says it."""
    if not tensor.shape:
        return None
    if tensor.profile is not None:
        spans = [a for a, (lo, hi) in enumerate(zip(tensor.profile[0], tensor.profile[2])) if lo != hi]
        if spans:
            return spans[0]
    dynamic = [a for a, d in enumerate(tensor.shape) if d == -1]
    return dynamic[0] if dynamic else 0


def _report_model_axes(engine_path: Path, report: Optional[dict]):
    """The batch axes of the ONNX model the build report names beside the engine (same sha256), or None."""
    from ..graph.model import file_sha256

    recorded = (report or {}).get("model") or {}
    if not recorded.get("file"):
        return None
    model = Path(engine_path).with_name(str(recorded["file"]))
    try:
        if not model.is_file() or (recorded.get("sha256") and file_sha256(model) != recorded["sha256"]):
            return None
        inputs, outputs = model_batch_axes(model)
    except (OSError, TrtqError, ValueError) as exc:
        log.debug("batch axes of %s not read: %s", model, exc)
        return None
    return {**inputs, **outputs}


def numpy_dtype(trt, data_type, name: str = "") -> np.dtype:
    """numpy dtype for a TensorRT DataType; BF16/FP8 become raw bytes (numpy has no such type).

    ``trt.nptype`` raises TypeError for BF16, FP8, INT4, FP4 and E8M0 on every version that has them.
    """
    try:
        return np.dtype(trt.nptype(data_type))
    except TypeError:
        kind = getattr(data_type, "name", str(data_type)).split(".")[-1]
        size = RAW_ITEMSIZE.get(kind)
        if size is None:
            raise ModelError(f"engine tensor {name!r} is {kind}: trtq's runner handles whole-byte types only "
                             "(rebuild with FP32/FP16/INT8 I/O, e.g. trtexec --inputIOFormats=fp32:chw)") from None
        return np.dtype((np.void, size))


def _load_engine(trt, logger, data: bytes, label: str, plugins: Sequence[Path] = (), host_code: bool = False,
                 dla_core: Optional[int] = None):
    """Deserialize ``data``; ``dla_core``: the DLA core a DLA engine runs on (``runtime.DLA_core``, set before
    deserializing as trtexec does; TensorRT's default is -1).

    ``host_code``: the engine embeds TensorRT's lean runtime (``--version-compatible``), which TensorRT runs only
    when allowed. Set up front when the build report says so; otherwise a load that fails is tried once more with
    host code allowed (a version-compatible engine moved without its report, or built by trtexec
    ``--versionCompatible``; Polygraphy always allows it).
    """
    from .build import load_plugins

    try:
        runtime = trt.Runtime(logger)
    except (TypeError, RuntimeError) as exc:  # pybind11: "factory function returned nullptr"
        raise BackendUnavailable(f"TensorRT {trt.__version__} could not create a runtime ({exc}); it needs an "
                                 "NVIDIA GPU and a working CUDA driver") from None
    load_plugins(trt, logger, plugins)  # engines with plugin layers deserialize only with plugins registered
    if dla_core is not None:
        runtime.DLA_core = int(dla_core)
    engine = _deserialize(runtime, data, host_code)
    if engine is None and not host_code:
        engine = _deserialize(runtime, data, True)
        if engine is not None:
            log.info("%s is a version-compatible engine: loaded with engine host code allowed", label)
    if engine is None:
        errors = logger.messages.errors
        said = f" (TensorRT: {' '.join(errors[-1].split())})" if errors else ""
        raise EngineLoadError(f"TensorRT {trt.__version__} cannot load engine {label}{said}. An engine only runs on the "
                        "TensorRT version and GPU model that built it (or, built with --version-compatible, on "
                        "later TensorRT versions); rebuild it here with `trtq build`")
    return runtime, engine


def _deserialize(runtime, data: bytes, host_code: bool):
    if host_code:
        runtime.engine_host_code_allowed = True
    return runtime.deserialize_cuda_engine(data)


def _io_tensors(trt, engine) -> List[TensorInfo]:
    tensors = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        is_input = engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
        data_type = engine.get_tensor_dtype(name)
        dtype = numpy_dtype(trt, data_type, name)
        host = engine.get_tensor_location(name) != trt.TensorLocation.DEVICE
        if host and not (is_input and engine.is_shape_inference_io(name)):
            raise ModelError(f"engine {'input' if is_input else 'output'} {name!r} lives in host memory without being "
                             "a shape-tensor input: trtq's runner reads device tensors only")
        shape = tuple(engine.get_tensor_shape(name))
        profile = None
        if is_input and -1 in shape:
            lo, opt, hi = engine.get_tensor_profile_shape(name, 0)
            profile = (tuple(lo), tuple(opt), tuple(hi))
        tensor_format = engine.get_tensor_format(name)
        tensors.append(TensorInfo(name, is_input, dtype, shape, profile,
                                  trt_dtype=getattr(data_type, "name", str(data_type)),
                                  vectorized_dim=int(engine.get_tensor_vectorized_dim(name)),
                                  components=int(engine.get_tensor_components_per_element(name)),
                                  tensor_format="LINEAR" if tensor_format == trt.TensorFormat.LINEAR else
                                  getattr(tensor_format, "name", str(tensor_format)), host=host))
    return tensors


def _plugin_paths(given: Sequence[PathLike], recorded, label: str) -> List[Path]:
    """``--plugins`` plus the libraries the build report lists (the engine's plugin layers need them to load)."""
    paths = [Path(p) for p in given]
    for entry in recorded or []:
        path = Path(entry)
        if path in paths:
            continue
        if path.is_file():
            paths.append(path)
        else:
            log.warning("%s was built with plugin library %s, which is not here; pass its path with --plugins",
                        label, path)
    return paths


def _build_report_schema():
    """The fields of a build report that trtq reads back (:func:`read_build_report`), with their types."""
    from ..jsonio import List, Map, Opt

    return {"format?": "str", "precision?": Opt("str"),
            "model?": Opt({"file?": Opt("str"), "sha256?": Opt("str")}),
            "tensorrt?": Opt({"version?": Opt("str"), "builder_flags?": Opt(List("str")), "dla_core?": Opt("int"),
                              "plugins?": Opt(List("str"))}),
            "gpu?": Opt({"name?": Opt("str")}),
            "profile?": Opt(Map({"min": List("int"), "opt": List("int"), "max": List("int")}))}


def read_build_report(engine_path: PathLike) -> Optional[dict]:
    """The JSON report ``trtq build`` wrote beside an engine; None when there is none (or the JSON there is not a
    trtq build report).

    Read like every JSON document trtq reads (:func:`trtq.jsonio.read_json`: a regular file, bounded size and
    depth, the fields trtq uses of the right type): a report that is a FIFO, too large or malformed is one
    :class:`~trtq.errors.TrtqError` naming it, never a hang or a traceback.
    """
    import os

    from ..jsonio import conform, read_json
    from .build import report_path_for

    path = report_path_for(engine_path)
    if not os.path.lexists(path):
        return None
    hint = f"rebuild the engine with trtq build, or move {path.name} away"
    document = read_json(path, "build report", hint=hint)
    if not isinstance(document, dict) or document.get("format", "trtq-build-report") != "trtq-build-report":
        return None  # another tool's JSON
    return conform(document, _build_report_schema(), f"build report {path}", hint=hint)


class EngineRunner:
    """An engine, one execution context, one stream and device buffers for the current shapes.

    ``with EngineRunner("m.engine") as runner: outputs = runner.infer({"images": batch})``
    """

    def __init__(self, engine: Union[PathLike, bytes], *, verbose: bool = False, plugins: Sequence[PathLike] = (),
                 dla_core: Optional[int] = None, batch_axes: Optional[Mapping[str, Optional[int]]] = None):
        """``batch_axes``: ``{tensor: axis or None}`` for inputs and outputs (:func:`model_batch_axes` of the ONNX
        model); default: the model the build report names beside the engine, else what the engine's profile
        shows (:func:`engine_batch_axis`)."""
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
        report = read_build_report(engine) if not isinstance(engine, (bytes, bytearray, memoryview)) else None
        built = (report or {}).get("tensorrt") or {}
        host_code = "VERSION_COMPATIBLE" in built.get("builder_flags", [])
        if dla_core is None and built.get("dla_core") is not None:
            dla_core = int(built["dla_core"])  # the core the build targeted (the report names it only for DLA)
        self.dla_core = dla_core
        self.engine_bytes = len(data)
        self.logger = _logger_class(trt)(verbose)
        self.runtime, self.engine = _load_engine(trt, self.logger, data, self.label,
                                                 _plugin_paths(plugins, built.get("plugins"), self.label),
                                                 host_code, dla_core)
        self.tensors = _io_tensors(trt, self.engine)
        if batch_axes is None and not isinstance(engine, (bytes, bytearray, memoryview)):
            batch_axes = _report_model_axes(Path(engine), report)
        for tensor in self.tensors:
            if tensor.host:  # a shape tensor is configuration: the same values with every batch
                tensor.batch_axis = None
            elif batch_axes is not None and tensor.name in batch_axes:
                axis = batch_axes[tensor.name]
                tensor.batch_axis = None if axis is None or not tensor.shape else int(axis) % len(tensor.shape)
            else:
                tensor.batch_axis = engine_batch_axis(tensor)
        self.context = self.engine.create_execution_context()
        if self.context is None:
            raise TrtqError(f"TensorRT could not create an execution context for {self.label} (out of GPU memory?)")
        self.stream = Stream()
        self._buffers: Dict[str, object] = {}
        self._host: Dict[str, np.ndarray] = {}  # shape-tensor inputs' values, alive while TensorRT may read them
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
        """(smallest, largest) batch size the engine accepts, on each input's own batch axis (a fixed batch gives
        (n, n); an engine without batched inputs (1, 1))."""
        lo, hi = 1, None
        for tensor in self.inputs:
            axis = tensor.batch_axis
            if axis is None:
                continue
            if tensor.profile is not None and tensor.shape[axis] == -1:
                lo, hi = max(lo, tensor.profile[0][axis]), min(hi or 1 << 30, tensor.profile[2][axis])
            elif tensor.shape[axis] > 0:
                lo = hi = tensor.shape[axis]
        return lo, (hi if hi is not None else lo)

    def input_shape(self, tensor: TensorInfo, batch_size: int) -> Tuple[int, ...]:
        """The shape ``tensor`` gets at ``batch_size`` on its batch axis (other dynamic axes take the profile's
        opt)."""
        if tensor.profile is None:
            return tensor.shape
        opt = tensor.profile[1]
        shape = tuple(opt[axis] if d == -1 else d for axis, d in enumerate(tensor.shape))
        return self._with_batch(tensor, shape, batch_size)

    @staticmethod
    def _with_batch(tensor: TensorInfo, shape: Tuple[int, ...], batch_size: int) -> Tuple[int, ...]:
        axis = tensor.batch_axis
        if axis is None or axis >= len(shape) or tensor.shape[axis] != -1:
            return tuple(shape)
        return tuple(shape[:axis]) + (int(batch_size),) + tuple(shape[axis + 1:])

    def set_batch_size(self, batch_size: int, shapes: Optional[Mapping[str, Sequence[int]]] = None,
                       values: Optional[Mapping[str, np.ndarray]] = None) -> None:
        """Set every input's shape for ``batch_size`` on its own batch axis and (re)allocate buffers; ``shapes``:
        full shapes of some inputs (an array's own shape, or ``--shape``; the batch axis is ``batch_size``);
        ``values``: the arrays of shape-tensor inputs, which TensorRT reads from host memory to size the outputs.
        Outside the profile is an error."""
        from .cuda import allocate

        lo, hi = self.batch_range()
        if not lo <= batch_size <= hi:
            raise TrtqError(f"batch size {batch_size} is outside what engine {Path(self.label).name} accepts "
                            f"({lo}..{hi}: its optimization profile); rebuild it with --batch-sizes or --max-shapes "
                            "covering it")
        context = self.context
        for tensor in self.inputs:
            shape = self.input_shape(tensor, batch_size)
            if shapes and tensor.name in shapes:
                shape = tuple(int(d) for d in shapes[tensor.name])
                if len(shape) != len(tensor.shape):
                    raise TrtqError(f"input {tensor.name!r} has rank {len(tensor.shape)} in engine "
                                    f"{Path(self.label).name} ({list(tensor.shape)}); the data gives shape "
                                    f"{list(shape)}")
                shape = self._with_batch(tensor, shape, batch_size)  # the batch axis is the row's
            if tensor.profile is not None:
                outside = [a for a, (s, l, h) in enumerate(zip(shape, tensor.profile[0], tensor.profile[2]))
                           if not l <= s <= h]
                if outside:
                    raise TrtqError(f"input {tensor.name!r} shape {list(shape)} is outside the engine's profile "
                                    f"{list(tensor.profile[0])}..{list(tensor.profile[2])}")
            if not context.set_input_shape(tensor.name, shape):
                raise TrtqError(f"TensorRT refused shape {list(shape)} for input {tensor.name!r}")
            self._shapes[tensor.name] = shape
            if tensor.host:
                if values is None or tensor.name not in values:
                    raise DataError(f"input {tensor.name!r} is a shape tensor of engine {Path(self.label).name} (its "
                                    "values size other tensors): it needs real values; give --data")
                array = tensor.host_array(values[tensor.name])
                self._host[tensor.name] = array
                context.set_tensor_address(tensor.name, array.ctypes.data)
        for tensor in self.outputs:
            shape = tuple(context.get_tensor_shape(tensor.name))
            if any(d < 0 for d in shape):
                raise TrtqError(f"output {tensor.name!r} has a data-dependent shape {list(shape)}; trtq's runner "
                                "needs outputs whose shape follows from the inputs")
            self._shapes[tensor.name] = shape
        for tensor in self.tensors:
            if tensor.host:
                continue
            nbytes = tensor.nbytes(self._shapes[tensor.name])
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
        for tensor in self.outputs:
            refusal = tensor.real_data_refusal()
            if refusal:
                raise ModelError(refusal)
        shapes = {name: np.shape(value) for name, value in feed.items()}  # each input's own shape (Polygraphy's way)
        self.set_batch_size(self.feed_batch(feed), shapes, values=feed)
        for tensor in self.inputs:
            if tensor.name not in feed:
                raise TrtqError(f"no data for engine input {tensor.name!r}")
            if not tensor.host:
                self._buffers[tensor.name].copy_from_host(tensor.host_array(feed[tensor.name]), self.stream)
        self.execute()
        results = {}
        for tensor in self.outputs:
            out = np.empty(self._shapes[tensor.name], dtype=tensor.dtype)
            self._buffers[tensor.name].copy_to_host(out, self.stream)
            results[tensor.name] = out
        return results

    def feed_batch(self, feed: Mapping[str, np.ndarray]) -> int:
        """Samples in ``feed``: the batch-axis length of its first batched input (1 when none is batched)."""
        for tensor in self.inputs:
            if tensor.batch_axis is not None and tensor.name in feed:
                shape = np.shape(feed[tensor.name])
                if len(shape) > tensor.batch_axis:
                    return int(shape[tensor.batch_axis])
        return 1

    def load_inputs(self, feed: Mapping[str, np.ndarray]) -> None:
        """Copy host arrays (the current shapes) into the input buffers (real-data benchmarks)."""
        for tensor in self.inputs:
            if tensor.name not in feed:
                raise TrtqError(f"no data for engine input {tensor.name!r} (the data has {', '.join(feed)})")
            if tensor.host:  # set with the shapes (set_batch_size's values): TensorRT sized the outputs by them
                continue
            self._buffers[tensor.name].copy_from_host(tensor.host_array(feed[tensor.name]), self.stream)
        self.stream.synchronize()

    def input_specs(self):
        """The inputs as :class:`trtq.graph.model.TensorSpec` (dynamic axes named), for trtq's data sources."""
        return tensor_specs(self.inputs)

    def random_refusal(self) -> str:
        """Why random inputs cannot stand for real ones here, or ``""``: an integer or boolean input without a
        batch axis is configuration (a mode, a sample rate, a count) that decides what the engine computes."""
        for tensor in self.inputs:
            if tensor.batch_axis is None and not tensor.raw and tensor.dtype.kind in "iub":
                return (f"input {tensor.name!r} is an integer configuration input (no batch axis): random data would "
                        "time whatever its value 0 selects; give real inputs with --data")
        return ""

    def fill_random(self, seed: int = 0) -> None:
        """Put random inputs of the current shapes on the device (benchmarks); refused where
        :meth:`random_refusal` says why."""
        refusal = self.random_refusal()
        if refusal:
            raise DataError(refusal)
        rng = np.random.default_rng(seed)
        for tensor in self.inputs:
            shape = self._shapes[tensor.name]
            if tensor.host:
                continue
            if tensor.raw:  # BF16/FP8: bytes of small values would need a converter; zeros are valid in both
                array = np.zeros(tensor.nbytes(shape), dtype=np.uint8)
            elif np.issubdtype(tensor.dtype, np.floating):
                array = rng.random(shape, dtype=np.float32).astype(tensor.dtype)
            else:
                array = np.zeros(shape, dtype=tensor.dtype)
            self._buffers[tensor.name].copy_from_host(array, self.stream)
        self.stream.synchronize()

    def device_memory_bytes(self) -> int:
        """The engine's activation memory plus the I/O buffers now allocated."""
        engine = self.engine
        # device_memory_size_v2 from TensorRT 10.1 on; 8.6 and 10.0 have only device_memory_size (gone in 11)
        if hasattr(self.trt.ICudaEngine, "device_memory_size_v2"):
            size = engine.device_memory_size_v2
        else:
            size = engine.device_memory_size
        return int(size) + sum(b.nbytes for b in self._buffers.values())

    def engine_information(self) -> Optional[dict]:
        """The engine inspector's JSON (layers with precisions and formats), or ``None`` when not available."""
        return engine_information(self.trt, self.engine)

    def close(self) -> None:
        from .cuda import free_all

        buffers, self._buffers = list(self._buffers.values()), {}
        self._host = {}
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


class _Arg:
    """What ONNX Runtime's ``get_inputs()``/``get_outputs()`` items offer: name, shape, ORT type string."""

    def __init__(self, name: str, shape, dtype):
        from ..ort import _ORT_TYPES

        ort_type = {np.dtype(v): k for k, v in _ORT_TYPES.items()}.get(np.dtype(dtype), "tensor(float)")
        self.name, self.shape, self.type = name, [d if d >= 0 else None for d in shape], ort_type


class EngineSession:
    """An engine behind ONNX Runtime's session interface (``get_inputs``, ``get_outputs``, ``run``), so that
    trtq's evaluation takes an engine as the candidate model (``trtq eval model.onnx x.engine``).

    Batches larger than the engine's profile allows run in chunks of its largest batch; a chunk smaller than its
    smallest batch (the last one, or any batch of a fixed-batch engine) is padded up to it by repeating its
    samples, and the padded rows are dropped from the outputs. Data is fed in the engine's own types
    (:meth:`TensorInfo.host_array`: INT64 ids become the int32 a TensorRT 8.6 engine takes, when they fit).
    """

    def __init__(self, engine: Union[PathLike, bytes], *, model=None, **kwargs):
        """``model``: the ONNX model (path or ModelProto) whose inputs the feeds follow: its batch axes are the
        engine's (default: the build report's model, else the engine's profile)."""
        if model is not None and "batch_axes" not in kwargs:
            inputs, outputs = model_batch_axes(model)
            kwargs["batch_axes"] = {**inputs, **outputs}
        self.runner = EngineRunner(engine, **kwargs)

    def get_inputs(self):
        return [_Arg(t.name, t.shape, t.dtype) for t in self.runner.inputs]

    def get_outputs(self):
        return [_Arg(t.name, t.shape, t.dtype) for t in self.runner.outputs]

    def as_feed(self, batch) -> Dict[str, np.ndarray]:
        """``{input: array}`` in the engine's types (what :func:`trtq.ort.run` feeds an engine session)."""
        inputs = self.runner.inputs
        if isinstance(batch, Mapping):
            missing = [t.name for t in inputs if t.name not in batch]
            if missing:
                raise DataError(f"the data has no array for engine input(s) {', '.join(missing)} "
                                f"(it has {', '.join(map(str, batch)) or 'nothing'})")
            return {t.name: t.host_array(batch[t.name]) for t in inputs}
        arrays = [batch] if isinstance(batch, np.ndarray) else list(batch)
        if len(arrays) != len(inputs):
            raise DataError(f"the engine has {len(inputs)} inputs ({', '.join(t.name for t in inputs)}), the batch "
                            f"holds {len(arrays)} arrays")
        return {t.name: t.host_array(a) for t, a in zip(inputs, arrays)}

    def run(self, names, feed):
        """ONNX Runtime's ``run``: every error is worded as the engine's (one line), never as ONNX Runtime's."""
        try:
            return self._run(names, feed)
        except TrtqError:
            raise
        except Exception as exc:  # noqa: BLE001 - numpy/CUDA-layer errors while feeding or reading the engine
            shapes = ", ".join(f"{k}{list(np.shape(v))}" for k, v in feed.items())
            raise TrtqError(f"engine {self._name()} could not run the batch ({shapes}): {type(exc).__name__}: "
                            f"{' '.join(str(exc).split())}") from None

    def _name(self) -> str:
        label = getattr(self.runner, "label", None)
        return Path(label).name if label else "(engine)"

    def _run(self, names, feed):
        """Each input keeps its own batch axis (unbatched inputs go whole with every call); a batch the profile
        takes runs as it is, a larger one in chunks, a smaller one padded by repeating its samples."""
        from ..graph.batch import feed_samples, take_samples

        runner = self.runner
        names = list(names or [t.name for t in runner.outputs])
        feed = {name: np.asarray(value) for name, value in feed.items()}
        specs = tensor_specs(runner.inputs)
        count = feed_samples(feed, specs)
        smallest, largest = runner.batch_range()
        if smallest <= count <= largest:
            outputs = runner.infer(feed)
            return [outputs[name] for name in names]
        by_name = {t.name: t for t in runner.outputs}
        parts = []
        for start in range(0, count, largest):
            size = min(largest, count - start)
            chunk = take_samples(feed, specs, slice(start, start + size))
            if size < smallest:  # repeat the chunk's samples up to the profile's minimum; drop them below
                chunk = take_samples(chunk, specs, np.arange(smallest) % size)
            outputs = runner.infer(chunk)
            kept = []
            for name in names:
                out, axis = outputs[name], by_name[name].batch_axis
                if axis is None or out.ndim <= axis or out.shape[axis] != max(size, smallest):
                    raise TrtqError(f"engine {self._name()} takes batches of {smallest}..{largest} and "
                                    f"output {name!r} ({list(out.shape)}) has no batch axis to split the {count} "
                                    f"samples along; give --batch-size within {smallest}..{largest}")
                if size < smallest:
                    out = np.take(out, np.arange(size), axis=axis)
                kept.append(out)
            parts.append(kept)
        return [np.concatenate([p[i] for p in parts], axis=by_name[name].batch_axis) if len(parts) > 1
                else parts[0][i] for i, name in enumerate(names)]

    def close(self) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            runner.close()

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown: CUDA may be gone already
            pass


def engine_information(trt, engine) -> Optional[dict]:
    """``create_engine_inspector().get_engine_information(JSON)`` parsed; ``None`` where it says nothing."""
    inspector = engine.create_engine_inspector()
    if inspector is None:
        return None
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        return json.loads(text) if text else None
    except ValueError:
        return {"raw": str(text)}


__all__ = ["EngineRunner", "EngineSession", "EngineLoadError", "TensorInfo", "model_batch_axes", "engine_batch_axis",
           "tensor_specs", "read_build_report", "FUNCTION_PATHS", "numpy_dtype", "engine_information"]
