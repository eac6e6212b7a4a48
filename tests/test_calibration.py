"""Conformal calibration: known answers, validity, and the end-to-end files."""

import csv
import json
import os

import numpy as np
import pytest
from PIL import Image

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig, ModelConfig, TrainConfig)
from anogan_tf.data import load_images
from anogan_tf.scoring import calibration as cal
from anogan_tf.scoring import run_evaluate, run_score
from anogan_tf.training import train_gan


# --- pure functions ------------------------------------------------------------

def test_p_values_by_hand_with_ties():
    calib = [2.0, 1.0, 3.0, 2.0]  # n = 4, so p = (1 + #{c >= s}) / 5
    scores = [0.0, 2.0, 2.5, 3.0, 4.0, np.nan]
    # #{c >= s}: 4, 3 (2, 2, 3: ties count), 1, 1 (tie with 3), 0.
    np.testing.assert_allclose(cal.conformal_p_values(calib, scores),
                               [5 / 5, 4 / 5, 2 / 5, 2 / 5, 1 / 5, np.nan])
    assert cal.conformal_p_values(calib, np.array([[4.0]])).shape == (1, 1)
    with pytest.raises(ValueError, match="finite"):
        cal.conformal_p_values([1.0, np.nan], [1.0])
    with pytest.raises(ValueError, match="No calibration scores"):
        cal.conformal_p_values([], [1.0])


def test_threshold_known_answers_for_small_n():
    calib = [5.0, 1.0, 4.0, 2.0, 3.0]  # n = 5; k = ceil(6 (1 - alpha))
    assert cal.conformal_threshold(calib, 0.2) == 5.0    # k = ceil(4.8) = 5
    assert cal.conformal_threshold(calib, 1 / 3) == 4.0  # k = 4 (6/3 is exact)
    assert cal.conformal_threshold(calib, 0.5) == 3.0    # k = 3
    assert cal.conformal_threshold(calib, 0.9) == 1.0    # k = ceil(0.6) = 1
    # Flagging s >= t is flagging p <= alpha (tie-free scores).
    s = np.array([0.5, 1.5, 2.5, 3.5, 4.5, 5.5])
    for alpha in (0.2, 1 / 3, 0.5, 0.9):
        t = cal.conformal_threshold(calib, alpha)
        np.testing.assert_array_equal(
            s >= t, cal.conformal_p_values(calib, s) <= alpha)


def test_too_few_calibration_scores_say_how_many_are_needed():
    # (n + 1) * 0.05 >= 1 needs n >= 19.
    with pytest.raises(ValueError, match="at least 19 calibration images"):
        cal.conformal_threshold(np.arange(18.0), 0.05)
    assert cal.conformal_threshold(np.arange(19.0), 0.05) == 18.0
    assert cal.min_calibration_size(0.1) == 9
    assert cal.min_calibration_size(0.25) == 3
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        cal.conformal_threshold(np.arange(5.0), 0.0)


def test_p_values_of_exchangeable_normal_data_are_uniform_and_control_fpr():
    rng = np.random.default_rng(0)
    n, m, alpha = 200, 2000, 0.1
    calib = rng.gamma(2.0, size=n)
    p = np.sort(cal.conformal_p_values(calib, rng.gamma(2.0, size=m)))
    # KS distance to U(0, 1). Given the calibration draw the p-values follow
    # the calibration's empirical CDF, which is off by a Brownian bridge of
    # scale 1/sqrt(n); the test sample adds 1/sqrt(m), so the statistic is
    # about K * sqrt(1/n + 1/m) = K * 0.074 with K Kolmogorov-distributed
    # (99.9% quantile 1.95 -> 0.145), plus the 1/(n+1) grid step. 0.15 fails
    # a correct implementation with probability < 0.1%; a wrong count (e.g.
    # n - k instead of 1 + k, or no ties) shifts p by ~1/(n+1) only, which
    # the hand-computed test catches instead.
    ks = np.max(np.maximum(np.arange(1, m + 1) / m - p, p - np.arange(m) / m))
    assert ks < 0.15, ks
    assert p.min() >= 1 / (n + 1) and p.max() <= 1.0
    # Marginal FPR of p <= alpha is floor((n+1) alpha) / (n+1) = 20/201. One
    # repeat has sd ~0.022 (Beta spread of the calibration quantile); the
    # mean of 40 repeats has sd ~0.0035, so +-0.03 is ~8 sd.
    fprs, fprs_t = [], []
    for _ in range(40):
        c, s = rng.normal(size=n), rng.normal(size=m)
        fprs.append(np.mean(cal.conformal_p_values(c, s) <= alpha))
        fprs_t.append(np.mean(s >= cal.conformal_threshold(c, alpha)))
    assert abs(np.mean(fprs) - alpha) <= 0.03, np.mean(fprs)
    np.testing.assert_allclose(fprs, fprs_t)
    # Anomalies (shifted scores) get small p-values.
    assert np.median(cal.conformal_p_values(calib, calib.max() + 1.0 +
                                            rng.random(50))) == 1 / (n + 1)


