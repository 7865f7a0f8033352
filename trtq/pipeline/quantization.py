"""The quantize flow: a Q/DQ model from a cache, with the recorded verdict checked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, List, Mapping, Optional, Sequence, Union

from ..errors import TrtqError
from ..graph.model import model_reads
from ..precision.targets import FidelityTarget
from ..progress import ProgressCallback, no_progress
from .calibration import calibrate

PathLike = Union[str, Path]


@dataclass
class QuantizeOutcome:
    """What :func:`quantize` wrote, with the verdict of the scales it used (when known)."""

    summary: object                        # trtq.graph.qdq.QuantizeSummary
    calibration: Optional[object] = None   # CalibrationResult, when it calibrated itself
    verdict: Optional[dict] = None         # the verdict (as recorded in a cache's sidecar, or just computed)
    verdict_source: str = ""
    float_layers: List[str] = field(default_factory=list)
    mixed_precision: dict = field(default_factory=dict)  # the cache sidecar's record of them (who, target, reached)
    equalize: Optional[object] = None      # trtq.graph.equalize.EqualizeReport when --equalize rewrote the model
    equalized_model: Optional[Path] = None  # the rewrite a cache belongs to, quantized in the model's place
    equalize_steps: str = ""


def quantize(
    model_path: PathLike,
    output_path: Optional[PathLike] = None,
    *,
    cache: Optional[PathLike] = None,
    amax: Optional[Mapping[str, float]] = None,
    calib=None,
    algorithm: Optional[str] = None,
    target: str = "trt",
    exclude: Iterable[str] = (),
    force: bool = False,
    min_snr: Optional[float] = None,
    min_cosine: Optional[float] = None,
    min_agreement: Optional[float] = None,
    metric=None,
    class_outputs=None,
    fidelity: Optional[FidelityTarget] = None,
    min_metric: Optional[float] = None,
    equalize: Union[None, bool, str, Sequence[str]] = None,
    progress: ProgressCallback = no_progress,
    feedback: Sequence = (),
) -> QuantizeOutcome:
    """Quantize an ONNX file and write the Q/DQ model; exactly one of ``cache``, ``amax``, ``calib``.

    ``cache``: a TensorRT calibration cache (its trtq sidecar must match the model
    unless ``force``); the layers its sidecar records as mixed precision stay float too.
    ``calib``: a :class:`~trtq.data.spec.DataSpec` (or path) to calibrate on first, with
    ``algorithm`` (default ``auto``). ``output_path`` defaults to
    :func:`trtq.graph.qdq.default_output_path`. ``min_snr``/``min_cosine``/``min_agreement``/``min_metric`` gate on the
    verdict (computed when calibrating, read from the sidecar with a cache): nothing is
    written when it misses them. ``feedback``: a streaming model's ``OUT=IN`` pairs, for ``calib``
    (see :func:`calibrate`).
    written when it misses them. ``fidelity``: with ``calib``, the mixed-precision search of
    :func:`calibrate` (the layers it leaves in float stay float in the written model).
    ``equalize``: with ``calib``, as :func:`calibrate` takes it (by default auto's trial); the
    Q/DQ model written carries the rewritten weights when a rewrite was used. A ``cache`` made on the model's
    rewrite (``--equalize``, or kept by auto's trial) quantizes that rewrite (found beside the model or the cache, see
    :func:`trtq.cache.equalized_model`).
    """
    from ..cache import check_cache_matches, float_layers, read_cache, sidecar_path
    from ..fileio import write_bytes_atomic
    from ..graph.model import load_onnx
    from ..graph.qdq import (
        check_quantized,
        check_target,
        default_output_path,
        is_quantized,
        quantize_model,
        tensor_names,
    )
    from ..outputs import Output, guard_outputs

    check_target(target)
    sources = [name for name, value in (("cache", cache), ("amax", amax), ("calib", calib)) if value is not None]
    if len(sources) != 1:
        raise TrtqError("give exactly one source of scales: a calibration cache (--cache), calibration data "
                        f"(--calib) or an amax table (got {', '.join(sources) or 'none'})")
    if equalize not in (None, False, "auto", "off") and calib is None:
        raise TrtqError("--equalize rewrites the model with statistics of calibration data: give --calib DATA "
                        "(a cache made with --equalize belongs to the .equalized.onnx it wrote: quantize that file)")
    if fidelity is not None and fidelity.given() and calib is None:
        raise TrtqError("--target-snr/--target-cosine/--target-agreement run the search on held-back calibration "
                        "samples: give --calib DATA (for a cache, trtq eval --auto-exclude --cache records it)")
    output = Path(output_path) if output_path is not None else default_output_path(model_path, target)
    reads = model_reads(model_path)
    if cache is not None:
        reads += [("the calibration cache", cache), ("the cache's sidecar", sidecar_path(cache))]
    guard_outputs([Output(output, "onnx", option="output")], reads, force=force)  # before any work
    model = load_onnx(model_path)
    exclude = list(exclude)
    if exclude and not is_quantized(model):
        from ..graph.qdq import check_exclude

        check_exclude(model, exclude)  # a typo would quantize the layer meant to stay float

    if is_quantized(model):
        _, summary = quantize_model(model, {}, target=target)
        write_bytes_atomic(output, Path(model_path).read_bytes())
        summary.output_path = str(output)
        return QuantizeOutcome(summary)

    outcome = QuantizeOutcome(None)
    if cache is not None:
        table = read_cache(cache)
        model, sha = _model_of_cache(table, model, model_path, cache, outcome)
        check_cache_matches(table, model, sha, tensor_names(model), force=force)
        amax = table.amax
        outcome.float_layers = float_layers(table.sidecar)
        outcome.mixed_precision = dict((table.sidecar or {}).get("mixed_precision") or {})
        exclude += [layer for layer in outcome.float_layers if layer not in exclude]
        if metric is not None or class_outputs:
            raise TrtqError("--metric and --class-output judge a calibration; with --cache the verdict recorded at "
                            "calibration is used: calibrate with them (or check with trtq eval ... --metric)")
        outcome.verdict = check_recorded_verdict(table.sidecar, min_snr, min_cosine, str(cache), min_agreement,
                                                 min_metric)
        outcome.verdict_source = f"recorded at calibration in {Path(cache).name}.json" if outcome.verdict else ""
    elif calib is not None:
        options = {"algorithm": algorithm} if algorithm else {}
        # no cache is written here: observing the Q/DQ placement points is enough (and faster)
        result = calibrate(model_path, calib, progress=progress, exclude=exclude, min_snr=min_snr,
                           min_cosine=min_cosine, min_agreement=min_agreement, min_metric=min_metric, metric=metric,
                           class_outputs=class_outputs, observe="qdq", feedback=feedback, target=fidelity,
                           equalize=equalize, **options)
        if result.model is not None:
            model = result.model
            outcome.equalize = result.equalize
        outcome.calibration = result
        outcome.verdict, outcome.verdict_source = result.verdict.to_dict(), "held-back calibration samples"
        amax = result.amax
        outcome.mixed_precision = dict(result.sidecar.get("mixed_precision") or {})
        outcome.float_layers = [n for n in outcome.mixed_precision.get("float_layers", []) if n not in exclude]
        exclude += outcome.float_layers

    quantized, summary = quantize_model(model, amax, target=target, exclude=exclude)
    check_quantized(quantized, summary, Path(model_path).name)
    write_bytes_atomic(output, quantized.SerializeToString())
    summary.output_path = str(output)
    outcome.summary = summary
    return outcome


def _model_of_cache(table, model, model_path: PathLike, cache: PathLike, outcome: QuantizeOutcome):
    """(model, sha256) the cache's scales belong to: ``model``, or the rewrite of it the cache was calibrated on
    (``--equalize``, or kept by auto's trial; :func:`trtq.cache.equalized_model`), noted in ``outcome``."""
    from ..cache import model_of_cache

    path, model, sha = model_of_cache(table, model_path, model, cache)
    if path != Path(model_path):
        outcome.equalized_model = path
        outcome.equalize_steps = ",".join((table.sidecar.get("equalize") or {}).get("steps") or [])
    return model, sha


def check_recorded_verdict(sidecar: Optional[dict], min_snr: Optional[float], min_cosine: Optional[float],
                           cache: str, min_agreement: Optional[float] = None,
                           min_metric: Optional[float] = None) -> Optional[dict]:
    """The verdict a cache's sidecar recorded at calibration, checked against the gates; None when there is none.

    Sidecars written before decisions were recorded have no ``agreement``: they still
    read, and ``--min-agreement`` then misses (a missing value misses, and says so).
    Raises :class:`~trtq.errors.FidelityError` when it misses a gate, and
    :class:`~trtq.errors.TrtqError` when a gate is set but no verdict was recorded.
    """
    from ..compare.verdict import gate_failure
    from ..errors import FidelityError

    recorded = (sidecar or {}).get("verdict")
    gated = any(v is not None for v in (min_snr, min_cosine, min_agreement, min_metric))
    if not recorded:
        if gated:
            raise TrtqError(f"--min-snr/--min-cosine/--min-agreement/--min-metric need a verdict, and "
                            f"{Path(cache).name} has no trtq sidecar recording one; calibrate with --calib DATA "
                            "instead, or check with trtq eval")
        return None
    metric = recorded.get("metric") if isinstance(recorded.get("metric"), dict) else {}
    decision = recorded.get("decision")
    agreement = recorded.get("agreement") if not str(decision or "").startswith("metric ") else None  # older sidecars
    failure = gate_failure(recorded.get("snr_db"), recorded.get("cosine"), str(recorded.get("worst")),
                           min_snr, min_cosine, agreement, min_agreement, decision,
                           metric.get("value"), min_metric, metric.get("name"))
    if failure:
        raise FidelityError(f"{failure}, as recorded at calibration in {Path(cache).name}.json; nothing was written")
    return recorded
