"""Procedural surface textures with typed defects: scratches, holes, stains.

A second set with known anomaly types besides synthetic_oct, for marker
discovery (anogan_tf/markers): every defect pixel carries its type.

A texture is rendered in [0, 1] and scaled to [-1, 1]:

1. Surface. A woven fabric-like grain: two crossing sinusoidal weaves of
   period 6-9 px at a per-image angle (amplitude 0.04 each), fine grain
   (Gaussian-filtered noise, sigma 1.2 px, standard deviation 0.06), a
   slow illumination gradient and a base level in [0.45, 0.6].
2. Defects, only in anomalous images: 1 to 3 of them, each of a type drawn
   uniformly from `TEXTURE_DEFECT_TYPES`, placed so that their discs do not
   overlap (each is tried at up to 20 positions and skipped when none is
   free):
   "scratch" -- a thin bright line (2-3 px wide, 24-56 px long at a size of
   128, slightly curved), +0.35 to +0.45;
   "hole" -- a dark disc with a hard edge (radius 4-7 px), down to 0.02-0.1;
   "stain" -- a large soft-edged darker blot (radius 11-18 px, irregular),
   -0.16 to -0.24 and slightly smoothed grain inside.
   Sizes scale with the image side (128 is the reference).
3. Clipping to [0, 1].

The mask of an anomalous image is the set of pixels whose value changed by
more than 0.02 or that lie in a defect's core (alpha >= 0.5); each mask
pixel's type is the defect that changed it most. Outside the mask an
anomalous image equals its normal rendering exactly.

Image i of seed s draws its surface from the random stream (s, i, 0) and
its defects from (s, i, 1), so it does not depend on how many images are
generated; which images are anomalous follows the same low-discrepancy rule
as synthetic_oct (`is_anomalous_index`).

`load_textures_split` gives the "train" (normal), "calibration" (held-out
normal) and "test" (half anomalous) splits of the registered dataset
"textures" from their own seeds. Categories are "good" or the "+"-joined
sorted types present ("hole", "scratch+stain", ...).
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Tuple

import numpy as np
from scipy import ndimage

from anogan_tf.data.errors import DataError
from anogan_tf.data.records import ImageSet
from anogan_tf.data.synthetic_oct import is_anomalous_index

__all__ = ["TEXTURE_DEFECT_TYPES", "TEXTURE_SPLITS", "TextureTruth",
           "generate_textures", "generate_textures_with_truth",
           "load_textures_split", "split_seed"]

# Type code k + 1 is TEXTURE_DEFECT_TYPES[k]; 0 is no defect.
TEXTURE_DEFECT_TYPES = ("scratch", "hole", "stain")
# Images per split of the registered dataset and the test split's
# anomalous share; each split has its own seed stream.
TEXTURE_SPLITS = {"train": (400, 0.0, 0), "calibration": (80, 0.0, 1),
                  "test": (200, 0.5, 2)}
_SIZE = 128
_MIN_SIZE = 32
_MASK_EPS = 0.02
_TRIES = 20


@dataclasses.dataclass(frozen=True)
class TextureTruth:
    """Ground truth of generated textures beyond the masks.

    Attributes:
      defect_types: uint8 [N, H, W], per mask pixel its defect type code
        (k + 1 for `TEXTURE_DEFECT_TYPES[k]`), 0 elsewhere; nonzero exactly
        where the ImageSet's mask is 1.
    """

    defect_types: np.ndarray


def _surface(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    period = rng.uniform(6.0, 9.0)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    weave = 0.04 * (np.sin(2 * np.pi * u / period + rng.uniform(0, 6.3)) +
                    np.sin(2 * np.pi * v / period + rng.uniform(0, 6.3)))
    grain = ndimage.gaussian_filter(rng.standard_normal((size, size)), 1.2)
    grain *= 0.06 / (grain.std() + 1e-8)
    gy, gx = rng.uniform(-0.08, 0.08, size=2)
    light = (gy * (yy / size - 0.5) + gx * (xx / size - 0.5))
    return rng.uniform(0.45, 0.6) + weave + grain + light


def _disc(size: int, cy: float, cx: float, r: float, edge: float,
          wobble: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Soft alpha of an irregular disc (1 in the core, 0 outside)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    dy, dx = yy - cy, xx - cx
    theta = np.arctan2(dy, dx)
    radius = r * (1.0 + sum(a * np.sin((k + 2) * theta + p)
                            for k, (a, p) in enumerate(zip(wobble, phases))))
    return np.clip((radius - np.hypot(dy, dx)) / (edge * r) + 0.5, 0.0, 1.0)


def _scratch(rng: np.random.Generator, size: int, cy: float, cx: float,
             length: float, scale: float) -> np.ndarray:
    """Alpha of a slightly curved line of width 2-3 px through (cy, cx)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    angle = rng.uniform(0, np.pi)
    bend = rng.uniform(-0.004, 0.004) / scale
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    v = v - bend * u ** 2
    half = 0.5 * rng.uniform(2.0, 3.0) * scale
    across = np.clip((half - np.abs(v)) / 0.8 + 0.5, 0.0, 1.0)
    along = np.clip((0.5 * length - np.abs(u)) / 2.0 + 0.5, 0.0, 1.0)
    return across * along


