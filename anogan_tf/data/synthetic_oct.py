"""Procedural retina-like OCT B-scans with pixel-exact anomaly masks.

A scan is rendered in three steps:

1. Reflectivity. A dark vitreous on top; a retina band (top near 35% of the
   height, bottom near 60%) made of eight layers of alternating reflectivity
   (bright RNFL, medium GCL/IPL, dark INL, bright OPL, dark ONL, bright
   ellipsoid zone, darker photoreceptor outer segments, very bright RPE);
   below the RPE a textured choroid whose signal fades with depth. Layer
   boundaries are smooth curves (low-frequency sinusoids, a tilt and a
   curvature), each layer's thickness is modulated smoothly, about half the
   scans have a foveal dip (inner layers thinning towards a pit), and some
   scans have vessel shadows (vertical bands of lower signal).
2. Anomalies, only in anomalous scans, painted into the reflectivity:
   "fluid" -- 1 to 3 dark cyst-like blobs (irregular ellipses, 10-28 px
   wide at a height of 128, scaled with the height): intraretinal cysts
   centred on the OPL (so they cut through it between the nuclear layers) or
   subretinal fluid between the ellipsoid zone and the RPE;
   "focus" -- 1 to 4 hyperreflective foci (bright dots 3-5 px across) inside
   the retina; or both ("fluid+focus").
3. Display. Multiplicative gamma speckle (mean 1), a slight Gaussian blur,
   a per-scan gain and offset and a gentle lateral illumination change, then
   clipping to [0, 1] and scaling to [-1, 1].

4. Acquisition artefacts, only with `artifacts=True` (drawn from their own
   random stream, so the scans without them are unchanged): an intensity
   drift between scans (a gain in [0.65, 1.45] and an offset in
   [-0.03, 0.12] on top of the display's own); 1 to 3 superficial vessels
   (a bright cross-section in the inner retina and a shadow of 35-85% less
   signal below it, through the retina and the choroid); saturated (+1.0,
   i.e. 255) padding wedges on the left and/or right as left by rotation or
   flattening (widths varying linearly from top to bottom); a full-height
   padding strip of 4-15% of the width, saturated white or black (-1.0),
   which emulates scans of mixed widths padded to one width (the pipeline
   stacks images of one size, so real mixed widths are not generated); and
   1-pixel white lines along some image borders. Artefact pixels are
   excluded from the lesion masks.

The normal scan and its anomalous version share the same speckle, display
parameters and artefacts. The mask is the set of pixels whose value changed by
more than `_MASK_EPS` or that lie in the anomaly's core (alpha >= 0.5), with
holes filled; every pixel outside the mask is copied from the normal
rendering, so outside the mask an anomalous scan equals its normal scan
exactly.

Scan `i` of seed `s` draws its normal appearance from the random stream
(s, i, 0) and its anomalies from (s, i, 1), so it does not depend on how many
scans are generated. Which scans are anomalous follows a low-discrepancy
rule: scan i is anomalous iff floor((i + 1) f + 1/2) > floor(i f + 1/2) for
anomaly fraction f, so the first n scans hold exactly floor(n f + 1/2)
anomalous ones for every n (and `ImageSet.take` keeps the fraction). The
artefacts come from the stream (s, i, 2).

`generate_oct_with_truth` also returns the ground truth the ROI is tested
against (`OctTruth`): the retina band per column (from the vitreous/RNFL
boundary to the bottom of the RPE) and the artefact pixels; and the lesion
type of every mask pixel (`OctTruth.lesion_types`, codes into
`OCT_LESION_TYPES`: intraretinal cyst, subretinal fluid, hyperreflective
focus), which marker discovery is evaluated against. Recording the types
draws nothing from the random streams, so the scans, masks and categories
are the same as without them. A pixel takes the type of the last lesion
painted whose core (alpha >= 0.5) covers it (later lesions paint over
earlier ones); mask pixels outside every core (the blurred rim) take the
type of the nearest core.
"""

from __future__ import annotations

import dataclasses
import math
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from anogan_tf.data.errors import DataError
from anogan_tf.data.records import ImageSet

__all__ = ["generate_oct", "generate_oct_with_truth", "OctTruth",
           "is_anomalous_index", "OCT_CATEGORIES", "OCT_LESION_TYPES"]

