"""TensorRT benchmarks: engine latency per batch size, timed with CUDA events.

Each timed run is one ``execute_async_v3`` on the runner's stream, bracketed by two
CUDA events, with the inputs already on the GPU (random data of each input's shape):
the GPU time of the engine itself. ``warmup`` untimed runs come first at every batch
size. Rows are :class:`trtq.report.BenchResult` like the ONNX Runtime rows, so one
table and one report show both.

What the numbers are: single-stream latency. One run is in flight at a time (the end
event is waited for before the next enqueue), the start event is recorded before the
CPU enqueues the run (so a tiny model's time includes enqueue latency), and no CUDA
graph is used; throughput = batch x 1000 / mean latency is that latency's reciprocal,
not the pipelined throughput trtexec reports with several runs in flight.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np

from .. import defaults
from ..errors import TrtqError
from ..progress import ProgressCallback, no_progress
from ..report import BenchResult, throughput_from_latency

log = logging.getLogger(__name__)

BACKEND = "tensorrt"
PathLike = Union[str, Path]


def engine_precision(engine_path: PathLike) -> str:
    """Precision of an engine: from its build report, else from its file name, else ``"unknown"``."""
    from .runner import read_build_report

    report = read_build_report(engine_path) or {}
    precision = report.get("precision")
    if precision:
        return "int8" if precision == "best" else precision
    name = Path(engine_path).name.lower()
    for candidate in ("int8", "fp16", "fp32"):
        if candidate in name:
            return candidate
    return "unknown"


def time_runner(runner, iterations: int, warmup: int, progress=None, max_seconds: Optional[float] = None) -> List[float]:
    """Milliseconds of each of ``iterations`` timed executions (after ``warmup`` untimed ones).

    ``max_seconds``: stop once the timed runs add up to this much GPU time (at least one run).
    """
    from .cuda import Event

    if iterations < 1:
        raise TrtqError(f"iterations must be at least 1, got {iterations}")
    for _ in range(max(0, warmup)):
        runner.execute()
    runner.stream.synchronize()
    times = []
    with Event() as start, Event() as end:
        for _ in range(iterations):
            start.record(runner.stream)
            runner.execute()
            end.record(runner.stream)
            end.synchronize()
            times.append(end.elapsed_ms(start))
            if progress is not None:
                progress()
            if max_seconds is not None and sum(times) >= max_seconds * 1000.0:
                break
    return times


def latency_row(model: str, precision: str, batch_size: int, times_ms: Sequence[float], **fields) -> BenchResult:
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
    from . import import_tensorrt
    from .runner import EngineRunner

    trt = import_tensorrt()
    gpu = _gpu_name()
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
                results.append(latency_row(path.name, precision, batch_size, times, note=note,
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
    from .build import BuildOptions, build_engine

    from ..bench import batch_refusal
    from ..graph.model import load_onnx
    from ..graph.signature import input_specs

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


def _gpu_name() -> Optional[str]:
    try:
        from .cuda import device_info

        return device_info().name
    except TrtqError:
        return None


__all__ = ["BACKEND", "benchmark_engines", "build_and_benchmark", "engine_precision", "latency_row", "time_runner"]
