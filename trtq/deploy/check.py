"""``trtq deploy check``: every difference between a DeepStream or Triton config and the calibration.

A :class:`Mismatch` says what differs, both values, whether it changes the numbers the
engine computes (the CLI exits 2 when one does) and what to do. Notes (``changes_numbers``
False) are things to know that do not make the INT8 result differ from the calibrated one
(FP16 mode, a batch size the engine cannot take, preprocessing Triton leaves to clients).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

from ..errors import TrtqError
from .calibration import Calibration, read_calibration

PathLike = Union[str, Path]


@dataclass
class Mismatch:
    what: str
    config: str
    calibration: str
    changes_numbers: bool
    fix: str = ""


@dataclass
class CheckReport:
    kind: str                                  # deepstream or triton
    config: Path
    calibration: Calibration
    mismatches: List[Mismatch] = field(default_factory=list)

    @property
    def changes_numbers(self) -> bool:
        return any(m.changes_numbers for m in self.mismatches)

    def add(self, what: str, config, calibration, changes_numbers: bool, fix: str = "") -> None:
        self.mismatches.append(Mismatch(what, str(config), str(calibration), changes_numbers, fix))


def _values(values) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


def config_kind(text: str) -> str:
    """``deepstream`` (a key file with [property]) or ``triton`` (protobuf text)."""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        return "deepstream" if stripped.startswith("[") else "triton"
    raise TrtqError("the config is empty")


def check_config(config_path: PathLike, cache_path: PathLike, *, trt_version: Optional[int] = None) -> CheckReport:
    """Compare ``config_path`` with the calibration in ``cache_path`` (+ sidecar); ``trt_version``: the target's."""
    from ..fileio import read_config_text

    config_path = Path(config_path)
    text = read_config_text(config_path, "config", TrtqError)  # a regular file, bounded, UTF-8 (BOM dropped)
    calibration = read_calibration(cache_path)
    kind = config_kind(text)
    report = CheckReport(kind, config_path, calibration)
    if kind == "deepstream":
        _check_deepstream(report, text, trt_version)
    else:
        _check_triton(report, text)
    return report


# ----------------------------------------------------------------------------- DeepStream


