"""Honest calibration with few normal images: what a percentile means at
small n, refusing a target FPR n cannot support, the held-back fraction of an
MVTec AD folder, and the warning in the log and in metrics.json."""

import dataclasses
import json
import logging
import os

import numpy as np
import pytest
from PIL import Image

from anogan_tf.config import ConfigError, DataConfig, EvalConfig
from anogan_tf.data import load_images
from anogan_tf.scoring import calibration as cal
from anogan_tf.scoring import run_evaluate, run_score


# --- pure functions ------------------------------------------------------------

def test_percentile_expected_fpr_known_answers():
    # n = 2, q = 95: 95% of the way from the lower to the higher score; a new
    # uniform score exceeds E[t] = 0.05/3 + 0.95 * 2/3 = 0.65 with p 0.35.
    assert cal.percentile_expected_fpr(2, 95) == pytest.approx(0.35)
    assert cal.percentile_expected_fpr(1, 95) == pytest.approx(0.5)
    assert cal.percentile_expected_fpr(19, 95) == pytest.approx(1.9 / 20)
    assert cal.percentile_expected_fpr(5, 100) == pytest.approx(1 / 6)
    assert cal.percentile_expected_fpr(100_000, 95) == pytest.approx(0.05,
                                                                     abs=1e-4)
    fprs = [cal.percentile_expected_fpr(n, 95) for n in range(1, 200)]
    assert all(a >= b for a, b in zip(fprs, fprs[1:]))  # Falls with n.
    with pytest.raises(ValueError, match="n must be >= 1"):
        cal.percentile_expected_fpr(0, 95)


def test_percentile_expected_fpr_matches_simulation_for_uniform_scores():
    # For uniform scores P(S >= t | c) = 1 - t is linear in t, so the
    # interpolation formula is exact; 40k draws have sd ~0.0024.
    rng = np.random.default_rng(0)
    for n in (2, 5):
        c = rng.random((40_000, n))
        t = np.percentile(c, 95, axis=1)
        assert np.mean(1 - t) == pytest.approx(
            cal.percentile_expected_fpr(n, 95), abs=0.01)


def test_conformal_fpr_spread_known_answer_and_simulation():
    mean, sd = cal.conformal_fpr_spread(8, 0.25)  # m = floor(9/4) = 2
    assert mean == pytest.approx(2 / 9)
    assert sd == pytest.approx(np.sqrt(2 * 7 / (81 * 10)))
    rng = np.random.default_rng(1)
    fpr = [1 - cal.conformal_threshold(rng.random(8), 0.25)
           for _ in range(20_000)]
    assert np.mean(fpr) == pytest.approx(mean, abs=0.005)
    assert np.std(fpr) == pytest.approx(sd, abs=0.005)


def test_check_target_fpr_gives_the_smallest_rate_and_how_many_are_needed():
    cal.check_target_fpr(0.1, 9)  # (9 + 1) * 0.1 = 1: just enough.
    with pytest.raises(cal.CalibrationError) as e:
        cal.check_target_fpr(0.1, 4)
    text = str(e.value)
    assert "--target_fpr=0.1 needs at least 9 calibration images" in text
    assert "got 4" in text
    assert "smallest achievable false-positive rate is 1/(n+1) = 0.2" in text
    assert "Add 5 more" in text and "--target_fpr >= 0.2" in text
    assert isinstance(e.value, ValueError)
    # n = 2 supports no rate below 1/3; ceil(1/0.05) - 1 = 19 are needed.
    with pytest.raises(cal.CalibrationError, match=r"at least 19 .* got 2"):
        cal.conformal_threshold([1.0, 2.0], 0.05)


def test_calibration_warning_says_what_the_rule_means_at_that_size():
    assert cal.calibration_warning(20, "percentile") == ""
    assert cal.calibration_warning(500, "conformal", target_fpr=0.05) == ""
    two = cal.calibration_warning(2, "percentile", 95.0)
    for part in ("Only 2 normal image(s)", "fewer than 20",
                 "95th percentile", "essentially their maximum",
                 "about 35% of new normal images will be flagged, not 5%",
                 "1/(n+1) = 33%", "at least 19 normal images",
                 "--calibration_data", "--calibration_fraction"):
        assert part in two, (part, two)
    conformal = cal.calibration_warning(8, "conformal", target_fpr=0.25)
    assert "Only 8 normal image(s)" in conformal
    assert "0.222 <= 0.25" in conformal and "sd 0.13" in conformal
    assert "steps of 1/(n+1) = 0.111" in conformal


# --- the MVTec AD hold-out ------------------------------------------------------

