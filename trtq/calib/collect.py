"""Running a model over calibration data and streaming |x| histograms of its tensors.

The graph is augmented in memory so that the network inputs and the observed
floating-point activations (every one for a TensorRT cache, only the Q/DQ placement
points for an explicit model: :func:`qdq_tensors`) become outputs; ONNX Runtime runs it
on the CPU and each tensor's values go straight into a fixed-size :class:`AbsHistogram`.

Memory is a budget (``max_memory``): the activations alive at once (the run being binned
and the run ONNX Runtime is producing) are bounded by splitting each batch into smaller
runs and, when one sample's activations alone exceed the budget, by requesting the
outputs in groups: the graph cut into consecutive pieces that each give one group
(:mod:`trtq.calib.segments`, every node once per sample), or, where it cannot be cut, one
whole-model session per group. So peak memory is set by the budget, not by the number of
samples, the batch size or the model's tensor count.
"""

from __future__ import annotations

import copy
import logging
import os
import queue
import threading
from dataclasses import dataclass, field
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .. import defaults
from ..errors import DataError, ModelError
from ..graph.batch import feed_samples, take_samples
from ..progress import ProgressCallback, no_progress
from .histogram import AbsHistogram

log = logging.getLogger(__name__)

_FLOAT_TYPES = None  # filled lazily with onnx TensorProto float element types


def _float_elem_types() -> set:
    global _FLOAT_TYPES
    if _FLOAT_TYPES is None:
        from onnx import TensorProto

        _FLOAT_TYPES = {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16}
    return _FLOAT_TYPES


def activation_tensors(model) -> List[str]:
    """Names of the float tensors worth calibrating: graph inputs and node outputs.

    Outputs of Constant nodes and of nodes fed only by constants (shape arithmetic,
    folded weights) are skipped; tensors whose type cannot be inferred are kept and
    filtered by dtype when they are first seen at run time.
    """
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception as exc:  # inference is a nicety: fall back to run-time dtype checks
        log.debug("shape inference failed (%s); relying on run-time dtypes", exc)
        inferred = model
    types = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    floats = _float_elem_types()
    constant = {init.name for init in model.graph.initializer}
    names: List[str] = []
    seen = set()
    for vi in model.graph.input:
        if vi.name not in constant and types.get(vi.name) in floats:
            names.append(vi.name)
            seen.add(vi.name)
    for node in model.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Constant" or (inputs and all(i in constant for i in inputs)) or not inputs:
            constant.update(o for o in node.output if o)
            continue
        for out in node.output:
            if out and out not in seen and types.get(out, -1) in floats | {-1, 0}:
                names.append(out)
                seen.add(out)
    return names


#: Ops whose output holds exactly the values of their first input (reordered or reshaped): the
#: output's |x| histogram *is* the input's, so only the input is observed and the histogram is
#: shared. Saves exposing and binning them (54 of MiniLM's 234 float tensors).
SAME_VALUES_OPS = frozenset({"Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze", "Identity"})


def value_aliases(model, tensors: Sequence[str]) -> Dict[str, str]:
    """``{tensor: source}`` for tensors made by :data:`SAME_VALUES_OPS` from another of ``tensors``
    (chains followed to the first tensor that is not such a copy)."""
    wanted = set(tensors)
    direct = {}
    for node in model.graph.node:
        if node.op_type in SAME_VALUES_OPS and node.input and node.output and node.output[0] in wanted \
                and node.input[0] in wanted:
            direct[node.output[0]] = node.input[0]
    aliases = {}
    for name in direct:
        root, hops = direct[name], 0
        while root in direct and hops < len(direct):
            root, hops = direct[root], hops + 1
        aliases[name] = root
    return aliases


