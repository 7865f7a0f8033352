"""Benchmark and accuracy reports: one row type shared by ONNX Runtime and TensorRT benches.

:class:`BenchResult` rows come from :func:`trtq.pipeline.benchmarking.benchmark` (backend ``"ort-cpu"``)
and from ``trtq.backend.bench`` (backend ``"tensorrt"``); :func:`bench_table` and
:func:`write_bench_report` show and save both kinds the same way. Files are written
atomically (:mod:`trtq.fileio`); everything is rendered in memory before the first
file is written, so a failure leaves no partial report behind.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from . import __version__
from .jsonio import json_safe  # noqa: E402,F401 - the one home of strict JSON; re-exported here

#: The precision every row's speed-up is measured against.
BASELINE_PRECISION = "fp32"


@dataclass
class BenchResult:
    """One (model, precision, backend, batch size) measurement.

    ONNX Runtime rows and TensorRT engine rows fill the same fields, so one table,
    JSON, CSV and plot show INT8 beside FP16 and FP32 whatever ran them.
    """

    model: str                      # file name of the ONNX model or engine
    precision: str                  # "fp32", "fp16", "int8"
    backend: str                    # "ort-cpu", "tensorrt"
    batch_size: int
    latency_ms_p50: Optional[float] = None
    latency_ms_p90: Optional[float] = None
    latency_ms_p99: Optional[float] = None
    latency_ms_mean: Optional[float] = None
    throughput: Optional[float] = None      # samples per second = batch_size / mean latency
    iterations: int = 0
    size_bytes: Optional[int] = None        # model/engine file size on disk
    device_memory_bytes: Optional[int] = None
    speedup: Optional[float] = None         # throughput / throughput of the same model's fp32 row at that batch size
    note: str = ""                          # why a row was skipped, or anything unusual
    extra: dict = field(default_factory=dict)

    @property
    def skipped(self) -> bool:
        return self.throughput is None

    def to_dict(self) -> dict:
        return asdict(self)


def throughput_from_latency(batch_size: int, latency_ms_mean: float) -> float:
    """Samples per second for a batch that takes ``latency_ms_mean`` milliseconds on average.

    The one formula every row uses, so ``throughput == batch_size * 1000 / latency_ms_mean`` holds exactly.
    """
    return batch_size * 1000.0 / latency_ms_mean


def model_family(name: str) -> str:
    """The model a file is a form of: its name up to the first dot (``yolo.int8-cpu.onnx`` -> ``yolo``,
    ``engines/yolo.fp16.engine`` -> ``yolo``). Speed-ups compare rows of one family only."""
    return Path(str(name)).name.split(".")[0]


def fill_speedups(results: Sequence[BenchResult], overwrite: bool = False,
                  baseline: Optional[str] = None) -> List[BenchResult]:
    """Set ``speedup`` = throughput / throughput of the baseline row of the same backend and batch size.

    The baseline is the fp32 row of the same model (:func:`model_family`: ``m.onnx`` for
    ``m.int8-cpu.onnx``; the first listed if there are several), never another model's.
    ``baseline``: a model file name (or family) whose rows are the baseline for every
    row instead. Rows without a baseline, and skipped rows, keep ``speedup = None``.
    Rows that already carry a speed-up (a backend may compute its own) keep it unless
    ``overwrite``.
    """
    baselines: Dict[tuple, BenchResult] = {}
    for row in results:
        if row.skipped:
            continue
        if baseline is not None:
            if baseline in (row.model, Path(row.model).name, model_family(row.model)):
                baselines.setdefault((row.backend, row.batch_size), row)
        elif row.precision == BASELINE_PRECISION:
            baselines.setdefault((row.backend, row.batch_size, model_family(row.model)), row)
    for row in results:
        if row.speedup is not None and not overwrite:
            continue
        key = (row.backend, row.batch_size) if baseline is not None else \
            (row.backend, row.batch_size, model_family(row.model))
        base = baselines.get(key)
        if row.skipped or base is None or not base.throughput:
            row.speedup = None
        else:
            row.speedup = row.throughput / base.throughput
    return list(results)


# ---------------------------------------------------------------------------------------------
# Formatting helpers


def _fmt(value: Optional[float], digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and not math.isfinite(value):
        return "∞" if value > 0 else ("-∞" if value < 0 else "nan")
    return f"{value:,.{digits}f}"


def format_size(size: Optional[int]) -> str:
    """Bytes on disk, the one format every command uses (binary units: 1 kB = 1024 B)."""
    if size is None:
        return "—"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def format_percent(fraction: Optional[float], digits: int = 1) -> str:
    """A share (accuracy, agreement), the one format every command uses: ``99.8 %``."""
    return "—" if fraction is None else f"{100 * fraction:.{digits}f} %"


def format_rate(samples_per_s: Optional[float]) -> str:
    """Throughput in samples per second, three significant figures at least: ``1,026``, ``40.2``, ``3.14``."""
    if samples_per_s is None:
        return "—"
    digits = 0 if samples_per_s >= 100 else (1 if samples_per_s >= 10 else 2)
    return f"{samples_per_s:,.{digits}f}"


def format_speedup(speedup: Optional[float]) -> str:
    """Throughput against the FP32 baseline: ``1.56×``."""
    return "—" if speedup is None else f"{speedup:.2f}×"


def _natural_width(renderable) -> int:
    """Columns ``renderable`` takes when nothing is wrapped or cut."""
    from rich.console import Console
    from rich.measure import Measurement

    wide = Console(width=100_000, file=io.StringIO())
    return Measurement.get(wide, wide.options, renderable).maximum


def _empty(cell) -> bool:
    return str(cell).strip() in ("", "—")


def fit_table(table, width: int, drop: Sequence[str] = (), where: str = ""):
    """``table`` made to fit ``width`` columns without cutting a number.

    In this order, until it fits: columns with nothing in them go; the columns named in ``drop``
    go (first named first; the caption names them, and ``where`` says where they are kept); a
    table of a few rows turns on its side (one column per row, one row per quantity); text
    columns wrap. Numbers are never shortened to ``…``."""
    from rich.table import Table

    for column in list(table.columns):
        if column._cells and all(_empty(c) for c in column._cells) and column is not table.columns[0]:
            table.columns.remove(column)
    for column in table.columns:
        if column.justify == "right":
            column.no_wrap = True   # numbers: rich narrows the text columns first
        else:
            column.overflow = "fold"
    dropped = []
    for name in drop:
        if _natural_width(table) <= width:
            break
        column = next((c for c in table.columns if c.header == name), None)
        if column is not None:
            table.columns.remove(column)
            dropped.append(name)
    if dropped:
        note = f"not shown at {width} columns: {', '.join(dropped)}" + (f" ({where})" if where else "")
        table.caption = f"{table.caption}\n{note}" if table.caption else note
        table.caption_justify = "left"
    if _natural_width(table) > width and 0 < table.row_count <= 4 and len(table.columns) > 2:
        first, *rest = table.columns
        turned = Table(title=table.title, title_justify=table.title_justify, caption=table.caption,
                       caption_justify="left")
        turned.add_column(str(first.header), overflow="fold")
        for cell in first._cells:
            turned.add_column(cell, justify="right", no_wrap=True)
        for column in rest:
            turned.add_row(str(column.header), *column._cells)
        if _natural_width(turned) < _natural_width(table):
            table = turned
    return table


def json_text(data: Any) -> str:
    from .jsonio import dumps

    return dumps(data)


def write_json(path: Union[str, Path], data: Any) -> Path:
    """Write ``data`` as strict JSON (see :func:`json_safe`), atomically."""
    from .fileio import write_text_atomic

    return write_text_atomic(path, json_text(data))


# ---------------------------------------------------------------------------------------------
# Benchmark tables and files


def bench_table(results: Sequence[BenchResult], title: Optional[str] = "benchmark", width: Optional[int] = None):
    """A rich table of benchmark rows (ONNX Runtime and TensorRT alike).

    Notes (why a row was skipped, repeated samples, ...) are numbered in the last
    column and spelled out once each under the table, so the table stays narrow.
    """
    from rich.markup import escape
    from rich.table import Table

    notes: Dict[str, int] = {}
    for r in results:
        if r.note and r.note not in notes:
            notes[r.note] = len(notes) + 1
    caption = "\n".join(escape(f"[{i}] {note}") for note, i in notes.items()) or None
    backends = {r.backend for r in results}
    one_backend = len(backends) == 1
    if one_backend and title:
        title = f"{title} ({BACKEND_NAMES.get(next(iter(backends)), next(iter(backends)))})"
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    table.add_column("model", overflow="fold")
    if not one_backend:
        table.add_column("backend")
    table.add_column("precision")
    table.add_column("batch", justify="right")
    for name in ("samples/s", "speed-up", "p50 ms", "p90 ms", "p99 ms", "mean ms", "size"):
        table.add_column(name, justify="right")
    if notes:
        table.add_column("note")
    for r in results:
        cells = [escape(r.model)] + ([] if one_backend else [r.backend]) + [
            r.precision, str(r.batch_size), format_rate(r.throughput), format_speedup(r.speedup),
            _fmt(r.latency_ms_p50, 3), _fmt(r.latency_ms_p90, 3), _fmt(r.latency_ms_p99, 3),
            _fmt(r.latency_ms_mean, 3), format_size(r.size_bytes)]
        if notes:
            cells.append(escape(f"[{notes[r.note]}]") if r.note else "")
        table.add_row(*cells, style="dim" if r.skipped else None)
    return fit_table(table, width if width else console_width(),
                     drop=("p99 ms", "p90 ms", "mean ms", "size", "p50 ms", "backend"), where="all in bench.csv")


#: How the bench tables name a backend.
BACKEND_NAMES = {"ort-cpu": "ONNX Runtime, CPU", "tensorrt": "TensorRT"}


def console_width() -> int:
    """The width report tables are made for: the terminal's, ``COLUMNS``, else 80."""
    return report_console().width


