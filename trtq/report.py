"""Benchmark and accuracy reports: one row type shared by ONNX Runtime and TensorRT benches.

:class:`BenchResult` rows come from :func:`trtq.bench.benchmark` (backend ``"ort-cpu"``)
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
    if size is None:
        return "—"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


from .jsonio import json_safe  # noqa: E402,F401 - the one home of strict JSON; re-exported here


def json_text(data: Any) -> str:
    from .jsonio import dumps

    return dumps(data)


def write_json(path: Union[str, Path], data: Any) -> Path:
    """Write ``data`` as strict JSON (see :func:`json_safe`), atomically."""
    from .fileio import write_text_atomic

    return write_text_atomic(path, json_text(data))


# ---------------------------------------------------------------------------------------------
# Benchmark tables and files


def bench_table(results: Sequence[BenchResult], title: Optional[str] = "benchmark"):
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
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    table.add_column("model", overflow="fold")
    table.add_column("backend")
    table.add_column("precision")
    table.add_column("batch", justify="right")
    for name in ("p50 ms", "p90 ms", "p99 ms", "mean ms", "samples/s", "speed-up", "size"):
        table.add_column(name, justify="right")
    if notes:
        table.add_column("note")
    for r in results:
        speedup = "—" if r.speedup is None else f"{r.speedup:.2f}×"
        cells = [escape(r.model), r.backend, r.precision, str(r.batch_size), _fmt(r.latency_ms_p50, 3),
                 _fmt(r.latency_ms_p90, 3), _fmt(r.latency_ms_p99, 3), _fmt(r.latency_ms_mean, 3),
                 _fmt(r.throughput, 1), speedup, format_size(r.size_bytes)]
        if notes:
            cells.append(escape(f"[{notes[r.note]}]") if r.note else "")
        table.add_row(*cells, style="dim" if r.skipped else None)
    return table


def report_console():
    """A rich Console on stdout; when stdout is not a terminal (logs, files) it is 160 columns wide,
    so report tables are not squeezed to the 80-column default."""
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
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


def bench_plot_png(results: Sequence[BenchResult], title: str = "throughput vs batch size") -> bytes:
    """PNG bytes: throughput against batch size (log-2 x axis), one line per (model, precision, backend)."""
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
        axes.plot([r.batch_size for r in rows], [r.throughput for r in rows], marker=markers[index % len(markers)],
                  label=label)
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
    axes.set_title(title)
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
    from .jsonio import List as ListOf, Map, read_json

    data = read_json(path, "bench report", schema={"results?": ListOf(Map("any"))})
    names = set(CSV_COLUMNS)
    return [BenchResult(**{k: v for k, v in row.items() if k in names}) for row in data.get("results", [])]



# ---------------------------------------------------------------------------------------------
# Evaluation tables (fields of trtq.evaluate.EvalReport; no import of trtq.evaluate needed)


def _db(value: Optional[float]) -> str:
    return "—" if value is None else ("∞" if value == math.inf else _fmt(value, 2))


def _fraction(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.4f}"


def eval_tables(report, max_layers: int = 20, json_path: Optional[str] = None) -> list:
    """Rich renderables for an ``EvalReport``: a heading line and a table per section (outputs, accuracy,
    layer sensitivity, mixed-precision steps). Sensitivity shows the ``max_layers`` worst layers; the
    caption points to ``json_path`` for the rest only when that report is written."""
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    parts: list = []

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
        outputs.add_row(escape(o.name), shape, f"{o.cosine:.6f}",
                        f"{o.cosine_min:.6f}" if o.has_cosine else "—",  # of one value per sample: only its sign
                        _db(o.snr_db), f"{o.max_abs_error:.4g}", f"{o.mean_abs_error:.4g}", f"{o.ref_abs_max:.4g}",
                        _fraction(o.top1_agreement), _fraction(o.top5_agreement),
                        _fraction(o.sample_agreement if (o.positions or 1) > 1 else None),
                        "—" if worst is None else f"{escape(worst[0])}: {_db(worst[1])}")
    if report.metric is not None:
        outputs.caption = (f"metric {escape(report.metric.name)} (yours; 1 = identical): {report.metric.value:.4f} "
                           f"on {report.metric.samples} samples")
    section(f"fidelity of {report.candidate} ({report.candidate_precision}) against {report.reference} "
            f"({report.reference_precision}) on {report.samples} samples", outputs)
    if report.accuracy is not None:
        a = report.accuracy
        accuracy = Table()
        for name in ("model", "top-1 accuracy"):
            accuracy.add_column(name, justify="right" if name != "model" else "left")
        accuracy.add_row(escape(report.reference), f"{a.reference_top1:.4f}")
        accuracy.add_row(escape(report.candidate), f"{a.candidate_top1:.4f}")
        accuracy.add_row("drop", f"{a.reference_top1 - a.candidate_top1:+.4f}")
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
                          "—" if s.cosine is None else f"{s.cosine:.5f}", _fraction(s.top1_agreement),
                          _fmt(s.latency_ms, 3), "—" if s.speedup is None else f"{s.speedup:.2f}×", verdict)
        section(f"mixed precision, TensorRT form: leave layers in float until {label} >= {auto.target:g}, each step "
                f"measured ({auto.samples} samples; {len(auto.excluded)} node(s) in float, "
                f"{auto.quantizable_layers} quantizable layers)", steps)
    return parts


def auto_choice_table(choice):
    """A rich table of ``--algo auto``'s candidates: decision, worst SNR (with their bootstrap noise) and cosine."""
    from rich.table import Table

    decision = next((c.decision_name for c in choice.candidates if c.decision_name), "")
    on = "held-back calibration samples" if getattr(choice, "held_back", True) else \
        "calibration samples (too few to hold any back)"
    first = choice.candidates[0].samples if choice.candidates and choice.candidates[0].samples else choice.samples
    wider = f", leaders within noise rescored on {choice.samples}" if choice.reserve else ""
    table = Table(title=f"--algo auto: TensorRT-form Q/DQ model of each algorithm on {first} {on}"
                        f"{wider} (decisions first, then worst output / channel; ± bootstrap noise)",
                  title_justify="left", caption=f"chose {choice.chosen}: {choice.reason}" if choice.reason else None,
                  caption_justify="left")
    columns = ["algorithm"] + ([decision] if decision else []) + ["SNR dB", "cosine", ""]
    for name in columns:
        table.add_column(name, justify="left" if name in ("algorithm", "") else "right")

    def noisy(value, noise, digits: int, percent: bool = False) -> str:
        if value is None:
            return "—"
        scale = 100 if percent else 1
        text = _db(value) if not percent else f"{scale * value:.{digits}f} %"
        return text + (f" ± {scale * noise:.{digits}f}" if noise is not None and math.isfinite(value) else "")

    rows = [(c, "") for c in choice.candidates] + [(c, f"on {c.samples} samples") for c in choice.reserve]
    for c, note in rows:
        cells = [c.name]
        if decision:
            cells.append(noisy(c.decision, c.decision_noise, 1, percent=True))
        cells += [noisy(c.snr_db, c.snr_noise, 2), f"{c.cosine:.5f}",
                  " ".join(x for x in (note, "chosen" if c.name == choice.chosen and (note or not choice.reserve)
                                       else "") if x)]
        table.add_row(*cells)
    if choice.overrides or choice.trials:
        kept = len(choice.overrides)
        cells = [f"+ {kept} per-tensor override(s)"] + (
            [noisy(choice.decision, None, 1, percent=True)] if decision else []) + [
            _db(choice.snr_db), f"{choice.cosine:.5f}", f"{len(choice.trials)} trial(s) measured"]
        table.add_row(*cells)
    return table


#: How warnings recorded by trtq before the fixes were the printing command's own ended (cut when printed).
_LEGACY_FIXES = ": leave the most sensitive layers in float with --auto-exclude"


def print_verdict(console, verdict: Optional[dict], source: str = "", fixes: str = "") -> None:
    """The verdict's one line, and its warning line when the INT8 result is poor (a sidecar record or Verdict dict).

    ``fixes``: what to do, in the options of the command that prints it
    (:func:`trtq.cli.options.verdict_fixes`), appended to the warning.
    """
    from rich.markup import escape

    if not verdict:
        return
    line = verdict.get("line") or ""
    console.print(escape(line) + (f" [dim]({escape(source)})[/]" if source else ""), highlight=False)
    if verdict.get("warning"):
        warning = str(verdict["warning"]).split(_LEGACY_FIXES)[0] + (f"; {fixes}" if fixes else "")
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
