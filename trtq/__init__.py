"""trtq: INT8 calibration, Q/DQ quantization and benchmarks for TensorRT.

``import trtq`` is cheap and needs neither torch, TensorRT nor CUDA; the public
functions import what they need when called.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import TrtqError  # noqa: E402

_LAZY = {
    "calibrate": ("trtq.pipeline", "calibrate"),
    "quantize": ("trtq.pipeline", "quantize"),
    "evaluate": ("trtq.evaluate", "evaluate"),
    "benchmark": ("trtq.bench", "benchmark"),
    "export_onnx": ("trtq.graph.export", "export_onnx"),
    "read_cache": ("trtq.cache", "read_cache"),
    "write_cache": ("trtq.cache", "write_cache"),
}

__all__ = ["TrtqError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'trtq' has no attribute {name!r}")
