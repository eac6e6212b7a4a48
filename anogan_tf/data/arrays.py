"""Images from .npy / .npz files, validated and scaled to [-1, 1].

A `.npy` file holds images only. A `.npz` file holds `images` and optionally
`labels` (0 normal / 1 anomalous), `masks` (nonzero = anomalous pixel) and
`ids` (strings). Files are always loaded with `allow_pickle=False`: pickled
object arrays can run arbitrary code and are refused.

Accepted image arrays are [N, H, W] or [N, H, W, C] (C in 1, 3; a 4th alpha
channel is dropped) of dtype uint8 (divided by 255), uint16 (divided by
65535) or float16/32/64 already in [0, 1].
"""

from __future__ import annotations

import contextlib
import os
from typing import Dict, Iterator, Optional

import numpy as np

from anogan_tf.data.errors import DataError

__all__ = ["ACCEPTED_DTYPES", "images_from_array", "read_array_file",
           "check_finite"]

ACCEPTED_DTYPES = ("uint8", "uint16", "float16", "float32", "float64")
_KEYS = ("images", "labels", "masks", "ids")
_RESAVE = ("Re-save it without objects, e.g. "
           "`np.save(path, arr.astype(np.uint8))` (or np.savez with numeric "
           "arrays).")


def check_finite(array: np.ndarray, name: str) -> None:
    """Raises DataError when a float array holds NaN or Inf.

    Args:
      array: Any numpy array.
      name: What to call the array in the message (file and key).

    Raises:
      DataError: naming the array, the count of bad values and the first one.
    """
    if not np.issubdtype(array.dtype, np.floating):
        return
    bad = ~np.isfinite(array)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        raise DataError(
            f"{name} contains {int(bad.sum())} NaN/Inf values; the first is "
            f"at index {first}. Repair or drop those images before loading.")


def images_from_array(array: np.ndarray, name: str) -> np.ndarray:
    """Validates an image array and scales it to [0, 1].

    Args:
      array: [N, H, W] or [N, H, W, C] images.
      name: What to call the array in error messages.

    Returns:
      float32 [N, H, W, C] in [0, 1], C in {1, 3}.

    Raises:
      DataError: the shape, dtype or value range is not accepted.
    """
    if array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise DataError(
            f"{name} must be [N, H, W] (grayscale) or [N, H, W, C] with C in "
            f"1, 3 (4: alpha is dropped), got shape {array.shape}. Re-save "
            f"the images stacked along a first axis, e.g. `arr[None]` for one "
            f"[H, W] image.")
    if array.shape[0] == 0:
        raise DataError(f"{name} holds no images (shape {array.shape}). "
                        f"Save at least one image in it.")
    if array.shape[1] == 0 or array.shape[2] == 0:
        raise DataError(
            f"{name} has empty images (shape {array.shape}): height and width "
            f"must be at least 1. Re-save it with the images' pixels.")
    array = array[..., :3]
    dtype = array.dtype
    if dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if dtype in (np.float16, np.float32, np.float64):
        check_finite(array, name)
        lo, hi = float(array.min()), float(array.max())
        if lo < 0.0 or hi > 1.0:
            raise DataError(
                f"{name} has float values in [{lo:.4g}, {hi:.4g}], but float "
                f"images must lie in [0, 1]. Rescale, e.g. "
                f"`(x - x.min()) / (x.max() - x.min())`, or save 8-bit data "
                f"as uint8 (0..255).")
        return array.astype(np.float32)
    raise DataError(
        f"{name} has dtype {dtype}, which is not an image dtype; accepted "
        f"dtypes are {', '.join(ACCEPTED_DTYPES)} (floats in [0, 1]). "
        f"Convert it, e.g. `arr.astype(np.uint8)` for 0..255 data.")


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# numpy and zipfile parse a hostile file with code that raises whatever its
# parsing hits (ValueError, SyntaxError and tokenize.TokenError from the
# header, EOFError, zipfile.BadZipFile, zlib.error, OverflowError or
# MemoryError for an absurd shape, ...): every one is reported as a
# malformed file.
_READ_ERRORS = (Exception,)


@contextlib.contextmanager
def _as_data_error(what: str) -> Iterator[None]:
    """Turns every failure of numpy reading `what` into a DataError: a
    refused pickle says so, anything else is a malformed file."""
    try:
        yield
    except DataError:
        raise
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise _refused_pickle(what) from e
        raise _malformed(what, e) from e
    except _READ_ERRORS as e:
        raise _malformed(what, e) from e


def _refused_pickle(what: str) -> DataError:
    return DataError(
        f"{what} holds pickled (object) data, which was refused: loading it "
        f"could run arbitrary code. {_RESAVE}")


def _malformed(what: str, e: BaseException) -> DataError:
    return DataError(
        f"{what} cannot be read as .npy/.npz ({type(e).__name__}: {e}). "
        f"Check the file is complete and was written by np.save/np.savez.")


