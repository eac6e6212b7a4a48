"""Anomaly maps: raw and smoothed residuals (anogan_tf/scoring/maps.py).

Known answers: a one-signed blob survives smoothing the signed residual with
its location as the argmax, while random-sign noise and a checkerboard are
suppressed; masked pixels never reach the smoothed map; sigma 0 is today's
raw map; bad settings fail with the flag's name.
"""

import numpy as np
import pytest

from anogan_tf.config import ConfigError, DataConfig, EvalConfig, MappingConfig
from anogan_tf.config import ModelConfig
from anogan_tf.data import ImageSet, extract_patches, stitch_maps
from anogan_tf.models import build_models
from anogan_tf.scoring import maps as maps_lib
from anogan_tf.scoring.evaluation import map_variant_metrics
from anogan_tf.scoring.scorer import score_image_set

H = W = 48


def _residuals(signed, weight=None, region=None):
    signed = np.asarray(signed, np.float32)
    n = len(signed)
    if weight is None:
        weight = np.ones((n, H, W), bool) if region is None else region
    return maps_lib.ResidualMaps(absolute=np.abs(signed).astype(np.float32),
                                 signed=signed[..., None], weight=weight,
                                 region=region)


def _blob_and_noise(seed=0):
    rng = np.random.default_rng(seed)
    noise = rng.choice([-1.0, 1.0], size=(1, H, W))  # speckle: random sign
    yy, xx = np.mgrid[:H, :W]
    blob = -1.0 * (((yy - 30) ** 2 + (xx - 14) ** 2) <= 25)  # a dark cyst
    # Half the blob's speckle positive, half negative (as in expectation).
    k = int((blob != 0).sum())
    noise[0][blob != 0] = rng.permutation(np.resize([1.0, -1.0], k))
    return noise + blob[None], blob != 0


def test_signed_smoothing_keeps_a_one_signed_blob_and_drops_speckle():
    signed, on_blob = _blob_and_noise()
    res = _residuals(signed)
    # Away from the blob and from the image border (where the map shrinks).
    far = np.zeros((H, W), bool)
    far[8:-8, 8:-8] = True
    far[18:43, 2:27] = False
    contrast = lambda m: m[0][on_blob].mean() / m[0][far].mean()  # noqa
    # |r| is 0 or 2 on the blob and 1 off it: the same mean, no contrast,
    # raw or smoothed.
    raw = maps_lib.anomaly_maps(res, 0.0)
    assert contrast(raw) == pytest.approx(1.0, abs=0.05)
    absolute = maps_lib.anomaly_maps(res, 2.0, "absolute")
    assert contrast(absolute) == pytest.approx(1.0, abs=0.05)
    # Smoothing the signed residual averages the speckle out and keeps the
    # blob: the brightest pixel lies on it, near its centre.
    signed_map = maps_lib.anomaly_maps(res, 2.0, "signed")
    y, x = np.unravel_index(np.argmax(signed_map[0]), (H, W))
    assert on_blob[y, x] and (y - 30) ** 2 + (x - 14) ** 2 <= 9
    assert contrast(signed_map) > 4
    assert signed_map[0][far].mean() < 0.2 * signed_map[0].max()


def test_checkerboard_is_suppressed_by_signed_smoothing():
    yy, xx = np.mgrid[:H, :W]
    checker = np.where((yy + xx) % 2 == 0, 1.0, -1.0)[None]
    out = maps_lib.anomaly_maps(_residuals(checker), 1.0, "signed")
    # From 1 to < 1% away from the image border, < 5% at it (the kernel is
    # cut off there, so the +1 and -1 no longer balance exactly).
    assert out[0, 3:-3, 3:-3].max() < 0.01
    assert out.max() < 0.05
    # The magnitude of a checkerboard is 1 everywhere: smoothing it keeps 1
    # (away from the image border, where the map shrinks).
    np.testing.assert_allclose(maps_lib.anomaly_maps(
        _residuals(checker), 1.0, "absolute")[0, 5:-5, 5:-5], 1.0, rtol=1e-5)


