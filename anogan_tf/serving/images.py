"""Turning input files into what a served signature takes.

The file is decoded by the library's decoder, `anogan_tf.data.decode.
decode_image` (the one anogan-score and the datasets use), to float32 in
[0, 1] with the model's channels: 8-bit samples / 255, 16-bit samples /
65535, colour to grayscale by float ITU-R 601 luminance, grayscale to RGB
by repetition, alpha dropped. Only the step to the signature's dtype is the
client's (`to_signature_dtype`):

* float32 signatures (serving_default, score_fast, ...): `2 u - 1`, the
  array anogan-score scores, bit for bit.
* uint8 signatures (serving_uint8, score_images_uint8): `round(255 u)`.
  That is the stored value of an 8-bit file whose channels are the model's
  (and of grayscale into RGB); a 16-bit file becomes `round(p / 257)` and
  colour into a 1-channel model its luminance rounded to 8 bits, so for
  those files only a float32 signature sees anogan-score's pixels.
"""

from __future__ import annotations

import os
from typing import List, Sequence, Tuple

import numpy as np

from anogan_tf.data.decode import (IMAGE_EXTENSIONS, SKIP_BAD_FILES_HINT,
                                   decode_image)
from anogan_tf.data.errors import DataError

__all__ = ["InputError", "IMAGE_EXTENSIONS", "list_inputs", "read_image",
           "to_signature_dtype"]


class InputError(DataError):
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


def to_signature_dtype(unit: np.ndarray, dtype) -> np.ndarray:
    """Decoded pixels in [0, 1] -> the input of a signature taking `dtype`.

    float32: `2 u - 1` in float32 (what anogan-score scores); uint8:
    `round(255 u)`.

    Raises:
      InputError: `dtype` is neither float32 nor uint8.
    """
    dtype = np.dtype(dtype)
    unit = np.asarray(unit, np.float32)
    if dtype == np.uint8:
        return np.round(np.clip(unit * np.float32(255.0), 0.0, 255.0)
                        ).astype(np.uint8)
    if dtype == np.float32:
        return unit * np.float32(2.0) - np.float32(1.0)
    raise InputError(
        f"The signature takes {dtype.name} images; anogan-client sends "
        f"float32 in [-1, 1] or uint8 in [0, 255]. Use serving_default or "
        f"serving_uint8.")


def read_image(path: str, channels: int, dtype) -> np.ndarray:
    """Reads one file as [H, W, channels] of `dtype` (uint8 or float32).

    Decodes with `anogan_tf.data.decode.decode_image` (the decoder of
    anogan-score), then `to_signature_dtype`.

    Raises:
      InputError: the file cannot be decoded (the message names it and the
        fix), or `dtype` is not float32 or uint8.
    """
    try:
        unit = decode_image(path, channels, name=path)
    except DataError as e:
        # anogan-client has no --skip_bad_files: the fix is the file itself.
        raise InputError(str(e).replace(SKIP_BAD_FILES_HINT, "")) from e
    return to_signature_dtype(unit, dtype)
