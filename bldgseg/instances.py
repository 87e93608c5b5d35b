"""Building instances from predicted maps, Panoptic-DeepLab style: centres, grouping, fragments, matching.

:func:`group_instances` turns predicted maps (building probability, centre heatmap, offsets; see
:mod:`bldgseg.instance_targets` for what the model learns) into labels; :func:`label_instances` is the chunk
post-processing of ``bldgseg run``; :func:`match_instances` counts the instances two label images share.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

__all__ = [
    "NMS_KERNEL",
    "group_instances",
    "label_instances",
    "match_instances",
    "merge_fragments",
    "resample_instance_maps",
]

#: Centre NMS window of :func:`label_instances` (model pixels): two peaks closer than half of it are one
#: building. Wider than Panoptic-DeepLab's 7 because a building seen only in part by a window can leave a second
#: peak a few pixels from its centre; at 0.3 m two house centres are rarely closer than 2 m (6 px).
NMS_KERNEL = 13

_EIGHT = np.ones((3, 3), dtype=bool)


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # a torch tensor
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
    import torch

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
