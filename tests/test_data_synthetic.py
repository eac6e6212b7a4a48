"""Tests of the synthetic OCT generator and the digits one-class task."""

import hashlib

import numpy as np
import pytest
from scipy import ndimage

from anogan_tf.config import DataConfig
from anogan_tf.data import DataError, generate_oct, load_images
from anogan_tf.data.synthetic_oct import (generate_oct_with_truth,
                                          is_anomalous_index)


def _hashes(images):
    return {hashlib.sha256(x.tobytes()).hexdigest() for x in images.images}


def test_oct_is_deterministic_per_seed_and_differs_across_seeds():
    a = generate_oct(6, 64, 64, seed=3, anomaly_fraction=0.5)
    b = generate_oct(6, 64, 64, seed=3, anomaly_fraction=0.5)
    c = generate_oct(6, 64, 64, seed=4, anomaly_fraction=0.5)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert a.categories == b.categories
    assert not _hashes(a) & _hashes(c)
    # Scan i depends on (seed, i) only, not on how many scans are made.
    np.testing.assert_array_equal(
        generate_oct(2, 64, 64, 3, 0.5).images, a.images[:2])


def test_oct_looks_like_a_bscan():
    s = generate_oct(8, 128, 128, seed=0, anomaly_fraction=0.0)
    assert s.images.shape == (8, 128, 128, 1) and s.images.dtype == np.float32
    assert s.images.min() >= -1 and s.images.max() <= 1
    profile = s.images[..., 0].mean(axis=(0, 2))  # Mean over scans, columns.
    vitreous, band, deep = profile[:30].mean(), profile[45:75].mean(), \
        profile[-10:].mean()
    assert band > vitreous + 0.4 and band > deep + 0.4
    # Layers alternate: a column through the band crosses several bright and
    # dark layers (sign changes of the detrended, smoothed profile).
    column = s.images[0, 40:85, 60:68, 0].mean(axis=1)
    smooth = np.convolve(column, np.ones(3) / 3, mode="valid")
    crossings = np.sum(np.diff(np.sign(smooth - np.median(smooth))) != 0)
    assert crossings >= 4
    # Scans differ in brightness and geometry.
    assert np.ptp(s.images.mean(axis=(1, 2, 3))) > 0.01


def test_oct_masks_are_exactly_the_altered_pixels():
    anomalous = generate_oct(8, 96, 80, seed=11, anomaly_fraction=0.5)
    normal = generate_oct(8, 96, 80, seed=11, anomaly_fraction=0.0)
    assert normal.labels.sum() == 0 and normal.masks.sum() == 0
    for i in range(8):
        mask = anomalous.masks[i].astype(bool)
        a, n = anomalous.images[i, ..., 0], normal.images[i, ..., 0]
        if anomalous.labels[i] == 0:
            assert not mask.any()
            np.testing.assert_array_equal(a, n)
            assert anomalous.categories[i] == "good"
            continue
        assert anomalous.categories[i] in ("fluid", "focus", "fluid+focus")
        assert mask.any()
        np.testing.assert_array_equal(a[~mask], n[~mask])
        # The anomaly is visible: inside the mask the scan really changed.
        assert np.abs(a[mask] - n[mask]).mean() > 0.1


def test_oct_anomaly_kinds_change_intensity_the_right_way():
    s = generate_oct(40, 128, 128, seed=2, anomaly_fraction=1.0)
    n = generate_oct(40, 128, 128, seed=2, anomaly_fraction=0.0)
    seen = set(s.categories)
    assert seen == {"fluid", "focus", "fluid+focus"}
    for i, category in enumerate(s.categories):
        mask = s.masks[i].astype(bool)
        delta = (s.images[i, ..., 0] - n.images[i, ..., 0])[mask].mean()
        if category == "fluid":
            assert delta < 0  # Dark pockets.
            assert mask.sum() >= 20
        elif category == "focus":
            assert delta > 0  # Bright dots.
            assert mask.sum() < 200


