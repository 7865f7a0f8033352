"""Triton Inference Server model repositories that match a calibration.

``repo/NAME/config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``) plus
``repo/NAME/1/model.plan`` (a TensorRT engine) or ``repo/NAME/1/model.onnx`` (the Q/DQ INT8
model, TensorRT form, for Triton's ONNX Runtime backend with its TensorRT accelerator).

What Triton's documentation says, and what follows here:

- ``max_batch_size > 0`` means the first axis of every input and output is the batch and
  ``dims`` leave it out; ``0`` means no batching and ``dims`` are the full shape. An engine's
  optimization profile bounds the batch: ``max_batch_size`` is the profile's max, and dynamic
  batching prefers the profile's opt and max batch.
- ONNX Runtime backend + TensorRT accelerator (onnxruntime_backend README, "ONNX Runtime with
  TensorRT optimization"): ``precision_mode`` accepts ``FP32``, ``FP16`` and ``INT8``, and
  ``int8_calibration_table_name`` applies "when precision_mode==INT8 and the models do not
  contain Q/DQ nodes. If calibration table is provided for model with Q/DQ nodes then ORT
  session creation will fail". So a Q/DQ INT8 ONNX is served with ``precision_mode: INT8``
  and no calibration table: the scales travel inside the model.

The writer emits the text itself (no protobuf schema needed at run time); the tests parse
every generated config with the real ``ModelConfig`` of the ``tritonclient`` wheel.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import defaults
from ..errors import ModelError, TrtqError
from . import MARKER

PathLike = Union[str, Path]

#: numpy dtype name -> Triton DataType (model_config.proto)
NUMPY_TO_TRITON = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32", "int64": "TYPE_INT64",
    "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
}
#: TensorRT DataType names numpy has no dtype for -> Triton DataType
TRT_RAW_TO_TRITON = {"BF16": "TYPE_BF16"}


@dataclass
class TensorIO:
    """One model input or output as Triton sees it: full shape (-1 dynamic), Triton data type."""

    name: str
    data_type: str
    shape: Tuple[int, ...]
    profile: Optional[Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]] = None
    batch_axis: Optional[int] = 0       # the axis that counts samples; None: a scalar or configuration tensor


@dataclass
class ModelIO:
    """Inputs and outputs, where they came from, and the batch range the model accepts."""

    inputs: List[TensorIO]
    outputs: List[TensorIO]
    source: str                          # "tensorrt", "build report + onnx", "onnx"
    notes: List[str] = field(default_factory=list)
    report: Optional[dict] = None        # trtq's build report of an engine (what it needs to load), if any

    def batch_range(self) -> Tuple[Optional[int], Optional[int], Optional[int]]:
        """(min, opt, max) batch over the inputs; (None, None, None) when the batch axis is dynamic without a profile;
        (n, n, n) for a static batch axis."""
        lo = opt = hi = None
        for tensor in self.inputs:
            axis = tensor.batch_axis
            if axis is None or axis >= len(tensor.shape):
                continue
            if tensor.shape[axis] > 0:
                return tensor.shape[axis], tensor.shape[axis], tensor.shape[axis]
            if tensor.profile is not None:
                lo = max(lo or 1, tensor.profile[0][axis])
                opt = max(opt or 1, tensor.profile[1][axis])
                hi = min(hi or 1 << 30, tensor.profile[2][axis])
        return lo, opt, hi

    def set_batch_axes(self, axes: Dict[str, Optional[int]]) -> None:
        """Each tensor's batch axis from ``axes`` (:func:`trtq.backend.runner.model_batch_axes`); tensors it does
        not name keep theirs."""
        for tensor in self.inputs + self.outputs:
            if tensor.name in axes:
                axis = axes[tensor.name]
                tensor.batch_axis = None if axis is None or not tensor.shape else int(axis) % len(tensor.shape)


def triton_type(dtype, trt_name: str = "") -> str:
    """Triton DataType of a numpy dtype (or a TensorRT type numpy lacks, by its name)."""
    if trt_name in TRT_RAW_TO_TRITON:
        return TRT_RAW_TO_TRITON[trt_name]
    name = np.dtype(dtype).name
    if name not in NUMPY_TO_TRITON:
        raise ModelError(f"Triton has no data type for {trt_name or name}")
    return NUMPY_TO_TRITON[name]


def _dims(shape) -> Tuple[int, ...]:
    return tuple(int(d) if isinstance(d, (int, np.integer)) and d > 0 else -1 for d in shape)


def onnx_io(model) -> ModelIO:
    """Inputs and outputs of an ONNX model (symbolic dims are -1) with each one's batch axis."""
    from ..backend.runner import model_batch_axes
    from ..graph.model import output_specs
    from ..graph.signature import input_specs

    io = ModelIO([TensorIO(s.name, triton_type(s.dtype), _dims(s.shape)) for s in input_specs(model)],
                 [TensorIO(s.name, triton_type(s.dtype), _dims(s.shape)) for s in output_specs(model)], "onnx")
    inputs, outputs = model_batch_axes(model)
    io.set_batch_axes({**inputs, **outputs})
    return io


