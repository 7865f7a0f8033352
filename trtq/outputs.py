"""The output guard: every file a command writes is checked before any work starts (never onto an input, never over a file that is not trtq's own kind) and named in messages by its kind."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from .errors import OutputError
from .fileio import check_writable, remove_stale_temps

PathLike = Union[str, "os.PathLike[str]"]


#: What each kind of trtq output is called in messages.
KIND_NAMES = {
    "cache": "calibration cache", "sidecar": "calibration sidecar", "onnx": "ONNX model",
    "engine": "TensorRT engine", "build-report": "build report", "bench-json": "bench report",
    "bench-csv": "bench CSV", "png": "PNG plot", "eval-json": "eval report",
    "deploy-config": "deployment config", "triton-model": "model of a Triton repository",
}


def _head(path: Path, size: int = 256) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _json_format(path: Path) -> Optional[dict]:
    """The JSON object at ``path`` (bounded size and depth: :mod:`trtq.jsonio`), None when it is not one."""
    from .jsonio import try_read_json

    return try_read_json(path, lambda data: isinstance(data, dict))


def is_artifact(path: PathLike, kind: str) -> bool:
    """Whether the existing file ``path`` is a trtq output of ``kind`` (so replacing it loses nothing foreign).

    An empty file is any kind. The checks read a few bytes (JSON files: the document).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            return True
        head = _head(path)
        if kind == "cache":
            return re.match(rb"TRT-\d+-[A-Za-z0-9_]+\r?\n", head) is not None
        if kind == "onnx":  # ModelProto starts with field 1 (ir_version, a small varint)
            return len(head) >= 2 and head[0] == 0x08 and 0 < head[1] < 64
        if kind == "png":
            return head.startswith(b"\x89PNG\r\n\x1a\n")
        if kind == "deploy-config":  # Triton config.pbtxt / DeepStream key file: trtq deploy's first line
            return head.startswith(b"# written by trtq deploy")
        if kind == "bench-csv":
            return head.startswith(b"model,precision,backend,batch_size")
        if kind == "triton-model":  # NAME/1/model.plan: trtq's when NAME/config.pbtxt is trtq deploy's
            config = path.parent.parent / "config.pbtxt"
            return config.is_file() and _head(config).startswith(b"# written by trtq deploy")
        if kind == "engine":  # trtq writes a build report beside every engine
            report = _json_format(Path(str(path) + ".json")) if Path(str(path) + ".json").exists() else None
            return bool(report) and report.get("format") == "trtq-build-report"
        data = _json_format(path)
        if data is None:
            return False
        if kind == "sidecar":
            return data.get("format") == "trtq-calibration-sidecar"
        if kind == "build-report":
            return data.get("format") == "trtq-build-report"
        if kind == "bench-json":
            return data.get("format") == "trtq-bench"
        if kind == "eval-json":
            return {"reference", "candidate", "outputs"} <= set(data)
    except OSError:
        return False
    raise ValueError(f"unknown output kind {kind!r}")


@dataclass
class Output:
    """One file a command will write."""

    path: Path
    kind: Optional[str]          # a KIND_NAMES key (what an existing file must be to be replaced); None: in_out only
    option: str = "-o"           # how the user names it, for messages
    default: bool = False        # chosen by trtq (the user gave no path)
    in_out: bool = False         # read and then rewritten on purpose (a TensorRT timing cache)
    fixed: bool = False          # a path trtq derives (beside the model): the user cannot choose another

    def __post_init__(self):
        self.path = Path(self.path)


def _identity(path: Path) -> Optional[Tuple[int, int]]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def guard_outputs(outputs: Sequence[Output], reads: Iterable[Tuple[str, PathLike]] = (), *,
                  force: bool = False, probe: bool = True) -> List[str]:
    """Check every output before any work; returns notes for the summary (earlier results replaced).

    ``reads``: ``(what, path)`` of every file the command reads (``"the model"``,
    ``"a calibration data file"``, ...). An output that is one of them, by path after
    resolving symlinks or by inode (a hard link), is refused. So is an existing output
    that is not a trtq file of its kind, unless ``force``.
    """
    notes: List[str] = []
    read_list = [(what, Path(p)) for what, p in reads if p is not None and str(p)]
    by_real = {}
    by_inode = {}
    for what, path in read_list:
        by_real.setdefault(os.path.realpath(path), (what, path))
        ident = _identity(path)
        if ident is not None:
            by_inode.setdefault(ident, (what, path))
    seen = {}
    for out in outputs:
        if out.kind is None and not out.in_out:  # a bug in trtq: every output it replaces has a kind
            raise ValueError(f"output {out.path} ({out.option}) has no kind; give one of {sorted(KIND_NAMES)}")
        real = os.path.realpath(out.path)
        if real in seen:
            raise OutputError(f"{seen[real].option} {seen[real].path} and {out.option} {out.path} name the same file; "
                              "give them different paths")
        seen[real] = out
        if not out.in_out:
            hit = by_real.get(real) or by_inode.get(_identity(out.path) or (-1, -1))
            if hit is not None:
                what, source = hit
                same = "" if os.path.abspath(source) == os.path.abspath(out.path) else \
                    " (the same file through a link)"
                raise OutputError(f"{out.option} {out.path} would overwrite {what} {source}{same}, which this "
                                  "command reads; choose another output path")
        check_writable(out.path, probe=False)
        if out.kind is not None and os.path.isfile(out.path) and not out.in_out:
            name = KIND_NAMES[out.kind]
            if not is_artifact(out.path, out.kind):
                if not force:
                    where = "the default output path " if out.default else ""
                    other = f"move it away ({out.option} writes it there)" if out.fixed else \
                        f"choose another path with {out.option}"
                    raise OutputError(f"{where}{out.path} exists and is not a trtq {name}; pass --force to replace "
                                      f"it, or {other}")
                notes.append(f"replacing {out.path}, which is not a trtq {name} (--force)")
            elif out.default:
                notes.append(f"replaces {out.path} (an earlier result; give {out.option} to keep it)")
    for out in outputs:  # what an earlier, killed run left beside these outputs
        remove_stale_temps(out.path.parent if str(out.path.parent) else ".", out.path.name)
    if probe:
        probed = set()
        for out in outputs:
            parent = os.path.abspath(out.path.parent if str(out.path.parent) else ".")
            if parent not in probed:
                probed.add(parent)
                check_writable(out.path, probe=True)
    return notes
