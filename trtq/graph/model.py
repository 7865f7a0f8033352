"""Loading ONNX models and describing their inputs and outputs."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Tuple, Union

import numpy as np

from ..errors import ModelError

Dim = Union[int, str, None]  # int: static; str: symbolic name; None: unknown


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape and numpy dtype of a graph input or output."""

    name: str
    shape: Tuple[Dim, ...]
    dtype: np.dtype
    #: the axis that counts samples (see :func:`batch_axes`); None: no batch axis, the same array goes
    #: with every batch (a scalar, a shape or configuration tensor)
    batch_axis: Optional[int] = 0

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def batched(self) -> bool:
        return self.batch_axis is not None and self.rank > 0

    @property
    def batch_dim(self) -> Dim:
        """The declared size of the batch axis (None without one)."""
        return self.shape[self.batch_axis] if self.batched else None

    def static_batch(self) -> bool:
        """Whether the model fixes this input's batch size."""
        return self.batched and self.is_static(self.batch_axis)

    def is_static(self, axis: int) -> bool:
        return isinstance(self.shape[axis], int) and self.shape[axis] > 0

    def shape_text(self) -> str:
        return "x".join(str(d) if isinstance(d, int) and d > 0 else (d or "?") for d in self.shape)


def load_onnx(path: Union[str, Path], load_external_data: bool = True):
    """Load and sanity-check an ONNX file, with a clear error for anything else."""
    import onnx

    path = Path(path)
    if not path.exists():
        raise ModelError(f"model file {path} does not exist")
    if path.is_dir():
        raise ModelError(f"model path {path} is a folder; give the .onnx file")
    from ..fileio import check_regular  # a FIFO would block the read forever

    check_regular(path, f"model {path}", ModelError, "give the .onnx file")
    try:
        model = onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # onnx raises DecodeError, ValueError, OSError...
        raise ModelError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc})".strip()) from None
    if not model.graph.node and not model.graph.input:
        raise ModelError(f"{path} is not an ONNX model (it parsed, but holds no graph)")
    return model


def external_data_files(path: Union[str, Path]) -> List[Path]:
    """The external-data files an ONNX model at ``path`` reads its weights from (``model.onnx.data``...).

    They are inputs of every command that reads the model (the output guard refuses to
    write onto them). Cheap for the common case: the file is parsed only when its bytes
    hold an external-data ``location`` entry. Anything unreadable or not ONNX: ``[]``.
    """
    import mmap

    path = Path(path)
    if not os.path.isfile(path):  # never open a FIFO or a device here (it could block forever)
        return []
    try:
        with open(path, "rb") as handle:
            head = handle.read(2)  # a ModelProto starts with ir_version (field 1, a small varint): not an engine
            if len(head) < 2 or head[0] != 0x08 or not 0 < head[1] < 64:
                return []
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                if view.find(b"\x0a\x08location") < 0:  # StringStringEntryProto key "location"
                    return []
    except (OSError, ValueError):
        return []
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - not ONNX: loading it later says so
        return []
    from onnx.external_data_helper import _get_all_tensors

    files: List[Path] = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        for entry in tensor.external_data:
            if entry.key == "location" and entry.value:
                candidate = path.parent / entry.value
                if candidate not in files:
                    files.append(candidate)
    return files


#: dim_param texts that name nothing (exporters write them for "unknown", paddle2onnx ``?``): each such dim
#: is an independent unknown, never one size shared by every dim that carries the same text.
PLACEHOLDER_DIMS = re.compile(r"^\s*(\?|-1|none|null|unk|unknown|dynamic|-)?\s*$", re.IGNORECASE)


def _dims(type_proto) -> Tuple[Dim, ...]:
    dims: list = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and not PLACEHOLDER_DIMS.match(d.dim_param):
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return tuple(dims)


def tensor_spec(value_info) -> TensorSpec:
    from onnx import helper

    elem = value_info.type.tensor_type.elem_type
    if not value_info.type.HasField("tensor_type") or elem == 0:
        raise ModelError(f"graph tensor {value_info.name!r} is not a tensor trtq can feed (sequence, map or untyped)")
    return TensorSpec(value_info.name, _dims(value_info.type), np.dtype(helper.tensor_dtype_to_np_dtype(elem)))


def raw_input_specs(model) -> List[TensorSpec]:
    """Real graph inputs as declared (initializers listed as inputs, as old exporters do, are skipped), batch
    axis 0 each: :func:`trtq.graph.signature.input_specs` gives them with the batch axes the graph says."""
    initializers = {init.name for init in model.graph.initializer}
    return [tensor_spec(vi) for vi in model.graph.input if vi.name not in initializers]


def output_specs(model) -> List[TensorSpec]:
    return [tensor_spec(vi) for vi in model.graph.output]


