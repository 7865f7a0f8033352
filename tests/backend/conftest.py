"""Fixtures for the backend tests: the TensorRT bindings contract environment.

``trt_contract`` pip-installs the real ``tensorrt-cu12-bindings`` wheels pinned in
:data:`BINDINGS` into ``.trt-contract/`` (reused when present), compiles the stub
library of the nine factory symbols the bindings link against (``trt_stub.c``) under
each SONAME they need, and runs ``trt_contract.py`` once per version in a subprocess.
With ``TRTQ_REQUIRE_CONTRACT`` (or ``CI``) set, as ``.ci/run`` does, a failed download, a missing
compiler, missing CUDA headers or a pycuda wheel that cannot be built fails the tests with the
reason; elsewhere they skip with it. Only ``test_gpu.py`` skips on a CPU machine under CI.

``python tests/backend/conftest.py build-pycuda`` builds the pycuda wheel outside pytest (``.ci/run``
starts it in the background beside the test run; the pycuda fixture waits for it through a lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CONTRACT_DIR = ROOT / ".trt-contract"

#: TensorRT version -> pip requirement. 8.6.1: the JetPack 6.0 line (tensorrt-bindings, needs libnvparsers.so.8);
#: 10.0.1: the last 10.x without device_memory_size_v2; 10.3: JetPack 6; 10.16: newest 10.x; 11.4: newest 11.x.
#: 10.8: the first 10.x without DLA; 10.13 (cu13): JetPack 7's line, what the gpu-cu13/jetson-jp7 extras install;
#: 11.0: the first 11.x. A key's "+cu13" names the CUDA 13 wheel of a version that also has a CUDA 12 one.
BINDINGS = {
    "8.6.1": "tensorrt-bindings==8.6.1",
    "10.0.1": "tensorrt-cu12-bindings==10.0.1",
    "10.3.0": "tensorrt-cu12-bindings==10.3.0",
    "10.8.0.43": "tensorrt-cu12-bindings==10.8.0.43",
    "10.13.2.6": "tensorrt-cu13-bindings==10.13.2.6",
    "10.16.1.11": "tensorrt-cu12-bindings==10.16.1.11",
    "11.0.0.114": "tensorrt-cu12-bindings==11.0.0.114",
    "11.4.0.106": "tensorrt-cu12-bindings==11.4.0.106",
    "11.4.0.106+cu13": "tensorrt-cu13-bindings==11.4.0.106",
}
SONAMES = ("libnvinfer", "libnvinfer_plugin", "libnvonnxparser", "libnvparsers")  # libnvparsers: 8.x only
#: cuda-python's runtime bindings (with the pathfinder they need), for trtq.backend.cuda's contract: the CUDA 12
#: line (gpu, gpu-cu12, jetson-jp6 extras) and the CUDA 13 line (gpu-cu13, jetson-jp7).
CUDA_BINDINGS = {"12.9.10": ("cuda-bindings==12.9.10", "cuda-pathfinder==1.9.0"),
                 "13.5.0": ("cuda-bindings==13.5.0", "cuda-pathfinder==1.9.1")}


class Unavailable(Exception):
    """The contract environment cannot be made (outside pytest: the background pycuda build)."""


def required() -> bool:
    """Whether a contract test that cannot run is a failure (``.ci/run`` sets TRTQ_REQUIRE_CONTRACT=1)."""
    return bool(os.environ.get("TRTQ_REQUIRE_CONTRACT") or os.environ.get("CI"))


def unavailable(reason: str):
    """Fail where the contract is required (CI), skip elsewhere, with the reason either way."""
    if required():
        pytest.fail(f"contract environment unavailable (TRTQ_REQUIRE_CONTRACT/CI is set): {reason}", pytrace=False)
    pytest.skip(reason)


def installed(site: Path, requirements) -> bool:
    """Whether ``site`` holds every pinned ``name==version`` wheel: each one's ``.dist-info/RECORD``, which pip
    writes for every wheel it installs (a file the wheel's own contents cannot lack or rename)."""
    for requirement in requirements:
        name, _, version = requirement.partition("==")
        if not (site / f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info" / "RECORD").is_file():
            return False
    return True


def move_into_place(staging: Path, site: Path) -> None:
    """Rename a finished install to ``site``; an incomplete ``site`` left by an interrupted run is moved aside to
    a name no other run uses first, so the rename never meets a non-empty folder."""
    if site.exists():
        aside = Path(tempfile.mkdtemp(prefix=f".stale-{site.name}-", dir=site.parent))
        site.rename(aside / site.name)
        shutil.rmtree(aside, ignore_errors=True)
    staging.rename(site)


def _install(version: str, *requirements: str) -> Path:
    site = CONTRACT_DIR / f"site-{version}"
    if installed(site, requirements):
        return site
    staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=CONTRACT_DIR))
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--target", str(staging), *requirements]
    wanted = " ".join(requirements)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        unavailable(f"pip install {wanted} timed out")
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        unavailable(f"pip install {wanted} failed: {done.stderr.strip().splitlines()[-1:] or done.returncode}")
    move_into_place(staging, site)  # whole or not at all: an interrupted install is redone
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


