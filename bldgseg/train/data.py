"""Training samples held in memory at the model's ground sample distance, and tensor conversion."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from bldgseg.instance_targets import instance_target_stack
from bldgseg.io import SkippedInput
from bldgseg.models.checkpoint import IMAGENET_MEAN, IMAGENET_STD
from bldgseg.palettes import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "Sample", "SampleList", "SourceWindow", "TrainSample", "make_target", "to_tensor"]


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


@dataclass(frozen=True)
class SourceWindow:
    """Where a sample was read from a raster: the file and the window in its own pixels."""

    path: str
    col_off: int
    row_off: int
    width: int
    height: int


@dataclass
class TrainSample(Sample):
    """A :class:`Sample` with the unit used for splitting and, when georeferenced, its footprint.

    ``image`` (H, W, 3) uint8; ``mask`` (H, W) uint8: 0/1 for buildings or a class index, 255 = ignore;
    ``source`` the file (and tile) it came from; ``group`` the geographic unit kept whole by splits;
    ``bounds`` ``(minx, miny, maxx, maxy)`` in EPSG:4326, or None without georeferencing; ``origin`` the
    raster window it was read from (rasters with footprints), or None.
    """

    group: str = ""
    bounds: tuple[float, float, float, float] | None = None
    origin: SourceWindow | None = None

    def __post_init__(self) -> None:
        if not self.group:
            self.group = self.source


class SampleList(list):
    """``list[TrainSample]`` that also carries ``skipped``: the inputs left out, each with its reason."""

    def __init__(self, samples: Iterable[TrainSample] = (), skipped: Iterable[SkippedInput] = ()):
        super().__init__(samples)
        self.skipped: list[SkippedInput] = list(skipped)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float normalised with ImageNet statistics."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


def make_target(
    mask: np.ndarray, instances: np.ndarray | None, binary: bool, center_sigma: float | None = None
) -> torch.Tensor:
    """A (crop of a) sample's training target.

    (1, H, W) float for binary, (H, W) long for multi-class, and with ``center_sigma`` the (6, H, W) instance
    stack; without per-building ``instances`` the centre/offset weights are 0 (the semantic channel only).
    """
    if center_sigma is None:
        target = torch.from_numpy(np.ascontiguousarray(mask))
        return target.float()[None] if binary else target.long()
    if instances is None:
        stack = instance_target_stack(mask, np.zeros(mask.shape, np.int32), center_sigma)
        stack[4:] = 0.0  # unknown instances: no centre/offset supervision
    else:
        stack = instance_target_stack(mask, instances.astype(np.int32), center_sigma)
    return torch.from_numpy(stack)
