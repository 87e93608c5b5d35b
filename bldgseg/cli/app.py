"""The ``bldgseg`` command line: parsing, progress bars and error reporting only; the work is in the library."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from bldgseg import __version__
from bldgseg.cli.common import call, console, parse_bands, progress_bar, report_skipped, wide_console
from bldgseg.cli.evaluate import evaluate_command
from bldgseg.cli.street import street_command
from bldgseg.cli.train import train_command

app = typer.Typer(
    name="bldgseg",
    help="Building inventories from aerial imagery: segment, vectorize, measure, write GeoPackages.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.command("train")(train_command)
app.command("street")(street_command)


@functools.wraps(evaluate_command)
def evaluate(*args, **kwargs) -> None:
    """Compare predictions with ground truth: pixel and polygon (IoU >= 0.5) metrics, JSON/Markdown/HTML report."""
    call(evaluate_command, *args, **kwargs)


app.command("evaluate")(evaluate)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bldgseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Building inventories from aerial imagery."""


Inputs = Annotated[list[Path], typer.Argument(help="GeoTIFF/VRT files or folders (searched recursively).")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Bundled model name or path to a .safetensors.")]
GlobOpt = Annotated[str, typer.Option("--glob", help="File pattern when an input is a folder.")]
BandsOpt = Annotated[str | None, typer.Option("--bands", help="Bands to read as RGB, 1-based, e.g. 3,2,1.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
_SCALE = "Scaling out"


@app.command()
def run(
    inputs: Inputs,
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Output GeoPackage (or folder with --per-image).")
    ],
    model: ModelOpt = "aerial-buildings",
    glob: GlobOpt = "*.tif*",
    bands: BandsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Tiles per forward pass.")] = 8,
    tta: Annotated[bool, typer.Option("--tta", help="Average over flips (4x slower, smoother).")] = False,
    threshold: Annotated[
        float | None, typer.Option("--threshold", min=0.0, max=1.0, help="Probability cut (default: card's).")
    ] = None,
    tile_size: Annotated[int | None, typer.Option("--tile-size", help="Model window in pixels.")] = None,
    overlap: Annotated[int | None, typer.Option("--overlap", help="Window overlap in pixels.")] = None,
    min_area: Annotated[
        float, typer.Option("--min-area", help="Drop buildings smaller than this (m²).")
    ] = 4.0,
    simplify: Annotated[float, typer.Option("--simplify", help="Simplification tolerance in metres.")] = 0.2,
    regularize: Annotated[bool, typer.Option("--regularize", help="Square off building outlines.")] = False,
    instances: Annotated[
        bool | None,
        typer.Option(
            "--instances/--semantic",
            help="Separate touching buildings with the model's instance head (default: when the card has one).",
        ),
    ] = None,
    chunk_size: Annotated[int, typer.Option("--chunk-size", help="Work unit size in source pixels.")] = 4096,
    max_building_size: Annotated[
        float, typer.Option("--max-building-size", help="Largest building (m); sets the chunk halo.")
    ] = 60.0,
    ndsm: Annotated[Path | None, typer.Option("--ndsm", help="Normalised DSM raster for height_m.")] = None,
    dsm: Annotated[Path | None, typer.Option("--dsm", help="DSM raster (with --dtm) for height_m.")] = None,
    dtm: Annotated[Path | None, typer.Option("--dtm", help="DTM raster (with --dsm).")] = None,
    no_texture: Annotated[
        bool, typer.Option("--no-texture", help="Skip texture and colour attributes.")
    ] = False,
    save_masks: Annotated[
        Path | None, typer.Option("--save-masks", help="Folder for probability maps (COG) per input.")
    ] = None,
    per_image: Annotated[
        bool, typer.Option("--per-image", help="One GeoPackage per input in folder -o.")
    ] = False,
    crs: Annotated[str | None, typer.Option("--crs", help="Output CRS (default: the inputs' CRS).")] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler", help="Address of a running dask.distributed scheduler.", rich_help_panel=_SCALE
        ),
    ] = None,
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="Work units in parallel (local).", rich_help_panel=_SCALE)
    ] = 1,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers",
            min=1,
            help="Worker processes of a local Dask cluster; with --cluster slurm, the number of SLURM jobs.",
            rich_help_panel=_SCALE,
        ),
    ] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster", help="'slurm': start workers as SLURM jobs (dask-jobqueue).", rich_help_panel=_SCALE
        ),
    ] = None,
    slurm_queue: Annotated[
        str | None, typer.Option("--slurm-queue", help="SLURM partition.", rich_help_panel=_SCALE)
    ] = None,
    slurm_account: Annotated[
        str | None, typer.Option("--slurm-account", help="SLURM account.", rich_help_panel=_SCALE)
    ] = None,
    slurm_walltime: Annotated[
        str, typer.Option("--slurm-walltime", help="Wall time per job, HH:MM:SS.", rich_help_panel=_SCALE)
    ] = "01:00:00",
    slurm_cores: Annotated[
        int, typer.Option("--slurm-cores", min=1, help="CPUs per job.", rich_help_panel=_SCALE)
    ] = 4,
    slurm_memory: Annotated[
        str, typer.Option("--slurm-memory", help="Memory per job, e.g. 16GB.", rich_help_panel=_SCALE)
    ] = "16GB",
    slurm_gpus: Annotated[
        int, typer.Option("--slurm-gpus", min=0, help="GPUs per job (--gres=gpu:N).", rich_help_panel=_SCALE)
    ] = 0,
    slurm_interface: Annotated[
        str | None,
        typer.Option("--slurm-interface", help="Network interface, e.g. ib0.", rich_help_panel=_SCALE),
    ] = None,
    slurm_prologue: Annotated[
        list[str] | None,
        typer.Option(
            "--slurm-prologue",
            help="Shell line run before each worker, e.g. 'source ~/venv/bin/activate' (repeatable).",
            rich_help_panel=_SCALE,
        ),
    ] = None,
    slurm_directive: Annotated[
        list[str] | None,
        typer.Option(
            "--slurm-directive",
            help="Extra #SBATCH directive, e.g. --constraint=a100.",
            rich_help_panel=_SCALE,
        ),
    ] = None,
    print_job_script: Annotated[
        bool,
        typer.Option(
            "--print-job-script",
            help="Print the SLURM job script and exit (no job submitted).",
            rich_help_panel=_SCALE,
        ),
    ] = False,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            "--run-dir",
            help="Keep finished work units here (part files + manifest); default: a hidden folder next to -o, "
            "removed after success.",
            rich_help_panel=_SCALE,
        ),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue the interrupted run in this run directory (same options): finished units are kept.",
            rich_help_panel=_SCALE,
        ),
    ] = None,
    preload: Annotated[
        list[str] | None,
        typer.Option(
            "--preload",
            help="Module or .py file imported first, here and in every worker (custom architectures).",
            rich_help_panel=_SCALE,
        ),
    ] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Segment buildings in INPUTS and write polygons with attributes to a GeoPackage."""
    from bldgseg.executors import SlurmOptions
    from bldgseg.pipeline import RunConfig
    from bldgseg.pipeline import run as run_pipeline

    if run_dir is not None and resume is not None and run_dir.resolve() != resume.resolve():
        raise typer.BadParameter("--run-dir and --resume name different folders; give one of them")
    if cluster is not None and cluster != "slurm":
        raise typer.BadParameter(f"--cluster {cluster!r}: only 'slurm' is supported", param_hint="--cluster")
    slurm = None
    if cluster == "slurm":
        slurm = SlurmOptions(
            jobs=workers or 1,
            queue=slurm_queue,
            account=slurm_account,
            walltime=slurm_walltime,
            cores=slurm_cores,
            memory=slurm_memory,
            gpus=slurm_gpus,
            interface=slurm_interface,
            prologue=tuple(slurm_prologue or ()),
            extra_directives=tuple(slurm_directive or ()),
        )
    if print_job_script:
        from bldgseg.executors import slurm_cluster

        if slurm is None:
            raise typer.BadParameter("--print-job-script needs --cluster slurm")
        job = call(slurm_cluster, slurm, tuple(preload or ()))
        try:
            typer.echo(job.job_script())
        finally:
            job.close()
        return

    config = RunConfig(
        inputs=inputs,
        output=output,
        model=model,
        glob=glob,
        bands=parse_bands(bands),
        device=device,
        batch_size=batch_size,
        tta=tta,
        threshold=threshold,
        tile_size=tile_size,
        overlap=overlap,
        min_area_m2=min_area,
        simplify_m=simplify,
        regularize=regularize,
        instances=instances,
        chunk_size=chunk_size,
        max_building_size_m=max_building_size,
        ndsm=ndsm,
        dsm=dsm,
        dtm=dtm,
        texture=not no_texture,
        save_masks=save_masks,
        per_image=per_image,
        overwrite=overwrite,
        crs=crs,
        scheduler=scheduler,
        threads=threads,
        workers=workers,
        cluster=cluster,
        slurm=slurm,
        run_dir=resume or run_dir,
        resume=resume is not None,
        preload=tuple(preload or ()),
    )
    with progress_bar() as update:
        result = call(run_pipeline, config, progress=update)
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


@app.command()
def predict(
    inputs: Inputs,
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for probability COGs.")],
    model: ModelOpt = "aerial-buildings",
    glob: GlobOpt = "*.tif*",
    bands: BandsOpt = None,
    device: DeviceOpt = "auto",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1)] = 8,
    tta: Annotated[bool, typer.Option("--tta", help="Average over flips.")] = False,
    threads: Annotated[int, typer.Option("--threads", min=1)] = 1,
    overwrite: OverwriteOpt = False,
) -> None:
    """Write a building-probability Cloud-Optimized GeoTIFF per input (no polygons)."""
    from bldgseg.pipeline import RunConfig, predict_rasters

    config = RunConfig(
        inputs=inputs,
        output=output,
        model=model,
        glob=glob,
        bands=parse_bands(bands),
        device=device,
        batch_size=batch_size,
        tta=tta,
        save_masks=output,
        overwrite=overwrite,
        threads=threads,
    )
    with progress_bar() as update:
        written, skipped = call(predict_rasters, config, progress=update)
    report_skipped(skipped)
    console.print(f"[green]wrote[/] {len(written)} probability map(s) to {output}", highlight=False)


@app.command()
def vectorize(
    masks: Annotated[list[Path], typer.Argument(help="Mask or probability rasters (1 band).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output GeoPackage.")],
    threshold: Annotated[float, typer.Option("--threshold", help="Cut for probability rasters.")] = 0.5,
    min_area: Annotated[float, typer.Option("--min-area", help="m²")] = 4.0,
    simplify: Annotated[float, typer.Option("--simplify", help="metres")] = 0.2,
    regularize: Annotated[bool, typer.Option("--regularize")] = False,
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


@app.command()
def attributes(
    footprints: Annotated[Path, typer.Argument(help="Existing footprints in any OGR format.")],
    images: Annotated[list[Path], typer.Argument(help="Imagery to measure colour and texture from.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Output GeoPackage.")],
    layer: Annotated[str | None, typer.Option("--layer", help="Layer of FOOTPRINTS to read.")] = None,
    ndsm: Annotated[Path | None, typer.Option("--ndsm")] = None,
    dsm: Annotated[Path | None, typer.Option("--dsm")] = None,
    dtm: Annotated[Path | None, typer.Option("--dtm")] = None,
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


def card_summary(metrics: dict) -> str:
    """One line of the card's headline accuracy."""
    test = metrics.get("test_kampala_unseen_city", {})
    if "pixel" in test:
        f1 = test.get("polygon_iou50", {}).get("f1")
        return f"Kampala (unseen) pixel IoU {test['pixel']['iou']:.2f}" + (
            f", polygon F1 {f1:.2f}" if f1 else ""
        )
    val = metrics.get("validation_pixel", {})
    if "miou_building_window_door_sky" in val:
        return f"val mIoU building/window/door/sky {val['miou_building_window_door_sky']:.2f}"
    return f"val IoU {val['iou']:.2f}" if "iou" in val else ""


