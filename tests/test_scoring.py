"""Aggregation, thresholds and metrics with known answers."""

import numpy as np
import pytest

from anogan_tf.scoring import metrics as m


def test_aggregate_patch_scores():
    scores = np.array([1.0, 5.0, 3.0, 2.0, 4.0])
    idx = np.array([0, 0, 0, 1, 1])
    np.testing.assert_allclose(m.aggregate_patch_scores(scores, idx, 3, "max"),
                               [5.0, 4.0, np.nan])
    np.testing.assert_allclose(m.aggregate_patch_scores(scores, idx, 2, "mean"),
                               [3.0, 3.0])
    np.testing.assert_allclose(
        m.aggregate_patch_scores(scores, idx, 2, "topk_mean", topk=2), [4.0, 3.0])
    with pytest.raises(ValueError, match="max|mean|topk_mean"):
        m.aggregate_patch_scores(scores, idx, 2, "median")


def test_image_metrics_known_answer():
    labels = np.array([0, 0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.7, 0.6, 0.9])
    r = m.image_metrics(labels, scores, threshold=0.65)
    # Pairs (pos > neg): 0.6 beats 0.1, 0.2; 0.9 beats all three -> 5 / 6.
    assert r["image_auroc"] == pytest.approx(5 / 6)
    assert r["sensitivity"] == pytest.approx(0.5)      # 0.9 only
    assert r["specificity"] == pytest.approx(2 / 3)    # 0.7 is a false positive
    with pytest.raises(ValueError, match="normal and anomalous"):
        m.image_metrics(np.zeros(3), scores[:3], 0.5)


def test_threshold_rules():
    normal = np.arange(101, dtype=float)
    assert m.choose_threshold("percentile", None, None, normal, 95) == pytest.approx(95.0)
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.3, 0.4, 0.8])
    t = m.choose_threshold("youden", labels, scores)
    assert 0.3 < t <= 0.4  # separates perfectly
    with pytest.raises(ValueError, match="normal validation"):
        m.choose_threshold("percentile", labels, scores, None)


def test_pixel_metrics():
    masks = np.zeros((1, 4, 4), np.uint8)
    masks[0, :2, :2] = 1
    perfect = masks.astype(float) + 0.01
    r = m.pixel_metrics(masks, perfect)
    assert r["pixel_auroc"] == pytest.approx(1.0)
    assert r["pixel_auprc"] == pytest.approx(1.0)
    inverted = m.pixel_metrics(masks, 1.0 - masks)
    assert inverted["pixel_auroc"] == pytest.approx(0.0)
    assert m.pixel_metrics(np.zeros((1, 4, 4)), perfect) == {}


def test_map_max_aggregation_ranks_by_the_strongest_pixel():
    import dataclasses
    from anogan_tf.config import DataConfig, MappingConfig, ModelConfig
    from anogan_tf.data import ImageSet
    from anogan_tf.models import build_models
    from anogan_tf.scoring import score_image_set
    cfg = ModelConfig(image_size=32, latent_dim=8, base_filters=4)
    g, d = build_models(cfg)
    images = np.zeros((2, 64, 64, 1), np.float32)
    images[1, 40, 10] = 1.0  # one bright pixel: image 1 must rank higher
    s = score_image_set(ImageSet(images, ("a", "b")), g, d, cfg,
                        DataConfig(image_size=32, patch_stride=32),
                        MappingConfig(steps=2, batch_size=8, jit_compile=False),
                        aggregate="map_max", progress=False)
    np.testing.assert_allclose(s.image_scores, s.maps.reshape(2, -1).max(1))
    assert s.image_scores[1] > s.image_scores[0]
    # The residual column is still the per-patch max.
    assert s.image_residual[0] == pytest.approx(
        s.mapping.residual_score[s.patches.image_index == 0].max())
