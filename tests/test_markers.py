"""Marker discovery (anogan_tf.markers): thresholds and regions on hand-made
maps, descriptors, clustering of well-separated region types, the outputs of
a whole run from a maps dir, a tiny model through anogan-discover, and the
error messages of bad input."""

import csv
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from anogan_tf.config import ConfigError, DataConfig
from anogan_tf.data import DataError, ImageSet
from anogan_tf.markers import (DiscoveryConfig, KnownTypes, calibrate_threshold,
                               cluster_regions, describe_regions, embed,
                               find_regions, run_discovery)
from anogan_tf.markers import regions as regions_lib
from anogan_tf.markers.describe import shape_descriptors
from anogan_tf.markers.evaluate import write_known_types
from anogan_tf.markers.pipeline import CALIBRATION_FILE, discovery_maps, MapSet
from anogan_tf.markers.report import safe_name
from anogan_tf.scoring import calibration as calibration_lib
from anogan_tf.scoring import map_reference as reference_lib

sys.path.insert(0, os.path.dirname(__file__))
from serving_server import make_tiny_model_dir  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TYPES = ("spot", "line", "pool")


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


# --- thresholds -------------------------------------------------------------

def test_parse_threshold_rule_known_answers_and_errors():
    assert regions_lib.parse_threshold_rule("percentile") == ("percentile",
                                                              None)
    assert regions_lib.parse_threshold_rule(" conformal ") == ("conformal",
                                                               None)
    assert regions_lib.parse_threshold_rule("0.25") == ("fixed", 0.25)
    for bad in ("-1", "nan", "inf", "high"):
        with pytest.raises(ConfigError, match="--region_threshold"):
            regions_lib.parse_threshold_rule(bad)


def test_pixel_percentile_threshold_is_the_quantile_of_region_pixels():
    # 100 distinct values 0..99 inside the region; a huge value outside it
    # must not count.
    maps = np.zeros((1, 10, 11))
    maps[0, :, :10] = np.arange(100).reshape(10, 10)
    maps[0, :, 10] = 1e6
    region = np.zeros(maps.shape, bool)
    region[0, :, :10] = True
    t = regions_lib.pixel_percentile_threshold(maps, region, 0.05)
    assert t == 95.0  # the 0.95 quantile, "higher": 5 of 100 pixels >= t
    assert np.mean(maps[region] >= t) == 0.05
    rt = calibrate_threshold("percentile", maps, region, 1, 0.05)
    assert (rt.value, rt.rule, rt.target, rt.n_calibration) == (
        95.0, "percentile", 0.05, 1)
    assert rt.calibration_pixel_rate == 0.05
    assert rt.calibration_image_rate == 1.0


def test_image_region_levels_known_answers():
    maps = np.zeros((3, 12, 12))
    maps[0, 2:5, 2:5] = 5.0          # a 3x3 block at 5 ...
    maps[0, 9, 9] = 9.0              # ... and one brighter pixel
    maps[1, 1:3, 1:3] = 2.0          # 2x2 only
    maps[1, 6:9, 6:9] = 1.0          # and 3x3 dimmer
    # image 2: flat zero map
    assert regions_lib.image_region_levels(maps, None, 1).tolist() == [
        9.0, 2.0, 0.0]
    assert regions_lib.image_region_levels(maps, None, 9).tolist() == [
        5.0, 1.0, 0.0]
    # Area 145 exceeds every image: no level at all.
    assert np.isneginf(regions_lib.image_region_levels(maps, None, 145)).all()
    # A mask that hides the block: only the lone pixel remains.
    mask = np.ones(maps.shape, bool)
    mask[0, 2:5, 2:5] = False
    assert regions_lib.image_region_levels(maps[:1], mask[:1], 1)[0] == 9.0


def test_conformal_region_threshold_is_split_conformal_on_levels():
    rng = np.random.default_rng(0)
    maps = rng.uniform(0, 1, (19, 16, 16))
    levels = regions_lib.image_region_levels(maps, None, 4)
    t = regions_lib.conformal_region_threshold(maps, None, 4, 0.2)
    assert t == calibration_lib.conformal_threshold(levels, 0.2)
    rt = calibrate_threshold("conformal", maps, None, 4,
                             target_region_fpr=0.2)
    # t is the k-th smallest level, k = ceil(20 * 0.8) = 16: the 4 images
    # above it have a region at t (4 / (19 + 1) <= 0.2 for a new image).
    assert t == np.sort(levels)[15]
    assert rt.value == t and rt.calibration_image_rate == 4 / 19
    # Too few images for the rate: a ConfigError naming the flag.
    with pytest.raises(ConfigError, match="--target_region_fpr"):
        calibrate_threshold("conformal", maps[:3], None, 4,
                            target_region_fpr=0.01)


