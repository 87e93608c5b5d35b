"""``bldgseg train``: flags (or a YAML --config with the same names) -> datasets -> trainer."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bldgseg.cli.common import call, console, progress_bar, report_skipped, wide_console


def parse_region(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise typer.BadParameter(f"{text!r}: give minlon,minlat,maxlon,maxlat in degrees (EPSG:4326)")
    return values  # type: ignore[return-value]


def train_command(
    images: Annotated[
        list[Path] | None,
        typer.Argument(help="Imagery: GeoTIFFs or folders (or one folder of photos/images)."),
    ] = None,
    footprints: Annotated[
        Path | None, typer.Option("--footprints", help="Building footprints (any OGR format).")
    ] = None,
    footprints_layer: Annotated[str | None, typer.Option("--footprints-layer")] = None,
    masks: Annotated[
        Path | None, typer.Option("--masks", help="Folder of 0/1 masks matching the images by name.")
    ] = None,
    labels: Annotated[
        Path | None, typer.Option("--labels", help="Folder of colour-coded label images.")
    ] = None,
    palette: Annotated[
        str | None, typer.Option("--palette", help="Label colours, e.g. labelmefacade.")
    ] = None,
    source_gsd: Annotated[
        float | None, typer.Option("--source-gsd", help="GSD (m) of non-georeferenced images.")
    ] = None,
    group_pattern: Annotated[
        str | None, typer.Option("--group-pattern", help="Regex; group 1 = split unit.")
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for best/last checkpoints and metrics.")
    ] = Path("training"),
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML file with any of these options.")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Model name in the card.")] = None,
    arch: Annotated[
        str | None,
        typer.Option("--arch", help="unet, pspnet, deeplabv3, deeplabv3plus, hrnet_ocr, … (bldgseg models)"),
    ] = None,
    encoder: Annotated[str | None, typer.Option("--encoder")] = None,
    encoder_weights: Annotated[
        str | None,
        typer.Option("--encoder-weights", help="imagenet (offline EfficientNet-Lite), none, or a file."),
    ] = None,
    init_weights: Annotated[
        Path | None,
        typer.Option(
            "--init-weights", help="Start from a bldgseg checkpoint (.safetensors); matching tensors load."
        ),
    ] = None,
    instances: Annotated[
        bool | None,
        typer.Option(
            "--instances/--semantic",
            help="Panoptic-DeepLab instance head (centre heatmap + offsets) so touching buildings separate.",
        ),
    ] = None,
    gsd: Annotated[float | None, typer.Option("--gsd", help="Training ground sample distance (m).")] = None,
    crop: Annotated[int | None, typer.Option("--crop")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option("--steps-per-epoch")] = None,
    max_minutes: Annotated[
        float | None, typer.Option("--max-minutes", help="Time budget; the schedule fits it.")
    ] = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    schedule: Annotated[str | None, typer.Option("--schedule", help="cosine or onecycle.")] = None,
    loss: Annotated[str | None, typer.Option("--loss", help="dice or lovasz (plus BCE/CE).")] = None,
    early_stopping: Annotated[
        int | None, typer.Option("--early-stopping", help="Patience in epochs.")
    ] = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction")] = None,
    val_region: Annotated[
        str | None, typer.Option("--val-region", help="minlon,minlat,maxlon,maxlat held out for validation.")
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.*.")] = False,
) -> None:
    """Train a segmentation model; writes OUT/best.safetensors (+ .json model card) and OUT/metrics.csv."""
    from bldgseg.train.augment import build_augmentation
    from bldgseg.train.sources import DataRequest, load_samples, skipped_of, split_samples
    from bldgseg.train.trainer import TrainConfig, dump_json, load_config, train

    settings: dict[str, Any] = call(load_config, config) if config else {}
    flags = {
        "name": name,
        "architecture": arch,
        "encoder": encoder,
        "encoder_weights": encoder_weights,
        "init_weights": str(init_weights) if init_weights else None,
        "instances": instances,
        "gsd_m": gsd,
        "crop": crop,
        "batch_size": batch_size,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "max_minutes": max_minutes,
        "lr": lr,
        "schedule": schedule,
        "loss": loss,
        "early_stopping": early_stopping,
        "seed": seed,
        "device": device,
    }
    data_flags = {
        "images": images or None,
        "footprints": footprints,
        "footprints_layer": footprints_layer,
        "masks": masks,
        "labels": labels,
        "palette": palette,
        "source_gsd": source_gsd,
        "group_pattern": group_pattern,
        "val_fraction": val_fraction,
        "val_region": parse_region(val_region),
    }
    settings.update({k: v for k, v in {**flags, **data_flags}.items() if v is not None})
    data_keys = {f.name for f in dataclasses.fields(DataRequest)}
    train_keys = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = set(settings) - data_keys - train_keys
    if unknown:
        raise typer.BadParameter(f"unknown config keys: {', '.join(sorted(unknown))}")
    request = DataRequest(**{k: v for k, v in settings.items() if k in data_keys})
    request.images = [Path(p) for p in request.images]
    for key in ("footprints", "masks", "labels"):
        if getattr(request, key):
            setattr(request, key, Path(getattr(request, key)))
    if isinstance(request.val_region, list):
        request.val_region = tuple(request.val_region)
    train_config = TrainConfig(**{k: v for k, v in settings.items() if k in train_keys})

    with console.status("loading training data…"):
        samples, classes = call(load_samples, request, train_config.gsd_m)
    report_skipped(skipped_of(samples))
    if classes:
        train_config.classes = classes
    train_set, val_set = call(split_samples, list(samples), request, train_config.seed)
    console.print(
        f"{len(train_set)} training and {len(val_set)} validation samples "
        f"({len({getattr(s, 'group', s.source) for s in val_set})} held-out groups)",
        highlight=False,
    )
    table = Table(title="epochs")
    for column in ("epoch", "loss", "IoU", "precision", "recall", "seconds", ""):
        table.add_column(column)

    def on_epoch(row: dict) -> None:
        console.print(
            f"epoch {row['epoch']}: loss {row['loss']:.4f}  IoU {row['iou']:.4f}"
            + (f"  P {row['precision']:.3f}  R {row['recall']:.3f}" if "precision" in row else "")
            + (
                f"  instance F1 {row['instance_f1']:.3f}  count error {row['count_error']:+.1%}"
                if "instance_f1" in row
                else ""
            )
            + ("  [green]best[/]" if row["best"] else ""),
            highlight=False,
        )
        table.add_row(
            str(row["epoch"]),
            f"{row['loss']:.4f}",
            f"{row['iou']:.4f}",
            f"{row.get('precision', float('nan')):.3f}",
            f"{row.get('recall', float('nan')):.3f}",
            f"{row['seconds']:.0f}",
            "best" if row["best"] else "",
        )

    transform = call(build_augmentation, train_config.crop, train_config.augmentation)
    with progress_bar() as update:
        summary = call(
            train,
            train_config,
            train_set,
            val_set,
            out,
            transform,
            resume=resume,
            progress=update,
            on_epoch=on_epoch,
        )
    wide_console().print(table)
    dump_json(Path(out) / "summary.json", summary)
    selected = (
        "" if summary["selected_on"] == "iou" else f" ({summary['selected_on']} {summary['best_score']:.4f})"
    )
    console.print(
        f"[green]best[/] IoU {summary['best_iou']:.4f}{selected} at epoch {summary['best_epoch']} "
        f"({summary['stopped']}); checkpoint {Path(out) / 'best.safetensors'}",
        highlight=False,
    )
