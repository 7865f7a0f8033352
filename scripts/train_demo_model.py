#!/usr/bin/env python3
"""Train trtq's embedded demo model and write its calibration and evaluation data.

    python scripts/train_demo_model.py            # ~1.5 minutes on 2 idle CPU cores

Data: scikit-learn's digits (1797 8x8 grayscale images of 0-9, shipped inside the
scikit-learn wheel; no download). Each image (values 0..16) is scaled to 0..255,
upsampled to 32x32 with Pillow's bicubic filter and stored as an 8-bit grayscale PNG;
the model is trained on exactly those pixels / 255, so an image folder read with
trtq's default preprocessing (scale 1/255, no mean/std) feeds it what it was trained on.

Split (seeded, stratified by class):

- eval:  500 images held out: never trained on, never calibrated on
         -> eval_data/digits/*.png + labels.csv (id,label): outside calib_data/, so no
            calibration on calib_data/ ever reads them
- train: the other 1297 images
- calib: 1000 of the training images (calibration data is normally training data)
         -> calib_data/digits/*.png (what `--calib calib_data/` reads)

File names are ``d<index>.png`` with the image's index in ``load_digits()``; the
split itself is written to calib_data/digits/split.json.

Writes trtq/assets/demo_digits.pt (the state_dict of trtq.assets.demo_model.DigitsNet)
and trtq/assets/demo_digits.onnx (exported with trtq.export_onnx: input "image"
Nx1x32x32, output "logits" Nx10, dynamic batch, opset 17), then reports the held-out
accuracy in PyTorch and in ONNX Runtime (reading the PNG files back) and the FP32
ONNX Runtime throughput. Deterministic for a given seed, torch version and thread count.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

EVAL_SIZE = 500
CALIB_SIZE = 1000
IMAGE_SIZE = 32


def digits_32x32():
    """All 1797 digits as uint8 (N, 32, 32) images and int64 labels."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    big = np.stack([np.asarray(Image.fromarray(img, mode="L").resize((IMAGE_SIZE, IMAGE_SIZE), Image.BICUBIC))
                    for img in small])
    return big, digits.target.astype(np.int64)


def split(labels: np.ndarray, seed: int):
    """Stratified: ``EVAL_SIZE`` held-out indices (classes in proportion), the rest train;
    ``CALIB_SIZE`` of the training indices for calibration."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    eval_idx = []
    classes = np.unique(labels)
    quota = {c: int(round(EVAL_SIZE * np.sum(labels == c) / n)) for c in classes}
    while sum(quota.values()) > EVAL_SIZE:  # rounding: trim the largest classes first
        quota[max(quota, key=lambda c: (quota[c], c))] -= 1
    while sum(quota.values()) < EVAL_SIZE:
        quota[min(quota, key=lambda c: (quota[c], c))] += 1
    for c in classes:
        members = np.flatnonzero(labels == c)
        eval_idx.extend(rng.permutation(members)[: quota[c]].tolist())
    eval_idx = np.sort(np.array(eval_idx))
    train_idx = np.setdiff1d(np.arange(n), eval_idx)
    calib_idx = np.sort(rng.permutation(train_idx)[:CALIB_SIZE])
    assert not set(eval_idx) & set(train_idx) and set(calib_idx) <= set(train_idx)
    return train_idx, calib_idx, eval_idx


def write_pngs(folder: Path, images: np.ndarray, indices: np.ndarray) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    wanted = {f"d{i:04d}.png" for i in indices}
    for stale in folder.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()
    for i in indices:
        Image.fromarray(images[i], mode="L").save(folder / f"d{i:04d}.png", optimize=True)


def augment(torch, x, generator):
    """Random rotation (+-10 deg), scale (0.9-1.1) and shift (+-2 px) of a batch (N, 1, 32, 32)."""
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    scale = 1 + (torch.rand(n, generator=generator) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * (2 * 2 / IMAGE_SIZE)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def train(torch, images, labels, train_idx, epochs: int, seed: int, log):
    from trtq.assets.demo_model import build

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = build()
    x_all = torch.from_numpy(images[train_idx]).float().div_(255.0).unsqueeze(1)
    y_all = torch.from_numpy(labels[train_idx])
    batch = 128
    steps = epochs * math.ceil(len(train_idx) / batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=5e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=4e-3, total_steps=steps, pct_start=0.2)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.05)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train_idx), generator=generator)
        total, correct, loss_sum = 0, 0, 0.0
        for start in range(0, len(order), batch):
            pick = order[start:start + batch]
            x = augment(torch, x_all[pick], generator)
            y = y_all[pick]
            logits = model(x)
            loss = loss_fn(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += len(pick)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(pick)
        log(f"epoch {epoch + 1:2d}/{epochs}: loss {loss_sum / total:.4f}, train accuracy (augmented) "
            f"{correct / total:.4f}")
    return model.eval()


def accuracy_torch(torch, model, images, labels, idx) -> float:
    with torch.no_grad():
        x = torch.from_numpy(images[idx]).float().div_(255.0).unsqueeze(1)
        return float((model(x).argmax(1).numpy() == labels[idx]).mean())


def read_folder(folder: Path):
    """Images of a folder as trtq's image loader reads them: sorted names, pixels / 255."""
    from PIL import Image

    names = sorted(p.name for p in folder.glob("*.png"))
    x = np.stack([np.asarray(Image.open(folder / n).convert("L"), dtype=np.float32) / 255.0 for n in names])
    return names, x[:, None]


