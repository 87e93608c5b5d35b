"""``bldgseg run``, ``predict`` and ``vectorize``: imagery -> probability maps -> building polygons."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bldgseg.band_helpers import spare_cores, start_helpers, stop_helpers
from bldgseg.cli.common import call, console, parse_bands, progress_bar, report_skipped
from bldgseg.cli.options import (
    BandsOpt,
    BatchSizeOpt,
    ClusterOpt,
    DeviceOpt,
    EngineOpt,
    GlobOpt,
    InputsArg,
    ModelOpt,
    OverwriteOpt,
    PrecisionOpt,
    PreloadOpt,
    PrintJobScriptOpt,
    ResumeRunOpt,
    RunDirOpt,
    SchedulerOpt,
    SeparateOpt,
    SlurmAccountOpt,
    SlurmCoresOpt,
    SlurmDirectiveOpt,
    SlurmGpusOpt,
    SlurmInterfaceOpt,
    SlurmMemoryOpt,
    SlurmPrologueOpt,
    SlurmQueueOpt,
    SlurmWalltimeOpt,
    ThreadsOpt,
    WorkersOpt,
    batch_size_option,
    chunk_size_option,
    elevation_option,
    instances_option,
    min_area_option,
    output_option,
    regularize_option,
    simplify_option,
    threads_option,
    threshold_option,
    tta_option,
)
from bldgseg.cli.scaling import ExecutorOptions, echo_job_script
from bldgseg.defaults import DEFAULT_MIN_AREA_M2

if TYPE_CHECKING:
    from bldgseg.pipeline import RunConfig, RunResult

__all__ = ["build_run_config", "predict", "report_run", "run", "vectorize"]

RunOutputOpt = Annotated[
    Path, output_option("Output .gpkg, .parquet (GeoParquet) or .fgb (FlatGeobuf); a folder with --per-image.")
]
RunTtaOpt = Annotated[bool, tta_option("Average over flips (4x slower, smoother).")]
RunThresholdOpt = Annotated[float | None, threshold_option("Probability cut (default: card's).")]
TileSizeOpt = Annotated[int | None, typer.Option("--tile-size", help="Model window in pixels.")]
OverlapOpt = Annotated[int | None, typer.Option("--overlap", help="Window overlap in pixels.")]
POSTPROCESS_PANEL = "Post-processing (default: the model card's)"
RunMinAreaOpt = Annotated[
    float | None,
    min_area_option(
        "Smallest building (m²): smaller fragments join a building they touch (--merge-fragments) or are "
        f"dropped. Default: the model card's, else {DEFAULT_MIN_AREA_M2:g}.",
        rich_help_panel=POSTPROCESS_PANEL,
    ),
]
RunSimplifyOpt = Annotated[float, simplify_option("Simplification tolerance in metres.")]
RunRegularizeOpt = Annotated[
    bool | None,
    regularize_option("Square off outlines (shared walls kept).", negatable=True, rich_help_panel=POSTPROCESS_PANEL),
]
HoleAreaOpt = Annotated[
    float | None,
    typer.Option("--hole-area", min=0.0, help="Fill holes smaller than this (m²).", rich_help_panel=POSTPROCESS_PANEL),
]
OpeningOpt = Annotated[
    float | None,
    typer.Option(
        "--opening-m",
        min=0.0,
        help="Cut spurs and necks narrower than this (m; morphological opening).",
        rich_help_panel=POSTPROCESS_PANEL,
    ),
]
MergeFragmentsOpt = Annotated[
    bool | None,
    typer.Option(
        "--merge-fragments/--no-merge-fragments",
        help="Join fragments under --min-area to the building they share an edge with.",
        rich_help_panel=POSTPROCESS_PANEL,
    ),
]
SplitCoreOpt = Annotated[
    float | None,
    typer.Option(
        "--split-core",
        min=0.0,
        max=1.0,
        help="Split touching buildings where the probability dips between cores of at least this (0: off).",
        rich_help_panel=POSTPROCESS_PANEL,
    ),
]
NoPostprocessOpt = Annotated[
    bool,
    typer.Option(
        "--no-postprocess",
        help="Ignore the card's post-processing: only the steps given as options run.",
        rich_help_panel=POSTPROCESS_PANEL,
    ),
]
RunInstancesOpt = Annotated[
    bool | None,
    instances_option("Separate touching buildings with the model's instance head (default: when the card has one)."),
]
RunChunkSizeOpt = Annotated[int, chunk_size_option("Work unit size in source pixels.")]
MaxBuildingSizeOpt = Annotated[
    float, typer.Option("--max-building-size", help="Largest building (m); sets the chunk halo.")
]
RunNdsmOpt = Annotated[Path | None, elevation_option("ndsm", "Normalised DSM raster for height_m.")]
RunDsmOpt = Annotated[Path | None, elevation_option("dsm", "DSM raster (with --dtm) for height_m.")]
RunDtmOpt = Annotated[Path | None, elevation_option("dtm", "DTM raster (with --dsm).")]
NoTextureOpt = Annotated[bool, typer.Option("--no-texture", help="Skip texture and colour attributes.")]
SaveMasksOpt = Annotated[
    Path | None, typer.Option("--save-masks", help="Folder for probability maps (COG) per input or mosaic.")
]
PerImageOpt = Annotated[bool, typer.Option("--per-image", help="One output file per input in folder -o.")]
FormatOpt = Annotated[
    str | None,
    typer.Option("--format", help="gpkg, parquet or fgb: the --per-image files' format (default gpkg)."),
]
CrsOpt = Annotated[str | None, typer.Option("--crs", help="Output CRS (default: the inputs' CRS).")]

#: ``run`` flags that are ``RunConfig`` fields of the same name and value.
RUN_CONFIG_FLAGS = (
    "inputs",
    "output",
    "model",
    "glob",
    "device",
    "precision",
    "engine",
    "batch_size",
    "tta",
    "threshold",
    "tile_size",
    "overlap",
    "regularize",
    "opening_m",
    "merge_fragments",
    "split_core",
    "instances",
    "chunk_size",
    "ndsm",
    "dsm",
    "dtm",
    "save_masks",
    "per_image",
    "output_format",
    "overwrite",
    "crs",
    "separate",
)


def run(
    inputs: InputsArg,
    output: RunOutputOpt,
    model: ModelOpt = "aerial-buildings",
    glob: GlobOpt = "*.tif*",
    bands: BandsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    engine: EngineOpt = "auto",
    batch_size: BatchSizeOpt = 8,
    tta: RunTtaOpt = False,
    threshold: RunThresholdOpt = None,
    tile_size: TileSizeOpt = None,
    overlap: OverlapOpt = None,
    min_area: RunMinAreaOpt = None,
    simplify: RunSimplifyOpt = 0.2,
    regularize: RunRegularizeOpt = None,
    hole_area: HoleAreaOpt = None,
    opening_m: OpeningOpt = None,
    merge_fragments: MergeFragmentsOpt = None,
    split_core: SplitCoreOpt = None,
    no_postprocess: NoPostprocessOpt = False,
    instances: RunInstancesOpt = None,
    chunk_size: RunChunkSizeOpt = 4096,
    max_building_size: MaxBuildingSizeOpt = 60.0,
    ndsm: RunNdsmOpt = None,
    dsm: RunDsmOpt = None,
    dtm: RunDtmOpt = None,
    no_texture: NoTextureOpt = False,
    save_masks: SaveMasksOpt = None,
    per_image: PerImageOpt = False,
    output_format: FormatOpt = None,
    separate: SeparateOpt = False,
    crs: CrsOpt = None,
    scheduler: SchedulerOpt = None,
    threads: ThreadsOpt = 1,
    workers: WorkersOpt = None,
    cluster: ClusterOpt = None,
    slurm_queue: SlurmQueueOpt = None,
    slurm_account: SlurmAccountOpt = None,
    slurm_walltime: SlurmWalltimeOpt = "01:00:00",
    slurm_cores: SlurmCoresOpt = 4,
    slurm_memory: SlurmMemoryOpt = "16GB",
    slurm_gpus: SlurmGpusOpt = 0,
    slurm_interface: SlurmInterfaceOpt = None,
    slurm_prologue: SlurmPrologueOpt = None,
    slurm_directive: SlurmDirectiveOpt = None,
    print_job_script: PrintJobScriptOpt = False,
    run_dir: RunDirOpt = None,
    resume: ResumeRunOpt = None,
    preload: PreloadOpt = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment buildings in INPUTS and write polygons with attributes to a GeoPackage (or GeoParquet, FlatGeobuf)."""
    flags = dict(locals())  # the parameters by name: nothing else is defined yet
    executor = ExecutorOptions.from_flags(flags)
    if executor.print_job_script:
        echo_job_script(executor)
        return
    local = not (executor.scheduler or executor.workers or executor.cluster)
    if local:  # helpers import while this process imports the pipeline (bldgseg.band_helpers)
        start_helpers(spare_cores())
    try:
        config = build_run_config(flags, executor)
        from bldgseg.pipeline import run as run_pipeline

        with progress_bar() as update:
            result = call(run_pipeline, config, progress=update)
    finally:
        stop_helpers()
    report_run(result)


