"""Export a PyTorch model to ONNX and prove the file computes what PyTorch computes.

:func:`export_onnx` runs the model once in PyTorch (which catches wrong input shapes
with PyTorch's own message), exports it with ``torch.onnx.export`` into a temporary
folder beside the target, runs the exported file in ONNX Runtime on the same inputs,
compares every output and only then renames the file into place: a failed or
mismatching export leaves nothing behind.

Exporters (``exporter=``):

- ``"torchscript"``: ``torch.onnx.export(..., dynamo=False)``, the tracing exporter.
  Needs nothing beyond torch, writes the requested opset natively (TensorRT 8.6 parses
  up to opset 17), takes TorchScript modules as they are, and names nodes after module
  paths (``/layer1/conv/Conv``), which keeps calibration caches readable. PyTorch has
  deprecated it since 2.9 but it works in every release ``trtq[torch]`` allows.
- ``"dynamo"``: ``torch.onnx.export(..., dynamo=True)``, PyTorch's default since 2.9.
  Needs the ``onnxscript`` package. It writes opset 18 and converts down to a lower
  opset asked for, which fails for some graphs (a Conv+BatchNorm net with a dynamic
  batch, in torch 2.13): the file then stays at 18 and trtq warns.
- ``"auto"`` (default): ``torchscript`` where this torch still has it, else ``dynamo``.

torch is imported inside the functions that need it: ``import trtq.graph.export``
works without it, and a missing torch is a :class:`~trtq.errors.BackendUnavailable`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import io
import logging
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import defaults
from ..errors import BackendUnavailable, ModelError, OutputError, TrtqError
from ..fileio import check_writable, make_parent
from .model import TensorSpec
from .torchload import _one_line, import_torch, load_torch_model

log = logging.getLogger("trtq.export")

EXPORTERS = ("auto", "torchscript", "dynamo")
#: dtype names ``--input-shape`` accepts after the shape (``ids:1x128:int64``).
INPUT_DTYPES = ("float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool")

_SHAPE_RE = re.compile(r"^\d+([x,X]\d+)*$")


class ExportMismatch(ModelError):
    """The exported ONNX file does not compute what the PyTorch model computes."""


@dataclass(frozen=True)
class InputRequest:
    """One model input as asked for on the command line: ``[name:]1x3x224x224[:dtype]``."""

    name: Optional[str]
    shape: Tuple[int, ...]
    dtype: str = "float32"

    def text(self) -> str:
        return f"{self.name + ':' if self.name else ''}{'x'.join(map(str, self.shape))}:{self.dtype}"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_onnx` wrote and how well it matches PyTorch."""

    path: Path
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    #: Largest |ONNX Runtime - PyTorch| over all outputs (and both batch sizes with
    #: ``dynamic_batch``); ``None`` when verification was skipped.
    max_abs_diff: Optional[float]
    #: The tolerance that difference was held to (``None`` when skipped).
    tolerance: Optional[float]
    seconds: float
    exporter: str
    opset: int

    @property
    def verified(self) -> bool:
        return self.max_abs_diff is not None


# -- parsing ---------------------------------------------------------------------------

def parse_input_shape(text: str) -> InputRequest:
    """Parse ``1x3x224x224``, ``image:1x3x224x224``, ``ids:1x128:int64`` or ``1x128:int64``."""
    raw = text
    parts = [p.strip() for p in text.strip().split(":")]
    name = shape = dtype = None
    for part in parts:
        if not part:
            raise ValueError(f"empty field in input shape {raw!r}")
        if _SHAPE_RE.match(part):
            if shape is not None:
                raise ValueError(f"two shapes in {raw!r}")
            shape = tuple(int(d) for d in re.split(r"[x,X]", part))
        elif part.lower() in INPUT_DTYPES:
            if dtype is not None:
                raise ValueError(f"two dtypes in {raw!r}")
            dtype = part.lower()
        elif name is None and shape is None and dtype is None:
            name = part
        else:
            raise ValueError(f"cannot read {part!r} in input shape {raw!r}: expected [NAME:]DxDx...[:DTYPE] "
                             f"with DTYPE one of {', '.join(INPUT_DTYPES)}")
    if shape is None:
        raise ValueError(f"no shape in {raw!r}: expected e.g. 1x3x224x224 or image:1x3x224x224")
    if any(d < 1 for d in shape):
        raise ValueError(f"dimensions must be at least 1 in {raw!r}")
    return InputRequest(name, shape, dtype or "float32")


