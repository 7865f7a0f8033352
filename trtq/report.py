"""Benchmark and accuracy reports: one row type shared by ONNX Runtime and TensorRT benches."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional


@dataclass
class BenchResult:
    """One (model, precision, backend, batch size) measurement.

    ONNX Runtime rows and TensorRT engine rows fill the same fields, so one table,
    JSON, CSV and plot show INT8 beside FP16 and FP32 whatever ran them.
    """

    model: str                      # file name of the ONNX model or engine
    precision: str                  # "fp32", "fp16", "int8"
    backend: str                    # "ort-cpu", "tensorrt"
    batch_size: int
    latency_ms_p50: Optional[float] = None
    latency_ms_p90: Optional[float] = None
    latency_ms_p99: Optional[float] = None
    latency_ms_mean: Optional[float] = None
    throughput: Optional[float] = None      # samples per second = batch_size / mean latency
    iterations: int = 0
    size_bytes: Optional[int] = None        # model/engine file size on disk
    device_memory_bytes: Optional[int] = None
    speedup: Optional[float] = None         # throughput / throughput of the fp32 row at the same batch size
    note: str = ""                          # why a row was skipped, or anything unusual
    extra: dict = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.throughput is None

    def to_dict(self) -> dict:
        return asdict(self)
