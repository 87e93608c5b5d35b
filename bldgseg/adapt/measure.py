"""Measurements around an adaptation: a checkpoint's validation loss and pixel scores, and the device used."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bldgseg.models import load_checkpoint
from bldgseg.train.data import Sample
from bldgseg.train.trainer import TrainConfig
from bldgseg.train.validation import validate, validation_loss

__all__ = ["cpu_model", "describe_device", "validation_scores"]


def validation_scores(
    checkpoint: str | Path, samples: Sequence[Sample], config: TrainConfig, device: torch.device
) -> dict[str, Any]:
    """The trainer's validation metrics of ``checkpoint`` on ``samples``, plus its loss there (``loss``)."""
    model, _ = load_checkpoint(checkpoint)
    model.to(device)
    metrics = validate(model, samples, config, device)
    return {**metrics, "loss": validation_loss(model, samples, config, device)}


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def describe_device(device: torch.device) -> str:
    """``cuda:0 (NVIDIA …)`` or ``cpu (AMD EPYC, 2 threads)``."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({cpu_model()}, {torch.get_num_threads()} threads)"
