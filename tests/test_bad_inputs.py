"""Bad and unusual inputs across every command, as a new user would try them.

Each case runs ``trtq.cli.main`` in-process in a fresh copy of a small workspace (a toy
classifier, .npy samples, a cache with its sidecar, a Q/DQ model, labels, loader scripts,
a foreign file) and asserts:

- the exit code;
- no traceback, and for a failure exactly one ``error:`` line holding the expected words;
- no partial file (no ``*.tmp`` / ``*.probe`` left), no new file or folder after a failure
  (no empty ``engines/`` or ``bench/``);
- every file that was there before is byte-for-byte unchanged, except the outputs the
  case is meant to (re)write.

Full disks are real (a 64 kB tmpfs) where the tests run as root and ``mount`` works;
otherwise the write is monkeypatched to fail with ENOSPC. ``trtq.fileio._probe``
patched away makes the disk "fill up during the work", so the failure is met at the
write itself.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Sequence

import _toys
import numpy as np
import onnx
import pytest

from trtq.cli import main

# ---------------------------------------------------------------------------------------------
# The workspace


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """Every input a case may need, built once; each case gets its own copy."""
    from PIL import Image

    import trtq
    from trtq.data.spec import DataSpec

    root = tmp_path_factory.mktemp("bad_inputs_template")
    rng = np.random.default_rng(0)
    model = _toys.classifier()
    _toys.save(model, root / "m.onnx")
    _toys.save(model, root / "other.onnx")          # an unrelated FP32 model (same graph, another name)
    _toys.save(_toys.classifier(batch=1), root / "fixed.onnx")
    calib = root / "calib"
    calib.mkdir()
    for i in range(8):
        np.save(calib / f"s{i}.npy", rng.random((3, 16, 16), dtype=np.float32))
    (root / "labels.csv").write_text("".join(f"s{i},{i % 10}\n" for i in range(8)))
    # the cache belongs to m.onnx itself (auto's equalization trial may keep a rewrite of this toy: not tested here)
    trtq.calibrate(str(root / "m.onnx"), DataSpec(str(calib), samples=None), cache_path=str(root / "m.calib.cache"),
                   equalize="off")
    trtq.quantize(str(root / "m.onnx"), str(root / "m.int8.onnx"), cache=str(root / "m.calib.cache"))
    (root / "notes.txt").write_text("my own notes, not a trtq file\n")
    # loader scripts
    (root / "loader.py").write_text("import numpy as np\n\ndef load_data():\n"
                                    "    for i in range(4):\n"
                                    "        yield {'x': np.full((3, 16, 16), i / 4, np.float32)}\n")
    (root / "badname.py").write_text("import numpy as np\n\ndef load_data():\n"
                                     "    yield {'images': np.zeros((3, 16, 16), np.float32)}\n")
    # arrays: a wrong key, an unnamed key, integer data, NaN, a wrong shape
    np.savez(root / "wrongkey.npz", image=rng.random((4, 3, 16, 16), dtype=np.float32))
    np.savez(root / "unnamed.npz", rng.random((4, 3, 16, 16), dtype=np.float32))
    np.save(root / "ints.npy", rng.integers(0, 255, (4, 3, 16, 16)).astype(np.int32))
    nan = rng.random((2, 3, 16, 16), dtype=np.float32)
    nan[0, 0, 0, 0] = np.nan
    np.save(root / "nan.npy", nan)
    np.save(root / "shape.npy", rng.random((2, 3, 8, 8), dtype=np.float32))
    # 16-bit grayscale PNGs
    png16 = root / "png16"
    png16.mkdir()
    for i in range(2):
        Image.fromarray((rng.random((16, 16)) * 65535).astype(np.uint16)).save(png16 / f"g{i}.png")
    rgb16 = root / "rgb16"
    rgb16.mkdir()
    _png_rgb16(rgb16 / "c.png", (rng.random((16, 16, 3)) * 65535).astype(np.uint16))
    (root / "empty").mkdir()
    # caches without sidecars, with the problems a hand edit brings
    text = (root / "m.calib.cache").read_text().splitlines()
    header, first, second = text[0], text[1], text[2]
    name_1 = first.rpartition(": ")[0]
    name_2 = second.rpartition(": ")[0]
    variants = {"dup": [header, first, second, first], "zero": [header, f"{name_1}: 00000000", second],
                "neg": [header, f"{name_1}: bc010204", second], "nan": [header, f"{name_1}: 7fc00000", second],
                "inf": [header, f"{name_1}: 7f800000", second], "nosidecar": text}
    for stem, lines in variants.items():
        (root / f"{stem}.cache").write_text("\n".join(lines) + "\n")
    assert name_2
    shutil.copy(root / "m.calib.cache", root / "badside.cache")
    (root / "badside.cache.json").write_text("{not json")
    # the same model re-saved by another tool; a retrained one; another graph
    resaved = onnx.shape_inference.infer_shapes(onnx.load(str(root / "m.onnx")))
    resaved.doc_string = "re-saved by some tool"
    resaved.producer_name = "sometool"
    onnx.helper.set_model_props(resaved, {"note": "metadata added"})
    onnx.save(resaved, str(root / "resaved.onnx"))
    _toys.save(_toys.classifier(seed=1), root / "retrained.onnx")
    _toys.save(_toys.classifier(first_weight_scale=(1.0, 1.0, 1.0), seed=0, classes=10), root / "same.onnx")
    changed = onnx.load(str(root / "m.onnx"))
    changed.graph.node[1].op_type = "Sigmoid"
    onnx.save(changed, str(root / "graph.onnx"))
    (root / "m.pt").write_bytes(b"not really a torch file")
    _round3_inputs(root, text)
    _round4_inputs(root)
    (root / "factory.py").write_text("def build():\n    raise RuntimeError('never called: the guard runs first')\n")
    return root


def _round3_inputs(root: Path, cache_lines: List[str]) -> None:
    """Unusual inputs: huge data, external weights, sidecars of the wrong shape..."""
    from PIL import Image

    rng = np.random.default_rng(1)
    np.save(root / "huge.npy", np.full((4, 3, 16, 16), 1e10, np.float32))   # every tensor "huge by construction"
    model = onnx.load(str(root / "m.onnx"))
    onnx.save_model(model, str(root / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    # sidecars of the wrong shape beside a good cache
    good = json.loads((root / "m.calib.cache.json").read_text())
    variants = {"list": [], "null": None, "text": "a sidecar", "model": {**good, "model": 3},
                "amax": {**good, "amax": [1.0]}, "amaxval": {**good, "amax": {"x": "big"}},
                "verdict": {**good, "verdict": "good"}, "snr": {**good, "verdict": {**good["verdict"], "snr_db": []}},
                "mixed": {**good, "mixed_precision": {"float_layers": "conv1"}},
                "inputs": {**good, "model": {**good["model"], "inputs": [{"name": 1, "shape": "3x16"}]}}}
    for stem, document in variants.items():
        shutil.copy(root / "m.calib.cache", root / f"side-{stem}.cache")
        (root / f"side-{stem}.cache.json").write_text(json.dumps(document))
    deep = "[" * 100000 + "]" * 100000
    shutil.copy(root / "m.calib.cache", root / "side-deep.cache")
    (root / "side-deep.cache.json").write_text(deep)
    (root / "deep.json").write_text(deep)
    # caches without a sidecar whose scales no calibration gives
    header, first = cache_lines[0], cache_lines[1]
    name = first.rpartition(": ")[0]
    for stem, digits in {"short": "3c01", "subnormal": "00000001", "large": "7f000000"}.items():
        (root / f"{stem}.cache").write_text("\n".join([header, f"{name}: {digits}"] + cache_lines[2:]) + "\n")
    # export factories that exit or compute NaN
    (root / "exits.py").write_text(
        "import sys\n\nimport torch\n\n\ndef quits():\n    sys.exit(0)\n\n\ndef fails():\n    sys.exit(3)\n\n\n"
        "class NaN(torch.nn.Module):\n    def forward(self, x):\n        return x * float('nan')\n\n\n"
        "def nan():\n    return NaN()\n")
    (root / "exit_on_import.py").write_text("import sys\nsys.exit(0)\n\ndef build():\n    pass\n")
    # RGB images with a TIFF among them
    mixed = root / "pngtif"
    mixed.mkdir()
    for i in range(3):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(mixed / f"p{i}.png")
    Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(mixed / "scan.tif")


def _round4_inputs(root: Path) -> None:
    """Inputs of the fourth round: user code that exits or redirects, build reports, configs, image calibration."""
    import trtq
    from trtq.data.spec import DataSpec

    (root / "metric_exit0.py").write_text("import sys\n\ndef score(reference, candidate, inputs):\n    sys.exit(0)\n")
    (root / "metric_exit3.py").write_text("import sys\n\ndef score(reference, candidate, inputs):\n    sys.exit(3)\n")
    (root / "metric_stdout.py").write_text("import io\nimport sys\n\ndef score(reference, candidate, inputs):\n"
                                           "    sys.stdout = io.StringIO()\n    return 1.0\n")
    (root / "loader_chdir.py").write_text("import os\nimport numpy as np\n\n"
                                          "os.chdir(os.path.join(os.path.dirname(os.path.abspath(__file__)), 'calib'))\n"
                                          "\ndef load_data():\n    for i in range(4):\n"
                                          "        yield {'x': np.full((3, 16, 16), i / 4, np.float32)}\n")
    (root / "loader_exit.py").write_text("import sys\n\ndef load_data():\n    sys.exit(0)\n    yield {}\n")
    # an engine trtq cannot load here (no TensorRT), with build reports beside copies of it
    report = {"format": "trtq-build-report", "model": {"file": "m.onnx"}, "precision": "int8",
              "profile": {"x": {"min": [1, 3, 16, 16], "opt": [4, 3, 16, 16], "max": [8, 3, 16, 16]}}}
    variants = {"e": report, "e-model-int": {**report, "model": {"file": 3}},
                "e-profile-text": {**report, "profile": {"x": {"min": "1x3x16x16", "opt": [1], "max": [1]}}},
                "e-gpu-list": {**report, "gpu": ["a100"]}}
    for stem, document in variants.items():
        (root / f"{stem}.engine").write_bytes(b"not a real engine")
        (root / f"{stem}.engine.json").write_text(json.dumps(document))
    (root / "e-fifo.engine").write_bytes(b"not a real engine")
    # sidecars with fields of the wrong type, or from a newer trtq
    good = json.loads((root / "m.calib.cache.json").read_text())
    model = {**good["model"], "inputs": [{**good["model"]["inputs"][0], "batch_axis": "0"}]}
    for stem, document in {"baxis": {**good, "model": model}, "newer": {**good, "format_version": 99},
                           "datakind": {**good, "data": {**good.get("data", {}), "kind": ["images"]}}}.items():
        shutil.copy(root / "m.calib.cache", root / f"side-{stem}.cache")
        (root / f"side-{stem}.cache.json").write_text(json.dumps(document))
    # a calibration on images (DeepStream needs its preprocessing)
    images = root / "imgs"
    images.mkdir()
    from PIL import Image

    rng = np.random.default_rng(4)
    for i in range(4):
        Image.fromarray((rng.random((16, 16, 3)) * 255).astype(np.uint8)).save(images / f"i{i}.png")
    trtq.calibrate(str(root / "m.onnx"), DataSpec(str(images), samples=None), cache_path=str(root / "img.cache"),
                   equalize="off")
    # configs for deploy check
    (root / "bom.txt").write_bytes(b"\xef\xbb\xbf[property]\nbatch-size=1\nnetwork-mode=1\n")
    deep = json.dumps("[" * 5000 + "]" * 5000)
    (root / "deep-param.pbtxt").write_text(
        'name: "m"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 3, 16, 16 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 10 ] } ]\n'
        f'parameters {{ key: "trtq.calibration" value: {{ string_value: {deep} }} }}\n')


def huge_config(env: Env) -> None:
    """A 20 MB config on one line."""
    (env.ws / "huge.pbtxt").write_text('name: "' + "a" * (20 << 20) + '"')


def fail_write_of(suffix: str):
    """The disk fills up while the temporary file of the output ending in ``suffix`` is written (not before)."""
    def setup(env: Env) -> None:
        import trtq.fileio

        real = os.fsync

        def fsync(fd):
            if os.readlink(f"/proc/self/fd/{fd}").rpartition(".trtq-")[0].endswith(suffix):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(fd)

        env.no_probe()
        env.monkeypatch.setattr(trtq.fileio.os, "fsync", fsync)
    return setup


def token_model(env: Env) -> None:
    """An embedding lookup (ids -> Gather -> MatMul) and token ids beyond its 10-word vocabulary."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    table = numpy_helper.from_array(rng.random((10, 4), dtype=np.float32), "table")
    weight = numpy_helper.from_array(rng.random((4, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"]), helper.make_node("MatMul", ["e", "w"], ["y"])], "tok",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5, 3])], initializer=[table, weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(env.ws / "tok.onnx"))
    np.save(env.ws / "ids.npy", np.full((4, 5), 50, np.int64))


def _png_rgb16(path: Path, pixels: np.ndarray) -> None:
    """A 48-bit RGB PNG (Pillow cannot write one), written by hand: signature, IHDR, IDAT, IEND."""
    import struct
    import zlib

    height, width, _ = pixels.shape
    raw = b"".join(b"\0" + pixels[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _snapshot(root: Path) -> dict:
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[rel] = ("dir",)
            elif path.is_file():
                entries[rel] = ("file", path.read_bytes())
            else:
                entries[rel] = ("special",)
        dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]
    return entries


# ---------------------------------------------------------------------------------------------
# Mechanisms: a full or read-only disk, permission denied


def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path("/tmp") / f"trtq-mount-probe-{uuid.uuid4().hex}"
    probe.mkdir()
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


CAN_MOUNT = _can_mount()


class Env:
    """What a case's setup can do to its workspace."""

    def __init__(self, ws: Path, monkeypatch):
        self.ws = ws
        self.monkeypatch = monkeypatch
        self.mounts: List[Path] = []

    def full_disk(self, name: str = "full", keep: Optional[str] = None) -> Path:
        """A folder whose disk is full; ``keep``: a file of the workspace copied there first (a previous result)."""
        folder = self.ws / name
        folder.mkdir()
        if CAN_MOUNT:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], check=True)
            self.mounts.append(folder)
            if keep:
                shutil.copy(self.ws / keep, folder / Path(keep).name)
            fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError:
                pass
            finally:
                os.close(fd)
        else:  # no mount here: every write's fsync reports a full disk
            if keep:
                shutil.copy(self.ws / keep, folder / Path(keep).name)
            import trtq.fileio

            def full(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            self.monkeypatch.setattr(trtq.fileio.os, "fsync", full)
        return folder

    def read_only(self, name: str = "ro") -> Path:
        folder = self.ws / name
        folder.mkdir()
        if CAN_MOUNT:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], check=True)
            self.mounts.append(folder)
        else:
            import trtq.fileio

            def read_only(*args, **kwargs):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))

            self.monkeypatch.setattr(trtq.fileio.tempfile, "mkstemp", read_only)
        return folder

    def denied(self, name: str = "denied") -> Path:
        folder = self.ws / name
        folder.mkdir()
        if os.geteuid() == 0:  # root ignores permission bits: the write is refused the way the kernel would
            import trtq.fileio

            real = trtq.fileio.tempfile.mkstemp

            def mkstemp(*args, dir=None, **kwargs):  # noqa: A002
                if dir is not None and Path(dir).resolve() == folder.resolve():
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
                return real(*args, dir=dir, **kwargs)

            self.monkeypatch.setattr(trtq.fileio.tempfile, "mkstemp", mkstemp)
        else:
            folder.chmod(0o500)
        return folder

    def no_probe(self) -> None:
        """The disk fills up during the work: the probe before it passed, the write itself fails."""
        import trtq.fileio

        self.monkeypatch.setattr(trtq.fileio, "_probe", lambda folder, target: None)

    def close(self) -> None:
        for folder in reversed(self.mounts):
            subprocess.run(["umount", str(folder)], check=False)
        for path in self.ws.rglob("*"):
            if path.is_dir() and not path.is_symlink():
                with_perm = path.stat().st_mode | 0o700
                os.chmod(path, with_perm)


