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


@dataclass
class ModelIO:
    """Inputs and outputs, where they came from, and the batch range the model accepts."""

    inputs: List[TensorIO]
    outputs: List[TensorIO]
    source: str                          # "tensorrt", "build report + onnx", "onnx"
    notes: List[str] = field(default_factory=list)

    def batch_range(self) -> Tuple[Optional[int], Optional[int], Optional[int]]:
        """(min, opt, max) batch over the inputs; (None, None, None) when the batch axis is dynamic without a profile;
        (n, n, n) for a static batch axis."""
        lo = opt = hi = None
        for tensor in self.inputs:
            if not tensor.shape:
                continue
            if tensor.shape[0] > 0:
                return tensor.shape[0], tensor.shape[0], tensor.shape[0]
            if tensor.profile is not None:
                lo = max(lo or 1, tensor.profile[0][0])
                opt = max(opt or 1, tensor.profile[1][0])
                hi = min(hi or 1 << 30, tensor.profile[2][0])
        return lo, opt, hi


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
    """Inputs and outputs of an ONNX model (symbolic dims are -1)."""
    from ..graph.model import output_specs
    from ..graph.signature import input_specs

    return ModelIO([TensorIO(s.name, triton_type(s.dtype), _dims(s.shape)) for s in input_specs(model)],
                   [TensorIO(s.name, triton_type(s.dtype), _dims(s.shape)) for s in output_specs(model)], "onnx")


def engine_io(engine: PathLike, model: Optional[PathLike] = None) -> ModelIO:
    """An engine's I/O and profile: from TensorRT where it loads, else from trtq's build report and the ONNX model.

    ``model``: the ONNX model the engine was built from (default: the build report's model
    file beside the engine). Raises a one-line error when neither way works.
    """
    from ..backend.runner import read_build_report
    from ..errors import BackendUnavailable

    engine = Path(engine)
    if not engine.is_file():
        raise ModelError(f"engine file {engine} does not exist")
    try:
        from ..backend.engine_io import read_engine_io

        tensors = read_engine_io(engine)
        inputs = [TensorIO(t.name, triton_type(t.dtype, t.trt_dtype), tuple(t.shape), t.profile)
                  for t in tensors if t.is_input]
        outputs = [TensorIO(t.name, triton_type(t.dtype, t.trt_dtype), tuple(t.shape)) for t in tensors
                   if not t.is_input]
        return ModelIO(inputs, outputs, "tensorrt")
    except BackendUnavailable as exc:
        unavailable = str(exc).split(";")[0]
    report = read_build_report(engine)
    if report is None:
        raise TrtqError(f"cannot read {engine.name}'s inputs, outputs and profile: {unavailable}, and no trtq build "
                        f"report ({engine.name}.json) is beside it. Run this where TensorRT and a GPU are, or give "
                        "the ONNX model (--model) and a trtq-built engine")
    if model is None:
        recorded = (report.get("model") or {}).get("file")
        model = engine.with_name(recorded) if recorded else None
        if model is None or not Path(model).is_file():
            raise TrtqError(f"TensorRT is not available here ({unavailable}); {engine.name}'s build report names model "
                            f"{recorded!r}, which is not beside the engine: give it with --model")
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
    io.notes.append(f"TensorRT is not available here: I/O from {Path(model).name}, profile from {engine.name}.json")
    return io


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


def plan_model(name: str, io: ModelIO, platform: str, max_batch: Optional[int] = None) -> TritonModel:
    """Batching from the model: a static batch axis -> ``max_batch_size 0`` and full dims; a profile -> its max
    (``max_batch`` only lowers it); a dynamic axis without a profile (ONNX) -> ``max_batch`` or the default."""
    lo, opt, hi = io.batch_range()
    batched = all(t.shape and t.shape[0] == -1 for t in io.inputs) and bool(io.inputs)
    comments = []
    if not batched:
        return TritonModel(name, platform, 0, io.inputs, io.outputs, comments=comments)
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
    for tensor in io.outputs:
        if not tensor.shape or tensor.shape[0] != -1:
            raise TrtqError(f"output {tensor.name!r} has shape {list(tensor.shape)}: its first axis is not the batch "
                            "axis, so Triton cannot batch this model; export it with a dynamic batch axis on every "
                            "output")
    return TritonModel(name, platform, hi, [_without_batch(t) for t in io.inputs],
                       [_without_batch(t) for t in io.outputs], preferred, dynamic_batching=hi > 1, comments=comments)


