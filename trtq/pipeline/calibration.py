"""The calibrate flow: statistics -> amax per algorithm -> choice -> verdict -> cache and sidecar."""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import defaults
from ..backend import default_trt_version
from ..errors import TrtqError
from ..graph.model import model_reads
from ..precision.targets import FidelityTarget, mixed_precision_record, reach_target
from ..progress import ProgressCallback, no_progress
from ..runtime.streaming import feedback_pairs
from .choose import AutoChoice, Ranking, choose_amax, every_tensor, rank_tables, refine, score
from .equalizing import (  # noqa: F401  (their home is equalizing; imported from here too)
    TRIAL, EqualizeTrial, Outcome, channel_statistics, default_equalized_path, equalize_mode, equalize_model,
    run_trial, trial_variants)
from .holdout import (_take_samples, budget_check_count, budget_check_needs, holdout_count, holdout_reserve,
                      split_holdout)

log = logging.getLogger(__name__)
PathLike = Union[str, Path]
Feed = Dict[str, np.ndarray]


#: How a streamed verdict names what it measured (the steps of held-back sequences, each model with its own state).
STREAMED_FORM = "TensorRT Q/DQ form, streamed with its own state fed back"


#: How a model with state pairs was calibrated and judged (said in the log, recorded in the sidecar).
STREAMED, PER_CALL = "streamed", "per call"


def state_pairs(model, feedback: Sequence, spec) -> Tuple[list, str]:
    """The state pairs a calibration streams, and how it runs them: ``--feedback``'s (streamed), else the
    graph's (:mod:`trtq.graph.signature`): streamed when the data are sequences, per call when every input,
    state included, is given per sample (state outputs are then not judged). ``("", [])``-like without any."""
    pairs = feedback_pairs(model, feedback)
    if pairs:
        return pairs, STREAMED
    from ..graph.signature import describe_signature, read_signature
    from ..runtime.streaming import FeedbackPair, is_sequence_data

    signature = read_signature(model, spec.batch_axes)
    if not signature.pairs:
        return [], ""
    found = [FeedbackPair(p.output, p.input) for p in signature.pairs]
    listing = ", ".join(p.text() for p in found)
    if is_sequence_data(spec, signature.inputs, found):
        log.info("state pairs from the graph (%s): the data are sequences, streamed with the state fed back "
                 "(as --feedback %s)", describe_signature(signature), " --feedback ".join(p.text() for p in found))
        return found, STREAMED
    log.info("state pairs from the graph (%s): the data give the state per sample, so each call is judged "
             "with the recorded state and state outputs do not rank or gate; give sequences (or --feedback "
             "%s) to stream them", listing, listing)
    return [], PER_CALL


def reference_replay(model, feeds: Sequence[Feed], threads: Optional[int] = None, class_outputs=None,
                     metric=None, specs: Optional[Sequence] = None, signature=None):
    """A :class:`trtq.runtime.replay.Replay` of ``feeds`` with the float model's outputs (the verdict's reference).

    Its class outputs are the graph's own (:func:`trtq.compare.decisions.decision_axes`) and the
    declared ``class_outputs``; ``metric`` is the user's (:class:`trtq.compare.usermetric.UserMetric`);
    ``specs`` (the model's inputs, default from the model) say which axis counts the samples;
    ``signature`` (default: the model's, :mod:`trtq.graph.signature`) what each output decides
    (state outputs are not judged).
    """
    from ..compare.decisions import _class_spec
    from ..graph.batch import feed_samples
    from ..graph.signature import read_signature
    from ..ort import create_session, run
    from ..runtime.replay import Replay, signature_judging

    signature = read_signature(model) if signature is None else signature
    specs = list(signature.inputs) if specs is None else specs
    session = create_session(model, threads=threads, spinning=False)  # threads idle between runs do not spin
    outputs = [run(session, feed) for feed in feeds]
    axes, _ = _class_spec(model, class_outputs)
    unknown = sorted(set(axes) - set(outputs[0])) if outputs else []
    if unknown:
        raise TrtqError(f"--class-output {', '.join(unknown)}: no such output; the model's outputs are "
                        f"{', '.join(outputs[0])}")
    return Replay(list(feeds), outputs, sum(feed_samples(f, specs) for f in feeds), class_outputs=axes,
                  metric=metric, **signature_judging(signature))