# ---------------------------------------------------------------------------------------------
# The cases


@dataclass
class Case:
    id: str
    argv: Sequence[str]                      # "{ws}" is replaced by the workspace path
    code: int = 2
    error: str = ""                          # regex the one error line must match (failures)
    out: Sequence[str] = ()                  # words stdout must hold (whitespace collapsed)
    err: Sequence[str] = ()                  # words stderr must hold (notices, warnings)
    changes: Sequence[str] = ()              # files the case may create or rewrite (globs, relative)
    setup: Optional[Callable[[Env], None]] = None
    check: Optional[Callable[[Path], None]] = None
    cwd: bool = False                        # run inside the workspace (default output paths)
    marks: Sequence = field(default_factory=tuple)
    allow_temp: bool = False                 # a temporary file of a running process is there before and after


def link(src: str, dst: str, hard: bool = False):
    def setup(env: Env) -> None:
        (os.link if hard else os.symlink)(env.ws / src, env.ws / dst)
    return setup


def link_abs(target: str, dst: str):
    def setup(env: Env) -> None:
        os.symlink(target, env.ws / dst)
    return setup


def fifo(name: str):
    return lambda env: os.mkfifo(env.ws / name)


def fifo_in(folder: str, name: str):
    def setup(env: Env) -> None:
        (env.ws / folder).mkdir(exist_ok=True)
        os.mkfifo(env.ws / folder / name)
    return setup


def socket_in(folder: str, name: str):
    def setup(env: Env) -> None:
        import socket

        (env.ws / folder).mkdir(exist_ok=True)
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(env.ws / folder / name))
        env.socket = server  # kept open for the case
    return setup


def dangling(folder: str, name: str):
    def setup(env: Env) -> None:
        (env.ws / folder).mkdir(exist_ok=True)
        os.symlink(env.ws / "gone.npy", env.ws / folder / name)
    return setup


def stale_temp(name: str, alive: bool = False):
    """A temporary file a killed trtq run left beside ``name`` (a process id that no longer runs)."""
    def setup(env: Env) -> None:
        from trtq.fileio import temp_prefix

        prefix = temp_prefix(env.ws / name)
        pid = os.getpid() if alive else _dead_pid()
        prefix = prefix.replace(f"-{os.getpid()}-", f"-{pid}-")
        (env.ws / f"{prefix}abcd1234.tmp").write_bytes(b"\0" * 4096)
    return setup


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def no_stale_temp(ws: Path) -> None:
    assert not [p for p in ws.iterdir() if p.name.endswith(".tmp")]


def small_bomb_limit(env: Env) -> None:
    from PIL import Image

    env.monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 200)  # the 16x16 images count as huge (256 > 200)


def strict_sidecar(ws: Path) -> None:
    """The sidecar parses with a strict parser (no bare Infinity/NaN, which jq, JavaScript and Go reject)."""
    def refuse(constant):
        raise AssertionError(f"bare {constant} in the sidecar")
    json.loads((ws / "o.cache.json").read_text(), parse_constant=refuse)


def up_link(env: Env) -> None:
    nested = env.ws / "nested"
    nested.mkdir()
    for i in range(2):
        shutil.copy(env.ws / "calib" / f"s{i}.npy", nested / f"n{i}.npy")
    os.symlink("..", nested / "up")


