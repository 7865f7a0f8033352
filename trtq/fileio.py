"""Every file trtq writes goes through here: the output guard, the write probe, atomic writes.

Files are sacred (docs/design.md): before any work, :func:`guard_outputs` refuses an output
that is a file the command reads (through symlinks and hard links), an existing file
that is not a trtq artifact of the same kind (unless ``force``), and a place that cannot
hold the file (a folder path, a device, a pseudo-filesystem, a read-only or full disk:
:func:`check_writable` writes a small probe file there). The writes themselves go to a
temporary file that is renamed into place, and a write that fails (a disk that filled
up during the work) is one :class:`~trtq.errors.OutputError` with the path and the
reason; the previous file stays as it was.

No folder is created before the write itself: a command that fails leaves no empty
``engines/`` or ``bench/`` behind.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator, List, Optional, Sequence, Tuple, Union

from .errors import OutputError

PathLike = Union[str, "os.PathLike[str]"]

#: Filesystems that hold no ordinary files (writes there fail or mean something else).
PSEUDO_FILESYSTEMS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore",
    "bpf", "configfs", "fusectl", "mqueue", "efivarfs", "binfmt_misc", "autofs", "nsfs", "selinuxfs", "rpc_pipefs",
})

#: Bytes the write probe writes (and removes): enough to meet a full disk before the work, not after.
PROBE_BYTES = 4096

_REASONS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EISDIR: "it is a folder",
    errno.ENAMETOOLONG: "file name too long",
    errno.EFBIG: "file too large for this file system",
}


def os_reason(exc: OSError) -> str:
    """A short human reason for a failed write (``ENOSPC`` -> ``"no space left on the device"``)."""
    return _REASONS.get(exc.errno, exc.strerror or type(exc).__name__)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp: str, target: Path) -> None:
    """Give the temporary file ordinary permissions (mkstemp makes it 0600), then rename it."""
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, target)


# ---------------------------------------------------------------------------------------------
# Temporary files: trtq's own naming, and the stale ones of a run that was killed


def _host_tag() -> str:
    import hashlib
    import socket

    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:6]


def temp_prefix(target: Path) -> str:
    """``.NAME.trtq-HOST-PID-`` : the prefix of every temporary and probe file trtq makes beside ``target``.

    The host and process id let a later run tell a temporary file of a dead run (removed,
    see :func:`remove_stale_temps`) from one a running trtq is still writing (kept).
    """
    return f".{target.name}.trtq-{_host_tag()}-{os.getpid()}-"


_TEMP_NAME = re.compile(r"^\..+\.trtq-(?P<host>[0-9a-f]{6})-(?P<pid>\d+)-[A-Za-z0-9_]+\.(tmp|probe)$")
#: A temporary file of trtq before 0.x's naming (no process id): removed once this old.
_LEGACY_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.(tmp|probe)$")
LEGACY_TEMP_AGE_S = 24 * 3600


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):  # another user's process: alive
        return True
    return True


def remove_stale_temps(folder: PathLike, name: Optional[str] = None) -> List[Path]:
    """Remove the temporary files that killed trtq runs left in ``folder`` (for ``name`` only, if given).

    A file of trtq's naming (:func:`temp_prefix`) is removed when it was made on this host by
    a process that no longer runs; one of the older naming (no process id) only when it is
    a day old. Files of running trtq processes, and every other file, are left alone.
    """
    removed: List[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    host = _host_tag()
    now = None
    for entry in entries:
        if not entry.name.startswith(".") or (name is not None and not entry.name.startswith(f".{name}.")):
            continue
        match = _TEMP_NAME.match(entry.name)
        stale = False
        if match:
            stale = match.group("host") == host and not _alive(int(match.group("pid")))
        elif _LEGACY_TEMP.match(entry.name):
            import time

            now = now or time.time()
            with contextlib.suppress(OSError):
                stale = now - entry.stat(follow_symlinks=False).st_mtime > LEGACY_TEMP_AGE_S
        if stale and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


# ---------------------------------------------------------------------------------------------
# Files that belong together: one folder lock, and no signal between their renames


@contextlib.contextmanager
def folder_lock(folder: PathLike, shared: bool = False) -> Iterator[None]:
    """Hold an advisory lock on ``folder`` (``flock`` on the folder itself: no lock file is left behind).

    Writers of a file pair (a cache and its sidecar) hold it exclusively while they rename;
    readers of the pair hold it shared while they read both. Where the file system has no
    ``flock`` (some network mounts) this is a no-op.
    """
    fd = None
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        fd = None
    try:
        if fd is not None:
            import fcntl

            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


#: The signals a run ends on (see :mod:`trtq.cli`), held back while files are renamed.
DEFERRED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold back SIGINT, SIGTERM and SIGHUP for a few file operations; one that arrives meanwhile is acted on
    right after, so a temporary file is never created without its name being known, and a pair of files is
    renamed both or neither.

    Blocking the signals in the calling thread is not enough: the kernel hands a process's
    signal to any thread that does not block it (ONNX Runtime's, the histogram worker, image
    readers), and Python then runs the handler in the main thread anyway, in the middle of the
    block. So the Python-level handlers are replaced by one that only records the signal, and
    the recorded signal is handed to the previous handler at the end. Python runs signal
    handlers only in the main thread; elsewhere this does nothing.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    numbers = [getattr(signal, name) for name in DEFERRED_SIGNALS if hasattr(signal, name)]
    arrived: List[int] = []

    def record(signum, frame) -> None:
        arrived.append(signum)

    previous = {}
    for number in numbers:
        handler = signal.getsignal(number)
        if callable(handler):
            previous[number] = signal.signal(number, record)
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, numbers) if hasattr(signal, "pthread_sigmask") else None
    try:
        yield
    finally:
        if blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # runs ``record`` for a signal held back
        for number, handler in previous.items():
            signal.signal(number, handler)
        if arrived and callable(previous.get(arrived[0])):
            previous[arrived[0]](arrived[0], None)


# ---------------------------------------------------------------------------------------------
# What a file to read must be


def file_kind(mode: int) -> str:
    """What a non-regular file is, for messages."""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def check_regular(path: PathLike, shown: str, error: type, what_to_do: str = "give a regular file") -> None:
    """Refuse, by name, an input that is not a regular file before it is opened: a FIFO (reading it waits for
    a writer forever), a socket, a device, a dangling symlink. ``error``: the TrtqError class to raise."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise error(f"{shown} is a symlink to {os.readlink(path)}, which does not exist; fix or remove the "
                        "link") from None
        raise error(f"{shown} does not exist (removed while trtq was reading?)") from None
    except OSError as exc:
        raise error(f"{shown} cannot be read ({os_reason(exc)})") from None
    if not stat.S_ISREG(st.st_mode):
        raise error(f"{shown} is {file_kind(st.st_mode)}, not a regular file; trtq reads only regular files: "
                    f"{what_to_do}")


