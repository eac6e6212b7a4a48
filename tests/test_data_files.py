"""Tests of loading image files: formats, folders, MVTec layout, bad input."""

import logging
import os

import numpy as np
import pytest
from PIL import Image

from anogan_tf.config import DataConfig
from anogan_tf.data import DataError, load_images
from anogan_tf.data.decode import decode_many


def _save(path, array, **kwargs):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)
    return path


def _gray(h=16, w=16, value=None, seed=0):
    if value is not None:
        return np.full((h, w), value, np.uint8)
    return np.random.default_rng(seed).integers(0, 256, (h, w), dtype=np.uint8)


def _folder(path, channels=1, **kwargs):
    return DataConfig(dataset="folder", data_path=str(path), channels=channels,
                      image_size=16, **kwargs)


def test_png_gray_values_are_scaled_to_minus_one_one(tmp_path):
    pixels = np.array([[0, 255], [128, 64]], np.uint8).repeat(8, 0).repeat(8, 1)
    _save(str(tmp_path / "a.png"), pixels)
    s = load_images(_folder(tmp_path), "test")
    assert s.images.shape == (1, 16, 16, 1) and s.images.dtype == np.float32
    np.testing.assert_allclose(s.images[0, ..., 0], pixels / 127.5 - 1,
                               atol=1e-6)
    assert s.ids == ("a",) and s.labels is None and s.masks is None


def test_rgb_png_to_gray_by_luminance_and_gray_to_rgb(tmp_path):
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 100, 50
    _save(str(tmp_path / "rgb" / "c.png"), rgb)
    gray = load_images(_folder(tmp_path / "rgb", channels=1), "test")
    luma = (0.299 * 200 + 0.587 * 100 + 0.114 * 50) / 255
    np.testing.assert_allclose(gray.images[..., 0], 2 * luma - 1, atol=1e-5)
    color = load_images(_folder(tmp_path / "rgb", channels=3), "test")
    np.testing.assert_allclose(color.images[0, 0, 0],
                               np.array([200, 100, 50]) / 127.5 - 1, atol=1e-6)
    _save(str(tmp_path / "g" / "g.png"), _gray(value=51))
    repeated = load_images(_folder(tmp_path / "g", channels=3), "test")
    assert repeated.images.shape == (1, 16, 16, 3)
    np.testing.assert_allclose(repeated.images, 51 / 127.5 - 1, atol=1e-6)


def test_jpeg_bmp_tiff8_rgba_and_palette_decode(tmp_path):
    _save(str(tmp_path / "a.jpg"), _gray(value=200), quality=95)
    _save(str(tmp_path / "b.bmp"), _gray(value=30))
    _save(str(tmp_path / "c.tif"), _gray(value=90))
    rgba = np.dstack([np.full((16, 16, 3), 120, np.uint8),
                      np.zeros((16, 16), np.uint8)])
    _save(str(tmp_path / "d.png"), rgba)
    palette = Image.fromarray(_gray(value=10)).convert("P")
    palette.save(str(tmp_path / "e.PNG"))
    s = load_images(_folder(tmp_path), "train")
    assert s.ids == ("a", "b", "c", "d", "e")
    expected = np.array([200, 30, 90, 120, 10]) / 127.5 - 1
    # JPEG is lossy; the others are exact.
    means = s.images.mean(axis=(1, 2, 3))
    assert abs(means[0] - expected[0]) < 0.02
    np.testing.assert_allclose(means[1:], expected[1:], atol=1e-5)
    assert s.labels.tolist() == [0] * 5


def test_tiff_16bit_scaled_by_65535(tmp_path):
    pixels = np.zeros((16, 16), np.uint16)
    pixels[0, 0], pixels[0, 1] = 65535, 32768
    _save(str(tmp_path / "deep.tif"), pixels)
    s = load_images(_folder(tmp_path), "test")
    img = s.images[0, ..., 0]
    assert img[0, 0] == pytest.approx(1.0)
    assert img[1, 1] == pytest.approx(-1.0)
    assert img[0, 1] == pytest.approx(0.0, abs=1e-4)


