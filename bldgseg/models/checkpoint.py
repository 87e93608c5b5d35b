"""Checkpoints: fp16 safetensors weights plus a JSON model card that inference reads everything from."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from bldgseg.errors import ModelError
from bldgseg.files import atomic_replace
from bldgseg.models.registry import build_model

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


def build_from_card(card: ModelCard) -> nn.Module:
    """An untrained model of the card's architecture."""
    return build_model(card.architecture, card.encoder, num_classes=card.num_outputs)


def save_checkpoint(model: nn.Module, card: ModelCard, path: Path | str) -> Path:
    """Write ``path`` (.safetensors, fp16) and the card beside it (.json); returns the weights path."""
    weights = Path(path).with_suffix(".safetensors")
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to("cpu", torch.float16).contiguous() if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    card_text = json.dumps(card.to_dict(), indent=2)
    _publish(weights, lambda tmp: save_file(state, str(tmp), metadata={"name": card.name}))
    _publish(weights.with_suffix(".json"), lambda tmp: tmp.write_text(card_text))
    return weights


def _publish(dest: Path, write) -> None:
    """``write(tmp)``, then move it onto ``dest`` atomically, readable by everyone (0644)."""

    def build(tmp: Path) -> None:
        write(tmp)
        os.chmod(tmp, 0o644)

    atomic_replace(dest, build, ".tmp", sync=False)


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


def load_checkpoint(name_or_path: str | Path = DEFAULT_MODEL) -> tuple[nn.Module, ModelCard]:
    """Build the model described by the card and load its weights (float32, eval mode)."""
    weights = resolve_checkpoint(name_or_path)
    card_path = weights.with_suffix(".json")
    if not card_path.exists():
        raise ModelError(
            f"{weights.name}: model card {card_path.name} is missing; keep it beside the weights"
        )
    card = ModelCard.from_json(card_path)
    model = build_from_card(card)
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise ModelError(
            f"{weights.name}: weights do not match the card's model ({exc}); re-export it"
        ) from exc
    return model.eval(), card
