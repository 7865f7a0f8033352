"""On a machine with an NVIDIA GPU: the CUDA memory module for real, and FP32/FP16/INT8 TensorRT
engines of a real model (YOLOv8n from the nudenet wheel) compared with each other.

Skipped with the reason where cuda-python, a GPU or TensorRT is missing (every CPU machine,
including CI). Run them with `pytest -m gpu` on a GPU machine with `pip install -e '.[gpu,dev]'`.
"""

from __future__ import annotations

import numpy as np
import pytest

from trtq.errors import BackendUnavailable, TrtqError

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    from trtq.backend import cuda as module

    try:
        module.device_info()
    except BackendUnavailable as exc:
        pytest.skip(f"no usable GPU: {exc}")
    return module


@pytest.fixture(scope="module")
def trt(cuda):
    from trtq.backend import import_tensorrt

    try:
        return import_tensorrt()
    except BackendUnavailable as exc:
        pytest.skip(str(exc))


def test_device_buffer_round_trip_and_events(cuda):
    info = cuda.device_info()
    assert info.name and info.compute_capability[0] >= 3 and info.total_memory > 0
    free, total = cuda.memory_info()
    assert 0 < free <= total
    host = np.arange(1 << 20, dtype=np.float32)
    with cuda.Stream() as stream, cuda.DeviceBuffer(host.nbytes) as buffer, cuda.Event() as start, \
            cuda.Event() as end:
        assert buffer.ptr != 0
        start.record(stream)
        buffer.copy_from_host(host, stream)
        end.record(stream)
        back = buffer.copy_to_host(np.empty_like(host), stream)
        end.synchronize()
        assert end.elapsed_ms(start) >= 0.0
    np.testing.assert_array_equal(back, host)
    assert buffer.ptr == 0  # freed by the with block


def test_out_of_memory_is_a_clear_error(cuda):
    with pytest.raises(TrtqError, match="out of memory"):
        cuda.DeviceBuffer(1 << 50)


@pytest.fixture(scope="module")
def yolo_engines(trt, yolo_model_path, photo_crops_folder, tmp_path_factory):
    """fp32, fp16 and int8 engines of YOLOv8n (batch 1..4 at 320x320), INT8 calibrated on real photo crops."""
    from trtq.backend.build import BuildOptions, build_engine
    from trtq.data.spec import DataSpec, Preprocess

    folder = tmp_path_factory.mktemp("engines")
    spec = DataSpec(path=str(photo_crops_folder), samples=32, batch_size=8, preprocess=Preprocess(size=(320, 320)))
    results = {}
    for precision in ("fp32", "fp16", "int8"):
        options = BuildOptions(model_path=yolo_model_path, output_path=folder / f"yolo.{precision}.engine",
                               precision=precision, batch_sizes=[1, 4], opt_shapes={"images": (4, 3, 320, 320)},
                               calib=spec if precision == "int8" else None,
                               cache_path=folder / "yolo.cache" if precision == "int8" else None)
        results[precision] = build_engine(options)
    return results, spec, folder


def _outputs(engine_path, batch):
    from trtq.backend.runner import EngineRunner

    with EngineRunner(engine_path) as runner:
        return next(iter(runner.infer({"images": batch}).values()))


def _real_batch(spec, model_path):
    from trtq.data import open_source
    from trtq.graph.model import input_specs, load_onnx

    source = open_source(spec, input_specs(load_onnx(model_path)))
    from trtq.ort import batch_inputs

    return batch_inputs(next(iter(source)))["images"][:4]


def test_engines_and_reports(yolo_engines, trt):
    results, _, _ = yolo_engines
    for precision, result in results.items():
        report = result.report
        assert result.engine_path.stat().st_size == report["engine"]["bytes"] > 0
        assert report["precision"] == precision and report["tensorrt"]["version"] == trt.__version__
        assert report["profile"]["images"]["max"] == [4, 3, 320, 320]
        assert report["gpu"]["name"]
    calibration = results["int8"].report["calibration"]
    assert calibration["samples"] >= 8 or calibration["source"] == "data"


