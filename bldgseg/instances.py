"""Building instances, Panoptic-DeepLab style: training targets from footprints, losses, grouping into labels.

Targets (:func:`instance_targets`) come from an instance label image, one id per building, which
:func:`rasterize_instances` burns from the footprint polygons (each polygon one instance), so the existing
footprint datasets train the instance head with no extra labelling; :func:`connected_instances` is the
fallback for mask-only datasets (touching buildings then stay merged).

**Centre of a building**: the centre of mass of its pixels, rounded to the nearest pixel (``floor(c + 0.5)``,
so the same building gets the same centre wherever it lies in a crop). When that pixel is not part of the
building (concave shapes: L, U, courtyards), the building's pixel nearest to the centre of mass is used, so a
centre always lies on its own building and cannot fall on a neighbour. Rounding to a pixel makes the heatmap
peak exactly 1 at one pixel (no ties for the peak detection) and makes ``pixel + offset`` land exactly on
the peak for perfect predictions.

**Heatmap**: ``exp(-d^2 / (2 sigma^2))`` with ``d`` the distance to the nearest centre (equal to the maximum
over the instances' Gaussians). **Offsets**: ``(centre_row - row, centre_col - col)`` in pixels for the pixels
of each building, 0 elsewhere; they are translation invariant, so overlapping crops and tiles agree.

:func:`group_instances` turns predicted maps into labels; :func:`instance_loss` is the Panoptic-DeepLab loss;
:func:`training_loss` is one call for a training step of any registry model (semantic or instance, with or
without the HRNet-OCR auxiliary output).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import rasterio.features
import torch
from affine import Affine
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "IGNORE_INDEX",
    "LOSS_WEIGHTS",
    "NMS_KERNEL",
    "TARGET_CHANNELS",
    "connected_instances",
    "group_instances",
    "instance_centres",
    "instance_loss",
    "instance_target_stack",
    "instance_targets",
    "label_instances",
    "match_instances",
    "merge_fragments",
    "rasterize_instances",
    "resample_instance_maps",
    "training_loss",
]

IGNORE_INDEX = 255
#: Channel order of :func:`instance_target_stack` (the target tensor of an instance training sample).
TARGET_CHANNELS: tuple[str, ...] = (
    "semantic",
    "center",
    "offset_y",
    "offset_x",
    "center_weight",
    "offset_weight",
)
#: (semantic, centre MSE, offset L1) weights. Centre x200 as Panoptic-DeepLab (the heatmap MSE, averaged over
#: mostly-zero maps, is ~1e-3). Offsets x0.1 instead of its 0.01: its offsets are ~100 px (Cityscapes objects),
#: ours ~10 px (houses at 0.3 m), so 0.1 gives the offset term the same share of the loss.
LOSS_WEIGHTS: tuple[float, float, float] = (1.0, 200.0, 0.1)
#: Centre NMS window of :func:`label_instances` (model pixels): two peaks closer than half of it are one
#: building. Wider than Panoptic-DeepLab's 7 because a building seen only in part by a window can leave a second
#: peak a few pixels from its centre; at 0.3 m two house centres are rarely closer than 2 m (6 px).
NMS_KERNEL = 13

_EIGHT = np.ones((3, 3), dtype=bool)


# --------------------------------------------------------------------------------------------- targets


def rasterize_instances(
    polygons: Iterable[Any], transform: Affine, shape: tuple[int, int], all_touched: bool = False
) -> np.ndarray:
    """Instance label image (int32, ``shape``): polygon ``i`` (0-based, input order) burns id ``i + 1``.

    ``polygons`` are shapely geometries (or a GeoSeries / GeoDataFrame) in the raster's CRS; empty or missing
    geometries burn nothing. Every pixel gets one id, so buildings sharing an edge split its pixels exactly
    (a pixel belongs to the polygon containing its centre; GDAL's half-open rule decides centres lying on the
    shared edge). Where footprints overlap, the smaller one is burned last and keeps the overlap, so a small
    building is never erased by a larger one drawn around it.
    """
    geoms = list(getattr(polygons, "geometry", polygons))
    shapes = [(g, i + 1) for i, g in enumerate(geoms) if g is not None and not g.is_empty]
    if not shapes:
        return np.zeros(shape, np.int32)
    shapes.sort(key=lambda item: -item[0].area)
    return rasterio.features.rasterize(
        shapes, out_shape=shape, transform=transform, fill=0, all_touched=all_touched, dtype="int32"
    )


def connected_instances(mask: np.ndarray) -> np.ndarray:
    """Instances of a 0/1(/255) mask without footprints: 8-connected components of the value 1 (int32)."""
    labels, _ = ndimage.label(np.asarray(mask) == 1, structure=_EIGHT)
    return labels.astype(np.int32)


def instance_centres(instance_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ids, centres (n, 2) int64 row/col) of the positive labels; the centre rule is in the module docstring."""
    labels = np.asarray(instance_labels)
    fg = labels > 0
    rows, cols = np.nonzero(fg)
    ids, inverse = np.unique(labels[rows, cols], return_inverse=True)
    if len(ids) == 0:
        return ids.astype(np.int64), np.zeros((0, 2), np.int64)
    count = np.bincount(inverse).astype(np.float64)
    mean_r = np.bincount(inverse, weights=rows) / count
    mean_c = np.bincount(inverse, weights=cols) / count
    centres = np.stack([np.floor(mean_r + 0.5), np.floor(mean_c + 0.5)], axis=1).astype(np.int64)
    outside = np.flatnonzero(labels[centres[:, 0], centres[:, 1]] != ids)
    if len(outside):
        order = np.argsort(inverse, kind="stable")  # pixels grouped by instance, raster order inside
        starts = np.concatenate([[0], np.cumsum(count.astype(np.int64))])
        for k in outside:
            pix = order[starts[k] : starts[k + 1]]
            d2 = (rows[pix] - mean_r[k]) ** 2 + (cols[pix] - mean_c[k]) ** 2
            j = pix[int(np.argmin(d2))]
            centres[k] = (rows[j], cols[j])
    return ids.astype(np.int64), centres


