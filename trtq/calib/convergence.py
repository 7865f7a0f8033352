"""Were the calibration samples enough? How far each tensor's amax moved in the second half.

Collection keeps a copy of the histograms after the first half of the samples
(:func:`trtq.calib.collect.collect_histograms` with ``half_snapshot``; the histograms are
fixed-size and merge exactly, so this is a copy, not a second pass). The amax of every
tensor is computed from both with the algorithm that chose it; the relative move

    drift = |amax(all samples) - amax(first half)| / amax(all samples)

says how settled the calibration is. A calibration whose amax still move by many percent
between half and all of its samples would move again with more samples: the result
depends on which samples were drawn. The threshold of the recommendation
(:data:`trtq.defaults.CONVERGENCE_MAX_DRIFT`, on the
:data:`~trtq.defaults.CONVERGENCE_QUANTILE` quantile of the drifts) rests on
``scripts/bench_convergence.py`` (fidelity against sample count on two model families).
Pure functions on histograms: no model is run here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np

from .. import defaults


@dataclass
class Convergence:
    """The amax drift between the first ``half_samples`` and all ``samples`` calibration samples."""

    samples: int
    half_samples: int
    algorithm: str
    drift: Dict[str, float] = field(default_factory=dict, repr=False)   # tensor -> relative move
    quantile_drift: float = 0.0           # the CONVERGENCE_QUANTILE quantile of the drifts
    max_drift: float = 0.0
    worst: List[Tuple[str, float]] = field(default_factory=list)       # largest drifts first
    recommendation: Optional[str] = None  # one line when the samples look too few, else None

    def to_dict(self) -> dict:
        """The sidecar record (every tensor's drift, rounded)."""
        return {"samples": self.samples, "half_samples": self.half_samples, "algorithm": self.algorithm,
                "quantile": defaults.CONVERGENCE_QUANTILE, "quantile_drift": round(self.quantile_drift, 6),
                "max_drift": round(self.max_drift, 6), "threshold": defaults.CONVERGENCE_MAX_DRIFT,
                "worst": [{"tensor": name, "drift": round(value, 6)} for name, value in self.worst],
                "recommendation": self.recommendation,
                "drift": {name: round(value, 6) for name, value in self.drift.items()}}

    def line(self) -> str:
        """One summary line: how settled the amax are, the worst tensors."""
        worst = ", ".join(f"{name} {value:.1%}" for name, value in self.worst[:3])
        q = int(round(defaults.CONVERGENCE_QUANTILE * 100))
        return (f"convergence: amax moved {self.quantile_drift:.1%} (p{q}), {self.max_drift:.1%} at most between "
                f"the first {self.half_samples} and all {self.samples} samples"
                + (f"; most: {worst}" if worst else ""))


def relative_drift(half: float, full: float) -> float:
    """|full - half| / full (0 when both are 0; 1 when only one is)."""
    if full == 0.0 and half == 0.0:
        return 0.0
    if full == 0.0:
        return 1.0
    return abs(full - half) / abs(full)


def amax_convergence(half: Mapping[str, object], full: Mapping[str, object], full_amax: Mapping[str, float],
                     algorithm: str, *, half_samples: int, samples: int,
                     per_tensor: Optional[Mapping[str, str]] = None, percentile: float = defaults.PERCENTILE,
                     worst: int = 5) -> Convergence:
    """Drift of ``full_amax`` (computed from ``full``) against the same algorithms applied to ``half``.

    ``algorithm``: the single algorithm used (for ``auto``: the one it chose);
    ``per_tensor``: tensor -> algorithm where a tensor took another one (auto's overrides).
    Tensors missing from ``half`` (first seen in the second half) are skipped.
    """
    from .algorithms import compute_amax

    per_tensor = dict(per_tensor or {})
    drift: Dict[str, float] = {}
    for name, amax in full_amax.items():
        hist = half.get(name)
        if hist is None or name not in full:
            continue
        chosen = per_tensor.get(name, algorithm)
        options = {"percentile": percentile} if chosen == "percentile" else {}
        drift[name] = relative_drift(float(compute_amax(hist, chosen, **options)), float(amax))
    values = np.fromiter(drift.values(), dtype=np.float64, count=len(drift))
    result = Convergence(samples=samples, half_samples=half_samples, algorithm=algorithm, drift=drift)
    if values.size:
        result.quantile_drift = float(np.quantile(values, defaults.CONVERGENCE_QUANTILE))
        result.max_drift = float(values.max())
        result.worst = sorted(drift.items(), key=lambda item: -item[1])[:worst]
    result.recommendation = recommendation(result)
    return result


#: Algorithms whose drift says nothing about sample sufficiency: minmax's amax is the running max, it
#: grows with every new extreme sample while the fidelity does not follow (scripts/bench_convergence.py:
#: minmax drifted 5-10 % (p90) at every sample count on YOLOv8n and digits, its SNR flat within noise).
NO_RECOMMENDATION = frozenset({"minmax"})


def recommendation(result: Convergence) -> Optional[str]:
    """One line when the amax have not settled (the quantile drift above the measured threshold).

    Measured (scripts/bench_convergence.py, docs/benchmarks.md, "Calibration convergence"): YOLOv8n with entropy at 64
    samples drifted 6.8 % (p90) and lost 2.5 dB against 128+ samples; from 256 samples on it drifted
    3.3 % or less and the fidelity no longer moved. None for :data:`NO_RECOMMENDATION` algorithms.
    """
    if result.quantile_drift <= defaults.CONVERGENCE_MAX_DRIFT or not result.drift \
            or result.algorithm in NO_RECOMMENDATION:
        return None
    more = max(2 * result.samples, defaults.SAMPLES) if result.samples < defaults.SAMPLES else 2 * result.samples
    q = int(round(defaults.CONVERGENCE_QUANTILE * 100))
    return (f"the amax have not settled: {result.quantile_drift:.1%} (p{q}) moved between half and all of the "
            f"{result.samples} samples (more than {defaults.CONVERGENCE_MAX_DRIFT:.0%}); calibrate on more samples "
            f"(--samples {more}) drawn from the deployment data")


def convergence_or_none(report, full: Mapping[str, object], amax: Mapping[str, float], algorithm: str,
                        per_tensor: Optional[Mapping[str, str]] = None,
                        percentile: float = defaults.PERCENTILE) -> Optional[Convergence]:
    """:func:`amax_convergence` from a :class:`~trtq.calib.collect.CollectionReport`'s snapshot, if it has one."""
    if getattr(report, "half", None) is None or not report.half_samples:
        return None
    result = amax_convergence(report.half, full, amax, algorithm, half_samples=report.half_samples,
                              samples=report.samples, per_tensor=per_tensor, percentile=percentile)
    return result if result.drift else None


__all__ = ["Convergence", "amax_convergence", "relative_drift", "recommendation", "convergence_or_none"]
