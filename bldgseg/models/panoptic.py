"""Panoptic-DeepLab-style building instance model (Cheng et al., CVPR 2020) on any registry decoder.

:class:`PanopticBuildingNet` runs an encoder/decoder (an smp architecture such as U-Net or FPN, or
:class:`~bldgseg.models.hrnet_ocr.HRNetOCR`) and predicts, from the decoder's last feature map:

- the **building semantic logit** (the decoder's own segmentation head, exactly as in the semantic model, so
  a semantic checkpoint's ``encoder.*``, ``decoder.*`` and ``segmentation_head.*`` tensors load into it);
- an **instance-centre heatmap** (a light head: 3x3 conv, BN, ReLU, 1x1 conv), regressed directly (no
  activation) to the Gaussian targets with an MSE loss, as in Panoptic-DeepLab;
- a **2-D offset field** (same kind of head), ``(dy, dx)`` in input pixels from each pixel to the centre of its
  building (L1 loss inside buildings).

Heads working below the input resolution are bilinearly upsampled to it; offsets are predicted in input pixels,
so no rescaling is needed. ``forward`` returns one stacked tensor (N, 4, H, W) with the channel order of
:data:`OUTPUT_CHANNELS`:

====  ================  ==========================================================
ch    name              meaning
====  ================  ==========================================================
0     semantic          building logit (sigmoid -> probability)
1     center            centre heatmap value (peak 1 at a building centre)
2     offset_y          rows to the centre (centre row - pixel row)
3     offset_x          columns to the centre (centre column - pixel column)
====  ================  ==========================================================

Channel 0 being the building logit keeps the model a drop-in for :class:`bldgseg.inference.Predictor`
(``predict`` takes channel 0), i.e. the semantic path works unchanged. For instances, blend
:func:`instance_maps` of the logits over windows (every channel is linear in what it encodes, so overlapping
windows average consistently; offsets are translation invariant); with flip TTA, undo the flips with
:func:`unflip_instance_maps` (it negates ``dy``/``dx`` for vertical/horizontal flips). Then
:func:`bldgseg.instances.group_instances` gives one label per building.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn as nn

from bldgseg.models.hrnet_ocr import (
    OCRHead,
    create_hrnet_encoder,
    hrnetv2_features,
    pad_to_stride,
    register_hrnet_ocr,
    upsample_to,
)
from bldgseg.models.instance_outputs import (  # noqa: F401  (re-exported: their home before instance_outputs)
    OUTPUT_CHANNELS,
    instance_maps,
    split_outputs,
    unflip_instance_maps,
)
from bldgseg.models.registry import SMP_ARCHITECTURES

__all__ = [
    "OUTPUT_CHANNELS",
    "PANOPTIC_DECODERS",
    "PanopticBuildingNet",
    "instance_maps",
    "register_instance_architectures",
    "split_outputs",
    "unflip_instance_maps",
]

#: Pixels per unit of the offset head's raw output (a house at 0.3 m is some 30 px across).
OFFSET_SCALE = 10.0

_SMP_DECODERS = SMP_ARCHITECTURES
#: Decoders :class:`PanopticBuildingNet` accepts; each is registered as ``panoptic_<decoder>``.
PANOPTIC_DECODERS: tuple[str, ...] = (*_SMP_DECODERS, "hrnet_ocr")


def _head(cin: int, hidden: int, cout: int) -> nn.Sequential:
    predictor = nn.Conv2d(hidden, cout, 1)
    # near-zero start (as the reference implementation): the heatmap and offsets begin at ~0
    nn.init.normal_(predictor.weight, 0.0, 0.001)
    nn.init.zeros_(predictor.bias)
    return nn.Sequential(
        nn.Conv2d(cin, hidden, 3, padding=1, bias=False),
        nn.BatchNorm2d(hidden),
        nn.ReLU(inplace=True),
        predictor,
    )


class PanopticBuildingNet(nn.Module):
    """Building semantic logit + centre heatmap + offset field on a registry encoder/decoder.

    ``classes`` must be 1 (buildings are the only instance class; the argument exists so the registry's
    ``build_model(..., num_classes=1)`` works). ``decoder`` is one of :data:`PANOPTIC_DECODERS`; with
    ``hrnet_ocr`` the encoder must be an HRNet and :meth:`forward_with_aux` also returns the OCR auxiliary
    logit. ``encoder_weights`` is passed on to the decoder model (None: random init; nothing downloads).
    """

    def __init__(
        self,
        encoder_name: str = "tu-efficientnet_lite0",
        encoder_weights: str | Path | None = None,
        in_channels: int = 3,
        classes: int = 1,
        decoder: str = "unet",
        head_channels: int = 32,
    ):
        super().__init__()
        if classes != 1:
            raise ValueError(f"the instance model segments buildings only (classes=1), got classes={classes}")
        decoder = decoder.lower()
        if decoder not in PANOPTIC_DECODERS:
            raise ValueError(f"unknown decoder {decoder!r}; choose one of: {', '.join(PANOPTIC_DECODERS)}")
        self.decoder_name = decoder
        if decoder == "hrnet_ocr":
            # same submodule names as HRNetOCR (encoder, head), so its checkpoints load here too
            self.encoder = create_hrnet_encoder(encoder_name, in_channels, encoder_weights)
            self.head = OCRHead(int(sum(self.encoder.feature_info.channels())), classes=1)
            features = self.head.mid_channels
        else:
            base = _SMP_DECODERS[decoder](
                encoder_name=encoder_name, encoder_weights=encoder_weights, in_channels=in_channels, classes=1
            )
            # the parts, not the wrapper: state-dict keys match the semantic model's
            self.encoder, self.decoder, self.segmentation_head = (
                base.encoder,
                base.decoder,
                base.segmentation_head,
            )
            self._divisor = int(getattr(base.encoder, "output_stride", 32))
            features = self.segmentation_head[0].in_channels
        self.center_head = _head(features, head_channels, 1)
        self.offset_head = _head(features, head_channels, 2)

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(stacked outputs (N, 4, H, W), OCR auxiliary logit (N, 1, H, W), or None without HRNet-OCR)."""
        h, w = x.shape[-2:]
        if self.decoder_name == "hrnet_ocr":
            padded, _ = pad_to_stride(x)
            feats, aux = self.head(hrnetv2_features(self.encoder(padded)))
            low = torch.cat(
                [
                    self.head.classifier(feats),
                    self.center_head(feats),
                    self.offset_head(feats) * OFFSET_SCALE,
                ],
                1,
            )
            return upsample_to(low, padded)[..., :h, :w], upsample_to(aux, padded)[..., :h, :w]
        if h % self._divisor or w % self._divisor:
            raise ValueError(
                f"input size {h}x{w} is not divisible by {self._divisor}; pad the input (tiles of 256/512 work)"
            )
        feats = self.decoder(self.encoder(x))
        semantic = upsample_to(self.segmentation_head(feats), x)
        instance = upsample_to(
            torch.cat([self.center_head(feats), self.offset_head(feats) * OFFSET_SCALE], 1), x
        )
        return torch.cat([semantic, instance], dim=1), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked (N, 4, H, W): semantic logit, centre heatmap, offset dy, offset dx (see OUTPUT_CHANNELS)."""
        return self.forward_with_aux(x)[0]


def _panoptic(decoder: str) -> Callable[..., nn.Module]:
    def build(
        encoder_name: str = "tu-efficientnet_lite0",
        encoder_weights: str | Path | None = None,
        in_channels: int = 3,
        classes: int = 1,
    ) -> PanopticBuildingNet:
        return PanopticBuildingNet(encoder_name, encoder_weights, in_channels, classes, decoder=decoder)

    build.__name__ = f"panoptic_{decoder}"
    build.__doc__ = f"PanopticBuildingNet with the {decoder} decoder."
    return build


def register_instance_architectures(
    register: Callable[[str, Callable[..., nn.Module]], None] | None = None,
) -> list[str]:
    """Register ``hrnet_ocr`` and ``panoptic_<decoder>`` for every decoder; returns the names added.

    ``register`` defaults to :func:`bldgseg.models.registry.register_architecture` (imported here, so the
    registry may call this function at the end of its own module without an import cycle).
    """
    if register is None:
        from bldgseg.models.registry import register_architecture as register
    register_hrnet_ocr(register)
    names = ["hrnet_ocr"]
    for decoder in PANOPTIC_DECODERS:
        register(f"panoptic_{decoder}", _panoptic(decoder))
        names.append(f"panoptic_{decoder}")
    return names