def report_console():
    """The Console every command prints its report with: as wide as the terminal (``COLUMNS`` where set,
    else 80 in a log or a file), tables made to fit it (:func:`fit_table`). In a terminal, text wraps
    between words; in a log or a file, lines of text are written whole (a tensor name stays on one line)."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console.soft_wrap = True
    return console


CSV_COLUMNS = [f.name for f in fields(BenchResult)]


def bench_csv_text(results: Sequence[BenchResult]) -> str:
    """CSV with one column per :class:`BenchResult` field (``extra`` as a JSON object; empty = None)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for r in results:
        row = r.to_dict()
        row["extra"] = json.dumps(json_safe(row["extra"]), sort_keys=True) if row["extra"] else ""
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def bench_json_data(results: Sequence[BenchResult], meta: Optional[dict] = None) -> dict:
    return {
        "format": "trtq-bench",
        "trtq_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **({"meta": meta} if meta else {}),
        "results": [r.to_dict() for r in results],
    }


def _series_key(r: BenchResult) -> tuple:
    return (r.model, r.precision, r.backend)


def device_name(backend: str) -> str:
    """What ran a bench row, in words: the runtime and the processor (``ONNX Runtime, CPU: AMD EPYC, 2 cores``)."""
    if backend != "ort-cpu":
        return BACKEND_NAMES.get(backend, backend)
    import os
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"{BACKEND_NAMES['ort-cpu']}: {cpu}, {os.cpu_count()} cores"


