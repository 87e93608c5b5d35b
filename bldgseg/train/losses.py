"""Training losses: semantic, Panoptic-DeepLab instance, and one training step's loss for any registry model.

The semantic loss is BCE/CE + Dice or Lovász with label 255 ignored; a training step adds the HRNet-OCR
auxiliary output's loss where the model has one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import segmentation_models_pytorch as smp
import torch

from bldgseg.instance_targets import TARGET_CHANNELS
from bldgseg.palettes import IGNORE_INDEX

if TYPE_CHECKING:
    from bldgseg.train.trainer import TrainConfig

__all__ = ["LOSS_WEIGHTS", "Loss", "instance_loss", "make_loss", "training_loss"]

#: (semantic, centre MSE, offset L1) weights. Centre x200 as Panoptic-DeepLab (the heatmap MSE, averaged over
#: mostly-zero maps, is ~1e-3). Offsets x0.1 instead of its 0.01: its offsets are ~100 px (Cityscapes objects),
#: ours ~10 px (houses at 0.3 m), so 0.1 gives the offset term the same share of the loss.
LOSS_WEIGHTS: tuple[float, float, float] = (1.0, 200.0, 0.1)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_loss(config: TrainConfig) -> Loss:
    """BCE (binary) or cross-entropy (multi-class) plus Dice or Lovász, all ignoring label 255."""
    mode = "binary" if config.binary else "multiclass"
    if config.binary:
        base = smp.losses.SoftBCEWithLogitsLoss(ignore_index=IGNORE_INDEX)
    else:
        base = smp.losses.SoftCrossEntropyLoss(smooth_factor=0.0, ignore_index=IGNORE_INDEX)
    if config.loss == "dice":
        extra = smp.losses.DiceLoss(mode, ignore_index=IGNORE_INDEX)
    else:
        extra = smp.losses.LovaszLoss(mode, ignore_index=IGNORE_INDEX)
    return lambda logits, target: base(logits, target) + extra(logits, target)


def _split_targets(targets: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(targets, dict):
        return targets
    if targets.ndim != 4 or targets.shape[1] != len(TARGET_CHANNELS):
        raise ValueError(
            f"expected (N, 6, H, W) instance targets (TARGET_CHANNELS), got {tuple(targets.shape)}"
        )
    return {
        "semantic": targets[:, 0:1],
        "center": targets[:, 1:2],
        "offset": targets[:, 2:4],
        "center_weight": targets[:, 4:5],
        "offset_weight": targets[:, 5:6],
    }


def instance_loss(
    outputs: torch.Tensor | dict[str, torch.Tensor],
    targets: torch.Tensor | dict[str, torch.Tensor],
    base_semantic_loss: Loss,
    weights: tuple[float, float, float] = LOSS_WEIGHTS,
    return_parts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
    """Panoptic-DeepLab loss: ``w0 * semantic + w1 * centre MSE + w2 * offset L1`` (see :data:`LOSS_WEIGHTS`).

    ``outputs``: the model's stacked (N, 4, H, W) tensor or a dict with ``semantic`` (N,1,H,W), ``center``
    (N,1,H,W), ``offset`` (N,2,H,W). ``targets``: stacked (N, 6, H, W) as :data:`TARGET_CHANNELS` or a dict with
    those names (``offset`` holding both components). The semantic term is ``base_semantic_loss(logit,
    target)`` (e.g. the trainer's BCE + Dice, ignoring 255); the centre MSE is averaged over the pixels of
    non-zero centre weight, the offset L1 (summed over dy and dx) over the building pixels, as in the
    reference implementation. With ``return_parts`` the three unweighted terms come back too.
    """
    from bldgseg.models.instance_outputs import split_outputs

    out = split_outputs(outputs)
    tgt = _split_targets(targets)
    semantic = base_semantic_loss(out["semantic"], tgt["semantic"])
    cw = tgt["center_weight"].float()
    ow = tgt["offset_weight"].float()
    center = (((out["center"].float() - tgt["center"].float()) ** 2) * cw).sum() / cw.sum().clamp_min(1.0)
    offset = ((out["offset"].float() - tgt["offset"].float()).abs() * ow).sum() / ow.sum().clamp_min(1.0)
    total = weights[0] * semantic + weights[1] * center + weights[2] * offset
    if return_parts:
        parts = {
            k: float(v.detach()) for k, v in (("semantic", semantic), ("center", center), ("offset", offset))
        }
        return total, parts
    return total


def training_loss(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    base_semantic_loss: Loss,
    aux_weight: float = 0.4,
) -> torch.Tensor:
    """Loss of one training step for any registry model.

    Instance targets ((N, 6, H, W), :data:`TARGET_CHANNELS`) use :func:`instance_loss`, other targets
    ``base_semantic_loss``; a model with ``forward_with_aux`` (HRNet-OCR, alone or under the instance head)
    adds ``aux_weight`` times the semantic loss of its auxiliary output.
    """
    aux = None
    if hasattr(model, "forward_with_aux"):
        outputs, aux = model.forward_with_aux(images)
    else:
        outputs = model(images)
    instance = targets.ndim == 4 and targets.shape[1] == len(TARGET_CHANNELS)
    if instance:
        loss = instance_loss(outputs, targets, base_semantic_loss)
        semantic_target = targets[:, :1]
    else:
        loss = base_semantic_loss(outputs, targets)
        semantic_target = targets
    if aux is not None:
        loss = loss + aux_weight * base_semantic_loss(aux, semantic_target)
    return loss
