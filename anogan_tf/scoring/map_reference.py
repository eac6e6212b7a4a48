"""Anomaly maps standardised by depth against normal calibration images.

A GAN's residual is not equally large everywhere on a normal image. On OCT
B-scans G misfits some layers of every scan (the vitreous edge, the RPE),
and speckle is multiplicative, so bright layers leave larger residuals than
dark ones. A raw map then ranks a normal scan's layer stripe as high as a
lesion (BENCHMARKS.md, issue 15). `--map_norm=depth` compares every map
pixel with the same depth on normal images instead:

  m'(y, x) = m(y, x) / p99_b,  b = bin(depth(y, x)),  p99_b = median_b + spread_b

where median_b and spread_b (the 99th percentile minus the median) are
read off the maps of the held-out normal calibration images, pooled over
the pixels of depth bin b. The ratio keeps the order of the pixels within
a depth (a clipped (m - median_b) / spread_b ties every pixel below the
median at 0, which cost 0.06 of pixel AUROC in BENCHMARKS.md at the same
image AUROC), and the maps stay >= 0 since every map variant is. With a retina ROI the depth is band-relative,
(y - top) / (bottom - top) of the pixel's column (0 at the band's top, 1 at
its bottom, outside [0, 1] in the margin rows), so the statistics follow
the layers wherever the band lies in the scan; without an ROI it is the
row, y / H. A value of 1 means "as strong as the strongest 1% of normal
pixels at this depth".

The statistics are fitted by anogan-evaluate on the calibration images and
recorded in detector.json ("map_reference"); anogan-score, the Scorer and
the score_images signature apply them. Fitting them on the images that then
calibrate the threshold would make those images look more normal than new
ones, so evaluate scores each calibration image with statistics fitted on
the other half of them (`cross_fitted_maps`).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np

from anogan_tf.config import MAP_NORMS, ConfigError

__all__ = ["MAP_NORMS", "MapReference", "depth_coordinates",
           "fit_map_reference", "standardize_maps", "cross_fitted_maps"]

# Band-relative depth bins: 0..1 is the band, the rest the margin rows.
BAND_EDGES = (-0.4, 1.4, 36)
# Row bins (no ROI): y / H.
ROW_EDGES = (0.0, 1.0, 32)
# A bin's statistics need this many pixels; thinner bins use all pixels'.
MIN_BIN_PIXELS = 64
# The spread is at least this share of the pooled spread (no bin divides
# by ~0, e.g. a bin that is 0 on most normal pixels).
MIN_SPREAD_SHARE = 0.1
SPREAD_PERCENTILE = 99.0
# The form standardize_maps applies, recorded with the statistics: a
# detector.json fitted for another form is refused (its threshold was
# calibrated on other maps).
FORM = "m / (median + spread)"


@dataclasses.dataclass(frozen=True)
class MapReference:
    """Per-depth statistics of normal images' anomaly maps.

    Attributes:
      coordinate: "band" (depth within the retina band) or "row" (y / H).
      edges: Bin edges, ascending, B + 1 values; depths outside them fall in
        the first or last bin.
      median: [B] median map value of the normal pixels in each bin.
      spread: [B] their 99th percentile minus the median, > 0.
      n_images: Normal images the statistics were read from.
      map: Name of the map they describe ("raw", "signed_s4", ...); they
        apply only to that map.
    """

    coordinate: str
    edges: Tuple[float, ...]
    median: Tuple[float, ...]
    spread: Tuple[float, ...]
    n_images: int
    map: str

    def __post_init__(self):
        b = len(self.edges) - 1
        if (self.coordinate not in ("band", "row") or b < 1 or
                len(self.median) != b or len(self.spread) != b or
                not np.all(np.diff(self.edges) > 0) or
                not np.all(np.isfinite(self.median)) or
                not np.all(np.asarray(self.spread) > 0)):
            raise ConfigError(
                f"Invalid map reference (coordinate {self.coordinate!r}, "
                f"{len(self.edges)} edges, {len(self.median)} medians, "
                f"{len(self.spread)} spreads): re-run anogan-evaluate with "
                f"--map_norm=depth to fit it again.")

    def to_json(self) -> Dict:
        return {"form": FORM, "coordinate": self.coordinate,
                "edges": list(self.edges),
                "median": list(self.median), "spread": list(self.spread),
                "n_images": self.n_images, "map": self.map}

    @classmethod
    def from_json(cls, record: Dict) -> "MapReference":
        if isinstance(record, dict) and record.get("form") != FORM:
            raise ConfigError(
                f"detector.json's map_reference was written for the map form "
                f"{record.get('form', 'max(0, (m - median) / spread)')!r}; "
                f"this version applies {FORM!r}, so its recorded threshold "
                f"would not hold. Re-run anogan-evaluate with --map_norm=depth "
                f"to fit the statistics and the threshold again.")
        try:
            return cls(coordinate=str(record["coordinate"]),
                       edges=tuple(float(v) for v in record["edges"]),
                       median=tuple(float(v) for v in record["median"]),
                       spread=tuple(float(v) for v in record["spread"]),
                       n_images=int(record["n_images"]),
                       map=str(record["map"]))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                f"detector.json's map_reference is incomplete or malformed "
                f"({e!r}); re-run anogan-evaluate with --map_norm=depth."
            ) from e


def _column_bounds(mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Per column the first ROI row and the row below the last one; columns
    without ROI take the median of the others (NaN when none has any)."""
    h = mask.shape[0]
    has = mask.any(axis=0)
    top = np.where(has, mask.argmax(axis=0), np.nan).astype(np.float64)
    bottom = np.where(has, h - mask[::-1].argmax(axis=0), np.nan)
    if has.any() and not has.all():
        top[~has] = np.median(top[has])
        bottom[~has] = np.median(bottom[has])
    return top, bottom.astype(np.float64)


