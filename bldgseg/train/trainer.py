"""The training loop: AdamW with a cosine or one-cycle schedule, AMP on CUDA, best/last checkpoints.

Checkpoints carry complete model cards; runs resume, stop early or on a time budget, and keep a per-epoch
metrics table.

With ``instances=True`` the model is the Panoptic-DeepLab-style ``panoptic_<architecture>`` and each crop's
target is :func:`bldgseg.instance_targets.instance_target_stack` of its mask and per-building ids (augmented
with the image, nearest-neighbour); validation (:mod:`bldgseg.train.validation`) then also reports instance F1
and count error, and the checkpoint is selected on instance F1. Losses are in :mod:`bldgseg.train.losses`, the
resumable state in :mod:`bldgseg.train.resume`.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from bldgseg.devices import resolve_device
from bldgseg.errors import InputError
from bldgseg.instance_targets import gap_between_buildings
from bldgseg.instances import NMS_KERNEL
from bldgseg.models import ModelCard, build_model, save_checkpoint
from bldgseg.models.pretrained import load_encoder_tensors, load_imagenet_encoder, read_state_dict
from bldgseg.progress import ProgressFn, report_progress
from bldgseg.train.data import Sample, make_target, to_tensor
from bldgseg.train.losses import Loss, make_loss, training_loss
from bldgseg.train.resume import load_training_state, save_training_state, write_metrics_csv
from bldgseg.train.validation import selection_metric, validate

EpochFn = Callable[[dict[str, Any]], None]


@dataclass
class TrainConfig:
    """Every training setting; the CLI flags and the YAML ``--config`` keys have these names."""

    name: str = "custom-buildings"
    architecture: str = "unet"
    encoder: str = "tu-efficientnet_lite0"
    encoder_weights: str = "imagenet"  # imagenet (offline EfficientNet-Lite), none, or a path to a state dict
    init_weights: str | None = None  # a bldgseg checkpoint whose matching tensors start the model
    instances: bool = False  # Panoptic-DeepLab instance head (architecture becomes panoptic_<architecture>)
    center_sigma: float = 8.0  # instance-centre Gaussian, pixels at gsd_m
    contact_gap: int = 0  # semantic targets: pixels within this many px of another building become background
    center_threshold: float = 0.1  # instance grouping in validation and inference (written to the card)
    nms_kernel: int = NMS_KERNEL
    classes: list[str] = field(default_factory=lambda: ["building"])
    gsd_m: float = 0.3
    crop: int = 256
    batch_size: int = 8
    epochs: int = 30
    steps_per_epoch: int | None = None
    max_minutes: float | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | onecycle
    loss: str = "dice"  # dice | lovasz, added to BCE (binary) or cross-entropy (multi-class)
    early_stopping: int = 0  # epochs without improvement before stopping; 0 = off
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # fp16 autocast with a gradient scaler on CUDA
    cpu_precision: str = "fp32"  # fp32 | bf16: bf16 autocast for CPU training (measure it: faster on some CPUs)
    augmentation: dict[str, Any] | None = None
    tile_size: int = 512
    overlap: int = 64
    threshold: float = 0.5
    training_data: list[dict[str, str]] = field(default_factory=list)
    license: str = ""

    def validate(self) -> None:
        if self.schedule not in ("cosine", "onecycle"):
            raise InputError(f"schedule {self.schedule!r} is not known; use cosine or onecycle")
        if self.loss not in ("dice", "lovasz"):
            raise InputError(f"loss {self.loss!r} is not known; use dice or lovasz")
        if self.cpu_precision not in ("fp32", "bf16"):
            raise InputError(f"cpu_precision {self.cpu_precision!r} is not known; use fp32 or bf16")
        if self.contact_gap < 0:
            raise InputError(f"contact_gap {self.contact_gap} is negative; use 0 (off) or 1-2 pixels")
        if self.contact_gap and (self.instances or self.architecture.startswith("panoptic_")):
            raise InputError("contact_gap is for semantic models; an instance model separates buildings itself")
        if self.crop % 32:
            raise InputError(f"crop {self.crop} is not a multiple of 32; use e.g. 256 or 384")
        if self.architecture.startswith("panoptic_"):
            self.instances = True
        elif self.instances:
            self.architecture = f"panoptic_{self.architecture}"
        if self.instances and not self.binary:
            raise InputError(
                f"instances need one building class, got {len(self.classes)} classes; drop --instances"
            )

    @property
    def binary(self) -> bool:
        return len(self.classes) == 1


class TrainingSet(Dataset):
    """Augmented random crops; one epoch is ``length`` crops drawn round-robin over the samples.

    Targets: (1, H, W) float for binary, (H, W) long for multi-class, and with ``center_sigma`` set the
    (6, H, W) instance stack; a sample without per-building ids then gets zero centre/offset weights, so it
    trains the semantic channel only.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform,
        length: int,
        binary: bool,
        center_sigma: float | None = None,
        contact_gap: int = 0,
    ):
        self.samples, self.transform, self.length, self.binary = list(samples), transform, length, binary
        if contact_gap > 0:  # once per sample, not per crop
            self.samples = [_with_gap(s, contact_gap) for s in self.samples]
        self.center_sigma = center_sigma
        if center_sigma is not None and hasattr(transform, "add_targets"):
            transform.add_targets({"instances": "mask"})

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        sample = self.samples[index % len(self.samples)]
        ids = sample.instances if self.center_sigma is not None else None
        if ids is None:
            out = self.transform(image=sample.image, mask=sample.mask)
            crop_ids = None
        else:
            # ids travel as float32 (exact below 2**24; OpenCV warps no int32) with nearest interpolation
            out = self.transform(image=sample.image, mask=sample.mask, instances=ids.astype(np.float32))
            crop_ids = out["instances"]
        return to_tensor(out["image"]), make_target(out["mask"], crop_ids, self.binary, self.center_sigma)


