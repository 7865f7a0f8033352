"""ONNX Runtime on the CPU: the one place trtq creates sessions and feeds them.

Calibration statistics, evaluation and the ONNX Runtime benchmark all go through
:func:`create_session` and :func:`run`, so providers, optimization level, thread
count and error messages are the same everywhere.

``onnxruntime`` is imported inside the functions (``import trtq.ort`` stays cheap).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np

from .errors import DataError, ModelError, TrtqError

#: ``optimization=`` names -> ``onnxruntime.GraphOptimizationLevel`` member names.
OPTIMIZATION_LEVELS = {
    "all": "ORT_ENABLE_ALL",
    "extended": "ORT_ENABLE_EXTENDED",
    "basic": "ORT_ENABLE_BASIC",
    "none": "ORT_DISABLE_ALL",
}

#: Protobuf cannot serialize a message of 2 GiB or more; such models go through a temp file.
_PROTO_LIMIT = 2**31 - 1

ModelLike = Union[str, "os.PathLike[str]", bytes, Any]  # path, serialized bytes or onnx.ModelProto
Feed = Dict[str, np.ndarray]


def ort_reason(exc: BaseException) -> str:
    """ONNX Runtime's error text in one line, without the ``[ONNXRuntimeError] : 10 : INVALID_GRAPH :`` prefix."""
    text = str(exc).strip() or type(exc).__name__
    text = re.sub(r"^\[ONNXRuntimeError\]\s*:\s*\d+\s*:\s*[A-Z_]+\s*:\s*", "", text)
    return " ".join(text.split())


def _model_label(model: ModelLike) -> str:
    if isinstance(model, (str, os.PathLike)):
        return str(model)
    if isinstance(model, (bytes, bytearray)):
        return "the model bytes"
    graph = getattr(model, "graph", None)
    name = getattr(graph, "name", "") if graph is not None else ""
    return f"model {name!r}" if name else "the in-memory model"


