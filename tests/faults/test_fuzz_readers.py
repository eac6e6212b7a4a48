"""Property-based fuzzing of the readers (issue 14 deliverable 2).

The property, for every reader: an input either decodes to a valid array (the
documented dtype, shape and range) or raises DataError with a message; never
another exception type, never a crash, never a hang. Inputs: random bytes,
valid files truncated at random offsets or with random bytes changed, .npy
headers with random fields (huge shapes, wrong dtypes, pickled objects, a
header length that lies), random TFRecord framing and Example fields, and
folders of such files.

Hangs: every example runs under an interval timer (SIGALRM) as well as
Hypothesis' deadline, so a reader that blocks fails the test instead of
stopping it.
"""

import contextlib
import io
import os
import signal
import struct
import tempfile
import zipfile
import zlib

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from anogan_tf.config import DataConfig
from anogan_tf.data import DataError, load_images
from anogan_tf.data import arrays, decode, tfrecords

FUZZ = settings(max_examples=40, deadline=5000, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow,
                                       HealthCheck.data_too_large])
FEW = settings(FUZZ, max_examples=15)
HANG_SECONDS = 20


@contextlib.contextmanager
def _no_hang(seconds=HANG_SECONDS):
    def on_alarm(signum, frame):
        raise TimeoutError(f"reader still running after {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _decodes_or_data_error(fn, *args):
    """fn(*args) or the DataError it raised; any other exception fails."""
    with _no_hang():
        try:
            return fn(*args)
        except DataError as e:
            assert str(e).strip(), "a DataError without a message"
            return e


def _check_unit_image(image, channels):
    assert isinstance(image, np.ndarray) and image.dtype == np.float32
    assert image.ndim == 3 and image.shape[-1] == channels
    assert image.shape[0] >= 1 and image.shape[1] >= 1
    assert np.isfinite(image).all()
    assert image.min() >= 0.0 and image.max() <= 1.0


# --- valid files to start from ------------------------------------------

_MODES = ("L", "RGB", "RGBA", "P", "I;16", "1", "LA", "I", "F", "CMYK")
_FORMATS = {"PNG": ("L", "RGB", "RGBA", "P", "I;16", "1", "LA"),
            "JPEG": ("L", "RGB", "CMYK"),
            "BMP": ("L", "RGB", "P", "1"),
            "TIFF": ("L", "RGB", "RGBA", "I;16", "1", "I", "F", "CMYK")}


@st.composite
def encoded_images(draw):
    """A valid small image file of a random format, mode and size."""
    fmt = draw(st.sampled_from(sorted(_FORMATS)))
    mode = draw(st.sampled_from(_FORMATS[fmt]))
    h = draw(st.integers(1, 24))
    w = draw(st.integers(1, 24))
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode in ("I", "F"):
        values = rng.integers(0, 65536, (h, w)).astype(
            np.int32 if mode == "I" else np.float32)
        if mode == "F":
            values = values / 65535.0
        img = Image.fromarray(values.astype(np.int32 if mode == "I"
                                            else np.float32), mode)
    else:
        base = Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8))
        img = base.convert(mode) if mode != "RGB" else base
    buffer = io.BytesIO()
    img.save(buffer, format=fmt)
    return buffer.getvalue()


def _mutate(data, draw):
    """Truncates `data`, or changes a few of its bytes."""
    data = bytearray(data)
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, max(len(data) - 1, 0)))])
    for _ in range(draw(st.integers(1, 6))):
        if data:
            data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@st.composite
def damaged_images(draw):
    return _mutate(draw(encoded_images()), draw)


def _png_claiming(width, height):
    """A PNG whose IHDR claims width x height (valid CRCs, almost no data)."""
    def chunk(kind, body):
        return (struct.pack(">I", len(body)) + kind + body +
                struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) +
            chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


# --- image decoders -----------------------------------------------------

