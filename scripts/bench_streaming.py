#!/usr/bin/env python3
"""A streaming model judged by its decisions: Silero VAD (from its PyPI wheel), INT8 per algorithm, streamed.

    pip install --no-deps silero-vad        # the ONNX files ship in the wheel; nothing is downloaded at run time
    apt-get install espeak-ng               # speech for the sequences (offline text-to-speech)
    python scripts/bench_streaming.py [--quick]

Model: ``silero_vad_16k_op15.onnx`` (a convolutional front end, one LSTM cell, a sigmoid
speech probability), called chunk by chunk: ``input`` [1, 576] (64 samples of context + a
512-sample chunk at 16 kHz), ``state`` [2, batch, 128] fed back from ``stateN``, ``sr`` an
int64 scalar (16000), as silero-vad's own wrapper runs it.

Data: sequences of about 8 s, English sentences spoken by espeak-ng (several voices,
speeds and pitches, resampled to 16 kHz) separated by 0.3-1.5 s pauses, with seeded
background noise 30 dB below the speech. Calibration and evaluation sequences use
different sentences.

Both 16 kHz forms the wheel ships run (``--forms``): ``silero_vad_16k_op15.onnx`` (symbolic
batch, the LSTM inside an ``If``) and ``silero_vad_openvino_16k.onnx`` (every dim fixed at 1,
``state [2, 1, 128]`` sliced into h and c before its LSTM). For every single algorithm, and
for ``auto`` three times (with default flags on sequences: trtq reads the state pair from the
graph and streams it; per call with FP32's recorded states; and with ``--batch-axis state:1
--feedback stateN=state`` given by hand), the TensorRT-form Q/DQ model (what an engine computes, run by
ONNX Runtime) streams every evaluation sequence feeding back its own state, and its
decisions are compared with FP32's stream:

- steps agreeing: chunks where INT8 and FP32 take the same speech / non-speech decision
  (probability >= 0.5, silero's default threshold);
- event F1: speech segments (runs of speech chunks) matched one to one with FP32's at
  IoU >= 0.5;
- streamed SNR of the speech probability, and, for contrast, the per-call SNR with FP32's
  state handed in (the probability and the state output), which is what a per-call
  judgement sees.

The run is deterministic (fixed seeds); timings are not measured. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import importlib.resources
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATE = 16000
CHUNK = 512
CONTEXT = 64
THRESHOLD = 0.5
ALGORITHMS = ("entropy", "minmax", "percentile", "mse")
SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call Stella and ask her to bring these things with her from the store.",
    "Six spoons of fresh snow peas, five thick slabs of blue cheese.",
    "We also need a small plastic snake and a big toy frog for the kids.",
    "She can scoop these things into three red bags, and we will go meet her on Wednesday.",
    "The birch canoe slid on the smooth planks.",
    "Glue the sheet to the dark blue background.",
    "It is easy to tell the depth of a well.",
    "These days a chicken leg is a rare dish.",
    "Rice is often served in round bowls.",
    "The juice of lemons makes fine punch.",
    "The box was thrown beside the parked truck.",
    "The hogs were fed chopped corn and garbage.",
    "Four hours of steady work faced us.",
    "A large size in stockings is hard to sell.",
    "The boy was there when the sun rose.",
    "A rod is used to catch pink salmon.",
    "The source of the huge river is the clear spring.",
    "Kick the ball straight and follow through.",
    "Help the woman get back to her feet.",
    "A pot of tea helps to pass the evening.",
    "Smoky fires lack flame and heat.",
    "The soft cushion broke the man's fall.",
    "The salt breeze came across from the sea.",
]
VOICES = ["en-us", "en-gb", "en-us+m3", "en-us+f2", "en-gb+f3", "en-us+m7"]


def speak(text: str, voice: str, speed: int, pitch: int, folder: Path) -> np.ndarray:
    """``text`` spoken by espeak-ng at 16 kHz, float32 in [-1, 1]."""
    from scipy.signal import resample_poly

    path = folder / "tts.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(path), text], check=True)
    with wave.open(str(path)) as handle:
        rate = handle.getframerate()
        audio = np.frombuffer(handle.readframes(handle.getnframes()), np.int16).astype(np.float32) / 32768
    return resample_poly(audio, RATE, rate).astype(np.float32)


def make_sequences(sentences: List[str], count: int, seconds: float, seed: int, folder: Path) -> List[np.ndarray]:
    """``count`` signals of about ``seconds`` each: utterances separated by pauses, over low noise."""
    rng = np.random.default_rng(seed)
    signals = []
    for _ in range(count):
        parts, length = [], 0
        while length < seconds * RATE:
            pause = np.zeros(int(rng.uniform(0.3, 1.5) * RATE), np.float32)
            text = sentences[int(rng.integers(len(sentences)))]
            voice = VOICES[int(rng.integers(len(VOICES)))]
            speech = speak(text, voice, int(rng.integers(140, 200)), int(rng.integers(30, 70)), folder)
            speech *= rng.uniform(0.3, 0.9) / max(1e-6, float(np.abs(speech).max()))
            parts += [pause, speech]
            length += len(pause) + len(speech)
        signal = np.concatenate(parts)[: int(seconds * RATE)]
        rms = float(np.sqrt(np.mean(signal[signal != 0] ** 2)))
        signal = signal + rng.standard_normal(len(signal)).astype(np.float32) * rms * 10 ** (-30 / 20)
        signals.append(signal.astype(np.float32))
    return signals


def chunks(signal: np.ndarray) -> np.ndarray:
    """[T, 576]: each 512-sample chunk with the 64 samples before it (zeros before the start)."""
    steps = len(signal) // CHUNK
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), signal[: steps * CHUNK]])
    return np.stack([padded[t * CHUNK: t * CHUNK + CONTEXT + CHUNK] for t in range(steps)])


def save_sequences(signals: List[np.ndarray], folder: Path) -> Path:
    """The sequence layout trtq reads with --feedback: one .npz per sequence, a leading time axis."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, signal in enumerate(signals):
        np.savez(folder / f"seq{i:03d}.npz", input=chunks(signal), sr=np.array(RATE, np.int64))
    return folder


