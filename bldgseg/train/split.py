"""Train/validation splits that keep each geographic unit (``group``) whole, so validation measures new places."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

from bldgseg.errors import InputError
from bldgseg.train.data import Sample

__all__ = ["geographic_split", "group_of"]

S = TypeVar("S", bound=Sample)


def group_of(sample: Sample) -> str:
    """The sample's split unit: its ``group`` (a :class:`~bldgseg.train.datasets.TrainSample`), else its source."""
    return str(getattr(sample, "group", None) or sample.source)


def _check_region(region: Sequence[float]) -> tuple[float, float, float, float]:
    try:
        minx, miny, maxx, maxy = (float(v) for v in region)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"val_region {region!r}: expected (minx, miny, maxx, maxy) in degrees (EPSG:4326)"
        ) from exc
    if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)) or minx >= maxx or miny >= maxy:
        raise InputError(
            f"val_region {region!r}: needs minx < maxx and miny < maxy (lon/lat degrees, EPSG:4326)"
        )
    if not (-90 <= miny <= 90 and -90 <= maxy <= 90):
        raise InputError(
            f"val_region {region!r}: latitudes outside -90..90; give (lon_min, lat_min, lon_max, lat_max)"
        )
    return minx, miny, maxx, maxy


def geographic_split(
    samples: Sequence[S],
    val_fraction: float = 0.2,
    val_region: tuple[float, float, float, float] | None = None,
    seed: int = 0,
) -> tuple[list[S], list[S]]:
    """Split ``samples`` into ``(train, val)`` without ever putting one group on both sides.

    With ``val_region`` (an EPSG:4326 ``(minx, miny, maxx, maxy)`` box) every group that has a sample whose
    ``bounds`` centre lies inside goes to validation, whole. Otherwise whole groups are drawn in a random order
    fixed by ``seed`` until at least ``val_fraction`` of the samples are in validation (a group that would take
    every remaining sample is passed over). Samples keep their input order on each side. Raises
    :class:`InputError` when either side would be empty.
    """
    samples = list(samples)
    if not samples:
        raise InputError("no samples to split; load some training data first")
    groups: dict[str, list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(group_of(sample), []).append(i)

    val_groups: set[str] = set()
    if val_region is not None:
        minx, miny, maxx, maxy = _check_region(val_region)
        located = 0
        for key, members in groups.items():
            for i in members:
                bounds = getattr(samples[i], "bounds", None)
                if bounds is None:
                    continue
                located += 1
                cx, cy = (bounds[0] + bounds[2]) / 2.0, (bounds[1] + bounds[3]) / 2.0
                if minx <= cx <= maxx and miny <= cy <= maxy:
                    val_groups.add(key)
                    break
        if not located:
            raise InputError(
                "val_region was given but no sample has bounds (no georeferenced samples); "
                "use --val-fraction instead, or load GeoTIFFs"
            )
        where = f"val_region {tuple(val_region)}"
    else:
        try:
            fraction = float(val_fraction)
        except (TypeError, ValueError) as exc:
            raise InputError(f"val_fraction {val_fraction!r}: not a number; use e.g. 0.2") from exc
        if not 0.0 < fraction < 1.0:
            raise InputError(f"val_fraction {val_fraction!r}: must be between 0 and 1 (exclusive), e.g. 0.2")
        target = fraction * len(samples)
        keys = sorted(groups)
        order = np.random.default_rng(seed).permutation(len(keys))
        taken = 0
        for k in order:
            if taken >= target:
                break
            size = len(groups[keys[k]])
            if taken + size >= len(samples):
                continue  # would leave nothing to train on
            val_groups.add(keys[k])
            taken += size
        where = f"val_fraction {val_fraction}"

    val = [s for s in samples if group_of(s) in val_groups]
    train = [s for s in samples if group_of(s) not in val_groups]
    if not val or not train:
        side = "validation" if not val else "training"
        raise InputError(
            f"{where}: the {side} set would be empty ({len(samples)} samples in {len(groups)} group(s)); "
            "add more data (more groups, or smaller tiles/blocks) or choose another --val-fraction / --val-region"
        )
    return train, val