def _load(path: str):
    """np.load(path, allow_pickle=False), with every failure a DataError.

    The first bytes are checked first: np.load treats any file that is not
    .npy or .npz as a pickle, which would make a text file "pickled".
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(_NPY_MAGIC))
    except OSError as e:
        raise _malformed(path, e) from e
    if not (head.startswith(_NPY_MAGIC) or head[:4] in _ZIP_MAGICS):
        if head[:1] == b"\x80":  # the PROTO opcode of pickle protocol >= 2
            raise _refused_pickle(path)
        raise DataError(
            f"{path} is not a .npy or .npz file (it starts with {head!r}; "
            f".npy files start with {_NPY_MAGIC!r} and .npz files are zip "
            f"archives). Save arrays with np.save or np.savez.")
    with _as_data_error(path):
        return np.load(path, allow_pickle=False)


def _member(loaded, path: str, key: str) -> np.ndarray:
    """One array of an open .npz, with every failure a DataError."""
    what = f"{path}: array {key!r}"
    with _as_data_error(what):
        array = loaded[key]
    if not isinstance(array, np.ndarray):  # a zip member that is no .npy
        raise DataError(
            f"{what} is not a .npy array inside the .npz archive. Save "
            f"with np.savez(path, images=..., ...).")
    return array


def read_array_file(path: str) -> Dict[str, Optional[np.ndarray]]:
    """Reads a .npy or .npz file into its validated arrays.

    Args:
      path: A `.npy` file (images) or `.npz` file (`images` and optional
        `labels`, `masks`, `ids`).

    Returns:
      {"images": float32 [N, H, W, C] in [0, 1], "labels": int32 [N] or
      None, "masks": uint8 [N, H, W] or None, "ids": str array [N] or None}.

    Raises:
      DataError: the file is missing, pickled, malformed or inconsistent.
    """
    if os.path.isdir(path):
        raise DataError(
            f"Dataset 'npy' needs a .npy or .npz file, but {path!r} is a "
            f"folder. Use --dataset=folder for a folder of images.")
    if not os.path.isfile(path):
        raise DataError(
            f"Array file {path!r} does not exist. Pass --data_path pointing "
            f"at a .npy or .npz file.")
    loaded = _load(path)
    raw: Dict[str, Optional[np.ndarray]] = dict.fromkeys(_KEYS)
    if isinstance(loaded, np.ndarray):
        raw["images"] = loaded
    else:
        with loaded:
            if "images" not in loaded.files:
                raise DataError(
                    f"{path} has keys {sorted(loaded.files)} but no 'images'. "
                    f"Save with `np.savez(path, images=..., labels=..., "
                    f"masks=..., ids=...)`.")
            unknown = sorted(set(loaded.files) - set(_KEYS))
            if unknown:
                raise DataError(
                    f"{path} has unknown keys {unknown}; expected only "
                    f"{list(_KEYS)}. Rename or drop them.")
            for key in loaded.files:
                raw[key] = _member(loaded, path, key)
    images = images_from_array(raw["images"], f"{path}['images']")
    n = images.shape[0]
    out: Dict[str, Optional[np.ndarray]] = {
        "images": images, "labels": None, "masks": None, "ids": None}

    labels = raw["labels"]
    if labels is not None:
        name = f"{path}['labels']"
        if labels.shape != (n,) or not (
                np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
            raise DataError(
                f"{name} must be integers of shape ({n},) (one per image), "
                f"got shape {labels.shape} dtype {labels.dtype}. Save one "
                f"0/1 label per image, e.g. `labels=np.zeros({n}, int)`.")
        if not np.isin(labels, (0, 1)).all():
            raise DataError(
                f"{name} must hold 0 (normal) or 1 (anomalous), found "
                f"{np.unique(labels)[:10].tolist()}. Map your classes to 0/1.")
        out["labels"] = labels.astype(np.int32)

    masks = raw["masks"]
    if masks is not None:
        name = f"{path}['masks']"
        if masks.ndim == 4 and masks.shape[-1] == 1:
            masks = masks[..., 0]
        if masks.shape != images.shape[:3]:
            raise DataError(
                f"{name} must have shape {images.shape[:3]} (one [H, W] mask "
                f"per image), got {masks.shape}. Save masks of the images' "
                f"height and width, one per image.")
        if not (np.issubdtype(masks.dtype, np.integer) or masks.dtype == bool
                or np.issubdtype(masks.dtype, np.floating)):
            raise DataError(
                f"{name} has dtype {masks.dtype}; masks must be bool, integer "
                f"or float (nonzero = anomalous).")
        check_finite(masks, name)
        out["masks"] = (masks > 0).astype(np.uint8)

    ids = raw["ids"]
    if ids is not None:
        name = f"{path}['ids']"
        if ids.shape != (n,) or ids.dtype.kind not in "US":
            raise DataError(
                f"{name} must be strings of shape ({n},), got shape "
                f"{ids.shape} dtype {ids.dtype}. Save e.g. "
                f"`ids=np.array(['a', 'b', ...])`.")
        try:
            ids = (np.char.decode(ids, "utf-8") if ids.dtype.kind == "S"
                   else ids.astype(str))
        except UnicodeDecodeError as e:
            raise DataError(
                f"{name} holds bytes that are not UTF-8 ({e}). Save the ids "
                f"as str, e.g. `ids=np.array(['a', 'b', ...])`.") from e
        if len(set(ids.tolist())) != n:
            raise DataError(f"{name} holds duplicate ids; ids must be unique.")
        out["ids"] = ids
    return out
