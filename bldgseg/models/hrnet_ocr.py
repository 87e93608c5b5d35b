"""HRNet-OCR: a high-resolution network with object-contextual representations (Yuan, Chen & Wang, ECCV 2020).

Backbone: a timm HRNet (``hrnet_w18_small``, ``hrnet_w18_small_v2``, ``hrnet_w18``, ...) created with
``features_only=True, feature_location=""`` so it returns the four parallel HRNet branches themselves (strides
4, 8, 16, 32; 16/32/64/128 channels for ``hrnet_w18_small``, 18/36/72/144 for the W18 models) rather than the
classification head's widened "incre" features. The branches are upsampled to the 1/4 level and concatenated
(HRNetV2 representation), then:

1. **soft object regions**: an auxiliary head (1x1 conv, BN, ReLU, 1x1 conv) gives coarse class logits;
2. **pixel representation**: a 3x3 conv (BN, ReLU) to ``ocr_mid_channels``;
3. **object-region representations**: for each region, the pixel representations averaged with weights
   ``softmax over pixels`` of that region's logits;
4. **pixel-region relation**: query (pixels), key and value (regions) projections to ``ocr_key_channels`` and
   scaled dot-product attention over the regions, projected back to ``ocr_mid_channels``;
5. **augmented representation**: the attention output concatenated with the pixel representation, 1x1 conv,
   BN, ReLU, dropout; a 1x1 classifier gives the main logits.

Both logits are bilinearly upsampled to the input size. A binary model (``classes=1``) has one logit channel
like every other registry model; its soft object regions are the two maps ``(-aux, aux)`` (background and
building), because a single region would carry no contrast. The region-side projections (key, value) have
no BatchNorm: they act on ``batch x regions`` vectors (2 per image for buildings), too few for batch
statistics. Inputs whose sides are not multiples of 32 are padded (edge replicate) and cropped back.

``forward`` returns the main logits (N, classes, H, W) in train and eval mode, so the model is a drop-in for
the existing trainer and :class:`bldgseg.inference.Predictor`; ``forward_with_aux`` returns ``(main, aux)`` for a
training step with the auxiliary loss (:func:`ocr_loss`, weight 0.4 as in the paper).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from bldgseg.models.pretrained import load_encoder_tensors, read_state_dict

__all__ = [
    "AUX_WEIGHT",
    "HRNetOCR",
    "OCRHead",
    "ObjectAttention",
    "SpatialGather",
    "create_hrnet_encoder",
    "hrnet_name",
    "hrnetv2_features",
    "load_encoder_weights",
    "ocr_loss",
    "pad_to_stride",
    "register_hrnet_ocr",
    "upsample_to",
]

#: Weight of the auxiliary (soft object region) loss, as in HRNet-OCR's training recipe.
AUX_WEIGHT = 0.4
#: Total stride of HRNet; inputs are padded to a multiple of it.
_STRIDE = 32


def _cbr(cin: int, cout: int, kernel: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def hrnet_name(encoder_name: str) -> str:
    """The timm HRNet model name of ``encoder_name`` (an smp-style ``tu-`` prefix is accepted)."""
    name = encoder_name[3:] if encoder_name.startswith("tu-") else encoder_name
    if not name.startswith("hrnet_"):
        raise ValueError(
            f"hrnet_ocr needs an HRNet encoder (hrnet_w18_small, hrnet_w18_small_v2, hrnet_w18, ...), "
            f"not {encoder_name!r}"
        )
    return name


class SpatialGather(nn.Module):
    """Object-region representations: per region, the pixel features weighted by softmax-over-pixels of its logits."""

    def forward(self, feats: torch.Tensor, regions: torch.Tensor) -> torch.Tensor:
        """``feats`` (N, C, H, W), ``regions`` (N, K, H, W) logits -> (N, K, C)."""
        probs = torch.softmax(regions.flatten(2).float(), dim=2).to(feats.dtype)  # (N, K, HW)
        return torch.bmm(probs, feats.flatten(2).transpose(1, 2))


class ObjectAttention(nn.Module):
    """Pixel-region relation and context: scaled dot-product attention of pixels (queries) over regions."""

    def __init__(self, channels: int, key_channels: int):
        super().__init__()
        self.query = nn.Sequential(_cbr(channels, key_channels), _cbr(key_channels, key_channels))
        # region side: (N, K) vectors, too few for BatchNorm statistics -> conv with bias + ReLU
        self.key = nn.Sequential(
            nn.Conv1d(channels, key_channels, 1),
            nn.ReLU(inplace=True),
            nn.Conv1d(key_channels, key_channels, 1),
            nn.ReLU(inplace=True),
        )
        self.value = nn.Sequential(nn.Conv1d(channels, key_channels, 1), nn.ReLU(inplace=True))
        self.out = _cbr(key_channels, channels)

    def forward(self, feats: torch.Tensor, objects: torch.Tensor) -> torch.Tensor:
        """``feats`` (N, C, H, W), ``objects`` (N, K, C) -> object context per pixel (N, C, H, W)."""
        n, _, h, w = feats.shape
        obj = objects.transpose(1, 2)  # (N, C, K)
        q = self.query(feats).flatten(2).transpose(1, 2)  # (N, HW, key)
        k = self.key(obj).transpose(1, 2)  # (N, K, key)
        v = self.value(obj).transpose(1, 2)  # (N, K, key)
        context = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(key)) v
        return self.out(context.transpose(1, 2).reshape(n, -1, h, w))


class OCRHead(nn.Module):
    """OCR on the concatenated HRNet branches: soft regions, region representations, relation, classifier."""

    def __init__(
        self,
        in_channels: int,
        classes: int = 1,
        mid_channels: int = 512,
        key_channels: int = 256,
        dropout: float = 0.05,
    ):
        super().__init__()
        if classes < 1:
            raise ValueError(f"classes must be >= 1, got {classes}")
        self.classes = classes
        self.mid_channels = mid_channels
        self.aux_head = nn.Sequential(_cbr(in_channels, in_channels), nn.Conv2d(in_channels, classes, 1))
        self.pixel = _cbr(in_channels, mid_channels, 3)
        self.gather = SpatialGather()
        self.attention = ObjectAttention(mid_channels, key_channels)
        self.fuse = nn.Sequential(_cbr(2 * mid_channels, mid_channels), nn.Dropout2d(dropout))
        self.classifier = nn.Conv2d(mid_channels, classes, 1)

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """HRNetV2 features -> (augmented representation (N, mid, h, w), aux logits (N, classes, h, w))."""
        aux = self.aux_head(feats)
        regions = torch.cat([-aux, aux], dim=1) if self.classes == 1 else aux
        pixels = self.pixel(feats)
        objects = self.gather(pixels, regions)
        context = self.attention(pixels, objects)
        return self.fuse(torch.cat([context, pixels], dim=1)), aux


def create_hrnet_encoder(
    encoder_name: str, in_channels: int = 3, encoder_weights: str | Path | None = None
) -> nn.Module:
    """timm HRNet returning its four branches (strides 4-32); weights only from a local file, if given."""
    encoder = timm.create_model(
        hrnet_name(encoder_name),
        features_only=True,
        pretrained=False,
        in_chans=in_channels,
        feature_location="",
        out_indices=(1, 2, 3, 4),
    )
    if encoder_weights is not None:
        load_encoder_weights(encoder, encoder_weights)
    return encoder


def hrnetv2_features(feats: list[torch.Tensor]) -> torch.Tensor:
    """HRNetV2 representation: the branches upsampled to the first one's (1/4) size and concatenated."""
    size = feats[0].shape[-2:]
    up = [feats[0]] + [F.interpolate(f, size=size, mode="bilinear", align_corners=False) for f in feats[1:]]
    return torch.cat(up, dim=1)