# -- torch and model loading -------------------------------------------------------------


# -- inputs ----------------------------------------------------------------------------

_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "int16": 2, "int8": 1,
             "uint8": 1, "bool": 1}


def _check_input_memory(requests: Sequence[InputRequest]) -> None:
    """Refuse example inputs that cannot fit in memory (one line, before torch tries to allocate them)."""
    from ..host import available_memory

    total = 0
    for request in requests:
        count = 1
        for dim in request.shape:
            count *= int(dim)
        total += count * _ITEMSIZE.get(request.dtype, 8)
    limit = available_memory()
    # the model's activations, the exporter and ONNX Runtime need several times the inputs
    if limit is not None and total * 4 > limit:
        shapes = ", ".join(f"{r.name + ':' if r.name else ''}{'x'.join(map(str, r.shape))}" for r in requests)
        raise ModelError(f"--input-shape {shapes} needs {total / 2**30:.3g} GiB for the example inputs alone, and "
                         f"{limit / 2**30:.3g} GiB of memory is available; export with a smaller shape (batch 1, and "
                         "--dynamic-batch for larger batches later)")


def random_inputs(requests: Sequence[InputRequest], seed: int = defaults.SEED, names: Sequence[str] = ()) -> tuple:
    """Random example tensors for ``requests``.

    Floats are standard normal; integers are ids in ``[0, EXPORT_INT_HIGH)``, except inputs
    whose name contains ``mask`` (all ones) or ``type`` (all zeros, as token type ids);
    bools are random.
    """
    torch = import_torch()
    _check_input_memory(requests)
    generator = torch.Generator().manual_seed(seed)
    tensors = []
    for index, request in enumerate(requests):
        name = (request.name or (names[index] if index < len(names) else "")).lower()
        dtype = getattr(torch, request.dtype)
        if dtype.is_floating_point:
            tensor = torch.randn(request.shape, generator=generator).to(dtype)
        elif dtype == torch.bool:
            tensor = torch.rand(request.shape, generator=generator) > 0.5
        elif "mask" in name:
            tensor = torch.ones(request.shape, dtype=dtype)
        elif "type" in name:
            tensor = torch.zeros(request.shape, dtype=dtype)
        else:
            high = min(defaults.EXPORT_INT_HIGH, 128) if dtype == torch.int8 else defaults.EXPORT_INT_HIGH
            tensor = torch.randint(0, high, request.shape, generator=generator, dtype=dtype)
        tensors.append(tensor)
    return tuple(tensors)


def _as_tensors(torch, example_inputs) -> tuple:
    if isinstance(example_inputs, (torch.Tensor, np.ndarray)):
        example_inputs = (example_inputs,)
    if isinstance(example_inputs, dict):
        raise ModelError("example_inputs must be a tensor or a sequence of tensors in forward()'s order, not a dict")
    tensors = []
    for index, value in enumerate(example_inputs):
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if not isinstance(value, torch.Tensor):
            raise ModelError(f"example input {index} is a {type(value).__name__}; give torch tensors or numpy arrays")
        tensors.append(value)
    if not tensors:
        raise ModelError("no example inputs given: the exporter needs one tensor per model input")
    return tuple(tensors)


