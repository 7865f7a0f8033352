"""The demo network: a compact VGG-style CNN for 32x32 grayscale digits.

Three stages of two 3x3 conv + BatchNorm + ReLU (32, 64, 128 channels; 2x2 max-pool
between stages), global average pooling and one linear layer: 288k parameters
(1.15 MB float32), about 38 M multiply-adds per image, 97% of them in convolutions
with 32-128 channels -- enough work per sample that INT8 kernels pay off on a CPU.

``trtq export trtq.assets.demo_model:pretrained --input-shape image:1x1x32x32 -o demo.onnx``

Importing this module needs torch (``pip install 'trtq[torch]'``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import torch
from torch import nn

from . import DEMO_WEIGHTS

WIDTHS = (32, 64, 128)
NUM_CLASSES = 10


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitsNet(nn.Module):
    """``image`` (N, 1, 32, 32), pixels in [0, 1] -> ``logits`` (N, 10)."""

    def __init__(self, widths: Sequence[int] = WIDTHS, num_classes: int = NUM_CLASSES, in_channels: int = 1):
        super().__init__()
        stages = []
        cin = in_channels
        for index, width in enumerate(widths):
            layers = [_conv_bn_relu(cin, width), _conv_bn_relu(width, width)]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            stages.append(nn.Sequential(*layers))
            cin = width
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(image)), 1))


def build() -> DigitsNet:
    """An untrained :class:`DigitsNet` (what ``scripts/train_demo_model.py`` trains)."""
    return DigitsNet()


def pretrained(weights: Optional[Union[str, Path]] = None) -> DigitsNet:
    """The trained demo model in eval mode (weights: ``trtq/assets/demo_digits.pt``)."""
    from ..errors import ModelError

    path = Path(weights) if weights is not None else DEMO_WEIGHTS
    if not path.exists():
        raise ModelError(f"demo weights {path} are missing; reinstall trtq or run scripts/train_demo_model.py")
    model = build()
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model.eval()