def build_run_config(flags: dict[str, Any], executor: ExecutorOptions) -> RunConfig:
    """The library's ``RunConfig`` from the ``run`` flags (by parameter name) and the executor options."""
    from bldgseg.pipeline import RunConfig

    return RunConfig(
        **{name: flags[name] for name in RUN_CONFIG_FLAGS},
        bands=parse_bands(flags["bands"]),
        min_area_m2=flags["min_area"],
        hole_area_m2=flags["hole_area"],
        postprocess=not flags["no_postprocess"],
        simplify_m=flags["simplify"],
        max_building_size_m=flags["max_building_size"],
        texture=not flags["no_texture"],
        **executor.run_config_fields(),
    )


def report_run(result: RunResult) -> None:
    """Skipped inputs, failed work units and the one-line summary of a finished run."""
    report_skipped(result.skipped)
    for error in result.failed_units:
        console.print(
            f"[yellow]failed:[/] {Path(error.path).name}: {error.reason}", highlight=False, soft_wrap=True
        )
    meta = result.metadata
    resumed = (
        f", {meta['units_resumed']} unit(s) kept from an earlier session" if meta.get("units_resumed") else ""
    )
    console.print(
        f"[green]wrote[/] {result.output}: {meta['buildings']} buildings from "
        f"{meta['images']} image(s) in {meta['seconds_total']:.1f} s{resumed}",
        highlight=False,
    )


