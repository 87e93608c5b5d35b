"""Batched inference over an image array: overlapping windows blended with a smooth weight, optional flip TTA."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn

from bldgseg.errors import DeviceError, InputError
from bldgseg.models.checkpoint import ModelCard
from bldgseg.tiling import WindowLayout, plan_layout

ProgressCallback = Callable[[int], None]


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    name = name.lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r}: CUDA is not available here; use --device cpu (or auto)")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0..cuda:N-1"
            )
        return device
    if name == "cpu":
        return torch.device("cpu")
    raise DeviceError(f"device {name!r} is not understood; use auto, cpu, cuda or cuda:N")


def blend_weight(size: int, floor: float = 0.05) -> np.ndarray:
    """A 2-D raised-cosine (Hann) window with a floor, so overlapping windows fade into each other."""
    ramp = np.sin(np.pi * (np.arange(size) + 0.5) / size) ** 2
    ramp = np.maximum(ramp, floor).astype(np.float32)
    return np.outer(ramp, ramp)


class Predictor:
    """Runs a segmentation model over arbitrarily large uint8 RGB arrays."""

    def __init__(
        self,
        model: nn.Module,
        card: ModelCard,
        device: torch.device | str = "cpu",
        batch_size: int = 8,
        tta: bool = False,
        tile_size: int | None = None,
        overlap: int | None = None,
    ):
        self.device = resolve_device(device) if isinstance(device, str) else device
        self.card = card
        self.batch_size = max(1, batch_size)
        self.tta = tta
        self.tile_size = tile_size or card.tile_size
        self.overlap = card.overlap if overlap is None else overlap
        if self.tile_size % 32:
            raise InputError(f"tile size {self.tile_size} is not a multiple of 32; use e.g. 256, 512 or 1024")
        if not 0 <= self.overlap < self.tile_size:
            raise InputError(
                f"overlap {self.overlap} must be >= 0 and smaller than the tile size {self.tile_size}"
            )
        self.model = model.to(self.device).eval().to(memory_format=torch.channels_last)
        self.mean = torch.tensor(card.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(card.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self.weight = blend_weight(self.tile_size)

    def predict(
        self,
        rgb: np.ndarray,
        valid: np.ndarray,
        progress: ProgressCallback | None = None,
        layout: WindowLayout | None = None,
    ) -> np.ndarray:
        """Building probability (float32, H x W) for ``rgb`` (3 x H x W uint8); 0 where ``valid`` is False.

        ``layout``: the windows to run, in the pixels of ``rgb`` (default: :meth:`layout_for` of its size).
        A chunk of a larger raster passes its part of the raster's layout, so that every pixel gets the
        windows, context and blending weights it gets when the whole raster is predicted at once.
        """
        return self._blend(
            rgb, valid, 1, lambda stack: self._predict_batch(stack)[:, None], progress, layout=layout
        )[0]

    def layout_for(self, height: int, width: int) -> WindowLayout:
        """The windows over a whole ``height`` x ``width`` image (:func:`bldgseg.tiling.plan_layout`)."""
        return plan_layout(height, width, self.tile_size, self.overlap)

    def predict_classes(
        self,
        rgb: np.ndarray,
        valid: np.ndarray,
        progress: ProgressCallback | None = None,
        layout: WindowLayout | None = None,
    ) -> np.ndarray:
        """Per-class probabilities (float32, C x H x W) for ``rgb`` (3 x H x W uint8); 0 where ``valid`` is False.

        Multi-class models give the softmax over their ``card.classes`` (C = number of classes); a binary
        model gives its sigmoid as one channel. Tiling, blending and TTA are those of :meth:`predict`.
        """
        channels = self.card.num_outputs
        return self._blend(rgb, valid, channels, self._predict_batch_classes, progress, layout=layout)

    def predict_instances(
        self,
        rgb: np.ndarray,
        valid: np.ndarray,
        progress: ProgressCallback | None = None,
        layout: WindowLayout | None = None,
    ) -> np.ndarray:
        """Instance maps (float32, 4 x H x W) of an instance model: building probability, centre heatmap and
        offsets dy, dx in model pixels (:func:`bldgseg.models.panoptic.instance_maps`); with TTA averaged over
        flips with the offsets' signs restored.

        The probability is blended over windows exactly as in :meth:`predict`. The heatmap and offsets are not
        averaged: each pixel takes them from the window it lies deepest in. A window that shows only part of a
        building predicts that part's centre, and averaging it in would pull centres apart; taken this way, a
        building that lies whole in both windows on either side of a seam (within half the overlap of it)
        gets exactly the maps of a single window."""
        from bldgseg.models.panoptic import OUTPUT_CHANNELS, instance_maps, unflip_instance_maps

        if self.card.head != "instance":
            raise InputError(
                f"{self.card.name}: has a {self.card.head} head, not instances; use an instance model "
                "(bldgseg train --instances)"
            )
        return self._blend(
            rgb,
            valid,
            len(OUTPUT_CHANNELS),
            lambda stack: self._tta_probabilities(stack, instance_maps, unflip_instance_maps),
            progress,
            deepest_from=1,
            layout=layout,
        )

    def _blend(
        self,
        rgb: np.ndarray,
        valid: np.ndarray,
        channels: int,
        infer: Callable[[np.ndarray], np.ndarray],
        progress: ProgressCallback | None,
        deepest_from: int | None = None,
        layout: WindowLayout | None = None,
    ) -> np.ndarray:
        """Run ``infer`` (N x 3 x t x t uint8 -> N x channels x t x t) over blended windows of ``rgb``.

        Channels from ``deepest_from`` on are not blended but taken from the window with the largest blending
        weight at each pixel (the first such window in the layout's order on ties). Windows reaching past the
        image are filled by padding it (reflected, marked invalid); windows without a valid pixel are skipped.
        """
        _, height, width = rgb.shape
        layout = self.layout_for(height, width) if layout is None else layout
        tile = layout.tile
        weight = self.weight if tile == self.tile_size else blend_weight(tile)
        rgb, valid_padded = _pad_to_layout(rgb, valid, layout)
        ph, pw = rgb.shape[1:]
        windows = [
            w
            for w in layout.windows()
            if valid_padded[w.row_off : w.row_off + tile, w.col_off : w.col_off + tile].any()
        ]
        soft = channels if deepest_from is None else deepest_from
        total = np.zeros((channels, ph, pw), np.float32)
        weights = np.zeros((ph, pw), np.float32)
        deepest = np.zeros((ph, pw), np.float32)
        for batch in _batches(windows, self.batch_size):
            stack = np.stack(
                [rgb[:, w.row_off : w.row_off + tile, w.col_off : w.col_off + tile] for w in batch]
            )
            probs = infer(stack)
            for window, prob in zip(batch, probs, strict=True):
                rows = slice(window.row_off, window.row_off + tile)
                cols = slice(window.col_off, window.col_off + tile)
                total[:soft, rows, cols] += prob[:soft] * weight
                weights[rows, cols] += weight
                if soft < channels:
                    better = weight > deepest[rows, cols]
                    total[soft:, rows, cols][:, better] = prob[soft:][:, better]
                    deepest[rows, cols][better] = weight[better]
            if progress:
                progress(len(batch))
        out = np.zeros_like(total)
        np.divide(total[:soft], weights, out=out[:soft], where=weights > 0)
        out[soft:] = total[soft:]
        out = out[:, :height, :width]
        out[:, ~valid] = 0.0
        return out

    def _predict_batch(self, stack: np.ndarray) -> np.ndarray:
        """Building probability (N, H, W): sigmoid of channel 0, averaged over TTA flips."""
        return self._tta_probabilities(stack, lambda logits: torch.sigmoid(logits[:, :1]))[:, 0]

    def _predict_batch_classes(self, stack: np.ndarray) -> np.ndarray:
        """Softmax over the class channels (sigmoid for a one-channel model), averaged over TTA flips."""
        return self._tta_probabilities(
            stack,
            lambda logits: torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1),
        )

    @torch.inference_mode()
    def _tta_probabilities(self, stack: np.ndarray, to_probability, unflip=None) -> np.ndarray:
        """Normalise a uint8 batch, run the model (AMP on CUDA) on it and its flips, average the probabilities.

        ``unflip(maps, dims)`` undoes a flip of the maps (default: flip them back)."""
        x = torch.from_numpy(stack).to(self.device, non_blocking=True).float()
        x = ((x - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        flips = [(), (3,), (2,), (2, 3)] if self.tta else [()]
        prob = None
        for dims in flips:
            inp = torch.flip(x, dims) if dims else x
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.device.type == "cuda"):
                logits = self.model(inp).float()
            p = to_probability(logits)
            if dims:
                p = unflip(p, dims) if unflip else torch.flip(p, dims)
            prob = p if prob is None else prob + p
        return (prob / len(flips)).cpu().numpy()


def _pad_to_layout(
    rgb: np.ndarray, valid: np.ndarray, layout: WindowLayout
) -> tuple[np.ndarray, np.ndarray]:
    """Pad ``rgb`` (reflected; edge-repeated when a side is one pixel) and ``valid`` (False) at the bottom and
    right so that every window of ``layout`` lies inside them. Windows never start before the origin."""
    _, height, width = rgb.shape
    _, row1, _, col1 = layout.extent()
    pad_h, pad_w = max(0, row1 - height), max(0, col1 - width)
    if not (pad_h or pad_w):
        return rgb, valid
    mode = "reflect" if min(height, width) > 1 else "edge"
    return (
        np.pad(rgb, ((0, 0), (0, pad_h), (0, pad_w)), mode=mode),
        np.pad(valid, ((0, pad_h), (0, pad_w))),
    )


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
