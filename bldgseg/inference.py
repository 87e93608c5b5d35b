"""Batched inference over an image array: overlapping windows blended with a smooth weight, optional flip TTA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from rasterio.windows import Window

from bldgseg.batch_ops import batch_ops
from bldgseg.blending import blend_weight
from bldgseg.devices import device_type
from bldgseg.engines import build_runner
from bldgseg.errors import InputError
from bldgseg.models.card import ModelCard
from bldgseg.models.instance_outputs import OUTPUT_CHANNELS
from bldgseg.overlap import prefetch
from bldgseg.precision import InferenceChoice, detect_inference
from bldgseg.tiling import WindowLayout, plan_layout

if TYPE_CHECKING:
    from bldgseg.engines import ModelSource

__all__ = ["Predictor"]

ProgressCallback = Callable[[int], None]
#: Batches cut out, stacked and sent to the device ahead of the model by a background thread.
PREFETCH_BATCHES = 2


class Predictor:
    """Runs a segmentation model over arbitrarily large uint8 RGB arrays.

    ``precision`` (auto, fp32, bf16, fp16, int8) and ``engine`` (auto, torch, openvino) are chosen for the
    hardware by :func:`bldgseg.precision.choose_inference`; ``None`` keeps the plain default: fp16 autocast on
    CUDA, fp32 on the CPU. What was chosen and why is ``self.inference``. ``model`` may be a function that
    builds it; with ``weights_file`` (:func:`bldgseg.files.file_digest` of the checkpoint) and its OpenVINO IR
    cached, the OpenVINO engine never calls it, and a CPU run on OpenVINO never imports torch. ``int8_ir``: the
    checkpoint's int8 IR (precision int8). ``threads``: the CPU threads the model may use (default: the
    engine's own). ``device``: a ``--device`` name or a ``torch.device``; ``self.device`` is its name.
    """

    def __init__(
        self,
        model: ModelSource,
        card: ModelCard,
        device: Any = "cpu",
        batch_size: int = 8,
        tta: bool = False,
        tile_size: int | None = None,
        overlap: int | None = None,
        precision: str | None = None,
        engine: str = "torch",
        weights_file: str | None = None,
        int8_ir: Path | None = None,
        threads: int | None = None,
    ):
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
        self.weight = blend_weight(self.tile_size)
        kind = device_type(device)
        if precision is None:
            precision = "auto" if kind == "cuda" else "fp32"
        choice = detect_inference(precision, engine, kind)
        runner, chosen, torch_device = build_runner(
            model, device, choice, self.tile_size, weights_file, int8_ir, threads, (card.mean, card.std)
        )
        self._run_model = runner
        self.inference: InferenceChoice = chosen
        self.ops = batch_ops(card, chosen.engine, torch_device)
        self.device = str(self.ops.device)

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
        infer = partial(self._tta_tensor, to_probability=self.ops.building_probability)
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
        if self.card.head != "instance":
            raise InputError(
                f"{self.card.name}: has a {self.card.head} head, not instances; use an instance model "
                "(bldgseg train --instances)"
            )
        return self._blend(
            rgb,
            valid,
            len(OUTPUT_CHANNELS),
            partial(
                self._tta_tensor,
                to_probability=self.ops.instance_maps,
                unflip=self.ops.unflip_instance_maps,
            ),
            progress,
            deepest_from=1,
            layout=layout,
        )

    def _blend(
        self,
        rgb: np.ndarray,
        valid: np.ndarray,
        channels: int,
        infer: Callable[[Any], Any],
        progress: ProgressCallback | None,
        deepest_from: int | None = None,
        layout: WindowLayout | None = None,
    ) -> np.ndarray:
        """Run ``infer`` (a prepared N x 3 x t x t batch -> N x channels x t x t, of ``self.ops``) over blended
        windows of ``rgb``.

        Channels from ``deepest_from`` on are not blended but taken from the window with the largest blending
        weight at each pixel (the first such window in the layout's order on ties). Windows reaching past the
        image are filled by padding it (reflected, marked invalid); windows without a valid pixel are skipped.
        The next batches are cut out, stacked and sent to the device (pinned, asynchronously on CUDA) by a
        background thread while the model runs (:data:`PREFETCH_BATCHES` ahead), and each batch's maps are
        blended by another thread while the model runs the next (in order: the same sums); on CUDA the blending
        runs on the device too.
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
        blend = self.ops.new_blend(shape, soft, weight)
        batches = prefetch(self._prepared_batches(rgb, windows, tile), PREFETCH_BATCHES)
        with batches as prepared, ThreadPoolExecutor(1, thread_name_prefix="bldgseg-blend") as blender:
            added = None
            for batch, x in prepared:
                maps = infer(x)
                if added is not None:
                    added.result()  # one batch blended while the next runs, in the layout's order
                added = blender.submit(blend.add, batch, maps)
                if progress:
                    progress(len(batch))
            if added is not None:
                added.result()
        out = blend.result()[:, :height, :width]
        out[:, ~valid] = 0.0
        return out

    def _prepared_batches(self, rgb: np.ndarray, windows: list[Window], tile: int) -> Iterator[tuple[list, Any]]:
        """``(windows, normalised batch on the device)`` for each batch of ``windows`` of ``rgb``."""
        for batch in _batches(windows, self.batch_size):
            stack = np.stack(
                [rgb[:, w.row_off : w.row_off + tile, w.col_off : w.col_off + tile] for w in batch]
            )
            yield batch, self._to_input(stack)

    def _to_input(self, stack: np.ndarray) -> Any:
        """A uint8 batch (N x 3 x t x t) normalised for the engine (:meth:`NumpyOps.to_input` /
        :meth:`TorchOps.to_input`)."""
        return self.ops.to_input(stack)

    def predict_batch(self, stack: np.ndarray) -> np.ndarray:
        """The maps of one uint8 batch of windows (N x 3 x t x t) as a run computes them before blending:
        building probability (N x 1 x t x t), or an instance model's maps (N x 4 x t x t); TTA included."""
        if self.card.head == "instance":
            to_probability, unflip = self.ops.instance_maps, self.ops.unflip_instance_maps
        else:
            to_probability, unflip = self.ops.building_probability, None
        maps = self._tta_tensor(self._to_input(stack), to_probability, unflip)
        return np.asarray(maps.cpu() if hasattr(maps, "cpu") else maps)

    def _predict_batch_classes(self, x: Any) -> Any:
        """Softmax over the class channels (sigmoid for a one-channel model), averaged over TTA flips."""
        return self._tta_tensor(x, self.ops.class_probabilities)

    def _tta_tensor(self, x: Any, to_probability: Callable, unflip: Callable | None = None) -> Any:
        """Run the model (engine and precision of ``self.inference``) on a normalised batch and its flips,
        average the probabilities (on the device).

        ``unflip(maps, dims)`` undoes a flip of the maps (default: flip them back)."""
        flips = [(), (3,), (2,), (2, 3)] if self.tta else [()]
        prob = None
        for dims in flips:
            logits = self._run_model(self.ops.flip(x, dims))
            p = to_probability(logits)
            if dims:
                p = unflip(p, dims) if unflip else self.ops.flip(p, dims)
            prob = p if prob is None else prob + p
        return prob / len(flips)


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
