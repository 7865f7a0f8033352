"""Calibration: statistics of every tensor over representative data, then amax per tensor.

``calibrate()`` is the public entry point; the math lives in :mod:`.histogram` and
:mod:`.algorithms` (pure functions), running the model in :mod:`.collect`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

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
    #: tensors left out of ``amax`` (they stay float) -> why: +-inf or huge by construction
    unquantized: Dict[str, str] = field(default_factory=dict)
    #: how collection ran: tensors observed, samples per run (lowered for the memory budget), groups
    collection: Optional[object] = field(default=None, repr=False)


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
    exact: bool = False,
    max_memory: Optional[int] = defaults.CALIB_MAX_MEMORY,
    observe: Union[str, Sequence[str]] = "all",
    progress: ProgressCallback = no_progress,
) -> CalibrationResult:
    """Calibrate ``model_path`` on ``data`` (a DataSpec or a path) and return amax per tensor.

    With ``cache_path``, also write the TensorRT calibration cache and its JSON sidecar
    (atomically; the output location is checked before any work starts). ``exact``:
    bin every value (overrides ``max_binned``). ``max_memory``: bytes the calibration
    may use (None: unbounded). ``observe``: ``"all"`` float tensors (what TensorRT's
    implicit path reads from a cache), ``"qdq"`` (only the Q/DQ placement points of an
    explicit model) or a list of tensor names.
    """
    from .. import cache as cache_io
    from ..data import open_source
    from ..data.spec import DataSpec
    from ..fileio import check_writable
    from ..graph.model import file_sha256, input_specs, load_onnx
    from .algorithms import check_algorithm
    from .collect import CollectionReport, collect_histograms, qdq_tensors

    check_algorithm(algorithm)  # before any work, like the checks below
    if not 0.0 < percentile <= 100.0:
        raise TrtqError(f"percentile must be in (0, 100], got {percentile}")
    if num_bins < 128 or num_bins % 2:
        raise TrtqError(f"num_bins must be an even number of at least 128 (entropy merges into 128 levels; "
                        f"growing the range merges bin pairs), got {num_bins}")
    if isinstance(observe, str) and observe not in ("all", "qdq"):
        raise TrtqError(f"observe must be 'all', 'qdq' or a list of tensor names, got {observe!r}")
    if max_memory is not None and max_memory <= 0:
        raise TrtqError(f"max_memory must be a positive number of bytes, got {max_memory}")
    if exact:
        max_binned = None
    if cache_path is not None:
        check_writable(cache_path)
        check_writable(cache_io.sidecar_path(cache_path))
    spec = data if isinstance(data, DataSpec) else DataSpec(path=str(data))
    model = load_onnx(model_path)
    inputs = input_specs(model)
    source = open_source(spec, inputs)
    log.info("calibrating on %s", source.description)

    started = time.perf_counter()
    tensors = None if observe == "all" else qdq_tensors(model) if observe == "qdq" else list(observe)
    report = CollectionReport()
    histograms = collect_histograms(model, iter(source), num_bins=num_bins, total_samples=source.num_samples,
                                    threads=threads, max_binned=max_binned, tensors=tensors, max_memory=max_memory,
                                    report=report, progress=progress)
    options = {"percentile": percentile} if algorithm == "percentile" else {}
    amax = amax_from_histograms(histograms, algorithm, **options)
    seconds = time.perf_counter() - started

    version = trt_version if trt_version is not None else cache_io.default_trt_version()
    algorithm_options = {"num_bins": num_bins, "max_binned": max_binned,
                         "observe": observe if isinstance(observe, str) else "list", **options}
    if report.unquantized:
        algorithm_options["unquantized"] = dict(report.unquantized)
        log.info("%d tensor(s) stay float (+-inf or huge by construction, e.g. attention-mask biases): %s%s",
                 len(report.unquantized), ", ".join(list(report.unquantized)[:3]),
                 ", ..." if len(report.unquantized) > 3 else "")
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
    )
    written: List[Path] = []
    if cache_path is not None:
        written = cache_io.write_cache(cache_path, amax, algorithm=algorithm, trt_version=version, sidecar=sidecar)
    return CalibrationResult(amax=amax, algorithm=algorithm, num_samples=source.num_samples, num_batches=len(source),
                             seconds=seconds, data_description=source.description, files_written=written,
                             sidecar=sidecar, histograms=histograms, unquantized=report.unquantized,
                             collection=report)
