"""The Scorer: one model dir loaded once, scoring with its recorded settings."""

import dataclasses

import numpy as np
import pytest

from anogan_tf.config import ConfigError, EvalConfig, MappingConfig
from anogan_tf.data import DataError, ImageSet, load_images
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring.scorer import Scorer, as_image_set, score_image_set

MAPPING = MappingConfig(steps=3, batch_size=8, jit_compile=False)

# The tiny trained model and its data: test_calibration's fixture.
from test_calibration import DATA, MODEL, model_dir  # noqa: E402,F401


def _record(model_dir, threshold=None, **eval_fields):
    eval_config = EvalConfig(output_dir="", **eval_fields)
    detector_lib.save_detector(detector_lib.Detector.from_configs(
        DATA, MAPPING, eval_config, threshold=threshold,
        written_by="test"), model_dir)


def test_from_model_dir_with_no_settings_uses_detector_json(model_dir):
    _record(model_dir, aggregate="mean", map_sigma=2.0)
    scorer = Scorer.from_model_dir(model_dir)
    assert scorer.mapping_config.steps == 3
    assert not scorer.mapping_config.jit_compile
    assert scorer.eval_config.aggregate == "mean"
    assert scorer.eval_config.map_sigma == 2.0
    assert scorer.data_config.patch_stride == 32
    assert scorer.data_config.image_size == MODEL.image_size
    assert scorer.encoder is None


def test_given_configs_win_over_detector_json(model_dir):
    _record(model_dir, aggregate="mean")
    scorer = Scorer.from_model_dir(
        model_dir, mapping_config=dataclasses.replace(MAPPING, steps=2))
    assert scorer.mapping_config.steps == 2          # given
    assert scorer.eval_config.aggregate == "mean"    # recorded
    only = Scorer.from_model_dir(
        model_dir, mapping_config=dataclasses.replace(MAPPING, steps=2),
        overrides=())
    assert only.mapping_config.steps == 3            # recorded wins


def test_score_equals_the_stateless_core_and_takes_uint8(model_dir):
    _record(model_dir)
    scorer = Scorer.from_model_dir(model_dir)
    test = load_images(DATA, "test").take(2)
    scored = scorer.score(test, progress=False)
    ref = score_image_set(test, scorer.generator, scorer.discriminator,
                          scorer.model_config, scorer.data_config,
                          scorer.mapping_config, progress=False)
    np.testing.assert_array_equal(scored.image_scores, ref.image_scores)
    np.testing.assert_array_equal(scored.maps, ref.maps)
    assert scored.maps.shape == (2, 64, 64)
    # uint8 images scale to [-1, 1] exactly as p / 127.5 - 1.
    u8 = np.round((test.images + 1.0) * 127.5).astype(np.uint8)
    as_float = as_image_set(u8)
    np.testing.assert_allclose(as_float.images, u8 / 127.5 - 1.0, atol=1e-6)
    assert as_float.ids == ("image/0", "image/1")
    again = scorer.score(u8, progress=False)
    assert again.image_scores.shape == (2,)


def test_recorded_threshold_applies_only_on_the_same_scale(model_dir, caplog):
    recorded = detector_lib.Threshold(value=0.5, rule="percentile 95 of 3",
                                      n_calibration=3,
                                      calibration_scores=(0.1, 0.2, 0.3))
    _record(model_dir, threshold=recorded)
    scorer = Scorer.from_model_dir(model_dir)
    assert scorer.recorded_threshold() == recorded
    p = scorer.p_values(np.array([0.05, 0.25, 0.9]))
    np.testing.assert_allclose(p, [1.0, 0.5, 0.25])
    other = Scorer.from_model_dir(
        model_dir, mapping_config=dataclasses.replace(MAPPING, steps=2))
    assert other.recorded_threshold() is None
    assert other.p_values(np.array([0.1])) is None
    assert "mapping.steps: 3 -> 2" in caplog.text