def float_loss(rewritten, replay, max_drop: float) -> str:
    """Why a rewrite cannot carry an accuracy budget of ``max_drop`` points, or "": its float model (no layer
    quantized) already loses more than a tenth of it against FP32 on ``replay`` (a mask's IoU moves by a
    hair with any change in float: that much is left to the budget's own measurements). Bias correction
    changes the float model by design (it cancels the weights' rounding, which a layer left float does not
    have), and high-bias absorption is exact only where the activation stays linear; a budget leaves layers
    float, down to the whole model, and must reach FP32's decisions there (on the bench detector, a kept
    rewrite's float model lost boxes, and no budget of 1 point could be met)."""
    from ..compare.decisions import decisions_kept, drop_points

    kept = decisions_kept(replay.score(rewritten))
    if kept is None or not drop_points(kept[1]) > max_drop / 10:
        return ""
    return (f"its float model already loses {drop_points(kept[1]):.1f} point(s) of {kept[0]} against FP32 on "
            f"{replay.samples} held-back samples, which no layer left float wins back (--max-drop)")


def _widened(replay, extra):
    """``replay`` with ``extra``'s samples appended (same reference model, class outputs and metric)."""
    from ..runtime.replay import Replay

    return Replay(replay.feeds + extra.feeds, replay.outputs + extra.outputs, replay.samples + extra.samples,
                  **replay.judging())


@dataclass
class _Split:
    """The calibration data split: what the statistics read and what is held back to judge the result."""

    inputs: list
    source: object
    batches: Iterable[Feed]
    stats_total: Optional[int]
    held: List[Feed] = field(default_factory=list)
    held_back: bool = False
    reserve_feeds: List[Feed] = field(default_factory=list)
    replay: object = None       # streamed models: the held-back sequences' replay
    steps: list = field(default_factory=list)  # streamed models: the calibration steps
    again: Optional[Callable[[], Iterable[Feed]]] = None  # the statistics samples once more, in the same order
    check_feeds: List[Feed] = field(default_factory=list)  # a budget's check: samples its search never reads


def _split_data(model, spec, pairs, holdout: int, algorithm: str, threads: Optional[int],
                progress: ProgressCallback, budget: bool = False) -> _Split:
    """Open the data and hold samples back from the statistics: whole sequences for a streamed model, else
    samples (plus a reserve that auto scores only when its leaders are within noise, and a budget always)."""
    from ..data import open_source
    from ..graph.batch import feed_samples
    from ..graph.signature import input_specs

    reserve_feeds: List[Feed] = []
    if pairs:
        from ..runtime.streaming import StreamReplay, calibration_steps, open_sequences, split_sequences, step_source

        inputs = input_specs(model, spec.batch_axes)
        sequences = open_sequences(spec, inputs, pairs)
        total_steps = sum(len(s.steps) for s in sequences)
        held_sequences, rest_sequences = split_sequences(sequences, holdout_count(total_steps, holdout))
        held_back = len(sequences) > 1
        steps = calibration_steps(model, rest_sequences, pairs, spec.samples, spec.seed, threads=threads)
        source = step_source(spec, inputs, steps, len(rest_sequences))
        log.info("calibrating on %s", source.description)
        progress(0, source.num_samples)
        batches: Iterable[Feed] = iter(source)
        stats_total: Optional[int] = source.num_samples
        replay = StreamReplay.collect(model, held_sequences, pairs, threads=threads)
        return _Split(inputs, source, batches, stats_total, held_back=held_back, replay=replay, steps=steps)
    source = open_source(spec, input_specs(model, spec.batch_axes))
    inputs = source.inputs
    static_batch = any(s.static_batch() for s in inputs)
    reserve_count = holdout_reserve(source.num_samples, holdout) if algorithm == "auto" or budget else 0
    wanted = holdout_count(source.num_samples, holdout) + reserve_count
    check_count = budget_check_count(source.num_samples, wanted) if budget and holdout > 0 else 0
    held, rest = split_holdout(iter(source), wanted + check_count, whole_batches=static_batch, specs=inputs)
    check_feeds: List[Feed] = []
    if check_count and sum(feed_samples(f, inputs) for f in held) > wanted:
        held, check_iter = split_holdout(iter(held), wanted, whole_batches=static_batch, specs=inputs)
        check_feeds = list(check_iter)
    held_count = sum(feed_samples(f, inputs) for f in held)
    if reserve_count and held_count > wanted - reserve_count:
        held, reserve_iter = split_holdout(iter(held), wanted - reserve_count, whole_batches=static_batch,
                                           specs=inputs)
        reserve_feeds = list(reserve_iter)
    held_count += sum(feed_samples(f, inputs) for f in check_feeds)
    first = next(rest, None)
    held_back = bool(held) and first is not None
    if first is None:  # every sample went to the hold-out (a short loader script): score on them all
        held, reserve_feeds, check_feeds = held + reserve_feeds + check_feeds, [], []
        batches = iter(held)
        stats_total = held_count
        everything = list(held)

        def again() -> Iterable[Feed]:
            return iter(everything)
    else:

        def again() -> Iterable[Feed]:  # the source read once more: the same split, the same order
            return split_holdout(iter(source), wanted + check_count, whole_batches=static_batch, specs=inputs)[1]

        batches = itertools.chain([first], rest)
        stats_total = None if source.num_samples is None else source.num_samples - held_count
        if not held:  # too few samples to hold any back: the verdict is scored on the first batch
            held = [first]
    log.info("calibrating on %s%s", source.description,
             f": {stats_total} for the statistics, {held_count} held back to judge the result"
             if held_back and stats_total is not None else "")
    progress(0, stats_total)  # one total from the first update on: the samples the statistics read
    return _Split(inputs, source, batches, stats_total, held, held_back, reserve_feeds, again=again,
                  check_feeds=check_feeds)