def forward_input_names(model, count: int) -> List[str]:
    """Input names from forward()'s parameters (``input_0``... where they cannot be read)."""
    names: List[str] = []
    try:
        schema = getattr(model.forward, "schema", None)  # TorchScript
        if schema is not None:
            names = [a.name for a in schema.arguments[1:]]
        else:
            params = inspect.signature(model.forward).parameters.values()
            names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError, AttributeError):
        names = []
    names = names[:count]
    if len(set(names)) != len(names) or len(names) < count:
        return ["input"] if count == 1 else [f"input_{i}" for i in range(count)]
    return names


def _flatten(value) -> list:
    """Tensors of a model output in the order the exporters emit them (None dropped)."""
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _flatten(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _flatten(item)]
    return [value]


def _numpy(tensor) -> np.ndarray:
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":
        tensor = tensor.float()
    return tensor.numpy()


def _shape_text(shape) -> str:
    return "x".join(str(d) for d in shape) or "scalar"


def _describe(tensors) -> str:
    return ", ".join(f"{_shape_text(t.shape)} {str(t.dtype).replace('torch.', '')}" for t in tensors)


def _device(torch, model):
    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError, RuntimeError):
        return torch.device("cpu")


def _run_torch(torch, model, tensors: tuple, what: str, hint: str = "check --input-shape") -> list:
    device = _device(torch, model)
    try:
        with torch.no_grad():
            outputs = model(*(t.to(device) for t in tensors))
    except TrtqError:
        raise
    except SystemExit as exc:
        raise ModelError(f"the model's forward() called sys.exit({exc.code!r}) on {what}; nothing was "
                         "exported") from None
    except Exception as exc:
        raise ModelError(f"the model rejected {what} ({_describe(tensors)}): {type(exc).__name__}: "
                         f"{_one_line(exc)}; {hint}") from None
    flat = _flatten(outputs)
    bad = [type(t).__name__ for t in flat if not isinstance(t, torch.Tensor)]
    if bad or not flat:
        raise ModelError(f"the model returned {', '.join(bad) or 'no tensors'}; ONNX outputs must be tensors "
                         f"(or tuples/lists/dicts of tensors)")
    arrays = [_numpy(t) for t in flat]
    for index, array in enumerate(arrays):
        if array.dtype.kind not in "fc" or array.size == 0:
            continue
        finite = np.isfinite(array)
        if np.isnan(array).any() or not finite.any():
            what_bad = "NaN" if np.isnan(array).any() else "only +-inf"
            raise ModelError(f"PyTorch output {index} holds {what_bad} on {what} ({_describe(tensors)}); a "
                             "comparison with ONNX Runtime would prove nothing, so nothing was exported. Check the "
                             "model's weights and forward(), or the --input-shape dtypes and values")
    return arrays


def _second_batch(torch, tensors: tuple) -> tuple:
    """The example inputs grown by one sample: checks a dynamic batch really is dynamic."""
    grown = []
    generator = torch.Generator().manual_seed(1)
    for t in tensors:
        extra = t[:1]
        if t.dtype.is_floating_point:
            extra = extra + 0.1 * torch.randn(extra.shape, generator=generator).to(t.dtype)
        grown.append(torch.cat([t, extra], dim=0))
    return tuple(grown)


# -- exporting --------------------------------------------------------------------------

def _pick_exporter(exporter: str) -> str:
    if exporter not in EXPORTERS:
        raise TrtqError(f"unknown exporter {exporter!r}; choose one of {', '.join(EXPORTERS)}")
    if exporter == "dynamo" and importlib.util.find_spec("onnxscript") is None:
        raise BackendUnavailable("the dynamo exporter needs the onnxscript package: pip install onnxscript "
                                 "(or use --exporter torchscript)")
    if exporter != "auto":
        return exporter
    for name in ("torch.onnx._internal.torchscript_exporter", "torch.onnx.utils"):
        with contextlib.suppress(ImportError, ValueError):
            if importlib.util.find_spec(name) is not None:
                return "torchscript"
    if importlib.util.find_spec("onnxscript") is None:
        raise BackendUnavailable("this torch has only the dynamo ONNX exporter, which needs onnxscript: "
                                 "pip install onnxscript")
    return "dynamo"


