"""A plain training loop: AdamW, cosine schedule over a step or time budget, best-by-validation checkpoint."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader

from bldgseg.train.data import PairDataset, Sample, to_tensor
from bldgseg.train.losses import bce_dice_loss


@dataclass
class TrainResult:
    """What happened during training."""

    steps: int
    seconds: float
    history: list[dict[str, float]] = field(default_factory=list)
    best_val_iou: float = float("nan")
    best_state: dict[str, torch.Tensor] | None = None


@torch.inference_mode()
def evaluate_pixels(model: nn.Module, samples: Sequence[Sample], threshold: float = 0.5) -> dict[str, float]:
    """Pixel IoU, precision, recall over whole samples (each padded to a multiple of 32)."""
    model.eval()
    tp = fp = fn = 0
    for sample in samples:
        h, w = sample.mask.shape
        ph, pw = (-h) % 32, (-w) % 32
        image = np.pad(sample.image, ((0, ph), (0, pw), (0, 0)), mode="reflect")
        logits = model(to_tensor(image)[None])[0, 0, :h, :w]
        pred = (torch.sigmoid(logits) >= threshold).numpy()
        truth = sample.mask.astype(bool)
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
    return {
        "iou": tp / max(1, tp + fp + fn),
        "precision": tp / max(1, tp + fp),
        "recall": tp / max(1, tp + fn),
    }


def train_model(
    model: nn.Module,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    *,
    max_steps: int = 1000,
    max_seconds: float | None = None,
    batch_size: int = 8,
    crop: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    eval_every: int = 100,
    seed: int = 0,
    log: Callable[[dict[str, float]], None] | None = None,
) -> TrainResult:
    """Train until ``max_steps`` or ``max_seconds``; the learning rate follows a cosine over that budget."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    dataset = PairDataset(train_samples, crop=crop, augment=True, length=10**9)
    loader = iter(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    result = TrainResult(steps=0, seconds=0.0)
    start = time.monotonic()
    running = []
    step = 0
    while True:
        elapsed = time.monotonic() - start
        progress = step / max_steps
        if max_seconds:
            progress = max(progress, elapsed / max_seconds)
        if progress >= 1.0:
            break
        warmup = min(1.0, (step + 1) / 50)
        for group in optimizer.param_groups:
            group["lr"] = lr * warmup * 0.5 * (1 + math.cos(math.pi * progress))
        model.train()
        images, masks = next(loader)
        loss = bce_dice_loss(model(images), masks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running.append(loss.item())
        step += 1
        if step % eval_every == 0:
            metrics = evaluate_pixels(model, val_samples) if val_samples else {"iou": float("nan")}
            row = {
                "step": step,
                "seconds": time.monotonic() - start,
                "loss": float(np.mean(running)),
                **metrics,
            }
            running.clear()
            result.history.append(row)
            if log:
                log(row)
            if not val_samples or math.isnan(result.best_val_iou) or metrics["iou"] > result.best_val_iou:
                result.best_val_iou = metrics["iou"]
                result.best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result.steps = step
    result.seconds = time.monotonic() - start
    return result