def _recurrent_models(folder: Path) -> Path:
    """The trained digits LSTM (state in ONNX's [layers, batch, hidden] layout) and the scalar-driven If model,
    exported once for every TensorRT version's contract run."""
    sys.path.insert(0, str(HERE.parent))
    import _recurrent

    _recurrent.recurrent_classifier(folder / "lstm.onnx", "lstm")
    _recurrent.scalar_branch_classifier(folder / "branch.onnx")
    return folder


@pytest.fixture(scope="session")
def trt_contract(tmp_path_factory):
    """version -> {"api": [...], "checks": {name: outcome}, "module": ...} from the real bindings."""
    CONTRACT_DIR.mkdir(exist_ok=True)
    results, running = {}, {}
    models = _recurrent_models(tmp_path_factory.mktemp("recurrent"))
    for version, requirement in BINDINGS.items():  # one process per version, two at a time (2-core CI)
        site = _install(version, requirement)
        libs = _stub_libs(int(version.split(".")[0]))
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), str(HERE)])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH")]))
        env["TRTQ_CONTRACT_MODELS"] = str(models)
        if len(running) >= 2:
            first = next(iter(running))
            results[first] = _contract_result(first, running.pop(first))
        running[version] = subprocess.Popen([sys.executable, str(HERE / "trt_contract.py"), version.partition("+")[0]],
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                            cwd=str(ROOT))
    for version, process in running.items():
        results[version] = _contract_result(version, process)
    return {version: results[version] for version in BINDINGS}


def _contract_result(version: str, process) -> dict:
    try:
        out, err = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"contract run for TensorRT {version} took over 300 s")
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        pytest.fail(f"contract run for TensorRT {version} crashed (exit {process.returncode}):\n{err[-3000:]}")
    return json.loads(lines[-1])


@pytest.fixture(scope="session")
def cuda_contract():
    """version -> {check: outcome} from cuda_contract.py run against each real cuda-python runtime bindings."""
    CONTRACT_DIR.mkdir(exist_ok=True)
    results = {}
    for version, requirements in CUDA_BINDINGS.items():
        site = _install(f"cuda-bindings-{version}", *requirements)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), str(HERE)])
        done = subprocess.run([sys.executable, str(HERE / "cuda_contract.py")], capture_output=True, text=True,
                              timeout=300, env=env, cwd=str(ROOT))
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            pytest.fail(f"cuda contract run for cuda-bindings {version} crashed (exit {done.returncode}):\n"
                        f"{done.stderr[-3000:]}")
        results[version] = json.loads(lines[-1])
    return results


#: pycuda from its sdist, compiled against the CUDA headers here (no curand) and linked to cuda_fake.c.
PYCUDA_SDIST = "pycuda==2026.1"
PYCUDA_PURE_DEPS = ("pytools", "platformdirs")


def _pycuda_site() -> Path:
    """site-packages with a real pycuda, reused; its wheel is built from the sdist (about 1.5 minutes on 2 idle
    cores) where TRTQ_PYCUDA_BUILD=1 (``.ci/run`` sets it), or waited for when a build is running."""
    site = CONTRACT_DIR / "site-pycuda"
    if installed(site, [PYCUDA_SDIST]):
        return site
    try:
        wheel, reason = build_pycuda_wheel(build=bool(os.environ.get("TRTQ_PYCUDA_BUILD"))), ""
    except Unavailable as exc:
        wheel, reason = None, str(exc)
    if wheel is None:
        unavailable(reason)
    staging = Path(tempfile.mkdtemp(prefix=".staging-pycuda-", dir=CONTRACT_DIR))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(staging),
                           str(wheel), *PYCUDA_PURE_DEPS], capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(staging, ignore_errors=True)
        unavailable(f"installing pycuda's wheel failed: {done.stderr.strip()[-300:]}")
    move_into_place(staging, site)
    return site


