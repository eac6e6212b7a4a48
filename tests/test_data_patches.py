"""Tests of patch extraction, ROI selection and map stitching."""

import dataclasses

import numpy as np
import pytest

from anogan_tf.config import ConfigError, DataConfig
from anogan_tf.data import (DataError, ImageSet, PatchSet, extract_patches,
                            generate_oct, retina_roi_mask, stitch_coverage,
                            stitch_maps)
from anogan_tf.data.patches import patch_positions


def _images(n=2, h=20, w=28, c=1, seed=0):
    rng = np.random.default_rng(seed)
    return ImageSet(images=rng.uniform(-1, 1, (n, h, w, c)).astype(np.float32),
                    ids=tuple(f"img{i}" for i in range(n)))


def test_positions_align_last_patch_to_border():
    assert patch_positions(20, 8, 8) == [0, 8, 12]
    assert patch_positions(16, 8, 4) == [0, 4, 8]
    assert patch_positions(8, 8, 3) == [0]
    assert patch_positions(10, 4, 100) == [0, 6]


def test_patches_cover_every_pixel_and_match_the_image():
    images = _images()
    ps = extract_patches(images, patch_size=8, stride=8, model_size=8)
    assert ps.patched and ps.image_shape == (20, 28)
    assert len(ps) == 2 * 3 * 4  # rows 0, 8, 12; cols 0, 8, 16, 20
    assert ps.image_index.tolist() == [0] * 12 + [1] * 12
    assert ps.ys[:4].tolist() == [0, 0, 0, 0] and ps.xs[:4].tolist() == [
        0, 8, 16, 20]
    for k in (0, 5, 11, 17, 23):
        i, y, x = ps.image_index[k], ps.ys[k], ps.xs[k]
        np.testing.assert_array_equal(ps.patches[k],
                                      images.images[i, y:y + 8, x:x + 8])
    coverage = stitch_coverage(ps, len(images))
    assert coverage.min() >= 1
    assert coverage[0, 19, 27] == 1 and coverage[0, 12, 20] == 4


def test_stitch_round_trip_is_exact_with_overlaps():
    images = _images(c=3)
    ps = extract_patches(images, patch_size=8, stride=3, model_size=8)
    stitched = stitch_maps(ps.patches, ps, len(images))
    # Maps are averaged over channels; the overlap average reproduces them.
    np.testing.assert_array_equal(stitched, images.images.mean(axis=-1))
    one_channel = stitch_maps(ps.patches[..., 0], ps, len(images))
    np.testing.assert_array_equal(one_channel, images.images[..., 0])


def test_whole_image_is_one_patch_unpatched():
    images = _images(h=16, w=16)
    ps = extract_patches(images, patch_size=16, stride=8, model_size=16)
    assert not ps.patched and len(ps) == 2
    assert ps.ys.tolist() == [0, 0] and ps.xs.tolist() == [0, 0]
    np.testing.assert_array_equal(ps.patches, images.images)


def test_patches_resized_to_model_size_and_back():
    flat = np.full((1, 32, 32, 1), 0.25, np.float32)
    flat[0, 16:, :, 0] = -0.5
    images = ImageSet(images=flat, ids=("a",))
    ps = extract_patches(images, patch_size=16, stride=16, model_size=32)
    assert ps.patches.shape == (4, 32, 32, 1) and ps.patch_size == 16
    np.testing.assert_allclose(ps.patches[0], 0.25, atol=1e-6)
    stitched = stitch_maps(ps.patches, ps, 1)
    assert stitched.shape == (1, 32, 32)
    np.testing.assert_allclose(stitched[0], flat[0, ..., 0], atol=1e-5)


def test_stitch_leaves_uncovered_pixels_at_zero():
    images = _images(n=1, h=16, w=16)
    ps = extract_patches(images, patch_size=8, stride=8, model_size=8)
    keep = ps.ys + ps.xs == 0  # Only the top-left patch.
    one = PatchSet(patches=ps.patches[keep], image_index=ps.image_index[keep],
                   ys=ps.ys[keep], xs=ps.xs[keep], patch_size=8,
                   image_shape=(16, 16), patched=True)
    out = stitch_maps(np.ones((1, 8, 8)), one, 1)
    assert out[0, :8, :8].min() == 1 and out[0, 8:, :].max() == 0
    assert stitch_coverage(one, 1)[0, 8:, 8:].sum() == 0


def test_image_smaller_than_patch_is_rejected():
    with pytest.raises(DataError) as e:
        extract_patches(_images(h=12, w=30), patch_size=16, stride=8,
                        model_size=16)
    message = str(e.value)
    assert "'img0'" in message and "12x30" in message
    assert "--patch_size" in message and "--resize" in message


