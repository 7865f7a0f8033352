"""Does the optional C binning kernel make a whole calibration faster than the noise between runs?

    TRTQ_BUILD_KERNEL=1 pip install -e .          # build the kernel into the checkout first
    python scripts/bench_binning_kernel.py --repeats 5

Runs `trtq calibrate` on the same model and data, alternating the kernel and numpy binning
(``TRTQ_NUMPY_BINNING=1``), each in a fresh process, and prints the wall time of each run, the
medians, the spread (min to max) and the median ratio. The kernel is worth building by default
only where the ratio's gain exceeds the spread of either side. Run it on a quiet machine: the
numbers of a machine shared with other jobs measure the other jobs as much as trtq.

Models: the bundled demo CNN on calib_data/digits, and YOLOv8n (the nudenet wheel's 320n.onnx,
dev extra) on photo crops made from scikit-image's sample photographs where both are installed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def yolo_setup(work: Path):
    """(model, data folder) for YOLOv8n on 200 photo crops, or None where nudenet/scikit-image are missing."""
    try:
        import nudenet
        import numpy as np
        import skimage.data
        from PIL import Image
    except ImportError:
        return None
    model = Path(nudenet.__file__).with_name("320n.onnx")
    folder = work / "crops"
    folder.mkdir(exist_ok=True)
    photos = [Image.open(p).convert("RGB") for p in sorted(Path(skimage.data.__file__).parent.glob("*.png"))
              if Image.open(p).mode in ("RGB", "RGBA")][:8]
    rng = np.random.default_rng(0)
    for index in range(200):
        image = photos[index % len(photos)]
        side = int(min(image.size) * rng.uniform(0.5, 1.0))
        left, top = int(rng.integers(0, image.size[0] - side + 1)), int(rng.integers(0, image.size[1] - side + 1))
        image.crop((left, top, left + side, top + side)).resize((320, 320)).save(folder / f"{index:03d}.png")
    return model, folder, ["--size", "320x320"]


def one_run(model: Path, data: Path, extra: list, numpy_binning: bool, work: Path) -> float:
    env = dict(os.environ)
    env.pop("TRTQ_NUMPY_BINNING", None)
    if numpy_binning:
        env["TRTQ_NUMPY_BINNING"] = "1"
    command = [sys.executable, "-m", "trtq", "-q", "calibrate", str(model), "--calib", str(data), "--algo", "entropy",
               "--force", "-o", str(work / f"{model.stem}.calib.cache"), *extra]
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {result.returncode}: {result.stderr.strip()}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="runs per side and model (default: 5)")
    parser.add_argument("--models", default="all", help="digits, yolov8n or all (default: all)")
    args = parser.parse_args()
    from trtq.calib.histogram import kernel_available

    if not kernel_available():
        sys.exit("the C kernel is not built here: TRTQ_BUILD_KERNEL=1 pip install -e . first")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{os.cpu_count()} cores, load average {load:.1f} at the start; entropy calibration, fresh process each")
    with tempfile.TemporaryDirectory(prefix="trtq-kernel-") as tmp:
        work = Path(tmp)
        setups = [("digits", ROOT / "trtq" / "assets" / "demo_digits.onnx", ROOT / "calib_data" / "digits", [])]
        if args.models != "all":
            setups = [s for s in setups if s[0] in args.models.split(",")]
        yolo = yolo_setup(work) if args.models in ("all", "yolov8n") else None
        if yolo is not None:
            setups.append(("yolov8n", *yolo))
        for name, model, data, extra in setups:
            times = {"kernel": [], "numpy": []}
            for _ in range(args.repeats):  # alternating, so that a change in the machine's load hits both sides
                times["kernel"].append(one_run(model, data, extra, False, work))
                times["numpy"].append(one_run(model, data, extra, True, work))
            for side, values in times.items():
                print(f"{name:8s} {side:6s} median {statistics.median(values):6.2f} s, spread "
                      f"{min(values):.2f}-{max(values):.2f} s: {', '.join(f'{v:.2f}' for v in values)}")
            ratio = statistics.median(times["numpy"]) / statistics.median(times["kernel"])
            spread = max(max(v) / min(v) for v in times.values())
            verdict = "beyond" if ratio > spread else "within"
            print(f"{name:8s} numpy / kernel = {ratio:.3f}x; the largest spread of one side is {spread:.3f}x: "
                  f"the gain is {verdict} the noise")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.1f} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