OCT_CATEGORIES = ("good", "fluid", "focus", "fluid+focus")
# Lesion types of `OctTruth.lesion_types`: code k + 1 is OCT_LESION_TYPES[k]
# (0: no lesion). "fluid" scans hold cysts and/or subretinal fluid, "focus"
# scans hyperreflective foci.
OCT_LESION_TYPES = ("intraretinal_cyst", "subretinal_fluid",
                    "hyperreflective_focus")
_CYST, _SRF, _FOCUS = 1, 2, 3

# (name, share of the retina thickness, reflectivity) from top to bottom.
_LAYERS = (
    ("rnfl", 0.13, 0.78),
    ("gcl_ipl", 0.20, 0.46),
    ("inl", 0.11, 0.20),
    ("opl", 0.08, 0.52),
    ("onl", 0.24, 0.11),
    ("ez", 0.07, 0.70),
    ("os", 0.05, 0.32),
    ("rpe", 0.12, 0.95),
)
_INNER = 4  # Layers 0..3 thin out at the fovea.
_INL, _OPL, _ONL, _OS = 2, 3, 4, 6
_VITREOUS = 0.03
# A display-space change larger than this counts as "altered" (in [0, 1]).
_MASK_EPS = 0.02
_MIN_SIZE = 16
# Value of saturated padding and border pixels, in [0, 1] display units.
_SATURATED = 1.0


@dataclasses.dataclass(frozen=True)
class OctTruth:
    """Ground truth of the synthetic scans beyond the lesion masks.

    Attributes:
      band_top: float64 [N, W], per column the row of the vitreous/retina
        boundary (top of the RNFL), in pixels (row 0 is the top).
      band_bottom: float64 [N, W], per column the row of the bottom of the
        RPE (the retina/choroid boundary).
      artifacts: bool [N, H, W], padding and border pixels (all False
        without artefacts).
      lesion_types: Optional uint8 [N, H, W], per lesion-mask pixel its
        type code (k + 1 for `OCT_LESION_TYPES[k]`), 0 outside the masks;
        nonzero exactly where the ImageSet's mask is 1.
    """

    band_top: np.ndarray
    band_bottom: np.ndarray
    artifacts: np.ndarray
    lesion_types: Optional[np.ndarray] = None

    def band_masks(self) -> np.ndarray:
        """bool [N, H, W]: rows y with band_top <= y < band_bottom, minus
        the artefact pixels (the band a retina ROI should find)."""
        h = self.artifacts.shape[1]
        y = np.arange(h, dtype=np.float64)[None, :, None]
        inside = ((y >= self.band_top[:, None, :]) &
                  (y < self.band_bottom[:, None, :]))
        return inside & ~self.artifacts


@dataclasses.dataclass
class _Artifacts:
    """One scan's acquisition artefacts (see the module docstring)."""

    gain: float
    offset: float
    vessels: List[Tuple[float, float, float, float]]  # x0, half, depth, shade
    padding: np.ndarray  # bool [H, W]
    padding_value: np.ndarray  # [H, W] in {0, 1}, used where padding


@dataclasses.dataclass
class _Scene:
    """One scan's normal reflectivity and the draws shared by its renderings."""

    reflectivity: np.ndarray  # [H, W] in [0, 1]
    boundaries: np.ndarray  # [len(_LAYERS) + 1, W]: tops of layers, RPE bottom
    speckle: np.ndarray  # [H, W], mean 1
    blur: float
    gain: np.ndarray  # [W], per-column gain
    offset: float


def is_anomalous_index(index: int, anomaly_fraction: float) -> bool:
    """Whether scan `index` is anomalous under the low-discrepancy rule.

    Args:
      index: Scan index, >= 0.
      anomaly_fraction: Fraction of anomalous scans in [0, 1].

    Returns:
      True iff floor((index + 1) f + 1/2) > floor(index f + 1/2).
    """
    f = float(anomaly_fraction)
    return math.floor((index + 1) * f + 0.5) > math.floor(index * f + 0.5)


