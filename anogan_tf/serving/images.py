"""Reading image files into a served signature's input dtype.

A small Pillow reader, so the client needs neither the data module's
patching nor its datasets: the client sends whole, model-sized images.
8-bit files become uint8 as is, or float32 `p / 127.5 - 1` (the same
arithmetic the serving_uint8 signature uses, so both paths send the same
picture); 16-bit files become `p / 32767.5 - 1`, or `round(p / 257)` for
uint8. Colour becomes grayscale with Pillow's ITU-R 601 luminance and
grayscale becomes RGB by repetition; alpha is dropped.
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import numpy as np

__all__ = ["InputError", "IMAGE_EXTENSIONS", "list_inputs", "read_image"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class InputError(ValueError):
    """An input file or folder is missing, unreadable or the wrong size."""


def _relative_id(root: str, path: str) -> str:
    # The same id the data module gives a file of a folder dataset.
    return os.path.splitext(os.path.relpath(path, root))[0].replace(os.sep, "/")


def list_inputs(inputs: Sequence[str]) -> List[Tuple[str, str]]:
    """(id, path) for every image file in `inputs`, in a stable order.

    A folder contributes its image files recursively, with ids relative to
    it and without extension (`test/good/000`); a file's id is its stem.

    Raises:
      InputError: a path does not exist, a folder has no images, or two
        inputs get the same id.
    """
    entries = []
    for item in inputs:
        if os.path.isdir(item):
            found = []
            for root, dirs, files in os.walk(item):
                dirs.sort()
                found += [os.path.join(root, f) for f in sorted(files)
                          if f.lower().endswith(IMAGE_EXTENSIONS)]
            if not found:
                raise InputError(
                    f"Folder {item!r} contains no image files "
                    f"({', '.join(IMAGE_EXTENSIONS)}).")
            entries += [(_relative_id(item, f), f) for f in found]
        elif os.path.isfile(item):
            entries.append((os.path.splitext(os.path.basename(item))[0], item))
        else:
            raise InputError(f"Input {item!r} does not exist. Pass image files "
                             f"or folders with --inputs.")
    if not entries:
        raise InputError("No inputs given; pass image files or folders with "
                         "--inputs.")
    seen = {}
    for image_id, path in entries:
        if image_id in seen:
            raise InputError(
                f"{seen[image_id]!r} and {path!r} both get the id {image_id!r}. "
                f"Pass their common folder instead, so ids keep their "
                f"sub-folders.")
        seen[image_id] = path
    return entries


def read_image(path: str, channels: int, dtype) -> np.ndarray:
    """Reads one file as [H, W, channels] of `dtype` (uint8 or float32).

    Raises:
      InputError: the file cannot be decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                raw = np.asarray(img, np.float64)
                bits_max = 65535.0
                raw = raw[..., None]
                if channels == 3:
                    raw = np.repeat(raw, 3, axis=-1)
            else:
                img = img.convert("L" if channels == 1 else "RGB")
                raw = np.asarray(img, np.uint8)
                bits_max = 255.0
                if raw.ndim == 2:
                    raw = raw[..., None]
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise InputError(f"Cannot read image {path!r}: {e}") from e
    if np.dtype(dtype) == np.uint8:
        if bits_max == 255.0:
            return raw.astype(np.uint8)
        return np.round(raw / 257.0).astype(np.uint8)
    return (raw.astype(np.float32) / np.float32(bits_max / 2.0)
            - np.float32(1.0)).astype(np.float32)
