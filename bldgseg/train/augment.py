"""Training augmentation built from a plain dict (so it can live in a YAML config).

Geometry: random crop, 90° rotations, flips, arbitrary rotation and scale jitter around the target GSD
(``Affine``). Radiometry: brightness/contrast, hue/saturation/value, Gaussian noise, smooth illumination
gradients and cast shadows. Masks are always warped with nearest-neighbour interpolation, and every pixel
that comes from outside the image (padding, rotated corners) is ``ignore_index`` (255) in the mask and 0 in
the image, so the loss never learns "background" from made-up pixels.

Config keys (all optional; a number ``x`` for a range means ``(-x, x)``, or ``(1 - x, 1 + x)`` for ``scale``;
``0``/``None``/a probability of 0 switches a transform off)::

    brightness: 0.2          contrast: 0.2          brightness_contrast_p: 0.7
    hue: 8                   saturation: 20         value: 10               hsv_p: 0.5
    noise: [0.01, 0.04]      noise_p: 0.2           # Gaussian noise std, fraction of 255
    illumination: 0.15       illumination_p: 0.2    # max brightening/darkening of a smooth gradient
    shadow: [0.3, 0.6]       shadow_p: 0.15         # cast-shadow darkening range
    rotate90_p: 1.0          hflip_p: 0.5           vflip_p: 0.0
    rotate: 30               scale: [0.85, 1.15]    affine_p: 0.6
    ignore_index: 255
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import albumentations as A
import cv2

from bldgseg.errors import InputError

__all__ = ["DEFAULT_AUGMENTATION", "build_augmentation"]

DEFAULT_AUGMENTATION: dict[str, Any] = {
    "brightness": 0.2,
    "contrast": 0.2,
    "brightness_contrast_p": 0.7,
    "hue": 8,
    "saturation": 20,
    "value": 10,
    "hsv_p": 0.5,
    "noise": [0.01, 0.04],
    "noise_p": 0.2,
    "illumination": 0.15,
    "illumination_p": 0.2,
    "shadow": [0.3, 0.6],
    "shadow_p": 0.15,
    "rotate90_p": 1.0,
    "hflip_p": 0.5,
    "vflip_p": 0.0,
    "rotate": 30,
    "scale": [0.85, 1.15],
    "affine_p": 0.6,
    "ignore_index": 255,
}


def _prob(cfg: Mapping[str, Any], key: str) -> float:
    value = cfg[key]
    try:
        p = 0.0 if value is None else float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"augmentation {key}={value!r}: not a number; use a probability 0..1") from exc
    if not 0.0 <= p <= 1.0:
        raise InputError(f"augmentation {key}={value!r}: probability must be between 0 and 1")
    return p


def _range(cfg: Mapping[str, Any], key: str, *, around: float = 0.0) -> tuple[float, float] | None:
    """``x`` -> ``(around - x, around + x)``; ``[a, b]`` -> ``(a, b)``; 0/None/empty -> None (off)."""
    value = cfg[key]
    if value is None:
        return None
    try:
        if isinstance(value, (int, float)):
            x = abs(float(value))
            lo, hi = around - x, around + x
        else:
            lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"augmentation {key}={value!r}: expected a number or a [low, high] pair, e.g. {key}: [0.8, 1.2]"
        ) from exc
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
        raise InputError(f"augmentation {key}={value!r}: needs finite low <= high")
    if lo == hi == around:
        return None
    return lo, hi


def _upto(cfg: Mapping[str, Any], key: str, *, floor: float | None) -> tuple[float, float] | None:
    """Non-negative range: ``x`` -> ``(floor, x)`` (``(x, x)`` when ``floor`` is None); ``[a, b]`` as given."""
    value = cfg[key]
    if value is None or (isinstance(value, (int, float)) and float(value) == 0.0):
        return None
    if isinstance(value, (int, float)):
        x = float(value)
        rng = (x if floor is None else min(floor, x), x)
    else:
        rng = _range(cfg, key)
        if rng is None:
            return None
    if not (math.isfinite(rng[0]) and math.isfinite(rng[1])) or rng[0] < 0 or rng[0] > rng[1]:
        raise InputError(f"augmentation {key}={value!r}: needs 0 <= low <= high")
    return rng


def _settings(config: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = dict(DEFAULT_AUGMENTATION)
    if config:
        unknown = sorted(set(config) - set(DEFAULT_AUGMENTATION))
        if unknown:
            raise InputError(
                f"augmentation: unknown key(s) {', '.join(map(str, unknown))}; "
                f"valid keys: {', '.join(DEFAULT_AUGMENTATION)}"
            )
        cfg.update(config)
    return cfg


def build_augmentation(crop: int, config: Mapping[str, Any] | None = None) -> A.Compose:
    """A random ``crop`` x ``crop`` training transform for ``image`` (H, W, 3 uint8) and ``mask`` (H, W uint8).

    ``config`` overrides :data:`DEFAULT_AUGMENTATION` key by key (see the module docstring); unknown keys raise
    :class:`InputError`. The crop is taken from the image plus a margin wide enough for the largest rotation and
    smallest scale, so rotated crops use real neighbouring pixels where the image has them; beyond the image
    (and when the image is smaller than ``crop``) the mask is ``ignore_index`` and the image 0.
    """
    crop = int(crop)
    if crop < 8:
        raise InputError(f"crop={crop}: too small; use e.g. 256")
    cfg = _settings(config)
    try:
        ignore = int(cfg["ignore_index"])
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"augmentation ignore_index={cfg['ignore_index']!r}: use an integer, e.g. 255"
        ) from exc
    constant = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0, "fill_mask": ignore}
    geometric, margin = _affine(cfg, crop, constant)
    context = crop + 2 * margin

    transforms: list[A.BasicTransform] = []
    if margin:
        transforms.append(A.Pad(padding=margin, **constant))
    transforms += [
        A.PadIfNeeded(context, context, position="random", **constant),
        A.RandomCrop(context, context),
    ]
    for key, cls in (
        ("rotate90_p", A.RandomRotate90),
        ("hflip_p", A.HorizontalFlip),
        ("vflip_p", A.VerticalFlip),
    ):
        p = _prob(cfg, key)
        if p > 0:
            transforms.append(cls(p=p))
    transforms += geometric
    if margin:
        transforms.append(A.CenterCrop(crop, crop))
    return A.Compose(transforms + _photometric(cfg))


def _affine(cfg: Mapping[str, Any], crop: int, constant: dict[str, Any]) -> tuple[list[A.BasicTransform], int]:
    """The rotation/scale transform (if any) and the margin around the crop that it needs for real context."""
    rotate = _range(cfg, "rotate")
    scale = _range(cfg, "scale", around=1.0)
    affine_p = _prob(cfg, "affine_p")
    if not (affine_p > 0 and (rotate is not None or scale is not None)):
        return [], 0
    if scale is not None and scale[0] <= 0:
        raise InputError(f"augmentation scale={cfg['scale']!r}: scale factors must be positive")
    theta = math.radians(min(45.0, max(abs(rotate[0]), abs(rotate[1])))) if rotate else 0.0
    s_min = min(1.0, scale[0]) if scale else 1.0
    context = math.ceil(crop * (math.cos(theta) + math.sin(theta)) / s_min) + 2
    affine = A.Affine(
        scale=scale or (1.0, 1.0),
        rotate=rotate or (0.0, 0.0),
        interpolation=cv2.INTER_LINEAR,
        mask_interpolation=cv2.INTER_NEAREST,
        p=affine_p,
        **constant,
    )
    return [affine], math.ceil((context - crop) / 2)


def _photometric(cfg: Mapping[str, Any]) -> list[A.BasicTransform]:
    """Brightness/contrast, HSV, illumination, shadow and noise transforms whose probability is above 0."""
    transforms: list[A.BasicTransform] = []
    p = _prob(cfg, "brightness_contrast_p")
    brightness, contrast = _range(cfg, "brightness"), _range(cfg, "contrast")
    if p > 0 and (brightness or contrast):
        transforms.append(A.RandomBrightnessContrast(brightness or (0.0, 0.0), contrast or (0.0, 0.0), p=p))
    p = _prob(cfg, "hsv_p")
    hue, sat, val = _range(cfg, "hue"), _range(cfg, "saturation"), _range(cfg, "value")
    if p > 0 and (hue or sat or val):
        transforms.append(A.HueSaturationValue(hue or (0, 0), sat or (0, 0), val or (0, 0), p=p))
    p = _prob(cfg, "illumination_p")
    illumination = _upto(cfg, "illumination", floor=0.01)
    if p > 0 and illumination:
        transforms.append(
            A.Illumination(mode="linear", intensity_range=illumination, effect_type="both", p=p)
        )
    p = _prob(cfg, "shadow_p")
    shadow = _upto(cfg, "shadow", floor=None)
    if p > 0 and shadow:
        transforms.append(A.RandomShadow(shadow_roi=(0, 0, 1, 1), shadow_intensity_range=shadow, p=p))
    p = _prob(cfg, "noise_p")
    noise = _upto(cfg, "noise", floor=0.0)
    if p > 0 and noise:
        transforms.append(A.GaussNoise(std_range=noise, p=p))
    return transforms