def _smooth_noise(rng: np.random.Generator, shape: Tuple[int, int],
                  sigma: Tuple[float, float]) -> np.ndarray:
    """Gaussian-filtered white noise with unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma,
                                    mode="reflect")
    return field / (field.std() + 1e-8)


def _smooth_curve(rng: np.random.Generator, width: int, amplitude: float,
                  terms: int = 3) -> np.ndarray:
    """A sum of low-frequency sinusoids over the columns."""
    u = np.arange(width) / width
    curve = np.zeros(width)
    for k in range(terms):
        freq = rng.uniform(0.3, 1.6)
        curve += (amplitude / (k + 1)) * np.sin(
            2 * np.pi * freq * u + rng.uniform(0, 2 * np.pi))
    return curve


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _draw_scene(rng: np.random.Generator, height: int, width: int) -> _Scene:
    h, w = height, width
    scale = h / 128.0
    u = np.arange(w) / w
    y = np.arange(h, dtype=np.float64)[:, None]

    # The RPE bottom: low-frequency waves, a tilt and the eye's curvature.
    bottom = (h * rng.uniform(0.58, 0.66) + _smooth_curve(rng, w, 0.02 * h) +
              h * rng.uniform(-0.05, 0.05) * (u - 0.5) +
              h * rng.uniform(-0.06, 0.06) * 4 * (u - 0.5) ** 2)
    total = h * rng.uniform(0.24, 0.30) * (
        1 + 0.05 * _smooth_curve(rng, w, 1.0, terms=2))
    fovea = np.zeros(w)
    if rng.random() < 0.5:
        center = rng.uniform(0.35, 0.65)
        fovea = np.exp(-0.5 * ((u - center) / rng.uniform(0.06, 0.11)) ** 2)
    depth = rng.uniform(0.6, 0.9)

    thickness = []
    for k, (_, share, _) in enumerate(_LAYERS):
        t = total * share * (1 + 0.06 * _smooth_curve(rng, w, 1.0, terms=2))
        if k < _INNER:
            t = t * (1 - depth * fovea)
        elif k == _ONL:
            t = t * (1 + 0.35 * fovea)
        thickness.append(t)
    tops = [bottom]
    for t in reversed(thickness):
        tops.insert(0, tops[0] - t)
    boundaries = np.stack(tops)  # [K + 1, W]; row K is the RPE bottom.

    soft = max(0.35, 0.6 * scale)
    reflect = np.full((h, w), _VITREOUS)
    previous = _VITREOUS
    for k, (_, _, level) in enumerate(_LAYERS):
        level = level * rng.uniform(0.9, 1.1)
        reflect += (level - previous) * _sigmoid((y - boundaries[k]) / soft)
        previous = level
    # Choroid: textured (vessel lumens are darker), fading with depth.
    below = np.maximum(y - bottom, 0.0)
    choroid = rng.uniform(0.4, 0.6) * np.exp(
        -below / (h * rng.uniform(0.07, 0.12)))
    choroid *= np.clip(1 + 0.35 * _smooth_noise(
        rng, (h, w), (1.5 * scale, 3.0 * scale)), 0.2, 1.8)
    in_choroid = _sigmoid((y - bottom) / soft)
    reflect = reflect * (1 - in_choroid) + (choroid + 0.01) * in_choroid
    # Within-layer texture, longer along the layers than across them.
    reflect *= 1 + 0.08 * _smooth_noise(rng, (h, w),
                                        (0.8 * scale, 4.0 * scale))
    # Vessel shadows below the inner retina.
    for _ in range(rng.integers(0, 3)):
        x0 = rng.uniform(0.05, 0.95)
        half = rng.uniform(0.008, 0.02) * h / w
        column = np.exp(-0.5 * ((u - x0) / half) ** 2)
        start = boundaries[1] + 0.5 * (boundaries[2] - boundaries[1])
        reflect *= 1 - rng.uniform(0.3, 0.6) * column * _sigmoid(
            (y - start) / soft)
    reflect = np.clip(reflect, 0.0, 1.0)

    shape_k = rng.uniform(3.0, 5.0)
    speckle = rng.gamma(shape_k, 1.0 / shape_k, size=(h, w))
    gain = rng.uniform(0.85, 1.15) * (
        1 + 0.06 * np.sin(np.pi * u + rng.uniform(0, 2 * np.pi)))
    return _Scene(reflectivity=reflect, boundaries=boundaries,
                  speckle=speckle, blur=max(0.5, 0.6 * scale), gain=gain,
                  offset=rng.uniform(0.0, 0.04))


def _display(reflect: np.ndarray, scene: _Scene) -> np.ndarray:
    """Reflectivity -> displayed intensity in [0, 1]."""
    value = ndimage.gaussian_filter(reflect * scene.speckle, scene.blur,
                                    mode="nearest")
    return np.clip(value * scene.gain[None, :] + scene.offset, 0.0, 1.0)


def _blob_alpha(height: int, width: int, cy: float, cx: float, ry: float,
                rx: float, edge: float, wobble: np.ndarray,
                phases: np.ndarray) -> np.ndarray:
    """Soft alpha of an irregular ellipse: 1 in the core, 0 outside."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    dy, dx = (yy - cy) / ry, (xx - cx) / rx
    theta = np.arctan2(dy, dx)
    radius = 1.0 + sum(a * np.sin((k + 2) * theta + p)
                       for k, (a, p) in enumerate(zip(wobble, phases)))
    distance = np.sqrt(dx ** 2 + dy ** 2) / radius
    return np.clip((1.0 - distance) / edge, 0.0, 1.0)