@FUZZ
@given(data=st.one_of(st.binary(max_size=4096), encoded_images(),
                      damaged_images()),
       channels=st.sampled_from((1, 3)))
def test_decode_image_returns_unit_image_or_data_error(data, channels):
    out = _decodes_or_data_error(decode.decode_image, data, channels, "fuzz")
    if isinstance(out, DataError):
        assert "fuzz" in str(out)
    else:
        _check_unit_image(out, channels)


@FUZZ
@given(data=st.one_of(st.binary(max_size=2048), encoded_images(),
                      damaged_images()))
def test_decode_mask_returns_binary_mask_or_data_error(data):
    out = _decodes_or_data_error(decode.decode_mask, data, "fuzz mask")
    if not isinstance(out, DataError):
        assert out.dtype == np.uint8 and out.ndim == 2
        assert set(np.unique(out).tolist()) <= {0, 1}


@FEW
@given(files=st.lists(st.one_of(encoded_images(), damaged_images(),
                                st.binary(max_size=256)),
                      min_size=1, max_size=4))
def test_decode_many_reports_every_failure_in_order(files):
    names = [f"item{i}" for i in range(len(files))]
    with _no_hang():
        results = decode.decode_many(files, names, 1, resize=(8, 8))
    assert len(results) == len(files)
    for name, data, result in zip(names, files, results):
        alone = _decodes_or_data_error(decode.decode_image, data, 1, name)
        if result.error is None:
            assert not isinstance(alone, DataError)
            assert result.image.shape == (8, 8, 1)
            assert result.original_shape == alone.shape[:2]
        else:
            assert isinstance(alone, DataError) and name in result.error


@pytest.mark.parametrize("width, height", [
    (8193, 8192),            # just over the limit: Pillow would only warn
    (100_000, 100_000),      # 10^10 pixels: Pillow raises its own error
    (2 ** 31 - 1, 2 ** 31 - 1),
])
def test_decompression_bomb_is_a_data_error_naming_the_file_and_limit(
        width, height):
    data = _png_claiming(width, height)
    assert len(data) < 200  # a small file that claims a huge image
    with pytest.raises(DataError) as e:
        decode.decode_image(data, 1, "bomb.png")
    message = str(e.value)
    assert "bomb.png" in message and f"{decode.MAX_IMAGE_PIXELS:,}" in message
    assert "Downscale" in message
    assert Image.MAX_IMAGE_PIXELS == decode.MAX_IMAGE_PIXELS


def test_image_at_the_limit_side_is_not_a_bomb():
    # 8192 x 8192 claims exactly the limit: refused only for its broken data.
    with pytest.raises(DataError) as e:
        decode.decode_image(_png_claiming(8192, 8192), 1, "edge.png")
    assert "decode limit" not in str(e.value)
    assert "cannot decode image" in str(e.value)


def test_formats_outside_png_jpeg_bmp_tiff_are_refused():
    for fmt in ("GIF", "PPM", "WEBP", "ICO", "TGA"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format=fmt)
        with pytest.raises(DataError, match="not a PNG/JPEG/BMP/TIFF image"):
            decode.decode_image(buffer.getvalue(), 1, f"x.{fmt.lower()}")


# --- .npy / .npz --------------------------------------------------------

_DESCRS = ("|u1", "<u2", "<f4", "<f8", "<f2", "|b1", "<i4", "<c8", "|O",
           "<U3", "|S2", "|V4", ">f4", "[('a', '<f4')]", "'bogus'", "7")


