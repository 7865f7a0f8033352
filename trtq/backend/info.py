"""What ``trtq info`` reports: TensorRT, GPU, fast precisions and the INT8 path trtq will take.

:func:`gather` never raises for a missing piece: it records why in ``missing`` so the
CLI can print everything it found and then say plainly what is absent.
"""

from __future__ import annotations

import logging
from typing import Dict, Optional

from .. import __version__
from ..errors import BackendUnavailable, TrtqError
from .policy import check_supported, fast_precisions, int8_path_text, parse_version

log = logging.getLogger(__name__)

#: Which declared API list each function here may use (checked by the tests).
FUNCTION_PATHS = {"builder_fast_precisions": "info-trt10"}


def gather(explicit: bool = False) -> dict:
    """``{"trtq", "tensorrt", "gpu", "cuda", "fast", "int8_path", "missing"}`` for this machine."""
    from . import _import_tensorrt, import_tensorrt

    info: dict = {"trtq": __version__, "tensorrt": None, "gpu": None, "cuda": None, "fast": None,
                  "int8_path": None, "missing": {}}
    trt = _import_tensorrt()
    if trt is None:
        try:
            import_tensorrt()
        except BackendUnavailable as exc:
            info["missing"]["tensorrt"] = str(exc)
    else:
        version = getattr(trt, "__version__", "0")
        info["tensorrt"] = version
        try:
            check_supported(version)
            info["int8_path"] = int8_path_text(parse_version(version)[0], explicit)
        except BackendUnavailable as exc:
            info["missing"]["tensorrt"] = str(exc)
    try:
        from . import cuda

        device = cuda.device_info()
        runtime, driver = cuda.versions()
        info["gpu"] = {"name": device.name, "compute_capability": device.sm, "memory_bytes": device.total_memory}
        info["cuda"] = {"runtime": _cuda_text(runtime), "driver": _cuda_text(driver), "layer": cuda.layer_name(),
                        "tensorrt_cuda": tensorrt_cuda_major()}
        info["fast"] = {**fast_precisions(device.compute_capability), "source": "compute capability"}
    except TrtqError as exc:
        info["missing"]["gpu"] = str(exc)
    if trt is not None and info["gpu"] is not None:
        reported = builder_fast_precisions(trt)
        if reported is not None:
            info["fast"] = {**reported, "source": "TensorRT builder"}
    return info


def builder_fast_precisions(trt) -> Optional[Dict[str, bool]]:
    """TensorRT <= 10's own answer (Builder.platform_has_fast_fp16/int8); ``None`` on 11 or on failure."""
    if parse_version(trt.__version__)[0] >= 11:
        return None
    try:
        builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
        return {"fp16": bool(builder.platform_has_fast_fp16), "int8": bool(builder.platform_has_fast_int8)}
    except Exception as exc:  # no GPU, driver mismatch: the compute-capability answer stands
        log.debug("TensorRT builder query failed: %s", exc)
        return None


def tensorrt_cuda_major() -> Optional[str]:
    """The CUDA major the installed TensorRT wheels were built for ("12" from tensorrt-cu12-libs), if known.

    cuda-python's runtime version is that of its own static cudart, not TensorRT's CUDA; the
    TensorRT wheel names are the only record of the latter (JetPack/deb installs: unknown).
    """
    import re
    from importlib import metadata

    for dist in metadata.distributions():
        name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
        match = re.match(r"tensorrt-cu(\d+)(-libs|-bindings)?$", name)
        if match:
            return match.group(1)
    return None


def _cuda_text(version: int) -> str:
    return f"{version // 1000}.{version % 1000 // 10}"


__all__ = ["gather", "builder_fast_precisions"]
