"""Per-channel std folded into the model, so that one-scale pipelines (DeepStream) feed it exactly.

A calibration fed ``y_c = (x * scale - mean_c) / std_c``. The folded model takes
``z_c = x * scale - mean_c`` (one scale for every channel: nvinfer's ``net-scale-factor =
scale``, ``offsets_c = mean_c / scale``) and computes ``y_c = z_c / std_c`` itself:

- where every consumer of the input is a Conv (group 1, constant weights, NCHW), the first
  layer absorbs it: ``W[:, c] /= std_c``. Exact in real arithmetic, zero padding included
  (the map has no offset, so a padded zero stays zero);
- otherwise a ``Mul`` by ``1/std`` is inserted after the input.

Every other tensor keeps its name and values, so the calibration's amax carry over; the
input's amax is that of ``z``, from the pixel range (0..255) through the preprocessing.
The folded model is run against the original on calibration samples before anything is
written; a difference beyond float rounding is an error.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .. import defaults
from ..errors import TrtqError
from .calibration import Calibration, ImagePreprocessing

#: Largest max |folded - original| / max |original| accepted (float32 rounding of reordered products).
FOLD_RTOL = 1e-4


@dataclass
class FoldResult:
    """The folded model, its cache and sidecar (bytes), its preprocessing, and the verification."""

    model_bytes: bytes
    cache_bytes: bytes
    sidecar_bytes: bytes
    image: ImagePreprocessing
    how: str
    samples: int
    max_error: float
    max_output: float


def fold_std(model, image: ImagePreprocessing) -> Tuple[object, str, Optional[str]]:
    """A copy of ``model`` whose input is ``z = y * std`` (per channel); returns (model, how, renamed)
    where ``renamed`` is the new name of the old input's values (inserted Mul), else None."""
    import onnx
    from onnx import helper, numpy_helper

    folded = copy.deepcopy(model)
    graph = folded.graph
    name = image.input
    inv = (1.0 / np.asarray(image.std, dtype=np.float64))
    consumers = [node for node in graph.node if name in node.input]
    weights = {init.name: init for init in graph.initializer}
    users: Dict[str, int] = {}
    for node in graph.node:
        for tensor in node.input:
            users[tensor] = users.get(tensor, 0) + 1

    def conv_ok(node) -> bool:
        if node.op_type != "Conv" or list(node.input).count(name) != 1 or node.input[0] != name:
            return False
        group = next((a.i for a in node.attribute if a.name == "group"), 1)
        weight = node.input[1] if len(node.input) > 1 else ""
        return group == 1 and weight in weights and users.get(weight, 0) == 1

    if image.layout == "NCHW" and consumers and all(conv_ok(node) for node in consumers):
        for node in consumers:
            init = weights[node.input[1]]
            array = numpy_helper.to_array(init)
            if array.ndim < 2 or array.shape[1] != len(inv):
                break
            shape = [1, len(inv)] + [1] * (array.ndim - 2)
            scaled = (array.astype(np.float64) * inv.reshape(shape)).astype(array.dtype)
            init.CopyFrom(numpy_helper.from_array(scaled, init.name))
        else:
            return folded, "the first Conv's weights divided by std per input channel", None
        folded = copy.deepcopy(model)  # a weight of an unexpected shape: fall back to a Mul
        graph = folded.graph
    renamed = f"{name}__trtq_std_folded"
    shape = [1, len(inv), 1, 1] if image.layout == "NCHW" else [1, 1, 1, len(inv)]
    input_type = next(vi for vi in graph.input if vi.name == name).type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(input_type)
    constant = numpy_helper.from_array(inv.reshape(shape).astype(dtype), f"{name}__trtq_inv_std")
    for node in graph.node:
        for index, tensor in enumerate(node.input):
            if tensor == name:
                node.input[index] = renamed
    for output in graph.output:
        if output.name == name:
            raise TrtqError(f"input {name!r} is also a graph output; trtq cannot fold into it")
    graph.initializer.append(constant)
    graph.node.insert(0, helper.make_node("Mul", [name, constant.name], [renamed], name=f"{name}__trtq_std_fold"))
    onnx.checker.check_model(folded)
    return folded, "a Mul by 1/std inserted after the input", renamed


def z_amax(image: ImagePreprocessing) -> float:
    """Largest |z_c| = |x * scale - mean_c| over 0..255 pixels: the folded input's amax."""
    peak = 255.0 * image.scale
    return float(max(max(abs(m), abs(peak - m)) for m in image.mean))


