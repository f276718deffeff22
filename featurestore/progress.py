"""Progress bars for long work (ingest, backfill, training sets). Silent unless enabled, so
library calls stay quiet and the CLI shows bars."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


class Reporter:
    def __init__(self, enabled: bool = False, console: Console | None = None):
        self.enabled = enabled
        self.console = console or Console(stderr=True)

    @contextmanager
    def task(self, description: str, total: int | None) -> Iterator[Step]:
        """A bar of `total` steps, or a spinner-like bar when the total is unknown (None)."""
        if not self.enabled:
            yield Step(None, None)
            return
        count = TextColumn("{task.completed}/{task.total}" if total is not None else "")
        with Progress(TextColumn("{task.description}"), BarColumn(), count, TimeElapsedColumn(),
                      console=self.console, transient=False) as bar:
            yield Step(bar, bar.add_task(description, total=total))


class Step:
    def __init__(self, bar: Progress | None, task_id: object):
        self._bar, self._task = bar, task_id

    def advance(self, description: str | None = None) -> None:
        if self._bar is not None:
            self._bar.update(self._task, advance=1, description=description)  # type: ignore[arg-type]


QUIET = Reporter(False)
