"""Tests of the whole-image signatures score_images / score_images_uint8.

The acceptance (issue 11): on the same image files, the exported
score_images equals anogan-score's image_scores.csv, scores.csv and
maps/*.npy (1e-4), through the loaded SavedModel, `saved_model_cli run` and
the loopback gRPC server, with the retina ROI, the intensity norm and a map
smoothing sigma. The graph twins of data/roi.py, data/intensity.py,
fill_artifacts and scoring/maps.py are compared with their NumPy originals
on synthetic_oct scans with and without acquisition artefacts.
"""

import concurrent.futures
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from scipy import ndimage

from anogan_tf.config import ConfigError, DataConfig, EvalConfig, MappingConfig
from anogan_tf.data import load_images
from anogan_tf.data import intensity as intensity_lib
from anogan_tf.data import patches as patches_lib
from anogan_tf.data import roi as roi_lib
from anogan_tf.data.grids import images_to_uint8
from anogan_tf.export import export_model, exporter, image_graph, roi_graph
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring import maps as maps_lib
from anogan_tf.scoring import metrics as metrics_lib
from anogan_tf.scoring import run_score
from anogan_tf.serving import ServingError, connect

sys.path.insert(0, os.path.dirname(__file__))
import serving_server  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
SIZE = 64  # full B-scans; the tiny model maps 32x32 patches
# The detector: retina ROI (a low coverage so several patches per scan are
# kept), the intensity norm, a smoothed map and its maximum as the score.
DATA = DataConfig(dataset="folder", image_size=32, patch_size=32,
                  patch_stride=16, roi="retina", roi_min_coverage=0.3,
                  intensity_norm="roi_percentile")
MAPPING = MappingConfig(steps=4, lr=0.05, restarts=2, seed=3,
                        jit_compile=False)
EVAL = EvalConfig(output_dir="", aggregate="map_max", map_sigma=2.0,
                  map_smoothing="signed")
IMAGE_KEYS = ("anomaly_score", "residual_score", "discrimination_score")


def _save_detector(model_dir, threshold=None):
    detector_lib.save_detector(detector_lib.Detector.from_configs(
        DATA, MAPPING, EVAL, threshold=threshold, written_by="test"),
        model_dir)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The model dir, 3 PNG B-scans (with artefacts), and anogan-score's
    outputs on them; then the recorded threshold and the export."""
    root = tmp_path_factory.mktemp("score_images")
    model_dir = str(root / "model")
    serving_server.make_tiny_model_dir(model_dir, seed=0)
    _save_detector(model_dir)
    # The training size, as anogan-train records it (score_images' size).
    with open(os.path.join(model_dir, "flags.cfg"), "w") as f:
        f.write(f"--dataset=synthetic_oct\n--oct_height={SIZE}\n"
                f"--oct_width={SIZE}\n")
    scans = load_images(DataConfig(
        dataset="synthetic_oct", oct_height=SIZE, oct_width=SIZE,
        oct_num_test=3, oct_artifacts=True, image_size=32, seed=4), "test")
    png_dir = root / "png"
    png_dir.mkdir()
    pixels = images_to_uint8(scans.images)
    for i, p in enumerate(pixels):
        Image.fromarray(p[..., 0]).save(png_dir / f"scan{i}.png")
    out = root / "scored"
    run_score(model_dir, DATA, MAPPING,
              EvalConfig(output_dir=str(out), aggregate="map_max",
                         map_sigma=2.0, map_smoothing="signed"),
              inputs=[str(png_dir)], save_maps=True)
    with open(out / "image_scores.csv", newline="") as f:
        image_rows = {r["id"]: r for r in csv.DictReader(f)}
    with open(out / "scores.csv", newline="") as f:
        patch_rows = list(csv.DictReader(f))
    ids = [f"scan{i}" for i in range(3)]
    maps = np.stack([np.load(out / "maps" / f"{i}.npy") for i in ids])
    scores = np.array([float(image_rows[i]["anomaly_score"]) for i in ids])
    # A threshold between the scores, so both verdicts occur.
    threshold = float(np.median(scores))
    _save_detector(model_dir, detector_lib.Threshold(value=threshold,
                                                     rule="test median"))
    version_dir = export_model(model_dir, str(root / "export"))
    return {"model_dir": model_dir, "version_dir": version_dir,
            "pixels": pixels, "ids": ids, "image_rows": image_rows,
            "patch_rows": patch_rows, "maps": maps, "threshold": threshold,
            "root": root}


@pytest.fixture(scope="module")
def loaded(case):
    return tf.saved_model.load(case["version_dir"])


@pytest.fixture(scope="module")
def served(case, loaded):
    out = loaded.signatures["score_images_uint8"](
        images=tf.constant(case["pixels"]))
    return {k: v.numpy() for k, v in out.items()}


def _as_float(pixels):
    """The decoder's arithmetic for 8-bit files (p / 255, then [-1, 1])."""
    return (pixels.astype(np.float32) / 255.0) * 2.0 - 1.0


