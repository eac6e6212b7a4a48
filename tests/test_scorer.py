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
