"""Defaults shared by the commands and the library (kept free of heavy imports so the CLI can read them)."""

from __future__ import annotations

__all__ = ["DEFAULT_MIN_AREA_M2"]

#: Smallest building kept, in square metres on the ground: ``bldgseg run``/``vectorize`` ``--min-area`` and
#: the validation instance metrics of training.
DEFAULT_MIN_AREA_M2 = 4.0
