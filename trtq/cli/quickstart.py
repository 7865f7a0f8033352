"""``trtq quickstart``: the whole promise in one command, on the embedded demo model."""

from __future__ import annotations

import argparse

from .. import defaults


def add_parser(sub) -> None:
    from .options import DefaultsFormatter, Value, add_algorithm_argument, add_fidelity_arguments

    parser = sub.add_parser(
        "quickstart",
        help="export, calibrate, quantize, evaluate and benchmark the bundled demo model in one go",
        description="Run trtq end to end on the bundled demo (a small CNN trained on scikit-learn's digits, and the "
        "real samples in calib_data/): export it from PyTorch to ONNX, calibrate on 1000 samples, write the "
        "TensorRT calibration cache, insert Q/DQ nodes, measure FP32 vs INT8 accuracy on held-out labelled "
        "samples, and benchmark FP32 vs INT8 across batch sizes (ONNX Runtime on the CPU; TensorRT FP32/FP16/INT8 "
        "engines too where TensorRT and a GPU are present).",
        formatter_class=DefaultsFormatter,
    )
    parser.add_argument("-o", "--out", default="out/quickstart", help="folder for every file the run writes")
    parser.add_argument("--calib", default=None, help="calibration data (default: the bundled calib_data/)")
    parser.add_argument("--samples", type=Value(int, 1), default=defaults.SAMPLES, help="calibration samples")
    parser.add_argument("--eval-samples", type=Value(int, 1), default=None,
                        help="held-out samples to evaluate (default: all)")
    parser.add_argument("--batch-sizes", default=",".join(map(str, defaults.BENCH_BATCH_SIZES)),
                        help="comma-separated batch sizes to benchmark")
    parser.add_argument("--iterations", type=int, default=defaults.BENCH_ITERATIONS, help="timed runs per batch size")
    parser.add_argument("--no-torch", action="store_true",
                        help="skip the PyTorch export and use the bundled pre-exported ONNX file")
    parser.add_argument("--force", action="store_true",
                        help="replace files in the output folder that trtq did not write")
    add_algorithm_argument(parser)
    add_fidelity_arguments(parser, decisions=False)
    parser.set_defaults(func=run)


#: The files the quickstart writes into its folder, with their kinds.
OUTPUTS = (("demo.onnx", "onnx"), ("demo.calib.cache", "cache"), ("demo.calib.cache.json", "sidecar"),
           ("demo.int8.onnx", "onnx"), ("demo.int8-cpu.onnx", "onnx"), ("bench.json", "bench-json"),
           ("bench.csv", "bench-csv"), ("bench.png", "png"))


def run(args: argparse.Namespace) -> int:
    from ..quickstart import print_verdict, run_quickstart
    from ..bench import parse_batch_sizes

    from pathlib import Path

    from .guard import Output, data_reads, guard

    out = Path(args.out)
    notes = guard([Output(out / name, kind, option="-o/--out", default=True) for name, kind in OUTPUTS],
                  data_reads(args.calib, "a calibration data file"), force=args.force)
    result = run_quickstart(
        out_dir=args.out,
        calib=args.calib,
        samples=args.samples,
        eval_samples=args.eval_samples,
        batch_sizes=parse_batch_sizes(args.batch_sizes),
        iterations=args.iterations,
        use_torch=not args.no_torch,
        show_progress=not args.quiet,
        algorithm=args.algo,
        min_snr=args.min_snr,
        min_cosine=args.min_cosine,
    )
    print_verdict(result)
    replaced = [n for n in notes if n.startswith("replaces ")]
    if replaced:
        print(f"  note: replaced the results of an earlier run in {out}/ ({len(replaced)} files)")
    for note in notes:
        if not note.startswith("replaces "):
            print(f"  note: {note}")
    from ..report import next_command, print_next, report_console

    print_next(report_console(),
               next_command("trtq", "eval", result.onnx_path, result.int8_trt_path, "--data", result.eval_dir,
                            "--labels", result.eval_dir / "labels.csv"),
               "your own model: README.md, \"Your own model in six lines\"")
    return 0