_UNSUPPORTED_RES = (
    re.compile(r"operator '([\w:.]+)' to ONNX opset version (\d+) is not supported"),
    re.compile(r"No ONNX function found for <OpOverload\(op='([\w.]+)'"),
    re.compile(r"Could not find an implementation for (\w+\(\d+\))"),
)


def _unsupported_operator(exc: BaseException) -> Optional[str]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        for pattern in _UNSUPPORTED_RES:
            match = pattern.search(str(exc))
            if match:
                return match.group(1).replace("aten.", "aten::")
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def _native_output_to(sink: io.StringIO):
    """Route what C++ code writes to file descriptors 1 and 2 (torch prints the traced
    graph there when an export fails) into ``sink``."""
    try:
        fds = [sys.stdout.fileno(), sys.stderr.fileno()]
    except (AttributeError, ValueError, io.UnsupportedOperation):
        fds = []
    fds = [fd for fd in fds if fd in (1, 2)]
    if not fds:
        yield
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = {fd: os.dup(fd) for fd in fds}
    with tempfile.TemporaryFile() as capture:
        try:
            for fd in fds:
                os.dup2(capture.fileno(), fd)
            yield
        finally:
            for fd, copy in saved.items():
                os.dup2(copy, fd)
                os.close(copy)
            capture.seek(0)
            sink.write(capture.read().decode("utf-8", "replace"))


@contextlib.contextmanager
def _quiet_exporter():
    """Keep the exporters' prints and deprecation chatter off the user's terminal;
    tracer warnings (data-dependent control flow, baked-in values) are logged."""
    quiet = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx",
                                            "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in quiet]
    sink = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for logger in quiet:
            logger.setLevel(logging.ERROR)
        try:
            with _native_output_to(sink), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                yield
        finally:
            for logger, level in zip(quiet, levels):
                logger.setLevel(level)
            seen = set()
            for item in caught:
                text = str(item.message).splitlines()[0] if str(item.message) else ""
                if item.category.__name__ == "TracerWarning" and text not in seen:
                    seen.add(text)
                    log.warning("exporter: %s", text)
                else:
                    log.debug("exporter: %s: %s", item.category.__name__, text)
            if sink.getvalue().strip():
                log.debug("exporter output:\n%s", sink.getvalue().rstrip())


def _dynamic_axes(input_names, output_names, out_a, out_b, batch_a, batch_b, inputs):
    axes = {name: {0: "batch"} for name, t in zip(input_names, inputs) if t.dim() >= 1}
    for name, a, b in zip(output_names, out_a, out_b):
        if a.ndim >= 1 and a.shape[0] == batch_a and b.shape[0] == batch_b:
            axes[name] = {0: "batch"}
    return axes


def parse_dynamic_axis(text: str) -> Tuple[str, int]:
    """``NAME:AXIS`` (``input_ids:1``) -> ``("input_ids", 1)``; AXIS >= 1 (axis 0 is --dynamic-batch's)."""
    name, sep, axis = str(text).rpartition(":")
    if not sep or not name or not axis.strip().isdigit():
        raise ModelError(f"--dynamic-axis {text!r}: expected NAME:AXIS, e.g. input_ids:1")
    if int(axis) == 0:
        raise ModelError(f"--dynamic-axis {text!r}: axis 0 is the batch axis; use --dynamic-batch")
    return name, int(axis)


def _grown_along(torch, tensors: tuple, names: Sequence[str], axes: Sequence[Tuple[str, int]]) -> tuple:
    """The inputs with every named axis one longer: the last slice repeated (a token id, a mask value of 1)."""
    by_name = {}
    for name, axis in axes:
        by_name.setdefault(name, []).append(axis)
    grown = []
    for name, t in zip(names, tensors):
        for axis in by_name.get(name, ()):
            t = torch.cat([t, t.narrow(axis, t.shape[axis] - 1, 1)], dim=axis)
        grown.append(t)
    return tuple(grown)


