"""Triton model repositories, parsed with Triton's real ModelConfig schema (the tritonclient wheel)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trtq.deploy.triton import parse_pbtxt, write_repository
from trtq.errors import OutputError, TrtqError
from trtq.fileio import is_artifact

from conftest import SIZE  # noqa: E402  (tests/deploy/conftest.py)


def _parse(model_config_pb2, path: Path):
    from google.protobuf import text_format

    return text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())


def test_onnx_model_becomes_a_qdq_onnxruntime_tensorrt_model(yolo_unit_scale, tmp_path, model_config_pb2):
    from trtq.graph.qdq import is_quantized
    from trtq.ort import create_session

    model, cache = yolo_unit_scale
    result = write_repository(model, cache, tmp_path / "repo")
    config = _parse(model_config_pb2, result["config"])
    assert (config.name, config.platform, config.max_batch_size) == ("yolo", "onnxruntime_onnx", 8)
    assert [(t.name, model_config_pb2.DataType.Name(t.data_type), list(t.dims)) for t in config.input] == \
        [("images", "TYPE_FP32", [3, *SIZE])]  # dynamic height/width pinned to the calibrated size
    assert config.output[0].name == "output0" and config.dynamic_batching.preferred_batch_size == [8]
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "INT8"
    assert "int8_calibration_table_name" not in accelerator.parameters  # ORT refuses one for Q/DQ models
    record = json.loads(config.parameters["trtq.calibration"].string_value)
    assert record["preprocess"]["scale"] == pytest.approx(1 / 255)
    # the schema-free reader deploy check uses agrees with protobuf on what it reads
    mine = parse_pbtxt(result["config"].read_text())
    assert mine["max_batch_size"] == [8] and mine["input"][0]["dims"] == [3, *SIZE]
    import onnx

    served = onnx.load(str(result["model"]))
    assert is_quantized(served)
    outputs = create_session(served).run(None, {"images": np.zeros((2, 3, *SIZE), np.float32)})
    assert outputs[0].shape[0] == 2


def _fake_engine(folder: Path, model: Path, profile_max: int = 16) -> Path:
    from trtq.graph.model import file_sha256

    engine = folder / "yolo.engine"
    engine.write_bytes(b"not a real engine: TensorRT is not installed here")
    report = {"format": "trtq-build-report", "model": {"file": model.name, "sha256": file_sha256(model)},
              "precision": "int8",
              "profile": {"images": {"min": [1, 3, *SIZE], "opt": [4, 3, *SIZE], "max": [profile_max, 3, *SIZE]}}}
    Path(str(engine) + ".json").write_text(json.dumps(report))
    return engine


def test_engine_batching_comes_from_its_profile(yolo_unit_scale, tmp_path, model_config_pb2):
    model, cache = yolo_unit_scale
    engine = _fake_engine(Path(model).parent, Path(model))
    result = write_repository(engine, cache, tmp_path / "repo", name="detector")
    config = _parse(model_config_pb2, result["config"])
    assert (config.platform, config.max_batch_size) == ("tensorrt_plan", 16)
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 16]
    assert list(config.input[0].dims) == [3, -1, -1]  # the engine decides its shapes; the config follows it
    assert result["model"] == tmp_path / "repo" / "detector" / "1" / "model.plan"
    assert result["model"].read_bytes() == engine.read_bytes()
    assert any("TensorRT is not available here" in note for note in result["notes"])
    with pytest.raises(TrtqError, match="exceeds the engine profile"):
        write_repository(engine, cache, tmp_path / "repo2", max_batch=32)


def test_engine_without_tensorrt_or_report_is_one_line(yolo_unit_scale, tmp_path):
    _, cache = yolo_unit_scale
    engine = tmp_path / "foreign.engine"
    engine.write_bytes(b"x")
    with pytest.raises(TrtqError) as error:
        write_repository(engine, cache, tmp_path / "repo")
    assert "build report" in str(error.value) and "\n" not in str(error.value)


def test_outputs_pass_the_guard(yolo_unit_scale, tmp_path):
    model, cache = yolo_unit_scale
    foreign = tmp_path / "repo" / "yolo" / "config.pbtxt"
    foreign.parent.mkdir(parents=True)
    foreign.write_text('name: "mine"\n')
    with pytest.raises(OutputError, match="--force"):
        write_repository(model, cache, tmp_path / "repo")
    assert foreign.read_text() == 'name: "mine"\n'
    write_repository(model, cache, tmp_path / "repo", force=True)
    assert is_artifact(foreign, "deploy-config")
    write_repository(model, cache, tmp_path / "repo")  # trtq's own config is replaced without --force
    inside = tmp_path / "repo2" / "yolo" / "1" / "model.onnx"  # the input model where the output would go
    inside.parent.mkdir(parents=True)
    inside.write_bytes(Path(model).read_bytes())
    with pytest.raises(OutputError, match="would overwrite the model"):
        write_repository(inside, cache, tmp_path / "repo2", name="yolo")
