"""``bldgseg info``: what a run would see, before it starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bldgseg.io import SkippedInput, scan_inputs
from bldgseg.modelgrid import ModelGrid
from bldgseg.models import ModelCard, resolve_checkpoint
from bldgseg.tiling import plan_chunks


def describe_inputs(
    inputs: Sequence[Path],
    glob: str = "*.tif*",
    bands: tuple[int, int, int] | None = None,
    model: str = "aerial-buildings",
    chunk_size: int = 4096,
) -> tuple[list[dict[str, Any]], list[SkippedInput]]:
    """One row per usable raster (CRS, size, GSD, resampling to the model, windows, chunks) and the problems."""
    card = ModelCard.from_json(resolve_checkpoint(model).with_suffix(".json"))
    infos, skipped = scan_inputs(inputs, glob=glob, bands=bands)
    rows = []
    for info in infos:
        scale = info.gsd_m / card.gsd_m
        grid = ModelGrid.for_raster(info.height, info.width, scale, card.tile_size, card.overlap)
        windows = len(grid.layout)  # of a single-chunk run; smaller chunks run more (scripts/seam_overhead.py)
        rows.append(
            {
                "file": info.path.name,
                "crs": info.crs.to_string(),
                "size": f"{info.width}x{info.height}",
                "gsd_m": f"{info.gsd_m:.3f}",
                "bands": ",".join(map(str, info.bands)),
                "dtype": info.dtype + (" (stretched)" if info.stretch else ""),
                "resample": "none" if abs(scale - 1) < 0.02 else f"size x{scale:.2f} to {card.gsd_m:g} m",
                "windows": windows,
                "chunks": len(plan_chunks(info.height, info.width, chunk_size, 0)),
            }
        )
    return rows, skipped