def _check_deepstream(report: CheckReport, text: str, trt_version: Optional[int]) -> None:
    # Long because one check per DeepStream key in the order nvinfer reads them; each is two or three lines.
    from ..cache import cache_problems, read_cache, trt_version_text
    from .deepstream import COLOR_FORMATS, INPUT_ORDERS, NETWORK_MODES, RTOL, check_rules, parse_keyfile

    calibration = report.calibration
    values, problems = check_rules(parse_keyfile(text))
    for problem in problems:
        report.add("nvinfer rule", problem, "-", True, "nvinfer refuses this value (gstnvinfer_property_parser)")
    if not values and problems:
        return
    folder = report.config.parent
    image = calibration.image
    mode = values.get("network-mode", NETWORK_MODES["fp32"])
    if mode != NETWORK_MODES["int8"]:
        name = {v: k for k, v in NETWORK_MODES.items()}.get(mode, str(mode)).upper()
        report.add("precision", f"network-mode={mode} ({name})", "INT8 calibration", False,
                   "network-mode=1 uses the calibration; in FP32/FP16 mode the cache is not read")
    else:
        calib_file = values.get("int8-calib-file")
        if not calib_file:
            report.add("int8-calib-file", "(none)", calibration.cache_path.name, True,
                       f"int8-calib-file={calibration.cache_path} (INT8 without it has no calibrated scales)")
        else:
            resolved = Path(calib_file) if Path(calib_file).is_absolute() else folder / calib_file
            if not resolved.is_file():
                report.add("int8-calib-file", f"{calib_file} (not found)", calibration.cache_path.name, True,
                           "point it at the calibration cache (relative paths are resolved against the config)")
            elif resolved.read_bytes() != calibration.cache_path.read_bytes():
                report.add("int8-calib-file", f"{calib_file} (other scales)", calibration.cache_path.name, True,
                           "point it at the cache being checked, or check the one it names")
        header_major = calibration.trt_version // (10000 if calibration.trt_version >= 100000 else 1000)
        if header_major >= 11:
            report.add("TensorRT version", "implicit INT8 (int8-calib-file)",
                       f"cache for TensorRT {calibration.trt_version_text}", True,
                       "TensorRT 11 has no calibration caches: deploy the Q/DQ model from `trtq quantize`")
        if trt_version is not None and trt_version != calibration.trt_version:
            report.add("TensorRT version", f"target {trt_version_text(trt_version)}",
                       f"cache header {calibration.trt_version_text}", True,
                       f"TensorRT ignores a cache stamped for another version: recalibrate with --trt-version "
                       f"{trt_version_text(trt_version)}")
        if calibration.header_algorithm != "EntropyCalibration2":
            report.add("cache algorithm", "nvinfer's EntropyCalibration2 calibrator",
                       f"header {calibration.header_algorithm}", True,
                       "TensorRT ignores a cache of another calibrator: recalibrate with --algo auto/entropy/mse")
        from .deepstream import float_layer_entries

        kept = values.get("layer-device-precision") or {}
        missing = [n for n in calibration.float_layers if kept.get(n, ("", ""))[0] != "fp32"]
        if missing:
            entries, _ = float_layer_entries(missing)
            report.add("mixed precision", f"{len(missing)} float layer(s) not in layer-device-precision",
                       f"float: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}", True,
                       "layer-device-precision=" + ";".join(entries) if entries else
                       "nvinfer cannot name these layers; build the engine with `trtq build`")
    onnx_file = values.get("onnx-file")
    if onnx_file:
        resolved = Path(onnx_file) if Path(onnx_file).is_absolute() else folder / onnx_file
        if resolved.is_file():
            from ..graph.model import file_sha256, load_onnx
            from ..graph.qdq import tensor_names

            model = load_onnx(resolved)
            table = read_cache(calibration.cache_path)
            for problem in cache_problems(table, model, file_sha256(resolved), tensor_names(model)):
                report.add("model", onnx_file, calibration.model_file or "?", True, f"the cache does not fit: {problem}")
        else:
            report.add("onnx-file", f"{onnx_file} (not found)", calibration.model_file or "?", False,
                       "relative paths are resolved against the config's folder")
    static, _ = calibration.batch_axis()
    batch = values.get("batch-size")
    if static is not None and batch is not None and batch != static:
        report.add("batch size", f"batch-size={batch}", f"model input batch {static}", False,
                   f"batch-size={static}: the model's batch axis is fixed")
    if image is None:
        report.add("preprocessing", "nvinfer scale/offsets/color", f"{calibration.data_kind or 'unknown'} data", False,
                   "the calibration was not made from images, so trtq cannot compare the preprocessing")
        return
    color = values.get("model-color-format", COLOR_FORMATS["RGB"])
    expected = COLOR_FORMATS[image.color]
    if color != expected:
        names = {v: k for k, v in COLOR_FORMATS.items()}
        report.add("channel order", f"model-color-format={color} ({names.get(color, '?')})",
                   f"{image.color} ({expected})", True, f"model-color-format={expected}")
    dims = values.get("infer-dims")
    if dims is not None and tuple(dims) != (image.channels, image.height, image.width):
        report.add("input size", "infer-dims=" + ";".join(str(d) for d in dims),
                   f"{image.channels};{image.height};{image.width}", True,
                   f"infer-dims={image.channels};{image.height};{image.width}")
    order = values.get("network-input-order", INPUT_ORDERS["NCHW"])
    if order != INPUT_ORDERS[image.layout]:
        report.add("layout", f"network-input-order={order}", image.layout, True,
                   f"network-input-order={INPUT_ORDERS[image.layout]}")
    if values.get("maintain-aspect-ratio") and image.resize == "stretch" and image.crop_fraction >= 1:
        report.add("resize", "maintain-aspect-ratio=1 (letterbox)", "stretched to the network size", True,
                   "maintain-aspect-ratio=0")
    if image.resize == "letterbox":
        symmetric = image.pad_position == "center"
        if not values.get("maintain-aspect-ratio"):
            report.add("resize", "maintain-aspect-ratio=0 (stretched)", "letterboxed (aspect ratio kept)", True,
                       "maintain-aspect-ratio=1")
        elif bool(values.get("symmetric-padding")) != symmetric:
            report.add("padding", f"symmetric-padding={int(bool(values.get('symmetric-padding')))}",
                       "centered" if symmetric else "at the top left", True, f"symmetric-padding={int(symmetric)}")
    gain, bias = image.gain_bias()
    k = float(values.get("net-scale-factor", 1.0))
    offsets = list(values.get("offsets", ()))
    offsets = (offsets + [0.0] * image.channels)[:image.channels]
    config_gain = np.full(image.channels, k)
    config_bias = -k * np.asarray(offsets, dtype=np.float64)
    exact_gain = np.allclose(gain, gain[0], rtol=1e-9, atol=0.0)
    if not np.allclose(config_gain, gain, rtol=RTOL, atol=0.0):
        want = f"net-scale-factor={gain[0]!r}" if exact_gain else "fold the per-channel std into the model " \
               "(trtq deploy deepstream --fold)"
        report.add("scale", f"net-scale-factor={k:.6g}", f"scale/std per channel {_values(gain)}", True, want)
    # offsets in pixel units: compare the bias each channel gets, relative to the pixel range it maps
    span = np.abs(gain) * 255.0 + np.abs(bias)
    if np.any(np.abs(config_bias - bias) > RTOL * span):
        want = "offsets=" + ";".join(f"{-b / gain[i]!r}" for i, b in enumerate(bias)) if exact_gain else \
            "fold the per-channel std into the model (--fold)"
        report.add("offsets", f"offsets={_values(offsets)}", f"mean/scale {_values(np.asarray(image.mean) / image.scale)}",
                   True, want)


