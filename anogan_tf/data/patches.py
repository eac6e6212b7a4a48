"""Cutting full images into model-sized patches and stitching maps back.

`extract_patches` tiles every image with a stride; the last row and column
of patches are aligned to the border (positions 0, stride, 2 * stride, ...,
H - patch_size, deduplicated), so every pixel is covered. Patches are
resized to the model size when `patch_size` differs from it. With
`roi="retina"` (OCT B-scans, see `data.roi`):
  - padding and border artefacts are found first (`artifact_mask`); their
    pixels are filled with a smooth continuation of the nearby tissue
    before patches are cut, so a model never trains on or reconstructs a
    saturated wedge or a white border line;
  - only patches whose share of retina-band pixels (artefact pixels count
    as outside) is >= `min_coverage` are kept;
  - the PatchSet carries both masks (`valid_masks`, `roi_masks`) for
    scoring, which ignores the artefact pixels.

`stitch_maps` is the inverse for per-patch maps (residuals, anomaly maps):
it resizes them back to `patch_size` and averages overlapping patches into
full-image maps; `stitch_coverage` counts how many patches cover each pixel.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from scipy import ndimage

from anogan_tf.data.decode import resize_images
from anogan_tf.data.errors import DataError
from anogan_tf.data.records import ImageSet, PatchSet
from anogan_tf.data.roi import retina_band, retina_roi_mask

__all__ = [
    "ROI_MODES",
    "MAX_PATCHES_PER_IMAGE",
    "patch_positions",
    "extract_patches",
    "retina_roi_mask",
    "fill_artifacts",
    "stitch_maps",
    "stitch_coverage",
]

ROI_MODES = ("none", "retina")
# Default cap on the patches one image is cut into (--max_patches_per_image):
# a 1024x1024 image at patch 64, stride 16 gives 3,721; an 8000x8000 one
# would give 249,001 (about 4 GB of float32 patches and hours of mapping).
MAX_PATCHES_PER_IMAGE = 4096


def patch_positions(length: int, patch_size: int, stride: int) -> List[int]:
    """Top-left offsets of patches along one axis, covering it entirely.

    Args:
      length: Image side in pixels.
      patch_size: Patch side, <= length.
      stride: Step between patches, >= 1.

    Returns:
      Sorted offsets 0, stride, 2 * stride, ..., with the last one equal to
      length - patch_size.
    """
    last = length - patch_size
    return sorted(set(range(0, last + 1, stride)) | {last})


def fill_artifacts(image: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Replaces the pixels outside `valid` by a smooth continuation.

    The fill is the normalised convolution of the valid pixels with a
    Gaussian of sigma max(2, min(H, W) / 16) (a local mean that fades the
    tissue out into the padding); pixels too far from any valid one for it
    take the value of the nearest valid pixel.

    Args:
      image: [H, W, C] image.
      valid: bool [H, W], the pixels to keep.

    Returns:
      float32 [H, W, C]: `image` where valid, the fill elsewhere.
    """
    valid = np.asarray(valid, bool)
    if valid.all() or not valid.any():
        return image
    h, w = valid.shape
    sigma = max(2.0, min(h, w) / 16)
    weight = ndimage.gaussian_filter(valid.astype(np.float64), sigma,
                                     mode="nearest")
    _, (iy, ix) = ndimage.distance_transform_edt(~valid, return_indices=True)
    out = np.array(image, np.float32, copy=True)
    for c in range(out.shape[-1]):
        channel = image[..., c].astype(np.float64)
        smooth = ndimage.gaussian_filter(np.where(valid, channel, 0.0), sigma,
                                         mode="nearest")
        smooth = np.where(weight > 1e-3, smooth / np.maximum(weight, 1e-12),
                          channel[iy, ix])
        out[..., c] = np.where(valid, channel, smooth)
    return out


def _check_fits(images: ImageSet, patch_size: int) -> None:
    h, w = images.image_shape
    if h < patch_size or w < patch_size:
        first = images.ids[0] if len(images) else "(no images)"
        raise DataError(
            f"Image {first!r} is {h}x{w} pixels, smaller than the patch size "
            f"{patch_size}. Pass --patch_size <= {min(h, w)}, or enlarge the "
            f"images with --resize=H,W (H, W >= {patch_size}).")