class HRNetOCR(nn.Module):
    """HRNetV2 features + OCR head; registry-compatible constructor (see the module docstring).

    Submodules ``encoder`` (the timm HRNet) and ``head`` (:class:`OCRHead`); ``mid_channels`` is the width of
    the augmented representation returned by :meth:`forward_features`.
    """

    def __init__(
        self,
        encoder_name: str = "hrnet_w18_small",
        encoder_weights: str | Path | None = None,
        in_channels: int = 3,
        classes: int = 1,
        ocr_mid_channels: int = 512,
        ocr_key_channels: int = 256,
        dropout: float = 0.05,
    ):
        super().__init__()
        self.encoder = create_hrnet_encoder(encoder_name, in_channels, encoder_weights)
        channels = int(sum(self.encoder.feature_info.channels()))
        self.head = OCRHead(channels, classes, ocr_mid_channels, ocr_key_channels, dropout)
        self.mid_channels = ocr_mid_channels

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, C, H, W), H and W multiples of 32 -> (OCR-augmented features, aux logits), both at 1/4."""
        return self.head(hrnetv2_features(self.encoder(x)))

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(main logits, auxiliary soft-region logits), both (N, classes, H, W) at the input size."""
        padded, (h, w) = pad_to_stride(x)
        feats, aux = self.forward_features(padded)
        main = upsample_to(self.head.classifier(feats), padded)[..., :h, :w]
        return main, upsample_to(aux, padded)[..., :h, :w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Main logits (N, classes, H, W) at the input size."""
        padded, (h, w) = pad_to_stride(x)
        feats, _ = self.forward_features(padded)
        return upsample_to(self.head.classifier(feats), padded)[..., :h, :w]


def pad_to_stride(x: torch.Tensor, stride: int = _STRIDE) -> tuple[torch.Tensor, tuple[int, int]]:
    """``x`` padded at the bottom/right (edge replicate) to multiples of ``stride``, and the original size."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % stride, (-w) % stride
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


def upsample_to(logits: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Bilinear upsampling of ``logits`` to the spatial size of ``like``."""
    if logits.shape[-2:] == like.shape[-2:]:
        return logits
    return F.interpolate(logits, size=like.shape[-2:], mode="bilinear", align_corners=False)


def load_encoder_weights(encoder: nn.Module, path: str | Path) -> int:
    """Load a local timm HRNet state dict (.pth / .safetensors) into ``encoder``; nothing is downloaded.

    Keys of the classification head (``incre_modules``, ``classifier``...) are ignored; a missing backbone
    tensor raises ``ValueError``. Returns the number of tensors loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"encoder_weights {str(path)!r}: not a local file; HRNet-OCR loads weights only from a "
            ".pth/.safetensors state dict (nothing is downloaded)"
        )
    loaded, missing = load_encoder_tensors(encoder, read_state_dict(path))
    if missing:
        raise ValueError(f"{path.name}: {len(missing)} HRNet tensors missing (e.g. {missing[0]})")
    return loaded


def ocr_loss(
    main: torch.Tensor,
    aux: torch.Tensor,
    target: torch.Tensor,
    base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    aux_weight: float = AUX_WEIGHT,
) -> torch.Tensor:
    """``base_loss(main, target) + aux_weight * base_loss(aux, target)``; logits are resized to the target."""
    size = target.shape[-2:]
    if main.shape[-2:] != size:
        main = F.interpolate(main, size=size, mode="bilinear", align_corners=False)
    if aux.shape[-2:] != size:
        aux = F.interpolate(aux, size=size, mode="bilinear", align_corners=False)
    return base_loss(main, target) + aux_weight * base_loss(aux, target)


def register_hrnet_ocr(register: Callable[[str, Callable[..., nn.Module]], None] | None = None) -> None:
    """Register ``hrnet_ocr`` (default: into :data:`bldgseg.models.registry.ARCHITECTURES`)."""
    if register is None:
        from bldgseg.models.registry import register_architecture as register
    register("hrnet_ocr", HRNetOCR)