def _with_gap(sample: Sample, gap_px: int) -> Sample:
    """A shallow copy of ``sample`` whose mask has background between touching buildings."""
    if sample.instances is None:
        return sample
    return replace(sample, mask=gap_between_buildings(sample.mask, sample.instances, gap_px))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def init_model(config: TrainConfig) -> tuple[nn.Module, int]:
    """Model from the registry with start weights; returns it and the number of tensors loaded.

    ``init_weights`` (a bldgseg checkpoint) wins over ``encoder_weights``: every tensor whose name and shape
    match is loaded (a semantic U-Net checkpoint fills a ``panoptic_unet``'s encoder, decoder and semantic
    head; the instance heads start fresh).
    """
    model = build_model(
        config.architecture, config.encoder, num_classes=1 if config.binary else len(config.classes)
    )
    if config.init_weights:
        return model, load_matching_tensors(model, Path(config.init_weights))
    weights = config.encoder_weights.lower()
    if weights == "none":
        return model, 0
    if weights == "imagenet":
        if "efficientnet_lite" not in config.encoder:
            raise InputError(
                f"offline ImageNet weights exist for tu-efficientnet_lite0/1/2 only, not {config.encoder}; "
                "use --encoder-weights none or a local file"
            )
        return model, load_imagenet_encoder(model, int(config.encoder.rsplit("lite", 1)[1]))
    path = Path(config.encoder_weights)
    if not path.exists():
        raise InputError(
            f"{path}: encoder weights not found; give a .pth/.safetensors state dict, imagenet or none"
        )
    encoder = model.encoder.model if hasattr(model.encoder, "model") else model.encoder
    loaded, missing = load_encoder_tensors(encoder, read_state_dict(path))
    if missing:
        raise InputError(
            f"{path.name}: {len(missing)} encoder tensors missing (e.g. {missing[0]}); "
            f"the file does not match encoder {config.encoder}"
        )
    return model, loaded


def load_matching_tensors(model: nn.Module, path: Path) -> int:
    """Copy the tensors of a bldgseg checkpoint (``.safetensors``) whose names and shapes match ``model``."""
    from safetensors.torch import load_file

    if not path.exists() or path.suffix != ".safetensors":
        raise InputError(
            f"{path}: not found or not a .safetensors checkpoint; give e.g. runs/x/best.safetensors"
        )
    own = model.state_dict()
    state = {k: v for k, v in load_file(str(path)).items() if k in own and own[k].shape == v.shape}
    if not state:
        raise InputError(
            f"{path.name}: no tensor matches architecture/encoder of this run; start from a checkpoint of the "
            "same encoder (see its .json card) or drop --init-weights"
        )
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=False)
    return len(state)


