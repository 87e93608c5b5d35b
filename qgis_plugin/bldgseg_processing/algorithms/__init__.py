"""The provider's algorithms, one bldgseg command each."""

from .adapt import AdaptToRegion
from .evaluate import Evaluate
from .extract import ExtractBuildings
from .measure import MeasureAttributes

ALGORITHMS = [ExtractBuildings, MeasureAttributes, Evaluate, AdaptToRegion]

__all__ = ["ALGORITHMS", "AdaptToRegion", "Evaluate", "ExtractBuildings", "MeasureAttributes"]