def engine_io(engine: PathLike, model: Optional[PathLike] = None) -> ModelIO:
    """An engine's I/O and profile: from TensorRT where it loads the engine, else from trtq's build report and the
    ONNX model (TensorRT missing here, or present but unable to load an engine built for another version or GPU).

    ``model``: the ONNX model the engine was built from (default: the build report's model
    file beside the engine). Raises a one-line error when neither way works.
    """
    from ..backend.runner import read_build_report
    from ..errors import BackendUnavailable
    from ..fileio import check_regular

    engine = Path(engine)
    check_regular(engine, f"engine file {engine}", ModelError, "give the engine file trtq build wrote")
    report = read_build_report(engine)
    try:
        from ..backend.engine_io import read_engine_io
        from ..backend.runner import EngineLoadError

        try:
            tensors = read_engine_io(engine)
        except EngineLoadError as exc:
            raise _NotLoaded(f"{_first_sentence(exc)} (an engine loads only on the TensorRT version and GPU that "
                             "built it; writing its config does not need that)") from None
        from ..backend.runner import _report_model_axes, engine_batch_axis, model_batch_axes

        inputs = [TensorIO(t.name, triton_type(t.dtype, t.trt_dtype), tuple(t.shape), t.profile,
                           engine_batch_axis(t)) for t in tensors if t.is_input]
        outputs = [TensorIO(t.name, triton_type(t.dtype, t.trt_dtype), tuple(t.shape), None, engine_batch_axis(t))
                   for t in tensors if not t.is_input]
        io = ModelIO(inputs, outputs, "tensorrt", report=report)
        if model is not None:
            given_in, given_out = model_batch_axes(model)
            axes = {**given_in, **given_out}
        else:
            axes = _report_model_axes(engine, report)
        io.set_batch_axes(axes or {})  # the ONNX model's batch axes where it is known, else the engine's profile
        return io
    except BackendUnavailable as exc:
        unavailable = f"TensorRT is not available here ({str(exc).split(';')[0]})"
    except _NotLoaded as exc:
        unavailable = str(exc)
    if report is None:
        raise TrtqError(f"cannot read {engine.name}'s inputs, outputs and profile: {unavailable}, and no trtq build "
                        f"report ({engine.name}.json) is beside it. Run this where TensorRT and a GPU are, or give "
                        "the ONNX model (--model) and a trtq-built engine")
    if model is None:
        recorded = (report.get("model") or {}).get("file")
        model = engine.parent / Path(recorded).name if recorded else None  # beside the engine, never elsewhere
        if model is None or not Path(model).is_file():
            raise TrtqError(f"{unavailable}; {engine.name}'s build report names model {recorded!r}, which is not "
                            "beside the engine: give it with --model")
    from ..graph.model import file_sha256, load_onnx

    io = onnx_io(load_onnx(model))
    recorded_sha = (report.get("model") or {}).get("sha256")
    if recorded_sha and recorded_sha != file_sha256(model):
        raise TrtqError(f"{Path(model).name} is not the model {engine.name} was built from (sha256 differs from its "
                        "build report); give the right one with --model")
    profile = report.get("profile") or {}
    for tensor in io.inputs:
        entry = profile.get(tensor.name)
        if entry:
            tensor.profile = (tuple(entry["min"]), tuple(entry["opt"]), tuple(entry["max"]))
    io.source = "build report + onnx"
    io.report = report
    io.notes.append(f"{unavailable}: I/O from {Path(model).name}, profile from {engine.name}.json")
    _engine_types(io, str((report.get("tensorrt") or {}).get("version") or ""))
    return io