#: The largest text config trtq reads (a Triton config.pbtxt, a DeepStream key file): real ones are a few kB.
MAX_CONFIG_BYTES = 4 << 20


def read_config_text(path: PathLike, what: str, error: type, max_bytes: int = MAX_CONFIG_BYTES) -> str:
    """The text of a config file trtq reads, checked like every input: a regular file (a folder, FIFO or device
    is refused by name, not read), at most ``max_bytes``, UTF-8 (a byte-order mark some editors write is
    dropped). ``what`` names it in the one ``error`` line."""
    shown = f"{what} {path}"
    if not os.path.lexists(path):
        raise error(f"{shown} does not exist")
    check_regular(path, shown, error, "give the config file itself")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise error(f"{shown} is {os.path.getsize(path) / (1 << 20):.1f} MiB, more than the "
                    f"{max_bytes >> 20} MiB a config can be; is it the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise error(f"{shown} is not UTF-8 text (byte {exc.start} is 0x{data[exc.start]:02x}); is it the right "
                    "file?") from None


# ---------------------------------------------------------------------------------------------
# Where a file can go


def _mounts() -> List[Tuple[str, str]]:
    """(mount point, filesystem type) of every mount, longest mount point first ([] where unknown)."""
    entries = []
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                point = fields[4].encode().decode("unicode_escape")  # \040 for spaces
                entries.append((point, right.split()[0]))
    except OSError:
        return []
    entries.sort(key=lambda e: len(e[0]), reverse=True)
    return entries