def make_card(config: TrainConfig, metrics: dict, training: dict) -> ModelCard:
    return ModelCard(
        name=config.name,
        architecture=config.architecture,
        encoder=config.encoder,
        classes=list(config.classes),
        tile_size=config.tile_size,
        overlap=config.overlap,
        gsd_m=config.gsd_m,
        threshold=config.threshold,
        head="instance" if config.instances else "semantic",
        center_threshold=config.center_threshold,
        nms_kernel=config.nms_kernel,
        training_data=config.training_data,
        license=config.license,
        metrics={"validation_pixel": metrics},
        training=training,
    )


def train(
    config: TrainConfig,
    train_samples: Sequence[Sample],
    val_samples: Sequence[Sample],
    out_dir: Path,
    transform,
    resume: bool = False,
    progress: ProgressFn | None = None,
    on_epoch: EpochFn | None = None,
) -> dict[str, Any]:
    """Train and write ``best``/``last`` checkpoints, ``last.state.pt`` and ``metrics.csv`` into ``out_dir``."""
    config.validate()
    if not train_samples or not val_samples:
        raise InputError(
            "training needs samples on both sides of the split; add data or change --val-fraction"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(config.seed)
    run = _Run.start(config, train_samples, out_dir, transform, resume)
    start = time.monotonic() - run.state["seconds"]
    budget = config.max_minutes * 60 if config.max_minutes else None
    stopped = "epochs"
    for epoch in range(run.state["epoch"] + 1, config.epochs + 1):
        losses, out_of_time = run.train_epoch(epoch, start, budget, progress)
        metrics = validate(run.model, val_samples, config, run.device)
        row, improved = run.end_epoch(epoch, losses, metrics, time.monotonic() - start)
        if on_epoch:
            on_epoch({**row, "best": improved})
        if out_of_time:
            stopped = "time budget"
            break
        if config.early_stopping and epoch - run.state["best_epoch"] >= config.early_stopping:
            stopped = f"early stopping (no improvement for {config.early_stopping} epochs)"
            break
    return run.summary(stopped)


@dataclass
class _Run:
    """One training run's model, optimizer, data and counters (``state``, saved for resuming)."""

    config: TrainConfig
    out_dir: Path
    device: torch.device
    model: nn.Module
    loaded: int
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    loss_fn: Loss
    dataset: TrainingSet
    transform: Any
    total_steps: int
    state: dict[str, Any]

    @classmethod
    def start(
        cls, config: TrainConfig, samples: Sequence[Sample], out_dir: Path, transform, resume: bool
    ) -> _Run:
        """Build the model (start weights, or ``out_dir``'s last state with ``resume``), optimizer and data."""
        device = resolve_device(config.device)
        model, loaded = init_model(config)
        model.to(device).to(memory_format=torch.channels_last)
        steps_per_epoch = config.steps_per_epoch or max(1, math.ceil(len(samples) / config.batch_size))
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scaler = torch.amp.GradScaler("cuda", enabled=config.amp and device.type == "cuda")
        state = {"epoch": 0, "step": 0, "best": -math.inf, "best_epoch": 0, "history": [], "seconds": 0.0}
        if resume:
            state = load_training_state(out_dir, model, optimizer, device)
        loss_fn = make_loss(config)
        dataset = TrainingSet(
            samples,
            transform,
            steps_per_epoch * config.batch_size,
            config.binary,
            center_sigma=config.center_sigma if config.instances else None,
            contact_gap=config.contact_gap,
        )
        total = steps_per_epoch * config.epochs
        return cls(
            config, out_dir, device, model, loaded, optimizer, scaler, loss_fn, dataset, transform, total, state
        )

    def train_epoch(
        self, epoch: int, start: float, budget: float | None, progress: ProgressFn | None
    ) -> tuple[list[float], bool]:
        """One pass over the crops of ``epoch``; returns the step losses and whether the time budget ran out."""
        config, state = self.config, self.state
        generator = torch.Generator().manual_seed(config.seed * 100003 + epoch)
        if hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(config.seed * 100003 + epoch)
        loader = DataLoader(self.dataset, batch_size=config.batch_size, shuffle=True, generator=generator)
        self.model.train()
        losses = []
        for images, targets in loader:
            set_lr(self.optimizer, config, state["step"], self.total_steps, time.monotonic() - start, budget)
            losses.append(self.step(images, targets))
            state["step"] += 1
            report_progress(progress, "training steps", state["step"], self.total_steps)
            if budget and time.monotonic() - start >= budget:
                return losses, True
        return losses, False

    def step(self, images: torch.Tensor, targets: torch.Tensor) -> float:
        """One optimizer step (AMP on CUDA); returns the loss."""
        images = images.to(self.device).contiguous(memory_format=torch.channels_last)
        with training_autocast(self.config, self.device, self.scaler):
            loss = training_loss(self.model, images, targets.to(self.device), self.loss_fn)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.item()

    def end_epoch(
        self, epoch: int, losses: list[float], metrics: dict, seconds: float
    ) -> tuple[dict[str, Any], bool]:
        """Record the epoch, write the checkpoints, state and metrics; returns its row and whether it is best."""
        state = self.state
        state["seconds"] = seconds
        row = {
            "epoch": epoch,
            "step": state["step"],
            "seconds": round(seconds, 1),
            "loss": float(np.mean(losses)),
            **metrics,
        }
        state["history"].append(row)
        state["epoch"] = epoch
        selected_on = selection_metric(metrics)
        improved = metrics[selected_on] > state["best"]
        if improved:
            state["best"], state["best_epoch"] = metrics[selected_on], epoch
        names = ("best", "last") if improved else ("last",)
        for name in names:
            card = make_card(self.config, metrics, training_record(self.config, state, self.loaded))
            save_checkpoint(self.model, card, self.out_dir / f"{name}.safetensors")
        save_training_state(self.out_dir, self.optimizer, state)
        write_metrics_csv(self.out_dir / "metrics.csv", state["history"])
        return row, improved

    def summary(self, stopped: str) -> dict[str, Any]:
        """What ``train`` returns: the best epoch and score, counts, and why training stopped."""
        state = self.state
        best_row = next((r for r in state["history"] if r["epoch"] == state["best_epoch"]), {})
        return {
            "best_iou": best_row.get("iou", state["best"]),
            "selected_on": selection_metric(best_row),
            "best_score": state["best"],
            "best_epoch": state["best_epoch"],
            "epochs": state["epoch"],
            "steps": state["step"],
            "seconds": round(state["seconds"], 1),
            "stopped": stopped,
            "encoder_tensors_loaded": self.loaded,
            "out_dir": str(self.out_dir),
        }


def training_autocast(config: TrainConfig, device: torch.device, scaler: torch.amp.GradScaler):
    """fp16 autocast on CUDA (with the scaler), bf16 on the CPU when ``cpu_precision`` asks, else none."""
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=config.cpu_precision == "bf16")
    return torch.autocast(device.type, dtype=torch.float16, enabled=scaler.is_enabled())


