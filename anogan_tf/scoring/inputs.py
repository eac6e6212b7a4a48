"""What anogan-score and anogan-evaluate read: image files, folders, arrays.

`load_inputs` turns --inputs (files and folders of images, .npy/.npz,
.tfrecord) into one ImageSet, decoded and normalised as the model's data
config says.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Sequence

import numpy as np
from absl import logging

from anogan_tf.config import DataConfig
from anogan_tf.data import DataError, ImageSet, load_images
from anogan_tf.data.decode import IMAGE_EXTENSIONS, decode_many
from anogan_tf.data.intensity import normalize_intensity

__all__ = ["load_inputs", "IMAGE_EXTENSIONS"]

_TFRECORD = (".tfrecord", ".tfrec", ".tfrecords")


def _concat(sets: Sequence[ImageSet]) -> ImageSet:
    if len(sets) == 1:
        return sets[0]
    shapes = {s.images.shape[1:] for s in sets}
    if len(shapes) > 1:
        raise DataError(f"The inputs have different image shapes {sorted(shapes)}; "
                        f"pass --resize=H,W to bring them to one size.")
    return ImageSet(np.concatenate([s.images for s in sets]),
                    tuple(i for s in sets for i in s.ids))


def _load_input(data_config: DataConfig, dataset: str,
                path: str) -> ImageSet:
    """Loads one --inputs path with the dataset loader for its kind."""
    try:
        return load_images(dataclasses.replace(
            data_config, dataset=dataset, data_path=path), "test")
    except DataError as e:
        # The loaders name the flag they usually read the path from; here
        # the path came from --inputs.
        raise DataError(str(e).replace("--data_path", "--inputs")) from e


def load_inputs(inputs: Optional[Sequence[str]],
                data_config: DataConfig) -> ImageSet:
    """The images anogan-score scores.

    Args:
      inputs: Files and folders (images, .npy/.npz, .tfrecord); when empty,
        `data_config`'s dataset "test" split is used.
      data_config: Channels, resize, skip_bad_files, intensity_norm.

    Raises:
      DataError: a path is missing, unreadable or holds no images.
    """
    if not inputs:
        return load_images(data_config, "test")
    sets, files = [], []
    for path in inputs:
        is_glob = path.endswith(_TFRECORD) and any(c in path for c in "*?[")
        if not path.strip():
            raise DataError(
                f"--inputs holds an empty path ({list(inputs)!r}; a stray "
                f"comma?). Pass comma-separated image files or folders.")
        if not is_glob and not os.path.exists(path):
            raise DataError(f"Input {path!r} does not exist. Pass existing "
                            f"image files or folders to --inputs.")
        if os.path.isdir(path):
            sets.append(_load_input(data_config, "folder", path))
        elif path.endswith((".npy", ".npz")):
            sets.append(_load_input(data_config, "npy", path))
        elif path.endswith(_TFRECORD):
            sets.append(_load_input(data_config, "tfrecord", path))
        elif os.path.isfile(path) and path.lower().endswith(IMAGE_EXTENSIONS):
            files.append(path)
        else:
            raise DataError(
                f"Input {path!r} is not a folder, an image "
                f"({', '.join(IMAGE_EXTENSIONS)}), .npy/.npz or .tfrecord. "
                f"Pass only such files or folders to --inputs (or rename "
                f"the file to its format's extension).")
    if files:
        decoded = decode_many(files, files, data_config.channels,
                              resize=data_config.resize)
        good = [(f, d) for f, d in zip(files, decoded) if d.error is None]
        bad = [d.error for d in decoded if d.error is not None]
        if bad and not data_config.skip_bad_files:
            # The decoder's own messages name the flag where it applies.
            raise DataError(bad[0] if "--skip_bad_files" in bad[0]
                            else bad[0] + " (or pass --skip_bad_files)")
        if bad:
            logging.warning("Skipped %d unreadable file(s).", len(bad))
        if good:
            first, first_image = good[0]
            for f, d in good[1:]:
                if d.image.shape != first_image.image.shape:
                    (h0, w0), (h1, w1) = (first_image.image.shape[:2],
                                          d.image.shape[:2])
                    raise DataError(
                        f"The input images have different sizes: {first} is "
                        f"{h0}x{w0} but {f} is {h1}x{w1}. Pass --resize=H,W "
                        f"(e.g. --resize={h0},{w0}) to resize every image to "
                        f"one size.")
            ids = tuple(os.path.splitext(os.path.basename(f))[0] for f, _ in good)
            # Folders and arrays are normalised by load_images; files here.
            sets.append(normalize_intensity(ImageSet(
                np.stack([d.image for _, d in good]) * 2.0 - 1.0, ids),
                data_config.intensity_norm))
    if not sets:
        raise DataError("No readable images in --inputs.")
    return _concat(sets)
