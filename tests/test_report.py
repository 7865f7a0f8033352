"""trtq.report: speed-ups, the shared bench table, JSON/CSV/PNG files written atomically."""

from __future__ import annotations

import csv
import importlib
import json
import math

import pytest

from trtq import report
from trtq.errors import OutputError
from trtq.report import BenchResult, bench_table, fill_speedups, throughput_from_latency, write_bench_report


def row(model, precision, batch, mean_ms, backend="ort-cpu", **kw):
    r = BenchResult(model=model, precision=precision, backend=backend, batch_size=batch, **kw)
    if mean_ms is not None:
        r.latency_ms_p50 = r.latency_ms_p90 = r.latency_ms_p99 = r.latency_ms_mean = mean_ms
        r.throughput = throughput_from_latency(batch, mean_ms)
        r.iterations = 10
    return r


def sample_rows():
    return [
        row("m.onnx", "fp32", 1, 10.0), row("m.onnx", "fp32", 8, 40.0),
        row("m.int8.onnx", "int8", 1, 5.0), row("m.int8.onnx", "int8", 8, 16.0),
        row("m.fp16.engine", "fp16", 1, 1.0, backend="tensorrt"),
        row("m.fp32.engine", "fp32", 1, 2.0, backend="tensorrt"),
        row("static.onnx", "fp32", 8, None, note="batch dimension of input 'x' is fixed at 1"),
    ]


def test_throughput_formula():
    assert throughput_from_latency(8, 4.0) == 2000.0
    assert throughput_from_latency(1, 0.5) == 2000.0


def test_speedup_against_fp32_row_of_same_backend_and_batch():
    rows = fill_speedups(sample_rows())
    by = {(r.model, r.batch_size): r for r in rows}
    assert by[("m.onnx", 1)].speedup == 1.0
    assert by[("m.int8.onnx", 1)].speedup == pytest.approx(2.0)
    assert by[("m.int8.onnx", 8)].speedup == pytest.approx(40.0 / 16.0)
    # TensorRT rows compare with the TensorRT fp32 engine, not with ONNX Runtime on the CPU
    assert by[("m.fp16.engine", 1)].speedup == pytest.approx(2.0)
    assert by[("static.onnx", 8)].speedup is None and by[("static.onnx", 8)].skipped


def test_speedup_without_baseline_is_none_and_backend_values_are_kept():
    rows = fill_speedups([row("a.onnx", "int8", 1, 2.0), row("b.engine", "int8", 1, 1.0, backend="tensorrt",
                                                              speedup=3.5)])
    assert rows[0].speedup is None
    assert rows[1].speedup == 3.5
    assert fill_speedups(rows, overwrite=True)[1].speedup is None


def test_table_has_a_row_per_result_and_shows_notes():
    from rich.console import Console

    rows = fill_speedups(sample_rows())
    table = bench_table(rows)
    assert table.row_count == len(rows)
    console = Console(width=250, record=True)
    console.print(table)
    text = console.export_text()
    assert "fixed at 1" in text and "2.00×" in text and "tensorrt" in text and "—" in text


def test_files_written_and_consistent(tmp_path):
    rows = fill_speedups(sample_rows())
    paths = write_bench_report(rows, tmp_path / "out", stem="run")
    assert set(paths) == {"json", "csv", "png"}
    assert [p.name for p in paths.values()] == ["run.json", "run.csv", "run.png"]
    data = json.loads(paths["json"].read_text())
    assert data["format"] == "trtq-bench" and len(data["results"]) == len(rows)
    assert data["results"][2]["speedup"] == pytest.approx(2.0)
    with open(paths["csv"], newline="") as handle:
        records = list(csv.DictReader(handle))
    assert len(records) == len(rows)
    assert list(records[0]) == report.CSV_COLUMNS
    for record in records:
        if record["throughput"]:
            assert float(record["throughput"]) == pytest.approx(
                int(record["batch_size"]) * 1000 / float(record["latency_ms_mean"]), rel=1e-12)
    assert records[-1]["throughput"] == "" and "fixed at 1" in records[-1]["note"]
    png = paths["png"].read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    assert report.read_bench_json(paths["json"])[0] == rows[0]
    assert not list((tmp_path / "out").glob("*.tmp")) and not list((tmp_path / "out").glob(".*"))


def test_all_skipped_still_plots(tmp_path):
    paths = write_bench_report([row("s.onnx", "fp32", 8, None, note="fixed")], tmp_path)
    assert paths["png"].read_bytes().startswith(b"\x89PNG")


def test_no_partial_files_when_plot_fails(tmp_path, monkeypatch):
    def broken(results, title=""):
        raise RuntimeError("plot failed")

    monkeypatch.setattr(report, "bench_plot_png", broken)
    with pytest.raises(RuntimeError, match="plot failed"):
        write_bench_report(sample_rows(), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


def test_unwritable_output_is_an_output_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        write_bench_report(sample_rows(), blocker / "sub")
    assert blocker.read_text() == "x"


def test_json_safe_non_finite():
    assert report.json_safe({"a": math.inf, "b": [-math.inf, math.nan, 1.5]}) == {"a": "inf", "b": ["-inf", "nan", 1.5]}
    json.loads(report.json_text({"snr": math.inf}))  # strict JSON


def test_speedup_never_against_another_models_fp32_row():
    rows = fill_speedups([row("demo.onnx", "fp32", 8, 2.0), row("yolo.onnx", "fp32", 8, 20.0),
                          row("yolo.int8-cpu.onnx", "int8", 8, 10.0), row("lone.int8.onnx", "int8", 8, 1.0)])
    by = {r.model: r for r in rows}
    assert by["yolo.onnx"].speedup == 1.0  # its own baseline, not 0.1x of demo's
    assert by["yolo.int8-cpu.onnx"].speedup == pytest.approx(2.0)
    assert by["lone.int8.onnx"].speedup is None  # no fp32 row of its own model: no number
    named = fill_speedups(rows, overwrite=True, baseline="demo.onnx")
    assert {r.model: r.speedup for r in named}["lone.int8.onnx"] == pytest.approx(2.0)


def test_sensitivity_caption_names_a_json_file_only_when_one_is_written():
    from rich.console import Console

    ev = importlib.import_module("trtq.evaluate")  # the module (trtq.evaluate is the function)
    from trtq.report import eval_tables

    report = ev.EvalReport("a.onnx", "b.onnx", 4, [], sensitivity_samples=4, amax_source="cache",
                           sensitivity=[ev.LayerSensitivity(f"t{i}", "Conv", 30.0 + i) for i in range(5)])

    def text(**kwargs):
        console = Console(record=True, width=200)
        for part in eval_tables(report, max_layers=2, **kwargs):
            console.print(part)
        return " ".join(console.export_text().split())  # the caption wraps at the table's width

    assert "3 more layer(s) not shown (--json PATH writes every one)" in text()
    assert "3 more layer(s) in out/r.json" in text(json_path="out/r.json")