def _check_parity(case, out, where):
    """`out` (score_images outputs) equals anogan-score's files."""
    rows = case["image_rows"]
    for key, out_key in zip(IMAGE_KEYS, ("image_score", "image_residual_score",
                                         "image_discrimination_score")):
        expected = [float(rows[i][key]) for i in case["ids"]]
        np.testing.assert_allclose(out[out_key], expected, rtol=1e-4,
                                   atol=1e-4, err_msg=f"{where} {key}")
    np.testing.assert_array_equal(
        out["num_patches"], [int(rows[i]["num_patches"]) for i in case["ids"]])
    np.testing.assert_allclose(out["anomaly_map"], case["maps"], rtol=1e-4,
                               atol=1e-4, err_msg=f"{where} maps")
    # Every scores.csv row is one valid grid entry, with the same scores.
    valid = np.asarray(out["patch_valid"], bool)
    assert valid.sum() == len(case["patch_rows"])
    for row in case["patch_rows"]:
        i = case["ids"].index(row["id"])
        at = np.flatnonzero((out["patch_y"][i] == int(row["patch_y"])) &
                            (out["patch_x"][i] == int(row["patch_x"])))
        assert len(at) == 1 and valid[i, at[0]], row
        for key in IMAGE_KEYS:
            np.testing.assert_allclose(out[f"patch_{key}"][i, at[0]],
                                       float(row[key]), rtol=1e-4, atol=1e-4)
    assert np.all(np.isnan(out["patch_anomaly_score"][~valid]))


# --- parity with anogan-score ---------------------------------------------------

def test_the_export_is_sized_and_set_from_the_model_dir(case, served):
    with open(os.path.join(case["version_dir"],
                           exporter.EXPORT_INFO_FILE)) as f:
        plan = json.load(f)["score_images"]
    assert plan["image_shape"] == [SIZE, SIZE, 1]  # from flags.cfg
    assert (plan["roi"], plan["intensity_norm"], plan["aggregate"],
            plan["map_sigma"]) == ("retina", "roi_percentile", "map_max", 2.0)
    assert plan["grid_positions"] == 9  # 3 x 3 positions of 32 at stride 16
    assert served["patch_valid"].shape == (3, 9)
    # The ROI rules out some positions of every scan.
    assert 0 < served["num_patches"].min() and served["num_patches"].max() < 9


def test_uint8_and_float_signatures_equal_anogan_score(case, loaded, served):
    _check_parity(case, served, "uint8")
    as_float = loaded.signatures["score_images"](
        images=tf.constant(_as_float(case["pixels"])))
    _check_parity(case, {k: v.numpy() for k, v in as_float.items()}, "float")


def test_is_anomalous_uses_the_baked_threshold(case, served):
    t = case["threshold"]
    np.testing.assert_array_equal(served["threshold"], [t] * 3)
    expected = (served["image_score"] >= t).astype(np.int32)
    np.testing.assert_array_equal(served["is_anomalous"], expected)
    assert set(expected) == {0, 1}
    # The same verdict as the CSV's scores against detector.json's value.
    csv_scores = [float(case["image_rows"][i]["anomaly_score"])
                  for i in case["ids"]]
    np.testing.assert_array_equal(expected, np.array(csv_scores) >= t)