class _NotLoaded(Exception):
    """TensorRT is installed here but refused the engine (read the build report instead)."""


def _first_sentence(exc: Exception) -> str:
    return str(exc).split(". ")[0]


#: TensorRT 8.6's ONNX parser imports INT64 tensors as INT32 (onnx-tensorrt 8.6-GA ``convertDtype``; 8.6's DataType
#: has no INT64), so its engines take and give INT32 where the ONNX model says INT64.
INT64_AS_INT32_BELOW = 10


def _engine_types(io: ModelIO, built_by: str) -> None:
    """The ONNX types as the engine has them: INT64 becomes INT32 in engines TensorRT 8.x built."""
    wide = [t for t in io.inputs + io.outputs if t.data_type == "TYPE_INT64"]
    if not wide:
        return
    names = ", ".join(t.name for t in wide)
    try:
        major = int(built_by.split(".")[0])
    except ValueError:
        io.notes.append(f"{names}: INT64 in the ONNX model, and the build report does not say which TensorRT built "
                        "the engine: TensorRT 8.6 engines take INT32 there; check the config's data_type on the target")
        return
    if major < INT64_AS_INT32_BELOW:
        for tensor in wide:
            tensor.data_type = "TYPE_INT32"
        io.notes.append(f"{names}: TYPE_INT32, as TensorRT {built_by} (the engine's builder) imports the model's INT64")


@dataclass
class TritonModel:
    """Everything a ``config.pbtxt`` says."""

    name: str
    platform: str                        # tensorrt_plan or onnxruntime_onnx
    max_batch_size: int
    inputs: List[TensorIO]
    outputs: List[TensorIO]
    preferred_batch_sizes: List[int] = field(default_factory=list)
    dynamic_batching: bool = False
    accelerator: Optional[Dict[str, str]] = None    # TensorRT accelerator parameters (ONNX Runtime backend)
    parameters: Dict[str, str] = field(default_factory=dict)
    comments: List[str] = field(default_factory=list)
    dla_core: Optional[int] = None                  # a DLA engine's core: instance_group secondary_devices KIND_NVDLA


def plan_model(name: str, io: ModelIO, platform: str, max_batch: Optional[int] = None) -> TritonModel:
    """Batching from the model. Triton batches on axis 0 of every input and output: where each one's batch axis is
    a dynamic axis 0, ``max_batch_size`` is the profile's max (``max_batch`` only lowers it; a dynamic axis without
    a profile, ONNX: ``max_batch`` or the default). Anything else (a batch on another axis, a fixed batch, a
    configuration input) gets ``max_batch_size 0`` with full dims. A scalar (rank 0) tensor has no Triton form
    (a non-batching model cannot have an empty reshape, and the TensorRT backend cannot batch a rank-0 tensor):
    refused with the fix."""
    for kind, tensors in (("input", io.inputs), ("output", io.outputs)):
        for tensor in tensors:
            if not tensor.shape:
                raise TrtqError(f"{kind} {tensor.name!r} is a scalar (rank 0), which Triton cannot serve (no dims in "
                                "a model it cannot batch, and the TensorRT backend cannot batch a rank-0 tensor); "
                                f"export the model with {tensor.name!r} as shape [1]")
    unbatchable = [t for t in io.inputs + io.outputs if t.batch_axis != 0 or t.shape[0] != -1]
    if unbatchable or not io.inputs:
        comments = []
        if unbatchable:
            tensor = unbatchable[0]
            why = ("has no batch axis" if tensor.batch_axis is None else
                   f"batches on axis {tensor.batch_axis}" if tensor.batch_axis != 0 else "has a fixed batch")
            comments.append(f"max_batch_size 0: {tensor.name!r} {why} (Triton batches on a dynamic axis 0 of every "
                            "input and output), so dims are the full shapes and clients send whole batches")
        return TritonModel(name, platform, 0, io.inputs, io.outputs, comments=comments)
    lo, opt, hi = io.batch_range()
    comments = []
    if hi is None:
        hi = int(max_batch or defaults.DEPLOY_MAX_BATCH)
    elif max_batch:
        if max_batch > hi:
            raise TrtqError(f"--max-batch {max_batch} exceeds the engine profile's max batch {hi}")
        hi = int(max_batch)
    preferred = sorted({b for b in (opt, hi) if b and (lo or 1) <= b <= hi})
    if lo and lo > 1:
        comments.append(f"the engine's profile accepts batches of {lo}..{hi}: Triton may send smaller ones, which "
                        "TensorRT rejects; rebuild with a profile from batch 1")
    return TritonModel(name, platform, hi, [_without_batch(t) for t in io.inputs],
                       [_without_batch(t) for t in io.outputs], preferred, dynamic_batching=hi > 1, comments=comments)


