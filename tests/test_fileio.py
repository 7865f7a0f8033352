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