def test_threshold_rules_without_calibration_say_what_to_pass():
    for rule in ("percentile", "conformal"):
        with pytest.raises(ConfigError, match="--calibration_data"):
            calibrate_threshold(rule, None, None, 5)
    fixed = calibrate_threshold("fixed", None, None, 5, value=0.3)
    assert fixed.value == 0.3 and fixed.calibration_image_rate is None
    assert fixed.describe() == "threshold 0.3 (a fixed value)"


# --- regions ----------------------------------------------------------------

def test_find_regions_known_answer_with_min_area_and_roi():
    maps = np.zeros((3, 20, 20))
    maps[0, 2:5, 3:7] = 1.0      # 12 px, inside the ROI
    maps[0, 10:12, 10:11] = 1.0  # 2 px: below min_area
    maps[0, 15:19, 15:19] = 0.7  # 16 px but below the threshold 0.8
    maps[1, 16:19, 1:5] = 2.0    # 12 px outside the ROI
    maps[1, 5, 5:15] = 3.0       # a 10-px line inside it
    # image 2: nothing at all
    roi = np.zeros(maps.shape, bool)
    roi[:, 0:14] = True
    threshold = regions_lib.RegionThreshold(0.8, "fixed")
    rs = find_regions(maps, threshold, 4, None, roi)
    got = [(r.image_index, r.number, r.bbox, r.area, r.centroid)
           for r in rs.regions]
    assert got == [(0, 1, (2, 3, 5, 7), 12, (3.0, 4.5)),
                   (1, 1, (5, 5, 6, 15), 10, (5.0, 9.5))]
    assert rs.labels[0].sum() == 12 and rs.labels[2].max() == 0
    assert rs.of_image(2) == [] and rs.of_image(1) == [1]
    np.testing.assert_array_equal(rs.mask(1), maps[1] == 3.0)
    # Without the ROI test the region outside it is kept too.
    assert len(find_regions(maps, threshold, 4)) == 3
    # 4-connectivity splits a diagonal pair, 8-connectivity joins it.
    diag = np.zeros((1, 6, 6))
    diag[0, 1, 1] = diag[0, 2, 2] = 1.0
    assert len(find_regions(diag, threshold, 2, connectivity=2)) == 1
    assert len(find_regions(diag, threshold, 2, connectivity=1)) == 0


def test_shape_descriptors_known_answers():
    rect = np.ones((3, 5), bool)
    d = shape_descriptors(rect)
    assert d["area"] == 15 and d["extent"] == 1.0
    assert d["solidity"] == pytest.approx(1.0)
    assert (d["bbox_height"], d["bbox_width"]) == (3, 5)
    line = np.ones((1, 9), bool)
    assert shape_descriptors(line)["eccentricity"] == pytest.approx(1.0)
    assert shape_descriptors(np.ones((4, 4), bool))["eccentricity"] == \
        pytest.approx(0.0)
    ell = np.zeros((5, 5), bool)
    ell[:, 0] = ell[4, :] = True
    assert shape_descriptors(ell)["solidity"] < 0.75


# --- a scene of three well-separated region types ---------------------------

def _scene(n_per_type=6, size=48, seed=0):
    """Images, signed residuals and type maps: each image holds one region of
    one type (spot: small, bright; line: long, thin, bright; pool: large,
    dark), at a random place; two images hold none."""
    rng = np.random.default_rng(seed)
    n = 3 * n_per_type + 2
    signed = rng.normal(0, 0.01, (n, size, size))
    types = np.zeros((n, size, size), np.uint8)
    for i in range(3 * n_per_type):
        kind = i % 3
        y, x = rng.integers(8, size - 20, 2)
        if kind == 0:
            yy, xx = np.ogrid[:size, :size]
            where = (yy - y) ** 2 + (xx - x) ** 2 <= 4
            value = 0.9
        elif kind == 1:
            where = np.zeros((size, size), bool)
            where[y, x - 6:x + 12] = True
            value = 0.6
        else:
            where = np.zeros((size, size), bool)
            where[y:y + 10, x:x + 10] = True
            value = -0.5
        signed[i][where] = value
        types[i][where] = kind + 1
    images = ImageSet(np.clip(signed, -1, 1)[..., None].astype(np.float32),
                      tuple(f"scan/{i:02d}" for i in range(n)))
    return images, signed.astype(np.float32), types


