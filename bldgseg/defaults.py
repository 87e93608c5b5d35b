"""Defaults shared by the commands and the library (kept free of heavy imports so the CLI can read them)."""

from __future__ import annotations

__all__ = ["DEFAULT_MIN_AREA_M2"]

#: Smallest building kept, in square metres on the ground: ``bldgseg run`` when the model card has no
#: ``min_area_m2``, ``bldgseg vectorize --min-area``, the fragment share of ``bldgseg evaluate`` when nothing says
#: otherwise, and the validation instance metrics of training.
DEFAULT_MIN_AREA_M2 = 4.0
