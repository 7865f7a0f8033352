"""Fixtures for the backend tests: the TensorRT bindings contract environment.

``trt_contract`` pip-installs the real ``tensorrt-cu12-bindings`` wheels pinned in
:data:`BINDINGS` into ``.trt-contract/`` (reused when present), compiles the stub
library of the nine factory symbols the bindings link against (``trt_stub.c``) under
each SONAME they need, and runs ``trt_contract.py`` once per version in a subprocess.
With ``CI`` set, a failed download or a missing compiler fails the tests; elsewhere
they skip with the reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONTRACT_DIR = ROOT / ".trt-contract"

#: TensorRT version -> pip requirement. 8.6.1: JetPack 5/6.0 line (tensorrt-bindings, needs libnvparsers.so.8);
#: 10.0.1: the last 10.x without device_memory_size_v2; 10.3: JetPack 6; 10.16: newest 10.x; 11.4: newest 11.x.
BINDINGS = {
    "8.6.1": "tensorrt-bindings==8.6.1",
    "10.0.1": "tensorrt-cu12-bindings==10.0.1",
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",
    "10.16.1.11": "tensorrt-cu12-bindings==10.16.1.11",
    "11.4.0.106": "tensorrt-cu12-bindings==11.4.0.106",
}
SONAMES = ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser", "libnvparsers")  # libnvparsers: 8.x only
#: cuda-python's runtime bindings (with the pathfinder they need), for trtq.backend.cuda's contract.
CUDA_BINDINGS = ("cuda-bindings==12.9.10", "cuda-pathfinder==1.9.0")


def unavailable(reason: str):
    """Fail under CI (these tests must run there), skip elsewhere."""
    if os.environ.get("CI"):
        pytest.fail(f"TensorRT contract environment unavailable under CI: {reason}")
    pytest.skip(reason)


def _install(version: str, *requirements: str, marker: str = "tensorrt_bindings/__init__.py") -> Path:
    site = CONTRACT_DIR / f"site-{version}"
    if (site / marker).exists():
        return site
    staging = CONTRACT_DIR / f".staging-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--target", str(staging), *requirements]
    wanted = " ".join(requirements)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        unavailable(f"pip install {wanted} timed out")
    if done.returncode != 0:
        unavailable(f"pip install {wanted} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    staging.rename(site)  # whole or not at all: an interrupted install is redone
    return site


def _stub_libs(major: int) -> Path:
    libs = CONTRACT_DIR / f"stub-lib{major}"
    wanted = [libs / f"{name}.so.{major}" for name in SONAMES]
    if all(p.exists() for p in wanted):
        return libs
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        unavailable("no C compiler (gcc/cc) to build the TensorRT stub library")
    libs.mkdir(parents=True, exist_ok=True)
    for target in wanted:
        tmp = target.with_suffix(target.suffix + ".tmp")
        done = subprocess.run([compiler, "-shared", "-fPIC", "-O1", f"-Wl,-soname,{target.name}", "-o", str(tmp),
                               str(HERE / "trt_stub.c")], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            unavailable(f"compiling the TensorRT stub failed: {done.stderr.strip()[:300]}")
        tmp.rename(target)
    return libs


@pytest.fixture(scope="session")
def trt_contract():
    """version -> {"api": [...], "checks": {name: outcome}, "module": ...} from the real bindings."""
    CONTRACT_DIR.mkdir(exist_ok=True)
    results = {}
    for version, requirement in BINDINGS.items():
        site = _install(version, requirement)
        libs = _stub_libs(int(version.split(".")[0]))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), str(HERE)])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH")]))
        done = subprocess.run([sys.executable, str(HERE / "trt_contract.py"), version], capture_output=True,
                              text=True, timeout=300, env=env, cwd=str(ROOT))
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            pytest.fail(f"contract run for TensorRT {version} crashed (exit {done.returncode}):\n"
                        f"{done.stderr[-3000:]}")
        results[version] = json.loads(lines[-1])
    return results


@pytest.fixture(scope="session")
def cuda_contract():
    """{check: outcome} from cuda_contract.py run against the real cuda-python runtime bindings."""
    CONTRACT_DIR.mkdir(exist_ok=True)
    site = _install("cuda-bindings-12.9.10", *CUDA_BINDINGS, marker="cuda/bindings/runtime.pyx")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), str(HERE)])
    done = subprocess.run([sys.executable, str(HERE / "cuda_contract.py")], capture_output=True, text=True,
                          timeout=300, env=env, cwd=str(ROOT))
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        pytest.fail(f"cuda contract run crashed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(lines[-1])