def stream_model(model, folder: Path) -> List[Dict[str, np.ndarray]]:
    """Every sequence streamed through ``model`` with its own state: per sequence {output: [T, ...]}."""
    from trtq.data import DataSpec
    from trtq.graph.model import load_onnx
    from trtq.graph.signature import input_specs
    from trtq.runtime.base import OnnxRuntime
    from trtq.runtime.streaming import FeedbackPair, open_sequences, stream

    pairs = [FeedbackPair("stateN", "state")]
    float_model = load_onnx(str(MODEL))
    sequences = open_sequences(DataSpec(str(folder)), input_specs(float_model), pairs)
    runtime = OnnxRuntime(model)
    return [stream(runtime, s, pairs, ["output", "stateN"])[0] for s in sequences]


def per_call_samples(outputs: List[Dict[str, np.ndarray]], folder: Path, target: Path) -> Path:
    """Every step of FP32's stream as one sample with the state FP32 had (the per-call view's data)."""
    target.mkdir(parents=True, exist_ok=True)
    for i, file in enumerate(sorted(folder.glob("*.npz"))):
        inputs = np.load(file)["input"]
        state = np.zeros((2, 128), np.float32)  # one sample of [2, batch, 128]
        joined = outputs[i]["stateN"]  # the steps' [2, 1, 128] joined on axis 0: [2 * T, 1, 128]
        for t in range(len(inputs)):
            np.savez(target / f"seq{i:03d}_{t:04d}.npz", input=inputs[t], state=state, sr=np.array(RATE, np.int64))
            state = joined[2 * t: 2 * t + 2, 0]
    return target


def events(decisions: np.ndarray) -> List[Tuple[int, int]]:
    """Runs of speech chunks as [start, end) step ranges."""
    found, start = [], None
    for t, speech in enumerate(decisions):
        if speech and start is None:
            start = t
        elif not speech and start is not None:
            found.append((start, t))
            start = None
    if start is not None:
        found.append((start, len(decisions)))
    return found


