"""Triton model repositories, parsed with Triton's real ModelConfig schema (the tritonclient wheel)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import SIZE  # noqa: E402  (tests/deploy/conftest.py)

from trtq.deploy.triton import parse_pbtxt, write_repository
from trtq.errors import OutputError, TrtqError
from trtq.outputs import is_artifact


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


def _triton_loads(model_config_pb2, path: Path):
    """The config as Triton reads it, refused where Triton's model-config rules refuse it."""
    from trtq.deploy.triton import load_problems, read_config

    config, how = read_config(Path(path).read_text())
    assert "Triton's ModelConfig" in how
    assert load_problems(config) == [], load_problems(config)
    return _parse(model_config_pb2, path)


def _int64_model(folder: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["emb"], name="gather"),
         helper.make_node("MatMul", ["emb", "w"], ["scores"], name="mm")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 5])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5, 4])],
        initializer=[numpy_helper.from_array(rng.normal(size=(100, 16)).astype(np.float32), "table"),
                     numpy_helper.from_array(rng.normal(size=(16, 4)).astype(np.float32), "w")])
    model = folder / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    data = folder / "ids-data"
    data.mkdir()
    for i in range(16):
        np.save(data / f"{i}.npy", rng.integers(0, 100, size=(5,)).astype(np.int64))
    return model


@pytest.fixture(scope="module")
def int64_calibration(tmp_path_factory):
    from trtq.data.spec import DataSpec
    from trtq.pipeline.calibration import calibrate

    folder = tmp_path_factory.mktemp("int64")
    model = _int64_model(folder)
    calibrate(model, DataSpec(path=str(folder / "ids-data"), batch_size=8), algorithm="minmax",
              cache_path=folder / "ids.cache", trt_version=8601)
    return model, folder / "ids.cache"


def _report_engine(model: Path, name: str, profile: dict, **tensorrt) -> Path:
    from trtq.graph.model import file_sha256

    engine = model.with_name(name)
    engine.write_bytes(b"an engine built elsewhere")
    Path(str(engine) + ".json").write_text(json.dumps({
        "format": "trtq-build-report", "model": {"file": model.name, "sha256": file_sha256(model)},
        "precision": "int8", "tensorrt": tensorrt, "profile": profile}))
    return engine


@pytest.mark.parametrize("built_by, wanted", [("8.6.1", "TYPE_INT32"), ("10.3.0", "TYPE_INT64")])
def test_engine_types_without_tensorrt_are_the_engines(int64_calibration, tmp_path, model_config_pb2, capsys,
                                                       built_by, wanted):
    """TensorRT 8.6 engines take INT32 where the ONNX model has INT64 (its parser converts them); the config
    written from the build report says so, as Triton's TensorRT backend compares it with the engine."""
    from trtq.cli import main

    model, cache = int64_calibration
    engine = _report_engine(model, f"ids-{built_by}.engine",
                            {"ids": {"min": [1, 5], "opt": [8, 5], "max": [8, 5]}}, version=built_by)
    assert main(["deploy", "triton", str(engine), "--cache", str(cache), "-o", str(tmp_path / "repo"),
                 "--name", "ids"]) == 0
    config = _triton_loads(model_config_pb2, tmp_path / "repo" / "ids" / "config.pbtxt")
    assert model_config_pb2.DataType.Name(config.input[0].data_type) == wanted
    if wanted == "TYPE_INT32":
        assert "TYPE_INT32, as TensorRT 8.6.1" in " ".join(capsys.readouterr().out.split())


def test_what_an_engine_needs_to_load_reaches_the_config(yolo_unit_scale, tmp_path, model_config_pb2, capsys):
    """The build report's version-compatible flag, plugin libraries and DLA core: server flags in the config's
    comments and the notes, and the DLA core as the instance group's KIND_NVDLA secondary device."""
    from trtq.cli import main

    model, cache = yolo_unit_scale
    engine = _report_engine(Path(model), "needs.engine",
                            {"images": {"min": [1, 3, *SIZE], "opt": [4, 3, *SIZE], "max": [8, 3, *SIZE]}},
                            version="10.3.0", builder_flags=["VERSION_COMPATIBLE", "INT8"], dla_core=1,
                            plugins=["/opt/plugins/libnms.so", "/opt/plugins/libroi.so"])
    assert main(["deploy", "triton", str(engine), "--cache", str(cache), "-o", str(tmp_path / "repo")]) == 0
    out = " ".join(capsys.readouterr().out.split())
    path = tmp_path / "repo" / "needs" / "config.pbtxt"
    config = _triton_loads(model_config_pb2, path)
    group = config.instance_group[0]
    assert [(model_config_pb2.ModelInstanceGroup.SecondaryDevice.SecondaryDeviceKind.Name(d.kind), d.device_id)
            for d in group.secondary_devices] == [("KIND_NVDLA", 1)]
    text = path.read_text()
    for needle in ("--backend-config=tensorrt,version-compatible=true",
                   '--backend-config=tensorrt,plugins="/opt/plugins/libnms.so;/opt/plugins/libroi.so"'):
        assert needle in text and needle in out, needle
    plain = _report_engine(Path(model), "plain.engine",
                           {"images": {"min": [1, 3, *SIZE], "opt": [4, 3, *SIZE], "max": [8, 3, *SIZE]}},
                           version="10.3.0")
    assert main(["deploy", "triton", str(plain), "--cache", str(cache), "-o", str(tmp_path / "repo")]) == 0
    text = (tmp_path / "repo" / "plain" / "config.pbtxt").read_text()
    assert "secondary_devices" not in text and "--backend-config" not in text