def _paint_defects(rng: np.random.Generator, normal: np.ndarray
                   ) -> Tuple[np.ndarray, np.ndarray]:
    """Returns (defective image, uint8 [H, W] per-pixel type by largest
    change) for one anomalous image."""
    size = normal.shape[0]
    scale = size / _SIZE
    image = normal.copy()
    change = np.zeros((len(TEXTURE_DEFECT_TYPES),) + normal.shape)
    placed: List[Tuple[float, float, float]] = []
    for _ in range(rng.integers(1, 4)):
        kind = int(rng.integers(0, len(TEXTURE_DEFECT_TYPES)))
        if kind == 0:
            extent = 0.5 * rng.uniform(24.0, 56.0) * scale
        elif kind == 1:
            extent = rng.uniform(4.0, 7.0) * scale
        else:
            extent = rng.uniform(11.0, 18.0) * scale
        margin = extent + 3 * scale
        spot = None
        for _ in range(_TRIES):
            cy, cx = rng.uniform(margin, size - margin, size=2)
            if all(np.hypot(cy - y, cx - x) > extent + e + 4 * scale
                   for y, x, e in placed):
                spot = (cy, cx)
                break
        if spot is None:
            continue
        cy, cx = spot
        placed.append((cy, cx, extent))
        before = image.copy()
        if kind == 0:
            alpha = _scratch(rng, size, cy, cx, 2 * extent, scale)
            image = image + rng.uniform(0.35, 0.45) * alpha
        elif kind == 1:
            alpha = _disc(size, cy, cx, extent, edge=0.15,
                          wobble=rng.uniform(0, 0.05, size=2),
                          phases=rng.uniform(0, 6.3, size=2))
            image = image * (1 - alpha) + rng.uniform(0.02, 0.1) * alpha
        else:
            alpha = _disc(size, cy, cx, extent, edge=0.6,
                          wobble=rng.uniform(0.05, 0.15, size=3),
                          phases=rng.uniform(0, 6.3, size=3))
            blurred = ndimage.gaussian_filter(image, 1.0)
            image = ((image * (1 - alpha) + blurred * alpha) -
                     rng.uniform(0.16, 0.24) * alpha)
        change[kind] = np.maximum(change[kind], np.abs(image - before))
    return image, change


