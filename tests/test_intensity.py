"""Per-scan intensity normalisation (--intensity_norm=roi_percentile)."""

import numpy as np
import pytest

from anogan_tf.config import ConfigError, DataConfig
from anogan_tf.data import DataError, ImageSet, load_images
from anogan_tf.data import intensity
from anogan_tf.data.roi import artifact_mask, retina_band
from anogan_tf.data.synthetic_oct import generate_oct_with_truth


def test_levels_map_to_their_targets_and_the_map_is_affine():
    scans, _ = generate_oct_with_truth(8, 128, 128, seed=3,
                                       anomaly_fraction=0.5, artifacts=True)
    for image in scans.images:
        out, gain, offset = intensity.normalize_scan(image)
        assert out.shape == image.shape and out.dtype == np.float32
        band = retina_band(out[..., 0])
        np.testing.assert_array_equal(band.valid, retina_band(image).valid)
        assert np.percentile(out[..., 0][band.valid], 1) == pytest.approx(
            intensity.BLACK_LEVEL, abs=0.01)
        assert np.median(out[..., 0][band.mask]) == pytest.approx(
            intensity.TISSUE_LEVEL, abs=0.02)
        # Affine below the knee; artefact pixels keep their values.
        linear = band.valid & (np.abs(out[..., 0]) < 0.9)
        np.testing.assert_allclose(out[..., 0][linear],
                                   gain * image[..., 0][linear] + offset,
                                   atol=1e-5)
        np.testing.assert_array_equal(out[..., 0][~band.valid],
                                      image[..., 0][~band.valid])
        # No tissue pixel becomes saturated; the padding is found again.
        assert np.abs(out[..., 0][band.valid]).max() < 0.98
        np.testing.assert_array_equal(artifact_mask(out), artifact_mask(image))


def test_normalisation_removes_the_drift_between_scans():
    scans, truth = generate_oct_with_truth(30, 128, 128, seed=4,
                                           anomaly_fraction=0.0,
                                           artifacts=True)
    band = truth.band_masks()
    normed = intensity.normalize_intensity(scans, "roi_percentile")

    def spread(s):
        return np.std([np.median(s.images[i, ..., 0][band[i]])
                       for i in range(len(s))])

    # Measured: sd of the band median 0.15 -> 0.01 (in units of the band's
    # 10-90% range; see data/intensity.py).
    assert spread(normed) < 0.25 * spread(scans)


def test_soft_clip_is_monotone_bounded_and_identity_inside_the_knee():
    x = np.linspace(-50, 50, 20001)
    y = intensity._soft_clip(x)
    assert np.all(np.diff(y) > 0)
    assert np.abs(y).max() < 0.98
    inside = np.abs(x) <= 0.9
    np.testing.assert_array_equal(y[inside], x[inside])


def test_flat_or_bandless_images_are_left_alone_and_bad_mode_is_named():
    flat = np.zeros((32, 32, 1), np.float32)
    out, gain, offset = intensity.normalize_scan(flat)
    assert (gain, offset) == (1.0, 0.0) and (out == flat).all()
    s = ImageSet(images=flat[None], ids=("f",))
    assert intensity.normalize_intensity(s, "none") is s
    with pytest.raises(DataError, match="--intensity_norm=roi_percentile"):
        intensity.normalize_intensity(s, "zscore")


def test_loader_applies_the_normalisation_to_every_split():
    base = dict(dataset="synthetic_oct", oct_height=64, oct_width=64,
                oct_num_train=4, oct_num_test=4, image_size=32,
                oct_artifacts=True)
    for split in ("train", "calibration", "test"):
        raw = load_images(DataConfig(**base), split)
        normed = load_images(DataConfig(**base, intensity_norm="roi_percentile"),
                             split)
        assert raw.ids == normed.ids
        np.testing.assert_array_equal(raw.labels, normed.labels)
        for i in range(len(raw)):
            np.testing.assert_array_equal(
                normed.images[i], intensity.normalize_scan(raw.images[i])[0])
    with pytest.raises(ConfigError, match="intensity_norm"):
        DataConfig(intensity_norm="zscore")