def _axis_labels(names_out, refs, refs_grown, axes) -> Dict[str, Dict[int, str]]:
    """Symbolic names for the dynamic axes: one label per axis index (``dim1``), shared by the inputs
    that name it (input_ids:1 and attention_mask:1 are one sequence length), and given to every
    output axis that grew with them."""
    labels: Dict[str, Dict[int, str]] = {}
    for name, axis in axes:
        labels.setdefault(name, {})[axis] = f"dim{axis}"
    for name, a, b in zip(names_out, refs, refs_grown):
        for axis in range(1, min(a.ndim, b.ndim)):
            if a.shape[axis] != b.shape[axis]:
                labels.setdefault(name, {})[axis] = f"dim{axis}"
    return labels


def _exact_arity(torch, model, count: int):
    """``model`` as the tracing exporter should see it: called with exactly ``count`` inputs.

    The torchscript exporter appends the default of every further forward() parameter to
    the inputs (``use_cache=None``...), which breaks forward() wrappers such as the ones
    transformers 5 puts on its models. A shallow copy that shares every submodule and
    parameter, with a ``forward(*inputs)`` of its own, keeps the call as PyTorch made it
    and the node names as they were (``/encoder/layer.0/...``: a wrapper module would
    prefix them).
    """
    if isinstance(model, torch.jit.ScriptModule):
        return model
    try:
        params = list(inspect.signature(model.forward).parameters.values())
    except (TypeError, ValueError):
        return model
    if len([p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]) <= count:
        return model
    import copy

    view = copy.copy(model)
    bound_forward = type(model).forward

    def forward(*inputs):
        return bound_forward(view, *inputs)

    object.__setattr__(view, "forward", forward)
    return view


def _export_to(torch, model, tensors, tmp_path: Path, *, exporter, opset, input_names, output_names, dynamic_axes):
    kwargs = dict(input_names=list(input_names), output_names=list(output_names), opset_version=opset,
                  dynamic_axes=dynamic_axes or None, do_constant_folding=True, verbose=False)
    if exporter == "dynamo":
        size = sum(p.numel() * p.element_size() for p in model.parameters()) if hasattr(model, "parameters") else 0
        kwargs.update(dynamo=True, external_data=size > 1_800_000_000)
        del kwargs["do_constant_folding"]
    else:
        kwargs.update(dynamo=False)
        model = _exact_arity(torch, model, len(tensors))
    with _quiet_exporter():
        torch.onnx.export(model, tensors, str(tmp_path), **kwargs)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors come back as exceptions, reported once
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _ort_run(session, names: Sequence[str], tensors: tuple, what: str) -> list:
    feeds = {name: _numpy(t) for name, t in zip(names, tensors)}
    try:
        return session.run(None, feeds)
    except Exception as exc:
        raise ExportMismatch(f"the exported model fails in ONNX Runtime on {what} "
                             f"({_describe(tensors)}): {_one_line(exc)}") from None


def _tolerance(ref: np.ndarray, rtol: float, atol: float) -> float:
    if ref.dtype.kind != "f" or ref.size == 0:
        return 0.0
    finite = np.abs(ref[np.isfinite(ref)])
    scale = float(finite.max()) if finite.size else 0.0
    factor = 10.0 if ref.dtype.itemsize < 4 else 1.0  # float16 outputs: ~1e-3 precision of their own
    return factor * (atol + rtol * scale)