# ----------------------------------------------------------------------------- Triton


_NUMPY = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int64": "TYPE_INT64",
          "int32": "TYPE_INT32", "int8": "TYPE_INT8", "uint8": "TYPE_UINT8", "bool": "TYPE_BOOL"}


def _check_triton(report: CheckReport, text: str) -> None:
    from .triton import load_problems, read_config

    calibration = report.calibration
    try:
        config, how = read_config(text, report.config.name)
    except TrtqError as exc:  # Triton refuses to read it at all: nothing else can be compared
        report.add("Triton load", str(exc), "-", True, "fix the config (Triton does not load the model)")
        return
    if "not checked" in how:
        report.add("schema", how, "-", False, "pip install 'trtq[triton]'")
    for problem in load_problems(config):
        report.add("Triton load", problem, "-", True, "Triton refuses this config (model_config_utils.cc)")
    max_batch = int((config.get("max_batch_size") or [0])[0])
    inputs = {entry.get("name", [""])[0]: entry for entry in config.get("input", [])}
    for record in calibration.inputs:
        name = record.get("name")
        entry = inputs.get(name)
        if entry is None:
            report.add("input", f"inputs {sorted(inputs)}", name, True, f"the model's input is named {name!r}")
            continue
        shape = list(record.get("shape") or [])
        dims = [int(d) for d in entry.get("dims", [])]
        full = ([-1] + dims) if max_batch > 0 else dims
        expected = [d if isinstance(d, int) and d > 0 else -1 for d in shape]
        if len(full) != len(expected) or any(a != b and -1 not in (a, b) for a, b in zip(full, expected)):
            report.add(f"input {name} dims", f"{full} (max_batch_size {max_batch})", expected, True,
                       "dims from the model (without the batch axis when max_batch_size > 0)")
        data_type = (entry.get("data_type") or ["?"])[0]
        want = _NUMPY.get(str(record.get("dtype")))
        if want and data_type != want:
            report.add(f"input {name} data type", data_type, want, True, f"data_type: {want}")
    static, _ = calibration.batch_axis()
    if static is not None and max_batch > 0:
        report.add("batching", f"max_batch_size {max_batch}", f"model batch fixed at {static}", False,
                   "max_batch_size: 0 with the batch axis in dims")
    for accelerator in _accelerators(config):
        params = {p.get("key", [""])[0]: p.get("value", [""])[0] for p in accelerator.get("parameters", [])}
        if str(params.get("precision_mode", "FP32")).upper() != "INT8":
            report.add("precision", f"precision_mode {params.get('precision_mode', 'FP32 (default)')}", "INT8", False,
                       "precision_mode: INT8 runs the Q/DQ model in INT8")
        if params.get("int8_calibration_table_name"):
            report.add("calibration table", params["int8_calibration_table_name"], "scales in the Q/DQ model", True,
                       "remove int8_calibration_table_name: ONNX Runtime refuses one for a Q/DQ model")
    recorded = None
    for entry in config.get("parameters", []):
        if entry.get("key", [""])[0] == "trtq.calibration":
            value = (entry.get("value") or [{}])[0]
            try:
                recorded = _recorded_calibration((value.get("string_value") or ["{}"])[0])
            except TrtqError as exc:
                report.add("trtq.calibration", f"unreadable ({exc})", "-", False, "rewrite with trtq deploy triton")
    image = calibration.image
    if recorded is None:
        if image is not None:
            report.add("preprocessing", "(Triton does not preprocess)", image.describe(), False,
                       "clients must send inputs preprocessed exactly so")
        return
    if recorded.get("cache") and recorded.get("cache") != calibration.cache_path.name:
        report.add("calibration", f"made for {recorded.get('cache')}", calibration.cache_path.name, False,
                   "the config records another cache")
    if recorded.get("model_sha256") and calibration.model_sha256 and recorded["model_sha256"] != calibration.model_sha256:
        report.add("model", "another model (sha256)", calibration.model_file or "?", True,
                   "the served model is not the calibrated one: redeploy with trtq deploy triton")
    pre = recorded.get("preprocess")
    if image is not None and pre is not None:
        mine = {"layout": image.layout, "color": image.color, "size": [image.height, image.width],
                "scale": image.scale, "mean": list(image.mean), "std": list(image.std)}
        for key, value in mine.items():
            theirs = pre.get(key)
            same = np.allclose(np.asarray(theirs, dtype=float), np.asarray(value, dtype=float), rtol=1e-6) \
                if key in ("scale", "mean", "std") and theirs is not None and np.shape(theirs) == np.shape(value) \
                else theirs == value
            if not same:
                report.add(f"preprocessing {key}", theirs, value, True, "clients must preprocess as calibrated")


def _recorded_calibration(text) -> dict:
    """The calibration record ``trtq deploy triton`` embeds in a config (its ``trtq.calibration`` parameter), read
    like every JSON document (:func:`trtq.jsonio.parse`: bounded size and depth, the fields compared typed)."""
    from ..jsonio import List, Opt, parse

    if not isinstance(text, str):
        raise TrtqError(f"its string_value is {type(text).__name__}, not a string")
    schema = {"cache?": Opt("str"), "model_sha256?": Opt("str"),
              "preprocess?": Opt({"layout?": Opt("str"), "color?": Opt("str"), "size?": Opt(List("int")),
                                  "scale?": Opt("number"), "mean?": Opt(List("number")), "std?": Opt(List("number"))})}
    return parse(text.encode("utf-8"), "the trtq.calibration parameter", schema=schema)


def _accelerators(config: dict) -> list:
    found = []
    for optimization in config.get("optimization", []):
        for accelerators in optimization.get("execution_accelerators", []):
            found += [a for a in accelerators.get("gpu_execution_accelerator", [])
                      if a.get("name", [""])[0] == "tensorrt"]
    return found


__all__ = ["Mismatch", "CheckReport", "check_config", "config_kind"]