def test_fp16_and_int8_outputs_follow_fp32(yolo_engines, yolo_model_path):
    results, spec, _ = yolo_engines
    batch = _real_batch(spec, yolo_model_path)
    ref = _outputs(results["fp32"].engine_path, batch)
    import onnxruntime as ort

    cpu = ort.InferenceSession(str(yolo_model_path), providers=["CPUExecutionProvider"]).run(None, {"images": batch})[0]
    np.testing.assert_allclose(ref, cpu, rtol=1e-2, atol=0.5)  # TF32 may be on for "fp32" engines
    fp16 = _outputs(results["fp16"].engine_path, batch)
    int8 = _outputs(results["int8"].engine_path, batch)
    scores = slice(4, None)  # rows 0-3: box coordinates in pixels; 4-: class scores in [0, 1]
    assert np.abs(fp16[:, scores] - ref[:, scores]).max() < 0.02
    assert np.abs(int8[:, scores] - ref[:, scores]).mean() < 0.02
    assert np.corrcoef(int8.ravel(), ref.ravel())[0, 1] > 0.99


def test_int8_rebuild_from_the_cache_reads_no_data(yolo_engines, yolo_model_path):
    from trtq.backend.build import BuildOptions, build_engine

    results, _, folder = yolo_engines
    cache = folder / "yolo.cache"
    if not cache.exists():  # TensorRT 11 / explicit path writes trtq's own cache there
        pytest.skip("no cache was written by the first INT8 build")
    again = build_engine(BuildOptions(model_path=yolo_model_path, output_path=folder / "again.engine",
                                      precision="int8", batch_sizes=[1, 4], opt_shapes={"images": (4, 3, 320, 320)},
                                      cache_path=cache))
    assert again.report["calibration"]["source"] == "cache"
    assert again.report["calibration"].get("samples", 0) == 0


def test_benchmark_engines_rows(yolo_engines):
    from trtq.backend.bench import benchmark_engines

    results, _, _ = yolo_engines
    paths = [results[p].engine_path for p in ("fp32", "int8")]
    rows = benchmark_engines(paths, [1, 4, 8], iterations=5, warmup=2)
    assert [(r.precision, r.batch_size) for r in rows] == [("fp32", 1), ("fp32", 4), ("fp32", 8),
                                                           ("int8", 1), ("int8", 4), ("int8", 8)]
    for row in rows:
        if row.batch_size == 8:
            assert row.skipped and "profile" in row.note
        else:
            assert row.throughput > 0 and row.latency_ms_p50 <= row.latency_ms_p99
            assert row.device_memory_bytes > 0 and row.backend == "tensorrt"


def test_engine_from_elsewhere_is_refused_clearly(trt):
    from trtq.backend.runner import EngineRunner

    with pytest.raises(TrtqError, match="only runs on the TensorRT version and GPU"):
        EngineRunner(b"\x00" * 4096)


# --- build features, engine accuracy, pycuda (issue 10) ------------------------------------------

def _feature_build(yolo_model_path, folder, name, **kwargs):
    from trtq.backend.build import BuildOptions, build_engine

    return build_engine(BuildOptions(model_path=yolo_model_path, output_path=folder / f"{name}.engine",
                                     batch_sizes=[1, 4], opt_shapes={"images": (4, 3, 320, 320)}, **kwargs))


def test_sparsity_and_tf32_flags_build(trt, yolo_model_path, tmp_path):
    result = _feature_build(yolo_model_path, tmp_path, "sparse", precision="fp16", sparsity=True)
    assert "SPARSE_WEIGHTS" in result.report["tensorrt"]["builder_flags"]
    assert "TF32" not in result.report["tensorrt"]["builder_flags"]