def _without_batch(tensor: TensorIO) -> TensorIO:
    return TensorIO(tensor.name, tensor.data_type, tuple(tensor.shape[1:]), tensor.profile)


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
            else:  # one value per batch item: Triton's dims cannot be empty, [1] is reshaped to a scalar
                lines += ["    dims: [ 1 ]", "    reshape: { shape: [ ] }"]
            lines.append("  }" + ("," if index < len(tensors) - 1 else ""))
        lines.append("]")
    if model.dynamic_batching:
        preferred = ", ".join(str(b) for b in model.preferred_batch_sizes)
        lines += ["dynamic_batching {"] + ([f"  preferred_batch_size: [ {preferred} ]"] if preferred else []) + \
                 [f"  max_queue_delay_microseconds: {defaults.DEPLOY_QUEUE_DELAY_US}", "}"]
    lines += ["instance_group [", "  {", "    count: 1", "    kind: KIND_GPU", "  }", "]"]
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


def parse_pbtxt(text: str) -> dict:
    """Protobuf text format into nested dicts: every field maps to a list of its values (scalars as str/int/float,
    messages as dicts). Enough to read a Triton config without its schema (``deploy check``)."""
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
            tokens.append(("str", json.loads('"' + string[1:-1].replace('\\\'', "'") + '"')))
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


def write_repository(model_path: PathLike, cache_path: PathLike, repository: PathLike, *, name: Optional[str] = None,
                     onnx_model: Optional[PathLike] = None, max_batch: Optional[int] = None, force: bool = False,
                     trt_fp16: bool = False) -> dict:
    """Write ``repository/NAME/config.pbtxt`` and ``repository/NAME/1/model.plan`` (or ``model.onnx``).

    ``model_path``: a TensorRT engine, or the float ONNX model the cache calibrated (its Q/DQ INT8 form is
    written, with the cache's scales and mixed-precision list). Every file goes through the output guard
    first and is written atomically. Returns what was written and the notes.
    """
    from ..cache import check_cache_matches, read_cache, sidecar_path
    from ..fileio import Output, guard_outputs, write_files_atomic
    from ..graph.model import file_sha256, load_onnx
    from .calibration import read_calibration

    model_path = Path(model_path)
    calibration = read_calibration(cache_path)
    is_onnx = model_path.suffix.lower() == ".onnx"
    name = name or re.sub(r"[^A-Za-z0-9_.-]", "_", model_path.stem)
    folder = Path(repository) / name
    config_path = folder / "config.pbtxt"
    payload_path = folder / "1" / ("model.onnx" if is_onnx else "model.plan")
    reads = [("the model", model_path), ("the calibration cache", cache_path),
             ("the cache's sidecar", sidecar_path(cache_path))] + ([("the ONNX model", onnx_model)] if onnx_model else [])
    notes = guard_outputs([Output(config_path, "deploy-config", option="-o"),
                           Output(payload_path, "onnx" if is_onnx else None, option="-o")], reads, force=force)
    comments = [f"calibration: {calibration.describe()}"]
    if calibration.image is not None:
        comments.append(f"clients must preprocess as calibrated: {calibration.image.describe()}")
    parameters = {"trtq.calibration": json.dumps(_calibration_record(calibration), sort_keys=True)}
    if is_onnx:
        from ..graph.qdq import check_quantized, quantize_model

        model = load_onnx(model_path)
        table = read_cache(cache_path)
        check_cache_matches(table, model, file_sha256(model_path), _tensor_names(model))
        quantized, summary = quantize_model(model, table.amax, target="trt", exclude=calibration.float_layers)
        check_quantized(quantized, summary, model_path.name)
        io = _calibrated_size(onnx_io(model), calibration)
        plan = plan_model(name, io, "onnxruntime_onnx", max_batch)
        plan.accelerator = {"precision_mode": "FP16" if trt_fp16 else "INT8", "trt_engine_cache_enable": "1"}
        comments.append("ONNX Runtime backend, TensorRT accelerator, precision_mode INT8: the Q/DQ nodes carry the "
                        "scales (no int8_calibration_table_name: ONNX Runtime refuses one for a Q/DQ model)")
        payload = quantized.SerializeToString()
    else:
        io = engine_io(model_path, onnx_model)
        plan = plan_model(name, io, "tensorrt_plan", max_batch)
        payload = model_path.read_bytes()
    plan.comments = comments + plan.comments + [f"inputs and outputs from: {io.source}"]
    plan.parameters = parameters
    text = render_config(plan)
    write_files_atomic({payload_path: payload, config_path: text.encode("utf-8")})
    return {"config": config_path, "model": payload_path, "plan": plan, "notes": notes + io.notes,
            "calibration": calibration}


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
           "parse_pbtxt", "write_repository", "triton_type"]
