"""``bldgseg adapt``: fine-tune a model to the user's region; flags -> AdaptConfig, progress, before/after table."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bldgseg.cli.common import call, console, progress_bar, wide_console
from bldgseg.cli.options import (
    DeviceOpt,
    OverwriteOpt,
    footprints_layer_option,
    model_option,
    out_folder_option,
)

if TYPE_CHECKING:
    from bldgseg.adapt import AdaptConfig

__all__ = ["adapt_command", "adapt_settings", "comparison_table"]

AdaptImagesArg = Annotated[
    list[Path], typer.Argument(help="Imagery of your region: GeoTIFFs/VRTs or folders (searched recursively).")
]
AdaptFootprintsOpt = Annotated[
    Path,
    typer.Option(
        "--footprints",
        help="Building footprints on those images, any OGR format: an OpenStreetMap extract, or a "
        "`bldgseg run` GeoPackage corrected in QGIS.",
    ),
]
AdaptOutOpt = Annotated[Path, out_folder_option("Folder for best.safetensors (+ card) and adapt_report.*.")]
AdaptModelOpt = Annotated[str, model_option("Model to adapt: a bundled name or a .safetensors path.")]
MinutesOpt = Annotated[
    float, typer.Option("--minutes", min=0.05, help="Training time budget; the schedule fits it.")
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the validation draw and of training.")]
ValFractionOpt = Annotated[
    float,
    typer.Option("--val-fraction", min=0.05, max=0.5, help="Share of the tiles held out (whole blocks)."),
]


def adapt_command(
    images: AdaptImagesArg,
    footprints: AdaptFootprintsOpt,
    out: AdaptOutOpt,
    footprints_layer: Annotated[str | None, footprints_layer_option()] = None,
    model: AdaptModelOpt = "aerial-buildings",
    minutes: MinutesOpt = 10.0,
    device: DeviceOpt = "auto",
    val_fraction: ValFractionOpt = 0.2,
    seed: SeedOpt = 0,
    overwrite: OverwriteOpt = False,
) -> None:
    """Fine-tune a model to your region from footprints; scores it before and after on held-out tiles.

    Writes OUT/best.safetensors with its card (use it with `bldgseg run --model OUT/best.safetensors`),
    OUT/adapt_report.json and .md. Ctrl-C during training keeps the best checkpoint so far.
    """
    from bldgseg.adapt import adapt

    config = adapt_settings(dict(locals()))
    console.print(
        f"adapting [bold]{config.model}[/] for {config.minutes:g} minutes into {config.out_dir}",
        highlight=False,
    )
    try:
        with progress_bar() as update:
            result = call(adapt, config, progress=update, on_epoch=_epoch_line)
    except KeyboardInterrupt:
        best = Path(out) / "best.safetensors"
        kept = f"{best} kept (not scored)" if best.exists() else "nothing kept"
        console.print(f"[bold red]interrupted:[/] {kept}", highlight=False)
        raise typer.Exit(130) from None
    comparison = result.report["adaptation"]["comparison"]
    wide_console().print(comparison_table(comparison, result.report["adaptation"]["base_model"]["name"]))
    for warning in result.report["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(
        f"[green]wrote[/] {result.checkpoint} (+ .json card), {result.report_files['markdown']}; "
        f"use it with: bldgseg run IMAGES -o OUT.gpkg --model {result.checkpoint}",
        highlight=False,
        soft_wrap=True,
    )


def adapt_settings(flags: dict[str, Any]) -> AdaptConfig:
    """The command's flags as the library's :class:`~bldgseg.adapt.AdaptConfig`."""
    from bldgseg.adapt import AdaptConfig

    return AdaptConfig(
        images=list(flags["images"]),
        footprints=flags["footprints"],
        out_dir=flags["out"],
        model=flags["model"],
        footprints_layer=flags["footprints_layer"],
        minutes=flags["minutes"],
        device=flags["device"],
        overwrite=flags["overwrite"],
        seed=flags["seed"],
        val_fraction=flags["val_fraction"],
    )


def comparison_table(comparison: dict[str, Any], base: str) -> Table:
    """The before/after table on the validation part."""
    from bldgseg.adapt import comparison_rows

    table = Table(title=f"validation part ({comparison.get('scope', 'n/a')}): {base} vs adapted")
    table.add_column("metric", no_wrap=True)
    table.add_column(base, justify="right")
    table.add_column("adapted", justify="right")
    for row in comparison_rows(comparison):
        table.add_row(*row)
    return table


def _epoch_line(row: dict[str, Any]) -> None:
    """One line per validation round during training."""
    instance = f"  instance F1 {row['instance_f1']:.3f}" if "instance_f1" in row else ""
    best = "  [green]best[/]" if row["best"] else ""
    console.print(
        f"step {row['step']}: loss {row['loss']:.4f}  validation IoU {row['iou']:.4f}{instance}{best}",
        highlight=False,
    )
