"""Timing TensorRT engines with CUDA events (the rows and the table are :mod:`trtq.pipeline.benchmarking`'s).

Each timed run is one ``execute_async_v3`` on the runner's stream, bracketed by two
CUDA events, with the inputs already on the GPU (random data of each input's shape):
the GPU time of the engine itself. ``warmup`` untimed runs come first at every batch
size.

What the numbers are: single-stream latency. One run is in flight at a time (the end
event is waited for before the next enqueue), the start event is recorded before the
CPU enqueues the run (so a tiny model's time includes enqueue latency), and no CUDA
graph is used; throughput = batch x 1000 / mean latency is that latency's reciprocal,
not the pipelined throughput trtexec reports with several runs in flight.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Union

from ..errors import TrtqError

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


def gpu_name() -> Optional[str]:
    try:
        from .cuda import device_info

        return device_info().name
    except TrtqError:
        return None


__all__ = ["BACKEND", "benchmark_engines", "build_and_benchmark", "engine_precision", "latency_row", "time_runner"]