def _feeds(calibration: Calibration, model, calib, limit: int):
    """Calibration samples as the original model was fed them (the sidecar's data and preprocessing)."""
    from ..data import open_source
    from ..data.spec import DataSpec, Preprocess
    from ..graph.signature import input_specs

    data = (calibration.sidecar or {}).get("data") or {}
    if calib is None:
        path = data.get("path")
        if not path or not Path(path).exists():
            raise TrtqError(f"folding verifies the new model on the calibration samples, and the sidecar's data path "
                            f"{path!r} is not here: give it with --calib")
        calib = path
    if isinstance(data.get("samples"), int) and data["samples"] > 0:
        limit = min(limit, data["samples"])
    if isinstance(calib, DataSpec):
        spec = calib
    else:
        recorded = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (data.get("preprocess") or {}).items()
                    if k in Preprocess.__dataclass_fields__}
        spec = DataSpec(path=str(calib), samples=limit, batch_size=min(limit, defaults.BATCH_SIZE),
                        seed=int(data.get("seed") or defaults.SEED), preprocess=Preprocess(**recorded))
    source = open_source(dataclasses.replace(spec, samples=min(limit, spec.samples or limit)), input_specs(model))
    return [dict(batch) for batch in source]


def verify_fold(original, folded, feeds: List[Dict[str, np.ndarray]], image: ImagePreprocessing
                ) -> Tuple[int, float, float]:
    """Run both on ``feeds`` (original's inputs; the folded one gets ``y * std``): (samples, max |diff|, max |out|)."""
    from ..ort import create_session, run

    first, second = create_session(original), create_session(folded)
    axis_shape = [1, -1, 1, 1] if image.layout == "NCHW" else [1, 1, 1, -1]
    std = np.asarray(image.std, dtype=np.float32).reshape(axis_shape)
    samples, error, peak = 0, 0.0, 0.0
    for feed in feeds:
        reference = run(first, feed)
        scaled = dict(feed)
        scaled[image.input] = (np.asarray(feed[image.input], dtype=np.float32) * std).astype(
            np.asarray(feed[image.input]).dtype)
        result = run(second, scaled)
        for key, value in reference.items():
            ref = np.asarray(value, dtype=np.float64)
            error = max(error, float(np.max(np.abs(ref - np.asarray(result[key], dtype=np.float64)), initial=0.0)))
            peak = max(peak, float(np.max(np.abs(ref), initial=0.0)))
        samples += len(next(iter(feed.values())))
    return samples, error, peak


def fold_deployment(model, model_path: Path, calibration: Calibration, table, calib=None,
                    samples: int = defaults.SENSITIVITY_SAMPLES) -> FoldResult:
    """Fold, verify on up to ``samples`` calibration samples, and make the folded model's cache and sidecar."""
    from .. import cache as cache_io
    from ..graph.model import model_fingerprint

    image = calibration.image
    if image is None:
        raise TrtqError("folding needs the calibration's image preprocessing")
    folded, how, renamed = fold_std(model, image)
    count, error, peak = verify_fold(model, folded, _feeds(calibration, model, calib, samples), image)
    if count == 0:
        raise TrtqError("no calibration samples could be read to verify the folded model")
    if error > FOLD_RTOL * max(peak, 1e-12):
        raise TrtqError(f"the folded model differs from the original by {error:.3g} (max |output| {peak:.3g}) on "
                        f"{count} calibration samples; nothing was written")
    recorded = (calibration.sidecar or {}).get("amax") or {}
    amax = {name: float(recorded.get(name, value)) for name, value in table.amax.items()}  # full precision
    if renamed is not None and image.input in amax:
        amax[renamed] = amax[image.input]
    amax[image.input] = z_amax(image)
    data = folded.SerializeToString()
    new_image = dataclasses.replace(image, std=(1.0,) * image.channels)
    sidecar = copy.deepcopy(calibration.sidecar or {})
    record = sidecar.setdefault("model", {})
    record.update({"file": model_path.stem + ".folded.onnx", "sha256": _sha256(data),
                   "fingerprint": model_fingerprint(folded)})
    sidecar.setdefault("data", {}).setdefault("preprocess", {})["std"] = [1.0]
    sidecar["amax"] = {k: float(v) for k, v in amax.items()}
    sidecar["folded"] = {"from": model_path.name, "from_sha256": calibration.model_sha256, "how": how,
                         "std": list(image.std), "verified_samples": count, "max_error": error, "max_output": peak}
    cache_bytes = cache_io.format_cache(amax, calibration.trt_version, calibration.header_algorithm)
    return FoldResult(data, cache_bytes, cache_io.sidecar_bytes(sidecar), new_image, how, count, error, peak)


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


__all__ = ["FoldResult", "fold_std", "verify_fold", "fold_deployment", "z_amax", "FOLD_RTOL"]
