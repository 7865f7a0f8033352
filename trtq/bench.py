"""Latency and throughput of ONNX models on ONNX Runtime (CPU).

For every model and batch size: ``warmup`` untimed runs, then ``iterations`` timed
runs of the same batch; the row holds latency p50/p90/p99/mean in milliseconds and
throughput = batch size × 1000 / mean latency (samples per second). Inputs are random
data of each input's shape and dtype, or real samples (``data=``). A model whose
batch dimension is fixed cannot run other batch sizes: those rows are kept, skipped,
with a note saying why.

TensorRT rows (``.engine``/``.plan`` files, or ``backend="trt"``) are the benchmark flow's
(:mod:`trtq.pipeline.benchmarking`); this module imports no backend.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import defaults
from .errors import DataError, ModelError, TrtqError
from .graph.model import infer_precision
from .host import available_memory, cpu_int8_instructions, cpu_name
from .ort import time_session
from .progress import ProgressCallback, no_progress
from .report import BenchResult, throughput_from_latency

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Shapes = Mapping[str, Sequence[int]]

ORT_BACKEND = "ort-cpu"


def model_size_bytes(path: PathLike, model=None) -> int:
    """Bytes on disk: the file plus any external-data files its initializers point to."""
    path = Path(path)
    total = path.stat().st_size
    if model is None:
        return total
    locations = set()
    for init in model.graph.initializer:
        if init.data_location == 1:  # TensorProto.EXTERNAL
            for entry in init.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    for location in locations:
        external = path.parent / location
        if external.exists():
            total += external.stat().st_size
    return total


def parse_shapes(text: Optional[str], option: str = "--shape") -> Dict[str, Tuple[int, ...]]:
    """``"images:1x3x320x320,mask:1x320"`` -> ``{"images": (1, 3, 320, 320), "mask": (1, 320)}``.

    The name is split from the shape at the last ``:``, so names with colons work.
    Empty or ``None`` text gives ``{}``. The one parser of shape options (bench, build).
    """
    shapes: Dict[str, Tuple[int, ...]] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, sep, dims = part.rpartition(":")
        try:
            values = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            values = ()
        if not sep or not name.strip() or not values or min(values) < 1:
            raise TrtqError(f"{option}: cannot read input shape {part!r}; write NAME:DIMS like images:1x3x640x640")
        shapes[name.strip()] = values
    return shapes


def parse_batch_sizes(text: str) -> Tuple[int, ...]:
    """``"1,8,32"`` -> ``(1, 8, 32)`` (positive, duplicates dropped, order kept)."""
    sizes: List[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        if not part.isdigit() or int(part) < 1:
            raise TrtqError(f"batch sizes must be positive integers separated by commas, got {part!r} in {text!r}")
        if int(part) not in sizes:
            sizes.append(int(part))
    if not sizes:
        raise TrtqError("no batch sizes given")
    return tuple(sizes)


# ---------------------------------------------------------------------------------------------
# Inputs


def batch_refusal(specs, batch_size: int) -> str:
    """Why the model cannot take ``batch_size`` (a fixed batch dimension), or ``""``. Inputs without a
    batch axis (scalars, configuration) go unchanged with every batch size."""
    for spec in specs:
        if spec.static_batch() and spec.batch_dim != batch_size:
            return (f"batch dimension of input {spec.name!r} (axis {spec.batch_axis}) is fixed at {spec.batch_dim}; "
                    "export the model with a dynamic batch axis to run other batch sizes")
    if specs and not any(spec.batched for spec in specs) and batch_size != 1:
        return "no input has a batch axis; the model runs one sample at a time"
    return ""


def _batch_shape(spec, batch_size: int, shapes: Optional[Shapes]) -> Tuple[int, ...]:
    """Shape of one input at ``batch_size`` (on the input's batch axis): the model's static dims, or those
    given in ``shapes`` (whose batch axis is replaced by ``batch_size``)."""
    if shapes and spec.name in shapes:
        given = tuple(int(d) for d in shapes[spec.name])
        if len(given) != spec.rank:
            raise TrtqError(f"--shape for {spec.name!r} has {len(given)} dimensions, the input has {spec.rank} "
                            f"({spec.shape_text() or 'a scalar'})")
    else:
        given = tuple(int(d) if spec.is_static(axis) else 1 for axis, d in enumerate(spec.shape))
    if not spec.batched:
        return given
    return given[:spec.batch_axis] + (batch_size,) + given[spec.batch_axis + 1:]


def check_inputs_resolvable(specs, shapes: Optional[Shapes], model_name: str) -> None:
    """Random inputs need every non-batch dimension: static in the model or given by ``shapes``."""
    for spec in specs:
        if shapes and spec.name in shapes:
            continue
        rest = [i for i in range(spec.rank) if not (spec.batched and i == spec.batch_axis)]
        unknown = [str(spec.shape[i] or "?") for i in rest if not spec.is_static(i)]
        if unknown:
            example = "x".join("1" if spec.batched and i == spec.batch_axis else
                               str(d) if spec.is_static(i) else "N" for i, d in enumerate(spec.shape))
            raise ModelError(f"{model_name}: input {spec.name!r} has dynamic dimensions besides the batch "
                             f"({', '.join(unknown)}); give them with --shape {spec.name}:{example} "
                             "(or shapes= in the API), or bench on real samples with --data")


def check_shape_names(shapes: Optional[Shapes], models: Sequence[Tuple[str, Sequence]]) -> None:
    """A ``--shape`` must name an input of at least one model (a typo would otherwise be ignored)."""
    if not shapes:
        return
    known = {spec.name for _, specs in models for spec in specs}
    unknown = [name for name in shapes if name not in known]
    if unknown:
        listing = ", ".join(sorted(known)) or "none"
        raise TrtqError(f"--shape names input(s) {', '.join(repr(n) for n in unknown)}, which "
                        f"{'the model does' if len(models) == 1 else 'none of the models does'} not have "
                        f"(inputs: {listing})")


def _per_sample_bytes(type_proto) -> Optional[int]:
    """Bytes one sample of a tensor takes (axis 0 is the batch), or None when a dim is unknown."""
    from onnx import helper

    tensor = type_proto.tensor_type
    if not tensor.elem_type or not tensor.HasField("shape") or len(tensor.shape.dim) == 0:
        return None
    size = int(np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).itemsize)
    for dim in list(tensor.shape.dim)[1:]:
        if not dim.HasField("dim_value") or dim.dim_value <= 0:
            return None
        size *= int(dim.dim_value)
    return size


def memory_estimate(model, specs, shapes: Optional[Shapes] = None) -> Optional[int]:
    """A lower bound of the bytes one sample costs while the model runs: the inputs and outputs held by
    the caller plus the largest layer's inputs and outputs (alive together). None when unknown."""
    import onnx
    from onnx import helper, shape_inference

    # the graph without its weights (shapes only; a copy of a large model's weights would cost memory)
    inits = {i.name for i in model.graph.initializer}
    inputs = []
    for source in model.graph.input:
        if source.name in inits:
            continue
        vi = onnx.ValueInfoProto()
        vi.CopyFrom(source)
        given = (shapes or {}).get(vi.name)
        if given and len(given) == len(vi.type.tensor_type.shape.dim):
            for dim, value in list(zip(vi.type.tensor_type.shape.dim, given))[1:]:
                dim.Clear()
                dim.dim_value = int(value)
        inputs.append(vi)
    inputs += [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)) for i in model.graph.initializer]
    probe = helper.make_model(helper.make_graph(list(model.graph.node), "probe", inputs, list(model.graph.output)),
                              opset_imports=list(model.opset_import))
    probe.ir_version = model.ir_version
    try:
        inferred = shape_inference.infer_shapes(probe, strict_mode=False)
    except Exception:  # noqa: BLE001 -- an estimate, not a check: unknown shapes estimate nothing
        inferred = probe
    sizes = {}
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name not in inits:
            sizes[vi.name] = _per_sample_bytes(vi.type)
    io_names = [s.name for s in specs] + [o.name for o in model.graph.output]
    held = sum(sizes.get(name) or 0 for name in io_names)  # a tensor of unknown shape counts 0: a lower bound
    layer = 0
    for node in model.graph.node:
        names = [n for n in list(node.input) + list(node.output) if n and n not in inits and n not in io_names]
        layer = max(layer, sum(sizes.get(n) or 0 for n in names))
    return (held + layer) or None


