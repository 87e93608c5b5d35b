"""Settings of ``bldgseg adapt``: what the user gives, the measured defaults, and the trainer's configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bldgseg.io import DEFAULT_GLOB
from bldgseg.models import DEFAULT_MODEL, ModelCard
from bldgseg.train.trainer import TrainConfig

__all__ = [
    "ADAPT_AUGMENTATION",
    "ADAPT_BATCH_SIZE",
    "ADAPT_CROP",
    "ADAPT_LR",
    "DEFAULT_MINUTES",
    "MIN_BUILDINGS",
    "MIN_VALIDATION_BUILDINGS",
    "AdaptConfig",
    "adapted_name",
    "train_config_for",
]

#: Training time budget in minutes (CPU-sized); the learning-rate schedule fits it.
DEFAULT_MINUTES = 10.0
#: Fewer footprints on the images than this are refused: too few to learn a region from.
MIN_BUILDINGS = 20
#: The held-out validation part must hold at least this many buildings (so its scores mean something).
MIN_VALIDATION_BUILDINGS = 5
#: Settings measured on cities the bundled model never saw, not the test city (SpaceNet-2 halves; docs/accuracy.md,
#: "Adapting to a region"): lr 1e-3 (3e-4 gained less; 3e-3 no more), the trainer's default augmentation
#: (a lighter one gained no more), 8 crops of 256 px (the base model's own training batch).
ADAPT_LR = 1e-3
ADAPT_CROP = 256
ADAPT_BATCH_SIZE = 8
ADAPT_AUGMENTATION: dict[str, Any] = {}
#: Validation (and a checkpoint) every this many steps: a Ctrl-C loses at most this much training.
ADAPT_STEPS_PER_EPOCH = 25
#: Training samples are tiles of this many pixels at the model's GSD; the split keeps blocks of them whole.
SAMPLE_TILE_PX = 256


@dataclass
class AdaptConfig:
    """Everything one ``bldgseg adapt`` needs; defaults are the CLI's (the settings measured to work)."""

    images: list[Path]
    footprints: Path
    out_dir: Path
    model: str = DEFAULT_MODEL
    footprints_layer: str | None = None
    minutes: float = DEFAULT_MINUTES
    device: str = "auto"
    overwrite: bool = False
    seed: int = 0
    val_fraction: float = 0.2
    glob: str = DEFAULT_GLOB
    bands: tuple[int, int, int] | None = None
    lr: float = ADAPT_LR
    crop: int = ADAPT_CROP
    batch_size: int = ADAPT_BATCH_SIZE
    augmentation: dict[str, Any] = field(default_factory=lambda: dict(ADAPT_AUGMENTATION))
    steps_per_epoch: int = ADAPT_STEPS_PER_EPOCH
    #: Upper bound on epochs (the time budget normally ends training first; tests use a few).
    epochs: int = 100_000

    def budget_seconds(self) -> float:
        return float(self.minutes) * 60.0


def adapted_name(card: ModelCard, out_dir: Path) -> str:
    """The adapted model's name: the base model's and the output folder's."""
    return f"{card.name}-adapted-{Path(out_dir).resolve().name}"


def train_config_for(card: ModelCard, base_weights: Path, config: AdaptConfig, name: str) -> TrainConfig:
    """A trainer configuration that continues ``card``'s model (all its tensors) with the adapt settings.

    Architecture, encoder, head (an instance model stays one), GSD, tiling, thresholds and the contact gap
    between touching buildings in the targets come from the base card; the schedule is cosine over
    ``config.minutes``.
    """
    base_training = card.training.get("config", {}) if isinstance(card.training, dict) else {}
    return TrainConfig(
        name=name,
        architecture=card.architecture,
        encoder=card.encoder,
        encoder_weights="none",
        init_weights=str(base_weights),
        instances=card.head == "instance",
        center_sigma=float(base_training.get("center_sigma", TrainConfig.center_sigma)),
        contact_gap=int(base_training.get("contact_gap", 0) or 0),  # footprints: keep the base model's gaps
        center_threshold=card.center_threshold,
        nms_kernel=card.nms_kernel,
        classes=list(card.classes),
        gsd_m=card.gsd_m,
        crop=config.crop,
        batch_size=config.batch_size,
        epochs=max(1, int(config.epochs)),
        steps_per_epoch=config.steps_per_epoch,
        max_minutes=config.minutes if math.isfinite(config.minutes) else None,
        lr=config.lr,
        schedule="cosine",
        loss="dice",
        seed=config.seed,
        device=config.device,
        augmentation=dict(config.augmentation) or None,
        tile_size=card.tile_size,
        overlap=card.overlap,
        threshold=card.threshold,
        license=card.license,
    )