def test_saved_model_cli_lists_and_runs_score_images(case, served, tmp_path):
    cli = os.path.join(VENV_BIN, "saved_model_cli")
    shown = subprocess.run([cli, "show", "--dir", case["version_dir"],
                            "--tag_set", "serve"],
                           capture_output=True, text=True, check=True,
                           timeout=120).stdout
    assert {'"score_images"', '"score_images_uint8"'} <= set(shown.split())
    np.save(tmp_path / "x.npy", case["pixels"])
    subprocess.run(
        [cli, "run", "--dir", case["version_dir"], "--tag_set", "serve",
         "--signature_def", "score_images_uint8", "--inputs",
         f"images={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, check=True, timeout=300)
    from_cli = {k: np.load(tmp_path / "out" / f"{k}.npy") for k in served}
    _check_parity(case, from_cli, "saved_model_cli")


@pytest.fixture(scope="module")
def grpc_server(case):
    model = serving_server.LoopbackModel(case["version_dir"], name="anogan")
    server, port = serving_server.start_grpc_server(model)
    yield f"127.0.0.1:{port}"
    server.stop(grace=None)


def test_loopback_grpc_server_equals_anogan_score_under_concurrency(
        case, grpc_server):
    with connect(grpc_server, "anogan", "score_images_uint8",
                 timeout=120) as client:
        assert client.signature().image_shape == (SIZE, SIZE, 1)
        sequential = client.predict(case["pixels"])
        _check_parity(case, sequential, "gRPC")

        def send(rows):
            return client.predict(case["pixels"][rows])

        jobs = [[0, 1, 2]] * 3 + [[2], [1], [0, 2]]
        with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(send, jobs))
    for rows, out in zip(jobs, results):
        for key in ("image_score", "anomaly_map", "patch_anomaly_score"):
            if len(rows) == 3:  # the same request: the same bits
                np.testing.assert_array_equal(out[key], sequential[key])
            else:  # a scan's score does not depend on its batchmates
                np.testing.assert_allclose(out[key], sequential[key][rows],
                                           rtol=1e-5, atol=1e-5)


def test_bad_requests_are_invalid_argument_with_the_fix(case, loaded,
                                                        grpc_server):
    fn = loaded.signatures["score_images"]
    for x, phrase in (
            (np.zeros((1, 32, SIZE, 1), np.float32),
             f"images must be [N, {SIZE}, {SIZE}, 1] float32 in [-1, 1]; got"
             f" shape"),
            (np.zeros((0, SIZE, SIZE, 1), np.float32), "got an empty batch"),
            (np.full((1, SIZE, SIZE, 1), 3.0, np.float32),
             "or send uint8 to score_images_uint8")):
        with pytest.raises(tf.errors.InvalidArgumentError) as e:
            fn(images=tf.constant(x))
        assert phrase in e.value.message
    # float64 over gRPC: refused before it is sent, naming what to send.
    with connect(grpc_server, "anogan", "score_images", timeout=60) as client:
        with pytest.raises(ServingError) as e:
            client.predict(_as_float(case["pixels"]).astype(np.float64))
    assert e.value.code == "INVALID_ARGUMENT"
    assert "float32" in e.value.message
    assert "score_images_uint8" in e.value.message


# --- the settings ------------------------------------------------------------------

def test_plan_checks_the_image_size_and_the_patch_count(case):
    with pytest.raises(ConfigError, match="smaller than the patch size 48"):
        image_graph.ImagePlan(image_shape=(32, 64, 1), model_size=32,
                              patch_size=48, stride=16)
    from anogan_tf.scoring.scorer import Scorer
    scorer = Scorer.from_model_dir(
        case["model_dir"], DataConfig(dataset="folder", image_size=32,
                                      patch_size=32, patch_stride=8,
                                      max_patches_per_image=20),
        eval_config=EvalConfig(output_dir=""))
    with pytest.raises(ConfigError, match="--max_patches_per_image=20"):
        exporter.score_images_plan(scorer, case["model_dir"])
    plan = exporter.score_images_plan(scorer, case["model_dir"], (40, 32))
    assert plan.grid == ((0, 0), (8, 0))  # 0, 8 and the border-aligned 8


def test_image_size_comes_from_resize_then_flags_cfg(tmp_path):
    data = DataConfig(dataset="folder", image_size=32, patch_size=32)
    size = lambda d=data, shape=None: exporter._image_size(  # noqa: E731
        str(tmp_path), d, shape)[0]
    assert size() == (32, 32)  # nothing recorded: one patch
    (tmp_path / "flags.cfg").write_text(
        "--dataset=synthetic_oct\n--oct_height=96\n--oct_width=128\n")
    assert size() == (96, 128)
    (tmp_path / "flags.cfg").write_text("--dataset=folder\n--resize=80,72\n")
    assert size() == (80, 72)
    assert size(DataConfig(dataset="folder", resize=(50, 60))) == (50, 60)
    assert size(shape=(70, 40)) == (70, 40)


# --- the graph twins of the NumPy code --------------------------------------------

def _scans(h, w, artifacts, n=3, seed=1):
    return load_images(DataConfig(
        dataset="synthetic_oct", oct_height=h, oct_width=w, oct_num_test=n,
        oct_artifacts=artifacts, seed=seed, image_size=32), "test").images


@pytest.mark.parametrize("h, w", [(96, 128)])
def test_roi_fill_and_norm_twins_equal_numpy(h, w):
    @tf.function(input_signature=[tf.TensorSpec([h, w, 1], tf.float32)],
                 autograph=False)
    def twin(x):
        g = roi_graph.gray(x)
        top, bottom, valid, mask = roi_graph.retina_band(g)
        return (roi_graph.artifact_mask(g), top, bottom, mask,
                roi_graph.fill_artifacts(x, valid),
                roi_graph.normalize_scan(x))

    masked = 0
    for artifacts in (False, True):
        for image in _scans(h, w, artifacts):
            art, top, bottom, mask, filled, norm = (
                v.numpy() for v in twin(tf.constant(image)))
            band = roi_lib.retina_band(image)
            np.testing.assert_array_equal(art, roi_lib.artifact_mask(image))
            np.testing.assert_array_equal(mask, band.mask)
            assert mask.any()
            for mine, theirs in ((top, band.top), (bottom, band.bottom)):
                np.testing.assert_array_equal(np.isnan(mine),
                                              np.isnan(theirs))
                np.testing.assert_allclose(mine, theirs, atol=1e-9)
            np.testing.assert_array_equal(
                filled, patches_lib.fill_artifacts(image, band.valid))
            np.testing.assert_array_equal(
                norm, intensity_lib.normalize_scan(image)[0])
            masked += int((~band.valid).sum())
    assert masked > 0  # the artefacts were there to be masked and filled


def test_nearest_valid_pixel_picks_what_scipy_picks():
    rng = np.random.default_rng(0)
    for _ in range(40):
        h, w = rng.integers(3, 16, 2)
        valid = rng.random((h, w)) < rng.choice([0.05, 0.2, 0.5])
        valid[rng.integers(h), rng.integers(w)] = True
        _, (iy, ix) = ndimage.distance_transform_edt(~valid,
                                                     return_indices=True)
        row, col = roi_graph._nearest_valid(tf.constant(valid))
        np.testing.assert_array_equal(row.numpy(), iy)
        np.testing.assert_array_equal(col.numpy(), ix)


def test_statistics_twins_equal_numpy():
    rng = np.random.default_rng(3)
    for n in (1, 2, 7, 100, 257):
        v = rng.normal(size=(n + 5,))
        keep = np.zeros(n + 5, bool)
        keep[rng.choice(n + 5, n, replace=False)] = True
        v32 = v.astype(np.float32)
        assert roi_graph._median(tf.constant(v), keep).numpy() == \
            np.median(v[keep])
        assert roi_graph._median(tf.constant(v32), keep).numpy() == \
            np.median(v32[keep])
        assert roi_graph._percentile(tf.constant(v32), keep, 1).numpy() == \
            np.percentile(v32[keep], 1)
        assert roi_graph._otsu_threshold(tf.constant(v), keep).numpy() == \
            roi_lib.otsu_threshold(v[keep])
        counts, edges = roi_graph._histogram(tf.constant(v), keep, 16)
        want_counts, want_edges = np.histogram(v[keep], 16)
        np.testing.assert_array_equal(counts.numpy(), want_counts)
        np.testing.assert_array_equal(edges.numpy(), want_edges)
        runs = rng.integers(0, 9, n + 5)
        np.testing.assert_array_equal(
            roi_graph.median_filter_1d(tf.constant(runs), 5).numpy(),
            ndimage.median_filter(runs, size=5, mode="nearest"))


def test_map_twins_equal_numpy():
    rng = np.random.default_rng(5)
    roi = rng.random((3, 40, 24)) < 0.3
    roi[2] = False  # an image without ROI keeps every valid pixel
    valid = rng.random((3, 40, 24)) < 0.9
    np.testing.assert_array_equal(
        roi_graph.scoring_region(tf.constant(roi), tf.constant(valid)).numpy(),
        roi_lib.scoring_region(roi, valid))
    values = rng.normal(size=(3, 40, 24, 2)).astype(np.float32)
    for v in (values, values[..., 0]):
        np.testing.assert_allclose(
            image_graph._masked_gaussian(tf.constant(v), tf.constant(valid),
                                         1.5).numpy(),
            maps_lib.masked_gaussian(v, valid, 1.5), rtol=1e-6, atol=1e-7)
    scores = rng.normal(size=(3, 5)).astype(np.float32)
    keep = rng.random((3, 5)) < 0.6
    keep[:, 0] = True
    index = np.repeat(np.arange(3), 5)[keep.reshape(-1)]
    for how in ("max", "mean", "topk_mean"):
        np.testing.assert_allclose(
            image_graph._aggregate(tf.constant(scores), tf.constant(keep),
                                   how, 3).numpy(),
            metrics_lib.aggregate_patch_scores(scores[keep], index, 3, how,
                                               3), rtol=1e-12)