def _write_maps_dir(path, images, signed, calibration_signed):
    os.makedirs(os.path.join(path, "maps"))
    for i, image_id in enumerate(images.ids):
        np.savez_compressed(
            os.path.join(path, "maps", safe_name(image_id) + ".npz"),
            map=np.abs(signed[i]), signed=signed[i])
    np.savez_compressed(os.path.join(path, CALIBRATION_FILE),
                        maps=np.abs(calibration_signed),
                        signed=calibration_signed,
                        scoring_sigma=np.float64(0.0))


def test_clustering_recovers_well_separated_region_types():
    images, signed, types = _scene()
    maps = np.abs(signed)
    rs = find_regions(maps, regions_lib.RegionThreshold(0.2, "fixed"), 5)
    assert len(rs) == 18 and not rs.of_image(18) and not rs.of_image(19)
    truth = [int(types[r.image_index][rs.mask(k)].max())
             for k, r in enumerate(rs.regions)]
    descriptors = describe_regions(rs, images.images, maps,
                                   ("shape", "intensity"), signed=signed)
    assert descriptors.block_names() == ("shape", "intensity")
    embedding = embed(descriptors, 0, seed=0)
    for method in ("kmeans", "agglomerative"):
        c = cluster_regions(embedding.coords, method, None, 2, 6, 5, 0)
        assert c.k == 3, (method, c.silhouette_by_k)
        assert adjusted_rand_score(truth, c.labels) == 1.0
        # The medoid of each marker is one of its members.
        for m, members in enumerate(c.prototypes, start=1):
            assert set(members) == set(np.flatnonzero(c.labels == m))
    c = cluster_regions(embedding.coords, "hdbscan", None, 2, 6, 4, 0)
    assigned = c.labels > 0
    assert c.k == 3 and assigned.sum() >= 15
    assert adjusted_rand_score(np.array(truth)[assigned],
                               c.labels[assigned]) == 1.0
    fixed = cluster_regions(embedding.coords, "kmeans", 2, 2, 6, 5, 0)
    assert fixed.k == 2 and set(fixed.labels) == {1, 2}


def test_evaluate_markers_known_answer():
    from anogan_tf.markers import Clustering, evaluate_markers
    types = np.zeros((1, 20, 20), np.uint8)
    types[0, 2:6, 2:6] = 1      # lesion A, type 1: found
    types[0, 2:6, 10:14] = 1    # lesion C, type 1: missed
    types[0, 10:14, 10:14] = 2  # lesion B, type 2: found
    maps = np.zeros((1, 20, 20))
    maps[0, 2:6, 2:6] = maps[0, 10:14, 10:14] = 1.0
    maps[0, 16:18, 0:4] = 1.0   # a false positive
    rs = find_regions(maps, regions_lib.RegionThreshold(0.5, "fixed"), 4)
    assert [r.bbox for r in rs.regions] == [(2, 2, 6, 6), (10, 10, 14, 14),
                                            (16, 0, 18, 4)]
    clustering = Clustering(np.array([1, 2, 3]), 3, "kmeans", None, {},
                            np.zeros((3, 2)), np.zeros(3),
                            ((0,), (1,), (2,)))
    ev = evaluate_markers(rs, clustering, KnownTypes(types, ("a", "b")))
    assert ev["n_regions"] == 3 and ev["n_regions_on_lesions"] == 2
    assert ev["region_precision"] == pytest.approx(2 / 3)
    assert ev["ari"] == 1.0
    assert [m["assigned_type"] for m in ev["markers"]] == ["a", "b", "none"]
    a, b = ev["per_type"]["a"], ev["per_type"]["b"]
    assert (a["lesions"], a["detected"], a["found"], a["recall"]) == (
        2, 1, 1, 0.5)
    assert (b["lesions"], b["recall"], b["region_recall"]) == (1, 1.0, 1.0)
    assert ev["min_recall"] == 0.5


