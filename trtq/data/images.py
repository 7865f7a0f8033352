"""A folder of images (or one image file) as model input, preprocessed with Pillow.

Files: ``.jpg .jpeg .png .bmp .webp`` in any letter case, found recursively,
hidden files and folders skipped, sorted by relative path. Each image is one sample.

Per image, in this order (:class:`~trtq.data.spec.Preprocess` holds the knobs):

1. decode and convert to the model's channel count: 1 -> grayscale (``L``),
   3 -> ``RGB``, 4 -> ``RGBA`` (EXIF orientation is not applied, as torchvision's
   loader does not apply it either);
2. resize to ``size`` (height, width): ``stretch`` goes straight there (aspect ratio
   not kept); ``shorter`` scales the image so it covers ``size / crop_fraction`` and
   center-crops ``size`` (``crop_fraction=0.875`` with a 224x224 size is the ImageNet
   "resize 256, crop 224" recipe). With ``stretch`` a ``crop_fraction`` below 1
   stretches to ``size / crop_fraction`` and center-crops. ``letterbox`` scales the
   image so that it fits inside ``size`` with its aspect ratio kept (YOLO's letterbox,
   DeepStream's ``maintain-aspect-ratio``) and ``pad`` keeps its size (shrinking only an
   image larger than ``size``); both fill the rest with ``pad_value`` (a 0-255 pixel
   value), the image centered (``pad_position="center"``) or at the top left, padded
   right and bottom (``"corner"``: a text line). Bilinear resampling;
3. ``x * scale``, then ``(x - mean) / std`` per channel (one value: all channels),
   channels in ``RGB`` or ``BGR`` order;
4. ``NCHW`` or ``NHWC``, cast to the input's dtype.

From the model input (rank 4) when not given: the layout — a static axis 1 of size
1, 3 or 4 means NCHW, else such an axis 3 means NHWC, else a dynamic axis 1 means
NCHW with 3 channels; the size — the input's static height and width (a dynamic
one makes ``Preprocess.size`` required); the dtype — the input's. An integer input
(e.g. ``uint8`` for models with their own normalization) is fed raw pixel values;
it accepts no scale/mean/std other than the defaults.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError
from ..graph.model import TensorSpec
from .source import FileSource, Piece, check_regular, preprocess_json
from .spec import DataSpec, Preprocess
from .validate import target_dtype

log = logging.getLogger("trtq.data")

#: Images decoded in parallel within one batch (Pillow releases the GIL while decoding and resizing).
DECODE_THREADS = max(1, min(8, os.cpu_count() or 1))

_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
#: The resize modes (Preprocess.resize); the last two keep the aspect ratio and pad.
RESIZE_MODES = ("stretch", "shorter", "letterbox", "pad")
PADDED = ("letterbox", "pad")
PAD_POSITIONS = ("center", "corner")
_DEFAULT = Preprocess()


@dataclass(frozen=True)
class ImagePlan:
    """Preprocessing resolved against one model input."""

    height: int
    width: int
    channels: int
    layout: str
    dtype: np.dtype
    resize: str
    crop_fraction: float
    scale: float
    mean: Tuple[float, ...]
    std: Tuple[float, ...]
    channel_order: str
    raw: bool  # integer input: raw pixel values, no normalization
    pad_value: float = 0.0       # letterbox / pad: the padding's 0-255 pixel value
    pad_position: str = "center"  # letterbox / pad: "center" or "corner" (top left)

    @property
    def mode(self) -> str:
        return _MODES[self.channels]

    def to_dict(self) -> dict:
        return {"size": [self.height, self.width], "channels": self.channels, "layout": self.layout,
                "dtype": str(self.dtype), "resize": self.resize, "crop_fraction": self.crop_fraction,
                "scale": self.scale, "mean": list(self.mean), "std": list(self.std),
                "channel_order": self.channel_order, "raw": self.raw, "pad_value": self.pad_value,
                "pad_position": self.pad_position}

    def summary(self) -> str:
        size = f"{self.height}x{self.width}"
        if self.resize in PADDED:
            how = "aspect kept, " if self.resize == "letterbox" else "not scaled, "
            where = "centered" if self.pad_position == "center" else "at the top left"
            what = f"{self.resize}ed to {size} ({how}{where}, padded with {self.pad_value:g})"
        elif self.resize == "shorter":
            what = f"shorter side resized, center-cropped to {size}"
        elif self.crop_fraction < 1:
            what = f"resized, center-cropped to {size}"
        else:
            what = f"resized to {size}"
        color = {1: "grayscale", 3: self.channel_order, 4: self.channel_order + "A"}[self.channels]
        pixels = ", raw pixels" if self.raw else ""
        return f"{what}, {color}{pixels}, {self.layout} {self.dtype}"


def _static(spec: TensorSpec, axis: int) -> Optional[int]:
    return int(spec.shape[axis]) if spec.is_static(axis) else None


def infer_layout(spec: TensorSpec, requested: Optional[str] = None) -> Tuple[str, int]:
    """``(layout, channels)`` for a rank-4 image input (see the module docstring for the rule)."""
    if spec.rank != 4:
        raise DataError(f"input {spec.name!r} has shape {spec.shape_text()}; image data needs a 4-D input "
                        f"(NCHW or NHWC): use .npy/.npz files or a loader script for this model")
    axis1, axis3 = _static(spec, 1), _static(spec, 3)
    if requested is not None:
        layout = str(requested).upper()
        if layout not in ("NCHW", "NHWC"):
            raise DataError(f"layout must be NCHW or NHWC, got {requested!r}")
        channels = axis1 if layout == "NCHW" else axis3
        if channels is None:
            channels = 3
    elif axis1 in _MODES:
        layout, channels = "NCHW", axis1
    elif axis3 in _MODES:
        layout, channels = "NHWC", axis3
    elif axis1 is None:
        layout, channels = "NCHW", 3
        log.info("input %r (%s) has a dynamic channel axis: assuming NCHW with 3 channels (RGB)",
                 spec.name, spec.shape_text())
    elif axis3 is None:
        layout, channels = "NHWC", 3
        log.info("input %r (%s) has a dynamic channel axis: assuming NHWC with 3 channels (RGB)",
                 spec.name, spec.shape_text())
    else:
        raise DataError(f"input {spec.name!r} has shape {spec.shape_text()}: no channel axis of size 1, 3 or 4 "
                        f"at axis 1 (NCHW) or 3 (NHWC), so it does not take images; use .npy/.npz files")
    if channels not in _MODES:
        raise DataError(f"input {spec.name!r} ({spec.shape_text()}) has {channels} channels in {layout} layout; "
                        f"images give 1 (grayscale), 3 (RGB) or 4 (RGBA)")
    return layout, channels


def _per_channel(values: Sequence[float], channels: int, what: str, spec: TensorSpec) -> Tuple[float, ...]:
    values = tuple(float(v) for v in values)
    if len(values) not in (1, channels):
        raise DataError(f"{what} has {len(values)} values, but input {spec.name!r} has {channels} channel(s): "
                        f"give 1 value or {channels}")
    return values


def plan_images(pre: Preprocess, spec: TensorSpec) -> ImagePlan:
    """Resolve ``pre`` against the model input ``spec``; raises DataError for what cannot fit."""
    layout, channels = infer_layout(spec, pre.layout)
    h_axis, w_axis = (2, 3) if layout == "NCHW" else (1, 2)
    model_hw = (_static(spec, h_axis), _static(spec, w_axis))
    if pre.size is not None:
        try:
            height, width = (int(v) for v in pre.size)
        except (TypeError, ValueError):
            raise DataError(f"image size must be (height, width), got {pre.size!r}") from None
        if height < 1 or width < 1:
            raise DataError(f"image size must be positive, got {height}x{width}")
        for given, fixed, what in ((height, model_hw[0], "height"), (width, model_hw[1], "width")):
            if fixed is not None and given != fixed:
                raise DataError(f"input {spec.name!r} ({spec.shape_text()}) has a fixed {what} of {fixed}; "
                                f"image size {height}x{width} does not fit it (leave the size unset to use the model's)")
    elif None in model_hw:
        raise DataError(f"input {spec.name!r} ({spec.shape_text()}) has a dynamic height or width: "
                        f"give the image size (--size HxW, e.g. --size 320x320)")
    else:
        height, width = model_hw  # type: ignore[misc]
    if pre.resize not in RESIZE_MODES:
        raise DataError(f"resize must be one of {', '.join(RESIZE_MODES)}; got {pre.resize!r}")
    if pre.pad_position not in PAD_POSITIONS:
        raise DataError(f"pad position must be 'center' or 'corner', got {pre.pad_position!r}")
    if not 0 <= float(pre.pad_value) <= 255:
        raise DataError(f"pad value is a 0-255 pixel value, got {pre.pad_value!r}")
    if pre.resize in PADDED and pre.crop_fraction < 1:
        raise DataError(f"--resize {pre.resize} pads the image and does not crop it: leave the crop fraction at 1")
    if not 0 < pre.crop_fraction <= 1:
        raise DataError(f"crop fraction must be in (0, 1], got {pre.crop_fraction!r}")
    order = str(pre.channel_order).upper()
    if order not in ("RGB", "BGR"):
        raise DataError(f"channel order must be RGB or BGR, got {pre.channel_order!r}")
    mean = _per_channel(pre.mean, channels, "mean", spec)
    std = _per_channel(pre.std, channels, "std", spec)
    if any(s == 0 for s in std):
        raise DataError(f"std must not be 0, got {', '.join(f'{s:g}' for s in std)}")
    dtype = target_dtype(spec, pre.dtype)
    raw = dtype.kind in "iu"
    if dtype.kind == "b":
        raise DataError(f"input {spec.name!r} is bool; images cannot be fed to it")
    if raw:
        normalizes = any(m != 0 for m in mean) or any(s != 1 for s in std) or pre.scale not in (1.0, _DEFAULT.scale)
        if normalizes:
            raise DataError(f"input {spec.name!r} is {dtype}: images are fed as raw pixel values, so scale, "
                            f"mean and std cannot be applied; leave them at their defaults")
        log.info("input %r is %s: feeding raw pixel values (no scale, mean or std)", spec.name, dtype)
    return ImagePlan(height=height, width=width, channels=channels, layout=layout, dtype=dtype, resize=pre.resize,
                     crop_fraction=float(pre.crop_fraction), scale=float(pre.scale), mean=mean, std=std,
                     channel_order=order, raw=raw, pad_value=float(pre.pad_value), pad_position=pre.pad_position)


def _bilinear():
    from PIL import Image

    return getattr(Image, "Resampling", Image).BILINEAR


def resize_crop(image, height: int, width: int, resize: str = "stretch", crop_fraction: float = 1.0,
                pad_value: float = 0.0, pad_position: str = "center"):
    """Resize a PIL image to ``height x width`` the way :class:`Preprocess` describes."""
    in_w, in_h = image.size
    if resize in PADDED:
        return _fit_and_pad(image, height, width, upscale=resize == "letterbox", pad_value=pad_value,
                            pad_position=pad_position)
    if resize == "stretch":
        new_w, new_h = int(round(width / crop_fraction)), int(round(height / crop_fraction))
    else:
        factor = max(height / in_h, width / in_w) / crop_fraction
        new_w, new_h = max(width, int(round(in_w * factor))), max(height, int(round(in_h * factor)))
    if (new_w, new_h) != (in_w, in_h):
        image = image.resize((new_w, new_h), _bilinear())
    if (new_w, new_h) != (width, height):
        left = int(round((new_w - width) / 2.0))
        top = int(round((new_h - height) / 2.0))
        image = image.crop((left, top, left + width, top + height))
    return image


def _fit_and_pad(image, height: int, width: int, upscale: bool, pad_value: float, pad_position: str):
    """The image scaled to fit inside ``height x width`` (aspect ratio kept; never enlarged unless ``upscale``),
    on a canvas of ``pad_value``: centered (the odd pixel of padding right and bottom, as YOLO's letterbox
    rounds) or at the top left."""
    from PIL import Image

    in_w, in_h = image.size
    factor = min(height / in_h, width / in_w)
    if not upscale:
        factor = min(factor, 1.0)
    new_w, new_h = max(1, min(width, int(round(in_w * factor)))), max(1, min(height, int(round(in_h * factor))))
    if (new_w, new_h) != (in_w, in_h):
        image = image.resize((new_w, new_h), _bilinear())
    if (new_w, new_h) == (width, height):
        return image
    bands = len(image.getbands())
    fill = float(pad_value) if image.mode == "F" else int(round(pad_value))
    if image.mode not in ("F", "L", "I", "I;16"):
        fill = (fill,) * bands if image.mode != "RGBA" else (fill,) * 3 + (255,)
    canvas = Image.new(image.mode, (width, height), fill)
    left, top = ((width - new_w) // 2, (height - new_h) // 2) if pad_position == "center" else (0, 0)
    canvas.paste(image, (left, top))
    return canvas


#: Pillow modes of more than 8 bits per channel (16-bit PNGs open as ``I;16``).
WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


def _from_wide(image, plan: ImagePlan) -> np.ndarray:
    """A 16-bit (or 32-bit integer) grayscale image as float pixels on the 0-255 scale (x * 255 / 65535), so
    ``--scale 1/255`` still gives 0-1 and no precision is lost; Pillow's own conversion clips at 255."""
    values = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") or values.max(initial=0) <= 65535 else float(2 ** 31 - 1)
    values = (values * (255.0 / peak)).astype(np.float32)
    if plan.channels == 1:
        return values
    planes = [values] * 3 + ([np.full_like(values, 255.0)] if plan.channels == 4 else [])
    return np.stack(planes, axis=2)


