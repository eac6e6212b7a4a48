"""`load_images`: one entry point from a `DataConfig` to an `ImageSet`.

Splits:
  "train": normal images only (labels all 0).
  "test": labelled images where the source has labels (synthetic_oct,
    digits, glyphs, the MVTec AD layout, .npz/TFRecord with labels), with
    pixel masks where they exist; otherwise all images, unlabelled.
  "calibration": held-out normal images that are not in "train", for
    conformal calibration and percentile thresholds. synthetic_oct draws
    them from their own seed stream, digits holds out 10% of the normal
    class, glyphs renders `glyphs_num_calibration` images from their own
    index range, and an MVTec AD folder holds out a deterministic
    `calibration_fraction` (default 10%) of train/good (which "train" then
    excludes; the log says how many). Plain folders, .npy/.npz and
    TFRecord sources have no held-out normal data: asking for it raises
    DataError.

Sources (`config.dataset`): "synthetic_oct", "digits", "glyphs", "folder",
"npy", "tfrecord" and "textures" (surface textures with typed defects,
data/textures.py: 400 train, 80 calibration, 200 test images of 128 x 128);
see the modules of the same names for their formats.
Every image is converted to `config.channels`, resized to `config.resize` when
given, scaled to [-1, 1] and, with `config.intensity_norm`, normalised per
scan (data/intensity.py). Bad input of any kind raises `DataError`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Optional, Tuple

import numpy as np
from absl import logging

from anogan_tf.config import DataConfig
from anogan_tf.data import arrays, folders, tfrecords
from anogan_tf.data.decode import (convert_channels, decode_many,
                                   resize_images, resize_masks, stack_decoded)
from anogan_tf.data.digits import load_digits_split
from anogan_tf.data.errors import DataError
from anogan_tf.data.glyphs import load_glyphs_split
from anogan_tf.data.intensity import normalize_intensity
from anogan_tf.data.records import ImageSet
from anogan_tf.data.synthetic_oct import generate_oct
from anogan_tf.data.textures import load_textures_split

__all__ = ["load_images", "SPLITS", "DATASETS", "oct_split_seed"]

SPLITS = ("train", "test", "calibration")
DATASETS = ("synthetic_oct", "digits", "glyphs", "folder", "npy", "tfrecord",
            "textures")
_SPLIT_STREAMS = {"train": 0, "calibration": 1, "test": 2}


def oct_split_seed(seed: int, split: str) -> int:
    """The generator seed of a synthetic_oct split.

    "train" uses `seed` itself; "calibration" and "test" use seeds derived
    from (seed, split), different from each other and from `seed`, so the
    splits never share a scan.

    Args:
      seed: config.seed.
      split: "train", "calibration" or "test".

    Returns:
      A non-negative seed for `generate_oct`.
    """
    base = int(seed) % (2 ** 63)
    if split == "train":
        return base
    state = np.random.SeedSequence([base, _SPLIT_STREAMS[split]]).generate_state(
        2, np.uint64)
    derived = int(state[0]) % (2 ** 63)
    return derived if derived != base else int(state[1]) % (2 ** 63)


def _no_calibration(config: DataConfig) -> DataError:
    return DataError(
        f"Dataset {config.dataset!r} ({config.data_path}) has no held-out "
        f"normal images, so calibration data must be given explicitly: put "
        f"normal images that are not in the training data in their own "
        f"file/folder and load its 'train' split, e.g. `load_images("
        f"dataclasses.replace(config, data_path=<normal images>), 'train')`. "
        f"Alternatively use the MVTec AD folder layout (train/good, test/...),"
        f" which holds out --calibration_fraction (10%) of train/good "
        f"automatically.")


def _check_config(config: DataConfig, split: str) -> Optional[Tuple[int, int]]:
    if split not in SPLITS:
        raise DataError(
            f"Unknown split {split!r}; expected one of {SPLITS}.")
    if config.dataset not in DATASETS:
        raise DataError(
            f"Unknown dataset {config.dataset!r}; expected one of {DATASETS}. "
            f"Pass e.g. --dataset=folder --data_path=<images>.")
    if config.channels not in (1, 3):
        raise DataError(
            f"channels must be 1 (grayscale) or 3 (RGB), got "
            f"{config.channels}. Pass --channels=1 or --channels=3.")
    resize = config.resize
    if resize is not None:
        try:
            valid = not isinstance(resize, (str, bytes)) and len(resize) == 2
            resize = (int(resize[0]), int(resize[1]))
            valid = valid and min(resize) >= 1
        except (TypeError, ValueError, IndexError):
            valid = False
        if not valid:
            raise DataError(
                f"resize must be (height, width) with positive integers, got "
                f"{config.resize!r}. Pass e.g. --resize=256,256.")
    if config.dataset in ("folder", "npy", "tfrecord"):
        if not config.data_path:
            raise DataError(
                f"Dataset {config.dataset!r} reads files, but no data_path was "
                f"given. Pass --data_path=<path>.")
        is_glob = config.dataset == "tfrecord" and any(
            c in config.data_path for c in "*?[")
        if not is_glob and not os.path.exists(config.data_path):
            raise DataError(
                f"data_path {config.data_path!r} does not exist. Check "
                f"--data_path (it is resolved relative to "
                f"{os.getcwd()!r}).")
    return resize


def _finish(images01: np.ndarray, config: DataConfig,
            resize: Optional[Tuple[int, int]]) -> np.ndarray:
    """[0, 1] images -> config.channels, config.resize, [-1, 1]."""
    images = convert_channels(images01, config.channels)
    if resize is not None:
        images = resize_images(images, resize)
    return np.clip(images * 2.0 - 1.0, -1.0, 1.0).astype(np.float32)


def _load_synthetic_oct(config: DataConfig, split: str,
                        resize: Optional[Tuple[int, int]]) -> ImageSet:
    if split == "train":
        num, fraction = config.oct_num_train, 0.0
    elif split == "calibration":
        num, fraction = max(16, config.oct_num_train // 5), 0.0
    else:
        num, fraction = config.oct_num_test, config.oct_anomaly_fraction
    scans = generate_oct(num, config.oct_height, config.oct_width,
                         seed=oct_split_seed(config.seed, split),
                         anomaly_fraction=fraction,
                         artifacts=config.oct_artifacts)
    images = convert_channels(scans.images, config.channels)
    masks = scans.masks
    if resize is not None:
        images = np.clip(resize_images(images, resize), -1.0, 1.0)
        masks = resize_masks(masks, resize)
    return ImageSet(
        images=images,
        ids=tuple(f"synthetic_oct/{split}/{i:05d}" for i in range(num)),
        labels=scans.labels,
        masks=masks if split == "test" else None,
        categories=scans.categories)


def _load_textures(config: DataConfig, split: str,
                   resize: Optional[Tuple[int, int]]) -> ImageSet:
    images = load_textures_split(split, config.seed)
    masks = images.masks
    if resize is not None and masks is not None:
        masks = resize_masks(masks, resize)
    return dataclasses.replace(
        images, images=_finish((images.images + 1.0) / 2.0, config, resize),
        masks=masks)


def _load_folder(config: DataConfig, split: str,
                 resize: Optional[Tuple[int, int]]) -> ImageSet:
    root = config.data_path
    if not os.path.isdir(root):
        raise DataError(
            f"Dataset 'folder' needs a folder, but {root!r} is a file. Use "
            f"--dataset=npy for .npy/.npz files or --dataset=tfrecord for "
            f"TFRecords.")
    mvtec = folders.is_mvtec_layout(root)
    if mvtec:
        entries = folders.mvtec_entries(root, split, config.seed,
                                        config.calibration_fraction)
    elif split == "calibration":
        raise _no_calibration(config)
    else:
        entries = folders.plain_entries(root)
    kept, images01, masks = folders.decode_entries(
        entries, config.channels, resize, config.skip_bad_files)
    if mvtec:
        labels = np.array([e.label for e in kept], np.int32)
        categories = tuple(e.category for e in kept)
    else:
        labels = np.zeros(len(kept), np.int32) if split == "train" else None
        categories = None
    return ImageSet(
        images=_finish(images01, config, None),
        ids=tuple(e.id for e in kept),
        labels=labels,
        masks=masks if split == "test" else None,
        categories=categories)


def _split_labelled(images: ImageSet, split: str) -> ImageSet:
    """"train" keeps label-0 images (all when unlabelled, labels set to 0)."""
    if split != "train":
        return images
    if images.labels is None:
        return dataclasses.replace(
            images, labels=np.zeros(len(images), np.int32), masks=None)
    normal = images.subset(images.labels == 0)
    if not len(normal):
        raise DataError(
            "The labelled data holds no normal (label 0) images to train on. "
            "Add normal images or check the labels.")
    return dataclasses.replace(normal, masks=None)


def _load_npy(config: DataConfig, split: str,
              resize: Optional[Tuple[int, int]]) -> ImageSet:
    path = config.data_path
    if split == "calibration":
        raise _no_calibration(config)
    data = arrays.read_array_file(path)
    masks = data["masks"]
    if masks is not None and resize is not None:
        masks = resize_masks(masks, resize)
    stem = os.path.splitext(os.path.basename(path))[0]
    n = data["images"].shape[0]
    ids = (tuple(data["ids"].tolist()) if data["ids"] is not None else
           tuple(f"{stem}/{i:05d}" for i in range(n)))
    images = ImageSet(images=_finish(data["images"], config, resize), ids=ids,
                      labels=data["labels"], masks=masks)
    return _split_labelled(images, split)


def _load_tfrecord(config: DataConfig, split: str,
                   resize: Optional[Tuple[int, int]]) -> ImageSet:
    if split == "calibration":
        raise _no_calibration(config)
    examples = tfrecords.read_tfrecord_examples(config.data_path,
                                                config.skip_bad_files)
    if not examples:
        raise DataError(
            f"{config.data_path!r} holds no records. Write images with "
            f"anogan_tf.data.write_tfrecord.")
    has_label = [e.label is not None for e in examples]
    if any(has_label) and not all(has_label):
        where = examples[has_label.index(False)].where
        raise DataError(
            f"{where} has no 'label' but other records do. Give every record "
            f"a label (0 normal / 1 anomalous) or none.")
    names = [e.where for e in examples]
    results = decode_many([e.image for e in examples], names, config.channels,
                          resize=resize,
                          mask_sources=[e.mask for e in examples])
    kept, images01, masks = stack_decoded(results, names,
                                          config.skip_bad_files,
                                          resized=resize is not None)
    kept_examples = [examples[k] for k in kept]
    stacked_masks = None
    if any(m is not None for m in masks):
        zeros = np.zeros(images01.shape[:3], np.uint8)
        stacked_masks = np.stack([m if m is not None else zeros[j]
                                  for j, m in enumerate(masks)])
    ids = tuple(e.id for e in kept_examples)
    if len(set(ids)) != len(ids):
        raise DataError(
            f"{config.data_path!r} holds duplicate record ids (e.g. "
            f"{next(i for i in ids if ids.count(i) > 1)!r}); ids must be "
            f"unique.")
    images = ImageSet(
        images=np.clip(images01 * 2.0 - 1.0, -1.0, 1.0).astype(np.float32),
        ids=ids,
        labels=(np.array([e.label for e in kept_examples], np.int32)
                if all(has_label) else None),
        masks=stacked_masks)
    return _split_labelled(images, split)


def _check_patch_fits(images: ImageSet, config: DataConfig) -> None:
    h, w = images.image_shape
    patch = config.effective_patch_size
    if h < patch or w < patch:
        source = config.data_path or config.dataset
        raise DataError(
            f"Image {images.ids[0]!r} (from {source}) is {h}x{w} pixels, "
            f"smaller than the patch size {patch}. Pass --patch_size <= "
            f"{min(h, w)}, or enlarge the images with --resize=H,W "
            f"(H, W >= {patch}).")


def load_images(config: DataConfig, split: str) -> ImageSet:
    """Loads one split of the configured dataset as [-1, 1] images.

    Args:
      config: The data configuration (dataset, data_path, channels, resize,
        seed, ...).
      split: "train" (normal images, labels all 0), "test" (labelled where
        labels exist, with masks where they exist) or "calibration"
        (held-out normal images not in "train"; see the module docstring
        for which datasets provide it).

    Returns:
      An ImageSet of float32 [N, H, W, config.channels] images in [-1, 1].

    Raises:
      DataError: for any bad input -- a missing path, an empty folder, an
        unreadable file (unless config.skip_bad_files), mixed image sizes
        without config.resize, images smaller than the patch size, NaN/Inf
        or badly typed arrays, pickled .npy files, corrupt TFRecords, or a
        calibration request for a source without held-out normal data.
    """
    resize = _check_config(config, split)
    if config.dataset == "synthetic_oct":
        images = _load_synthetic_oct(config, split, resize)
    elif config.dataset == "digits":
        size = resize or (config.image_size, config.image_size)
        images = load_digits_split(split, config.normal_class, config.seed,
                                   size, config.channels)
    elif config.dataset == "glyphs":
        size = resize or (config.image_size, config.image_size)
        images = load_glyphs_split(
            split, config.normal_class, config.seed, size, config.channels,
            num_train=config.glyphs_num_train,
            num_calibration=config.glyphs_num_calibration,
            num_test=config.glyphs_num_test)
    elif config.dataset == "textures":
        images = _load_textures(config, split, resize)
    elif config.dataset == "folder":
        images = _load_folder(config, split, resize)
    elif config.dataset == "npy":
        images = _load_npy(config, split, resize)
    else:
        images = _load_tfrecord(config, split, resize)
    _check_patch_fits(images, config)
    images = normalize_intensity(images, config.intensity_norm)
    h, w = images.image_shape
    logging.info(
        "Loaded %d %s images (%dx%dx%d) from %s%s%s.", len(images), split, h,
        w, images.images.shape[-1], config.dataset,
        f" {config.data_path}" if config.data_path else "",
        "" if images.labels is None else
        f", {int(images.labels.sum())} anomalous")
    return images
