"""trtq.report: speed-ups, the shared bench table, JSON/CSV/PNG files written atomically."""

from __future__ import annotations

import csv
import json
import math

import pytest

from trtq import report
from trtq.compare.struct import LayerSensitivity
from trtq.compare.verdict import EvalReport
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
    table = bench_table(rows, width=250)
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

    from trtq.report import eval_tables

    report = EvalReport("a.onnx", "b.onnx", 4, [], sensitivity_samples=4, amax_source="cache",
                           sensitivity=[LayerSensitivity(f"t{i}", "Conv", 30.0 + i) for i in range(5)])

    def text(**kwargs):
        console = Console(record=True, width=200)
        for part in eval_tables(report, max_layers=2, **kwargs):
            console.print(part)
        return " ".join(console.export_text().split())  # the caption wraps at the table's width

    assert "3 more layer(s) not shown (--json PATH writes every one)" in text()
    assert "3 more layer(s) in out/r.json" in text(json_path="out/r.json")


def _render(renderable, width: int = 80) -> str:
    import io as _io

    from rich.console import Console

    console = Console(width=width, file=_io.StringIO(), color_system=None)
    console.print(renderable)
    return console.file.getvalue()


def _bench_rows():
    rows = []
    for model, precision in (("yolov8n-face-lindevs.onnx", "fp32"), ("yolov8n-face-lindevs.int8-cpu.onnx", "int8")):
        for batch, latency in ((1, 24.93175), (32, 612.40567)):
            row = BenchResult(model, precision, "ort-cpu", batch, latency * 0.98, latency * 1.3, latency * 1.9,
                              latency / (2 if precision == "int8" else 1), size_bytes=12_345_678, iterations=50)
            row.throughput = throughput_from_latency(batch, row.latency_ms_mean)
            rows.append(row)
    return fill_speedups(rows)


def test_bench_table_at_80_columns_drops_columns_and_cuts_no_number():
    text = _render(bench_table(_bench_rows(), width=80))
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    for row in _bench_rows():
        assert report.format_rate(row.throughput) in text and report.format_speedup(row.speedup) in text
    assert "not shown at 80 columns: p99 ms" in text and "bench.csv" in text
    assert "ONNX Runtime, CPU" in text.splitlines()[0]  # one backend: said once, in the title
    wide = _render(bench_table(_bench_rows(), width=200), width=200)
    assert "p99 ms" in wide and "not shown" not in wide


def test_fit_table_turns_a_short_table_on_its_side_before_cutting_numbers():
    from rich.table import Table

    table = Table()
    for name in ["output"] + [f"metric {i}" for i in range(9)]:
        table.add_column(name, justify="left" if name == "output" else "right")
    table.add_row("logits", *(f"{1000.123456 * i:.6f}" for i in range(9)))
    text = _render(report.fit_table(table, 80))
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80
    assert "8000.987648" in text and "metric 8" in text  # every number whole, every quantity a row


def test_one_format_per_quantity():
    assert report.format_percent(0.998) == "99.8 %" and report.format_percent(None) == "—"
    assert report.format_rate(1026.4) == "1,026" and report.format_rate(40.24) == "40.2"
    assert report.format_rate(3.14159) == "3.14"
    assert report.format_speedup(1.5555) == "1.56×"


