"""``bldgseg attributes``: measure attributes of existing footprints from imagery."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bldgseg.cli.common import call, console, progress_bar, report_skipped
from bldgseg.cli.options import OverwriteOpt, elevation_option, output_option

__all__ = ["attributes"]


def attributes(
    footprints: Annotated[Path, typer.Argument(help="Existing footprints in any OGR format.")],
    images: Annotated[list[Path], typer.Argument(help="Imagery to measure colour and texture from.")],
    output: Annotated[Path, output_option("Output .gpkg, .parquet or .fgb.")],
    layer: Annotated[str | None, typer.Option("--layer", help="Layer of FOOTPRINTS to read.")] = None,
    ndsm: Annotated[Path | None, elevation_option("ndsm")] = None,
    dsm: Annotated[Path | None, elevation_option("dsm")] = None,
    dtm: Annotated[Path | None, elevation_option("dtm")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Enrich existing footprints (OSM, cadastre…) with attributes measured from imagery."""
    from bldgseg.enrich import enrich_footprints

    with progress_bar() as update:
        count, skipped = call(
            enrich_footprints,
            footprints,
            images,
            output,
            layer=layer,
            ndsm=ndsm,
            dsm=dsm,
            dtm=dtm,
            overwrite=overwrite,
            progress=update,
        )
    report_skipped(skipped)
    console.print(f"[green]wrote[/] {output}: {count} footprints", highlight=False)
