"""`pip install 'trtq[gpu]'` (and the other GPU extras) resolve to one CUDA major.

Resolved with ``pip install --dry-run --report`` against the package index: the CUDA Python layer
with its dependencies (cuda-python -> cuda-bindings of that major), the TensorRT metapackage by name
and version (its -libs dependency is a stub that downloads from NVIDIA's index, which CI cannot
reach). Skipped only when the index cannot be reached (a failure where the contract is required: CI).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import ROOT, unavailable

try:
    import tomllib
except ImportError:  # Python < 3.11
    tomllib = None

#: extra -> (CUDA major of its stack, TensorRT wheel name prefix or None)
EXPECTED = {"gpu": (12, "tensorrt-cu12"), "gpu-cu12": (12, "tensorrt-cu12"), "gpu-cu13": (13, "tensorrt-cu13"),
            "jetson-jp6": (12, None), "jetson-jp7": (13, None)}
_OFFLINE = re.compile(r"Could not fetch|NewConnectionError|Temporary failure|Network is unreachable|"
                      r"Max retries exceeded|No matching distribution", re.IGNORECASE)


def _extras() -> dict:
    if tomllib is None:
        unavailable("tomllib needs Python 3.11")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _resolve(requirements, deps: bool) -> dict:
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
               "--disable-pip-version-check", "--report", "-", *([] if deps else ["--no-deps"]), *requirements]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240)
    if done.returncode != 0:
        if _OFFLINE.search(done.stderr):
            unavailable(f"package index unreachable: {done.stderr.strip().splitlines()[-1]}")
        raise AssertionError(f"pip could not resolve {requirements}: {done.stderr[-1500:]}")
    report = json.loads(done.stdout)
    return {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
            for item in report["install"]}


def test_every_gpu_extra_is_checked():
    assert {name for name in _extras() if name.startswith(("gpu", "jetson"))} == set(EXPECTED)


@pytest.mark.parametrize("extra", sorted(EXPECTED))
def test_gpu_extra_resolves_to_one_cuda_major(extra):
    major, tensorrt = EXPECTED[extra]
    requirements = _extras()[extra]
    layer = [r for r in requirements if not r.startswith("tensorrt")]
    installed = _resolve(layer, deps=True)
    assert int(installed["cuda-bindings"].split(".")[0]) == major, installed
    assert int(installed["cuda-python"].split(".")[0]) == major, installed
    engines = [r for r in requirements if r.startswith("tensorrt")]
    if tensorrt is None:
        assert not engines, "Jetson extras must not pull TensorRT wheels (JetPack ships TensorRT)"
        return
    resolved = _resolve(engines, deps=False)
    (name, version), = resolved.items()
    assert name == tensorrt and int(version.split(".")[0]) >= 10, resolved
