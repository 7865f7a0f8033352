"""Progress reporting: library code calls a callback, the CLI draws a bar.

A callback receives ``(done, total)`` where ``total`` may be ``None`` when unknown.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Callable, Iterator, Optional

ProgressCallback = Callable[[int, Optional[int]], None]


def no_progress(done: int, total: Optional[int]) -> None:
    """The default callback: report nothing."""


@contextlib.contextmanager
def progress_bar(description: str, unit: str = "samples", enabled: Optional[bool] = None) -> Iterator[ProgressCallback]:
    """A rich progress bar on stderr, exposed as a :data:`ProgressCallback`."""
    if enabled is None:
        enabled = sys.stderr.isatty()
    if not enabled:
        yield no_progress
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as bar:
        # hidden until the first report, so no "0/?" bar sits there while models load
        task = bar.add_task(description, total=None, visible=False)

        def update(done: int, total: Optional[int]) -> None:
            bar.update(task, completed=done, total=total, visible=True)

        yield update
