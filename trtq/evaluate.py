"""How close a quantized model stays to its float reference, on data calibration did not see.

Per output, over all evaluated samples:

- **cosine**: cosine similarity of the flattened reference and candidate outputs
  (all samples together); **cosine_min**: the lowest per-sample cosine.
- **snr_db**: ``10·log10(Σ ref² / Σ (ref − cand)²)``; ``inf`` when the outputs are identical.
- **max_abs_error** and **mean_abs_error**: of ``ref − cand``; **ref_abs_max** for scale.
- **top1/top5 agreement** when the output looks like class scores (see
  :func:`class_scores`): the fraction of samples whose reference top-1 class is the
  candidate's top-1 (top-5: is among the candidate's 5 highest scores; reported only
  for more than 5 classes, below that it is always 1).
- **accuracy** (with labels): true top-1 accuracy of both models on the first
  class-score output.

Everything streams: each batch updates running sums (float64) and is dropped, so
memory depends on the batch size, not the sample count. Layer sensitivity and
mixed-precision search re-run many model variants; they replay a fixed, small set of
samples (:data:`SENSITIVITY_SAMPLES`, kept in memory with the reference outputs).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import defaults
from .errors import DataError, ModelError, TrtqError
from .progress import ProgressCallback, no_progress

log = logging.getLogger(__name__)

PathLike = Union[str, Path]

#: Samples replayed for each layer in sensitivity analysis and each step of --auto-exclude.
SENSITIVITY_SAMPLES = defaults.SENSITIVITY_SAMPLES
#: Most layers --auto-exclude leaves in float before it gives up.
AUTO_EXCLUDE_MAX_LAYERS = defaults.AUTO_EXCLUDE_MAX_LAYERS
#: k of the "top-k agreement" reported next to top-1.
TOP_K = 5
#: Timed runs (after 2 warm-up runs) when --auto-exclude measures each step's speed at batch 1.
SPEED_ITERATIONS = 10

# ---------------------------------------------------------------------------------------------
# One-shot reference math (tests compare the streaming results against these)


def _cos(dot: float, ref2: float, cand2: float) -> float:
    if ref2 == 0.0 and cand2 == 0.0:
        return 1.0  # both all zeros: identical
    if ref2 == 0.0 or cand2 == 0.0:
        return 0.0
    return float(dot / math.sqrt(ref2 * cand2))


def _cos_rows(dot: np.ndarray, ref2: np.ndarray, cand2: np.ndarray) -> np.ndarray:
    """:func:`_cos` per row (vectorized, same zero conventions)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = dot / np.sqrt(ref2 * cand2)
    cos = np.where((ref2 == 0) | (cand2 == 0), 0.0, cos)
    return np.where((ref2 == 0) & (cand2 == 0), 1.0, cos)


def _snr(ref2: float, err2: float) -> float:
    if err2 == 0.0:
        return math.inf
    if ref2 == 0.0:
        return -math.inf
    return float(10.0 * math.log10(ref2 / err2))


def cosine_similarity(reference: np.ndarray, candidate: np.ndarray) -> float:
    """Cosine of the two arrays flattened (1.0 for two all-zero arrays, 0.0 if only one is)."""
    r = np.asarray(reference, dtype=np.float64).ravel()
    c = np.asarray(candidate, dtype=np.float64).ravel()
    return _cos(float(r @ c), float(r @ r), float(c @ c))


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """``10·log10(Σ ref² / Σ (ref − cand)²)`` in dB (``inf`` for identical arrays)."""
    r = np.asarray(reference, dtype=np.float64)
    e = r - np.asarray(candidate, dtype=np.float64)
    return _snr(float(np.sum(r * r)), float(np.sum(e * e)))


def max_abs_error(reference: np.ndarray, candidate: np.ndarray) -> float:
    diff = np.abs(np.asarray(reference, dtype=np.float64) - np.asarray(candidate, dtype=np.float64))
    return float(diff.max()) if diff.size else 0.0


