"""Images stored as `tf.train.Example` records.

Each Example holds `image` (bytes: an encoded PNG, JPEG or BMP), and
optionally `label` (int64, 0 normal / 1 anomalous), `mask` (bytes: an
encoded PNG, nonzero = anomalous) and `id` (bytes, UTF-8). `write_tfrecord`
writes this format; `read_tfrecord_examples` reads it back, naming the file
and record index of anything corrupt.

Before TensorFlow reads a file, its record framing (each record: an 8-byte
length, the length's masked CRC-32C, the data, the data's CRC) is walked in
Python: TensorFlow's reader allocates whatever a length field with a valid
CRC claims, so a crafted 1 TB length crashed the process (SIGSEGV) instead
of raising. Only the well-framed records are handed to TensorFlow, which
still checks each record's data CRC.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging
from PIL import Image

from anogan_tf.data.errors import DataError

__all__ = ["write_tfrecord", "read_tfrecord_examples", "RawExample",
           "expand_tfrecord_paths"]


@dataclasses.dataclass(frozen=True)
class RawExample:
    """One undecoded record.

    Attributes:
      image: Encoded image bytes.
      label: 0/1, or None when the record has no label.
      mask: Encoded mask bytes, or None.
      id: The record's id (or "<file stem>/<record index>" when it has none).
      where: "<file> record <index>", for error messages.
    """

    image: bytes
    label: Optional[int]
    mask: Optional[bytes]
    id: str
    where: str


def _encode_png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tfrecord(path: str, images_uint8: np.ndarray,
                   labels: Optional[np.ndarray] = None,
                   masks: Optional[np.ndarray] = None,
                   ids: Optional[Sequence[str]] = None) -> str:
    """Writes images (and optional labels, masks, ids) as PNG Examples.

    Args:
      path: Output TFRecord file; missing parent folders are created.
      images_uint8: uint8 [N, H, W] or [N, H, W, C] with C in 1, 3 (uint16
        grayscale is also accepted and written as 16-bit PNG).
      labels: Optional [N] integers, 0 normal / 1 anomalous.
      masks: Optional [N, H, W] masks; nonzero pixels are anomalous.
      ids: Optional [N] unique strings.

    Returns:
      `path`.

    Raises:
      DataError: an argument has the wrong dtype or shape.
    """
    images = np.asarray(images_uint8)
    if images.ndim == 4 and images.shape[-1] == 1:
        images = images[..., 0]
    if images.ndim not in (3, 4) or (images.ndim == 4 and
                                     images.shape[-1] != 3):
        raise DataError(
            f"write_tfrecord({path!r}): images must be [N, H, W] or "
            f"[N, H, W, 1|3], got shape {images.shape}.")
    if images.dtype != np.uint8 and not (images.dtype == np.uint16 and
                                         images.ndim == 3):
        raise DataError(
            f"write_tfrecord({path!r}): images must be uint8 (or uint16 "
            f"grayscale), got {images.dtype}. Convert [-1, 1] floats with "
            f"images_to_uint8().")
    n = images.shape[0]
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (n,) or not np.isin(labels, (0, 1)).all():
            raise DataError(
                f"write_tfrecord({path!r}): labels must be [{n}] values in "
                f"{{0, 1}}, got shape {labels.shape}.")
    if masks is not None:
        masks = np.asarray(masks)
        if masks.shape != images.shape[:3]:
            raise DataError(
                f"write_tfrecord({path!r}): masks must have shape "
                f"{images.shape[:3]}, got {masks.shape}.")
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != n or len(set(ids)) != n:
            raise DataError(
                f"write_tfrecord({path!r}): ids must be {n} unique strings, "
                f"got {len(ids)} ({len(set(ids))} unique).")
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for i in range(n):
            feature = {"image": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[_encode_png(images[i])]))}
            if labels is not None:
                feature["label"] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=[int(labels[i])]))
            if masks is not None:
                mask_png = _encode_png((masks[i] > 0).astype(np.uint8) * 255)
                feature["mask"] = tf.train.Feature(
                    bytes_list=tf.train.BytesList(value=[mask_png]))
            if ids is not None:
                feature["id"] = tf.train.Feature(bytes_list=tf.train.BytesList(
                    value=[ids[i].encode("utf-8")]))
            example = tf.train.Example(
                features=tf.train.Features(feature=feature))
            writer.write(example.SerializeToString())
    return path


def expand_tfrecord_paths(pattern: str) -> List[str]:
    """Files matching a TFRecord path or glob, sorted.

    Args:
      pattern: A file path or a glob such as "data/train-*.tfrecord".

    Returns:
      The sorted matching files.

    Raises:
      DataError: nothing matches.
    """
    if any(c in pattern for c in "*?["):
        files = sorted(tf.io.gfile.glob(pattern))
    else:
        files = [pattern] if tf.io.gfile.exists(pattern) else []
    files = [f for f in files if not tf.io.gfile.isdir(f)]
    if not files:
        raise DataError(
            f"No TFRecord file matches {pattern!r}. Pass --data_path as an "
            f"existing file or a glob such as 'data/*.tfrecord'.")
    return files


def _crc32c_table() -> Tuple[int, ...]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def _masked_crc32c(data: bytes) -> int:
    """The TFRecord checksum: CRC-32C (Castagnoli), rotated and offset."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _check_framing(path: str) -> Tuple[int, Optional[str]]:
    """Walks a TFRecord file's record headers without reading the records.

    Args:
      path: A TFRecord file (uncompressed).

    Returns:
      (the number of leading records whose header is sound and whose data
      fits in the file, None or what is wrong with the next record).
    """
    size = tf.io.gfile.stat(path).length
    count = offset = 0
    with tf.io.gfile.GFile(path, "rb") as f:
        while offset < size:
            header = f.read(12)
            if len(header) < 12:
                return count, (f"the file ends {len(header)} bytes into the "
                               f"record's 12-byte header (truncated)")
            length, crc = struct.unpack("<QI", header)
            if _masked_crc32c(header[:8]) != crc:
                return count, ("its length field fails its checksum (corrupt, "
                               "or not a TFRecord file)")
            left = size - offset - 12
            if length + 4 > left:
                return count, (f"it claims {length:,} bytes of data but only "
                               f"{max(left - 4, 0):,} are left in the file "
                               f"(truncated or corrupt)")
            offset += 12 + length + 4
            f.seek(offset)
            count += 1
    return count, None


