"""Atomic writes: nothing half-written, ordinary permissions, early checks."""

from __future__ import annotations

import os
import stat

import pytest

from trtq.errors import OutputError
from trtq.fileio import atomic_write, check_writable, write_bytes_atomic, write_files_atomic


def test_written_file_gets_umask_permissions_not_mkstemp_0600(tmp_path):
    path = write_bytes_atomic(tmp_path / "a.bin", b"x")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_exception_inside_write_leaves_old_file_and_no_temp(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(path) as handle:
            handle.write(b"new but incomplete")
            raise RuntimeError("interrupted")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]


def test_several_files_are_all_written(tmp_path):
    written = write_files_atomic({tmp_path / "a": b"1", tmp_path / "b": b"2"})
    assert [p.read_bytes() for p in written] == [b"1", b"2"]


def test_directory_as_output_is_refused(tmp_path):
    with pytest.raises(OutputError, match="is a directory"):
        check_writable(tmp_path)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_read_only_folder_is_refused_before_work(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(OutputError, match="permission denied"):
            check_writable(folder / "x.cache")
    finally:
        folder.chmod(0o700)


def test_output_under_a_file_is_refused(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create folder"):
        check_writable(blocker / "sub" / "x.cache")


def test_guard_refuses_inputs_through_links_and_foreign_files(tmp_path):
    from trtq.outputs import Output, guard_outputs

    model = tmp_path / "m.onnx"
    model.write_bytes(b"\x08\x08rest")
    (tmp_path / "alias").symlink_to(model)
    os.link(model, tmp_path / "hard")
    for name in ("m.onnx", "alias", "hard"):
        with pytest.raises(OutputError, match="would overwrite the model"):
            guard_outputs([Output(tmp_path / name, "onnx")], [("the model", model)])
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a trtq ONNX model; pass --force"):
        guard_outputs([Output(tmp_path / "notes.txt", "onnx")], [])
    assert guard_outputs([Output(tmp_path / "notes.txt", "onnx")], [], force=True)[0].startswith("replacing")
    (tmp_path / "old.onnx").write_bytes(b"\x08\x07rest")
    notes = guard_outputs([Output(tmp_path / "old.onnx", "onnx", default=True)], [])
    assert notes and "earlier result" in notes[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias", "hard", "m.onnx", "notes.txt", "old.onnx"]


def test_probe_leaves_no_folder_and_write_failure_keeps_the_old_file(tmp_path, monkeypatch):
    import errno

    import trtq.fileio as fileio

    check_writable(tmp_path / "a" / "b" / "x.cache")
    assert list(tmp_path.iterdir()) == []  # folders are made at write time only
    target = tmp_path / "x.cache"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.os, "fsync", full)
    with pytest.raises(OutputError, match="no space left on the device; the previous file"):
        write_bytes_atomic(target, b"new")
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.cache"]


def test_pseudo_filesystem_is_refused():
    with pytest.raises(OutputError, match="pseudo-filesystem"):
        check_writable("/proc/trtq-test.cache")


# -- temporary files of killed runs, regular files only -------------------------------------


def _dead_pid() -> int:
    import subprocess

    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_temps_of_dead_runs_are_removed_live_ones_kept(tmp_path):
    import time

    from trtq.fileio import LEGACY_TEMP_AGE_S, remove_stale_temps, temp_prefix

    target = tmp_path / "m.calib.cache"
    mine = temp_prefix(target)
    dead = tmp_path / (mine.replace(f"-{os.getpid()}-", f"-{_dead_pid()}-") + "abcd1234.tmp")
    live = tmp_path / (mine + "efgh5678.tmp")
    other_host = tmp_path / (".m.calib.cache.trtq-000000-1-ijkl9012.tmp")
    legacy_old = tmp_path / ".m.calib.cache.a1b2c3d4.tmp"
    legacy_new = tmp_path / ".m.calib.cache.e5f6g7h8.tmp"
    user_file = tmp_path / ".m.calib.cache.notes.tmp"   # not trtq's naming
    for path in (dead, live, other_host, legacy_old, legacy_new, user_file):
        path.write_bytes(b"x")
    old = time.time() - LEGACY_TEMP_AGE_S - 60
    os.utime(legacy_old, (old, old))
    removed = remove_stale_temps(tmp_path, target.name)
    assert sorted(p.name for p in removed) == sorted([dead.name, legacy_old.name])
    assert live.exists() and other_host.exists() and legacy_new.exists() and user_file.exists()


def test_write_names_temp_files_with_host_and_pid(tmp_path, monkeypatch):
    from trtq import fileio

    seen = []
    real = fileio.tempfile.mkstemp

    def spy(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        seen.append(os.path.basename(name))
        return fd, name
    monkeypatch.setattr(fileio.tempfile, "mkstemp", spy)
    fileio.write_bytes_atomic(tmp_path / "a.bin", b"1")
    assert seen and fileio._TEMP_NAME.match(seen[0]) and f"-{os.getpid()}-" in seen[0]


def test_reading_a_fifo_is_refused_by_name(tmp_path):
    from trtq.errors import DataError
    from trtq.fileio import check_regular

    os.mkfifo(tmp_path / "x.npy")
    with pytest.raises(DataError, match="x.npy is a FIFO"):
        check_regular(tmp_path / "x.npy", str(tmp_path / "x.npy"), DataError)
    os.symlink(tmp_path / "gone", tmp_path / "dangling.npy")
    with pytest.raises(DataError, match="symlink to .*gone, which does not exist"):
        check_regular(tmp_path / "dangling.npy", "dangling.npy", DataError)


def test_an_interrupted_pair_write_leaves_the_old_pair_and_no_temp(tmp_path, monkeypatch):
    from trtq import fileio

    first, second = tmp_path / "c", tmp_path / "c.json"
    first.write_bytes(b"old c")
    second.write_bytes(b"old json")
    real = fileio.os.fsync
    calls = []

    def interrupted(fd):
        real(fd)
        calls.append(fd)
        if len(calls) == 2:
            raise KeyboardInterrupt
    monkeypatch.setattr(fileio.os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fileio.write_files_atomic({second: b"new json", first: b"new c"})
    assert first.read_bytes() == b"old c" and second.read_bytes() == b"old json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "c.json"]


def test_signal_taken_by_another_thread_is_still_held_back(tmp_path):
    """The kernel hands a process's signal to a thread that does not block it (ONNX Runtime's, a reader's);
    Python then runs the handler in the main thread. Inside signals_deferred it must wait for the block's end."""
    import signal
    import threading
    import time

    from trtq.fileio import signals_deferred

    seen = []

    def handler(signum, frame):
        seen.append("handler")
        raise KeyboardInterrupt

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)  # started before the block: SIGTERM not blocked there
    worker.start()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with signals_deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(200):  # bytecodes and sleeps: where Python runs a pending handler
                    time.sleep(0.001)
                seen.append("block finished")
        assert seen == ["block finished", "handler"]
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
        worker.join()


def test_failed_write_removes_the_folders_it_created(tmp_path, monkeypatch):
    """A repository's NAME/1/ made for a write that then fails is removed again; folders that were there stay."""
    import errno

    import trtq.fileio

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "repo").mkdir()
    monkeypatch.setattr(trtq.fileio.os, "fsync", full)
    with pytest.raises(OutputError, match="no space left"):
        write_files_atomic({tmp_path / "repo" / "m" / "1" / "model.onnx": b"x", tmp_path / "repo" / "m" / "c": b"y"})
    with pytest.raises(OutputError, match="no space left"):
        write_bytes_atomic(tmp_path / "repo" / "n" / "1" / "model.onnx", b"x")
    assert [p.name for p in tmp_path.rglob("*")] == ["repo"]


def test_every_output_the_guard_checks_has_a_kind(tmp_path):
    from trtq.outputs import Output, guard_outputs

    with pytest.raises(ValueError, match="has no kind"):
        guard_outputs([Output(tmp_path / "x.onnx", None)], [])
