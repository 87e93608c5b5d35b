"""Run configuration: RunConfig, the per-unit UnitSettings derived from it, and what defines resumable results."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bldgseg.errors import ModelError
from bldgseg.executors import SlurmOptions
from bldgseg.files import file_digest
from bldgseg.models import DEFAULT_MODEL, ModelCard, load_card, resolve_checkpoint
from bldgseg.postprocess import PostprocessSettings, resolve_postprocess
from bldgseg.precision import check_inference_names

#: ``progress(stage, done, total)``: the library's progress callback (the CLI renders it).


@dataclass
class RunConfig:
    """Everything one ``bldgseg run`` needs; defaults are the CLI's defaults."""

    #: Files, folders, URLs, STAC Items, list files (:func:`bldgseg.discovery.resolve_inputs`).
    inputs: list[Path | str]
    output: Path
    model: str = DEFAULT_MODEL
    glob: str = "*.tif*"
    bands: tuple[int, int, int] | None = None
    device: str = "auto"
    #: auto, fp32, bf16 or fp16 (see :func:`bldgseg.precision.choose_inference`).
    precision: str = "auto"
    #: auto, torch or openvino.
    engine: str = "auto"
    batch_size: int = 8
    tta: bool = False
    threshold: float | None = None
    tile_size: int | None = None
    overlap: int | None = None
    #: Post-processing (``bldgseg.postprocess``); None: the model card's value (else off, and a minimum area
    #: of ``DEFAULT_MIN_AREA_M2``), or off with ``postprocess=False``.
    min_area_m2: float | None = None
    simplify_m: float = 0.2
    regularize: bool | None = None
    hole_area_m2: float | None = None
    opening_m: float | None = None
    merge_fragments: bool | None = None
    #: Touching buildings split where the probability dips between cores of at least this value (0: off).
    split_core: float | None = None
    #: False: the card's post-processing defaults are ignored; only the steps given above run.
    postprocess: bool = True
    chunk_size: int = 4096
    max_building_size_m: float = 60.0
    ndsm: Path | None = None
    dsm: Path | None = None
    dtm: Path | None = None
    texture: bool = True
    save_masks: Path | None = None
    per_image: bool = False
    #: "gpkg", "parquet" or "fgb": the format of ``per_image`` outputs (default gpkg); for one output file its
    #: extension decides, and this, when given, must agree with it.
    output_format: str | None = None
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
    #: Every file on its own, as before mosaics: touching files are not read as one mosaic (``--separate``).
    separate: bool = False


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
    #: Requested precision and engine; each worker resolves ``auto`` for its own hardware.
    precision: str = "auto"
    engine: str = "auto"
    vectorize: bool = True
    #: Group building pixels into instances (centre heatmap + offsets) instead of connected components.
    instances: bool = False
    #: Threads PyTorch uses in a worker process (set by cluster executors; None leaves the default).
    torch_threads: int | None = None
    #: Units of a worker process on the model at once (set by the executor, see ``Executor.model_slots``).
    model_slots: int | None = None
    #: GDAL block cache while a unit runs (MiB; None: GDAL's default of 5 % of RAM). Sized from the chunk, so a
    #: worker's memory does not grow with the amount of raster it has read.
    gdal_cache_mb: int | None = None
    hole_area_m2: float = 0.0
    opening_m: float = 0.0
    merge_fragments: bool = False
    split_core: float = 0.0
    #: Largest building (m): the halo of a unit's row bands (:mod:`bldgseg.pipeline.bands`).
    max_building_size_m: float = 60.0
    #: Helper processes measuring a unit's row bands beside it (set by the executor, capped at
    #: ``bands.MAX_HELPERS``; 0: one piece, in place).
    post_processes: int = 0

    def postprocess(self) -> PostprocessSettings:
        """The post-processing of each unit's polygons (``bldgseg.postprocess``)."""
        return PostprocessSettings(
            min_area_m2=self.min_area_m2,
            hole_area_m2=self.hole_area_m2,
            opening_m=self.opening_m,
            merge_fragments=self.merge_fragments,
            split_core=self.split_core,
            regularize=self.regularize,
            simplify_m=self.simplify_m,
        )


def require_aerial_card(card: ModelCard) -> None:
    """Aerial runs need a building model with a ground sample distance (not, e.g., the street ``facade`` model)."""
    if card.gsd_m <= 0 or card.classes != ["building"]:
        raise ModelError(
            f"{card.name}: not an aerial building model (classes {', '.join(card.classes)}, GSD {card.gsd_m:g} m); "
            "use an aerial model such as aerial-buildings (street-level models go with bldgseg street)"
        )


