"""Writes a one-class digit image set as PNG files in the MVTec AD layout.

    python scripts/make_oneclass.py --source=glyphs --normal_class=3 \\
        --out=data/glyphs3 [--num_train=2000 --num_test=400 --seed=0]

Layout (what `--dataset=folder` reads as MVTec AD; there is no ground_truth
folder, so the test images have no pixel masks):

  train/good/<stem>.png     num_train images of the normal digit
  test/good/<stem>.png      num_test // 2 other images of the normal digit
  test/<digit>/<stem>.png   the rest, spread over the nine other digits
  oneclass.json             source, normal_class, seed and the counts

Images are 28x28 8-bit grayscale, white digits on black. The folder loader
holds out 10% of train/good for calibration. Read the set back with e.g.
`anogan-train --dataset=folder --data_path=data/glyphs3 --resize=32,32 ...`.

Sources:
  glyphs: digits rendered from matplotlib's fonts (anogan_tf.data.glyphs);
    train/good holds the first num_train images of the "train" index range,
    test the "test" split of `load_glyphs_split`, so the files match
    `--dataset=glyphs` with the same seed before resizing.
  digits: scikit-learn's 8x8 digits upsampled to 28x28
    (anogan_tf.data.digits). Only ~180 images exist per digit: train/good
    takes the train and calibration splits, test the test split, each
    capped at the requested counts; a warning says when fewer exist.

The set is written to a temporary sibling folder and renamed to --out at
the end, so --out is either complete or absent. An existing non-empty
--out is never overwritten.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np
from absl import logging
from PIL import Image

from anogan_tf.data.digits import load_digits_split
from anogan_tf.data.errors import DataError
from anogan_tf.data.glyphs import glyph_split_plan, render_glyphs
from anogan_tf.data.grids import images_to_uint8

__all__ = ["SOURCES", "OneClassSet", "build_oneclass", "write_oneclass",
           "main"]

SOURCES = ("glyphs", "digits")
_SIZE = 28


@dataclasses.dataclass(frozen=True)
class OneClassSet:
    """The images of a one-class set before they are written.

    Attributes:
      train: uint8 [N, 28, 28] normal training images.
      train_stems: File stem of each training image.
      test: uint8 [M, 28, 28] test images.
      test_stems: File stem of each test image.
      test_categories: "good" or the digit (e.g. "7") of each test image;
        the image goes to test/<category>/.
    """

    train: np.ndarray
    train_stems: Tuple[str, ...]
    test: np.ndarray
    test_stems: Tuple[str, ...]
    test_categories: Tuple[str, ...]


def _glyphs(normal_class: int, num_train: int, num_test: int,
            seed: int) -> OneClassSet:
    parts = {}
    for split in ("train", "test"):
        plan = glyph_split_plan(split, normal_class, num_train=num_train,
                                num_test=num_test)
        images = [render_glyphs(c, count, seed, _SIZE, start=first)
                  for c, first, count in plan]
        stems = [f"{c}_{i:07d}" for c, first, count in plan
                 for i in range(first, first + count)]
        categories = ["good" if c == normal_class else str(c)
                      for c, _, count in plan for _ in range(count)]
        parts[split] = (np.concatenate(images), tuple(stems),
                        tuple(categories))
    return OneClassSet(train=parts["train"][0], train_stems=parts["train"][1],
                       test=parts["test"][0], test_stems=parts["test"][1],
                       test_categories=parts["test"][2])


def _digits(normal_class: int, num_train: int, num_test: int,
            seed: int) -> OneClassSet:
    size = (_SIZE, _SIZE)
    sets = [load_digits_split(s, normal_class, seed, size, 1)
            for s in ("train", "calibration", "test")]
    train_images = np.concatenate([s.images for s in sets[:2]])
    train_ids = sets[0].ids + sets[1].ids
    test = sets[2]
    normal = np.flatnonzero(test.labels == 0)[:num_test // 2]
    other = np.flatnonzero(test.labels == 1)[:num_test - num_test // 2]
    if len(train_ids) < num_train or len(normal) + len(other) < num_test:
        logging.warning(
            "scikit-learn's digits hold only %d normal training and %d test "
            "images for class %d; writing those instead of the requested "
            "%d and %d.", min(len(train_ids), num_train),
            len(normal) + len(other), normal_class, num_train, num_test)
    keep = np.concatenate([normal, other])
    test = test.subset(keep)

    def stems(ids: Sequence[str]) -> Tuple[str, ...]:
        return tuple(i.split("/", 1)[1].replace("/", "_") for i in ids)

    return OneClassSet(
        train=images_to_uint8(train_images[:num_train, ..., 0]),
        train_stems=stems(train_ids[:num_train]),
        test=images_to_uint8(test.images[..., 0]),
        test_stems=stems(test.ids), test_categories=test.categories)


def build_oneclass(source: str, normal_class: int, num_train: int = 2000,
                   num_test: int = 400, seed: int = 0) -> OneClassSet:
    """Renders or loads the images of a one-class set.

    Args:
      source: "glyphs" or "digits".
      normal_class: The normal digit, 0..9.
      num_train: Normal training images (an upper bound for "digits").
      num_test: Test images, half normal (an upper bound for "digits").
      seed: Seed of the renders ("glyphs") or of the split ("digits").

    Returns:
      A OneClassSet of 28x28 uint8 images.

    Raises:
      DataError: an unknown source, a bad class or a bad count.
    """
    if source not in SOURCES:
        raise DataError(
            f"Unknown source {source!r}; expected one of {SOURCES}. Pass "
            f"--source=glyphs or --source=digits.")
    if isinstance(num_train, bool) or int(num_train) < 1 or int(num_test) < 2:
        raise DataError(
            f"Need num_train >= 1 and num_test >= 2, got num_train="
            f"{num_train}, num_test={num_test}. Pass e.g. --num_train=2000 "
            f"--num_test=400.")
    build = _glyphs if source == "glyphs" else _digits
    return build(normal_class, int(num_train), int(num_test), int(seed))


def _save_all(root: str, folders: Sequence[str], stems: Sequence[str],
              images: np.ndarray) -> None:
    for folder, stem, pixels in zip(folders, stems, images):
        path = os.path.join(root, folder, stem + ".png")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        Image.fromarray(pixels).save(path, format="PNG")


def write_oneclass(out: str, source: str, normal_class: int,
                   num_train: int = 2000, num_test: int = 400,
                   seed: int = 0) -> str:
    """Writes a one-class set to `out` in the MVTec AD layout.

    Args:
      out: The folder to create; it must not exist or be empty.
      source: "glyphs" or "digits".
      normal_class: The normal digit, 0..9.
      num_train: Images in train/good (an upper bound for "digits").
      num_test: Images in test/ (an upper bound for "digits").
      seed: Seed of the images.

    Returns:
      `out`.

    Raises:
      DataError: `out` is a file or a non-empty folder, or a bad argument
        (see `build_oneclass`).
    """
    out = os.path.abspath(out)
    if os.path.isfile(out):
        raise DataError(
            f"--out {out!r} is a file. Pass a folder path that does not "
            f"exist yet.")
    if os.path.isdir(out) and os.listdir(out):
        raise DataError(
            f"--out {out!r} already exists and is not empty; refusing to "
            f"overwrite it. Delete it first or pass another --out.")
    images = build_oneclass(source, normal_class, num_train, num_test, seed)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out) + ".tmp", dir=parent)
    try:
        _save_all(tmp, [os.path.join("train", "good")] * len(images.train),
                  images.train_stems, images.train)
        _save_all(tmp, [os.path.join("test", c)
                        for c in images.test_categories],
                  images.test_stems, images.test)
        counts = {c: images.test_categories.count(c)
                  for c in sorted(set(images.test_categories))}
        with open(os.path.join(tmp, "oneclass.json"), "w") as f:
            json.dump({"source": source, "normal_class": normal_class,
                       "seed": seed, "size": _SIZE,
                       "train_good": len(images.train), "test": counts},
                      f, indent=2)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private.
        if os.path.isdir(out):
            os.rmdir(out)  # Empty (checked above); rename needs it gone.
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("Wrote %d train/good and %d test images to %s.",
                 len(images.train), len(images.test), out)
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Write a one-class digit set (MVTec AD folder layout).")
    parser.add_argument("--source", choices=SOURCES, default="glyphs",
                        help="glyphs: rendered font digits; digits: "
                        "scikit-learn's 8x8 digits upsampled.")
    parser.add_argument("--normal_class", type=int, required=True,
                        help="The normal digit, 0..9.")
    parser.add_argument("--out", required=True,
                        help="Folder to create (must not exist or be empty).")
    parser.add_argument("--num_train", type=int, default=2000,
                        help="Images in train/good.")
    parser.add_argument("--num_test", type=int, default=400,
                        help="Images in test/ (half normal).")
    parser.add_argument("--seed", type=int, default=0, help="Seed.")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parses `argv` (default: sys.argv[1:]) and writes the set.

    Returns:
      0 on success; bad arguments exit with status 2 and a message.
    """
    args = _parser().parse_args(argv)
    logging.set_verbosity(logging.INFO)
    try:
        write_oneclass(args.out, args.source, args.normal_class,
                       args.num_train, args.num_test, args.seed)
    except DataError as e:
        _parser().exit(2, f"make_oneclass.py: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
