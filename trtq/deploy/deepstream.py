"""DeepStream ``nvinfer`` config files (GLib key files) that match a calibration.

nvinfer's preprocessing (DeepStream's Gst-nvinfer documentation) is ``y = net-scale-factor *
(x - offsets[c])`` on 0..255 pixels, one scalar scale, per-channel offsets, in the order
``model-color-format`` names (0 RGB, 1 BGR, 2 GRAY). A calibration's ``y = (x * scale -
mean[c]) / std[c]`` is the same map when every ``scale / std[c]`` is equal: then
``net-scale-factor = scale / std`` and ``offsets[c] = mean[c] / scale``. Per-channel std has
no nvinfer form; :mod:`trtq.deploy.fold` folds it into the model instead.

Key-file rules (nvinfer's property parser, ``gstnvinfer_property_parser``): a ``[property]``
group is mandatory; ``key=value`` lines, ``#`` comments, lists separated by ``;``;
``network-mode`` 0 FP32, 1 INT8, 2 FP16 (3 BEST on newer releases); ``model-color-format``
0/1/2; ``infer-dims`` exactly three integers ``c;h;w``; ``offsets`` at most 4 values;
``batch-size`` 1..1024; ``network-input-order`` 0 NCHW, 1 NHWC; ``network-type`` 0 detector,
1 classifier, 2 segmentation, 3 instance segmentation, 100 other; ``layer-device-precision``
``layer:precision:device`` entries (nvdsinfer splits each at its first two ``:``; the layer is matched
by its exact TensorRT name); ``enable-dla`` and ``use-dla-core``; relative paths are resolved
against the config file's folder. :func:`check_rules` applies these to any key file.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from ..errors import TrtqError
from . import MARKER
from .calibration import ImagePreprocessing

PathLike = Union[str, Path]

NETWORK_MODES = {"fp32": 0, "int8": 1, "fp16": 2}
NETWORK_MODE_VALUES = (0, 1, 2, 3)
COLOR_FORMATS = {"RGB": 0, "BGR": 1, "GRAY": 2}
NETWORK_TYPES = {"detector": 0, "classifier": 1, "segmentation": 2, "instance-segmentation": 3, "other": 100}
INPUT_ORDERS = {"NCHW": 0, "NHWC": 1}
#: NVDSINFER_MAX_BATCH_SIZE and _MAX_CHANNELS of nvinfer's headers
MAX_BATCH_SIZE = 1024
MAX_OFFSETS = 4
#: Relative tolerance when comparing a config's scale/offsets with the calibration's (float text round trips).
RTOL = 1e-4


@dataclass(frozen=True)
class Normalization:
    """nvinfer's ``net-scale-factor`` and ``offsets`` for a calibration, and whether they are exact."""

    net_scale_factor: float
    offsets: Tuple[float, ...]
    exact: bool
    reason: str = ""


def nvinfer_normalization(image: ImagePreprocessing) -> Normalization:
    """The nvinfer form of the calibration's preprocessing (``exact`` False for per-channel std)."""
    gain, bias = image.gain_bias()
    scale = float(gain[0])
    offsets = tuple(float(-b / scale) for b in bias)
    if np.allclose(gain, scale, rtol=1e-9, atol=0.0):
        return Normalization(scale, offsets, True)
    stds = ", ".join(f"{s:g}" for s in image.std)
    return Normalization(scale, offsets, False,
                         f"the calibration divides each channel by its own std ({stds}); nvinfer has one "
                         "net-scale-factor for all channels")


# ----------------------------------------------------------------------------- GLib key files


def parse_keyfile(text: str) -> Dict[str, Dict[str, str]]:
    """Groups of ``key=value`` as GLib reads them (``#`` comments, ``[group]`` headers, last duplicate wins)."""
    groups: Dict[str, Dict[str, str]] = {}
    current: Optional[str] = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if not line.endswith("]") or len(line) < 3:
                raise TrtqError(f"line {number}: {raw.strip()!r} is not a [group] header")
            current = line[1:-1]
            groups.setdefault(current, {})
            continue
        if "=" not in line:
            raise TrtqError(f"line {number}: {raw.strip()!r} is not key=value")
        if current is None:
            raise TrtqError(f"line {number}: key {line.split('=')[0].strip()!r} before any [group]")
        key, value = line.split("=", 1)
        groups[current][key.strip()] = value.strip()
    return groups


