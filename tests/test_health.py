"""Training health (diversity, coverage), model selection and history.json."""

import json
import os

import keras
import numpy as np
import pytest

from anogan_tf.config import (DataConfig, ModelConfig, TrainConfig,
                              save_model_config)
from anogan_tf.models import build_models, load_model_dir
from anogan_tf.training import GAN, train_gan
from anogan_tf.training import callbacks as cb
from anogan_tf.training import health

MODEL = ModelConfig(image_size=32, channels=1, latent_dim=8, base_filters=4)
DATA = DataConfig(dataset="synthetic_oct", image_size=32, oct_num_train=10,
                  oct_height=64, oct_width=64, patch_stride=16)


def _gan(model=MODEL):
    g, d = build_models(model)
    gan = GAN(g, d, model.latent_dim)
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3),
                jit_compile=False)
    return gan


def _make_constant(generator, value=0.3):
    """Zeroes G's last kernel: G(z) = tanh(bias) for every z."""
    last = generator.to_image
    last.kernel.assign(np.zeros(last.kernel.shape, np.float32))
    last.bias.assign(np.full(last.bias.shape, np.arctanh(value), np.float32))


def test_pixel_spread_known_answer():
    # Two images: every pixel is 0 in one and 2 in the other -> std 1.
    images = np.stack([np.zeros((4, 4, 1)), np.full((4, 4, 1), 2.0)])
    assert health.pixel_spread(images) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 2 images"):
        health.pixel_spread(images[:1])


def test_diversity_is_zero_for_constant_and_one_for_the_data_itself():
    rng = np.random.default_rng(0)
    real = rng.uniform(-1, 1, (400, 8, 8, 1))
    constant = np.repeat(real[:1], 50, axis=0)
    assert health.sample_diversity(constant, real) == pytest.approx(0.0, abs=1e-12)
    other = rng.uniform(-1, 1, (400, 8, 8, 1))  # same distribution
    assert health.sample_diversity(other, real) == pytest.approx(1.0, abs=0.05)
    half = 0.5 * other  # half the spread
    assert health.sample_diversity(half, real) == pytest.approx(0.5, abs=0.03)
    with pytest.raises(ValueError, match="identical"):
        health.sample_diversity(other, constant)


def test_constant_generator_has_zero_diversity_and_warns():
    gan = _gan()
    _make_constant(gan.generator)
    real = np.random.default_rng(1).uniform(-1, 1, (64, 32, 32, 1)).astype(
        np.float32)
    callback = health.TrainingHealth(
        real, real[:8], MODEL.latent_dim, MODEL.prior,
        health.HealthConfig(num_samples=32, coverage_steps=2))
    callback.set_model(gan)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs["diversity"] == pytest.approx(0.0, abs=1e-6)
    assert callback.warnings == []  # judged when training ends
    callback.on_train_end()
    assert len(callback.warnings) == 1
    assert "mode collapse" in callback.warnings[0]
    assert "--gan_loss=wgan_gp" in callback.warnings[0]
    # A constant G reproduces the held-out images no better than their
    # median does: coverage_ratio >= 1 (it cannot beat the best constant).
    assert logs["coverage_ratio"] >= 1.0 - 1e-6
    assert logs["coverage_residual"] == pytest.approx(
        np.mean(np.abs(real[:8] - 0.3)), rel=1e-4)


def test_no_warning_when_the_last_epoch_is_varied():
    gan = _gan()
    _make_constant(gan.generator)
    real = np.random.default_rng(1).uniform(-1, 1, (64, 32, 32, 1))
    callback = health.TrainingHealth(
        real, None, MODEL.latent_dim, MODEL.prior,
        health.HealthConfig(num_samples=64, warn_below=0.01))
    callback.set_model(gan)
    logs = {}
    callback.on_epoch_end(0, logs)  # collapsed early on ...
    assert "coverage_ratio" not in logs  # no held-out images: no coverage
    class Varied:  # ... then a G whose images follow z
        @staticmethod
        def generator(z, training=False):
            return np.tanh(np.asarray(z)[:, :1, None, None]) * np.ones(
                (1, 32, 32, 1), np.float32)
    callback.set_model(Varied())
    callback.on_epoch_end(1, logs)
    assert logs["diversity"] > 0.01
    callback.on_train_end()
    assert callback.warnings == []


class _FakeMapper:
    def __init__(self, residual_map):
        self.residual_map = residual_map

    def map(self, images, progress=False):
        class R:
            pass
        r = R()
        r.residual_map = self.residual_map
        return r


def test_coverage_known_answer():
    images = np.zeros((3, 2, 2, 1), np.float32)
    images[1] += 1.0
    images[2] += 2.0  # median image = 1 -> baseline residual (1 + 0 + 1) / 3
    out = health.coverage(_FakeMapper(np.full((3, 2, 2, 1), 0.5)), images)
    assert out["coverage_residual"] == pytest.approx(0.5)
    assert out["coverage_ratio"] == pytest.approx(0.5 / (2.0 / 3.0))