def _without_batch(tensor: TensorIO) -> TensorIO:
    return TensorIO(tensor.name, tensor.data_type, tuple(tensor.shape[1:]), tensor.profile, None)


def _quote(text: str) -> str:
    return json.dumps(str(text))  # protobuf text format accepts C-style escaped double-quoted strings


def render_config(model: TritonModel) -> str:
    """The ``config.pbtxt`` text (comments first: what it was made from)."""
    lines = [f"{MARKER} triton"] + [f"# {line}" for line in model.comments]
    lines += [f"name: {_quote(model.name)}", f"platform: {_quote(model.platform)}",
              f"max_batch_size: {int(model.max_batch_size)}"]
    for key, tensors in (("input", model.inputs), ("output", model.outputs)):
        lines.append(f"{key} [")
        for index, tensor in enumerate(tensors):
            lines += ["  {", f"    name: {_quote(tensor.name)}", f"    data_type: {tensor.data_type}"]
            if tensor.shape:
                lines.append(f"    dims: [ {', '.join(str(int(d)) for d in tensor.shape)} ]")
            elif model.max_batch_size > 0:  # one value per batch item ([batch] in the model): Triton's idiom
                lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
            else:
                raise TrtqError(f"{key} {tensor.name!r} has no dims in a model Triton cannot batch")
            lines.append("  }" + ("," if index < len(tensors) - 1 else ""))
        lines.append("]")
    if model.dynamic_batching:
        preferred = ", ".join(str(b) for b in model.preferred_batch_sizes)
        lines += ["dynamic_batching {"] + ([f"  preferred_batch_size: [ {preferred} ]"] if preferred else []) + \
                 [f"  max_queue_delay_microseconds: {defaults.DEPLOY_QUEUE_DELAY_US}", "}"]
    lines += ["instance_group [", "  {", "    count: 1", "    kind: KIND_GPU"]
    if model.dla_core is not None:  # the TensorRT backend sets the runtime's DLA core from it (else -1)
        lines.append(f"    secondary_devices [ {{ kind: KIND_NVDLA device_id: {int(model.dla_core)} }} ]")
    lines += ["  }", "]"]
    if model.accelerator is not None:
        lines += ["optimization {", "  execution_accelerators {", "    gpu_execution_accelerator: [", "      {",
                  '        name: "tensorrt"']
        for key, value in model.accelerator.items():
            lines.append(f"        parameters {{ key: {_quote(key)} value: {_quote(value)} }}")
        lines += ["      }", "    ]", "  }", "}"]
    for key, value in model.parameters.items():
        lines.append(f"parameters {{ key: {_quote(key)} value: {{ string_value: {_quote(value)} }} }}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- reading a config.pbtxt

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\')|([{}\[\]:,<>;])|([^\s{}\[\]:,<>;"\'#]+))')


def _unescape(body: str) -> str:
    """A text-format string literal's body: C escapes (``\\n``, ``\\x41``, octal ``\\101``, quotes) as protobuf
    reads them, bytes decoded as UTF-8."""
    from google.protobuf import text_encoding

    try:
        return text_encoding.CUnescape(body).decode("utf-8")
    except (ValueError, UnicodeDecodeError) as exc:
        raise TrtqError(f"the config has a string protobuf cannot read ({exc})") from None