def calibrate(
    model_path: PathLike,
    data,
    *,
    algorithm: str = defaults.ALGORITHM,
    cache_path: Optional[PathLike] = None,
    trt_version: Optional[int] = None,
    num_bins: int = defaults.NUM_BINS,
    percentile: float = defaults.PERCENTILE,
    threads: Optional[int] = None,
    max_binned: Optional[int] = defaults.HIST_MAX_BINNED,
    exact: bool = False,
    max_memory: Optional[int] = defaults.CALIB_MAX_MEMORY,
    observe: Union[str, Sequence[str]] = "all",
    holdout: int = defaults.HOLDOUT_SAMPLES,
    exclude: Sequence[str] = (),
    min_snr: Optional[float] = None,
    min_cosine: Optional[float] = None,
    min_agreement: Optional[float] = None,
    class_outputs=None,
    metric=None,
    target: Optional[FidelityTarget] = None,
    min_metric: Optional[float] = None,
    equalize: Union[None, bool, str, Sequence[str]] = None,
    equalized_path: Optional[PathLike] = None,
    progress: ProgressCallback = no_progress,
    choice_progress: ProgressCallback = no_progress,
    feedback: Sequence = (),
    force: bool = False,
):
    """Calibrate ``model_path`` on ``data`` (a DataSpec or a path): amax per tensor, verdict, cache.

    ``algorithm``: ``auto`` (default) or one of :data:`trtq.defaults.SINGLE_ALGORITHMS`.
    ``exact``: bin every value (overrides ``max_binned``). ``max_memory``: bytes the
    calibration may use (None: unbounded). ``observe``: ``"all"`` float tensors (what
    TensorRT's implicit path reads from a cache), ``"qdq"`` (only the Q/DQ placement points
    of both Q/DQ forms) or a list of tensor names.
    ``holdout`` samples are kept out of the statistics and score the result (see
    :func:`holdout_count`). ``exclude``: layers left in float in the scored Q/DQ model
    (recorded in the sidecar's ``mixed_precision``). With ``cache_path``, writes the
    TensorRT calibration cache and its JSON sidecar atomically (the location is checked
    before any work). ``min_snr`` / ``min_cosine`` / ``min_agreement`` (lowest top-1 agreement) /
    ``min_metric`` (the user's ``metric``, on its own scale): raise
    :class:`~trtq.errors.FidelityError` and write nothing when the verdict misses them.
    ``feedback``: ``OUT=IN`` pairs (strings or :class:`~trtq.runtime.streaming.FeedbackPair`) of a streaming model: the
    data are then sequences, calibrated on the steps of the float model's own stream and scored streamed
    (see :mod:`trtq.runtime.streaming`).
    ``class_outputs`` (names or ``NAME:AXIS``) and ``metric`` (``"FILE.py:NAME"`` or a
    :class:`~trtq.compare.usermetric.UserMetric`): what the decisions are, beside what the graph says.
    With ``auto``, :data:`~trtq.defaults.HOLDOUT_RESERVE` more samples are held back (when
    there are at least 4x as many samples, or the count is unknown) and scored only when
    the leading candidates are within noise of each other.
    ``target`` (a :class:`FidelityTarget`): when the verdict is below it, layers are left in
    float on the held-back samples until it is met (:func:`reach_target`); they are recorded
    in the sidecar's ``mixed_precision`` and the verdict is the mixed model's. A budget
    (``target.max_drop``) holds back the reserve too and is judged on every held-back sample.
    ``equalize``: ``None`` (default): with ``auto``, auto's equalization trial
    (:mod:`trtq.pipeline.equalizing`: each rewrite that would change the model gets its own statistics and
    choice and is kept only when it wins beyond noise; recorded in ``result.equalize_trial`` and the sidecar's
    ``equalize_trial``); ``"auto"``: the trial with any algorithm; ``False``/``"off"``: never. True, or steps
    of :data:`trtq.graph.equalize.STEPS`: calibrate (and score) the
    model rewritten by :func:`equalize_model` (statistics
    from the first :data:`~trtq.defaults.EQUALIZE_SAMPLES` calibration samples, never the
    held-back ones); with ``cache_path`` the rewritten ONNX is written to ``equalized_path``
    (default ``<model stem>.equalized.onnx`` beside the cache), which the cache then belongs to (quantize and
    build with the cache find it there). A rewrite the trial keeps is written and recorded the same way.
    ``result.model`` is the model calibrated.
    ``force``: replace an existing file at an output path (the cache, its sidecar, the
    equalized model) that is not a trtq file of that kind; without it such a file is refused
    before any work.
    """
    # Long because its options and their documentation are half of it; the steps (data split, statistics,
    # choice, target, verdict, files) are each a few lines or a helper (_split_data, _sidecar).
    from .. import cache as cache_io
    from ..calib import CalibrationResult, amax_from_histograms, check_calibration_options
    from ..calib.collect import CollectionReport, collect_histograms, qdq_tensors
    from ..compare.verdict import Verdict
    from ..data.spec import DataSpec
    from ..errors import FidelityError
    from ..graph.batch import describe_batch_axes
    from ..graph.model import file_sha256, load_onnx, model_fingerprint
    from ..graph.signature import read_signature
    from ..graph.subgraphs import inline_fixed_branches, weighted_coverage
    from ..outputs import Output, guard_outputs

    check_calibration_options(algorithm, percentile, num_bins, max_binned, observe, max_memory)
    if exact:
        max_binned = None
    spec = data if isinstance(data, DataSpec) else DataSpec(path=str(data))
    mode, forced_steps = equalize_mode(equalize, algorithm)
    trial_refused = ""
    if mode != "off" and cache_path is not None and equalized_path is None:
        equalized_path = default_equalized_path(model_path, cache_path)
    if cache_path is not None:  # never onto the model or the data, and writable, before any work
        from ..data import data_files

        outputs = [Output(cache_path, "cache", option="cache_path"),
                   Output(cache_io.sidecar_path(cache_path), "sidecar", option="the sidecar of cache_path")]
        if mode == "on":
            outputs.append(Output(equalized_path, "onnx", option="--equalize", fixed=True))
        reads = model_reads(model_path) + [("a calibration data file", p) for p in data_files(spec.path)]
        guard_outputs(outputs, reads, force=force)
        if mode == TRIAL:  # the trial writes the rewrite only when it keeps it: a file it may not replace ends it
            try:
                guard_outputs([Output(equalized_path, "onnx", option="--equalize", fixed=True)], reads, force=force)
            except TrtqError as exc:
                mode, trial_refused = "off", f"{exc}"
    model = load_onnx(model_path)
    source_sha = None
    fingerprint = model_fingerprint(model)  # before collection touches the graph
    pairs, state_mode = state_pairs(model, feedback, spec)
    if isinstance(metric, str):
        from ..compare.usermetric import UserMetric

        metric = UserMetric.load(metric)
    if target is not None and target.max_drop is not None:  # before any work: the budget needs decisions
        from ..graph.signature import read_signature
        from ..precision.budget import check_budget_can_run

        check_budget_can_run(read_signature(model, spec.batch_axes), metric=metric, class_outputs=class_outputs,
                             streamed=bool(pairs), model_name=Path(model_path).name)
    started = time.perf_counter()
    split = _split_data(model, spec, pairs, holdout, algorithm, threads, progress,
                        budget=target is not None and target.max_drop is not None)
    inputs, source, batches, stats_total = split.inputs, split.source, split.batches, split.stats_total
    held, held_back, reserve_feeds, replay, steps = (split.held, split.held_back, split.reserve_feeds, split.replay,
                                                     split.steps)
    if any(s.batch_axis != 0 for s in inputs if s.rank):
        log.info("batch axes: %s", describe_batch_axes(inputs))
    equalized = None
    original = model
    if mode == "on":
        fitting, batches = _take_samples(iter(batches), defaults.EQUALIZE_SAMPLES)
        model, equalized = equalize_model(model, fitting, threads=threads, steps=forced_steps)
        fingerprint = model_fingerprint(model)
        source_sha = file_sha256(model_path)
        if equalized.centred_tensors and algorithm == "entropy":
            log.warning("--algo entropy with %d re-centred tensor(s) (--equalize centre): TensorRT's entropy "
                        "calibration can clip a re-centred tensor hard (a MobileNetV3-block segmenter fell far "
                        "below the same rewrite without centre); compare --equalize %s, or use --algo auto, which "
                        "scores the rewrite with every algorithm", len(equalized.centred_tensors),
                        ",".join(step for step in equalized.steps if step != "centre") or "off")
    observed_model = model
    if weighted_coverage(model, ()).in_subgraphs:  # If branches the fixed inputs select: exposed to calibration
        probe = steps[0][1] if pairs else held[0]
        observed_model, inlined = inline_fixed_branches(model, inputs, probe)
        if inlined:
            log.info("calibrating inside %d If node(s) through the branch the fixed inputs select: %s",
                     len(inlined), ", ".join(inlined[:4]) + (", ..." if len(inlined) > 4 else ""))
    def observed_of(model) -> Optional[List[str]]:
        """The tensors ``observe`` names, of ``model`` (a rewrite's Q/DQ points are its own: a re-centred input)."""
        return None if observe == "all" else qdq_tensors(model) if observe == "qdq" else list(observe)

    tensors = observed_of(model)
    if tensors == [] and observe == "qdq":
        coverage = weighted_coverage(model, ())
        raise TrtqError(f"{Path(model_path).name} has no Q/DQ placement point in its main graph, so nothing would "
                        f"be quantized" + (f": {coverage.line()}" if coverage.in_subgraphs else ""))
    trial: Optional[EqualizeTrial] = None
    variants: List[Tuple[str, ...]] = []
    if mode == TRIAL or trial_refused:
        from ..graph.batch import feed_samples

        judged = sum(feed_samples(f, inputs) for f in held + reserve_feeds) if not pairs else 0
        variants, why_not = _trial_variants(model, pairs, observed_model, trial_refused, judged)
        trial = EqualizeTrial(reason=why_not)
    compared_on = defaults.AUTO_EQUALIZE_STATISTICS_SAMPLES  # the trial's samples, on enough of them
    early = compared_on if variants and (stats_total is None or stats_total >= 2 * compared_on) else None
    report = CollectionReport()
    histograms = collect_histograms(observed_model, batches, num_bins=num_bins, total_samples=stats_total,
                                    threads=threads, max_binned=max_binned, tensors=tensors, max_memory=max_memory,
                                    report=report, half_snapshot=True, progress=progress, inputs=inputs,
                                    early_snapshot=early)
    if report.unquantized:
        log.info("%d tensor(s) stay float (+-inf or huge by construction, e.g. attention-mask biases): %s%s",
                 len(report.unquantized), ", ".join(list(report.unquantized)[:3]),
                 ", ..." if len(report.unquantized) > 3 else "")
    if not histograms:  # checked before anything is written: an earlier good cache stays as it was
        if report.unquantized:
            name, reason = next(iter(report.unquantized.items()))
            raise TrtqError(f"every floating-point tensor of {Path(model_path).name} is +-inf or huge "
                            f"({len(report.unquantized)} tensor(s); the first, {name!r}, {reason}), so none can be "
                            "calibrated; check the data and its preprocessing (--scale, --mean, --std, raw integer "
                            "data), nothing was written")
        raise TrtqError(f"no floating-point tensors were found to calibrate in {Path(model_path).name}; "
                        "nothing was written")
    stats_seconds = time.perf_counter() - started
    def float_reference(feeds):
        """A replay of ``feeds`` with the float model's outputs: the reference, always (also with --equalize)."""
        return reference_replay(original, feeds, threads=threads, class_outputs=class_outputs, metric=metric,
                                specs=inputs, signature=read_signature(original, spec.batch_axes))

    if not pairs:
        replay = float_reference(held)

    widened: list = []

    def reserve():
        """The held-back samples and the reserve, their FP32 reference run once (auto's rescoring, the
        equalization trial and the budget all read it)."""
        if not reserve_feeds:
            return None
        if not widened:
            widened.append(_widened(replay, float_reference(reserve_feeds)))
        return widened[0]

    options = {"percentile": percentile} if algorithm == "percentile" else {}

    def choose(model, histograms) -> Tuple[Dict[str, float], Optional[AutoChoice], list]:
        if algorithm != "auto":
            amax = amax_from_histograms(histograms, algorithm, **options)
            return amax, None, score(replay, model, amax, exclude, algorithm).metrics
        amax, choice, metrics = choose_amax(model, histograms, replay, exclude=exclude, percentile=percentile,
                                            reserve=reserve, progress=choice_progress)
        choice.held_back = held_back
        return amax, choice, metrics

    def ranked(model, histograms) -> Tuple[Dict[str, float], Optional[AutoChoice], list, Optional[Ranking]]:
        """The trial's choice: auto's ranking without refinement (a single algorithm: its table)."""
        if algorithm != "auto":
            return (*choose(model, histograms), None)
        ranking = rank_tables(model, histograms, replay, exclude=exclude, percentile=percentile, reserve=reserve,
                              progress=choice_progress)
        ranking.choice.held_back = held_back
        return ranking.amax, ranking.choice, ranking.verdict_candidate.metrics, ranking

    if not variants:
        amax, choice, metrics = choose(model, histograms)
    else:
        # On many statistics samples the models are compared on the first ones (the main pass's early snapshot
        # and a rewrite's pass over the same samples), and only the model kept gets a pass over them all.
        first = report.early_samples if report.early is not None and report.samples >= 2 * compared_on else None

        def collect(model, samples: Optional[int] = None, every_tensor: bool = False,
                    tensors: Optional[List[str]] = None):
            """A rewrite's pass over the same batches: in the trial only the tensors its TensorRT-form Q/DQ model
            reads (all that its ranking, refinement and judging read), the model kept over every tensor (or
            ``tensors``)."""
            collection = CollectionReport()
            observed = (tensors if tensors is not None else observed_of(model) if every_tensor
                        else qdq_tensors(model, observed_of(model), forms=("trt",)))
            return collect_histograms(model, _first_samples(split.again(), samples, inputs), num_bins=num_bins,
                                      total_samples=samples or stats_total, threads=threads, max_binned=max_binned,
                                      tensors=observed, max_memory=max_memory, report=collection,
                                      half_snapshot=True, progress=progress, inputs=inputs), collection

        widest = (reserve() if reserve_feeds else None) or replay
        compared = report.early if first else histograms
        budgeted = target is not None and target.max_drop is not None
        best, trial = run_trial(
            Outcome((), model, None, compared, report, *ranked(model, compared)), variants,
            fitting=lambda: _take_samples(iter(split.again()), defaults.EQUALIZE_SAMPLES)[0], threads=threads,
            collect=lambda model: collect(model, first), choose=ranked,
            judge=lambda outcome: _judged(outcome, widest, exclude),
            refine=lambda outcome: refine(outcome.ranking, replay, progress=choice_progress)
            if outcome.ranking is not None else (outcome.amax, outcome.choice, outcome.metrics),
            ineligible=(lambda rewritten: float_loss(rewritten, widest, target.max_drop)) if budgeted else None)
        trial.statistics_samples, trial.first_samples = first or report.samples, bool(first)
        amax, choice, metrics = best.amax, best.choice, best.metrics
        if best.report is not None:  # a rewrite won: the cache belongs to it, as with --equalize
            model, equalized, histograms, report = best.model, best.report, best.histograms, best.collection
            fingerprint, source_sha = model_fingerprint(model), file_sha256(model_path)
            if first:  # its pass over every sample and tensor
                histograms, report = collect(model, every_tensor=True)
            else:  # its trial pass read every sample: a pass over the tensors it did not read
                histograms, report = _rest_of_pass(model, best.histograms, best.collection, observed_of(model),
                                                   lambda tensors: collect(model, tensors=tensors))
        if first:  # the model kept, on every statistics sample: its choice from the start
            amax, choice, metrics = choose(model, histograms)
        elif best.ranking is not None and not best.refined:  # refined here when no rewrite contended
            amax, choice, metrics = refine(best.ranking, replay, progress=choice_progress)
        if best.report is not None and not first:  # its choice stands (made where the histograms are the same)
            amax = every_tensor(amax, histograms, choice.chosen if choice is not None else algorithm, percentile)
    search = None
    if target is not None and target.given():
        judged_on = replay
        check = None
        if target.max_drop is not None:
            if reserve_feeds:  # a budget on decisions searches on the held-back samples and the reserve
                judged_on = reserve()
                metrics = score(judged_on, model, amax, exclude).metrics
            if split.check_feeds:  # and is checked on samples its search never reads
                check = float_reference(split.check_feeds)
        search, metrics = reach_target(model, amax, judged_on, metrics, target, exclude=exclude, threads=threads,
                                       progress=choice_progress, check=check,
                                       check_needs=budget_check_needs(holdout) if holdout > 0 else 0)
        if search is not None:
            log.info("mixed precision: %s", search.message)
    verdict = Verdict(metrics, metrics[0].samples if metrics else replay.samples, held_back=held_back,
                      min_metric=min_metric, **({"form": STREAMED_FORM} if pairs else {}))
    coverage = weighted_coverage(model, amax)
    if coverage.in_subgraphs:
        log.warning("%s", coverage.line())
    seconds = time.perf_counter() - started
    failure = verdict.failure(min_snr, min_cosine, min_agreement, min_metric)
    if failure:
        raise FidelityError(f"{failure}; nothing was written. {verdict.line()}")
    if not pairs and not (target is not None and target.given()):  # lost decisions: how many layers a budget needs
        from ..precision.budget import budget_estimate_of

        over = ("a batch's activations exceed --max-memory (the statistics ran fewer samples at a time or the graph "
                "in pieces)" if report.cut or report.groups > 1 or (report.run_batch or 0) < (report.data_batch or 0)
                else "")
        verdict.budget_estimate = budget_estimate_of(verdict, model, amax, replay, metrics, exclude, threads,
                                                     over_memory=over)

    written: List[Path] = []
    sidecar_model_path, sidecar_sha, rewrite = model_path, None, None
    if equalized is not None and cache_path is not None:  # written with the cache: all three or none
        import hashlib

        rewrite = (Path(equalized_path), model.SerializeToString())
        sidecar_model_path, sidecar_sha = equalized_path, hashlib.sha256(rewrite[1]).hexdigest()
    version = trt_version if trt_version is not None else default_trt_version()
    convergence = _convergence(report, histograms, amax, algorithm, choice, percentile)
    sidecar = _sidecar(model_path=model_path, sidecar_model_path=sidecar_model_path, sidecar_sha=sidecar_sha,
                       inputs=inputs, algorithm=algorithm, amax=amax, version=version, source=source, spec=spec,
                       stats_total=stats_total, held_back_samples=replay.samples if held_back else 0,
                       reserve_feeds=reserve_feeds, num_bins=num_bins, max_binned=max_binned, observe=observe,
                       options=options, report=report, choice=choice, percentile=percentile,
                       fingerprint=fingerprint, verdict=verdict, pairs=pairs, original=original,
                       state_mode=state_mode, coverage=coverage, convergence=convergence, exclude=exclude,
                       search=search, target=target, equalized=equalized, source_sha=source_sha, trial=trial)
    if cache_path is not None:
        written += cache_io.write_cache(cache_path, amax, algorithm=algorithm, trt_version=version, sidecar=sidecar,
                                        model=rewrite)
    return CalibrationResult(amax=amax, algorithm=algorithm, num_samples=stats_total if stats_total is not None else 0,
                             num_batches=len(source), seconds=seconds, data_description=source.description,
                             files_written=written, sidecar=sidecar, histograms=histograms, verdict=verdict,
                             auto=choice, statistics_seconds=stats_seconds, unquantized=report.unquantized,
                             collection=report, convergence=convergence, mixed_precision=search,
                             equalize=equalized, model=model if equalized is not None else None,
                             equalize_trial=trial)