def test_masked_pixels_never_leak_into_the_smoothed_map():
    signed = np.zeros((1, H, W), np.float32)
    signed[0, :, :8] = 50.0  # a saturated padding wedge's residual
    signed[0, 20, 30] = -1.0  # a small real finding
    region = np.ones((1, H, W), bool)
    region[0, :, :8] = False  # the wedge is an artefact: not in the region
    res = _residuals(signed, region=region)
    for smoothing in maps_lib.MAP_SMOOTHINGS:
        out = maps_lib.anomaly_maps(res, 3.0, smoothing)
        assert (out[~region] == 0).all()
        # Beside the wedge the map is exactly 0: nothing of the 50 got in.
        assert out[0, :, 8:16].max() == 0.0
        assert np.unravel_index(np.argmax(out[0]), (H, W)) == (20, 30)
    # A constant keeps its value away from the mask's edge, shrinks towards
    # 0 near it (fewer pixels contribute), and is 0 outside; the normalised
    # form keeps it up to the edge.
    weight = np.zeros((1, H, W), bool)
    weight[0, 5:25, 3:40] = True
    constant = np.full((1, H, W), 2.0)
    smoothed = maps_lib.masked_gaussian(constant, weight, 2.0)
    np.testing.assert_allclose(smoothed[0, 13:17, 15:25], 2.0, rtol=1e-3)
    assert smoothed[0, 5, 3] < 1.0 and smoothed.max() <= 2.0 + 1e-5
    assert (smoothed[~weight] == 0).all()
    normalised = maps_lib.masked_gaussian(constant, weight, 2.0,
                                          normalize=True)
    np.testing.assert_allclose(normalised[weight], 2.0, rtol=1e-6)
    assert (normalised[~weight] == 0).all()


def test_bad_map_settings_fail_naming_the_flag():
    with pytest.raises(ConfigError, match="--map_sigma.*-1"):
        EvalConfig(output_dir="o", map_sigma=-1.0)
    with pytest.raises(ConfigError, match="--map_sigma"):
        EvalConfig(output_dir="o", map_sigma=float("nan"))
    with pytest.raises(ConfigError, match="--map_smoothing.*'blur'"):
        EvalConfig(output_dir="o", map_sigma=2.0, map_smoothing="blur")
    with pytest.raises(ValueError, match="--map_sigma"):
        maps_lib.anomaly_maps(_residuals(np.zeros((1, H, W))), -0.5)
    assert EvalConfig(output_dir="o", map_sigma=2.0).map_smoothing == "signed"


MODEL = ModelConfig(image_size=16, channels=1, latent_dim=4, base_filters=4)
MAPPING = MappingConfig(steps=1, batch_size=16, jit_compile=False)


@pytest.fixture(scope="module")
def scored_pair():
    g, d = build_models(MODEL)
    rng = np.random.default_rng(3)
    images = ImageSet(rng.uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32),
                      ("a", "b"), labels=np.array([0, 1]))
    data = DataConfig(image_size=16, patch_stride=8)
    score = lambda sigma, how: score_image_set(  # noqa: E731
        images, g, d, MODEL, data, MAPPING, aggregate="map_max",
        progress=False, map_sigma=sigma, map_smoothing=how)
    return images, data, score


def test_sigma_zero_is_the_raw_stitched_residual(scored_pair):
    images, data, score = scored_pair
    raw = score(0.0, "signed")
    patches = extract_patches(images, 16, 8, 16)
    np.testing.assert_array_equal(
        raw.maps, stitch_maps(raw.mapping.residual_map, patches, 2))
    np.testing.assert_array_equal(raw.maps, score(0.0, "absolute").maps)
    np.testing.assert_allclose(raw.image_scores, raw.maps.reshape(2, -1).max(1))
    # The stitched signed residual is x minus the overlap-averaged G(z*).
    recon = stitch_maps(raw.mapping.reconstruction, patches, 2)
    np.testing.assert_allclose(raw.residuals.signed[..., 0],
                               images.images[..., 0] - recon, atol=1e-5)


def test_smoothing_applies_to_the_scores_and_metrics(scored_pair):
    images, _, score = scored_pair
    smooth = score(2.0, "signed")
    expected = maps_lib.anomaly_maps(smooth.residuals, 2.0, "signed")
    np.testing.assert_array_equal(smooth.maps, expected)
    np.testing.assert_allclose(smooth.image_scores,
                               smooth.maps.reshape(2, -1).max(1))
    # Signed smoothing of a random image's residual lowers its peak.
    assert smooth.image_scores.max() < score(0.0, "signed").image_scores.min()
    masks = np.zeros((2, 32, 32), np.uint8)
    masks[1, 4:10, 4:10] = 1
    by_map = map_variant_metrics(smooth, images.labels, masks, sigmas=(2.0,))
    assert set(by_map) == {"raw", "absolute_s2", "signed_s2"}
    assert by_map["signed_s2"]["image_auroc_map_max"] in (0.0, 1.0)
    for row in by_map.values():
        assert 0.0 <= row["pixel_auroc"] <= 1.0 and "pixel_auprc" in row
    with pytest.raises(ConfigError, match="--map_smoothing"):
        score(1.0, "median")
