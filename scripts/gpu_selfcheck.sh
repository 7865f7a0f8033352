#!/usr/bin/env bash
# Run every GPU check of trtq on this machine (a GPU with TensorRT, or a Jetson) and print one summary table.
# Usage: scripts/gpu_selfcheck.sh [extra pytest args]
# Needs: pip install -e '.[dev]' plus TensorRT and cuda-python or pycuda (see docs/tensorrt.md). No network.
# Checks: CUDA memory/events, FP32/FP16/INT8 engines of YOLOv8n vs ONNX Runtime, INT8 rebuild from the cache,
# engine benchmarks, sparsity, DLA (Jetson only), per-layer precision from the sidecar, engine accuracy
# (trtq eval's engine candidate), the engine inspector, and the pycuda layer; and the third TensorRT review's fixes
# and open questions (shared/reviews/tensorrt-review-3, its C list): a static-shape DLA engine and its fallback
# layers (Jetson), an INT64-input model (MiniLM) through trtq eval, a min-batch-8 engine evaluated on 36 samples,
# version-compatible engines moved without their report, a corrupt timing cache, TensorRT's messages after several
# loggers, a re-stamped cache, CPU- vs GPU-calibrated INT8 layer coverage, a mixed-precision layer's precision,
# the inspector on 8.6, and an engine run through pycuda; engines of every input kind: the digits LSTM (state
# batched on axis 1) through eval and bench, the If model's rank-0 mode (is it a shape tensor?), and a Reshape
# target fed as an input (a shape tensor: --shape-values, host memory). The "answer" column holds what each
# check measured.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$PY" -m trtq info >"$out/info.txt" 2>&1
"$PY" -m pytest -m gpu -q -p no:cacheprovider -o junit_family=xunit1 --junitxml="$out/gpu.xml" tests/backend/test_gpu.py "$@" \
    >"$out/pytest.txt" 2>&1
status=$?
echo "== trtq info"
cat "$out/info.txt"
echo
echo "== GPU checks"
"$PY" - "$out/gpu.xml" <<'PYEOF'
import sys
import xml.etree.ElementTree as ET

rows = []
for case in ET.parse(sys.argv[1]).getroot().iter("testcase"):
    result, why = "passed", ""
    for tag in ("failure", "error", "skipped"):
        node = case.find(tag)
        if node is not None:
            result = {"failure": "FAILED", "error": "ERROR", "skipped": "skipped"}[tag]
            why = " ".join((node.get("message") or node.text or "").split())
            break
    answers = [p.get("value", "") for p in case.iter("property") if p.get("name") == "answer"]
    rows.append((case.get("name"), result, why[:90] + ("..." if len(why) > 90 else ""), answers))
width = max([len(r[0]) for r in rows] + [5])
print(f"{'check':<{width}}  {'result':<7}  why / answer")
for name, result, why, answers in rows:
    print(f"{name:<{width}}  {result:<7}  {why}")
    for answer in answers:  # what the check measured (the review's open questions)
        print(f"{'':<{width}}  {'':<7}  answer: {answer}")
counts = {k: sum(r[1] == k for r in rows) for k in ("passed", "FAILED", "ERROR", "skipped")}
print(", ".join(f"{v} {k.lower()}" for k, v in counts.items() if v) or "no GPU checks ran")
PYEOF
[ $status -eq 0 ] || tail -n 30 "$out/pytest.txt"
exit $status