def set_lr(
    optimizer, config: TrainConfig, step: int, total: int, elapsed: float, budget: float | None
) -> None:
    """Cosine decay (with a short warm-up) or one-cycle, over steps or the time budget, whichever is nearer."""
    progress = step / max(1, total)
    if budget:
        progress = max(progress, elapsed / budget)
    progress = min(progress, 1.0)
    if config.schedule == "cosine":
        factor = min(1.0, (step + 1) / 50) * 0.5 * (1 + math.cos(math.pi * progress))
    else:
        warm = 0.3
        if progress < warm:
            factor = 0.04 + 0.96 * 0.5 * (1 - math.cos(math.pi * progress / warm))
        else:
            factor = 0.5 * (1 + math.cos(math.pi * (progress - warm) / (1 - warm)))
    for group in optimizer.param_groups:
        group["lr"] = config.lr * factor


def training_record(config: TrainConfig, state: dict, loaded: int) -> dict[str, Any]:
    return {
        "config": {k: v for k, v in asdict(config).items() if k not in ("training_data", "license")},
        "epochs_done": state["epoch"],
        "steps": state["step"],
        "seconds": round(state["seconds"], 1),
        "best_epoch": state["best_epoch"],
        "encoder_tensors_loaded": loaded,
        "history": state["history"],
    }


def load_config(path: Path) -> dict[str, Any]:
    """A YAML file of TrainConfig keys (plus data keys used by the CLI)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"{Path(path).name}: cannot read the YAML config ({exc}); check the file") from exc
    if not isinstance(data, dict):
        raise InputError(f"{Path(path).name}: the config must be a mapping of option: value")
    return data


def dump_json(path: Path, data: dict) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str))