@pytest.mark.parametrize("fraction", [0.0, 0.25, 0.5, 1.0])
def test_oct_anomalous_fraction_is_as_requested(fraction):
    s = generate_oct(20, 32, 32, seed=0, anomaly_fraction=fraction)
    assert s.labels.sum() == int(np.floor(20 * fraction + 0.5))
    assert sum(is_anomalous_index(i, fraction) for i in range(7)) == int(
        np.floor(7 * fraction + 0.5))


def test_oct_bad_arguments():
    with pytest.raises(DataError, match="--oct_height"):
        generate_oct(2, 8, 64, seed=0, anomaly_fraction=0.5)
    with pytest.raises(DataError, match="--oct_anomaly_fraction"):
        generate_oct(2, 64, 64, seed=0, anomaly_fraction=1.5)
    with pytest.raises(DataError, match="--oct_num"):
        generate_oct(0, 64, 64, seed=0, anomaly_fraction=0.5)


def test_oct_splits_are_disjoint_and_shaped():
    config = DataConfig(dataset="synthetic_oct", oct_height=64, oct_width=64,
                        oct_num_train=20, oct_num_test=10,
                        oct_anomaly_fraction=0.3, channels=3, image_size=32)
    train = load_images(config, "train")
    cal = load_images(config, "calibration")
    test = load_images(config, "test")
    assert train.images.shape == (20, 64, 64, 3)
    assert len(cal) == 16 and len(test) == 10
    assert train.labels.sum() == 0 and cal.labels.sum() == 0
    assert test.labels.sum() == 3 and test.masks.shape == (10, 64, 64)
    assert test.ids[4] == "synthetic_oct/test/00004"
    np.testing.assert_array_equal(train.images[..., 0], train.images[..., 2])
    hashes = [_hashes(s) for s in (train, cal, test)]
    assert len(hashes[0]) == 20
    assert not (hashes[0] & hashes[1] or hashes[0] & hashes[2] or
                hashes[1] & hashes[2])
    other = load_images(DataConfig(dataset="synthetic_oct", oct_height=64,
                                   oct_width=64, oct_num_train=20, seed=1),
                        "train")
    assert not _hashes(other) & hashes[0]


def test_oct_resize_applies_to_masks():
    config = DataConfig(dataset="synthetic_oct", oct_height=64, oct_width=64,
                        oct_num_test=4, oct_anomaly_fraction=1.0,
                        resize=(32, 48), image_size=32)
    test = load_images(config, "test")
    assert test.images.shape == (4, 32, 48, 1)
    assert test.masks.shape == (4, 32, 48) and test.masks.any()


def _digits(split, **kwargs):
    return load_images(DataConfig(dataset="digits", image_size=32, **kwargs),
                       split)


def test_digits_shapes_labels_and_normal_class():
    train = _digits("train", normal_class=3)
    cal = _digits("calibration", normal_class=3)
    test = _digits("test", normal_class=3)
    assert train.images.shape[1:] == (32, 32, 1)
    assert train.images.min() >= -1 and train.images.max() <= 1
    # sklearn ships 183 threes: 70% / 10% / 20%.
    assert (len(train), len(cal)) == (128, 18)
    assert set(train.categories) == {"good"} and train.labels.sum() == 0
    n_normal = int((test.labels == 0).sum())
    assert n_normal == 183 - 128 - 18
    assert int(test.labels.sum()) >= n_normal
    anomalous = [c for c, y in zip(test.categories, test.labels) if y]
    assert "3" not in anomalous and len(set(anomalous)) > 3
    assert test.masks is None
    ids = [set(s.ids) for s in (train, cal, test)]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])


def test_digits_are_deterministic_and_seeded():
    a = _digits("train", seed=0)
    assert _digits("train", seed=0).ids == a.ids
    assert _digits("train", seed=1).ids != a.ids
    rgb = _digits("test", channels=3)
    assert rgb.images.shape[-1] == 3