def test_run_discovery_from_maps_dir_writes_every_output(tmp_path):
    images, signed, types = _scene()
    rng = np.random.default_rng(1)
    calibration = rng.normal(0, 0.01, (10, 48, 48)).astype(np.float32)
    maps_dir = str(tmp_path / "maps_run")
    _write_maps_dir(maps_dir, images, signed, calibration)
    known = KnownTypes(types, TYPES, "hand-made")
    out = str(tmp_path / "out")
    config = DiscoveryConfig(output_dir=out, region_map="scoring",
                             target_pixel_fpr=0.001, min_region_area=5,
                             max_markers=5, prototypes=4)
    summary = run_discovery(config, images, maps_dir=maps_dir, known=known,
                            data_config=DataConfig(), progress=False)
    assert (summary["n_images"], summary["n_regions"],
            summary["n_images_with_regions"], summary["k"]) == (20, 18, 18, 3)
    assert summary["descriptor_blocks"] == ["shape", "intensity"]  # no ROI
    assert summary["evaluation"]["ari"] == pytest.approx(1.0)
    for name in TYPES:
        assert summary["evaluation"]["per_type"][name]["recall"] == 1.0
    regions = _rows(os.path.join(out, "regions.csv"))
    assert len(regions) == 18
    assert {r["image_id"] for r in regions} == set(images.ids[:18])
    for r in regions:
        assert int(r["area"]) >= 5 and r["cluster"] in ("1", "2", "3")
        assert float(r["distance_to_centre"]) >= 0
    listed = _rows(os.path.join(out, "images.csv"))
    assert sorted(r["image_id"] for r in listed) == sorted(images.ids)
    assert {r["n_regions"] for r in listed
            if r["image_id"] in images.ids[18:]} == {"0"}
    with open(os.path.join(out, "markers.json")) as f:
        record = json.load(f)
    sizes = sorted(m["size"] for m in record["markers"] if m["marker"] > 0)
    assert sizes == [6, 6, 6]
    cluster_of = {r["region_id"]: r["cluster"] for r in regions}
    for m in record["markers"]:
        assert len(m["prototype_region_ids"]) == 4
        assert {cluster_of[r] for r in m["prototype_region_ids"]} == {
            str(m["marker"])}
        assert m["n_images"] == 6
        assert len(m["true_types"]) == 1  # every marker is one pure type
    sheets = sorted(os.listdir(os.path.join(out, "report", "sheets")))
    assert sheets == ["marker_01.png", "marker_02.png", "marker_03.png"]
    html = open(os.path.join(out, "report", "index.html")).read()
    assert "M1" in html and "embedding.png" in html
    assert f"none: maps read from {maps_dir}" in html
    # The maps dir's own maps are not copied again by a maps_dir run.
    assert not os.path.exists(os.path.join(out, "maps"))

    # The normalized map (signed residual divided by the calibration
    # residuals' p99 at its depth) finds the same regions, pixel for pixel,
    # and the same markers. At a pixel FPR of 1e-3 each 48 x 48 image holds
    # ~2 noise pixels above the threshold, and one that touches a lesion
    # changes that region's shape (it did: a line region of 19 pixels became
    # a marker of its own), so this run asks for 1e-4.
    out2 = str(tmp_path / "out2")
    summary2 = run_discovery(
        DiscoveryConfig(output_dir=out2, region_map="normalized",
                        target_pixel_fpr=0.0001, min_region_area=5,
                        max_markers=5), images, maps_dir=maps_dir,
        known=known, progress=False)
    assert (summary2["n_regions"], summary2["k"]) == (18, 3)
    assert summary2["evaluation"]["ari"] == pytest.approx(1.0)
    regions2 = _rows(os.path.join(out2, "regions.csv"))
    assert [(r["image_id"], r["y0"], r["x0"], r["y1"], r["x1"], r["area"])
            for r in regions2] == [
        (r["image_id"], r["y0"], r["x0"], r["y1"], r["x1"], r["area"])
        for r in regions]
    assert {int(r["area"]) for r in regions2} == {13, 18, 100}


