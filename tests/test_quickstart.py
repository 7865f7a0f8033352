"""The README's main job, end to end on the bundled demo with small counts."""

from __future__ import annotations

import json

import pytest

from trtq import cache
from trtq.cli import main


@pytest.mark.slow
def test_quickstart_end_to_end_small(tmp_path, capsys):
    pytest.importorskip("torch", reason="the quickstart exports the demo from PyTorch")
    out = tmp_path / "qs"
    code = main(["quickstart", "-o", str(out), "--samples", "64", "--eval-samples", "100",
                 "--batch-sizes", "1,8", "--iterations", "3"])
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("demo.onnx", "demo.calib.cache", "demo.calib.cache.json", "demo.int8.onnx", "demo.int8-cpu.onnx",
                 "bench.json", "bench.csv", "bench.png"):
        assert (out / name).stat().st_size > 0, name
    parsed = cache.read_cache(out / "demo.calib.cache")
    assert parsed.sidecar["data"]["samples"] == 64
    rows = json.loads((out / "bench.json").read_text())["results"]
    assert {(r["precision"], r["batch_size"]) for r in rows} == {("fp32", 1), ("fp32", 8), ("int8", 1), ("int8", 8)}
    for row in rows:
        assert row["throughput"] == pytest.approx(row["batch_size"] * 1000.0 / row["latency_ms_mean"], rel=1e-9)
    # the verdict names accuracy of both precisions and where the cache is
    assert "top-1 accuracy" in printed and "calibration cache" in printed and str(out / "demo.calib.cache") in printed
    assert "exported from PyTorch" in printed


def test_quickstart_without_torch_uses_bundled_onnx(tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_torch(name, *args, **kwargs):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_torch)
    out = tmp_path / "qs"
    code = main(["quickstart", "-o", str(out), "--samples", "32", "--eval-samples", "50",
                 "--batch-sizes", "4", "--iterations", "2"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "bundled demo_digits.onnx" in printed
    assert (out / "demo.int8-cpu.onnx").exists()


def test_quickstart_unwritable_output(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(["quickstart", "-o", str(blocker / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "blocker" not in err and "file" in err


def test_quickstart_fidelity_gate_exits_3(tmp_path, capsys):
    from trtq.cli import main

    code = main(["quickstart", "--no-torch", "-o", str(tmp_path / "qs"), "--samples", "100",
                 "--batch-sizes", "1", "--iterations", "2", "--min-snr", "500"])
    err = capsys.readouterr().err
    assert code == 3 and "INT8 fidelity gate failed" in err and "--min-snr 500" in err
    assert not (tmp_path / "qs" / "demo.calib.cache").exists()


def test_the_readme_main_form_on_the_bundled_data_reads_only_calibration_images():
    """``--calib calib_data/`` (the README's main form) reads the 1000 calibration digits and not one of the
    500 held-out ones, which live in eval_data/."""
    from pathlib import Path

    from trtq.data import data_files
    from trtq.quickstart import bundled_data

    root = Path(__file__).resolve().parents[1]
    calib, held_out = bundled_data()
    read = data_files(str(root / "calib_data"))
    assert len(read) == 1000 and all(p.suffix == ".png" for p in read)
    held_names = {p.name for p in held_out.glob("*.png")}
    assert len(held_names) == 500 and not held_names & {p.name for p in read}
    assert calib.resolve() == root / "calib_data" / "digits"  # relative to the working directory when it is there
