"""The evaluate flow: run a reference and a candidate (ONNX model or engine) on held-back data and compare."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..compare.accumulate import AccuracyAccumulator, OutputAccumulator, padding_mask
from ..compare.decisions import ClassOutputs, _class_spec, _resolve_axis, class_axes, default_class_axis
from ..compare.metrics import class_scores
from ..compare.struct import Fidelity, MetricScore
from ..compare.usermetric import UserMetric
from ..compare.verdict import EvalReport
from ..data.spec import evaluation_spec
from ..errors import DataError, ModelError, TrtqError
from ..graph.model import model_and_name
from ..graph.qdq import amax_from_qdq
from ..progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)
PathLike = Union[str, Path]


def _check_same_io(ref, cand) -> Dict[str, str]:
    """Candidate output name for each reference output (by name, else by position); ``ref`` and ``cand`` are
    :class:`~trtq.runtime.base.Runtime` objects."""
    ref_name, cand_name = ref.name, cand.name
    ref_in, cand_in = list(ref.input_metadata()), list(cand.input_metadata())
    if sorted(ref_in) != sorted(cand_in):
        raise ModelError(f"{cand_name} has inputs {cand_in}, {ref_name} has "
                         f"{ref_in}; compare a model with its own quantized version")
    ref_out, cand_out = ref.output_names(), cand.output_names()
    if set(ref_out) <= set(cand_out):
        return {name: name for name in ref_out}
    if len(ref_out) == len(cand_out):
        log.warning("output names differ (%s vs %s); matching them by position", ref_out, cand_out)
        return dict(zip(ref_out, cand_out))
    raise ModelError(f"{cand_name} has outputs {cand_out}, {ref_name} has {ref_out}; they cannot be matched")


class _Labels:
    """Labels per batch: a label file (``trtq.data.load_labels``) or class indices in sample order."""

    def __init__(self, labels, source):
        self.path: Optional[str] = None
        self.ordered: Optional[np.ndarray] = None
        self.order = None
        if isinstance(labels, (str, Path)):
            from ..data import load_labels

            self.path = str(labels)
            ids = source.sample_ids() if hasattr(source, "sample_ids") else None
            self.order = source.all_ids() if hasattr(source, "all_ids") else None
            if ids is not None:  # file-backed sources know their ids up front: read the label file once
                self.ordered = load_labels(self.path, ids, order=self.order)
        else:
            self.ordered = np.asarray(labels, dtype=np.int64).ravel()

    def batch(self, ids: Optional[List[str]], offset: int, count: int) -> np.ndarray:
        if self.ordered is None:  # a loader script: ids are known batch by batch
            from ..data import load_labels

            if ids is None:
                raise DataError("this data source does not name its samples; give labels in sample order")
            return load_labels(self.path, ids, order=self.order)
        chunk = self.ordered[offset:offset + count]
        if chunk.size < count:
            raise DataError(f"{count + offset} samples evaluated but only {self.ordered.size} labels given; "
                            "give one label per sample")
        return chunk


def _scored_outputs(outputs: Mapping[str, np.ndarray], names: Sequence[str], axes: Mapping[str, Optional[int]],
                    declared: Mapping[str, Optional[int]], labelled: bool) -> Dict[str, Optional[int]]:
    """Outputs judged along a class axis: the graph's and the declared ones, plus the first ``[N, C]`` output
    when labels are given. A declared output must have that axis with 2 or more classes."""
    for name, axis in declared.items():
        shape = np.shape(outputs[name])
        resolved = _resolve_axis(axis, len(shape)) if axis is not None else default_class_axis(outputs[name])
        if resolved is None or shape[resolved] < 2:
            raise TrtqError(f"--class-output {name}{'' if axis is None else f':{axis}'}: output {name!r} has shape "
                            f"{list(shape)}; a class axis (not the batch axis) with 2 or more classes is needed "
                            "(NAME:AXIS picks the axis)")
    chosen = dict(axes)
    if labelled and not any(class_scores(outputs[n]) is not None for n in chosen):
        first = [n for n in names if class_scores(outputs[n]) is not None][:1]
        chosen.update({n: None for n in first})
    return chosen


def _batches_with_ids(source) -> Iterable[Tuple[Optional[List[str]], Dict[str, np.ndarray]]]:
    if hasattr(source, "iter_with_ids"):
        yield from source.iter_with_ids()
        return
    from ..ort import batch_inputs

    for item in source:
        yield None, batch_inputs(item)


def evaluate(
    reference: Union[PathLike, Any],
    candidate: Union[PathLike, Any],
    data,
    *,
    labels=None,
    class_outputs: Optional[ClassOutputs] = None,
    metric: Optional[UserMetric] = None,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
    plugins: Sequence[PathLike] = (),
    dla_core: Optional[int] = None,
) -> EvalReport:
    """Compare ``candidate`` (e.g. the INT8 Q/DQ model) with ``reference`` (the float model) on ``data``.

    ``reference``/``candidate``: ONNX paths or ``onnx.ModelProto``. ``data``: a
    :class:`~trtq.data.spec.DataSpec` or a path (then every sample, in file order).
    ``labels``: a label file (see :func:`trtq.data.load_labels`: ``id,label`` rows or
    one label per sample) or a sequence of class indices in sample order; adds true
    top-1 accuracy of both models on the first class-score output. ``class_outputs``:
    outputs that are class scores (names or ``NAME:AXIS``, any rank: top-1 agreement per
    position and per sample), beside those the graph marks (:func:`decision_axes`) and,
    with ``labels``, the first ``[N, C]`` output. ``metric``: the user's own
    (:class:`UserMetric`), reported and judged by the verdict. Runs both models with ONNX
    Runtime on the CPU; a ``candidate`` that is a TensorRT engine (``.engine``/``.plan``) runs
    on the GPU through trtq.backend (``plugins``: the plugin libraries it needs; ``dla_core``: the DLA core
    a DLA engine runs on, default the one its build report names).
    """
    # Long because the reference and candidate runs share one loop over the data (engines and ONNX models
    # alike) with labels, accumulators and progress.
    from ..data import open_source
    from ..graph.batch import feed_samples
    from ..graph.signature import read_signature
    from ..runtime.base import OnnxRuntime, open_runtime

    progress = progress or no_progress
    started = time.perf_counter()
    ref_model, ref_name = model_and_name(reference)
    spec = evaluation_spec(data)
    signature = read_signature(ref_model, spec.batch_axes)
    ref_rt = OnnxRuntime(ref_model, threads=threads, name=ref_name)
    cand_rt = open_runtime(candidate, reference=ref_model, threads=threads, plugins=plugins, dla_core=dla_core,
                           batch_axes=signature.batch_axes())
    output_map = _check_same_io(ref_rt, cand_rt)
    source = open_source(spec, list(signature.inputs))
    out_axes = signature.output_axes()
    state = set(signature.state_outputs())  # fed back, not a decision: never judged
    output_map = {k: v for k, v in output_map.items() if k not in state} or output_map
    total = getattr(source, "num_samples", None)
    label_lookup = _Labels(labels, source) if labels is not None else None

    axes, sources = _class_spec(ref_model, class_outputs)
    declared = class_axes(class_outputs)
    unknown = sorted(set(declared) - set(output_map))
    if unknown:
        raise TrtqError(f"--class-output {', '.join(unknown)}: no such output; the model's outputs are "
                        f"{', '.join(output_map)}")
    axes = {k: v for k, v in axes.items() if k in output_map}
    accumulators: Dict[str, OutputAccumulator] = {}
    accuracy: Optional[AccuracyAccumulator] = None
    metric_values: List[np.ndarray] = []
    done = batches = 0
    progress(0, total)
    for ids, feed in _batches_with_ids(source):
        ref_out = ref_rt.infer(feed)
        cand_out = cand_rt.infer(feed, list(output_map.values()))
        if not accumulators:
            scored = _scored_outputs(ref_out, list(output_map), axes, declared, labels is not None)
            features, masks, groups = signature.feature_axes(), signature.mask_axes(), signature.group_axes()
            accumulators = {name: OutputAccumulator(name, scores=name in scored, class_axis=scored.get(name),
                                                    class_source=sources.get(name, "labels"),
                                                    channels=features.get(name, -1) is not None,
                                                    channel_axis=features.get(name),
                                                    mask_axis=None if name in scored else masks.get(name),
                                                    group_axes=groups.get(name))
                            for name in output_map}
        valid = padding_mask(feed)
        for name, cand_key in output_map.items():  # samples first (an LSTM state output is [layers, N, hidden])
            axis = out_axes.get(name, 0)
            ref, cand = ref_out[name], cand_out[cand_key]
            if axis and np.ndim(ref) > axis and np.ndim(cand) > axis:
                ref, cand = np.moveaxis(ref, axis, 0), np.moveaxis(cand, axis, 0)
            accumulators[name].update(ref, cand, valid)
        if metric is not None:
            metric_values.append(metric({n: ref_out[n] for n in output_map},
                                        {n: cand_out[k] for n, k in output_map.items()}, feed))
        count = len(ids) if ids is not None else feed_samples(feed, source.inputs)
        if label_lookup is not None:
            if accuracy is None:
                scored = [n for n, acc in accumulators.items() if acc.is_scores and class_scores(ref_out[n]) is not None]
                if not scored:
                    raise DataError("labels were given but no model output looks like class scores "
                                    "([N, C] with C >= 2); accuracy needs a classifier")
                accuracy = AccuracyAccumulator(scored[0])
            accuracy.update(ref_out[accuracy.output], cand_out[output_map[accuracy.output]],
                            label_lookup.batch(ids, done, count))
        done += count
        batches += 1
        progress(done, total)
    ref_rt.deactivate()
    cand_rt.deactivate()  # an engine's device memory, freed before the report is made
    if not done:
        raise DataError(f"{getattr(source, 'description', spec.path)}: no samples to evaluate")
    fidelity = Fidelity(acc.metrics() for acc in accumulators.values())
    if metric is not None:
        per_sample = np.concatenate(metric_values)
        fidelity.metric = MetricScore(metric.name, float(per_sample.mean()), int(per_sample.size), per_sample)
    return EvalReport(
        reference=ref_name,
        candidate=cand_rt.name,
        samples=done,
        batches=batches,
        outputs=fidelity,
        data=str(getattr(source, "description", spec.path)) + "".join(
            f"; state output {p.output!r} (fed back as {p.input!r}) not judged" for p in signature.pairs),
        reference_precision=ref_rt.precision,
        candidate_precision=cand_rt.precision,
        seconds=time.perf_counter() - started,
        accuracy=accuracy.result() if accuracy is not None else None,
    )


def resolve_amax(reference, candidate=None, cache: Optional[PathLike] = None, force: bool = False
                 ) -> Tuple[Dict[str, float], str, object]:
    """amax for re-quantizing ``reference``: from ``cache`` (checked against the model) or the candidate's Q/DQ.

    Returns ``(amax, where it came from, the model to re-quantize)``: ``reference``, or the ``--equalize``
    rewrite of it that ``cache`` was calibrated on (judged against ``reference``'s float outputs, as calibration
    judged it). Raises :class:`~trtq.errors.TrtqError` when neither gives any scale.
    """
    ref_model, ref_name = model_and_name(reference)
    if cache is not None:
        from ..cache import check_cache_matches, read_cache
        from ..graph.model import model_sha256
        from ..graph.qdq import tensor_names

        table = read_cache(cache)
        requantized = reference
        if hasattr(reference, "graph"):
            digest = model_sha256(ref_model)
        else:
            from ..cache import model_of_cache

            path, ref_model, digest = model_of_cache(table, reference, ref_model, cache)
            requantized = reference if path == Path(reference) else path
        check_cache_matches(table, ref_model, digest, tensor_names(ref_model), force=force)
        source = f"calibration cache {Path(cache).name}"
        if requantized is not reference:
            source += f" (of {Path(requantized).name}, re-quantized in its place)"
        return table.amax, source, requantized
    if candidate is not None:
        cand_model, cand_name = model_and_name(candidate)
        amax = amax_from_qdq(cand_model)
        if amax:
            return amax, f"Q/DQ scales of {cand_name}", reference
    raise TrtqError("sensitivity analysis and --auto-exclude re-quantize the float model layer by layer and need its "
                    "scales: give the calibration cache with --cache CACHE (or a Q/DQ candidate model to read "
                    "them from)")