def _render(seed: int, index: int, size: int, anomalous: bool
            ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image in [0, 1], uint8 mask, uint8 type codes) of image `index`."""
    normal = np.clip(_surface(np.random.default_rng([seed, index, 0]), size),
                     0.0, 1.0)
    none = np.zeros((size, size), np.uint8)
    if not anomalous:
        return normal, none, none
    altered, change = _paint_defects(np.random.default_rng([seed, index, 1]),
                                     normal)
    altered = np.clip(altered, 0.0, 1.0)
    mask = ndimage.binary_fill_holes(np.abs(altered - normal) > _MASK_EPS)
    if not mask.any():  # every defect failed to find room (never seen)
        return normal, none, none
    types = np.where(mask, change.argmax(axis=0) + 1, 0).astype(np.uint8)
    # Filled holes inside a defect take its type (their change may be ~0).
    unset = mask & (change.max(axis=0) <= 0)
    if unset.any():
        _, (iy, ix) = ndimage.distance_transform_edt(
            unset | ~mask, return_indices=True)
        types = np.where(unset, types[iy, ix], types)
    return (np.where(mask, altered, normal), mask.astype(np.uint8),
            types.astype(np.uint8))


def generate_textures_with_truth(num: int, size: int = _SIZE, seed: int = 0,
                                 anomaly_fraction: float = 0.5,
                                 split: Optional[str] = None
                                 ) -> Tuple[ImageSet, TextureTruth]:
    """Generates `num` textures and the defect type of every mask pixel.

    Args:
      num: Number of images, >= 1.
      size: Side in pixels, >= 32 (defect sizes scale with it).
      seed: Seed; image i depends only on (seed, i).
      anomaly_fraction: Fraction of images with defects, in [0, 1].
      split: Used in the ids ("textures/<split>/<index>"); None:
        "textures/seed<seed>/<index>".

    Returns:
      (ImageSet of float32 [num, size, size, 1] in [-1, 1] with labels,
      masks and categories; TextureTruth).

    Raises:
      DataError: an argument is out of range.
    """
    if num < 1:
        raise DataError(f"generate_textures needs num >= 1 images, got {num}.")
    if size < _MIN_SIZE:
        raise DataError(f"Textures must be at least {_MIN_SIZE} pixels wide, "
                        f"got {size}. Pass a larger size (or --resize).")
    if not 0.0 <= anomaly_fraction <= 1.0:
        raise DataError(f"anomaly_fraction must lie in [0, 1], got "
                        f"{anomaly_fraction}.")
    seed = int(seed) % (2 ** 63)
    images, masks, types, categories = [], [], [], []
    for i in range(num):
        image, mask, kind = _render(seed, i, size,
                                    is_anomalous_index(i, anomaly_fraction))
        images.append(image)
        masks.append(mask)
        types.append(kind)
        present = sorted(TEXTURE_DEFECT_TYPES[k - 1]
                         for k in np.unique(kind) if k)
        categories.append("+".join(present) if present else "good")
    prefix = f"textures/{split}" if split else f"textures/seed{seed}"
    image_set = ImageSet(
        images=(np.stack(images).astype(np.float32)[..., None] * 2.0 - 1.0),
        ids=tuple(f"{prefix}/{i:05d}" for i in range(num)),
        labels=np.array([c != "good" for c in categories], np.int32),
        masks=np.stack(masks), categories=tuple(categories))
    return image_set, TextureTruth(defect_types=np.stack(types))


def generate_textures(num: int, size: int = _SIZE, seed: int = 0,
                      anomaly_fraction: float = 0.5) -> ImageSet:
    """Generates `num` textures (see `generate_textures_with_truth`)."""
    return generate_textures_with_truth(num, size, seed, anomaly_fraction)[0]


def split_seed(seed: int, split: str) -> int:
    """The generator seed of a split of the registered dataset."""
    if split not in TEXTURE_SPLITS:
        raise DataError(f"Unknown split {split!r}; expected one of "
                        f"{tuple(TEXTURE_SPLITS)}.")
    stream = TEXTURE_SPLITS[split][2]
    return int(np.random.SeedSequence([int(seed) % (2 ** 63), 7919, stream])
               .generate_state(1, np.uint64)[0]) % (2 ** 63)


def load_textures_split(split: str, seed: int = 0, with_truth: bool = False):
    """One split of the registered "textures" dataset at 128 x 128.

    Args:
      split: "train" (400 normal), "calibration" (80 held-out normal) or
        "test" (200, half with defects).
      seed: config.seed.
      with_truth: Also return the TextureTruth.

    Returns:
      The ImageSet (masks only in "test"), or (ImageSet, TextureTruth).
    """
    num, fraction, _ = TEXTURE_SPLITS.get(split, (0, 0.0, 0))
    images, truth = generate_textures_with_truth(
        num, _SIZE, split_seed(seed, split), fraction, split=split)
    if split != "test":
        images = dataclasses.replace(images, masks=None)
    return (images, truth) if with_truth else images
