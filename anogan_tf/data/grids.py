"""Conversions of [-1, 1] images for display: uint8 arrays and PNG grids."""

from __future__ import annotations

import math
import os

import numpy as np
from PIL import Image

from anogan_tf.data.errors import DataError

__all__ = ["images_to_uint8", "save_image_grid"]


def images_to_uint8(images: np.ndarray) -> np.ndarray:
    """Maps images from [-1, 1] to uint8 [0, 255] (rounded, clipped).

    Args:
      images: float array of any shape with values in [-1, 1] (a tf.Tensor is
        converted with np.asarray).

    Returns:
      uint8 array of the same shape; -1 -> 0, 0 -> 128, 1 -> 255.

    Raises:
      DataError: the input is not numeric or contains NaN.
    """
    arr = np.asarray(images)
    if not (np.issubdtype(arr.dtype, np.floating) or
            np.issubdtype(arr.dtype, np.integer)):
        raise DataError(
            f"images_to_uint8 expects float images in [-1, 1], got dtype "
            f"{arr.dtype}.")
    arr = arr.astype(np.float32)
    if np.isnan(arr).any():
        raise DataError(
            f"images_to_uint8 got {int(np.isnan(arr).sum())} NaN values; the "
            f"images (e.g. generator samples) have diverged.")
    return np.clip(np.round((arr + 1.0) * 127.5), 0, 255).astype(np.uint8)


def save_image_grid(path: str, images: np.ndarray, ncols: int = 8,
                    padding: int = 2) -> str:
    """Writes images in [-1, 1] as one PNG grid, row by row.

    Args:
      path: Output PNG path; missing parent folders are created.
      images: [N, H, W], [N, H, W, 1] or [N, H, W, 3] float images in [-1, 1].
      ncols: Images per grid row.
      padding: Black pixels between images.

    Returns:
      `path`.

    Raises:
      DataError: `images` is empty or has an unsupported shape, or `ncols`
        is not positive.
    """
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[..., None]
    if arr.ndim != 4 or arr.shape[0] == 0 or arr.shape[-1] not in (1, 3):
        raise DataError(
            f"save_image_grid({path!r}) needs a non-empty [N, H, W] or "
            f"[N, H, W, 1|3] array, got shape {arr.shape}.")
    if ncols < 1:
        raise DataError(f"save_image_grid needs ncols >= 1, got {ncols}.")
    pixels = images_to_uint8(arr)
    n, h, w, c = pixels.shape
    cols = min(ncols, n)
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h + (rows - 1) * padding,
                     cols * w + (cols - 1) * padding, c), np.uint8)
    for i in range(n):
        r, k = divmod(i, cols)
        y, x = r * (h + padding), k * (w + padding)
        grid[y:y + h, x:x + w] = pixels[i]
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    Image.fromarray(grid[..., 0] if c == 1 else grid).save(path, format="PNG")
    return path
