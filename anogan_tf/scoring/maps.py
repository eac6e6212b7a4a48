"""Full-image anomaly maps from per-patch residuals, raw or smoothed.

The raw map is today's |x - G(z*)|, stitched by overlap averaging
(`data.patches.stitch_maps`). OCT speckle leaves a residual of random sign
that changes from pixel to pixel, while a lesion (a dark cyst where G draws
a bright layer, a bright focus where G draws tissue) leaves a residual of
one sign over many pixels. Smoothing therefore comes in two kinds:

  signed    |G_sigma * (x - G(z*))|: the signed residual is smoothed, then
            its magnitude taken; speckle of random sign averages out.
  absolute  G_sigma * |x - G(z*)|: the magnitude is smoothed; speckle only
            blurs.

Both read only the pixels that carry a residual (covered by a patch, inside
the scoring region, not an artefact), with weight w on those pixels and 0
elsewhere: the map is G_sigma * (v w), kept on w and 0 elsewhere. Masked
pixels therefore never leak into the map, and near the mask's edge, where
fewer pixels contribute, the map shrinks towards 0 (less evidence). The
normalised convolution (G_sigma * (v w)) / (G_sigma * w) (`normalize=True`)
keeps a constant constant up to the edge, but it also lets speckle through
there undamped; on synthetic_oct it moved the brightest 1% of map pixels
out of the retina ROI onto its edges and halved the pixel AUPRC
(BENCHMARKS.md, issue 15), so scoring uses the plain form. sigma is in
full-image pixels; sigma = 0 is the raw map, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from anogan_tf.config import MAP_SMOOTHINGS
from anogan_tf.data.patches import stitch_coverage, stitch_maps
from anogan_tf.data.records import PatchSet

__all__ = ["MAP_SMOOTHINGS", "VARIANT_SIGMAS", "ResidualMaps",
           "check_map_smoothing", "map_name", "map_variants",
           "masked_gaussian", "residual_maps", "anomaly_maps"]

# The sigmas (full-image pixels) metrics.json compares, beside the raw map.
VARIANT_SIGMAS = (1.0, 2.0, 3.0, 4.0, 6.0)


@dataclasses.dataclass(frozen=True)
class ResidualMaps:
    """Stitched full-image residuals of one mapping.

    Attributes:
      absolute: float32 [N, H, W], the overlap average of the per-patch
        |x - G(z*)| (averaged over channels), 0 where no patch lies; the
        raw map before the scoring region is applied.
      signed: float32 [N, H, W, C], the overlap average of x - G(z*) per
        channel, 0 where no patch lies.
      weight: bool [N, H, W], the pixels a smoothed map reads and is
        defined on: covered by a patch and inside the scoring region.
      region: Optional bool [N, H, W], the scoring region (ROI plus margin
        minus artefacts, see `data.roi.scoring_region`); None: every pixel.
    """

    absolute: np.ndarray
    signed: np.ndarray
    weight: np.ndarray
    region: Optional[np.ndarray] = None


def check_map_smoothing(sigma: float, smoothing: str) -> None:
    """Raises ValueError naming the flags when the map settings are invalid.

    Args:
      sigma: Gaussian sigma in full-image pixels (0: the raw map).
      smoothing: One of MAP_SMOOTHINGS.
    """
    if not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or \
            sigma < 0:
        raise ValueError(
            f"--map_sigma must be a finite number of pixels >= 0 (0: the raw "
            f"residual map), got {sigma!r}. Pass e.g. --map_sigma=2.")
    if smoothing not in MAP_SMOOTHINGS:
        raise ValueError(
            f"--map_smoothing must be one of {'|'.join(MAP_SMOOTHINGS)}, got "
            f"{smoothing!r}: 'signed' blurs x - G(z*) before taking its "
            f"magnitude, 'absolute' blurs |x - G(z*)|.")


def map_name(sigma: float, smoothing: str) -> str:
    """The variant's key in metrics.json: "raw", "signed_s2", "absolute_s1.5"."""
    return "raw" if sigma == 0 else f"{smoothing}_s{sigma:g}"


