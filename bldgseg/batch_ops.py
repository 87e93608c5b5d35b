"""What the predictor does to a batch around the model, in NumPy (OpenVINO on the CPU) or torch (torch engine).

Both give the same numbers: normalisation with the card's mean and std, flips for TTA, the building probability
(sigmoid), class probabilities (softmax, or sigmoid for one channel), the instance maps, and the blending of
window maps (:class:`~bldgseg.blending.HostBlend` in NumPy; on CUDA :class:`~bldgseg.blending.DeviceBlend`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bldgseg.blending import DeviceBlend, HostBlend
from bldgseg.models.card import ModelCard
from bldgseg.models.instance_outputs import OUTPUT_CHANNELS

__all__ = ["NumpyOps", "TorchOps", "batch_ops"]

#: The instance models' offset channels (dy, dx), whose sign a flip of rows / columns changes.
_OFFSET_Y, _OFFSET_X = OUTPUT_CHANNELS.index("offset_y"), OUTPUT_CHANNELS.index("offset_x")


class NumpyOps:
    """NumPy arrays on the host: the OpenVINO engine takes uint8 batches and normalises them in its graph
    (:func:`bldgseg.engines.build_runner` with ``input_stats``) and gives float32 logits."""

    device = "cpu"

    @staticmethod
    def to_input(stack: np.ndarray) -> np.ndarray:
        """The uint8 batch (N x 3 x t x t) itself: OpenVINO normalises it with the card's mean and std."""
        return stack

    @staticmethod
    def flip(x: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
        return np.flip(x, dims) if dims else x

    @staticmethod
    def building_probability(logits: np.ndarray) -> np.ndarray:
        return _sigmoid(logits[:, :1])

    @staticmethod
    def class_probabilities(logits: np.ndarray) -> np.ndarray:
        if logits.shape[1] == 1:
            return _sigmoid(logits)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    @staticmethod
    def instance_maps(outputs: np.ndarray) -> np.ndarray:
        """As :func:`bldgseg.models.instance_outputs.instance_maps`: probability, centre, dy, dx."""
        return np.concatenate([_sigmoid(outputs[:, :1]), outputs[:, 1:].astype(np.float32)], axis=1)

    @staticmethod
    def unflip_instance_maps(maps: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
        """As :func:`bldgseg.models.instance_outputs.unflip_instance_maps`."""
        if not dims:
            return maps
        out = np.flip(maps, dims).copy()
        if 2 in dims:
            out[:, _OFFSET_Y] *= -1
        if 3 in dims:
            out[:, _OFFSET_X] *= -1
        return out

    @staticmethod
    def new_blend(shape: tuple[int, int, int], soft: int, weight: np.ndarray) -> HostBlend:
        return HostBlend(shape, soft, weight)


class TorchOps:
    """Torch tensors on the model's device; on CUDA batches go from pinned memory without waiting and the
    blending stays on the device."""

    def __init__(self, card: ModelCard, device: Any):
        import torch

        self.torch = torch
        self.device = device
        self.mean = torch.tensor(card.mean, device=device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(card.std, device=device).view(1, 3, 1, 1) * 255.0

    def to_input(self, stack: np.ndarray) -> Any:
        """A uint8 batch (N x 3 x t x t) normalised on the device, channels-last (torch's fastest layout)."""
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(stack)
            if self.device.type == "cuda":
                x = x.pin_memory()
            x = x.to(self.device, non_blocking=True).float()
            return ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)

    def flip(self, x: Any, dims: tuple[int, ...]) -> Any:
        return self.torch.flip(x, dims) if dims else x

    def building_probability(self, logits: Any) -> Any:
        return self.torch.sigmoid(logits[:, :1])

    def class_probabilities(self, logits: Any) -> Any:
        torch = self.torch
        return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)

    @staticmethod
    def instance_maps(outputs: Any) -> Any:
        from bldgseg.models.instance_outputs import instance_maps

        return instance_maps(outputs)

    @staticmethod
    def unflip_instance_maps(maps: Any, dims: tuple[int, ...]) -> Any:
        from bldgseg.models.instance_outputs import unflip_instance_maps

        return unflip_instance_maps(maps, dims)

    def new_blend(self, shape: tuple[int, int, int], soft: int, weight: np.ndarray) -> HostBlend | DeviceBlend:
        if self.device.type == "cuda":
            return DeviceBlend(shape, soft, weight, self.device)
        return HostBlend(shape, soft, weight)


def batch_ops(card: ModelCard, engine: str, device: Any) -> NumpyOps | TorchOps:
    """The operations for ``engine`` (``torch``: tensors on ``device``, a ``torch.device``; else NumPy)."""
    return TorchOps(card, device) if engine == "torch" else NumpyOps()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float32, copy=True)
    np.negative(x, out=x)
    with np.errstate(over="ignore"):  # exp(large) = inf -> probability 0, as torch.sigmoid gives
        np.exp(x, out=x)
    x += 1.0
    np.reciprocal(x, out=x)
    return x
