"""Training samples: image/mask pairs held in memory at the model's ground sample distance."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from bldgseg.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD


@dataclass
class Sample:
    """One training image (H, W, 3 uint8) and its 0/1 mask (H, W uint8) at the target GSD."""

    image: np.ndarray
    mask: np.ndarray
    source: str


def resample_pair(image: np.ndarray, mask: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resize by ``scale`` (>1 enlarges): area averaging for the image, mask averaged then thresholded."""
    if abs(scale - 1.0) < 0.02:
        return image, mask
    h, w = mask.shape
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    image = cv2.resize(image, size, interpolation=interp)
    soft = cv2.resize(mask.astype(np.float32), size, interpolation=interp)
    return image, (soft >= 0.5).astype(np.uint8)


def default_augmentation(crop: int) -> A.Compose:
    """Flips, 90° and arbitrary rotation, scale jitter, colour and lighting noise, random crop."""
    return A.Compose(
        [
            A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_REFLECT_101),
            A.RandomRotate90(),
            A.HorizontalFlip(),
            A.Affine(scale=(0.85, 1.15), rotate=(-30, 30), border_mode=cv2.BORDER_REFLECT_101, p=0.6),
            A.RandomCrop(crop, crop),
            A.RandomBrightnessContrast(0.2, 0.2, p=0.7),
            A.HueSaturationValue(8, 20, 10, p=0.5),
            A.GaussNoise(std_range=(0.01, 0.04), p=0.2),
        ]
    )


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float normalised with ImageNet statistics."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


class PairDataset(Dataset):
    """Random augmented crops of in-memory samples; ``length`` crops make one epoch."""

    def __init__(
        self, samples: Sequence[Sample], crop: int = 256, augment: bool = True, length: int | None = None
    ):
        self.samples = list(samples)
        self.crop = crop
        self.length = length or len(self.samples)
        self.transform = (
            default_augmentation(crop)
            if augment
            else A.Compose(
                [A.PadIfNeeded(crop, crop, border_mode=cv2.BORDER_REFLECT_101), A.CenterCrop(crop, crop)]
            )
        )

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index % len(self.samples)]
        out = self.transform(image=sample.image, mask=sample.mask)
        return to_tensor(out["image"]), torch.from_numpy(out["mask"].astype(np.float32))[None]