def augmented_model(model, tensors: Sequence[str]):
    """A copy of ``model`` whose outputs are exactly ``tensors`` (typed where known)."""
    import onnx

    augmented = onnx.ModelProto()
    augmented.CopyFrom(model)
    known = {vi.name: vi for vi in list(model.graph.value_info) + list(model.graph.output) + list(model.graph.input)}
    del augmented.graph.output[:]
    for name in tensors:
        vi = onnx.ValueInfoProto()
        if name in known:
            vi.CopyFrom(known[name])
        else:
            vi.name = name
        augmented.graph.output.append(vi)
    return augmented


def qdq_tensors(model, tensors: Optional[Sequence[str]] = None, forms: Sequence[str] = ("trt", "cpu")) -> List[str]:
    """The tensors a Q/DQ model needs an amax for: every placement point of ``forms`` (both by default).

    The union over the forms of :func:`trtq.graph.placement.plan_quantization` (TensorRT form:
    weighted-op inputs, residual Add inputs; the CPU form adds its extra outputs and scale
    sources), computed as if every float tensor had an amax, so the real table covers whatever
    the placement picks. In graph order. ``forms=("trt",)``: what auto's scoring reads (59 of
    YOLOv8n's 296 float tensors, a third of its activation values).
    """
    from ..graph.placement import plan_quantization
    from ..graph.qdq import node_names

    tensors = list(tensors) if tensors is not None else activation_tensors(model)
    everything = {name: 1.0 for name in tensors}
    names = node_names(model)
    needed = set()
    for target in forms:
        plan = plan_quantization(model, names, everything, target=target)
        needed.update(plan.activations)
        needed.update(plan.extra_outputs)
        needed.update(plan.scale_source.values())
    return [name for name in tensors if name in needed]


@dataclass
class CollectionReport:
    """What collection did besides the histograms (``collect_histograms(report=...)`` fills it)."""

    #: tensor -> why it is left out of the amax table (stays float): +-inf or huge by construction
    unquantized: Dict[str, str] = field(default_factory=dict)
    #: tensors observed (graph inputs included), and tensors that share an observed one's
    #: histogram (outputs of Reshape, Transpose, ...: the same values)
    observed: int = 0
    shared: int = 0
    #: samples per batch the data gave, and per ONNX Runtime run (lower when the budget asked)
    data_batch: Optional[int] = None
    run_batch: Optional[int] = None
    #: output groups per run (1: every observed tensor in one run)
    groups: int = 1
    #: the groups ran as consecutive pieces of the graph (:mod:`trtq.calib.segments`: every node once per
    #: sample), not as one whole-model run per group
    cut: bool = False
    #: activation bytes of one sample over all observed tensors, and the budget for them
    bytes_per_sample: Optional[int] = None
    activation_budget: Optional[int] = None
    #: why the budget could not be met (one tensor of one sample is larger), else None
    over_budget: Optional[str] = None
    #: with ``collect_histograms(half_snapshot=True)``: the histograms as they stood after the first
    #: ``half_samples`` samples (about half of ``samples``, the samples binned in all): the convergence check
    half: Optional[Dict[str, AbsHistogram]] = field(default=None, repr=False)
    half_samples: int = 0
    #: with ``collect_histograms(early_snapshot=N)``: the histograms after the first ``early_samples`` samples
    #: (the first batch boundary at or past N): what auto's equalization trial compares a rewrite with
    early: Optional[Dict[str, AbsHistogram]] = field(default=None, repr=False)
    early_samples: int = 0
    samples: int = 0


