"""The embedded demo: a small digit classifier, its weights, and what feeds it.

Nothing here imports torch; :mod:`trtq.assets.demo_model` (the network) does.
The weights are trained by ``scripts/train_demo_model.py`` on scikit-learn's digits
(8x8 grayscale, upsampled to 32x32); the calibration and held-out evaluation images
that go with it are in the repository's ``calib_data/digits/`` (see its README.md).
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parent
#: ``trtq export`` factory of the pretrained demo model.
DEMO_FACTORY = "trtq.assets.demo_model:pretrained"
#: state_dict of :class:`trtq.assets.demo_model.DigitsNet` (float32, torch.save).
DEMO_WEIGHTS = ASSETS / "demo_digits.pt"
#: The same model exported by ``scripts/train_demo_model.py`` (opset 17, dynamic batch):
#: the demo without torch.
DEMO_ONNX = ASSETS / "demo_digits.onnx"
#: Input name, shape (N, C, H, W) and output name the demo is exported with.
DEMO_INPUT_NAME = "image"
DEMO_INPUT_SHAPE = (1, 1, 32, 32)
DEMO_OUTPUT_NAME = "logits"
DEMO_CLASSES = tuple(str(d) for d in range(10))
#: Preprocessing: 8-bit grayscale PNG pixels x / 255, no mean/std (trtq's image defaults).
DEMO_SCALE = 1.0 / 255.0