def parse_pbtxt(text: str) -> dict:
    """Protobuf text format into nested dicts: every field maps to a list of its values (scalars as str/int/float,
    messages as dicts), without a schema: misspelt fields are read like any other. :func:`read_config` reads with
    Triton's schema where it is installed."""
    tokens = []
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            if text[position:].strip() == "":
                break
            raise TrtqError(f"cannot parse the config near {text[position:position + 30]!r}")
        position = match.end()
        comment, string, punct, word = match.groups()
        if comment is not None:
            continue
        if string is not None:
            tokens.append(("str", _unescape(string[1:-1])))
        elif punct is not None:
            tokens.append(("punct", punct))
        elif word is not None:
            tokens.append(("word", word))
    tokens.append(("end", None))
    index = 0

    def scalar(token):
        kind, value = token
        if kind == "str":
            return value
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value  # an enum name, true/false

    def message(closing: Optional[str]) -> dict:
        nonlocal index
        result: dict = {}
        while True:
            kind, value = tokens[index]
            if kind == "end":
                if closing is not None:
                    raise TrtqError("the config ends inside a message (a missing '}')")
                return result
            if kind == "punct" and value in ("}", ">") and closing is not None:
                index += 1
                return result
            if kind == "punct" and value in (",", ";"):
                index += 1
                continue
            if kind != "word":
                raise TrtqError(f"unexpected {value!r} in the config")
            name = value
            index += 1
            if tokens[index] == ("punct", ":"):
                index += 1
            result.setdefault(name, []).extend(values())

    def values() -> list:
        nonlocal index
        kind, value = tokens[index]
        if kind == "punct" and value in ("{", "<"):
            index += 1
            return [message("}" if value == "{" else ">")]
        if kind == "punct" and value == "[":
            index += 1
            items = []
            while tokens[index] != ("punct", "]"):
                if tokens[index] == ("punct", ","):
                    index += 1
                    continue
                if tokens[index][0] == "end":
                    raise TrtqError("the config ends inside a list (a missing ']')")
                items.extend(values())
            index += 1
            return items
        if kind in ("str", "word"):
            index += 1
            return [scalar((kind, value))]
        raise TrtqError(f"unexpected {value!r} in the config")

    return message(None)


def model_config_class():
    """Triton's own ``ModelConfig`` message class (the ``tritonclient`` wheel ships model_config.proto's module), or
    ``None`` where it is not installed (``pip install 'trtq[triton]'``)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("tritonclient")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "grpc" / "model_config_pb2.py"
    if not path.is_file():
        return None
    import sys

    module = sys.modules.get("trtq_triton_model_config_pb2")
    if module is None:  # by file: tritonclient.grpc's __init__ wants grpcio, which the schema does not need
        loader = importlib.util.spec_from_file_location("trtq_triton_model_config_pb2", path)
        module = importlib.util.module_from_spec(loader)
        try:
            loader.loader.exec_module(module)
        except Exception:  # noqa: BLE001 - a schema that does not load is a schema we do not have
            return None
        sys.modules["trtq_triton_model_config_pb2"] = module
    return module.ModelConfig


def read_config(text: str, where: str = "config.pbtxt") -> Tuple[dict, str]:
    """A ``config.pbtxt`` as Triton reads it: (the fields as :func:`parse_pbtxt` gives them, how it was read).

    With Triton's schema (``tritonclient``): protobuf's text format parser, which refuses what Triton refuses (a
    misspelt field, a value of the wrong type) with Triton's words, as one :class:`TrtqError` line. Without it:
    :func:`parse_pbtxt`, and the second value says that field names were not checked.
    """
    config_class = model_config_class()
    if config_class is None:
        return parse_pbtxt(text), ("read without Triton's schema (pip install 'trtq[triton]' for tritonclient's "
                                   "ModelConfig): field names are not checked")
    from google.protobuf import text_format

    message = config_class()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        raise TrtqError(f"Triton cannot read {where}: failed to read text proto ({' '.join(str(exc).split())})") \
            from None
    return _as_fields(message), "read with Triton's ModelConfig schema"


def _as_fields(message) -> dict:
    """A protobuf message as :func:`parse_pbtxt`'s dicts (every field a list; enums by name; maps as key/value)."""
    result: dict = {}
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None and descriptor.message_type.GetOptions().map_entry:
            value_field = descriptor.message_type.fields_by_name["value"]
            items = []
            for key in value:
                entry = value[key]
                items.append({"key": [key], "value": [_as_fields(entry) if value_field.message_type else entry]})
            result[descriptor.name] = items
            continue
        repeated = getattr(descriptor, "is_repeated", None)  # protobuf >= 6; older ones have only .label
        if repeated is None:
            repeated = descriptor.label == descriptor.LABEL_REPEATED
        values = list(value) if repeated else [value]
        if descriptor.message_type is not None:
            values = [_as_fields(v) for v in values]
        elif descriptor.enum_type is not None:
            values = [descriptor.enum_type.values_by_number[v].name for v in values]
        result[descriptor.name] = values
    return result


