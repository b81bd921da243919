"""A progress bar for batches: files done, input MB/s and time left (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from kmq.scale.manifest import ManifestRow

__all__ = ["BatchProgress"]


class _ThroughputColumn(ProgressColumn):
    """Input megabytes per second since the bar started."""

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed or 0.0
        done = float(task.fields.get("bytes_done", 0))
        rate = done / elapsed / 1e6 if elapsed > 0 else 0.0
        return Text(f"{rate:.3g} MB/s", style="progress.data.speed")


class BatchProgress:
    """Render a batch's progress; pass the object as ``progress=`` of :func:`kmq.scale.run_batch`.

    Parameters
    ----------
    console : rich.console.Console, optional
        Where to draw (default: standard error, so standard output keeps the summary).
    """

    def __init__(self, console: Any = None) -> None:
        self.console = console or Console(stderr=True)
        self._progress = Progress(
            TextColumn("[bold]kmq batch"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("files"),
            _ThroughputColumn(),
            TextColumn("[red]{task.fields[failed]} failed"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self._task: Any = None

    def __call__(self, total_files: int, total_bytes: int, rows: list[ManifestRow]) -> None:
        if self._task is None:
            self._progress.start()
            self._task = self._progress.add_task("batch", total=total_files, bytes_done=0, failed=0)
        task = self._progress.tasks[self._task]
        self._progress.update(
            self._task,
            advance=len(rows),
            bytes_done=task.fields["bytes_done"] + sum(row.bytes_in for row in rows),
            failed=task.fields["failed"] + sum(1 for row in rows if not row.succeeded),
        )

    def close(self) -> None:
        """Stop drawing (the last state stays on screen)."""
        if self._task is not None:
            self._progress.stop()

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
