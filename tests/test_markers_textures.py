"""The textures dataset: typed defects (scratch, hole, stain) with exact
masks and per-pixel types, registered as --dataset=textures."""

import numpy as np
import pytest
from scipy import ndimage

from anogan_tf.config import DataConfig
from anogan_tf.data import DataError, load_images
from anogan_tf.data.textures import (TEXTURE_DEFECT_TYPES,
                                     generate_textures,
                                     generate_textures_with_truth)


def test_textures_are_deterministic_per_index_and_seed():
    a = generate_textures(6, 64, seed=3, anomaly_fraction=0.5)
    np.testing.assert_array_equal(
        a.images, generate_textures(6, 64, 3, 0.5).images)
    np.testing.assert_array_equal(
        a.images[:2], generate_textures(2, 64, 3, 0.5).images)
    b = generate_textures(6, 64, seed=4, anomaly_fraction=0.5)
    assert not (a.images == b.images).all(axis=(1, 2, 3)).any()
    assert a.labels.sum() == 3 and a.images.min() >= -1 and a.images.max() <= 1


def test_texture_masks_are_the_altered_pixels_and_types_cover_them():
    scans, truth = generate_textures_with_truth(40, 128, 5, 1.0)
    normal = generate_textures(40, 128, 5, 0.0)
    types = truth.defect_types
    np.testing.assert_array_equal(types > 0, scans.masks.astype(bool))
    stats = {k: [] for k in (1, 2, 3)}
    for i in range(40):
        mask = scans.masks[i].astype(bool)
        a, n = scans.images[i, ..., 0], normal.images[i, ..., 0]
        np.testing.assert_array_equal(a[~mask], n[~mask])
        present = sorted(TEXTURE_DEFECT_TYPES[k - 1]
                         for k in np.unique(types[i]) if k)
        assert scans.categories[i] == "+".join(present)
        for k in (1, 2, 3):
            labelled, count = ndimage.label(types[i] == k)
            for j in range(1, count + 1):
                blob = labelled == j
                ys, xs = np.nonzero(blob)
                cov = np.cov(np.stack([ys, xs])) if blob.sum() > 2 else None
                ev = np.linalg.eigvalsh(cov) if cov is not None else [1, 1]
                stats[k].append((blob.sum(), (a - n)[blob].mean(),
                                 ev[-1] / max(ev[0], 1e-6)))
    scratch, hole, stain = (np.array(stats[k]) for k in (1, 2, 3))
    assert min(len(scratch), len(hole), len(stain)) >= 10
    # Scratches: bright and elongated; holes: dark and compact; stains:
    # dark and large.
    assert (scratch[:, 1] > 0).all() and np.median(scratch[:, 2]) > 20
    assert (hole[:, 1] < 0).all() and np.median(hole[:, 2]) < 2
    assert (stain[:, 1] < 0).all()
    assert np.median(stain[:, 0]) > 4 * np.median(hole[:, 0])


def test_textures_dataset_splits():
    config = DataConfig(dataset="textures", image_size=32, seed=1,
                        resize=(64, 64))
    train = load_images(config, "train")
    cal = load_images(config, "calibration")
    test = load_images(config, "test")
    assert (len(train), len(cal), len(test)) == (400, 80, 200)
    assert train.images.shape[1:] == (64, 64, 1)
    assert train.labels.sum() == 0 and cal.labels.sum() == 0
    assert test.labels.sum() == 100 and test.masks.shape == (200, 64, 64)
    assert train.masks is None and test.ids[3] == "textures/test/00003"
    hashes = [{x.tobytes() for x in s.images} for s in (train, cal, test)]
    assert not (hashes[0] & hashes[1] or hashes[0] & hashes[2] or
                hashes[1] & hashes[2])
    with pytest.raises(DataError, match="at least 32"):
        generate_textures(2, 16)