def test_dla_core_on_jetson(trt, yolo_model_path, tmp_path):
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    if int(builder.num_DLA_cores) == 0:
        pytest.skip("no DLA cores here (DLA is on Jetson Xavier/Orin)")
    result = _feature_build(yolo_model_path, tmp_path, "dla", precision="fp16", dla_core=0)
    assert result.report["tensorrt"]["dla_core"] == 0 and "GPU_FALLBACK" in result.report["tensorrt"]["builder_flags"]


def test_per_layer_precision_from_the_sidecar(yolo_engines, yolo_model_path, tmp_path):
    import json

    from trtq import cache as cache_io

    results, _, folder = yolo_engines
    cache = folder / "yolo.cache"
    if not cache.exists():
        pytest.skip("no cache was written by the first INT8 build")
    copy = tmp_path / "yolo.cache"
    copy.write_bytes(cache.read_bytes())
    sidecar = json.loads(cache_io.sidecar_path(cache).read_text())
    sidecar["mixed_precision"] = {"float_layers": ["/model.0/conv/Conv"], "source": "gpu test"}
    cache_io.sidecar_path(copy).write_text(json.dumps(sidecar))
    result = _feature_build(yolo_model_path, tmp_path, "mixed", precision="int8", cache_path=copy)
    assert result.report["mixed_precision"]["float_layers"] == ["/model.0/conv/Conv"]


def test_engine_accuracy_against_onnx_runtime(yolo_engines, yolo_model_path):
    import onnxruntime as ort

    from trtq.backend.runner import EngineSession
    from trtq.evaluate import cosine_similarity

    results, spec, _ = yolo_engines
    batch = _real_batch(spec, yolo_model_path)
    reference = ort.InferenceSession(str(yolo_model_path), providers=["CPUExecutionProvider"]).run(
        None, {"images": batch})[0]
    session = EngineSession(results["int8"].engine_path)
    try:
        candidate = session.run(None, {"images": batch})[0]
    finally:
        session.close()
    assert cosine_similarity(reference, candidate) > 0.99


def test_engine_inspector_lists_layers(yolo_engines, trt):
    from trtq.backend.runner import EngineRunner
    from trtq.cli.inspect import layer_rows

    if int(trt.__version__.split(".")[0]) < 10:
        pytest.skip("per-layer inspector output is TensorRT 10.x+")
    results, _, _ = yolo_engines
    with EngineRunner(results["int8"].engine_path) as runner:
        rows = layer_rows(runner.engine_information())
    assert rows and any(row[0] for row in rows)


def test_pycuda_layer_on_the_gpu():
    pytest.importorskip("pycuda.driver")
    from trtq.backend import cuda

    cuda.select_layer("pycuda")
    try:
        try:
            info = cuda.device_info()
        except BackendUnavailable as exc:
            pytest.skip(f"no usable GPU: {exc}")
        host = np.arange(1 << 16, dtype=np.float32)
        with cuda.Stream() as stream, cuda.DeviceBuffer(host.nbytes) as buffer:
            back = buffer.copy_from_host(host, stream).copy_to_host(np.empty_like(host), stream)
        np.testing.assert_array_equal(back, host)
        assert info.total_memory > 0
    finally:
        cuda.select_layer(None)


def test_quickstart_measures_the_int8_engine_itself(trt, tmp_path):
    """Where TensorRT runs, the quickstart's verdict includes the INT8 engine's own accuracy (trtq eval on it)."""
    from trtq.quickstart import run_quickstart

    result = run_quickstart(tmp_path / "qs", samples=200, eval_samples=200, batch_sizes=(1, 8), iterations=3,
                            use_torch=False, show_progress=False)
    engine = result.engine_evaluation
    assert not result.trt_note and engine is not None and engine.accuracy is not None
    assert engine.accuracy.candidate_top1 >= engine.accuracy.reference_top1 - 0.02
    assert engine.worst_snr_db() > 15