@app.command()
def models() -> None:
    """List the registry's architectures and the bundled checkpoints."""
    from bldgseg.models import ModelCard, bundled_models, list_architectures

    table = Table(title="Bundled checkpoints")
    table.add_column("name", no_wrap=True)
    for column in ("architecture", "encoder", "GSD (m)", "tile", "classes", "metrics"):
        table.add_column(column)
    for name, path in sorted(bundled_models().items()):
        card = ModelCard.from_json(path.with_suffix(".json"))
        summary = card_summary(card.metrics)
        table.add_row(
            name,
            card.architecture,
            card.encoder,
            f"{card.gsd_m:g}",
            str(card.tile_size),
            ",".join(card.classes),
            summary,
        )
    wide_console().print(table)
    wide_console().print("Architectures: " + ", ".join(list_architectures()))


@app.command()
def info(
    inputs: Inputs,
    glob: GlobOpt = "*.tif*",
    bands: BandsOpt = None,
    model: ModelOpt = "aerial-buildings",
    chunk_size: Annotated[int, typer.Option("--chunk-size")] = 4096,
) -> None:
    """Describe inputs before a long run: CRS, GSD, bands, windows to process, problems found."""
    from bldgseg.report import describe_inputs

    rows, skipped = call(
        describe_inputs, inputs, glob=glob, bands=parse_bands(bands), model=model, chunk_size=chunk_size
    )
    table = Table(title=f"{len(rows)} usable raster(s), {len(skipped)} problem(s)")
    table.add_column("file", no_wrap=True)
    for column in ("CRS", "size", "GSD (m)", "bands", "dtype", "resample", "windows", "chunks"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            *[
                str(row[k])
                for k in ("file", "crs", "size", "gsd_m", "bands", "dtype", "resample", "windows", "chunks")
            ]
        )
    wide_console().print(table)
    report_skipped(skipped)
    if not rows:
        raise typer.Exit(2)
