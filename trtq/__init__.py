"""trtq: INT8 calibration, Q/DQ quantization and benchmarks for TensorRT.

``import trtq`` is cheap and needs neither torch, TensorRT nor CUDA; the public
functions import what they need when called.

The public functions are package attributes resolved on first use; no submodule shares a
public function's name, so importing any submodule never rebinds one (the flows live in
:mod:`trtq.pipeline`: ``trtq.pipeline.evaluation.evaluate`` is ``trtq.evaluate``).
"""

from __future__ import annotations

__version__ = "0.1.0"

from .errors import TrtqError  # noqa: E402

#: Public name -> (module, attribute). Imported on first use.
_LAZY = {
    "calibrate": ("trtq.pipeline", "calibrate"),
    "quantize": ("trtq.pipeline", "quantize"),
    "evaluate": ("trtq.pipeline", "evaluate"),
    "benchmark": ("trtq.pipeline.benchmarking", "benchmark"),
    "export_onnx": ("trtq.graph.export", "export_onnx"),
    "read_cache": ("trtq.cache", "read_cache"),
    "write_cache": ("trtq.cache", "write_cache"),
    "run_quickstart": ("trtq.quickstart", "run_quickstart"),
}

__all__ = ["TrtqError", "__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'trtq' has no attribute {name!r}")

