"""``bldgseg street``: street photos + camera poses + footprints -> building height, floors, facade width."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bldgseg.cli.common import call, console, progress_bar, report_skipped


def street_command(
    photos: Annotated[
        list[Path], typer.Argument(help="Photos (JPEG/PNG) or folders of them (searched recursively).")
    ],
    footprints: Annotated[
        Path,
        typer.Option(
            "--footprints", "-f", help="Building footprints: a bldgseg run GeoPackage or any layer."
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output GeoPackage.")],
    cameras: Annotated[
        Path | None,
        typer.Option(
            "--cameras",
            "-c",
            help="Camera poses (CSV or point layer): photo, lon, lat, heading, pitch, roll, hfov or focal_px, "
            "camera_height_m, projection. Overrides EXIF field by field.",
        ),
    ] = None,
    footprints_layer: Annotated[
        str | None,
        typer.Option("--footprints-layer", help="Layer of --footprints (default: buildings or first)."),
    ] = None,
    model: Annotated[
        str, typer.Option("--model", "-m", help="Facade model: bundled name or path to a .safetensors.")
    ] = "facade",
    labels: Annotated[
        Path | None,
        typer.Option(
            "--labels", help="Folder of precomputed label PNGs (class ids, named like the photos); no model."
        ),
    ] = None,
    save_labels: Annotated[
        Path | None,
        typer.Option("--save-labels", help="Write each photo's label mask (PNG) into this folder."),
    ] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Tiles per forward pass.")] = 4,
    tta: Annotated[bool, typer.Option("--tta", help="Average over flips (4x slower).")] = False,
    max_side: Annotated[
        int,
        typer.Option("--max-side", min=0, help="Parse photos at this longer side in pixels (0: full size)."),
    ] = 1024,
    pano_max_side: Annotated[
        int, typer.Option("--pano-max-side", min=0, help="The same for equirectangular panoramas.")
    ] = 4096,
    camera_height: Annotated[
        float,
        typer.Option(
            "--camera-height", min=0.01, help="Camera height above the ground (m) when a pose has none."
        ),
    ] = 1.6,
    hfov: Annotated[
        float | None,
        typer.Option(
            "--hfov", min=1.0, max=179.0, help="Horizontal field of view (deg) when a photo has none."
        ),
    ] = None,
    max_distance: Annotated[
        float, typer.Option("--max-distance", min=1.0, help="Measure facades up to this distance (m).")
    ] = 60.0,
    min_columns: Annotated[
        int, typer.Option("--min-columns", min=1, help="Image columns a facade needs to be measured.")
    ] = 5,
    replace_height: Annotated[
        bool,
        typer.Option(
            "--replace-height", help="Street height replaces a height_m the footprints already have."
        ),
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")] = False,
) -> None:
    """Measure building height, floors, facade width and window-to-wall ratio from street photos."""
    from bldgseg.street.job import StreetConfig, run_street

    config = StreetConfig(
        photos=photos,
        footprints=footprints,
        output=output,
        cameras=cameras,
        footprints_layer=footprints_layer,
        model=model,
        labels=labels,
        save_labels=save_labels,
        device=device,
        batch_size=batch_size,
        tta=tta,
        max_side=max_side,
        pano_max_side=pano_max_side,
        camera_height_m=camera_height,
        hfov_deg=hfov,
        max_distance_m=max_distance,
        min_columns=min_columns,
        replace_height=replace_height,
        overwrite=overwrite,
    )
    with progress_bar() as update:
        result = call(run_street, config, progress=update)
    report_skipped(result.problems)
    console.print(
        f"[green]wrote[/] {result.output}: {result.photos} photos, {result.parsed} parsed, {result.measured} "
        f"measured; {len(result.observations)} facade observations of {result.buildings_measured} buildings",
        highlight=False,
        soft_wrap=True,
    )