@st.composite
def npy_files(draw):
    """.npy bytes with a random (possibly lying or hostile) header."""
    descr = draw(st.sampled_from(_DESCRS))
    if not descr.startswith(("[", "'")) and not descr.isdigit():
        descr = repr(descr)
    shape = draw(st.lists(st.one_of(st.integers(0, 6),
                                    st.integers(-3, 2 ** 62)),
                          max_size=5))
    fortran = draw(st.sampled_from(("False", "True", "1", "None")))
    header = (f"{{'descr': {descr}, 'fortran_order': {fortran}, "
              f"'shape': {tuple(shape)!r}, }}")
    if draw(st.booleans()):  # a header that is not a dict literal at all
        header = draw(st.text(max_size=60))
    header = header.encode("latin1", "replace")
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    version = draw(st.sampled_from((b"\x01\x00", b"\x02\x00", b"\x03\x00",
                                    b"\x09\x00")))
    width = "<H" if version == b"\x01\x00" else "<I"
    length = len(header)
    if draw(st.integers(0, 4)) == 0:  # a header length that lies
        length = draw(st.integers(0, 2 ** 16 - 1 if width == "<H"
                                  else 2 ** 32 - 1))
    body = draw(st.binary(max_size=512))
    return (b"\x93NUMPY" + version + struct.pack(width, length) + header +
            body)


@st.composite
def valid_array_files(draw):
    """np.save/np.savez bytes of random (often unacceptable) arrays."""
    n = draw(st.integers(0, 3))
    h = draw(st.integers(0, 5))
    w = draw(st.integers(1, 5))
    c = draw(st.sampled_from((None, 1, 2, 3, 4)))
    shape = (n, h, w) + (() if c is None else (c,))
    dtype = draw(st.sampled_from(("uint8", "uint16", "float16", "float32",
                                  "float64", "int32", "bool", "complex64")))
    rng = np.random.default_rng(draw(st.integers(0, 2 ** 16)))
    images = (rng.uniform(-0.2, 1.2, shape) * (255 if "int" in dtype else 1))
    images = images.astype(dtype)
    if dtype.startswith("float") and draw(st.booleans()):
        images.flat[:1] = draw(st.sampled_from((np.nan, np.inf, 0.5)))
    buffer = io.BytesIO()
    kind = draw(st.sampled_from(("npy", "npz", "pickled", "object_npz")))
    if kind == "npy":
        np.save(buffer, images)
    elif kind == "pickled":
        np.save(buffer, np.array([{"a": 1}, None], dtype=object),
                allow_pickle=True)
    else:
        extra = {}
        if draw(st.booleans()):
            extra["labels"] = rng.integers(0, draw(st.sampled_from((2, 3))),
                                           draw(st.integers(0, 4)))
        if draw(st.booleans()):
            extra["masks"] = rng.integers(0, 2, (n, h, draw(st.integers(1, 5))))
        if draw(st.booleans()):
            extra["ids"] = draw(st.sampled_from((
                np.array([f"i{k}" for k in range(n)]),
                np.array([b"\xff\xfe"] * n),
                np.array([b"a%d" % k for k in range(n)]),
                np.arange(n))))
        if kind == "object_npz":
            extra["labels"] = np.array([None] * n, dtype=object)
        key = draw(st.sampled_from(("images", "images", "pictures")))
        np.savez(buffer, **{key: images}, **extra)
    return buffer.getvalue()


