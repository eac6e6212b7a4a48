"""Images from folders: a plain folder of images, or the MVTec AD layout.

MVTec AD layout (chosen when `<root>/train/good` exists):

  train/good/*.png                       normal training images
  test/good/*.png                        normal test images (label 0)
  test/<defect>/*.png                    anomalous test images (label 1,
                                         category = <defect>)
  ground_truth/<defect>/<stem>_mask.png  pixel masks of the defect images

A deterministic share of `train/good` (10% by default, `calibration_fraction`;
the files whose seeded hash of their id is smallest) is held out as the
"calibration" split and removed from "train"; the log says how many. A defect image without a mask file gets an all-zero mask and a
logged warning; masks are binarised (> 0) and resized with nearest neighbour
when images are resized.

Plain folder (anything else): every image below the folder, recursively and
in sorted order, forms both "train" and "test" (unlabelled).

Hidden files and folders (names starting with ".") are skipped. Files are
decoded by `decode.decode_many` (a parallel tf.data map). Only
files with an image extension are read; a file with an image extension that
does not decode is an error (or skipped with `skip_bad_files`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import List, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from anogan_tf.data.decode import IMAGE_EXTENSIONS, decode_many, stack_decoded
from anogan_tf.data.errors import DataError

__all__ = [
    "FileEntry",
    "CALIBRATION_SHARE",
    "is_mvtec_layout",
    "list_images",
    "mvtec_entries",
    "plain_entries",
    "calibration_partition",
    "decode_entries",
]

CALIBRATION_SHARE = 0.1
_EXTENSIONS_TEXT = ", ".join(IMAGE_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class FileEntry:
    """One image file to decode.

    Attributes:
      path: The image file.
      id: Path relative to the dataset root, without extension, "/"-joined.
      label: 0/1, or None when unknown.
      category: "good", a defect name, or None.
      mask_path: The mask file; "" for a known all-zero mask (normal image,
        or a defect image whose mask is missing); None when the dataset has
        no masks.
    """

    path: str
    id: str
    label: Optional[int] = None
    category: Optional[str] = None
    mask_path: Optional[str] = None


def _has_image_extension(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: str, recursive: bool) -> List[str]:
    """Sorted image files in `folder` (by extension, case-insensitive).

    Hidden files and folders (names starting with ".") are skipped.

    Args:
      folder: The folder to list.
      recursive: Also list sub-folders.

    Returns:
      Sorted file paths; possibly empty.

    Raises:
      DataError: `folder` does not exist, is not a folder, or it or a
        folder below it cannot be listed.
    """
    if not os.path.isdir(folder):
        raise DataError(
            f"Folder {folder!r} does not exist or is not a folder. Check "
            f"--data_path.")
    found = []
    ignored = 0
    unreadable: List[OSError] = []
    special: List[str] = []
    if recursive:
        walk = os.walk(folder, onerror=unreadable.append)
    else:
        try:
            walk = [(folder, [], os.listdir(folder))]
        except OSError as e:
            unreadable.append(e)
            walk = []
    for root, dirs, files in walk:
        # Hidden folders and files (".git", macOS "._x.png") are not data.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = os.path.join(root, name)
            if not _has_image_extension(name) or name.startswith("."):
                if not os.path.isdir(path):
                    ignored += 1
            # Regular files, and broken links (reported as missing when
            # decoded). A FIFO or device named x.png would block or never
            # end, so it is left out, with a warning.
            elif os.path.isfile(path) or not os.path.exists(path):
                found.append(path)
            elif not os.path.isdir(path):
                special.append(path)
    if unreadable:
        e = unreadable[0]
        raise DataError(
            f"Cannot list {e.filename or folder!r} ({e.strerror or e}). Give "
            f"the user running anogan_tf read access to it, or move it out "
            f"of {folder!r}.")
    if special:
        logging.warning(
            "Skipped %d image names in %s that are not regular files (FIFOs, "
            "devices, sockets), e.g. %s.", len(special), folder, special[0])
    if ignored:
        logging.info("Ignored %d hidden or non-image files in %s (image extensions: %s).",
                     ignored, folder, _EXTENSIONS_TEXT)
    return sorted(found)


def _require_images(folder: str, files: Sequence[str]) -> None:
    if not files:
        raise DataError(
            f"Folder {folder!r} contains no image files (looked for "
            f"{_EXTENSIONS_TEXT}, case-insensitive). Point --data_path at a "
            f"folder of images.")


def _relative_id(root: str, path: str) -> str:
    rel = os.path.relpath(path, root)
    return os.path.splitext(rel)[0].replace(os.sep, "/")


def is_mvtec_layout(root: str) -> bool:
    """Whether `root` follows the MVTec AD layout (has `train/good`)."""
    return os.path.isdir(os.path.join(root, "train", "good"))


def calibration_partition(ids: Sequence[str], seed: int,
                          share: float = CALIBRATION_SHARE
                          ) -> Tuple[List[int], List[int]]:
    """Splits positions into (train, calibration) deterministically.

    The calibration positions are the round(share * n) ids (at least 1 when
    n >= 2, none when n == 1) with the smallest SHA-256 of "<seed>:<id>",
    so the choice is stable under reordering and mostly stable when files
    are added.

    Args:
      ids: Image ids.
      seed: Seed mixed into the hash.
      share: Fraction held out for calibration.

    Returns:
      (train positions, calibration positions), each sorted.
    """
    n = len(ids)
    n_cal = 0 if n < 2 else max(1, int(round(share * n)))
    keys = [hashlib.sha256(f"{seed}:{i}".encode()).hexdigest() for i in ids]
    order = sorted(range(n), key=lambda k: keys[k])
    calibration = sorted(order[:n_cal])
    held = set(calibration)
    return [k for k in range(n) if k not in held], calibration


def plain_entries(root: str) -> List[FileEntry]:
    """All images below `root` (recursive, sorted), unlabelled.

    Raises:
      DataError: the folder is missing or holds no images.
    """
    files = list_images(root, recursive=True)
    _require_images(root, files)
    return [FileEntry(path=f, id=_relative_id(root, f)) for f in files]


def mvtec_entries(root: str, split: str, seed: int,
                  calibration_share: float = CALIBRATION_SHARE
                  ) -> List[FileEntry]:
    """Files of one split of an MVTec AD style folder.

    Args:
      root: The dataset folder (holding train/good).
      split: "train" (train/good minus the calibration share),
        "calibration" (the held-out share of train/good) or "test".
      seed: Seed of the calibration hold-out.
      calibration_share: Fraction of train/good held out for calibration.

    Returns:
      The split's entries, sorted by id.

    Raises:
      DataError: a required folder is missing or holds no images.
    """
    if split in ("train", "calibration"):
        folder = os.path.join(root, "train", "good")
        files = list_images(folder, recursive=False)
        _require_images(folder, files)
        entries = [FileEntry(path=f, id=_relative_id(root, f), label=0,
                             category="good") for f in files]
        train, calibration = calibration_partition(
            [e.id for e in entries], seed, calibration_share)
        chosen = train if split == "train" else calibration
        if not chosen:
            raise DataError(
                f"{folder} has only {len(files)} image(s): too few to hold "
                f"out {calibration_share:.0%} for calibration and train on "
                f"the rest. Add normal training images.")
        logging.info(
            "%s: %d of %d normal images held back for calibration "
            "(--calibration_fraction=%g), %d left for training.", folder,
            len(calibration), len(entries), calibration_share, len(train))
        return [entries[k] for k in chosen]

    test_root = os.path.join(root, "test")
    if not os.path.isdir(test_root):
        raise DataError(
            f"{root!r} has train/good (MVTec AD layout) but no test folder "
            f"{test_root!r}. Add test/good and test/<defect> folders.")
    truth_root = os.path.join(root, "ground_truth")
    has_truth = os.path.isdir(truth_root)
    if not has_truth:
        logging.info("No %s folder: the test images have no pixel masks.",
                     truth_root)
    entries: List[FileEntry] = []
    missing: List[str] = []
    for category in sorted(os.listdir(test_root)):
        folder = os.path.join(test_root, category)
        if not os.path.isdir(folder) or category.startswith("."):
            continue
        label = 0 if category == "good" else 1
        for f in list_images(folder, recursive=False):
            mask = None
            if has_truth:
                mask = ""
                if label:
                    stem = os.path.splitext(os.path.basename(f))[0]
                    candidate = os.path.join(truth_root, category,
                                             stem + "_mask.png")
                    if os.path.isfile(candidate):
                        mask = candidate
                    else:
                        missing.append(candidate)
            entries.append(FileEntry(path=f, id=_relative_id(root, f),
                                     label=label, category=category,
                                     mask_path=mask))
    if not entries:
        raise DataError(
            f"{test_root!r} holds no images (looked in its sub-folders for "
            f"{_EXTENSIONS_TEXT}). Add test/good and test/<defect> images.")
    if missing:
        logging.warning(
            "%d defect images have no ground-truth mask and get an all-zero "
            "mask (e.g. expected %s).", len(missing), missing[0])
    return entries


def decode_entries(entries: Sequence[FileEntry], channels: int,
                   resize: Optional[Tuple[int, int]], skip_bad: bool
                   ) -> Tuple[List[FileEntry], np.ndarray, Optional[np.ndarray]]:
    """Decodes files in parallel and stacks them.

    Args:
      entries: The files.
      channels: Output channels, 1 or 3.
      resize: Optional (height, width) for every image.
      skip_bad: Skip undecodable files with a logged count instead of
        raising.

    Returns:
      (the entries that decoded, float32 [N, H, W, C] in [0, 1], uint8
      [N, H, W] masks or None when the dataset has no masks).

    Raises:
      DataError: a file does not decode (without `skip_bad`), nothing
        decodes, or the images differ in size without `resize`.
    """
    names = [e.path for e in entries]
    results = decode_many(names, names, channels, resize=resize,
                          mask_sources=[e.mask_path or None for e in entries])
    kept, images, masks = stack_decoded(results, names, skip_bad,
                                        resized=resize is not None)
    kept_entries = [entries[k] for k in kept]
    if all(e.mask_path is None for e in kept_entries):
        return kept_entries, images, None
    zeros = np.zeros(images.shape[:3], np.uint8)
    stacked = np.stack([m if m is not None else zeros[j]
                        for j, m in enumerate(masks)])
    return kept_entries, images, stacked
