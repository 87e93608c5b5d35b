"""``bldgseg train``: flags (or a YAML --config with the same names) -> datasets -> trainer."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from bldgseg.cli.common import call, console, progress_bar, report_skipped, wide_console
from bldgseg.cli.options import (
    batch_size_option,
    device_option,
    footprints_layer_option,
    instances_option,
    out_folder_option,
)

if TYPE_CHECKING:
    from bldgseg.train.sources import DataRequest
    from bldgseg.train.trainer import TrainConfig

__all__ = ["parse_region", "train_command", "train_settings"]


def parse_region(text: str | None) -> tuple[float, float, float, float] | None:
    """``"minlon,minlat,maxlon,maxlat"`` -> four floats."""
    if not text:
        return None
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4:
        raise typer.BadParameter(f"{text!r}: give minlon,minlat,maxlon,maxlat in degrees (EPSG:4326)")
    return values  # type: ignore[return-value]


ImagesArg = Annotated[
    list[Path] | None, typer.Argument(help="Imagery: GeoTIFFs or folders (or one folder of photos/images).")
]
FootprintsOpt = Annotated[
    Path | None, typer.Option("--footprints", help="Building footprints (any OGR format).")
]
MasksOpt = Annotated[
    Path | None, typer.Option("--masks", help="Folder of 0/1 masks matching the images by name.")
]
LabelsOpt = Annotated[Path | None, typer.Option("--labels", help="Folder of colour-coded label images.")]
PaletteOpt = Annotated[str | None, typer.Option("--palette", help="Label colours, e.g. labelmefacade.")]
SourceGsdOpt = Annotated[
    float | None, typer.Option("--source-gsd", help="GSD (m) of non-georeferenced images.")
]
GroupPatternOpt = Annotated[str | None, typer.Option("--group-pattern", help="Regex; group 1 = split unit.")]
TrainOutOpt = Annotated[Path, out_folder_option("Folder for best/last checkpoints and metrics.")]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with any of these options.")]
NameOpt = Annotated[str | None, typer.Option("--name", help="Model name in the card.")]
ArchOpt = Annotated[
    str | None,
    typer.Option("--arch", help="unet, pspnet, deeplabv3, deeplabv3plus, hrnet_ocr, … (bldgseg models)"),
]
EncoderWeightsOpt = Annotated[
    str | None,
    typer.Option("--encoder-weights", help="imagenet (offline EfficientNet-Lite), none, or a file."),
]
InitWeightsOpt = Annotated[
    Path | None,
    typer.Option(
        "--init-weights", help="Start from a bldgseg checkpoint (.safetensors); matching tensors load."
    ),
]
TrainInstancesOpt = Annotated[
    bool | None,
    instances_option(
        "Panoptic-DeepLab instance head (centre heatmap + offsets) so touching buildings separate."
    ),
]
GsdOpt = Annotated[float | None, typer.Option("--gsd", help="Training ground sample distance (m).")]
MaxMinutesOpt = Annotated[
    float | None, typer.Option("--max-minutes", help="Time budget; the schedule fits it.")
]
ScheduleOpt = Annotated[str | None, typer.Option("--schedule", help="cosine or onecycle.")]
LossOpt = Annotated[str | None, typer.Option("--loss", help="dice or lovasz (plus BCE/CE).")]
EarlyStoppingOpt = Annotated[int | None, typer.Option("--early-stopping", help="Patience in epochs.")]
ValRegionOpt = Annotated[
    str | None, typer.Option("--val-region", help="minlon,minlat,maxlon,maxlat held out for validation.")
]
ResumeTrainingOpt = Annotated[bool, typer.Option("--resume", help="Continue from OUT/last.*.")]

CpuPrecisionOpt = Annotated[
    str | None,
    typer.Option(
        "--cpu-precision",
        help="fp32 (default) or bf16 autocast for CPU training; bf16 is faster on some CPUs (measure first).",
    ),
]

#: Flags that are not training settings (the rest are, by name, except these renames).
NOT_SETTINGS = ("out", "config", "resume")
SETTING_NAMES = {"arch": "architecture", "gsd": "gsd_m"}


def train_command(
    images: ImagesArg = None,
    footprints: FootprintsOpt = None,
    footprints_layer: Annotated[str | None, footprints_layer_option()] = None,
    masks: MasksOpt = None,
    labels: LabelsOpt = None,
    palette: PaletteOpt = None,
    source_gsd: SourceGsdOpt = None,
    group_pattern: GroupPatternOpt = None,
    out: TrainOutOpt = Path("training"),
    config: ConfigOpt = None,
    name: NameOpt = None,
    arch: ArchOpt = None,
    encoder: Annotated[str | None, typer.Option("--encoder")] = None,
    encoder_weights: EncoderWeightsOpt = None,
    init_weights: InitWeightsOpt = None,
    instances: TrainInstancesOpt = None,
    contact_gap: Annotated[
        int | None,
        typer.Option(
            "--contact-gap",
            min=0,
            help="With --footprints: pixels of a building within this many of another one are background "
            "(1: a thin gap keeps touching roofs apart; semantic models).",
        ),
    ] = None,
    gsd: GsdOpt = None,
    crop: Annotated[int | None, typer.Option("--crop")] = None,
    batch_size: Annotated[int | None, batch_size_option(help=None, min=None)] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    steps_per_epoch: Annotated[int | None, typer.Option("--steps-per-epoch")] = None,
    max_minutes: MaxMinutesOpt = None,
    lr: Annotated[float | None, typer.Option("--lr")] = None,
    schedule: ScheduleOpt = None,
    loss: LossOpt = None,
    early_stopping: EarlyStoppingOpt = None,
    val_fraction: Annotated[float | None, typer.Option("--val-fraction")] = None,
    val_region: ValRegionOpt = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    device: Annotated[str | None, device_option(help=None)] = None,
    cpu_precision: CpuPrecisionOpt = None,
    resume: ResumeTrainingOpt = False,
) -> None:
    """Train a segmentation model; writes OUT/best.safetensors (+ .json model card) and OUT/metrics.csv."""
    flags = dict(locals())  # the parameters by name: nothing else is defined yet
    from bldgseg.train.augment import build_augmentation
    from bldgseg.train.trainer import dump_json, train

    request, train_config = split_settings(train_settings(flags))
    train_set, val_set = load_training_data(request, train_config)
    table, on_epoch = epoch_reporter()
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
    report_training(summary, Path(out))


def train_settings(flags: dict[str, Any]) -> dict[str, Any]:
    """The ``--config`` YAML's settings, overridden by the flags given (those not None)."""
    from bldgseg.train.trainer import load_config

    settings: dict[str, Any] = call(load_config, flags["config"]) if flags["config"] else {}
    given = {SETTING_NAMES.get(flag, flag): value for flag, value in flags.items() if flag not in NOT_SETTINGS}
    given["images"] = flags["images"] or None
    given["init_weights"] = str(flags["init_weights"]) if flags["init_weights"] else None
    given["val_region"] = parse_region(flags["val_region"])
    settings.update({key: value for key, value in given.items() if value is not None})
    return settings