def test_decode_many_keeps_order_and_reports_errors(tmp_path):
    paths = []
    for i in range(12):
        paths.append(_save(str(tmp_path / f"{i:02d}.png"), _gray(value=i * 20)))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    paths.insert(5, str(tmp_path / "bad.png"))
    results = decode_many(paths, paths, channels=1)
    assert results[5].error is not None and "bad.png" in results[5].error
    values = [r.image[0, 0, 0] * 255 for r in results if r.error is None]
    np.testing.assert_allclose(values, [i * 20 for i in range(12)], atol=1e-3)


def test_plain_folder_is_recursive_sorted_and_ignores_other_files(tmp_path):
    _save(str(tmp_path / "b" / "z.png"), _gray(seed=1))
    _save(str(tmp_path / "a" / "y.png"), _gray(seed=2))
    _save(str(tmp_path / "x.png"), _gray(seed=3))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "a" / "meta.json").write_text("{}")
    (tmp_path / "._x.png").write_bytes(b"macOS resource fork")  # Hidden.
    _save(str(tmp_path / ".cache" / "copy.png"), _gray(seed=4))
    train = load_images(_folder(tmp_path), "train")
    test = load_images(_folder(tmp_path), "test")
    assert train.ids == ("a/y", "b/z", "x")
    assert train.labels.tolist() == [0, 0, 0]
    assert test.ids == train.ids and test.labels is None
    np.testing.assert_array_equal(train.images, test.images)
    with pytest.raises(DataError, match="calibration data must be given "
                       "explicitly"):
        load_images(_folder(tmp_path), "calibration")


def _mvtec(root, n_train=20):
    for i in range(n_train):
        _save(str(root / "train" / "good" / f"{i:03d}.png"), _gray(seed=i))
    _save(str(root / "test" / "good" / "000.png"), _gray(seed=100))
    for defect in ("crack", "hole"):
        for i in range(2):
            img = _gray(value=40)
            img[2:6, 3 + i:9] = 250
            _save(str(root / "test" / defect / f"{i:03d}.png"), img)
            if not (defect == "hole" and i == 1):  # One mask is missing.
                mask = np.zeros((16, 16), np.uint8)
                mask[2:6, 3 + i:9] = 255
                _save(str(root / "ground_truth" / defect / f"{i:03d}_mask.png"),
                      mask)


def test_mvtec_layout_labels_categories_and_masks(tmp_path, caplog):
    _mvtec(tmp_path)
    with caplog.at_level(logging.WARNING):
        test = load_images(_folder(tmp_path), "test")
    assert "1 defect images have no ground-truth mask" in caplog.text
    assert "001_mask.png" in caplog.text
    assert test.ids == ("test/crack/000", "test/crack/001", "test/good/000",
                        "test/hole/000", "test/hole/001")
    assert test.labels.tolist() == [1, 1, 0, 1, 1]
    assert test.categories == ("crack", "crack", "good", "hole", "hole")
    assert test.masks.shape == (5, 16, 16)
    # Masks line up with the bright defect pixels.
    crack1 = test.masks[1].astype(bool)
    assert crack1.sum() == 4 * 5
    assert (test.images[1, ..., 0][crack1] > 0.9).all()
    assert (test.images[1, ..., 0][~crack1] < 0).all()
    assert test.masks[2].sum() == 0  # Normal image.
    assert test.masks[4].sum() == 0  # Missing mask -> zeros (and a warning).


def test_mvtec_masks_follow_resize_with_nearest(tmp_path):
    _mvtec(tmp_path)
    test = load_images(_folder(tmp_path, resize=(32, 32)), "test")
    assert test.images.shape == (5, 32, 32, 1)
    assert set(np.unique(test.masks)) == {0, 1}
    assert test.masks[0].sum() == 4 * 6 * 4  # Each mask pixel -> 2x2.


def test_mvtec_calibration_is_held_out_of_train(tmp_path):
    _mvtec(tmp_path, n_train=20)
    config = _folder(tmp_path)
    train = load_images(config, "train")
    cal = load_images(config, "calibration")
    assert len(cal) == 2 and len(train) == 18
    assert not set(train.ids) & set(cal.ids)
    assert set(train.ids) | set(cal.ids) == {
        f"train/good/{i:03d}" for i in range(20)}
    assert cal.labels.tolist() == [0, 0] and train.labels.sum() == 0
    assert load_images(config, "calibration").ids == cal.ids  # Deterministic.