# --- end to end ----------------------------------------------------------------

MODEL = ModelConfig(image_size=32, channels=1, latent_dim=16, base_filters=4)
DATA = DataConfig(dataset="synthetic_oct", image_size=32, oct_num_train=8,
                  oct_num_test=8, oct_height=64, oct_width=64, patch_stride=32)
MAPPING = MappingConfig(steps=2, batch_size=16, jit_compile=False)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    md = str(tmp_path_factory.mktemp("model"))
    train_gan(MODEL, DATA, TrainConfig(model_dir=md, batch_size=8, epochs=1,
                                       steps_per_epoch=2), verbose=0)
    return md


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluate_with_target_fpr_writes_conformal_results(model_dir, tmp_path):
    out = str(tmp_path / "E")
    metrics = run_evaluate(model_dir, DATA, MAPPING,
                           EvalConfig(output_dir=out, num_test=8,
                                      target_fpr=0.25), progress=False)
    with open(os.path.join(out, "metrics.json")) as f:
        m = json.load(f)
    assert m.keys() == metrics.keys()
    assert m["target_fpr"] == 0.25 and m["n_calibration"] == 8
    assert m["threshold_rule"] == "conformal, target FPR 0.25, 8 calibration images"
    assert m["fpr_normal_test"] == pytest.approx(1.0 - m["specificity"])
    images = _rows(os.path.join(out, "image_scores.csv"))
    p = np.array([float(r["p_value"]) for r in images])
    assert len(p) == 8 and p.min() >= 1 / 9 and p.max() <= 1.0
    # n = 8, alpha = 0.25: k = ceil(9 * 0.75) = 7 -> flagged iff p <= 2/9.
    flagged = np.array([int(r["predicted_anomalous"]) for r in images])
    np.testing.assert_array_equal(flagged, p <= 0.25)
    patches = _rows(os.path.join(out, "scores.csv"))
    by_id = {r["id"]: r["p_value"] for r in images}
    assert all(r["image_p_value"] == by_id[r["id"]] for r in patches)
    assert list(patches[0])[-1] == "mode"


def test_score_with_calibration_folder_writes_p_values(model_dir, tmp_path):
    def pngs(name, images):
        folder = tmp_path / name
        folder.mkdir()
        for i, img in enumerate(images):
            Image.fromarray(((img[..., 0] + 1) * 127.5).round().astype(
                np.uint8)).save(folder / f"{name}{i}.png")
        return str(folder)

    calib = pngs("normal", load_images(DATA, "calibration").images[:4])
    inputs = pngs("query", load_images(DATA, "test").images[:2])
    out = str(tmp_path / "S")
    summary = run_score(model_dir, DATA, MAPPING,
                        EvalConfig(output_dir=out, calibration_data=(calib,)),
                        inputs=[inputs], save_maps=False)
    assert summary["n_calibration"] == 4
    p = [float(r["p_value"]) for r in _rows(os.path.join(out, "image_scores.csv"))]
    assert len(p) == 2 and all(1 / 5 <= v <= 1.0 for v in p)
    # --target_fpr needs calibration data; with --inputs alone there is none.
    with pytest.raises(ConfigError, match="--calibration_data"):
        run_score(model_dir, DATA, MAPPING,
                  EvalConfig(output_dir=out, target_fpr=0.1), inputs=[inputs])
    with pytest.raises(ConfigError, match="at least 9 calibration images"):
        run_score(model_dir, DATA, MAPPING,
                  EvalConfig(output_dir=out, target_fpr=0.1,
                             calibration_data=(calib,)), inputs=[inputs])
