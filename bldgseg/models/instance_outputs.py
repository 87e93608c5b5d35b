"""The instance models' stacked outputs: channel order, split, blendable maps, flips undone (torch tensors).

Kept apart from :mod:`bldgseg.models.panoptic` (the network, which needs segmentation_models_pytorch and timm), so
inference from a cached OpenVINO IR never imports those; torch itself is imported only by the functions, so the
channel order is read without it (the NumPy twins in :mod:`bldgseg.batch_ops` use it too).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["OUTPUT_CHANNELS", "instance_maps", "split_outputs", "unflip_instance_maps"]

#: Channel order of :class:`~bldgseg.models.panoptic.PanopticBuildingNet`'s output.
OUTPUT_CHANNELS: tuple[str, ...] = ("semantic", "center", "offset_y", "offset_x")


def split_outputs(outputs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Stacked (N, 4, H, W) outputs -> {"semantic": (N,1,H,W), "center": (N,1,H,W), "offset": (N,2,H,W)}."""
    if isinstance(outputs, dict):
        return outputs
    if outputs.ndim != 4 or outputs.shape[1] != len(OUTPUT_CHANNELS):
        raise ValueError(f"expected (N, 4, H, W) instance outputs, got {tuple(outputs.shape)}")
    return {"semantic": outputs[:, 0:1], "center": outputs[:, 1:2], "offset": outputs[:, 2:4]}


def instance_maps(outputs: torch.Tensor) -> torch.Tensor:
    """Blendable maps from the raw outputs: (N, 4, H, W) = building probability, centre, dy, dx."""
    import torch

    return torch.cat([torch.sigmoid(outputs[:, :1].float()), outputs[:, 1:].float()], dim=1)


def unflip_instance_maps(maps: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Undo a flip of the input over ``dims`` (2 = rows, 3 = columns) on (N, 4, H, W) maps or outputs.

    The maps are flipped back and the offset component along each flipped axis changes sign.
    """
    if not dims:
        return maps
    import torch

    out = torch.flip(maps, dims).clone()
    if 2 in dims:
        out[:, 2] = -out[:, 2]
    if 3 in dims:
        out[:, 3] = -out[:, 3]
    return out
