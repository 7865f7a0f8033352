"""What each command reads, for :func:`trtq.fileio.guard_outputs` (the one output guard).

    notes = guard(outputs, model_reads(args.model) + data_reads(args.calib), force=args.force)
    ... the work ...
    print_notes(notes)          # "replaces out/model.int8.onnx (an earlier result; ...)"
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..graph.model import model_reads
from ..outputs import Output, guard_outputs

Reads = List[Tuple[str, Path]]

__all__ = ["Output", "guard", "model_reads", "data_reads", "cache_reads", "file_reads", "print_notes"]


def guard(outputs: Sequence[Output], reads: Reads, force: bool = False) -> List[str]:
    """Check the outputs against the reads before any work (raises OutputError); notes for the summary."""
    return guard_outputs(outputs, reads, force=force)




def file_reads(path: Optional[str], what: str) -> Reads:
    return [(what, Path(path))] if path else []


def metric_reads(spec: Optional[str]) -> Reads:
    """The Python file of ``--metric FILE.py:NAME``."""
    if not spec:
        return []
    return [("the --metric file", Path(str(spec).rpartition(":")[0] or str(spec)))]


def cache_reads(path: Optional[str]) -> Reads:
    """A calibration cache and its sidecar."""
    if not path:
        return []
    from ..cache import sidecar_path

    return [("the calibration cache", Path(path)), ("the cache's sidecar", sidecar_path(path))]


def data_reads(path: Optional[str], what: str = "a data file") -> Reads:
    """Every file a data path can make the command read: the loader script, the file, or the folder's data files."""
    if not path:
        return []
    from ..data import data_files

    return [(what if not str(p).endswith(".py") else "the loader script", p) for p in data_files(str(path))]


def print_notes(notes: Sequence[str]) -> None:
    if not notes:
        return
    from ..report import report_console

    console = report_console()
    for note in notes:
        console.print(f"  note: {note}", markup=False, highlight=False, soft_wrap=True)
