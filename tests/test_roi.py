"""The retina ROI against the synthetic ground truth, with and without the
acquisition artefacts of real B-scans (padding, border lines, drift,
vessel shadows)."""

import numpy as np
import pytest
from scipy import ndimage

from anogan_tf.data import DataError, ImageSet, PatchSet, extract_patches
from anogan_tf.data.patches import fill_artifacts
from anogan_tf.data.roi import (SATURATION_TOLERANCE, artifact_mask,
                                retina_band, retina_roi_mask, scoring_region)
from anogan_tf.data.synthetic_oct import generate_oct_with_truth


def _iou(a, b):
    return (a & b).sum() / max(1, (a | b).sum())


@pytest.mark.parametrize("artifacts", [False, True])
@pytest.mark.parametrize("size", [(128, 128), (128, 256)])
def test_band_iou_with_the_true_band(artifacts, size):
    scans, truth = generate_oct_with_truth(24, *size, seed=11,
                                           anomaly_fraction=0.5,
                                           artifacts=artifacts)
    band = truth.band_masks()
    ious = np.array([_iou(retina_roi_mask(scans.images[i]), band[i])
                     for i in range(len(scans))])
    # Measured: 0.94-0.97 on average, >= 0.90 for every scan.
    assert ious.mean() >= 0.9, ious
    assert ious.min() >= 0.85, ious


def test_band_ignores_lesions_so_patch_counts_do_not_depend_on_the_label():
    lesions, _ = generate_oct_with_truth(16, 128, 128, seed=3,
                                         anomaly_fraction=1.0, artifacts=True)
    normal, _ = generate_oct_with_truth(16, 128, 128, seed=3,
                                        anomaly_fraction=0.0, artifacts=True)
    ious = [_iou(retina_roi_mask(a), retina_roi_mask(b))
            for a, b in zip(lesions.images, normal.images)]
    assert np.mean(ious) >= 0.97, ious
    counts = [np.bincount(extract_patches(s, 32, 16, 32, roi="retina")
                          .image_index, minlength=16) for s in (lesions, normal)]
    assert np.abs(counts[0] - counts[1]).max() <= 2


def test_artifact_mask_finds_every_padding_pixel_and_little_else():
    scans, truth = generate_oct_with_truth(30, 128, 128, seed=1,
                                           anomaly_fraction=0.5,
                                           artifacts=True)
    band = truth.band_masks()
    for i in range(len(scans)):
        found = artifact_mask(scans.images[i])
        assert found.dtype == bool and found.shape == (128, 128)
        assert not (truth.artifacts[i] & ~found).any()  # Recall 1.
        # Beyond the 1-pixel ring around the padding the mask may only take
        # a saturated (clipped) pixel or two of tissue: < 1.5% of the band.
        extra = found & band[i] & ~ndimage.binary_dilation(truth.artifacts[i])
        assert extra.sum() <= 0.015 * band[i].sum()
    clean, _ = generate_oct_with_truth(30, 128, 128, seed=1,
                                       anomaly_fraction=0.5)
    assert not any(artifact_mask(x).any() for x in clean.images)


def test_artifact_mask_on_hand_made_padding():
    rng = np.random.default_rng(0)
    image = rng.uniform(-0.9, 0.9, (64, 96))
    # A saturated tissue layer that touches both sides is not padding.
    image[30:33] = 1.0
    assert not artifact_mask(image).any()
    # A top-left rotation triangle, a black strip on the right of a
    # different width (mixed widths), and a white 1-pixel bottom line.
    rows, cols = np.mgrid[0:64, 0:96]
    triangle = cols < 20 - rows * 20 / 40
    image[triangle] = 1.0
    image[:, -7:] = -1.0
    image[-1, :] = 1.0
    want = triangle.copy()
    want[:, -7:] = True
    want[-1, :] = True
    found = artifact_mask(image)
    assert not (want & ~found).any()
    # Beyond a 1-pixel ring: only the saturated layer (rows 30-32, +1 ring),
    # and at most 2 px (+ ring) beyond the padding's run on either side.
    extra = found & ~ndimage.binary_dilation(want)
    rows_hit = np.flatnonzero(extra.any(axis=1))
    assert rows_hit.min() >= 29 and rows_hit.max() <= 33
    assert extra.sum() <= 2 * 5 * 3
    assert not extra[:, 12:-12].any()
    # An image that is mostly constant is not a padded scan.
    pattern = np.full((32, 32), -1.0)
    pattern[2:6] = 1.0
    assert not artifact_mask(pattern).any()
    with pytest.raises(DataError, match=r"\[H, W\]"):
        artifact_mask(np.zeros((2, 3, 4, 5)))


def test_band_of_a_flat_image_is_empty_and_valid_mask_is_checked():
    band = retina_band(np.zeros((32, 32)))
    assert not band.mask.any() and np.isnan(band.top).all()
    with pytest.raises(DataError, match="valid has shape"):
        retina_band(np.zeros((32, 32)), valid=np.ones((16, 32), bool))


