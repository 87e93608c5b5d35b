"""Blending overlapping window maps: a smooth weight per window, weighted sums on the host or the device."""

from __future__ import annotations

from typing import Any

import numpy as np
from rasterio.windows import Window

__all__ = ["DeviceBlend", "HostBlend", "blend_weight"]


def blend_weight(size: int, floor: float = 0.05) -> np.ndarray:
    """A 2-D raised-cosine (Hann) window with a floor, so overlapping windows fade into each other."""
    ramp = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    ramp = np.maximum(ramp, floor).astype(np.float32)
    return np.outer(ramp, ramp)



class HostBlend:
    """Weighted sums of window maps in NumPy arrays (the CPU path).

    ``shape`` (C, H, W): channels before ``soft`` are blended (sum of weight x map over sum of weights); the
    others are taken from the window with the largest weight at each pixel (the first one on ties)."""

    def __init__(self, shape: tuple[int, int, int], soft: int, weight: np.ndarray):
        self.soft, self.weight = soft, weight
        self.total = np.zeros(shape, np.float32)
        self.weights = np.zeros(shape[1:], np.float32)
        self.deepest = np.zeros(shape[1:], np.float32) if soft < shape[0] else None

    def add(self, batch: list[Window], maps: Any) -> None:
        """Add the maps (N x C x t x t, a NumPy array or a CPU tensor) of ``batch``'s windows."""
        soft, weight, tile = self.soft, self.weight, self.weight.shape[0]
        host = np.asarray(maps.cpu() if hasattr(maps, "cpu") else maps)
        for window, prob in zip(batch, host, strict=True):
            rows = slice(window.row_off, window.row_off + tile)
            cols = slice(window.col_off, window.col_off + tile)
            self.total[:soft, rows, cols] += prob[:soft] * weight
            self.weights[rows, cols] += weight
            if self.deepest is not None:
                better = weight > self.deepest[rows, cols]
                self.total[soft:, rows, cols][:, better] = prob[soft:][:, better]
                self.deepest[rows, cols][better] = weight[better]

    def result(self) -> np.ndarray:
        """The blended maps (C x H x W, in place of the sums: call once); 0 where no window reached (the sums
        are 0 there, divided by a tiny weight instead of a masked division)."""
        np.maximum(self.weights, np.float32(1e-30), out=self.weights)
        np.divide(self.total[: self.soft], self.weights, out=self.total[: self.soft])
        return self.total


class DeviceBlend:
    """:class:`HostBlend` in tensors on the model's device (CUDA), so maps never leave it until the end."""

    def __init__(self, shape: tuple[int, int, int], soft: int, weight: np.ndarray, device: Any):
        import torch

        self.torch = torch
        self.soft = soft
        self.weight = torch.from_numpy(weight).to(device)
        self.total = torch.zeros(shape, dtype=torch.float32, device=device)
        self.weights = torch.zeros(shape[1:], dtype=torch.float32, device=device)
        self.deepest = torch.zeros(shape[1:], dtype=torch.float32, device=device) if soft < shape[0] else None

    def add(self, batch: list[Window], maps: Any) -> None:
        torch = self.torch
        soft, weight, tile = self.soft, self.weight, self.weight.shape[0]
        for window, prob in zip(batch, maps.float(), strict=True):
            rows = slice(window.row_off, window.row_off + tile)
            cols = slice(window.col_off, window.col_off + tile)
            self.total[:soft, rows, cols] += prob[:soft] * weight
            self.weights[rows, cols] += weight
            if self.deepest is not None:
                better = weight > self.deepest[rows, cols]
                region = self.total[soft:, rows, cols]
                region.copy_(torch.where(better, prob[soft:], region))
                self.deepest[rows, cols] = torch.where(better, weight, self.deepest[rows, cols])

    def result(self) -> np.ndarray:
        torch = self.torch
        out = torch.zeros_like(self.total)
        covered = self.weights > 0
        out[: self.soft] = torch.where(
            covered, self.total[: self.soft] / torch.where(covered, self.weights, 1.0), 0.0
        )
        out[self.soft :] = self.total[self.soft :]
        return out.cpu().numpy()