def test_auto_table_lists_each_algorithm_once_with_its_rescore_beside_it():
    from trtq.pipeline.choose import AutoChoice, Candidate

    candidates = [Candidate("entropy", 20.45, 0.99632, snr_noise=0.5, samples=32),
                  Candidate("minmax", 40.15, 0.99996, snr_noise=0.41, samples=32),
                  Candidate("mse", 40.77, 0.99996, snr_noise=0.58, samples=32)]
    reserve = [Candidate("mse", 40.78, 0.99996, snr_noise=0.37, samples=64),
               Candidate("minmax", 40.03, 0.99995, snr_noise=0.25, samples=64)]
    choice = AutoChoice("mse", 64, candidates, overrides={"a": "minmax", "b": "minmax"}, trials=[{}] * 5,
                        snr_db=41.29, cosine=0.99997, reserve=reserve, reason="ahead beyond noise")
    text = _render(report.auto_choice_table(choice, width=80))
    rows = [line for line in text.splitlines() if line.startswith("│")]
    assert [r.split("│")[1].strip() for r in rows] == ["entropy", "minmax", "mse", "mse, 2 overrides"]
    header = next(line for line in text.splitlines() if line.startswith("┃"))
    assert [cell.strip() for cell in header.strip("┃ \n").split("┃")][-1] == "choice"  # every column has a header
    mse = next(r for r in rows if r.split("│")[1].strip() == "mse")
    assert "40.78 ± 0.37" in mse and mse.split("│")[-2].strip() == "chosen"
    assert max(len(line) for line in text.splitlines()) <= 80


def test_accuracy_table_says_int8_minus_fp32_in_points_and_when_int8_is_better():
    from types import SimpleNamespace

    accuracy = SimpleNamespace(reference_top1=0.9, candidate_top1=0.9333, labeled_samples=30, output="probs")
    rep = SimpleNamespace(outputs=[], metric=None, candidate="m.int8.onnx", candidate_precision="int8",
                          reference="m.onnx", reference_precision="fp32", samples=30, accuracy=accuracy,
                          sensitivity=[], auto_exclude=None)
    text = "".join(_render(part) for part in report.eval_tables(rep, width=80))
    assert "INT8 − FP32" in text and "+3.3 points (better)" in text
    assert "90.0 %" in text and "93.3 %" in text and "drop" not in text


def test_every_report_line_stays_whole_in_a_log():
    """A log or a file gets lines as long as they are (the terminal wraps them); trtq inserts no break in the
    middle of a tensor name."""
    import io as _io

    console = report.report_console()
    console.file = _io.StringIO()
    name = "/features/features.2/features.2.0/features.2.0.2/Relu_output_0"
    console.print(f"  override: {name} takes minmax's amax " * 2, markup=False)
    assert len(console.file.getvalue().splitlines()) == 1


def test_the_budget_hint_gives_the_estimated_count_or_says_why_there_is_none():
    from trtq.report import budget_hint

    drop = {"decision": "mask IoU of 'mask'", "points": 3.7}
    counted = {"decision_drop": drop, "budget_estimate": {"layers": 12, "ranked": 24, "samples": 32,
                                                          "best_points": None}}
    line = budget_hint(counted, "trtq calibrate m.onnx --calib d --max-drop 1")
    assert line == ("budget: mask IoU of 'mask' lost 3.7 points against FP32; about 12 of 24 layers in float keep "
                    "it within 1 point (estimated on 32 held-back samples; the budget measures every step and "
                    "checks the result on samples it never read: it may need fewer or more): trtq calibrate m.onnx "
                    "--calib d --max-drop 1")
    none_held = {"decision_drop": drop, "budget_estimate": {"layers": None, "ranked": 24, "samples": 32,
                                                            "best_points": 1.4}}
    assert "no float layers kept it within 1 point (at best 1.4 points lost, with up to all 24 ranked layers" in \
        budget_hint(none_held, "CMD")
    recorded_before = {"decision_drop": drop}  # a sidecar written before the estimate: the command alone
    assert budget_hint(recorded_before, "CMD").endswith("measured step by step on the held-back samples: CMD")
    too_big = {"decision_drop": drop, "budget_estimate": {"max_drop": 1.0, "not_estimated": "too big"}}
    assert budget_hint(too_big, "CMD").endswith("held-back samples (not estimated here: too big): CMD")
    assert budget_hint({"decision_drop": {"decision": "x", "points": 0.5}, "budget_estimate": None}, "CMD") is None