def test_digits_upsample_real_pixels():
    from sklearn.datasets import load_digits
    raw = load_digits()
    s = _digits("train", normal_class=0, resize=(8, 8), patch_size=8)
    index = int(s.ids[0].split("/")[1])
    np.testing.assert_allclose(s.images[0, ..., 0],
                               raw.images[index] / 8.0 - 1.0, atol=1e-6)


def test_digits_bad_normal_class():
    with pytest.raises(DataError, match="--normal_class=0"):
        _digits("train", normal_class=10)


# --- acquisition artefacts (--oct_artifacts) -----------------------------------

def test_oct_artifacts_off_is_the_default_and_on_keeps_the_anomalies():
    plain = generate_oct(12, 64, 64, seed=7, anomaly_fraction=0.5)
    off, off_truth = generate_oct_with_truth(12, 64, 64, 7, 0.5, artifacts=False)
    np.testing.assert_array_equal(plain.images, off.images)
    assert not off_truth.artifacts.any()
    on, truth = generate_oct_with_truth(12, 64, 64, 7, 0.5, artifacts=True)
    again = generate_oct(12, 64, 64, 7, 0.5, artifacts=True)
    np.testing.assert_array_equal(on.images, again.images)  # Deterministic.
    # Artefacts come from their own stream: same anomalies, same geometry.
    assert on.categories == off.categories
    np.testing.assert_array_equal(on.labels, off.labels)
    np.testing.assert_array_equal(truth.band_top, off_truth.band_top)
    np.testing.assert_array_equal(truth.band_bottom, off_truth.band_bottom)
    assert not (on.images == off.images).all(axis=(1, 2, 3)).any()