def instance_targets(
    instance_labels: np.ndarray, sigma: float = 8.0, ignore: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre heatmap (H, W), offsets (2, H, W: dy, dx in pixels) and loss weights (2, H, W), all float32.

    ``instance_labels``: one positive id per building, 0 background (e.g. from :func:`rasterize_instances`).
    ``weights[0]`` weighs the heatmap loss (1 everywhere but ``ignore``), ``weights[1]`` the offset loss (1 on
    building pixels not in ``ignore``). ``sigma`` is the Gaussian's standard deviation in pixels.
    """
    labels = np.asarray(instance_labels)
    if labels.ndim != 2:
        raise ValueError(f"instance labels must be 2-D, got shape {labels.shape}")
    h, w = labels.shape
    ids, centres = instance_centres(labels)
    center = np.zeros((h, w), np.float32)
    offsets = np.zeros((2, h, w), np.float32)
    weights = np.ones((2, h, w), np.float32)
    fg = labels > 0
    weights[1] = fg
    if len(ids):
        seeds = np.ones((h, w), bool)
        seeds[centres[:, 0], centres[:, 1]] = False
        dist = ndimage.distance_transform_edt(seeds)
        center = np.exp(-(dist**2) / (2.0 * sigma**2)).astype(np.float32)
        rows, cols = np.nonzero(fg)
        k = np.searchsorted(ids, labels[rows, cols])
        offsets[0, rows, cols] = centres[k, 0] - rows
        offsets[1, rows, cols] = centres[k, 1] - cols
    if ignore is not None:
        weights[:, np.asarray(ignore, bool)] = 0.0
    return center, offsets, weights


def instance_target_stack(mask: np.ndarray, instance_labels: np.ndarray, sigma: float = 8.0) -> np.ndarray:
    """Training target (6, H, W) float32 in the order of :data:`TARGET_CHANNELS`.

    ``mask`` (H, W) uint8 0/1/255 gives the semantic channel (255 kept, for the ignore-aware semantic loss)
    and the ignored pixels of the other losses; building pixels without an instance id are left out of the
    offset loss.
    """
    mask = np.asarray(mask)
    labels = np.where(mask == 1, np.asarray(instance_labels), 0)
    center, offsets, weights = instance_targets(labels, sigma, ignore=mask == IGNORE_INDEX)
    return np.concatenate([mask[None].astype(np.float32), center[None], offsets, weights]).astype(np.float32)


# ------------------------------------------------------------------------------------- post-processing


def _numpy(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().float().cpu().numpy()
    return np.asarray(a, dtype=np.float32)


def _suppress_ties(peaks: np.ndarray, radius: int) -> np.ndarray:
    """Drop peaks within ``radius`` (Chebyshev) of an earlier kept one; ``peaks`` sorted strongest first.

    Max-pooling keeps every pixel of a plateau (equal heat values, e.g. after resampling a heatmap up), so one
    centre could count several times.
    """
    if len(peaks) < 2 or radius < 1:
        return peaks
    pairs = cKDTree(peaks.astype(np.float64)).query_pairs(radius, p=np.inf, output_type="ndarray")
    if not len(pairs):
        return peaks
    later = np.sort(pairs, axis=1)  # (earlier index, later index): indices follow the strength order
    keep = np.ones(len(peaks), bool)
    order = np.argsort(later[:, 0], kind="stable")
    starts = np.searchsorted(later[order, 0], np.arange(len(peaks)))
    ends = np.searchsorted(later[order, 0], np.arange(len(peaks)), side="right")
    for i in range(len(peaks)):
        if keep[i]:
            keep[later[order[starts[i] : ends[i]], 1]] = False
    return peaks[keep]


def _blob_of_peaks(peaks: np.ndarray, blobs: np.ndarray, radius: int) -> np.ndarray:
    """Blob id of each peak: its own pixel's, else the nearest blob pixel's within ``radius``; 0 for none."""
    ids = blobs[peaks[:, 0], peaks[:, 1]].astype(np.int64)
    off = np.flatnonzero(ids == 0)
    if len(off) and blobs.any():
        distance, (near_r, near_c) = ndimage.distance_transform_edt(blobs == 0, return_indices=True)
        r, c = peaks[off, 0], peaks[off, 1]
        ids[off] = np.where(distance[r, c] <= radius, blobs[near_r[r, c], near_c[r, c]], 0)
    return ids


def group_instances(
    semantic_prob: np.ndarray,
    center: np.ndarray,
    offset: np.ndarray,
    threshold: float = 0.5,
    center_threshold: float = 0.1,
    nms_kernel: int = 7,
    top_k: int | None = 200,
    max_distance: float | None = None,
) -> np.ndarray:
    """Instance labels (int32, H x W; 0 background, 1..n buildings) from predicted maps.

    ``semantic_prob`` (H, W) building probability, ``center`` (H, W) heatmap, ``offset`` (2, H, W) dy, dx in
    pixels (numpy arrays or CPU tensors). Centres are the heatmap's local maxima in a ``nms_kernel`` window
    (max-pooling NMS) above ``center_threshold``, the ``top_k`` strongest kept (None: all; 200 follows
    Panoptic-DeepLab for one image, a large chunk of a dense town needs more). Each building pixel
    (``semantic_prob >= threshold``) votes at ``pixel + offset`` and joins the nearest centre *of its own
    connected building blob* (a centre off the mask belongs to the blob of the nearest building pixel within
    ``nms_kernel // 2``, else it is dropped): separate blobs never exchange pixels, whatever the offsets. A
    pixel gets no centre when its blob has none, when its vote lands outside the array (its building's centre
    lies beyond the crop: the building is cut by the crop edge), or when the vote is farther than
    ``max_distance`` pixels from every centre; such pixels are labelled by 8-connected components, so no
    building is lost. Labels follow
    the centres' scores (strongest first), then the components in raster order; centres that receive no pixel
    give no label.
    """
    prob = _numpy(semantic_prob)
    heat = _numpy(center)
    off = _numpy(offset)
    if prob.ndim != 2 or heat.shape != prob.shape or off.shape != (2, *prob.shape):
        raise ValueError(
            f"expected semantic (H, W), center (H, W) and offset (2, H, W); got {prob.shape}, "
            f"{heat.shape}, {off.shape}"
        )
    h, w = prob.shape
    labels = np.zeros((h, w), np.int32)
    fg = prob >= threshold
    if not fg.any():
        return labels
    blobs, _ = ndimage.label(fg, structure=_EIGHT)
    pooled = ndimage.maximum_filter(heat, size=nms_kernel, mode="constant", cval=-np.inf)
    peaks = np.argwhere((heat == pooled) & (heat > center_threshold))
    if len(peaks):
        # strongest first; ties in raster order (argwhere order, stable sort)
        peaks = peaks[np.argsort(-heat[peaks[:, 0], peaks[:, 1]], kind="stable")]
        peaks = _suppress_ties(peaks, nms_kernel // 2)
        if top_k is not None:
            peaks = peaks[:top_k]
    peak_blob = _blob_of_peaks(peaks, blobs, nms_kernel // 2) if len(peaks) else np.zeros(0, np.int64)
    peaks, peak_blob = peaks[peak_blob > 0], peak_blob[peak_blob > 0]
    rows, cols = np.nonzero(fg)
    assigned = np.full(len(rows), -1, np.int64)
    if len(peaks):
        vy = rows + off[0, rows, cols]
        vx = cols + off[1, rows, cols]
        inside = (vy >= -0.5) & (vy < h - 0.5) & (vx >= -0.5) & (vx < w - 0.5)
        # a third coordinate far apart per blob keeps every vote among its own blob's centres
        apart = 4.0 * (h + w)
        votes = np.stack([vy[inside], vx[inside], blobs[rows, cols][inside] * apart], axis=1)
        centres = np.column_stack([peaks, peak_blob * apart])
        bound = 2.0 * (h + w) if max_distance is None else min(float(max_distance), 2.0 * (h + w))
        _, nearest = cKDTree(centres.astype(np.float64)).query(votes, k=1, distance_upper_bound=bound)
        nearest[nearest >= len(peaks)] = -1  # beyond max_distance
        assigned[inside] = nearest
    used = np.unique(assigned[assigned >= 0])
    remap = np.zeros(len(peaks) + 1, np.int32)
    remap[used + 1] = np.arange(1, len(used) + 1, dtype=np.int32)
    labels[rows, cols] = remap[assigned + 1]
    orphans = fg & (labels == 0)
    if orphans.any():
        extra, _ = ndimage.label(orphans, structure=_EIGHT)
        labels[orphans] = extra[orphans] + len(used)
    return labels


def resample_instance_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(4, H, W) instance maps on the model grid -> ``shape`` (bilinear), offsets rescaled to the new pixels.

    The probability and heatmap are resampled as they are; ``dy`` and ``dx`` are multiplied by the output/input
    size ratio of their axis, so ``pixel + offset`` still lands on the building's centre on the new grid.
    """
    maps = np.asarray(maps, dtype=np.float32)
    h, w = maps.shape[1:]
    if (h, w) == tuple(shape):
        return maps
    tensor = torch.from_numpy(np.ascontiguousarray(maps))[None]
    out = torch.nn.functional.interpolate(tensor, size=tuple(shape), mode="bilinear", align_corners=False)
    out = out[0].numpy().copy()
    out[2] *= shape[0] / h
    out[3] *= shape[1] / w
    return out


def merge_fragments(labels: np.ndarray, min_pixels: int) -> np.ndarray:
    """Make every instance one 8-connected piece, without dropping pixels.

    Offset votes can give an instance stray pieces away from its main body. The largest piece keeps the id;
    a stray piece of at least ``min_pixels`` becomes an instance of its own; a smaller one joins the instance
    it shares the longest border with (it stays its own instance when it touches none), so the union of the
    instances is still the building mask.
    """
    from skimage.measure import label as connected

    labels = np.asarray(labels, dtype=np.int32)
    pieces = connected(labels, background=0, connectivity=2)
    n_pieces = int(pieces.max())
    if n_pieces == 0:
        return labels.copy()
    piece_ids = np.arange(1, n_pieces + 1)
    owner = np.asarray(ndimage.maximum(labels, pieces, piece_ids), dtype=np.int64)  # each piece has one id
    size = np.bincount(pieces.ravel(), minlength=n_pieces + 1)[1:]
    if len(np.unique(owner)) == n_pieces:
        return labels.copy()
    order = np.lexsort((-size, owner))  # by instance, largest piece first
    is_main = np.zeros(n_pieces, bool)
    first = np.ones(n_pieces, bool)
    first[1:] = owner[order][1:] != owner[order][:-1]
    is_main[order[first]] = True
    out = labels.copy()
    next_id = int(labels.max()) + 1
    boxes = ndimage.find_objects(pieces)
    for k in np.flatnonzero(~is_main):
        sl = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in boxes[k])
        piece = pieces[sl] == k + 1
        if size[k] >= min_pixels:
            out[sl][piece] = next_id
            next_id += 1
            continue
        ring = ndimage.binary_dilation(piece, structure=_EIGHT) & ~piece
        around = out[sl][ring]
        around = around[(around > 0) & (around != owner[k])]
        if len(around):
            values, counts = np.unique(around, return_counts=True)
            out[sl][piece] = values[np.argmax(counts)]
        else:
            out[sl][piece] = next_id
            next_id += 1
    return out


def label_instances(
    maps: np.ndarray,
    threshold: float = 0.5,
    nms_kernel: int = NMS_KERNEL,
    center_threshold: float = 0.1,
    min_pixels: int = 16,
) -> np.ndarray:
    """Instance labels of a chunk from its (4, H, W) maps (probability, centre, dy, dx in this grid's pixels).

    :func:`group_instances` with every centre kept (a chunk of a dense town holds thousands of buildings),
    then :func:`merge_fragments`.
    """
    maps = np.asarray(maps, dtype=np.float32)
    labels = group_instances(maps[0], maps[1], maps[2:4], threshold, center_threshold, nms_kernel, top_k=None)
    return merge_fragments(labels, min_pixels)


def match_instances(truth: np.ndarray, predicted: np.ndarray, min_iou: float = 0.5) -> tuple[int, int, int]:
    """(matched, truth count, predicted count) of two label images (0 = background).

    A predicted and a true instance match when their pixel IoU is above ``min_iou``; with ``min_iou`` >= 0.5
    each instance has at most one such partner, so the matching is one-to-one (SpaceNet's rule, on pixels).
    """
    t = np.asarray(truth).ravel().astype(np.int64)
    p = np.asarray(predicted).ravel().astype(np.int64)
    t_ids, t_idx = np.unique(t, return_inverse=True)
    p_ids, p_idx = np.unique(p, return_inverse=True)
    t_area = np.bincount(t_idx)
    p_area = np.bincount(p_idx)
    pairs, inter = np.unique(t_idx * len(p_ids) + p_idx, return_counts=True)
    ti, pi = np.divmod(pairs, len(p_ids))
    keep = (t_ids[ti] > 0) & (p_ids[pi] > 0)
    union = t_area[ti[keep]] + p_area[pi[keep]] - inter[keep]
    matched = int(np.count_nonzero(inter[keep] > min_iou * union))
    return matched, int(np.count_nonzero(t_ids > 0)), int(np.count_nonzero(p_ids > 0))


# ------------------------------------------------------------------------------------------------ losses

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _split_targets(targets: torch.Tensor | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(targets, dict):
        return targets
    if targets.ndim != 4 or targets.shape[1] != len(TARGET_CHANNELS):
        raise ValueError(
            f"expected (N, 6, H, W) instance targets (TARGET_CHANNELS), got {tuple(targets.shape)}"
        )
    return {
        "semantic": targets[:, 0:1],
        "center": targets[:, 1:2],
        "offset": targets[:, 2:4],
        "center_weight": targets[:, 4:5],
        "offset_weight": targets[:, 5:6],
    }


def instance_loss(
    outputs: torch.Tensor | dict[str, torch.Tensor],
    targets: torch.Tensor | dict[str, torch.Tensor],
    base_semantic_loss: Loss,
    weights: tuple[float, float, float] = LOSS_WEIGHTS,
    return_parts: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
    """Panoptic-DeepLab loss: ``w0 * semantic + w1 * centre MSE + w2 * offset L1`` (see :data:`LOSS_WEIGHTS`).

    ``outputs``: the model's stacked (N, 4, H, W) tensor or a dict with ``semantic`` (N,1,H,W), ``center``
    (N,1,H,W), ``offset`` (N,2,H,W). ``targets``: stacked (N, 6, H, W) as :data:`TARGET_CHANNELS` or a dict with
    those names (``offset`` holding both components). The semantic term is ``base_semantic_loss(logit,
    target)`` (e.g. the trainer's BCE + Dice, ignoring 255); the centre MSE is averaged over the pixels of
    non-zero centre weight, the offset L1 (summed over dy and dx) over the building pixels, as in the
    reference implementation. With ``return_parts`` the three unweighted terms come back too.
    """
    from bldgseg.models.panoptic import split_outputs

    out = split_outputs(outputs)
    tgt = _split_targets(targets)
    semantic = base_semantic_loss(out["semantic"], tgt["semantic"])
    cw = tgt["center_weight"].float()
    ow = tgt["offset_weight"].float()
    center = (((out["center"].float() - tgt["center"].float()) ** 2) * cw).sum() / cw.sum().clamp_min(1.0)
    offset = ((out["offset"].float() - tgt["offset"].float()).abs() * ow).sum() / ow.sum().clamp_min(1.0)
    total = weights[0] * semantic + weights[1] * center + weights[2] * offset
    if return_parts:
        parts = {
            k: float(v.detach()) for k, v in (("semantic", semantic), ("center", center), ("offset", offset))
        }
        return total, parts
    return total


def training_loss(
    model: torch.nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    base_semantic_loss: Loss,
    aux_weight: float = 0.4,
) -> torch.Tensor:
    """Loss of one training step for any registry model.

    Instance targets ((N, 6, H, W), :data:`TARGET_CHANNELS`) use :func:`instance_loss`, other targets
    ``base_semantic_loss``; a model with ``forward_with_aux`` (HRNet-OCR, alone or under the instance head)
    adds ``aux_weight`` times the semantic loss of its auxiliary output.
    """
    aux = None
    if hasattr(model, "forward_with_aux"):
        outputs, aux = model.forward_with_aux(images)
    else:
        outputs = model(images)
    instance = targets.ndim == 4 and targets.shape[1] == len(TARGET_CHANNELS)
    if instance:
        loss = instance_loss(outputs, targets, base_semantic_loss)
        semantic_target = targets[:, :1]
    else:
        loss = base_semantic_loss(outputs, targets)
        semantic_target = targets
    if aux is not None:
        loss = loss + aux_weight * base_semantic_loss(aux, semantic_target)
    return loss