def interrupt(env: Env) -> None:
    from trtq.calib import collect

    def observe(self, tensors, batch_index=0):
        raise KeyboardInterrupt
    env.monkeypatch.setattr(collect.HistogramCollector, "observe", observe)


def earlier(*names: str):
    """Results of an earlier run at the default paths (copied from the workspace's own)."""
    sources = {"m.calib.cache": "m.calib.cache", "m.calib.cache.json": "m.calib.cache.json",
               "m.int8.onnx": "m.int8.onnx"}

    def setup(env: Env) -> None:
        for name in names:
            if name.startswith("bench/"):
                (env.ws / "bench").mkdir(exist_ok=True)
                if name.endswith(".json"):
                    (env.ws / name).write_text(json.dumps({"format": "trtq-bench", "results": []}))
                elif name.endswith(".csv"):
                    (env.ws / name).write_text("model,precision,backend,batch_size\n")
                else:
                    (env.ws / name).write_bytes(b"\x89PNG\r\n\x1a\n")
            elif name not in sources:
                raise KeyError(name)
    return setup


def earlier_bench(env: Env, folder: str) -> None:
    """A full disk that holds an earlier bench report (the previous good file must survive)."""
    (env.ws / "prev").mkdir()
    (env.ws / "prev" / "bench.json").write_text(json.dumps({"format": "trtq-bench", "results": []}))
    env.full_disk(folder, keep="prev/bench.json")


def foreign(path: str):
    def setup(env: Env) -> None:
        (env.ws / path).parent.mkdir(parents=True, exist_ok=True)
        (env.ws / path).write_text("somebody else's file\n")
    return setup


def both(*setups):
    def setup(env: Env) -> None:
        for step in setups:
            step(env)
    return setup


def speedups(ws: Path) -> None:
    rows = json.loads((ws / "b" / "bench.json").read_text())["results"]
    other = [r for r in rows if r["model"] == "other.onnx"]
    assert other and all(r["speedup"] == pytest.approx(1.0) for r in other)  # its own fp32 row, not m.onnx's
    int8 = [r for r in rows if r["model"] == "m.int8.onnx"]
    fp32 = {r["batch_size"]: r for r in rows if r["model"] == "m.onnx"}
    assert int8 and all(r["speedup"] == pytest.approx(r["throughput"] / fp32[r["batch_size"]]["throughput"])
                        for r in int8)


def named_baseline(ws: Path) -> None:
    rows = json.loads((ws / "b" / "bench.json").read_text())["results"]
    base = {r["batch_size"]: r for r in rows if r["model"] == "other.onnx"}
    assert all(r["speedup"] == pytest.approx(r["throughput"] / base[r["batch_size"]]["throughput"]) for r in rows)


def two_samples(ws: Path) -> None:
    sidecar = json.loads((ws / "o.cache.json").read_text())
    assert sidecar["data"]["samples"] == 2  # nested/ holds 2 files; up -> .. would have added the parent's


C = ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/calib"]
Q = ["quantize", "{ws}/m.onnx", "--cache", "{ws}/m.calib.cache"]
E = ["eval", "{ws}/m.onnx", "{ws}/m.int8.onnx", "--data", "{ws}/calib"]
B = ["bench", "{ws}/m.onnx", "--batch-sizes", "1,2", "--iterations", "2", "--warmup", "0"]
X = ["export", "trtq.assets.demo_model:pretrained", "--input-shape", "image:1x1x32x32"]
U = ["build", "{ws}/m.onnx"]
CACHE_OUT = ["o.cache", "o.cache.json"]
no_trt = pytest.mark.skipif(__import__("importlib").util.find_spec("tensorrt") is not None,
                            reason="TensorRT is installed here: build and info would not fail the same way")