def test_onnx_runtime_accelerator_names_its_engine_cache(yolo_unit_scale, tmp_path, model_config_pb2):
    """Whenever the TensorRT accelerator's engine cache is on, the config says where (the server's working
    folder is often read-only); --trt-cache-path chooses it."""
    from trtq.cli import main

    model, cache = yolo_unit_scale
    assert main(["deploy", "triton", str(model), "--cache", str(cache), "-o", str(tmp_path / "repo"), "-q"]) == 0
    for name, wanted in (("yolo", "/tmp/trtq-trt-engine-cache/yolo"), ("mine", "/models/cache")):
        if name == "mine":
            assert main(["deploy", "triton", str(model), "--cache", str(cache), "-o", str(tmp_path / "repo"),
                         "--name", "mine", "--trt-cache-path", wanted]) == 0
        config = _triton_loads(model_config_pb2, tmp_path / "repo" / name / "config.pbtxt")
        parameters = config.optimization.execution_accelerators.gpu_execution_accelerator[0].parameters
        assert parameters["trt_engine_cache_enable"] == "1" and parameters["trt_engine_cache_path"] == wanted


def test_generated_configs_load_under_tritons_rules(yolo_unit_scale, tmp_path, model_config_pb2):
    model, cache = yolo_unit_scale
    _triton_loads(model_config_pb2, write_repository(model, cache, tmp_path / "repo")["config"])
    engine = _fake_engine(Path(model).parent, Path(model))
    _triton_loads(model_config_pb2, write_repository(engine, cache, tmp_path / "repo", name="e")["config"])


def _gru_sequence_first(folder: Path) -> Path:
    """X [seq, batch, 8] -> GRU (ONNX layout 0, torch's default) -> last step -> logits [batch, 10]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    hidden = 16
    graph = helper.make_graph(
        [helper.make_node("GRU", ["X", "W", "R"], ["Y", "Y_h"], hidden_size=hidden, name="gru"),
         helper.make_node("Squeeze", ["Y_h", "axes0"], ["last"], name="squeeze"),
         helper.make_node("MatMul", ["last", "head"], ["logits"], name="head_mm")],
        "seq_first", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["seq", "batch", 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        [numpy_helper.from_array(rng.normal(size=(1, 3 * hidden, 8)).astype(np.float32) * 0.3, "W"),
         numpy_helper.from_array(rng.normal(size=(1, 3 * hidden, hidden)).astype(np.float32) * 0.3, "R"),
         numpy_helper.from_array(rng.normal(size=(hidden, 10)).astype(np.float32), "head"),
         numpy_helper.from_array(np.array([0], np.int64), "axes0")])
    model = folder / "gru.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    data = folder / "gru-data"
    data.mkdir()
    for i in range(16):
        np.save(data / f"{i:03d}.npy", rng.random((12, 8)).astype(np.float32))  # one sequence: [seq, 8]
    return model


def test_a_model_batched_off_axis_0_is_not_batched_by_triton(tmp_path, model_config_pb2, capsys):
    """A sequence-first GRU batches on axis 1: Triton would stack requests along the sequence, so the config is
    non-batching with the full shape, and loads under Triton's rules."""
    from trtq.cli import main
    from trtq.data.spec import DataSpec
    from trtq.pipeline.calibration import calibrate

    model = _gru_sequence_first(tmp_path)
    calibrate(model, DataSpec(path=str(tmp_path / "gru-data"), batch_size=8), algorithm="minmax",
              cache_path=tmp_path / "gru.cache")
    assert main(["deploy", "triton", str(model), "--cache", str(tmp_path / "gru.cache"), "-o",
                 str(tmp_path / "repo")]) == 0
    config = _triton_loads(model_config_pb2, tmp_path / "repo" / "gru" / "config.pbtxt")
    assert config.max_batch_size == 0 and list(config.input[0].dims) == [-1, -1, 8]
    assert list(config.output[0].dims) == [-1, 10] and not config.HasField("dynamic_batching")
    assert "batches on axis 1" in " ".join(capsys.readouterr().out.split())


def test_a_scalar_input_is_refused_with_the_fix(tmp_path, capsys):
    """A rank-0 input has no Triton form (no empty reshape in a non-batching model; the TensorRT backend cannot
    batch a rank-0 tensor): one line naming it and the fix, nothing written."""
    import sys

    from trtq.cli import main
    from trtq.data.spec import DataSpec
    from trtq.pipeline.calibration import calibrate

    sys.path.insert(0, str(Path(__file__).parents[1]))
    import _recurrent

    model = _recurrent.scalar_branch_classifier(tmp_path / "branch.onnx")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(16):
        np.savez(data / f"{i:03d}.npz", x_raw=rng.random(64).astype(np.float32), mode=np.array(1))
    calibrate(model, DataSpec(path=str(data), batch_size=8), algorithm="minmax", cache_path=tmp_path / "b.cache")
    engine = _report_engine(model, "branch.engine", {"x_raw": {"min": [1, 64], "opt": [8, 64], "max": [8, 64]},
                                                     "mode": {"min": [], "opt": [], "max": []}}, version="10.3.0")
    capsys.readouterr()
    assert main(["deploy", "triton", str(engine), "--cache", str(tmp_path / "b.cache"), "-o",
                 str(tmp_path / "repo")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "'mode' is a scalar" in err[0] and "shape [1]" in err[0], err
    assert not (tmp_path / "repo").exists()