def keyfile_list(value: str) -> List[str]:
    """A GLib list value (``a;b;c``, a trailing ``;`` allowed)."""
    items = value.split(";")
    if items and items[-1].strip() == "":
        items = items[:-1]
    return [item.strip() for item in items]


def _integer(value: str) -> int:
    if not re.fullmatch(r"\s*[-+]?\d+\s*", value):
        raise ValueError(f"{value!r} is not an integer")
    return int(value)


def _double(value: str) -> float:
    number = float(value)  # ValueError for garbage, as g_ascii_strtod with trailing text
    if not math.isfinite(number):
        raise ValueError(f"{value!r} is not a finite number")
    return number


def _boolean(value: str) -> bool:
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise ValueError(f"{value!r} is not a boolean (true, false, 1, 0)")


def _one_of(allowed) -> Callable[[str], int]:
    def check(value: str) -> int:
        number = _integer(value)
        if number not in allowed:
            raise ValueError(f"{number} is not one of {', '.join(str(a) for a in allowed)}")
        return number
    return check


def _batch_size(value: str) -> int:
    number = _integer(value)
    if not 1 <= number <= MAX_BATCH_SIZE:
        raise ValueError(f"{number} is outside 1..{MAX_BATCH_SIZE}")
    return number


def _infer_dims(value: str) -> Tuple[int, ...]:
    dims = tuple(_integer(v) for v in keyfile_list(value))
    if len(dims) != 3 or any(d <= 0 for d in dims):
        raise ValueError(f"{value!r} must be three positive integers in c;h;w order")
    return dims


def _offsets(value: str) -> Tuple[float, ...]:
    values = tuple(_double(v) for v in keyfile_list(value))
    if len(values) > MAX_OFFSETS:
        raise ValueError(f"{len(values)} values; at most {MAX_OFFSETS}")
    return values


def _positive(value: str) -> int:
    number = _integer(value)
    if number <= 0:
        raise ValueError(f"{number} must be > 0")
    return number


#: nvdsinfer's isValidPrecisionType / isValidDeviceType values for ``layer-device-precision``.
LAYER_PRECISIONS = ("fp32", "fp16", "int8")
LAYER_DEVICES = ("gpu", "dla")


def _layer_device_precision(value: str) -> Dict[str, Tuple[str, str]]:
    layers = {}
    for entry in keyfile_list(value):
        parts = entry.split(":")
        if len(parts) != 3 or not parts[0]:
            raise ValueError(f"{entry!r} is not layer:precision:device")
        name, precision, device = parts
        if precision not in LAYER_PRECISIONS or device not in LAYER_DEVICES:
            raise ValueError(f"{entry!r}: precision must be one of {', '.join(LAYER_PRECISIONS)} and device one of "
                             f"{', '.join(LAYER_DEVICES)}")
        layers[name] = (precision, device)
    return layers


def _non_negative(value: str) -> int:
    number = _integer(value)
    if number < 0:
        raise ValueError(f"{number} must be >= 0")
    return number


#: ``[property]`` keys trtq writes or checks -> their parser (the value's rule).
RULES: Dict[str, Callable[[str], object]] = {
    "gpu-id": _non_negative, "gie-unique-id": _positive, "batch-size": _batch_size,
    "network-mode": _one_of(NETWORK_MODE_VALUES), "model-color-format": _one_of(tuple(COLOR_FORMATS.values())),
    "network-input-order": _one_of(tuple(INPUT_ORDERS.values())),
    "network-type": _one_of(tuple(NETWORK_TYPES.values())), "process-mode": _one_of((1, 2)),
    "infer-dims": _infer_dims, "net-scale-factor": _double, "offsets": _offsets,
    "maintain-aspect-ratio": _boolean, "symmetric-padding": _boolean, "output-tensor-meta": _boolean,
    "onnx-file": str, "model-engine-file": str, "int8-calib-file": str, "labelfile-path": str,
    "layer-device-precision": _layer_device_precision, "enable-dla": _boolean, "use-dla-core": _non_negative,
    "custom-lib-path": str,
}


def check_rules(groups: Dict[str, Dict[str, str]]) -> Tuple[Dict[str, object], List[str]]:
    """The typed ``[property]`` values, and every key that breaks nvinfer's rules (as lines)."""
    problems: List[str] = []
    if "property" not in groups:
        return {}, ["no [property] group (nvinfer requires it)"]
    values: Dict[str, object] = {}
    for key, text in groups["property"].items():
        rule = RULES.get(key)
        if rule is None:
            values[key] = text
            continue
        try:
            values[key] = rule(text)
        except ValueError as exc:
            problems.append(f"{key}={text}: {exc}")
    return values, problems


