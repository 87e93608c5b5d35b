"""``bldgseg info``: what a run would see, before it starts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bldgseg.devices import device_type
from bldgseg.files import file_digest
from bldgseg.io import RasterInfo, SkippedInput, ground_sample_distance, scan_inputs
from bldgseg.modelgrid import ModelGrid, model_scale
from bldgseg.models import ModelCard, int8_ir_of, load_card, resolve_checkpoint
from bldgseg.mosaic import Mosaic, plan_mosaics
from bldgseg.precision import InferenceChoice, detect_inference, int8_hint, int8_hint_applies
from bldgseg.tiling import plan_chunks


def describe_inputs(
    inputs: Sequence[Path],
    glob: str = "*.tif*",
    bands: tuple[int, int, int] | None = None,
    model: str = "aerial-buildings",
    chunk_size: int = 4096,
    separate: bool = False,
) -> tuple[list[dict[str, Any]], list[SkippedInput]]:
    """One row per raster a run would process (CRS, size, GSD, resampling to the model, windows, chunks) and
    the problems. Files that touch on one pixel grid form one mosaic row (``file`` is the mosaic's name,
    ``tiles`` its files) unless ``separate``; a single file's ``tiles`` is its own name."""
    card = ModelCard.from_json(resolve_checkpoint(model).with_suffix(".json"))
    infos, skipped = scan_inputs(inputs, glob=glob, bands=bands)
    mosaics = [] if separate else plan_mosaics(infos, Path("."))
    first_tile = {m.tiles[0].path: m for m in mosaics}
    in_mosaic = {t.path for m in mosaics for t in m.tiles}
    rows = []
    for info in infos:
        if info.path in first_tile:
            rows.append(_mosaic_row(first_tile[info.path], info, card, chunk_size))
        elif info.path not in in_mosaic:
            row = _row(info.path.name, info, info.width, info.height, info.gsd_m, card, chunk_size)
            rows.append({**row, "tiles": [info.path.name]})
    return rows, skipped


def describe_inference(device: str = "auto", precision: str = "auto", engine: str = "auto") -> InferenceChoice:
    """The precision and engine a run on this machine would choose, and why (before OpenVINO converts the
    model: one that cannot be converted still falls back to torch at run time)."""
    return detect_inference(precision, engine, device_type(device))


def inference_hint(model: str, choice: InferenceChoice, precision: str = "auto") -> str | None:
    """:func:`bldgseg.precision.int8_hint` for ``model``: whether it ships an int8 IR of its own weights
    (the weights are hashed only where the hint could apply)."""
    if not int8_hint_applies(choice, precision):
        return None
    weights, card = load_card(model)
    has_ir = bool(card.int8) and int8_ir_of(weights, card, file_digest(weights)) is not None
    return int8_hint(choice, precision, has_ir)


def _mosaic_row(mosaic: Mosaic, first: RasterInfo, card: ModelCard, chunk_size: int) -> dict[str, Any]:
    """The row of a mosaic: its size, and the GSD at its centre (as a run measures it on the VRT)."""
    gsd = ground_sample_distance(mosaic.crs, mosaic.transform, mosaic.width, mosaic.height, name=mosaic.name)
    row = _row(mosaic.name, first, mosaic.width, mosaic.height, gsd, card, chunk_size)
    return {**row, "tiles": [t.path.name for t in mosaic.tiles]}


def _row(
    name: str, info: RasterInfo, width: int, height: int, gsd_m: float, card: ModelCard, chunk_size: int
) -> dict[str, Any]:
    scale = model_scale(gsd_m, card.gsd_m)
    grid = ModelGrid.for_raster(height, width, scale, card.tile_size, card.overlap)
    windows = len(grid.layout)  # of a single-chunk run; smaller chunks run more (scripts/seam_overhead.py)
    return {
        "file": name,
        "crs": info.crs.to_string(),
        "size": f"{width}x{height}",
        "gsd_m": f"{gsd_m:.3f}",
        "bands": ",".join(map(str, info.bands)),
        "dtype": info.dtype + (" (stretched)" if info.stretch else ""),
        "resample": "none" if scale == 1 else f"size x{scale:.2f} to {card.gsd_m:g} m",
        "windows": windows,
        "chunks": len(plan_chunks(height, width, chunk_size, 0)),
    }