class HistogramCollector:
    """Observe batches of tensors into one :class:`AbsHistogram` per tensor.

    Every value is binned by default, as TensorRT's calibrator does. With
    ``max_binned`` set, a tensor with more values than that in one batch has an evenly
    strided sample of them binned (the offset moves from batch to batch), while its
    exact max |x| still sets the histogram's range: opt-in, since on YOLOv8n it moved
    the entropy amax of 5% of the tensors by more than 10%.

    Tensors holding +-inf or values of at least :data:`trtq.defaults.UNQUANTIZED_ABS`
    (attention-mask biases, min-float fills) are dropped and recorded in
    ``unquantized``; NaN raises :class:`DataError`.
    """

    def __init__(self, num_bins: int = defaults.NUM_BINS, max_binned: Optional[int] = defaults.HIST_MAX_BINNED,
                 huge: float = defaults.UNQUANTIZED_ABS):
        self.num_bins = num_bins
        self.max_binned = max_binned
        self.huge = huge
        self.histograms: Dict[str, AbsHistogram] = {}
        self.skipped: set = set()
        self.unquantized: Dict[str, str] = {}
        self.values_seen: Dict[str, int] = {}

    def observe(self, tensors: Mapping[str, np.ndarray], batch_index: int = 0) -> None:
        for name, values in tensors.items():
            if name in self.skipped or name in self.unquantized:
                continue
            values = np.asarray(values)
            if values.dtype.kind != "f":
                self.skipped.add(name)
                continue
            hist = self.histograms.get(name)
            if hist is None:
                hist = self.histograms[name] = AbsHistogram(self.num_bins)
            try:
                if self.max_binned and values.size > self.max_binned:
                    flat = values.reshape(-1)
                    hist.cover(max(float(flat.max()), -float(flat.min())))
                    stride = -(-flat.size // self.max_binned)
                    hist.update(flat[batch_index % stride::stride])
                else:
                    hist.update(values)
            except ValueError:
                if np.isnan(values).any():
                    raise DataError(
                        f"tensor {name!r} holds NaN in calibration batch {batch_index + 1}: the model computes "
                        "NaN on this data. Check the inputs (images: the preprocessing scale, mean and std; "
                        "token ids: within the vocabulary, with a matching attention mask) or the operation "
                        "that makes it (0/0, log or sqrt of a negative value)") from None
                self._leave_float(name, "holds +-inf (a mask bias or fill value by construction)")
                continue
            if hist.max_abs >= self.huge:
                self._leave_float(name, f"holds |x| up to {hist.max_abs:.3g} (>= {self.huge:.3g}: a mask bias or "
                                        "fill value by construction)")
                continue
            self.values_seen[name] = self.values_seen.get(name, 0) + values.size

    def prime(self, tensors: Mapping[str, np.ndarray]) -> None:
        """Note these values' max |x| (nothing counted) for :meth:`set_ranges`.

        Used on the first batch when it runs in parts: the ranges then start at the whole
        batch's max, as if it had run at once. Non-finite values are left to :meth:`observe`.
        """
        from .histogram import _max_abs

        peaks = self.__dict__.setdefault("_first_peaks", {})
        for name, values in tensors.items():
            values = np.asarray(values)
            if name in self.skipped or values.dtype.kind != "f" or values.size == 0:
                continue
            peak = _max_abs(np.ascontiguousarray(values).reshape(-1))
            if np.isfinite(peak):
                peaks[name] = max(peaks.get(name, 0.0), peak)

    def set_ranges(self) -> None:
        """Start each primed histogram's range at the max |x| noted by :meth:`prime`."""
        for name, peak in self.__dict__.pop("_first_peaks", {}).items():
            hist = self.histograms.get(name)
            if hist is None:
                hist = self.histograms[name] = AbsHistogram(self.num_bins)
            hist.cover(peak)

    def _leave_float(self, name: str, reason: str) -> None:
        self.histograms.pop(name, None)
        self.values_seen.pop(name, None)
        self.unquantized[name] = reason
        log.debug("tensor %r stays float: %s", name, reason)


#: Runs of activations the budget is divided by: the one being binned, the one ONNX Runtime
#: produces, ONNX Runtime's own buffers of it while they are handed to numpy, and its working
#: memory (measured on YOLOv8n at 463 MB per run: peak RSS = process + 3.2 runs; 4 leaves room).
ALIVE_RUNS = 4
#: The activation budget never drops below this (a budget smaller than the process itself).
MIN_ACTIVATION_BUDGET = 1 << 20
#: ... nor below this share of ``max_memory``: a process that already holds most of it (a
#: notebook, a benchmark, a service calibrating in-process) would otherwise leave activations a
#: few KiB per run, split into one output group per tensor, each group a session of the whole
#: model: memory then grows with the groups instead of shrinking (MiniLM in a 3 GB process,
#: --max-memory 1.5 GiB: 10.6 GB of sessions).
MIN_ACTIVATION_SHARE = 0.25


#: glibc's M_MMAP_THRESHOLD during calibration: activation arrays of 1 MiB or more get their own
#: mapping, returned to the OS when freed. With glibc's default (a threshold that rises to 32 MiB)
#: they come from the heap, which fragments as runs of different sizes come and go: YOLOv8n's peak
#: RSS then grew from 1057 MiB at 250 samples to 1282 MiB at 1000; with it, 1031 and 1042, at the
#: same speed. (ONNX Runtime's arena off was flat too, but 47% slower.)
MMAP_THRESHOLD = 1 << 20
_M_MMAP_THRESHOLD = -3


def _bound_heap_growth() -> None:
    """Large arrays from mmap (glibc only; process-wide and kept, harmless elsewhere)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc: nothing to tune
        return
    if not mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; peak memory may drift with heap fragmentation")


def _current_rss() -> int:
    """Resident memory of this process now, in bytes (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def estimate_bytes_per_sample(model, tensors: Sequence[str], feed: Mapping[str, np.ndarray],
                              specs: Optional[Sequence] = None) -> Dict[str, int]:
    """Bytes of one sample of each tensor, from shape inference at the feed's shapes (batch 1).

    Tensors whose shape stays unknown get the largest known size (erring high keeps the
    budget); the sizes are corrected from the first run's real outputs.
    """
    import onnx

    from ..graph.signature import input_specs

    axes = {s.name: s.batch_axis if s.batched else None for s in (specs if specs is not None else input_specs(model))}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for vi in probe.graph.input:
        if vi.name in feed and vi.type.HasField("tensor_type"):
            shape = list(np.asarray(feed[vi.name]).shape)
            if axes.get(vi.name) is not None and len(shape) > axes[vi.name]:
                shape[axes[vi.name]] = 1
            dims = vi.type.tensor_type.shape.dim
            if len(dims) == len(shape):
                for dim, size in zip(dims, shape):
                    dim.Clear()
                    dim.dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    except Exception as exc:  # an estimate only: fall back to the first run's sizes
        log.debug("shape inference at the data's shapes failed (%s)", exc)
        inferred = probe
    sizes: Dict[str, int] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input):
        tt = vi.type.tensor_type if vi.type.HasField("tensor_type") else None
        if tt is None or not tt.HasField("shape"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        if any(d < 0 for d in dims):
            continue
        try:
            itemsize = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type).itemsize
        except Exception:  # noqa: BLE001 -- unknown element type
            itemsize = 4
        sizes[vi.name] = int(np.prod(dims, dtype=np.int64)) * itemsize
    largest = max(sizes.values(), default=0) or 4
    return {name: sizes.get(name, largest) for name in tensors}


def plan_runs(sizes: Sequence[int], budget: int, batch: int, can_split: bool, alive: int = 2
              ) -> Tuple[int, List[List[int]], Optional[str]]:
    """Samples per run and output groups so that ``alive`` runs of activations fit ``budget``.

    ``sizes``: bytes of one sample per tensor. Lowers the batch first (ONNX Runtime runs
    the model once per run), then splits the tensors into groups (one run per group, so
    the model runs once per group). Returns ``(run_batch, groups, over_budget)``; the
    last is a reason when even one tensor of one sample exceeds the budget.
    """
    per_run = max(1, budget // alive)
    total = sum(sizes)
    if total * batch <= per_run or not sizes:
        return batch, [list(range(len(sizes)))], None
    if can_split:
        fit = per_run // max(1, total)
        if fit >= 1:
            return min(batch, fit), [list(range(len(sizes)))], None
        run_batch = 1
    else:
        run_batch = batch
    groups: List[List[int]] = []
    current: List[int] = []
    used = 0
    over = None
    for index, size in enumerate(sizes):
        need = size * run_batch
        if current and used + need > per_run:
            groups.append(current)
            current, used = [], 0
        if need > per_run and over is None:
            over = f"one tensor needs {need / 2**20:.0f} MiB per run, more than the budget allows"
        current.append(index)
        used += need
    if current:
        groups.append(current)
    return run_batch, groups, over


@dataclass
class _Run:
    """One ONNX Runtime run per part of a batch: a session of the whole model asked for one output group, or
    of one piece of the graph (its ``inputs`` from the data and from earlier pieces' ``carry``)."""

    session: object
    outputs: List[str]
    observed: List[str]
    inputs: Optional[List[str]] = None
    carry: Sequence[str] = ()
    release: Sequence[str] = ()


def _split(feed: Mapping[str, np.ndarray], size: int, specs) -> Iterator[Dict[str, np.ndarray]]:
    count = feed_samples(feed, specs) if feed else 0
    if count <= size:
        yield dict(feed)
        return
    for start in range(0, count, size):
        yield take_samples(feed, specs, slice(start, start + size))


EARLY_MARKER = -2  # the worker's queue item for report.early (-1: a half-way snapshot)


def _first_snapshot(total_samples: Optional[int]) -> Optional[int]:
    """Samples after which the half-way snapshot is taken: half of a known total, else 1 (then doubling)."""
    if total_samples is None:
        return 1
    return total_samples // 2 if total_samples >= 2 else None


def collect_histograms(
    model,
    batches: Iterable[Mapping[str, np.ndarray]],
    *,
    num_bins: int = defaults.NUM_BINS,
    total_samples: Optional[int] = None,
    threads: Optional[int] = None,
    max_binned: Optional[int] = defaults.HIST_MAX_BINNED,
    tensors: Optional[Sequence[str]] = None,
    max_memory: Optional[int] = defaults.CALIB_MAX_MEMORY,
    report: Optional[CollectionReport] = None,
    half_snapshot: bool = False,
    progress: ProgressCallback = no_progress,
    inputs: Optional[Sequence] = None,
    early_snapshot: Optional[int] = None,
) -> Dict[str, AbsHistogram]:
    """Run ``model`` (an ONNX ModelProto) over ``batches`` and histogram its float tensors.

    ``tensors``: the ones to observe (default: every float activation and input, as a
    TensorRT cache needs; :func:`qdq_tensors` for a Q/DQ model). ``max_memory``: bytes
    the process may use (None: no bound); the activations alive at once get what the
    process does not already hold, and at least MIN_ACTIVATION_SHARE of it. ``report``: filled with what was left float, the
    samples per run and the output groups. Binning one run overlaps with ONNX Runtime
    producing the next (the compiled kernel releases the GIL); at most two runs of
    activations are alive at once. ``inputs``: the model's input specs with their batch axes
    (default: as :func:`~trtq.graph.model.input_specs` infers them): a batch is cut along them.
    ``half_snapshot``: also keep a copy of the histograms
    at the first batch boundary at or past half of ``total_samples`` (``report.half``; a
    copy of fixed-size histograms, no extra pass; with an unknown total, at the last
    power-of-two sample count at or below half). ``early_snapshot``: also keep a copy at the first batch
    boundary at or past that many samples, when more samples follow (``report.early``).
    """
    # Long because one streaming pass over the data (ranges, then histograms, with memory bounds and the half-
    # way snapshot) whose buffers must not outlive the loop.
    from ..graph.signature import input_specs
    from ..ort import create_session, ort_reason

    specs = list(inputs) if inputs is not None else input_specs(model)

    report = report if report is not None else CollectionReport()
    _bound_heap_growth()
    every = activation_tensors(model)
    if tensors is None:
        observed_names = every
    else:
        known = set(every)
        unknown = [t for t in tensors if t not in known]
        if unknown:
            raise ModelError(f"cannot observe {', '.join(repr(t) for t in unknown[:5])}: not float activations of "
                             f"the model (see `trtq info` for tensor names)")
        wanted_set = set(tensors)
        observed_names = [t for t in every if t in wanted_set]
    aliases = value_aliases(model, every)
    requested = observed_names
    observed_names = list(dict.fromkeys(aliases.get(t, t) for t in requested))
    order_every = {name: i for i, name in enumerate(every)}
    observed_names.sort(key=lambda t: order_every.get(t, len(order_every)))
    wanted = set(observed_names)
    input_names = {vi.name for vi in model.graph.input}
    outputs_wanted = [t for t in observed_names if t not in input_names]
    static_batch = any(s.static_batch() for s in specs)
    report.observed = len(observed_names)
    report.shared = len(requested) - len([t for t in requested if t not in aliases])
    collector = HistogramCollector(num_bins, max_binned)

    iterator = iter(batches)
    first = next(iterator, None)
    if first is None:
        raise DataError("calibration saw no data: the data source yielded no batches")
    data_batch = feed_samples(first, specs) if first else 1
    report.data_batch = data_batch

    sizes = estimate_bytes_per_sample(model, outputs_wanted, first, specs) if outputs_wanted else {}
    sessions: List[_Run] = []
    baseline: List[int] = []  # what the process holds before any activation: measured once

    def plan(sizes_now: Mapping[str, int]) -> Tuple[int, List[List[str]]]:
        if max_memory is None:
            report.activation_budget = None
            return data_batch, [outputs_wanted]
        if not baseline:  # the process now, plus the copy of the weights each ONNX Runtime session keeps
            baseline.append(_current_rss() + model.ByteSize())
        budget = max(int(max_memory) - baseline[0], int(MIN_ACTIVATION_SHARE * max_memory),
                     MIN_ACTIVATION_BUDGET)
        report.activation_budget = budget
        per_tensor = [int(sizes_now.get(t, 0)) for t in outputs_wanted]
        run_batch, groups, over = plan_runs(per_tensor, budget, data_batch, can_split=not static_batch,
                                            alive=ALIVE_RUNS)
        report.over_budget = over
        return run_batch, [[outputs_wanted[i] for i in group] for group in groups]

    def open_sessions(groups: List[List[str]]) -> None:
        from .segments import cut_segments, value_types

        sessions.clear()
        pieces = cut_segments(model, groups, value_types(model)) if len(groups) > 1 else None
        report.cut = bool(pieces)
        for piece in pieces or ():
            session = create_session(piece.model, threads=threads, optimization="all", spinning=False)
            sessions.append(_Run(session, piece.outputs, piece.observed, piece.inputs, piece.carry, piece.release))
        for group in groups if not pieces else ():
            session = create_session(augmented_model(model, group), threads=threads, optimization="all",
                                     spinning=False)
            names = [o.name for o in session.get_outputs()]
            sessions.append(_Run(session, names, names))

    report.bytes_per_sample = int(sum(sizes.values()))
    run_batch, groups = plan(sizes)
    if outputs_wanted:
        open_sessions(groups)
    else:
        sessions.append(_Run(None, [], []))
    measured = False

    work: "queue.Queue" = queue.Queue()
    slots = threading.Semaphore(2)  # runs of activations alive: one being binned, one being produced
    failure: List[BaseException] = []
    snapshots: List[Tuple[int, Dict[str, AbsHistogram]]] = []  # (samples, histograms): the last two kept
    early: List[Tuple[int, Dict[str, AbsHistogram]]] = []

    def worker() -> None:
        while True:
            item = work.get()
            if item is None:
                return
            index, observed = item
            try:
                if index == EARLY_MARKER:  # every batch before it has been binned
                    early.append((observed, copy.deepcopy(collector.histograms)))
                elif index < 0:  # a half-way snapshot marker
                    snapshots.append((observed, copy.deepcopy(collector.histograms)))
                    del snapshots[:-2]
                elif not failure:
                    collector.observe(observed, index)
            except BaseException as exc:  # re-raised in the caller's thread
                failure.append(exc)
            finally:
                del observed, item
                slots.release()

    def run_part(run: _Run, part: Mapping[str, np.ndarray], carried: Dict[str, np.ndarray], index: int) -> list:
        """``run``'s observed outputs on ``part``; a piece of the graph also takes from and adds to ``carried``."""
        feed = dict(part) if run.inputs is None else {n: carried[n] if n in carried else part[n] for n in run.inputs}
        try:
            outputs = run.session.run(run.outputs, feed)
        except Exception as exc:  # ORT raises its own exception types
            raise ModelError(f"ONNX Runtime failed on calibration batch {index + 1}: {ort_reason(exc)}") from None
        del feed
        if run.inputs is None:
            return outputs
        values = dict(zip(run.outputs, outputs))
        carried.update((n, values[n]) for n in run.carry)
        for name in run.release:
            carried.pop(name, None)
        return [values[n] for n in run.observed]

    measured_at: List[float] = []  # input elements per sample where ``sizes`` were measured

    def elements_per_sample(feed: Mapping[str, np.ndarray]) -> float:
        count = max(1, feed_samples(feed, specs)) if feed else 1
        return max(1.0, sum(np.asarray(a).size for a in feed.values()) / count)

    def measure(names: List[str], part: Mapping[str, np.ndarray], outputs: list) -> None:
        """Real bytes per sample, kept from the longest samples seen (the budget scales from them)."""
        elements = elements_per_sample(part)
        if measured_at and elements < measured_at[0]:
            return
        count = max(1, feed_samples(part, specs))
        sizes.update({n: out.nbytes // count for n, out in zip(names, outputs)})
        measured_at[:] = [elements]

    def runs_for(feed: Mapping[str, np.ndarray]) -> int:
        """Samples per run for this batch: its samples may be longer than the measured ones
        (padded token batches), so the sizes scale with the input's length, squared when it
        grew (attention scores), linearly when it shrank: never below the real size."""
        if max_memory is None or static_batch or not measured_at or not outputs_wanted:
            return run_batch
        ratio = elements_per_sample(feed) / measured_at[0]
        factor = ratio * ratio if ratio > 1 else ratio
        largest = max(sum(sizes.get(t, 0) for t in group) for group in groups) * factor
        per_run = max(1, (report.activation_budget or 1) // ALIVE_RUNS)
        return max(1, min(feed_samples(feed, specs), int(per_run // max(1.0, largest))))

    def replan() -> None:
        nonlocal run_batch, groups
        report.bytes_per_sample = int(sum(sizes.values()))
        new_batch, new_groups = plan(sizes)
        if new_groups != groups:
            groups = new_groups
            open_sessions(groups)
        if new_batch != run_batch:
            log.debug("activations are %d bytes per sample: %d samples per run, %d group(s)",
                      report.bytes_per_sample, new_batch, len(groups))
        run_batch = new_batch

    # The first batch sets each histogram's range (its max |x|). When it does not fit in one run,
    # a max-only pass over it comes first, so every range is the one the whole batch gives and the
    # histograms do not depend on the budget (one extra run of the first batch).
    if outputs_wanted and (run_batch < data_batch or len(sessions) > 1):
        for part in _split(first, run_batch, specs):
            collector.prime({name: part[name] for name in part if name in wanted})
            carried: Dict[str, np.ndarray] = {}
            for run in sessions:
                outputs = run_part(run, part, carried, 0)
                measure(run.observed, part, outputs)
                collector.prime(dict(zip(run.observed, outputs)))
                del outputs
            del carried
        collector.set_ranges()
        replan()
        measured = True

    thread = threading.Thread(target=worker, name="trtq-histograms", daemon=True)
    thread.start()
    next_snapshot = _first_snapshot(total_samples) if half_snapshot else None
    done = 0
    index = 0
    lowest = data_batch
    try:
        feed = first
        while feed is not None and not failure:
            this_run = runs_for(feed) if measured else run_batch
            if this_run < feed_samples(feed, specs):
                lowest = min(lowest, this_run)
            for part in _split(feed, this_run, specs):
                carried = {}
                for position, run in enumerate(sessions):
                    slots.acquire()
                    if failure:
                        slots.release()
                        break
                    observed = {name: part[name] for name in part if name in wanted} if position == 0 else {}
                    if run.session is not None:
                        try:
                            outputs = run_part(run, part, carried, index)
                        except BaseException:
                            slots.release()
                            raise
                        measure(run.observed, part, outputs)
                        observed.update(zip(run.observed, outputs))
                        del outputs
                    work.put((index, observed))
                    del observed
                del carried
                if failure:
                    break
                if not measured:
                    measured = True
                    if outputs_wanted:
                        replan()
            index += 1
            done += feed_samples(feed, specs) if feed else 0
            progress(done, total_samples)
            feed = next(iterator, None)
            if next_snapshot is not None and feed is not None and not failure and done >= next_snapshot:
                slots.acquire()  # the worker releases one slot per item, markers included
                work.put((-1, done))
                next_snapshot = None if total_samples is not None else max(2 * next_snapshot, 2 * done)
            if early_snapshot is not None and feed is not None and not failure and done >= early_snapshot:
                slots.acquire()
                work.put((EARLY_MARKER, done))
                early_snapshot = None
    finally:
        work.put(None)
        thread.join()
    if failure:
        raise failure[0]
    report.samples = done
    usable = [(samples, hists) for samples, hists in snapshots
              if samples < done and (total_samples is not None or 2 * samples <= done)]
    if usable:
        report.half_samples, report.half = usable[-1]
    report.run_batch = min(run_batch, lowest)
    run_batch = report.run_batch
    report.groups = len(sessions)
    for name in requested:  # tensors that are copies of an observed one share its histogram
        root = aliases.get(name)
        if root is None:
            continue
        if root in collector.histograms:
            collector.histograms[name] = copy.deepcopy(collector.histograms[root])
        elif root in collector.unquantized:
            collector.unquantized[name] = collector.unquantized[root]
    requested_set = set(requested)
    for name in [n for n in collector.histograms if n not in requested_set]:
        del collector.histograms[name]  # a source observed only for its copies
    report.unquantized = dict(collector.unquantized)
    if run_batch < data_batch:
        # Information, not a warning: the histograms are the same as with whole batches, only slower to make.
        log.info("calibration ran as few as %d sample(s) at a time instead of batches of %d to stay within "
                 "the memory budget of %.0f MiB (--max-memory); the histograms are the same", run_batch,
                 data_batch, (max_memory or 0) / 2**20)
    if report.over_budget:
        log.warning("the memory budget of %.0f MiB (--max-memory) cannot be met: %s", (max_memory or 0) / 2**20,
                    report.over_budget)
    if len(sessions) > 1 and report.cut:
        log.info("one sample's activations exceed the memory budget of %.0f MiB (--max-memory): the graph ran in %d "
                 "consecutive pieces, each giving its share of the outputs (every node once per sample)",
                 (max_memory or 0) / 2**20, len(sessions))
    elif len(sessions) > 1:
        log.warning("one sample's activations exceed the memory budget of %.0f MiB (--max-memory): the outputs "
                    "were requested in %d groups, running the model %d times per batch", (max_memory or 0) / 2**20,
                    len(sessions), len(sessions))
    if not collector.histograms and not collector.unquantized:
        raise DataError("calibration saw no data: the data source yielded no batches")
    if early:
        report.early_samples, report.early = early[0]
    for snapshot in ("half", "early"):  # the same names as the result: copies share their source's histogram
        taken = getattr(report, snapshot)
        if taken is not None:
            setattr(report, snapshot, {name: taken.get(aliases.get(name, name)) for name in collector.histograms
                                       if taken.get(aliases.get(name, name)) is not None})
    order = {name: i for i, name in enumerate(every)}
    return dict(sorted(collector.histograms.items(), key=lambda item: order.get(item[0], len(order))))