def _gb(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale / 10:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} B"


def check_memory(model, specs, batch_size: int, shapes: Optional[Shapes], model_name: str,
                 available: Optional[int] = None) -> None:
    """Refuse, before any run, a batch size whose buffers alone cannot fit in the memory left."""
    available = available_memory() if available is None else available
    if available is None:
        return
    per_sample = memory_estimate(model, specs, shapes)
    if not per_sample:
        return
    need = per_sample * batch_size
    if need > available:
        fits = max(1, int(available // per_sample))
        raise TrtqError(f"{model_name} at batch {batch_size} needs at least {_gb(need)} of memory (inputs, outputs "
                        f"and its largest layer, {_gb(per_sample)} per sample), more than the {_gb(available)} "
                        f"available; use --batch-sizes up to about {fits}")


def random_feed(specs, batch_size: int, shapes: Optional[Shapes] = None, seed: int = defaults.SEED
                ) -> Tuple[Optional[Dict[str, np.ndarray]], str]:
    """Random inputs for one batch: floats uniform in [0, 1), integers 0, booleans False.

    Returns ``(None, reason)`` when the model cannot take this batch size, or when an integer or boolean input has
    no batch axis: that is configuration (a mode, a rate, a count) whose value decides what the model computes,
    which 0 would choose silently.
    """
    why = batch_refusal(specs, batch_size)
    if why:
        return None, why
    for spec in specs:
        if not spec.batched and spec.dtype.kind in "iub":
            return None, (f"input {spec.name!r} is an integer configuration input (no batch axis): random data would "
                          "time whatever its value 0 selects; give real inputs with --data")
    rng = np.random.default_rng(seed)
    feed: Dict[str, np.ndarray] = {}
    for spec in specs:
        shape = _batch_shape(spec, batch_size, shapes)
        if spec.dtype.kind == "f":
            feed[spec.name] = rng.random(shape, dtype=np.float32).astype(spec.dtype, copy=False)
        else:
            feed[spec.name] = np.zeros(shape, dtype=spec.dtype)
    return feed, ""


class SampleFeeds:
    """Real samples for benchmarking: read once, then sliced (or tiled) to any batch size."""

    def __init__(self, data, specs, max_batch: int):
        from .data import open_source
        from .data.spec import DataSpec
        from .graph.batch import feed_samples
        from .ort import batch_inputs

        spec = data if isinstance(data, DataSpec) else DataSpec(path=str(data))
        spec = replace(spec, samples=max_batch if spec.samples is None else min(spec.samples, max_batch),
                       batch_size=max_batch, shuffle=False)
        source = open_source(spec, specs)
        self.description = getattr(source, "description", str(spec.path))
        parts: Dict[str, List[np.ndarray]] = {}
        count = 0
        for item in source:
            feed = batch_inputs(item)
            for name, array in feed.items():
                parts.setdefault(name, []).append(np.asarray(array))
            count += feed_samples(feed, source.inputs)
            if count >= max_batch:
                break
        if not count:
            raise DataError(f"{self.description}: no samples to benchmark with")
        self.specs = {s.name: s for s in source.inputs}
        self.arrays = {}
        for name, chunks in parts.items():
            spec = self.specs[name]
            if not spec.batched:
                self.arrays[name] = chunks[0]  # the same for every sample (the source checks it)
                continue
            joined = np.concatenate(chunks, axis=spec.batch_axis)
            self.arrays[name] = np.take(joined, np.arange(min(count, max_batch)), axis=spec.batch_axis)
        self.count = min(count, max_batch)

    def feed(self, specs, batch_size: int) -> Tuple[Optional[Dict[str, np.ndarray]], str]:
        """Inputs for ``batch_size`` samples; fewer real samples than that are repeated (said in the note)."""
        why = batch_refusal(specs, batch_size)
        if why:
            return None, why
        note = ""
        if self.count < batch_size:
            note = f"{self.count} real samples repeated to fill the batch"
        index = np.arange(batch_size) % self.count
        # np.require keeps an unbatched scalar rank 0 (np.ascontiguousarray would make it shape [1])
        return {name: np.require(np.take(a, index, axis=self.specs[name].batch_axis)
                                 if self.specs[name].batched else a, requirements="C")
                for name, a in self.arrays.items()}, note


# ---------------------------------------------------------------------------------------------
# Timing


def latency_row(base: BenchResult, latencies_ms: np.ndarray) -> BenchResult:
    """Fill the latency statistics and throughput of ``base`` from measured latencies (milliseconds)."""
    p10, p50, p90, p99 = (float(v) for v in np.percentile(latencies_ms, [10, 50, 90, 99]))
    mean = float(np.mean(latencies_ms))
    base.latency_ms_p50, base.latency_ms_p90, base.latency_ms_p99 = p50, p90, p99
    base.extra["latency_ms_p10"] = p10  # with p90: the spread of the timed runs bench.png shows
    base.latency_ms_mean = mean
    base.throughput = throughput_from_latency(base.batch_size, mean)
    base.iterations = int(latencies_ms.size)
    return base


def labels_for(models: Sequence[PathLike], labels) -> List[Optional[str]]:
    if labels is None:
        return [None] * len(models)
    if isinstance(labels, str):
        labels = [p.strip() for p in labels.split(",")]
    if isinstance(labels, Mapping):
        return [labels.get(str(m), labels.get(Path(m).name)) for m in models]
    labels = list(labels)
    if len(labels) != len(models):
        raise TrtqError(f"{len(labels)} precision labels for {len(models)} models; give one per model, in order")
    return labels


def benchmark_ort(
    models: Sequence[PathLike],
    batch_sizes: Sequence[int] = defaults.BENCH_BATCH_SIZES,
    *,
    iterations: int = defaults.BENCH_ITERATIONS,
    warmup: int = defaults.BENCH_WARMUP,
    threads: Optional[int] = None,
    data=None,
    shapes: Optional[Shapes] = None,
    labels=None,
    max_seconds: Optional[float] = None,
    progress: ProgressCallback = no_progress,
    batch_axes: Optional[Mapping[str, Optional[int]]] = None,
    feedback: Sequence = (),
) -> List[BenchResult]:
    """ONNX Runtime (CPU) rows for every ONNX model and batch size; see :func:`benchmark`."""
    from .graph.model import load_onnx
    from .graph.signature import input_specs
    from .ort import create_session, ort_reason

    if iterations < 1:
        raise TrtqError(f"iterations must be at least 1, got {iterations}")
    if warmup < 0:
        raise TrtqError(f"warmup must be 0 or more, got {warmup}")
    names = labels_for(models, labels)
    # Everything a user can get wrong is checked before the first timed run.
    loaded = []
    for path, label in zip(models, names):
        model = load_onnx(path)
        specs = input_specs(model, batch_axes)
        if feedback:
            from .runtime.streaming import feedback_pairs

            feedback_pairs(model, feedback)
        if data is None:
            check_inputs_resolvable(specs, shapes, Path(path).name)
        loaded.append((Path(path), model, specs, label or infer_precision(model)))
    check_shape_names(shapes, [(p.name, specs) for p, _, specs, _ in loaded])
    for path, model, specs, _ in loaded:
        check_memory(model, specs, max(batch_sizes), shapes, path.name)
    total = len(loaded) * len(batch_sizes)
    done = 0
    progress(done, total)
    results: List[BenchResult] = []
    cpu = cpu_name()
    for path, model, specs, precision in loaded:
        size = model_size_bytes(path, model)
        del model
        session = create_session(path, threads=threads)
        samples = SampleFeeds(data, specs, max(batch_sizes)) if data is not None else None
        for batch_size in batch_sizes:
            row = BenchResult(model=path.name, precision=precision, backend=ORT_BACKEND, batch_size=int(batch_size),
                              size_bytes=size,
                              extra={"threads": threads or "auto", "cpu": cpu,
                                     "inputs": f"data: {samples.description}" if samples else "random"})
            feed, note = samples.feed(specs, batch_size) if samples else random_feed(specs, batch_size, shapes)
            row.note = note
            if feed is not None:
                try:
                    latency_row(row, time_session(session, feed, iterations, warmup, max_seconds))
                    if row.iterations < iterations:
                        row.note = (row.note + "; " if row.note else "") + \
                            f"stopped after {row.iterations} of {iterations} runs (max {max_seconds:g} s)"
                except Exception as exc:  # ORT refused this batch size (e.g. a Reshape with a fixed batch inside)
                    row.note = f"ONNX Runtime cannot run batch {batch_size}: {ort_reason(exc)}"
                    log.warning("%s: %s", path.name, row.note)
            results.append(row)
            done += 1
            progress(done, total)
        del session
    return results


# ---------------------------------------------------------------------------------------------
# Why an INT8 model runs slower than FP32 on the CPU

#: ONNX Runtime kernels that compute in 8-bit integers (what a Q/DQ pair around a layer fuses into).
INT8_KERNELS = ("QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger", "QGemm", "QLinearAdd",
                "QLinearMul", "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearSigmoid",
                "QLinearLeakyRelu", "QLinearSoftmax", "DynamicQuantizeMatMul")
#: Layers that stay float when no int8 kernel took them over.
FLOAT_WEIGHTED = ("Conv", "FusedConv", "ConvTranspose", "MatMul", "FusedMatMul", "Gemm", "FusedGemm",
                  "NchwcConv")


def ort_kernels(model_path: PathLike) -> Dict[str, int]:
    """Op type -> count in the graph ONNX Runtime actually runs on the CPU (after its fusions)."""
    import collections
    import tempfile

    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(prefix="trtq-kernels-") as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        options.log_severity_level = 3
        ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(options.optimized_model_filepath, load_external_data=False).graph
    return dict(collections.Counter(node.op_type for node in graph.node))


def slow_int8_notes(rows: Sequence[BenchResult], model_paths: Sequence[PathLike]) -> List[str]:
    """One line per INT8 ONNX model that ran slower than its FP32 baseline on the CPU: at which batch sizes,
    how many of its layers ONNX Runtime runs in int8 kernels and which stay float, and whether this CPU has
    the int8 instructions that make those kernels fast."""
    by_name = {Path(str(p)).name: Path(str(p)) for p in model_paths}
    notes = []
    for name in dict.fromkeys(r.model for r in rows):
        slow = [r for r in rows if r.model == name and r.backend == "ort-cpu" and r.precision == "int8"
                and r.speedup is not None and r.speedup < 1]
        path = by_name.get(name)
        if not slow or path is None or not path.is_file():
            continue
        where = ", ".join(f"{r.speedup:.2f}× at batch {r.batch_size}" for r in slow)
        try:
            kernels = ort_kernels(path)
        except Exception as exc:  # a note must not end the bench: say what could not be looked at
            notes.append(f"{name} runs slower than FP32 here ({where}); its kernels could not be listed ({exc})")
            continue
        int8 = sum(n for op, n in kernels.items() if op in INT8_KERNELS)
        floats = {op: n for op, n in kernels.items() if op in FLOAT_WEIGHTED}
        stayed = ", ".join(f"{n} {op}" for op, n in sorted(floats.items()))
        if int8 == 0:
            notes.append(f"{name} runs slower than FP32 here ({where}): ONNX Runtime runs none of its layers in "
                         f"int8 kernels ({stayed or 'every layer'} in float, behind dequantize steps). It is the "
                         "TensorRT form, made for TensorRT; time the ONNX Runtime form (trtq quantize --for cpu)")
            continue
        text = (f"{name} runs slower than FP32 here ({where}): ONNX Runtime runs {int8} layer(s) in int8 kernels"
                + (f" and {stayed} in float, each behind a dequantize step (no int8 kernel took its Q/DQ pair: "
                   "an op or a pattern ONNX Runtime does not fuse, or a layer trtq kept float)" if floats else ""))
        if cpu_int8_instructions() is False:
            text += "; this CPU has no VNNI or AMX int8 instructions, so int8 kernels gain little over float here"
        elif any(r.batch_size == 1 for r in slow):
            text += "; at batch 1 the quantize and dequantize steps cost as much as the int8 arithmetic saves"
        notes.append(text)
    return notes