def _mvtec(root, n_train):
    rng = np.random.default_rng(0)
    for sub, n in (("train/good", n_train), ("test/good", 2), ("test/bad", 2)):
        os.makedirs(root / sub, exist_ok=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)
                            ).save(root / sub / f"{i:03d}.png")


def test_calibration_fraction_sets_the_hold_out_and_logs_it(tmp_path, caplog):
    _mvtec(tmp_path, 20)
    config = DataConfig(dataset="folder", data_path=str(tmp_path),
                        image_size=32, calibration_fraction=0.25)
    # The loader logs through absl; its logger's own level decides (another
    # test's FLAGS.unparse_flags() can leave it at WARNING: tests/conftest.py).
    with caplog.at_level(logging.INFO, logger="absl"):
        calib = load_images(config, "calibration")
    train = load_images(config, "train")
    assert len(calib) == 5 and len(train) == 15
    assert not set(calib.ids) & set(train.ids)
    assert ("5 of 20 normal images held back for calibration "
            "(--calibration_fraction=0.25), 15 left for training") in caplog.text
    # The default keeps the old 10%.
    default = DataConfig(dataset="folder", data_path=str(tmp_path),
                         image_size=32)
    assert len(load_images(default, "calibration")) == 2
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ConfigError, match="--calibration_fraction"):
            DataConfig(calibration_fraction=bad)


# --- end to end ----------------------------------------------------------------

# The tiny trained synthetic_oct model of test_calibration (one fixture).
from test_calibration import DATA, MAPPING, model_dir  # noqa: E402,F401


def _pngs(folder, images):
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(((img[..., 0] + 1) * 127.5).round().astype(
            np.uint8)).save(folder / f"n{i}.png")
    return str(folder)


def test_two_calibration_normals_warn_in_log_and_metrics(model_dir, tmp_path,
                                                         caplog):
    calib = _pngs(tmp_path / "two", load_images(DATA, "calibration").images[:2])
    out = str(tmp_path / "E")
    with caplog.at_level(logging.WARNING):
        metrics = run_evaluate(model_dir, DATA, MAPPING,
                               EvalConfig(output_dir=out, num_test=8,
                                          calibration_data=(calib,)),
                               progress=False)
    assert metrics["threshold_rule"] == ("percentile 95 of 2 normal "
                                         "calibration images")
    warning = metrics["calibration_warning"]
    assert "Only 2 normal image(s)" in warning
    assert "essentially their maximum" in warning
    assert warning in caplog.text
    with open(os.path.join(out, "metrics.json")) as f:
        assert json.load(f)["calibration_warning"] == warning
    # 20 normals (synthetic_oct holds out max(16, oct_num_train / 5)): no
    # warning, recorded as null.
    enough = run_evaluate(model_dir, dataclasses.replace(DATA,
                                                         oct_num_train=100),
                          MAPPING, EvalConfig(output_dir=str(tmp_path / "F")),
                          progress=False)
    assert enough["n_calibration"] == 20
    assert enough["calibration_warning"] is None
    # Youden's J does not calibrate on normal images: nothing to warn about.
    youden = EvalConfig(output_dir=str(tmp_path / "G"), threshold_rule="youden")
    assert run_evaluate(model_dir, DATA, MAPPING, youden, progress=False)[
        "calibration_warning"] is None


def test_target_fpr_the_calibration_cannot_support_is_refused(model_dir,
                                                              tmp_path):
    calib = _pngs(tmp_path / "four", load_images(DATA, "calibration").images[:4])
    for run in (run_evaluate, run_score):
        with pytest.raises(ConfigError) as e:
            kwargs = {"progress": False} if run is run_evaluate else {
                "inputs": [calib], "save_maps": False}
            run(model_dir, DATA, MAPPING,
                EvalConfig(output_dir=str(tmp_path / "X"), target_fpr=0.1,
                           calibration_data=(calib,)), **kwargs)
        text = str(e.value)
        assert "--target_fpr=0.1 needs at least 9 calibration images" in text
        assert "1/(n+1) = 0.2" in text
    # A rate 4 normals can support runs, and warns how loose it is.
    summary = run_score(model_dir, DATA, MAPPING,
                        EvalConfig(output_dir=str(tmp_path / "S"),
                                   target_fpr=0.2, calibration_data=(calib,)),
                        inputs=[calib], save_maps=False)
    assert summary["threshold_rule"] == ("conformal, target FPR 0.2, 4 "
                                         "calibration images")
    assert "Only 4 normal image(s)" in summary["calibration_warning"]
    assert summary["inputs_per_second"] > 0