def _rest_of_pass(model, binned: dict, binned_report, observed: Optional[List[str]], collect):
    """A kept rewrite's statistics over every tensor ``observed`` (None: every float tensor), where its trial pass
    (``binned``, ``binned_report``) already binned some of them on the same samples: ``collect(tensors)`` runs the
    rest only, and the two are merged in graph order. A tensor's histogram reads only its own values (its range
    is its first batch's), so the merge equals one pass over them all, without binning the Q/DQ tensors twice
    (a third of YOLOv8n's activation values)."""
    from ..calib.collect import CollectionReport, activation_tensors

    every = activation_tensors(model)
    done = set(binned) | set(binned_report.unquantized)
    rest = [t for t in (observed if observed is not None else every) if t not in done]
    if rest:
        histograms, report = collect(rest)
    else:
        histograms, report = {}, CollectionReport(samples=binned_report.samples, data_batch=binned_report.data_batch,
                                                  run_batch=binned_report.run_batch)
    order = {name: i for i, name in enumerate(every)}

    def merged(first: Optional[dict], second: Optional[dict]) -> dict:
        both = {**(first or {}), **(second or {})}
        return dict(sorted(both.items(), key=lambda item: order.get(item[0], len(order))))

    histograms = merged(binned, histograms)
    if report.half is None or binned_report.half_samples == report.half_samples:
        report.half, report.half_samples = merged(binned_report.half, report.half), binned_report.half_samples
    report.unquantized = {**binned_report.unquantized, **report.unquantized}
    report.observed += binned_report.observed
    report.shared += binned_report.shared
    report.run_batch = min(b for b in (report.run_batch, binned_report.run_batch) if b is not None) if (
        report.run_batch or binned_report.run_batch) else None
    report.groups = max(report.groups, binned_report.groups)
    report.cut = report.cut or binned_report.cut
    return histograms, report


