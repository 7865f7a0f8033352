#!/usr/bin/env bash
# Run every GPU check of trtq on this machine (a GPU with TensorRT, or a Jetson) and print one summary table.
# Usage: scripts/gpu_selfcheck.sh [extra pytest args]   (needs: pip install -e '.[dev]' plus TensorRT and
# cuda-python or pycuda). Nothing here needs the network.
set -u
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$PY" -m trtq info >"$out/info.txt" 2>&1
"$PY" -m pytest -m gpu -q -rA tests/backend/test_gpu.py "$@" >"$out/pytest.txt" 2>&1
status=$?
echo "== trtq info"
cat "$out/info.txt"
echo
echo "== GPU checks"
printf '%-8s %s\n' RESULT TEST
grep -E '^(PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS) ' "$out/pytest.txt" | sed -E 's/^(\w+) (tests\/backend\/test_gpu.py::)?/\1 /' |
    awk '{r=$1; $1=""; printf "%-8s %s\n", r, substr($0,2)}'
echo
tail -n 1 "$out/pytest.txt"
exit $status
