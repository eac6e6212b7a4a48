"""Tests of scoring/map_reference.py (--map_norm=depth) and its graph twin.

Known answers on hand-made maps: band-relative depths, per-bin medians and
spreads, a stripe that every normal map has is standardised away while the
same value at a quiet depth stands out, cross-fitting never reads an
image's own pixels, the detector.json round trip, and the score_images
graph twin equals the NumPy original.
"""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from anogan_tf.config import ConfigError, DataConfig, EvalConfig, MappingConfig
from anogan_tf.export import image_graph
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring import map_reference as mr

H, W = 40, 24


def _band_masks(n, tops, bottoms):
    """bool [n, H, W]: rows top..bottom-1 of every column."""
    y = np.arange(H)[None, :, None]
    tops = np.asarray(tops)[:, None, None]
    bottoms = np.asarray(bottoms)[:, None, None]
    return np.broadcast_to((y >= tops) & (y < bottoms), (n, H, W)).copy()


def test_depth_is_band_relative_and_falls_back_to_rows():
    masks = _band_masks(3, [10, 20, 0], [20, 30, 0])
    masks[0, :, 5] = False             # a column without ROI: median bounds
    depth = mr.depth_coordinates((3, H, W), masks)
    assert depth[0, 10, 0] == 0.0 and depth[0, 20, 0] == 1.0
    assert depth[0, 15, 3] == 0.5 and depth[0, 5, 0] == -0.5
    np.testing.assert_array_equal(depth[0, :, 5], depth[0, :, 0])
    assert depth[1, 20, 7] == 0.0 and depth[1, 25, 7] == 0.5
    # No ROI pixel at all: the row coordinate (y + 0.5) / H.
    np.testing.assert_allclose(depth[2, :, 0], (np.arange(H) + 0.5) / H)
    np.testing.assert_allclose(mr.depth_coordinates((1, H, W))[0, :, 3],
                               (np.arange(H) + 0.5) / H)


def _normal_maps(rng, n, tops):
    """Maps of 'normal' images: noise in [0, 0.1] plus a stripe of 1.0 on
    the band's third row (a layer G misfits on every scan)."""
    maps = rng.uniform(0.0, 0.1, (n, H, W))
    for i, t in enumerate(tops):
        maps[i, t + 2] = 1.0
    return maps


def test_a_stripe_every_normal_has_is_standardised_away():
    rng = np.random.default_rng(0)
    tops = rng.integers(4, 20, size=30)
    masks = _band_masks(30, tops, tops + 10)
    weight = np.ones_like(masks)
    normal = _normal_maps(rng, 30, tops)
    ref = mr.fit_map_reference(normal, weight, masks, "signed_s4")
    assert ref.coordinate == "band" and ref.n_images == 30
    assert ref.map == "signed_s4" and len(ref.median) == mr.BAND_EDGES[2]
    # The stripe's bin (depth 0.2) is all 1.0: median 1 and, as its own
    # spread is 0, the floor: a tenth of the pooled p99 - median.
    b = int(np.searchsorted(ref.edges, 0.2, side="right") - 1)
    pooled = np.percentile(normal, 99) - np.median(normal)
    assert ref.median[b] == pytest.approx(1.0)
    assert ref.spread[b] == pytest.approx(mr.MIN_SPREAD_SHARE * pooled)
    # A new scan, band elsewhere: its stripe reads as its depth's p99 on
    # normal scans (just below 1), and a blob of the stripe's raw value at
    # mid-band depth reads far above 1.
    new_top = 25
    new_mask = _band_masks(1, [new_top], [new_top + 10])
    new = _normal_maps(rng, 1, [new_top])
    new[0, new_top + 6, 10:14] = 1.0
    out = mr.standardize_maps(new, np.ones_like(new_mask), new_mask, ref)
    assert out.dtype == np.float32 and out.min() >= 0
    np.testing.assert_allclose(out[0, new_top + 2],
                               1.0 / (ref.median[b] + ref.spread[b]),
                               rtol=1e-6)
    assert out[0, new_top + 6, 10:14].min() > 5.0
    # The ratio keeps the order of the pixels below a depth's median (a
    # clipped (m - median) / spread would tie them at 0): one row of the
    # band is one depth bin, divided by one p99.
    depth = mr.depth_coordinates(new.shape, new_mask)[0, new_top + 6, 0]
    b6 = int(np.searchsorted(ref.edges, depth, side="right") - 1)
    row = new[0, new_top + 6, :10]
    assert (row < ref.median[b6]).any()
    np.testing.assert_allclose(out[0, new_top + 6, :10],
                               row / (ref.median[b6] + ref.spread[b6]),
                               rtol=1e-6)
    # Outside `weight` the map is 0.
    none = mr.standardize_maps(new, np.zeros_like(new_mask), new_mask, ref)
    assert not none.any()


