"""Calibration: statistics of every tensor over representative data, then amax per tensor.

``calibrate()`` is the public entry point; the math lives in :mod:`.histogram` and
:mod:`.algorithms` (pure functions), running the model in :mod:`.collect`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Union

from .. import defaults
from ..errors import TrtqError
from ..progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)


@dataclass
class CalibrationResult:
    """What a calibration produced. ``histograms`` lets other algorithms be tried without rerunning."""

    amax: Dict[str, float]
    algorithm: str
    num_samples: int
    num_batches: int
    seconds: float
    data_description: str
    files_written: List[Path] = field(default_factory=list)
    sidecar: dict = field(default_factory=dict)
    histograms: dict = field(default_factory=dict, repr=False)


def amax_from_histograms(histograms: dict, algorithm: str = defaults.ALGORITHM, **options) -> Dict[str, float]:
    """amax per tensor from collected histograms (pure; no model run)."""
    from .algorithms import check_algorithm, compute_amax

    check_algorithm(algorithm)
    return {name: float(compute_amax(hist, algorithm, **options)) for name, hist in histograms.items()}


def calibrate(
    model_path: Union[str, Path],
    data,
    *,
    algorithm: str = defaults.ALGORITHM,
    cache_path: Optional[Union[str, Path]] = None,
    trt_version: Optional[int] = None,
    num_bins: int = defaults.NUM_BINS,
    percentile: float = defaults.PERCENTILE,
    threads: Optional[int] = None,
    max_binned: Optional[int] = defaults.HIST_MAX_BINNED,
    progress: ProgressCallback = no_progress,
) -> CalibrationResult:
    """Calibrate ``model_path`` on ``data`` (a DataSpec or a path) and return amax per tensor.

    With ``cache_path``, also write the TensorRT calibration cache and its JSON sidecar
    (atomically; the output location is checked before any work starts).
    """
    from .. import cache as cache_io
    from ..data import open_source
    from ..data.spec import DataSpec
    from ..fileio import Output, guard_outputs
    from ..graph.model import file_sha256, input_specs, load_onnx, model_fingerprint
    from .algorithms import check_algorithm
    from .collect import collect_histograms

    check_algorithm(algorithm)  # before any work, like the checks below
    if not 0.0 < percentile <= 100.0:
        raise TrtqError(f"percentile must be in (0, 100], got {percentile}")
    if num_bins < 128 or num_bins % 2:
        raise TrtqError(f"num_bins must be an even number of at least 128 (entropy merges into 128 levels; "
                        f"growing the range merges bin pairs), got {num_bins}")
    if max_binned is not None and (isinstance(max_binned, bool) or int(max_binned) < 1):
        raise TrtqError(f"max_binned (--max-binned) must be at least 1 value per tensor and batch, got {max_binned}; "
                        "leave it unset to bin every value")
    spec = data if isinstance(data, DataSpec) else DataSpec(path=str(data))
    if cache_path is not None:  # never onto the model or the data, and writable, before any work
        from ..data import data_files

        guard_outputs([Output(cache_path, option="cache_path"),
                       Output(cache_io.sidecar_path(cache_path), option="the sidecar of cache_path")],
                      [("the model", model_path)] + [("a calibration data file", p) for p in data_files(spec.path)])
    model = load_onnx(model_path)
    fingerprint = model_fingerprint(model)  # before collection touches the graph
    inputs = input_specs(model)
    source = open_source(spec, inputs)
    log.info("calibrating on %s", source.description)

    started = time.perf_counter()
    progress(0, source.num_samples)  # the total is known now: no "0/?" while the session starts
    histograms = collect_histograms(model, iter(source), num_bins=num_bins, total_samples=source.num_samples,
                                    threads=threads, max_binned=max_binned, progress=progress)
    options = {"percentile": percentile} if algorithm == "percentile" else {}
    amax = amax_from_histograms(histograms, algorithm, **options)
    seconds = time.perf_counter() - started

    version = trt_version if trt_version is not None else cache_io.default_trt_version()
    algorithm_options = {"num_bins": num_bins, "max_binned": max_binned, **options}
    sidecar = cache_io.make_sidecar(
        model_path=model_path,
        model_sha256=file_sha256(model_path),
        inputs=cache_io.input_records(inputs),
        algorithm=algorithm,
        amax=amax,
        trt_version=version,
        data={"source": source.description, "path": str(spec.path), "samples": source.num_samples,
              "batch_size": source.batch_size, "seed": spec.seed, "shuffle": spec.shuffle,
              "preprocess": spec.preprocess.to_dict(), "fingerprint": source.fingerprint()},
        algorithm_options=algorithm_options,
        fingerprint=fingerprint,
    )
    written: List[Path] = []
    if cache_path is not None:
        written = cache_io.write_cache(cache_path, amax, algorithm=algorithm, trt_version=version, sidecar=sidecar)
    return CalibrationResult(amax=amax, algorithm=algorithm, num_samples=source.num_samples, num_batches=len(source),
                             seconds=seconds, data_description=source.description, files_written=written,
                             sidecar=sidecar, histograms=histograms)
