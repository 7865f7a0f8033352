"""The main job on the embedded default: PyTorch model to a verdict in one call.

export -> calibrate (TensorRT cache) -> Q/DQ (TensorRT and CPU forms) -> accuracy of
FP32 vs INT8 on held-out labelled samples -> FP32 vs INT8 benchmark across batch
sizes (ONNX Runtime on the CPU; TensorRT engines too where TensorRT and a GPU exist).
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

from . import defaults
from .errors import BackendUnavailable, DataError

log = logging.getLogger(__name__)

PathLike = Union[str, Path]


#: The demo data inside an installed wheel (setup.py zips the checkout's calib_data/ and eval_data/ into it).
DEMO_ARCHIVE = Path(__file__).resolve().parent / "assets" / "demo_data.zip"


def bundled_data(unpack_into: Optional[PathLike] = None) -> Tuple[Path, Path]:
    """``(calib_data/digits, eval_data/digits)``: the working directory's, else the checkout the package runs
    from, else the wheel's copy unpacked into ``unpack_into/demo_data/`` (once; reused after). Calibration
    images and the held-out labelled digits live in separate trees, so that ``--calib calib_data/`` never
    reads an evaluation image."""
    for base in _checkouts():
        calib, held_out = base / "calib_data" / "digits", base / "eval_data" / "digits"
        if calib.is_dir() and (held_out / "labels.csv").is_file():
            return calib, held_out
    if unpack_into is not None and (DEMO_ARCHIVE.is_file() or (Path(unpack_into) / "demo_data").is_dir()):
        return _unpack_demo_data(Path(unpack_into) / "demo_data")
    raise DataError("the demo's calib_data/digits and eval_data/digits folders were not found: run from a "
                    "checkout of trtq, or install trtq from a wheel built by its setup.py (it carries them)")


def _checkouts() -> Tuple[Path, ...]:
    """Where a checkout's demo folders may be: the working directory (paths stay relative), the package's own."""
    return Path(), Path(__file__).resolve().parents[1]


def _unpack_demo_data(target: Path) -> Tuple[Path, Path]:
    """The wheel's demo data as folders under ``target``, written whole or not at all (a temporary folder
    renamed into place)."""
    import os
    import tempfile
    import zipfile

    calib, held_out = target / "calib_data" / "digits", target / "eval_data" / "digits"
    if calib.is_dir() and (held_out / "labels.csv").is_file():
        return calib, held_out  # unpacked by an earlier run
    if target.exists():
        raise DataError(f"{target} is not the demo data this package carries: remove it and run again")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".demo_data.", dir=target.parent))
    try:
        with zipfile.ZipFile(DEMO_ARCHIVE) as archive:
            for name in archive.namelist():
                if name.startswith("/") or ".." in Path(name).parts:
                    raise DataError(f"{DEMO_ARCHIVE}: unexpected member {name!r}")
            archive.extractall(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("unpacked the demo data from the installed package into %s", target)
    return calib, held_out


@dataclass
class QuickstartResult:
    out_dir: Path
    onnx_path: Path
    export_note: str
    cache_path: Path
    int8_trt_path: Path
    int8_cpu_path: Path
    calibration: object
    quantized_layers: int
    evaluation: object
    bench: List[object]
    bench_files: dict
    trt_note: str = ""
    eval_dir: Optional[Path] = None          # the held-out labelled digits the evaluation read
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=dict)
    engine_evaluation: Optional[object] = None   # the INT8 TensorRT engine against FP32, where TensorRT ran


def _export(out: Path, use_torch: bool) -> tuple:
    from .assets import DEMO_INPUT_NAME, DEMO_INPUT_SHAPE, DEMO_ONNX, DEMO_OUTPUT_NAME

    target = out / "demo.onnx"
    if use_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            use_torch = False
            log.warning("torch is not installed; using the bundled pre-exported ONNX model "
                        "(pip install 'trtq[torch]' to run the export step)")
    if not use_torch:
        from .fileio import write_bytes_atomic

        write_bytes_atomic(target, DEMO_ONNX.read_bytes())
        return target, f"bundled {DEMO_ONNX.name} (no PyTorch export)"
    import torch

    from .assets.demo_model import pretrained
    from .graph.export import export_onnx

    example = torch.rand(*DEMO_INPUT_SHAPE, generator=torch.Generator().manual_seed(defaults.SEED))
    result = export_onnx(pretrained(), (example,), target, input_names=[DEMO_INPUT_NAME],
                         output_names=[DEMO_OUTPUT_NAME], dynamic_batch=True)
    return target, f"exported from PyTorch, max |ONNX Runtime - PyTorch| = {result.max_abs_diff:.2e}"


@contextlib.contextmanager
def _stage(name: str, timings: dict, show_progress: bool, unit: str = "samples"):
    from .progress import progress_bar

    started = time.perf_counter()
    with progress_bar(name, unit=unit, enabled=None if show_progress else False) as progress:
        yield progress
    timings[name] = time.perf_counter() - started


def run_quickstart(
    out_dir: PathLike = "out/quickstart",
    *,
    calib: Optional[PathLike] = None,
    samples: int = defaults.SAMPLES,
    eval_samples: Optional[int] = None,
    batch_sizes: Sequence[int] = defaults.BENCH_BATCH_SIZES,
    iterations: int = defaults.BENCH_ITERATIONS,
    use_torch: bool = True,
    show_progress: bool = True,
    algorithm: str = defaults.ALGORITHM,
    min_snr: Optional[float] = None,
    min_cosine: Optional[float] = None,
) -> QuickstartResult:
    """Run the whole demo and return every number and path it produced.

    ``min_snr`` / ``min_cosine``: the calibration's fidelity gate (FidelityError, exit 3).
    """
    from .data.spec import DataSpec
    from .fileio import check_writable
    from .pipeline.benchmarking import benchmark
    from .pipeline.calibration import calibrate
    from .pipeline.evaluation import evaluate
    from .pipeline.quantization import quantize
    from .report import write_bench_report

    started = time.perf_counter()
    out = Path(out_dir)
    check_writable(out / "demo.onnx")
    bundled_calib, eval_dir = bundled_data(unpack_into=out)
    calib_dir = Path(calib) if calib else bundled_calib
    timings: dict = {}

    with _stage("export", timings, False):
        onnx_path, export_note = _export(out, use_torch)
    log.info("model: %s", export_note)

    cache_path = out / "demo.calib.cache"
    with _stage("calibrate", timings, show_progress) as progress:
        calibration = calibrate(onnx_path, DataSpec(path=str(calib_dir), samples=samples), cache_path=cache_path,
                                algorithm=algorithm, min_snr=min_snr, min_cosine=min_cosine, progress=progress)

    int8_trt = out / "demo.int8.onnx"
    int8_cpu = out / "demo.int8-cpu.onnx"
    with _stage("quantize", timings, False):
        summary = quantize(onnx_path, int8_trt, cache=cache_path, target="trt").summary
        quantize(onnx_path, int8_cpu, cache=cache_path, target="cpu")

    eval_spec = DataSpec(path=str(eval_dir), samples=eval_samples, shuffle=False)
    with _stage("evaluate", timings, show_progress) as progress:
        # Accuracy of the TensorRT form: its numerics are what an engine runs. The CPU form
        # shares its scales but saturates folded Relu outputs at 2x amax instead of amax
        # (uint8 zero point 0), so it can read slightly better than TensorRT will.
        evaluation = evaluate(onnx_path, int8_trt, eval_spec, labels=str(eval_dir / "labels.csv"), progress=progress)

    with _stage("benchmark", timings, show_progress, unit="runs") as progress:
        rows = benchmark([onnx_path, int8_cpu], batch_sizes, iterations=iterations, progress=progress)
    trt_note = ""
    try:
        from .pipeline.benchmarking import build_and_benchmark

        with _stage("tensorrt", timings, show_progress, unit="runs") as progress:
            rows += build_and_benchmark(onnx_path, ["fp32", "fp16", "int8"], batch_sizes,
                                        DataSpec(path=str(calib_dir), samples=samples), iterations=iterations,
                                        progress=progress, engines_dir=out / "engines")
    except BackendUnavailable as exc:
        trt_note = f"TensorRT engines skipped: {exc}"
    engine_evaluation = None
    int8_engine = out / "engines" / f"{onnx_path.stem}.int8.engine"
    if not trt_note and int8_engine.exists():  # what the engine itself computes, on the same held-out digits
        with _stage("engine eval", timings, show_progress) as progress:
            engine_evaluation = evaluate(onnx_path, int8_engine, eval_spec, labels=str(eval_dir / "labels.csv"),
                                         progress=progress)
    from .report import fill_speedups

    fill_speedups(rows, overwrite=True)
    bench_files = write_bench_report(rows, out, stem="bench")
    return QuickstartResult(out_dir=out, onnx_path=onnx_path, export_note=export_note, cache_path=cache_path,
                            int8_trt_path=int8_trt, int8_cpu_path=int8_cpu, calibration=calibration,
                            quantized_layers=len(summary.quantized), evaluation=evaluation, bench=rows,
                            bench_files=bench_files, trt_note=trt_note, eval_dir=eval_dir,
                            seconds=time.perf_counter() - started,
                            stage_seconds=timings, engine_evaluation=engine_evaluation)


def throughput_table(rows):
    """Compact view of a benchmark: one row per (backend, precision), one column per batch size."""
    from rich.table import Table

    from .report import BACKEND_NAMES, fit_table, format_rate, format_speedup, report_console

    batch_sizes = sorted({r.batch_size for r in rows})
    backends = {r.backend for r in rows}
    one = len(backends) == 1
    where = f" on {BACKEND_NAMES.get(next(iter(backends)), next(iter(backends)))}" if one else ""
    table = Table(title=f"throughput{where}, samples/s (speed-up against FP32 at the same batch size)",
                  title_justify="left")
    if not one:
        table.add_column("backend")
    table.add_column("precision")
    for batch in batch_sizes:
        table.add_column(f"batch {batch}", justify="right")
    series = {}
    for r in rows:
        series.setdefault((r.backend, r.precision), {})[r.batch_size] = r
    for (backend, precision), by_batch in series.items():
        cells = []
        for batch in batch_sizes:
            r = by_batch.get(batch)
            if r is None or r.skipped:
                cells.append("—")
            else:
                speedup = f" ({format_speedup(r.speedup)})" if r.speedup is not None and precision != "fp32" else ""
                cells.append(f"{format_rate(r.throughput)}{speedup}")
        table.add_row(*([] if one else [BACKEND_NAMES.get(backend, backend)]), precision, *cells)
    return fit_table(table, report_console().width)


def print_verdict(result: QuickstartResult, console=None) -> None:
    """The closing comparison: accuracy beside speed, then where every file is."""
    from rich.markup import escape
    from rich.table import Table

    from .report import _db, fit_table, format_percent, format_rate, format_size, format_speedup, report_console

    console = console or report_console()
    cal = result.calibration
    ev = result.evaluation
    console.print(f"[bold]model[/]      {escape(str(result.onnx_path))} ({escape(result.export_note)})")
    algorithm = cal.algorithm if cal.auto is None else f"auto: chose {cal.auto.chosen}, {len(cal.auto.overrides)} " \
        "per-tensor override(s)"
    console.print(f"[bold]calibrated[/] {len(cal.amax)} tensors on {cal.num_samples} samples in {cal.seconds:.1f} s "
                  f"({escape(algorithm)}); {result.quantized_layers} layers quantized", highlight=False)
    if cal.auto is not None:
        from .report import auto_choice_table

        console.print(auto_choice_table(cal.auto))
    console.print(throughput_table(result.bench))
    from .bench import slow_int8_notes

    for line in slow_int8_notes(result.bench, [result.int8_cpu_path]):
        console.print(f"note: {line}", highlight=False, markup=False)

    verdict = Table(title=f"verdict: INT8 (TensorRT Q/DQ form) against FP32 on {ev.samples} held-out digits",
                    title_justify="left", show_lines=False)
    for column in ("", "FP32", "INT8"):
        verdict.add_column(column, justify="right" if column else "left")
    if ev.accuracy is not None:
        verdict.add_row("top-1 accuracy", format_percent(ev.accuracy.reference_top1),
                        format_percent(ev.accuracy.candidate_top1))
    out0 = ev.outputs[0]
    if out0.top1_agreement is not None:
        verdict.add_row("top-1 agreement with FP32", "", format_percent(out0.top1_agreement))
    verdict.add_row("output SNR against FP32 (the headline)", "", f"{_db(out0.snr_db)} dB")
    engine = result.engine_evaluation
    if engine is not None and engine.accuracy is not None:
        verdict.add_row("top-1 accuracy, TensorRT INT8 engine", format_percent(engine.accuracy.reference_top1),
                        format_percent(engine.accuracy.candidate_top1))
    if engine is not None:
        verdict.add_row("TensorRT engine's SNR against FP32", "", f"{_db(engine.worst_snr_db())} dB")
    sizes = {r.precision: r.size_bytes for r in result.bench if r.backend == "ort-cpu"}
    verdict.add_row("size on disk", format_size(sizes.get("fp32")), format_size(sizes.get("int8")))
    largest = max(r.batch_size for r in result.bench)
    best = {r.precision: r for r in result.bench if r.backend == "ort-cpu" and r.batch_size == largest and not r.skipped}
    if "fp32" in best and "int8" in best:
        verdict.add_row(f"samples/s, batch {largest}, ONNX Runtime CPU", format_rate(best["fp32"].throughput),
                        f"{format_rate(best['int8'].throughput)} "
                        f"({format_speedup(best['int8'].throughput / best['fp32'].throughput)})")
    console.print(fit_table(verdict, console.width))
    from .report import print_verdict as print_fidelity
    from .report import verdict_fixes

    print_fidelity(console, cal.verdict.to_dict() if cal.verdict is not None else None,
                   "calibration's own check, on samples held back from its statistics; the held-out digits above "
                   "are the headline", fixes=verdict_fixes("quickstart"))
    if result.trt_note:
        console.print(f"[yellow]{escape(result.trt_note)}[/]")
    console.print(f"[bold]calibration cache[/] {escape(str(result.cache_path))}  "
                  f"(sidecar {escape(str(result.cache_path))}.json)")
    console.print(f"[bold]Q/DQ models[/]       {escape(str(result.int8_trt_path))} (TensorRT), "
                  f"{escape(str(result.int8_cpu_path))} (ONNX Runtime CPU)")
    for kind, path in result.bench_files.items():
        console.print(f"[bold]bench {kind:4s}[/]       {escape(str(path))}")
    console.print(f"done in {result.seconds:.0f} s")
