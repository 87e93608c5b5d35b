"""Facade parsing: per-pixel classes of street photos through the shared tiled, batched :class:`Predictor`."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, UnidentifiedImageError

from bldgseg.errors import InputError, ModelError
from bldgseg.palettes import IGNORE_INDEX, Palette, colours_to_classes, palette_table

if TYPE_CHECKING:
    import torch.nn as nn

    from bldgseg.models import ModelCard

__all__ = [
    "DEFAULT_FACADE_MODEL",
    "FacadeParser",
    "load_facade_model",
    "load_labels",
    "save_labels",
    "working_size",
    "resize_rgb",
]

DEFAULT_FACADE_MODEL = "facade"


def working_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    """The size a photo is parsed and measured at: its longer side at most ``max_side`` (None or 0: unchanged)."""
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """H x W x 3 uint8 resampled (area-averaging) to ``size`` = (width, height)."""
    if (rgb.shape[1], rgb.shape[0]) == tuple(size):
        return rgb
    return np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX))


class FacadeParser:
    """Segments street photos with a multi-class facade checkpoint.

    ``model`` is a bundled name or a ``.safetensors`` path; ``"facade"`` is the default bundled model. The
    same :class:`bldgseg.inference.Predictor` as the aerial path does the tiling, blending and batching.
    """

    def __init__(
        self,
        model: str | Path = DEFAULT_FACADE_MODEL,
        device: str = "auto",
        batch_size: int = 4,
        tta: bool = False,
    ):
        from bldgseg.devices import resolve_device
        from bldgseg.inference import Predictor

        network, card = load_facade_model(model)
        if len(card.classes) < 2:
            raise ModelError(
                f"{card.name}: a one-class model ({card.classes[0]}) cannot parse facades; "
                "use a multi-class facade model (--model facade)"
            )
        self.card = card
        self.classes: tuple[str, ...] = tuple(card.classes)
        self.predictor = Predictor(network, card, resolve_device(device), batch_size=batch_size, tta=tta)

    def probabilities(self, rgb: np.ndarray, progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Class probabilities (C x H x W float32) of an H x W x 3 uint8 photo."""
        chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))
        valid = np.ones(rgb.shape[:2], bool)
        return self.predictor.predict_classes(chw, valid, progress)

    def parse(self, rgb: np.ndarray) -> np.ndarray:
        """Class ids (H x W uint8, indices into ``classes``) of an H x W x 3 uint8 photo."""
        return self.probabilities(rgb).argmax(axis=0).astype(np.uint8)


def load_facade_model(model: str | Path) -> tuple[nn.Module, ModelCard]:
    """``load_checkpoint`` with a message that says how to get the facade model when it is not installed."""
    from bldgseg.models import bundled_models, load_checkpoint

    if str(model) == DEFAULT_FACADE_MODEL and DEFAULT_FACADE_MODEL not in bundled_models():
        raise ModelError(
            "facade: the facade model is not installed; pass a multi-class facade checkpoint with --model "
            "PATH.safetensors (e.g. from bldgseg train --palette labelmefacade), put it in "
            "bldgseg/models/weights/facade.safetensors with its .json card, or give --labels with label masks"
        )
    return load_checkpoint(model)


def load_labels(
    path: Path,
    size: tuple[int, int],
    classes: Sequence[str],
    palette: Palette | None = None,
) -> np.ndarray:
    """A precomputed label mask resized (nearest) to ``size`` = (width, height).

    Single-band or palette PNGs hold class ids (indices into ``classes``); RGB label images are decoded with
    ``palette`` (colour -> class id). Ids outside the classes raise ``InputError``.
    """
    try:
        with Image.open(path) as image:
            if image.mode in ("RGB", "RGBA"):
                if palette is None:
                    raise InputError(
                        f"{path.name}: an RGB label image needs a colour palette; save class ids"
                    )
                labels = colours_to_classes(np.asarray(image.convert("RGB")), palette_table(palette, classes))
                if (labels == IGNORE_INDEX).any():
                    raise InputError(f"{path.name}: has colours outside the label palette; check the file")
                image = Image.fromarray(labels)
            elif image.mode not in ("L", "P"):
                image = image.convert("L")
            if image.size != tuple(size):
                image = image.resize(size, Image.Resampling.NEAREST)
            labels = np.asarray(image, dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as exc:
        raise InputError(f"{path.name}: cannot read the label mask ({exc}); check the file") from exc
    if labels.size and int(labels.max()) >= len(classes):
        raise InputError(
            f"{path.name}: class id {int(labels.max())} but only {len(classes)} classes; check --labels"
        )
    return labels


def save_labels(path: Path, labels: np.ndarray, palette: Palette | None = None) -> Path:
    """Write class ids as a palette PNG (ids as pixel values; ``palette`` colours for viewing)."""
    data = np.ascontiguousarray(labels, dtype=np.uint8)
    image = Image.frombytes("P", (data.shape[1], data.shape[0]), data.tobytes())
    colours = [0] * 768
    for colour, index in (palette or {}).items():
        colours[3 * index : 3 * index + 3] = list(colour)
    image.putpalette(colours)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, optimize=True)
    return path
