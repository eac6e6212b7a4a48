"""Records that carry images and patches between pipeline stages.

`ImageSet` holds full images with their ids, optional labels, pixel masks and
categories. `PatchSet` holds the model-sized patches cut from an `ImageSet`
together with the coordinates needed to put per-patch maps back together.
Both validate their shapes in `__post_init__`, so a malformed record fails
where it is built rather than deep inside training or scoring.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from anogan_tf.data.errors import DataError

__all__ = ["ImageSet", "PatchSet"]

# Values this far outside [-1, 1] are still accepted (rounding after resizing
# or blending); anything further is a scaling mistake.
_RANGE_TOLERANCE = 1e-3


@dataclasses.dataclass(frozen=True)
class ImageSet:
    """Full images with their identities and optional ground truth.

    Integer or boolean labels/masks are converted to int32/uint8, float images
    to float32, and lists of ids/categories to tuples; anything that does not
    fit raises `DataError`.

    Attributes:
      images: float32 [N, H, W, C] scaled to [-1, 1], C in {1, 3}.
      ids: One stable id per image, e.g. the relative file path without its
        extension ("test/crack/000") or "synthetic_oct/test/00012".
      labels: int32 [N], 0 normal / 1 anomalous; None when unknown.
      masks: uint8 [N, H, W] pixel masks (1 = anomalous); None when
        unavailable. In a labelled set with masks, normal images have
        all-zero masks.
      categories: Per-image category ("good", a defect type such as "crack",
        "fluid", "focus", or a digit); None when unknown.
    """

    images: np.ndarray
    ids: Tuple[str, ...]
    labels: Optional[np.ndarray] = None
    masks: Optional[np.ndarray] = None
    categories: Optional[Tuple[str, ...]] = None

    def __post_init__(self):
        images = self.images
        if not isinstance(images, np.ndarray) or images.ndim != 4:
            raise DataError(
                f"ImageSet.images must be a numpy array [N, H, W, C], got "
                f"{_describe(images)}. Add a channel axis with `x[..., None]`.")
        if images.shape[-1] not in (1, 3):
            raise DataError(
                f"ImageSet.images must have 1 or 3 channels, got shape "
                f"{images.shape}. Convert to grayscale or RGB first.")
        if not np.issubdtype(images.dtype, np.floating):
            raise DataError(
                f"ImageSet.images must be floating point in [-1, 1], got dtype "
                f"{images.dtype}. Scale uint8 data with `x / 127.5 - 1`.")
        images = images.astype(np.float32, copy=False)
        n = images.shape[0]
        if images.size:
            lo, hi = float(images.min()), float(images.max())
            if not (np.isfinite(lo) and np.isfinite(hi)):
                raise DataError(
                    "ImageSet.images contains NaN or Inf; remove or repair "
                    "those images before building the set.")
            if lo < -1 - _RANGE_TOLERANCE or hi > 1 + _RANGE_TOLERANCE:
                raise DataError(
                    f"ImageSet.images must lie in [-1, 1], found "
                    f"[{lo:.4g}, {hi:.4g}]. Scale [0, 1] data with `2 * x - 1` "
                    f"and uint8 data with `x / 127.5 - 1`.")
        object.__setattr__(self, "images", images)

        ids = tuple(self.ids)
        if len(ids) != n or not all(isinstance(i, str) for i in ids):
            raise DataError(
                f"ImageSet.ids must hold one string per image ({n} images), "
                f"got {len(ids)} entries. Pass e.g. "
                f"`tuple(f'img_{{i:05d}}' for i in range(n))`.")
        object.__setattr__(self, "ids", ids)

        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,) or not _is_integer(labels):
                raise DataError(
                    f"ImageSet.labels must be integers of shape ({n},), got "
                    f"{_describe(labels)}.")
            _check_binary(labels, "ImageSet.labels")
            object.__setattr__(self, "labels", labels.astype(np.int32))

        if self.masks is not None:
            masks = np.asarray(self.masks)
            if masks.shape != images.shape[:3] or not _is_integer(masks):
                raise DataError(
                    f"ImageSet.masks must be integer/bool of shape "
                    f"{images.shape[:3]} (one [H, W] mask per image), got "
                    f"{_describe(masks)}.")
            _check_binary(masks, "ImageSet.masks")
            object.__setattr__(self, "masks", masks.astype(np.uint8))

        if self.categories is not None:
            categories = tuple(self.categories)
            if len(categories) != n or not all(
                    isinstance(c, str) for c in categories):
                raise DataError(
                    f"ImageSet.categories must hold one string per image "
                    f"({n} images), got {len(categories)} entries.")
            object.__setattr__(self, "categories", categories)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> Tuple[int, int]:
        """(H, W) of the images."""
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    def subset(self, indices: Union[Sequence[int], np.ndarray]) -> ImageSet:
        """Returns the images at `indices` (in that order) with their metadata.

        Args:
          indices: Integer positions into this set, or a boolean mask of
            length N.

        Returns:
          A new ImageSet; labels, masks and categories follow the images.

        Raises:
          DataError: an index is out of range or the boolean mask has the
            wrong length.
        """
        idx = np.asarray(indices)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise DataError(
                    f"A boolean subset mask needs shape ({len(self)},), got "
                    f"{idx.shape}.")
            idx = np.flatnonzero(idx)
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise DataError(
                f"subset indices must lie in [0, {len(self)}), got range "
                f"[{idx.min()}, {idx.max()}].")
        return ImageSet(
            images=self.images[idx],
            ids=tuple(self.ids[i] for i in idx),
            labels=None if self.labels is None else self.labels[idx],
            masks=None if self.masks is None else self.masks[idx],
            categories=(None if self.categories is None else
                        tuple(self.categories[i] for i in idx)))

    def take(self, n: int) -> ImageSet:
        """Returns the first `n` images (all of them when n <= 0 or n >= N)."""
        if n <= 0 or n >= len(self):
            return self
        return self.subset(np.arange(n))


@dataclasses.dataclass(frozen=True)
class PatchSet:
    """Model-sized patches with the coordinates they were cut from.

    Patches are ordered image by image, and row-major within an image.

    Attributes:
      patches: float32 [P, S, S, C] in [-1, 1]; S is the model image size
        (patches are resized from `patch_size` when the two differ).
      image_index: int32 [P], index of each patch's image in the ImageSet.
      ys: int32 [P], top-left row of each patch in the full image.
      xs: int32 [P], top-left column of each patch in the full image.
      patch_size: Side of a patch in full-image pixels.
      image_shape: (H, W) of the full images.
      patched: False when each image is exactly one patch (no tiling);
        scores.csv then leaves patch_y/patch_x empty.
      valid_masks: Optional bool [N, H, W], per full image the pixels that
        carry signal (False on padding and border artefacts, see
        `data.roi.artifact_mask`); None: every pixel. Artefact pixels were
        filled before the patches were cut, and scoring ignores them.
      roi_masks: Optional bool [N, H, W], per full image the region of
        interest the patches were selected by (the retina band minus the
        artefacts); None without an ROI.
    """

    patches: np.ndarray
    image_index: np.ndarray
    ys: np.ndarray
    xs: np.ndarray
    patch_size: int
    image_shape: Tuple[int, int]
    patched: bool
    valid_masks: Optional[np.ndarray] = None
    roi_masks: Optional[np.ndarray] = None

    def __post_init__(self):
        patches = self.patches
        if (not isinstance(patches, np.ndarray) or patches.ndim != 4 or
                patches.shape[1] != patches.shape[2]):
            raise DataError(
                f"PatchSet.patches must be a numpy array [P, S, S, C], got "
                f"{_describe(patches)}.")
        if not np.issubdtype(patches.dtype, np.floating):
            raise DataError(
                f"PatchSet.patches must be floating point in [-1, 1], got "
                f"dtype {patches.dtype}.")
        object.__setattr__(self, "patches",
                           patches.astype(np.float32, copy=False))
        p = patches.shape[0]
        for name in ("image_index", "ys", "xs"):
            values = np.asarray(getattr(self, name))
            if values.shape != (p,) or not np.issubdtype(values.dtype,
                                                         np.integer):
                raise DataError(
                    f"PatchSet.{name} must be integers of shape ({p},), one "
                    f"per patch, got {_describe(values)}.")
            object.__setattr__(self, name, values.astype(np.int32))
        if int(self.patch_size) < 1:
            raise DataError(
                f"PatchSet.patch_size must be >= 1, got {self.patch_size}.")
        object.__setattr__(self, "patch_size", int(self.patch_size))
        shape = tuple(int(s) for s in self.image_shape)
        if len(shape) != 2 or min(shape) < self.patch_size:
            raise DataError(
                f"PatchSet.image_shape must be (H, W) with H, W >= patch_size "
                f"({self.patch_size}), got {self.image_shape}.")
        object.__setattr__(self, "image_shape", shape)
        if p and (self.ys.min() < 0 or self.xs.min() < 0 or
                  self.ys.max() + self.patch_size > shape[0] or
                  self.xs.max() + self.patch_size > shape[1] or
                  self.image_index.min() < 0):
            raise DataError(
                f"PatchSet coordinates fall outside the {shape} images for "
                f"patch_size={self.patch_size} (ys in [{self.ys.min()}, "
                f"{self.ys.max()}], xs in [{self.xs.min()}, {self.xs.max()}], "
                f"image_index >= 0).")
        object.__setattr__(self, "patched", bool(self.patched))
        for name in ("valid_masks", "roi_masks"):
            masks = getattr(self, name)
            if masks is None:
                continue
            masks = np.asarray(masks)
            if (masks.ndim != 3 or masks.shape[1:] != shape or
                    masks.dtype != bool):
                raise DataError(
                    f"PatchSet.{name} must be bool [N, H, W] with (H, W) = "
                    f"{shape}, got {_describe(masks)}.")
            if p and masks.shape[0] <= int(self.image_index.max()):
                raise DataError(
                    f"PatchSet.{name} holds {masks.shape[0]} image(s) but a "
                    f"patch refers to image {int(self.image_index.max())}.")
            object.__setattr__(self, name, masks)

    def __len__(self) -> int:
        return int(self.patches.shape[0])


def _is_integer(values: np.ndarray) -> bool:
    return np.issubdtype(values.dtype, np.integer) or values.dtype == bool


def _check_binary(values: np.ndarray, name: str) -> None:
    outside = ~np.isin(values, (0, 1))
    if outside.any():
        bad = np.unique(values[outside])[:5]
        raise DataError(
            f"{name} must hold only 0 (normal) and 1 (anomalous), found "
            f"values {bad.tolist()}. Binarise first, e.g. "
            f"`(x > 0).astype(np.uint8)`.")


def _describe(value) -> str:
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    return f"a {type(value).__name__}"
