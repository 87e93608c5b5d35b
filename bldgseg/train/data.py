"""Training samples held in memory at the model's ground sample distance, and tensor conversion."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from bldgseg.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Sample:
    """One training image (H, W, 3 uint8) and its 0/1 mask (H, W uint8) at the target GSD.

    ``instances`` (H, W int32, optional): one positive id per building (from footprint polygons), 0 elsewhere;
    None when the labels do not separate buildings (mask-only data), which leaves such a sample out of the
    instance-centre and offset losses of an instance model.
    """

    image: np.ndarray
    mask: np.ndarray
    source: str
    instances: np.ndarray | None = field(default=None, kw_only=True)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float normalised with ImageNet statistics."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std