def class_scores(output: np.ndarray) -> Optional[np.ndarray]:
    """The ``[N, C]`` view of an output that looks like class scores, else ``None``.

    Heuristic: a floating output that is 2-D ``[N, C]`` with ``C >= 2`` after
    dropping trailing size-1 axes (``[N, C, 1, 1]`` from a 1x1 conv head counts).
    Detection heads (``[N, 84, 8400]``), feature maps and embeddings of rank > 2 do not.
    Logits, probabilities and log-probabilities all work: only the order matters.
    """
    array = np.asarray(output)
    if array.dtype.kind != "f":
        return None
    while array.ndim > 2 and array.shape[-1] == 1:
        array = array.reshape(array.shape[:-1])
    if array.ndim == 2 and array.shape[1] >= 2:
        return array
    return None


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores per row (unordered), shape ``[N, min(k, C)]``."""
    k = min(k, scores.shape[1])
    return np.argpartition(-scores, k - 1, axis=1)[:, :k]


def topk_agreement(reference_scores: np.ndarray, candidate_scores: np.ndarray, k: int = 1) -> float:
    """Fraction of rows whose reference top-1 class is among the candidate's top ``k``."""
    ref_top1 = np.argmax(reference_scores, axis=1)
    if k == 1:
        return float(np.mean(np.argmax(candidate_scores, axis=1) == ref_top1))
    return float(np.mean(np.any(top_k(candidate_scores, k) == ref_top1[:, None], axis=1)))


def top1_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(scores, axis=1) == np.asarray(labels)))


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class OutputMetrics:
    """Fidelity of one output of the candidate against the reference."""

    name: str
    shape: List[Any]                        # per-batch shape seen first (batch axis first)
    samples: int
    cosine: float
    cosine_min: float                       # worst single sample
    snr_db: float
    max_abs_error: float
    mean_abs_error: float
    ref_abs_max: float                      # largest |reference| value, to read max_abs_error against
    classes: Optional[int] = None           # set when the output looks like class scores
    top1_agreement: Optional[float] = None
    top5_agreement: Optional[float] = None  # only for more than 5 classes

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Accuracy:
    """True top-1 accuracy of both models against labels, on one class-score output."""

    output: str
    labeled_samples: int
    reference_top1: float
    candidate_top1: float
    unlabeled_samples: int = 0

    @property
    def drop(self) -> float:
        return self.reference_top1 - self.candidate_top1


@dataclass
class LayerSensitivity:
    """Output fidelity when only ``layer`` is quantized (everything else float)."""

    layer: str
    op_type: str
    snr_db: Optional[float]                 # worst output's SNR; None when the layer could not be quantized alone
    cosine: Optional[float] = None          # worst output's cosine
    top1_agreement: Optional[float] = None  # first class-score output, if any
    note: str = ""


@dataclass
class ExcludeStep:
    """One step of the mixed-precision search: the model with ``excluded`` layers left in float."""

    step: int
    layer: Optional[str]                    # layer left in float at this step (None: the fully quantized start)
    excluded: List[str]
    snr_db: float                           # worst output
    top1_agreement: Optional[float]
    metric: float                           # the value compared with the target
    met: bool
    latency_ms: Optional[float] = None      # batch-1 median latency on ONNX Runtime (CPU form), when measured
    speedup: Optional[float] = None         # float-model latency / this latency


@dataclass
class AutoExcludeResult:
    target_metric: str                      # "snr_db" or "top1_agreement"
    target: float
    met: bool
    excluded: List[str]
    steps: List[ExcludeStep]
    samples: int
    max_layers: int
    float_latency_ms: Optional[float] = None
    output_path: Optional[str] = None
    message: str = ""


