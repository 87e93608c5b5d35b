"""Fine-tuning a model to the user's region (``bldgseg adapt``): data, split, training, before/after scores."""

from bldgseg.adapt.job import OUTPUT_NAMES, AdaptResult, adapt, check_output
from bldgseg.adapt.report import REPORT_NAMES, comparison_rows
from bldgseg.adapt.settings import (
    DEFAULT_MINUTES,
    MIN_BUILDINGS,
    MIN_VALIDATION_BUILDINGS,
    AdaptConfig,
)

__all__ = [
    "DEFAULT_MINUTES",
    "MIN_BUILDINGS",
    "MIN_VALIDATION_BUILDINGS",
    "OUTPUT_NAMES",
    "REPORT_NAMES",
    "AdaptConfig",
    "AdaptResult",
    "adapt",
    "check_output",
    "comparison_rows",
]
