"""``adapt``: fine-tune a model on the user's region and score it, before and after, on held-out tiles.

Steps: refuse what cannot work (output folder, images, footprints) before writing anything; cut the images
into tiles with the footprints burnt in; hold out whole blocks for validation; score the base model there
through ``bldgseg run`` + ``bldgseg evaluate``; continue training the base model (all its tensors, its head) with
the shared trainer for the time budget; publish the best checkpoint with its card; score it the same way.
A Ctrl-C during training keeps the best checkpoint so far.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyogrio

from bldgseg.adapt.card import publish_checkpoint
from bldgseg.adapt.inputs import Region, read_region
from bldgseg.adapt.measure import describe_device, validation_scores
from bldgseg.adapt.report import REPORT_NAMES, write_adapt_report
from bldgseg.adapt.scoring import score_model
from bldgseg.adapt.settings import (
    MIN_BUILDINGS,
    MIN_VALIDATION_BUILDINGS,
    SAMPLE_TILE_PX,
    AdaptConfig,
    adapted_name,
    train_config_for,
)
from bldgseg.adapt.split import buildings_in, split_region
from bldgseg.adapt.validation_images import held_out_windows, validation_rasters
from bldgseg.devices import resolve_device
from bldgseg.errors import OutputExistsError
from bldgseg.files import FOLDER_HINT, refuse_existing
from bldgseg.models import ModelCard, load_checkpoint, resolve_checkpoint
from bldgseg.pipeline import require_aerial_card
from bldgseg.progress import ProgressFn
from bldgseg.train.augment import build_augmentation
from bldgseg.train.data import TrainSample
from bldgseg.train.footprint_samples import load_geotiff_footprints
from bldgseg.train.trainer import TrainConfig, train

__all__ = ["OUTPUT_NAMES", "WORK_DIR", "AdaptResult", "adapt", "check_output"]

#: What ``adapt`` writes into the output folder (``--overwrite`` replaces exactly these).
OUTPUT_NAMES = ("best.safetensors", "best.json", "metrics.csv", *REPORT_NAMES)
#: Scratch folder inside the output folder (training run, footprints, validation crops), removed at the end.
WORK_DIR = ".adapt-work"

EpochFn = Callable[[dict[str, Any]], None]


@dataclass
class AdaptResult:
    """The adapted checkpoint, the report (``adapt_report.json``'s content) and the report files."""

    checkpoint: Path
    report: dict[str, Any]
    report_files: dict[str, Path]


@dataclass
class _Data:
    footprints: Path
    train: list[TrainSample]
    val: list[TrainSample]
    val_images: list[Path]


def check_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse a file, or an existing folder without ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputExistsError(f"{out_dir}: is a file; choose a folder with -o")
    refuse_existing(out_dir, overwrite, FOLDER_HINT)


def adapt(
    config: AdaptConfig, progress: ProgressFn | None = None, on_epoch: EpochFn | None = None
) -> AdaptResult:
    """Adapt ``config.model`` to the region of ``config.images`` / ``config.footprints`` (see the module doc)."""
    out_dir = Path(config.out_dir)
    check_output(out_dir, config.overwrite)
    base_path = resolve_checkpoint(config.model)
    _, card = load_checkpoint(base_path)
    require_aerial_card(card)
    region = read_region(
        config.images, config.footprints, config.footprints_layer, MIN_BUILDINGS, config.glob, config.bands
    )
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (*OUTPUT_NAMES, WORK_DIR):
        _remove(out_dir / name)
    work = out_dir / WORK_DIR
    try:
        return _adapt_in(config, card, base_path, region, work, progress, on_epoch)
    except BaseException:
        if created and not (out_dir / "best.safetensors").exists():
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    finally:
        _remove(work)


def _adapt_in(
    config: AdaptConfig,
    card: ModelCard,
    base_path: Path,
    region: Region,
    work: Path,
    progress: ProgressFn | None,
    on_epoch: EpochFn | None,
) -> AdaptResult:
    out_dir = Path(config.out_dir)
    device = resolve_device(config.device)
    data = _prepare_data(config, card, region, work)
    train_config = train_config_for(card, base_path, config, adapted_name(card, out_dir))
    train_config.validate()

    def scores(model: Path, label: str) -> dict[str, Any]:
        pipeline = score_model(
            model,
            data.val_images,
            data.footprints,
            "buildings",
            work / f"{label}.gpkg",
            config.device,
            _staged(progress, f"{label} model"),
        )
        pixel = validation_scores(model, data.val, train_config, device)
        return {**pipeline, "validation_loss": pixel["loss"], "validation": pixel}

    before = scores(base_path, "base")
    summary = _train(train_config, data, work / "training", progress, on_epoch, config.budget_seconds())
    base_raw = json.loads(base_path.with_suffix(".json").read_text())
    adaptation = _adaptation(config, card, base_path, region, data, summary, describe_device(device))
    adaptation["comparison"] = {"scope": before["scope"], "base": before}
    checkpoint = publish_checkpoint(work / "training", out_dir, base_raw, adaptation)
    after = scores(checkpoint, "adapted")
    adaptation["comparison"]["adapted"] = after
    publish_checkpoint(work / "training", out_dir, base_raw, adaptation)
    shutil.copyfile(work / "training" / "metrics.csv", out_dir / "metrics.csv")
    report = {
        "checkpoint": str(checkpoint),
        "card": str(checkpoint.with_suffix(".json")),
        "adaptation": adaptation,
        "warnings": _warnings(before, after, card.name),
    }
    return AdaptResult(checkpoint, report, write_adapt_report(out_dir, report))


def _prepare_data(config: AdaptConfig, card: ModelCard, region: Region, work: Path) -> _Data:
    """The footprints used (a GeoPackage), the tiles with them burnt in, the split and the validation rasters."""
    work.mkdir(parents=True, exist_ok=True)
    footprints = work / "footprints.gpkg"
    pyogrio.write_dataframe(
        region.footprints[[region.footprints.geometry.name]], footprints, layer="buildings"
    )
    samples = load_geotiff_footprints(
        [info.path for info in region.infos],
        footprints,
        card.gsd_m,
        layer="buildings",
        tile_px=SAMPLE_TILE_PX,
        block_tiles=1,
        glob=config.glob,
        bands=config.bands,
    )
    train_set, val_set = split_region(
        list(samples), config.val_fraction, config.seed, MIN_VALIDATION_BUILDINGS
    )
    return _Data(footprints, train_set, val_set, validation_rasters(val_set, work / "validation"))


def _train(
    config: TrainConfig,
    data: _Data,
    train_dir: Path,
    progress: ProgressFn | None,
    on_epoch: EpochFn | None,
    budget: float,
) -> dict[str, Any]:
    """The trainer's summary; after a Ctrl-C, the summary of the epochs done (the best checkpoint is kept)."""
    transform = build_augmentation(config.crop, config.augmentation)
    try:
        return train(
            config,
            data.train,
            data.val,
            train_dir,
            transform,
            progress=_timed(progress, budget),
            on_epoch=on_epoch,
        )
    except KeyboardInterrupt:
        if not (train_dir / "best.safetensors").exists():
            raise
    latest = train_dir / "last.json"  # written right after best.json at each epoch's end
    done = json.loads((latest if latest.exists() else train_dir / "best.json").read_text())["training"]
    return {
        "best_epoch": done["best_epoch"],
        "epochs": done["epochs_done"],
        "steps": done["steps"],
        "seconds": done["seconds"],
        "stopped": "interrupted (Ctrl-C): the best checkpoint so far is kept",
    }


def _adaptation(
    config: AdaptConfig,
    card: ModelCard,
    base_path: Path,
    region: Region,
    data: _Data,
    summary: dict[str, Any],
    device: str,
) -> dict[str, Any]:
    """What the card and the report say about this adaptation (the comparison is added by the caller)."""
    windows = held_out_windows(data.val)
    budget = config.minutes if math.isfinite(config.minutes) else None  # None: epochs bound the training
    settings = {
        k: v for k, v in asdict(config).items() if k not in ("images", "footprints", "out_dir", "overwrite")
    }
    return {
        "base_model": {"name": card.name, "checkpoint": str(base_path), "metrics": card.metrics},
        "data": {
            "images": [str(info.path) for info in region.infos],
            "footprints": str(Path(config.footprints).expanduser().resolve()),
            "footprints_layer": region.layer,
            "buildings_on_images": region.inside,
        },
        "region_bbox_lonlat": [round(v, 7) for v in region.bbox_lonlat],
        "split": {
            "method": "whole blocks of tiles held out (geographic), validation_fraction of the tiles",
            "training_tiles": len(data.train),
            "validation_tiles": len(data.val),
            "training_buildings": buildings_in(data.train),
            "validation_buildings": buildings_in(data.val),
            "validation_images": [Path(path).name for path in data.val_images],
            "validation_windows": [
                {"image": path, "window": [int(w.col_off), int(w.row_off), int(w.width), int(w.height)]}
                for (path, _group), w in sorted(windows.items())
            ],
        },
        "settings": {**settings, "minutes": budget},
        "minutes_budget": budget,
        "minutes_trained": round(summary["seconds"] / 60.0, 3),
        "steps": summary["steps"],
        "epochs": summary["epochs"],
        "best_epoch": summary["best_epoch"],
        "stopped": summary["stopped"],
        "device": device,
    }


def _warnings(before: dict[str, Any], after: dict[str, Any], base: str) -> list[str]:
    """A warning when the adapted model scores lower than its base on the validation part."""
    worse = [
        label
        for label, key in (("pixel IoU", "pixel_iou"), ("polygon F1", "polygon_f1"))
        if before.get(key) is not None and after.get(key) is not None and after[key] < before[key]
    ]
    if not worse:
        return []
    return [
        f"the adapted model scores lower than {base} on the validation part ({' and '.join(worse)}): "
        f"keep using {base}, or add footprints / a longer --minutes and adapt again"
    ]


def _timed(progress: ProgressFn | None, budget: float) -> ProgressFn | None:
    """Training progress as seconds of the time budget (the step count has no known end)."""
    if progress is None:
        return None
    if not math.isfinite(budget):
        return None
    start = time.monotonic()
    total = max(1, round(budget))

    def update(_stage: str, _done: int, _total: int) -> None:
        progress("training (seconds of the budget)", min(total, round(time.monotonic() - start)), total)

    return update


def _staged(progress: ProgressFn | None, label: str) -> ProgressFn | None:
    """Pipeline progress under ``label``."""
    if progress is None:
        return None
    return lambda stage, done, total: progress(f"{label}: {stage}", done, total)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()
