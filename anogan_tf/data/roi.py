"""The retina region of interest of OCT B-scans, robust to acquisition artefacts.

Real B-scans carry pixels that hold no tissue signal: saturated (+1.0, i.e.
255) or black (-1.0) padding wedges left by rotation or flattening, padding
strips from scans of mixed widths, and 1-pixel white border lines. They
break an intensity-only band finder (the band then starts at row 0 or runs
to the bottom) and an image score that reads the brightest pixel.

`artifact_mask` finds them first. A pixel is a padding candidate when it is
saturated (within `SATURATION_TOLERANCE` of -1 or +1) or locally constant
(3x3 range <= 1e-4: no speckle). From each image side, every row (for the
left and right sides) and every column (top and bottom) contributes its run
of consecutive candidates starting at the edge. Padding is a smooth shape
along the side, so the runs are capped at their running median along the
side plus 2 pixels: a bright tissue layer that happens to saturate and
touches the edge (an RPE clipped at 255) cannot leak into the mask along its
row. A side counts only when at least 20% of its lines start with a run;
the mask is dilated by one pixel (the mixed pixels at the padding's edge);
and a mask covering more than 60% of the image is taken for an image that
is not a padded scan (a binary test pattern) and dropped.

`retina_band` then finds the band between the vitreous and the choroid
from the layer structure, on the artefact-free pixels only:

1. The image is smoothed by normalised convolution (artefact pixels carry
   no weight), with a long kernel along the layers (sigma W/40) and a short
   one across them (sigma H/160), which averages the speckle out of each
   column's profile.
2. Top (inner limiting membrane): in each column, the first row above
   Otsu's threshold of the smoothed valid pixels (the vitreous above is
   dark), moved to the steepest rise within a few rows and refined to
   sub-pixel precision by a parabola through the gradient.
3. Bottom (the RPE's outer edge): the RPE is the brightest layer and the
   most continuous one, so a dynamic-programming path (one row per column,
   moving at most one row per column) maximises the smoothed intensity
   below the top plus a minimum thickness; vessel shadows and the odd
   bright focus cannot bend it. The bottom is the steepest fall below the
   path (RPE -> choroid), refined like the top.
4. Both curves are median-filtered across columns; columns without enough
   valid pixels borrow them from their neighbours.

`retina_roi_mask` is the band minus the artefact pixels. `scoring_region`
is where anomaly maps are read: the band widened by a few rows (the band's
edges are uncertain by a pixel or two, and lesions such as drusen sit on
the RPE), minus the artefact pixels. On the synthetic
scans (`generate_oct_with_truth`) the band's IoU with the true band is
about 0.95 with and without artefacts (tests/test_roi.py).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np
from scipy import ndimage

from anogan_tf.data.errors import DataError

__all__ = [
    "SATURATION_TOLERANCE",
    "RetinaBand",
    "artifact_mask",
    "retina_band",
    "retina_roi_mask",
    "scoring_region",
    "otsu_threshold",
]

# One uint8 step is 2/255 ~ 0.0078 in [-1, 1]; resizing may blur by less.
SATURATION_TOLERANCE = 0.01
# Local 3x3 range below which a pixel is "constant" (no speckle).
_CONSTANT_RANGE = 1e-4
# A side is padded when this share of its lines starts with a candidate run.
_SIDE_SUPPORT = 0.2
_RUN_SLACK = 2
# Masks larger than this share of the image are not padding.
_MAX_ARTIFACT_SHARE = 0.6
# Columns need this much valid weight in the smoothed image to be measured.
_MIN_WEIGHT = 0.3


@dataclasses.dataclass(frozen=True)
class RetinaBand:
    """The retina band of one B-scan.

    Attributes:
      top: float64 [W], per column the first band row (sub-pixel); rows y
        with top <= y < bottom are inside. NaN when no band was found or
        the column's band lies entirely in padding. Where padding hides
        part of a column, its curves are interpolated from the neighbours.
      bottom: float64 [W], per column the row below the band's last row.
      valid: bool [H, W], the pixels that are not artefacts.
      mask: bool [H, W], the band minus the artefact pixels.
    """

    top: np.ndarray
    bottom: np.ndarray
    valid: np.ndarray
    mask: np.ndarray


def _as_2d(image: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(axis=-1)
    if arr.ndim != 2:
        raise DataError(
            f"{name} expects an [H, W] or [H, W, C] image, got shape "
            f"{np.shape(image)}.")
    return arr


def otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
    """Threshold maximising the between-class variance of `values`."""
    hist, edges = np.histogram(values, bins=bins)
    centers = 0.5 * (edges[:-1] + edges[1:])
    weight = np.cumsum(hist).astype(np.float64)
    total = weight[-1]
    mean = np.cumsum(hist * centers)
    w0, w1 = weight[:-1], total - weight[:-1]
    valid = (w0 > 0) & (w1 > 0)
    if not valid.any():
        return float(centers[0])
    m0 = mean[:-1] / np.where(w0 > 0, w0, 1)
    m1 = (mean[-1] - mean[:-1]) / np.where(w1 > 0, w1, 1)
    between = np.where(valid, w0 * w1 * (m0 - m1) ** 2, -1.0)
    return float(edges[1:][np.argmax(between)])


def _edge_runs(candidate: np.ndarray) -> np.ndarray:
    """bool [H, W]: per row, the (capped) run of candidates from column 0."""
    h, w = candidate.shape
    # Length of the leading run of True in each row.
    runs = np.where(candidate.all(axis=1), w, np.argmin(candidate, axis=1))
    if np.mean(runs > 0) < _SIDE_SUPPORT:
        return np.zeros((h, w), bool)
    size = max(3, (h // 8) | 1)
    capped = np.minimum(runs, ndimage.median_filter(runs, size=size,
                                                    mode="nearest") + _RUN_SLACK)
    return np.arange(w)[None, :] < capped[:, None]


def artifact_mask(image: np.ndarray) -> np.ndarray:
    """Padding and border pixels of a B-scan (see the module docstring).

    Args:
      image: [H, W] or [H, W, C] image in [-1, 1].

    Returns:
      bool [H, W], True on padding wedges/strips and border lines.

    Raises:
      DataError: `image` does not have rank 2 or 3.
    """
    arr = _as_2d(image, "artifact_mask")
    h, w = arr.shape
    if arr.size == 0:
        return np.zeros((h, w), bool)
    saturated = ((arr >= 1.0 - SATURATION_TOLERANCE) |
                 (arr <= -1.0 + SATURATION_TOLERANCE))
    spread = (ndimage.maximum_filter(arr, 3, mode="nearest") -
              ndimage.minimum_filter(arr, 3, mode="nearest"))
    candidate = saturated | (spread <= _CONSTANT_RANGE)
    mask = _edge_runs(candidate)                             # left
    mask |= _edge_runs(candidate[:, ::-1])[:, ::-1]          # right
    mask |= _edge_runs(candidate.T).T                        # top
    mask |= _edge_runs(candidate[::-1].T).T[::-1]            # bottom
    if not mask.any():
        return mask
    # The mixed pixels at the padding's edge (resizing, blur) go with it.
    mask = ndimage.binary_dilation(mask)
    if mask.mean() > _MAX_ARTIFACT_SHARE:
        return np.zeros((h, w), bool)
    return mask


def _masked_smooth(arr: np.ndarray, valid: np.ndarray, sigma):
    """(smoothed image, weight): normalised convolution over valid pixels."""
    num = ndimage.gaussian_filter(np.where(valid, arr, 0.0), sigma,
                                  mode="nearest")
    den = ndimage.gaussian_filter(valid.astype(np.float64), sigma,
                                  mode="nearest")
    return num / np.maximum(den, 1e-12), den


def _refine(grad: np.ndarray, cols: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per column, the sub-pixel row of the largest `grad` in [lo, hi]."""
    h = grad.shape[0]
    out = np.full(len(cols), np.nan)
    for k, (c, a, b) in enumerate(zip(cols, lo, hi)):
        a, b = int(max(1, a)), int(min(h - 2, b))
        if b < a:
            continue
        g = grad[a:b + 1, c]
        if not np.isfinite(g).any():
            continue
        r = a + int(np.nanargmax(g))
        y0, y1, y2 = grad[r - 1, c], grad[r, c], grad[r + 1, c]
        denom = y0 - 2 * y1 + y2
        shift = 0.5 * (y0 - y2) / denom if (
            np.isfinite(denom) and denom < 0) else 0.0
        out[k] = r + float(np.clip(shift, -0.5, 0.5))
    return out