def file_sha256(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while True:
            block = handle.read(chunk)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()


def model_sha256(model) -> str:
    """Fingerprint of a loaded model (its serialized graph and weights)."""
    return hashlib.sha256(model.SerializeToString()).hexdigest()


def opset_version(model, domain: str = "") -> Optional[int]:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx") and domain in ("", "ai.onnx"):
            return int(entry.version)
        if entry.domain == domain:
            return int(entry.version)
    return None


#: Version of :func:`model_fingerprint`'s recipe (a sidecar from another recipe is compared by sha256).
FINGERPRINT_VERSION = 1


def model_fingerprint(model) -> dict:
    """What decides a calibration, hashed: graph topology (ops, attributes, wiring), tensor names,
    initializer contents and input specs. Doc strings, metadata, producer, value_info (shape
    inference) and the protobuf encoding are left out, so a re-saved model keeps its fingerprint.

    Per-initializer digests are kept (16 hex digits each) so a mismatch can say what changed.
    """
    from onnx import numpy_helper

    graph = hashlib.sha256()
    for node in model.graph.node:
        graph.update(f"{node.domain}|{node.op_type}|{','.join(node.input)}|{','.join(node.output)}".encode())
        for attribute in sorted(node.attribute, key=lambda a: a.name):
            copy = type(attribute)()
            copy.CopyFrom(attribute)
            copy.ClearField("doc_string")
            graph.update(copy.SerializeToString(deterministic=True))
    outputs = [o.name for o in model.graph.output]
    graph.update(("outputs|" + ",".join(outputs)).encode())
    weights = {}
    for init in model.graph.initializer:
        array = numpy_helper.to_array(init)
        digest = hashlib.sha256(f"{array.dtype}|{array.shape}|".encode())
        digest.update(np.ascontiguousarray(array).tobytes())
        weights[init.name] = digest.hexdigest()[:16]
    specs = [[s.name, [d if isinstance(d, int) else None for d in s.shape], str(s.dtype)] for s in raw_input_specs(model)]
    return {"version": FINGERPRINT_VERSION, "graph": graph.hexdigest(), "nodes": len(model.graph.node),
            "outputs": outputs, "inputs": specs, "initializers": weights}


def fingerprint_changes(saved: Optional[dict], current: dict) -> Optional[List[str]]:
    """What differs between two fingerprints ([] = the same model); None when ``saved`` cannot be compared."""
    if not isinstance(saved, dict) or saved.get("version") != current.get("version"):
        return None
    changes: List[str] = []
    if saved.get("inputs") != current["inputs"]:
        changes.append("the model inputs changed")
    if saved.get("graph") != current["graph"]:
        before, now = saved.get("nodes"), current["nodes"]
        count = f" ({before} -> {now} nodes)" if before != now else " (same node count: ops, attributes or wiring)"
        changes.append(f"the graph changed{count}")
        if saved.get("outputs") != current["outputs"]:
            changes.append(f"the outputs changed ({', '.join(saved.get('outputs') or [])} -> "
                           f"{', '.join(current['outputs'])})")
    old = saved.get("initializers") or {}
    new = current["initializers"]
    changed = [n for n in new if n in old and old[n] != new[n]]
    added = [n for n in new if n not in old]
    removed = [n for n in old if n not in new]
    for names, what in ((changed, "changed values"), (added, "new"), (removed, "removed")):
        if names:
            more = f" and {len(names) - 1} more" if len(names) > 1 else ""
            changes.append(f"weights {what}: {names[0]!r}{more}")
    return changes


PathLike = Union[str, Path]


def model_and_name(model: Union[PathLike, Any]):
    """(ModelProto, display name) for a path or an in-memory model."""
    if hasattr(model, "graph"):
        return model, (model.graph.name or "in-memory model")
    return load_onnx(model), Path(model).name


def model_reads(*paths: Optional[str], what: str = "the model") -> List[Tuple[str, Path]]:
    """Each model file and the external-data files its weights live in (``model.onnx.data``)."""
    reads: List[Tuple[str, Path]] = []
    for p in paths:
        if p:
            reads.append((what, Path(p)))
            reads += [(f"the external data of {what}", data)
                      for data in external_data_files(p)]
    return reads


#: Ops that make a model INT8 (explicit Q/DQ, ORT's QOperator form, integer kernels).
_INT8_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
             "QGemm", "QAttention", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"}


def infer_precision(model) -> str:
    """``"int8"`` for a model with quantize/dequantize or QLinear* ops, ``"fp16"`` for float16 tensors, else ``"fp32"``."""
    from onnx import TensorProto

    nodes = list(model.graph.node)
    if any(n.op_type in _INT8_OPS or n.op_type.startswith("QLinear") for n in nodes):
        return "int8"
    if any(init.data_type == TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    typed = list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info)
    if any(vi.type.tensor_type.elem_type == TensorProto.FLOAT16 for vi in typed):
        return "fp16"
    if any(n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute) for n in nodes):
        return "fp16"
    return "fp32"