@dataclass
class EvalReport:
    reference: str
    candidate: str
    samples: int
    outputs: List[OutputMetrics]
    data: str = ""
    reference_precision: str = ""
    candidate_precision: str = ""
    batches: int = 0
    seconds: float = 0.0
    accuracy: Optional[Accuracy] = None
    sensitivity: Optional[List[LayerSensitivity]] = None
    sensitivity_samples: Optional[int] = None
    amax_source: str = ""
    auto_exclude: Optional[AutoExcludeResult] = None

    def worst_snr_db(self) -> float:
        return min((o.snr_db for o in self.outputs), default=math.nan)

    def to_dict(self) -> dict:
        """Plain data for JSON (non-finite floats are made JSON-safe by :func:`trtq.report.write_json`)."""
        data = asdict(self)
        if self.accuracy is not None:
            data["accuracy"]["drop"] = self.accuracy.drop
        data["worst_snr_db"] = self.worst_snr_db()
        return data


# ---------------------------------------------------------------------------------------------
# Streaming accumulation


class OutputAccumulator:
    """Running sums for one output; :meth:`metrics` gives the same numbers as the one-shot functions."""

    def __init__(self, name: str):
        self.name = name
        self.shape: Optional[List[Any]] = None
        self.samples = 0
        self.elements = 0
        self.ref2 = 0.0
        self.cand2 = 0.0
        self.dot = 0.0
        self.err2 = 0.0
        self.abs_err = 0.0
        self.max_abs = 0.0
        self.ref_abs_max = 0.0
        self.cos_min = math.inf
        self.classes: Optional[int] = None
        self.top1 = 0
        self.topk = 0
        self._scores: Optional[bool] = None

    def update(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        reference = np.asarray(reference)
        candidate = np.asarray(candidate)
        if reference.shape != candidate.shape:
            raise ModelError(f"output {self.name!r} has shape {list(candidate.shape)} in the candidate but "
                             f"{list(reference.shape)} in the reference; the models do not compute the same thing")
        if self.shape is None:
            self.shape = list(reference.shape)
        n = int(reference.shape[0]) if reference.ndim else 1
        r = reference.astype(np.float64, copy=False).reshape(n, -1)
        c = candidate.astype(np.float64, copy=False).reshape(n, -1)
        e = r - c
        ref2 = np.einsum("ij,ij->i", r, r)
        cand2 = np.einsum("ij,ij->i", c, c)
        dot = np.einsum("ij,ij->i", r, c)
        self.ref2 += float(ref2.sum())
        self.cand2 += float(cand2.sum())
        self.dot += float(dot.sum())
        self.err2 += float(np.einsum("ij,ij->", e, e))
        abs_e = np.abs(e)
        if abs_e.size:
            self.abs_err += float(abs_e.sum())
            self.max_abs = max(self.max_abs, float(abs_e.max()))
            self.ref_abs_max = max(self.ref_abs_max, float(np.abs(r).max()))
        if n:
            self.cos_min = min(self.cos_min, float(_cos_rows(dot, ref2, cand2).min()))
        self.samples += n
        self.elements += r.size
        self._update_scores(reference, candidate)

    def _update_scores(self, reference: np.ndarray, candidate: np.ndarray) -> None:
        ref_scores = class_scores(reference)
        if self._scores is None:
            self._scores = ref_scores is not None
            self.classes = int(ref_scores.shape[1]) if ref_scores is not None else None
        if not self._scores or ref_scores is None:
            return
        cand_scores = class_scores(candidate)
        ref_top1 = np.argmax(ref_scores, axis=1)
        self.top1 += int(np.sum(np.argmax(cand_scores, axis=1) == ref_top1))
        if self.classes > TOP_K:
            self.topk += int(np.sum(np.any(top_k(cand_scores, TOP_K) == ref_top1[:, None], axis=1)))

    @property
    def is_scores(self) -> bool:
        return bool(self._scores)

    def metrics(self) -> OutputMetrics:
        n = self.samples
        return OutputMetrics(
            name=self.name,
            shape=self.shape or [],
            samples=n,
            cosine=_cos(self.dot, self.ref2, self.cand2),
            cosine_min=self.cos_min if n else math.nan,
            snr_db=_snr(self.ref2, self.err2) if n else math.nan,
            max_abs_error=self.max_abs,
            mean_abs_error=self.abs_err / self.elements if self.elements else math.nan,
            ref_abs_max=self.ref_abs_max,
            classes=self.classes,
            top1_agreement=self.top1 / n if self.is_scores and n else None,
            top5_agreement=self.topk / n if self.is_scores and n and self.classes > TOP_K else None,
        )


class AccuracyAccumulator:
    """Top-1 hits of both models on labeled samples (label < 0 or None: unlabeled, not counted)."""

    def __init__(self, output: str):
        self.output = output
        self.labeled = 0
        self.unlabeled = 0
        self.ref_hits = 0
        self.cand_hits = 0

    def update(self, reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray) -> None:
        ref_scores, cand_scores = class_scores(reference), class_scores(candidate)
        labels = np.asarray(labels, dtype=np.int64)
        known = labels >= 0
        self.unlabeled += int(np.sum(~known))
        if not known.any():
            return
        if labels[known].max() >= ref_scores.shape[1]:
            raise DataError(f"label {int(labels[known].max())} is out of range for output {self.output!r} "
                            f"with {ref_scores.shape[1]} classes; labels must be 0-based class indices")
        self.labeled += int(known.sum())
        self.ref_hits += int(np.sum(np.argmax(ref_scores[known], axis=1) == labels[known]))
        self.cand_hits += int(np.sum(np.argmax(cand_scores[known], axis=1) == labels[known]))

    def result(self) -> Optional[Accuracy]:
        if not self.labeled:
            return None
        return Accuracy(self.output, self.labeled, self.ref_hits / self.labeled, self.cand_hits / self.labeled,
                        self.unlabeled)


def compare_outputs(pairs: Iterable[Tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]]],
                    names: Optional[Sequence[str]] = None) -> List[OutputMetrics]:
    """Metrics for an iterable of ``(reference outputs, candidate outputs)`` batches, streamed."""
    accumulators: Dict[str, OutputAccumulator] = {}
    for ref, cand in pairs:
        for name in names or list(ref):
            accumulators.setdefault(name, OutputAccumulator(name)).update(ref[name], cand[name])
    return [acc.metrics() for acc in accumulators.values()]


