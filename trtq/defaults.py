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
#: The most histogram bins per tensor (8 bytes each, per tensor: 64k bins of 400 tensors are 200 MB).
MAX_NUM_BINS = 1 << 16
#: Most values of one tensor binned per calibration batch (None: every value, as TensorRT
#: does). A number trades fidelity to TensorRT for speed: larger tensors get an evenly
#: strided sample binned while their exact max |x| still sets the range (see
#: trtq.calib.collect.HistogramCollector; on YOLOv8n, 2**16 cut calibration time by a
#: quarter and moved the entropy amax of 5% of the tensors by more than 10%).
HIST_MAX_BINNED = None
#: Memory calibration may use (bytes), ``--max-memory``: the model's activations alive at
#: once are bounded by it (the batch split into smaller runs, or the graph into pieces that
#: each give a group of the outputs), so peak memory does not grow with the model's tensor count or the batch size.
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
#: Calibration algorithm. ``auto`` computes every algorithm's amax from the one pass of
#: histograms, scores the TensorRT-form Q/DQ model of each on the held-back samples and
#: keeps the best (see trtq.pipeline); the others are the single algorithms it chooses from.
ALGORITHM = "auto"
SINGLE_ALGORITHMS = ("entropy", "minmax", "percentile", "mse")
ALGORITHMS = ("auto",) + SINGLE_ALGORITHMS
#: Calibration samples held back from the statistics to score the algorithms and to give
#: every INT8 result its fidelity verdict (never the user's eval data). With fewer than
#: 4x this many samples, a quarter of them is held back; with fewer than 4, none (the
#: verdict is then computed on calibration samples and says so).
HOLDOUT_SAMPLES = 32

#: Calibration convergence (trtq.calib.convergence): the quantile of the per-tensor amax drift between
#: the first half and all of the samples that is compared with CONVERGENCE_MAX_DRIFT; above it, the
#: summary recommends more samples. Threshold from scripts/bench_convergence.py (docs/benchmarks.md, "Calibration convergence").
CONVERGENCE_QUANTILE = 0.9
CONVERGENCE_MAX_DRIFT = 0.05

#: trtq deploy triton: max_batch_size for a model whose batch axis is dynamic without an engine
#: profile (an ONNX model), and dynamic batching's queue delay.
DEPLOY_MAX_BATCH = 8
DEPLOY_QUEUE_DELAY_US = 100

