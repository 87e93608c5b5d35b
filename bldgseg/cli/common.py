"""Shared CLI pieces: the console, error-to-exit-code mapping, progress bars, option parsing."""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from bldgseg.errors import BldgsegError, DeviceError, InputError, ModelError, OutputExistsError

console = Console(stderr=True)
T = TypeVar("T")

#: ``BLDGSEG_PROGRESS=json``: progress as one JSON object a line on stderr instead of bars (for the QGIS plugin).
PROGRESS_ENV = "BLDGSEG_PROGRESS"

EXIT_CODES: list[tuple[type[BldgsegError], int]] = [
    (OutputExistsError, 3),
    (ModelError, 4),
    (DeviceError, 5),
    (InputError, 2),
    (BldgsegError, 1),
]


def call(func: Callable[..., T], *args, **kwargs) -> T:
    """Run library code; a project error becomes one red line and its exit code."""
    try:
        return func(*args, **kwargs)
    except BldgsegError as exc:
        console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        code = next(code for kind, code in EXIT_CODES if isinstance(exc, kind))
        raise typer.Exit(code) from exc


def reporting_errors(command: Callable[..., T]) -> Callable[..., T]:
    """The same command (signature and help), its project errors reported by :func:`call`."""

    @functools.wraps(command)
    def reporting(*args, **kwargs) -> T:
        return call(command, *args, **kwargs)

    return reporting


@contextmanager
def progress_bar() -> Iterator[Callable[[str, int, int], None]]:
    """A rich progress bar fed by the library's ``progress(stage, done, total)`` callbacks.

    With ``BLDGSEG_PROGRESS=json`` each callback is instead one line on stderr that programs can read:
    ``{"event": "progress", "stage": "chunks", "done": 3, "total": 10}``.
    """
    if os.environ.get(PROGRESS_ENV, "").lower() == "json":
        yield json_progress
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


def json_progress(stage: str, done: int, total: int) -> None:
    """One machine-readable progress line on stderr."""
    line = json.dumps({"event": "progress", "stage": stage, "done": done, "total": total})
    print(line, file=sys.stderr, flush=True)


def parse_bands(text: str | None) -> tuple[int, int, int] | None:
    """``"3,2,1"`` -> (3, 2, 1)."""
    if not text:
        return None
    try:
        bands = tuple(int(part) for part in text.split(","))
    except ValueError:
        bands = ()
    if len(bands) != 3 or min(bands) < 1:
        raise typer.BadParameter(f"{text!r}: give three 1-based band numbers, e.g. --bands 3,2,1")
    return bands  # type: ignore[return-value]


def wide_console() -> Console:
    """Standard output wide enough for tables, also when piped."""
    return Console(width=max(160, shutil.get_terminal_size().columns))


def report_skipped(skipped) -> None:
    """One yellow line per input the library skipped, with its reason."""
    for item in skipped:
        console.print(f"[yellow]skipped:[/] {item.reason}", highlight=False, soft_wrap=True)
