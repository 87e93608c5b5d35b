"""``bldgseg info``: what a run would see, before it starts."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bldgseg.errors import DeviceError
from bldgseg.io import SkippedInput, scan_inputs
from bldgseg.models import ModelCard, resolve_checkpoint
from bldgseg.precision import InferenceChoice, detect_inference
from bldgseg.tiling import iter_windows, model_shape, plan_chunks


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
        h, w = model_shape((info.height, info.width), scale)
        windows = len(
            iter_windows(max(h, card.tile_size), max(w, card.tile_size), card.tile_size, card.overlap)
        )
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


def describe_inference(device: str = "auto", precision: str = "auto", engine: str = "auto") -> InferenceChoice:
    """The precision and engine a run on this machine would choose, and why (before OpenVINO converts the
    model: one that cannot be converted still falls back to torch at run time)."""
    return detect_inference(precision, engine, device_type(device))


def device_type(device: str) -> str:
    """``cpu`` or ``cuda`` for a ``--device`` value. ``auto`` imports torch only where an NVIDIA driver is
    installed, so that ``bldgseg info`` stays fast elsewhere."""
    name = device.lower()
    if name == "cpu" or name.startswith("cuda"):
        return "cuda" if name.startswith("cuda") else "cpu"
    if name != "auto":
        raise DeviceError(f"device {device!r} is not understood; use auto, cpu, cuda or cuda:N")
    if "torch" not in sys.modules and not Path("/proc/driver/nvidia").exists() and not shutil.which("nvidia-smi"):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