def _fill_columns(values: np.ndarray, size: int,
                  tolerance: float) -> np.ndarray:
    """A smooth curve from per-column estimates.

    Columns deviating by more than `tolerance` rows from the running median
    over 2 * `size` columns (a vessel shadow, a bright spot in the choroid)
    are dropped; they and the NaN columns are interpolated from their
    neighbours; the result is median-filtered over `size` columns.
    """
    ok = np.isfinite(values)
    if not ok.any():
        return values
    cols = np.arange(len(values))
    filled = np.interp(cols, cols[ok], values[ok])
    broad = ndimage.median_filter(filled, size=2 * size + 1, mode="nearest")
    ok &= np.abs(filled - broad) <= tolerance
    if ok.any():
        filled = np.interp(cols, cols[ok], values[ok])
    return ndimage.median_filter(filled, size=size, mode="nearest")


def _brightest_path(reward: np.ndarray, step: int) -> np.ndarray:
    """Row per column of the path maximising the summed `reward` [H, W]
    when the row moves by at most `step` between neighbouring columns."""
    h, w = reward.shape
    acc = reward[:, 0].copy()
    back = np.zeros((h, w), np.int64)
    rows = np.arange(h)
    for c in range(1, w):
        best = acc.copy()
        arg = rows.copy()
        for d in range(1, step + 1):
            for shifted_rows in (np.minimum(rows + d, h - 1),
                                 np.maximum(rows - d, 0)):
                cand = acc[shifted_rows]
                better = cand > best
                best = np.where(better, cand, best)
                arg = np.where(better, shifted_rows, arg)
        back[:, c] = arg
        acc = best + reward[:, c]
    path = np.empty(w, np.int64)
    path[-1] = int(np.argmax(acc))
    for c in range(w - 1, 0, -1):
        path[c - 1] = back[path[c], c]
    return path


