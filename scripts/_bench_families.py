"""Small real-data model families trained here in seconds to minutes, for scripts/bench_accuracy.py and the tests.

- **detector**: a YOLOX-style anchor-free digit detector, one fused output ``[N, 64, 4 + 1 + 10]``
  (box centre x, y, width, height in pixels, objectness, 10 class scores; decoded in the
  graph as YOLOX's export does). Scenes: 64x64 grey crops of scikit-image's photographs with
  1-3 scikit-learn digits (upscaled to 16x16) pasted on them.
- **reader**: a conv reader of digit strings with a CTC head, output ``[N, 10, 11]`` (Softmax
  over 10 digits + the blank at each of 10 time steps). Lines: 5 scikit-learn digits side by
  side (8x40), with noise.
- **mobilenet**: a MobileNetV3-style classifier (inverted residual blocks: 1x1 expand, depthwise 3x3,
  HardSwish, squeeze-excite with HardSigmoid, 1x1 project), Softmax ``[N, 10]``. Patches: one
  scikit-learn digit (upscaled to 16-24 pixels) on a 32x32 photograph crop.
- **segmenter**: the same blocks as an encoder at stride 4, a 1x1 head, bilinear upsampling and a
  Sigmoid: a one-channel mask ``[N, 1, 64, 64]`` of the digits' strokes in the detector's scenes.

Training digits and evaluation digits are disjoint (the first 1200 of sklearn's 1797 digits
train; calibration and held-out data are made from the rest). Everything is seeded; the
ONNX files are made once per work folder (``make_detector`` / ``make_reader``).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Tuple

import numpy as np

SCENE = 64
STRIDE = 8
CLASSES = 10
DIGIT = 16
LINE_DIGITS = 5
TRAIN_DIGITS = 1200
PHOTOS = ("camera", "astronaut", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "brick", "grass",
          "gravel", "immunohistochemistry", "hubble_deep_field", "motorcycle_left", "horse")


def _digits(train: bool) -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    part = slice(0, TRAIN_DIGITS) if train else slice(TRAIN_DIGITS, None)
    return images[part], data.target[part]


def _photos() -> List[np.ndarray]:
    import skimage.data
    from skimage.color import rgb2gray

    grey = []
    for name in PHOTOS:
        try:
            image = getattr(skimage.data, name)()
        except Exception:  # noqa: BLE001  (a photo that needs a download offline)
            continue
        image = np.asarray(image, dtype=np.float32)
        if image.ndim == 3:
            image = rgb2gray(image[..., :3] / (255.0 if image.max() > 1 else 1.0)).astype(np.float32)
        elif image.max() > 1:
            image = image / float(image.max())
        grey.append(image)
    return grey


def scenes(count: int, seed: int, train: bool) -> Tuple[np.ndarray, List[np.ndarray]]:
    """``[count, 1, 64, 64]`` float32 scenes and per scene ``[k, 5]`` boxes (cx, cy, w, h, class) in pixels."""
    images, boxes, _ = scenes_with_masks(count, seed, train)
    return images, boxes


def scenes_with_masks(count: int, seed: int, train: bool) -> Tuple[np.ndarray, List[np.ndarray], np.ndarray]:
    """:func:`scenes` and the ``[count, 1, 64, 64]`` masks of the digits' strokes (1 where a stroke is)."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    digits, labels = _digits(train)
    photos = _photos()
    images = np.empty((count, 1, SCENE, SCENE), np.float32)
    masks = np.zeros((count, 1, SCENE, SCENE), np.float32)
    boxes = []
    for i in range(count):
        photo = photos[i % len(photos)]
        side = int(rng.integers(SCENE, min(photo.shape) + 1))
        top, left = (int(rng.integers(0, d - side + 1)) for d in photo.shape)
        scene = resize(photo[top:top + side, left:left + side], (SCENE, SCENE), anti_aliasing=False) * 0.6
        found = []
        for _ in range(int(rng.integers(1, 4))):
            k = int(rng.integers(len(digits)))
            patch = resize(digits[k], (DIGIT, DIGIT), order=1)
            y, x = (int(v) for v in rng.integers(0, SCENE - DIGIT + 1, 2))
            scene[y:y + DIGIT, x:x + DIGIT] = np.maximum(scene[y:y + DIGIT, x:x + DIGIT], patch)
            masks[i, 0, y:y + DIGIT, x:x + DIGIT] = np.maximum(masks[i, 0, y:y + DIGIT, x:x + DIGIT], patch > 0.3)
            rows, cols = np.nonzero(patch > 0.1)
            x0, x1, y0, y1 = x + cols.min(), x + cols.max() + 1, y + rows.min(), y + rows.max() + 1
            found.append([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0, labels[k]])
        images[i, 0] = scene
        boxes.append(np.asarray(found, np.float32))
    return images, boxes, masks