def _bytes_feature(example: tf.train.Example, key: str) -> Optional[bytes]:
    feature = example.features.feature.get(key)
    if feature is None:
        return None
    kind = feature.WhichOneof("kind")
    if kind not in (None, "bytes_list"):
        raise ValueError(f"its {key!r} feature is a {kind}, not a bytes_list")
    if not feature.bytes_list.value:
        return None
    return feature.bytes_list.value[0]


def read_tfrecord_examples(pattern: str,
                           skip_bad: bool = False) -> List[RawExample]:
    """Reads every Example from the matching TFRecord files, undecoded.

    Args:
      pattern: A TFRecord path or glob.
      skip_bad: Skip unparsable records (and, after corruption of the record
        framing, the rest of that file) with a logged count instead of
        raising.

    Returns:
      The records in file order.

    Raises:
      DataError: no file matches, or a record is corrupt (names the file and
        the record index) and `skip_bad` is False.
    """
    out: List[RawExample] = []
    skipped = 0
    fix = ("Re-write the file (e.g. with anogan_tf.data.write_tfrecord) or "
           "pass --skip_bad_files to skip the rest of it.")
    for path in expand_tfrecord_paths(pattern):
        stem = os.path.splitext(os.path.basename(path))[0]
        try:
            framed, framing_error = _check_framing(path)
        except (OSError, tf.errors.OpError) as e:
            raise DataError(f"{path} cannot be read ({e}). Check the path and "
                            f"its permissions.") from e
        iterator = iter(tf.data.TFRecordDataset(path).take(framed))
        index = 0
        while True:
            where = f"{path} record {index}"
            try:
                record = next(iterator).numpy()
            except StopIteration:
                if framing_error is None:
                    break
                message = f"{where} is corrupt: {framing_error}. {fix}"
                if not skip_bad:
                    raise DataError(message) from None
                logging.warning("%s Skipping the rest of %s.", message, path)
                skipped += 1
                break
            except (tf.errors.DataLossError, tf.errors.OpError) as e:
                message = (
                    f"{where} is corrupt ({type(e).__name__}: "
                    f"{e.message.splitlines()[0] if e.message else e}). {fix}")
                if not skip_bad:
                    raise DataError(message) from e
                logging.warning("%s Skipping the rest of %s.", message, path)
                skipped += 1
                break
            index += 1
            try:
                example = tf.train.Example.FromString(record)
                image = _bytes_feature(example, "image")
                if image is None:
                    raise ValueError("it has no 'image' bytes feature")
                label_feature = example.features.feature.get("label")
                label = None
                kind = (label_feature.WhichOneof("kind")
                        if label_feature is not None else None)
                if kind not in (None, "int64_list"):
                    raise ValueError(
                        f"its 'label' feature is a {kind}, not an int64_list")
                if label_feature is not None and label_feature.int64_list.value:
                    label = int(label_feature.int64_list.value[0])
                    if label not in (0, 1):
                        raise ValueError(f"its label is {label}, not 0 or 1")
                raw_id = _bytes_feature(example, "id")
                out.append(RawExample(
                    image=image, label=label,
                    mask=_bytes_feature(example, "mask"),
                    id=(raw_id.decode("utf-8") if raw_id
                        else f"{stem}/{index - 1:05d}"),
                    where=where))
            except Exception as e:  # protobuf DecodeError, bad fields, ...
                message = (
                    f"{where} is not a valid image Example ({e}). Each record "
                    f"must be a tf.train.Example with an 'image' bytes feature "
                    f"and optional 'label' (int64 0/1), 'mask' (bytes) and "
                    f"'id' (bytes); write them with write_tfrecord, or pass "
                    f"--skip_bad_files.")
                if not skip_bad:
                    raise DataError(message) from e
                skipped += 1
    if skipped:
        logging.warning("Skipped %d bad TFRecord records/files in %s.", skipped,
                        pattern)
    return out
