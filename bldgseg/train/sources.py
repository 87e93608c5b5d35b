"""Turn a training request (CLI flags or YAML) into samples: which loader, which split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bldgseg.errors import InputError
from bldgseg.io import SkippedInput
from bldgseg.palettes import PALETTES
from bldgseg.train.data import SampleList, TrainSample
from bldgseg.train.datasets import load_mask_pairs, load_palette_pairs
from bldgseg.train.footprint_samples import load_geotiff_footprints
from bldgseg.train.split import geographic_split


@dataclass
class DataRequest:
    """Where the labelled data is and how to split it (one of three kinds)."""

    images: list[Path] = field(default_factory=list)
    footprints: Path | None = None
    footprints_layer: str | None = None
    masks: Path | None = None
    labels: Path | None = None
    palette: str | None = None
    source_gsd: float | None = None
    group_pattern: str | None = None
    val_fraction: float = 0.2
    val_region: tuple[float, float, float, float] | None = None

    def kind(self) -> str:
        given = [
            k
            for k, v in (("footprints", self.footprints), ("masks", self.masks), ("labels", self.labels))
            if v
        ]
        if len(given) != 1 or not self.images:
            raise InputError(
                "give the images with exactly one of --footprints (vector labels), --masks (mask folder) "
                "or --labels with --palette (colour-coded label images)"
            )
        return given[0]


def load_samples(request: DataRequest, gsd_m: float) -> tuple[SampleList, list[str] | None]:
    """All samples of the request at ``gsd_m``; for palette data also the class names."""
    kind = request.kind()
    if kind == "footprints":
        return load_geotiff_footprints(
            request.images, request.footprints, gsd_m, layer=request.footprints_layer
        ), None
    if kind == "masks":
        return load_mask_pairs(
            _one_or_many(request.images),
            request.masks,
            target_gsd=gsd_m,
            source_gsd=request.source_gsd,
            group_pattern=request.group_pattern,
        ), None
    if not request.palette or request.palette.lower() not in PALETTES:
        raise InputError(f"--palette {request.palette!r} is not known; use one of: {', '.join(PALETTES)}")
    palette, classes, pattern = PALETTES[request.palette.lower()]
    samples = load_palette_pairs(
        _one_or_many(request.images),
        request.labels,
        palette,
        classes,
        group_pattern=request.group_pattern or pattern,
    )
    return samples, list(classes)


def split_samples(samples: list[TrainSample], request: DataRequest, seed: int) -> tuple[list, list]:
    """Geographic split by tile/block/file group, never random pixels of one tile."""
    return geographic_split(
        samples, val_fraction=request.val_fraction, val_region=request.val_region, seed=seed
    )


def skipped_of(samples: SampleList) -> list[SkippedInput]:
    return list(getattr(samples, "skipped", []))


def _one_or_many(paths: list[Path]) -> Path | list[Path]:
    return Path(paths[0]) if len(paths) == 1 else [Path(p) for p in paths]
