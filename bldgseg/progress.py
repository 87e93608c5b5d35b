"""Progress callbacks: the one signature the library reports progress through (the CLI renders it)."""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["ProgressFn", "report_progress"]

#: ``progress(stage, done, total)``: ``done`` of ``total`` items of ``stage`` (e.g. "photos") are finished.
ProgressFn = Callable[[str, int, int], None]


def report_progress(progress: ProgressFn | None, stage: str, done: int, total: int) -> None:
    """Call ``progress`` when one is given."""
    if progress is not None:
        progress(stage, done, total)