# ---------------------------------------------------------------------------------------------
# Models and data


def _load(model: Union[PathLike, Any]):
    """(ModelProto, display name) for a path or an in-memory model."""
    from .graph.model import load_onnx

    if hasattr(model, "graph"):
        return model, (model.graph.name or "in-memory model")
    return load_onnx(model), Path(model).name


def _eval_spec(data):
    """A DataSpec for evaluation: file order (no shuffle); a bare path means all samples."""
    from .data.spec import DataSpec

    if isinstance(data, DataSpec):
        return replace(data, shuffle=False)
    return DataSpec(path=str(data), samples=None, shuffle=False)


def _check_same_io(ref_session, cand_session, ref_name: str, cand_name: str) -> Dict[str, str]:
    """Candidate output name for each reference output (by name, else by position)."""
    from .ort import input_names, output_names

    if sorted(input_names(ref_session)) != sorted(input_names(cand_session)):
        raise ModelError(f"{cand_name} has inputs {input_names(cand_session)}, {ref_name} has "
                         f"{input_names(ref_session)}; compare a model with its own quantized version")
    ref_out, cand_out = output_names(ref_session), output_names(cand_session)
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
            from .data import load_labels

            self.path = str(labels)
            ids = source.sample_ids() if hasattr(source, "sample_ids") else None
            self.order = source.all_ids() if hasattr(source, "all_ids") else None
            if ids is not None:  # file-backed sources know their ids up front: read the label file once
                self.ordered = load_labels(self.path, ids, order=self.order)
        else:
            self.ordered = np.asarray(labels, dtype=np.int64).ravel()

    def batch(self, ids: Optional[List[str]], offset: int, count: int) -> np.ndarray:
        if self.ordered is None:  # a loader script: ids are known batch by batch
            from .data import load_labels

            if ids is None:
                raise DataError("this data source does not name its samples; give labels in sample order")
            return load_labels(self.path, ids, order=self.order)
        chunk = self.ordered[offset:offset + count]
        if chunk.size < count:
            raise DataError(f"{count + offset} samples evaluated but only {self.ordered.size} labels given; "
                            "give one label per sample")
        return chunk


