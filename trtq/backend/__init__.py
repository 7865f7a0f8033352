"""The only package that imports ``tensorrt`` or CUDA bindings; always lazily."""

from __future__ import annotations

from typing import Optional


def tensorrt_version() -> Optional[str]:
    """Version string of an importable TensorRT, or ``None`` if it cannot be imported."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - lazy by design
    except Exception:  # ImportError, or a broken install raising OSError on its libraries
        return None
    return getattr(trt, "__version__", None)
