"""Checkpoints: fp16 safetensors weights plus a JSON model card that inference reads everything from."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from bldgseg.errors import ModelError
from bldgseg.files import atomic_replace
from bldgseg.models.card import (  # noqa: F401  (re-exported: the names' home before card.py)
    DEFAULT_MODEL,
    IMAGENET_MEAN,
    IMAGENET_STD,
    ModelCard,
    bundled_models,
    load_card,
    resolve_checkpoint,
)
from bldgseg.models.registry import build_model


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


def load_checkpoint(name_or_path: str | Path = DEFAULT_MODEL) -> tuple[nn.Module, ModelCard]:
    """Build the model described by the card and load its weights (float32, eval mode)."""
    weights, card = load_card(name_or_path)
    model = build_from_card(card)
    try:
        state = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(weights)).items()}
        model.load_state_dict(state, strict=True)
    except (RuntimeError, OSError) as exc:
        raise ModelError(
            f"{weights.name}: weights do not match the card's model ({exc}); re-export it"
        ) from exc
    return model.eval(), card