def test_normalized_maps_are_map_reference_standardised_residuals():
    rng = np.random.default_rng(2)
    cal = rng.normal(0, 0.1, (6, 16, 16)).astype(np.float32)
    target = rng.normal(0, 0.1, (2, 16, 16)).astype(np.float32)
    dummy = ImageSet(np.zeros((2, 16, 16, 1), np.float32), ("a", "b"))
    cal_set = MapSet(dummy, np.abs(cal), signed=cal)
    target_set = MapSet(dummy, np.abs(target), signed=target)
    config = DiscoveryConfig(output_dir="unused", region_map="normalized")
    maps, cal_maps, cal_weight, text = discovery_maps(config, target_set,
                                                      cal_set, 0.0)
    fit = np.arange(6) % 2 == 0
    ref = reference_lib.fit_map_reference(np.abs(cal[fit]),
                                          np.ones((3, 16, 16), bool), None,
                                          "raw")
    ones = np.ones((2, 16, 16), bool)
    np.testing.assert_allclose(
        maps, reference_lib.standardize_maps(np.abs(target), ones, None,
                                             ref), rtol=1e-6)
    np.testing.assert_allclose(
        cal_maps, reference_lib.standardize_maps(np.abs(cal[~fit]),
                                                 ones[:1].repeat(3, 0),
                                                 None, ref), rtol=1e-6)
    assert cal_weight.shape == (3, 16, 16) and "3 normal images" in text
    with pytest.raises(ConfigError, match="--calibration_data"):
        discovery_maps(config, target_set, None, 0.0)


# --- a tiny model through the Scorer ----------------------------------------

def _oct_like(n, lesions, rng):
    """32 x 32 images in [-1, 1]: flat dark tissue, and with `lesions` a
    bright line (even images) or a bright square (odd images)."""
    x = rng.normal(-0.5, 0.06, (n, 32, 32, 1)).astype(np.float32)
    types = np.zeros((n, 32, 32), np.uint8)
    for i in range(n if lesions else 0):
        y, c = rng.integers(4, 20, 2)
        sl = ((y, slice(c - 2, c + 10)) if i % 2 == 0 else
              (slice(y, y + 8), slice(c, c + 8)))
        x[i][sl] = 0.9
        types[i][sl] = 1 + i % 2
    return np.clip(x, -1, 1), types


def test_run_discovery_with_a_tiny_model_reads_the_scorers_outputs(tmp_path):
    from anogan_tf.config import EvalConfig, MappingConfig
    from anogan_tf.scoring.scorer import Scorer
    md = str(tmp_path / "model")
    make_tiny_model_dir(md)
    rng = np.random.default_rng(0)
    x, types = _oct_like(8, True, rng)
    cal, _ = _oct_like(8, False, rng)
    images = ImageSet(x, tuple(f"t/{i}" for i in range(8)),
                      labels=np.ones(8, np.int32))
    calibration = ImageSet(cal, tuple(f"c/{i}" for i in range(8)))
    scorer = Scorer.from_model_dir(
        md, DataConfig(image_size=32), MappingConfig(steps=2,
                                                     jit_compile=False),
        EvalConfig(output_dir=str(tmp_path)))
    out = str(tmp_path / "out")
    summary = run_discovery(
        DiscoveryConfig(output_dir=out, num_markers="2", prototypes=3),
        images, scorer, calibration,
        known=KnownTypes(types, ("line", "square")), progress=False)
    # The scorer's z* and D give the learned descriptors.
    assert summary["descriptor_blocks"] == ["shape", "intensity",
                                            "d_features", "latent"]
    assert summary["n_images"] == 8 and summary["k"] == 2
    assert summary["n_images_with_regions"] == 8
    assert summary["evaluation"]["ari"] == pytest.approx(1.0)
    regions = _rows(os.path.join(out, "regions.csv"))
    squares = [r for r in regions if r["image_id"] in images.ids[1::2]]
    assert {int(r["area"]) for r in squares} == {64}
    # A maps-dir re-run reads the saved maps and calibration maps back and
    # finds the same regions without a model.
    again = run_discovery(
        DiscoveryConfig(output_dir=str(tmp_path / "again"), num_markers="2"),
        images, maps_dir=out, progress=False)
    assert again["n_regions"] == summary["n_regions"]
    assert again["threshold"] == pytest.approx(summary["threshold"])
    assert again["descriptor_blocks"] == ["shape", "intensity"]


# --- bad input ---------------------------------------------------------------