def event_f1(reference: List[Tuple[int, int]], candidate: List[Tuple[int, int]]) -> float:
    """F1 of candidate events against reference events, matched one to one at IoU >= 0.5."""
    if not reference and not candidate:
        return 1.0
    used, matched = set(), 0
    for a, b in reference:
        for j, (c, d) in enumerate(candidate):
            if j in used:
                continue
            inter = max(0, min(b, d) - max(a, c))
            union = max(b, d) - min(a, c)
            if union and inter / union >= 0.5:
                used.add(j)
                matched += 1
                break
    precision = matched / len(candidate) if candidate else 0.0
    recall = matched / len(reference) if reference else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def snr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    noise = float(np.sum((reference.astype(np.float64) - candidate) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    return float("inf") if noise == 0 else 10 * np.log10(signal / noise)


def decisions_row(reference: List[Dict[str, np.ndarray]], candidate: List[Dict[str, np.ndarray]]) -> dict:
    agree = total = 0
    f1s = []
    for ref, cand in zip(reference, candidate):
        r, c = ref["output"].reshape(-1) >= THRESHOLD, cand["output"].reshape(-1) >= THRESHOLD
        agree += int(np.sum(r == c))
        total += len(r)
        f1s.append(event_f1(events(r), events(c)))
    ref_all = np.concatenate([r["output"].reshape(-1) for r in reference])
    cand_all = np.concatenate([c["output"].reshape(-1) for c in candidate])
    return {"agree": agree / total, "f1": float(np.mean(f1s)), "snr": snr_db(ref_all, cand_all)}


MODEL = None
#: The two ONNX forms the silero-vad wheel ships for 16 kHz streaming, read with default flags.
FORMS = {"op15": "silero_vad_16k_op15.onnx", "openvino": "silero_vad_openvino_16k.onnx"}


def main() -> int:
    global MODEL
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer and shorter sequences (a smoke run)")
    parser.add_argument("--forms", default=",".join(FORMS), help=f"model files to run ({', '.join(FORMS)})")
    args = parser.parse_args()
    if shutil.which("espeak-ng") is None:
        print("needs espeak-ng (apt-get install espeak-ng)", file=sys.stderr)
        return 2
    try:
        folder = importlib.resources.files("silero_vad") / "data"
    except ModuleNotFoundError:
        print("needs the silero-vad wheel (pip install --no-deps silero-vad)", file=sys.stderr)
        return 2
    calib_count, eval_count, seconds = (4, 3, 4.0) if args.quick else (16, 12, 8.0)
    with tempfile.TemporaryDirectory(prefix="trtq-stream-") as tmp:
        tmp = Path(tmp)
        half = len(SENTENCES) // 2
        calib = save_sequences(make_sequences(SENTENCES[:half], calib_count, seconds, 0, tmp), tmp / "calib")
        held = save_sequences(make_sequences(SENTENCES[half:], eval_count, seconds, 1, tmp), tmp / "eval")
        for form in args.forms.split(","):
            MODEL = folder / FORMS[form]
            run_form(form, calib, held, tmp / form, eval_count, seconds)
    return 0


def run_form(form: str, calib: Path, held: Path, work: Path, eval_count: int, seconds: float) -> None:
    from trtq.calib import amax_from_histograms
    from trtq.compare.accumulate import compare_outputs
    from trtq.data import DataSpec
    from trtq.graph.model import load_onnx
    from trtq.graph.qdq import quantize_model
    from trtq.graph.signature import read_signature
    from trtq.ort import create_session, run
    from trtq.pipeline.calibration import calibrate

    model = load_onnx(str(MODEL))
    signature = read_signature(model)
    names = [s.name for s in signature.inputs]
    reference = stream_model(model, held)
    fp32_calib = stream_model(model, calib)
    calls = per_call_samples(fp32_calib, calib, work / "calls")
    held_calls = per_call_samples(reference, held, work / "held_calls")

    default = calibrate(str(MODEL), DataSpec(str(calib), samples=1000), algorithm="auto", observe="qdq")
    streamed = calibrate(str(MODEL), DataSpec(str(calib), samples=1000, batch_axes={"state": 1}), algorithm="auto",
                         observe="qdq", feedback=["stateN=state"])
    per_call = calibrate(str(MODEL), DataSpec(str(calls), samples=1000), algorithm="auto", observe="qdq")
    tables = {name: amax_from_histograms(streamed.histograms, name, **({"percentile": 99.99}
                                                                        if name == "percentile" else {}))
              for name in ALGORITHMS}
    tables["auto, default flags (sequences)"] = default.amax
    tables["auto, per call (recorded states)"] = per_call.amax
    tables["auto, --batch-axis state:1 --feedback stateN=state"] = streamed.amax
    chosen = {"auto, default flags (sequences)": default.auto.chosen,
              "auto, per call (recorded states)": per_call.auto.chosen,
              "auto, --batch-axis state:1 --feedback stateN=state": streamed.auto.chosen}
    rows = []
    call_feeds = [dict(np.load(f)) for f in sorted(held_calls.glob("*.npz"))]
    for name, amax in tables.items():
        qdq, _ = quantize_model(model, amax, target="trt")
        row = decisions_row(reference, stream_model(qdq, held))
        session, fp32 = create_session(qdq), create_session(model)
        pairs = []
        for feed in call_feeds[:: max(1, len(call_feeds) // 400)]:
            one = {k: v for k, v in {"input": feed["input"][None], "state": feed["state"][:, None],
                                     "sr": feed["sr"]}.items() if k in names}
            pairs.append((run(fp32, one), run(session, one)))
        metrics = {m.name: m for m in compare_outputs(pairs, ["output", "stateN"])}
        row["call_output"], row["call_state"] = metrics["output"].snr_db, metrics["stateN"].snr_db
        rows.append((name, row))
    steps = sum(len(r["output"]) for r in reference)
    pairs_read = ", ".join(f"{p.output} -> {p.input}" for p in signature.pairs) or "none"
    print(f"\nSilero VAD 16k, {FORMS[form]} (state pair read from the graph: {pairs_read}; state batch axis "
          f"{dict((s.name, s.batch_axis) for s in signature.inputs).get('state')}), {eval_count} held-out "
          f"sequences of {seconds:g} s ({steps} chunks), TensorRT-form INT8 streamed with its own state against "
          f"FP32's stream:\n")
    print("| scales | steps agreeing | event F1 | streamed SNR (prob) | per-call SNR (prob / state) |")
    print("| --- | --- | --- | --- | --- |")
    for name, row in rows:
        label = f"{name}: chose {chosen[name]}" if name in chosen else name
        print(f"| {label} | {row['agree']:.1%} | {row['f1']:.3f} | {row['snr']:.1f} dB | "
              f"{row['call_output']:.1f} / {row['call_state']:.1f} dB |")


if __name__ == "__main__":
    sys.exit(main())
