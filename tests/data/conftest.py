"""Fixtures for the data-source tests: real photographs in every supported format, model inputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from trtq.graph.model import TensorSpec

#: scikit-image sample photographs and the format each is written in.
FORMATS = (("astronaut.png", "jpg"), ("coffee.png", "png"), ("chelsea.png", "bmp"), ("rocket.jpg", "webp"),
           ("motorcycle_left.png", "JPEG"), ("color.png", "PNG"), ("ihc.png", "jpeg"), ("camera.png", "png"))
_PIL_FORMAT = {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "bmp": "BMP", "webp": "WEBP"}


def skimage_photo(name: str):
    pytest.importorskip("skimage", reason="scikit-image carries the sample photographs")
    import skimage.data
    from PIL import Image

    return Image.open(Path(skimage.data.__file__).parent / name)


def write_image(image, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _PIL_FORMAT[path.suffix.lstrip(".").lower()]
    if fmt in ("JPEG", "BMP") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    image.save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return path


@pytest.fixture(scope="session")
def format_folder(tmp_path_factory) -> Path:
    """8 real photographs as .jpg/.png/.bmp/.webp/.JPEG/.PNG/.jpeg, one in a sub-folder, plus a hidden file and a README."""
    folder = tmp_path_factory.mktemp("formats")
    for index, (name, ext) in enumerate(FORMATS):
        sub = "nested/" if index == 2 else ""
        write_image(skimage_photo(name), folder / f"{sub}{Path(name).stem}.{ext}")
    (folder / "README.txt").write_text("not an image")
    (folder / ".hidden.jpg").write_bytes(b"macOS resource fork, not an image")
    return folder


@pytest.fixture(scope="session")
def many_images(tmp_path_factory) -> Path:
    """24 small distinct crops of real photographs (48x40 PNG)."""
    folder = tmp_path_factory.mktemp("many")
    photos = [skimage_photo(name).convert("RGB") for name in ("astronaut.png", "coffee.png", "chelsea.png")]
    rng = np.random.default_rng(0)
    for index in range(24):
        photo = photos[index % 3]
        left = int(rng.integers(0, photo.size[0] - 200))
        top = int(rng.integers(0, photo.size[1] - 180))
        photo.crop((left, top, left + 200, top + 180)).resize((48, 40)).save(folder / f"img_{index:02d}.png")
    return folder


@pytest.fixture(scope="session")
def yolo_inputs(yolo_model_path) -> Sequence[TensorSpec]:
    """The real YOLOv8n input as stored: 'images' batch x 3 x height x width (all dynamic but channels)."""
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs

    return input_specs(load_onnx(yolo_model_path))


@pytest.fixture(scope="session")
def yolo_static(yolo_model_path, tmp_path_factory):
    """YOLOv8n with its input fixed to 1x3x320x320 (as exported for TensorRT): (model path, input specs)."""
    import onnx

    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs

    model = load_onnx(yolo_model_path)
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for dim, value in zip(dims, (1, 3, 320, 320)):
        dim.Clear()
        dim.dim_value = value
    path = tmp_path_factory.mktemp("yolo") / "yolo_static.onnx"
    onnx.save(model, str(path))
    return path, input_specs(load_onnx(path))


@pytest.fixture(name="photo")
def photo_fixture():
    """``photo(name)``: a scikit-image sample photograph as a PIL image."""
    return skimage_photo


@pytest.fixture(name="save_image")
def save_image_fixture():
    """``save_image(image, path)``: write in the format the suffix names."""
    return write_image


@pytest.fixture
def data_logs(caplog, monkeypatch):
    """caplog for trtq.data, even after a CLI test turned off propagation of the 'trtq' logger."""
    monkeypatch.setattr(logging.getLogger("trtq"), "propagate", True)
    caplog.set_level(logging.DEBUG, logger="trtq.data")
    return caplog