# ----------------------------------------------------------------------------- writing


def _number(value: float) -> str:
    return f"{float(value):.10g}"  # 10 significant digits: well inside float32 inputs, and readable


def float_layer_entries(float_layers) -> Tuple[List[str], List[str]]:
    """``layer-device-precision`` entries keeping the calibration's float layers in FP32 on the GPU, and the layers
    nvinfer cannot name (a ``:`` or ``;`` in the name: nvdsinfer splits entries there)."""
    entries, unnamed = [], []
    for name in float_layers:
        (unnamed if any(c in name for c in ":;\n") else entries).append(name)
    return [f"{name}:fp32:gpu" for name in entries], unnamed


def render_config(*, onnx_file: str, calib_file: Optional[str], engine_file: Optional[str], batch_size: int,
                  image: ImagePreprocessing, normalization: Normalization, network_type: str = "other",
                  network_mode: str = "int8", comments: Tuple[str, ...] = (), float_layers: Tuple[str, ...] = (),
                  dla_core: Optional[int] = None, custom_lib: Optional[str] = None) -> str:
    """An nvinfer key file for ``image``'s preprocessing (``normalization`` must be exact).

    ``float_layers``: the calibration's mixed-precision layers, kept FP32 with ``layer-device-precision`` when
    nvinfer builds the engine in INT8; ``dla_core``: ``enable-dla``/``use-dla-core`` for a DLA engine;
    ``custom_lib``: ``custom-lib-path``, which nvinfer loads before the engine (plugin layers register there).
    """
    if not normalization.exact:
        raise TrtqError(normalization.reason)
    lines = [f"{MARKER} deepstream"] + [f"# {line}" for line in comments] + ["[property]", "gpu-id=0",
                                                                              "gie-unique-id=1"]
    lines.append(f"onnx-file={onnx_file}")
    if engine_file:
        lines.append(f"model-engine-file={engine_file}")
    if calib_file and network_mode == "int8":
        lines.append(f"int8-calib-file={calib_file}")
    entries, _ = float_layer_entries(float_layers)
    if entries and network_mode == "int8":
        lines.append("layer-device-precision=" + ";".join(entries))
    if dla_core is not None:
        lines += ["enable-dla=1", f"use-dla-core={int(dla_core)}"]
    if custom_lib:
        lines.append(f"custom-lib-path={custom_lib}")
    lines += [f"network-mode={NETWORK_MODES[network_mode]}", f"batch-size={int(batch_size)}",
              f"infer-dims={image.channels};{image.height};{image.width}"]
    if image.layout == "NHWC":
        lines.append(f"network-input-order={INPUT_ORDERS['NHWC']}")
    lines += [f"model-color-format={COLOR_FORMATS[image.color]}",
              f"net-scale-factor={_number(normalization.net_scale_factor)}"]
    if any(o != 0 for o in normalization.offsets):
        lines.append("offsets=" + ";".join(_number(o) for o in normalization.offsets))
    # nvinfer's letterbox: maintain-aspect-ratio=1, centered with symmetric-padding=1, else padded right and bottom.
    letterbox = image.resize == "letterbox"
    lines.append(f"maintain-aspect-ratio={int(letterbox)}")
    if letterbox:
        lines.append(f"symmetric-padding={int(image.pad_position == 'center')}")
    lines.append(f"network-type={NETWORK_TYPES[network_type]}")
    if network_type == "other":
        lines.append("output-tensor-meta=1")
    return "\n".join(lines) + "\n"


def _relative(path: Path, folder: Path) -> str:
    try:
        return os.path.relpath(os.path.abspath(path), os.path.abspath(folder))
    except ValueError:  # another drive (Windows)
        return str(Path(path).resolve())