def _paint_anomalies(rng: np.random.Generator, scene: _Scene
                     ) -> Tuple[np.ndarray, np.ndarray, str, np.ndarray]:
    """Returns (anomalous reflectivity, combined alpha, category, uint8
    [H, W] type code of the last lesion core covering each pixel)."""
    reflect = scene.reflectivity.copy()
    h, w = reflect.shape
    scale = h / 128.0
    b = scene.boundaries
    category = str(rng.choice(OCT_CATEGORIES[1:], p=(0.4, 0.3, 0.3)))
    alpha_total = np.zeros((h, w))
    owner = np.zeros((h, w), np.uint8)

    if "fluid" in category:
        for _ in range(rng.integers(1, 4)):
            cx = rng.uniform(0.12, 0.88) * w
            col = int(np.clip(round(cx), 0, w - 1))
            rx = rng.uniform(5.0, 14.0) * scale
            # Keep the pocket inside the retina, below the RNFL, above the RPE.
            room = 0.5 * (b[7, col] - b[1, col])
            ry = max(2.0 * scale, min(rx * rng.uniform(0.5, 0.9), 0.9 * room))
            if rng.random() < 0.7:
                # Intraretinal cyst: centred on the OPL, so it cuts through
                # the bright OPL between the dark nuclear layers.
                cy = 0.5 * (b[_OPL, col] + b[_OPL + 1, col])
                kind = _CYST
            else:
                # Subretinal fluid: a dark pocket between the ellipsoid zone
                # and the RPE.
                cy = 0.5 * (b[_OS, col] + b[_OS + 1, col])
                kind = _SRF
            cy = float(np.clip(cy, b[1, col] + ry, b[7, col] - ry))
            alpha = _blob_alpha(h, w, cy, cx, ry, rx, edge=0.3,
                                wobble=rng.uniform(0.0, 0.08, size=3),
                                phases=rng.uniform(0, 2 * np.pi, size=3))
            level = rng.uniform(0.01, 0.05)
            reflect = reflect * (1 - alpha) + level * alpha
            alpha_total = np.maximum(alpha_total, alpha)
            owner[alpha >= 0.5] = kind
    if "focus" in category:
        for _ in range(rng.integers(1, 5)):
            cx = rng.uniform(0.08, 0.92) * w
            col = int(np.clip(round(cx), 0, w - 1))
            cy = rng.uniform(b[1, col], b[5, col])
            r = max(1.0, rng.uniform(1.5, 2.5) * scale)
            alpha = _blob_alpha(h, w, cy, cx, r, r, edge=0.5,
                                wobble=np.zeros(1), phases=np.zeros(1))
            level = rng.uniform(0.85, 1.0)
            reflect = reflect * (1 - alpha) + level * alpha
            alpha_total = np.maximum(alpha_total, alpha)
            owner[alpha >= 0.5] = _FOCUS
    return reflect, alpha_total, category, owner


