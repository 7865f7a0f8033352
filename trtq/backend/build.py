"""TensorRT engine builds: FP32, FP16, INT8 (implicit calibrator or explicit Q/DQ).

Which way an engine is built comes from :func:`trtq.backend.policy.plan_build`:

- TensorRT 8.6-10.x, INT8: ``BuilderFlag.INT8`` with trtq's ``IInt8EntropyCalibrator2``
  (data on the GPU, or a trtq cache handed over without reading any data), a
  calibration profile for dynamic shapes, ``BuilderFlag.FP16`` as fallback with ``--fp16``.
- TensorRT 11 (and 10.x with ``--explicit``): trtq calibrates on the CPU
  (:func:`trtq.pipeline.calibration.calibrate`, or the cache's amax), inserts Q/DQ
  (:func:`trtq.graph.qdq.quantize_model`), converts to FP16 where asked
  (:func:`trtq.graph.fp16.to_fp16`) and builds a strongly typed network.

Both paths: TensorRT's plugins registered (and ``--plugins`` libraries loaded) before parsing;
TF32 off unless asked; optional DLA with GPU fallback, structured sparsity, version/hardware
compatibility; the sidecar's mixed-precision layers kept FP32 (precision constraints on the
implicit path, no Q/DQ on the explicit one).

Shape and argument checks (:func:`parse_shapes`, :func:`profile_shapes`) are pure and
run before TensorRT is touched. TensorRT objects are held in variables named after
their class (``builder``, ``network``, ``parser``, ``config``, ``profile``, ...), and each
function uses only the TensorRT names its path declares (:data:`FUNCTION_PATHS`,
checked by the tests against the real bindings).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import __version__, defaults
from ..errors import BackendUnavailable, ModelError, TrtqError
from ..progress import ProgressCallback, no_progress
from .policy import BuildPlan, check_explicit_supported, check_supported, dla_refusal, plan_build
from .profiles import (
    batch_axes_of,
    calibration_batch_size,
    calibration_shapes,
    is_dynamic,
    profile_shapes,
    shape_value_ranges,
)

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
Shape = Tuple[int, ...]
ProfileShapes = Dict[str, Tuple[Shape, Shape, Shape]]

#: Which declared API list (trtq.backend.policy.PATH_API) each function here may use.
FUNCTION_PATHS = {
    "_logger_class": "common",
    "_create_builder": "common",
    "_parse_network": "common",
    "_configure_common": "common",
    "_shape_tensor_inputs": "common",
    "_save_timing_cache": "common",
    "_configure_implicit": "implicit",
    "_float_layer_constraints": "implicit",
    "_network_flags": "both",   # picks EXPLICIT_BATCH (implicit, 8.6) or STRONGLY_TYPED (explicit, 10.x)
    "_build": "common",
    "load_plugins": "common",
    "_configure_features": "common",
    "_network_input_dtypes": "common",
    "_dla_cores": "common",
    "_dla_layers": "common",
    "_native_instancenorm": "implicit",  # TensorRT 8.6 only (on by default from 10.0)
}

#: TensorRT log lines that mean the GPU ran out of memory during the build.
_OOM = re.compile(r"out of memory|cudaErrorMemoryAllocation|requested amount of gpu memory|"
                  r"insufficient (gpu |device )?memory|failed to allocate|allocation failed", re.IGNORECASE)


# ----------------------------------------------------------------------------------------
# Pure: options, shapes, profiles


@dataclass
class BuildOptions:
    """One engine build request (the CLI turns ``trtq build`` arguments into this)."""

    model_path: Path
    output_path: Path
    precision: str = "fp32"                     # fp32 | fp16 | int8 | best (int8 + fp16 fallback)
    explicit: bool = False                      # TRT 10.x: Q/DQ + strongly typed instead of the calibrator
    calib: Optional[object] = None              # DataSpec (or path) of calibration data
    cache_path: Optional[Path] = None           # trtq/TensorRT calibration cache: read if it exists, else written
    force: bool = False                         # use a cache whose sidecar names another model
    algorithm: str = defaults.ALGORITHM         # calibration algorithm (entropy, minmax, percentile, mse)
    batch_sizes: Optional[Sequence[int]] = None  # dynamic batch: profile min/opt/max from these
    min_shapes: Dict[str, Shape] = field(default_factory=dict)
    opt_shapes: Dict[str, Shape] = field(default_factory=dict)
    max_shapes: Dict[str, Shape] = field(default_factory=dict)
    workspace_gib: float = defaults.WORKSPACE_GIB
    timing_cache: Optional[Path] = None
    report_path: Optional[Path] = None          # default: <engine>.json
    verbose: bool = False
    dla_core: Optional[int] = None              # run on this DLA core (Jetson), GPU fallback for the rest
    sparsity: bool = False                      # BuilderFlag.SPARSE_WEIGHTS (2:4 structured-sparse weights)
    tf32: bool = False                          # allow TF32 for FP32 layers (off: fp32 means IEEE FP32)
    version_compatible: bool = False            # BuilderFlag.VERSION_COMPATIBLE (runs on later TensorRT)
    hardware_compatibility: Optional[str] = None  # HardwareCompatibilityLevel member, e.g. "AMPERE_PLUS"
    plugins: Sequence[Path] = ()                # plugin libraries loaded before parsing
    float_layers: Optional[Sequence[str]] = None  # ONNX nodes kept in float; default: the cache sidecar's list
    #: shape-tensor inputs (TensorRT reads their values to size tensors): (min, opt, max) values per input
    shape_values: Dict[str, Tuple[Shape, Shape, Shape]] = field(default_factory=dict)
    min_snr: Optional[float] = None             # fidelity gate on trtq's CPU calibration verdict (exit 3)
    min_cosine: Optional[float] = None
    min_agreement: Optional[float] = None       # ... and on its lowest top-1 agreement
    min_metric: Optional[float] = None          # ... and on the user's --metric score
    metric: Optional[str] = None                # the user's own metric, FILE.py:NAME (auto and the verdict use it)
    class_outputs: Optional[Sequence[str]] = None  # declared class outputs, NAME[:AXIS]
    target: Optional[object] = None             # trtq.precision.targets.FidelityTarget: mixed precision on the held-back samples
    #: --equalize when calibrating: None = auto's trial where a cache is written, "off", "auto" or steps
    equalize: Optional[str] = None

    def __post_init__(self):
        self.model_path = Path(self.model_path)
        self.output_path = Path(self.output_path)
        self.cache_path = Path(self.cache_path) if self.cache_path is not None else None
        self.timing_cache = Path(self.timing_cache) if self.timing_cache is not None else None
        if self.report_path is None:
            self.report_path = report_path_for(self.output_path)
        self.report_path = Path(self.report_path)
        self.plugins = tuple(Path(p) for p in self.plugins)


@dataclass
class BuildResult:
    """What a build produced; ``report`` is what was written beside the engine."""

    engine_path: Path
    report_path: Path
    report: dict
    plan: BuildPlan


def report_path_for(engine_path: PathLike) -> Path:
    """``engines/m.engine`` -> ``engines/m.engine.json``."""
    return Path(str(engine_path) + ".json")


# ----------------------------------------------------------------------------------------
# TensorRT


@dataclass
class _Messages:
    errors: List[str] = field(default_factory=list)


def _logger_class(trt):
    """A ``trt.ILogger`` forwarding to Python logging and keeping errors for messages (one class per module)."""
    cached = _LOGGER_CLASSES.get(id(trt))
    if cached is not None:
        return cached
    trt_log = logging.getLogger("trtq.tensorrt")

    def __init__(self, verbose: bool = False):
        trt.ILogger.__init__(self)  # pybind11 trampoline: the base __init__ must run
        self.verbose = verbose
        self.messages = _Messages()

    def log(self, severity, msg):
        level = int(severity)
        if level <= 1:  # INTERNAL_ERROR, ERROR
            self.messages.errors.append(str(msg))
            trt_log.debug("TensorRT error: %s", msg)
        elif level == 2:
            trt_log.warning("TensorRT: %s", msg)
        elif self.verbose:
            trt_log.debug("TensorRT: %s", msg)

    cls = type("TrtqLogger", (trt.ILogger,), {"__init__": __init__, "log": log, "__module__": __name__})
    _LOGGER_CLASSES[id(trt)] = cls
    return cls


_LOGGER_CLASSES: Dict[int, type] = {}


def _dla_cores(builder) -> int:
    return int(builder.num_DLA_cores)


def _create_builder(trt, logger):
    try:
        return trt.Builder(logger)
    except (TypeError, RuntimeError) as exc:  # pybind11: "factory function returned nullptr"
        raise BackendUnavailable(f"TensorRT {trt.__version__} could not create a builder ({exc}); it needs an "
                                 "NVIDIA GPU and a working CUDA driver") from None


def _network_flags(trt, major: int, strongly_typed: bool) -> int:
    if strongly_typed:
        if major < 10:  # plan_build refuses this; never ask 8.x/9.x for a flag it does not have
            raise TrtqError(f"TensorRT {trt.__version__} has no strongly typed networks; drop --explicit")
        # TensorRT 11 networks are always strongly typed (the flag is deprecated and ignored there).
        return 0 if major >= 11 else 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0


def load_plugins(trt, logger, paths: Sequence[Path] = ()) -> None:
    """Load plugin libraries (``--plugins``) and register TensorRT's own plugins (``init_libnvinfer_plugins``).

    Called before the ONNX parser and before deserializing an engine, as Polygraphy does: plugin
    ops (``EfficientNMS_TRT`` in YOLO exports with NMS) are unknown to both otherwise.
    """
    import ctypes

    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise TrtqError(f"--plugins: {path} does not exist (give the path of a plugin .so)")
        try:
            ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            raise TrtqError(f"--plugins: cannot load {path} ({exc}); is it built for this TensorRT and CUDA?") from None
    if not trt.init_libnvinfer_plugins(logger, ""):
        log.warning("TensorRT's plugin library did not initialise; models with TensorRT plugin ops will not parse")


def _native_instancenorm(trt, parser) -> None:
    """InstanceNormalization as TensorRT's native layer, not the plugin a version- or hardware-compatible engine
    cannot carry (on by default from TensorRT 10.0; Polygraphy switches it on for these modes on 8.6)."""
    parser.set_flag(trt.OnnxParserFlag.NATIVE_INSTANCENORM)


def _parse_network(trt, builder, logger, onnx_path: Path, flags: int, label: str, native_instancenorm: bool = False):
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if native_instancenorm:
        _native_instancenorm(trt, parser)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(index)) for index in range(parser.num_errors)]
        first = " ".join((errors[0] if errors else "no error recorded").split())
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ModelError(f"TensorRT's ONNX parser rejected {label}: {first}{more}")
    return network, parser


def _shape_tensor_inputs(network) -> List[str]:
    """Network inputs TensorRT treats as shape tensors (``ITensor.is_shape_tensor``): their *values* size other
    tensors, so a profile needs value ranges for them and they live in host memory at run time."""
    inputs = [network.get_input(index) for index in range(network.num_inputs)]
    return [tensor.name for tensor in inputs if tensor.is_shape_tensor]


def _configure_common(trt, builder, network, options: BuildOptions, profile_table: ProfileShapes, logger=None):
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gib * (1 << 30)))
    inputs = [network.get_input(index) for index in range(network.num_inputs)]
    values = shape_value_ranges([tensor.name for tensor in inputs if tensor.is_shape_tensor], options.shape_values)
    if any(-1 in tuple(tensor.shape) for tensor in inputs) or values:
        profile = builder.create_optimization_profile()
        for tensor in inputs:
            if tensor.name not in profile_table:
                raise ModelError(f"TensorRT sees an input {tensor.name!r} the ONNX graph does not list")
            lo, opt, hi = profile_table[tensor.name]
            try:
                profile.set_shape(tensor.name, lo, opt, hi)
            except ValueError as exc:  # documented ":raises: ValueError" for inconsistent shapes
                raise ModelError(f"TensorRT refused the profile of input {tensor.name!r} ({list(lo)} / {list(opt)} / "
                                 f"{list(hi)}): {exc}; check --min/--opt/--max-shapes") from None
        for name, (lo, opt, hi) in values.items():  # shape tensors: the range of their values
            try:
                profile.set_shape_input(name, lo, opt, hi)
            except (ValueError, TypeError) as exc:
                raise ModelError(f"TensorRT refused the values of shape-tensor input {name!r} ({list(lo)} / "
                                 f"{list(opt)} / {list(hi)}): {exc}; check --shape-values") from None
        config.add_optimization_profile(profile)
    timing = options.timing_cache.read_bytes() if options.timing_cache and options.timing_cache.exists() else b""
    mark = len(logger.messages.errors) if logger is not None else 0
    timing_cache = config.create_timing_cache(timing)
    if timing_cache is None or not config.set_timing_cache(timing_cache, False):
        # a corrupt file, or one from another GPU or TensorRT, is refused (TensorRT logs "Error Code 1:
        # Serialization ... Magic tag does not match" and may return no cache): start a fresh one, as Polygraphy does
        log.warning("timing cache %s is corrupt or was made for another GPU or TensorRT version; starting a new one "
                    "(the file is replaced after this build)", options.timing_cache)
        if logger is not None:  # those errors are about the file, not the build: keep them out of build errors
            del logger.messages.errors[mark:]
        timing_cache = config.create_timing_cache(b"")
        if timing_cache is None or not config.set_timing_cache(timing_cache, False):
            log.warning("TensorRT could not create a timing cache; building without one")
    return config


def _network_input_dtypes(trt, network) -> Dict[str, object]:
    """numpy dtype of each TensorRT network input (what the calibrator must feed), where numpy has one."""
    dtypes = {}
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        try:
            dtypes[tensor.name] = np.dtype(trt.nptype(tensor.dtype))
        except TypeError:  # BF16/FP8 inputs: the calibrator feeds float32, as TensorRT requires
            continue
    return dtypes


def _configure_features(trt, builder, config, options: BuildOptions, plan: BuildPlan) -> List[str]:
    """TF32, sparsity, DLA, version/hardware compatibility, detailed profiling; the flags set, for the report."""
    flags = []
    if options.tf32:
        flags.append("TF32")
    else:  # on by default in TensorRT (Ampere+): "fp32" should mean IEEE FP32 unless asked (--tf32)
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.sparsity:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
        flags.append("SPARSE_WEIGHTS")
    if options.dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(options.dla_core)
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
        flags.append("GPU_FALLBACK")
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        flags.append("VERSION_COMPATIBLE")
    if options.hardware_compatibility:
        level = getattr(trt.HardwareCompatibilityLevel, options.hardware_compatibility.upper(), None)
        if level is None:
            choices = [n.lower() for n in trt.HardwareCompatibilityLevel.__members__]
            raise TrtqError(f"--hardware-compatibility {options.hardware_compatibility}: TensorRT {trt.__version__} "
                            f"knows {', '.join(choices)}")
        config.hardware_compatibility_level = level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # `trtq inspect` shows per-layer precisions
    return flags


def _dla_layers(config, network) -> Tuple[List[str], List[str]]:
    """(layers that can run on DLA, layers that fall back to the GPU) under the finished config
    (``IBuilderConfig.can_run_on_DLA``: precision, shapes and layer restrictions); what GPU fallback does
    silently, said before the build."""
    on_dla, on_gpu = [], []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        (on_dla if config.can_run_on_DLA(layer) else on_gpu).append(layer.name)
    return on_dla, on_gpu


def _float_layer_constraints(trt, network, config, float_layers: Sequence[str],
                             onnx_nodes: Sequence[str] = ()) -> List[str]:
    """Keep the named ONNX nodes' layers in FP32 on the implicit path; returns the layer names constrained.

    The ONNX parser names each TensorRT layer after its ONNX node; an op the parser expands
    into several layers gives ``node_1``, ``node_2``..., matched by prefix unless that name is
    itself another ONNX node (``onnx_nodes``).
    """
    wanted = list(float_layers)
    if not wanted:
        return []
    others = set(onnx_nodes) - set(wanted)
    matched = []
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        name = layer.name
        derived = name not in others and any(name.startswith(node + "_") or name.startswith(node + " ")
                                             for node in wanted)
        if name in wanted or derived:
            layer.precision = trt.DataType.FLOAT
            for output in range(layer.num_outputs):
                layer.set_output_type(output, trt.DataType.FLOAT)
            matched.append(name)
    if matched:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    missing = [node for node in wanted if not any(m == node or m.startswith(node + "_") or m.startswith(node + " ")
                                                  for m in matched)]
    if missing:
        log.warning("%d of the mixed-precision float layers are not in TensorRT's network (fused or renamed by the "
                    "parser): %s", len(missing), ", ".join(missing[:5]))
    return matched


def _configure_implicit(trt, builder, config, plan: BuildPlan, calibrator, calib_shapes: Dict[str, Shape],
                        dynamic: bool, shape_values: Optional[Mapping[str, Tuple[Shape, Shape, Shape]]] = None
                        ) -> None:
    if plan.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8 or "INT8" in plan.builder_flags:
        config.set_flag(trt.BuilderFlag.INT8)
        if calibrator is not None:  # a pre-quantized (Q/DQ) network takes its scales from the graph
            config.int8_calibrator = calibrator
        if dynamic and calibrator is not None:
            profile = builder.create_optimization_profile()
            for name, shape in calib_shapes.items():
                profile.set_shape(name, shape, shape, shape)
            for name, (_, opt, _) in (shape_values or {}).items():  # calibrate at the shape tensors' opt values
                profile.set_shape_input(name, opt, opt, opt)
            config.set_calibration_profile(profile)


def _build(trt, builder, network, config, logger, calibrator, options: BuildOptions) -> bytes:
    serialized = builder.build_serialized_network(network, config)
    if calibrator is not None:
        calibrator.raise_pending()  # an error in get_batch ended calibration early: report it, not a bad engine
    if serialized is None:
        errors = logger.messages.errors
        # TensorRT often logs the cause first and a generic "Error Code 4/2" last: keep both
        said = [errors[0], errors[-1]] if len(errors) > 1 else errors
        text = " ".join(" ... ".join(said).split()) if errors else "no error message"
        if any(_OOM.search(message) for message in errors):
            raise TrtqError(f"TensorRT ran out of GPU memory building {options.model_path.name} ({text}); try a "
                            f"smaller --workspace (now {options.workspace_gib:g} GiB), smaller --max-shapes/"
                            "--batch-sizes, or free GPU memory")
        raise TrtqError(f"TensorRT could not build an engine from {options.model_path.name}: {text}")
    return memoryview(serialized).tobytes()


def _save_timing_cache(config, path: Optional[Path]) -> None:
    if path is None:
        return
    timing_cache = config.get_timing_cache()
    if timing_cache is not None:
        from ..fileio import write_bytes_atomic

        write_bytes_atomic(path, memoryview(timing_cache.serialize()).tobytes())


# ----------------------------------------------------------------------------------------
# Orchestration


@dataclass
class PreparedBuild:
    """What :func:`prepare_build` checked and decided before any long work: the model, its cache (read and
    matched), the profile, TensorRT's build plan and builder. The pipeline calibrates on the CPU where
    :attr:`cpu_calibration_needed` or :attr:`qdq_calibration_needed` says so, then calls :func:`build_prepared`."""

    model: object
    sha: str
    cache: object
    inputs: list
    profile_table: ProfileShapes
    trt: object
    major: int
    running_version: int
    prequantized: bool
    plan: BuildPlan
    keep_float: List[str]
    gpu: Optional[dict]
    logger: object
    builder: object

    @property
    def cpu_calibration_needed(self) -> bool:
        """TensorRT's calibrators are entropy and minmax only: trtq computes auto/percentile/mse on the CPU and
        hands TensorRT the resulting cache (what --cache does), instead of silently using entropy."""
        return bool(self.plan.calibrator) and self.cache is None and self.algorithm not in ("entropy", "minmax")

    @property
    def qdq_calibration_needed(self) -> bool:
        """The explicit path inserts Q/DQ from amax: without a cache, trtq calibrates on the CPU first."""
        return bool(self.plan.qdq_graph) and self.cache is None

    algorithm: str = "entropy"


def prepare_build(options: BuildOptions) -> PreparedBuild:
    """Everything a user can get wrong, checked before TensorRT builds (or hours of calibration start): outputs
    writable, the cache read and matched, profiles, plugins, TensorRT's version and plan, DLA, what needs
    calibration data."""
    from ..cache import (check_cache_matches, float_layers, model_of_cache, read_cache, recorded_batch_axes,
                         trt_version_int)
    from ..fileio import check_writable
    from ..graph.model import file_sha256, load_onnx
    from ..graph.qdq import is_quantized, tensor_names
    from ..graph.signature import input_specs
    from . import import_tensorrt, tensorrt_major

    check_writable(options.output_path)
    check_writable(options.report_path)
    if options.timing_cache is not None:
        check_writable(options.timing_cache)
    model = load_onnx(options.model_path)
    sha = file_sha256(options.model_path)
    cache = None
    if options.cache_path is not None and options.cache_path.exists() and options.cache_path.stat().st_size:
        cache = read_cache(options.cache_path)
        # calibrated on the model's --equalize rewrite: build that file, as the cache says
        options.model_path, model, sha = model_of_cache(cache, options.model_path, model, options.cache_path)
        check_cache_matches(cache, model, sha, tensor_names(model), force=options.force)
    # each input's batch axis: as the cache was calibrated, then as --batch-axis says
    inputs = input_specs(model, {**recorded_batch_axes(cache.sidecar if cache is not None else None),
                                 **(calib_data_spec(options.calib).batch_axes if options.calib is not None else {})})
    profile_table = profile_shapes(inputs, options.batch_sizes, options.min_shapes, options.opt_shapes,
                                   options.max_shapes)

    for plugin in options.plugins:
        if not plugin.is_file():
            raise TrtqError(f"--plugins: {plugin} does not exist (give the path of a plugin .so)")
    trt = import_tensorrt()
    version = check_supported(trt.__version__)
    if options.explicit:
        check_explicit_supported(version)
    major = tensorrt_major(trt)
    running_version = trt_version_int(trt.__version__)
    prequantized = is_quantized(model)
    plan = plan_build(major, options.precision, options.explicit, prequantized=prequantized)
    if options.dla_core is not None:
        refusal = dla_refusal(version, options.precision, None, options.dla_core, not is_dynamic(profile_table))
        if refusal:
            raise TrtqError(refusal)
    keep_float = list(options.float_layers) if options.float_layers is not None else \
        float_layers(cache.sidecar if cache is not None else None)
    if plan.calibrator and cache is None and options.calib is None:
        raise TrtqError("INT8 needs calibration data (--calib DIR) or an existing calibration cache (--cache FILE)"
                        + (f"; {options.cache_path} does not exist yet" if options.cache_path else ""))
    if options.cache_path is not None and cache is None:
        check_writable(options.cache_path)

    gpu = _gpu_record()
    logger = _logger_class(trt)(options.verbose)
    builder = _create_builder(trt, logger)
    if options.dla_core is not None:
        refusal = dla_refusal(version, options.precision, _dla_cores(builder), options.dla_core,
                              not is_dynamic(profile_table))
        if refusal:
            raise TrtqError(refusal)
    prepared = PreparedBuild(model, sha, cache, inputs, profile_table, trt, major, running_version, prequantized,
                             plan, keep_float, gpu, logger, builder, algorithm=options.algorithm)
    gated = any(v is not None for v in (options.min_snr, options.min_cosine, options.min_agreement,
                                        options.min_metric))
    if plan.calibrator and cache is None and not prepared.cpu_calibration_needed:
        if options.target is not None and options.target.given():
            raise TrtqError(f"--target-* and --max-drop run trtq's mixed-precision search on its CPU calibration, "
                            f"and --algo {options.algorithm} calibrates with TensorRT on the GPU: use --algo auto (the "
                            "default), or trtq calibrate --target-... (or --max-drop) first and build with its --cache")
        if gated:
            raise TrtqError(f"--min-snr/--min-cosine judge trtq's CPU calibration, and --algo {options.algorithm} "
                            "calibrates with TensorRT on the GPU: use --algo auto (the default), or check the engine "
                            "with trtq eval MODEL ENGINE --data HELD_OUT --min-snr DB")
    return prepared


def build_prepared(options: BuildOptions, prepared: PreparedBuild, progress: ProgressCallback = no_progress, *,
                   calibration: Optional[dict] = None, amax: Optional[Mapping[str, float]] = None,
                   cpu_calibrated: bool = False) -> BuildResult:
    """Build one engine and write it with its JSON report (atomically, together).

    ``calibration``: the record of a calibration the pipeline ran on the CPU (``cpu_calibrated``: its cache is
    ``prepared.cache``, handed to TensorRT's calibrator); ``amax``: on the explicit path, the amax the Q/DQ copy
    is made from when there is no cache."""
    from ..fileio import write_files_atomic

    model, sha, cache, inputs, profile_table = (prepared.model, prepared.sha, prepared.cache, prepared.inputs,
                                                prepared.profile_table)
    trt, major, running_version, prequantized, plan = (prepared.trt, prepared.major, prepared.running_version,
                                                       prepared.prequantized, prepared.plan)
    keep_float, gpu, logger, builder = list(prepared.keep_float), prepared.gpu, prepared.logger, prepared.builder
    calibration = dict(calibration or {})
    calibrator = None
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="trtq-build-") as scratch:
        onnx_path, label = options.model_path, options.model_path.name
        if plan.qdq_graph or plan.fp16_graph:
            onnx_path, calibration = _prepare_graph(model, plan, options, cache, Path(scratch), keep_float, amax,
                                                    calibration)
            keep_float += [n for n in (calibration.get("mixed_precision") or {}).get("float_layers", [])
                           if n not in keep_float]
            label = f"{options.model_path.name} ({'Q/DQ ' if plan.qdq_graph else ''}{'FP16 ' if plan.fp16_graph else ''}copy)"
        load_plugins(trt, logger, options.plugins)
        compatible = options.version_compatible or bool(options.hardware_compatibility)
        network, parser = _parse_network(trt, builder, logger, onnx_path, _network_flags(trt, major, plan.strongly_typed),
                                         label, native_instancenorm=compatible and major < 10)
        config = _configure_common(trt, builder, network, options, profile_table, logger)
        shape_inputs = _shape_tensor_inputs(network)
        feature_flags = _configure_features(trt, builder, config, options, plan)
        constrained: List[str] = []
        dla: Optional[dict] = None
        try:
            if plan.calibrator:
                calibrator, record = _make_calibrator(trt, options, model, inputs, sha, cache, profile_table,
                                                      running_version, progress, _network_input_dtypes(trt, network))
                calibration = {**record, **calibration} if cpu_calibrated else record
            if plan.path == "implicit" and plan.int8 and keep_float:
                constrained = _float_layer_constraints(trt, network, config, keep_float,
                                                       [node.name for node in model.graph.node])
            if plan.path == "implicit":
                calib_size = calibrator.batch_size if calibrator is not None else 1
                _configure_implicit(trt, builder, config, plan, calibrator,
                                    calibration_shapes(profile_table, calib_size, batch_axes_of(inputs)),
                                    is_dynamic(profile_table) or bool(shape_inputs),
                                    shape_value_ranges(shape_inputs, options.shape_values))
            if options.dla_core is not None:
                dla = _dla_report(config, network, options, label)
            log.info("building %s engine from %s with TensorRT %s (%s path)", plan.precision, label,
                     trt.__version__, plan.path)
            engine = _build(trt, builder, network, config, logger, calibrator, options)
        finally:
            if calibrator is not None:
                calibrator.close()
        _save_timing_cache(config, options.timing_cache)
    seconds = time.perf_counter() - started
    if calibrator is not None:
        calibration.update(samples=calibrator.samples_read, batches=calibrator.batches_read,
                           cache_handed_over=calibrator.cache_handed_over,
                           cache_written=[str(p) for p in calibrator.cache_written])

    report = {
        "format": "trtq-build-report",
        "trtq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "engine": {"file": options.output_path.name, "bytes": len(engine)},
        "model": {"file": options.model_path.name, "sha256": sha},
        "tensorrt": {"version": trt.__version__, "path": plan.path, "strongly_typed": plan.strongly_typed,
                     "builder_flags": list(plan.builder_flags) + feature_flags
                     + (["OBEY_PRECISION_CONSTRAINTS"] if constrained else []),
                     "prequantized": prequantized, "dla_core": options.dla_core, "dla": dla,
                     "hardware_compatibility": options.hardware_compatibility,
                     "plugins": [str(p) for p in options.plugins]},
        "mixed_precision": {"float_layers": keep_float, "constrained_layers": constrained} if keep_float else None,
        "gpu": gpu,
        "precision": plan.precision,
        "profile": {name: {"min": list(lo), "opt": list(opt), "max": list(hi)}
                    for name, (lo, opt, hi) in profile_table.items()},
        "shape_values": {name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi)
                         in shape_value_ranges(shape_inputs, options.shape_values).items()} or None,
        "calibration": calibration,
        "workspace_gib": options.workspace_gib,
        "timing_cache": str(options.timing_cache) if options.timing_cache else None,
        "build_seconds": round(seconds, 3),
    }
    write_files_atomic({options.report_path: (json.dumps(report, indent=2) + "\n").encode("utf-8"),
                        options.output_path: engine})
    log.info("wrote %s (%.1f MB) in %.1f s", options.output_path, len(engine) / 1e6, seconds)
    return BuildResult(options.output_path, options.report_path, report, plan)


def _dla_report(config, network, options: BuildOptions, label: str) -> dict:
    """Which layers run on the DLA core and which fall back to the GPU; an engine with none on DLA is refused
    (GPU fallback would build it silently, and the report would claim a DLA engine that runs on the GPU)."""
    on_dla, on_gpu = _dla_layers(config, network)
    if not on_dla:
        raise TrtqError(f"no layer of {label} can run on DLA core {options.dla_core} (TensorRT's can_run_on_DLA; "
                        "see NVIDIA's DLA supported layers and restrictions): the engine would run on the GPU; drop "
                        "--dla-core")
    if on_gpu:
        shown = ", ".join(on_gpu[:5]) + (f" and {len(on_gpu) - 5} more" if len(on_gpu) > 5 else "")
        log.warning("%d of %d layers cannot run on DLA core %d and fall back to the GPU: %s", len(on_gpu),
                    len(on_dla) + len(on_gpu), options.dla_core, shown)
    return {"core": options.dla_core, "layers_on_dla": len(on_dla), "gpu_fallback_layers": on_gpu}


def _gpu_record() -> Optional[dict]:
    try:
        from .cuda import device_info

        info = device_info()
    except BackendUnavailable as exc:
        log.debug("GPU details unavailable: %s", exc)
        return None
    return {"name": info.name, "compute_capability": info.sm, "memory_bytes": info.total_memory}


def calib_data_spec(calib, batch_size: Optional[int] = None):
    from ..data.spec import DataSpec

    spec = calib if isinstance(calib, DataSpec) else DataSpec(path=str(calib))
    return dataclasses.replace(spec, batch_size=batch_size) if batch_size else spec


def _make_calibrator(trt, options: BuildOptions, model, inputs, sha: str, cache, profile_table: ProfileShapes,
                     running_version: int, progress: ProgressCallback, input_dtypes=None):
    from ..cache import input_records
    from ..graph.model import model_fingerprint
    from .calibrator import calibrator_class

    algorithm = (cache.sidecar or {}).get("algorithm", {}).get("name") if cache is not None else None
    algorithm = algorithm or options.algorithm
    source = None
    spec = None
    axes = batch_axes_of(inputs)
    batch_size = calibration_batch_size(profile_table, calib_data_spec(options.calib).batch_size if options.calib else 1,
                                        axes)
    if options.calib is not None:
        from ..data import open_source

        spec = calib_data_spec(options.calib, batch_size)
        source = open_source(spec, inputs)
    sidecar = {
        "model_path": options.model_path, "model_sha256": sha, "inputs": input_records(inputs),
        "data": {"source": getattr(source, "description", None), "path": str(spec.path) if spec else None},
        "fingerprint": model_fingerprint(model),
    }
    cls = calibrator_class(trt, algorithm)
    calibrator = cls(source, batch_size=batch_size, trt_version=running_version,
                     shapes=calibration_shapes(profile_table, batch_size, axes), cache=cache, batch_axes=axes,
                     cache_verified=cache is not None and cache.sidecar is not None,
                     cache_path=options.cache_path, sidecar=sidecar, progress=progress,
                     total_samples=getattr(source, "num_samples", None), input_dtypes=input_dtypes)
    record = {"method": "tensorrt-calibrator", "algorithm": cls.algorithm, "batch_size": batch_size,
              "cache": str(options.cache_path) if options.cache_path else None,
              "source": "cache" if cache is not None else "data", "data": sidecar["data"]}
    if cache is not None:
        record["cache_header"] = cache.header
    return calibrator, record


def _prepare_graph(model, plan: BuildPlan, options: BuildOptions, cache, scratch: Path,
                   keep_float: Sequence[str] = (), amax: Optional[Mapping[str, float]] = None,
                   calibration: Optional[dict] = None) -> Tuple[Path, dict]:
    """The ONNX file TensorRT parses on the explicit path: Q/DQ inserted (from the cache's amax, else from
    ``amax``, the pipeline's CPU calibration, recorded in ``calibration``) and/or converted to FP16."""
    import onnx

    calibration = dict(calibration or {})
    if plan.qdq_graph:
        from ..graph.qdq import quantize_model

        if cache is not None:
            amax = cache.amax
            calibration = {"method": "qdq", "source": "cache", "cache": str(options.cache_path),
                           "cache_header": cache.header, "tensors": len(amax)}
        elif amax is None:
            raise TrtqError("the explicit path needs amax: a calibration cache or a calibration on the CPU")
        model, summary = quantize_model(model, amax, target="trt", exclude=list(keep_float))  # mixed precision
        calibration["quantized_layers"] = len(summary.quantized)
        if not summary.quantized and not summary.already_quantized:
            raise ModelError(f"{options.model_path.name}: no layer could be quantized (no Conv/Gemm/MatMul with "
                             "amax for its inputs); an INT8 engine would be the FP32 one")
    if plan.fp16_graph:
        from ..graph.fp16 import to_fp16

        model = to_fp16(model)
    path = scratch / "model.onnx"
    large = model.ByteSize() > (1 << 31) - (1 << 24)
    onnx.save(model, str(path), save_as_external_data=large, location="model.onnx.data" if large else None)
    return path, calibration


__all__ = ["BuildOptions", "BuildResult", "FUNCTION_PATHS", "PreparedBuild", "prepare_build", "build_prepared",
           "profile_shapes", "calibration_shapes", "calibration_batch_size", "is_dynamic", "report_path_for"]
