"""The benchmark flow: ONNX Runtime rows on the CPU, TensorRT rows from engines (built here from ONNX
models when asked), speed-ups side by side."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np

from .. import defaults
from ..backend.bench import BACKEND, engine_precision, gpu_name, time_runner
from ..bench import benchmark_ort, labels_for
from ..errors import ModelError, TrtqError
from ..progress import ProgressCallback, no_progress
from ..report import BenchResult, fill_speedups, throughput_from_latency
from ..runtime.base import is_engine_path

PathLike = Union[str, "os.PathLike[str]"]
Shapes = Mapping[str, Sequence[int]]
_ORT_NAMES = ("ort", "ort-cpu", "onnxruntime")
_TRT_NAMES = ("trt", "tensorrt")


def benchmark(
    models: Sequence[PathLike],
    batch_sizes: Sequence[int] = defaults.BENCH_BATCH_SIZES,
    *,
    backend: str = "ort",
    iterations: int = defaults.BENCH_ITERATIONS,
    warmup: int = defaults.BENCH_WARMUP,
    threads: Optional[int] = None,
    data=None,
    shapes: Optional[Shapes] = None,
    labels=None,
    precisions: Optional[Sequence[str]] = None,
    max_seconds: Optional[float] = None,
    baseline: Optional[str] = None,
    plugins: Sequence[PathLike] = (),
    dla_core: Optional[int] = None,
    progress: ProgressCallback = no_progress,
    batch_axes: Optional[Mapping[str, Optional[int]]] = None,
    feedback: Sequence = (),
) -> List[BenchResult]:
    """Benchmark models at each batch size; returns one :class:`~trtq.report.BenchResult` per (model, batch size).

    ``models``: ONNX files (ONNX Runtime on the CPU with ``backend="ort"``) and/or
    TensorRT engines (``.engine``/``.plan``, always run by TensorRT).
    ``backend="trt"``: ONNX files are built into engines for each of ``precisions``
    (default fp32 and fp16, plus int8 when ``data`` is given) and benchmarked by
    ``trtq.backend.bench``; that raises :class:`~trtq.errors.BackendUnavailable` when
    TensorRT or a GPU is missing.
    ``data``: a DataSpec or path for real inputs (default: random inputs; models with
    dynamic non-batch dimensions then need ``shapes``, e.g. ``{"images": (1, 3, 320, 320)}``).
    ``labels``: precision label per model (list in model order, a mapping, or
    ``"fp32,int8"``) overriding the inferred one.
    ``max_seconds``: per row, stop timing once this many seconds went into timed runs
    (ONNX Runtime rows; the row notes how many runs it got).
    Speed-up is filled against the fp32 row of the same model (``m.onnx`` for
    ``m.int8-cpu.onnx``), backend and batch size, or against the rows of ``baseline``
    (one of ``models``) when given. ``batch_axes``: ``{input: axis or None}`` overrides of the batch axis
    trtq infers per input (``--batch-axis``); ``data``'s own apply otherwise. ``feedback``: a streaming
    model's ``OUT=IN`` pairs, checked against every ONNX model (one timed run is one step of the stream: the
    state is an input like any other).
    """
    if batch_axes is None and data is not None:
        batch_axes = getattr(data, "batch_axes", None)
    if backend not in _ORT_NAMES + _TRT_NAMES:
        raise TrtqError(f"unknown backend {backend!r}; choose ort (ONNX Runtime, CPU) or trt (TensorRT)")
    batch_sizes = tuple(int(b) for b in batch_sizes)
    if not batch_sizes or min(batch_sizes) < 1:
        raise TrtqError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    for path in models:
        if not Path(path).exists():
            raise ModelError(f"model file {path} does not exist")
    if baseline is not None and baseline not in [str(m) for m in models] + [Path(m).name for m in models]:
        raise TrtqError(f"--baseline {baseline} is not one of the models benchmarked "
                        f"({', '.join(Path(m).name for m in models)})")
    engines = [m for m in models if is_engine_path(m)]
    onnx_models = [m for m in models if not is_engine_path(m)]
    given = labels_for(models, labels) if labels is not None else None

    def labels_of(paths):
        return None if given is None else [label for m, label in zip(models, given) if m in paths]

    needs_trt = bool(engines) or (bool(onnx_models) and backend in _TRT_NAMES)
    if needs_trt:  # fail before minutes of ONNX Runtime timing, not after
        from ..backend import import_tensorrt

        import_tensorrt()
    results: List[BenchResult] = []
    if onnx_models and backend in _ORT_NAMES:
        results += benchmark_ort(onnx_models, batch_sizes, iterations=iterations, warmup=warmup, threads=threads,
                                 data=data, shapes=shapes, labels=labels_of(onnx_models), max_seconds=max_seconds,
                                 progress=progress, batch_axes=batch_axes, feedback=feedback)
    if needs_trt:
        results += _benchmark_trt(engines, onnx_models if backend in _TRT_NAMES else [], batch_sizes,
                                  iterations=iterations, warmup=warmup, data=data, shapes=shapes,
                                  engine_labels=labels_of(engines), precisions=precisions, progress=progress,
                                  max_seconds=max_seconds, plugins=plugins, dla_core=dla_core)
    return fill_speedups(results, baseline=None if baseline is None else Path(baseline).name)


def _benchmark_trt(engines, onnx_models, batch_sizes, *, iterations, warmup, data, shapes, engine_labels,
                   precisions, progress, max_seconds=None, plugins=(), dla_core=None) -> List[BenchResult]:
    """TensorRT rows from ``trtq.backend.bench`` (which raises BackendUnavailable without TensorRT or a GPU)."""

    results: List[BenchResult] = []
    if engines:
        results += benchmark_engines([str(e) for e in engines], list(batch_sizes), iterations=iterations,
                                               warmup=warmup, progress=progress, precisions=engine_labels,
                                               shapes=shapes, data=data, max_seconds=max_seconds,
                                               plugins=plugins, dla_core=dla_core)
    if onnx_models:
        wanted = list(precisions) if precisions else (["fp32", "fp16", "int8"] if data is not None else ["fp32", "fp16"])
        for model in onnx_models:
            results += build_and_benchmark(str(model), wanted, list(batch_sizes), data,
                                                     iterations=iterations, warmup=warmup, progress=progress,
                                                     shapes=shapes, max_seconds=max_seconds, plugins=plugins)
    return results


def engine_row(model: str, precision: str, batch_size: int, times_ms: Sequence[float], **fields) -> BenchResult:
    """A :class:`BenchResult` with p50/p90/p99/mean latency and throughput from raw timings (pure)."""
    values = np.asarray(times_ms, dtype=np.float64)
    mean = float(values.mean())
    p50, p90, p99 = (float(v) for v in np.percentile(values, [50, 90, 99]))
    return BenchResult(model=model, precision=precision, backend=BACKEND, batch_size=int(batch_size),
                       latency_ms_p50=p50, latency_ms_p90=p90, latency_ms_p99=p99, latency_ms_mean=mean,
                       throughput=throughput_from_latency(batch_size, mean), iterations=len(values), **fields)


def benchmark_engines(paths: Sequence[PathLike], batch_sizes: Sequence[int], *,
                      iterations: int = defaults.BENCH_ITERATIONS, warmup: int = defaults.BENCH_WARMUP,
                      progress: ProgressCallback = no_progress, precisions: Optional[Sequence[str]] = None,
                      shapes: Optional[Mapping[str, Sequence[int]]] = None, data=None,
                      max_seconds: Optional[float] = None, plugins: Sequence[PathLike] = (),
                      dla_core: Optional[int] = None) -> List[BenchResult]:
    """One row per (engine, batch size); batch sizes outside an engine's profile give skipped rows with a note.

    ``data``: real samples (DataSpec or path) as inputs instead of random ones; ``max_seconds``:
    per row, stop timing after that much GPU time (the row notes how many runs it got). ``dla_core``: the DLA
    core DLA engines run on (default: the one each build report names).
    """
    from ..backend import import_tensorrt
    from ..backend.runner import EngineRunner

    trt = import_tensorrt()
    gpu = gpu_name()
    total = len(paths) * len(batch_sizes) * iterations
    done = 0
    results: List[BenchResult] = []
    for index, path in enumerate(paths):
        path = Path(path)
        precision = precisions[index] if precisions else engine_precision(path)
        with EngineRunner(path, plugins=plugins, dla_core=dla_core) as runner:
            lo, hi = runner.batch_range()
            samples = None
            if data is not None:
                from ..bench import SampleFeeds

                samples = SampleFeeds(data, runner.input_specs(), max(batch_sizes))
            for batch_size in batch_sizes:
                common = dict(size_bytes=path.stat().st_size,
                              extra={"tensorrt": trt.__version__, "gpu": gpu, "engine": str(path)})
                if not lo <= batch_size <= hi:
                    results.append(BenchResult(model=path.name, precision=precision, backend=BACKEND,
                                               batch_size=int(batch_size), note=f"outside the engine's profile "
                                               f"(batch {lo}..{hi})", **common))
                    done += iterations
                    progress(done, total)
                    continue
                note = ""
                if samples is not None:
                    feed, note = samples.feed(runner.input_specs(), batch_size)
                    if feed is None:
                        results.append(BenchResult(model=path.name, precision=precision, backend=BACKEND,
                                                   batch_size=int(batch_size), note=note, **common))
                        done += iterations
                        progress(done, total)
                        continue
                    runner.set_batch_size(batch_size, {name: a.shape for name, a in feed.items()}, values=feed)
                    runner.load_inputs(feed)
                else:
                    refusal = runner.random_refusal()
                    if refusal:
                        results.append(BenchResult(model=path.name, precision=precision, backend=BACKEND,
                                                   batch_size=int(batch_size), note=refusal, **common))
                        done += iterations
                        progress(done, total)
                        continue
                    runner.set_batch_size(batch_size, shapes)
                    runner.fill_random()

                def step():
                    nonlocal done
                    done += 1
                    progress(done, total)

                times = time_runner(runner, iterations, warmup, step, max_seconds)
                if len(times) < iterations:
                    note = (note + "; " if note else "") + \
                        f"stopped after {len(times)} of {iterations} runs (max {max_seconds:g} s)"
                    done += iterations - len(times)
                    progress(done, total)
                common["extra"]["inputs"] = f"data: {samples.description}" if samples else "random"
                results.append(engine_row(path.name, precision, batch_size, times, note=note,
                                           device_memory_bytes=runner.device_memory_bytes(), **common))
    return results


def build_and_benchmark(model_path: PathLike, precisions: Sequence[str], batch_sizes: Sequence[int], data=None, *,
                        iterations: int = defaults.BENCH_ITERATIONS, warmup: int = defaults.BENCH_WARMUP,
                        progress: ProgressCallback = no_progress, engines_dir: Optional[PathLike] = None,
                        explicit: bool = False, shapes: Optional[Mapping[str, Sequence[int]]] = None,
                        workspace_gib: float = defaults.WORKSPACE_GIB,
                        max_seconds: Optional[float] = None, plugins: Sequence[PathLike] = ()) -> List[BenchResult]:
    """Build an engine per precision from ``model_path`` (batch profile spanning ``batch_sizes``) and time them.

    ``data``: calibration data (DataSpec or path) for ``int8``; without it the int8 row
    is skipped with a note. ``shapes``: full input shapes (``{"images": (1, 3, 640, 640)}``)
    for models with dynamic non-batch axes. Engines go to ``engines_dir`` (kept) or a
    temporary folder (removed).
    """
    from ..backend.build import BuildOptions
    from ..bench import batch_refusal
    from ..graph.model import load_onnx
    from ..graph.signature import input_specs
    from .building import build_engine

    model_path = Path(model_path)
    sizes = sorted(set(int(b) for b in batch_sizes))
    specs = input_specs(load_onnx(model_path))
    refused = {b: batch_refusal(specs, b) for b in sizes}
    results: List[BenchResult] = [BenchResult(model=model_path.name, precision=p, backend=BACKEND, batch_size=b,
                                              note=refused[b]) for p in precisions for b in sizes if refused[b]]
    sizes = [b for b in sizes if not refused[b]]  # a fixed-batch model: its one batch size, the rest skipped
    if not sizes:
        return results
    profile = {}
    by_name = {s.name: s for s in specs}
    for name, shape in (shapes or {}).items():  # --shape gives the other axes; the batch spans the sizes
        spec = by_name.get(name)
        axis = spec.batch_axis if spec is not None and spec.batched and spec.batch_axis < len(shape) else None
        dims = tuple(int(d) for d in shape)

        def at(batch, dims=dims, axis=axis):
            return dims if axis is None else dims[:axis] + (batch,) + dims[axis + 1:]

        profile[name] = (at(sizes[0]), at(sizes[-1]), at(sizes[-1]))
    with tempfile.TemporaryDirectory(prefix="trtq-engines-") as scratch:
        folder = Path(engines_dir) if engines_dir is not None else Path(scratch)
        built, labels = [], []
        for precision in precisions:
            if precision == "int8" and data is None:
                results += [BenchResult(model=model_path.name, precision="int8", backend=BACKEND, batch_size=b,
                                        note="int8 needs calibration data (--data)") for b in sizes]
                continue
            options = BuildOptions(
                model_path=model_path, output_path=folder / f"{model_path.stem}.{precision}.engine",
                precision=precision, explicit=explicit, calib=data if precision == "int8" else None,
                batch_sizes=sizes, min_shapes={k: v[0] for k, v in profile.items()},  # other inputs span the sizes
                opt_shapes={k: v[1] for k, v in profile.items()}, max_shapes={k: v[2] for k, v in profile.items()},
                workspace_gib=workspace_gib, plugins=[Path(p) for p in plugins])
            build_engine(options)
            built.append(options.output_path)
            labels.append(precision)
        if built:
            results += benchmark_engines(built, sizes, iterations=iterations, warmup=warmup, progress=progress,
                                         precisions=labels, shapes=None, data=data, max_seconds=max_seconds,
                                         plugins=plugins)
    return results
