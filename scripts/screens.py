"""Write docs/screens/*.txt (what quickstart, calibrate, eval and bench print at 80 columns) and the
README's results table, from one run of the commands as a user types them.

    python scripts/screens.py            # from a checkout, after `pip install -e .`

The commands run in a temporary copy of a fresh clone's files, in an 80-column terminal (no colours,
no animation), standard output and error together, as a person sees them. Each capture says when and on what machine
it was made; the README's table is replaced between its `results` markers.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCREENS = {
    "quickstart": "trtq quickstart",
    "calibrate": "trtq calibrate out/quickstart/demo.onnx --calib calib_data/digits -o out/screens/demo.calib.cache",
    "eval": "trtq eval out/quickstart/demo.onnx out/quickstart/demo.int8.onnx --data eval_data/digits "
            "--labels eval_data/digits/labels.csv --json out/screens/eval.json",
    "bench": "trtq bench out/quickstart/demo.onnx out/quickstart/demo.int8-cpu.onnx --batch-sizes 1,8,32 "
             "--out out/screens/bench",
}


def machine() -> str:
    """A short description of where the capture ran: CPU model, cores, load, GPU or none."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    gpu = subprocess.run(["sh", "-c", "nvidia-smi -L 2>/dev/null | head -1"], capture_output=True, text=True).stdout
    return f"{cpu}, {os.cpu_count()} cores, load average {load:.1f}, {gpu.strip() or 'no GPU'}"


def run(command: str, cwd: Path) -> str:
    # An 80-column terminal without colours or animation (rich: TTY_COMPATIBLE, TTY_INTERACTIVE; a dumb
    # terminal gets no escape codes), so that the capture is what a person sees, as plain text.
    env = dict(os.environ, COLUMNS="80", LINES="50", TTY_COMPATIBLE="1", TTY_INTERACTIVE="0", TERM="dumb",
               PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"])
    env.pop("FORCE_COLOR", None)
    result = subprocess.run(["bash", "-c", command + " 2>&1"], cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"`{command}` exited {result.returncode}:\n{result.stdout}")
    return result.stdout


def results_table(clone: Path, when: str, where: str) -> str:
    """The README's table, from the eval report and the quickstart's bench.json."""
    from trtq.report import format_percent, format_rate, format_size, format_speedup

    report = json.loads((clone / "out/screens/eval.json").read_text())
    bench = json.loads((clone / "out/quickstart/bench.json").read_text())["results"]
    accuracy = report["accuracy"]
    snr = min(o["snr_db"] for o in report["outputs"])
    cpu = [r for r in bench if r["backend"] == "ort-cpu" and r["throughput"]]
    largest = max(r["batch_size"] for r in cpu)
    at = {r["precision"]: r for r in cpu if r["batch_size"] == largest}
    size = {r["precision"]: r["size_bytes"] for r in cpu}

    samples = accuracy["labeled_samples"]
    return "\n".join([
        "| | FP32 | INT8 |",
        "| --- | ---: | ---: |",
        f"| top-1 accuracy on {samples} held-out digits (TensorRT Q/DQ form) | "
        f"{format_percent(accuracy['reference_top1'])} | {format_percent(accuracy['candidate_top1'])} |",
        f"| output SNR against FP32 on the held-out digits | | {snr:.2f} dB |",
        f"| size on disk | {format_size(size['fp32'])} | {format_size(size['int8'])} |",
        f"| samples/s, ONNX Runtime CPU, batch {largest} (INT8 CPU form) | {format_rate(at['fp32']['throughput'])} | "
        f"{format_rate(at['int8']['throughput'])} "
        f"({format_speedup(at['int8']['throughput'] / at['fp32']['throughput'])}) |",
        "",
        f"One run of `trtq quickstart` and `trtq eval` on {when}, {where}. Throughput on a shared",
        "machine is noisy: `bench.png` shows the spread of repeated runs.",
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-readme", action="store_true", help="write docs/screens/ only")
    args = parser.parse_args()
    when = dt.datetime.now(dt.timezone.utc).strftime("%d %B %Y %H:%M UTC")
    where = machine()
    out = ROOT / "docs" / "screens"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trtq-screens-") as tmp:
        clone = Path(tmp)
        for name in ("calib_data", "eval_data"):
            (clone / name).symlink_to(ROOT / name)
        for name, command in SCREENS.items():
            text = run(command, clone)
            header = f"$ {command}\n# captured {when} on {where}; an 80-column terminal, stdout and stderr together\n"
            (out / f"{name}.txt").write_text(header + re.sub(r"[ \t]+\n", "\n", text), encoding="utf-8")
            print(f"wrote docs/screens/{name}.txt")
        table = results_table(clone, when, where)
    if not args.no_readme:
        readme = ROOT / "README.md"
        text = readme.read_text(encoding="utf-8")
        start = "<!-- results: written by scripts/screens.py; do not edit by hand -->\n"
        end = "<!-- results: end -->"
        head, rest = text.split(start, 1)
        readme.write_text(head + start + table + "\n" + end + rest.split(end, 1)[1], encoding="utf-8")
        print("wrote the results table in README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