def test_bad_inputs_name_the_fix(model_dir):
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        as_image_set(np.full((1, 32, 32, 1), 3.0, np.float32))
    with pytest.raises(DataError, match="NaN"):
        as_image_set(np.full((1, 32, 32, 1), np.nan, np.float32))
    with pytest.raises(DataError, match="dtype int32"):
        as_image_set(np.zeros((1, 32, 32, 1), np.int32))
    with pytest.raises(DataError, match="shape"):
        as_image_set(np.zeros((32, 32), np.uint8)[None, None])
    _record(model_dir)
    with pytest.raises(ConfigError, match="--stage=encoder"):
        Scorer.from_model_dir(model_dir, mapping_config=dataclasses.replace(
            MAPPING, mode="encoder"))
    assert isinstance(as_image_set(ImageSet(np.zeros((1, 4, 4, 1), np.float32),
                                            ("a",))), ImageSet)


def test_evaluate_fits_the_map_reference_and_score_applies_it(model_dir,
                                                              tmp_path):
    import json

    from anogan_tf.scoring import map_reference as mr
    from anogan_tf.scoring import run_evaluate

    eval_config = EvalConfig(output_dir=str(tmp_path / "E"), num_test=8,
                             aggregate="map_max", map_sigma=2.0,
                             map_norm="depth")
    data = dataclasses.replace(DATA, roi="retina", roi_min_coverage=0.3,
                               patch_stride=16)
    m = run_evaluate(model_dir, data, MAPPING, eval_config, progress=False,
                     write_detector=True)
    assert m["map_norm"] == "depth" and m["map_reference_images"] == 8
    recorded = detector_lib.load_detector(model_dir)
    ref = recorded.map_reference
    assert ref.coordinate == "band" and ref.map == "signed_s2"
    assert ref.n_images == 8 and recorded.threshold.n_calibration == 8
    # The recorded reference is the one the calibration images' raw maps give.
    scorer = Scorer.from_model_dir(model_dir)
    assert scorer.eval_config.map_norm == "depth"
    assert scorer.map_reference == ref
    raw = scorer.with_settings(eval_config=dataclasses.replace(
        scorer.eval_config, map_norm="none"))
    calib = raw.score(load_images(data, "calibration").take(8),
                      progress=False)
    assert mr.fit_map_reference(calib.maps, calib.residuals.weight,
                                calib.patches.roi_masks, "signed_s2") == ref
    # The threshold was set on cross-fitted calibration scores.
    cross = mr.cross_fitted_maps(calib.maps, calib.residuals.weight,
                                 calib.patches.roi_masks, "signed_s2")
    np.testing.assert_allclose(recorded.threshold.calibration_scores,
                               np.sort(cross.reshape(8, -1).max(axis=1)))
    # anogan-score's maps: the raw maps standardised; map_max their maximum.
    test = load_images(data, "test").take(3)
    scored, plain = scorer.score(test, progress=False), raw.score(
        test, progress=False)
    assert scored.map_norm == "depth" and plain.map_norm == "none"
    expected = mr.standardize_maps(plain.maps, plain.residuals.weight,
                                   plain.patches.roi_masks, ref)
    np.testing.assert_array_equal(scored.maps, expected)
    np.testing.assert_allclose(scored.image_scores,
                               expected.reshape(3, -1).max(axis=1))
    assert scorer.recorded_threshold() == recorded.threshold
    with open(tmp_path / "E" / "metrics.json") as f:
        assert json.load(f)["map_norm"] == "depth"
    # A model dir whose detector asks for depth norm but has no reference.
    _record(model_dir, aggregate="map_max", map_norm="depth")
    with pytest.raises(ConfigError, match="anogan-evaluate --model_dir=.*"
                                          "--map_norm=depth"):
        Scorer.from_model_dir(model_dir).score(test, progress=False)
    # A reference of another map does not apply.
    with pytest.raises(ConfigError, match="fitted on 'signed_s2' maps"):
        scorer.with_settings(eval_config=dataclasses.replace(
            scorer.eval_config, map_sigma=0.0)).score(test, progress=False)
