"""The whole-image scoring graph behind the `score_images` signatures.

`anogan-score` scores a B-scan in NumPy: intensity normalisation
(data/intensity.py), patches with the ROI rules (data/patches.py,
data/roi.py), the latent mapping of each patch, stitching of the residual
maps with overlap averaging, the map's region and smoothing
(scoring/maps.py), its standardisation by depth against normal images
(scoring/map_reference.py) and the image aggregate (scoring/metrics.py,
scoring/scorer.py). `image_scores` is the same computation as TF ops, with
the settings of one detector fixed at export (`ImagePlan`), so a TF Serving
client can send whole images and get the detector's answer.

The patch grid is fixed by the image size: G positions, row-major, each
axis 0, stride, 2 stride, ..., size - patch (`data.patches.patch_positions`).
Per image the ROI decides which of the G patches are scored (coverage of the
retina band >= min_coverage; none: the best-covered one). The selected
patches of the whole batch are mapped in one call (`map_patches`, the
exported mapping with z as loop state) and scattered back onto the [N, G]
grid; unselected entries hold NaN scores and add nothing to the maps.
Stitching adds the patches in grid order in float64, as NumPy does, so the
overlap averages agree to the last bit given the same patch maps.

Outputs (N images, G grid positions):
  image_score                 float64 [N]  the detector's aggregate
  image_residual_score        float64 [N]  aggregate of the residual scores
  image_discrimination_score  float64 [N]  aggregate of the discrimination
  threshold                   float64 [N]  the baked threshold (NaN: none)
  is_anomalous                int32 [N]    image_score >= threshold: 1 / 0;
                                           -1 when no threshold is recorded
  num_patches                 int32 [N]    patches scored per image
  anomaly_map                 float32 [N, H, W]
  reconstruction              float32 [N, H, W, C] stitched G(z*)
  patch_anomaly_score, patch_residual_score, patch_discrimination_score
                              float32 [N, G]  NaN where not scored
  patch_y, patch_x            int32 [N, G] top-left corner of each patch
  patch_valid                 bool [N, G]  which patches were scored
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import tensorflow as tf

from anogan_tf import losses
from anogan_tf.config import ConfigError
from anogan_tf.data.patches import patch_positions
from anogan_tf.export import roi_graph
from anogan_tf.scoring.map_reference import MapReference

__all__ = ["ImagePlan", "IMAGE_OUTPUT_KEYS", "image_scores"]

IMAGE_OUTPUT_KEYS = (
    "image_score", "image_residual_score", "image_discrimination_score",
    "threshold", "is_anomalous", "num_patches", "anomaly_map",
    "reconstruction", "patch_anomaly_score", "patch_residual_score",
    "patch_discrimination_score", "patch_y", "patch_x", "patch_valid")

_F64 = tf.float64


@dataclasses.dataclass(frozen=True)
class ImagePlan:
    """How `score_images` scores whole images (fixed at export).

    Attributes:
      image_shape: (H, W, C) of the images the signature takes.
      model_size: Side of the model input (config.json image_size).
      patch_size: Side of the patches cut from the images.
      stride: Patch stride.
      roi: "none" or "retina".
      min_coverage: ROI share a patch needs to be scored.
      intensity_norm: "none" or "roi_percentile".
      aggregate: "max", "mean", "topk_mean" or "map_max".
      topk: k of "topk_mean".
      map_sigma: Gaussian sigma of the anomaly maps (0: raw).
      map_smoothing: "signed" or "absolute".
      map_reference: The per-depth statistics that standardise the maps
        (detector.json's, with map_norm "depth"), or None.
      mode: The detector's mapping mode (iterative, encoder, hybrid).
      threshold: The calibrated image-score threshold, or None.
      threshold_rule: How it was chosen ("" without one).
    """

    image_shape: Tuple[int, int, int]
    model_size: int
    patch_size: int
    stride: int
    roi: str = "none"
    min_coverage: float = 0.5
    intensity_norm: str = "none"
    aggregate: str = "max"
    topk: int = 3
    map_sigma: float = 0.0
    map_smoothing: str = "signed"
    map_reference: Optional[MapReference] = None
    mode: str = "iterative"
    threshold: Optional[float] = None
    threshold_rule: str = ""

    def __post_init__(self):
        h, w, _ = self.image_shape
        if self.patch_size > min(h, w):
            raise ConfigError(
                f"score_images would take {h}x{w} images, smaller than the "
                f"patch size {self.patch_size}. Export with the training "
                f"image size (anogan-export --image_height/--image_width, or "
                f"the model dir's --resize), or a smaller --patch_size.")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ConfigError(f"The threshold must be finite, got "
                              f"{self.threshold!r}.")

    @property
    def grid(self) -> Tuple[Tuple[int, int], ...]:
        """The (y, x) of every grid position, row-major."""
        h, w, _ = self.image_shape
        return tuple((y, x) for y in patch_positions(h, self.patch_size,
                                                     self.stride)
                     for x in patch_positions(w, self.patch_size, self.stride))

    def describe(self) -> Dict:
        """The plan as JSON-ready values (for anogan_export.json)."""
        out = dataclasses.asdict(self)
        out["image_shape"] = list(self.image_shape)
        ref = self.map_reference
        out["map_reference"] = None if ref is None else {
            "coordinate": ref.coordinate, "bins": len(ref.median),
            "n_images": ref.n_images, "map": ref.map}
        out["grid_positions"] = len(self.grid)
        return out


def _stitch(values, keep, plan: ImagePlan):
    """Overlap sums of per-position maps [N, G, p, p(, C)] in grid order.

    Returns float64 [N, H, W(, C)]; unselected positions hold zeros, which
    leave the sums unchanged (x + 0.0 == x).
    """
    h, w, _ = plan.image_shape
    p = plan.patch_size
    mask = tf.cast(keep, _F64)
    for _ in range(values.shape.rank - 2):
        mask = mask[..., None]
    values = tf.cast(values, _F64) * mask
    total = None
    for g, (y, x) in enumerate(plan.grid):
        pad = [[0, 0], [y, h - y - p], [x, w - x - p]] + [[0, 0]] * (
            values.shape.rank - 4)
        placed = tf.pad(values[:, g], pad)
        total = placed if total is None else total + placed
    return total


def _average(total, count):
    """data/patches.py `stitch_maps`'s division: 0 where no patch lies."""
    count = tf.cast(count, _F64)
    if total.shape.rank == 4:
        count = count[..., None]
    out = tf.where(count > 0, total / tf.maximum(count, 1.0),
                   tf.constant(0.0, _F64))
    return tf.cast(out, tf.float32)


def _resize_back(maps, p: int):
    """[P, S, S(, C)] float32 -> [P, p, p(, C)], as `stitch_maps` resizes."""
    if maps.shape[1] == p:
        return maps
    if maps.shape.rank == 3:
        return tf.image.resize(maps[..., None], (p, p), "bilinear")[..., 0]
    return tf.image.resize(maps, (p, p), "bilinear")


def _masked_gaussian(values, weight, sigma: float):
    """scoring/maps.py `masked_gaussian` (mode "constant", not normalised)."""
    w = tf.cast(weight, _F64)
    if values.shape.rank == 4:
        w = w[..., None]
        v = tf.transpose(tf.cast(values, _F64) * w, [0, 3, 1, 2])
        out = tf.transpose(roi_graph.smooth_2d(v, (sigma, sigma), "constant"),
                           [0, 2, 3, 1])
    else:
        out = roi_graph.smooth_2d(tf.cast(values, _F64) * w, (sigma, sigma),
                                  "constant")
    return tf.cast(tf.where(w > 0, out, tf.constant(0.0, _F64)), tf.float32)


def _aggregate(scores, keep, how: str, topk: int):
    """scoring/metrics.py `aggregate_patch_scores` on the [N, G] grid."""
    s = tf.cast(scores, _F64)
    count = tf.reduce_sum(tf.cast(keep, _F64), axis=1)
    if how == "max":
        return tf.reduce_max(tf.where(keep, s, -np.inf), axis=1)
    if how == "mean":
        return tf.reduce_sum(tf.where(keep, s, 0.0), axis=1) / count
    if how == "topk_mean":
        k = min(topk, s.shape[1])
        top = tf.math.top_k(tf.where(keep, s, -np.inf), k).values
        m = tf.minimum(tf.cast(count, tf.int32), k)
        total = tf.zeros_like(count)
        # NumPy sums the k largest in ascending order.
        for j in reversed(range(k)):
            total = total + tf.where(j < m, top[:, j], 0.0)
        return total / tf.cast(m, _F64)
    raise ValueError(f"aggregate must be max|mean|topk_mean, got {how!r}.")


def _select(masks, plan: ImagePlan):
    """(keep [N, G] bool, coverage) from ROI masks [N, H, W] (data/patches)."""
    p = plan.patch_size
    grid = plan.grid
    inside = tf.cast(masks, _F64)
    # Integral image: exact integer sums in float64.
    integral = tf.pad(tf.cumsum(tf.cumsum(inside, axis=1), axis=2),
                      [[0, 0], [1, 0], [1, 0]])
    sums = tf.stack([integral[:, y + p, x + p] - integral[:, y, x + p] -
                     integral[:, y + p, x] + integral[:, y, x]
                     for y, x in grid], axis=1)
    coverage = sums / float(p * p)
    keep = coverage >= plan.min_coverage
    best = tf.reduce_max(coverage, axis=1, keepdims=True)
    g = tf.range(len(grid))[None, :]
    first_best = tf.reduce_min(tf.where(coverage == best, g, len(grid)),
                               axis=1, keepdims=True)
    fallback = ~tf.reduce_any(keep, axis=1, keepdims=True)
    return keep | (fallback & tf.equal(g, first_best)), coverage


def _roi(x, plan: ImagePlan):
    """(filled images, valid [N, H, W], roi masks [N, H, W]) for "retina"."""
    def one(image):
        _, _, valid, mask = roi_graph.retina_band(roi_graph.gray(image))
        return roi_graph.fill_artifacts(image, valid), valid, mask

    h, w, c = plan.image_shape
    return tf.map_fn(one, x, fn_output_signature=(
        tf.TensorSpec([h, w, c], tf.float32), tf.TensorSpec([h, w], tf.bool),
        tf.TensorSpec([h, w], tf.bool)))


def _masked_median(values, keep):
    """Per row the median of `values` [N, W] where `keep`, as np.median."""
    big = tf.constant(np.inf, values.dtype)
    ordered = tf.sort(tf.where(keep, values, big), axis=1)
    k = tf.reduce_sum(tf.cast(keep, tf.int32), axis=1)
    lo = tf.gather(ordered, tf.maximum((k - 1) // 2, 0), batch_dims=1)
    hi = tf.gather(ordered, tf.maximum(k // 2, 0), batch_dims=1)
    return 0.5 * (lo + hi)


def _depth(masks, n, h: int, w: int):
    """`map_reference.depth_coordinates` as TF ops: float64 [N, H, W]."""
    rows = (tf.range(h, dtype=_F64) + 0.5) / h
    row_depth = tf.broadcast_to(rows[None, :, None], [n, h, w])
    if masks is None:
        return row_depth
    has = tf.reduce_any(masks, axis=1)                          # [N, W]
    as_int = tf.cast(masks, tf.int32)
    top = tf.cast(tf.argmax(as_int, axis=1), _F64)
    bottom = tf.cast(h - tf.argmax(tf.reverse(as_int, [1]), axis=1), _F64)
    top = tf.where(has, top, _masked_median(top, has)[:, None])
    bottom = tf.where(has, bottom, _masked_median(bottom, has)[:, None])
    y = tf.range(h, dtype=_F64)[None, :, None]
    band = (y - top[:, None, :]) / tf.maximum(bottom - top, 1.0)[:, None, :]
    any_roi = tf.reduce_any(has, axis=1)[:, None, None]
    return tf.where(any_roi, band, row_depth)


def _standardize(maps, weight, masks, ref: MapReference):
    """`map_reference.standardize_maps` as TF ops: float32 [N, H, W]."""
    n, h, w = tf.shape(maps)[0], maps.shape[1], maps.shape[2]
    depth = _depth(masks if ref.coordinate == "band" else None, n, h, w)
    edges = tf.constant([ref.edges], _F64)
    flat = tf.reshape(depth, [1, -1])
    bins = tf.clip_by_value(
        tf.searchsorted(edges, flat, side="right") - 1, 0,
        len(ref.edges) - 2)
    bins = tf.reshape(bins, tf.shape(depth))
    median = tf.gather(tf.constant(ref.median, _F64), bins)
    spread = tf.gather(tf.constant(ref.spread, _F64), bins)
    out = tf.cast(maps, _F64) / (median + spread)
    return tf.cast(tf.where(weight, out, 0.0), tf.float32)


def image_scores(x, plan: ImagePlan,
                 map_patches: Callable[[tf.Tensor], Dict[str, tf.Tensor]]
                 ) -> Dict[str, tf.Tensor]:
    """Scores whole images like `anogan-score` with the plan's settings.

    Args:
      x: Checked float32 images [N, H, W, C] in [-1, 1] (static H, W, C).
      plan: The settings.
      map_patches: float32 patches [P, S, S, C] -> the mapping outputs
        ("anomaly_score", "residual_score", "discrimination_score",
        "residual_map", "reconstruction"); S is the model size.

    Returns:
      The outputs listed in the module docstring.
    """
    h, w, c = plan.image_shape
    p, s = plan.patch_size, plan.model_size
    grid = plan.grid
    n_grid = len(grid)
    n = tf.shape(x)[0]
    if plan.intensity_norm == "roi_percentile":
        x = tf.map_fn(roi_graph.normalize_scan, x,
                      fn_output_signature=tf.TensorSpec([h, w, c], tf.float32))
    region = masks = None
    if plan.roi == "retina":
        source, valid, masks = _roi(x, plan)
        keep, _ = _select(masks, plan)
        region = roi_graph.scoring_region(masks, valid)
    else:
        source = x
        keep = tf.ones([n, n_grid], tf.bool)

    # [N, G, p, p, C] -> the selected patches [P, p, p, C].
    grid_patches = tf.stack([source[:, y:y + p, xx:xx + p] for y, xx in grid],
                            axis=1)
    flat_keep = tf.reshape(keep, [-1])
    where = tf.where(flat_keep)                       # [P, 1] int64
    patches = tf.gather_nd(tf.reshape(grid_patches, [-1, p, p, c]), where)
    if p != s:
        lo, hi = tf.reduce_min(patches), tf.reduce_max(patches)
        patches = tf.clip_by_value(
            tf.image.resize(patches, (s, s), "bilinear", antialias=True),
            lo, hi)
    out = map_patches(patches)

    def to_grid(values, fill):
        """[P, ...] -> [N, G, ...] with `fill` at unselected positions."""
        shape = tf.concat([[n * n_grid], tf.shape(values)[1:]], 0)
        base = tf.fill(shape, tf.constant(fill, values.dtype))
        dense = tf.tensor_scatter_nd_update(base, where, values)
        return tf.reshape(dense, tf.concat([[n, n_grid],
                                            tf.shape(values)[1:]], 0))

    absolute = _resize_back(tf.reduce_mean(out["residual_map"], axis=-1), p)
    signed = _resize_back(patches - out["reconstruction"], p)
    recon = _resize_back(out["reconstruction"], p)
    count = _stitch(tf.ones([n, n_grid, p, p]), keep, plan)
    stitched = {name: _average(_stitch(to_grid(v, 0.0), keep, plan), count)
                for name, v in (("absolute", absolute), ("signed", signed),
                                ("reconstruction", recon))}

    weight = count > 0
    if region is not None:
        weight &= region
    if plan.map_sigma == 0:
        maps = stitched["absolute"]
        if region is not None:
            maps = tf.where(region, maps, 0.0)
    elif plan.map_smoothing == "absolute":
        maps = _masked_gaussian(stitched["absolute"], weight, plan.map_sigma)
    else:
        smoothed = _masked_gaussian(stitched["signed"], weight, plan.map_sigma)
        maps = tf.reduce_mean(tf.abs(smoothed), axis=-1)
    if plan.map_reference is not None:
        maps = _standardize(maps, weight, masks, plan.map_reference)

    patch = {k: to_grid(out[k], np.nan) for k in losses.SCORE_KEYS}
    patch_how = "max" if plan.aggregate == "map_max" else plan.aggregate
    if plan.aggregate == "map_max":
        image_score = tf.cast(tf.reduce_max(maps, axis=[1, 2]), _F64)
    else:
        image_score = _aggregate(patch["anomaly_score"], keep, patch_how,
                                 plan.topk)
    threshold = tf.fill([n], tf.constant(
        np.nan if plan.threshold is None else plan.threshold, _F64))
    flagged = tf.cast(image_score >= threshold, tf.int32)
    is_anomalous = flagged if plan.threshold is not None else -tf.ones_like(
        flagged)
    ys = tf.constant([[y for y, _ in grid]], tf.int32)
    xs = tf.constant([[xx for _, xx in grid]], tf.int32)
    return {
        "image_score": image_score,
        "image_residual_score": _aggregate(patch["residual_score"], keep,
                                           patch_how, plan.topk),
        "image_discrimination_score": _aggregate(
            patch["discrimination_score"], keep, patch_how, plan.topk),
        "threshold": threshold,
        "is_anomalous": is_anomalous,
        "num_patches": tf.reduce_sum(tf.cast(keep, tf.int32), axis=1),
        "anomaly_map": tf.ensure_shape(maps, [None, h, w]),
        "reconstruction": tf.ensure_shape(stitched["reconstruction"],
                                          [None, h, w, c]),
        "patch_anomaly_score": patch["anomaly_score"],
        "patch_residual_score": patch["residual_score"],
        "patch_discrimination_score": patch["discrimination_score"],
        "patch_y": tf.tile(ys, [n, 1]),
        "patch_x": tf.tile(xs, [n, 1]),
        "patch_valid": keep,
    }