def test_resize_unifies_mixed_sizes(tmp_path):
    _save(str(tmp_path / "a.png"), _gray(16, 16, value=100))
    _save(str(tmp_path / "b.png"), _gray(20, 24, value=100))
    s = load_images(_folder(tmp_path, resize=(18, 18)), "train")
    assert s.images.shape == (2, 18, 18, 1)
    np.testing.assert_allclose(s.images, 100 / 127.5 - 1, atol=1e-5)


# ----------------------------------------------------------------- bad input


def test_npy_dataset_given_a_folder(tmp_path):
    with pytest.raises(DataError, match="is a folder.*--dataset=folder"):
        load_images(DataConfig(dataset="npy", data_path=str(tmp_path)),
                    "train")


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist.*--data_path"):
        load_images(_folder(tmp_path / "nope"), "train")
    with pytest.raises(DataError, match="no data_path"):
        load_images(DataConfig(dataset="folder"), "train")


def test_empty_folder_names_extensions(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError) as e:
        load_images(_folder(tmp_path), "train")
    assert "no image files" in str(e.value)
    assert ".png" in str(e.value) and ".tiff" in str(e.value)


def test_corrupt_file_is_named_and_can_be_skipped(tmp_path, caplog):
    _save(str(tmp_path / "good.png"), _gray(value=7))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    with pytest.raises(DataError) as e:
        load_images(_folder(tmp_path), "train")
    assert "broken.png" in str(e.value) and "--skip_bad_files" in str(e.value)
    with caplog.at_level(logging.WARNING):
        s = load_images(_folder(tmp_path, skip_bad_files=True), "train")
    assert s.ids == ("good",)
    assert "Skipped 1 unreadable images" in caplog.text


def test_text_file_with_image_extension_is_corrupt_not_ignored(tmp_path):
    _save(str(tmp_path / "ok.png"), _gray())
    (tmp_path / "fake.jpg").write_text("I am text")
    with pytest.raises(DataError, match="fake.jpg.*cannot decode"):
        load_images(_folder(tmp_path), "train")


def test_truncated_png_is_corrupt(tmp_path):
    path = _save(str(tmp_path / "cut.png"), _gray(64, 64))
    data = open(path, "rb").read()
    open(path, "wb").write(data[:len(data) // 2])
    with pytest.raises(DataError, match="cut.png"):
        load_images(_folder(tmp_path), "train")


def test_mixed_sizes_list_two_files_and_suggest_resize(tmp_path):
    _save(str(tmp_path / "a.png"), _gray(16, 16))
    _save(str(tmp_path / "b.png"), _gray(20, 24))
    with pytest.raises(DataError) as e:
        load_images(_folder(tmp_path), "train")
    message = str(e.value)
    assert "a.png is 16x16" in message and "b.png is 20x24" in message
    assert "--resize=H,W" in message


def test_image_smaller_than_patch(tmp_path):
    _save(str(tmp_path / "tiny.png"), _gray(8, 12))
    with pytest.raises(DataError) as e:
        load_images(_folder(tmp_path, patch_size=16), "train")
    message = str(e.value)
    assert "'tiny'" in message and "8x12" in message
    assert "patch size 16" in message
    assert "--patch_size" in message and "--resize" in message


def test_mask_of_wrong_size_names_both_files(tmp_path):
    _mvtec(tmp_path, n_train=3)
    _save(str(tmp_path / "ground_truth" / "crack" / "000_mask.png"),
          np.zeros((8, 8), np.uint8))
    with pytest.raises(DataError, match="000_mask.png: mask is 8x8"):
        load_images(_folder(tmp_path), "test")


def test_bad_config_values(tmp_path):
    _save(str(tmp_path / "a.png"), _gray())
    with pytest.raises(DataError, match="--channels"):
        load_images(_folder(tmp_path, channels=2), "train")
    with pytest.raises(DataError, match="--resize=256,256"):
        load_images(_folder(tmp_path, resize=(0, 5)), "train")
    with pytest.raises(DataError, match="got .256,256."):
        load_images(_folder(tmp_path, resize="256,256"), "train")
    with pytest.raises(DataError, match="Unknown split"):
        load_images(_folder(tmp_path), "validation")
    with pytest.raises(DataError, match="Unknown dataset"):
        load_images(DataConfig(dataset="imagenet"), "train")