def build_pycuda_wheel(build: bool = True) -> Path:
    """The pycuda wheel in ``.trt-contract/pycuda-wheel``: built from the sdist unless present (``build``), or
    :class:`Unavailable` with the reason. One builder at a time (a file lock): a second caller waits for it."""
    CONTRACT_DIR.mkdir(exist_ok=True)
    with open(CONTRACT_DIR / "pycuda-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the background build of .ci/run holds it until its wheel is in place
        wheels = sorted((CONTRACT_DIR / "pycuda-wheel").glob("pycuda-*.whl"))
        if wheels:
            return wheels[-1]
        if not build:
            raise Unavailable("no pycuda wheel built here; set TRTQ_PYCUDA_BUILD=1 to build it from the sdist "
                              "(about 1.5 minutes)")
        cuda_root = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
        if not (Path(cuda_root) / "include" / "cuda.h").exists():
            raise Unavailable(f"no CUDA headers at {cuda_root} (set CUDA_HOME) to build pycuda against")
        try:
            import setuptools

            major, minor = (int(x) for x in setuptools.__version__.split(".")[:2])
            if (major, minor) < (70, 1):
                import wheel  # noqa: F401  (bdist_wheel before setuptools 70.1)
        except ImportError as exc:
            raise Unavailable(f"building pycuda needs setuptools and wheel in this Python ({exc}); "
                              "pip install wheel") from None
        src = CONTRACT_DIR / "pycuda-src"
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:",
                               "--no-build-isolation", "-d", str(src), PYCUDA_SDIST], capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"pip download {PYCUDA_SDIST} failed: {done.stderr.strip()[-300:]}")
        build_dir = CONTRACT_DIR / "pycuda-build"
        shutil.rmtree(build_dir, ignore_errors=True)
        build_dir.mkdir(parents=True)
        subprocess.run(["tar", "xzf", str(next(src.glob("pycuda-*.tar.gz"))), "-C", str(build_dir)], check=True)
        tree = next(build_dir.glob("pycuda-*"))
        libs = _fake_libcuda()
        done = subprocess.run([sys.executable, "configure.py", f"--cuda-root={cuda_root}",
                               f"--cudadrv-lib-dir={libs}", "--no-cuda-enable-curand"], cwd=tree,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"pycuda's configure.py failed: {done.stderr.strip()[-500:]}")
        staging = CONTRACT_DIR / ".pycuda-wheel-staging"
        shutil.rmtree(staging, ignore_errors=True)
        done = subprocess.run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w",
                               str(staging)], cwd=tree, capture_output=True, text=True)
        built = sorted(staging.glob("pycuda-*.whl"))
        if done.returncode != 0 or not built:
            raise Unavailable(f"building pycuda failed: {done.stderr.strip()[-1500:]}")
        target = CONTRACT_DIR / "pycuda-wheel"
        target.mkdir(exist_ok=True)
        built[-1].rename(target / built[-1].name)  # whole or not at all
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(build_dir, ignore_errors=True)
        return target / built[-1].name


def _fake_libcuda() -> Path:
    libs = CONTRACT_DIR / "fake-libcuda"
    target = libs / "libcuda.so.1"
    if not target.exists():
        compiler = shutil.which("gcc") or shutil.which("cc")
        if compiler is None:
            raise Unavailable("no C compiler for the fake libcuda")
        libs.mkdir(parents=True, exist_ok=True)
        tmp = libs / "libcuda.so.1.tmp"
        subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o", str(tmp),
                        str(HERE / "cuda_fake.c")], check=True)
        tmp.rename(target)
        (libs / "libcuda.so").unlink(missing_ok=True)
        (libs / "libcuda.so").symlink_to("libcuda.so.1")
    return libs


def pytest_collection_modifyitems(session, config, items):
    """The pycuda tests run last: ``.ci/run`` builds pycuda's wheel in the background meanwhile, so the session
    waits for it only if the rest of the suite finishes first."""
    items.sort(key=lambda item: "pycuda_contract" in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def pycuda_contract():
    """{check: outcome} from pycuda_contract.py: the real pycuda over a host-memory libcuda."""
    CONTRACT_DIR.mkdir(exist_ok=True)
    site = _pycuda_site()
    try:
        libs, reason = _fake_libcuda(), ""
    except Unavailable as exc:
        libs, reason = None, str(exc)
    if libs is None:
        unavailable(reason)
    results = {}
    for extra in ({}, {"TRTQ_FAKE_CUDA_NODEVICE": "1"}):
        env = dict(os.environ, **extra)
        env["PYTHONPATH"] = os.pathsep.join([str(site), str(ROOT), str(HERE)])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(libs), os.environ.get("LD_LIBRARY_PATH")]))
        env.pop("TRTQ_CUDA", None)
        done = subprocess.run([sys.executable, str(HERE / "pycuda_contract.py")], capture_output=True, text=True,
                              timeout=300, env=env, cwd=str(ROOT))
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            pytest.fail(f"pycuda contract run crashed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        results.update(json.loads(lines[-1]))
    return results


if __name__ == "__main__":  # .ci/run: build the pycuda wheel in the background while the tests start
    if sys.argv[1:] != ["build-pycuda"]:
        sys.exit("usage: python tests/backend/conftest.py build-pycuda")
    try:
        print(f"pycuda wheel: {build_pycuda_wheel()}")
    except Unavailable as exc:  # the fixture tries again and reports the reason in the test run
        print(f"pycuda wheel not built: {exc}", file=sys.stderr)
        sys.exit(1)