def test_selection_keeps_the_epoch_with_the_best_coverage(tmp_path):
    md = str(tmp_path / "m")
    save_model_config(MODEL, md)
    gan = _gan()
    ckpt = cb.EpochCheckpoint(md, select_on="coverage_ratio")
    ckpt.set_model(gan)
    kernels = {}
    for epoch, ratio in enumerate([0.9, 0.4, 0.6, 0.5]):
        # Give G a recognisable weight per epoch.
        gan.generator.to_image.bias.assign(np.full(
            gan.generator.to_image.bias.shape, float(epoch), np.float32))
        kernels[epoch + 1] = float(epoch)
        ckpt.on_epoch_end(epoch, {"coverage_ratio": ratio, "d_loss": 1.0})
    with open(os.path.join(md, cb.SELECTION_FILE)) as f:
        selection = json.load(f)
    assert selection["epoch"] == 2 and selection["value"] == pytest.approx(0.4)
    _, g, _ = load_model_dir(md)
    np.testing.assert_allclose(np.asarray(g.to_image.bias), kernels[2])
    # The latest state (epoch 4) is what resume uses; it remembers the pick.
    with open(os.path.join(md, "checkpoints", cb.STATE_FILE)) as f:
        state = json.load(f)
    assert state["epoch"] == 4 and state["selected"]["epoch"] == 2
    # A new callback (a resumed run) keeps the best so far: worse epochs do
    # not replace it, a better one does.
    again = cb.EpochCheckpoint(md, select_on="coverage_ratio")
    again.set_model(gan)
    gan.generator.to_image.bias.assign(np.full(
        gan.generator.to_image.bias.shape, 7.0, np.float32))
    again.on_epoch_end(4, {"coverage_ratio": 0.45})
    _, g, _ = load_model_dir(md)
    np.testing.assert_allclose(np.asarray(g.to_image.bias), kernels[2])
    again.on_epoch_end(5, {"coverage_ratio": 0.1})
    _, g, _ = load_model_dir(md)
    np.testing.assert_allclose(np.asarray(g.to_image.bias), 7.0)


def test_without_the_metric_every_epoch_is_written(tmp_path):
    md = str(tmp_path / "m")
    save_model_config(MODEL, md)
    gan = _gan()
    ckpt = cb.EpochCheckpoint(md, select_on="coverage_ratio")
    ckpt.set_model(gan)
    for epoch in range(2):
        gan.generator.to_image.bias.assign(np.full(
            gan.generator.to_image.bias.shape, float(epoch), np.float32))
        ckpt.on_epoch_end(epoch, {"d_loss": 1.0})
    _, g, _ = load_model_dir(md)
    np.testing.assert_allclose(np.asarray(g.to_image.bias), 1.0)


def test_history_reads_the_old_json_lines_format(tmp_path):
    path = str(tmp_path / "history.json")
    with open(path, "w") as f:
        f.write(json.dumps({"initial_epoch": 0, "d_loss": [1.0, 2.0]}) + "\n")
        f.write(json.dumps({"initial_epoch": 2, "d_loss": [3.0]}) + "\n")
    assert cb.read_history(path) == [
        {"epoch": 1, "d_loss": 1.0}, {"epoch": 2, "d_loss": 2.0},
        {"epoch": 3, "d_loss": 3.0}]
    with open(path, "w") as f:
        f.write("not json")
    with pytest.raises(ValueError, match="not a history file"):
        cb.read_history(path)


def test_train_logs_health_every_epoch_and_history_survives_resume(tmp_path):
    md = str(tmp_path / "m")
    tc = TrainConfig(model_dir=md, batch_size=8, epochs=2, steps_per_epoch=2,
                     holdout_fraction=0.2)
    first = train_gan(MODEL, DATA, tc, verbose=0)
    assert len(first.history["diversity"]) == 2
    train_gan(MODEL, DATA, TrainConfig(**{**tc.__dict__, "epochs": 3}),
              verbose=0)
    with open(os.path.join(md, cb.HISTORY_FILE)) as f:
        epochs = json.load(f)["epochs"]
    assert [r["epoch"] for r in epochs] == [1, 2, 3]
    for record in epochs:
        for key in ("d_loss", "g_loss", "d_real", "d_fake", "diversity",
                    "coverage_residual", "coverage_ratio"):
            assert np.isfinite(record[key]), (record, key)
    with open(os.path.join(md, cb.SELECTION_FILE)) as f:
        selection = json.load(f)
    best = min(epochs, key=lambda r: r["coverage_ratio"])
    assert selection["epoch"] == best["epoch"]


def test_holdout_images_are_not_trained_on():
    from anogan_tf.training.run import training_patches
    data = DataConfig(dataset="digits", image_size=32, normal_class=0)
    train, held = training_patches(data, holdout_fraction=0.1)
    all_train, none = training_patches(data, holdout_fraction=0.0)
    assert len(none) == 0 and len(train) + len(held) == len(all_train)
    assert len(held) == round(0.1 * len(all_train))
    flat = {t.tobytes() for t in train}
    assert not any(h.tobytes() in flat for h in held)


def test_coverage_maps_at_most_max_coverage_images():
    real = np.random.default_rng(2).uniform(-1, 1, (300, 32, 32, 1))
    callback = health.TrainingHealth(
        real, real[:200], MODEL.latent_dim, MODEL.prior,
        health.HealthConfig(max_coverage_images=16))
    assert callback.holdout.shape == (16, 32, 32, 1)
    rows = {r.tobytes() for r in real[:200].astype(np.float32)}
    assert all(h.tobytes() in rows for h in callback.holdout)
    small = health.TrainingHealth(real, real[:10], MODEL.latent_dim,
                                  MODEL.prior)
    assert len(small.holdout) == 10


def test_mode_seeking_needs_two_images_a_batch():
    from anogan_tf.config import ConfigError
    with pytest.raises(ConfigError, match="batch_size >= 2"):
        TrainConfig(model_dir="m", batch_size=1, mode_seeking=1.0)
    with pytest.raises(ConfigError, match="mode_seeking must be >= 0"):
        TrainConfig(model_dir="m", mode_seeking=-1.0)
    assert TrainConfig(model_dir="m", batch_size=1).mode_seeking == 0.0