def ort_throughput(session, name: str, batch: int, seconds: float = 3.0):
    x = np.random.default_rng(0).random((batch, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.float32)
    for _ in range(5):
        session.run(None, {name: x})
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 20:
        t = time.perf_counter()
        session.run(None, {name: x})
        times.append(time.perf_counter() - t)
    median = float(np.median(times))
    return batch / median, median * 1000.0


def _rel(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads (results are bit-identical only for the same count)")
    parser.add_argument("--weights", type=Path, default=ROOT / "trtq" / "assets" / "demo_digits.pt")
    parser.add_argument("--onnx", type=Path, default=ROOT / "trtq" / "assets" / "demo_digits.onnx")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "calib_data" / "digits",
                        help="calibration images (and split.json)")
    parser.add_argument("--eval-dir", type=Path, default=ROOT / "eval_data" / "digits",
                        help="held-out labelled images (never under --data-dir)")
    parser.add_argument("--skip-train", action="store_true", help="keep the existing weights; rewrite data, re-measure")
    args = parser.parse_args(argv)

    import onnxruntime as ort
    import torch

    import trtq
    from trtq.assets import DEMO_INPUT_NAME, DEMO_INPUT_SHAPE, DEMO_OUTPUT_NAME
    from trtq.assets.demo_model import pretrained
    from trtq.fileio import write_bytes_atomic, write_text_atomic

    torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)  # noqa: E731

    started = time.perf_counter()
    images, labels = digits_32x32()
    train_idx, calib_idx, eval_idx = split(labels, args.seed)
    log(f"digits: {len(labels)} images -> train {len(train_idx)} (calib {len(calib_idx)} of them), "
        f"held-out eval {len(eval_idx)}")

    calib_dir, eval_dir = args.data_dir, args.eval_dir
    write_pngs(calib_dir, images, calib_idx)
    write_pngs(eval_dir, images, eval_idx)
    write_text_atomic(eval_dir / "labels.csv",
                      "id,label\n" + "".join(f"d{i:04d}.png,{labels[i]}\n" for i in eval_idx))
    write_text_atomic(args.data_dir / "split.json", json.dumps({
        "source": "sklearn.datasets.load_digits(), images scaled 0..16 -> 0..255, bicubic 8x8 -> 32x32",
        "seed": args.seed, "train": train_idx.tolist(), "calib": calib_idx.tolist(), "eval": eval_idx.tolist(),
    }) + "\n")

    if args.skip_train:
        model = pretrained(args.weights)
    else:
        t = time.perf_counter()
        model = train(torch, images, labels, train_idx, args.epochs, args.seed, log)
        log(f"trained in {time.perf_counter() - t:.1f} s on {args.threads} thread(s)")
        buffer = io.BytesIO()
        torch.save({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, buffer)
        write_bytes_atomic(args.weights, buffer.getvalue())
        model = pretrained(args.weights)
    params = sum(p.numel() for p in model.parameters())
    acc_torch = accuracy_torch(torch, model, images, labels, eval_idx)

    # The pre-exported ONNX file (for `trtq quickstart --no-torch` and users without torch).
    result = trtq.export_onnx(model, torch.rand(DEMO_INPUT_SHAPE), args.onnx, input_names=[DEMO_INPUT_NAME],
                              output_names=[DEMO_OUTPUT_NAME], dynamic_batch=True)
    session = ort.InferenceSession(str(args.onnx), providers=["CPUExecutionProvider"])
    names, x = read_folder(eval_dir)
    truth = {f"d{i:04d}.png": labels[i] for i in eval_idx}
    logits = np.concatenate([session.run(None, {DEMO_INPUT_NAME: x[i:i + 100]})[0] for i in range(0, len(x), 100)])
    acc_ort = float(np.mean(logits.argmax(1) == np.array([truth[n] for n in names])))
    tput32, ms32 = ort_throughput(session, DEMO_INPUT_NAME, 32)
    tput1, ms1 = ort_throughput(session, DEMO_INPUT_NAME, 1)

    log(f"weights: {_rel(args.weights)} ({args.weights.stat().st_size / 1e6:.2f} MB, {params} parameters); "
        f"ONNX: {_rel(args.onnx)} ({args.onnx.stat().st_size / 1e6:.2f} MB, opset {result.opset})")
    log(f"held-out accuracy ({len(eval_idx)} images): PyTorch {acc_torch:.4f}, ONNX Runtime from PNG files "
        f"{acc_ort:.4f}; export max abs diff {result.max_abs_diff:.2g}")
    log(f"FP32 ONNX Runtime (CPU, {os.cpu_count()} cores): batch 32: {ms32:.2f} ms/batch = {tput32:.0f} images/s; "
        f"batch 1: {ms1:.3f} ms = {tput1:.0f} images/s")
    log(f"total {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
