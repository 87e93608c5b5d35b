"""``bldgseg street``: street photos + camera poses + footprints -> building height, floors, facade width."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bldgseg.cli.common import call, console, progress_bar, report_skipped
from bldgseg.cli.options import (
    BatchSizeOpt,
    DeviceOpt,
    OverwriteOpt,
    footprints_layer_option,
    model_option,
    output_option,
    tta_option,
)

__all__ = ["street_command"]

PhotosArg = Annotated[
    list[Path], typer.Argument(help="Photos (JPEG/PNG) or folders of them (searched recursively).")
]
FootprintsOpt = Annotated[
    Path,
    typer.Option("--footprints", "-f", help="Building footprints: a bldgseg run GeoPackage or any layer."),
]
CamerasOpt = Annotated[
    Path | None,
    typer.Option(
        "--cameras",
        "-c",
        help="Camera poses (CSV or point layer): photo, lon, lat, heading, pitch, roll, hfov or focal_px, "
        "camera_height_m, projection. Overrides EXIF field by field.",
    ),
]
StreetFootprintsLayerOpt = Annotated[
    str | None, footprints_layer_option("Layer of --footprints (default: buildings or first).")
]
FacadeModelOpt = Annotated[str, model_option("Facade model: bundled name or path to a .safetensors.")]
LabelsOpt = Annotated[
    Path | None,
    typer.Option(
        "--labels", help="Folder of precomputed label PNGs (class ids, named like the photos); no model."
    ),
]
SaveLabelsOpt = Annotated[
    Path | None,
    typer.Option("--save-labels", help="Write each photo's label mask (PNG) into this folder."),
]
MaxSideOpt = Annotated[
    int,
    typer.Option("--max-side", min=0, help="Parse photos at this longer side in pixels (0: full size)."),
]
PanoMaxSideOpt = Annotated[
    int, typer.Option("--pano-max-side", min=0, help="The same for equirectangular panoramas.")
]
CameraHeightOpt = Annotated[
    float,
    typer.Option("--camera-height", min=0.01, help="Camera height above the ground (m) when a pose has none."),
]
HfovOpt = Annotated[
    float | None,
    typer.Option("--hfov", min=1.0, max=179.0, help="Horizontal field of view (deg) when a photo has none."),
]
MaxDistanceOpt = Annotated[
    float, typer.Option("--max-distance", min=1.0, help="Measure facades up to this distance (m).")
]
MinColumnsOpt = Annotated[
    int, typer.Option("--min-columns", min=1, help="Image columns a facade needs to be measured.")
]
ReplaceHeightOpt = Annotated[
    bool,
    typer.Option("--replace-height", help="Street height replaces a height_m the footprints already have."),
]


def street_command(
    photos: PhotosArg,
    footprints: FootprintsOpt,
    output: Annotated[Path, output_option("Output GeoPackage.")],
    cameras: CamerasOpt = None,
    footprints_layer: StreetFootprintsLayerOpt = None,
    model: FacadeModelOpt = "facade",
    labels: LabelsOpt = None,
    save_labels: SaveLabelsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: BatchSizeOpt = 4,
    tta: Annotated[bool, tta_option("Average over flips (4x slower).")] = False,
    max_side: MaxSideOpt = 1024,
    pano_max_side: PanoMaxSideOpt = 4096,
    camera_height: CameraHeightOpt = 1.6,
    hfov: HfovOpt = None,
    max_distance: MaxDistanceOpt = 60.0,
    min_columns: MinColumnsOpt = 5,
    replace_height: ReplaceHeightOpt = False,
    overwrite: OverwriteOpt = False,
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
