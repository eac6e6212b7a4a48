"""Tests of the rendered glyph digits, their one-class splits and the writer."""

import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import sys

import numpy as np
import pytest

from anogan_tf.config import DataConfig
from anogan_tf.data import DataError, load_images, render_glyphs
from anogan_tf.data import glyphs

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _script():
    path = os.path.join(_ROOT, "scripts", "make_oneclass.py")
    spec = importlib.util.spec_from_file_location("make_oneclass", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up.
    spec.loader.exec_module(module)
    return module


def _hashes(images):
    return {hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
            for x in images}


def _split(split, normal_class=3, seed=0, size=(28, 28), channels=1):
    return glyphs.load_glyphs_split(split, normal_class, seed, size, channels,
                                    num_train=30, num_calibration=10,
                                    num_test=40)


def test_renders_are_deterministic_per_seed_and_index():
    a = render_glyphs(3, 6, seed=0)
    np.testing.assert_array_equal(a, render_glyphs(3, 6, seed=0))
    assert not _hashes(a) & _hashes(render_glyphs(3, 6, seed=1))
    # Image i depends on (seed, class, i) only, not on how many are drawn.
    np.testing.assert_array_equal(render_glyphs(3, 3, seed=0, start=2), a[2:5])


def test_shapes_dtype_range_and_mnist_like_centring():
    x = render_glyphs(7, 12, seed=2)
    assert x.shape == (12, 28, 28) and x.dtype == np.uint8
    assert x.max(axis=(1, 2)).min() >= 200  # Every glyph has full-white ink.
    assert x[:, :2, :2].max() == 0 and x[:, -2:, -2:].max() == 0  # Black.
    ink = x.astype(np.float64)
    yy, xx = np.mgrid[:28, :28]
    mass = ink.sum(axis=(1, 2))
    com_y = (ink * yy).sum(axis=(1, 2)) / mass
    com_x = (ink * xx).sum(axis=(1, 2)) / mass
    # Centred by mass, then shifted by at most 1.5 px.
    assert np.abs(com_y - 13.5).max() < 2.0 and np.abs(com_x - 13.5).max() < 2.0
    assert render_glyphs(0, 2, seed=0, size=40).shape == (2, 40, 40)
    assert render_glyphs(0, 0, seed=0).shape == (0, 28, 28)


def test_every_font_draws_ten_distinct_digits():
    height, canvas = glyphs._geometry(28)
    assert len(glyphs.FONT_FILES) >= 20
    for font in range(len(glyphs.FONT_FILES)):
        digits = [glyphs._glyph(font, c, 0, height, canvas) for c in range(10)]
        assert all(d.max() > 0.9 for d in digits), glyphs.FONT_FILES[font]
        assert len(_hashes(digits)) == 10, glyphs.FONT_FILES[font]


def test_classes_differ_and_are_recognisable_by_nearest_mean():
    train = np.stack([render_glyphs(c, 20, 0) for c in range(10)]) / 255.0
    test = np.stack([render_glyphs(c, 6, 0, start=500)
                     for c in range(10)]) / 255.0
    means = train.mean(axis=1)  # [10, 28, 28]
    distances = ((test[:, :, None] - means[None, None]) ** 2).sum(axis=(3, 4))
    accuracy = (distances.argmin(axis=-1) == np.arange(10)[:, None]).mean()
    assert accuracy >= 0.4  # Chance is 0.1.
    assert np.abs(means[0] - means[1]).mean() > 0.08
    mass = train.sum(axis=(2, 3)).mean(axis=1)
    assert mass[1] < 0.8 * mass[0] and mass[1] < 0.8 * mass[8]


def test_images_of_one_class_vary():
    x = render_glyphs(5, 24, seed=0).reshape(24, -1) / 255.0
    assert len(_hashes(x)) == 24
    assert x.std(axis=0).mean() > 0.08
    pair = [np.abs(x[i] - x[j]).mean()
            for i, j in itertools.combinations(range(24), 2)]
    assert min(pair) > 0.01 and np.mean(pair) > 0.08


def test_splits_are_disjoint_and_scaled():
    train, cal, test = (_split(s) for s in ("train", "calibration", "test"))
    assert train.images.shape == (30, 28, 28, 1)
    assert train.images.dtype == np.float32
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert len(cal) == 10 and len(test) == 40
    assert not set(train.ids) & set(cal.ids)
    assert not set(train.ids) & set(test.ids) and not set(cal.ids) & set(test.ids)
    assert not _hashes(train.images) & _hashes(test.images)
    assert not _hashes(train.images) & _hashes(cal.images)
    assert not _hashes(cal.images) & _hashes(test.images)
    # Split membership does not depend on the other splits' sizes.
    bigger = glyphs.load_glyphs_split("test", 3, 0, (28, 28), 1,
                                      num_train=500, num_test=40)
    assert bigger.ids == test.ids
    rgb = _split("calibration", size=(32, 32), channels=3)
    assert rgb.images.shape == (10, 32, 32, 3)


def test_test_split_labels_and_class_balance():
    test = _split("test", normal_class=3)
    assert test.labels.sum() == 20
    counts = {}
    for label, category, image_id in zip(test.labels, test.categories,
                                         test.ids):
        digit = image_id.split("/")[1]
        if label == 0:
            assert category == "good" and digit == "3"
        else:
            assert category == digit != "3"
        counts[category] = counts.get(category, 0) + 1
    assert counts.pop("good") == 20
    assert sorted(counts) == [str(c) for c in range(10) if c != 3]
    assert set(counts.values()) == {2, 3}
    train = _split("train", normal_class=3)
    assert set(train.categories) == {"good"} and train.labels.sum() == 0


def test_dataset_glyphs_through_load_images():
    config = DataConfig(dataset="glyphs", image_size=32, normal_class=4,
                        seed=1, glyphs_num_train=12,
                        glyphs_num_calibration=4, glyphs_num_test=18)
    train = load_images(config, "train")
    assert train.images.shape == (12, 32, 32, 1)
    assert train.ids[0] == "glyphs/4/0000000"
    np.testing.assert_array_equal(
        train.images,
        glyphs.load_glyphs_split("train", 4, 1, (32, 32), 1, num_train=12).images)
    assert len(load_images(config, "calibration")) == 4
    assert load_images(config, "test").labels.sum() == 9


def test_bad_arguments_say_how_to_fix():
    with pytest.raises(DataError, match="--normal_class=0"):
        load_images(DataConfig(dataset="glyphs", normal_class=10), "train")
    with pytest.raises(DataError, match="--normal_class"):
        render_glyphs(True, 2, 0)
    with pytest.raises(DataError, match="--glyphs_num_test=400"):
        load_images(DataConfig(dataset="glyphs", glyphs_num_test=1), "test")
    with pytest.raises(DataError, match="Unknown split"):
        glyphs.glyph_split_plan("val", 0)


def test_writer_round_trip_through_the_folder_loader(tmp_path):
    make = _script()
    out = str(tmp_path / "glyphs3")
    make.write_oneclass(out, "glyphs", 3, num_train=20, num_test=20, seed=0)
    assert sorted(os.listdir(tmp_path)) == ["glyphs3"]  # No temp folder left.
    assert len(os.listdir(os.path.join(out, "train", "good"))) == 20
    with open(os.path.join(out, "oneclass.json")) as f:
        assert json.load(f)["test"]["good"] == 10
    config = DataConfig(dataset="folder", data_path=out, image_size=32,
                        resize=(32, 32))
    train = load_images(config, "train")
    cal = load_images(config, "calibration")
    test = load_images(config, "test")
    assert len(train) + len(cal) == 20 and len(cal) == 2
    assert train.images.shape[1:] == (32, 32, 1)
    assert len(test) == 20 and test.labels.sum() == 10 and test.masks is None
    assert set(test.categories) == {"good"} | {
        str(c) for c in range(10) if c != 3}
    # The PNGs hold exactly the pixels of --dataset=glyphs.
    native = load_images(dataclasses.replace(config, resize=None,
                                             image_size=28), "test")
    expected = glyphs.load_glyphs_split("test", 3, 0, (28, 28), 1,
                                        num_test=20)
    assert _hashes(np.round(native.images, 4)) == _hashes(
        np.round(expected.images, 4))


def test_writer_digits_source_and_refusals(tmp_path, capsys):
    make = _script()
    out = str(tmp_path / "digits0")
    make.write_oneclass(out, "digits", 0, num_train=10, num_test=6, seed=0)
    test = load_images(DataConfig(dataset="folder", data_path=out,
                                  image_size=28), "test")
    assert len(test) == 6 and test.labels.sum() == 3
    assert len(os.listdir(os.path.join(out, "train", "good"))) == 10
    with pytest.raises(DataError, match="refusing to overwrite"):
        make.write_oneclass(out, "glyphs", 0, num_train=4, num_test=4)
    assert len(os.listdir(os.path.join(out, "train", "good"))) == 10
    assert sorted(os.listdir(tmp_path)) == ["digits0"]
    with pytest.raises(SystemExit) as exit_info:
        make.main(["--source=glyphs", "--normal_class=12",
                   f"--out={tmp_path / 'bad'}", "--num_train=4",
                   "--num_test=4"])
    assert exit_info.value.code == 2
    assert "normal_class must be a digit 0..9" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "bad")
