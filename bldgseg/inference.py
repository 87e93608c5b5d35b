"""Batched inference over an image array: overlapping windows blended with a smooth weight, optional flip TTA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from rasterio.windows import Window

from bldgseg.engines import ModelSource, build_runner
from bldgseg.errors import DeviceError, InputError
from bldgseg.models.card import ModelCard
from bldgseg.overlap import prefetch
from bldgseg.precision import InferenceChoice, detect_inference
from bldgseg.tiling import WindowLayout, plan_layout

ProgressCallback = Callable[[int], None]
#: Batches cut out, stacked and sent to the device ahead of the model by a background thread.
PREFETCH_BATCHES = 2


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
    """Runs a segmentation model over arbitrarily large uint8 RGB arrays.

    ``precision`` (auto, fp32, bf16, fp16) and ``engine`` (auto, torch, openvino) are chosen for the hardware
    by :func:`bldgseg.precision.choose_inference`; ``None`` keeps the plain default: fp16 autocast on CUDA,
    fp32 on the CPU. What was chosen and why is ``self.inference``. ``model`` may be a function that builds
    it; with ``weights_file`` (:func:`bldgseg.engines.file_digest` of the checkpoint) and its OpenVINO IR
    cached, the OpenVINO engine never calls it. ``int8_ir``: the checkpoint's int8 IR (precision int8).
    """

    def __init__(
        self,
        model: ModelSource,
        card: ModelCard,
        device: torch.device | str = "cpu",
        batch_size: int = 8,
        tta: bool = False,
        tile_size: int | None = None,
        overlap: int | None = None,
        precision: str | None = None,
        engine: str = "torch",
        weights_file: str | None = None,
        int8_ir: Path | None = None,
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
        self.mean = torch.tensor(card.mean, device=self.device).view(1, 3, 1, 1) * 255.0
        self.std = torch.tensor(card.std, device=self.device).view(1, 3, 1, 1) * 255.0
        self.weight = blend_weight(self.tile_size)
        if precision is None:
            precision = "auto" if self.device.type == "cuda" else "fp32"
        choice = detect_inference(precision, engine, self.device.type)
        runner, chosen = build_runner(
            self._prepared(model), self.device, choice, self.tile_size, weights_file, int8_ir
        )
        self._run_model = runner
        self.inference: InferenceChoice = chosen
        # torch runs fastest on channels-last input; OpenVINO takes plain NCHW arrays (no conversion back)
        self._memory_format = torch.channels_last if chosen.engine == "torch" else torch.contiguous_format

    def _prepared(self, model: ModelSource) -> Callable[[], nn.Module]:
        """``model`` (or what it builds) on the device, in eval mode and channels-last."""

        def build() -> nn.Module:
            built = model if isinstance(model, nn.Module) else model()
            return built.to(self.device).eval().to(memory_format=torch.channels_last)

        return build

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
        infer = partial(self._tta_tensor, to_probability=_building_probability)
        return self._blend(rgb, valid, 1, infer, progress, layout=layout)[0]

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
        offsets dy, dx in model pixels (:func:`bldgseg.models.instance_outputs.instance_maps`); with TTA averaged over
        flips with the offsets' signs restored.

        The probability is blended over windows exactly as in :meth:`predict`. The heatmap and offsets are not
        averaged: each pixel takes them from the window it lies deepest in. A window that shows only part of a
        building predicts that part's centre, and averaging it in would pull centres apart; taken this way, a
        building that lies whole in both windows on either side of a seam (within half the overlap of it)
        gets exactly the maps of a single window."""
        from bldgseg.models.instance_outputs import OUTPUT_CHANNELS, instance_maps, unflip_instance_maps

        if self.card.head != "instance":
            raise InputError(
                f"{self.card.name}: has a {self.card.head} head, not instances; use an instance model "
                "(bldgseg train --instances)"
            )
        return self._blend(
            rgb,
            valid,
            len(OUTPUT_CHANNELS),
            partial(self._tta_tensor, to_probability=instance_maps, unflip=unflip_instance_maps),
            progress,
            deepest_from=1,
            layout=layout,
        )

    def _blend(
        self,
        rgb: np.ndarray,
        valid: np.ndarray,
        channels: int,
        infer: Callable[[torch.Tensor], torch.Tensor],
        progress: ProgressCallback | None,
        deepest_from: int | None = None,
        layout: WindowLayout | None = None,
    ) -> np.ndarray:
        """Run ``infer`` (a prepared N x 3 x t x t batch -> N x channels x t x t, on the device) over blended
        windows of ``rgb``.

        Channels from ``deepest_from`` on are not blended but taken from the window with the largest blending
        weight at each pixel (the first such window in the layout's order on ties). Windows reaching past the
        image are filled by padding it (reflected, marked invalid); windows without a valid pixel are skipped.
        The next batches are cut out, stacked and sent to the device (pinned, asynchronously on CUDA) by a
        background thread while the model runs (:data:`PREFETCH_BATCHES` ahead); on CUDA the blending runs on
        the device too.
        """
        _, height, width = rgb.shape
        layout = self.layout_for(height, width) if layout is None else layout
        tile = layout.tile
        weight = self.weight if tile == self.tile_size else blend_weight(tile)
        rgb, valid_padded = _pad_to_layout(rgb, valid, layout)
        windows = [
            w
            for w in layout.windows()
            if valid_padded[w.row_off : w.row_off + tile, w.col_off : w.col_off + tile].any()
        ]
        soft = channels if deepest_from is None else deepest_from
        shape = (channels, *rgb.shape[1:])
        if self.device.type == "cuda":
            blend: HostBlend | DeviceBlend = DeviceBlend(shape, soft, weight, self.device)
        else:
            blend = HostBlend(shape, soft, weight)
        with prefetch(self._prepared_batches(rgb, windows, tile), PREFETCH_BATCHES) as batches:
            for batch, x in batches:
                blend.add(batch, infer(x))
                if progress:
                    progress(len(batch))
        out = blend.result()[:, :height, :width]
        out[:, ~valid] = 0.0
        return out

    def _prepared_batches(
        self, rgb: np.ndarray, windows: list[Window], tile: int
    ) -> Iterator[tuple[list[Window], torch.Tensor]]:
        """``(windows, normalised batch on the device)`` for each batch of ``windows`` of ``rgb``."""
        for batch in _batches(windows, self.batch_size):
            stack = np.stack(
                [rgb[:, w.row_off : w.row_off + tile, w.col_off : w.col_off + tile] for w in batch]
            )
            yield batch, self._to_input(stack)

    @torch.inference_mode()
    def _to_input(self, stack: np.ndarray) -> torch.Tensor:
        """A uint8 batch (N x 3 x t x t) normalised on the device; on CUDA sent from pinned memory without
        waiting (the model's work on the same stream runs after the copy)."""
        x = torch.from_numpy(stack)
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True).float()
        return ((x - self.mean) / self.std).contiguous(memory_format=self._memory_format)

    def _predict_batch(self, stack: np.ndarray) -> np.ndarray:
        """Building probability (N, H, W): sigmoid of channel 0, averaged over TTA flips."""
        return self._tta_probabilities(stack, _building_probability)[:, 0]

    def _predict_batch_classes(self, x: torch.Tensor) -> torch.Tensor:
        """Softmax over the class channels (sigmoid for a one-channel model), averaged over TTA flips."""
        return self._tta_tensor(
            x,
            lambda logits: torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1),
        )

    def _tta_probabilities(self, stack: np.ndarray, to_probability, unflip=None) -> np.ndarray:
        """:meth:`_tta_tensor` of a uint8 batch, as a NumPy array."""
        return self._tta_tensor(self._to_input(stack), to_probability, unflip).cpu().numpy()

    @torch.inference_mode()
    def _tta_tensor(self, x: torch.Tensor, to_probability, unflip=None) -> torch.Tensor:
        """Run the model (engine and precision of ``self.inference``) on a normalised batch and its flips,
        average the probabilities (on the device).

        ``unflip(maps, dims)`` undoes a flip of the maps (default: flip them back)."""
        flips = [(), (3,), (2,), (2, 3)] if self.tta else [()]
        prob = None
        for dims in flips:
            inp = torch.flip(x, dims) if dims else x
            logits = self._run_model(inp)
            p = to_probability(logits)
            if dims:
                p = unflip(p, dims) if unflip else torch.flip(p, dims)
            prob = p if prob is None else prob + p
        return prob / len(flips)


