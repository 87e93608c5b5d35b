"""The geographic validation split of ``bldgseg adapt``: whole blocks of tiles held out, buildings on both sides."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from bldgseg.errors import InputError
from bldgseg.train.data import TrainSample
from bldgseg.train.split import geographic_split

__all__ = ["BLOCK_SIZES", "MIN_GROUPS", "buildings_in", "group_blocks", "split_region"]

#: Block sizes tried (tiles per side), largest first: the largest that still gives MIN_GROUPS groups is used.
BLOCK_SIZES = (4, 2, 1)
#: Enough groups for a validation fraction of 0.2 to be about one fifth of the data.
MIN_GROUPS = 10
#: Seeds tried (after the configured one) for a split with buildings on both sides.
_SPLIT_TRIES = 50


def _tile_key(sample: TrainSample) -> tuple[str, int, int]:
    """``(raster, tile row, tile column)`` from a footprint sample's group ``"stem:row:col"``."""
    stem, row, col = sample.group.rsplit(":", 2)
    path = sample.origin.path if sample.origin is not None else stem
    return path, int(row), int(col)


def group_blocks(samples: Sequence[TrainSample], min_groups: int = MIN_GROUPS) -> list[TrainSample]:
    """The samples (one tile each) regrouped into blocks of ``b`` x ``b`` tiles of one raster.

    ``b`` is the largest of :data:`BLOCK_SIZES` that leaves at least ``min_groups`` groups: a large scene is
    held out in blocks (less edge shared with training), a few small tiles one tile at a time.
    """
    keys = [_tile_key(s) for s in samples]
    for size in BLOCK_SIZES:
        groups = {(path, row // size, col // size) for path, row, col in keys}
        if len(groups) >= min_groups or size == 1:
            break
    for sample, (path, row, col) in zip(samples, keys, strict=True):
        sample.group = f"{path}:{row // size}:{col // size}"
    return list(samples)


def buildings_in(samples: Sequence[TrainSample]) -> int:
    """Buildings shown by the samples (one per id per tile; a building on two tiles counts twice)."""
    total = 0
    for sample in samples:
        if sample.instances is not None:
            ids = np.unique(sample.instances)
            total += int((ids > 0).sum())
    return total


def split_region(
    samples: Sequence[TrainSample], val_fraction: float, seed: int, min_validation: int
) -> tuple[list[TrainSample], list[TrainSample]]:
    """Whole groups drawn for validation (:func:`geographic_split`) until both sides show buildings.

    The draw with ``seed`` is kept when validation shows at least ``min_validation`` buildings and training
    some; else the next seeds are tried. Raises ``InputError`` when no draw does.
    """
    samples = group_blocks(samples)
    for attempt in range(_SPLIT_TRIES):
        train, val = geographic_split(samples, val_fraction=val_fraction, seed=seed + attempt)
        if buildings_in(val) >= min_validation and buildings_in(train) > 0:
            return train, val
    raise InputError(
        f"cannot hold out a validation part with {min_validation} or more buildings and keep some for training "
        f"({len(samples)} tiles); label buildings in more of the images or add images"
    )