def filesystem_of(path: PathLike) -> Tuple[str, str]:
    """(mount point, filesystem type) holding ``path`` (resolved), or ``("", "")`` where unknown."""
    real = os.path.realpath(path)
    for point, kind in _mounts():
        if real == point or real.startswith(point.rstrip("/") + "/"):
            return point, kind
    return "", ""


def _nearest_existing(path: Path) -> Path:
    current = path
    while not os.path.lexists(current) and current != current.parent:
        current = current.parent
    return current


def _probe(folder: Path, target: Path) -> None:
    """Create the missing folders up to ``folder``, write and remove a probe file, remove the folders again."""
    created: List[Path] = []
    missing = []
    current = folder
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    try:
        for part in reversed(missing):
            os.mkdir(part)
            created.append(part)
        with signals_deferred():  # the probe's name is known before a signal can end the run
            fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".probe", dir=folder)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(b"\0" * PROBE_BYTES)
                handle.flush()
                os.fsync(handle.fileno())
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    except OSError as exc:
        raise OutputError(f"cannot write {target}: {os_reason(exc)}; choose another output path") from None
    finally:
        for part in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(part)


def check_writable(path: PathLike, probe: bool = True) -> Path:
    """Fail early (before hours of work) if ``path`` cannot be created or replaced.

    Refuses a folder, an existing device/pipe/socket, a path under a file or under a
    pseudo-filesystem (``/proc``, ``/sys``), and, with ``probe``, a place where a small
    probe file cannot be written (read-only, full, permission denied). Creates nothing
    that stays: missing folders are made at write time.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"output path {target} is a directory; give a file name")
    if target.exists():
        if not stat.S_ISREG(target.stat().st_mode):
            raise OutputError(f"output path {target} is not a regular file (a device, pipe or socket); "
                              "choose another output path")
        if not os.access(target, os.W_OK):
            raise OutputError(f"cannot overwrite {target}: permission denied")
    parent = target.parent if str(target.parent) else Path(".")
    existing = _nearest_existing(parent)
    if not existing.is_dir():
        raise OutputError(f"cannot create folder {parent}: {existing} is a file, not a folder; "
                          "choose another output path")
    point, kind = filesystem_of(existing)
    if kind in PSEUDO_FILESYSTEMS:
        raise OutputError(f"cannot write {target}: {point} is a {kind} pseudo-filesystem that holds no ordinary "
                          "files; choose another output path")
    if probe or (existing == parent and not os.access(parent, os.W_OK | os.X_OK)):
        _probe(parent, target)  # the real reason: read-only, full, permission denied...
    return target


def make_parent(path: PathLike, created: Optional[List[Path]] = None) -> Path:
    """Create the folder ``path`` goes into (at write time), as an :class:`OutputError` when impossible.

    ``created``: a list the new folders are appended to (outermost first), so that a write
    that fails can remove them again (:func:`remove_folders`).
    """
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    missing = []
    current = parent
    while not os.path.lexists(current) and current != current.parent:
        missing.append(current)
        current = current.parent
    try:
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):  # another writer made it meanwhile: not ours to remove
                os.mkdir(folder)
                if created is not None:
                    created.append(folder)
        if not parent.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(parent))
    except OSError as exc:
        raise OutputError(f"cannot create folder {parent} for {target}: {os_reason(exc)}") from None
    return target


def remove_folders(created: Sequence[Path]) -> None:
    """Remove the folders :func:`make_parent` created (innermost first) where they are still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            os.rmdir(folder)