def _building_probability(logits: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(logits[:, :1])


class HostBlend:
    """Weighted sums of window maps in NumPy arrays (the CPU path).

    ``shape`` (C, H, W): channels before ``soft`` are blended (sum of weight x map over sum of weights); the
    others are taken from the window with the largest weight at each pixel (the first one on ties)."""

    def __init__(self, shape: tuple[int, int, int], soft: int, weight: np.ndarray):
        self.soft, self.weight = soft, weight
        self.total = np.zeros(shape, np.float32)
        self.weights = np.zeros(shape[1:], np.float32)
        self.deepest = np.zeros(shape[1:], np.float32) if soft < shape[0] else None

    def add(self, batch: list[Window], maps: torch.Tensor) -> None:
        """Add the maps (N x C x t x t) of ``batch``'s windows."""
        soft, weight, tile = self.soft, self.weight, self.weight.shape[0]
        for window, prob in zip(batch, maps.cpu().numpy(), strict=True):
            rows = slice(window.row_off, window.row_off + tile)
            cols = slice(window.col_off, window.col_off + tile)
            self.total[:soft, rows, cols] += prob[:soft] * weight
            self.weights[rows, cols] += weight
            if self.deepest is not None:
                better = weight > self.deepest[rows, cols]
                self.total[soft:, rows, cols][:, better] = prob[soft:][:, better]
                self.deepest[rows, cols][better] = weight[better]

    def result(self) -> np.ndarray:
        """The blended maps (C x H x W); 0 where no window reached."""
        out = np.zeros_like(self.total)
        np.divide(self.total[: self.soft], self.weights, out=out[: self.soft], where=self.weights > 0)
        out[self.soft :] = self.total[self.soft :]
        return out


class DeviceBlend:
    """:class:`HostBlend` in tensors on the model's device (CUDA), so maps never leave it until the end."""

    def __init__(self, shape: tuple[int, int, int], soft: int, weight: np.ndarray, device: torch.device):
        self.soft = soft
        self.weight = torch.from_numpy(weight).to(device)
        self.total = torch.zeros(shape, dtype=torch.float32, device=device)
        self.weights = torch.zeros(shape[1:], dtype=torch.float32, device=device)
        self.deepest = torch.zeros(shape[1:], dtype=torch.float32, device=device) if soft < shape[0] else None

    def add(self, batch: list[Window], maps: torch.Tensor) -> None:
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
        out = torch.zeros_like(self.total)
        covered = self.weights > 0
        out[: self.soft] = torch.where(
            covered, self.total[: self.soft] / torch.where(covered, self.weights, 1.0), 0.0
        )
        out[self.soft :] = self.total[self.soft :]
        return out.cpu().numpy()


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