def masked_gaussian(values: np.ndarray, weight: np.ndarray, sigma: float,
                    normalize: bool = False) -> np.ndarray:
    """Gaussian convolution of `values` that reads only the pixels `weight`.

    out = G_sigma * (values w) on `weight`, 0 elsewhere, so whatever lies
    outside `weight` (artefacts, pixels no patch covered, pixels far from
    the ROI) never reaches the result; near the edge of `weight` the result
    shrinks towards 0. With `normalize`, out = (G_sigma * (values w)) /
    (G_sigma * w), the normalised convolution: a local mean of the weighted
    pixels that keeps a constant constant up to the edge.

    Args:
      values: [N, H, W] or [N, H, W, C] maps (channels smoothed apart).
      weight: bool [N, H, W], the pixels to read and to define.
      sigma: Standard deviation in pixels along H and W, > 0.
      normalize: Divide by the weight's convolution (see above).

    Returns:
      float32, the shape of `values`.

    Raises:
      ValueError: the shapes disagree or sigma <= 0.
    """
    values = np.asarray(values, np.float64)
    weight = np.asarray(weight, bool)
    if values.shape[:3] != weight.shape or values.ndim not in (3, 4):
        raise ValueError(
            f"masked_gaussian needs values [N, H, W] or [N, H, W, C] and a "
            f"weight [N, H, W] of the same N, H, W, got {values.shape} and "
            f"{weight.shape}.")
    if not sigma > 0:
        raise ValueError(f"masked_gaussian needs sigma > 0, got {sigma}.")
    w = weight.astype(np.float64)
    if values.ndim == 4:
        w = w[..., None]
    axes = (0.0, sigma, sigma) + ((0.0,) if values.ndim == 4 else ())
    out = ndimage.gaussian_filter(values * w, axes, mode="constant")
    if normalize:
        den = ndimage.gaussian_filter(np.broadcast_to(w, values.shape), axes,
                                      mode="constant")
        out = out / np.maximum(den, 1e-12)
    return np.where(w > 0, out, 0.0).astype(np.float32)


def residual_maps(patches: PatchSet, residual_map: np.ndarray,
                  reconstruction: np.ndarray, num_images: int,
                  region: Optional[np.ndarray] = None) -> ResidualMaps:
    """Stitches one mapping's absolute and signed residuals.

    Args:
      patches: The PatchSet that was mapped (`patches.patches` is x).
      residual_map: [P, S, S, C] per-patch |x - G(z*)| (the mapping's).
      reconstruction: [P, S, S, C] per-patch G(z*).
      num_images: N.
      region: Optional bool [N, H, W] scoring region.

    Returns:
      ResidualMaps.
    """
    absolute = stitch_maps(residual_map, patches, num_images)
    signed_patches = (np.asarray(patches.patches, np.float32) -
                      np.asarray(reconstruction, np.float32))
    if signed_patches.ndim == 3:
        signed_patches = signed_patches[..., None]
    signed = np.stack([stitch_maps(signed_patches[..., c], patches, num_images)
                       for c in range(signed_patches.shape[-1])], axis=-1)
    weight = stitch_coverage(patches, num_images) > 0
    if region is not None:
        weight &= np.asarray(region, bool)
    return ResidualMaps(absolute, signed, weight, region)


def anomaly_maps(residuals: ResidualMaps, sigma: float = 0.0,
                 smoothing: str = "signed") -> np.ndarray:
    """The anomaly map scoring uses.

    Args:
      residuals: The stitched residuals.
      sigma: Gaussian sigma in full-image pixels; 0: the raw stitched
        |x - G(z*)| (0 outside the scoring region), exactly as without
        smoothing.
      smoothing: "signed" (|G_sigma * (x - G(z*))|, averaged over
        channels) or "absolute" (G_sigma * |x - G(z*)|); see the module
        docstring.

    Returns:
      float32 [N, H, W], >= 0, and 0 outside the scoring region.

    Raises:
      ValueError: invalid sigma or smoothing.
    """
    check_map_smoothing(sigma, smoothing)
    if sigma == 0:
        if residuals.region is None:
            return residuals.absolute
        # Artefact pixels and pixels far from the ROI carry no score; maps
        # are non-negative residuals, so 0 is "nothing there" for map_max.
        return np.where(residuals.region, residuals.absolute,
                        0.0).astype(np.float32)
    if smoothing == "absolute":
        return masked_gaussian(residuals.absolute, residuals.weight, sigma)
    smoothed = masked_gaussian(residuals.signed, residuals.weight, sigma)
    return np.abs(smoothed).mean(axis=-1).astype(np.float32)


def map_variants(sigmas: Sequence[float] = VARIANT_SIGMAS
                 ) -> List[Tuple[str, float, str]]:
    """(name, sigma, smoothing) of the raw map and each smoothing per sigma.

    Args:
      sigmas: Sigmas > 0 to compare.

    Returns:
      [("raw", 0.0, "signed"), ("absolute_s1", 1.0, "absolute"),
      ("signed_s1", 1.0, "signed"), ...].
    """
    out = [("raw", 0.0, "signed")]
    for sigma in sigmas:
        for smoothing in ("absolute", "signed"):
            out.append((map_name(sigma, smoothing), float(sigma), smoothing))
    return out
