"""Mixed precision by measurement: per-layer sensitivity and the search for the fewest layers left float."""

from __future__ import annotations

import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import defaults
from ..compare.decisions import worst_of
from ..compare.metrics import _snr
from ..compare.struct import AutoExcludeResult, ExcludeStep, LayerSensitivity, _nan_low
from ..errors import TrtqError
from ..graph.model import model_and_name
from ..progress import ProgressCallback, no_progress
from ..runtime.replay import SENSITIVITY_SAMPLES, Replay

#: Most layers --auto-exclude leaves in float before it gives up.
AUTO_EXCLUDE_MAX_LAYERS = defaults.AUTO_EXCLUDE_MAX_LAYERS


def _op_types(model) -> Dict[str, str]:
    from ..graph.qdq import node_names

    return dict(zip(node_names(model), (n.op_type for n in model.graph.node)))


def layer_sensitivity(
    reference,
    amax: Mapping[str, float],
    data=None,
    *,
    replay: Optional[Replay] = None,
    exclude: Sequence[str] = (),
    samples: int = SENSITIVITY_SAMPLES,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> List[LayerSensitivity]:
    """Every quantized activation ranked by the noise its Q/DQ adds where it is read, from one run; worst first.

    The TensorRT-form Q/DQ model (``amax``, ``exclude`` left float) runs once over the
    replay samples with a float twin beside every node that reads a Q/DQ: the twin takes
    the same (already perturbed) float inputs before quantization and the float weights,
    so the two outputs differ by exactly that node's own quantization, at the operating
    point the quantized model really has. Its ``own SNR`` is ``10 log10(twin^2 / (out -
    twin)^2)``; an entry's score is the worst over the nodes reading it, so rounding is
    weighed by what the node does with it (a conv that ignores an outlier channel loses
    nothing when it is clipped). Each entry names those nodes (``layers``): leaving them
    in float removes the Q/DQ, so they are the unit the mixed-precision search excludes
    together (a tensor read by a transformer's Q, K and V projections is one Q/DQ:
    excluding one of the three changes nothing). One run for any number of layers, where
    quantizing one layer at a time costs one scored model per layer.
    """
    from ..graph.qdq import quantize_model

    progress = progress or no_progress
    ref_model, _ = model_and_name(reference)
    replay = replay or Replay.collect(ref_model, data, samples=samples, threads=threads)
    progress(0, 1)
    quantized, summary = quantize_model(ref_model, amax, target="trt", exclude=exclude)
    tensors = [t for t in summary.activation_tensors if summary.activation_uses.get(t)]
    probe, pairs = _float_twins(ref_model, quantized, {n for t in tensors for n in summary.activation_uses[t]})
    if not pairs:
        return []
    sums = {node: [0.0, 0.0] for node in pairs}
    for values in replay.tensors(probe, [name for pair in pairs.values() for name in pair], threads=threads):
        for node, (out, twin) in pairs.items():
            clean = values[twin].astype(np.float64)
            e = values[out].astype(np.float64) - clean
            sums[node][0] += float(np.vdot(clean, clean))
            sums[node][1] += float(np.vdot(e, e))
    progress(1, 1)
    own = {node: _snr(ref2, err2) for node, (ref2, err2) in sums.items()}
    ops = _op_types(ref_model)
    results = []
    for tensor in tensors:
        layers = summary.activation_uses[tensor]
        measured = [own[n] for n in layers if n in own]
        worst = min(measured, key=_nan_low) if measured else None
        kinds = "/".join(sorted({ops.get(layer, "?") for layer in layers}))
        results.append(LayerSensitivity(tensor, kinds, worst, layers=list(layers),
                                        note=f"read by {len(layers)} node(s)"))
    return sort_sensitivity(results)


def _float_twins(ref_model, quantized, readers: Iterable[str]) -> Tuple[Any, Dict[str, Tuple[str, str]]]:
    """A copy of ``quantized`` where each reader node has a float twin; ``{node: (its output, twin's output)}``."""
    import onnx

    from ..graph.placement import GraphIndex

    probe = onnx.ModelProto()
    probe.CopyFrom(quantized)
    ref_nodes = dict(zip(_node_names(ref_model), ref_model.graph.node))
    # Float weights as the placement sees them: initializers and Constant nodes' tensors (which
    # quantize_model drops with the float weight they held), shared or not.
    initializers = GraphIndex(ref_model).weights
    present = {init.name for init in probe.graph.initializer}
    pairs: Dict[str, Tuple[str, str]] = {}
    for name in sorted(readers):
        node = ref_nodes.get(name)
        if node is None or len(node.output) != 1 or not node.output[0]:
            continue
        twin = onnx.NodeProto()
        twin.CopyFrom(node)
        twin.name = f"{name}__trtq_float_twin"
        for slot, tensor in enumerate(node.input):
            if tensor in initializers:  # quantize_model dropped or replaced the float weight: bring it back
                copy_name = f"{tensor}__trtq_float"
                if copy_name not in present:
                    weight = onnx.TensorProto()
                    weight.CopyFrom(initializers[tensor])
                    weight.name = copy_name
                    probe.graph.initializer.append(weight)
                    present.add(copy_name)
                twin.input[slot] = copy_name
        twin.output[0] = f"{node.output[0]}__trtq_float_twin"
        probe.graph.node.append(twin)
        pairs[name] = (node.output[0], twin.output[0])
    return probe, pairs


def _node_names(model) -> List[str]:
    from ..graph.qdq import node_names

    return node_names(model)


def _helps(metric: str, value: Optional[float], before: Optional[float]) -> bool:
    """Did a mixed-precision step raise ``metric`` measurably (by AUTO_EXCLUDE_MIN_GAIN_DB; any gain for agreement)?"""
    value, before = _nan_low(value if value is not None else math.nan), _nan_low(before if before is not None else math.nan)
    if metric == "top1_agreement" or not math.isfinite(before):
        return value > before
    if metric == "cosine":  # as dB of the residual 1 - cos
        value, before = (-10 * math.log10(max(1.0 - v, 1e-30)) if math.isfinite(v) else v for v in (value, before))
    return value - before >= defaults.AUTO_EXCLUDE_MIN_GAIN_DB


def sort_sensitivity(results: Iterable[LayerSensitivity]) -> List[LayerSensitivity]:
    """Lowest own SNR (NaN first) first; entries that could not be measured last."""
    def key(r: LayerSensitivity):
        if r.own_snr_db is None:
            return (1, 0.0)
        return (0, _nan_low(r.own_snr_db))

    return sorted(results, key=key)


def auto_exclude(
    reference,
    amax: Mapping[str, float],
    data=None,
    *,
    target_snr: Optional[float] = None,
    target_cosine: Optional[float] = None,
    target_agreement: Optional[float] = None,
    max_layers: int = AUTO_EXCLUDE_MAX_LAYERS,
    ranking: Optional[Sequence[LayerSensitivity]] = None,
    replay: Optional[Replay] = None,
    exclude: Sequence[str] = (),
    samples: int = SENSITIVITY_SAMPLES,
    measure_speed: bool = True,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> Tuple[AutoExcludeResult, Optional[Any]]:
    """Leave layers in float, measuring every step, until the target is met.

    Targets (exactly one; default ``target_snr`` = :data:`trtq.defaults.VERDICT_MIN_SNR_DB`):
    ``target_snr`` on the worst output and channel group (boxes, embeddings, CTC
    sequences: any output), ``target_cosine`` likewise, ``target_agreement`` top-1
    agreement on a class-score output (the replay's ``class_outputs``). Starts from the
    TensorRT-form model (``exclude`` already float), walks the ranking of
    :func:`layer_sensitivity` (noisiest quantized tensor first), and for each entry
    measures the model with the nodes reading that tensor left in float: each round
    measures the next :data:`~trtq.defaults.AUTO_EXCLUDE_LOOKAHEAD` entries from the
    current model and keeps the one that raises the metric most; a trial that does not
    help is recorded, not kept, so the result is never worse than the step before it.
    Stops at the target, after ``max_layers`` nodes kept in float, or after
    ``AUTO_EXCLUDE_LOOKAHEAD * max_layers + 1`` trials. Returns ``(result, the TensorRT-form Q/DQ model of the result)``.
    """
    # Long because the greedy search keeps its state (model, excluded layers, steps, the target's metric) in
    # one loop; split, each step would pass all of it.
    from ..graph.qdq import quantize_model

    given = [t for t in (target_snr, target_cosine, target_agreement) if t is not None]
    if len(given) > 1:
        raise TrtqError("give one target: --target-snr DB, --target-cosine C or --target-agreement FRACTION")
    if not given:
        target_snr = defaults.VERDICT_MIN_SNR_DB
    if target_agreement is not None and not 0.0 < target_agreement <= 1.0:
        raise TrtqError(f"--target-agreement is a fraction in (0, 1], got {target_agreement}")
    if target_cosine is not None and not -1.0 <= target_cosine <= 1.0:
        raise TrtqError(f"--target-cosine is a cosine in [-1, 1], got {target_cosine}")
    if max_layers < 0:
        raise TrtqError(f"--max-layers must be 0 or more, got {max_layers}")
    progress = progress or no_progress
    ref_model, _ = model_and_name(reference)
    replay = replay or Replay.collect(ref_model, data, samples=samples, threads=threads)
    if target_agreement is not None and not replay.class_outputs:
        raise TrtqError("--target-agreement needs an output declared as class scores (--labels or --class-output "
                        "NAME); for embeddings, boxes or sequences use --target-snr or --target-cosine")
    metric_name, target = (("snr_db", target_snr) if target_snr is not None else
                           ("cosine", target_cosine) if target_cosine is not None else
                           ("top1_agreement", target_agreement))
    target = float(target)
    if ranking is None:
        ranking = layer_sensitivity(ref_model, amax, replay=replay, exclude=exclude, threads=threads)
    candidates = [r for r in ranking if r.own_snr_db is not None]
    float_latency = replay.latency_ms(ref_model, threads=threads) if measure_speed else None

    def measure(excluded: List[str]):
        model, summary = quantize_model(ref_model, amax, target="trt", exclude=list(exclude) + excluded)
        snr, cosine, agreement = worst_of(replay.score(model, threads=threads))
        value = {"snr_db": snr, "cosine": cosine, "top1_agreement": agreement}[metric_name]
        return model, snr, cosine, agreement, value

    steps: List[ExcludeStep] = []
    excluded: List[str] = []
    budget = defaults.AUTO_EXCLUDE_LOOKAHEAD * max(max_layers, 1) + 1
    progress(0, budget + 1)
    model, snr, cosine, agreement, value = measure(excluded)
    latency = replay.latency_ms(model, threads=threads) if measure_speed else None
    steps.append(ExcludeStep(0, None, [], snr, agreement, value, bool(value >= target), latency,
                             (float_latency / latency) if (latency and float_latency) else None, cosine=cosine))
    best_value, best_model = value, model
    pool = list(candidates)
    trials = 0
    tried_here: set = set()  # entries measured from the current model (reset when a step is kept)
    while trials < budget and not best_value >= target and len(excluded) < max_layers:
        # Measure the next few entries of the ranking from here and keep the one that helps most:
        # the ranking is one run's estimate, the measurement is the truth.
        batch = [e for e in pool if id(e) not in tried_here][:defaults.AUTO_EXCLUDE_LOOKAHEAD]
        if not batch:
            break
        measured = []
        for entry in batch:
            if trials >= budget:
                break
            trial = excluded + [n for n in entry.nodes() if n not in excluded]
            model, snr, cosine, agreement, value = measure(trial)
            trials += 1
            progress(trials + 1, budget + 1)
            step = ExcludeStep(len(steps), entry.layer, list(excluded), snr, agreement, value, False, None, None,
                               cosine=cosine, kept=False)
            steps.append(step)
            measured.append((entry, trial, model, value, step))
            tried_here.add(id(entry))
        helping = [m for m in measured if _helps(metric_name, m[3], best_value)]
        for *_, step in measured:
            step.helped = any(step is h[4] for h in helping)
        for entry, *_ in measured:  # what did not help from here goes to the back: it may once a worse one is gone
            if all(entry is not h[0] for h in helping):
                pool.remove(entry)
                pool.append(entry)
        if not helping:
            continue
        entry, trial, model, value, step = max(helping, key=lambda m: _nan_low(m[3]))
        pool.remove(entry)
        tried_here.clear()
        excluded, best_value, best_model = trial, value, model
        step.kept, step.excluded, step.met = True, list(trial), bool(value >= target)
        if measure_speed:
            step.latency_ms = replay.latency_ms(model, threads=threads)
            step.speedup = (float_latency / step.latency_ms) if (step.latency_ms and float_latency) else None
    progress(budget + 1, budget + 1)
    met = bool(best_value >= target)
    unit = " dB" if metric_name == "snr_db" else ""
    label = {"snr_db": "SNR", "cosine": "cosine", "top1_agreement": "top-1 agreement"}[metric_name]
    if met and not excluded:
        message = f"the fully quantized model already meets {label} >= {target:g}{unit} ({best_value:.4g}{unit})"
    elif met:
        message = (f"{label} {best_value:.4g}{unit} >= {target:g}{unit} with {len(excluded)} layer(s) "
                   f"left in float: {', '.join(excluded)}")
    else:
        message = (f"target {label} >= {target:g}{unit} not met: best {best_value:.4g}{unit} with "
                   f"{len(excluded)} layer(s) left in float after {len(steps) - 1} measured step(s)"
                   + (f" (--max-layers {max_layers} reached; raise it, or lower the target)"
                      if len(excluded) >= max_layers else
                      " (raise --max-layers, lower the target, or recalibrate with another --algo or more data)"))
    from ..graph.qdq import quantizable_layers

    result = AutoExcludeResult(metric_name, target, met, list(excluded), steps, replay.samples, max_layers,
                               float_latency, message=message, quantizable_layers=len(quantizable_layers(ref_model)))
    return result, best_model