def session_options(*, threads: Optional[int] = None, optimization: str = "all", spinning: bool = True):
    """``SessionOptions`` with trtq's defaults: given optimization level, intra-op threads, quiet logs.

    ``spinning=False`` stops idle intra-op threads from busy-waiting: right where other
    threads of the process need the cores (calibration bins histograms beside ONNX
    Runtime; on 2 loaded cores, YOLOv8n calibration took 9.9 s spinning, 5.8 s not).
    """
    import onnxruntime as ort

    try:
        level = getattr(ort.GraphOptimizationLevel, OPTIMIZATION_LEVELS[optimization])
    except KeyError:
        raise ValueError(f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, not {optimization!r}") from None
    options = ort.SessionOptions()
    options.graph_optimization_level = level
    options.log_severity_level = 4  # fatal only: trtq reports the errors ONNX Runtime raises as its own one line
    if threads is not None:
        if int(threads) < 0:
            raise ValueError(f"threads must be >= 0 (0: ONNX Runtime's default), not {threads}")
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def create_session(model_or_path: ModelLike, *, threads: Optional[int] = None, optimization: str = "all",
                   spinning: bool = True):
    """An ONNX Runtime CPU ``InferenceSession`` for a model path, serialized bytes or ``onnx.ModelProto``.

    ``threads``: intra-op threads (``None`` or 0: ONNX Runtime decides, usually one per
    physical core). ``optimization``: ``"all"`` (default), ``"extended"``, ``"basic"``
    or ``"none"``. Raises :class:`~trtq.errors.ModelError` with ONNX Runtime's reason
    on one line when the file is missing or ONNX Runtime refuses the model.
    """
    import onnxruntime as ort

    options = session_options(threads=threads, optimization=optimization, spinning=spinning)
    if tensorrt_form(model_or_path):
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    providers = ["CPUExecutionProvider"]
    label = _model_label(model_or_path)
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if not path.exists():
            raise ModelError(f"model file {path} does not exist")
        if path.is_dir():
            raise ModelError(f"model path {path} is a folder; give the .onnx file")
        return _open(ort, str(path), options, providers, label)
    if isinstance(model_or_path, (bytes, bytearray)):
        return _open(ort, bytes(model_or_path), options, providers, label)
    if not hasattr(model_or_path, "SerializeToString"):
        raise TypeError(f"create_session takes a path, bytes or onnx.ModelProto, not {type(model_or_path).__name__}")
    if model_or_path.ByteSize() < _PROTO_LIMIT:
        return _open(ort, model_or_path.SerializeToString(), options, providers, label)
    import onnx

    with tempfile.TemporaryDirectory(prefix="trtq-ort-") as tmp:
        # Large models: weights to an external-data file; ORT reads them while creating the session.
        path = os.path.join(tmp, "model.onnx")
        onnx.save_model(model_or_path, path, save_as_external_data=True, location="model.onnx.data")
        return _open(ort, path, options, providers, label)


def tensorrt_form(model_or_path: ModelLike) -> bool:
    """Whether a model holds int8 Q/DQ pairs (trtq's TensorRT form, what an engine computes).

    ONNX Runtime runs such a model through DequantizeLinear -> float op -> QuantizeLinear,
    not its fused int8 kernels: those multiply u8 x s8 in 16-bit pairs that saturate on CPUs
    without VNNI (AVX2: VPMADDUBSW), so a TensorRT-form MatMul read 3.5 off where the exact
    result is 0.1 off (random weights, 40 draws, an AVX2-only EPYC). TensorRT accumulates int8
    products in int32; the float path matches it up to rounding on every CPU. The ONNX Runtime
    form (uint8 activations) keeps the fused kernels: it is what runs on a CPU, and its weights
    are stored so that they cannot saturate (:func:`trtq.graph.qdq.weight_code`).
    """
    from onnx import TensorProto

    model = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        path = Path(model_or_path)
        if not path.is_file():
            return False
        try:
            import onnx

            model = onnx.load(str(path), load_external_data=False)
        except Exception:  # noqa: BLE001 - not ONNX: creating the session says what is wrong
            return False
    if not hasattr(model, "graph"):
        return False
    zero_points = {init.name: init.data_type for init in model.graph.initializer}
    return any(node.op_type == "QuantizeLinear" and len(node.input) > 2
               and zero_points.get(node.input[2]) == TensorProto.INT8 for node in model.graph.node)


def _open(ort, model, options, providers, label: str):
    try:
        return ort.InferenceSession(model, sess_options=options, providers=providers)
    except Exception as exc:  # ORT raises its own pybind classes (Fail, InvalidGraph, NotImplemented, ...)
        raise ModelError(f"ONNX Runtime cannot load {label}: {ort_reason(exc)}") from None


def input_names(session) -> List[str]:
    return [i.name for i in session.get_inputs()]


def output_names(session) -> List[str]:
    return [o.name for o in session.get_outputs()]


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(int16)": np.int16, "tensor(uint16)": np.uint16,
    "tensor(int32)": np.int32, "tensor(uint32)": np.uint32, "tensor(int64)": np.int64, "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}


def input_dtypes(session) -> Dict[str, np.dtype]:
    """numpy dtype of each session input (object dtype for types numpy cannot hold)."""
    return {i.name: np.dtype(_ORT_TYPES.get(i.type, object)) for i in session.get_inputs()}


def as_feed(session, batch: Union[Mapping[str, np.ndarray], np.ndarray, Sequence[np.ndarray]]) -> Feed:
    """Turn a batch into ``{input name: array}`` for ``session``.

    Accepts a mapping by input name, a single array (one-input models) or a
    sequence of arrays in input order. Floating arrays are cast to the input's
    floating dtype (float64 -> float32, float32 -> float16); any other dtype
    mismatch or a missing input raises :class:`~trtq.errors.DataError`.
    """
    names = input_names(session)
    if isinstance(batch, Mapping):
        missing = [n for n in names if n not in batch]
        if missing:
            raise DataError(f"the data has no array for model input(s) {', '.join(missing)} "
                            f"(it has {', '.join(map(str, batch)) or 'nothing'})")
        feed = {n: batch[n] for n in names}
    elif isinstance(batch, np.ndarray):
        if len(names) != 1:
            raise DataError(f"the model has {len(names)} inputs ({', '.join(names)}); one array cannot feed them")
        feed = {names[0]: batch}
    else:
        arrays = list(batch)
        if len(arrays) != len(names):
            raise DataError(f"the model has {len(names)} inputs ({', '.join(names)}), the batch holds {len(arrays)} arrays")
        feed = dict(zip(names, arrays))
    dtypes = input_dtypes(session)
    for name, array in feed.items():
        array = np.asarray(array)
        want = dtypes[name]
        if array.dtype != want:
            if array.dtype.kind == "f" and want.kind == "f":
                array = array.astype(want)
            else:
                raise DataError(f"input {name!r} needs {want} data, the batch holds {array.dtype}")
        feed[name] = np.require(array, requirements="C")  # keeps a scalar input rank 0
    return feed


def run(session, batch, output_names: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
    """Run one batch; returns ``{output name: array}`` (all outputs unless ``output_names`` is given).

    A batch ONNX Runtime refuses (wrong shape, wrong rank) raises :class:`~trtq.errors.DataError`.
    """
    own = getattr(session, "as_feed", None)  # a TensorRT engine session feeds the engine's own types
    feed = own(batch) if own is not None else as_feed(session, batch)
    names = list(output_names) if output_names is not None else [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, feed)
    except TrtqError:  # an engine session's own one-line error names the engine: not ONNX Runtime's
        raise
    except Exception as exc:
        shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feed.items())
        raise DataError(f"ONNX Runtime refused the batch ({shapes}): {ort_reason(exc)}") from None
    return dict(zip(names, values))


def iter_batches(source_or_batches: Any) -> Iterator[Any]:
    """Batches from a :class:`trtq.data.DataSource`, an iterable of batches, or one batch.

    A data source's items may be plain feeds or objects holding the feed in
    ``.inputs``; both are passed on unchanged (use :func:`batch_inputs` to get the feed).
    """
    if isinstance(source_or_batches, (np.ndarray, Mapping)):
        yield source_or_batches
        return
    yield from source_or_batches


def batch_inputs(item: Any) -> Any:
    """The model feed held by one item of a data source (``item.inputs`` if it has one, else the item)."""
    inputs = getattr(item, "inputs", None)
    return inputs if inputs is not None else item


def run_batches(session, source_or_batches: Any, output_names: Optional[Sequence[str]] = None
                ) -> Iterator[Dict[str, np.ndarray]]:
    """Run every batch of a data source (or iterable of batches); yields one output dict per batch."""
    for item in iter_batches(source_or_batches):
        yield run(session, batch_inputs(item), output_names)


def batch_size_of(feed: Mapping[str, np.ndarray]) -> int:
    """Samples in a feed: the first axis of its first input (0 for scalars)."""
    first = next(iter(feed.values()))
    first = np.asarray(first)
    return int(first.shape[0]) if first.ndim else 1


def describe_providers() -> str:
    """``"onnxruntime 1.x.y (CPUExecutionProvider)"`` for reports."""
    import onnxruntime as ort

    return f"onnxruntime {ort.__version__} (CPUExecutionProvider)"


__all__ = [
    "OPTIMIZATION_LEVELS", "create_session", "session_options", "run", "run_batches", "iter_batches",
    "batch_inputs", "as_feed", "input_names", "output_names", "input_dtypes", "batch_size_of", "ort_reason",
    "describe_providers",
]


def time_session(session, feed: Mapping[str, np.ndarray], iterations: int, warmup: int,
                 max_seconds: Optional[float] = None) -> np.ndarray:
    """Latencies in milliseconds of ``iterations`` runs after ``warmup`` untimed runs.

    ``max_seconds``: stop timing early once this much time went into timed runs
    (at least one timed run always happens); the result then holds fewer values.
    """
    names = [o.name for o in session.get_outputs()]
    for _ in range(warmup):
        session.run(names, feed)
    latencies = np.empty(iterations, dtype=np.float64)
    clock = time.perf_counter_ns
    budget = None if max_seconds is None else max_seconds * 1e9
    spent = 0
    done = 0
    for i in range(iterations):
        start = clock()
        session.run(names, feed)
        latencies[i] = clock() - start
        spent += latencies[i]
        done = i + 1
        if budget is not None and spent >= budget:
            break
    return latencies[:done] / 1e6