def test_patches_with_artifacts_are_filled_and_counts_stay_in_range():
    scans, truth = generate_oct_with_truth(12, 128, 128, seed=5,
                                           anomaly_fraction=0.5,
                                           artifacts=True)
    ps = extract_patches(scans, 32, 16, 32, roi="retina", min_coverage=0.5)
    assert ps.valid_masks.shape == ps.roi_masks.shape == (12, 128, 128)
    assert not (ps.roi_masks & ~ps.valid_masks).any()
    assert not (truth.artifacts & ps.valid_masks).any()
    counts = np.bincount(ps.image_index, minlength=12)
    # A 128-px band of ~35 rows holds 2-3 rows of 7 patches (minus padding);
    # the old intensity ROI kept up to all 49 patches of a padded scan.
    assert counts.min() >= 5 and counts.max() <= 21, counts
    for k in range(len(ps)):
        i, y, x = ps.image_index[k], ps.ys[k], ps.xs[k]
        pad = truth.artifacts[i, y:y + 32, x:x + 32]
        assert ps.roi_masks[i, y:y + 32, x:x + 32].mean() >= 0.5
        # No saturated padding value reaches a model input.
        assert not (np.abs(ps.patches[k, ..., 0][pad]) >=
                    1 - SATURATION_TOLERANCE).any()
        valid = ps.valid_masks[i, y:y + 32, x:x + 32]
        np.testing.assert_array_equal(ps.patches[k, ..., 0][valid],
                                      scans.images[i, y:y + 32, x:x + 32, 0][valid])
    # Without an ROI there are no masks.
    plain = extract_patches(scans, 32, 32, 32)
    assert plain.valid_masks is None and plain.roi_masks is None


def test_fill_artifacts_keeps_valid_pixels_and_stays_in_their_range():
    rng = np.random.default_rng(1)
    image = rng.uniform(-0.5, 0.5, (40, 40, 2)).astype(np.float32)
    valid = np.ones((40, 40), bool)
    valid[:, :12] = False
    image[~valid] = 1.0
    out = fill_artifacts(image, valid)
    np.testing.assert_array_equal(out[valid], image[valid])
    assert out[~valid].min() >= -0.5 and out[~valid].max() <= 0.5
    assert fill_artifacts(image, np.ones((40, 40), bool)) is image


def test_scoring_region_known_answer():
    roi = np.zeros((2, 16, 4), bool)
    roi[0, 6:9] = True
    valid = np.ones((2, 16, 4), bool)
    valid[:, :, 0] = False
    region = scoring_region(roi, valid, margin=2)
    want = np.zeros((16, 4), bool)
    want[4:11, 1:] = True
    np.testing.assert_array_equal(region[0], want)
    # An image without ROI keeps all of its valid pixels.
    np.testing.assert_array_equal(region[1], valid[1])
    # Default margin: max(2, round(H / 32)); 2-D masks work too.
    np.testing.assert_array_equal(scoring_region(roi[0], valid[0]), want)
    with pytest.raises(DataError, match="one shape"):
        scoring_region(roi, valid[0])


def test_patchset_checks_its_masks():
    kwargs = dict(patches=np.zeros((1, 4, 4, 1), np.float32),
                  image_index=[0], ys=[0], xs=[0], patch_size=4,
                  image_shape=(8, 8), patched=True)
    ok = PatchSet(**kwargs, valid_masks=np.ones((1, 8, 8), bool))
    assert ok.valid_masks.shape == (1, 8, 8)
    with pytest.raises(DataError, match="valid_masks must be bool"):
        PatchSet(**kwargs, valid_masks=np.ones((1, 8, 7), bool))
    with pytest.raises(DataError, match="roi_masks must be bool"):
        PatchSet(**kwargs, roi_masks=np.ones((1, 8, 8), np.uint8))
    with pytest.raises(DataError, match="refers to image 1"):
        PatchSet(**{**kwargs, "image_index": [1]},
                 valid_masks=np.ones((1, 8, 8), bool))


def test_old_failure_band_no_longer_spans_the_padded_scan():
    # The failure: saturated wedges made the band start at row 0 or
    # run to the bottom. Every scan with artefacts keeps its band off the
    # top and bottom rows.
    scans, truth = generate_oct_with_truth(20, 128, 128, seed=9,
                                           anomaly_fraction=0.5,
                                           artifacts=True)
    for i in range(len(scans)):
        band = retina_band(scans.images[i])
        assert not band.mask[:20].any() and not band.mask[-10:].any()
        # Columns where padding hides at most 20% of the true band.
        seen = truth.band_masks()[i].sum(0) >= 0.8 * (
            truth.band_bottom[i] - truth.band_top[i])
        # (The detected mask may take an extra edge column, e.g. a ring.)
        assert np.isfinite(band.top[seen]).mean() >= 0.95
        seen &= np.isfinite(band.top)
        assert np.abs(band.top[seen] - truth.band_top[i][seen]).mean() < 1.5
        assert np.abs(band.bottom[seen] -
                      truth.band_bottom[i][seen]).mean() < 2.5
        assert np.isnan(band.top[truth.artifacts[i].all(axis=0)]).all()
    one = ImageSet(images=scans.images[:1], ids=("a",))
    assert len(extract_patches(one, 32, 16, 32, roi="retina")) < 25