def _first_samples(batches: Iterable[Feed], samples: Optional[int], inputs) -> Iterator[Feed]:
    """The batches of ``batches`` until ``samples`` samples (all of them with None): whole batches, as the
    statistics pass's snapshots are taken at batch boundaries."""
    from ..graph.batch import feed_samples

    have = 0
    for feed in batches:
        if samples is not None and have >= samples:
            return
        yield feed
        have += feed_samples(feed, inputs)


def _judged(outcome: Outcome, widest, exclude):
    """``outcome`` scored on ``widest`` (the held-back samples, with the reserve when there is one): its ranking's
    scoring of its choice when that was on the same samples, else a new one."""
    known = outcome.ranking.verdict_candidate if outcome.ranking is not None else None
    if known is not None and known.samples == widest.samples and known.metrics and (
            not outcome.refined or outcome.amax == outcome.ranking.amax):
        return known
    return score(widest, outcome.model, outcome.amax, exclude, outcome.name)


def _trial_variants(model, pairs, observed_model, refused: str, samples: int) -> Tuple[List[Tuple[str, ...]], str]:
    """The rewrites auto's equalization trial scores on ``model`` (step lists), or none and why."""
    if refused:
        return [], f"not tried: {refused}"
    if pairs:
        return [], "not tried on a streamed model"
    if samples < defaults.AUTO_EQUALIZE_MIN_SAMPLES:
        return [], (f"not tried: {samples} held-back sample(s) cannot tell a rewrite from noise "
                    f"({defaults.AUTO_EQUALIZE_MIN_SAMPLES} needed)")
    if observed_model is not model:
        return [], "not tried on a model calibrated inside If branches"
    variants = trial_variants(model)
    return variants, "" if variants else "not tried: nothing to rewrite (no convolution with float weights)"


