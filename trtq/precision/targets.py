"""Fidelity targets (``--target-snr`` and friends) and the mixed-precision record the sidecar keeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from .. import defaults
from ..progress import ProgressCallback, no_progress


@dataclass(frozen=True)
class FidelityTarget:
    """What the mixed-precision search must reach on the held-back samples: one of the three metrics.

    ``snr_db``: worst output and channel group SNR; ``cosine``: worst output cosine;
    ``agreement``: top-1 agreement on a class-score output (the first output that looks like
    ``[N, C]`` class scores unless the replay names its class outputs). The search is
    :func:`trtq.precision.search.auto_exclude` (the same as ``trtq eval --auto-exclude``).
    ``max_drop``: an accuracy budget, the points of decisions the INT8 model may lose against
    FP32 (:mod:`trtq.precision.budget`: the fewest layers float that keep them).
    """

    snr_db: Optional[float] = None
    cosine: Optional[float] = None
    agreement: Optional[float] = None
    max_layers: Optional[int] = None        # None: AUTO_EXCLUDE_MAX_LAYERS for a target, no limit for a budget
    max_drop: Optional[float] = None

    def given(self) -> bool:
        return any(v is not None for v in (self.snr_db, self.cosine, self.agreement, self.max_drop))

    def layer_limit(self) -> int:
        """The most layers a target's search leaves in float."""
        return defaults.AUTO_EXCLUDE_MAX_LAYERS if self.max_layers is None else self.max_layers

    def label(self) -> str:
        if self.max_drop is not None:
            return f"decisions within {self.max_drop:g} point(s) of FP32"
        return ", ".join(f"{name} >= {value:g}" for name, value in
                         (("SNR", self.snr_db), ("cosine", self.cosine), ("top-1 agreement", self.agreement))
                         if value is not None)


def reach_target(model, amax: Mapping[str, float], replay, metrics: list, target: FidelityTarget, *,
                 exclude: Sequence[str] = (), threads: Optional[int] = None,
                 progress: ProgressCallback = no_progress, check=None, check_needs: int = 0):
    """Leave layers in float until ``target`` is met on ``replay``: ``(AutoExcludeResult or None, metrics)``.

    ``check``: a budget's replay of samples its search never reads (:func:`~trtq.precision.budget.reach_budget`);
    without one, ``check_needs``: the calibration samples that would give one (said in the budget's line).

    ``metrics``: the verdict's per-output metrics of the model as it is (``exclude`` float).
    Returns ``(None, metrics)`` when they already meet an SNR or cosine target (nothing run);
    otherwise the search's result and, when it met the target with layers left in float,
    the metrics of that mixed model (else the ones given: an unmet search changes nothing).
    """
    from ..compare.decisions import worst_of
    from ..compare.metrics import class_scores
    from .search import auto_exclude

    if target.max_drop is not None:
        return _reach_budget(model, amax, replay, metrics, target, exclude=exclude, threads=threads,
                             progress=progress, check=check, check_needs=check_needs)
    snr, cosine, _ = worst_of(metrics)
    if (target.snr_db is not None and snr >= target.snr_db) or \
            (target.cosine is not None and cosine >= target.cosine):
        return None, metrics
    if target.agreement is not None and not replay.class_outputs:
        replay.class_outputs = tuple(name for name, value in replay.outputs[0].items()
                                     if class_scores(value) is not None)[:1]
    result, mixed = auto_exclude(model, amax, target_snr=target.snr_db, target_cosine=target.cosine,
                                 target_agreement=target.agreement, max_layers=target.layer_limit(), replay=replay,
                                 exclude=exclude, measure_speed=False, threads=threads, progress=progress)
    if result.met and result.excluded and mixed is not None:
        metrics = replay.score(mixed, threads=threads)
    return result, metrics

def _reach_budget(model, amax, replay, metrics: list, target: FidelityTarget, *, exclude: Sequence[str] = (),
                  threads: Optional[int] = None, progress: ProgressCallback = no_progress, check=None,
                  check_needs: int = 0):
    """:func:`reach_target` for ``--max-drop``: an AutoExcludeResult whose ``budget`` is the outcome."""
    from ..compare.struct import AutoExcludeResult
    from .budget import reach_budget

    outcome, metrics = reach_budget(model, amax, replay, metrics, target.max_drop, exclude=exclude,
                                    max_layers=target.max_layers, threads=threads, progress=progress, check=check)
    outcome.check_needs = 0 if check is not None else check_needs
    limit = "" if target.max_layers is None else f"--max-layers {target.max_layers} reached: raise it, or "
    search = AutoExcludeResult("decisions", 1.0 - target.max_drop / 100.0, outcome.met, list(outcome.float_layers),
                               [], outcome.check_samples or replay.samples, target.max_layers or 0, budget=outcome)
    search.message = outcome.line() + ("" if outcome.met else f" ({limit}raise --max-drop, or calibrate on more "
                                                               "representative data)")
    return search, metrics



def mixed_precision_record(exclude: Sequence[str], search, source: str) -> Optional[dict]:
    """The sidecar's ``mixed_precision``: the layers every consumer leaves in float, and who chose them."""
    budget = getattr(search, "budget", None)
    if budget is not None:
        record = {"float_layers": list(exclude) + [n for n in budget.float_layers if n not in exclude] if budget.met
                  else list(exclude), "source": source, "target": {"max_drop": budget.max_drop},
                  "reached": budget.final_points(), "budget": budget.to_dict()}
        if exclude:
            record["given"] = list(exclude)
        return record
    if search is None or not (search.met and search.excluded):
        return {"float_layers": list(exclude), "source": "exclude"} if exclude else None
    record = {"float_layers": list(exclude) + [n for n in search.excluded if n not in exclude], "source": source,
              "target": {search.target_metric: search.target},
              "reached": search.steps[-1].metric if search.steps else None}
    kept = [s for s in search.steps if s.kept and s.layer is not None]
    if kept:
        record["reached"] = kept[-1].metric
    if exclude:
        record["given"] = list(exclude)
    return record
