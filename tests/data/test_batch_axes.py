"""Inputs whose batch axis is not axis 0, or that have none: recurrent state, scalars (real trained models).

The GRU/LSTM classifiers over the digits' rows keep their state in ONNX's layout
``[layers, batch, hidden]``; the branch model takes an int64 scalar that drives an ``If``.
Each is calibrated with default flags from per-sample ``.npz`` files and from a loader
script, quantized and evaluated through the CLI.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _recurrent as R  # noqa: E402

from trtq.cli import main  # noqa: E402
from trtq.data import DataSpec, open_source  # noqa: E402
from trtq.errors import DataError  # noqa: E402
from trtq.graph.batch import BatchAxisError  # noqa: E402
from trtq.graph.signature import input_specs, read_signature  # noqa: E402


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recurrent")
    return {"gru": R.recurrent_classifier(folder / "gru.onnx", "gru"),
            "lstm": R.recurrent_classifier(folder / "lstm.onnx", "lstm"),
            "branch": R.scalar_branch_classifier(folder / "branch.onnx")}


def _npz_per_sample(folder: Path, cell: str, count: int = 48) -> Path:
    folder.mkdir()
    feed = R.recurrent_samples(cell, count)
    for i in range(count):  # one sample per file: states without their batch axis, [layers, hidden]
        np.savez(folder / f"s{i:03d}.npz", **{k: (v[i] if k == "x" else v[:, i]) for k, v in feed.items()})
    return folder


def _loader(path: Path, cell: str, batch: int = 8) -> Path:
    path.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})\n"
        "import _recurrent as R\n\n"
        "def load_data():\n"
        f"    feed = R.recurrent_samples({cell!r}, 48)\n"
        f"    for i in range(0, 48, {batch}):  # whole feeds in the model's layout: state batch on axis 1\n"
        f"        yield {{k: (v[i:i + {batch}] if k == 'x' else v[:, i:i + {batch}]) for k, v in feed.items()}}\n")
    return path


def test_batch_axes_inferred_from_the_graph(models):
    for cell, states in (("gru", ["h0"]), ("lstm", ["h0", "c0"])):
        model = onnx.load(str(models[cell]))
        axes = {s.name: s.batch_axis for s in input_specs(model)}
        assert axes == {"x": 0, **{name: 1 for name in states}}
        # without dim_params the LSTM/GRU semantics alone place the state's batch on axis 1
        for vi in model.graph.input:
            for dim in vi.type.tensor_type.shape.dim:
                if dim.HasField("dim_param"):
                    dim.dim_value = 2
        signature = read_signature(model)
        assert {s.name: s.batch_axis for s in signature.inputs}["h0"] == 1
        assert signature.output_axes() == {"logits": 0, **{n: 1 for n in ("hN", "cN")[:len(states)]}}
    branch = onnx.load(str(models["branch"]))
    assert {s.name: s.batch_axis for s in input_specs(branch)} == {"x_raw": 0, "mode": None}
    assert {s.name: s.batch_axis for s in input_specs(branch, {"x_raw": -1})}["x_raw"] == 1


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_recurrent_models_from_npz_and_loader(models, tmp_path, cell, capsys):
    data = _npz_per_sample(tmp_path / "npz", cell)
    source = open_source(DataSpec(str(data), samples=None, batch_size=16), input_specs(onnx.load(str(models[cell]))))
    batch = next(iter(source))
    assert batch["x"].shape == (16, 8, 8) and batch["h0"].shape == (R.LAYERS, 16, R.HIDDEN)
    cache = tmp_path / "npz.cache"
    assert main(["calibrate", str(models[cell]), "--calib", str(data), "-o", str(cache)]) == 0
    records = {r["name"]: r for r in json.loads((tmp_path / "npz.cache.json").read_text())["model"]["inputs"]}
    assert records["h0"]["batch_axis"] == 1 and records["x"]["batch_axis"] == 0

    loader = _loader(tmp_path / "prep.py", cell)
    whole = open_source(DataSpec(str(loader), samples=None, batch_size=32), input_specs(onnx.load(str(models[cell]))))
    assert [b["h0"].shape[1] for b in whole] == [8] * 6  # fed as they are: never re-split or joined
    qdq = tmp_path / "q.onnx"
    assert main(["quantize", str(models[cell]), "--calib", str(loader), "-o", str(qdq)]) == 0
    capsys.readouterr()
    assert main(["eval", str(models[cell]), str(qdq), "--data", str(data), "--no-speed"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    # the recurrent state output is a state pair of the graph (h0 reaches the GRU/LSTM's initial_h, hN is its
    # Y_h): judged per call it is state, not a decision, and eval says so instead of scoring it
    assert "logits" in out and "state output 'hN' (fed back as 'h0') not judged" in out


def test_scalar_input_driving_an_if(models, tmp_path, capsys):
    data = tmp_path / "npz"
    data.mkdir()
    images = R.digits()[0].reshape(-1, 64)
    for i in range(40):
        np.savez(data / f"s{i:03d}.npz", x_raw=images[1400 + i], mode=np.array(1))  # a rank-0 array
    cache = tmp_path / "c.cache"
    assert main(["calibrate", str(models["branch"]), "--calib", str(data), "-o", str(cache)]) == 0
    sidecar = json.loads((tmp_path / "c.cache.json").read_text())
    # the compute sits in the If's branches: the one mode=1 selects is calibrated (inlined for ONNX Runtime),
    # the other cannot be, and the Q/DQ path places nothing inside either: said, not hidden
    coverage = sidecar["coverage"]
    assert coverage["weighted_ops"] == 3 and coverage["with_scales"] == 2
    assert {e["name"]: e["scaled"] for e in coverage["in_subgraphs"]} == {"then_mix": True, "then_matmul": True,
                                                                          "else_matmul": False}
    assert {"hidden", "hidden_relu", "then_mm"} <= set(sidecar["amax"])
    loader = tmp_path / "prep.py"
    loader.write_text("import numpy as np\n\ndef load_data():\n"
                      f"    x = np.load({str(data / 's000.npz')!r})['x_raw']\n"
                      "    for i in range(20):\n"
                      "        yield {'x_raw': x + i / 100, 'mode': np.int64(1)}\n")
    capsys.readouterr()
    qdq = tmp_path / "q.onnx"  # every weighted op sits in the If: the Q/DQ model would be float, so none is made
    assert main(["quantize", str(models["branch"]), "--calib", str(loader), "-o", str(qdq)]) == 2
    assert "0 of 3 Conv/MatMul/Gemm ops got INT8 scales" in capsys.readouterr().err and not qdq.exists()
    assert main(["eval", str(models["branch"]), str(models["branch"]), "--data", str(data), "--no-speed",
                 "--batch-axis", "mode:none"]) == 0


def test_bad_batch_inputs_are_one_line_errors_and_write_nothing(models, tmp_path, capsys):
    data = tmp_path / "npz"
    data.mkdir()
    images = R.digits()[0].reshape(-1, 64)
    for i in range(8):
        np.savez(data / f"s{i}.npz", x_raw=images[i], mode=np.array(1 if i < 5 else 0))
    out = tmp_path / "c.cache"
    cases = [
        (["--calib", str(data)], r"input 'mode' has no batch axis .*s\d.npz has [01], .*s\d.npz has [01]\. "),
        (["--calib", str(data), "--batch-axis", "nope:0"], "the model has no input 'nope'"),
        (["--calib", str(data), "--batch-axis", "x_raw:2"], "input 'x_raw' has rank 2 .* -2..1"),
        (["--calib", str(data), "--batch-axis", "x_raw"], "expected NAME:AXIS"),
    ]
    for extra, message in cases:
        capsys.readouterr()
        assert main(["calibrate", str(models["branch"]), "-o", str(out), "--samples", "all", *extra]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trtq calibrate: error:")]
        assert len(errors) == 1 and re.search(message, errors[0]), errors
        assert not out.exists() and not (tmp_path / "c.cache.json").exists()
    with pytest.raises(BatchAxisError):
        input_specs(onnx.load(str(models["branch"])), {"mode": 0})  # a scalar has no axis 0
    with pytest.raises(DataError, match="no batch axis"):
        list(open_source(DataSpec(str(data), samples=None, shuffle=False), input_specs(onnx.load(str(models["branch"])))))


def test_bench_sizes_each_input_on_its_own_batch_axis(models, tmp_path):
    from trtq.bench import SampleFeeds, random_feed
    from trtq.pipeline.benchmarking import benchmark

    specs = input_specs(onnx.load(str(models["lstm"])))
    feed, why = random_feed(specs, 4, {"x": (1, 8, 8)})
    assert not why and feed["x"].shape == (4, 8, 8) and feed["h0"].shape == (R.LAYERS, 4, R.HIDDEN)
    branch = input_specs(onnx.load(str(models["branch"])))
    feed, why = random_feed(branch, 3)  # `mode` picks the branch: random data never choose it (0 would, silently)
    assert feed is None and "'mode' is an integer configuration input" in why
    data = _npz_per_sample(tmp_path / "npz", "lstm", count=5)
    samples = SampleFeeds(DataSpec(str(data)), specs, 8)
    feed, note = samples.feed(specs, 8)
    assert feed["h0"].shape == (R.LAYERS, 8, R.HIDDEN) and "5 real samples repeated" in note
    rows = benchmark([str(models["lstm"])], (1, 2), iterations=2, warmup=0, shapes={"x": (1, 8, 8)})
    assert [r.batch_size for r in rows] == [1, 2] and all(r.latency_ms_p50 for r in rows)