def load_problems(config: dict) -> List[str]:
    """What Triton refuses when it loads ``config`` (:func:`read_config`'s dicts), in Triton's words.

    Re-stated from triton-inference-server/core ``src/model_config_utils.cc`` (``ValidateModelConfig`` and
    ``ValidateIOShape``: batching vs dims, reshape, scalars, types) and the TensorRT backend's instance check (one
    ``KIND_NVDLA`` secondary device at most).
    """
    def first(entry: dict, key: str, default=None):
        values = entry.get(key) or []
        return values[0] if values else default

    problems = []
    max_batch = int(first(config, "max_batch_size", 0))
    if not first(config, "platform") and not first(config, "backend"):
        problems.append("must specify 'platform' or 'backend'")
    if max_batch < 0:
        problems.append("'max_batch_size' must be non-negative value")
    for batching in config.get("dynamic_batching", []):
        for size in batching.get("preferred_batch_size", []):
            if int(size) <= 0:
                problems.append("dynamic batching preferred size must be positive")
            elif int(size) > max_batch:
                problems.append("dynamic batching preferred size must be <= max batch size")
    for kind in ("input", "output"):
        for io in config.get(kind, []):
            prefix = f"model {kind} '{first(io, 'name', '')}' "
            dims = [int(d) for d in io.get("dims", [])]
            reshape = first(io, "reshape")
            shape = [int(d) for d in (reshape or {}).get("shape", [])] if reshape is not None else None
            if not first(io, "name"):
                problems.append(f"model {kind} must specify 'name'")
            if first(io, "data_type", "TYPE_INVALID") == "TYPE_INVALID":
                problems.append(f"model {kind} must specify 'data_type'")
            if not dims:
                problems.append(prefix + "must specify 'dims'")
                continue
            if shape is not None and not shape and max_batch == 0:
                problems.append(prefix + "cannot have empty reshape for non-batching model as scalar tensors are "
                                "not supported")
            if any(d < 1 and d != -1 for d in dims):
                problems.append(prefix + "dimension must be integer >= 1, or -1 to indicate a variable-size dimension")
            if shape is not None:
                if any(d < 1 and d != -1 for d in shape):
                    problems.append(prefix + "reshape dimensions must be integer >= 1, or -1 to indicate a "
                                    "variable-size dimension")
                elif _element_count(dims) != _element_count(shape) and \
                        (_element_count(shape) != 0 or _element_count(dims) != 1):
                    problems.append(prefix + "has different size for dims and reshape")
                elif _element_count(dims) == -1 and _trunks(dims) != _trunks(shape):
                    problems.append(prefix + "has different size for dims and reshape")
    for group in config.get("instance_group", []):
        devices = group.get("secondary_devices", [])
        if len(devices) > 1:
            problems.append("an instance group must have either zero or one secondary devices")
        if any(first(d, "kind", "KIND_NVDLA") != "KIND_NVDLA" for d in devices):
            problems.append("secondary device must be KIND_NVDLA")
    return problems


def _element_count(dims: Sequence[int]) -> int:
    """Triton's GetElementCount: -1 when any dim is variable, 0 for an empty shape."""
    if any(d == -1 for d in dims):
        return -1
    return int(np.prod(dims, dtype=np.int64)) if dims else 0


def _trunks(dims: Sequence[int]) -> List[int]:
    """Element counts between variable-size dims (Triton compares dims and reshape trunk by trunk)."""
    counts, current = [], 1
    for d in dims:
        if d == -1:
            counts.append(current)
            current = 1
        else:
            current *= d
    return counts + [current]


