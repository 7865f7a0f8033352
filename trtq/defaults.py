"""The one home of every default trtq uses (CLI, API and docs read them from here)."""

from __future__ import annotations

#: Calibration samples read when ``--samples`` is not given.
SAMPLES = 1000
#: Samples per inference batch during calibration and evaluation.
BATCH_SIZE = 32
#: Shuffle seed for picking calibration samples.
SEED = 0
#: Histogram bins per tensor (TensorRT uses 2048 as well).
NUM_BINS = 2048
#: Most values of one tensor binned per calibration batch (None: every value, as TensorRT
#: does). A number trades fidelity to TensorRT for speed: larger tensors get an evenly
#: strided sample binned while their exact max |x| still sets the range (see
#: trtq.calib.collect.HistogramCollector; on YOLOv8n, 2**16 cut calibration time by a
#: quarter and moved the entropy amax of 5% of the tensors by more than 10%).
HIST_MAX_BINNED = None
#: Memory calibration may use (bytes), ``--max-memory``: the model's activations alive at
#: once are bounded by it (outputs requested in groups, or the batch split into smaller
#: runs), so peak memory does not grow with the model's tensor count or the batch size.
#: 1.5 GiB: an 8 GB Jetson shares its memory with the GPU, the OS and the desktop.
CALIB_MAX_MEMORY = 3 << 29
#: A tensor holding +-inf, or any |x| >= this, is "huge by construction" (attention-mask
#: biases such as (1 - mask) * finfo(float32).min, -1e9 or -inf fills): it is not an
#: activation to quantize, so calibration leaves it out of the amax table (it stays float)
#: and reports it. Real activations stay orders of magnitude below (float16 overflows at
#: 65504); NaN is never accepted.
UNQUANTIZED_ABS = 1e9
#: Percentile of |x| kept by the ``percentile`` algorithm.
PERCENTILE = 99.99
#: Calibration algorithm.
ALGORITHM = "entropy"
ALGORITHMS = ("entropy", "minmax", "percentile", "mse")
#: TensorRT version written into a cache header when no ``tensorrt`` is importable:
#: 10.3, the TensorRT of JetPack 6, the most common Jetson install. trtq's own
#: calibrator re-stamps a cache to the running version, so this only matters to
#: other consumers (trtexec, DeepStream) that check the header.
TRT_VERSION = 100300
#: Batch sizes benchmarked when ``--batch-sizes`` is not given.
BENCH_BATCH_SIZES = (1, 8, 32, 64)
#: Timed iterations and warm-up iterations per batch size.
BENCH_ITERATIONS = 50
BENCH_WARMUP = 5
#: Minimum ONNX opset for Q/DQ models (per-channel QuantizeLinear needs 13).
QDQ_MIN_OPSET = 13
#: TensorRT builder workspace in GiB.
WORKSPACE_GIB = 4.0
#: ONNX opset ``trtq export`` writes: 17 is the newest that TensorRT 8.6 (JetPack 5)
#: parses and is above QDQ_MIN_OPSET; TensorRT 10 and ONNX Runtime take it too.
EXPORT_OPSET = 17
#: Exported ONNX vs PyTorch on the same inputs must agree within
#: ``EXPORT_ATOL + EXPORT_RTOL * max|PyTorch output|`` (float32; float16 outputs get 10x).
#: Correct FP32 exports differ by ~1e-7..1e-5 of the output scale (summation order,
#: fused kernels); a wrong export (train-mode layer, baked shape, misconverted op)
#: by ~1e-2..1. 1e-3 sits between the two with two decades of margin each way.
EXPORT_RTOL = 1e-3
EXPORT_ATOL = 1e-5
#: Integer inputs of ``trtq export --input-shape`` get random ids in [0, EXPORT_INT_HIGH).
EXPORT_INT_HIGH = 100
#: Samples replayed (kept in memory with the float outputs) by sensitivity analysis and auto-exclude.
SENSITIVITY_SAMPLES = 64
#: Most layers ``--auto-exclude`` leaves in float before giving up.
AUTO_EXCLUDE_MAX_LAYERS = 10