def test_oct_artifacts_are_saturated_padding_lines_and_never_lesions():
    n, h, w = 40, 96, 128
    scans, truth = generate_oct_with_truth(n, h, w, seed=1, anomaly_fraction=0.5,
                                           artifacts=True)
    normal, normal_truth = generate_oct_with_truth(n, h, w, seed=1,
                                                   anomaly_fraction=0.0,
                                                   artifacts=True)
    np.testing.assert_array_equal(truth.artifacts, normal_truth.artifacts)
    pad = truth.artifacts
    # Padding is saturated: +1.0 (255) or -1.0 (black padding strips).
    assert set(np.unique(scans.images[..., 0][pad])) <= {-1.0, 1.0}
    assert (scans.images[..., 0][pad] == 1.0).mean() > 0.5
    # Every artefact touches the image border, and each kind occurs.
    for i in range(n):
        labelled, count = ndimage.label(pad[i])
        edge = set(np.unique(np.concatenate([
            labelled[0], labelled[-1], labelled[:, 0], labelled[:, -1]])))
        assert set(range(1, count + 1)) <= edge
    assert pad[:, 0, w // 2].sum() >= 5            # Top border lines.
    assert pad[:, h // 2, 0].sum() >= 10           # Left padding.
    assert pad[:, h // 2, -1].sum() >= 10          # Right padding.
    # Wedges: the padded width changes from the top row to the bottom row.
    left = pad[:, :, 1:w // 3].sum(axis=2)
    assert (np.abs(left[:, 2] - left[:, -3]) >= 5).sum() >= 5
    # Lesions never sit on padding; outside its mask a lesion scan equals its
    # normal scan exactly (same speckle, drift, shadows and padding).
    assert not (scans.masks.astype(bool) & pad).any()
    for i in np.flatnonzero(scans.labels):
        outside = ~scans.masks[i].astype(bool)
        np.testing.assert_array_equal(scans.images[i, ..., 0][outside],
                                      normal.images[i, ..., 0][outside])
        assert scans.masks[i].any()


def test_oct_artifacts_drift_the_intensity_between_scans():

    def band_levels(artifacts):
        scans, truth = generate_oct_with_truth(30, 64, 64, seed=2,
                                               anomaly_fraction=0.0,
                                               artifacts=artifacts)
        band = truth.band_masks()
        return np.array([scans.images[i, ..., 0][band[i]].mean()
                         for i in range(30)])

    assert band_levels(True).std() > 1.5 * band_levels(False).std()


def test_oct_truth_band_is_the_bright_layered_band():
    scans, truth = generate_oct_with_truth(10, 128, 128, seed=4,
                                           anomaly_fraction=0.0)
    thickness = truth.band_bottom - truth.band_top
    assert thickness.min() > 0.1 * 128 and thickness.max() < 0.35 * 128
    band = truth.band_masks()
    rows = np.arange(128)[:, None]
    for i in range(10):
        image = scans.images[i, ..., 0]
        above = rows < truth.band_top[i] - 3
        below = rows > truth.band_bottom[i] + 12
        assert image[band[i]].mean() > image[above].mean() + 0.5
        assert image[band[i]].mean() > image[below].mean() + 0.3


def test_oct_artifacts_flag_reaches_the_loader():
    base = dict(dataset="synthetic_oct", oct_height=64, oct_width=64,
                oct_num_train=4, oct_num_test=4, image_size=32)
    clean = load_images(DataConfig(**base), "test")
    noisy = load_images(DataConfig(**base, oct_artifacts=True), "test")
    np.testing.assert_array_equal(clean.labels, noisy.labels)
    assert not _hashes(clean) & _hashes(noisy)
    assert (noisy.images == 1.0).mean() > (clean.images == 1.0).mean()


# --- lesion types (marker discovery's ground truth) -----------------------------

def test_oct_lesion_types_cover_exactly_the_masks_and_match_categories():
    from anogan_tf.data.synthetic_oct import OCT_LESION_TYPES
    scans, truth = generate_oct_with_truth(40, 128, 128, seed=2,
                                           anomaly_fraction=1.0)
    normal = generate_oct(40, 128, 128, seed=2, anomaly_fraction=0.0)
    types = truth.lesion_types
    assert types.shape == scans.masks.shape and types.dtype == np.uint8
    np.testing.assert_array_equal(types > 0, scans.masks.astype(bool))
    assert set(np.unique(types)) == {0, 1, 2, 3}
    assert len(OCT_LESION_TYPES) == 3
    # Recording the types draws nothing: the scans are generate_oct's.
    np.testing.assert_array_equal(
        scans.images, generate_oct(40, 128, 128, 2, 1.0).images)
    depth = {1: [], 2: []}
    for i, category in enumerate(scans.categories):
        present = set(np.unique(types[i])) - {0}
        fluid, focus = present & {1, 2}, present & {3}
        assert bool(fluid) == ("fluid" in category)
        assert bool(focus) == ("focus" in category)
        delta = scans.images[i, ..., 0] - normal.images[i, ..., 0]
        rows = np.arange(128)[:, None]
        relative = ((rows - truth.band_top[i][None]) /
                    (truth.band_bottom[i] - truth.band_top[i])[None])
        for kind in present:
            core = types[i] == kind
            if kind == 3:
                assert delta[core].mean() > 0  # Foci are bright.
            else:
                assert delta[core].mean() < 0  # Fluid is dark.
                depth[kind].append(np.median(relative[core]))
    # Cysts sit mid-retina (the OPL), subretinal fluid just above the RPE.
    assert np.median(depth[1]) < 0.65 < np.median(depth[2])


def test_oct_lesion_types_are_none_for_normal_scans_and_survive_artifacts():
    scans, truth = generate_oct_with_truth(12, 64, 64, seed=7,
                                           anomaly_fraction=0.5,
                                           artifacts=True)
    np.testing.assert_array_equal(truth.lesion_types > 0,
                                  scans.masks.astype(bool))
    assert not truth.lesion_types[scans.labels == 0].any()
    assert not (truth.lesion_types.astype(bool) & truth.artifacts).any()
