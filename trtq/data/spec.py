"""What the user asked for: where the data is and how to turn files into model inputs.

These dataclasses are the contract between the CLI, the API and the data sources.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Dict, Optional, Tuple

from .. import defaults


@dataclass(frozen=True)
class Preprocess:
    """How an image file becomes an input array. ``None`` fields are taken from the model input."""

    size: Optional[Tuple[int, int]] = None        # (height, width) after resize/crop; None: model's static H, W
    resize: str = "stretch"                        # "stretch": straight to size; "shorter": shorter side to size, then center crop;
                                                   # "letterbox": longer side to size, aspect kept, padded; "pad": padded unscaled
    crop_fraction: float = 1.0                     # with "shorter": resize to size/crop_fraction, then center crop size (0.875 = ImageNet style)
    pad_value: float = 0.0                         # with "letterbox"/"pad": the 0-255 pixel value of the padding (YOLO: 114)
    pad_position: str = "center"                   # with "letterbox"/"pad": "center" (pad both sides) or "corner" (image at
                                                   # the top left, padded right and bottom: OCR lines)
    scale: float = 1.0 / 255.0                     # pixel values are multiplied by this first
    mean: Tuple[float, ...] = (0.0,)               # then (x - mean) / std, per channel (one value = all channels)
    std: Tuple[float, ...] = (1.0,)
    channel_order: str = "RGB"                     # "RGB" or "BGR"
    layout: Optional[str] = None                   # "NCHW" or "NHWC"; None: inferred from the model input
    dtype: Optional[str] = None                    # numpy dtype name; None: the model input's dtype

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DataSpec:
    """A calibration/evaluation data request."""

    path: str                                      # folder of images or .npy/.npz, one .npy/.npz file, or a .py loader script
    samples: Optional[int] = defaults.SAMPLES      # None: all samples
    batch_size: int = defaults.BATCH_SIZE
    seed: int = defaults.SEED
    shuffle: bool = True                           # calibration shuffles; evaluation keeps file order
    preprocess: Preprocess = field(default_factory=Preprocess)
    #: ``--batch-axis NAME:AXIS`` overrides of the batch axis trtq infers per input (None: no batch axis)
    batch_axes: Dict[str, Optional[int]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def evaluation_spec(data):
    """A DataSpec for evaluation: file order (no shuffle); a bare path means all samples."""
    from .spec import DataSpec

    if isinstance(data, DataSpec):
        return replace(data, shuffle=False)
    return DataSpec(path=str(data), samples=None, shuffle=False)
