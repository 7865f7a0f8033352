"""Fixtures shared across the test tree: real models and real images that ship in PyPI wheels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
          "hubble_deep_field.jpg", "color.png", "brick.png", "grass.png", "gravel.png", "ihc.png", "logo.png")


@pytest.fixture(scope="session")
def yolo_model_path() -> Path:
    """YOLOv8n detector (input 'images' 1x3x320x320) shipped in the nudenet wheel."""
    nudenet = pytest.importorskip("nudenet", reason="dev extra 'nudenet' carries the real YOLOv8n model")
    path = Path(nudenet.__file__).with_name("320n.onnx")
    assert path.exists(), f"nudenet no longer ships {path.name}"
    return path


def skimage_photo_paths() -> list:
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    return [folder / name for name in PHOTOS if (folder / name).exists()]


@pytest.fixture(scope="session")
def photo_folder(tmp_path_factory) -> Path:
    """A folder of real RGB photographs (scikit-image's sample images), some as JPEG, some as PNG."""
    pytest.importorskip("skimage", reason="dev extra 'scikit-image' carries the sample photographs")
    from PIL import Image

    folder = tmp_path_factory.mktemp("photos")
    for index, source in enumerate(skimage_photo_paths()):
        image = Image.open(source).convert("RGB")
        suffix = ".jpg" if index % 2 else ".png"
        image.save(folder / f"{source.stem}{suffix}")
    return folder


@pytest.fixture(scope="session")
def photo_crops_folder(tmp_path_factory) -> Path:
    """48 real 320x320 crops of the sample photographs: enough distinct samples for calibration tests."""
    pytest.importorskip("skimage")
    from PIL import Image

    folder = tmp_path_factory.mktemp("crops")
    rng = np.random.default_rng(0)
    photos = [Image.open(p).convert("RGB") for p in skimage_photo_paths()]
    for index in range(48):
        image = photos[index % len(photos)]
        side = int(min(image.size) * rng.uniform(0.5, 1.0))
        left = int(rng.integers(0, image.size[0] - side + 1))
        top = int(rng.integers(0, image.size[1] - side + 1))
        image.crop((left, top, left + side, top + side)).resize((320, 320)).save(folder / f"crop_{index:03d}.png")
    return folder
