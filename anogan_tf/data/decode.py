"""Decoding of image files and encoded image bytes, in parallel via tf.data.

Pillow decodes PNG, JPEG, BMP and TIFF (8-bit and 16-bit, grayscale, RGB,
RGBA and palette images). 8-bit samples are divided by 255 and 16-bit samples
by 65535 to reach [0, 1]; callers then map to [-1, 1]. Colour images become
grayscale by ITU-R 601 luminance and grayscale images become RGB by
repetition. Alpha channels are dropped.

Only those four formats are opened, by content (a PNG that is really a
JPEG decodes as the JPEG it is): Pillow's other plugins (EPS runs
Ghostscript, and PSD, ICO, GIF, ... widen what a hostile file can reach)
are never used. An image of more than `MAX_IMAGE_PIXELS` pixels is refused
before its pixels are decoded (a decompression bomb: a small file that
claims a huge size); see docs/security.md.

`decode_many` runs the decoder over a `tf.data` pipeline with
`num_parallel_calls=AUTOTUNE` (Pillow releases the GIL while decoding), so a
big folder decodes on all cores. A file that fails to decode never raises
inside the pipeline: its error message is returned for the caller to raise
or skip.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from anogan_tf.data.errors import DataError

__all__ = [
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "MAX_IMAGE_PIXELS",
    "SKIP_BAD_FILES_HINT",
    "Decoded",
    "decode_image",
    "decode_mask",
    "decode_many",
    "stack_decoded",
    "convert_channels",
    "resize_images",
    "resize_masks",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
# Pillow formats that are opened (by content, whatever the extension). The
# JPEG opener also opens the multi-picture JPEGs of many cameras (as "MPO").
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "DIB", "TIFF")

# The largest image decoded, in pixels: 2**26 = 67,108,864, an 8192 x 8192
# image (Pillow's own default is about 89.5 M). Decoded to float32 it takes
# 256 MiB as grayscale and 768 MiB as RGB, which bounds what one file can
# make a worker allocate; a file claiming more is refused before decoding.
# Images that fit still meet --max_patches_per_image, which bounds the
# scoring work (data/patches.py). Pillow's limit is set to the same value
# here, the one place anogan_tf sets it, and its DecompressionBombWarning
# (between 1x and 2x the limit; above 2x Pillow raises
# DecompressionBombError) is turned into an exception, so Pillow never
# decodes such an image in this process. Raise the limit only for files
# you trust: `anogan_tf.data.decode.MAX_IMAGE_PIXELS = ...` before loading
# (and Pillow's `PIL.Image.MAX_IMAGE_PIXELS` to match).
MAX_IMAGE_PIXELS = 2 ** 26
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

# ITU-R BT.601 luma weights, the ones Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)

Source = Union[str, bytes, os.PathLike]

# The end of the message for an undecodable file; callers without
# --skip_bad_files (anogan-client) remove it.
SKIP_BAD_FILES_HINT = ", or pass --skip_bad_files to skip unreadable files"


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """Converts the last axis of `images` to 1 or 3 channels.

    RGB becomes grayscale by luminance (0.299 R + 0.587 G + 0.114 B); gray
    becomes RGB by repeating the channel.

    Args:
      images: float array [..., C] with C in {1, 3}.
      channels: Wanted channel count, 1 or 3.

    Returns:
      float32 array [..., channels].

    Raises:
      DataError: `channels` or the input channel count is not 1 or 3.
    """
    if channels not in (1, 3):
        raise DataError(
            f"channels must be 1 (grayscale) or 3 (RGB), got {channels}. "
            f"Pass --channels=1 or --channels=3.")
    have = images.shape[-1]
    if have not in (1, 3):
        raise DataError(
            f"Images must have 1 or 3 channels to convert, got {have} "
            f"(shape {images.shape}).")
    images = images.astype(np.float32, copy=False)
    if have == channels:
        return images
    if channels == 1:
        return np.tensordot(images, _LUMA, axes=([-1], [0]))[..., None]
    return np.repeat(images, 3, axis=-1)


def _unit_from_pil(img: Image.Image, name: str) -> np.ndarray:
    """Pillow image -> float32 [H, W, 1 or 3] in [0, 1]."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        return (np.asarray(img).astype(np.float32) / 65535.0)[..., None]
    if mode == "I":
        # 32-bit integer mode: how Pillow may present 16-bit PNG/TIFF samples.
        arr = np.asarray(img)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise DataError(
                f"{name}: 32-bit integer image with values in "
                f"[{arr.min()}, {arr.max()}]; only 8-bit (0..255) and 16-bit "
                f"(0..65535) images are supported. Re-save it as 8- or 16-bit.")
        return (arr.astype(np.float32) / 65535.0)[..., None]
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all() or (
                arr.size and (arr.min() < 0 or arr.max() > 1)):
            raise DataError(
                f"{name}: 32-bit float image must be finite and within [0, 1], "
                f"found [{np.nanmin(arr):.4g}, {np.nanmax(arr):.4g}]. Re-save "
                f"it as an 8- or 16-bit image.")
        return arr[..., None]
    if mode == "1":
        img = img.convert("L")
    elif mode == "P" or mode == "PA":
        img = img.convert("RGBA" if "transparency" in img.info or mode == "PA"
                          else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA", "RGBX"):
        img = img.convert("RGB")  # CMYK, YCbCr, LAB, HSV, ...
    arr = np.asarray(img).astype(np.float32) / 255.0
    if arr.ndim == 2:
        return arr[..., None]
    if arr.shape[-1] == 2:  # LA: luminance and alpha.
        return arr[..., :1]
    return arr[..., :3]


def _limit_text() -> str:
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    return (f"the decode limit of {MAX_IMAGE_PIXELS:,} pixels (about "
            f"{side}x{side}; anogan_tf.data.decode.MAX_IMAGE_PIXELS), which "
            f"guards against decompression bombs")


def _too_big(name: str, size: Optional[Tuple[int, int]], cause: str = ""
             ) -> DataError:
    what = (f"is {size[0]}x{size[1]} = {size[0] * size[1]:,} pixels"
            if size else f"is too large ({cause})")
    return DataError(
        f"{name}: the image {what}, over {_limit_text()}. Downscale it "
        f"before loading (e.g. `PIL.Image.open(p).reduce(4).save(q)`), or "
        f"cut it into tiles; raise the limit only for files you trust.")


def _open(source: Source, name: str) -> Image.Image:
    try:
        if isinstance(source, bytes):
            img = Image.open(io.BytesIO(source), formats=IMAGE_FORMATS)
        else:
            img = Image.open(source, formats=IMAGE_FORMATS)
        width, height = img.size
        # Pillow checks its own (global, changeable) limit; this is ours.
        if width * height > MAX_IMAGE_PIXELS:
            img.close()
            raise _too_big(name, (width, height))
        if width < 1 or height < 1:
            img.close()
            raise DataError(
                f"{name}: the image is {width}x{height} pixels (empty). "
                f"Re-export it or remove it.")
        img.load()
        return img
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{name}: file not found ({e}).") from e
    except IsADirectoryError as e:
        raise DataError(f"{name} is a folder, not an image file.") from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise _too_big(name, None, str(e)) from e
    except Exception as e:  # Pillow raises many types for corrupt data.
        raise DataError(
            f"{name}: cannot decode image ({type(e).__name__}: {e}). The file "
            f"is corrupt or not a PNG/JPEG/BMP/TIFF image; re-export it or "
            f"remove it{SKIP_BAD_FILES_HINT}.") from e


def _unsupported(name: str, img: Image.Image, e: Exception) -> DataError:
    return DataError(
        f"{name}: cannot convert its {img.format or ''} {img.mode!r} pixels "
        f"({type(e).__name__}: {e}). Re-save it as an 8- or 16-bit "
        f"grayscale, RGB or RGBA PNG.")


def decode_image(source: Source, channels: int, name: str = "") -> np.ndarray:
    """Decodes one image file or encoded byte string to [0, 1].

    Args:
      source: A file path, or the encoded bytes of a PNG/JPEG/BMP/TIFF image.
      channels: Channels of the result, 1 or 3.
      name: What to call the image in error messages (defaults to the path).

    Returns:
      float32 [H, W, channels] in [0, 1].

    Raises:
      DataError: the data cannot be decoded or has an unsupported depth.
    """
    name = name or (source if isinstance(source, str) else "image bytes")
    img = _open(source, name)
    try:
        unit = _unit_from_pil(img, name)
    except DataError:
        raise
    except Exception as e:  # odd modes Pillow opens but cannot convert
        raise _unsupported(name, img, e) from e
    finally:
        img.close()
    return convert_channels(unit, channels)


def decode_mask(source: Source, name: str = "") -> np.ndarray:
    """Decodes a ground-truth mask image and binarises it (> 0 -> 1).

    Args:
      source: A file path or encoded image bytes.
      name: What to call the mask in error messages.

    Returns:
      uint8 [H, W] with values 0 and 1.

    Raises:
      DataError: the data cannot be decoded.
    """
    name = name or (source if isinstance(source, str) else "mask bytes")
    img = _open(source, name)
    try:
        arr = np.asarray(img)
        if arr.ndim == 3:
            arr = arr.any(axis=-1)
        if arr.ndim != 2:
            raise ValueError(f"pixel array of shape {arr.shape}")
        return (arr > 0).astype(np.uint8)
    except Exception as e:  # odd modes Pillow opens but cannot convert
        raise _unsupported(name, img, e) from e
    finally:
        img.close()


@dataclasses.dataclass(frozen=True)
class Decoded:
    """One result of `decode_many`.

    Attributes:
      image: float32 [H, W, C] in [0, 1] (after resizing); None on error.
      mask: uint8 [H, W] in {0, 1} when a mask source was given, else None.
      original_shape: (H, W) as stored, before resizing.
      error: The DataError message when decoding failed, else None.
    """

    image: Optional[np.ndarray]
    mask: Optional[np.ndarray]
    original_shape: Tuple[int, int]
    error: Optional[str]


def decode_many(
    sources: Sequence[Source],
    names: Sequence[str],
    channels: int,
    resize: Optional[Tuple[int, int]] = None,
    mask_sources: Optional[Sequence[Optional[Source]]] = None,
) -> List[Decoded]:
    """Decodes many images (and optional masks) in a parallel tf.data map.

    The results keep the input order. Failures are reported in
    `Decoded.error` instead of raised, so the caller decides whether to skip.

    Args:
      sources: File paths, or encoded image byte strings.
      names: One display name per source, used in error messages.
      channels: Output channels, 1 or 3.
      resize: Optional (height, width); images are resized bilinearly (with
        antialiasing when shrinking), masks by nearest neighbour.
      mask_sources: Optional mask path/bytes per source (None or "" for none).
        A mask must have the same size as its image.

    Returns:
      One `Decoded` per source.

    Raises:
      DataError: `names` and `sources` differ in length (decoding failures
        are returned, not raised).
    """
    if len(names) != len(sources):
        raise DataError(
            f"decode_many got {len(sources)} sources but {len(names)} names.")
    if not sources:
        return []
    masks = list(mask_sources) if mask_sources is not None else [None] * len(
        sources)
    has_mask = [m is not None and len(m) > 0 for m in masks]
    # Paths as the file system's bytes: a name that is not valid UTF-8
    # (surrogate-escaped by os.listdir) still reaches the decoder intact.
    src = [os.fsencode(s) if not isinstance(s, bytes) else s for s in sources]
    msrc = [os.fsencode(m) if h and not isinstance(m, bytes) else (m or b"")
            for m, h in zip(masks, has_mask)]

    def decode_one(index, source, mask_source):
        i = int(index.numpy())
        try:
            raw = source.numpy()
            image = decode_image(raw if isinstance(sources[i], bytes)
                                 else os.fsdecode(raw), channels, names[i])
            mask = np.zeros(image.shape[:2], np.uint8)
            if has_mask[i]:
                raw_mask = mask_source.numpy()
                mask_name = (masks[i] if isinstance(masks[i], str)
                             else f"mask of {names[i]}")
                mask = decode_mask(raw_mask if isinstance(masks[i], bytes)
                                   else os.fsdecode(raw_mask), mask_name)
                if mask.shape != image.shape[:2]:
                    raise DataError(
                        f"{mask_name}: mask is {mask.shape[0]}x{mask.shape[1]}"
                        f" but its image {names[i]} is {image.shape[0]}x"
                        f"{image.shape[1]}. Masks must match their images "
                        f"pixel for pixel; re-export the mask at the image "
                        f"size.")
            return image, mask, b""
        except DataError as e:
            message = str(e)
        except Exception as e:  # Never let a bare traceback escape.
            message = f"{names[i]}: {type(e).__name__}: {e}"
        return (np.zeros((1, 1, channels), np.float32),
                np.zeros((1, 1), np.uint8), message.encode())

    def graph_fn(index, source, mask_source):
        image, mask, error = tf.py_function(
            decode_one, [index, source, mask_source],
            [tf.float32, tf.uint8, tf.string])
        image.set_shape([None, None, channels])
        mask.set_shape([None, None])
        shape = tf.shape(image)[:2]
        if resize is not None:
            image = tf.image.resize(image, resize, "bilinear", antialias=True)
            image = tf.clip_by_value(image, 0.0, 1.0)
            mask = tf.image.resize(mask[..., None], resize,
                                   "nearest")[..., 0]
        return image, mask, shape, error

    ds = tf.data.Dataset.from_tensor_slices(
        (tf.range(len(src), dtype=tf.int64), tf.constant(src, tf.string),
         tf.constant(msrc, tf.string)))
    ds = ds.map(graph_fn, num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    results = []
    for i, (image, mask, shape, error) in enumerate(ds.as_numpy_iterator()):
        if error:
            results.append(Decoded(None, None, (0, 0), error.decode()))
            continue
        results.append(Decoded(
            image=image.astype(np.float32, copy=False),
            mask=mask.astype(np.uint8) if has_mask[i] else None,
            original_shape=(int(shape[0]), int(shape[1])),
            error=None))
    return results


def stack_decoded(results: Sequence[Decoded], names: Sequence[str],
                  skip_bad: bool, resized: bool
                  ) -> Tuple[List[int], np.ndarray, List[Optional[np.ndarray]]]:
    """Checks decoded images for errors and equal sizes, and stacks them.

    Args:
      results: The output of `decode_many`.
      names: One display name per result (file path, or file and record).
      skip_bad: Skip failed items with a logged count instead of raising.
      resized: Whether the images were resized to one size (then their
        stored sizes may differ).

    Returns:
      (positions of the kept results, float32 [N, H, W, C] in [0, 1], the
      kept results' masks, None where an item had no mask).

    Raises:
      DataError: an item failed (without `skip_bad`), nothing decoded, or
        the stored sizes differ without resizing.
    """
    kept: List[int] = []
    bad: List[str] = []
    for k, result in enumerate(results):
        if result.error is None:
            kept.append(k)
        elif skip_bad:
            bad.append(result.error)
        else:
            raise DataError(result.error)
    if bad:
        logging.warning("Skipped %d unreadable images (skip_bad_files); the "
                        "first: %s", len(bad), bad[0])
    if not kept:
        raise DataError(
            f"None of the {len(results)} images could be decoded; the first "
            f"error: {bad[0] if bad else 'no images given'}.")
    shapes = [results[k].original_shape for k in kept]
    if not resized and len(set(shapes)) > 1:
        other = next(j for j, s in enumerate(shapes) if s != shapes[0])
        (h0, w0), (h1, w1) = shapes[0], shapes[other]
        raise DataError(
            f"Images have different sizes: {names[kept[0]]} is {h0}x{w0} but "
            f"{names[kept[other]]} is {h1}x{w1}. Pass --resize=H,W (e.g. "
            f"--resize={h0},{w0}) to resize every image to one size.")
    images = np.stack([results[k].image for k in kept])
    return kept, images, [results[k].mask for k in kept]


def resize_images(images: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of [N, H, W, C] float images (antialiased when shrinking).

    Args:
      images: float array [N, H, W, C].
      size: (height, width) wanted.

    Returns:
      float32 [N, height, width, C]; the input itself if already that size.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(images.shape[1:3]) == size or images.shape[0] == 0:
        if images.shape[0] == 0:
            return np.zeros((0,) + size + images.shape[3:], np.float32)
        return images.astype(np.float32, copy=False)
    lo, hi = float(images.min()), float(images.max())
    out = []
    for start in range(0, images.shape[0], 256):  # Bound the memory use.
        chunk = tf.image.resize(images[start:start + 256], size, "bilinear",
                                antialias=True)
        out.append(chunk.numpy())
    # The triangle filter never overshoots; clipping only removes rounding.
    return np.clip(np.concatenate(out, axis=0), lo, hi).astype(np.float32)


def resize_masks(masks: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of [N, H, W] masks.

    Args:
      masks: integer array [N, H, W].
      size: (height, width) wanted.

    Returns:
      uint8 [N, height, width].
    """
    size = (int(size[0]), int(size[1]))
    if tuple(masks.shape[1:3]) == size:
        return masks.astype(np.uint8, copy=False)
    resized = tf.image.resize(masks[..., None].astype(np.uint8), size,
                              "nearest")
    return resized.numpy()[..., 0].astype(np.uint8)
