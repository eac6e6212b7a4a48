"""anogan-client sends the pixels anogan-score scores (issue 11).

Both read a file with `anogan_tf.data.decode.decode_image`. The client's
batches are caught by a recording PredictClient (no server needed) and
compared with `anogan_tf.scoring.inputs.load_inputs`, the reader of
anogan-score's --inputs, and with values worked out by hand from the
stored samples.
"""

import numpy as np
import pytest
from PIL import Image

from anogan_tf.config import DataConfig
from anogan_tf.data import DataError
from anogan_tf.scoring.inputs import load_inputs
from anogan_tf.serving import (InputError, PredictClient, SCORE_KEYS,
                               SignatureInfo, read_image, score_files)

H, W = 2, 4
# score_images_uint8's table: p / 255 * 2 - 1 in float32.
UINT8_TO_FLOAT = (np.arange(256).astype(np.float32) / 255.0) * 2.0 - 1.0


class RecordingClient(PredictClient):
    """Answers a fixed signature and keeps every batch it is sent."""

    def __init__(self, channels, dtype):
        super().__init__("anogan", "sig", timeout=1)
        self._info = SignatureInfo(
            name="serving_uint8" if dtype == np.uint8 else "serving_default",
            input_key="images", input_dtype=np.dtype(dtype),
            image_shape=(H, W, channels), output_keys=SCORE_KEYS)
        self.sent = []

    def signature(self):
        return self._info

    def predict(self, inputs, output_keys=()):
        self._info.check_dtype(inputs.dtype)
        self.sent.append(inputs)
        return {k: np.zeros(len(inputs), np.float32) for k in SCORE_KEYS}


def _client_pixels(path, channels, dtype):
    client = RecordingClient(channels, dtype)
    score_files(client, [path], None, batch_size=4)
    (batch,) = client.sent
    assert batch.dtype == np.dtype(dtype) and batch.shape == (1, H, W, channels)
    return batch[0]


def _score_pixels(path, channels):
    images = load_inputs([path], DataConfig(channels=channels)).images
    assert images.dtype == np.float32 and images.shape == (1, H, W, channels)
    return images[0]


def _luma(rgb):
    return (0.299 * rgb[..., 0] + 0.587 * rgb[..., 1]
            + 0.114 * rgb[..., 2])[..., None]


RGB = np.array([[[255, 0, 0], [0, 255, 0], [0, 0, 255], [200, 100, 50]],
                [[1, 2, 3], [128, 128, 128], [255, 255, 255], [0, 0, 0]]],
               np.uint8)
GRAY = np.array([[0, 1, 77, 128], [200, 254, 255, 31]], np.uint8)
GRAY16 = np.array([[0, 1, 257, 32768], [65535, 1000, 40000, 12345]], np.uint16)
# Palette entry 0 is transparent; its colour is kept, the alpha dropped.
PALETTE = np.array([[10, 20, 30], [200, 100, 50], [255, 0, 0], [0, 0, 255]],
                   np.uint8)
INDICES = np.array([[0, 1, 2, 3], [3, 2, 1, 0]], np.uint8)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """{kind: (path, stored samples as float64 RGB or gray [H, W, 1|3],
    full scale)}."""
    d = tmp_path_factory.mktemp("pixels")
    Image.fromarray(RGB).save(d / "rgb.png")
    Image.fromarray(GRAY).save(d / "gray.png")
    Image.fromarray(GRAY16).save(d / "gray16.png")
    assert Image.open(d / "gray16.png").mode.startswith("I")
    pal = Image.fromarray(INDICES, "P")
    pal.putpalette(PALETTE.reshape(-1).tolist())
    pal.save(d / "palette.png", transparency=0)
    with Image.open(d / "palette.png") as im:
        assert im.mode == "P" and im.info["transparency"] == 0
    return {
        "rgb": (str(d / "rgb.png"), RGB.astype(np.float64), 255.0),
        "gray": (str(d / "gray.png"), GRAY[..., None].astype(np.float64), 255.0),
        "gray16": (str(d / "gray16.png"), GRAY16[..., None].astype(np.float64),
                   65535.0),
        "palette": (str(d / "palette.png"),
                    PALETTE[INDICES].astype(np.float64), 255.0),
    }