def bench_plot_png(results: Sequence[BenchResult], title: str = "throughput against batch size") -> bytes:
    """PNG bytes: throughput against batch size (log-2 x axis), one line per (model, precision, backend), the
    band around it the spread of the timed runs (10th to 90th percentile of their latency), the speed-up
    against FP32 beside each point, and the runtime and device in the title."""
    # The Agg canvas is used directly (no pyplot, no global backend switch).
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    series: Dict[tuple, List[BenchResult]] = {}
    for r in results:
        if not r.skipped:
            series.setdefault(_series_key(r), []).append(r)
    figure = Figure(figsize=(7.5, 4.8), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    batch_sizes = sorted({r.batch_size for rows in series.values() for r in rows})
    multi_backend = len({key[2] for key in series}) > 1
    markers = "osD^v<>p*h"
    for index, (key, rows) in enumerate(series.items()):
        rows = sorted(rows, key=lambda r: r.batch_size)
        model, precision, backend = key
        label = f"{model} ({precision}" + (f", {backend})" if multi_backend else ")")
        xs = [r.batch_size for r in rows]
        line, = axes.plot(xs, [r.throughput for r in rows], marker=markers[index % len(markers)], label=label)
        slow = [throughput_from_latency(r.batch_size, r.latency_ms_p90 or r.latency_ms_mean) for r in rows]
        fast = [throughput_from_latency(r.batch_size, r.extra.get("latency_ms_p10") or r.latency_ms_p50
                                        or r.latency_ms_mean) for r in rows]
        axes.fill_between(xs, slow, fast, color=line.get_color(), alpha=0.15, linewidth=0)
        for r in rows:
            if r.speedup is not None and r.precision != BASELINE_PRECISION:
                axes.annotate(format_speedup(r.speedup), (r.batch_size, r.throughput), textcoords="offset points",
                              xytext=(0, 6), ha="center", fontsize="x-small", color=line.get_color())
    if series:
        axes.set_xscale("log", base=2)
        axes.xaxis.set_major_locator(FixedLocator(batch_sizes))
        axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _pos: f"{x:g}"))
        axes.xaxis.set_minor_locator(NullLocator())
        if len(batch_sizes) == 1:
            axes.set_xlim(batch_sizes[0] / 2, batch_sizes[0] * 2)
        axes.set_ylim(bottom=0)
        axes.legend(fontsize="small", loc="best")
    else:
        axes.text(0.5, 0.5, "no measurements (all rows skipped)", ha="center", va="center", transform=axes.transAxes)
    axes.set_xlabel("batch size")
    axes.set_ylabel("throughput (samples/s)")
    devices = sorted({device_name(key[2]) for key in series})
    axes.set_title(title + ("\n" + "; ".join(devices) if devices else "")
                   + ("\nband: 10th to 90th percentile of the timed runs; labels: speed-up against FP32" if series
                      else ""), fontsize="medium")
    axes.grid(True, which="major", alpha=0.3)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_bench_report(results: Sequence[BenchResult], out_dir: Union[str, Path], stem: str = "bench",
                       meta: Optional[dict] = None) -> Dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` and ``<stem>.png`` into ``out_dir``; returns ``{"json": path, ...}``.

    All three are rendered in memory first and written together
    (:func:`trtq.fileio.write_files_atomic`): an error (a plot that fails, a disk that fills
    at the third file, a signal) leaves all three earlier files or all three new ones.
    """
    from .fileio import check_writable, write_files_atomic

    out = Path(out_dir)
    paths = {"json": out / f"{stem}.json", "csv": out / f"{stem}.csv", "png": out / f"{stem}.png"}
    payloads = {
        "json": json_text(bench_json_data(results, meta)),
        "csv": bench_csv_text(results),
        "png": bench_plot_png(results),
    }
    for path in paths.values():
        check_writable(path)
    write_files_atomic({path: payloads[kind] if isinstance(payloads[kind], bytes) else payloads[kind].encode("utf-8")
                        for kind, path in paths.items()})
    return paths


def read_bench_json(path: Union[str, Path]) -> List[BenchResult]:
    """Rows of a ``bench.json`` written by :func:`write_bench_report` (non-finite strings left as they are)."""
    from .jsonio import List as ListOf
    from .jsonio import Map, read_json

    data = read_json(path, "bench report", schema={"results?": ListOf(Map("any"))})
    names = set(CSV_COLUMNS)
    return [BenchResult(**{k: v for k, v in row.items() if k in names}) for row in data.get("results", [])]


# ---------------------------------------------------------------------------------------------
# Evaluation tables (fields of trtq.compare.verdict.EvalReport; no import of trtq.compare needed)


def _db(value: Optional[float]) -> str:
    return "—" if value is None else ("∞" if value == math.inf else _fmt(value, 2))


def eval_tables(report, max_layers: int = 20, json_path: Optional[str] = None, width: Optional[int] = None) -> list:
    """Rich renderables for an ``EvalReport``: a heading line and a table per section (outputs, accuracy,
    layer sensitivity, mixed-precision steps). Sensitivity shows the ``max_layers`` worst layers; the
    caption points to ``json_path`` for the rest only when that report is written."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    parts: list = []
    width = width or console_width()
    kept = f"in {json_path}" if json_path else "--json PATH writes them"

    def section(heading: str, table) -> None:
        parts.append(Text(heading, style="bold"))
        parts.append(table)

    outputs = Table()
    for name in ("output", "shape"):
        outputs.add_column(name, overflow="fold")
    for name in ("cosine", "worst sample cos", "SNR dB", "max |err|", "mean |err|", "max |ref|", "top-1 agree",
                 "top-5 agree", "samples all agree", "worst channel"):
        outputs.add_column(name, justify="right")
    for o in report.outputs:
        shape = "x".join(str(d) for d in (["N"] + list(o.shape[1:]))) if o.shape else "?"
        worst = o.worst_channel
        outputs.add_row(escape(o.name), shape, f"{o.cosine:.5f}",
                        f"{o.cosine_min:.5f}" if o.has_cosine else "—",  # of one value per sample: only its sign
                        _db(o.snr_db), f"{o.max_abs_error:.4g}", f"{o.mean_abs_error:.4g}", f"{o.ref_abs_max:.4g}",
                        format_percent(o.top1_agreement), format_percent(o.top5_agreement),
                        format_percent(o.sample_agreement if (o.positions or 1) > 1 else None),
                        "—" if worst is None else f"{escape(worst[0])}: {_db(worst[1])}")
    if report.metric is not None:
        outputs.caption = (f"metric {escape(report.metric.name)} (yours; 1 = identical): {report.metric.value:.4f} "
                           f"on {report.metric.samples} samples")
    section(f"fidelity of {report.candidate} ({report.candidate_precision}) against {report.reference} "
            f"({report.reference_precision}) on {report.samples} samples",
            fit_table(outputs, width, drop=("max |ref|", "mean |err|", "top-5 agree", "worst sample cos",
                                            "max |err|", "shape"), where=kept))
    if report.accuracy is not None:
        a = report.accuracy
        accuracy = Table()
        for name in ("model", "top-1 accuracy"):
            accuracy.add_column(name, justify="right" if name != "model" else "left")
        accuracy.add_row(escape(report.reference), format_percent(a.reference_top1))
        accuracy.add_row(escape(report.candidate), format_percent(a.candidate_top1))
        change = 100 * (a.candidate_top1 - a.reference_top1)
        accuracy.add_row(f"{report.candidate_precision.upper()} − {report.reference_precision.upper()}",
                         f"{change:+.1f} points" + (" (better)" if change > 0 else ""))
        section(f"top-1 accuracy on {a.labeled_samples} labeled samples (output {a.output})", accuracy)
    if report.sensitivity:
        shown = report.sensitivity[:max_layers]
        more = len(report.sensitivity) - len(shown)
        where = f"in {json_path}" if json_path else "not shown (--json PATH writes every one)"
        sens = Table(caption=f"{more} more layer(s) {where}" if more > 0 else None)
        sens.add_column("#", justify="right")
        sens.add_column("quantized tensor", overflow="fold")
        sens.add_column("read by")
        sens.add_column("own SNR dB", justify="right")
        sens.add_column("note", style="dim", overflow="fold")
        for rank, s in enumerate(shown, start=1):
            sens.add_row(str(rank), escape(s.layer), s.op_type, _db(s.own_snr_db), escape(s.note))
        sens = fit_table(sens, width, drop=("note",), where=kept)
        section(f"layer sensitivity, TensorRT form, worst first: each quantized tensor's readers against float "
                f"twins fed the same inputs unquantized ({report.sensitivity_samples} samples; scales from "
                f"{report.amax_source})", sens)
    auto = report.auto_exclude
    if auto is not None:
        label = {"snr_db": "SNR dB", "cosine": "cosine", "top1_agreement": "top-1 agreement"}[auto.target_metric]
        steps = Table()
        steps.add_column("step", justify="right")
        steps.add_column("left in float (the nodes reading this tensor)", overflow="fold")
        for name in ("SNR dB", "cosine", "top-1 agree", "batch-1 ms", "vs fp32"):
            steps.add_column(name, justify="right")
        steps.add_column("")
        for s in auto.steps:
            verdict = "[green]met[/]" if s.met else ("kept" if s.kept else (
                "[dim]helped less: stays INT8[/]" if s.helped else "[dim]no gain: stays INT8[/]"))
            steps.add_row(str(s.step), escape(s.layer) if s.layer else "(none: all quantized)", _db(s.snr_db),
                          "—" if s.cosine is None else f"{s.cosine:.5f}", format_percent(s.top1_agreement),
                          _fmt(s.latency_ms, 3), format_speedup(s.speedup), verdict)
        steps = fit_table(steps, width, drop=("batch-1 ms", "vs fp32", "cosine"), where=kept)
        section(f"mixed precision, TensorRT form: leave layers in float until {label} >= {auto.target:g}, each step "
                f"measured ({auto.samples} samples; {len(auto.excluded)} node(s) in float, "
                f"{auto.quantizable_layers} quantizable layers)", steps)
    return parts


def auto_choice_table(choice, width: Optional[int] = None):
    """A rich table of ``--algo auto``'s candidates, one row per algorithm: its decision score and worst
    SNR (each with its bootstrap noise) and cosine; the leaders' scores on the wider reserve beside them."""
    from rich.table import Table

    decision = next((c.decision_name for c in choice.candidates if c.decision_name), "")
    on = "held-back calibration samples" if getattr(choice, "held_back", True) else \
        "calibration samples (too few to hold any back)"
    first = choice.candidates[0].samples if choice.candidates and choice.candidates[0].samples else choice.samples
    rescored = {c.name: c for c in choice.reserve}
    wide = rescored and next(iter(rescored.values())).samples or choice.samples
    table = Table(title=f"--algo auto: each algorithm's TensorRT-form Q/DQ model on {first} {on}; "
                        f"decisions first, then the worst output or channel (± bootstrap noise)",
                  title_justify="left", caption=f"chose {choice.chosen}: {choice.reason}" if choice.reason else None,
                  caption_justify="left")
    columns = ["algorithm"] + ([decision] if decision else []) + ["SNR dB", "cosine"]
    if rescored:
        columns += ([f"{decision} on {wide}"] if decision else []) + [f"SNR dB on {wide}"]
    columns.append("choice")
    for name in columns:
        table.add_column(name, justify="left" if name in ("algorithm", "choice") else "right")

    def noisy(value, noise, digits: int, percent: bool = False) -> str:
        if value is None:
            return "—"
        text = _db(value) if not percent else format_percent(value, digits)
        scale = 100 if percent else 1
        return text + (f" ± {scale * noise:.{digits}f}" if noise is not None and math.isfinite(value) else "")

    for c in choice.candidates:
        cells = [c.name] + ([noisy(c.decision, c.decision_noise, 1, percent=True)] if decision else []) + [
            noisy(c.snr_db, c.snr_noise, 2), f"{c.cosine:.5f}"]
        if rescored:
            r = rescored.get(c.name)
            cells += ([noisy(r.decision, r.decision_noise, 1, percent=True) if r else ""] if decision else []) + [
                noisy(r.snr_db, r.snr_noise, 2) if r else ""]
        cells.append("chosen" if c.name == choice.chosen else "")
        table.add_row(*cells)
    if choice.overrides or choice.trials:
        kept = len(choice.overrides)
        cells = [f"{choice.chosen}, {kept} override{'s' if kept != 1 else ''}"] + (
            [noisy(choice.decision, None, 1, percent=True)] if decision else []) + [
            _db(choice.snr_db), f"{choice.cosine:.5f}"]
        if rescored:
            cells += ([""] if decision else []) + [""]
        cells.append(f"final, {len(choice.trials)} trials")
        table.add_row(*cells)
    return fit_table(table, width or console_width(), drop=("cosine",))


#: How warnings recorded by trtq before the fixes were the printing command's own ended (cut when printed).
_LEGACY_FIXES = ": leave the most sensitive layers in float with --auto-exclude"


def print_verdict(console, verdict: Optional[dict], source: str = "", fixes: str = "",
                  budget_command: str = "") -> None:
    """The verdict's one line, and its warning line when the INT8 result is poor (a sidecar record or Verdict dict).

    ``fixes``: what to do, in the options of the command that prints it
    (:func:`trtq.cli.options.verdict_fixes`), appended to the warning. ``budget_command``: the
    command with ``--max-drop``, printed when the decisions lost more than
    :data:`~trtq.defaults.BUDGET_HINT_POINTS` (:func:`budget_hint`).
    """
    from rich.markup import escape

    if not verdict:
        return
    line = verdict.get("line") or ""
    console.print(escape(line) + (f" [dim]({escape(source)})[/]" if source else ""), highlight=False)
    if verdict.get("warning"):
        warning = str(verdict["warning"]).split(_LEGACY_FIXES)[0] + (f"; {fixes}" if fixes else "")
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
    hint = budget_hint(verdict, budget_command)
    if hint:
        console.print(hint, highlight=False, markup=False, soft_wrap=True)


def budget_hint(verdict: Optional[dict], command: str) -> Optional[str]:
    """``budget: the decisions lost 3.5 points (...); about N layers in float keep them within 1 point: COMMAND``,
    when they lost more than :data:`~trtq.defaults.BUDGET_HINT_POINTS` and a command is given; else None. The count
    is the verdict's ``budget_estimate`` (:func:`trtq.precision.budget.estimate_budget`) where it has one."""
    from . import defaults

    drop = (verdict or {}).get("decision_drop")
    if not command or not isinstance(drop, dict) or not isinstance(drop.get("points"), (int, float)):
        return None
    if not drop["points"] > defaults.BUDGET_HINT_POINTS:
        return None
    head = f"budget: {drop.get('decision') or 'the decisions'} lost {drop['points']:.1f} points against FP32; "
    within = f"within {defaults.BUDGET_HINT_POINTS:g} point"
    estimate = verdict.get("budget_estimate")
    if isinstance(estimate, dict) and isinstance(estimate.get("layers"), int):
        return (head + f"about {estimate['layers']} of {estimate['ranked']} layers in float keep it {within} "
                f"(estimated on {estimate['samples']} held-back samples; the budget measures every step and checks the "
                f"result on samples it never read: it may need fewer or more): {command}")
    if isinstance(estimate, dict) and estimate.get("best_points") is not None:
        return (head + f"on {estimate['samples']} held-back samples no float layers kept it {within} (at best "
                f"{estimate['best_points']:.1f} points lost, with up to all {estimate['ranked']} ranked layers in "
                f"float), so a budget may not be met; it measures on more samples: {command}")
    unknown = (f" (not estimated here: {estimate['not_estimated']})"
               if isinstance(estimate, dict) and estimate.get("not_estimated") else "")
    return head + f"the fewest layers in float that keep it {within}, measured step by step on the held-back " \
                  f"samples{unknown}: {command}"


def budget_command(command: str, model, data, *, extra: Sequence[str] = ()) -> str:
    """``trtq COMMAND MODEL --calib DATA EXTRA... --max-drop`` (:data:`~trtq.defaults.BUDGET_HINT_POINTS`), for
    :func:`budget_hint`; ``extra``: the other options the user gave."""
    from . import defaults

    return next_command("trtq", command, model, "--calib", data, *extra, "--max-drop",
                        f"{defaults.BUDGET_HINT_POINTS:g}")


def next_command(*words) -> str:
    """A command line a user can paste: each word quoted where the shell needs it."""
    import shlex

    return " ".join(shlex.quote(str(w)) if not str(w).startswith("<") else str(w) for w in words)


def print_next(console, *commands: str) -> None:
    """Where to go from here, after a command that wrote a file: the command to run next (and its
    alternatives). ``<...>`` words are the user's to fill in."""
    for index, command in enumerate(commands):
        console.print(("next: " if index == 0 else "  or: ") + command, markup=False, highlight=False)


#: What to do about a poor INT8 verdict, in the options of the command that prints it (a test checks that every
#: option named here exists on that command).
VERDICT_FIXES = {
    "calibrate": "leave the most sensitive layers in float with --max-drop PTS (decisions) or --target-snr DB, "
                 "try another --algo, or calibrate on more representative data",
    "quantize": "with --calib DATA, --max-drop PTS (decisions) or --target-snr DB leaves the most sensitive layers "
                "in float; or try another --algo, or calibrate on more representative data",
    "build": "with --calib DATA, --max-drop PTS (decisions) or --target-snr DB leaves the most sensitive layers in "
             "float; or try another --algo, or calibrate on more representative data",
    "eval": "leave the most sensitive layers in float with --auto-exclude --target-snr DB (needs --cache or a Q/DQ "
            "candidate), or recalibrate on more representative data",
    "quickstart": "try another --algo; on your own model, trtq calibrate can leave the most sensitive layers in float",
}


def verdict_fixes(command: str) -> str:
    """The fixes a poor verdict's warning names when ``command`` prints it (:data:`VERDICT_FIXES`)."""
    return VERDICT_FIXES[command]
