"""trtq: INT8 calibration, Q/DQ quantization and benchmarks for TensorRT.

``import trtq`` is cheap and needs neither torch, TensorRT nor CUDA; the public
functions import what they need when called.

The public functions are stable package attributes: ``trtq.evaluate`` is the function
whether or not the submodule of the same name has been imported (importing a submodule
normally rebinds the package attribute to the module; this package keeps its functions).
The submodules stay importable by their full names (``from trtq.evaluate import EvalReport``).
"""

from __future__ import annotations

import sys
import types

__version__ = "0.1.0"

from .errors import TrtqError  # noqa: E402

#: Public name -> (module, attribute). Imported on first use.
_LAZY = {
    "calibrate": ("trtq.pipeline", "calibrate"),
    "quantize": ("trtq.pipeline", "quantize"),
    "evaluate": ("trtq.evaluate", "evaluate"),
    "benchmark": ("trtq.bench", "benchmark"),
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


class _Package(types.ModuleType):
    """The ``trtq`` package object: a submodule import may not rebind a public function's name."""

    def __setattr__(self, name: str, value) -> None:
        if name in _LAZY and isinstance(value, types.ModuleType):
            return  # the import system binding a submodule (trtq.evaluate): it stays in sys.modules only
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