CASES: List[Case] = [
    # -- calibrate: outputs that are inputs ---------------------------------------------------
    Case("cal-o-is-model", C + ["-o", "{ws}/m.onnx"], error="would overwrite the model"),
    Case("cal-o-is-data-file", C + ["-o", "{ws}/calib/s3.npy"], error="would overwrite a data file"),
    Case("cal-o-symlink-to-model", C + ["-o", "{ws}/alias.onnx"], setup=link("m.onnx", "alias.onnx"),
         error="the model .* through a link"),
    Case("cal-o-hardlink-to-model", C + ["-o", "{ws}/hard.cache"], setup=link("m.onnx", "hard.cache", hard=True),
         error="would overwrite the model"),
    Case("cal-o-is-loader-script", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/loader.py", "-o", "{ws}/loader.py"],
         error="would overwrite the loader script"),
    Case("cal-sidecar-is-model", C + ["-o", "{ws}/mm"], setup=link("m.onnx", "mm.json"),
         error="sidecar of -o .*would overwrite the model"),
    Case("cal-o-hardlink-to-data", C + ["-o", "{ws}/d.cache"], setup=link("calib/s0.npy", "d.cache", hard=True),
         error="would overwrite a data file"),
    # -- calibrate: existing files --------------------------------------------------------------
    Case("cal-o-foreign-file", C + ["-o", "{ws}/notes.txt"], error="notes.txt exists and is not a trtq calibration "
         "cache; pass --force"),
    Case("cal-o-foreign-file-force", C + ["-o", "{ws}/notes.txt", "--force"], code=0,
         changes=["notes.txt", "notes.txt.json"], out=["replacing", "--force"]),
    Case("cal-sidecar-foreign", C + ["-o", "{ws}/o.cache"], setup=foreign("o.cache.json"),
         error="o.cache.json exists and is not a trtq calibration sidecar"),
    Case("cal-o-existing-cache", C + ["-o", "{ws}/m.calib.cache"], code=0, changes=["m.calib.cache*"]),
    Case("cal-default-replaces-earlier", ["calibrate", "m.onnx", "--calib", "calib"], code=0, cwd=True,
         setup=earlier("m.calib.cache"), changes=["m.calib.cache*"], out=["replaces m.calib.cache",
                                                                          "an earlier result"]),
    Case("cal-default-new", ["calibrate", "other.onnx", "--calib", "calib"], code=0, cwd=True,
         changes=["other.calib.cache*"], out=["wrote"]),
    Case("cal-o-new-folder", C + ["-o", "{ws}/new/deeper/o.cache"], code=0, changes=["new", "new/*", "new/deeper/*"]),
    # -- calibrate: places that cannot hold the file --------------------------------------------
    Case("cal-o-is-folder", C + ["-o", "{ws}/calib"], error="is a directory"),
    Case("cal-o-under-a-file", C + ["-o", "{ws}/notes.txt/x.cache"], error="is a file, not a folder"),
    Case("cal-o-deep-under-a-file", C + ["-o", "{ws}/notes.txt/a/b/x.cache"], error="is a file, not a folder"),
    Case("cal-o-proc", C + ["-o", "/proc/trtq-x.cache"], error="pseudo-filesystem"),
    Case("cal-o-sys", C + ["-o", "/sys/trtq-x.cache"], error="pseudo-filesystem"),
    Case("cal-o-fifo", C + ["-o", "{ws}/pipe"], setup=fifo("pipe"), error="not a regular file"),
    Case("cal-o-full-disk", C + ["-o", "{ws}/full/o.cache"], setup=lambda env: env.full_disk(),
         error="no space left"),
    Case("cal-o-full-disk-at-write", C + ["-o", "{ws}/full/m.calib.cache"],
         setup=lambda env: (env.full_disk(keep="m.calib.cache"), env.no_probe()), error="no space left.*unchanged"),
    Case("cal-o-read-only", C + ["-o", "{ws}/ro/o.cache"], setup=lambda env: env.read_only(), error="read-only"),
    Case("cal-o-denied", C + ["-o", "{ws}/denied/o.cache"], setup=lambda env: env.denied(),
         error="permission denied"),
    Case("cal-failure-leaves-no-folder", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/missing", "-o",
                                          "{ws}/newdir/o.cache"], error="does not exist"),
    Case("cal-ctrl-c", C + ["-o", "{ws}/o.cache"], setup=interrupt, code=130, error="interrupted \\(SIGINT\\)"),
    # -- calibrate: options and data --------------------------------------------------------------
    Case("cal-max-binned-0", C + ["-o", "{ws}/o.cache", "--max-binned", "0"], error="max-binned.*at least 1"),
    Case("cal-max-binned-negative", C + ["-o", "{ws}/o.cache", "--max-binned", "-5"], error="at least 1"),
    Case("cal-max-binned-ok", C + ["-o", "{ws}/o.cache", "--max-binned", "64"], code=0, changes=CACHE_OUT),
    Case("cal-num-bins-odd", C + ["-o", "{ws}/o.cache", "--num-bins", "129"], error="num_bins"),
    Case("cal-num-bins-small", C + ["-o", "{ws}/o.cache", "--num-bins", "64"], error="--num-bins: must be in \\[128, "),
    Case("cal-percentile-0", C + ["-o", "{ws}/o.cache", "--algo", "percentile", "--percentile", "0"],
         error="percentile"),
    Case("cal-samples-0", C + ["-o", "{ws}/o.cache", "--samples", "0"], error="--samples"),
    Case("cal-samples-text", C + ["-o", "{ws}/o.cache", "--samples", "many"], error="--samples"),
    Case("cal-batch-size-0", C + ["-o", "{ws}/o.cache", "--batch-size", "0"], error="--batch-size"),
    Case("cal-size-one-number", C + ["-o", "{ws}/o.cache", "--size", "32"], error="--size"),
    Case("cal-mean-two", C + ["-o", "{ws}/o.cache", "--mean", "1,2"], error="--mean"),
    Case("cal-std-zero", C + ["-o", "{ws}/o.cache", "--std", "0"], error="--std"),
    Case("cal-trt-version-bad", C + ["-o", "{ws}/o.cache", "--trt-version", "ten"], error="TensorRT version"),
    Case("cal-algo-unknown", C + ["-o", "{ws}/o.cache", "--algo", "kl"], error="invalid choice"),
    Case("cal-model-missing", ["calibrate", "{ws}/nope.onnx", "--calib", "{ws}/calib", "-o", "{ws}/o.cache"],
         error="does not exist"),
    Case("cal-model-not-onnx", ["calibrate", "{ws}/notes.txt", "--calib", "{ws}/calib", "-o", "{ws}/o.cache"],
         error="not a readable ONNX model"),
    Case("cal-calib-missing", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/nope", "-o", "{ws}/o.cache"],
         error="does not exist"),
    Case("cal-calib-empty", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/empty", "-o", "{ws}/o.cache"],
         error="holds no supported data files"),
    Case("cal-npz-wrong-key", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/wrongkey.npz", "-o", "{ws}/o.cache"],
         error="holds keys 'image', but the model's input is named 'x'"),
    Case("cal-npz-unnamed", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/unnamed.npz", "-o", "{ws}/o.cache"],
         code=0, changes=CACHE_OUT),
    Case("cal-loader-wrong-name", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/badname.py", "-o", "{ws}/o.cache"],
         error="holds names 'images', but the model's input is named 'x'"),
    Case("cal-loader-ok", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/loader.py", "-o", "{ws}/o.cache"], code=0,
         changes=CACHE_OUT + ["__pycache__", "__pycache__/*"]),
    Case("cal-int-data-notice", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/ints.npy", "-o", "{ws}/o.cache"],
         code=0, changes=CACHE_OUT, err=["input 'x' is float32 but the data is int32", "cast to float32"]),
    Case("cal-16-bit-png-notice", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/png16", "-o", "{ws}/o.cache"],
         code=0, changes=CACHE_OUT, err=["I;16 (16-bit) grayscale image", "scaled to 0-255"]),
    Case("cal-16-bit-rgb-notice", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/rgb16", "-o", "{ws}/o.cache"],
         code=0, changes=CACHE_OUT, err=["16-bit RGB image: read with 8 bits per channel"]),
    Case("cal-up-link-not-followed", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/nested", "-o", "{ws}/o.cache"],
         code=0, setup=up_link, changes=CACHE_OUT, err=["not followed"], check=two_samples),
    Case("cal-nan-data", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/nan.npy", "-o", "{ws}/o.cache"],
         error="NaN"),
    Case("cal-wrong-shape", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/shape.npy", "-o", "{ws}/o.cache"],
         error="expects shape Nx3x16x16"),
    Case("cal-quiet-after-command", C + ["-o", "{ws}/o.cache", "-q"], code=0, changes=CACHE_OUT),
    Case("cal-verbose-after-command", C + ["-o", "{ws}/o.cache", "-v"], code=0, changes=CACHE_OUT),
    # -- quantize ---------------------------------------------------------------------------------
    Case("q-o-is-cache", Q + ["-o", "{ws}/m.calib.cache"], error="would overwrite the calibration cache"),
    Case("q-o-is-sidecar", Q + ["-o", "{ws}/m.calib.cache.json"], error="would overwrite the cache's sidecar"),
    Case("q-o-is-model", Q + ["-o", "{ws}/m.onnx"], error="would overwrite the model"),
    Case("q-o-symlink-to-cache", Q + ["-o", "{ws}/c.onnx"], setup=link("m.calib.cache", "c.onnx"),
         error="calibration cache .*through a link"),
    Case("q-o-hardlink-to-model", Q + ["-o", "{ws}/h.onnx"], setup=link("m.onnx", "h.onnx", hard=True),
         error="would overwrite the model"),
    Case("q-o-is-calib-data", ["quantize", "{ws}/m.onnx", "--calib", "{ws}/calib", "-o", "{ws}/calib/s1.npy"],
         error="would overwrite a data file"),
    Case("q-o-foreign", Q + ["-o", "{ws}/notes.txt"], error="is not a trtq ONNX model; pass --force"),
    Case("q-o-foreign-force", Q + ["-o", "{ws}/notes.txt", "--force"], code=0, changes=["notes.txt"]),
    Case("q-default-replaces-earlier", ["quantize", "m.onnx", "--cache", "m.calib.cache"], code=0, cwd=True,
         setup=earlier("m.int8.onnx"), changes=["m.int8.onnx"], out=["replaces m.int8.onnx"]),
    Case("q-ok", Q + ["-o", "{ws}/q.onnx"], code=0, changes=["q.onnx"]),
    Case("q-cpu-form", Q + ["--for", "cpu", "-o", "{ws}/q.onnx"], code=0, changes=["q.onnx"]),
    Case("q-cache-duplicate", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/dup.cache", "-o", "{ws}/q.onnx"],
         error=r"dup.cache line 4: tensor .* is listed again \(first on line 2\)"),
    Case("q-cache-zero-scale", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/zero.cache", "-o", "{ws}/q.onnx"],
         error="line 2: the scale of .* is zero"),
    Case("q-cache-negative-scale", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/neg.cache", "-o", "{ws}/q.onnx"],
         error="line 2: the scale of .* is negative"),
    Case("q-cache-nan-scale", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/nan.cache", "-o", "{ws}/q.onnx"],
         error="line 2: the scale of .* is not a finite number"),
    Case("q-cache-inf-scale", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/inf.cache", "-o", "{ws}/q.onnx"],
         error="line 2: the scale of .* is not a finite number"),
    Case("q-cache-no-sidecar", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/nosidecar.cache", "-o", "{ws}/q.onnx"],
         code=0, changes=["q.onnx"], err=["no trtq sidecar", "model checks skipped"]),
    Case("q-cache-bad-sidecar", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/badside.cache", "-o", "{ws}/q.onnx"],
         error="is not valid JSON"),
    Case("q-resaved-model-accepted", ["quantize", "{ws}/resaved.onnx", "--cache", "{ws}/m.calib.cache", "-o",
                                      "{ws}/q.onnx"], code=0, changes=["q.onnx"]),
    Case("q-same-model-rebuilt-accepted", ["quantize", "{ws}/same.onnx", "--cache", "{ws}/m.calib.cache", "-o",
                                           "{ws}/q.onnx"], code=0, changes=["q.onnx"]),
    Case("q-retrained-model-refused", ["quantize", "{ws}/retrained.onnx", "--cache", "{ws}/m.calib.cache", "-o",
                                       "{ws}/q.onnx"], error="another version of model 'm.onnx': weights changed "
                                                             "values: 'w1' and 5 more"),
    Case("q-changed-graph-refused", ["quantize", "{ws}/graph.onnx", "--cache", "{ws}/m.calib.cache", "-o",
                                     "{ws}/q.onnx"], error="the graph changed \\(same node count"),
    Case("q-retrained-force", ["quantize", "{ws}/retrained.onnx", "--cache", "{ws}/m.calib.cache", "-o",
                               "{ws}/q.onnx", "--force"], code=0, changes=["q.onnx"], err=["--force"]),
    Case("q-no-scales", ["quantize", "{ws}/m.onnx", "-o", "{ws}/q.onnx"], error="give the scales"),
    Case("q-cache-and-calib", Q + ["--calib", "{ws}/calib", "-o", "{ws}/q.onnx"], error="not both"),
    Case("q-cache-missing", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/nope.cache", "-o", "{ws}/q.onnx"],
         error="does not exist"),
    Case("q-cache-not-a-cache", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/notes.txt", "-o", "{ws}/q.onnx"],
         error="does not start with a TensorRT cache header"),
    Case("q-o-proc", Q + ["-o", "/proc/trtq-q.onnx"], error="pseudo-filesystem"),
    Case("q-o-full-disk", Q + ["-o", "{ws}/full/q.onnx"], setup=lambda env: env.full_disk(), error="no space left"),
    Case("q-o-full-disk-at-write", Q + ["-o", "{ws}/full/m.int8.onnx"],
         setup=lambda env: (env.full_disk(keep="m.int8.onnx"), env.no_probe()), error="no space left.*unchanged"),
    Case("q-o-read-only", Q + ["-o", "{ws}/ro/q.onnx"], setup=lambda env: env.read_only(), error="read-only"),
    Case("q-exclude-unmatched", Q + ["-o", "{ws}/q.onnx", "--exclude", "NoSuchOp"],
         error="--exclude 'NoSuchOp' matches no node name or op type of the model; nothing was written"),
    Case("q-exclude-typo-names-the-closest", Q + ["-o", "{ws}/q.onnx", "--exclude", "Conv,Gem"],
         error="--exclude 'Gem' \\(closest: 'Gemm'"),
    Case("q-exclude-op-type", Q + ["-o", "{ws}/q.onnx", "--exclude", "Gemm"], code=0, changes=["q.onnx"],
         out=["kept in float"]),
    Case("q-quiet-after-command", Q + ["-o", "{ws}/q.onnx", "-q"], code=0, changes=["q.onnx"]),
    # -- eval ---------------------------------------------------------------------------------------
    Case("e-json-is-reference", E + ["--json", "{ws}/m.onnx"], error="would overwrite the reference model"),
    Case("e-json-is-candidate", E + ["--json", "{ws}/m.int8.onnx"], error="would overwrite the candidate model"),
    Case("e-json-is-labels", E + ["--labels", "{ws}/labels.csv", "--json", "{ws}/labels.csv"],
         error="would overwrite the labels file"),
    Case("e-json-is-data", E + ["--json", "{ws}/calib/s2.npy"], error="would overwrite a data file"),
    Case("e-json-symlink-to-labels", E + ["--labels", "{ws}/labels.csv", "--json", "{ws}/r.json"],
         setup=link("labels.csv", "r.json"), error="labels file .*through a link"),
    Case("e-o-is-reference", E + ["--auto-exclude", "--target-snr", "30", "-o", "{ws}/m.onnx"],
         error="would overwrite the reference model"),
    Case("e-json-and-o-same", E + ["--auto-exclude", "--target-snr", "30", "-o", "{ws}/r.json", "--json",
                                   "{ws}/r.json"], error="name the same file"),
    Case("e-json-proc", E + ["--json", "/proc/trtq-r.json"], error="pseudo-filesystem"),
    Case("e-json-full-disk", E + ["--json", "{ws}/full/r.json"], setup=lambda env: env.full_disk(),
         error="no space left"),
    Case("e-json-full-disk-at-write", E + ["--json", "{ws}/full/r.json"],
         setup=lambda env: (env.full_disk(), env.no_probe()), error="no space left"),
    Case("e-json-foreign", E + ["--json", "{ws}/notes.txt"], error="is not a trtq eval report"),
    Case("e-json-foreign-force", E + ["--json", "{ws}/notes.txt", "--force"], code=0, changes=["notes.txt"]),
    Case("e-ok-with-labels", E + ["--labels", "{ws}/labels.csv", "--json", "{ws}/r.json"], code=0,
         changes=["r.json"], out=["top-1 accuracy"]),
    Case("e-labels-missing", E + ["--labels", "{ws}/nope.csv"], error="nope.csv"),
    Case("e-auto-exclude-agreement-without-classes", E + ["--auto-exclude", "--target-agreement", "0.9", "--no-speed"],
         error="needs an output declared as class scores"),
    Case("e-target-without-auto", E + ["--target-snr", "30"], error="belong to --auto-exclude"),
    Case("e-sensitivity-samples-0", E + ["--sensitivity", "--sensitivity-samples", "0"], error="at least 1"),
    Case("e-reference-missing", ["eval", "{ws}/nope.onnx", "{ws}/m.int8.onnx", "--data", "{ws}/calib"],
         error="does not exist"),
    Case("e-data-missing", ["eval", "{ws}/m.onnx", "{ws}/m.int8.onnx", "--data", "{ws}/nope"],
         error="does not exist"),
    # -- bench ----------------------------------------------------------------------------------------
    Case("b-shape-unknown-name", B + ["--no-files", "--shape", "images:1x3x16x16"],
         error="--shape names input\\(s\\) 'images', which the model does not have \\(inputs: x\\)"),
    Case("b-batch-too-big-for-memory", ["bench", "{ws}/m.onnx", "--batch-sizes", "1,1000000000", "--no-files"],
         error="at batch 1000000000 needs at least .* available; use --batch-sizes up to about"),
    Case("b-batch-0", B[:2] + ["--batch-sizes", "0", "--no-files"], error="positive integers"),
    Case("b-nothing-measured", ["bench", "{ws}/fixed.onnx", "--batch-sizes", "2,4", "--iterations", "2",
                                "--out", "{ws}/b"], code=1, error="no row was measured"),
    Case("b-nothing-measured-default-out", ["bench", "fixed.onnx", "--batch-sizes", "2", "--iterations", "2"],
         code=1, cwd=True, error="no row was measured"),
    Case("b-speedup-same-model", ["bench", "{ws}/m.onnx", "{ws}/m.int8.onnx", "{ws}/other.onnx", "--batch-sizes",
                                  "1,2", "--iterations", "2", "--warmup", "0", "--out", "{ws}/b"], code=0,
         changes=["b", "b/*"], check=speedups),
    Case("b-baseline-named", ["bench", "{ws}/m.onnx", "{ws}/other.onnx", "--batch-sizes", "1", "--iterations", "2",
                              "--warmup", "0", "--out", "{ws}/b", "--baseline", "other.onnx"], code=0,
         changes=["b", "b/*"], check=named_baseline),
    Case("b-baseline-unknown", B + ["--no-files", "--baseline", "nope.onnx"], error="--baseline nope.onnx is not"),
    Case("b-out-is-a-file", B + ["--out", "{ws}/notes.txt"], error="is a file, not a folder"),
    Case("b-out-proc", B + ["--out", "/proc/trtq-bench"], error="pseudo-filesystem"),
    Case("b-out-read-only", B + ["--out", "{ws}/ro"], setup=lambda env: env.read_only(), error="read-only"),
    Case("b-out-full-disk", B + ["--out", "{ws}/full"], setup=lambda env: env.full_disk(), error="no space left"),
    Case("b-out-full-disk-at-write", B + ["--out", "{ws}/full"],
         setup=lambda env: (earlier_bench(env, "full"), env.no_probe()), error="no space left.*unchanged"),
    Case("b-json-foreign", B + ["--out", "{ws}/b"], setup=foreign("b/bench.json"),
         error="bench.json exists and is not a trtq bench report"),
    Case("b-json-foreign-force", B + ["--out", "{ws}/b", "--force"], setup=foreign("b/bench.json"), code=0,
         changes=["b/*"]),
    Case("b-default-replaces-earlier", ["bench", "m.onnx", "--batch-sizes", "1", "--iterations", "2"], code=0,
         cwd=True, setup=earlier("bench/bench.json", "bench/bench.csv", "bench/bench.png"),
         changes=["bench/*"], out=["replaces bench/bench.json"]),
    Case("b-failure-leaves-no-bench-folder", ["bench", "m.onnx", "--shape", "nope:1x2"], cwd=True,
         error="--shape names"),
    Case("b-max-seconds-0", B + ["--no-files", "--max-seconds", "0"], error="--max-seconds: must be greater than 0"),
    Case("b-precisions-without-trt", B + ["--no-files", "--precisions", "fp32"], error="add --backend trt"),
    Case("b-iterations-0", B[:4] + ["--iterations", "0", "--no-files"], error="--iterations: must be at least 1"),
    Case("b-model-missing", ["bench", "{ws}/nope.onnx", "--no-files"], error="does not exist"),
    Case("b-quiet-after-command", B + ["--no-files", "-q"], code=0),
    # -- export ---------------------------------------------------------------------------------------
    Case("x-o-is-the-pt", ["export", "{ws}/m.pt", "--input-shape", "1x3x16x16", "-o", "{ws}/m.pt"],
         error="would overwrite the PyTorch model"),
    Case("x-o-is-the-factory-file", ["export", "{ws}/factory.py:build", "--input-shape", "1x3x16x16", "-o",
                                     "{ws}/factory.py"], error="would overwrite the PyTorch model"),
    Case("x-o-foreign", X + ["-o", "{ws}/notes.txt"], error="is not a trtq ONNX model; pass --force"),
    Case("x-o-proc", X + ["-o", "/proc/trtq-x.onnx"], error="pseudo-filesystem"),
    Case("x-o-under-a-file", X + ["-o", "{ws}/notes.txt/x.onnx"], error="is a file, not a folder"),
    Case("x-full-disk-at-write", X + ["-o", "{ws}/full/demo.onnx"],
         setup=lambda env: (env.full_disk(), env.no_probe()), error="no space left"),
    Case("x-readme-example", X + ["--dynamic-batch", "-o", "{ws}/exp/demo.onnx"], code=0,
         changes=["exp", "exp/*"], out=["ONNX Runtime matches PyTorch"]),
    # -- build (no TensorRT here: the guard still runs first) ----------------------------------------
    Case("u-o-is-model", U + ["-o", "{ws}/m.onnx"], error="would overwrite the model"),
    Case("u-o-is-cache", U + ["--int8", "--cache", "{ws}/m.calib.cache", "-o", "{ws}/m.calib.cache"],
         error="would overwrite the calibration cache"),
    Case("u-o-foreign", U + ["-o", "{ws}/notes.txt"], error="is not a trtq TensorRT engine; pass --force"),
    Case("u-o-proc", U + ["-o", "/proc/trtq.engine"], error="pseudo-filesystem"),
    Case("u-no-tensorrt-no-engines-folder", ["build", "m.onnx"], cwd=True, error="TensorRT", marks=(no_trt,)),
    Case("u-new-cache-foreign", ["build", "{ws}/m.onnx", "--int8", "--calib", "{ws}/calib", "--cache",
                                 "{ws}/new.cache", "-o", "{ws}/m.engine"], setup=foreign("new.cache.json"),
         error="new.cache.json exists and is not a trtq calibration sidecar"),
    # -- quickstart -------------------------------------------------------------------------------------
    Case("qs-out-is-a-file", ["quickstart", "-o", "{ws}/notes.txt", "--no-torch"], error="is a file, not a folder"),
    Case("qs-out-proc", ["quickstart", "-o", "/proc/trtq-qs", "--no-torch"], error="pseudo-filesystem"),
    Case("qs-out-foreign-bench", ["quickstart", "-o", "{ws}/qs", "--no-torch"], setup=foreign("qs/bench.csv"),
         error="bench.csv exists and is not a trtq bench CSV"),
    Case("qs-out-read-only", ["quickstart", "-o", "{ws}/ro", "--no-torch"], setup=lambda env: env.read_only(),
         error="read-only"),
    # == existing results, unusual data and files ===============================================================================
    # -- 1. an existing good result is never destroyed ------------------------------------------------------
    Case("r3-all-huge-keeps-good-cache", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/huge.npy", "-o",
                                          "{ws}/m.calib.cache"], error="every floating-point tensor .* huge"),
    Case("r3-all-huge-new-output", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/huge.npy", "-o", "{ws}/o.cache"],
         error="nothing was written"),
    Case("r3-cal-o-external-data-force", ["calibrate", "{ws}/ext.onnx", "--calib", "{ws}/calib", "-o",
                                          "{ws}/ext.onnx.data", "--force"], error="external data of the model"),
    Case("r3-q-o-external-data-force", ["quantize", "{ws}/ext.onnx", "--calib", "{ws}/calib", "-o",
                                        "{ws}/ext.onnx.data", "--force"], error="external data of the model"),
    Case("r3-e-json-external-data", ["eval", "{ws}/ext.onnx", "{ws}/m.int8.onnx", "--data", "{ws}/calib", "--json",
                                     "{ws}/ext.onnx.data", "--force"], error="external data of the reference model"),
    Case("r3-x-o-external-data-link", X + ["-o", "{ws}/alias.data", "--force"], setup=link("ext.onnx.data",
         "alias.data"), code=0, changes=["alias.data"]),  # export reads no ONNX model: replacing the link is fine
    Case("r3-cal-external-data-ok", ["calibrate", "{ws}/ext.onnx", "--calib", "{ws}/calib", "-o", "{ws}/o.cache"],
         code=0, changes=CACHE_OUT),
    # -- 2. temporary files of killed runs ------------------------------------------------------------------
    Case("r3-stale-temp-removed", C + ["-o", "{ws}/o.cache"], setup=stale_temp("o.cache"), code=0,
         changes=CACHE_OUT + [".o.cache.trtq-*"], check=no_stale_temp),
    Case("r3-stale-temp-removed-on-failure", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/nope", "-o",
                                              "{ws}/o.cache"], setup=stale_temp("o.cache"), error="does not exist",
         changes=[".o.cache.trtq-*"]),
    Case("r3-live-temp-kept", C + ["-o", "{ws}/o.cache"], setup=stale_temp("o.cache", alive=True), code=0,
         changes=CACHE_OUT, check=lambda ws: None, allow_temp=True),
    # -- 3. no hang: FIFOs, sockets, devices refused by name ---------------------------------------------
    Case("r3-fifo-png-in-folder", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/pngtif", "-o", "{ws}/o.cache"],
         setup=fifo_in("pngtif", "x.png"), error="x.png is a FIFO"),
    Case("r3-fifo-npy-in-folder", C + ["-o", "{ws}/o.cache"], setup=fifo_in("calib", "zz.npy"),
         error="zz.npy is a FIFO"),
    Case("r3-fifo-as-data", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/p.npy", "-o", "{ws}/o.cache"],
         setup=fifo("p.npy"), error="p.npy is a FIFO"),
    Case("r3-fifo-as-eval-data", ["eval", "{ws}/m.onnx", "{ws}/m.int8.onnx", "--data", "{ws}/calib"],
         setup=fifo_in("calib", "zz.npy"), error="zz.npy is a FIFO"),
    Case("r3-fifo-as-labels", E + ["--labels", "{ws}/l.csv"], setup=fifo("l.csv"), error="l.csv is a FIFO"),
    Case("r3-fifo-as-model", ["calibrate", "{ws}/p.onnx", "--calib", "{ws}/calib", "-o", "{ws}/o.cache"],
         setup=fifo("p.onnx"), error="p.onnx is a FIFO"),
    Case("r3-fifo-as-cache", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/p.cache", "-o", "{ws}/q.onnx"],
         setup=fifo("p.cache"), error="p.cache is a FIFO"),
    Case("r3-fifo-as-sidecar", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/nosidecar.cache", "-o", "{ws}/q.onnx"],
         setup=fifo("nosidecar.cache.json"), error="nosidecar.cache.json is a FIFO"),
    Case("r3-fifo-as-loader", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/p.py", "-o", "{ws}/o.cache"],
         setup=fifo("p.py"), error="p.py is a FIFO"),
    Case("r3-socket-in-folder", C + ["-o", "{ws}/o.cache"], setup=socket_in("calib", "s.npy"),
         error="s.npy is a socket"),
    Case("r3-device-in-folder", C + ["-o", "{ws}/o.cache"], setup=link_abs("/dev/zero", "calib/z.npy"),
         error="z.npy is a device"),
    Case("r3-dangling-symlink-in-folder", C + ["-o", "{ws}/o.cache"], setup=dangling("calib", "gone-link.npy"),
         error="gone-link.npy is a symlink to .*gone.npy, which does not exist"),
    Case("r3-dangling-symlink-as-data", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/d.npy", "-o", "{ws}/o.cache"],
         setup=link("gone.npy", "d.npy"), error="d.npy is a symlink to"),
    # -- 4. no traceback: sidecars of the wrong shape, deep JSON, impossible option values -----------------
    *[Case(f"r3-sidecar-{stem}", ["quantize", "{ws}/m.onnx", "--cache", f"{{ws}}/side-{stem}.cache", "-o",
                                  "{ws}/q.onnx"], error=words)
      for stem, words in {"list": "not a trtq sidecar", "null": "not a trtq sidecar", "text": "not a trtq sidecar",
                          "model": "'model' must be an object, found an integer",
                          "amax": "'amax' must be an object, found a list",
                          "amaxval": "'amax.x' must be a number, found a string",
                          "verdict": "'verdict' must be an object, found a string",
                          "snr": "'verdict.snr_db' must be a number, found a list",
                          "mixed": "'mixed_precision.float_layers' must be a list, found a string",
                          "inputs": "'model.inputs\\[0\\].name' must be a string",
                          "deep": "nests 100000 levels deep"}.items()],
    Case("r3-sidecar-deep-eval", E + ["--sensitivity", "--cache", "{ws}/side-deep.cache"], error="nests 100000"),
    Case("r3-sidecar-verdict-build", ["build", "{ws}/m.onnx", "--int8", "--cache", "{ws}/side-verdict.cache", "-o",
                                      "{ws}/m.engine"], error="'verdict' must be an object|TensorRT", marks=(no_trt,)),
    Case("r3-guard-deep-json-out", E + ["--json", "{ws}/deep.json"], error="deep.json exists and is not a trtq eval"),
    Case("r3-guard-deep-bench-json", B + ["--out", "{ws}/b"], setup=lambda env: (
        (env.ws / "b").mkdir(), shutil.copy(env.ws / "deep.json", env.ws / "b" / "bench.json")),
        error="bench.json exists and is not a trtq bench report"),
    Case("r3-threads-negative", C + ["-o", "{ws}/o.cache", "--threads", "-3"], error="--threads: must be in"),
    Case("r3-threads-zero-eval", E + ["--threads", "0"], error="--threads: must be in"),
    Case("r3-export-shape-beyond-memory", X[:2] + ["--input-shape", "image:100000x1x32768x32768", "-o",
                                                   "{ws}/x.onnx"], error="GiB of memory is available"),
    # -- 5. no silent wrong result ------------------------------------------------------------------------
    Case("r3-cache-truncated-scale", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/short.cache", "-o", "{ws}/q.onnx"],
         error="line 2: the scale of .* has 4 hex digits"),
    Case("r3-cache-subnormal-scale", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/subnormal.cache", "-o",
                                      "{ws}/q.onnx"], error="is subnormal"),
    Case("r3-cache-huge-scale", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/large.cache", "-o", "{ws}/q.onnx"],
         error="outside the plausible amax range"),
    Case("r3-cache-huge-scale-force", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/large.cache", "-o", "{ws}/q.onnx",
                                       "--force"], error="outside the plausible amax range"),  # corrupt, not foreign
    Case("r3-export-factory-exit-0", ["export", "{ws}/exits.py:quits", "--input-shape", "1x3", "-o", "{ws}/x.onnx"],
         error="quits\\(\\) called sys.exit\\(0\\)", changes=["__pycache__", "__pycache__/*"]),
    Case("r3-export-factory-exit-3", ["export", "{ws}/exits.py:fails", "--input-shape", "1x3", "-o", "{ws}/x.onnx"],
         error="called sys.exit\\(3\\)", changes=["__pycache__", "__pycache__/*"]),
    Case("r3-export-exit-on-import", ["export", "{ws}/exit_on_import.py:build", "--input-shape", "1x3", "-o",
                                      "{ws}/x.onnx"], error="importing .* called sys.exit",
         changes=["__pycache__", "__pycache__/*"]),
    Case("r3-export-nan-outputs", ["export", "{ws}/exits.py:nan", "--input-shape", "1x3", "-o", "{ws}/x.onnx"],
         error="holds NaN", changes=["__pycache__", "__pycache__/*"]),
    Case("r3-sidecar-strict-json", C + ["-o", "{ws}/o.cache"], code=0, changes=CACHE_OUT, check=strict_sidecar),
    # -- 6. nonsense refused at the parser, and told well -------------------------------------------------
    *[Case(f"r3-option-{flag.strip('-')}-{value}", base + [flag, value], error=f"{flag}: {words}")
      for base, flag, value, words in [
          (C + ["-o", "{ws}/o.cache"], "--std", "inf", "must be a finite number"),
          (C + ["-o", "{ws}/o.cache"], "--mean", "nan", "must be a finite number"),
          (C + ["-o", "{ws}/o.cache"], "--scale", "inf", "must be a finite number"),
          (C + ["-o", "{ws}/o.cache"], "--min-snr", "nan", "must be a finite number"),
          (C + ["-o", "{ws}/o.cache"], "--min-cosine", "2", "must be in"),
          (C + ["-o", "{ws}/o.cache"], "--num-bins", "2000000000", "must be in"),
          (C + ["-o", "{ws}/o.cache"], "--percentile", "nan", "must be a finite number"),
          (C + ["-o", "{ws}/o.cache"], "--observe", ",", "expected a non-empty"),
          (E, "--target-cosine", "1.5", "must be in"),
          (E, "--min-snr", "inf", "must be a finite number"),
          (B + ["--no-files"], "--max-seconds", "inf", "must be a finite number"),
          (B + ["--no-files"], "--warmup", "-1", "must be at least 0"),
          (X + ["-o", "{ws}/x.onnx"], "--tolerance", "-1", "must be greater than 0"),
          (U + ["-o", "{ws}/m.engine"], "--workspace", "nan", "must be a finite number"),
      ]],
    Case("r3-onnxruntime-error-told-once", ["calibrate", "{ws}/tok.onnx", "--calib", "{ws}/ids.npy", "-o",
                                            "{ws}/o.cache"], setup=token_model, error="ONNX Runtime failed .* indices element out of data bounds",
         check=lambda ws: None),
    Case("r3-tiff-beside-pngs-named", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/pngtif", "-o", "{ws}/o.cache"],
         code=0, changes=CACHE_OUT, err=["skipped 1 image(s) in a format trtq does not read (.tif"]),
    Case("r3-huge-image-told-in-own-words", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/pngtif", "-o",
                                             "{ws}/o.cache"], setup=small_bomb_limit, code=0, changes=CACHE_OUT,
         err=["megapixel image"]),
    Case("r3-quiet-prints-nothing", C + ["-o", "{ws}/o.cache", "-q"], code=0, changes=CACHE_OUT,
         check=lambda ws: None),
    # == round 4: the newest features' inputs ============================================================
    # -- 1. a derived output goes through the guard with its kind ---------------------------------------
    Case("r4-equalize-onto-foreign-file", C + ["-o", "{ws}/o.cache", "--equalize"], setup=foreign("m.equalized.onnx"),
         error="m.equalized.onnx exists and is not a trtq ONNX model; pass --force .* move it away"),
    Case("r4-equalize-onto-foreign-file-force", C + ["-o", "{ws}/o.cache", "--equalize", "--force"],
         setup=foreign("m.equalized.onnx"), code=0, changes=CACHE_OUT + ["m.equalized.onnx"],
         out=["replacing", "m.equalized.onnx"]),
    Case("r4-triton-plan-onto-foreign-file", ["deploy", "triton", "{ws}/e.engine", "--cache", "{ws}/m.calib.cache",
                                              "-o", "{ws}/repo"], setup=foreign("repo/e/1/model.plan"),
         error="model.plan exists and is not a trtq model of a Triton repository"),
    # -- 2. user code cannot end or redirect the run ------------------------------------------------------
    Case("r4-metric-exit-0", C + ["-o", "{ws}/o.cache", "--metric", "{ws}/metric_exit0.py:score"],
         error="--metric .*metric_exit0.py:score called sys.exit\\(0\\)", changes=["__pycache__", "__pycache__/*"]),
    Case("r4-metric-exit-3", E + ["--metric", "{ws}/metric_exit3.py:score"],
         error="--metric .*metric_exit3.py:score called sys.exit\\(3\\)", changes=["__pycache__", "__pycache__/*"]),
    Case("r4-metric-replaces-stdout", C + ["-o", "{ws}/o.cache", "--metric", "{ws}/metric_stdout.py:score"], code=0,
         changes=CACHE_OUT + ["__pycache__", "__pycache__/*"], out=["wrote", "INT8 fidelity"],
         err=["score replaced sys.stdout; trtq put it back"]),
    Case("r4-loader-changes-folder", ["calibrate", "m.onnx", "--calib", "loader_chdir.py", "-o", "o.cache"], code=0,
         cwd=True, changes=CACHE_OUT + ["__pycache__", "__pycache__/*"], err=["changed the working directory"]),
    Case("r4-loader-exits", ["calibrate", "{ws}/m.onnx", "--calib", "{ws}/loader_exit.py", "-o", "{ws}/o.cache"],
         error="loader script .*loader_exit.py: load_data\\(\\) called sys.exit\\(0\\)",
         changes=["__pycache__", "__pycache__/*"]),
    # -- 3. option values the target does not accept, refused at the parser -------------------------------
    *[Case(f"r4-triton-name-{label}", ["deploy", "triton", "{ws}/m.onnx", "--cache", "{ws}/m.calib.cache", "-o",
                                       "{ws}/repo", "--name", name], error="--name: .* is a path, not a model name")
      for label, name in (("dotdot", "../escape"), ("slash", "a/b"), ("absolute", "{ws}/abs"), ("dot", "."))],
    Case("r4-triton-default-name-is-a-path", ["deploy", "triton", "{ws}/...onnx", "--cache", "{ws}/m.calib.cache",
                                              "-o", "{ws}/repo"], setup=lambda env: shutil.copy(env.ws / "m.onnx",
                                                                                                 env.ws / "...onnx"),
         error="'..' is a path, not a model name"),
    Case("r4-triton-max-batch-negative", ["deploy", "triton", "{ws}/m.onnx", "--cache", "{ws}/m.calib.cache", "-o",
                                          "{ws}/repo", "--max-batch", "-1"], error="--max-batch: must be in \\[1, "),
    *[Case(f"r4-deepstream-batch-size-{value}", ["deploy", "deepstream", "{ws}/m.onnx", "--cache", "{ws}/img.cache",
                                                 "-o", "{ws}/ds.txt", "--batch-size", value],
           error="--batch-size: must be in \\[1, 1024\\]") for value in ("0", "5000")],
    Case("r4-deepstream-batch-size-ok", ["deploy", "deepstream", "{ws}/m.onnx", "--cache", "{ws}/img.cache", "-o",
                                         "{ws}/ds.txt", "--batch-size", "4"], code=0, changes=["ds.txt"]),
    *[Case(f"r4-quickstart-{flag.strip('-')}-{value}", ["quickstart", "--no-torch", "-o", "{ws}/qs", flag, value],
           error=f"{flag}: must be at least 1") for flag, value in (("--samples", "0"), ("--eval-samples", "-3"))],
    Case("r4-min-agreement-above-1", C + ["-o", "{ws}/o.cache", "--min-agreement", "1.5"],
         error="--min-agreement: must be in \\[0, 1\\]"),
    Case("r4-target-agreement-0", E + ["--auto-exclude", "--target-agreement", "0"],
         error="--target-agreement: must be in \\(0, 1\\]"),
    # -- 4. every file read is checked first: no hang, the real problem named -------------------------------
    Case("r4-build-report-fifo", ["deploy", "triton", "{ws}/e-fifo.engine", "--cache", "{ws}/m.calib.cache", "-o",
                                  "{ws}/repo"], setup=fifo("e-fifo.engine.json"),
         error="build report .*e-fifo.engine.json is a FIFO"),
    Case("r4-check-config-folder", ["deploy", "check", "{ws}/calib", "--cache", "{ws}/m.calib.cache"],
         error="config .*calib is a folder, not a regular file"),
    Case("r4-check-config-fifo", ["deploy", "check", "{ws}/cfg.pbtxt", "--cache", "{ws}/m.calib.cache"],
         setup=fifo("cfg.pbtxt"), error="config .*cfg.pbtxt is a FIFO"),
    Case("r4-check-config-missing", ["deploy", "check", "{ws}/nope.pbtxt", "--cache", "{ws}/m.calib.cache"],
         error="config .*nope.pbtxt does not exist"),
    Case("r4-check-config-20mb-line", ["deploy", "check", "{ws}/huge.pbtxt", "--cache", "{ws}/m.calib.cache"],
         setup=huge_config, error="huge.pbtxt is 20.0 MiB, more than the 4 MiB a config can be"),
    Case("r4-check-deepstream-bom", ["deploy", "check", "{ws}/bom.txt", "--cache", "{ws}/img.cache"], code=2,
         out=["bom.txt (deepstream)"]),
    Case("r4-check-deep-embedded-json", ["deploy", "check", "{ws}/deep-param.pbtxt", "--cache", "{ws}/m.calib.cache"],
         code=0, out=["trtq.calibration", "nests 5000 levels deep"]),
    # -- 5. no partial output after a failure -------------------------------------------------------------
    Case("r4-bench-disk-full-at-png", B + ["--out", "{ws}/b"], setup=both(
        earlier("bench/bench.json", "bench/bench.csv", "bench/bench.png"),
        lambda env: shutil.copytree(env.ws / "bench", env.ws / "b"), fail_write_of("bench.png")),
         error="cannot write .*bench.png: no space left"),
    Case("r4-bench-disk-full-at-png-new-folder", B + ["--out", "{ws}/newb"], setup=fail_write_of("bench.png"),
         error="no space left"),
    Case("r4-triton-disk-full-no-version-folder", ["deploy", "triton", "{ws}/m.onnx", "--cache", "{ws}/m.calib.cache",
                                                   "-o", "{ws}/repo"], setup=fail_write_of("model.onnx"),
         error="cannot write .*model.onnx: no space left"),
    # -- 6. fields the schema did not cover, malformed build reports: one line ----------------------------
    Case("r4-sidecar-batch-axis-text", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/side-baxis.cache", "-o",
                                        "{ws}/q.onnx"], error="'model.inputs\\[0\\].batch_axis' must be an integer"),
    Case("r4-sidecar-data-kind-list", ["deploy", "deepstream", "{ws}/m.onnx", "--cache", "{ws}/side-datakind.cache",
                                       "-o", "{ws}/ds.txt"], error="'data.kind' must be a string"),
    Case("r4-sidecar-newer-format", ["quantize", "{ws}/m.onnx", "--cache", "{ws}/side-newer.cache", "-o",
                                     "{ws}/q.onnx"], code=0, changes=["q.onnx"], err=["format_version 99, newer"]),
    *[Case(f"r4-build-report-{stem}", ["deploy", "triton", f"{{ws}}/{stem}.engine", "--cache", "{ws}/m.calib.cache",
                                       "-o", "{ws}/repo"], error=words)
      for stem, words in (("e-model-int", "'model.file' must be a string, found an integer"),
                          ("e-profile-text", "'profile.x.min' must be a list, found a string"),
                          ("e-gpu-list", "'gpu' must be an object, found a list"))],
    # -- info ---------------------------------------------------------------------------------------------
    Case("info-reports-and-exits-0", ["info"], code=0, out=["TensorRT", "not available"], marks=(no_trt,)),
    Case("info-require-exits-2", ["info", "--require"], error="not usable here", marks=(no_trt,)),
]


