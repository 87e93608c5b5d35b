"""Validation of a model on whole samples: pixel IoU/precision/recall/F1, instance F1, count error and loss."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from bldgseg.defaults import DEFAULT_MIN_AREA_M2
from bldgseg.instances import label_instances, match_instances
from bldgseg.palettes import IGNORE_INDEX
from bldgseg.train.data import Sample, make_target, to_tensor
from bldgseg.train.losses import make_loss, training_loss

if TYPE_CHECKING:
    from bldgseg.train.trainer import TrainConfig

__all__ = ["instance_counts", "selection_metric", "validate", "validation_loss"]


@torch.inference_mode()
def validate(model: nn.Module, samples: Sequence[Sample], config: TrainConfig, device: torch.device) -> dict:
    """Pixel metrics over whole validation samples (label 255 ignored); instance models add instance metrics."""
    model.eval()
    n = max(2, len(config.classes) + (1 if config.binary else 0))
    confusion = np.zeros((n, n), np.int64)
    counts = np.zeros(3, np.int64)  # matched, true, predicted instances
    for sample in samples:
        h, w = sample.mask.shape
        image = np.pad(sample.image, ((0, (-h) % 32), (0, (-w) % 32), (0, 0)), mode="reflect")
        logits = model(to_tensor(image)[None].to(device))[0, :, :h, :w].float()
        if config.binary:
            prob = torch.sigmoid(logits[0])
            pred = (prob >= config.threshold).long().cpu().numpy()
        else:
            pred = logits.argmax(0).cpu().numpy()
        if config.instances and sample.instances is not None:
            counts += instance_counts(sample, prob, logits[1:], config)
        keep = sample.mask != IGNORE_INDEX
        confusion += np.bincount(
            n * sample.mask[keep].astype(np.int64) + pred[keep], minlength=n * n
        ).reshape(n, n)
    return _metrics(confusion, counts, config)


@torch.inference_mode()
def validation_loss(
    model: nn.Module, samples: Sequence[Sample], config: TrainConfig, device: torch.device
) -> float:
    """The training loss (without augmentation) averaged over whole validation samples.

    Each sample is padded to a multiple of 32 (reflected image, ignored mask) and scored with the loss the
    trainer optimises (instance models: the instance loss, with centre/offset targets from the sample's ids).
    """
    model.eval()
    loss_fn = make_loss(config)
    sigma = config.center_sigma if config.instances else None
    losses = []
    for sample in samples:
        h, w = sample.mask.shape
        pad = ((0, (-h) % 32), (0, (-w) % 32))
        image = np.pad(sample.image, (*pad, (0, 0)), mode="reflect")
        mask = np.pad(sample.mask, pad, constant_values=IGNORE_INDEX)
        ids = None if sample.instances is None else np.pad(sample.instances, pad)
        target = make_target(mask, ids, config.binary, sigma)[None].to(device)
        loss = training_loss(model, to_tensor(image)[None].to(device), target, loss_fn)
        losses.append(float(loss))
    return float(np.mean(losses)) if losses else float("nan")


def _metrics(confusion: np.ndarray, counts: np.ndarray, config: TrainConfig) -> dict:
    """IoU (per class, or precision/recall/F1 for buildings) from the confusion matrix, plus instance metrics."""
    n = len(confusion)
    tp = np.diag(confusion).astype(float)
    union = confusion.sum(0) + confusion.sum(1) - tp
    iou = np.divide(tp, union, out=np.full(n, np.nan), where=union > 0)
    if not config.binary:
        metrics = {f"iou_{name}": float(iou[i]) for i, name in enumerate(config.classes)}
        metrics["iou"] = float(np.nanmean(iou[: len(config.classes)]))
        return metrics
    fp, fn = confusion[0, 1], confusion[1, 0]
    metrics = {
        "iou": float(iou[1]),
        "precision": float(tp[1] / max(1, tp[1] + fp)),
        "recall": float(tp[1] / max(1, tp[1] + fn)),
        "f1": float(2 * tp[1] / max(1, 2 * tp[1] + fp + fn)),
    }
    if counts[1]:
        matched, truth, predicted = (int(c) for c in counts)
        metrics["instance_f1"] = 2 * matched / max(1, truth + predicted)
        metrics["count_error"] = (predicted - truth) / truth
    return metrics


def instance_counts(
    sample: Sample, prob: torch.Tensor, maps: torch.Tensor, config: TrainConfig
) -> np.ndarray:
    """(matched, true, predicted) instances of one validation sample, grouped as ``bldgseg run`` groups them
    (including its default minimum building area); ignored pixels count for neither."""
    known = sample.mask != IGNORE_INDEX
    stacked = torch.cat([prob[None], maps[:3]]).cpu().numpy()
    predicted = label_instances(stacked, config.threshold, config.nms_kernel, config.center_threshold)
    ids, sizes = np.unique(predicted, return_counts=True)
    too_small = ids[(ids > 0) & (sizes < DEFAULT_MIN_AREA_M2 / config.gsd_m**2)]
    predicted[np.isin(predicted, too_small)] = 0
    truth = np.where(sample.mask == 1, sample.instances, 0)
    return np.array(match_instances(truth * known, predicted * known))


def selection_metric(metrics: dict) -> str:
    """The validation metric that picks the best checkpoint: instance F1 when measured, else pixel IoU."""
    return "instance_f1" if "instance_f1" in metrics else "iou"
