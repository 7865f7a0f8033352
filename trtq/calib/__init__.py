"""Calibration: statistics of every tensor over representative data, then amax per tensor.

The math lives in :mod:`.histogram` and :mod:`.algorithms` (pure functions), running the
model in :mod:`.collect`. The flow that composes them with scoring and the verdict
(``trtq.calibrate``, ``--algo auto``) is :func:`trtq.pipeline.calibration.calibrate`.
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
    verdict: Optional[object] = None         # trtq.compare.verdict.Verdict on the held-back samples
    auto: Optional[object] = None            # trtq.pipeline.choose.AutoChoice when algorithm == "auto"
    statistics_seconds: float = 0.0          # the histogram pass alone (seconds includes scoring)
    #: tensors left out of ``amax`` (they stay float) -> why: +-inf or huge by construction
    unquantized: Dict[str, str] = field(default_factory=dict)
    #: how collection ran: tensors observed, samples per run (lowered for the memory budget), groups
    collection: Optional[object] = field(default=None, repr=False)
    #: trtq.calib.convergence.Convergence: amax drift between half and all of the samples (None: too few)
    convergence: Optional[object] = None
    #: trtq.compare.struct.AutoExcludeResult of the search to a FidelityTarget (None when none ran)
    mixed_precision: Optional[object] = None
    #: trtq.graph.equalize.EqualizeReport when the model was rewritten first (``--equalize``), and that model
    equalize: Optional[object] = None
    model: Optional[object] = field(default=None, repr=False)
    #: trtq.pipeline.equalizing.EqualizeTrial: what auto's equalization trial tried and kept (None: not asked)
    equalize_trial: Optional[object] = None


def amax_from_histograms(histograms: dict, algorithm: str = "entropy", **options) -> Dict[str, float]:
    """amax per tensor from collected histograms with one single algorithm (pure; no model run)."""
    from .algorithms import check_algorithm, compute_amax

    check_algorithm(algorithm)
    return {name: float(compute_amax(hist, algorithm, **options)) for name, hist in histograms.items()}


def check_calibration_options(algorithm: str, percentile: float, num_bins: int, max_binned: Optional[int] = None,
                              observe: Union[str, Sequence[str]] = "all", max_memory: Optional[int] = None) -> None:
    """Refuse bad calibration options before any work (``auto`` is accepted here)."""
    from .algorithms import check_algorithm

    if algorithm != "auto":
        check_algorithm(algorithm)
    if not 0.0 < percentile <= 100.0:
        raise TrtqError(f"percentile must be in (0, 100], got {percentile}")
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or not 128 <= num_bins <= defaults.MAX_NUM_BINS \
            or num_bins % 2:
        raise TrtqError(f"num_bins must be an even number from 128 (entropy merges into 128 levels; growing the "
                        f"range merges bin pairs) to {defaults.MAX_NUM_BINS}, got {num_bins}")
    if max_binned is not None and (isinstance(max_binned, bool) or int(max_binned) < 1):
        raise TrtqError(f"max_binned (--max-binned) must be at least 1 value per tensor and batch, got {max_binned}; "
                        "leave it unset to bin every value")
    if isinstance(observe, str) and observe not in ("all", "qdq"):
        raise TrtqError(f"observe must be 'all', 'qdq' or a list of tensor names, got {observe!r}")
    if max_memory is not None and max_memory <= 0:
        raise TrtqError(f"max_memory must be a positive number of bytes, got {max_memory}")
