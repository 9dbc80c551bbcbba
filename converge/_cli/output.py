"""What the commands print: rich tables, JSON for scripts, progress on stderr.

Colour only on a terminal, and never when ``NO_COLOR`` is set (rich reads it). Tables
and JSON go to stdout, progress and messages to stderr, so ``--json`` output pipes
cleanly. When stderr is not a terminal, progress is plain lines instead of a bar.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import orjson
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

__all__ = ["ProgressReporter", "console", "print_json", "print_table"]

# Off a terminal rich wraps at 80 columns; ids must stay whole and greppable.
_PIPE_WIDTH = 4096


def console(*, stderr: bool = False) -> Console:
    """Return a console on stdout (or stderr) for the current streams."""
    stream = sys.stderr if stderr else sys.stdout
    is_tty = stream.isatty()
    return Console(
        file=stream,
        width=None if is_tty else _PIPE_WIDTH,
        no_color=bool(os.environ.get("NO_COLOR")) or not is_tty,
        highlight=False,
        soft_wrap=not is_tty,
    )


def _dumps(value: object) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def print_json(value: object) -> None:
    """Print ``value`` as one line of JSON on stdout."""
    sys.stdout.write(_dumps(value) + "\n")
    sys.stdout.flush()


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return ", ".join(value) or "-"
    return _dumps(value)


def print_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Iterable[str],
    *,
    as_json: bool,
    empty: str,
) -> None:
    """Print ``rows`` as a JSON array (``as_json``) or a table of ``columns``.

    With no rows the JSON form prints ``[]`` and the table form prints ``empty`` on
    stderr.
    """
    if as_json:
        print_json(list(rows))
        return
    if not rows:
        console(stderr=True).print(empty)
        return
    names = list(columns)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, header_style="bold", pad_edge=False)
    for name in names:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(name)) for name in names))
    console().print(table)


class _RateColumn(ProgressColumn):
    """Items per second so far."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("-/s" if speed is None else f"{speed:,.1f}/s")


class ProgressReporter:
    """Show ``done/total`` with rate and ETA on stderr; plain lines off a terminal.

    ``total=None`` shows a count without an ETA. ``quiet`` shows nothing.
    """

    def __init__(self, description: str, total: int | None, *, quiet: bool = False) -> None:
        self._description = description
        self._total = total
        self._quiet = quiet
        self._console = console(stderr=True)
        self._progress: Progress | None = None
        self._task_id: Any = None
        self._done = -1
        self._started = time.monotonic()

    def __enter__(self) -> Self:
        if not self._quiet and self._console.is_terminal:
            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                _RateColumn(),
                TimeRemainingColumn(),
                console=self._console,
                transient=False,
            )
            self._progress.start()
            self._task_id = self._progress.add_task(self._description, total=self._total)
        return self

    def update(self, done: int, total: int | None = None) -> None:
        """Record that ``done`` items are finished (of ``total`` when it changed)."""
        if total is not None:
            self._total = total
        if self._quiet or done == self._done:
            return
        self._done = done
        if self._progress is not None:
            self._progress.update(self._task_id, completed=done, total=self._total)
            return
        elapsed = max(time.monotonic() - self._started, 1e-9)
        rate = done / elapsed
        of = f"/{self._total}" if self._total is not None else ""
        eta = ""
        if self._total is not None and rate > 0 and done < self._total:
            eta = f", eta {(self._total - done) / rate:.0f}s"
        self._console.print(f"{self._description}: {done}{of} ({rate:.1f}/s{eta})")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._progress is not None:
            self._progress.stop()
