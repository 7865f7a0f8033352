"""Streaming models with --feedback: sequences as data, calibration on the float stream, streamed verdicts.

The integrator model keeps every call's INT8 rounding of its state: judged per call with the
float state given it looks fine, streamed with its own state its decisions drift, and only
``--feedback`` shows it. The GRU digits classifier streams its hidden state row by row.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _recurrent as R  # noqa: E402

from trtq.cli import main  # noqa: E402
from trtq.errors import DataError  # noqa: E402
from trtq.runtime.streaming import FeedbackError, FeedbackPair, open_sequences, parse_feedback


@pytest.fixture(scope="module")
def integrator(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stream")
    model = R.integrator_stream(folder / "integrator.onnx")
    calib = R.digit_sequences(folder / "calib", 8)
    held = R.digit_sequences(folder / "eval", 3, start=8 * 200)
    qdq = folder / "integrator.int8.onnx"
    assert main(["quantize", str(model), "--calib", str(calib), "--feedback", "stateN=state", "-o", str(qdq)]) == 0
    return model, calib, held, qdq


def _per_call_samples(model: Path, sequences: Path, out: Path) -> Path:
    """Every step of the float stream as one sample, with the float state it was given."""
    out.mkdir()
    session = ort.InferenceSession(str(model))
    for file in sorted(sequences.glob("*.npz")):
        x, state = np.load(file)["x"], np.zeros((1, R.STATE), np.float32)
        for t in range(len(x)):
            np.savez(out / f"{file.stem}_{t:04d}.npz", x=x[t], state=state[0])
            state = session.run(["stateN"], {"x": x[t:t + 1], "state": state})[0]
    return out


def _snr(text: str, output: str) -> float:
    row = next(line for line in text.splitlines() if line.startswith(f"│ {output} "))
    return float(row.split("│")[5])


def test_streamed_drift_is_seen_only_with_feedback(integrator, tmp_path, capsys):
    model, _, held, qdq = integrator
    calls = _per_call_samples(model, held, tmp_path / "calls")
    capsys.readouterr()
    assert main(["eval", str(model), str(qdq), "--data", str(calls), "--no-speed"]) == 0
    per_call = capsys.readouterr().out
    assert "warning:" not in per_call
    assert main(["eval", str(model), str(qdq), "--data", str(held), "--feedback", "stateN=state", "--no-speed"]) == 0
    streamed = capsys.readouterr().out
    assert "each model streamed with its own state" in streamed and "stateN" not in streamed.split("\n", 1)[1]
    assert re.search(r"warning:.*'scores' is poor", streamed.replace("\n", " "))
    assert _snr(streamed, "scores") < _snr(per_call, "scores") - 10


def test_calibration_draws_steps_from_the_float_stream(integrator, tmp_path):
    model, calib, _, _ = integrator
    cache = tmp_path / "c.cache"
    assert main(["calibrate", str(model), "--calib", str(calib), "--feedback", "stateN=state", "-o", str(cache)]) == 0
    sidecar = json.loads((tmp_path / "c.cache.json").read_text())
    assert sidecar["feedback"] == [{"output": "stateN", "input": "state"}]
    assert "streamed with its own state" in sidecar["verdict"]["form"]
    assert sidecar["verdict"]["worst"] == "'scores'"  # the state output never ranks or gates
    assert [o["name"] for o in sidecar["verdict"]["outputs"]] == ["scores"]
    # the state calibrated is the one the stream reaches (it grows far beyond the zeros it starts at)
    assert sidecar["amax"]["state"] > 5 * sidecar["amax"]["x"]


def test_sequence_layouts(tmp_path):
    """A sub-folder of step files per sequence, and a loader script yielding one dict per sequence, give the
    same steps as the .npz-with-time-axis layout."""
    model = R.integrator_stream(tmp_path / "m.onnx")
    files = R.digit_sequences(tmp_path / "files", 2, digits_per_sequence=2)
    folders = tmp_path / "folders"
    for file in sorted(files.glob("*.npz")):
        for t, row in enumerate(np.load(file)["x"]):
            (folders / file.stem).mkdir(parents=True, exist_ok=True)
            np.save(folders / file.stem / f"{t:03d}.npy", row)
    loader = tmp_path / "prep.py"
    loader.write_text("import glob\nimport numpy as np\n\ndef load_data():\n"
                      f"    for f in sorted(glob.glob({str(files / '*.npz')!r})):\n"
                      "        yield {'x': np.load(f)['x']}\n")
    from trtq.data import DataSpec
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs

    inputs = input_specs(load_onnx(model))
    pairs = [FeedbackPair("stateN", "state")]
    got = [open_sequences(DataSpec(str(path)), inputs, pairs) for path in (files, folders, loader)]
    for sequences in got:
        assert [len(s.steps) for s in sequences] == [16, 16]
        assert sequences[0].initial["state"].shape == (1, R.STATE)
        np.testing.assert_array_equal(sequences[1].steps[3]["x"], got[0][1].steps[3]["x"])
    assert main(["calibrate", str(model), "--calib", str(loader), "--feedback", "stateN=state",
                 "-o", str(tmp_path / "c.cache"), "--algo", "minmax"]) == 0


def test_gru_streams_its_hidden_state_row_by_row(tmp_path, capsys):
    """The digits GRU run one row per call, its [layers, batch, hidden] state fed back: calibrated, quantized
    and evaluated streamed; streamed FP32 gives the whole-digit FP32 logits."""
    model = R.recurrent_classifier(tmp_path / "gru.onnx", "gru")
    sequences = tmp_path / "rows"
    sequences.mkdir()
    images, _ = R.digits()
    for i in range(12):  # one digit per sequence, one row (a [rows=1, 8] step) per call
        np.savez(sequences / f"d{i:02d}.npz", x=images[1400 + i][:, np.newaxis, :])
    qdq = tmp_path / "gru.int8.onnx"
    assert main(["quantize", str(model), "--calib", str(sequences), "--feedback", "hN=h0", "-o", str(qdq)]) == 0
    capsys.readouterr()
    assert main(["eval", str(model), str(qdq), "--data", str(sequences), "--feedback", "hN=h0", "--no-speed"]) == 0
    assert "12 sequences (96 steps)" in capsys.readouterr().out

    from trtq.data import DataSpec
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs
    from trtq.runtime.base import OnnxRuntime
    from trtq.runtime.streaming import stream

    session = ort.InferenceSession(str(model))
    sequence = open_sequences(DataSpec(str(sequences)), input_specs(load_onnx(model)), [FeedbackPair("hN", "h0")])[0]
    streamed = stream(OnnxRuntime(str(model)), sequence, [FeedbackPair("hN", "h0")], ["logits"])[0]["logits"][-1]
    whole = session.run(["logits"], R.recurrent_samples("gru", 1))[0][0]
    np.testing.assert_allclose(streamed, whole, rtol=1e-4, atol=1e-5)


def test_bad_feedback_is_one_line_and_writes_nothing(integrator, tmp_path, capsys):
    model, calib, _, _ = integrator
    short = tmp_path / "short"
    short.mkdir()
    np.savez(short / "empty.npz", x=np.zeros((0, 8), np.float32))
    out = tmp_path / "c.cache"
    for extra, message in (
            (["--calib", str(calib), "--feedback", "scores=state"], r"output 'scores' is float32 batchx4 but input "
                                                                     r"'state' is float32 batchx16"),
            (["--calib", str(calib), "--feedback", "nope=state"], "the model has no output 'nope'"),
            (["--calib", str(calib), "--feedback", "stateN"], "expected OUT=IN"),
            (["--calib", str(short), "--feedback", "stateN=state"], "too short for one step")):
        capsys.readouterr()
        assert main(["calibrate", str(model), "-o", str(out), *extra]) == 2
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("trtq calibrate: error:")]
        assert len(errors) == 1 and re.search(message, errors[0]), errors
        assert not out.exists() and not (tmp_path / "c.cache.json").exists()
    with pytest.raises(FeedbackError, match="fed twice"):
        parse_feedback(["a=state", "b=state"])
    with pytest.raises(DataError, match="too short"):
        from trtq.data import DataSpec
        from trtq.graph.model import load_onnx
        from trtq.graph.signature import input_specs

        open_sequences(DataSpec(str(short)), input_specs(load_onnx(model)), [FeedbackPair("stateN", "state")])
