"""Streaming models: state outputs fed back as inputs, step by step, around any session."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import DataError, TrtqError

Feed = Dict[str, np.ndarray]


class FeedbackError(TrtqError):
    """A ``--feedback OUT=IN`` pair the model cannot run: unknown names, or shapes or dtypes that differ."""


@dataclass(frozen=True)
class FeedbackPair:
    output: str
    input: str

    def text(self) -> str:
        return f"{self.output}={self.input}"


def parse_feedback(values: Optional[Sequence[str]]) -> List[FeedbackPair]:
    """``["stateN=state"]`` -> pairs (split on the last ``=``: names may hold ``=``)."""
    pairs = []
    for value in values or ():
        output, sep, name = str(value).rpartition("=")
        if not sep or not output or not name:
            raise FeedbackError(f"--feedback {value}: expected OUT=IN, an output fed back as an input on the next "
                                f"call, e.g. stateN=state")
        pairs.append(FeedbackPair(output, name))
    inputs = [p.input for p in pairs]
    if len(set(inputs)) != len(inputs):
        raise FeedbackError(f"--feedback: input {next(n for n in inputs if inputs.count(n) > 1)!r} is fed twice")
    return pairs


def check_feedback(model, pairs: Sequence[FeedbackPair]) -> None:
    """Every pair names an output and an input of ``model`` whose declared ranks, fixed dims and dtypes agree."""
    from ..graph.model import output_specs
    from ..graph.signature import input_specs

    inputs = {s.name: s for s in input_specs(model)}
    outputs = {s.name: s for s in output_specs(model)}
    for pair in pairs:
        if pair.output not in outputs:
            raise FeedbackError(f"--feedback {pair.text()}: the model has no output {pair.output!r}; its outputs are "
                                f"{', '.join(outputs)}")
        if pair.input not in inputs:
            raise FeedbackError(f"--feedback {pair.text()}: the model has no input {pair.input!r}; its inputs are "
                                f"{', '.join(inputs)}")
        out, into = outputs[pair.output], inputs[pair.input]
        same_dims = out.rank == into.rank and all(
            not (isinstance(a, int) and isinstance(b, int)) or a == b for a, b in zip(out.shape, into.shape))
        if not same_dims or out.dtype != into.dtype:
            raise FeedbackError(f"--feedback {pair.text()}: output {pair.output!r} is {out.dtype} "
                                f"{out.shape_text() or 'scalar'} but input {pair.input!r} is {into.dtype} "
                                f"{into.shape_text() or 'scalar'}; an output fed back must have the input's shape "
                                f"and dtype")


def zero_state(spec) -> np.ndarray:
    """The initial state of a fed-back input at batch 1: zeros (every other dim must be fixed)."""
    shape = []
    for axis, dim in enumerate(spec.shape):
        if spec.batched and axis == spec.batch_axis:
            shape.append(1)
        elif isinstance(dim, int) and dim > 0:
            shape.append(dim)
        else:
            raise DataError(f"input {spec.name!r} is fed back but its dim {dim or '?'} (axis {axis}) is not fixed, so "
                            f"trtq cannot make its zero initial state; give the initial state in the data "
                            f"(key {spec.name!r}, one sample per sequence)")
    return np.zeros(shape, dtype=spec.dtype)


@dataclass
class SequenceData:
    """One sequence: its steps (stepped inputs at batch 1, the model's layout) and the initial states."""

    name: str
    steps: List[Feed]
    initial: Feed = field(default_factory=dict)


def _batch1(array: np.ndarray, spec, origin: str) -> np.ndarray:
    from ..data.validate import conform, with_sample_axis

    if not spec.batched:
        return conform(np.asarray(array), spec, spec.dtype, origin)
    one = with_sample_axis(np.asarray(array), spec, origin)
    if one.shape[spec.batch_axis] != 1:
        raise DataError(f"{origin}: input {spec.name!r} gives {one.shape[spec.batch_axis]} samples for one step; a "
                        f"step is one sample (rank {spec.rank - 1}, without the batch axis)")
    return conform(one, spec, spec.dtype, origin)


def _from_arrays(arrays: Mapping[str, np.ndarray], inputs, pairs, origin: str, name: str) -> SequenceData:
    """A sequence from ``{input: [T, *sample]}`` arrays (a file, or a loader script's yield)."""
    fed = {p.input for p in pairs}
    stepped = [s for s in inputs if s.name not in fed]
    missing = [s.name for s in stepped if s.name not in arrays]
    if missing:
        raise DataError(f"{origin}: missing input {', '.join(repr(m) for m in missing)} (a sequence gives every "
                        f"input not fed back, with a leading time axis; found {', '.join(arrays) or 'nothing'})")
    lengths = {s.name: int(np.shape(arrays[s.name])[0]) for s in stepped if s.batched and np.ndim(arrays[s.name])}
    if len(set(lengths.values())) > 1:
        listing = ", ".join(f"{k!r}: {v}" for k, v in lengths.items())
        raise DataError(f"{origin}: the stepped inputs have different lengths ({listing}); every one needs one "
                        f"entry per step along its leading time axis")
    length = next(iter(lengths.values()), 0)
    if length < 1:
        raise DataError(f"{origin}: the sequence is too short for one step (time axis of length {length}); give "
                        f"arrays of shape [T, *sample] with T >= 1")
    steps = []
    for t in range(length):
        where = f"{origin} step {t}"
        steps.append({s.name: _batch1(arrays[s.name][t] if s.batched else arrays[s.name], s, where) for s in stepped})
    initial = {}
    for spec in inputs:
        if spec.name in fed:
            initial[spec.name] = (_batch1(arrays[spec.name], spec, f"{origin} initial state") if spec.name in arrays
                                  else zero_state(spec))
    return SequenceData(name, steps, initial)


def is_sequence_data(spec, inputs, pairs: Sequence[FeedbackPair]) -> bool:
    """Whether ``spec``'s data are sequences (stream them, state fed back) rather than calls (every input,
    state included, given per sample): the first file or yield lacks a fed-back input, or a ``.npy`` file
    holds the one stepped input. Used when a state pair comes from the graph, not from ``--feedback``."""
    from ..data.script import load_function, split_script_path
    from ..data.source import list_files

    fed = {p.input for p in pairs}
    text = str(spec.path)
    path = Path(text).expanduser()
    script = split_script_path(text)
    if script is not None and not path.is_dir():
        try:
            first = next(iter(load_function(Path(script[0]).expanduser(), script[1], text)()), None)
        except Exception:  # noqa: BLE001 -- the user's code: reading it for real says what is wrong
            return False
        return isinstance(first, dict) and not fed <= set(first)
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = [path / rel for rel in list_files(path, quiet=True)[1][:1]]
    else:
        return False
    if not files:
        return False
    if files[0].suffix.lower() == ".npy":
        return len([s for s in inputs if s.name not in fed]) == 1
    try:
        with np.load(files[0], allow_pickle=False) as archive:
            keys = set(archive.files)
    except Exception:  # noqa: BLE001 -- an unreadable file: the data reader says what is wrong
        return False
    return not fed <= keys


def open_sequences(spec, inputs, pairs: Sequence[FeedbackPair]) -> List[SequenceData]:
    """Every sequence ``spec`` (a DataSpec) points at, read whole (see the module docstring for the layouts)."""
    from dataclasses import replace

    from ..data import open_source
    from ..data.arrays import read_arrays
    from ..data.script import load_function, split_script_path
    from ..data.source import list_files
    from ..graph.batch import with_batch_axes

    inputs = with_batch_axes(list(inputs), getattr(spec, "batch_axes", None))
    text = str(spec.path)
    path = Path(text).expanduser()
    script = split_script_path(text)
    sequences: List[SequenceData] = []
    if script is not None and not path.is_dir():
        func = load_function(Path(script[0]).expanduser(), script[1], text)
        try:
            items = list(func())
        except Exception as exc:  # noqa: BLE001 -- the user's code
            raise DataError(f"loader script {text} raised {type(exc).__name__}: {exc}") from exc
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise DataError(f"{text} (yield {index + 1}): yield one dict {{input_name: [T, *sample] array}} "
                                f"per sequence, got {type(item).__name__}")
            arrays = {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in item.items()}
            sequences.append(_from_arrays(arrays, inputs, pairs, f"{text} (yield {index + 1})",
                                          f"{Path(script[0]).name}[{index}]"))
    elif not path.exists():
        raise DataError(f"data path {text} does not exist; give a folder of sequences (sub-folders of steps, or "
                        f".npz files with a leading time axis) or a loader script")
    else:
        fed = {p.input for p in pairs}
        stepped = [s for s in inputs if s.name not in fed]
        folders = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")) if path.is_dir() else []
        if folders:
            for folder in folders:
                source = open_source(replace(spec, path=str(folder), samples=None, batch_size=1, shuffle=False),
                                     stepped)
                steps = [dict(batch) for batch in source]
                if not steps:
                    raise DataError(f"{folder}: the sequence is too short for one step (no step files)")
                initial = {s.name: zero_state(s) for s in inputs if s.name in fed}
                sequences.append(SequenceData(folder.name, steps, initial))
        else:
            files = [""] if path.is_file() else list_files(path)[1]
            if not files:
                raise DataError(f"{text} holds no sequences: give sub-folders of step files, or .npz/.npy files with "
                                f"a leading time axis")
            for rel in files:
                file = path / rel if rel else path
                origin = str(file)
                if file.suffix.lower() == ".npy":
                    if len(stepped) != 1:
                        raise DataError(f"{origin}: a .npy file holds one array, but {len(stepped)} inputs are "
                                        f"stepped; save .npz files keyed by input name")
                    keys = {stepped[0].name: ""}
                else:
                    with np.load(file, allow_pickle=False) as archive:
                        keys = {k: k for k in archive.files}
                arrays = read_arrays(file, keys, origin)
                sequences.append(_from_arrays(arrays, inputs, pairs, origin, rel or file.name))
    if not sequences:
        raise DataError(f"{text}: no sequences found")
    return sequences


def stream(runtime, sequence: SequenceData, pairs: Sequence[FeedbackPair], output_names: Optional[Sequence[str]] = None,
           keep_feeds: bool = False) -> Tuple[Dict[str, np.ndarray], List[Feed]]:
    """Run ``sequence`` step by step through ``runtime`` (any :class:`~trtq.runtime.base.Runtime`: ONNX Runtime
    or an engine), each step's fed-back outputs becoming the next step's inputs. Returns ``{output: the steps'
    values joined along axis 0}`` and, with ``keep_feeds``, every step's complete feed (the calibration
    samples)."""
    names = list(output_names) if output_names else runtime.output_names()
    wanted = list(dict.fromkeys(names + [p.output for p in pairs]))
    state = dict(sequence.initial)
    collected: Dict[str, List[np.ndarray]] = {n: [] for n in names}
    feeds: List[Feed] = []
    for index, step in enumerate(sequence.steps):
        feed = {**step, **state}
        if keep_feeds:
            feeds.append(feed)
        outputs = runtime.infer(feed, wanted)
        for name in names:
            value = np.asarray(outputs[name])
            collected[name].append(value if value.ndim else value[np.newaxis])
        for pair in pairs:
            value = np.asarray(outputs[pair.output])
            before = state.get(pair.input)
            if before is not None and (value.shape != before.shape or value.dtype != before.dtype):
                raise FeedbackError(f"--feedback {pair.text()}: at step {index} of {sequence.name} output "
                                    f"{pair.output!r} is {value.dtype} {list(value.shape)} but input {pair.input!r} "
                                    f"is {before.dtype} {list(before.shape)}; an output fed back must have the "
                                    f"input's shape and dtype")
            state[pair.input] = value
    return {n: np.concatenate(v, axis=0) for n, v in collected.items()}, feeds


@dataclass
class StreamReplay:
    """Held-back sequences with the float model's streamed outputs: scores a candidate streamed with its own
    state, on the outputs that are not fed back. Quacks like :class:`trtq.runtime.replay.Replay` for the auto choice."""

    sequences: List[SequenceData]
    outputs: List[Dict[str, np.ndarray]]
    pairs: List[FeedbackPair]
    samples: int
    class_outputs: Tuple[str, ...] = ()
    judging: Dict[str, dict] = field(default_factory=dict)  # masks, feature and group axes (the signature's)

    @classmethod
    def collect(cls, model, sequences: Sequence[SequenceData], pairs: Sequence[FeedbackPair],
                threads: Optional[int] = None) -> "StreamReplay":
        from .base import OnnxRuntime

        runtime = OnnxRuntime(model, threads=threads)
        decided = decision_outputs(runtime, pairs)
        outputs = [stream(runtime, s, pairs, decided)[0] for s in sequences]
        return cls(list(sequences), outputs, list(pairs), sum(len(s.steps) for s in sequences),
                   judging=streamed_judging(model))

    def score(self, model, *, threads: Optional[int] = None):
        from ..compare.accumulate import compare_outputs
        from .base import OnnxRuntime

        runtime = OnnxRuntime(model, threads=threads)
        names = list(self.outputs[0])
        pairs = ((ref, stream(runtime, seq, self.pairs, names)[0]) for seq, ref in zip(self.sequences, self.outputs))
        return compare_outputs(pairs, names, class_outputs=self.class_outputs, **self.judging)


def streamed_judging(model) -> dict:
    """How streamed outputs (each step a sample, joined on axis 0) are judged: the signature's masks, feature
    axes and channel-group axes (:mod:`trtq.graph.signature`)."""
    from ..graph.signature import read_signature

    signature = read_signature(model)
    return dict(masks=signature.mask_axes(), feature_axes=signature.feature_axes(),
                group_axes=signature.group_axes())


def decision_outputs(runtime, pairs: Sequence[FeedbackPair]) -> List[str]:
    """The outputs of ``runtime`` that are not fed back (what a streaming model decides with)."""
    fed = {p.output for p in pairs}
    names = [name for name in runtime.output_names() if name not in fed]
    if not names:
        raise FeedbackError("--feedback: every output of the model is fed back; nothing is left to judge it by")
    return names


def calibration_steps(model, sequences: Sequence[SequenceData], pairs: Sequence[FeedbackPair], samples: Optional[int],
                      seed: int, threads: Optional[int] = None) -> List[Tuple[str, Feed]]:
    """The float model run along every sequence, its outputs fed back; ``samples`` steps (all: None) drawn with
    ``seed`` from those, as ``(id, complete feed at batch 1)``, in sequence order."""
    from .base import OnnxRuntime

    runtime = OnnxRuntime(model, threads=threads)
    total = sum(len(s.steps) for s in sequences)
    keep = None  # the steps drawn, chosen before streaming so only those feeds are kept in memory
    if samples is not None and samples < total:
        keep = set(np.random.default_rng(seed).choice(total, size=samples, replace=False).tolist())
    steps: List[Tuple[str, Feed]] = []
    offset = 0
    for sequence in sequences:
        _, feeds = stream(runtime, sequence, pairs, decision_outputs(runtime, pairs), keep_feeds=True)
        steps += [(f"{sequence.name}[{t}]", feed) for t, feed in enumerate(feeds) if keep is None or offset + t in keep]
        offset += len(feeds)
        del feeds
    return steps


def split_sequences(sequences: Sequence[SequenceData], holdout_steps: int
                    ) -> Tuple[List[SequenceData], List[SequenceData]]:
    """Held-back sequences (whole ones, until ``holdout_steps`` steps, at most a quarter of them) and the rest;
    a single sequence is both (the verdict then says nothing was held back)."""
    if len(sequences) < 2:
        return list(sequences), list(sequences)
    held, count = [], 0
    limit = max(1, len(sequences) // 4)
    for sequence in sequences:
        if count >= holdout_steps or len(held) >= limit:
            break
        held.append(sequence)
        count += len(sequence.steps)
    return held, list(sequences[len(held):])


def _step_source_class():
    from ..data.source import DataSource

    class StepSource(DataSource):
        """Calibration samples drawn from streamed steps (complete feeds at batch 1), re-batched like any source."""

        kind = "stream-steps"

        def __init__(self, spec, inputs, steps: List[Tuple[str, Feed]], description: str):
            super().__init__(spec, inputs)
            self._steps = steps
            self.num_samples = len(steps)
            self.description = description

        def sample_ids(self) -> List[str]:
            return [name for name, _ in self._steps]

        def _pieces(self):
            for name, feed in self._steps:
                yield [name], feed, name

        def _fingerprint_parts(self):
            import hashlib

            digest = hashlib.sha256()
            for name, feed in self._steps:
                digest.update(name.encode())
                for key in sorted(feed):
                    digest.update(np.ascontiguousarray(feed[key]).tobytes())
            yield digest.hexdigest()

    return StepSource


def step_source(spec, inputs, steps: List[Tuple[str, Feed]], sequences: int):
    """A :class:`~trtq.data.source.DataSource` over streamed steps (see :func:`calibration_steps`)."""
    description = (f"{len(steps)} steps drawn from {sequences} sequence{'s' if sequences != 1 else ''} of "
                   f"{spec.path}, run in FP32 with the state fed back")
    return _step_source_class()(spec, inputs, steps, description)


def feedback_pairs(model, feedback: Sequence) -> list:
    """``--feedback`` pairs (strings ``OUT=IN`` or :class:`~trtq.runtime.streaming.FeedbackPair`) checked against ``model``."""
    if not feedback:
        return []
    from .streaming import FeedbackPair, check_feedback, parse_feedback

    pairs = [p if isinstance(p, FeedbackPair) else parse_feedback([p])[0] for p in feedback]
    check_feedback(model, pairs)
    return pairs