PATCH = 32


def patches(count: int, seed: int, train: bool) -> Tuple[np.ndarray, np.ndarray]:
    """``[count, 1, 32, 32]`` float32 patches (a digit on a photograph crop) and their ``[count]`` labels."""
    from skimage.transform import resize

    rng = np.random.default_rng(seed)
    digits, labels = _digits(train)
    photos = _photos()
    images = np.empty((count, 1, PATCH, PATCH), np.float32)
    picks = rng.integers(0, len(digits), count)
    for i, k in enumerate(picks):
        photo = photos[int(rng.integers(len(photos)))]
        side = int(rng.integers(PATCH, min(photo.shape) + 1))
        top, left = (int(rng.integers(0, d - side + 1)) for d in photo.shape)
        patch = resize(photo[top:top + side, left:left + side], (PATCH, PATCH), anti_aliasing=False) * 0.6
        size = int(rng.integers(16, 25))
        digit = resize(digits[k], (size, size), order=1) * float(rng.uniform(0.6, 1.0))
        y, x = (int(v) for v in rng.integers(0, PATCH - size + 1, 2))
        patch[y:y + size, x:x + size] = np.maximum(patch[y:y + size, x:x + size], digit)
        images[i, 0] = patch
    return images, labels[picks]


def lines(count: int, seed: int, train: bool) -> Tuple[np.ndarray, np.ndarray]:
    """``[count, 1, 8, 40]`` float32 lines of 5 digits and their ``[count, 5]`` labels."""
    rng = np.random.default_rng(seed)
    digits, labels = _digits(train)
    picks = rng.integers(0, len(digits), (count, LINE_DIGITS))
    images = np.concatenate([digits[picks[:, j]] for j in range(LINE_DIGITS)], axis=2)[:, None]
    images = images + rng.normal(0, 0.05, images.shape).astype(np.float32)
    return images.astype(np.float32), labels[picks]


def _torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover
        raise RuntimeError(f"the detector and reader families are trained with torch ({exc})") from None
    torch.manual_seed(0)
    return torch


def _detector_module(torch):
    nn = torch.nn

    class Detector(nn.Module):
        """YOLOX-style: conv body to a stride-8 grid, one 1x1 head of 4 + 1 + C, decoded in the graph."""

        def __init__(self):
            super().__init__()
            layers, width = [], 1
            for out, stride in ((8, 2), (16, 2), (24, 1), (32, 2), (32, 1)):
                layers += [nn.Conv2d(width, out, 3, stride, 1), nn.ReLU()]
                width = out
            self.body = nn.Sequential(*layers)
            self.head = nn.Conv2d(width, 5 + CLASSES, 1)
            cells = SCENE // STRIDE
            ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
            self.register_buffer("grid", torch.stack([xs, ys], -1).reshape(-1, 2).float())

        def raw(self, x):
            return self.head(self.body(x)).flatten(2).transpose(1, 2)  # [N, A, 5 + C]

        def forward(self, x):
            p = self.raw(x)
            xy = (torch.sigmoid(p[..., 0:2]) + self.grid) * STRIDE
            wh = torch.exp(p[..., 2:4].clamp(max=4.0)) * STRIDE
            return torch.cat([xy, wh, torch.sigmoid(p[..., 4:])], dim=-1)

    return Detector()