def _check_patch_count(images: ImageSet, count: int, patch_size: int,
                       stride: int, max_patches_per_image: int) -> None:
    if max_patches_per_image and count > max_patches_per_image:
        h, w = images.image_shape
        first = images.ids[0] if len(images) else "(no images)"
        raise DataError(
            f"Image {first!r} is {h}x{w} pixels and would be cut into {count} "
            f"patches of {patch_size}x{patch_size} at stride {stride}, more "
            f"than --max_patches_per_image={max_patches_per_image} (each "
            f"patch is mapped to z separately, so this would be slow and "
            f"large). Shrink the images with --resize=H,W, take a larger "
            f"--patch_stride or --patch_size, or raise the limit with "
            f"--max_patches_per_image={count} (0: no limit).")


def extract_patches(images: ImageSet, patch_size: int, stride: int,
                    model_size: int, roi: str = "none",
                    min_coverage: float = 0.5,
                    max_patches_per_image: int = MAX_PATCHES_PER_IMAGE
                    ) -> PatchSet:
    """Tiles every image into patches of the model input size.

    Args:
      images: The full images.
      patch_size: Patch side in full-image pixels.
      stride: Step between patches in pixels (the last row/column is aligned
        to the border, so the whole image is covered).
      model_size: Side of the model input; patches are resized bilinearly to
        it when it differs from `patch_size`.
      roi: "none" keeps every patch; "retina" fills the artefact pixels
        and keeps patches whose share of `retina_roi_mask` pixels (the band
        minus artefacts) is >= `min_coverage` (an image left with no patch
        keeps its best-covered one, so every image is scored).
      min_coverage: Minimum ROI share of a kept patch, in [0, 1].
      max_patches_per_image: Refuse images that tile into more patches
        than this (before the ROI selection); 0: no limit.

    Returns:
      A PatchSet ordered image by image, row-major within an image;
      `patched` is False when every image is exactly one patch. With
      roi="retina" it carries `valid_masks` and `roi_masks`.

    Raises:
      DataError: the images are smaller than the patch, tile into more than
        `max_patches_per_image` patches, or an argument is out of range.
    """
    if patch_size < 1 or stride < 1 or model_size < 1:
        raise DataError(
            f"patch_size, stride and model_size must be >= 1, got "
            f"{patch_size}, {stride}, {model_size}. Check --patch_size, "
            f"--patch_stride and --image_size.")
    if roi not in ROI_MODES:
        raise DataError(
            f"roi must be one of {ROI_MODES}, got {roi!r}. Pass --roi=none or "
            f"--roi=retina.")
    if not 0.0 <= min_coverage <= 1.0:
        raise DataError(
            f"min_coverage must lie in [0, 1], got {min_coverage}. Pass e.g. "
            f"--roi_min_coverage=0.5.")
    if max_patches_per_image < 0:
        raise DataError(
            f"max_patches_per_image must be >= 0 (0: no limit), got "
            f"{max_patches_per_image}. Pass e.g. --max_patches_per_image="
            f"{MAX_PATCHES_PER_IMAGE}.")
    _check_fits(images, patch_size)
    h, w = images.image_shape
    ys_axis = patch_positions(h, patch_size, stride)
    xs_axis = patch_positions(w, patch_size, stride)
    _check_patch_count(images, len(ys_axis) * len(xs_axis), patch_size,
                       stride, max_patches_per_image)
    grid = [(y, x) for y in ys_axis for x in xs_axis]
    patched = len(grid) > 1

    index: List[int] = []
    coords: List[Tuple[int, int]] = []
    fallbacks = 0
    source = images.images
    valid_masks = roi_masks = None
    if roi == "retina":
        source = np.empty_like(images.images)
        valid_masks = np.ones((len(images), h, w), bool)
        roi_masks = np.zeros((len(images), h, w), bool)
    for i in range(len(images)):
        keep = grid
        if roi == "retina":
            band = retina_band(images.images[i])
            valid_masks[i], roi_masks[i] = band.valid, band.mask
            source[i] = fill_artifacts(images.images[i], band.valid)
            inside = band.mask.astype(np.float64)
            coverage = np.array([
                inside[y:y + patch_size, x:x + patch_size].mean()
                for y, x in grid])
            keep = [g for g, c in zip(grid, coverage) if c >= min_coverage]
            if not keep:
                keep = [grid[int(np.argmax(coverage))]]
                fallbacks += 1
                logging.info(
                    "Image %r: no patch has ROI coverage >= %.2f; keeping its "
                    "best patch (coverage %.2f).", images.ids[i],
                    min_coverage, float(coverage.max()))
        index.extend([i] * len(keep))
        coords.extend(keep)
    if fallbacks:
        logging.warning(
            "%d of %d images had no patch inside the retina ROI and keep only "
            "their best-covered patch.", fallbacks, len(images))

    index_arr = np.asarray(index, np.int64)
    ys = np.asarray([c[0] for c in coords], np.int64)
    xs = np.asarray([c[1] for c in coords], np.int64)
    channels = images.images.shape[-1]
    patches = np.empty((len(coords), patch_size, patch_size, channels),
                       np.float32)
    for k, (i, y, x) in enumerate(zip(index_arr, ys, xs)):
        patches[k] = source[i, y:y + patch_size, x:x + patch_size]
    if patch_size != model_size:
        patches = resize_images(patches, (model_size, model_size))
    if roi == "retina" and len(images):
        counts = np.bincount(index_arr, minlength=len(images))
        masked = int(np.sum(~valid_masks))
        logging.info(
            "ROI kept %d of %d patches (%d to %d patches per image, median "
            "%g); %d artefact pixels in %d of %d images were masked and "
            "filled.", len(coords), len(grid) * len(images), counts.min(),
            counts.max(), float(np.median(counts)), masked,
            int(np.sum(~valid_masks.reshape(len(images), -1).all(axis=1))),
            len(images))
    return PatchSet(patches=patches, image_index=index_arr, ys=ys, xs=xs,
                    patch_size=patch_size, image_shape=(h, w), patched=patched,
                    valid_masks=valid_masks, roi_masks=roi_masks)