def _wide_color(image) -> bool:
    """A 16-bit-per-channel color image (Pillow decodes it to 8 bits: its tile's raw mode says ``;16``)."""
    try:
        return any(";16" in str(tile.args if hasattr(tile, "args") else tile[3]) for tile in image.tile or ())
    except (AttributeError, IndexError, TypeError):
        return False


def _quiet_bomb_warning() -> None:
    """Pillow warns (with its own file path) about images above ``MAX_IMAGE_PIXELS``; trtq says it in its own
    words instead (:func:`load_image`). Images beyond twice that are still refused, as one DataError."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def load_image(path: Path, plan: ImagePlan, origin: str, notice=None) -> np.ndarray:
    """Read and preprocess one image into a ``1 x ...`` array (the model's layout and dtype).

    ``notice(text)`` is called for what was done to an unusual file (a 16-bit image).
    """
    from PIL import Image

    _quiet_bomb_warning()
    try:
        with Image.open(path) as image:
            pixels = image.size[0] * image.size[1]
            if notice is not None and Image.MAX_IMAGE_PIXELS and pixels > Image.MAX_IMAGE_PIXELS:
                notice(f"{origin}: a {pixels / 1e6:.0f}-megapixel image ({image.size[0]}x{image.size[1]}): decoding it "
                       f"takes about {pixels * len(image.getbands()) / 2**20:.0f} MiB before it is resized")
            if image.mode in WIDE_MODES and not plan.raw:
                if notice is not None:
                    notice(f"{origin}: {image.mode} ({'16' if '16' in image.mode else '32'}-bit) grayscale image: "
                           "pixel values scaled to 0-255 (x * 255 / 65535) before --scale/--mean/--std")
                wide = _from_wide(image, plan)
                return _finish(wide, plan, resize_from=wide)
            if image.mode in WIDE_MODES and notice is not None:
                notice(f"{origin}: {image.mode} image reduced to 8 bits per channel for the {plan.dtype} input")
            elif notice is not None and _wide_color(image):
                notice(f"{origin}: 16-bit {image.mode} image: read with 8 bits per channel (Pillow keeps the high "
                       "byte), so fine intensity steps are lost")
            image = image.convert(plan.mode)
    except FileNotFoundError:
        check_regular(path, origin)  # a dangling symlink says so
        raise DataError(f"{origin}: file disappeared while reading") from None
    except Exception as exc:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ValueError...
        detail = str(exc).replace(str(path), "").strip(" :'\"") or type(exc).__name__
        raise DataError(f"{origin}: cannot read image ({type(exc).__name__}: {detail})") from None
    image = resize_crop(image, plan.height, plan.width, plan.resize, plan.crop_fraction, plan.pad_value,
                        plan.pad_position)
    if plan.raw:
        pixels = np.asarray(image)
    else:
        pixels = np.asarray(image, dtype=np.float32)
    return _finish(pixels, plan)


def _finish(pixels: np.ndarray, plan: ImagePlan, resize_from: Optional[np.ndarray] = None) -> np.ndarray:
    """Channel order, normalization, layout and dtype of decoded pixels (``resize_from``: float pixels to resize)."""
    if resize_from is not None:
        from PIL import Image

        planes = resize_from if resize_from.ndim == 3 else resize_from[:, :, None]
        planes = [np.asarray(resize_crop(Image.fromarray(np.ascontiguousarray(planes[:, :, c]), mode="F"),
                                         plan.height, plan.width, plan.resize, plan.crop_fraction, plan.pad_value,
                                         plan.pad_position), dtype=np.float32)
                  for c in range(planes.shape[2])]
        pixels = np.stack(planes, axis=2)
    if pixels.ndim == 2:
        pixels = pixels[:, :, np.newaxis]
    if plan.channel_order == "BGR" and plan.channels >= 3:
        pixels = pixels[:, :, [2, 1, 0, 3][: plan.channels]]
    if not plan.raw:
        std = np.asarray(plan.std, dtype=np.float32)
        gain = np.float32(plan.scale) / std
        offset = -np.asarray(plan.mean, dtype=np.float32) / std
        if np.any(gain != 1):
            pixels = pixels * gain
        if np.any(offset != 0):
            pixels = pixels + offset
    if plan.layout == "NCHW":
        pixels = pixels.transpose(2, 0, 1)
    batch = np.ascontiguousarray(pixels[np.newaxis])
    return batch if batch.dtype == plan.dtype or plan.dtype.kind != "f" else batch.astype(plan.dtype)


class ImageSource(FileSource):
    """Images from a folder (or one image file), one sample each."""

    kind = "images"

    def __init__(self, spec: DataSpec, inputs: Sequence[TensorSpec], root: Path, files: List[str]):
        super().__init__(spec, inputs, root, files)
        if len(self.inputs) != 1:
            names = ", ".join(repr(s.name) for s in self.inputs)
            raise DataError(f"{spec.path}: image data feeds single-input models, but this model has "
                            f"{len(self.inputs)} inputs ({names}); use .npz files or a loader script")
        self.plan = plan_images(spec.preprocess, self.inputs[0])
        self._dtypes = {self.inputs[0].name: self.plan.dtype}
        self._select()
        where = f"{spec.path}" if root.is_file() else f"{str(spec.path).rstrip('/' + os.sep)}/"
        noun = "image" if self.num_samples == 1 else "images"
        self.description = f"{self.num_samples} {noun} from {where} ({self.plan.summary()})"

    _noticed = False

    def _notice(self, text: str) -> None:
        """One line for the first unusual image of this source (not one per file)."""
        if not self._noticed:
            self._noticed = True
            log.warning("%s (and any others like it)", text)

    def input_shapes(self):
        plan = self.plan
        one = (plan.channels, plan.height, plan.width) if plan.layout == "NCHW" else (plan.height, plan.width, plan.channels)
        return {self.inputs[0].name: (self.batch_size, *one)}

    def _preprocess_parts(self) -> Iterator[str]:
        yield preprocess_json(self.plan.to_dict())

    def _pieces(self) -> Iterator[Piece]:
        name = self.inputs[0].name
        jobs = [(rel, self._origin(rel)) for rel, _, _ in self._selection]
        size = self.batch_size
        threads = min(DECODE_THREADS, size)
        pool = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
        try:
            for start in range(0, len(jobs), size):
                chunk = jobs[start:start + size]
                if pool is None:
                    arrays = [load_image(self._path(rel), self.plan, origin, self._notice) for rel, origin in chunk]
                else:
                    arrays = list(pool.map(lambda job: load_image(self._path(job[0]), self.plan, job[1],
                                                                  self._notice), chunk))
                for (rel, origin), array in zip(chunk, arrays):
                    yield self._ids(rel, (0,), 1), {name: array}, origin
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