def test_bin_statistics_are_the_median_and_p99_spread():
    rng = np.random.default_rng(1)
    maps = rng.exponential(1.0, (20, H, W))
    weight = np.ones(maps.shape, bool)
    ref = mr.fit_map_reference(maps, weight, None, "raw")
    assert ref.coordinate == "row" and len(ref.median) == mr.ROW_EDGES[2]
    depth = mr.depth_coordinates(maps.shape)
    edges = np.asarray(ref.edges)
    b = 7
    inside = (depth >= edges[b]) & (depth < edges[b + 1])
    v = maps[inside]
    assert ref.median[b] == pytest.approx(np.median(v))
    assert ref.spread[b] == pytest.approx(np.percentile(v, 99) - np.median(v))


def test_a_thin_bin_uses_the_pooled_statistics_and_zero_bins_keep_a_floor():
    maps = np.zeros((4, H, W))
    maps[:, : H // 2] = np.linspace(0, 1, W)[None, None, :]
    weight = np.ones(maps.shape, bool)
    weight[:, H - 1] = False               # the last row bin: no pixel
    ref = mr.fit_map_reference(maps, weight, None, "raw")
    values = maps[weight]
    pooled = np.percentile(values, 99) - np.median(values)
    assert ref.median[-1] == pytest.approx(np.median(values))
    assert ref.spread[-1] == pytest.approx(pooled)
    # The bottom half is all zeros: median 0, spread the floor, not 0.
    assert ref.median[-5] == 0.0
    assert ref.spread[-5] == pytest.approx(mr.MIN_SPREAD_SHARE * pooled)


def test_cross_fitting_never_reads_an_images_own_pixels():
    rng = np.random.default_rng(2)
    tops = rng.integers(4, 20, size=9)
    masks = _band_masks(9, tops, tops + 12)
    maps = _normal_maps(rng, 9, tops)
    weight = np.ones_like(masks)
    out = mr.cross_fitted_maps(maps, weight, masks, "raw")
    fold = np.arange(9) % 2
    for k in (0, 1):
        ref = mr.fit_map_reference(maps[fold != k], weight[fold != k],
                                   masks[fold != k], "raw")
        np.testing.assert_array_equal(
            out[fold == k], mr.standardize_maps(maps[fold == k],
                                                weight[fold == k],
                                                masks[fold == k], ref))
    # Changing image 0 changes the other fold's maps, never its own.
    changed = maps.copy()
    changed[0] *= 3.0
    again = mr.cross_fitted_maps(changed, weight, masks, "raw")
    ref = mr.fit_map_reference(maps[fold == 1], weight[fold == 1],
                               masks[fold == 1], "raw")
    np.testing.assert_array_equal(
        again[0], mr.standardize_maps(changed[:1], weight[:1], masks[:1],
                                      ref)[0])
    # Three images: leave-one-out.
    loo = mr.cross_fitted_maps(maps[:3], weight[:3], masks[:3], "raw")
    ref = mr.fit_map_reference(maps[1:3], weight[1:3], masks[1:3], "raw")
    np.testing.assert_array_equal(
        loo[0], mr.standardize_maps(maps[:1], weight[:1], masks[:1], ref)[0])
    with pytest.raises(ConfigError, match="at least 2 normal calibration"):
        mr.cross_fitted_maps(maps[:1], weight[:1], masks[:1], "raw")


def test_bad_references_and_inputs_name_the_fix():
    good = mr.fit_map_reference(np.ones((2, H, W)), np.ones((2, H, W), bool),
                                None, "raw")
    with pytest.raises(ConfigError, match="--map_norm=depth to fit it again"):
        dataclasses.replace(good, spread=(0.0,) * len(good.spread))
    with pytest.raises(ConfigError, match="malformed"):
        mr.MapReference.from_json({"form": mr.FORM, "coordinate": "band"})
    with pytest.raises(ConfigError, match="calibration"):
        mr.fit_map_reference(np.ones((0, H, W)), np.ones((0, H, W), bool),
                             None, "raw")
    with pytest.raises(ConfigError, match="no scored pixel"):
        mr.fit_map_reference(np.ones((2, H, W)), np.zeros((2, H, W), bool),
                             None, "raw")
    band = mr.fit_map_reference(np.ones((2, H, W)), np.ones((2, H, W), bool),
                                _band_masks(2, [5, 6], [15, 16]), "raw")
    with pytest.raises(ConfigError, match="--roi=retina"):
        mr.standardize_maps(np.ones((1, H, W)), np.ones((1, H, W), bool),
                            None, band)
    with pytest.raises(ConfigError, match="--map_norm must be one of"):
        EvalConfig(output_dir="", map_norm="pixel")


def test_the_reference_round_trips_through_detector_json(tmp_path):
    rng = np.random.default_rng(3)
    tops = rng.integers(4, 20, size=6)
    masks = _band_masks(6, tops, tops + 10)
    ref = mr.fit_map_reference(_normal_maps(rng, 6, tops),
                               np.ones_like(masks), masks, "signed_s4")
    detector = detector_lib.Detector.from_configs(
        DataConfig(), MappingConfig(),
        EvalConfig(output_dir="", aggregate="map_max", map_sigma=4.0,
                   map_norm="depth"), written_by="test", map_reference=ref)
    detector_lib.save_detector(detector, str(tmp_path))
    loaded = detector_lib.load_detector(str(tmp_path))
    assert loaded.map_reference == ref
    assert loaded.image_score.map_norm == "depth"
    # A damaged reference names the file and the fix.
    text = (tmp_path / "detector.json").read_text().replace(
        '"coordinate": "band"', '"coordinate": "diagonal"')
    (tmp_path / "detector.json").write_text(text)
    with pytest.raises(ConfigError, match="detector.json.*--map_norm=depth"):
        detector_lib.load_detector(str(tmp_path))
    # A reference written for the earlier clipped form (no "form") is
    # refused: its threshold was calibrated on other maps.
    record = ref.to_json()
    assert record["form"] == mr.FORM
    del record["form"]
    with pytest.raises(ConfigError, match="map form.*Re-run anogan-evaluate"):
        mr.MapReference.from_json(record)
    assert mr.MapReference.from_json(ref.to_json()) == ref
    # map_norm changes map_max's scale: a recorded threshold no longer holds.
    plain = dataclasses.replace(detector, image_score=dataclasses.replace(
        detector.image_score, map_norm="none"))
    assert detector_lib.scale_differences(detector, plain) == [
        "image_score.map_norm: 'depth' -> 'none'"]


def test_the_graph_twin_equals_numpy():
    rng = np.random.default_rng(4)
    n = 5
    tops = rng.integers(2, 22, size=n)
    masks = _band_masks(n, tops, tops + rng.integers(6, 16, size=n))
    masks[1, :, 3:9] = False                    # columns without ROI
    masks[2, :, ::2] = False                    # an even count of ROI columns
    masks[4] = False                            # no ROI: rows
    # Ragged bands: a varying top per column.
    for c in range(W):
        masks[3, : 5 + c % 4, c] = False
    ref = mr.fit_map_reference(rng.exponential(1.0, (8, H, W)),
                               rng.random((8, H, W)) > 0.2,
                               _band_masks(8, rng.integers(2, 20, size=8),
                                           rng.integers(24, 38, size=8)),
                               "signed_s2")
    maps = rng.exponential(1.0, (n, H, W)).astype(np.float32)
    weight = rng.random((n, H, W)) > 0.1
    expected = mr.standardize_maps(maps, weight, masks, ref)
    got = image_graph._standardize(tf.constant(maps), tf.constant(weight),
                                   tf.constant(masks), ref).numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        image_graph._depth(tf.constant(masks), n, H, W).numpy(),
        mr.depth_coordinates((n, H, W), masks))