def predict(
    inputs: InputsArg,
    output: Annotated[Path, output_option("Folder for probability COGs.")],
    model: ModelOpt = "aerial-buildings",
    glob: GlobOpt = "*.tif*",
    bands: BandsOpt = None,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    engine: EngineOpt = "auto",
    batch_size: Annotated[int, batch_size_option(help=None)] = 8,
    tta: Annotated[bool, tta_option("Average over flips.")] = False,
    threads: Annotated[int, threads_option()] = 1,
    separate: SeparateOpt = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a building-probability Cloud-Optimized GeoTIFF per input or mosaic of touching inputs (no polygons)."""
    from bldgseg.pipeline import RunConfig, predict_rasters

    config = RunConfig(
        inputs=inputs,
        output=output,
        model=model,
        glob=glob,
        bands=parse_bands(bands),
        device=device,
        precision=precision,
        engine=engine,
        batch_size=batch_size,
        tta=tta,
        save_masks=output,
        overwrite=overwrite,
        threads=threads,
        separate=separate,
    )
    with progress_bar() as update:
        written, skipped = call(predict_rasters, config, progress=update)
    report_skipped(skipped)
    console.print(f"[green]wrote[/] {len(written)} probability map(s) to {output}", highlight=False)


def vectorize(
    masks: Annotated[list[Path], typer.Argument(help="Mask or probability rasters (1 band).")],
    output: Annotated[Path, output_option("Output .gpkg, .parquet or .fgb.")],
    threshold: Annotated[float, threshold_option("Cut for probability rasters.", min=None, max=None)] = 0.5,
    min_area: Annotated[float, min_area_option("m²")] = DEFAULT_MIN_AREA_M2,
    simplify: Annotated[float, simplify_option("metres")] = 0.2,
    regularize: Annotated[bool, regularize_option()] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Turn building masks (0/1) or probability maps into polygons with shape attributes."""
    from bldgseg.enrich import vectorize_mask_files

    with progress_bar() as update:
        count, skipped = call(
            vectorize_mask_files,
            masks,
            output,
            threshold=threshold,
            min_area_m2=min_area,
            simplify_m=simplify,
            regularize=regularize,
            overwrite=overwrite,
            progress=update,
        )
    report_skipped(skipped)
    console.print(f"[green]wrote[/] {output}: {count} buildings", highlight=False)