def write_config(model_path: PathLike, cache_path: PathLike, output: PathLike, *, engine: Optional[PathLike] = None,
                 batch_size: Optional[int] = None, fold: bool = False, calib=None, network_type: str = "other",
                 trt_version: Optional[int] = None, force: bool = False) -> dict:
    """Write an nvinfer config for ``model_path`` (the float ONNX model) and its calibration ``cache_path``.

    Per-channel std has no nvinfer form: without ``fold`` that is an error naming the fix; with
    it a folded model, cache and sidecar are written beside the config (:func:`trtq.deploy.fold.
    fold_deployment`), verified against the original on calibration samples (``calib``: a DataSpec
    or path; default the sidecar's data). Returns the files written and the notes.
    """
    # Long because the nvinfer keys are written in the order the config file lists them; each is a line or
    # two.
    from ..cache import check_cache_matches, model_of_cache, read_cache, sidecar_path, trt_version_text
    from ..fileio import write_files_atomic
    from ..graph.model import load_onnx
    from ..graph.qdq import tensor_names
    from ..graph.signature import input_specs
    from ..outputs import Output, guard_outputs
    from .calibration import read_calibration, require_image

    model_path, output = Path(model_path), Path(output)
    if network_type not in NETWORK_TYPES:
        raise TrtqError(f"network type must be one of {', '.join(NETWORK_TYPES)}, got {network_type!r}")
    calibration = read_calibration(cache_path)
    image = require_image(calibration, "a DeepStream config")
    table = read_cache(cache_path)
    # the rewrite the cache was calibrated on (--equalize, or kept by auto) is the onnx-file nvinfer builds
    model_path, model, sha = model_of_cache(table, model_path, load_onnx(model_path), cache_path)
    check_cache_matches(table, model, sha, tensor_names(model))
    normalization = nvinfer_normalization(image)
    notes: List[str] = []
    folded_paths = {}
    if not normalization.exact and not fold:
        raise TrtqError(f"{normalization.reason}, so no nvinfer config can reproduce the calibration's inputs. "
                        "Pass --fold: trtq writes a model whose first layer absorbs the per-channel std (verified "
                        "against this one on the calibration samples) with its cache, and an exact config for them")
    if fold and normalization.exact:
        notes.append("--fold: nothing to fold, the preprocessing has one scale for all channels")
        fold = False
    stem = model_path.stem
    if fold:
        folder = output.parent
        folded_paths = {"model": folder / f"{stem}.folded.onnx", "cache": folder / f"{stem}.folded.calib.cache"}
        folded_paths["sidecar"] = sidecar_path(folded_paths["cache"])
    reads = [("the model", model_path), ("the calibration cache", Path(cache_path)),
             ("the cache's sidecar", sidecar_path(cache_path))] + ([("the engine", Path(engine))] if engine else [])
    outputs = [Output(output, "deploy-config", option="-o")]
    if fold:
        outputs += [Output(folded_paths["model"], "onnx", option="the folded model"),
                    Output(folded_paths["cache"], "cache", option="the folded cache"),
                    Output(folded_paths["sidecar"], "sidecar", option="the folded cache's sidecar")]
    notes += guard_outputs(outputs, reads, force=force)

    static, dynamic = calibration.batch_axis()
    spec = input_specs(model)[0]
    if batch_size is None:
        batch_size = static or 1
    elif not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise TrtqError(f"--batch-size {batch_size}: nvinfer accepts 1 to {MAX_BATCH_SIZE}")
    elif static is not None and batch_size != static:
        raise TrtqError(f"--batch-size {batch_size}: the model's input {spec.name!r} has a fixed batch of {static}")
    if calibration.trt_version // (10000 if calibration.trt_version >= 100000 else 1000) >= 11:
        raise TrtqError(f"{Path(cache_path).name} is stamped for TensorRT {calibration.trt_version_text}, which has no "
                        "implicit INT8 (int8-calib-file): build an explicit engine from `trtq quantize` instead")
    if trt_version is not None and trt_version != calibration.trt_version:
        notes.append(f"the cache is stamped for TensorRT {calibration.trt_version_text} but the target runs "
                     f"{trt_version_text(trt_version)}: TensorRT ignores such a cache silently; recalibrate with "
                     f"--trt-version {trt_version_text(trt_version)}")
    if calibration.header_algorithm != "EntropyCalibration2":
        notes.append(f"the cache header says {calibration.header_algorithm}; nvinfer's calibrator is "
                     "EntropyCalibration2 and TensorRT ignores a cache of another algorithm: recalibrate with "
                     "--algo auto, entropy, percentile or mse")
    if image.resize == "pad":
        notes.append("the calibration padded its images without scaling them; nvinfer scales every frame (or "
                     "object) to the network size, so the inputs are framed differently from the calibration")
    elif image.resize == "letterbox":
        if image.pad_value != 0:
            notes.append(f"the calibration padded with {image.pad_value:g}; nvinfer's letterbox pads with 0 (black), "
                         "so the padded border differs from the calibration's")
    elif image.resize != "stretch" or image.crop_fraction < 1:
        notes.append("the calibration center-cropped its images; nvinfer scales the whole frame (or object) to the "
                     "network size, so the inputs are framed differently from the calibration")

    files: Dict[Path, bytes] = {}
    onnx_target, cache_target = model_path, Path(cache_path)
    comments = [f"calibration: {calibration.describe()}", f"preprocessing: {image.describe()}"]
    if fold:
        from .fold import fold_deployment

        result = fold_deployment(model, model_path, calibration, table, calib)
        files[folded_paths["model"]] = result.model_bytes
        files[folded_paths["sidecar"]] = result.sidecar_bytes
        files[folded_paths["cache"]] = result.cache_bytes
        onnx_target, cache_target = folded_paths["model"], folded_paths["cache"]
        image = result.image
        normalization = nvinfer_normalization(image)
        comments.append(f"per-channel std folded into the model ({result.how}); verified on {result.samples} "
                        f"calibration samples: max |difference| {result.max_error:.2e} of max |output| "
                        f"{result.max_output:.3g}")
        notes.append(comments[-1])
    float_layers = tuple(calibration.float_layers)
    entries, unnamed = float_layer_entries(float_layers)
    if entries:
        comments.append(f"layer-device-precision: the {len(entries)} layer(s) the calibration kept in float "
                        "(nvinfer matches exact TensorRT layer names: an op TensorRT splits into several layers keeps "
                        "only the one named after its ONNX node in FP32)")
    if unnamed:
        notes.append(f"nvinfer cannot keep {', '.join(unnamed)} in float (a ':' or ';' in the layer name); rename "
                     "the ONNX node(s) or build the engine with `trtq build`")
        comments.append(notes[-1])
    dla_core, custom_lib = None, None
    if engine:
        dla_core, custom_lib, needs = _engine_requirements(Path(engine), output.parent)
        comments += needs
        notes += needs
    text = render_config(onnx_file=_relative(onnx_target, output.parent), calib_file=_relative(cache_target,
                         output.parent), engine_file=_relative(Path(engine), output.parent) if engine else None,
                         batch_size=batch_size, image=image, normalization=normalization, network_type=network_type,
                         comments=tuple(comments), float_layers=float_layers, dla_core=dla_core,
                         custom_lib=custom_lib)
    files[output] = text.encode("utf-8")
    written = write_files_atomic(files)
    return {"config": output, "written": written, "notes": notes, "normalization": normalization,
            "calibration": calibration}