def _compare(refs: list, outs: list, output_names: Sequence[str], rtol: float, atol: float, what: str):
    """Largest |difference| and the tolerance of the worst output; raises on a mismatch."""
    if len(refs) != len(outs):
        raise ExportMismatch(f"the ONNX model has {len(outs)} output(s) but PyTorch returned {len(refs)} tensor(s); "
                             f"trtq cannot tell which is which")
    worst, worst_tol = 0.0, 0.0
    for name, ref, out in zip(output_names, refs, outs):
        out = np.asarray(out)
        if tuple(ref.shape) != tuple(out.shape):
            raise ExportMismatch(f"output {name!r} on {what}: ONNX Runtime gives shape {_shape_text(out.shape)}, "
                                 f"PyTorch {_shape_text(ref.shape)}")
        if ref.size == 0:
            continue
        a, b = ref.astype(np.float64), out.astype(np.float64)
        both_nan = np.isnan(a) & np.isnan(b)
        with np.errstate(invalid="ignore"):
            diff = np.where(both_nan | (a == b), 0.0, np.abs(a - b))
        diff = np.nan_to_num(diff, nan=np.inf)
        value = float(diff.max())
        tol = _tolerance(ref, rtol, atol)
        if value > tol:
            raise ExportMismatch(
                f"the exported ONNX does not match PyTorch: output {name!r} on {what} differs by up to {value:.3g} "
                f"(tolerance {tol:.3g} = {atol:g} + {rtol:g} x max|output|); nothing was written. Typical causes: "
                f"randomness in forward(), data-dependent control flow the exporter traced one way (see the "
                f"warnings above), or an operator converted wrongly. Skip the check with verify=False / --no-verify "
                f"or loosen it with --tolerance")
        if value >= worst:
            worst, worst_tol = value, tol
    return worst, worst_tol


def _finalize(tmp_path: Path, target: Path) -> None:
    """Move the verified export into place; the .onnx file is renamed last."""
    import onnx

    tmp_dir = tmp_path.parent
    extra = [p for p in tmp_dir.iterdir() if p != tmp_path]
    if extra:  # > 2 GB model: gather external data into one <target>.data beside the target
        data_name = target.name + ".data"
        model = onnx.load(str(tmp_path), load_external_data=True)
        rewritten = tmp_dir / ("final-" + tmp_path.name)
        onnx.save_model(model, str(rewritten), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name)
        os.replace(tmp_dir / data_name, target.parent / data_name)
        tmp_path = rewritten
    os.replace(tmp_path, target)


