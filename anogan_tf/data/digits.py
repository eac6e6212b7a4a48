"""scikit-learn's bundled 8x8 handwritten digits as a one-class task.

The 1797 images ship with scikit-learn, so nothing is downloaded. Pixel
values 0..16 are scaled to [-1, 1] and upsampled bilinearly to the model
size. One digit (`normal_class`) is normal: its images are split
deterministically (seeded) into train (70%), calibration (10%) and test
(the remaining ~20%). The test split adds an equal number of images of the
other nine digits (label 1, category = the digit), sampled deterministically.
Normal images have category "good". Digits have no pixel masks.
"""

from __future__ import annotations

from typing import Dict, Tuple

import numpy as np

from anogan_tf.data.decode import convert_channels, resize_images
from anogan_tf.data.errors import DataError
from anogan_tf.data.records import ImageSet

__all__ = ["load_digits_split", "DIGITS_SPLITS"]

DIGITS_SPLITS = ("train", "calibration", "test")
_TRAIN_SHARE, _CALIBRATION_SHARE = 0.7, 0.1


def _split_indices(labels: np.ndarray, normal_class: int,
                   seed: int) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Per split: (indices into the digits, anomaly labels)."""
    rng = np.random.default_rng([int(seed) % (2 ** 63), normal_class])
    normal = rng.permutation(np.flatnonzero(labels == normal_class))
    n_train = int(round(_TRAIN_SHARE * len(normal)))
    n_cal = int(round(_CALIBRATION_SHARE * len(normal)))
    train = np.sort(normal[:n_train])
    cal = np.sort(normal[n_train:n_train + n_cal])
    test_normal = np.sort(normal[n_train + n_cal:])
    others = rng.permutation(np.flatnonzero(labels != normal_class))
    test_other = np.sort(others[:len(test_normal)])
    test = np.concatenate([test_normal, test_other])
    return {
        "train": (train, np.zeros(len(train), np.int32)),
        "calibration": (cal, np.zeros(len(cal), np.int32)),
        "test": (test, np.concatenate([np.zeros(len(test_normal), np.int32),
                                       np.ones(len(test_other), np.int32)])),
    }


def load_digits_split(split: str, normal_class: int, seed: int,
                      size: Tuple[int, int], channels: int) -> ImageSet:
    """Loads one split of the one-class digits task.

    Args:
      split: "train", "calibration" or "test".
      normal_class: The normal digit, 0..9.
      seed: Seed of the split.
      size: (height, width) the 8x8 digits are upsampled to.
      channels: 1, or 3 (the gray value repeated).

    Returns:
      An ImageSet with labels and categories ("good" for the normal digit,
      the digit itself, e.g. "7", for the others); ids are
      "digits/<index in load_digits>".

    Raises:
      DataError: `normal_class` is not 0..9 or `split` is unknown.
    """
    if isinstance(normal_class, bool) or normal_class not in range(10):
        raise DataError(
            f"normal_class must be a digit 0..9 for dataset 'digits', got "
            f"{normal_class!r}. Pass e.g. --normal_class=0.")
    if split not in DIGITS_SPLITS:
        raise DataError(
            f"Unknown split {split!r} for dataset 'digits'; expected one of "
            f"{DIGITS_SPLITS}.")
    from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
    digits = load_digits()
    targets = np.asarray(digits.target)
    index, labels = _split_indices(targets, normal_class, seed)[split]
    images = digits.images[index].astype(np.float32) / 16.0 * 2.0 - 1.0
    images = resize_images(images[..., None], size)
    return ImageSet(
        images=convert_channels(images, channels),
        ids=tuple(f"digits/{i:04d}" for i in index),
        labels=labels,
        categories=tuple("good" if y == 0 else str(targets[i])
                         for i, y in zip(index, labels)))