def _expected_unit(samples, full_scale, channels):
    """The [0, 1] pixels worked out by hand: samples / full scale, colour
    to luminance, gray repeated."""
    unit = samples / full_scale
    if channels == 1 and unit.shape[-1] == 3:
        return _luma(unit)
    if channels == 3 and unit.shape[-1] == 1:
        return np.repeat(unit, 3, axis=-1)
    return unit


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["rgb", "gray", "gray16", "palette"])
def test_float_signature_gets_the_pixels_anogan_score_scores(
        files, kind, channels):
    path, samples, full_scale = files[kind]
    sent = _client_pixels(path, channels, np.float32)
    scored = _score_pixels(path, channels)
    np.testing.assert_array_equal(sent, scored)  # bit for bit
    np.testing.assert_allclose(
        sent, 2.0 * _expected_unit(samples, full_scale, channels) - 1.0,
        rtol=0, atol=1e-6)


def test_colour_to_gray_is_float_luminance_not_8_bit_rounded(files):
    # Pure red: 0.299 -> 2 * 0.299 - 1 = -0.402. Pillow's "L" conversion
    # (the client's old reader) rounds to 76, i.e. 76 / 127.5 - 1 = -0.40392.
    sent = _client_pixels(files["rgb"][0], 1, np.float32)
    assert sent[0, 0, 0] == pytest.approx(-0.402, abs=1e-6)
    # Palette entry 1 is (200, 100, 50): luminance 0.5156862...
    sent = _client_pixels(files["palette"][0], 1, np.float32)
    assert sent[0, 1, 0] == pytest.approx(
        2 * (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255 - 1, abs=1e-6)


def test_16_bit_is_scaled_by_65535(files):
    sent = _client_pixels(files["gray16"][0], 1, np.float32)
    assert sent[0, 0, 0] == -1.0 and sent[1, 0, 0] == 1.0
    assert sent[0, 3, 0] == pytest.approx(2 * 32768 / 65535 - 1, abs=1e-7)
    assert sent[0, 1, 0] == pytest.approx(2 / 65535 - 1, abs=1e-7)


@pytest.mark.parametrize("kind,channels", [
    ("rgb", 3), ("gray", 1), ("gray", 3), ("palette", 3)])
def test_uint8_signature_gets_the_stored_8_bit_values(files, kind, channels):
    path, samples, _ = files[kind]
    sent = _client_pixels(path, channels, np.uint8)
    stored = samples if samples.shape[-1] == channels else np.repeat(
        samples, channels, axis=-1)
    np.testing.assert_array_equal(sent, stored.astype(np.uint8))
    # score_images_uint8 scales them into anogan-score's pixels exactly.
    np.testing.assert_array_equal(UINT8_TO_FLOAT[sent],
                                  _score_pixels(path, channels))


@pytest.mark.parametrize("channels", [1, 3])
def test_uint8_signature_rounds_16_bit_and_luminance(files, channels):
    sent = _client_pixels(files["gray16"][0], channels, np.uint8)
    expected = np.round(GRAY16.astype(np.float64) / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(sent, np.repeat(expected[..., None],
                                                  channels, axis=-1))
    sent = _client_pixels(files["rgb"][0], 1, np.uint8)
    np.testing.assert_array_equal(
        sent, np.round(_luma(RGB.astype(np.float64))).astype(np.uint8))


def test_read_image_is_the_client_path(files):
    path = files["palette"][0]
    np.testing.assert_array_equal(read_image(path, 3, np.float32),
                                  _client_pixels(path, 3, np.float32))


def test_corrupt_file_is_an_input_error_naming_the_file_and_fix(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(InputError) as e:
        _client_pixels(str(bad), 1, np.float32)
    message = str(e.value)
    assert "broken.png" in message and "cannot decode image" in message
    assert "re-export it or remove it." in message
    assert "skip_bad_files" not in message  # anogan-client has no such flag
    assert isinstance(e.value, DataError)
    # anogan-score's reader keeps its hint, once.
    with pytest.raises(DataError, match="--skip_bad_files") as e:
        load_inputs([str(bad)], DataConfig(channels=1))
    assert str(e.value).count("--skip_bad_files") == 1


def test_unsupported_signature_dtype_is_refused(files):
    with pytest.raises(InputError, match="float32 in \\[-1, 1\\] or uint8"):
        read_image(files["gray"][0], 1, np.float64)