def model_name_problem(name: str) -> Optional[str]:
    """Why ``name`` cannot be a model of a repository (one folder of it), else None: a path (``..``, ``a/b``,
    ``/abs``) would put the model outside the repository, or where Triton does not look."""
    if not name or not name.strip():
        return "a model name must not be empty"
    if "/" in name or "\\" in name or name in (".", ".."):
        return (f"{name!r} is a path, not a model name: give one folder name of the repository (letters, digits, "
                "'_', '-', '.')")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        return f"{name!r} holds control characters; give a plain folder name"
    return None


def write_repository(model_path: PathLike, cache_path: PathLike, repository: PathLike, *, name: Optional[str] = None,
                     onnx_model: Optional[PathLike] = None, max_batch: Optional[int] = None, force: bool = False,
                     trt_fp16: bool = False, trt_cache_path: Optional[str] = None) -> dict:
    """Write ``repository/NAME/config.pbtxt`` and ``repository/NAME/1/model.plan`` (or ``model.onnx``).

    ``model_path``: a TensorRT engine, or the float ONNX model the cache calibrated (its Q/DQ INT8 form is
    written, with the cache's scales and mixed-precision list). ``trt_cache_path``: where the ONNX Runtime
    TensorRT accelerator keeps the engines it builds (default :data:`TRT_CACHE_ROOT`/NAME; the server's working
    directory is often read-only). Every file goes through the output guard first and is written atomically.
    Returns what was written and the notes.
    """
    from ..cache import check_cache_matches, model_of_cache, read_cache, sidecar_path
    from ..fileio import write_files_atomic
    from ..graph.model import load_onnx
    from ..outputs import Output, guard_outputs
    from .calibration import read_calibration

    model_path = Path(model_path)
    calibration = read_calibration(cache_path)
    is_onnx = model_path.suffix.lower() == ".onnx"
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", model_path.stem)
    problem = model_name_problem(name)
    if problem:
        raise TrtqError(f"model name: {problem} (--name)")
    if max_batch is not None and max_batch < 1:
        raise TrtqError(f"--max-batch {max_batch}: Triton's max_batch_size of a batching model is at least 1")
    folder = Path(repository) / name
    config_path = folder / "config.pbtxt"
    payload_path = folder / "1" / ("model.onnx" if is_onnx else "model.plan")
    reads = [("the model", model_path), ("the calibration cache", cache_path),
             ("the cache's sidecar", sidecar_path(cache_path))] + ([("the ONNX model", onnx_model)] if onnx_model else [])
    notes = guard_outputs([Output(config_path, "deploy-config", option="-o"),
                           Output(payload_path, "onnx" if is_onnx else "triton-model", option="-o")], reads,
                          force=force)
    comments = [f"calibration: {calibration.describe()}"]
    if calibration.image is not None:
        comments.append(f"clients must preprocess as calibrated: {calibration.image.describe()}")
    parameters = {"trtq.calibration": json.dumps(_calibration_record(calibration), sort_keys=True)}
    if is_onnx:
        from ..graph.qdq import check_quantized, quantize_model

        table = read_cache(cache_path)
        _, model, sha = model_of_cache(table, model_path, load_onnx(model_path), cache_path)  # or the rewrite it fits
        check_cache_matches(table, model, sha, _tensor_names(model))
        quantized, summary = quantize_model(model, table.amax, target="trt", exclude=calibration.float_layers)
        check_quantized(quantized, summary, model_path.name)
        io = _calibrated_size(onnx_io(model), calibration)
        plan = plan_model(name, io, "onnxruntime_onnx", max_batch)
        cache_dir = trt_cache_path or f"{TRT_CACHE_ROOT}/{name}"
        plan.accelerator = {"precision_mode": "FP16" if trt_fp16 else "INT8", "trt_engine_cache_enable": "1",
                            "trt_engine_cache_path": cache_dir}
        comments.append("ONNX Runtime backend, TensorRT accelerator, precision_mode INT8: the Q/DQ nodes carry the "
                        "scales (no int8_calibration_table_name: ONNX Runtime refuses one for a Q/DQ model)")
        comments.append(f"trt_engine_cache_path {cache_dir}: where the accelerator keeps the engines it builds (a "
                        "writable folder; a persistent volume saves the build on every restart)")
        payload = quantized.SerializeToString()
    else:
        io = engine_io(model_path, onnx_model)
        plan = plan_model(name, io, "tensorrt_plan", max_batch)
        needs, plan.dla_core = load_requirements(io.report)
        comments += needs
        io.notes += needs
        payload = model_path.read_bytes()
    plan.comments = comments + plan.comments + [f"inputs and outputs from: {io.source}"]
    plan.parameters = parameters
    text = render_config(plan)
    write_files_atomic({payload_path: payload, config_path: text.encode("utf-8")})
    return {"config": config_path, "model": payload_path, "plan": plan, "notes": notes + io.notes,
            "calibration": calibration}