def export_onnx(
    model,
    example_inputs,
    path: Union[str, "os.PathLike[str]"],
    *,
    input_names: Optional[Sequence[str]] = None,
    output_names: Optional[Sequence[str]] = None,
    dynamic_batch: bool = False,
    dynamic_axes: Sequence[Tuple[str, int]] = (),
    opset: int = defaults.EXPORT_OPSET,
    verify: bool = True,
    exporter: str = "auto",
    rtol: float = defaults.EXPORT_RTOL,
    atol: float = defaults.EXPORT_ATOL,
) -> ExportResult:
    """Export ``model`` to ONNX at ``path`` and check it against PyTorch in ONNX Runtime.

    ``model``: a ``torch.nn.Module`` (put in eval mode for the export and restored after),
    or a string accepted by :func:`load_torch_model`. ``example_inputs``: a tensor or a
    sequence of tensors / numpy arrays, one per ``forward()`` parameter, in order.
    ``input_names`` default to forward()'s parameter names; ``output_names`` to
    ``output`` / ``output_0, output_1, ...``. ``dynamic_batch`` makes dim 0 of every input
    (and of every output that follows the batch) symbolic and verifies a second batch
    size too. ``dynamic_axes``: ``(input name, axis)`` pairs made symbolic as well (a
    sequence length: ``("input_ids", 1), ("attention_mask", 1)``), verified on inputs one
    longer along each. The outputs must agree within ``atol + rtol * max|PyTorch output|``
    (:data:`trtq.defaults.EXPORT_RTOL`), otherwise :class:`ExportMismatch` is raised and
    nothing is written.
    """
    # Long because one exporter attempt after another (TorchScript, dynamo) with the same checks around each;
    # split, the fallbacks would pass a dozen values between steps.
    start = time.perf_counter()
    torch = import_torch()
    if isinstance(model, (str, os.PathLike)):
        model = load_torch_model(model)
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"model is a {type(model).__name__}, not a torch.nn.Module")
    if not isinstance(opset, int) or isinstance(opset, bool) or not 7 <= opset <= 25:
        raise ModelError(f"opset must be an integer between 7 and 25, got {opset!r}")
    if opset < defaults.QDQ_MIN_OPSET:
        log.warning("opset %d is below %d: trtq cannot insert per-channel Q/DQ into this model", opset,
                    defaults.QDQ_MIN_OPSET)
    exporter = _pick_exporter(exporter)
    target = check_writable(path)
    tensors = _as_tensors(torch, example_inputs)
    if dynamic_batch and any(t.dim() == 0 for t in tensors):
        raise ModelError("dynamic_batch needs every input to have a batch dimension (dim 0); one is a scalar")

    names_in = list(input_names) if input_names else forward_input_names(model, len(tensors))
    if len(names_in) != len(tensors):
        raise ModelError(f"{len(names_in)} input name(s) for {len(tensors)} example input(s)")
    if len(set(names_in)) != len(names_in):
        raise ModelError(f"input names must be unique: {names_in}")

    was_training = model.training
    model.eval()
    try:
        refs = _run_torch(torch, model, tensors, "the example inputs")
        names_out = list(output_names) if output_names else (
            ["output"] if len(refs) == 1 else [f"output_{i}" for i in range(len(refs))])
        if len(names_out) != len(refs):
            raise ModelError(f"{len(names_out)} output name(s) for {len(refs)} model output(s)")
        clash = set(names_out) & set(names_in)
        if clash:
            raise ModelError(f"names used for both an input and an output: {', '.join(sorted(clash))}")
        axes, grown, refs_grown = {}, None, None
        for name, axis in dynamic_axes:
            if name not in names_in:
                raise ModelError(f"--dynamic-axis {name}:{axis}: no input named {name!r}; inputs: {', '.join(names_in)}")
            rank = tensors[names_in.index(name)].dim()
            if axis >= rank:
                raise ModelError(f"--dynamic-axis {name}:{axis}: {name} has {rank} dimension(s) (axes 0-{rank - 1})")
        longer = refs_longer = None
        if dynamic_axes:
            longer = _grown_along(torch, tensors, names_in, dynamic_axes)
            refs_longer = _run_torch(torch, model, longer, "inputs one longer along --dynamic-axis",
                                     hint="the model fixes that length; export without --dynamic-axis")
        if dynamic_batch:
            grown = _second_batch(torch, tensors)
            refs_grown = _run_torch(
                torch, model, grown, f"a batch of {grown[0].shape[0]} (dynamic batch check)",
                hint=f"it runs at batch {tensors[0].shape[0]}, so it probably fixes its batch size "
                     f"(e.g. x.view({tensors[0].shape[0]}, -1) instead of x.flatten(1)); "
                     f"export without --dynamic-batch")
            axes = _dynamic_axes(names_in, names_out, refs, refs_grown, tensors[0].shape[0], grown[0].shape[0], tensors)
        if dynamic_axes:
            for name, labels in _axis_labels(names_out, refs, refs_longer, dynamic_axes).items():
                axes.setdefault(name, {}).update(labels)

        make_parent(target)
        try:
            tmp_dir = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
        except OSError as exc:
            raise OutputError(f"cannot write beside {target}: {exc.strerror or exc}") from None
        try:
            tmp_path = tmp_dir / target.name
            _export_checked(torch, model, tensors, tmp_path, exporter=exporter, opset=opset, input_names=names_in,
                            output_names=names_out, dynamic_axes=axes)
            import onnx

            onnx_model = onnx.load(str(tmp_path), load_external_data=False)
            max_diff = tol = None
            if verify:
                checks = [(tensors, refs, "the example inputs")]
                if dynamic_batch:
                    checks.append((grown, refs_grown, f"a batch of {grown[0].shape[0]} (--dynamic-batch)"))
                if dynamic_axes:
                    checks.append((longer, refs_longer, "inputs one longer along --dynamic-axis"))
                max_diff, tol = _verify(tmp_path, checks, names_out, rtol, atol)
            try:
                _finalize(tmp_path, target)
            except OSError as exc:
                from ..fileio import os_reason

                raise OutputError(f"cannot write {target}: {os_reason(exc)}; the previous file (if any) is "
                                  "unchanged") from None
        finally:
            shutil.rmtree(tmp_dir, ignore_errors=True)
    finally:
        model.train(was_training)
    written = _opset_of(onnx_model, opset)
    if written != opset:
        log.warning("the %s exporter wrote opset %d, not the %d asked for (it could not convert the model down); "
                    "TensorRT 8.6 parses opset <= 17: use the torchscript exporter for older TensorRT",
                    exporter, written, opset)
    inputs, outputs = _graph_specs(onnx_model)
    return ExportResult(path=target, inputs=inputs, outputs=outputs, max_abs_diff=max_diff, tolerance=tol,
                        seconds=time.perf_counter() - start, exporter=exporter, opset=written)


