"""The build flow: read the cache (or calibrate on the CPU) -> check its verdict -> hand TensorRT the ONNX
model, the cache and the plan (:mod:`trtq.backend.build`, which knows nothing of calibration)."""

from __future__ import annotations

import logging
from typing import Tuple

from ..errors import TrtqError
from ..progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)


def build_engine(options, progress: ProgressCallback = no_progress):
    """Build one engine as ``options`` (:class:`trtq.backend.build.BuildOptions`) say; returns its
    :class:`~trtq.backend.build.BuildResult`. Every check runs before any calibration or build."""
    from ..backend.build import build_prepared, prepare_build

    check_equalize(options)
    prepared = prepare_build(options)
    calibration: dict = {}
    amax = None
    if prepared.cpu_calibration_needed:
        prepared.cache, calibration = _cpu_calibrated_cache(options, prepared, progress)
        _keep_float(prepared, calibration)
        return build_prepared(options, prepared, progress, calibration=calibration, cpu_calibrated=True)
    if prepared.cache is not None:
        from .quantization import check_recorded_verdict

        if options.target is not None and options.target.given():
            log.warning("--target-*/--max-drop run with calibration, and %s already exists: its sidecar's "
                        "mixed-precision record (%d float layer(s)) is used as it is", options.cache_path,
                        len(prepared.keep_float))
        if options.equalize is not None:
            log.warning("--equalize runs with calibration, and %s already exists: it is used as it is, with the "
                        "model it was calibrated on (%s)", options.cache_path, options.model_path.name)
        check_recorded_verdict(prepared.cache.sidecar, options.min_snr, options.min_cosine, str(options.cache_path),
                               options.min_agreement, options.min_metric)
    elif prepared.qdq_calibration_needed:
        amax, calibration = _qdq_calibration(options, prepared, progress)
        _keep_float(prepared, calibration)
    elif _rewrites(options) and prepared.plan.calibrator:
        raise TrtqError(f"--equalize {options.equalize} rewrites the model before trtq's calibration on the CPU, "
                        f"and --algo {options.algorithm} on the implicit path is TensorRT's own calibrator on the "
                        "GPU: use --algo auto, percentile or mse, or --explicit, or leave --equalize out")
    return build_prepared(options, prepared, progress, calibration=calibration, amax=amax)


def _rewrites(options) -> bool:
    """Whether the build's ``--equalize`` may rewrite the model (auto's trial or a forced rewrite), not ``off``."""
    from .equalizing import OFF

    return options.equalize is not None and options.equalize != OFF


def check_equalize(options) -> None:
    """``--equalize`` on a build, before any work: its steps are known, and a rewrite has calibration data to be
    made from and a cache to travel with (the engine is built from the rewritten file written beside the model with
    the cache, as a later build with that cache would be)."""
    from .equalizing import equalize_mode

    if not _rewrites(options):
        return
    equalize_mode(options.equalize, options.algorithm)  # unknown steps: one line, before TensorRT is touched
    if options.calib is None:
        raise TrtqError(f"--equalize {options.equalize} rewrites the model with statistics of calibration data: "
                        "give --calib DATA (a cache made with --equalize already belongs to the rewrite it wrote)")
    if options.cache_path is None:
        raise TrtqError(f"--equalize {options.equalize}: a rewritten model travels with its calibration cache, "
                        "which this build writes only with --cache PATH: add --cache "
                        f"{options.model_path.stem}.calib.cache, or --equalize off")


def _keep_float(prepared, calibration: dict) -> None:
    """Layers a calibration's mixed-precision search left in float stay float in the engine too."""
    prepared.keep_float += [n for n in (calibration.get("mixed_precision") or {}).get("float_layers", [])
                            if n not in prepared.keep_float]


def _calibrate(options, prepared, progress: ProgressCallback, **kwargs):
    """trtq's calibration for a build. Auto's equalization trial runs where a cache is written (the rewrite it
    keeps is written beside the model with it, and the engine is built from that file, as a later build with the
    cache would); without a cache the model is built as it is. ``options.equalize`` (``--equalize``) overrides
    that: ``off``, the trial, or a rewrite whatever it scores (:func:`check_equalize` refuses one without a
    cache)."""
    from ..backend.build import calib_data_spec
    from .calibration import calibrate, default_equalized_path

    result = calibrate(options.model_path, calib_data_spec(options.calib), algorithm=options.algorithm,
                       cache_path=options.cache_path, exclude=list(prepared.keep_float), min_snr=options.min_snr,
                       min_cosine=options.min_cosine, min_agreement=options.min_agreement,
                       min_metric=options.min_metric, metric=options.metric, class_outputs=options.class_outputs,
                       target=options.target, progress=progress, force=options.force,
                       equalize=options.equalize if options.equalize is not None
                       else None if options.cache_path is not None else "off", **kwargs)
    if result.model is not None:
        from ..graph.model import file_sha256

        rewrite = default_equalized_path(options.model_path, options.cache_path)
        log.info("auto kept the model rewritten by --equalize (%s): building %s", ",".join(result.equalize.steps),
                 rewrite.name)
        options.model_path, prepared.model, prepared.sha = rewrite, result.model, file_sha256(rewrite)
    return result


def _cpu_calibrated_cache(options, prepared, progress: ProgressCallback) -> Tuple[object, dict]:
    """trtq's own calibration (auto, percentile, mse) on the CPU, as a cache for TensorRT's calibrator."""
    from .. import cache as cache_io

    result = _calibrate(options, prepared, progress, trt_version=prepared.running_version)
    cache = cache_io.parse_cache(cache_io.format_cache(result.amax, prepared.running_version, "EntropyCalibration2"),
                                 source=f"trtq's {options.algorithm} calibration")
    cache.sidecar = {"algorithm": {"name": options.algorithm}}  # made here, for this model: safe to hand over
    log.info("TensorRT's calibrators are entropy and minmax; %s was computed by trtq on the CPU (%d samples) and "
             "handed to TensorRT as a calibration cache", options.algorithm, result.num_samples)
    return cache, {"algorithm": options.algorithm, "calibrated_by": "trtq-cpu", "samples_cpu": result.num_samples,
                   "chosen": result.auto.chosen if result.auto is not None else options.algorithm,
                   "verdict": result.verdict.to_dict(), "cache_written": [str(p) for p in result.files_written],
                   **_mixed_record(result)}


def _qdq_calibration(options, prepared, progress: ProgressCallback) -> Tuple[dict, dict]:
    """The explicit path without a cache: amax from trtq's calibration on the CPU, and its record."""
    result = _calibrate(options, prepared, progress)
    return result.amax, {"method": "qdq", "source": "data", "algorithm": result.algorithm,
                         "chosen": result.auto.chosen if result.auto is not None else result.algorithm,
                         "samples": result.num_samples, "data": result.data_description,
                         "verdict": result.verdict.to_dict(),
                         "cache_written": [str(p) for p in result.files_written], **_mixed_record(result)}


def _mixed_record(result) -> dict:
    """The calibration's mixed-precision record (layers a --target search left in float), for the build report."""
    record = result.sidecar.get("mixed_precision")
    return {"mixed_precision": record} if record else {}