def depth_coordinates(shape: Tuple[int, int, int],
                      roi_masks: Optional[np.ndarray] = None) -> np.ndarray:
    """The depth of every pixel.

    Args:
      shape: (N, H, W) of the maps.
      roi_masks: Optional bool [N, H, W] ROI masks. With them the depth is
        (y - top) / (bottom - top) per column (0 at the band's first row, 1
        just below its last); an image without any ROI pixel, or no masks,
        gets the row coordinate (y + 0.5) / H.

    Returns:
      float64 [N, H, W].
    """
    n, h, w = shape
    rows = (np.arange(h, dtype=np.float64) + 0.5) / h
    out = np.broadcast_to(rows[None, :, None], (n, h, w)).copy()
    if roi_masks is None:
        return out
    masks = np.asarray(roi_masks, bool)
    if masks.shape != (n, h, w):
        raise ValueError(f"depth_coordinates: ROI masks {masks.shape} do not "
                         f"match the maps {(n, h, w)}.")
    y = np.arange(h, dtype=np.float64)[:, None]
    for i in range(n):
        if not masks[i].any():
            continue
        top, bottom = _column_bounds(masks[i])
        out[i] = (y - top[None, :]) / np.maximum(bottom - top, 1.0)[None, :]
    return out


def _bins(depth: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of every depth, depths outside the edges clipped in."""
    return np.clip(np.searchsorted(edges, depth, side="right") - 1, 0,
                   len(edges) - 2)


def _edges(coordinate: str) -> np.ndarray:
    lo, hi, b = BAND_EDGES if coordinate == "band" else ROW_EDGES
    return np.linspace(lo, hi, b + 1)


def fit_map_reference(maps: np.ndarray, weight: np.ndarray,
                      roi_masks: Optional[np.ndarray],
                      map_name: str) -> MapReference:
    """Reads the per-depth statistics off normal images' maps.

    Args:
      maps: float [N, H, W] anomaly maps of normal images.
      weight: bool [N, H, W], the pixels the maps are defined on (covered
        by a patch, inside the scoring region).
      roi_masks: Optional bool [N, H, W] ROI masks (band-relative depth).
      map_name: The maps' variant name (recorded; see MapReference.map).

    Returns:
      A MapReference.

    Raises:
      ConfigError: no image, or no pixel to read.
    """
    maps = np.asarray(maps, np.float64)
    weight = np.asarray(weight, bool)
    if maps.ndim != 3 or weight.shape != maps.shape or not len(maps):
        raise ConfigError(
            f"--map_norm=depth needs the maps of normal calibration images; "
            f"got maps {maps.shape} and weights {weight.shape}. Pass "
            f"--calibration_data or use a dataset with a calibration split.")
    coordinate = "band" if (roi_masks is not None and
                            np.asarray(roi_masks, bool).any()) else "row"
    depth = depth_coordinates(maps.shape, roi_masks if coordinate == "band"
                              else None)
    edges = _edges(coordinate)
    values = maps[weight]
    if not values.size:
        raise ConfigError("--map_norm=depth: the calibration images' maps "
                          "have no scored pixel (no patch was kept).")
    bins = _bins(depth[weight], edges)
    pooled_median = float(np.median(values))
    pooled_spread = float(np.percentile(values, SPREAD_PERCENTILE)
                          - pooled_median)
    floor = max(MIN_SPREAD_SHARE * pooled_spread, 1e-6)
    median, spread = [], []
    for b in range(len(edges) - 1):
        v = values[bins == b]
        if v.size < MIN_BIN_PIXELS:
            m, s = pooled_median, pooled_spread
        else:
            m = float(np.median(v))
            s = float(np.percentile(v, SPREAD_PERCENTILE)) - m
        median.append(m)
        spread.append(max(s, floor))
    return MapReference(coordinate, tuple(float(e) for e in edges),
                        tuple(median), tuple(spread), len(maps), map_name)


def standardize_maps(maps: np.ndarray, weight: np.ndarray,
                     roi_masks: Optional[np.ndarray],
                     reference: MapReference) -> np.ndarray:
    """Applies a MapReference: m / (median_b + spread_b) on `weight`, 0
    elsewhere.

    Args:
      maps: float [N, H, W] anomaly maps (the variant `reference.map`).
      weight: bool [N, H, W], the pixels the maps are defined on.
      roi_masks: Optional bool [N, H, W] ROI masks; needed when the
        reference is band-relative.
      reference: The statistics.

    Returns:
      float32 [N, H, W], >= 0.

    Raises:
      ConfigError: a band-relative reference without ROI masks.
    """
    maps = np.asarray(maps, np.float64)
    if reference.coordinate == "band" and roi_masks is None:
        raise ConfigError(
            "The detector's map reference is band-relative (fitted with "
            "--roi=retina) but these images were scored without an ROI. "
            "Score with --roi=retina, or pass --map_norm=none.")
    depth = depth_coordinates(maps.shape, roi_masks if
                              reference.coordinate == "band" else None)
    bins = _bins(depth, np.asarray(reference.edges))
    median = np.asarray(reference.median)[bins]
    spread = np.asarray(reference.spread)[bins]
    out = maps / (median + spread)
    return np.where(np.asarray(weight, bool), out, 0.0).astype(np.float32)


def cross_fitted_maps(maps: np.ndarray, weight: np.ndarray,
                      roi_masks: Optional[np.ndarray], map_name: str,
                      folds: int = 2) -> np.ndarray:
    """Standardised maps of the calibration images themselves, each image
    with statistics fitted on the other folds only (images i % folds).

    With fewer than 2 * folds images the folds would be too thin: each
    image is then standardised leave-one-out.

    Returns:
      float32 [N, H, W].
    """
    n = len(maps)
    if n < 2:
        raise ConfigError(
            f"--map_norm=depth needs at least 2 normal calibration images to "
            f"fit its statistics apart from the images they standardise; got "
            f"{n}. Pass more with --calibration_data.")
    folds = folds if n >= 2 * folds else n
    fold = np.arange(n) % folds
    out = np.zeros(np.shape(maps), np.float32)
    for k in range(folds):
        own, other = fold == k, fold != k
        ref = fit_map_reference(
            maps[other], weight[other],
            None if roi_masks is None else roi_masks[other], map_name)
        out[own] = standardize_maps(
            maps[own], weight[own],
            None if roi_masks is None else roi_masks[own], ref)
    return out
