"""Pure decisions about TensorRT: no ``tensorrt`` import here, so all of it is unit-testable.

- :func:`choose_int8_path` / :func:`plan_build`: which way an engine is built on which TensorRT
- :func:`fast_precisions`: whether FP16/INT8 are fast on a GPU, from its compute capability
- ``*_API``: the TensorRT Python names each code path may touch. The build and runner
  modules use no TensorRT name outside these lists, and the contract tests check every
  entry against the real bindings of the versions the path serves (``PATH_SERVES``),
  so a name TensorRT 11 removed cannot slip into the TensorRT 11 path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

from ..errors import BackendUnavailable, TrtqError

#: Oldest TensorRT trtq builds with (the implicit path as it is on TensorRT 8.6, JetPack 6.0's version;
#: JetPack 5.x ships TensorRT 8.5 and Python 3.8).
MIN_TRT = (8, 6)
#: First TensorRT without implicit quantization (calibrators, BuilderFlag.INT8/FP16 removed).
EXPLICIT_ONLY_MAJOR = 11
#: First TensorRT with strongly typed networks (NetworkDefinitionCreationFlag.STRONGLY_TYPED): the explicit path.
STRONGLY_TYPED_MIN = (10, 0)
#: TensorRT releases without DLA on Linux/Jetson, [first, end): NVIDIA's "Working with DLA" (11.4.1, 11.5.0):
#: "TensorRT 10.7 was the last 10.x release that supported DLA", none in 11.0-11.3, 11.4.0 only on Windows on
#: ARM; 11.4.1 brings it back on Jetson AGX Orin with JetPack 7.2.2.
NO_DLA = ((10, 8, 0), (11, 4, 1))
#: Where DLA is (for messages): the releases and devices NVIDIA names.
DLA_WHERE = "Jetson Xavier/Orin with TensorRT 8.6-10.7, or Orin with TensorRT 11.4.1 (JetPack 7.2.2)"

PRECISIONS = ("fp32", "fp16", "int8", "best")

# --------------------------------------------------------------------------------------------
# Declared TensorRT API per path ("Class.member" or a top-level name). Every name was taken
# from the TensorRT Python API documentation and checked with dir() on the real bindings.
# "A|B" means "A where it exists, else B" (the code picks with hasattr): at least one of
# them must exist on every version the path serves.

#: Used by every build: parse ONNX, one optimization profile, workspace, timing cache.
COMMON_BUILD_API: Tuple[str, ...] = (
    "ILogger", "Logger", "Logger.ERROR", "Logger.WARNING", "Logger.INFO", "Logger.VERBOSE",
    "Builder", "Builder.create_network", "Builder.create_builder_config",
    "Builder.create_optimization_profile", "Builder.build_serialized_network",
    "OnnxParser", "OnnxParser.parse_from_file", "OnnxParser.num_errors", "OnnxParser.get_error",
    "INetworkDefinition.num_inputs", "INetworkDefinition.get_input",
    "ITensor.name", "ITensor.shape",
    "IBuilderConfig.set_memory_pool_limit", "MemoryPoolType.WORKSPACE",
    "IBuilderConfig.add_optimization_profile", "IOptimizationProfile.set_shape",
    "IBuilderConfig.create_timing_cache", "IBuilderConfig.set_timing_cache", "IBuilderConfig.get_timing_cache",
    "ITimingCache.serialize", "init_libnvinfer_plugins", "ITensor.dtype", "nptype",
    "IBuilderConfig.set_flag", "IBuilderConfig.clear_flag", "BuilderFlag.TF32", "BuilderFlag.SPARSE_WEIGHTS",
    "BuilderFlag.GPU_FALLBACK", "IBuilderConfig.DLA_core", "IBuilderConfig.default_device_type", "DeviceType.DLA",
    "Builder.num_DLA_cores", "BuilderFlag.VERSION_COMPATIBLE", "IBuilderConfig.hardware_compatibility_level",
    "HardwareCompatibilityLevel", "HardwareCompatibilityLevel.AMPERE_PLUS", "IBuilderConfig.profiling_verbosity", "ProfilingVerbosity.DETAILED",
    "INetworkDefinition.num_layers", "INetworkDefinition.get_layer", "ILayer.name",
    "IBuilderConfig.can_run_on_DLA",
    "ITensor.is_shape_tensor", "IOptimizationProfile.set_shape_input",  # shape-tensor inputs: value ranges
)

#: TensorRT 8.6-10.x implicit quantization: calibrator + builder precision flags.
IMPLICIT_PATH_API: Tuple[str, ...] = COMMON_BUILD_API + (
    "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",  # required on 8.6, ignored on 10.x
    "BuilderFlag.INT8", "BuilderFlag.FP16",
    "IBuilderConfig.int8_calibrator", "IBuilderConfig.set_calibration_profile",
    "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
    "CalibrationAlgoType.ENTROPY_CALIBRATION_2", "CalibrationAlgoType.MINMAX_CALIBRATION",
    # 8.6 with --version-compatible/--hardware-compatibility: InstanceNormalization as a layer, not the plugin
    "OnnxParser.set_flag", "OnnxParserFlag.NATIVE_INSTANCENORM",
    # per-layer precision (the sidecar's mixed-precision list): layers kept in FP32
    "BuilderFlag.OBEY_PRECISION_CONSTRAINTS", "ILayer.precision", "ILayer.set_output_type", "ILayer.num_outputs",
    "DataType.FLOAT",
)

#: Explicit quantization (Q/DQ in the graph) on a strongly typed network: TensorRT 10.x and 11.x.
EXPLICIT_PATH_API: Tuple[str, ...] = COMMON_BUILD_API + (
    "NetworkDefinitionCreationFlag.STRONGLY_TYPED",  # required on 10.x, always on (flag ignored) on 11
)

#: Deserializing and running engines (bench, GPU tests): TensorRT 10.x and 11.x.
RUNTIME_API: Tuple[str, ...] = (
    "ILogger", "Logger", "Logger.WARNING", "Logger.ERROR",
    "Runtime", "Runtime.deserialize_cuda_engine",
    "ICudaEngine.num_io_tensors", "ICudaEngine.get_tensor_name", "ICudaEngine.get_tensor_mode",
    "ICudaEngine.get_tensor_dtype", "ICudaEngine.get_tensor_shape", "ICudaEngine.get_tensor_profile_shape",
    "ICudaEngine.create_execution_context", "ICudaEngine.device_memory_size_v2|ICudaEngine.device_memory_size",
    "ICudaEngine.get_tensor_location", "TensorLocation.DEVICE", "ICudaEngine.get_tensor_vectorized_dim",
    "ICudaEngine.get_tensor_components_per_element", "ICudaEngine.get_tensor_format", "TensorFormat.LINEAR",
    "Runtime.DLA_core",
    "IExecutionContext.set_input_shape", "IExecutionContext.get_tensor_shape",
    "IExecutionContext.set_tensor_address", "IExecutionContext.execute_async_v3",
    "TensorIOMode.INPUT", "nptype", "DataType.itemsize", "init_libnvinfer_plugins",
    "ICudaEngine.create_engine_inspector", "EngineInspector.get_engine_information", "LayerInformationFormat.JSON",
    "Runtime.engine_host_code_allowed",
    "ICudaEngine.is_shape_inference_io", "TensorLocation.HOST",  # shape-tensor inputs: values in host memory
)

#: ``trtq info`` on TensorRT <= 10 (the builder queries were removed in 11).
INFO_TRT10_API: Tuple[str, ...] = ("Logger", "Logger.ERROR", "Builder",
                                   "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8")

#: What TensorRT 11 removed of the implicit path (the table in docs/tensorrt.md); the contract tests check these
#: exist in 10.x and are gone in 11.x, and that no TensorRT 11 path declares any of them.
REMOVED_IN_11: Tuple[str, ...] = (
    "BuilderFlag.INT8", "BuilderFlag.FP16", "IBuilderConfig.int8_calibrator",
    "IBuilderConfig.set_calibration_profile", "IInt8Calibrator", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator",
    "CalibrationAlgoType", "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
    "Builder.platform_has_fast_fp16", "Builder.platform_has_fast_int8",
)

#: Which TensorRT majors each list must hold for (the contract tests check all of them).
PATH_SERVES: Dict[str, Tuple[int, ...]] = {
    "implicit": (8, 9, 10),
    "explicit": (10, 11),
    "runtime": (8, 9, 10, 11),
    "info-trt10": (8, 9, 10),
}
PATH_API: Dict[str, Tuple[str, ...]] = {
    "implicit": IMPLICIT_PATH_API,
    "explicit": EXPLICIT_PATH_API,
    "runtime": RUNTIME_API,
    "info-trt10": INFO_TRT10_API,
}


def parse_version(text: str) -> Tuple[int, int, int]:
    """``'10.3.0.26'`` -> ``(10, 3, 0)``."""
    parts = [int(p) for p in re.findall(r"\d+", str(text))[:3]]
    while len(parts) < 3:
        parts.append(0)
    return parts[0], parts[1], parts[2]


def check_supported(version: str) -> Tuple[int, int, int]:
    """The parsed version; :class:`BackendUnavailable` for a TensorRT older than :data:`MIN_TRT`."""
    parsed = parse_version(version)
    if parsed[:2] < MIN_TRT:
        raise BackendUnavailable(f"TensorRT {version} is too old: trtq needs TensorRT "
                                 f"{MIN_TRT[0]}.{MIN_TRT[1]} or newer (JetPack 6.0+ on Jetson)")
    return parsed


def declared_names(names) -> Tuple[str, ...]:
    """Every single name in a declared list (``"A|B"`` gives ``A`` and ``B``)."""
    return tuple(part for name in names for part in name.split("|"))


def check_explicit_supported(version: Tuple[int, int, int]) -> None:
    """``--explicit`` needs strongly typed networks (TensorRT 10.0+); 8.6 is refused before any work."""
    if tuple(version[:2]) < STRONGLY_TYPED_MIN:
        raise TrtqError(f"--explicit needs TensorRT {STRONGLY_TYPED_MIN[0]}.{STRONGLY_TYPED_MIN[1]} or newer (strongly "
                        f"typed networks); TensorRT {'.'.join(map(str, version))} has the implicit INT8 path only: "
                        "drop --explicit (a Q/DQ model also builds there without it)")


def dla_refusal(version: Optional[Tuple[int, int, int]], precision: str, dla_cores: Optional[int], core: int,
                static_profile: Optional[bool] = None) -> str:
    """Why ``--dla-core core`` cannot be used here, or ``""``.

    Pure: ``version`` (``None``: not known yet, the CLI checks before TensorRT is imported),
    precision, the DLA cores of this device (``None``: not known yet), and whether every input's
    optimization profile has min = opt = max (``None``: not known yet). "DLA does not support
    dynamic dimensions" (NVIDIA, DLA layer restrictions): with a batch range every layer would fall
    back to the GPU, silently.
    """
    if core < 0:
        return f"--dla-core must be 0 or more, got {core}"
    if version is not None and NO_DLA[0] <= tuple(version) < NO_DLA[1]:
        return (f"TensorRT {'.'.join(map(str, version))} has no DLA support (NVIDIA: 10.7 was the last 10.x with "
                f"DLA, 11.4.1 brings it back on Orin with JetPack 7.2.2); drop --dla-core")
    if precision not in ("fp16", "int8", "best"):
        return "DLA runs FP16 and INT8 layers only; add --fp16 or --int8 (or --precision best) to --dla-core"
    if static_profile is False:
        return ("DLA needs static shapes (min = opt = max), and this profile spans several batch sizes, so every "
                "layer would run on the GPU; give one batch size (--batch-sizes 1) or equal "
                "--min-shapes/--opt-shapes/--max-shapes with --dla-core")
    if dla_cores is not None and core >= dla_cores:
        have = f"no DLA cores (DLA is on {DLA_WHERE})" if dla_cores == 0 else f"{dla_cores} DLA core(s)"
        return f"--dla-core {core}: this device has {have}"
    return ""


def choose_int8_path(trt_major: int, explicit: bool = False) -> str:
    """``"implicit"`` (calibrator + ``BuilderFlag.INT8``) or ``"explicit"`` (Q/DQ graph, strongly typed).

    TensorRT 11 removed implicit quantization, so it always gets ``"explicit"``;
    8.6-10.x take the calibrator unless ``explicit`` (``--explicit``) asks for Q/DQ.
    """
    if trt_major >= EXPLICIT_ONLY_MAJOR:
        return "explicit"
    return "explicit" if explicit else "implicit"


def int8_path_text(trt_major: int, explicit: bool = False) -> str:
    """One line for ``trtq info`` and build reports."""
    if choose_int8_path(trt_major, explicit) == "implicit":
        return ("implicit: IInt8EntropyCalibrator2 on the GPU (or a trtq calibration cache) with BuilderFlag.INT8; "
                "--explicit switches to Q/DQ")
    why = "TensorRT 11 has no implicit INT8" if trt_major >= EXPLICIT_ONLY_MAJOR else "--explicit"
    return f"explicit: trtq's CPU calibration -> Q/DQ ONNX -> strongly typed network ({why})"


@dataclass(frozen=True)
class BuildPlan:
    """How one engine is built; derived by :func:`plan_build` from the TensorRT major and the request."""

    precision: str                 # "fp32", "fp16", "int8" or "best" (int8 with fp16 fallback)
    path: str                      # "implicit" (builder flags, weakly typed) or "explicit" (strongly typed)
    int8: bool
    fp16: bool
    qdq_graph: bool                # the ONNX graph gets Q/DQ nodes from trtq's calibration
    fp16_graph: bool               # the ONNX graph is converted to FP16 (trtq.graph.fp16)
    strongly_typed: bool
    builder_flags: Tuple[str, ...] = field(default=())  # BuilderFlag member names to set
    calibrator: bool = False       # implicit INT8: a calibrator (with data or a cache) is attached


def plan_build(trt_major: int, precision: str, explicit: bool = False, prequantized: bool = False) -> BuildPlan:
    """The build recipe for ``precision`` on TensorRT ``trt_major`` (pure; see :class:`BuildPlan`).

    ``prequantized``: the ONNX graph already has Q/DQ nodes (QAT, ``trtq quantize``): TensorRT
    takes its scales, so the implicit path sets ``BuilderFlag.INT8`` without a calibrator (as
    Polygraphy does) and the explicit path inserts nothing.
    """
    if precision not in PRECISIONS:
        raise TrtqError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if explicit and trt_major < STRONGLY_TYPED_MIN[0]:
        check_explicit_supported((trt_major, 0, 0))
    int8 = precision in ("int8", "best")
    fp16 = precision in ("fp16", "best")
    strongly_typed = trt_major >= EXPLICIT_ONLY_MAJOR or explicit
    if not strongly_typed:
        flags = tuple(name for name, on in (("INT8", int8 or prequantized), ("FP16", fp16)) if on)
        return BuildPlan(precision, "implicit", int8, fp16, qdq_graph=False, fp16_graph=False,
                         strongly_typed=False, builder_flags=flags, calibrator=int8 and not prequantized)
    return BuildPlan(precision, "explicit", int8, fp16, qdq_graph=int8 and not prequantized, fp16_graph=fp16,
                     strongly_typed=True)


def resolve_precision(precision: Optional[str], int8: bool = False, fp16: bool = False) -> str:
    """``--precision`` or the ``--int8``/``--fp16`` switches -> one of :data:`PRECISIONS`."""
    if precision is not None:
        if precision not in PRECISIONS:
            raise TrtqError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if (int8 or fp16) and precision != _from_switches(int8, fp16):
            raise TrtqError(f"--precision {precision} contradicts --int8/--fp16; give one or the other")
        return precision
    return _from_switches(int8, fp16)


def _from_switches(int8: bool, fp16: bool) -> str:
    if int8 and fp16:
        return "best"
    return "int8" if int8 else ("fp16" if fp16 else "fp32")


def fast_precisions(compute_capability: Tuple[int, int]) -> Dict[str, bool]:
    """Whether FP16 and INT8 have fast hardware paths on a GPU of this compute capability.

    FP16: sm_53 (Jetson TX1), sm_60 (P100), sm_62 (TX2) and sm_70+; not sm_61 consumer
    Pascal (1/64 rate). INT8: DP4A on sm_61, tensor cores or DP4A on sm_70+; sm_60 and
    sm_62 have no fast INT8. (TensorRT <= 10 also answers Builder.platform_has_fast_*.)
    """
    cc = tuple(compute_capability)
    return {
        "fp16": cc in ((5, 3), (6, 0), (6, 2)) or cc >= (7, 0),
        "int8": cc == (6, 1) or cc >= (7, 0),
    }


__all__ = [
    "MIN_TRT", "EXPLICIT_ONLY_MAJOR", "STRONGLY_TYPED_MIN", "NO_DLA", "DLA_WHERE", "declared_names", "check_explicit_supported",
    "dla_refusal", "PRECISIONS", "COMMON_BUILD_API", "IMPLICIT_PATH_API", "EXPLICIT_PATH_API",
    "RUNTIME_API", "INFO_TRT10_API", "REMOVED_IN_11", "PATH_SERVES", "PATH_API", "parse_version", "check_supported",
    "choose_int8_path", "int8_path_text", "BuildPlan", "plan_build", "resolve_precision", "fast_precisions",
]
