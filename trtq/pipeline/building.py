"""The build flow: read the cache (or calibrate on the CPU) -> check its verdict -> hand TensorRT the ONNX
model, the cache and the plan (:mod:`trtq.backend.build`, which knows nothing of calibration)."""

from __future__ import annotations

import logging
from typing import Sequence, Tuple

from ..progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)


def build_engine(options, progress: ProgressCallback = no_progress):
    """Build one engine as ``options`` (:class:`trtq.backend.build.BuildOptions`) say; returns its
    :class:`~trtq.backend.build.BuildResult`. Every check runs before any calibration or build."""
    from ..backend.build import build_prepared, prepare_build

    prepared = prepare_build(options)
    calibration: dict = {}
    amax = None
    if prepared.cpu_calibration_needed:
        prepared.cache, calibration = _cpu_calibrated_cache(options, prepared.running_version, progress,
                                                            prepared.keep_float)
        _keep_float(prepared, calibration)
        return build_prepared(options, prepared, progress, calibration=calibration, cpu_calibrated=True)
    if prepared.cache is not None:
        from .quantization import check_recorded_verdict

        if options.target is not None and options.target.given():
            log.warning("--target-*/--max-drop run with calibration, and %s already exists: its sidecar's "
                        "mixed-precision record (%d float layer(s)) is used as it is", options.cache_path,
                        len(prepared.keep_float))
        check_recorded_verdict(prepared.cache.sidecar, options.min_snr, options.min_cosine, str(options.cache_path),
                               options.min_agreement, options.min_metric)
    elif prepared.qdq_calibration_needed:
        amax, calibration = _qdq_calibration(options, progress, prepared.keep_float)
        _keep_float(prepared, calibration)
    return build_prepared(options, prepared, progress, calibration=calibration, amax=amax)


def _keep_float(prepared, calibration: dict) -> None:
    """Layers a calibration's mixed-precision search left in float stay float in the engine too."""
    prepared.keep_float += [n for n in (calibration.get("mixed_precision") or {}).get("float_layers", [])
                            if n not in prepared.keep_float]


def _calibrate(options, progress: ProgressCallback, keep_float: Sequence[str], **kwargs):
    from ..backend.build import calib_data_spec
    from .calibration import calibrate

    return calibrate(options.model_path, calib_data_spec(options.calib), algorithm=options.algorithm,
                     cache_path=options.cache_path, exclude=list(keep_float), min_snr=options.min_snr,
                     min_cosine=options.min_cosine, min_agreement=options.min_agreement,
                     min_metric=options.min_metric, metric=options.metric, class_outputs=options.class_outputs,
                     target=options.target, progress=progress, force=options.force, **kwargs)


def _cpu_calibrated_cache(options, running_version: int, progress: ProgressCallback,
                          keep_float: Sequence[str] = ()) -> Tuple[object, dict]:
    """trtq's own calibration (auto, percentile, mse) on the CPU, as a cache for TensorRT's calibrator."""
    from .. import cache as cache_io

    result = _calibrate(options, progress, keep_float, trt_version=running_version)
    cache = cache_io.parse_cache(cache_io.format_cache(result.amax, running_version, "EntropyCalibration2"),
                                 source=f"trtq's {options.algorithm} calibration")
    cache.sidecar = {"algorithm": {"name": options.algorithm}}  # made here, for this model: safe to hand over
    log.info("TensorRT's calibrators are entropy and minmax; %s was computed by trtq on the CPU (%d samples) and "
             "handed to TensorRT as a calibration cache", options.algorithm, result.num_samples)
    return cache, {"algorithm": options.algorithm, "calibrated_by": "trtq-cpu", "samples_cpu": result.num_samples,
                   "chosen": result.auto.chosen if result.auto is not None else options.algorithm,
                   "verdict": result.verdict.to_dict(), "cache_written": [str(p) for p in result.files_written],
                   **_mixed_record(result)}


def _qdq_calibration(options, progress: ProgressCallback, keep_float: Sequence[str]) -> Tuple[dict, dict]:
    """The explicit path without a cache: amax from trtq's calibration on the CPU, and its record."""
    result = _calibrate(options, progress, keep_float)
    return result.amax, {"method": "qdq", "source": "data", "algorithm": result.algorithm,
                         "chosen": result.auto.chosen if result.auto is not None else result.algorithm,
                         "samples": result.num_samples, "data": result.data_description,
                         "verdict": result.verdict.to_dict(),
                         "cache_written": [str(p) for p in result.files_written], **_mixed_record(result)}


def _mixed_record(result) -> dict:
    """The calibration's mixed-precision record (layers a --target search left in float), for the build report."""
    record = result.sidecar.get("mixed_precision")
    return {"mixed_precision": record} if record else {}