def _engine_requirements(engine: Path, folder: Path) -> Tuple[Optional[int], Optional[str], List[str]]:
    """What the engine's trtq build report says nvinfer needs to load it: (DLA core, custom-lib-path, lines)."""
    from ..backend.runner import read_build_report

    built = (read_build_report(engine) or {}).get("tensorrt") or {}
    lines: List[str] = []
    dla_core = int(built["dla_core"]) if built.get("dla_core") is not None else None
    if dla_core is not None:
        lines.append(f"DLA engine: enable-dla=1, use-dla-core={dla_core} (the core its build report names)")
    plugins = [str(p) for p in built.get("plugins") or []]
    custom_lib = None
    if len(plugins) == 1:
        custom_lib = plugins[0]
        lines.append(f"the engine has plugin layers: custom-lib-path={custom_lib} (nvinfer loads it before the engine; "
                     "the path on the target)")
    elif plugins:
        lines.append("the engine has plugin layers from several libraries; nvinfer loads one custom-lib-path: "
                     f"preload the others (LD_PRELOAD={':'.join(plugins)})")
    if "VERSION_COMPATIBLE" in (built.get("builder_flags") or []):
        lines.append("version-compatible engine: nvinfer must allow engine host code to load it; if it refuses the "
                     "engine, remove model-engine-file and let nvinfer build from onnx-file")
    return dla_core, custom_lib, lines


__all__ = ["Normalization", "nvinfer_normalization", "parse_keyfile", "keyfile_list", "check_rules", "RULES",
           "render_config", "write_config", "NETWORK_MODES", "COLOR_FORMATS", "NETWORK_TYPES", "float_layer_entries"]
