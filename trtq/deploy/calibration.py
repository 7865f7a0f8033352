"""What a calibration cache and its sidecar say about the deployment that must match them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np

from ..errors import CacheError, TrtqError

PathLike = Union[str, Path]


@dataclass(frozen=True)
class ImagePreprocessing:
    """The calibration's image preprocessing, resolved against the model input (per channel)."""

    input: str
    layout: str                         # NCHW or NHWC
    channels: int                       # 1 (gray), 3 or 4
    height: int
    width: int
    channel_order: str                  # RGB or BGR (channel 0 first)
    scale: float                        # y_c = (x * scale - mean_c) / std_c, x the 0..255 pixel
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    resize: str = "stretch"
    crop_fraction: float = 1.0
    pad_value: float = 0.0              # letterbox / pad: the padding's 0-255 pixel value
    pad_position: str = "center"        # letterbox / pad: "center" or "corner" (top left)

    def gain_bias(self) -> Tuple[np.ndarray, np.ndarray]:
        """Per channel: y_c = gain_c * x + bias_c (x the 0..255 pixel value)."""
        std = np.asarray(self.std, dtype=np.float64)
        return float(self.scale) / std, -np.asarray(self.mean, dtype=np.float64) / std

    @property
    def color(self) -> str:
        return "GRAY" if self.channels == 1 else self.channel_order

    def describe(self) -> str:
        def values(v):
            return ", ".join(f"{x:g}" for x in v)
        framing = "" if self.resize == "stretch" else (
            f" {self.resize} (padded with {self.pad_value:g}, {self.pad_position})" if self.resize in ("letterbox", "pad")
            else f" {self.resize}, crop {self.crop_fraction:g}")
        return (f"{self.color} {self.layout} {self.height}x{self.width}{framing}, x*{self.scale:g}, "
                f"mean [{values(self.mean)}], std [{values(self.std)}]")


@dataclass
class Calibration:
    """A cache and its sidecar, read for deployment."""

    cache_path: Path
    trt_version: int                    # the cache header's
    header_algorithm: str
    algorithm: str                      # trtq's (auto, entropy, ...)
    model_file: Optional[str]
    model_sha256: Optional[str]
    inputs: List[dict] = field(default_factory=list)
    image: Optional[ImagePreprocessing] = None
    data_kind: Optional[str] = None     # images, arrays, script (None: unknown)
    float_layers: List[str] = field(default_factory=list)
    sidecar: Optional[dict] = None

    @property
    def trt_version_text(self) -> str:
        from ..cache import trt_version_text

        return trt_version_text(self.trt_version)

    def batch_axis(self) -> Tuple[Optional[int], bool]:
        """(static batch size or None, whether the first input's batch axis is dynamic)."""
        shape = (self.inputs[0].get("shape") or []) if self.inputs else []
        if not shape:
            return None, False
        return (shape[0], False) if isinstance(shape[0], int) and shape[0] > 0 else (None, True)

    def describe(self) -> str:
        return f"{self.cache_path.name} ({self.algorithm}, TensorRT {self.trt_version_text} header)"


def _data_kind(data: dict) -> Optional[str]:
    kind = data.get("kind")
    if kind:
        return str(kind)
    source = str(data.get("source") or "")
    if " image from " in source or " images from " in source:
        return "images"
    if "loader script" in source:
        return "script"
    if source:
        return "arrays"
    return None


def image_preprocessing(sidecar: dict) -> Optional[ImagePreprocessing]:
    """The image preprocessing a sidecar records, resolved against its model input (None: not image data)."""
    from ..data.images import plan_images
    from ..data.spec import Preprocess
    from ..graph.model import TensorSpec
    from ..errors import DataError

    data = sidecar.get("data") or {}
    if _data_kind(data) != "images":
        return None
    inputs = (sidecar.get("model") or {}).get("inputs") or []
    if len(inputs) != 1:
        return None
    record = inputs[0]
    recorded = dict(data.get("preprocess") or {})
    known = set(Preprocess.__dataclass_fields__)
    options = {k: (tuple(v) if isinstance(v, list) else v) for k, v in recorded.items() if k in known}
    try:
        spec = TensorSpec(record["name"], tuple(record.get("shape") or ()), np.dtype(record.get("dtype") or "float32"))
        plan = plan_images(Preprocess(**options), spec)
    except (DataError, TypeError, KeyError, ValueError) as exc:
        raise CacheError(f"the sidecar's preprocessing cannot be resolved against its model input ({exc})") from None
    channels = plan.channels
    mean = plan.mean if len(plan.mean) == channels else plan.mean * channels
    std = plan.std if len(plan.std) == channels else plan.std * channels
    return ImagePreprocessing(input=record["name"], layout=plan.layout, channels=channels, height=plan.height,
                              width=plan.width, channel_order=plan.channel_order, scale=plan.scale,
                              mean=tuple(mean), std=tuple(std), resize=plan.resize, crop_fraction=plan.crop_fraction,
                              pad_value=plan.pad_value, pad_position=plan.pad_position)


def read_calibration(cache_path: PathLike) -> Calibration:
    """Read a trtq cache and its sidecar; a cache without a sidecar cannot say how it was made."""
    from ..cache import float_layers, read_cache, sidecar_path

    cache = read_cache(cache_path)
    side = cache.sidecar
    if side is None:
        raise CacheError(f"{cache_path} has no trtq sidecar ({sidecar_path(cache_path).name}): its preprocessing and "
                         "model are unknown, so no config can be matched to it. Calibrate with `trtq calibrate`")
    model = side.get("model") or {}
    data = side.get("data") or {}
    return Calibration(cache_path=Path(cache_path), trt_version=cache.trt_version, header_algorithm=cache.algorithm,
                       algorithm=str((side.get("algorithm") or {}).get("name") or cache.algorithm),
                       model_file=model.get("file"), model_sha256=model.get("sha256"),
                       inputs=list(model.get("inputs") or []), image=image_preprocessing(side),
                       data_kind=_data_kind(data), float_layers=float_layers(side), sidecar=side)


def require_image(calibration: Calibration, what: str) -> ImagePreprocessing:
    """The image preprocessing, or a one-line error saying why ``what`` needs it."""
    if calibration.image is None:
        kind = calibration.data_kind or "unknown"
        raise TrtqError(f"{what} needs the calibration's image preprocessing, but {calibration.cache_path.name} was "
                        f"calibrated on {kind} data (trtq does not know how those were made from pixels); calibrate "
                        "on an image folder with --scale/--mean/--std/--bgr as the pipeline preprocesses")
    return calibration.image


__all__ = ["ImagePreprocessing", "Calibration", "read_calibration", "image_preprocessing", "require_image"]