def stitch_coverage(patchset: PatchSet, num_images: int) -> np.ndarray:
    """Counts how many patches cover each pixel of each image.

    Args:
      patchset: The patches' coordinates.
      num_images: N, the number of images in the ImageSet.

    Returns:
      int32 [N, H, W].

    Raises:
      DataError: a patch refers to an image index >= num_images.
    """
    _check_num_images(patchset, num_images)
    h, w = patchset.image_shape
    p = patchset.patch_size
    count = np.zeros((num_images, h, w), np.int32)
    for i, y, x in zip(patchset.image_index, patchset.ys, patchset.xs):
        count[i, y:y + p, x:x + p] += 1
    return count


def stitch_maps(patch_maps: np.ndarray, patchset: PatchSet,
                num_images: int) -> np.ndarray:
    """Averages per-patch maps into full-image maps.

    Maps at the model size are resized (bilinear) back to `patch_size` when
    the two differ; overlapping patches are averaged (in float64, so maps cut
    from one image reassemble it exactly). Pixels no patch covers are 0.

    Args:
      patch_maps: [P, S, S] or [P, S, S, C] (averaged over C), one per patch.
      patchset: The PatchSet the maps belong to.
      num_images: N, the number of images in the ImageSet.

    Returns:
      float32 [N, H, W].

    Raises:
      DataError: the maps do not match the patchset.
    """
    maps = np.asarray(patch_maps)
    if maps.ndim == 4:
        maps = maps.mean(axis=-1)
    if (maps.ndim != 3 or maps.shape[0] != len(patchset) or
            maps.shape[1] != maps.shape[2]):
        raise DataError(
            f"stitch_maps expects [P, S, S] or [P, S, S, C] maps with "
            f"P={len(patchset)} (one per patch), got shape "
            f"{np.shape(patch_maps)}.")
    if not np.issubdtype(maps.dtype, np.number):
        raise DataError(
            f"stitch_maps expects numeric maps, got dtype {maps.dtype}.")
    _check_num_images(patchset, num_images)
    p = patchset.patch_size
    if maps.shape[1] != p:
        maps = tf.image.resize(maps[..., None].astype(np.float32), (p, p),
                               "bilinear").numpy()[..., 0]
    h, w = patchset.image_shape
    total = np.zeros((num_images, h, w), np.float64)
    for k, (i, y, x) in enumerate(
            zip(patchset.image_index, patchset.ys, patchset.xs)):
        total[i, y:y + p, x:x + p] += maps[k]
    count = stitch_coverage(patchset, num_images)
    out = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return out.astype(np.float32)


def _check_num_images(patchset: PatchSet, num_images: int) -> None:
    if len(patchset) and int(patchset.image_index.max()) >= num_images:
        raise DataError(
            f"The patchset refers to image index "
            f"{int(patchset.image_index.max())} but num_images={num_images}. "
            f"Pass len(images) of the ImageSet the patches were cut from.")