def _export_checked(torch, model, tensors, tmp_path: Path, *, exporter: str, opset: int, **names_and_axes) -> None:
    """torch.onnx.export with its failures turned into one-line ModelErrors."""
    try:
        on_device = tuple(t.to(_device(torch, model)) for t in tensors)
        _export_to(torch, model, on_device, tmp_path, exporter=exporter, opset=opset, **names_and_axes)
    except TrtqError:
        raise
    except OSError as exc:  # the disk filled up (or went read-only) while torch wrote the file
        from ..fileio import os_reason

        raise OutputError(f"cannot write the exported model beside {tmp_path.parent.parent}: {os_reason(exc)}") \
            from None
    except Exception as exc:
        op = _unsupported_operator(exc)
        if op:
            raise ModelError(f"operator {op} cannot be exported to ONNX opset {opset} ({exporter} exporter); try "
                             f"a higher --opset, the other --exporter, or replace it in the model") from None
        raise ModelError(f"torch.onnx.export ({exporter}) failed: {type(exc).__name__}: {_one_line(exc)}") from None
    if not tmp_path.exists():
        raise ModelError(f"torch.onnx.export ({exporter}) wrote no file")


def _verify(path: Path, checks, output_names, rtol: float, atol: float) -> Tuple[float, float]:
    """Run ``path`` in ONNX Runtime on each ``(inputs, PyTorch outputs, description)``; the
    largest difference and its tolerance. Raises ExportMismatch beyond the tolerance."""
    try:
        session = _session(path)
    except Exception as exc:
        op = _unsupported_operator(exc)
        if op:
            raise ModelError(f"ONNX Runtime has no implementation of operator {op} in the exported model; try "
                             f"another --opset or replace it in the model") from None
        raise ExportMismatch(f"ONNX Runtime cannot load the exported model: {_one_line(exc)}") from None
    feed_names = [i.name for i in session.get_inputs()]
    worst, worst_tol = 0.0, 0.0
    for tensors, refs, what in checks:
        if len(feed_names) != len(tensors):
            raise ExportMismatch(f"the exported model has {len(feed_names)} input(s) for {len(tensors)} example "
                                 f"input(s): the exporter drops inputs forward() does not use")
        outs = _ort_run(session, feed_names, tensors, what)
        diff, tol = _compare(refs, outs, output_names, rtol, atol, what)
        if diff >= worst:
            worst, worst_tol = diff, tol
    return worst, worst_tol


def _graph_specs(onnx_model) -> Tuple[List[TensorSpec], List[TensorSpec]]:
    from .model import output_specs
    from .signature import input_specs

    try:
        return input_specs(onnx_model), output_specs(onnx_model)
    except ModelError:
        return [], []


def _opset_of(onnx_model, asked: int) -> int:
    from .model import opset_version

    return opset_version(onnx_model) or asked
