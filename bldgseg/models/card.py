"""Model cards and where checkpoints live: light (no torch), so ``bldgseg info`` starts fast."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bldgseg.errors import ModelError

__all__ = [
    "DEFAULT_MODEL",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ModelCard",
    "bundled_models",
    "int8_ir_of",
    "load_card",
    "resolve_checkpoint",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_MODEL = "aerial-buildings"


@dataclass
class ModelCard:
    """Everything needed to build, feed and interpret a checkpoint."""

    name: str
    architecture: str
    encoder: str
    classes: list[str] = field(default_factory=lambda: ["building"])
    input_bands: list[str] = field(default_factory=lambda: ["red", "green", "blue"])
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    tile_size: int = 512
    overlap: int = 64
    gsd_m: float = 0.3
    threshold: float = 0.5
    head: str = "semantic"
    #: Instance heads only: centre-heatmap peaks above this start a building, and peaks closer than half of
    #: ``nms_kernel`` (model pixels) are one building.
    center_threshold: float = 0.1
    nms_kernel: int = 13
    #: Smallest building (m²) ``bldgseg run`` keeps by default; None: ``DEFAULT_MIN_AREA_M2``.
    min_area_m2: float | None = None
    #: Default post-processing of ``bldgseg run`` (``bldgseg.postprocess.CARD_KEYS``: hole_area_m2, opening_m,
    #: merge_fragments, regularize), chosen on validation data; empty: every step off.
    postprocess: dict[str, Any] = field(default_factory=dict)
    training_data: list[dict[str, str]] = field(default_factory=list)
    license: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    #: The shipped int8 OpenVINO IR (``<name>.int8.xml``): ``weights_file_digest`` of the weights it was made
    #: from, calibration data and measured accuracy (``scripts/quantize_int8.py``); empty: none.
    int8: dict[str, Any] = field(default_factory=dict)
    notes: str = ""

    @property
    def num_outputs(self) -> int:
        """Binary building models have one logit channel; multi-class models one per class."""
        return 1 if len(self.classes) == 1 else len(self.classes)

    @classmethod
    def from_json(cls, path: Path) -> ModelCard:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelError(f"{Path(path).name}: cannot read model card ({exc}); check the file") from exc
        known = set(cls.__dataclass_fields__)
        missing = {"name", "architecture", "encoder"} - set(data)
        if missing:
            raise ModelError(
                f"{Path(path).name}: model card lacks {sorted(missing)}; re-export the checkpoint"
            )
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bundled_models() -> dict[str, Path]:
    """Names and weight paths of the checkpoints shipped inside the package."""
    folder = resources.files("bldgseg.models") / "weights"
    return {Path(str(p)).stem: Path(str(p)) for p in folder.iterdir() if str(p).endswith(".safetensors")}


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A bundled model name, a .safetensors/.json path, or a folder holding one checkpoint."""
    bundled = bundled_models()
    if str(name_or_path) in bundled:
        return bundled[str(name_or_path)]
    path = Path(name_or_path)
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            raise ModelError(
                f"{path}: expected one .safetensors checkpoint in the folder, found {len(found)}"
            )
        return found[0]
    weights = path.with_suffix(".safetensors")
    if weights.exists() and weights.with_suffix(".json").exists():
        return weights
    valid = ", ".join(sorted(bundled)) or "(none bundled)"
    raise ModelError(
        f"{name_or_path}: no such model; give a bundled name ({valid}) or a .safetensors path with its .json card"
    )


def load_card(name_or_path: str | Path) -> tuple[Path, ModelCard]:
    """A checkpoint's weights path and its card (read without torch); the card must sit beside the weights."""
    weights = resolve_checkpoint(name_or_path)
    card_path = weights.with_suffix(".json")
    if not card_path.exists():
        raise ModelError(
            f"{weights.name}: model card {card_path.name} is missing; keep it beside the weights"
        )
    return weights, ModelCard.from_json(card_path)


def int8_ir_of(weights: Path, card: ModelCard, weights_file_digest: str) -> Path | None:
    """The checkpoint's int8 OpenVINO IR (``<name>.int8.xml`` beside the weights), when there is one and the
    card says it was made from exactly these weights (``bldgseg.engines.file_digest``); else None."""
    xml = weights.with_name(f"{weights.stem}.int8.xml")
    if not xml.exists() or card.int8.get("weights_file_digest") != weights_file_digest:
        return None
    return xml
