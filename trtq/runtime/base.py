"""One protocol for every way trtq runs a model: activate, input metadata, infer, deactivate.

The shape is Polygraphy's runner: a runtime is made cheaply, opens its session or engine on
:meth:`Runtime.activate` (also as a context manager) and frees it on :meth:`Runtime.deactivate`.
Whoever compares or streams models takes runtimes and never asks which kind it holds:

- :class:`OnnxRuntime`: an ONNX model (path or ``ModelProto``) on ONNX Runtime's CPU provider;
- :class:`EngineRuntime`: a TensorRT engine; :mod:`trtq.backend` is imported only when it activates;
- :func:`trtq.runtime.streaming.stream`: the wrapper that runs a sequence through any runtime, its state
  outputs fed back as the next step's inputs.

:func:`open_runtime` picks the kind from what it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

PathLike = Union[str, Path]


#: File suffixes of TensorRT engines (what trtq build writes and eval, bench and deploy read).
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")


def is_engine_path(path: PathLike) -> bool:
    """Whether ``path`` names a TensorRT engine (by its suffix) rather than an ONNX model."""
    return Path(path).suffix.lower() in ENGINE_SUFFIXES


class Runtime:
    """A model that runs. Subclasses give :meth:`_open` (the session-like object: ONNX Runtime's
    ``get_inputs``/``get_outputs``/``run``) and set :attr:`name` and :attr:`precision`."""

    name: str = "model"
    precision: str = "unknown"

    def __init__(self) -> None:
        self.session: Any = None

    def _open(self):
        raise NotImplementedError

    def activate(self) -> "Runtime":
        """Open the session (once; later calls return at once)."""
        if self.session is None:
            self.session = self._open()
        return self

    def input_metadata(self) -> Dict[str, Tuple[List[Any], str]]:
        """``{input: (shape, type)}`` as the session reports them (symbolic dims as names or None)."""
        return {arg.name: (list(arg.shape), str(arg.type)) for arg in self.activate().session.get_inputs()}

    def output_names(self) -> List[str]:
        return [arg.name for arg in self.activate().session.get_outputs()]

    def infer(self, feed, outputs: Optional[Sequence[str]] = None) -> Dict[str, np.ndarray]:
        """``{output: array}`` for one batch (``feed``: ``{input: array}``); all outputs unless ``outputs``."""
        from ..ort import run

        return run(self.activate().session, feed, outputs)

    def deactivate(self) -> None:
        """Free the session (an engine's device memory); :meth:`activate` opens it again."""
        session, self.session = self.session, None
        close = getattr(session, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> "Runtime":
        return self.activate()

    def __exit__(self, *exc) -> None:
        self.deactivate()


class OnnxRuntime(Runtime):
    """An ONNX model on ONNX Runtime's CPU provider (a TensorRT-form Q/DQ model runs exact: :mod:`trtq.ort`)."""

    def __init__(self, model, *, threads: Optional[int] = None, name: Optional[str] = None) -> None:
        from ..graph.model import infer_precision, model_and_name

        super().__init__()
        self.model, default_name = model_and_name(model)
        self.threads = threads
        self.name = name or default_name
        self.precision = infer_precision(self.model)

    def _open(self):
        from ..ort import create_session

        return create_session(self.model, threads=self.threads)


class EngineRuntime(Runtime):
    """A TensorRT engine file. ``reference``: the ONNX model it was built from, whose inputs the feeds follow
    (their batch axes); ``batch_axes``: those axes as the caller's signature read them (``--batch-axis``
    overrides included; default: ``reference``'s own); ``plugins`` and ``dla_core``: what loading it needs."""

    def __init__(self, path: PathLike, *, reference=None, batch_axes: Optional[Mapping[str, Optional[int]]] = None,
                 plugins: Sequence[PathLike] = (), dla_core: Optional[int] = None) -> None:
        from ..backend.bench import engine_precision  # reads the build report: no TensorRT needed

        super().__init__()
        self.path, self.reference, self.plugins, self.dla_core = Path(path), reference, plugins, dla_core
        self.batch_axes = dict(batch_axes) if batch_axes is not None else None
        self.name = self.path.name
        self.precision = engine_precision(self.path)

    def _open(self):
        from ..backend.runner import EngineSession

        extra = {} if self.batch_axes is None else {"batch_axes": self.batch_axes}
        return EngineSession(self.path, model=self.reference, plugins=self.plugins, dla_core=self.dla_core, **extra)


def open_runtime(model, *, reference=None, threads: Optional[int] = None, plugins: Sequence[PathLike] = (),
                 dla_core: Optional[int] = None, batch_axes: Optional[Mapping[str, Optional[int]]] = None) -> Runtime:
    """The runtime for ``model``: an engine path (``.engine``/``.plan``/``.trt``) runs on TensorRT with
    ``reference``'s inputs (cut along ``batch_axes``, default ``reference``'s), anything else (ONNX path or
    ``ModelProto``) on ONNX Runtime."""
    if not hasattr(model, "graph") and is_engine_path(model):
        return EngineRuntime(model, reference=reference, batch_axes=batch_axes, plugins=plugins, dla_core=dla_core)
    return OnnxRuntime(model, threads=threads)
