"""tf.data input pipelines and validation of arrays handed to the model.

`make_train_dataset` yields float32 [B, S, S, C] batches of patches for GAN
training: cached, shuffled over the whole dataset with a seed (reshuffled
every epoch), repeated, batched with `drop_remainder=True` (so every step
sees a full, statically shaped batch) and prefetched.

`validate_model_input` checks an array before it reaches the generator,
discriminator or the latent mapper, so bad input fails with a readable
message instead of an XLA shape error.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from anogan_tf.data.arrays import check_finite
from anogan_tf.data.errors import DataError

__all__ = ["make_train_dataset", "validate_model_input"]


def validate_model_input(array: np.ndarray, image_size: int, channels: int,
                         name: str = "images") -> np.ndarray:
    """Checks that `array` is a batch the model accepts.

    Args:
      array: Images as [N, image_size, image_size, channels] floats in
        [-1, 1] (a tf.Tensor is converted with np.asarray).
      image_size: The model's input side (ModelConfig.image_size).
      channels: The model's channels (ModelConfig.channels).
      name: What to call the array in error messages.

    Returns:
      The array as float32.

    Raises:
      DataError: the array is empty, has the wrong rank, size, channels or
        dtype, contains NaN/Inf, or lies outside [-1, 1].
    """
    arr = np.asarray(array)
    expected = f"[N, {image_size}, {image_size}, {channels}]"
    if arr.ndim != 4:
        raise DataError(
            f"{name} must be a batch {expected}, got rank {arr.ndim} shape "
            f"{arr.shape}. Add a batch axis with `x[None]` or a channel axis "
            f"with `x[..., None]`.")
    if arr.shape[0] == 0:
        raise DataError(f"{name} is empty (shape {arr.shape}); pass at least "
                        f"one image.")
    if arr.shape[1:3] != (image_size, image_size):
        raise DataError(
            f"{name} has images of {arr.shape[1]}x{arr.shape[2]}, but the "
            f"model takes {image_size}x{image_size} ({expected}). Cut patches "
            f"with extract_patches(..., model_size={image_size}) or resize "
            f"them.")
    if arr.shape[3] != channels:
        raise DataError(
            f"{name} has {arr.shape[3]} channels, but the model takes "
            f"{channels} ({expected}). Load the data with --channels="
            f"{channels}.")
    if not np.issubdtype(arr.dtype, np.floating):
        raise DataError(
            f"{name} has dtype {arr.dtype}, but the model takes float32 in "
            f"[-1, 1]. Scale uint8 images with `x / 127.5 - 1`.")
    arr = arr.astype(np.float32, copy=False)
    check_finite(arr, name)
    lo, hi = float(arr.min()), float(arr.max())
    if lo < -1.001 or hi > 1.001:
        raise DataError(
            f"{name} has values in [{lo:.4g}, {hi:.4g}], but the model takes "
            f"[-1, 1]. Scale [0, 1] data with `2 * x - 1` and uint8 data with "
            f"`x / 127.5 - 1`.")
    return arr


def make_train_dataset(patches: np.ndarray, batch_size: int, seed: int,
                       shuffle: bool = True, repeat: bool = True,
                       cache: bool = True) -> tf.data.Dataset:
    """Builds the training input pipeline over model-sized patches.

    Args:
      patches: float32 [P, S, S, C] in [-1, 1] (e.g. PatchSet.patches).
      batch_size: Patches per batch; P must be >= batch_size.
      seed: Shuffle seed; the order differs per epoch but is reproducible.
      shuffle: Shuffle with a buffer the size of the dataset.
      repeat: Repeat indefinitely (steps per epoch are set by the trainer).
      cache: Cache the elements in memory after the first pass.

    Returns:
      A dataset of float32 [batch_size, S, S, C] tensors (remainder
      dropped).

    Raises:
      DataError: the patches are malformed or fewer than `batch_size`.
    """
    arr = np.asarray(patches)
    if arr.ndim != 4 or arr.shape[1] != arr.shape[2]:
        raise DataError(
            f"make_train_dataset expects patches [P, S, S, C], got shape "
            f"{arr.shape}.")
    arr = validate_model_input(arr, arr.shape[1], arr.shape[3],
                               name="training patches")
    if batch_size < 1:
        raise DataError(f"batch_size must be >= 1, got {batch_size}.")
    if arr.shape[0] < batch_size:
        raise DataError(
            f"Only {arr.shape[0]} training patches for batch_size="
            f"{batch_size}; with drop_remainder no full batch can be formed. "
            f"Lower --batch_size to at most {arr.shape[0]}, or add training "
            f"images (or a smaller --patch_stride).")
    ds = tf.data.Dataset.from_tensor_slices(arr)
    if cache:
        ds = ds.cache()
    if shuffle:
        ds = ds.shuffle(arr.shape[0], seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
