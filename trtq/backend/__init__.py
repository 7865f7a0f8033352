"""The only package that imports ``tensorrt`` or CUDA bindings; always lazily.

Layout (each piece importable without TensorRT unless said otherwise):

- :mod:`.policy`      pure decisions: which INT8 path, fast precisions per compute
                      capability, and the declared TensorRT API list of each build path
- :mod:`.cuda`        device memory, streams and events through cuda-python or pycuda (imported lazily)
- :mod:`.calibrator`  the implicit-INT8 calibrators (classes built once per TensorRT module)
- :mod:`.build`       engine builds (needs TensorRT when called)
- :mod:`.runner`      deserialized engines and their buffers; :mod:`.bench` times them
- :mod:`.info`        what ``trtq info`` prints
"""

from __future__ import annotations

from typing import Optional

from .. import defaults
from ..errors import BackendUnavailable

#: Module names tried in order: ``tensorrt`` (the pip metapackage, NVIDIA's tar/deb
#: installs, JetPack) re-exports ``tensorrt_bindings`` (what the bindings wheel installs).
TENSORRT_MODULES = ("tensorrt", "tensorrt_bindings")

_missing_reason: Optional[str] = None


def _import_tensorrt():
    """The TensorRT module, or ``None`` (the reason is kept for :func:`import_tensorrt`)."""
    global _missing_reason
    import importlib

    reasons = []
    for name in TENSORRT_MODULES:
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            # "No module named 'tensorrt'" says only that this name is absent; a module that exists
            # but fails to load (libnvinfer.so.10 missing) is the real cause, so it is reported first.
            absent = isinstance(exc, ModuleNotFoundError) and getattr(exc, "name", None) == name
            reasons.append((absent, _first_line(exc)))
        except Exception as exc:  # a broken install: OSError on its libraries, pybind11 errors
            reasons.append((False, f"{type(exc).__name__}: {_first_line(exc)}"))
    reasons.sort(key=lambda item: item[0])  # stable: broken installs before absent names
    _missing_reason = "; ".join(dict.fromkeys(text for _, text in reasons)) if reasons else "not installed"
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def tensorrt_version() -> Optional[str]:
    """Version string of an importable TensorRT, or ``None`` if it cannot be imported."""
    trt = _import_tensorrt()
    return None if trt is None else getattr(trt, "__version__", None)


def import_tensorrt():
    """The TensorRT Python module; raises :class:`BackendUnavailable` (one line, what to do) if missing."""
    trt = _import_tensorrt()
    if trt is None:
        raise BackendUnavailable(
            f"TensorRT is not importable ({_missing_reason}); engine builds and runs need an NVIDIA GPU "
            "with TensorRT installed (pip install 'trtq[gpu]' on an x86 server; JetPack ships it on Jetson). "
            "Calibration, Q/DQ models and ONNX Runtime benchmarks work without it"
        )
    return trt


def tensorrt_major(trt) -> int:
    """Major version of a TensorRT module (``10`` for ``'10.3.0'``)."""
    from .policy import parse_version

    return parse_version(getattr(trt, "__version__", "0"))[0]


__all__ = ["TENSORRT_MODULES", "tensorrt_version", "import_tensorrt", "tensorrt_major"]


def default_trt_version() -> int:
    """The running TensorRT's version as a cache header writes it (``100300``), else
    :data:`trtq.defaults.TRT_VERSION` where TensorRT is not installed."""
    from ..cache import trt_version_int

    version = tensorrt_version()
    return trt_version_int(version) if version else defaults.TRT_VERSION
