"""Run configuration: RunConfig, the per-unit UnitSettings derived from it, and what defines resumable results."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bldgseg.errors import ModelError
from bldgseg.executors import SlurmOptions
from bldgseg.models import DEFAULT_MODEL, ModelCard, load_checkpoint, resolve_checkpoint
from bldgseg.runstate import file_digest

#: ``progress(stage, done, total)``: the library's progress callback (the CLI renders it).
ProgressFn = Callable[[str, int, int], None]


@dataclass
class RunConfig:
    """Everything one ``bldgseg run`` needs; defaults are the CLI's defaults."""

    inputs: list[Path]
    output: Path
    model: str = DEFAULT_MODEL
    glob: str = "*.tif*"
    bands: tuple[int, int, int] | None = None
    device: str = "auto"
    batch_size: int = 8
    tta: bool = False
    threshold: float | None = None
    tile_size: int | None = None
    overlap: int | None = None
    min_area_m2: float = 4.0
    simplify_m: float = 0.2
    regularize: bool = False
    chunk_size: int = 4096
    max_building_size_m: float = 60.0
    ndsm: Path | None = None
    dsm: Path | None = None
    dtm: Path | None = None
    texture: bool = True
    save_masks: Path | None = None
    per_image: bool = False
    overwrite: bool = False
    crs: str | None = None
    scheduler: str | None = None
    threads: int = 1
    #: Worker processes of a LocalCluster (``--workers``); with ``cluster="slurm"`` the number of SLURM jobs.
    workers: int | None = None
    #: ``"slurm"`` for a dask-jobqueue SLURMCluster configured by ``slurm``.
    cluster: str | None = None
    slurm: SlurmOptions | None = None
    #: Run directory for part files (default: a hidden folder next to the output, removed after success).
    run_dir: Path | None = None
    #: Continue the run in ``run_dir``: finished units are not run again.
    resume: bool = False
    #: Modules (names or .py paths) imported here and in every worker first, e.g. custom architectures.
    preload: tuple[str, ...] = ()
    #: Separate touching buildings with the model's instance head; None: when the model card's head is
    #: "instance". False runs an instance model's semantic channel alone (as a semantic model would).
    instances: bool | None = None


@dataclass
class UnitSettings:
    """The picklable part of the configuration a worker needs for one work unit."""

    model: str
    device: str
    batch_size: int
    tta: bool
    threshold: float
    tile_size: int | None
    overlap: int | None
    min_area_m2: float
    simplify_m: float
    regularize: bool
    texture: bool
    ndsm: Path | None
    dsm: Path | None
    dtm: Path | None
    keep_probability: bool
    vectorize: bool = True
    #: Group building pixels into instances (centre heatmap + offsets) instead of connected components.
    instances: bool = False
    #: Threads PyTorch uses in a worker process (set by cluster executors; None leaves the default).
    torch_threads: int | None = None
    #: GDAL block cache while a unit runs (MiB; None: GDAL's default of 5 % of RAM). Sized from the chunk, so a
    #: worker's memory does not grow with the amount of raster it has read.
    gdal_cache_mb: int | None = None


def require_aerial_card(card: ModelCard) -> None:
    """Aerial runs need a building model with a ground sample distance (not, e.g., the street ``facade`` model)."""
    if card.gsd_m <= 0 or card.classes != ["building"]:
        raise ModelError(
            f"{card.name}: not an aerial building model (classes {', '.join(card.classes)}, GSD {card.gsd_m:g} m); "
            "use an aerial model such as aerial-buildings (street-level models go with bldgseg street)"
        )


def unit_settings(config: RunConfig, vectorize: bool) -> tuple[ModelCard, UnitSettings]:
    """The model card (checked to load) and the per-unit settings derived from ``config``."""
    _, card = load_checkpoint(config.model)
    require_aerial_card(card)
    model = config.model
    if Path(model).exists():  # a path: absolute, so that workers elsewhere find it
        model = str(Path(model).resolve())

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else Path(path).resolve()

    settings = UnitSettings(
        model=model,
        device=config.device,
        batch_size=config.batch_size,
        tta=config.tta,
        threshold=card.threshold if config.threshold is None else config.threshold,
        tile_size=config.tile_size,
        overlap=config.overlap,
        min_area_m2=config.min_area_m2,
        simplify_m=config.simplify_m,
        regularize=config.regularize,
        texture=config.texture,
        ndsm=absolute(config.ndsm),
        dsm=absolute(config.dsm),
        dtm=absolute(config.dtm),
        keep_probability=config.save_masks is not None,
        vectorize=vectorize,
        instances=use_instances(card, config.instances),
    )
    return card, settings


def use_instances(card: ModelCard, requested: bool | None) -> bool:
    """Whether a run groups instances: as requested, else when the card's head is "instance"."""
    if requested and card.head != "instance":
        raise ModelError(
            f"{card.name}: has no instance head (head: {card.head}); drop --instances or use an instance model "
            "trained with bldgseg train --instances"
        )
    return card.head == "instance" if requested is None else bool(requested)


def result_settings(config: RunConfig, settings: UnitSettings, card: ModelCard) -> dict[str, Any]:
    """What defines a run's results (hashed into the run directory's manifest; resume needs it unchanged).

    Device, batch size, executor, output and overwrite are left out: a run may be resumed elsewhere.
    """
    weights = resolve_checkpoint(settings.model)
    return {
        "model": card.name,
        "model_weights_sha256": file_digest(weights),
        "model_card_sha256": file_digest(weights.with_suffix(".json")),
        "bands": list(config.bands) if config.bands else None,
        "glob": config.glob,
        "tta": settings.tta,
        "threshold": settings.threshold,
        "tile_size": settings.tile_size,
        "overlap": settings.overlap,
        "min_area_m2": settings.min_area_m2,
        "simplify_m": settings.simplify_m,
        "regularize": settings.regularize,
        "texture": settings.texture,
        "ndsm": str(settings.ndsm) if settings.ndsm else None,
        "dsm": str(settings.dsm) if settings.dsm else None,
        "dtm": str(settings.dtm) if settings.dtm else None,
        "chunk_size": config.chunk_size,
        "max_building_size_m": config.max_building_size_m,
        "vectorize": settings.vectorize,
        "instances": settings.instances,
    }
