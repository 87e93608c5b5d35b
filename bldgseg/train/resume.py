"""Resumable training state: ``last.state.pt`` (plain tensors and numbers) and the per-epoch ``metrics.csv``.

The state holds only what ``torch.load(..., weights_only=True)`` reads: tensors, numbers, strings, lists and
dicts (the optimizer's ``state_dict`` included), so resuming never unpickles arbitrary objects.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from bldgseg.errors import InputError, one_line
from bldgseg.files import atomic_replace
from bldgseg.models import load_checkpoint

__all__ = ["STATE_FILE", "load_training_state", "plain", "save_training_state", "write_metrics_csv"]

STATE_FILE = "last.state.pt"


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python numbers/tensors, recursively (dicts, lists, tuples),
    so that ``torch.load(..., weights_only=True)`` reads it back."""
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    return value


def save_training_state(out_dir: Path, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> Path:
    """Write the optimizer state and the training counters (``state``) to ``out_dir/last.state.pt``, atomically."""
    payload = plain({"optimizer": optimizer.state_dict(), **state})
    return atomic_replace(Path(out_dir) / STATE_FILE, lambda tmp: torch.save(payload, tmp), ".pt", sync=False)


def load_training_state(
    out_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device
) -> dict[str, Any]:
    """Load ``out_dir/last.*`` into ``model`` and ``optimizer``; returns the training counters."""
    state_path = Path(out_dir) / STATE_FILE
    if not state_path.exists() or not (Path(out_dir) / "last.safetensors").exists():
        raise InputError(
            f"{out_dir}: nothing to resume (last.safetensors / last.state.pt missing); drop --resume"
        )
    loaded, _ = load_checkpoint(Path(out_dir) / "last.safetensors")
    model.load_state_dict(loaded.state_dict())
    try:
        saved = torch.load(state_path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        raise InputError(
            f"{state_path}: cannot be read as a training state ({one_line(exc)[:200]}); "
            "start again without --resume"
        ) from exc
    optimizer.load_state_dict(saved.pop("optimizer"))
    return saved


def write_metrics_csv(path: Path, history: list[dict]) -> None:
    """One row per epoch, every key seen in ``history`` as a column."""
    keys = list(dict.fromkeys(k for row in history for k in row))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)