#: Parent of the ONNX Runtime TensorRT accelerator's engine cache (``trt_engine_cache_path``) by default: writable in
#: Triton's containers, where the working directory often is not.
TRT_CACHE_ROOT = "/tmp/trtq-trt-engine-cache"


def load_requirements(report: Optional[dict]) -> Tuple[List[str], Optional[int]]:
    """What an engine's build report says Triton needs to load it: (lines for the config and the notes, DLA core).

    Triton's TensorRT backend loads a ``--version-compatible`` plan only when the server runs with
    ``--backend-config=tensorrt,version-compatible=true``, deserializes plugin layers only with their libraries
    (``--backend-config=tensorrt,plugins="a.so;b.so"``), and sets the runtime's DLA core from the instance group's
    ``KIND_NVDLA`` secondary device (else -1: a DLA engine does not load).
    """
    built = (report or {}).get("tensorrt") or {}
    lines = []
    if "VERSION_COMPATIBLE" in (built.get("builder_flags") or []):
        lines.append("version-compatible engine: start tritonserver with --backend-config=tensorrt,"
                     "version-compatible=true (without it the TensorRT backend refuses the plan)")
    plugins = [str(p) for p in built.get("plugins") or []]
    if plugins:
        lines.append("the engine has plugin layers: start tritonserver with --backend-config=tensorrt,plugins=\""
                     + ";".join(plugins) + "\" (the libraries' paths on the server)")
    dla_core = built.get("dla_core")
    if dla_core is not None:
        dla_core = int(dla_core)
        lines.append(f"DLA engine: instance_group names DLA core {dla_core} (secondary_devices KIND_NVDLA)")
    return lines, dla_core


def _calibrated_size(io: ModelIO, calibration) -> ModelIO:
    """Dynamic height/width of an image input pinned to the size it was calibrated at (what clients send)."""
    image = calibration.image
    for tensor in io.inputs:
        if image is None or tensor.name != image.input or len(tensor.shape) != 4:
            continue
        axes = (2, 3) if image.layout == "NCHW" else (1, 2)
        shape = list(tensor.shape)
        for axis, size in zip(axes, (image.height, image.width)):
            if shape[axis] == -1:
                shape[axis] = size
        if tuple(shape) != tensor.shape:
            io.notes.append(f"input {tensor.name!r}: dynamic height/width set to the calibrated "
                            f"{image.height}x{image.width}")
            tensor.shape = tuple(shape)
    return io


def _tensor_names(model) -> List[str]:
    from ..graph.qdq import tensor_names

    return tensor_names(model)


def _calibration_record(calibration) -> dict:
    """What ``deploy check`` compares a Triton config with (the preprocessing clients must apply)."""
    record = {"cache": calibration.cache_path.name, "trt_version": calibration.trt_version,
              "algorithm": calibration.algorithm, "model_sha256": calibration.model_sha256}
    if calibration.image is not None:
        image = calibration.image
        record["preprocess"] = {"layout": image.layout, "color": image.color, "size": [image.height, image.width],
                                "scale": image.scale, "mean": list(image.mean), "std": list(image.std)}
    return record


__all__ = ["TensorIO", "ModelIO", "TritonModel", "onnx_io", "engine_io", "plan_model", "render_config",
           "parse_pbtxt", "read_config", "load_problems", "model_config_class", "write_repository", "triton_type",
           "load_requirements", "TRT_CACHE_ROOT"]