@st.composite
def zips(draw):
    """.npz-like zip archives with odd members."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(("images.npy", "images", "labels.npy",
                                         "x.txt", "masks.npy")))
            member = draw(st.one_of(st.binary(max_size=128), npy_files()))
            z.writestr(name, member)
    return buffer.getvalue()


def _read_array_bytes(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.npz")
        with open(path, "wb") as f:
            f.write(data)
        return _decodes_or_data_error(arrays.read_array_file, path), path


def _check_arrays(out):
    images = out["images"]
    assert images.dtype == np.float32 and images.ndim == 4
    assert images.shape[0] >= 1 and images.shape[-1] in (1, 3)
    assert np.isfinite(images).all()
    assert images.min() >= 0.0 and images.max() <= 1.0
    n, h, w = images.shape[:3]
    if out["labels"] is not None:
        assert out["labels"].shape == (n,)
        assert set(out["labels"].tolist()) <= {0, 1}
    if out["masks"] is not None:
        assert out["masks"].shape == (n, h, w) and out["masks"].dtype == np.uint8
    if out["ids"] is not None:
        assert len(set(out["ids"].tolist())) == n


@FUZZ
@given(data=st.one_of(npy_files(), valid_array_files(), zips(),
                      st.binary(max_size=1024),
                      valid_array_files().flatmap(
                          lambda d: st.integers(0, max(len(d) - 1, 0)).map(
                              lambda k: d[:k]))))
def test_array_reader_returns_valid_arrays_or_data_error(data):
    out, path = _read_array_bytes(data)
    if isinstance(out, DataError):
        assert path in str(out)
    else:
        _check_arrays(out)


def test_pickled_and_text_files_get_their_own_messages(tmp_path):
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([object()], dtype=object), allow_pickle=True)
    import pickle
    raw_pickle = tmp_path / "raw.npy"
    raw_pickle.write_bytes(pickle.dumps({"images": [1, 2]}))
    text = tmp_path / "text.npy"
    text.write_text("1,2,3\n")
    for path in (pickled, raw_pickle):
        with pytest.raises(DataError, match="pickled .* refused"):
            arrays.read_array_file(str(path))
    with pytest.raises(DataError, match=r"not a \.npy or \.npz file") as e:
        arrays.read_array_file(str(text))
    assert "pickled" not in str(e.value).replace(str(text), "")


# --- TFRecords ----------------------------------------------------------

def _masked_crc(data):
    # Independent of tfrecords._masked_crc32c: zlib has no CRC-32C, so this
    # is checked against records TensorFlow wrote (below).
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _frame(payload, length=None):
    header = struct.pack("<Q", len(payload) if length is None else length)
    return (header + struct.pack("<I", _masked_crc(header)) + payload +
            struct.pack("<I", _masked_crc(payload)))


def _png(h=4, w=5, value=7):
    buffer = io.BytesIO()
    Image.fromarray(np.full((h, w), value, np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@st.composite
def features(draw):
    """A tf.train.Feature of a random kind and value."""
    kind = draw(st.sampled_from(("bytes", "int64", "float", "empty")))
    if kind == "bytes":
        values = draw(st.lists(st.one_of(st.binary(max_size=32),
                                         st.just(_png())), max_size=2))
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "int64":
        values = draw(st.lists(st.integers(-2 ** 63, 2 ** 63 - 1),
                               max_size=2))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))
    if kind == "float":
        values = draw(st.lists(st.floats(width=32), max_size=2))
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature()


@st.composite
def examples(draw):
    keys = draw(st.lists(st.sampled_from(("image", "label", "mask", "id",
                                          "other")), unique=True))
    if draw(st.booleans()):
        keys = ["image"] + [k for k in keys if k != "image"]
    feature = {k: draw(features()) for k in keys}
    if "image" in feature and draw(st.booleans()):
        feature["image"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[_png()]))
    return tf.train.Example(features=tf.train.Features(
        feature=feature)).SerializeToString()


@st.composite
def tfrecord_files(draw):
    records = draw(st.lists(st.one_of(examples(), st.binary(max_size=64)),
                            max_size=4))
    data = b"".join(_frame(r) for r in records)
    how = draw(st.sampled_from(("as is", "mutate", "huge length", "random")))
    if how == "mutate" and data:
        data = _mutate(data, draw)
    elif how == "huge length":  # a length with a valid checksum: 1 TB
        data += _frame(b"", length=draw(st.integers(2 ** 20, 2 ** 63)))[:12]
    elif how == "random":
        data = draw(st.binary(max_size=256))
    return data


def test_frame_matches_tensorflow_writer(tmp_path):
    path = str(tmp_path / "tf.tfrecord")
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(b"hello")
        writer.write(b"")
    assert open(path, "rb").read() == _frame(b"hello") + _frame(b"")
    assert tfrecords._masked_crc32c(b"hello") == _masked_crc(b"hello")


@FUZZ
@given(data=tfrecord_files(), skip_bad=st.booleans())
def test_tfrecord_reader_returns_examples_or_data_error(data, skip_bad):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fuzz.tfrecord")
        with open(path, "wb") as f:
            f.write(data)
        out = _decodes_or_data_error(tfrecords.read_tfrecord_examples, path,
                                     skip_bad)
        if isinstance(out, DataError):
            assert not skip_bad and path in str(out)
            return
        for example in out:
            assert isinstance(example.image, bytes)
            assert example.label in (None, 0, 1)
            assert example.mask is None or isinstance(example.mask, bytes)
            assert isinstance(example.id, str) and path in example.where


def test_tfrecord_huge_length_is_a_data_error_not_a_crash(tmp_path):
    # TensorFlow's reader allocates what a checksummed length claims: this
    # file made the process die with SIGSEGV before the framing check.
    path = tmp_path / "huge.tfrecord"
    good = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[_png()]))})).SerializeToString()
    path.write_bytes(_frame(good) + _frame(b"", length=10 ** 12)[:12] + b"ab")
    with pytest.raises(DataError) as e:
        tfrecords.read_tfrecord_examples(str(path))
    assert f"{path} record 1 is corrupt" in str(e.value)
    assert "1,000,000,000,000 bytes" in str(e.value)
    assert "--skip_bad_files" in str(e.value)
    kept = tfrecords.read_tfrecord_examples(str(path), skip_bad=True)
    assert len(kept) == 1 and kept[0].image == _png()


def test_tfrecord_label_of_the_wrong_kind_is_named(tmp_path):
    path = tmp_path / "label.tfrecord"
    record = tf.train.Example(features=tf.train.Features(feature={
        "image": tf.train.Feature(bytes_list=tf.train.BytesList(
            value=[_png()])),
        "label": tf.train.Feature(float_list=tf.train.FloatList(
            value=[1.0]))})).SerializeToString()
    path.write_bytes(_frame(record))
    with pytest.raises(DataError,
                       match="'label' feature is a float_list, not an int64"):
        tfrecords.read_tfrecord_examples(str(path))


# --- folders ------------------------------------------------------------

@st.composite
def folder_files(draw):
    """{relative name: bytes} for a folder dataset."""
    names = draw(st.lists(st.sampled_from((
        "a.png", "b.PNG", "c.jpg", "d.bmp", "e.tif", "sub/f.png", "g.txt",
        ".hidden.png", "sub/.h/i.png", "j.jpeg", "k.tiff")),
        unique=True, max_size=5))
    files = {}
    for name in names:
        files[name] = draw(st.one_of(
            encoded_images(), damaged_images(), st.binary(max_size=64),
            st.just(b""), st.just(_png(8, 8, 100))))
    return files


@FEW
@given(files=folder_files(), skip_bad=st.booleans(),
       resize=st.sampled_from((None, (8, 8))))
def test_folder_loading_returns_an_image_set_or_data_error(files, skip_bad,
                                                           resize):
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in files.items():
            path = os.path.join(tmp, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        config = DataConfig(dataset="folder", data_path=tmp, channels=1,
                            image_size=4, resize=resize,
                            skip_bad_files=skip_bad)
        out = _decodes_or_data_error(load_images, config, "train")
        if isinstance(out, DataError):
            return
        visible = [n for n in files if n.lower().endswith(
            decode.IMAGE_EXTENSIONS) and "/." not in "/" + n]
        assert 1 <= len(out) <= len(visible)
        assert out.images.dtype == np.float32 and out.images.shape[-1] == 1
        assert out.images.min() >= -1.0 and out.images.max() <= 1.0
        if resize is not None:
            assert out.images.shape[1:3] == resize
        if not skip_bad:
            assert len(out) == len(visible)
