"""Cutting full images into model-sized patches and stitching maps back.

`extract_patches` tiles every image with a stride; the last row and column
of patches are aligned to the border (positions 0, stride, 2 * stride, ...,
H - patch_size, deduplicated), so every pixel is covered. Patches are
resized to the model size when `patch_size` differs from it. With
`roi="retina"` only patches lying mostly inside the bright retina band
(`retina_roi_mask`) are kept.

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

__all__ = [
    "ROI_MODES",
    "patch_positions",
    "extract_patches",
    "retina_roi_mask",
    "stitch_maps",
    "stitch_coverage",
]

ROI_MODES = ("none", "retina")


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


def _otsu_threshold(values: np.ndarray, bins: int = 128) -> float:
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


def retina_roi_mask(image: np.ndarray) -> np.ndarray:
    """Finds the bright retina band of an OCT B-scan by intensity.

    The image (channel mean) is smoothed, thresholded at Otsu's level, and
    in every column the band between the first and the last pixel above the
    threshold is taken (which fills the dark nuclear layers inside it). The
    band's top and bottom curves are median-filtered across columns, and
    columns without any bright pixel borrow the curves of their neighbours.

    Args:
      image: [H, W] or [H, W, C] float image (any range, e.g. [-1, 1]).

    Returns:
      bool [H, W], True inside the retina band; all False for a flat image.

    Raises:
      DataError: `image` does not have rank 2 or 3.
    """
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3:
        arr = arr.mean(axis=-1)
    if arr.ndim != 2:
        raise DataError(
            f"retina_roi_mask expects an [H, W] or [H, W, C] image, got shape "
            f"{np.shape(image)}.")
    h, w = arr.shape
    mask = np.zeros((h, w), bool)
    if arr.size == 0 or np.ptp(arr) <= 1e-6:
        return mask
    smooth = ndimage.gaussian_filter(arr, (max(1.0, h / 64), max(1.0, w / 32)),
                                     mode="nearest")
    bright = smooth > _otsu_threshold(smooth)
    has = bright.any(axis=0)
    if not has.any():
        return mask
    top = np.where(has, bright.argmax(axis=0), 0).astype(np.float64)
    bottom = np.where(has, h - 1 - bright[::-1].argmax(axis=0), 0).astype(
        np.float64)
    cols = np.arange(w)
    top = np.interp(cols, cols[has], top[has])
    bottom = np.interp(cols, cols[has], bottom[has])
    size = max(3, (w // 16) | 1)
    top = ndimage.median_filter(top, size=size, mode="nearest")
    bottom = ndimage.median_filter(bottom, size=size, mode="nearest")
    rows = np.arange(h)[:, None]
    return (rows >= np.round(top)[None, :]) & (rows <= np.round(bottom)[None, :])


def _check_fits(images: ImageSet, patch_size: int) -> None:
    h, w = images.image_shape
    if h < patch_size or w < patch_size:
        first = images.ids[0] if len(images) else "(no images)"
        raise DataError(
            f"Image {first!r} is {h}x{w} pixels, smaller than the patch size "
            f"{patch_size}. Pass --patch_size <= {min(h, w)}, or enlarge the "
            f"images with --resize=H,W (H, W >= {patch_size}).")


def extract_patches(images: ImageSet, patch_size: int, stride: int,
                    model_size: int, roi: str = "none",
                    min_coverage: float = 0.5) -> PatchSet:
    """Tiles every image into patches of the model input size.

    Args:
      images: The full images.
      patch_size: Patch side in full-image pixels.
      stride: Step between patches in pixels (the last row/column is aligned
        to the border, so the whole image is covered).
      model_size: Side of the model input; patches are resized bilinearly to
        it when it differs from `patch_size`.
      roi: "none" keeps every patch; "retina" keeps patches whose share of
        `retina_roi_mask` pixels is >= `min_coverage` (an image left with no
        patch keeps its best-covered one, so every image is scored).
      min_coverage: Minimum ROI share of a kept patch, in [0, 1].

    Returns:
      A PatchSet ordered image by image, row-major within an image;
      `patched` is False when every image is exactly one patch.

    Raises:
      DataError: the images are smaller than the patch, or an argument is
        out of range.
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
    _check_fits(images, patch_size)
    h, w = images.image_shape
    ys_axis = patch_positions(h, patch_size, stride)
    xs_axis = patch_positions(w, patch_size, stride)
    grid = [(y, x) for y in ys_axis for x in xs_axis]
    patched = len(grid) > 1

    index: List[int] = []
    coords: List[Tuple[int, int]] = []
    fallbacks = 0
    for i in range(len(images)):
        keep = grid
        if roi == "retina":
            inside = retina_roi_mask(images.images[i]).astype(np.float64)
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
        patches[k] = images.images[i, y:y + patch_size, x:x + patch_size]
    if patch_size != model_size:
        patches = resize_images(patches, (model_size, model_size))
    if roi == "retina":
        logging.info("ROI kept %d of %d patches.", len(coords),
                     len(grid) * len(images))
    return PatchSet(patches=patches, image_index=index_arr, ys=ys, xs=xs,
                    patch_size=patch_size, image_shape=(h, w), patched=patched)


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
