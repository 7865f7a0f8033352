"""Calibrations of the real YOLOv8n (nudenet's wheel) on real photographs, made once per session.

Images are resized to 64x64 (the model's height and width are dynamic) so that each
calibration takes a couple of seconds: what the deploy tests read is the sidecar, the cache
and the model, not the quality of the scales.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZE = (64, 64)


def _calibrate(folder: Path, model: Path, crops: Path, name: str, **preprocess):
    from trtq.data.spec import DataSpec, Preprocess
    from trtq.pipeline.calibration import calibrate

    local = folder / "yolo.onnx"
    if not local.exists():
        shutil.copy(model, local)
    spec = DataSpec(path=str(crops), samples=16, batch_size=8, preprocess=Preprocess(size=SIZE, **preprocess))
    cache = folder / f"{name}.calib.cache"
    calibrate(local, spec, algorithm="entropy", cache_path=cache)
    return local, cache


@pytest.fixture(scope="session")
def yolo_unit_scale(tmp_path_factory, yolo_model_path, photo_crops_folder):
    """(model, cache) calibrated with x/255, RGB: nvinfer can express it exactly."""
    return _calibrate(tmp_path_factory.mktemp("deploy-unit"), yolo_model_path, photo_crops_folder, "unit")


@pytest.fixture(scope="session")
def yolo_imagenet(tmp_path_factory, yolo_model_path, photo_crops_folder):
    """(model, cache) calibrated with ImageNet mean and per-channel std: nvinfer cannot, without folding."""
    return _calibrate(tmp_path_factory.mktemp("deploy-imagenet"), yolo_model_path, photo_crops_folder, "imagenet",
                      mean=IMAGENET_MEAN, std=IMAGENET_STD)


@pytest.fixture(scope="session")
def model_config_pb2():
    """Triton's real ModelConfig schema, from the tritonclient wheel (loaded by file: its grpc package
    __init__ wants grpcio, which the schema itself does not need)."""
    import importlib.util

    tritonclient = pytest.importorskip("tritonclient", reason="dev extra 'tritonclient' ships Triton's ModelConfig")
    path = Path(tritonclient.__path__[0]) / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
