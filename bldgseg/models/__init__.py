"""Models: registry of architectures and checkpoints with model cards."""

from bldgseg.models.checkpoint import (
    DEFAULT_MODEL,
    ModelCard,
    build_from_card,
    bundled_models,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from bldgseg.models.panoptic import register_instance_architectures
from bldgseg.models.registry import ARCHITECTURES, build_model, list_architectures, register_architecture

register_instance_architectures()

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "ModelCard",
    "build_from_card",
    "build_model",
    "bundled_models",
    "list_architectures",
    "register_architecture",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]