def _batches_with_ids(source) -> Iterable[Tuple[Optional[List[str]], Dict[str, np.ndarray]]]:
    if hasattr(source, "iter_with_ids"):
        yield from source.iter_with_ids()
        return
    from .ort import batch_inputs

    for item in source:
        yield None, batch_inputs(item)


def evaluate(
    reference: Union[PathLike, Any],
    candidate: Union[PathLike, Any],
    data,
    *,
    labels=None,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> EvalReport:
    """Compare ``candidate`` (e.g. the INT8 Q/DQ model) with ``reference`` (the float model) on ``data``.

    ``reference``/``candidate``: ONNX paths or ``onnx.ModelProto``. ``data``: a
    :class:`~trtq.data.spec.DataSpec` or a path (then every sample, in file order).
    ``labels``: a label file (see :func:`trtq.data.load_labels`: ``id,label`` rows or
    one label per sample) or a sequence of class indices in sample order; adds true
    top-1 accuracy of both models on the first class-score output. Runs both models with ONNX Runtime on the CPU;
    a ``candidate`` that is a TensorRT engine (``.engine``/``.plan``) runs on the GPU through trtq.backend.
    """
    from .bench import infer_precision, is_engine_path
    from .data import open_source
    from .graph.model import input_specs
    from .ort import create_session, run

    progress = progress or no_progress
    started = time.perf_counter()
    ref_model, ref_name = _load(reference)
    ref_session = create_session(ref_model, threads=threads)
    if not hasattr(candidate, "graph") and is_engine_path(candidate):  # a TensorRT engine: trtq.backend runs it
        from .backend.bench import engine_precision
        from .backend.runner import EngineSession

        cand_name, cand_precision, cand_session = Path(candidate).name, engine_precision(candidate), \
            EngineSession(candidate)
    else:
        cand_model, cand_name = _load(candidate)
        cand_session = create_session(cand_model, threads=threads)
        cand_precision = infer_precision(cand_model)
    output_map = _check_same_io(ref_session, cand_session, ref_name, cand_name)
    spec = _eval_spec(data)
    source = open_source(spec, input_specs(ref_model))
    total = getattr(source, "num_samples", None)
    label_lookup = _Labels(labels, source) if labels is not None else None

    accumulators = {name: OutputAccumulator(name) for name in output_map}
    accuracy: Optional[AccuracyAccumulator] = None
    done = batches = 0
    progress(0, total)
    for ids, feed in _batches_with_ids(source):
        ref_out = run(ref_session, feed)
        cand_out = run(cand_session, feed, list(output_map.values()))
        for name, cand_key in output_map.items():
            accumulators[name].update(ref_out[name], cand_out[cand_key])
        count = int(next(iter(ref_out.values())).shape[0])
        if label_lookup is not None:
            if accuracy is None:
                scored = [n for n, acc in accumulators.items() if acc.is_scores]
                if not scored:
                    raise DataError("labels were given but no model output looks like class scores "
                                    "([N, C] with C >= 2); accuracy needs a classifier")
                accuracy = AccuracyAccumulator(scored[0])
            accuracy.update(ref_out[accuracy.output], cand_out[output_map[accuracy.output]],
                            label_lookup.batch(ids, done, count))
        done += count
        batches += 1
        progress(done, total)
    if not done:
        raise DataError(f"{getattr(source, 'description', spec.path)}: no samples to evaluate")
    return EvalReport(
        reference=ref_name,
        candidate=cand_name,
        samples=done,
        batches=batches,
        outputs=[acc.metrics() for acc in accumulators.values()],
        data=str(getattr(source, "description", spec.path)),
        reference_precision=infer_precision(ref_model),
        candidate_precision=cand_precision,
        seconds=time.perf_counter() - started,
        accuracy=accuracy.result() if accuracy is not None else None,
    )


# ---------------------------------------------------------------------------------------------
# Scales for re-quantizing: from a calibration cache, or read back from a Q/DQ model


def amax_from_qdq(model) -> Dict[str, float]:
    """amax per activation tensor, read back from a Q/DQ model's QuantizeLinear nodes (scale × 127).

    Only activations (QuantizeLinear inputs that are not initializers) with a scalar
    scale are returned; weights are re-quantized from the float weights anyway.
    """
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    constants = {}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value":
                    constants[node.output[0]] = numpy_helper.to_array(attr.t)
    amax: Dict[str, float] = {}
    for node in model.graph.node:
        if node.op_type != "QuantizeLinear" or len(node.input) < 2 or node.input[0] in initializers:
            continue
        scale_name = node.input[1]
        if scale_name in initializers:
            scale = numpy_helper.to_array(initializers[scale_name])
        elif scale_name in constants:
            scale = constants[scale_name]
        else:
            continue
        if np.size(scale) != 1:
            continue
        amax[node.input[0]] = float(np.float32(np.asarray(scale).reshape(())) * np.float32(127.0))
    return amax


def qdq_form(model) -> str:
    """``"cpu"`` when activation zero points are uint8 (trtq's ONNX Runtime form), else ``"trt"``."""
    from onnx import TensorProto

    initializers = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in initializers:
            if initializers[node.input[2]].data_type == TensorProto.UINT8:
                return "cpu"
    return "trt"


def resolve_amax(reference, candidate=None, cache: Optional[PathLike] = None, force: bool = False
                 ) -> Tuple[Dict[str, float], str]:
    """amax for re-quantizing ``reference``: from ``cache`` (checked against the model) or the candidate's Q/DQ.

    Returns ``(amax, where it came from)``. Raises :class:`~trtq.errors.TrtqError`
    when neither gives any scale.
    """
    ref_model, ref_name = _load(reference)
    if cache is not None:
        from .cache import check_cache_matches, read_cache
        from .graph.model import file_sha256, model_sha256
        from .graph.qdq import tensor_names

        table = read_cache(cache)
        digest = file_sha256(reference) if not hasattr(reference, "graph") else model_sha256(ref_model)
        check_cache_matches(table, ref_model, digest, tensor_names(ref_model), force=force)
        return table.amax, f"calibration cache {Path(cache).name}"
    if candidate is not None:
        cand_model, cand_name = _load(candidate)
        amax = amax_from_qdq(cand_model)
        if amax:
            return amax, f"Q/DQ scales of {cand_name}"
    raise TrtqError("sensitivity analysis and --auto-exclude re-quantize the float model layer by layer and need its "
                    "scales: give the calibration cache with --cache CACHE (or a Q/DQ candidate model to read "
                    "them from)")


# ---------------------------------------------------------------------------------------------
# Replay set for sensitivity and mixed precision


@dataclass
class Replay:
    """A fixed set of input batches with the reference model's outputs, kept in memory."""

    feeds: List[Dict[str, np.ndarray]]
    outputs: List[Dict[str, np.ndarray]]
    samples: int

    @classmethod
    def collect(cls, reference, data, *, samples: int = SENSITIVITY_SAMPLES, threads: Optional[int] = None
                ) -> "Replay":
        from .data import open_source
        from .graph.model import input_specs
        from .ort import batch_inputs, create_session, run

        ref_model, _ = _load(reference)
        spec = replace(_eval_spec(data), samples=samples, shuffle=False)
        source = open_source(spec, input_specs(ref_model))
        session = create_session(ref_model, threads=threads)
        feeds, outputs, count = [], [], 0
        for item in source:
            feed = {k: np.asarray(v) for k, v in batch_inputs(item).items()}
            n = len(next(iter(feed.values())))
            if count + n > samples:
                feed = {k: v[:samples - count] for k, v in feed.items()}
                n = samples - count
            feeds.append(feed)
            outputs.append(run(session, feed))
            count += n
            if count >= samples:
                break
        if not count:
            raise DataError(f"{getattr(source, 'description', spec.path)}: no samples for sensitivity analysis")
        return cls(feeds, outputs, count)

    def score(self, model, *, threads: Optional[int] = None) -> List[OutputMetrics]:
        """Output metrics of ``model`` (ModelProto or path) against the stored reference outputs."""
        from .ort import create_session, run

        session = create_session(model, threads=threads)
        names = list(self.outputs[0])
        return compare_outputs(((ref, run(session, feed, names)) for feed, ref in zip(self.feeds, self.outputs)), names)

    def latency_ms(self, model, *, threads: Optional[int] = None, iterations: int = SPEED_ITERATIONS) -> float:
        """Median batch-1 latency (ms) of ``model`` on the first sample (2 warm-up runs)."""
        from .bench import time_session
        from .ort import as_feed, create_session

        session = create_session(model, threads=threads)
        feed = as_feed(session, {k: v[:1] for k, v in self.feeds[0].items()})
        return float(np.median(time_session(session, feed, iterations, 2)))


def _worst(metrics: Sequence[OutputMetrics]) -> Tuple[float, float, Optional[float]]:
    """(worst SNR, worst cosine, top-1 agreement of the first class-score output)."""
    snr = min((m.snr_db for m in metrics), key=lambda v: -math.inf if math.isnan(v) else v)
    cosine = min(m.cosine for m in metrics)
    agreement = next((m.top1_agreement for m in metrics if m.top1_agreement is not None), None)
    return snr, cosine, agreement


def _op_types(model) -> Dict[str, str]:
    from .graph.qdq import node_names

    return dict(zip(node_names(model), (n.op_type for n in model.graph.node)))


def layer_sensitivity(
    reference,
    amax: Mapping[str, float],
    data=None,
    *,
    replay: Optional[Replay] = None,
    layers: Optional[Sequence[str]] = None,
    samples: int = SENSITIVITY_SAMPLES,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> List[LayerSensitivity]:
    """Output SNR with only one layer quantized, for every quantizable layer; worst first.

    ``reference``: the float model; ``amax``: its activation scales (a calibration
    cache's, or :func:`amax_from_qdq` of the candidate). Replays the first
    ``samples`` samples of ``data`` (or a ready ``replay``).
    Each variant is the ONNX Runtime (``target="cpu"``) form: same numerics as the TensorRT form.
    """
    from .graph.qdq import quantizable_layers, quantize_model

    progress = progress or no_progress
    ref_model, _ = _load(reference)
    replay = replay or Replay.collect(ref_model, data, samples=samples, threads=threads)
    names = list(layers) if layers is not None else quantizable_layers(ref_model)
    ops = _op_types(ref_model)
    results: List[LayerSensitivity] = []
    progress(0, len(names))
    for index, layer in enumerate(names):
        quantized, summary = quantize_model(ref_model, amax, target="cpu", include_only=[layer])
        if layer not in summary.quantized:
            why = summary.excluded.get(layer) or ("no amax for its input" if summary.missing_amax else "not quantizable")
            results.append(LayerSensitivity(layer, ops.get(layer, "?"), None, note=f"not quantized alone: {why}"))
        else:
            snr, cosine, agreement = _worst(replay.score(quantized, threads=threads))
            results.append(LayerSensitivity(layer, ops.get(layer, "?"), snr, cosine, agreement))
        progress(index + 1, len(names))
    return sort_sensitivity(results)


def sort_sensitivity(results: Iterable[LayerSensitivity]) -> List[LayerSensitivity]:
    """Worst (lowest SNR, NaN first) first; layers that could not be measured last."""
    def key(r: LayerSensitivity):
        if r.snr_db is None:
            return (1, 0.0)
        return (0, -math.inf if math.isnan(r.snr_db) else r.snr_db)

    return sorted(results, key=key)


def auto_exclude(
    reference,
    amax: Mapping[str, float],
    data=None,
    *,
    target_snr: Optional[float] = None,
    target_agreement: Optional[float] = None,
    max_layers: int = AUTO_EXCLUDE_MAX_LAYERS,
    ranking: Optional[Sequence[LayerSensitivity]] = None,
    replay: Optional[Replay] = None,
    samples: int = SENSITIVITY_SAMPLES,
    measure_speed: bool = True,
    threads: Optional[int] = None,
    progress: Optional[ProgressCallback] = None,
) -> Tuple[AutoExcludeResult, Optional[Any]]:
    """Leave the most sensitive layers in float, one at a time, until the target is met.

    Starts from the fully quantized model; each step adds the next layer of the
    sensitivity ranking (computed when not given) to the exclusions and re-measures
    on the replay samples. Stops when the target (``target_snr`` in dB on the worst
    output, or ``target_agreement``, top-1 agreement on the class-score output) is
    met or after ``max_layers`` layers. Returns ``(result, the Q/DQ model of the last
    step in ONNX Runtime form or None)``; re-quantize with ``exclude=result.excluded``
    for the TensorRT form.
    """
    from .graph.qdq import quantize_model

    if (target_snr is None) == (target_agreement is None):
        raise TrtqError("give exactly one target: --target-snr DB or --target-agreement FRACTION")
    if target_agreement is not None and not 0.0 < target_agreement <= 1.0:
        raise TrtqError(f"--target-agreement is a fraction in (0, 1], got {target_agreement}")
    if max_layers < 0:
        raise TrtqError(f"--max-layers must be 0 or more, got {max_layers}")
    progress = progress or no_progress
    ref_model, _ = _load(reference)
    replay = replay or Replay.collect(ref_model, data, samples=samples, threads=threads)
    metric_name = "snr_db" if target_snr is not None else "top1_agreement"
    target = float(target_snr if target_snr is not None else target_agreement)
    if ranking is None:
        ranking = layer_sensitivity(ref_model, amax, replay=replay, threads=threads)
    candidates = [r.layer for r in ranking if r.snr_db is not None][:max_layers]
    float_latency = replay.latency_ms(ref_model, threads=threads) if measure_speed else None

    steps: List[ExcludeStep] = []
    excluded: List[str] = []
    model = None
    plan: List[Optional[str]] = [None] + candidates
    progress(0, len(plan))
    for index, layer in enumerate(plan):
        if layer is not None:
            excluded.append(layer)
        model, summary = quantize_model(ref_model, amax, target="cpu", exclude=list(excluded))
        if not summary.quantized:
            log.info("step %d: nothing left quantized", index)
        snr, _, agreement = _worst(replay.score(model, threads=threads))
        if metric_name == "top1_agreement" and agreement is None:
            raise TrtqError("--target-agreement needs an output that looks like class scores ([N, C] with C >= 2); "
                            "this model has none: use --target-snr")
        value = snr if metric_name == "snr_db" else agreement
        latency = replay.latency_ms(model, threads=threads) if measure_speed else None
        met = bool(value >= target)
        steps.append(ExcludeStep(index, layer, list(excluded), snr, agreement, value, met, latency,
                                 (float_latency / latency) if (latency and float_latency) else None))
        progress(index + 1, len(plan))
        if met:
            break
    met = steps[-1].met
    unit = " dB" if metric_name == "snr_db" else ""
    label = "SNR" if metric_name == "snr_db" else "top-1 agreement"
    if met and not excluded:
        message = f"the fully quantized model already meets {label} >= {target:g}{unit} ({steps[-1].metric:.4g}{unit})"
    elif met:
        message = (f"{label} {steps[-1].metric:.4g}{unit} >= {target:g}{unit} with {len(excluded)} layer(s) "
                   f"left in float: {', '.join(excluded)}")
    else:
        best = max(steps, key=lambda s: -math.inf if math.isnan(s.metric) else s.metric)
        tried = len(candidates)
        message = (f"target {label} >= {target:g}{unit} not met: best {best.metric:.4g}{unit} after leaving "
                   f"{len(best.excluded)} of {tried} tried layer(s) in float"
                   + (f" (--max-layers {max_layers} reached; raise it, or lower the target)" if tried == max_layers
                      else " (no more quantized layers to leave in float; lower the target or recalibrate)"))
    result = AutoExcludeResult(metric_name, target, met, list(excluded), steps, replay.samples, max_layers,
                               float_latency, message=message)
    return result, model
