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
