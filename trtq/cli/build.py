"""``trtq build``: an ONNX model -> a TensorRT engine (FP32, FP16, INT8) plus a JSON build report."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import defaults


def add_parser(sub) -> None:
    from .options import add_algorithm_argument, add_data_arguments, add_fidelity_arguments, add_target_arguments

    parser = sub.add_parser(
        "build",
        help="build a TensorRT engine (FP32/FP16/INT8) from an ONNX model; needs TensorRT and a GPU",
        description="Build a TensorRT engine and write <output>.json beside it (TensorRT version, GPU, precision, "
        "profile, calibration source, build time, engine size). INT8 on TensorRT 8.6-10.x takes the implicit "
        "path: with --algo auto (the default), percentile or mse trtq calibrates on the CPU and hands TensorRT "
        "the cache through its IInt8EntropyCalibrator2 subclass; with --algo entropy or minmax TensorRT's own "
        "calibrator runs on the GPU, fed with --calib data; an existing --cache is used as it is (trtq's sidecar "
        "must match the model; no data is read then). On TensorRT 11, or with --explicit, trtq calibrates on the "
        "CPU, inserts Q/DQ nodes and builds a strongly typed network; FP16 there means an FP16 copy of the "
        "graph. Dynamic batch: --batch-sizes sets the optimization profile (min..max); other dynamic axes "
        "need --min-shapes/--opt-shapes/--max-shapes (or --opt-shapes alone for fixed non-batch axes).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("model", help="ONNX model")
    parser.add_argument("-o", "--output", default=None,
                        help="engine file (default: engines/<model>.<precision>.engine); the report goes to "
                             "<output>.json")
    parser.add_argument("--int8", action="store_true", help="INT8 (needs --calib or an existing --cache)")
    parser.add_argument("--fp16", action="store_true", help="FP16 (with --int8: FP16 fallback for layers not in INT8)")
    parser.add_argument("--precision", choices=("fp32", "fp16", "int8", "best"), default=None,
                        help="instead of --int8/--fp16: best = int8 with fp16 fallback (default: fp32)")
    parser.add_argument("--explicit", action="store_true",
                        help="TensorRT 10.x: explicit Q/DQ + strongly typed network instead of the implicit "
                             "calibrator (always the path on TensorRT 11)")
    parser.add_argument("--cache", default=None, metavar="PATH",
                        help="calibration cache: used if it exists (no data is read), else written by this build")
    parser.add_argument("--force", action="store_true", help="use a --cache whose sidecar names another model; "
                        "replace an existing -o file that trtq did not build")
    add_algorithm_argument(parser, "when calibrating: auto, percentile and mse are computed by trtq on the CPU "
                           "and handed to TensorRT as a cache (on TensorRT 8.6-10.x, through its "
                           "IInt8EntropyCalibrator2); entropy and minmax on the implicit path are TensorRT's own "
                           "calibrators, run on the GPU;")
    parser.add_argument("--batch-sizes", default=None, metavar="B[,B...]",
                        help="batch sizes the engine must run (profile min = smallest, opt = max = largest); "
                             f"default for a dynamic batch axis: {','.join(map(str, defaults.BENCH_BATCH_SIZES))}")
    for which in ("min", "opt", "max"):
        parser.add_argument(f"--{which}-shapes", default=None, metavar="NAME:DIMS[,...]",
                            help=f"{which} shape per input for the optimization profile, e.g. images:1x3x640x640")
    parser.add_argument("--workspace", type=float, default=defaults.WORKSPACE_GIB, metavar="GiB",
                        help=f"builder workspace limit in GiB (default: {defaults.WORKSPACE_GIB:g})")
    parser.add_argument("--timing-cache", default=None, metavar="PATH",
                        help="TensorRT timing cache: read if it exists, updated after the build (faster rebuilds)")
    parser.add_argument("--dla-core", type=int, default=None, metavar="N",
                        help="Jetson Xavier/Orin: run layers on DLA core N, the rest on the GPU (GPU fallback, "
                             "listed in a warning and the report); needs --fp16 or --int8 and static shapes (one "
                             "--batch-sizes value); refused where TensorRT or the device has no DLA, or where no "
                             "layer can run on it")
    parser.add_argument("--sparsity", action="store_true",
                        help="let TensorRT use 2:4 structured-sparse weights (BuilderFlag.SPARSE_WEIGHTS; Ampere+)")
    parser.add_argument("--tf32", action="store_true",
                        help="allow TF32 math in FP32 layers (off by default: fp32 means IEEE FP32)")
    parser.add_argument("--version-compatible", action="store_true",
                        help="engine that later TensorRT versions can run (BuilderFlag.VERSION_COMPATIBLE)")
    parser.add_argument("--hardware-compatibility", default=None, metavar="LEVEL",
                        help="engine for a range of GPUs: ampere_plus (or same_compute_capability on TensorRT "
                             "10.16+); default: this GPU only")
    parser.add_argument("--plugins", action="append", default=[], metavar="PATH",
                        help="plugin library (.so) to load before parsing; repeat for several. TensorRT's own "
                             "plugins (EfficientNMS_TRT, ...) are always registered")
    parser.add_argument("--shape-values", action="append", default=[], metavar="NAME:MIN/OPT/MAX",
                        help="values of a shape-tensor input (one TensorRT reads to size other tensors, e.g. a "
                             "Reshape target fed as an input): comma-separated values for min/opt/max, or one set "
                             "for all three (NAME:4,8); repeat per input")
    from .info import add_cuda_argument

    add_cuda_argument(parser)
    add_data_arguments(parser, flag="--calib", required=False,
                       help_text="calibration data for --int8: a folder of images or .npy/.npz files, one such "
                                 "file, or a .py loader script")
    add_fidelity_arguments(parser)
    add_target_arguments(parser)
    from .options import add_equalize_argument

    add_equalize_argument(parser, "when calibrating with --calib (a rewrite also needs --cache, which it travels "
                                  "with; without --cache the trial is off):")
    parser.set_defaults(func=run)


def default_output(model: str, precision: str) -> Path:
    return Path("engines") / f"{Path(model).stem}.{precision}.engine"


def options_from_args(args: argparse.Namespace):
    """``trtq build`` arguments -> :class:`trtq.backend.build.BuildOptions` (no TensorRT needed)."""
    from ..backend.build import BuildOptions
    from ..backend.policy import resolve_precision
    from ..bench import parse_batch_sizes, parse_shapes
    from ..errors import TrtqError
    from .options import data_spec_from_args, fidelity_options, fidelity_target_from_args

    precision = resolve_precision(args.precision, int8=args.int8, fp16=args.fp16)
    if args.workspace <= 0:
        raise TrtqError(f"--workspace must be more than 0 GiB, got {args.workspace:g}")
    calib = data_spec_from_args(args, flag_dest="calib", shuffle=True) if args.calib else None
    if args.dla_core is not None:
        from ..backend.policy import dla_refusal

        refusal = dla_refusal(None, precision, None, args.dla_core)  # TensorRT version and device: at build
        if refusal:
            raise TrtqError(refusal)
    if calib is not None and precision not in ("int8", "best"):
        raise TrtqError("--calib is calibration data for INT8; add --int8 (or --precision int8/best)")
    return BuildOptions(
        model_path=Path(args.model),
        output_path=Path(args.output) if args.output else default_output(args.model, precision),
        precision=precision, explicit=args.explicit, calib=calib,
        cache_path=Path(args.cache) if args.cache else None, force=args.force, algorithm=args.algo,
        batch_sizes=sorted(parse_batch_sizes(args.batch_sizes)) if args.batch_sizes else None,
        min_shapes=parse_shapes(args.min_shapes, "--min-shapes"),
        opt_shapes=parse_shapes(args.opt_shapes, "--opt-shapes"),
        max_shapes=parse_shapes(args.max_shapes, "--max-shapes"),
        workspace_gib=args.workspace, timing_cache=Path(args.timing_cache) if args.timing_cache else None,
        verbose=args.verbose > 0,
        dla_core=args.dla_core, sparsity=args.sparsity, tf32=args.tf32,
        version_compatible=args.version_compatible, hardware_compatibility=args.hardware_compatibility,
        plugins=[Path(p) for p in args.plugins], **fidelity_options(args), target=fidelity_target_from_args(args),
        shape_values=parse_shape_values(args.shape_values), equalize=args.equalize,
    )


def parse_shape_values(values) -> dict:
    """``["k:1,8/4,8/8,8", "n:3"]`` -> ``{"k": ((1, 8), (4, 8), (8, 8)), "n": ((3,), (3,), (3,))}``."""
    from ..errors import TrtqError

    result = {}
    for value in values or ():
        name, sep, ranges = str(value).rpartition(":")
        parts = ranges.split("/")
        try:
            sets = [tuple(int(v) for v in part.split(",") if v.strip() != "") for part in parts]
        except ValueError:
            sets = []
        if not sep or not name or len(sets) not in (1, 3) or any(not s or len(s) != len(sets[0]) for s in sets):
            raise TrtqError(f"--shape-values {value}: expected NAME:MIN/OPT/MAX with comma-separated values of one "
                            "length (e.g. k:1,8/4,8/8,8), or NAME:VALUES for all three")
        result[name] = tuple(sets) if len(sets) == 3 else (sets[0],) * 3
    return result


def run(args: argparse.Namespace) -> int:
    from ..pipeline.building import build_engine
    from ..progress import progress_bar
    from .guard import Output, cache_reads, data_reads, guard, metric_reads, model_reads, print_notes
    from .info import apply_cuda_argument

    options = options_from_args(args)
    outputs = [Output(options.output_path, "engine", default=not args.output),
               Output(options.report_path, "build-report", option="the report of -o")]  # the engine's note covers it
    if options.timing_cache is not None:
        outputs.append(Output(options.timing_cache, None, option="--timing-cache", in_out=True))
    reads = model_reads(args.model) + data_reads(args.calib) + metric_reads(getattr(args, "metric", None))
    recorded = None  # the mixed-precision record of an existing cache's sidecar, which the build applies
    if options.cache_path is not None and options.cache_path.exists():
        reads += cache_reads(str(options.cache_path))
        if options.calib is None:
            from ..cache import read_cache

            recorded = (read_cache(options.cache_path).sidecar or {}).get("mixed_precision")
    elif options.cache_path is not None:  # written by this build
        from ..cache import sidecar_path

        outputs += [Output(options.cache_path, "cache", option="--cache"),
                    Output(sidecar_path(options.cache_path), "sidecar", option="the sidecar of --cache")]
        if args.equalize not in (None, "auto", "off"):  # a rewrite whatever it scores is written with the cache
            from ..pipeline.calibration import default_equalized_path

            outputs.append(Output(default_equalized_path(args.model, options.cache_path), "onnx", option="--equalize",
                                  fixed=True))
    notes = guard(outputs, reads, force=args.force)
    apply_cuda_argument(args)
    with progress_bar("calibrating", unit="samples", enabled=None if not args.quiet else False) as progress:
        result = build_engine(options, progress=progress)
    report = result.report
    print(f"built {result.engine_path} ({report['engine']['bytes'] / 1e6:.1f} MB, {report['precision']}, "
          f"TensorRT {report['tensorrt']['version']} {report['tensorrt']['path']} path) in "
          f"{report['build_seconds']:.1f} s")
    print(f"report {result.report_path}")
    if recorded is not None and (report.get("mixed_precision") or {}).get("float_layers"):
        from ..report import report_console
        from .quantize import print_recorded_float_layers

        print_recorded_float_layers(report_console(), report["mixed_precision"]["float_layers"], recorded,
                                    args.cache)
    from .options import budget_command_from_args

    _print_build_verdict(report, budget_command_from_args(args, "build"))
    print_notes(notes)
    from ..report import next_command, print_next, report_console

    print_next(report_console(), next_command("trtq", "bench", result.engine_path),
               next_command("trtq", "deploy", "triton", result.engine_path, "-o", "<model repository>"))
    return 0


def _print_build_verdict(report: dict, budget_command: str = "") -> None:
    """An INT8 build ends with the verdict of trtq's calibration, or says where to get one."""
    from ..report import print_verdict, report_console

    if report.get("precision") not in ("int8", "best"):
        return
    console = report_console()
    verdict = (report.get("calibration") or {}).get("verdict")
    if verdict:
        from ..report import verdict_fixes

        print_verdict(console, verdict, "trtq's calibration on the CPU; the engine itself: trtq eval MODEL ENGINE "
                                        "--data HELD_OUT", fixes=verdict_fixes("build"), budget_command=budget_command)
    else:
        console.print("no INT8 verdict: TensorRT calibrated on the GPU. Measure the engine with trtq eval MODEL "
                      "ENGINE --data HELD_OUT (--min-snr DB to gate)", highlight=False, markup=False)