def test_discovery_config_errors_name_their_flags():
    with pytest.raises(ConfigError, match="--output_dir"):
        DiscoveryConfig(output_dir="")
    with pytest.raises(ConfigError, match="--num_markers"):
        DiscoveryConfig(output_dir="o", num_markers="many")
    with pytest.raises(ConfigError, match="--target_pixel_fpr"):
        DiscoveryConfig(output_dir="o", target_pixel_fpr=1.5)
    with pytest.raises(ConfigError, match="--min_region_area"):
        DiscoveryConfig(output_dir="o", min_region_area=0)
    with pytest.raises(ConfigError, match="--region_sigma"):
        DiscoveryConfig(output_dir="o", region_sigma=(-1.0,))
    with pytest.raises(ConfigError, match="--region_map=scoring"):
        DiscoveryConfig(output_dir="o", region_map="scoring",
                        region_sigma=(1.0, 3.0))
    with pytest.raises(ConfigError, match="--min_markers"):
        DiscoveryConfig(output_dir="o", min_markers=5, max_markers=3)
    with pytest.raises(ConfigError, match=re.escape(
            "--cluster_method must be one of kmeans|agglomerative|hdbscan, "
            "got 'dbscan'")):
        DiscoveryConfig(output_dir="o", cluster_method="dbscan")
    with pytest.raises(ConfigError, match="--descriptors"):
        DiscoveryConfig(output_dir="o", descriptors=("colour",))


def test_maps_dir_errors_name_the_dir_and_the_fix(tmp_path):
    images, _, _ = _scene(1)
    config = DiscoveryConfig(output_dir=str(tmp_path / "o"),
                             region_threshold="0.2", region_map="scoring")
    missing = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match="nowhere.*does not exist"):
        run_discovery(config, images, maps_dir=missing, progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no maps/ folder"):
        run_discovery(config, images, maps_dir=str(empty), progress=False)
    (empty / "maps").mkdir()
    with pytest.raises(DataError, match="no map of image 'scan/00'"):
        run_discovery(config, images, maps_dir=str(empty), progress=False)
    with pytest.raises(ConfigError, match="--model_dir"):
        run_discovery(config, images, progress=False)


def test_an_anogan_score_dir_of_npy_maps_works_with_a_fixed_threshold(
        tmp_path):
    # anogan-score writes maps/<id>.npy only (no signed residual, no
    # calibration maps): the normalized map falls back to the scoring maps,
    # and a numeric threshold needs no calibration images.
    images, signed, _ = _scene(1)
    (tmp_path / "scores" / "maps").mkdir(parents=True)
    for i, image_id in enumerate(images.ids):
        np.save(tmp_path / "scores" / "maps" / (safe_name(image_id) + ".npy"),
                np.abs(signed[i]))
    summary = run_discovery(
        DiscoveryConfig(output_dir=str(tmp_path / "o"), region_threshold="0.2",
                        min_region_area=5, num_markers="1"),
        images, maps_dir=str(tmp_path / "scores"), progress=False)
    assert (summary["n_images"], summary["n_regions"], summary["k"]) == (
        5, 3, 1)
    assert summary["threshold_text"] == "threshold 0.2 (a fixed value)"
    with pytest.raises(ConfigError, match="holds no calibration_maps.npz"):
        run_discovery(DiscoveryConfig(output_dir=str(tmp_path / "o2")),
                      images, calibration=images,
                      maps_dir=str(tmp_path / "scores"), progress=False)


def _discover(*args):
    """Runs the binary (a subprocess: absl parses its own flags)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "-m", "anogan_tf.discover", *args], cwd=REPO,
        env=env, capture_output=True, text=True, timeout=300)


def test_discover_binary_reports_bad_input_without_a_traceback(tmp_path):
    empty = tmp_path / "empty_folder"
    empty.mkdir()
    res = _discover(f"--output_dir={tmp_path / 'o'}",
                    f"--maps_dir={tmp_path / 'nowhere'}",
                    f"--inputs={empty}")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert "anogan-discover: error:" in res.stderr
    assert str(empty) in res.stderr
    # (Neither --model_dir nor --maps_dir: run_discovery's ConfigError,
    # test_maps_dir_errors_name_the_dir_and_the_fix; one subprocess here
    # keeps the TF start-up cost to one.)