def _train_detector(torch, steps: int, seed: int = 0):
    model = _detector_module(torch)
    images, boxes = scenes(3000, seed, train=True)
    cells = SCENE // STRIDE
    target = np.zeros((len(images), cells * cells, 5 + CLASSES), np.float32)
    positive = np.zeros((len(images), cells * cells), bool)
    for i, found in enumerate(boxes):
        for cx, cy, w, h, cls in found:
            gx, gy = min(int(cx // STRIDE), cells - 1), min(int(cy // STRIDE), cells - 1)
            a = gy * cells + gx
            positive[i, a] = True
            target[i, a, :4] = [cx / STRIDE - gx, cy / STRIDE - gy, np.log(w / STRIDE), np.log(h / STRIDE)]
            target[i, a, 4] = 1
            target[i, a, 5 + int(cls)] = 1
    x, t, pos = torch.from_numpy(images), torch.from_numpy(target), torch.from_numpy(positive)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    rng = np.random.default_rng(seed)
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), 64))
        p, tt, pp = model.raw(x[idx]), t[idx], pos[idx]
        loss = bce(p[..., 4], tt[..., 4])
        if pp.any():
            loss = loss + bce(p[pp][:, 5:], tt[pp][:, 5:]) + bce(p[pp][:, 0:2], tt[pp][:, 0:2]) \
                + ((p[pp][:, 2:4] - tt[pp][:, 2:4]) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _reader_module(torch):
    nn = torch.nn

    class Reader(nn.Module):
        """Conv columns (stride 4: two time steps per digit) -> per-step classes + blank, Softmax."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.ReLU(), nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(),
                                      nn.MaxPool2d(2), nn.Conv2d(32, 48, 3, 1, 1), nn.ReLU(), nn.MaxPool2d((4, 2)))
            self.head = nn.Conv1d(48, CLASSES + 1, 3, 1, 1)

        def logits(self, x):
            return self.head(self.body(x).squeeze(2)).transpose(1, 2)  # [N, T, C + 1]

        def forward(self, x):
            return torch.softmax(self.logits(x), dim=-1)

    return Reader()


def _train_reader(torch, steps: int, seed: int = 0):
    model = _reader_module(torch)
    images, labels = lines(6000, seed, train=True)
    x, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    ctc = torch.nn.CTCLoss(blank=CLASSES)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), 64))
        logp = torch.log_softmax(model.logits(x[idx]), dim=-1).transpose(0, 1)  # [T, N, C]
        loss = ctc(logp, y[idx], torch.full((64,), logp.shape[0], dtype=torch.long),
                   torch.full((64,), LINE_DIGITS, dtype=torch.long))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _export(torch, model, example: np.ndarray, path: Path, output: str) -> Path:
    from trtq.fileio import write_bytes_atomic

    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.from_numpy(example),), str(tmp), input_names=["images"],
                          output_names=[output], dynamic_axes={"images": {0: "batch"}, output: {0: "batch"}},
                          opset_version=17, do_constant_folding=True, dynamo=False)
    write_bytes_atomic(path, tmp.read_bytes())
    tmp.unlink()
    return path


def make_detector(work: Path, steps: int = 3000) -> Path:
    """The trained detector as ONNX (``work/detector-STEPS.onnx``, made once; minutes on 2 shared cores)."""
    path = Path(work) / f"detector-{steps}.onnx"
    if not path.exists():
        torch = _torch()
        model = _train_detector(torch, steps)
        _export(torch, model, scenes(2, 99, train=False)[0], path, "output")
    return path


def make_reader(work: Path, steps: int = 2500) -> Path:
    """The trained CTC reader as ONNX (``work/reader-STEPS.onnx``, made once)."""
    path = Path(work) / f"reader-{steps}.onnx"
    if not path.exists():
        torch = _torch()
        model = _train_reader(torch, steps)
        _export(torch, model, lines(2, 99, train=False)[0], path, "probs")
    return path


def _mobile_blocks(torch, widths, strides, stem=16, expand=3):
    """A stem conv and MobileNetV3 inverted residual blocks (expand, depthwise, HardSwish, squeeze-excite)."""
    nn = torch.nn

    class SqueezeExcite(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.reduce = nn.Conv2d(channels, max(4, channels // 4), 1)
            self.expand = nn.Conv2d(max(4, channels // 4), channels, 1)

        def forward(self, x):
            return x * nn.functional.hardsigmoid(self.expand(nn.functional.relu(self.reduce(self.pool(x)))))

    class Block(nn.Module):
        def __init__(self, width_in, width_out, stride):
            super().__init__()
            hidden = width_in * expand
            self.body = nn.Sequential(nn.Conv2d(width_in, hidden, 1), nn.Hardswish(),
                                      nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden), nn.Hardswish(),
                                      SqueezeExcite(hidden), nn.Conv2d(hidden, width_out, 1))
            self.residual = stride == 1 and width_in == width_out

        def forward(self, x):
            y = self.body(x)
            return x + y if self.residual else y

    layers, width = [nn.Conv2d(1, stem, 3, 2, 1), nn.Hardswish()], stem
    for out, stride in zip(widths, strides):
        layers.append(Block(width, out, stride))
        width = out
    return nn.Sequential(*layers), width


def _mobilenet_module(torch):
    nn = torch.nn

    class MobileNet(nn.Module):
        """32x32 -> stem /2 -> blocks to /8 -> pool -> linear -> HardSwish -> linear -> Softmax."""

        def __init__(self):
            super().__init__()
            self.body, width = _mobile_blocks(torch, (16, 24, 24, 40, 40), (1, 2, 1, 2, 1))
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 64), nn.Hardswish(),
                                      nn.Linear(64, CLASSES))

        def logits(self, x):
            return self.head(self.body(x))

        def forward(self, x):
            return torch.softmax(self.logits(x), dim=-1)

    return MobileNet()


def _train_mobilenet(torch, steps: int, seed: int = 0):
    model = _mobilenet_module(torch)
    images, labels = patches(3000, seed, train=True)
    x, y = torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), 64))
        loss = torch.nn.functional.cross_entropy(model.logits(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def _segmenter_module(torch):
    nn = torch.nn

    class Segmenter(nn.Module):
        """64x64 -> stem /2 -> blocks to /4 -> 1x1 -> bilinear x4 -> Sigmoid: a [N, 1, 64, 64] mask."""

        def __init__(self):
            super().__init__()
            self.body, width = _mobile_blocks(torch, (16, 24, 24, 32), (1, 2, 1, 1))
            self.head = nn.Conv2d(width, 1, 1)

        def logits(self, x):
            y = self.head(self.body(x))
            return nn.functional.interpolate(y, scale_factor=4, mode="bilinear", align_corners=False)

        def forward(self, x):
            return torch.sigmoid(self.logits(x))

    return Segmenter()


def _train_segmenter(torch, steps: int, seed: int = 0):
    model = _segmenter_module(torch)
    images, _, masks = scenes_with_masks(1000, seed, train=True)
    x, t = torch.from_numpy(images), torch.from_numpy(masks)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(images), 32))
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model.logits(x[idx]), t[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def make_mobilenet(work: Path, steps: int = 600) -> Path:
    """The trained MobileNetV3-style classifier as ONNX (``work/mobilenet-STEPS.onnx``, made once)."""
    path = Path(work) / f"mobilenet-{steps}.onnx"
    if not path.exists():
        torch = _torch()
        model = _train_mobilenet(torch, steps)
        _export(torch, model, patches(2, 99, train=False)[0], path, "probs")
    return path


def make_segmenter(work: Path, steps: int = 400) -> Path:
    """The trained MobileNetV3-style segmenter as ONNX (``work/segmenter-STEPS.onnx``, made once)."""
    path = Path(work) / f"segmenter-{steps}.onnx"
    if not path.exists():
        torch = _torch()
        model = _train_segmenter(torch, steps)
        _export(torch, model, scenes(2, 99, train=False)[0], path, "mask")
    return path
