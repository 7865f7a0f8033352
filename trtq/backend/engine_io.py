"""An engine's inputs, outputs and optimization profile, read by TensorRT (for ``trtq deploy triton``).

Deserializing needs TensorRT and a GPU it can use (``Runtime.deserialize_cuda_engine``);
no execution context, stream or buffer is created. Uses only
:data:`trtq.backend.policy.RUNTIME_API` (the names ``get_tensor_profile_shape``,
``get_tensor_shape``, ``get_tensor_dtype``, ``get_tensor_mode`` of ``ICudaEngine`` in the
TensorRT Python API), through the runner's loader so that plugins and version-compatible
plans load the same way as for ``trtq bench``.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Union

PathLike = Union[str, Path]

#: Which declared API list each function here may use (checked by the tests).
FUNCTION_PATHS = {"read_engine_io": "runtime"}


def read_engine_io(engine: Union[PathLike, bytes], plugins: Sequence[PathLike] = ()) -> List[object]:
    """The engine's I/O tensors (:class:`trtq.backend.runner.TensorInfo`: name, dtype, shape with -1 for
    dynamic axes, and the profile-0 (min, opt, max) shapes of dynamic inputs).

    Raises :class:`~trtq.errors.BackendUnavailable` without TensorRT or a usable GPU.
    """
    from . import import_tensorrt
    from .build import _logger_class
    from .runner import _io_tensors, _load_engine, _plugin_paths, read_build_report

    trt = import_tensorrt()
    if isinstance(engine, (bytes, bytearray, memoryview)):
        data, label, report = bytes(engine), "(in memory)", None
    else:
        path = Path(engine)
        data, label, report = path.read_bytes(), str(path), read_build_report(path)
    built = (report or {}).get("tensorrt") or {}  # as EngineRunner loads it: lean runtime, DLA core, plugins
    host_code = "VERSION_COMPATIBLE" in built.get("builder_flags", [])
    dla_core = int(built["dla_core"]) if built.get("dla_core") is not None else None
    logger = _logger_class(trt)(False)
    runtime, loaded = _load_engine(trt, logger, data, label, _plugin_paths(plugins, built.get("plugins"), label),
                                   host_code, dla_core)
    try:
        return _io_tensors(trt, loaded)
    finally:
        del loaded, runtime


__all__ = ["read_engine_io", "FUNCTION_PATHS"]
