"""Scoring with the retina ROI: artefact pixels never score, map_max reads
only the scoring region, and progress lines count patches as patches."""

import numpy as np
import pytest

from anogan_tf.config import DataConfig, MappingConfig, ModelConfig
from anogan_tf.data.synthetic_oct import generate_oct_with_truth
from anogan_tf.models import build_models
from anogan_tf.scoring import metrics as metrics_lib
from anogan_tf.scoring.scorer import score_image_set

MODEL = ModelConfig(image_size=32, channels=1, latent_dim=8, base_filters=4)
MAPPING = MappingConfig(steps=1, batch_size=64, jit_compile=False)


@pytest.fixture(scope="module")
def models():
    return build_models(MODEL)


@pytest.fixture(scope="module")
def scans():
    return generate_oct_with_truth(6, 128, 128, seed=9, anomaly_fraction=0.5,
                                   artifacts=True)


def _score(models, images, roi, **kwargs):
    data = DataConfig(image_size=32, patch_stride=16, roi=roi)
    return score_image_set(images, *models, MODEL, data, MAPPING,
                           aggregate="map_max", **kwargs)


def test_pixel_metrics_leave_out_invalid_pixels():
    masks = np.array([[[1, 0, 0, 0]]])
    maps = np.array([[[0.5, 0.9, 0.1, 0.2]]])
    # The positive (0.5) beats 2 of 3 negatives; without the 0.9, all.
    assert metrics_lib.pixel_metrics(masks, maps)["pixel_auroc"] == \
        pytest.approx(2 / 3)
    valid = np.array([[[True, False, True, True]]])
    assert metrics_lib.pixel_metrics(masks, maps, valid=valid) == {
        "pixel_auroc": 1.0, "pixel_auprc": 1.0}
    # Only negatives left: no metric.
    assert metrics_lib.pixel_metrics(masks, maps, valid=~valid & ~masks.astype(
        bool)) == {}
    with pytest.raises(ValueError, match="valid"):
        metrics_lib.pixel_metrics(masks, maps, valid=valid[..., :2])


def test_maps_and_map_max_ignore_artifacts_and_stay_near_the_roi(models, scans):
    images, truth = scans
    scored = _score(models, images, "retina", progress=False)
    region = scored.region
    assert region.shape == (6, 128, 128)
    assert not (region & ~scored.patches.valid_masks).any()
    assert not (region & truth.artifacts).any()
    assert (scored.maps[~region] == 0).all()
    assert (scored.maps[truth.artifacts] == 0).all()
    # The image score is the largest map value inside the region.
    for i in range(6):
        assert scored.image_scores[i] == pytest.approx(
            scored.maps[i][region[i]].max())
    # The region is the band plus a few rows: never the top or bottom rows.
    assert not region[:, :16].any() and not region[:, -8:].any()


def test_without_the_roi_the_strongest_pixel_sits_on_padding(models, scans):
    # Why the masking matters: an (untrained) G reconstructs mid-grey, so
    # the saturated padding (+1.0) has the largest residual of all.
    images, truth = scans
    scored = _score(models, images, "none", progress=False)
    padded = truth.artifacts.reshape(6, -1).any(axis=1)
    on_padding = [truth.artifacts[i].reshape(-1)[np.argmax(
        scored.maps[i].reshape(-1))] for i in range(6)]
    assert sum(on_padding) >= max(1, padded.sum() // 2)
    assert scored.region is None


def test_progress_line_counts_patches_and_images(models, scans, capsys):
    images, _ = scans
    scored = _score(models, images, "retina", progress=True, label="test")
    out = capsys.readouterr().out
    n = len(scored.patches)
    assert f"test (6 images): {n} patches, mode iterative" in out
    assert f"{n} images" not in out
    single = _score(models, images.subset([0]), "retina", progress=True,
                    label="calibration")
    assert (f"calibration (1 image): {len(single.patches)} patches"
            in capsys.readouterr().out)