#: ``auto``'s per-tensor refinement: the tensors whose candidate amax disagree most
#: (largest/smallest > AUTO_REFINE_MIN_RATIO) are tried with the other algorithms' amax,
#: at most AUTO_REFINE_TRIALS scored variants in all; a change is kept only when it raises
#: the worst output SNR by at least AUTO_REFINE_MIN_GAIN_DB (measured, not assumed).
AUTO_REFINE_TRIALS = 8
AUTO_REFINE_MIN_RATIO = 1.25
AUTO_REFINE_MIN_GAIN_DB = 0.1
#: The fidelity verdict on every INT8 result (worst output and worst channel group, on the
#: held-back samples): below either threshold, one warning line names the fix.
#: 20 dB is an error of 10% of the output's RMS; cosine 0.99 is roughly 17 dB for
#: zero-mean outputs, the point where embeddings and logits start to change rankings.
VERDICT_MIN_SNR_DB = 20.0
VERDICT_MIN_COSINE = 0.99
#: An output's channels are scored in two groups when their median RMS differ by more
#: than this many decades (see trtq.compare.metrics.channel_groups); outputs with more channels
#: than CHANNEL_GROUP_MAX_CHANNELS on both candidate axes are not split.
CHANNEL_GROUP_DECADES = 1.0
CHANNEL_GROUP_MAX_CHANNELS = 4096
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
#: ONNX opset ``trtq export`` writes: 17 is the newest that TensorRT 8.6 (JetPack 6.0)
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
#: A mixed-precision step is kept only when it raises the target metric by this much (dB of
#: SNR, or of 1 - cosine): smaller changes are replay-sample noise, and a layer kept in
#: float for nothing costs speed.
AUTO_EXCLUDE_MIN_GAIN_DB = 0.1
#: Each mixed-precision round measures this many candidates from the current model and
#: keeps the best (the one-run ranking is an estimate; on MiniLM the best of three reached
#: the target with fewer layers in float than the ranking's order).
AUTO_EXCLUDE_LOOKAHEAD = 3
#: Decision-aware fidelity (trtq.compare.decisions, docs/accuracy.md "What an output decides"). An
#: output of rank >= 3 with no class axis whose last axis (rank 3) or channel axis (rank >= 4;
#: else the other one) has 2 to FEATURE_MAX_CHANNELS channels is judged channel by channel (a
#: detection head's x, y, w, h, objectness and class scores at every anchor; a rank-2 [N, K]
#: output is one vector per sample and is judged whole); wider axes keep the two channel groups
#: of CHANNEL_GROUP_*. A channel whose reference std is below FEATURE_CONSTANT_RTOL of its RMS
#: (it barely moves: a bias, a pruned filter) or whose RMS is below FEATURE_NEGLIGIBLE_RMS of
#: the output's largest channel RMS is not judged on its own.
FEATURE_MAX_CHANNELS = 32
FEATURE_CONSTANT_RTOL = 1e-3
FEATURE_NEGLIGIBLE_RMS = 1e-6
#: The verdict warns when a decision drops noticeably: top-1 agreement below
#: VERDICT_MIN_AGREEMENT of positions (2 % of decisions changed), or, for outputs with more
#: than one position per sample (sequences, dense maps), fewer than VERDICT_MIN_SAMPLE_AGREEMENT
#: of samples agreeing at every position. A user --metric is on its own scale and is judged only
#: against the user's --min-metric.
VERDICT_MIN_AGREEMENT = 0.98
VERDICT_MIN_SAMPLE_AGREEMENT = 0.95
#: A binary mask (a Sigmoid output with one channel, trtq.graph.signature) decides "on" at
#: MASK_THRESHOLD; the verdict warns when its mean per-sample IoU against FP32 falls below
#: VERDICT_MIN_MASK_IOU (every pixel of a large mask agreeing is not a fair ask; its IoU is).
MASK_THRESHOLD = 0.5
VERDICT_MIN_MASK_IOU = 0.95
#: When the decisions of a result lose more than BUDGET_HINT_POINTS points against FP32
#: (trtq.precision.budget.decisions_kept), the verdict prints the --max-drop command that
#: would keep them within that many points.
BUDGET_HINT_POINTS = 1.0
#: ``--max-drop`` holds when the points lost on the held-back samples plus BUDGET_NOISE_SIGMAS
#: bootstrap standard deviations of them stay within the budget: the held-back samples are a
#: sample of the user's data, and a prefix that just meets the budget on them loses more on
#: new data about half the time (a segmenter held at 1.0 point lost 1.6 on held-out images).
BUDGET_NOISE_SIGMAS = 1.0
#: The budget's search picks its layers on the samples it measures, so the points it reads there flatter
#: the layers it kept (of several tries, the luckiest passes). What it keeps is then checked on up to
#: BUDGET_CHECK_SAMPLES more held-back samples that the search never reads (at most a third of the data,
#: less the samples already held back; fewer than BUDGET_CHECK_MIN: no check, and the outcome says so),
#: within BUDGET_CHECK_SIGMAS bootstrap standard deviations; where the check fails, more of the ranking is
#: left float until it holds. The check's margin is at least the points one more sample would lose, as
#: the samples that lost decisions fully INT8 lose on average: samples that happened to lose nothing
#: would otherwise show no noise at all. scripts/bench_budget.py (the bench's detector and reader): a search
#: alone on 64 samples broke a 1-point budget over all 900 samples in 57 % and 31 % of runs; checked on 128
#: more, 7 % and 3 %; on 192, 4 % and 1 % (docs/accuracy.md, "The check").
BUDGET_CHECK_SAMPLES = 192
BUDGET_CHECK_MIN = 32
BUDGET_CHECK_SIGMAS = 2.0
#: auto's noise: paired bootstrap over the held-back samples (BOOTSTRAP_DRAWS resamples, fixed
#: seed); two scores differ "beyond noise" when their difference exceeds NOISE_SIGMAS bootstrap
#: standard deviations of it. When the leaders are within noise, HOLDOUT_RESERVE more held-back
#: samples (kept out of the statistics too) are scored for them, once, before choosing.
BOOTSTRAP_DRAWS = 200
NOISE_SIGMAS = 2.0
HOLDOUT_RESERVE = 32

#: Calibration samples (the first, never the held-back ones) whose per-channel statistics drive
#: ``--equalize``'s high-bias absorption and bias correction.
EQUALIZE_SAMPLES = 64

#: The ``--equalize`` variants auto tries beside the unmodified model (``--equalize auto``, the default with
#: ``--algo auto``): each that would change the model (trtq.graph.equalize.applicable_steps) gets its own
#: statistics pass and choice, and is kept only when it wins beyond noise (trtq/pipeline/equalizing.py).
AUTO_EQUALIZE_VARIANTS = ("all", "bias")
#: A rewrite that wins on worst SNR alone (decisions within noise) must gain at least this much to be kept: it
#: changes the model the user ships (a per-tensor override needs AUTO_REFINE_MIN_GAIN_DB).
AUTO_EQUALIZE_MIN_GAIN_DB = 0.3
#: On at least twice this many statistics samples the trial compares the models on the first ones (about this
#: many: a batch boundary), and only the model kept gets a pass over them all: at 1000 samples a rewrite's
#: pass over every sample doubled the statistics, whatever the trial kept.
AUTO_EQUALIZE_STATISTICS_SAMPLES = 256
#: Held-back samples (reserve included) the trial needs: on fewer, a bootstrap cannot tell a rewrite from noise,
#: and the unmodified model stays without the trial's passes.
AUTO_EQUALIZE_MIN_SAMPLES = 16
