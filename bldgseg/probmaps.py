"""Probability maps written chunk by chunk, then converted to a Cloud-Optimized GeoTIFF with a QGIS style."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.windows import Window

from bldgseg.files import atomic_write, hidden_temp_path
from bldgseg.io import RasterInfo
from bldgseg.qgis_styles import write_probability_style


class ProbabilityMapWriter:
    """Holds a tiled uint8 GeoTIFF open (probability x 255) and turns it into a COG on close.

    Memory stays bounded by one chunk: each chunk's core is written as it arrives.
    """

    def __init__(self, info: RasterInfo, destination: Path):
        self.destination = Path(destination)
        self.destination.parent.mkdir(parents=True, exist_ok=True)
        self._scratch = hidden_temp_path(self.destination, ".tif")
        self._ds = rasterio.open(
            self._scratch,
            "w",
            driver="GTiff",
            width=info.width,
            height=info.height,
            count=1,
            dtype="uint8",
            crs=info.crs,
            transform=info.transform,
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            BIGTIFF="IF_SAFER",
        )
        self._ds.scales = (1 / 255,)
        self._ds.update_tags(1, DESCRIPTION="building probability x 255 (scale 1/255)")

    def write(self, probability: np.ndarray, window: Window) -> None:
        """Write ``probability`` (float 0..1) into ``window`` of the map."""
        self._ds.write(np.clip(np.rint(probability * 255), 0, 255).astype(np.uint8), 1, window=window)

    def close(self) -> Path:
        """Finish the COG atomically at the destination, with its QGIS colour ramp as ``<stem>.qml`` next to it
        (QGIS's default style for the file), and remove the scratch file."""
        self._ds.close()
        try:
            with atomic_write(self.destination, ".cog.tif", sync=False) as cog:
                rasterio.shutil.copy(
                    self._scratch, cog, driver="COG", compress="deflate", overview_resampling="average"
                )
        finally:
            self._scratch.unlink(missing_ok=True)
        write_probability_style(self.destination)
        return self.destination

    def abort(self) -> None:
        """Drop the partial map."""
        if not self._ds.closed:
            self._ds.close()
        self._scratch.unlink(missing_ok=True)