def unit_settings(config: RunConfig, vectorize: bool) -> tuple[ModelCard, UnitSettings]:
    """The model card and the per-unit settings derived from ``config`` (the weights load in the workers)."""
    check_inference_names(config.precision, config.engine)
    _, card = load_card(config.model)
    require_aerial_card(card)
    model = config.model
    if Path(model).exists():  # a path: absolute, so that workers elsewhere find it
        model = str(Path(model).resolve())

    def absolute(path: Path | None) -> Path | None:
        return None if path is None else Path(path).resolve()

    post = resolve_postprocess(
        card,
        enabled=config.postprocess,
        simplify_m=config.simplify_m,
        min_area_m2=config.min_area_m2,
        hole_area_m2=config.hole_area_m2,
        opening_m=config.opening_m,
        merge_fragments=config.merge_fragments,
        split_core=config.split_core,
        regularize=config.regularize,
    )
    settings = UnitSettings(
        model=model,
        device=config.device,
        precision=config.precision.lower(),
        engine=config.engine.lower(),
        batch_size=config.batch_size,
        tta=config.tta,
        threshold=card.threshold if config.threshold is None else config.threshold,
        tile_size=config.tile_size,
        overlap=config.overlap,
        min_area_m2=post.min_area_m2,
        simplify_m=post.simplify_m,
        regularize=post.regularize,
        hole_area_m2=post.hole_area_m2,
        opening_m=post.opening_m,
        merge_fragments=post.merge_fragments,
        split_core=post.split_core,
        texture=config.texture,
        ndsm=absolute(config.ndsm),
        dsm=absolute(config.dsm),
        dtm=absolute(config.dtm),
        keep_probability=config.save_masks is not None,
        vectorize=vectorize,
        instances=use_instances(card, config.instances),
        max_building_size_m=config.max_building_size_m,
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


# ------------------------------------------------------------------------------------------ resume hash
# Every field of RunConfig and UnitSettings defines a run's results (and goes into the hash a resumed run must
# match) unless it is listed below with the reason it must not. A new option is therefore hashed by default.

#: UnitSettings fields left out of the resume hash.
UNIT_SETTINGS_UNHASHED: dict[str, str] = {
    "model": "a path that may differ between machines; hashed as the card name and weight/card digests",
    "device": "a run may be resumed on another device",
    "batch_size": "changes speed and memory, not the predictions",
    "keep_probability": "parts lacking a probability map are re-run when one is needed (RunDir.finished)",
    "torch_threads": "set by the executor",
    "model_slots": "set by the executor",
    "gdal_cache_mb": "a cache size, derived from the chunk size",
    "post_processes": "set by the executor; a unit in row bands gives the same buildings",
}

#: RunConfig fields left out of the resume hash. The fields UnitSettings also has are hashed through their
#: resolved UnitSettings value (a threshold of None as the card's, relative height-model paths made absolute).
RUN_CONFIG_UNHASHED: dict[str, str] = {
    "inputs": "each unit's id already names its raster (path, size, mtime) and windows",
    "output": "the parts are merged into it at the end; a resumed run may write elsewhere",
    "model": "hashed as the card name and weight/card digests",
    "device": "a run may be resumed on another device",
    "batch_size": "changes speed and memory, not the predictions",
    "save_masks": "parts lacking a probability map are re-run when one is needed (RunDir.finished)",
    "per_image": "only how the parts are merged",
    "output_format": "only how the parts are merged",
    "overwrite": "only whether existing outputs may be replaced",
    "crs": "parts are kept in their raster's CRS; the output CRS is applied when merging",
    "scheduler": "the executor",
    "threads": "the executor",
    "workers": "the executor",
    "cluster": "the executor",
    "slurm": "the executor",
    "run_dir": "where the parts are kept",
    "resume": "whether to continue, not what is computed",
    "preload": "imports that register code; the model itself is hashed by its weights and card",
}


def hashed_field_names(
    config: RunConfig | type[RunConfig] = RunConfig, settings: UnitSettings | type[UnitSettings] = UnitSettings
) -> tuple[list[str], list[str]]:
    """The fields of ``config`` and of ``settings`` (classes or instances) that go into the resume hash.

    A field hashed from both is taken from ``settings``, where it is resolved (threshold, absolute paths...).
    """
    settings_names = [f.name for f in fields(settings) if f.name not in UNIT_SETTINGS_UNHASHED]
    config_names = [
        f.name for f in fields(config) if f.name not in RUN_CONFIG_UNHASHED and f.name not in settings_names
    ]
    return config_names, settings_names


def result_settings(config: RunConfig, settings: UnitSettings, card: ModelCard) -> dict[str, Any]:
    """What defines a run's results (hashed into the run directory's manifest; resume needs it unchanged).

    Every field of ``config`` and ``settings`` but those of :data:`RUN_CONFIG_UNHASHED` and
    :data:`UNIT_SETTINGS_UNHASHED` (device, batch size, executor, output...: a run may be resumed elsewhere),
    plus the model's name and the digests of its weights and card.
    """
    weights = resolve_checkpoint(settings.model)
    values: dict[str, Any] = {
        "model": card.name,
        "model_weights_sha256": file_digest(weights),
        "model_card_sha256": file_digest(weights.with_suffix(".json")),
    }
    config_names, settings_names = hashed_field_names(config, settings)
    values.update((name, _json_value(getattr(config, name))) for name in config_names)
    values.update((name, _json_value(getattr(settings, name))) for name in settings_names)
    return values


def _json_value(value: Any) -> Any:
    """``value`` as it reads back from the manifest's JSON: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value
