"""``trtq bench``: latency and throughput per batch size, ONNX Runtime (CPU) or TensorRT, in one table."""

from __future__ import annotations

import argparse

from .. import defaults

DEFAULT_OUT = "bench"
#: Exit code of a bench that measured nothing (see docs/guide.md, "Outputs and exit codes").
EXIT_NOT_MEASURED = 1


def add_parser(sub) -> None:
    from .options import add_batch_axis_argument, add_data_arguments, add_feedback_argument

    sizes = ",".join(str(b) for b in defaults.BENCH_BATCH_SIZES)
    parser = sub.add_parser(
        "bench",
        help="latency and throughput per batch size: FP32 vs FP16 vs INT8, ONNX Runtime or TensorRT",
        description="Time each model at each batch size: --warmup untimed runs, then --iterations timed runs of "
        "the same batch. Rows: latency p50/p90/p99/mean (ms), throughput = batch x 1000 / mean latency "
        "(samples/s), speed-up against the same model's fp32 row (m.onnx for m.int8-cpu.onnx; or --baseline) "
        "at the same backend and batch size, size on disk. Exits 1 when no row could be measured. "
        "Precision is read from the model (Q/DQ or QLinear ops: int8; float16 tensors: fp16; else fp32). "
        "ONNX files run on ONNX Runtime (CPU) by default; .engine/.plan files, and ONNX files with --backend "
        "trt (built for each of --precisions), run on TensorRT. A model whose batch dimension is fixed gives "
        "skipped rows for other batch sizes. Writes <out>/<stem>.json, .csv and .png "
        "(throughput vs batch size).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("models", nargs="+", metavar="MODEL",
                        help="ONNX models (e.g. model.onnx model.int8-cpu.onnx) and/or TensorRT engines")
    parser.add_argument("--batch-sizes", default=sizes, metavar="B[,B...]", help=f"batch sizes (default: {sizes})")
    parser.add_argument("--backend", choices=("ort", "trt"), default="ort",
                        help="ort: ONNX Runtime on the CPU; trt: build TensorRT engines from the ONNX models "
                             "(engine files always run on TensorRT) (default: ort)")
    parser.add_argument("--precisions", default=None, metavar="P[,P...]",
                        help="with --backend trt: engine precisions to build from each ONNX model, from "
                             "fp32,fp16,int8 (default: fp32,fp16, plus int8 with --data)")
    parser.add_argument("--iterations", type=int, default=defaults.BENCH_ITERATIONS,
                        help=f"timed runs per batch size (default: {defaults.BENCH_ITERATIONS})")
    parser.add_argument("--warmup", type=int, default=defaults.BENCH_WARMUP,
                        help=f"untimed runs first (default: {defaults.BENCH_WARMUP})")
    parser.add_argument("--max-seconds", type=float, default=None, metavar="S",
                        help="per model and batch size, stop timing after S seconds of timed runs (slow CPUs, "
                             "large batches); the row notes how many runs it got (default: no limit)")
    parser.add_argument("--threads", type=int, default=None,
                        help="ONNX Runtime intra-op threads (default: ONNX Runtime's choice, one per core)")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME:DIMS",
                        help="shape of an input whose non-batch dimensions are dynamic, e.g. images:1x3x640x640 "
                             "(the batch dimension is replaced by each batch size); repeat or comma-separate")
    parser.add_argument("--baseline", default=None, metavar="MODEL",
                        help="speed-up against this model's rows (default: each model's own fp32 row, matched by "
                             "name: m.onnx for m.int8-cpu.onnx)")
    parser.add_argument("--precision-labels", default=None, metavar="P[,P...]",
                        help="precision shown for each model, in order, instead of the inferred one")
    parser.add_argument("--out", default=DEFAULT_OUT, metavar="DIR",
                        help=f"folder for the report files (default: ./{DEFAULT_OUT}/)")
    parser.add_argument("--stem", default="bench", help="report file name stem (default: bench)")
    parser.add_argument("--no-files", action="store_true", help="print the table only; write no report files")
    parser.add_argument("--force", action="store_true",
                        help="replace existing report files that trtq did not write")
    add_batch_axis_argument(parser)
    add_feedback_argument(parser)
    add_data_arguments(parser, flag="--data", required=False, default_samples=None, prefix="data-",
                       help_text="real samples as inputs (and int8 calibration data for --backend trt) instead of "
                                 "random data: a folder of images or .npy/.npz files, one such file, or a .py "
                                 "loader script")
    from .info import add_engine_arguments

    add_engine_arguments(parser)  # engines and --backend trt: --plugins, --cuda
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..bench import parse_batch_sizes, parse_shapes
    from ..errors import TrtqError
    from ..pipeline.benchmarking import benchmark
    from ..progress import progress_bar
    from ..report import bench_table, report_console, write_bench_report
    from .options import batch_axes_from_args, data_spec_from_args, feedback_from_args

    batch_sizes = parse_batch_sizes(args.batch_sizes)
    shapes = {}
    for text in args.shape:
        shapes.update(parse_shapes(text))
    data = data_spec_from_args(args, flag_dest="data", shuffle=False) if args.data else None
    precisions = None
    if args.precisions:
        precisions = [p.strip().lower() for p in args.precisions.split(",") if p.strip()]
        unknown = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
        if unknown:
            raise TrtqError(f"--precisions: unknown precision(s) {', '.join(unknown)}; choose from fp32, fp16, int8")
        if args.backend != "trt":
            raise TrtqError("--precisions chooses the TensorRT engines to build; add --backend trt "
                            "(ONNX Runtime runs each model as it is; use --precision-labels to rename rows)")
    if args.max_seconds is not None and args.max_seconds <= 0:
        raise TrtqError(f"--max-seconds must be positive, got {args.max_seconds}")
    if args.threads is not None and args.threads < 0:
        raise TrtqError(f"--threads must be 0 or more, got {args.threads}")
    from .guard import Output, data_reads, guard, model_reads, print_notes

    paths = {}
    notes = []
    if not args.no_files:
        from pathlib import Path

        out = Path(args.out)
        default = args.out == DEFAULT_OUT and args.stem == "bench"
        notes = guard([Output(out / f"{args.stem}.{suffix}", kind, option="--out/--stem", default=default)
                       for suffix, kind in (("json", "bench-json"), ("csv", "bench-csv"), ("png", "png"))],
                      model_reads(*args.models) + data_reads(args.data), force=args.force)
    from .info import apply_cuda_argument

    apply_cuda_argument(args)
    with progress_bar("benchmarking", unit="runs", enabled=None if not args.quiet else False) as progress:
        results = benchmark(args.models, batch_sizes, backend=args.backend, iterations=args.iterations,
                            warmup=args.warmup, threads=args.threads, data=data, shapes=shapes or None,
                            labels=args.precision_labels, precisions=precisions, max_seconds=args.max_seconds,
                            baseline=args.baseline, progress=progress, plugins=args.plugins, dla_core=args.dla_core,
                            batch_axes=batch_axes_from_args(args), feedback=feedback_from_args(args))
    meta = {"command": "bench", "backend": args.backend, "batch_sizes": list(batch_sizes),
            "iterations": args.iterations, "warmup": args.warmup, "max_seconds": args.max_seconds,
            "threads": args.threads,
            "inputs": "random" if data is None else data.to_dict(),
            "feedback": [p.text() for p in feedback_from_args(args)]}
    measured = [r for r in results if not r.skipped]
    if not args.no_files and measured:
        paths = write_bench_report(results, args.out, stem=args.stem, meta=meta)
    console = report_console()
    console.print(bench_table(results))
    from ..bench import slow_int8_notes

    for line in slow_int8_notes(results, args.models):
        console.print(f"note: {line}", highlight=False, markup=False)
    if not measured:
        import sys

        print(f"trtq bench: error: no row was measured: every model and batch size was skipped or failed (see "
              f"the notes); no report files written", file=sys.stderr)
        return EXIT_NOT_MEASURED
    for path in paths.values():
        console.print(f"  wrote {path}", highlight=False, markup=False)
    print_notes(notes)
    if "png" in paths:
        from ..report import print_next

        print_next(console, f"open {paths['png']} (throughput against batch size, with the spread of repeated runs)")
    return 0
