"""Anomalous regions: a threshold from normal images, then connected components.

A region is a connected component (8-connected by default) of the pixels
whose anomaly map value is >= the threshold t, formed inside the scoring
region (where maps count: the ROI plus a margin, minus artefacts), with at
least `min_area` pixels, and kept only when at least `roi_overlap` of its
pixels lie inside the ROI itself ("only regions inside the ROI").

The threshold comes from the maps of held-out normal calibration images:

  percentile  t = the (1 - target_pixel_fpr) quantile of the calibration
              pixels inside their scoring regions: about that share of
              normal pixels is at or above t. (Pixels of one image are
              correlated, so this is a descriptive rate, not a guarantee.)
  conformal   Each calibration image gets its region level: the largest t
              at which it would still have a region of min_area pixels,
              s = max{t : a component of {map >= t} has >= min_area
              pixels} (`image_region_levels`). Images are exchangeable where
              pixels are not, so split-conformal calibration on these
              levels (`scoring.calibration.conformal_threshold`) gives t
              with P(a new normal image has any region) <= target_region_fpr.
  fixed       t given as a number (--region_threshold=0.3).

Whatever the rule, `RegionThreshold` records the pixel rate and the share
of calibration images with a region that t gives on the calibration maps.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Dict, List, Optional, Tuple

import numpy as np
from scipy import ndimage

from anogan_tf.config import ConfigError
from anogan_tf.scoring import calibration as calibration_lib

__all__ = ["THRESHOLD_RULES", "RegionThreshold", "Region", "RegionSet",
           "parse_threshold_rule", "pixel_percentile_threshold",
           "image_region_levels", "conformal_region_threshold",
           "calibrate_threshold", "find_regions"]

THRESHOLD_RULES = ("percentile", "conformal")


def _structure(connectivity: int) -> np.ndarray:
    if connectivity not in (1, 2):
        raise ValueError(f"connectivity must be 1 (4-connected) or 2 "
                         f"(8-connected), got {connectivity}.")
    return ndimage.generate_binary_structure(2, connectivity)


@dataclasses.dataclass(frozen=True)
class RegionThreshold:
    """The map value at and above which pixels are anomalous.

    Attributes:
      value: t; region pixels have map >= t.
      rule: "percentile", "conformal" or "fixed".
      target: The rule's target rate (pixel FPR for "percentile", image
        FPR for "conformal"); None for "fixed".
      n_calibration: Calibration images it was computed from (0: none).
      calibration_pixel_rate: Share of calibration pixels (in their scoring
        regions) with map >= t; None without calibration maps.
      calibration_image_rate: Share of calibration images with at least one
        region at t; None without calibration maps.
    """

    value: float
    rule: str
    target: Optional[float] = None
    n_calibration: int = 0
    calibration_pixel_rate: Optional[float] = None
    calibration_image_rate: Optional[float] = None

    def describe(self) -> str:
        """One line for logs and the report."""
        if self.rule == "percentile":
            head = f"pixel percentile rule, target pixel FPR {self.target:g}"
        elif self.rule == "conformal":
            head = (f"conformal rule, at most {self.target:g} of normal "
                    f"images with a region")
        else:
            head = "a fixed value"
        text = f"threshold {self.value:.4g} ({head}"
        if self.n_calibration:
            text += f", {self.n_calibration} calibration images"
        text += ")"
        if self.calibration_image_rate is not None:
            text += (f"; on the calibration images: "
                     f"{self.calibration_pixel_rate:.4f} of pixels at or "
                     f"above it, {self.calibration_image_rate:.3f} of images "
                     f"with a region")
        return text


def parse_threshold_rule(text: str) -> Tuple[str, Optional[float]]:
    """("percentile"|"conformal", None) or ("fixed", value) from a flag.

    Raises:
      ConfigError: neither a rule name nor a finite number >= 0.
    """
    text = str(text).strip()
    if text in THRESHOLD_RULES:
        return text, None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigError(
            f"--region_threshold must be 'percentile', 'conformal' or a map "
            f"value >= 0, got {text!r}. Pass e.g. --region_threshold="
            f"percentile --target_pixel_fpr=0.005, or --region_threshold=0.2.")
    return "fixed", value


def _masks_like(maps: np.ndarray, masks: Optional[np.ndarray],
                name: str) -> np.ndarray:
    if masks is None:
        return np.ones(maps.shape, bool)
    masks = np.asarray(masks, bool)
    if masks.shape != maps.shape:
        raise ValueError(f"{name} must have the maps' shape {maps.shape}, got "
                         f"{masks.shape}.")
    return masks


def _check_maps(maps) -> np.ndarray:
    maps = np.asarray(maps, np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must be [N, H, W], got shape {maps.shape}.")
    if not np.all(np.isfinite(maps)):
        raise ValueError("maps hold NaN or infinite values.")
    return maps


def pixel_percentile_threshold(maps: np.ndarray, region_masks: Optional[
        np.ndarray], target_pixel_fpr: float) -> float:
    """The (1 - target_pixel_fpr) quantile of the pixels in the regions.

    np.quantile with the "higher" method: t is a calibration pixel value,
    and the share of calibration pixels >= t is the smallest share >=
    target_pixel_fpr that a pixel value gives (ties aside).

    Args:
      maps: [N, H, W] anomaly maps of normal calibration images.
      region_masks: bool [N, H, W], the pixels that count (None: all).
      target_pixel_fpr: In (0, 1).

    Raises:
      ValueError: bad shapes or rate, or no pixel in the regions.
    """
    maps = _check_maps(maps)
    if not 0.0 < target_pixel_fpr < 1.0:
        raise ValueError(f"target_pixel_fpr must be in (0, 1), got "
                         f"{target_pixel_fpr}.")
    values = maps[_masks_like(maps, region_masks, "region_masks")]
    if not values.size:
        raise ValueError("The calibration maps have no pixel inside their "
                         "scoring regions.")
    return float(np.quantile(values, 1.0 - target_pixel_fpr,
                             method="higher"))


def _has_region(image_map: np.ndarray, where: np.ndarray, t: float,
                min_area: int, structure: np.ndarray) -> bool:
    labelled, count = ndimage.label((image_map >= t) & where, structure)
    if not count:
        return False
    return int(np.bincount(labelled.reshape(-1))[1:].max()) >= min_area


def image_region_levels(maps: np.ndarray, region_masks: Optional[np.ndarray],
                        min_area: int, connectivity: int = 2) -> np.ndarray:
    """Per image, the largest t at which it has a region of >= min_area px.

    s = max{t : some connected component of {map >= t} (inside the
    region mask) has at least min_area pixels}; -inf when the mask holds
    fewer than min_area pixels in every component. The predicate only
    loses components as t rises, so a binary search over the image's
    sorted pixel values finds s exactly (a pixel value).

    Args:
      maps: [N, H, W] anomaly maps.
      region_masks: bool [N, H, W] (None: every pixel).
      min_area: Minimum region size in pixels, >= 1.
      connectivity: 1 (4-connected) or 2 (8-connected).

    Returns:
      float64 [N].
    """
    maps = _check_maps(maps)
    masks = _masks_like(maps, region_masks, "region_masks")
    structure = _structure(connectivity)
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1, got {min_area}.")
    levels = np.full(len(maps), -np.inf)
    for i, (m, where) in enumerate(zip(maps, masks)):
        values = np.unique(m[where])
        if not values.size or not _has_region(m, where, values[0], min_area,
                                              structure):
            continue
        lo, hi = 0, len(values) - 1  # predicate true at lo
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _has_region(m, where, values[mid], min_area, structure):
                lo = mid
            else:
                hi = mid - 1
        levels[i] = values[lo]
    return levels


def conformal_region_threshold(maps: np.ndarray,
                               region_masks: Optional[np.ndarray],
                               min_area: int, target_region_fpr: float,
                               connectivity: int = 2) -> float:
    """The conformal threshold on the calibration images' region levels.

    A new normal image exchangeable with the calibration images then has
    a region (level >= t) with probability <= target_region_fpr.

    Raises:
      ValueError: bad inputs, or no calibration image has any region at
        any threshold (fewer than min_area pixels in its mask).
      calibration.CalibrationError: too few calibration images for the
        rate (the message says how many are needed).
    """
    levels = image_region_levels(maps, region_masks, min_area, connectivity)
    finite = levels[np.isfinite(levels)]
    if not finite.size:
        raise ValueError(
            f"No calibration image has {min_area} connected pixels in its "
            f"scoring region; lower --min_region_area.")
    # Images that can never hold a region never exceed any threshold: their
    # level is below every finite one.
    levels = np.where(np.isfinite(levels), levels, finite.min() - 1.0)
    return calibration_lib.conformal_threshold(levels, target_region_fpr)


@dataclasses.dataclass(frozen=True)
class Region:
    """One anomalous region.

    Attributes:
      image_index: Index of its image in the ImageSet.
      number: 1-based number within its image (its value in the label map).
      bbox: (y0, x0, y1, x1), rows y0 <= y < y1 and columns x0 <= x < x1.
      area: Pixels.
      centroid: (y, x), the mean pixel position.
    """

    image_index: int
    number: int
    bbox: Tuple[int, int, int, int]
    area: int
    centroid: Tuple[float, float]


@dataclasses.dataclass(frozen=True)
class RegionSet:
    """The regions of every image and their label maps.

    Attributes:
      labels: int32 [N, H, W]; labels[i] == r.number on region r of image i,
        0 elsewhere.
      regions: Regions ordered by image, then number.
      threshold: The RegionThreshold they were found at.
      min_area: The minimum area used.
    """

    labels: np.ndarray
    regions: Tuple[Region, ...]
    threshold: RegionThreshold
    min_area: int

    def __len__(self) -> int:
        return len(self.regions)

    def mask(self, index: int) -> np.ndarray:
        """bool [H, W] of region `index` (into `regions`)."""
        r = self.regions[index]
        return self.labels[r.image_index] == r.number

    @functools.cached_property
    def _index(self) -> Dict[Tuple[int, int], int]:
        return {(r.image_index, r.number): k
                for k, r in enumerate(self.regions)}

    def of_image_number(self, image_index: int, number: int) -> int:
        """The index (into `regions`) of region `number` of an image."""
        return self._index[(image_index, number)]

    @functools.cached_property
    def _by_image(self) -> Dict[int, List[int]]:
        out: Dict[int, List[int]] = {}
        for k, r in enumerate(self.regions):
            out.setdefault(r.image_index, []).append(k)
        return out

    def of_image(self, image_index: int) -> List[int]:
        """Indices (into `regions`) of the regions of one image."""
        return list(self._by_image.get(image_index, ()))


def calibrate_threshold(rule: str, calibration_maps: Optional[np.ndarray],
                        calibration_masks: Optional[np.ndarray],
                        min_area: int, target_pixel_fpr: float = 0.005,
                        target_region_fpr: float = 0.1,
                        value: Optional[float] = None,
                        connectivity: int = 2) -> RegionThreshold:
    """The RegionThreshold of a rule (see the module docstring).

    Args:
      rule: "percentile", "conformal" or "fixed".
      calibration_maps: [n, H, W] maps of normal calibration images; needed
        by "percentile" and "conformal", optional with "fixed" (then the
        calibration rates are recorded).
      calibration_masks: Their scoring regions (None: every pixel).
      min_area: Minimum region area.
      target_pixel_fpr, target_region_fpr: The rules' rates.
      value: The "fixed" threshold.
      connectivity: 1 or 2.

    Raises:
      ConfigError: a rule needs calibration maps and got none, or its rate
        cannot be met with this many images (the message says what to
        pass).
    """
    n = 0 if calibration_maps is None else len(calibration_maps)
    if rule == "fixed":
        t, target = float(value), None
    elif not n:
        raise ConfigError(
            f"--region_threshold={rule} computes the threshold from normal "
            f"calibration images, but there are none. Pass "
            f"--calibration_data=<held-out normal images> (or use a dataset "
            f"with a calibration split), or give the threshold as a number, "
            f"e.g. --region_threshold=0.2.")
    elif rule == "percentile":
        target = float(target_pixel_fpr)
        try:
            t = pixel_percentile_threshold(calibration_maps,
                                           calibration_masks, target)
        except ValueError as e:
            raise ConfigError(f"{e} (--target_pixel_fpr)") from e
    elif rule == "conformal":
        target = float(target_region_fpr)
        try:
            t = conformal_region_threshold(calibration_maps, calibration_masks,
                                           min_area, target, connectivity)
        except calibration_lib.CalibrationError as e:
            raise ConfigError(
                f"--region_threshold=conformal with --target_region_fpr="
                f"{target:g}: {e}") from e
        except ValueError as e:
            raise ConfigError(f"{e} (--target_region_fpr)") from e
    else:
        raise ConfigError(f"Unknown region threshold rule {rule!r}; expected "
                          f"one of {THRESHOLD_RULES} or 'fixed'.")
    pixel_rate = image_rate = None
    if n:
        maps = _check_maps(calibration_maps)
        masks = _masks_like(maps, calibration_masks, "calibration_masks")
        pixel_rate = float(np.mean(maps[masks] >= t)) if masks.any() else 0.0
        structure = _structure(connectivity)
        image_rate = float(np.mean([
            _has_region(m, w, t, min_area, structure)
            for m, w in zip(maps, masks)]))
    return RegionThreshold(t, rule, target, n, pixel_rate, image_rate)


def find_regions(maps: np.ndarray, threshold: RegionThreshold, min_area: int,
                 region_masks: Optional[np.ndarray] = None,
                 roi_masks: Optional[np.ndarray] = None,
                 roi_overlap: float = 0.5,
                 connectivity: int = 2) -> RegionSet:
    """Connected components of {map >= t} with >= min_area pixels.

    Args:
      maps: [N, H, W] anomaly maps.
      threshold: The RegionThreshold (its value is t).
      min_area: Minimum area in pixels, >= 1.
      region_masks: bool [N, H, W], where components are formed (the
        scoring region); None: every pixel.
      roi_masks: bool [N, H, W], the ROI; a component is kept only when at
        least `roi_overlap` of its pixels lie in it. None: no ROI test.
        An image whose ROI is empty keeps all of its components (nothing is
        known about where its tissue is, as in `data.roi.scoring_region`).
      roi_overlap: In [0, 1].
      connectivity: 1 (4-connected) or 2 (8-connected).

    Returns:
      A RegionSet (regions renumbered 1.. per image in label order).
    """
    maps = _check_maps(maps)
    where = _masks_like(maps, region_masks, "region_masks")
    roi = None if roi_masks is None else _masks_like(maps, roi_masks,
                                                     "roi_masks")
    if min_area < 1:
        raise ConfigError(f"--min_region_area must be >= 1, got {min_area}.")
    structure = _structure(connectivity)
    labels = np.zeros(maps.shape, np.int32)
    regions: List[Region] = []
    for i in range(len(maps)):
        labelled, count = ndimage.label((maps[i] >= threshold.value) &
                                        where[i], structure)
        if not count:
            continue
        areas = np.bincount(labelled.reshape(-1), minlength=count + 1)
        keep = areas >= min_area
        keep[0] = False
        if roi is not None and roi[i].any():
            inside = np.bincount(labelled[roi[i]], minlength=count + 1)
            keep &= inside >= roi_overlap * areas
        slices = ndimage.find_objects(labelled)
        number = 0
        for label in np.flatnonzero(keep):
            number += 1
            sl = slices[label - 1]
            own = labelled[sl] == label
            labels[i][sl][own] = number
            ys, xs = np.nonzero(own)
            regions.append(Region(
                image_index=i, number=number,
                bbox=(sl[0].start, sl[1].start, sl[0].stop, sl[1].stop),
                area=int(areas[label]),
                centroid=(float(ys.mean() + sl[0].start),
                          float(xs.mean() + sl[1].start))))
    return RegionSet(labels, tuple(regions), threshold, int(min_area))