def _sidecar(*, model_path, sidecar_model_path, sidecar_sha, inputs, algorithm: str, amax, version: int, source, spec,
             stats_total, held_back_samples: int, reserve_feeds, num_bins: int, max_binned, observe, options: dict,
             report, choice, percentile: float, fingerprint, verdict, pairs, original, state_mode: str, coverage,
             convergence, exclude, search, target, equalized, source_sha, trial=None) -> dict:
    """The JSON sidecar a calibration writes beside its cache: how it was made, from what, and its verdict."""
    from .. import cache as cache_io
    from ..graph.model import file_sha256
    from ..graph.signature import read_signature

    algorithm_record = {"num_bins": num_bins, "max_binned": max_binned,
                        "observe": observe if isinstance(observe, str) else "list", **options}
    if report.unquantized:
        algorithm_record["unquantized"] = dict(report.unquantized)
    if choice is not None:
        algorithm_record.update({"percentile": percentile, **choice.to_dict()})
    sidecar = cache_io.make_sidecar(
        model_path=sidecar_model_path,
        model_sha256=sidecar_sha or file_sha256(model_path),
        inputs=cache_io.input_records(inputs),
        algorithm=algorithm,
        amax=amax,
        trt_version=version,
        data={"source": source.description, "kind": getattr(source, "kind", None), "path": str(spec.path),
              "samples": source.num_samples,
              "statistics_samples": stats_total, "held_back_samples": held_back_samples,
              "reserve_samples": sum(len(next(iter(f.values()))) for f in reserve_feeds),
              "batch_size": source.batch_size, "seed": spec.seed, "shuffle": spec.shuffle,
              "preprocess": spec.preprocess.to_dict(), "fingerprint": source.fingerprint()},
        algorithm_options=algorithm_record,
        fingerprint=fingerprint,
    )
    sidecar["verdict"] = verdict.to_dict()
    if pairs:
        sidecar["feedback"] = [{"output": p.output, "input": p.input} for p in pairs]
    sidecar["signature"] = {**read_signature(original, spec.batch_axes, feedback=pairs or None).to_dict(),
                            **({"state_mode": state_mode} if state_mode else {})}
    if coverage.in_subgraphs:
        sidecar["coverage"] = coverage.to_dict()
    if convergence is not None:
        sidecar["convergence"] = convergence.to_dict()
    chooser = "" if not target else (f"trtq calibrate --max-drop {target.max_drop:g}" if target.max_drop is not None
                                     else f"trtq calibrate --target ({target.label()})")
    mixed = mixed_precision_record(exclude, search, chooser)
    if mixed:
        sidecar["mixed_precision"] = mixed
    if equalized is not None:
        sidecar["equalize"] = {**equalized.to_dict(), "source_model": str(model_path), "source_file_sha256": source_sha,
                               "statistics_samples": equalized.samples,
                               "reproduce": f"trtq calibrate {Path(model_path).name} --equalize "
                                            f"{','.join(equalized.steps)} (same --calib, --samples, --seed): the "
                                            "rewrite is deterministic",
                               **({"chosen_by": "auto's equalization trial"} if trial is not None else {})}
    if trial is not None:
        sidecar["equalize_trial"] = trial.to_dict()
    return sidecar


def _convergence(report, histograms, amax, algorithm: str, choice: Optional["AutoChoice"], percentile: float):
    """How far the amax moved between half and all of the statistics samples (None without a snapshot)."""
    from ..calib.convergence import convergence_or_none

    if choice is not None:
        return convergence_or_none(report, histograms, amax, choice.chosen, choice.overrides, percentile)
    return convergence_or_none(report, histograms, amax, algorithm, percentile=percentile)