def split_settings(settings: dict[str, Any]) -> tuple[DataRequest, TrainConfig]:
    """Settings -> where the data is (``DataRequest``) and how to train (``TrainConfig``); unknown keys refused."""
    from bldgseg.train.sources import DataRequest
    from bldgseg.train.trainer import TrainConfig

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
    return request, TrainConfig(**{k: v for k, v in settings.items() if k in train_keys})


def load_training_data(request: DataRequest, train_config: TrainConfig) -> tuple[list, list]:
    """Load the samples (their classes into ``train_config``) and split them into training and validation."""
    from bldgseg.train.sources import load_samples, skipped_of, split_samples

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
    return train_set, val_set


def epoch_reporter() -> tuple[Table, Callable[[dict], None]]:
    """A table of the epochs for the end, and the ``on_epoch`` callback that prints a line and fills it."""
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

    return table, on_epoch


def report_training(summary: dict[str, Any], out: Path) -> None:
    """The one-line result: best score, epoch, why training stopped, where the checkpoint is."""
    selected = (
        "" if summary["selected_on"] == "iou" else f" ({summary['selected_on']} {summary['best_score']:.4f})"
    )
    console.print(
        f"[green]best[/] IoU {summary['best_iou']:.4f}{selected} at epoch {summary['best_epoch']} "
        f"({summary['stopped']}); checkpoint {out / 'best.safetensors'}",
        highlight=False,
    )