#: A case that runs longer than this hangs (a FIFO read waits for a writer forever): it fails instead.
HANG_LIMIT_S = 120


class Hung(BaseException):
    pass


@contextlib.contextmanager
def _no_hang(seconds: int):
    def hung(signum, frame):
        raise Hung(f"the command hung for {seconds} s")
    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=list(c.marks)) for c in CASES])
def test_bad_input(case: Case, template, tmp_path, capfd, monkeypatch):
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    env = Env(ws, monkeypatch)
    try:
        if case.setup:
            case.setup(env)
        before = _snapshot(ws)
        argv = [a.replace("{ws}", str(ws)) for a in case.argv]
        if case.cwd:
            monkeypatch.chdir(ws)
        capfd.readouterr()
        with _no_hang(HANG_LIMIT_S):
            code = main(argv)
    except SystemExit as exc:  # argparse refusals
        code = exc.code
    finally:
        captured = capfd.readouterr()
        after = _snapshot(ws)
        env.close()
    out, err = captured.out, captured.err
    flat_out, flat_err = " ".join(out.split()), " ".join(err.split())
    assert "Traceback" not in out + err, err
    assert code == case.code, f"exit {code}, expected {case.code}\nstdout: {out}\nstderr: {err}"
    errors = [line for line in err.splitlines() if re.match(r"trtq \w+( \w+)?: (error:|interrupted)", line)]
    assert "onnxruntime:" not in err and "site-packages" not in err, err  # only trtq's own words
    if case.error:
        assert len(errors) == 1, err
        assert re.search(case.error, errors[0]), errors[0]
    else:
        assert not errors, err
    if "-q" in case.argv:  # quiet: nothing on stdout (warnings go to stderr)
        assert not out.strip(), out
    for words in case.out:
        assert words in flat_out, out
    for words in case.err:
        assert words in flat_err, err
    # nothing half-written, no temporary or probe file, no folder created by a failure
    assert not [k for k in after if re.search(r"\.(tmp|probe)$", k) and not (case.allow_temp and k in before)], \
        sorted(after)
    allowed = [pattern for pattern in case.changes]
    if case.argv[0] == "calibrate" and case.code == 0 and "--equalize" not in case.argv:
        allowed.append("*.equalized.onnx")  # auto's equalization trial writes the rewrite it keeps beside the model

    def may_change(rel: str) -> bool:
        from fnmatch import fnmatch

        return any(fnmatch(rel, pattern) for pattern in allowed)

    lost = [rel for rel, entry in before.items() if after.get(rel) != entry and not may_change(rel)]
    assert not lost, f"inputs changed or removed: {lost}"
    created = [rel for rel in after if rel not in before and not may_change(rel)]
    assert not created, f"unexpected new files or folders: {created}"
    if case.code != 0:
        assert not [rel for rel in after if rel not in before], "a failure left files behind"
    if case.check:
        case.check(ws)
    if case.changes and case.code == 0:
        assert any(may_change(rel) for rel in after), "none of the expected outputs is there"