def test_stitch_rejects_wrong_count():
    ps = extract_patches(_images(), patch_size=8, stride=8, model_size=8)
    with pytest.raises(DataError, match="P=24"):
        stitch_maps(np.zeros((3, 8, 8)), ps, 2)
    with pytest.raises(DataError, match="num_images=1"):
        stitch_maps(np.zeros((24, 8, 8)), ps, 1)


def test_retina_roi_finds_the_band_of_a_synthetic_scan():
    scans = generate_oct(4, 128, 128, seed=5, anomaly_fraction=0.0)
    for image in scans.images:
        roi = retina_roi_mask(image)
        assert roi.dtype == bool and roi.shape == (128, 128)
        assert not roi[:20].any()  # Vitreous at the top.
        assert not roi[-10:].any()  # Faded choroid at the bottom.
        assert roi[int(0.5 * 128)].mean() > 0.9  # The middle of the band.


def test_roi_keeps_band_patches_and_drops_background():
    scans = generate_oct(3, 128, 128, seed=1, anomaly_fraction=0.0)
    every = extract_patches(scans, 16, 16, 16)
    kept = extract_patches(scans, 16, 16, 16, roi="retina", min_coverage=0.5)
    assert 0 < len(kept) < len(every)
    assert kept.ys.min() >= 16  # No patch from the top rows of vitreous.
    # Every kept patch lies mostly inside its image's ROI mask.
    for k in range(len(kept)):
        roi = retina_roi_mask(scans.images[kept.image_index[k]])
        y, x = kept.ys[k], kept.xs[k]
        assert roi[y:y + 16, x:x + 16].mean() >= 0.5
    # All columns of the band are represented for each image.
    for i in range(3):
        assert len(set(kept.xs[kept.image_index == i])) == 8


def test_roi_keeps_best_patch_when_nothing_qualifies():
    images = np.full((2, 32, 32, 1), -1.0, np.float32)
    images[0, 2:6] = 1.0  # A thin bright band: no patch is >= 90% inside.
    s = ImageSet(images=images, ids=("band", "flat"))
    ps = extract_patches(s, 16, 8, 16, roi="retina", min_coverage=0.9)
    assert ps.image_index.tolist() == [0, 1]  # Every image keeps one patch.
    assert ps.ys[0] == 0


def test_bad_patch_arguments():
    with pytest.raises(DataError, match="--roi=none"):
        extract_patches(_images(), 8, 8, 8, roi="lungs")
    with pytest.raises(DataError, match="--roi_min_coverage"):
        extract_patches(_images(), 8, 8, 8, min_coverage=1.5)
    with pytest.raises(DataError, match="--patch_stride"):
        extract_patches(_images(), 8, 0, 8)


def test_image_cut_into_too_many_patches_is_refused_naming_the_flag():
    images = _images(h=20, w=28)  # patch 8, stride 8: 3 x 4 = 12 patches
    with pytest.raises(DataError) as e:
        extract_patches(images, 8, 8, 8, max_patches_per_image=11)
    message = str(e.value)
    assert "'img0'" in message and "20x28" in message
    assert "12 patches" in message
    assert "--max_patches_per_image=11" in message
    assert "--max_patches_per_image=12" in message  # the override
    assert "--resize" in message
    # At the limit, and with 0 (no limit), every patch is cut.
    assert len(extract_patches(images, 8, 8, 8, max_patches_per_image=12)) == 24
    assert len(extract_patches(images, 8, 8, 8, max_patches_per_image=0)) == 24
    with pytest.raises(DataError, match="max_patches_per_image must be >= 0"):
        extract_patches(images, 8, 8, 8, max_patches_per_image=-1)


def test_training_refuses_images_over_the_patch_limit():
    from anogan_tf.training.run import training_patches
    # 64x64 scans at patch 16, stride 4: 13 x 13 = 169 patches each.
    data = DataConfig(dataset="synthetic_oct", image_size=16, patch_size=16,
                      patch_stride=4, oct_height=64, oct_width=64,
                      oct_num_train=2, oct_num_test=2,
                      max_patches_per_image=100)
    with pytest.raises(DataError, match="169 patches.*"
                       "--max_patches_per_image=100"):
        training_patches(data)
    train, _ = training_patches(
        dataclasses.replace(data, max_patches_per_image=169))
    assert len(train) == 2 * 169
    with pytest.raises(ConfigError, match="--max_patches_per_image"):
        DataConfig(max_patches_per_image=-5)