def retina_band(image: np.ndarray,
                valid: Optional[np.ndarray] = None) -> RetinaBand:
    """Finds the retina band of an OCT B-scan from its layer structure.

    Args:
      image: [H, W] or [H, W, C] image in [-1, 1] (any range works).
      valid: Optional bool [H, W] of pixels to use; default
        `~artifact_mask(image)`.

    Returns:
      A RetinaBand (see the module docstring for the method); an empty
      band for a flat image.

    Raises:
      DataError: `image` does not have rank 2 or 3, or `valid` does not
        match it.
    """
    arr = _as_2d(image, "retina_band")
    h, w = arr.shape
    if valid is None:
        valid = ~artifact_mask(arr)
    valid = np.asarray(valid, bool)
    if valid.shape != (h, w):
        raise DataError(
            f"retina_band: valid has shape {valid.shape}, the image {(h, w)}.")
    empty = RetinaBand(np.full(w, np.nan), np.full(w, np.nan), valid,
                       np.zeros((h, w), bool))
    if arr.size == 0 or not valid.any() or np.ptp(arr[valid]) <= 1e-6:
        return empty
    smooth, weight = _masked_smooth(arr, valid, (max(0.7, h / 160),
                                                 max(1.0, w / 40)))
    known = weight >= _MIN_WEIGHT
    smooth = np.where(known, smooth, np.nan)
    grad = np.full((h, w), np.nan)
    grad[1:-1] = 0.5 * (smooth[2:] - smooth[:-2])
    cols = np.arange(w)
    window = max(2, int(round(h / 48)))
    size = max(3, (w // 16) | 1)
    tolerance = max(2.0, h / 32)

    # Top: first row above Otsu's level, then the steepest rise near it.
    bright = known & (smooth > otsu_threshold(smooth[known]))
    has = bright.any(axis=0)
    if not has.any():
        return empty
    first = bright.argmax(axis=0)
    # A crossing counts only below a measured dark stretch (the vitreous):
    # where padding hides the top of a column, its first bright row is not
    # the retina's top.
    above = max(3, int(round(h / 32)))
    seen = np.concatenate([np.zeros((1, w), np.int64),
                           np.cumsum(known, axis=0)])
    start = np.maximum(first - above, 0)
    has &= (first >= above) & (seen[first, cols] - seen[start, cols] == above)
    if not has.any():
        return empty
    top = np.full(w, np.nan)
    top[has] = _refine(grad, cols[has], first[has] - window,
                       first[has] + window)
    top = _fill_columns(top, size, tolerance)

    # The RPE: the brightest continuous path below top + a minimum thickness.
    level = np.nanmedian(smooth[known])
    reward = np.where(known, smooth - level, 0.0)
    min_thickness = max(2, int(round(0.06 * h)))
    rows = np.arange(h)[:, None]
    below = rows >= np.round(top)[None, :] + min_thickness
    spread = float(np.nanmax(np.abs(reward))) + 1.0
    reward = np.where(below, reward, -2.0 * spread)
    step = max(1, int(round(h / w)))
    rpe = _brightest_path(reward, step)
    # Bottom: the steepest fall below the RPE's centre (RPE -> choroid).
    bottom = _refine(-grad, cols, rpe, rpe + max(3, int(round(h / 24))))
    bottom = _fill_columns(bottom, size, tolerance)
    bottom = np.maximum(bottom, top + 1)
    y = np.arange(h, dtype=np.float64)[:, None]
    inside = (y >= top[None, :]) & (y < bottom[None, :])
    # Columns whose band lies entirely in padding have no band.
    visible = (inside & valid).any(axis=0)
    top = np.where(visible, top, np.nan)
    bottom = np.where(visible, bottom, np.nan)
    return RetinaBand(top=top, bottom=bottom, valid=valid,
                      mask=inside & valid)


def retina_roi_mask(image: np.ndarray) -> np.ndarray:
    """The retina band of an OCT B-scan minus its artefact pixels.

    Args:
      image: [H, W] or [H, W, C] float image (any range, e.g. [-1, 1]).

    Returns:
      bool [H, W], True inside the retina band; all False for a flat image.

    Raises:
      DataError: `image` does not have rank 2 or 3.
    """
    return retina_band(image).mask


def scoring_region(roi_masks: np.ndarray, valid_masks: np.ndarray,
                   margin: Optional[int] = None) -> np.ndarray:
    """Where anomaly maps count: the ROI widened by `margin` rows, minus
    the artefact pixels.

    Args:
      roi_masks: bool [N, H, W] (or [H, W]) ROI masks.
      valid_masks: bool, same shape: the non-artefact pixels.
      margin: Rows added above and below the ROI; default
        max(2, round(H / 32)) (4 at a height of 128).

    Returns:
      bool, the shape of `roi_masks`. An image whose ROI is empty keeps all
      of its valid pixels (nothing is known about where the tissue is).

    Raises:
      DataError: the shapes differ.
    """
    roi = np.asarray(roi_masks, bool)
    valid = np.asarray(valid_masks, bool)
    if roi.shape != valid.shape or roi.ndim not in (2, 3):
        raise DataError(
            f"scoring_region needs ROI and valid masks of one shape [N, H, W] "
            f"or [H, W], got {roi.shape} and {valid.shape}.")
    single = roi.ndim == 2
    if single:
        roi, valid = roi[None], valid[None]
    h = roi.shape[1]
    if margin is None:
        margin = max(2, int(round(h / 32)))
    structure = np.ones((1, 2 * int(margin) + 1, 1), bool)
    near = ndimage.binary_dilation(roi, structure=structure) if margin else roi
    empty = ~roi.reshape(len(roi), -1).any(axis=1)
    near[empty] = True
    region = near & valid
    return region[0] if single else region