@pytest.mark.parametrize("command", ["quickstart", "calibrate", "quantize", "eval", "bench", "export", "build",
                                     "info"])
def test_help_states_each_default_once(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for line in text.splitlines():
        assert line.lower().count("default") <= 1 or "(default: None)" not in line, line
        assert "(default: None)" not in line and not re.search(r"default[^()]*\).*\(default", line, re.I), line


@pytest.mark.parametrize("command", ["calibrate", "quantize", "build", "eval", "quickstart"])
def test_verdict_fixes_name_only_options_of_their_command(command):
    """A poor verdict's warning tells what to do with options the command that printed it has."""
    from trtq.cli import build_parser
    from trtq.report import verdict_fixes

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[command]
    known = {flag for action in sub._actions for flag in action.option_strings}
    named = set(re.findall(r"--[a-z][a-z-]*", verdict_fixes(command)))
    assert named and named <= known, named - known


def test_case_count_covers_every_listed_input():
    assert len(CASES) + 8 >= 100


# ---------------------------------------------------------------------------------------------
# Signals and standard output, in real processes

#: Runs trtq's CLI in a child process whose file writes pause for a minute after the data is written
#: (not the probe), so a signal arrives while a temporary file exists: "mid-write".
SLOW_WRITE = """
import os, sys, time
import trtq.fileio
real = os.fsync
def slow(fd):
    real(fd)
    if not os.readlink(f"/proc/self/fd/{fd}").endswith(".probe"):
        time.sleep(60)
trtq.fileio.os.fsync = slow
from trtq.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _child(argv: Sequence[str], cwd: Path, slow: bool = True) -> subprocess.Popen:
    import sys

    code = SLOW_WRITE if slow else "import sys\nfrom trtq.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for_temp(ws: Path, child: subprocess.Popen, limit_s: float = 120.0) -> List[Path]:
    import time

    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        temps = [p for p in ws.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        if any(t.stat().st_size > 0 for t in temps):  # (a temporary file is empty until its first bytes)
            return temps
        if child.poll() is not None:
            raise AssertionError(f"the command ended (exit {child.returncode}) before writing: {child.stderr.read()}")
        time.sleep(0.05)
    child.kill()
    raise AssertionError("no temporary file appeared")


SIGNAL_RUNS = {
    "calibrate": (["calibrate", "m.onnx", "--calib", "calib", "-o", "m.calib.cache"],
                  ["m.calib.cache", "m.calib.cache.json"]),
    "quantize": (["quantize", "m.onnx", "--cache", "m.calib.cache", "-o", "m.int8.onnx"], ["m.int8.onnx"]),
}


@pytest.mark.parametrize("command,signame", [("calibrate", "SIGTERM"), ("calibrate", "SIGHUP"),
                                             ("quantize", "SIGTERM"), ("quantize", "SIGINT")])
def test_signal_mid_write_leaves_nothing(command, signame, template, tmp_path):
    """A real ``trtq calibrate``/``quantize`` gets a signal while its temporary file exists: exit 128+N, one
    line, the earlier result byte-identical, no temporary file."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    argv, outputs = SIGNAL_RUNS[command]
    before = {name: (ws / name).read_bytes() for name in outputs}
    child = _child(argv, ws)
    temps = _wait_for_temp(ws, child)
    assert any(t.stat().st_size > 0 for t in temps)  # data written, not renamed yet
    number = getattr(signal, signame)
    child.send_signal(number)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 128 + number, err
    assert "Traceback" not in err and f"interrupted ({signame})" in err, err
    assert not [p.name for p in ws.iterdir() if p.name.endswith((".tmp", ".probe"))]
    assert {name: (ws / name).read_bytes() for name in outputs} == before


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_signal_during_triton_model_write_leaves_no_repository(signame, template, tmp_path):
    """``deploy triton`` gets a signal while its model.onnx temporary file exists (ONNX Runtime's threads are up by
    then, and may be the ones the signal is delivered to): exit 128+N, no temporary file, no empty NAME/1/."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    child = _child(["deploy", "triton", "m.onnx", "--cache", "m.calib.cache", "-o", "repo"], ws)
    import time

    deadline = time.monotonic() + 120
    while not list(ws.glob("repo/*/1/.*.tmp")):
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline, "no temporary file appeared"
        time.sleep(0.05)
    number = getattr(signal, signame)
    child.send_signal(number)
    out, err = child.communicate(timeout=60)
    assert child.returncode == 128 + number, err
    assert "Traceback" not in err and f"interrupted ({signame})" in err, err
    assert not (ws / "repo").exists(), sorted(str(p) for p in (ws / "repo").rglob("*"))


def test_deploy_library_refuses_what_its_target_does_not_accept(template, tmp_path):
    """The same limits as the command line, for library callers: nothing is written outside the repository."""
    from trtq.deploy.deepstream import write_config
    from trtq.deploy.triton import write_repository
    from trtq.errors import TrtqError

    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    before = _snapshot(tmp_path)
    for name in ("../escape", "/abs", ".."):
        with pytest.raises(TrtqError, match="is a path, not a model name"):
            write_repository(ws / "m.onnx", ws / "m.calib.cache", ws / "repo", name=name)
    with pytest.raises(TrtqError, match="--max-batch -1"):
        write_repository(ws / "m.onnx", ws / "m.calib.cache", ws / "repo", max_batch=-1)
    for size in (0, 5000):
        with pytest.raises(TrtqError, match="nvinfer accepts 1 to 1024"):
            write_config(ws / "m.onnx", ws / "img.cache", ws / "ds.txt", batch_size=size)
    assert _snapshot(tmp_path) == before


def test_killed_run_leftover_removed_by_next_run(template, tmp_path):
    """SIGKILL cannot be handled: its temporary file stays, and the next run removes it (and works)."""
    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    argv, outputs = SIGNAL_RUNS["quantize"]
    child = _child(argv, ws)
    temps = _wait_for_temp(ws, child)
    child.kill()
    child.communicate(timeout=60)
    assert all(t.exists() for t in temps)
    rerun = _child(argv, ws, slow=False)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert not [p.name for p in ws.iterdir() if p.name.endswith((".tmp", ".probe"))]


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full here")
def test_full_stdout_is_one_line(template, tmp_path):
    """``trtq ... > /dev/full``: one error line, exit 2, no traceback, nothing printed at interpreter exit."""
    import sys

    ws = tmp_path / "ws"
    shutil.copytree(template, ws, symlinks=True)
    with open("/dev/full", "w") as full:
        child = subprocess.run([sys.executable, "-m", "trtq", "quantize", "m.onnx", "--cache", "m.calib.cache", "-o",
                                "q.onnx"], cwd=ws, stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert child.returncode == 2, child.stderr
    lines = [line for line in child.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "standard output could not be written" in lines[0], child.stderr
