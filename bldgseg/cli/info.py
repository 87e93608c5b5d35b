"""``bldgseg info`` and ``models``: describe the inputs of a run, list the models."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from bldgseg.cli.common import call, parse_bands, report_skipped, wide_console
from bldgseg.cli.options import (
    BandsOpt,
    DeviceOpt,
    EngineOpt,
    GlobOpt,
    InputsArg,
    ModelOpt,
    PrecisionOpt,
    SeparateOpt,
    chunk_size_option,
)

__all__ = ["card_summary", "info", "models"]

INFO_COLUMNS = ("file", "files", "crs", "size", "gsd_m", "bands", "dtype", "resample", "windows", "chunks")


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


def info(
    inputs: InputsArg,
    glob: GlobOpt = "*.tif*",
    bands: BandsOpt = None,
    model: ModelOpt = "aerial-buildings",
    chunk_size: Annotated[int, chunk_size_option()] = 4096,
    separate: SeparateOpt = False,
    device: DeviceOpt = "auto",
    precision: PrecisionOpt = "auto",
    engine: EngineOpt = "auto",
) -> None:
    """Describe inputs before a long run: mosaics of touching files, CRS, GSD, bands, windows, problems found,
    and the precision and engine a run here would use."""
    from bldgseg.errors import BldgsegError
    from bldgseg.report import describe_inference, describe_inputs, inference_hint

    rows, skipped = call(
        describe_inputs,
        inputs,
        glob=glob,
        bands=parse_bands(bands),
        model=model,
        chunk_size=chunk_size,
        separate=separate,
    )
    files = sum(len(row["tiles"]) for row in rows)
    table = Table(title=f"{len(rows)} raster(s) to process from {files} usable file(s), {len(skipped)} problem(s)")
    table.add_column("raster", no_wrap=True)
    for column in ("files", "CRS", "size", "GSD (m)", "bands", "dtype", "resample", "windows", "chunks"):
        table.add_column(column)
    for row in rows:
        table.add_row(*[str(len(row["tiles"]) if key == "files" else row[key]) for key in INFO_COLUMNS])
    wide_console().print(table)
    for row in rows:
        if len(row["tiles"]) > 1:
            wide_console().print(
                f"[bold]{row['file']}[/] ({row['size']} px, {len(row['tiles'])} files): {', '.join(row['tiles'])}",
                highlight=False,
                soft_wrap=True,
            )
    try:
        choice = describe_inference(device, precision, engine)
        wide_console().print(f"inference: {choice.describe()}", highlight=False)
        hint = inference_hint(model, choice, precision)
        if hint:
            wide_console().print(f"[cyan]hint:[/] {hint}", highlight=False)
    except BldgsegError as exc:
        wide_console().print(f"[yellow]inference:[/] {exc}", highlight=False)
    report_skipped(skipped)
    if not rows:
        raise typer.Exit(2)
