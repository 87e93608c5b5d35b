"""Models: registry of architectures and checkpoints with model cards.

Cards and checkpoint paths (``ModelCard``, ``resolve_checkpoint`` ...) import no torch; the rest (``load_checkpoint``,
``build_model`` ...) is imported on first use, so ``bldgseg info`` and ``--help`` stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from bldgseg.models.card import (
    DEFAULT_MODEL,
    ModelCard,
    bundled_models,
    int8_ir_of,
    load_card,
    resolve_checkpoint,
)

#: Names imported on first use, and the module each comes from.
_LAZY = {
    "build_from_card": "bldgseg.models.checkpoint",
    "load_checkpoint": "bldgseg.models.checkpoint",
    "save_checkpoint": "bldgseg.models.checkpoint",
    "ARCHITECTURES": "bldgseg.models.registry",
    "build_model": "bldgseg.models.registry",
    "list_architectures": "bldgseg.models.registry",
    "register_architecture": "bldgseg.models.registry",
}

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_MODEL",
    "ModelCard",
    "build_from_card",
    "build_model",
    "bundled_models",
    "int8_ir_of",
    "list_architectures",
    "register_architecture",
    "load_card",
    "load_checkpoint",
    "resolve_checkpoint",
    "save_checkpoint",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
