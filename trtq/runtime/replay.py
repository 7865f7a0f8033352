"""A fixed set of held-back batches with the reference model's outputs, replayed through candidates.

Layer sensitivity, mixed-precision search and auto's choice re-run many model variants; they
replay a fixed, small set of samples (:data:`SENSITIVITY_SAMPLES`, kept in memory with the
reference outputs)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import defaults
from ..compare.accumulate import compare_outputs
from ..compare.decisions import ClassOutputs
from ..compare.struct import OutputMetrics
from ..compare.usermetric import UserMetric
from ..data.spec import evaluation_spec
from ..errors import DataError
from ..graph.model import model_and_name

#: Samples replayed for each layer in sensitivity analysis and each step of --auto-exclude.
SENSITIVITY_SAMPLES = defaults.SENSITIVITY_SAMPLES

#: Timed runs (after 2 warm-up runs) when --auto-exclude measures each step's speed at batch 1.
SPEED_ITERATIONS = 10


@dataclass
class Replay:
    """A fixed set of input batches with the reference model's outputs, kept in memory."""

    feeds: List[Dict[str, np.ndarray]]
    outputs: List[Dict[str, np.ndarray]]
    samples: int
    class_outputs: ClassOutputs = ()        # outputs judged along a class axis: names, NAME:AXIS, or {name: axis}
    metric: Optional[UserMetric] = None     # the user's own metric (--metric), scored beside the outputs
    feature_axes: Optional[Dict[str, Optional[int]]] = None  # small feature axes from the graph (feature_axes())
    output_axes: Optional[Dict[str, int]] = None  # the axis that counts samples, per output (the signature's)
    masks: Optional[Dict[str, int]] = None  # binary Sigmoid masks: {output: channel axis} (the signature's)
    group_axes: Optional[Dict[str, Tuple[int, ...]]] = None  # where channel groups may be (the signature's)
    judged: Optional[List[str]] = None  # outputs compared (state fed back is not); None: every output

    def judging(self) -> dict:
        """What :func:`compare_outputs` needs besides the outputs (for replays made from this one)."""
        return dict(class_outputs=self.class_outputs, metric=self.metric, feature_axes=self.feature_axes,
                    output_axes=self.output_axes, masks=self.masks, group_axes=self.group_axes, judged=self.judged)

    @classmethod
    def collect(cls, reference, data, *, samples: int = SENSITIVITY_SAMPLES, threads: Optional[int] = None
                ) -> "Replay":
        from ..data import open_source
        from ..graph.batch import feed_samples, take_samples
        from ..graph.signature import read_signature
        from ..ort import batch_inputs, create_session, run

        ref_model, _ = model_and_name(reference)
        spec = replace(evaluation_spec(data), samples=samples, shuffle=False)
        signature = read_signature(ref_model, spec.batch_axes)
        source = open_source(spec, list(signature.inputs))
        session = create_session(ref_model, threads=threads)
        feeds, outputs, count = [], [], 0
        for item in source:
            feed = {k: np.asarray(v) for k, v in batch_inputs(item).items()}
            n = feed_samples(feed, source.inputs)
            if count + n > samples:
                feed = take_samples(feed, source.inputs, slice(0, samples - count))
                n = samples - count
            feeds.append(feed)
            outputs.append(run(session, feed))
            count += n
            if count >= samples:
                break
        if not count:
            raise DataError(f"{getattr(source, 'description', spec.path)}: no samples for sensitivity analysis")
        return cls(feeds, outputs, count, **signature_judging(signature))

    def score(self, model, *, threads: Optional[int] = None) -> List[OutputMetrics]:
        """Output metrics of ``model`` (ModelProto or path) against the stored reference outputs."""
        from ..ort import create_session

        return self.score_session(create_session(model, threads=threads))

    def score_session(self, session, extra: Optional[Mapping[str, np.ndarray]] = None) -> List[OutputMetrics]:
        """:meth:`score` with an open session, ``extra`` fed beside every batch (the scales of a scoring model
        whose Q/DQ scales are inputs: one session for every candidate)."""
        return self.score_session_until(session, extra)[0]

    def score_session_until(self, session, extra: Optional[Mapping[str, np.ndarray]] = None,
                            stop=None, known: Sequence[Mapping[str, np.ndarray]] = (),
                            keep: Optional[list] = None) -> Tuple[List[OutputMetrics], int]:
        """:meth:`score_session` that may end early: ``(metrics, samples scored)``.

        ``known``: the candidate's outputs on the first batches, already run (a replay widened
        by more samples rescores only those); ``keep``: a list the candidate's outputs of every
        batch are appended to (for such a rescoring).

        ``stop(samples, metrics)`` is asked after every batch but the last, with the samples
        scored so far and the metrics the candidate would get if every sample not yet scored
        came out exactly as the reference's (so judged channels, groups and sample counts are
        those of all samples, and the first ``samples`` per-sample rows are the candidate's
        own); when it returns True those metrics are returned. Never with a user metric
        (its value on identical outputs is the user's business).
        """
        from ..ort import run

        names = [n for n in self.outputs[0] if self.judged is None or n in self.judged]
        extra = dict(extra or {})

        def judge(pairs):
            return compare_outputs(pairs, names, class_outputs=self.class_outputs, feeds=self.feeds,
                                   metric=self.metric, feature_axes=self.feature_axes, output_axes=self.output_axes,
                                   masks=self.masks, group_axes=self.group_axes)

        def candidate(index: int) -> Dict[str, np.ndarray]:
            outputs = known[index] if index < len(known) else run(session, {**self.feeds[index], **extra}, names)
            if keep is not None:
                keep.append(outputs)
            return outputs

        if stop is None or self.metric is not None or len(self.feeds) < 2:
            return judge((ref, candidate(index)) for index, ref in enumerate(self.outputs)), self.samples
        produced: List[Dict[str, np.ndarray]] = []
        scored = 0
        for index, feed in enumerate(self.feeds):
            produced.append(candidate(index))
            scored += self._batch_rows(index, names)
            if index + 1 < len(self.feeds):
                rest = [{n: ref[n] for n in names} for ref in self.outputs[index + 1:]]
                completed = judge(zip(self.outputs, produced + rest))
                if stop(scored, completed):
                    return completed, scored
        return judge(zip(self.outputs, produced)), self.samples

    def _batch_rows(self, index: int, names: Sequence[str]) -> int:
        """Samples of batch ``index`` as the metrics count them (rows along the first judged output's sample axis)."""
        value = np.asarray(self.outputs[index][names[0]])
        axis = (self.output_axes or {}).get(names[0], 0)
        return int(value.shape[axis]) if value.ndim > axis else 1

    def tensors(self, model, names: Sequence[str], *, threads: Optional[int] = None) -> Iterator[Dict[str, np.ndarray]]:
        """``model``'s values of the tensors ``names``, batch by batch (the graph augmented to expose them)."""
        from ..calib.collect import augmented_model
        from ..ort import create_session, run

        session = create_session(augmented_model(model, names), threads=threads)
        for feed in self.feeds:
            yield run(session, feed, list(names))

    def latency_ms(self, model, *, threads: Optional[int] = None, iterations: int = SPEED_ITERATIONS) -> float:
        """Median batch-1 latency (ms) of ``model`` on the first sample (2 warm-up runs)."""
        return self.latencies_ms([model], threads=threads, iterations=iterations)[0]

    def latencies_ms(self, models: Sequence, *, threads: Optional[int] = None,
                     iterations: int = SPEED_ITERATIONS) -> List[float]:
        """Median batch-1 latency (ms) of each of ``models`` on the first sample, timed in turns (one run of each
        per round, 2 warm-up rounds): load on a busy machine falls on all of them alike, so their ratios hold
        where one model timed after another would carry whatever the machine did meanwhile."""
        from ..ort import as_feed, create_session, time_session

        sessions = [create_session(model, threads=threads) for model in models]
        feeds = [as_feed(session, {k: v[:1] for k, v in self.feeds[0].items()}) for session in sessions]
        for session, feed in zip(sessions, feeds):
            time_session(session, feed, 0, 2)
        rounds = np.array([[time_session(session, feed, 1, 0)[0] for session, feed in zip(sessions, feeds)]
                           for _ in range(iterations)])
        return [float(np.median(rounds[:, i])) for i in range(len(sessions))]


def signature_judging(signature) -> dict:
    """How a :class:`Replay` judges outputs, from a :class:`~trtq.graph.signature.ModelSignature`: feature and
    sample axes, masks, channel-group axes, and the outputs judged (state outputs are not)."""
    return dict(feature_axes=signature.feature_axes(), output_axes=signature.output_axes(),
                masks=signature.mask_axes(), group_axes=signature.group_axes(), judged=signature.judged_outputs())