# ---------------------------------------------------------------------------------------------
# The output guard


# ---------------------------------------------------------------------------------------------
# Atomic writes


@contextlib.contextmanager
def atomic_write(path: PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write to a temporary file beside ``path`` and rename it into place on success.

    A write that fails (``ENOSPC``, ``EROFS``...) raises :class:`OutputError` naming the
    path; the temporary file is removed and an existing file at ``path`` is untouched. So
    it is when the run is interrupted (Ctrl-C, SIGTERM, SIGHUP: see :mod:`trtq.cli`).
    """
    target = check_writable(path, probe=False)
    created: List[Path] = []
    make_parent(target, created)
    remove_stale_temps(target.parent, target.name)
    tmp: Optional[str] = None
    try:
        with signals_deferred():  # a signal cannot fall between creating the file and knowing its name
            try:
                fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent or ".")
            except OSError as exc:
                remove_folders(created)
                raise OutputError(f"cannot write {target}: {os_reason(exc)}") from None
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        with signals_deferred():
            _publish(tmp, target)
            tmp = None
    except OSError as exc:
        _discard(tmp)
        remove_folders(created)
        raise OutputError(f"cannot write {target}: {os_reason(exc)}; the previous file (if any) is unchanged") \
            from None
    except BaseException:
        _discard(tmp)
        remove_folders(created)
        raise


def _discard(tmp: Optional[str]) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def write_files_atomic(files: "dict[PathLike, bytes]") -> list:
    """Write several files that belong together (a cache and its sidecar), in the order given.

    What is guaranteed:

    - every file is fully written to a temporary file before the first rename, and the
      renames run with SIGINT/SIGTERM/SIGHUP deferred (:func:`signals_deferred`): an
      interruption leaves either all old files or all new ones, and no temporary file;
    - the renames run under an exclusive :func:`folder_lock` of each folder, and trtq's
      readers of a pair (:func:`trtq.cache.read_cache`) hold it shared: two trtq runs writing
      the same pair at once leave one run's pair whole (the later one), never one run's
      cache beside the other's sidecar, and a trtq reader never sees half a swap;
    - a write that fails removes the folders it created (no empty ``NAME/1/`` of a Triton
      repository is left behind);
    - what no rename order can prevent (a SIGKILL or power loss between two renames, or a
      reader other than trtq looking at that instant) leaves the first file new and the
      rest old; callers put the sidecar first, so the cache on disk is never newer than its
      sidecar, and trtq refuses such a pair (the amax records disagree) rather than using it.
    """
    targets = [check_writable(path, probe=False) for path in files]
    created: List[Path] = []
    pending = []
    current = targets[0] if targets else None
    folders = sorted({os.path.abspath(t.parent if str(t.parent) else ".") for t in targets})
    try:
        for target in targets:
            make_parent(target, created)
            remove_stale_temps(target.parent, target.name)
        for target, data in zip(targets, files.values()):
            current = target
            with signals_deferred():  # recorded in pending before any signal can interrupt
                fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target), suffix=".tmp", dir=target.parent or ".")
                pending.append(tmp)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        with contextlib.ExitStack() as locks, signals_deferred():
            for folder in folders:
                locks.enter_context(folder_lock(folder))
            for target, tmp in zip(targets, pending):
                current = target
                _publish(tmp, target)
    except OSError as exc:
        for tmp in pending:
            _discard(tmp)
        remove_folders(created)
        raise OutputError(f"cannot write {current}: {os_reason(exc)}; the previous file (if any) is unchanged") \
            from None
    except BaseException:
        for tmp in pending:
            _discard(tmp)
        remove_folders(created)
        raise
    return targets


def write_bytes_atomic(path: PathLike, data: bytes) -> Path:
    with atomic_write(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str) -> Path:
    with atomic_write(path, "w") as handle:
        handle.write(text)
    return Path(path)