def _type_map(owner: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """uint8 [H, W]: on `mask`, the owner's type, and off every core the
    type of the nearest core pixel; 0 off `mask`."""
    if not owner.any():
        return np.zeros(mask.shape, np.uint8)
    _, (iy, ix) = ndimage.distance_transform_edt(owner == 0,
                                                 return_indices=True)
    return np.where(mask, owner[iy, ix], 0).astype(np.uint8)


def _wedge(height: int, width: int, top: float, bottom: float,
           left: bool) -> np.ndarray:
    """bool [H, W]: columns within a width going linearly from `top` (row
    0) to `bottom` (last row) of the left or right border."""
    rows = np.arange(height, dtype=np.float64)[:, None]
    extent = top + (bottom - top) * rows / max(1, height - 1)
    cols = np.arange(width, dtype=np.float64)[None, :]
    if not left:
        cols = width - 1 - cols
    return cols < np.round(extent)


def _draw_artifacts(rng: np.random.Generator, height: int,
                    width: int) -> _Artifacts:
    h, w = height, width
    padding = np.zeros((h, w), bool)
    value = np.full((h, w), _SATURATED)
    for left in (True, False):
        if rng.random() < 0.6:
            # A rotation/flattening wedge: narrow at one end, wide at the other.
            narrow, wide = rng.uniform(0.0, 0.04) * w, rng.uniform(0.06, 0.18) * w
            top, bottom = (narrow, wide) if rng.random() < 0.5 else (wide, narrow)
            padding |= _wedge(h, w, top, bottom, left)
    if rng.random() < 0.35:
        # Mixed widths padded to one width: a full-height strip on one side.
        extent = rng.uniform(0.04, 0.15) * w
        strip = _wedge(h, w, extent, extent, left=rng.random() < 0.5)
        fill = _SATURATED if rng.random() < 0.5 else 0.0
        value = np.where(strip & ~padding, fill, value)
        padding |= strip
    for side in range(4):
        if rng.random() < 0.4:  # 1-pixel white border lines.
            line = np.zeros((h, w), bool)
            line[(0, -1, slice(None), slice(None))[side],
                 (slice(None), slice(None), 0, -1)[side]] = True
            value = np.where(line, _SATURATED, value)
            padding |= line
    vessels = []
    for _ in range(rng.integers(1, 4)):
        vessels.append((rng.uniform(0.05, 0.95),
                        rng.uniform(0.006, 0.016) * h / w,
                        rng.uniform(0.2, 0.8), rng.uniform(0.35, 0.85)))
    return _Artifacts(gain=rng.uniform(0.65, 1.45),
                      offset=rng.uniform(-0.03, 0.12), vessels=vessels,
                      padding=padding, padding_value=value)


def _shade_vessels(reflect: np.ndarray, scene: _Scene,
                   art: _Artifacts) -> np.ndarray:
    """Superficial vessels: a bright cross-section in the inner retina (at
    `depth` between the RNFL top and the GCL/IPL bottom) and a shadow below
    it down through the choroid."""
    h, w = reflect.shape
    scale = h / 128.0
    u = np.arange(w) / w
    y = np.arange(h, dtype=np.float64)[:, None]
    soft = max(0.35, 0.6 * scale)
    out = reflect.copy()
    b = scene.boundaries
    for x0, half, depth, shade in art.vessels:
        col = int(np.clip(round(x0 * w), 0, w - 1))
        cy = b[0, col] + depth * (b[2, col] - b[0, col])
        column = np.exp(-0.5 * ((u - x0) / half) ** 2)[None, :]
        out *= 1 - shade * column * _sigmoid((y - cy) / soft)
        r = max(1.0, half * w * 1.2)
        lumen = _blob_alpha(h, w, cy, x0 * w, r, r, edge=0.6,
                            wobble=np.zeros(1), phases=np.zeros(1))
        out = out * (1 - lumen) + 0.75 * lumen
    return np.clip(out, 0.0, 1.0)


def _render(seed: int, index: int, height: int, width: int, anomalous: bool,
            artifacts: bool = False
            ) -> Tuple[np.ndarray, np.ndarray, str, _Scene, np.ndarray,
                       np.ndarray]:
    """Renders scan `index`.

    Returns:
      ([H, W] display in [0, 1], uint8 lesion mask, category, the scene,
      bool [H, W] artefact pixels, uint8 [H, W] lesion type codes).
    """
    scene = _draw_scene(np.random.default_rng([seed, index, 0]), height, width)
    art = None
    shade = lambda r: r  # noqa: E731
    if artifacts:
        art = _draw_artifacts(np.random.default_rng([seed, index, 2]), height,
                              width)
        scene = dataclasses.replace(scene, gain=scene.gain * art.gain,
                                    offset=scene.offset + art.offset)
        shade = lambda r: _shade_vessels(r, scene, art)  # noqa: E731
    normal = _display(shade(scene.reflectivity), scene)
    padding = (np.zeros((height, width), bool) if art is None
               else art.padding)
    finish = lambda x: (x if art is None else  # noqa: E731
                        np.where(padding, art.padding_value, x))
    if not anomalous:
        none = np.zeros((height, width), np.uint8)
        return finish(normal), none, "good", scene, padding, none
    reflect, alpha, category, owner = _paint_anomalies(
        np.random.default_rng([seed, index, 1]), scene)
    altered = _display(shade(reflect), scene)
    mask = ndimage.binary_fill_holes(
        (alpha >= 0.5) | (np.abs(altered - normal) > _MASK_EPS)) & ~padding
    return (finish(np.where(mask, altered, normal)), mask.astype(np.uint8),
            category, scene, padding, _type_map(owner, mask))


def generate_oct(num: int, height: int, width: int, seed: int,
                 anomaly_fraction: float, artifacts: bool = False) -> ImageSet:
    """Generates `num` synthetic OCT B-scans (see `generate_oct_with_truth`).
    """
    return generate_oct_with_truth(num, height, width, seed, anomaly_fraction,
                                   artifacts)[0]


def generate_oct_with_truth(num: int, height: int, width: int, seed: int,
                            anomaly_fraction: float, artifacts: bool = False
                            ) -> Tuple[ImageSet, OctTruth]:
    """Generates `num` synthetic OCT B-scans and their band/artefact truth.

    Args:
      num: Number of scans, >= 1.
      height: Scan height in pixels, >= 16 (sizes of layers and anomalies
        scale with it; 128 is the reference).
      width: Scan width in pixels, >= 16.
      seed: Seed; scan i depends only on (seed, i). Negative seeds are
        folded into [0, 2**63).
      anomaly_fraction: Fraction of anomalous scans in [0, 1]; exactly
        floor(num * fraction + 1/2) scans are anomalous.
      artifacts: Add acquisition artefacts (module docstring, step 4).

    Returns:
      (images, truth): an ImageSet with float32 [num, height, width, 1]
      images in [-1, 1], ids "synthetic_oct/seed<seed>/<index>", labels,
      masks and categories ("good", "fluid", "focus" or "fluid+focus"); and
      the OctTruth of the same scans (band, artefacts, lesion types).

    Raises:
      DataError: an argument is out of range.
    """
    if num < 1:
        raise DataError(
            f"generate_oct needs num >= 1 scans, got {num}. Raise "
            f"--oct_num_train / --oct_num_test.")
    if height < _MIN_SIZE or width < _MIN_SIZE:
        raise DataError(
            f"Synthetic OCT scans must be at least {_MIN_SIZE}x{_MIN_SIZE}, "
            f"got {height}x{width}. Raise --oct_height / --oct_width.")
    if not 0.0 <= anomaly_fraction <= 1.0:
        raise DataError(
            f"anomaly_fraction must lie in [0, 1], got {anomaly_fraction}. "
            f"Pass e.g. --oct_anomaly_fraction=0.5.")
    seed = int(seed) % (2 ** 63)
    images: List[np.ndarray] = []
    masks: List[np.ndarray] = []
    categories: List[str] = []
    tops, bottoms, padding, types = [], [], [], []
    for i in range(num):
        image, mask, category, scene, pad, kind = _render(
            seed, i, height, width, is_anomalous_index(i, anomaly_fraction),
            artifacts)
        images.append(image)
        masks.append(mask)
        categories.append(category)
        tops.append(scene.boundaries[0])
        bottoms.append(scene.boundaries[-1])
        padding.append(pad)
        types.append(kind)
    stacked = np.stack(images).astype(np.float32)[..., None] * 2.0 - 1.0
    image_set = ImageSet(
        images=stacked,
        ids=tuple(f"synthetic_oct/seed{seed}/{i:05d}" for i in range(num)),
        labels=np.array([c != "good" for c in categories], np.int32),
        masks=np.stack(masks),
        categories=tuple(categories))
    return image_set, OctTruth(band_top=np.stack(tops),
                               band_bottom=np.stack(bottoms),
                               artifacts=np.stack(padding),
                               lesion_types=np.stack(types))
