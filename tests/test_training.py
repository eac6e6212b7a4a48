"""GAN training: train_step, checkpoint/resume, divergence, the binary."""

import dataclasses
import json
import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

from anogan_tf.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from anogan_tf.models import build_models, load_model_dir
from anogan_tf.training import GAN, TrainingDivergedError, train_gan

MODEL = ModelConfig(image_size=32, channels=1, latent_dim=16, base_filters=4)
DATA = DataConfig(dataset="synthetic_oct", image_size=32, oct_num_train=6,
                  oct_height=64, oct_width=64, patch_stride=16)


def _weights(model):
    return [np.array(w) for w in model.weights]


@pytest.mark.parametrize("gan_loss", ["dcgan", "wgan_gp", "hinge"])
def test_train_steps_change_weights_and_losses_are_finite(gan_loss):
    g, d = build_models(MODEL)
    gan = GAN(g, d, 16, gan_loss=gan_loss, n_critic=2 if gan_loss == "wgan_gp" else 1)
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3),
                jit_compile=False)
    x = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 1)).astype(np.float32)
    g0, d0 = _weights(g), _weights(d)
    hist = gan.fit(x, batch_size=8, epochs=1, verbose=0).history
    for key in ("d_loss", "g_loss", "d_real", "d_fake"):
        assert np.isfinite(hist[key][-1]), key
    assert any(not np.array_equal(a, b) for a, b in zip(g0, _weights(g)))
    assert any(not np.array_equal(a, b) for a, b in zip(d0, _weights(d)))


def test_jit_compiled_train_step_runs():
    g, d = build_models(MODEL)
    gan = GAN(g, d, 16)
    gan.compile(keras.optimizers.Adam(2e-4, beta_1=0.5),
                keras.optimizers.Adam(2e-4, beta_1=0.5), jit_compile=True)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 1)).astype(np.float32)
    hist = gan.fit(x, batch_size=8, epochs=1, verbose=0).history
    assert np.isfinite(hist["g_loss"][-1])


def _one_epoch(conv_impl, jit, x):
    """Weights after 2 train steps from a fixed start (same init, same z).

    SGD keeps the update linear in the gradients; Adam's first steps are
    about lr * sign(g), which turns rounding noise in near-zero gradients
    into full-size differences.
    """
    keras.utils.set_random_seed(3)
    g, d = build_models(MODEL)
    gan = GAN(g, d, 16, seed=5)
    gan.compile(keras.optimizers.SGD(0.05), keras.optimizers.SGD(0.05),
                conv_impl=conv_impl, jit_compile=jit)
    gan.fit(x, batch_size=8, epochs=1, verbose=0, shuffle=False)
    return g, d


@pytest.mark.parametrize("jit", [False, True])
def test_phase_and_native_convs_train_to_the_same_weights(jit):
    """The polyphase stride-2 layers are the same function as Keras' native
    ones, gradients included: identical starts give identical weights."""
    x = np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 1)).astype(np.float32)
    g_n, d_n = _one_epoch("native", jit, x)
    g_p, d_p = _one_epoch("phase", jit, x)
    assert g_p.deconvs[0].conv_impl == "phase"
    assert d_p.convs[0].conv_impl == "phase"
    for a, b in zip(_weights(g_n) + _weights(d_n), _weights(g_p) + _weights(d_p)):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    g0, _ = build_models(MODEL)  # a fresh start differs from trained weights
    changed = any(w0.shape == w.shape and not np.allclose(w0, w)
                  for w0, w in zip(_weights(g0), _weights(g_p)))
    assert changed


def test_auto_conv_impl_follows_jit_compile():
    g, d = build_models(MODEL)
    gan = GAN(g, d, 16)
    gan.compile(keras.optimizers.SGD(), keras.optimizers.SGD(),
                jit_compile=True)
    assert g.to_image.conv_impl == "phase" and d.convs[3].conv_impl == "phase"
    gan.compile(keras.optimizers.SGD(), keras.optimizers.SGD(),
                jit_compile=False)
    assert g.to_image.conv_impl == "native" and d.convs[3].conv_impl == "native"
    with pytest.raises(ValueError, match="native"):
        g.set_conv_impl("fft")


class _KillAfter(keras.callbacks.Callback):
    """Simulates a kill right after epoch `n`'s checkpoint was written."""

    def __init__(self, n):
        super().__init__()
        self.n = n

    def on_epoch_end(self, epoch, logs=None):
        if epoch + 1 == self.n:
            raise KeyboardInterrupt("simulated kill")


def test_checkpoint_kill_and_resume(tmp_path):
    md = str(tmp_path / "m")
    tc = TrainConfig(model_dir=md, batch_size=8, epochs=3, steps_per_epoch=2)
    with pytest.raises(KeyboardInterrupt):
        train_gan(MODEL, DATA, tc, extra_callbacks=[_KillAfter(2)], verbose=0)
    with open(os.path.join(md, "checkpoints", "state.json")) as f:
        assert json.load(f)["epoch"] == 2
    _, g_saved, _ = load_model_dir(md)
    saved = _weights(g_saved)

    # The re-run starts at epoch 2 from the saved weights, and finishes 3.
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["start"] = _weights(self.model.generator)

        def on_epoch_begin(self, epoch, logs=None):
            seen.setdefault("epochs", []).append(epoch)

    result = train_gan(MODEL, DATA, tc, extra_callbacks=[Probe()], verbose=0)
    assert result.initial_epoch == 2 and result.epochs_done == 3
    assert seen["epochs"] == [2]
    for a, b in zip(seen["start"], saved):
        np.testing.assert_array_equal(a, b)
    assert sorted(os.listdir(os.path.join(md, "samples"))) == [
        "epoch_0001.png", "epoch_0002.png", "epoch_0003.png"]
    # Nothing left to do: a same-epochs re-run trains nothing.
    again = train_gan(MODEL, DATA, tc, verbose=0)
    assert again.initial_epoch == 3 and again.history == {}


def test_training_emits_no_keras_shuffle_warning(tmp_path):
    from anogan_tf.training import train_encoder
    tc = TrainConfig(model_dir=str(tmp_path / "m"), batch_size=8, epochs=1,
                     steps_per_epoch=1, holdout_fraction=0.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gan = train_gan(MODEL, DATA, tc, verbose=0)
        encoder = train_encoder(gan.model_dir, DATA, tc, verbose=0)
    assert gan.epochs_done == 1 and encoder.epochs_done == 1
    shuffle = [str(w.message) for w in caught if "shuffle" in str(w.message)]
    assert shuffle == [], shuffle


def test_other_architecture_in_same_model_dir_is_refused(tmp_path):
    md = str(tmp_path / "m")
    tc = TrainConfig(model_dir=md, batch_size=8, epochs=1, steps_per_epoch=1)
    train_gan(MODEL, DATA, tc, verbose=0)
    wider = ModelConfig(image_size=32, latent_dim=16, base_filters=8)
    with pytest.raises(ConfigError, match="different architecture"):
        train_gan(wider, DATA, tc, verbose=0)


def test_divergence_guard_stops_with_clear_message(tmp_path):
    md = str(tmp_path / "m")
    tc = TrainConfig(model_dir=md, batch_size=8, epochs=2, steps_per_epoch=2,
                     divergence_threshold=1e-6)  # any real loss exceeds it
    with pytest.raises(TrainingDivergedError, match="lower learning rate"):
        train_gan(MODEL, DATA, tc, verbose=0)
    # No checkpoint of a diverged epoch was written.
    assert not os.path.exists(os.path.join(md, "checkpoints", "state.json"))


def _run(args, cwd):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", "anogan_tf.train"] + args,
                          cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_binary_acceptance_run_and_resume(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    md = str(tmp_path / "M")
    args = ["--flagfile=flags/synthetic_oct.cfg", f"--model_dir={md}",
            "--image_size=32", "--base_filters=8", "--batch_size=16",
            "--epochs=1", "--steps_per_epoch=3", "--oct_num_train=10"]
    p = _run(args, repo)
    assert p.returncode == 0, p.stderr[-3000:]
    for name in ("flags.cfg", "config.json", "generator.keras",
                 "discriminator.keras", "checkpoints/state.json",
                 "samples/epoch_0001.png"):
        assert os.path.exists(os.path.join(md, name)), name
    flags_text = open(os.path.join(md, "flags.cfg")).read()
    assert "--base_filters=8" in flags_text and "--dataset=synthetic_oct" in flags_text
    p = _run(args[:-3] + ["--epochs=2", "--steps_per_epoch=3", "--oct_num_train=10"], repo)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Resuming from epoch 1" in p.stderr
    assert os.path.exists(os.path.join(md, "samples/epoch_0002.png"))
    # Replaying the written flags reproduces the run's configuration.
    p = _run([f"--flagfile={md}/flags.cfg", "--epochs=2"], repo)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "nothing to do" in p.stderr


def test_binary_reports_bad_input_without_traceback(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    empty = tmp_path / "empty"
    empty.mkdir()
    p = _run([f"--model_dir={tmp_path / 'M'}", "--dataset=folder",
              f"--data_path={empty}", "--image_size=32"], repo)
    assert p.returncode == 1
    assert "anogan-train: error:" in p.stderr and str(empty) in p.stderr
    assert "Traceback" not in p.stderr
    p = _run([f"--model_dir={tmp_path / 'M2'}", "--image_size=40"], repo)
    assert p.returncode == 1 and "multiple of 16" in p.stderr


def test_binary_prints_a_config_error_once(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = _run([f"--model_dir={tmp_path / 'M'}", "--image_size=33"], repo)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    # It was printed twice: by absl logging (to stderr) and as the error line.
    assert p.stderr.count("got 33") == 1, p.stderr
    errors = [l for l in p.stderr.splitlines()
              if l.startswith("anogan-train: error:")]
    assert len(errors) == 1 and "multiple of 16" in errors[0]
    assert not os.path.exists(tmp_path / "M" / "config.json")


def test_mode_seeking_adds_its_term_to_the_generator_loss():
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 1)).astype(
        np.float32)
    out = {}
    for weight in (0.0, 1.0):
        keras.utils.set_random_seed(3)
        g, d = build_models(MODEL)
        gan = GAN(g, d, 16, gan_loss="wgan_gp", n_critic=1, seed=5,
                  mode_seeking=weight)
        gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3),
                    jit_compile=False)
        before = _weights(g)
        logs = gan.train_step(x)
        out[weight] = {k: float(v) for k, v in logs.items()}
        assert all(np.isfinite(v) for v in out[weight].values())
        assert any(not np.array_equal(a, b) for a, b in zip(before, _weights(g)))
    # Same weights, seeds and draws: the D step and the critic's verdict on
    # the fakes are the same, and G's loss differs by the positive MSGAN term.
    assert out[1.0]["d_loss"] == pytest.approx(out[0.0]["d_loss"], rel=1e-5)
    assert out[1.0]["g_loss"] > out[0.0]["g_loss"] + 0.1


def test_r1_penalty_adds_to_the_discriminator_loss_only():
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 1)).astype(
        np.float32)
    model = ModelConfig(image_size=32, channels=1, latent_dim=16,
                        base_filters=4, d_norm="none")
    from anogan_tf.training import losses as gl
    keras.utils.set_random_seed(3)
    _, d0 = build_models(model)
    r1 = float(gl.r1_penalty(lambda v: d0(v, training=True), x))
    assert r1 > 0
    gamma = 2.0 / r1  # so that gamma / 2 * R1 = 1 exactly
    out = {}
    for weight in (0.0, gamma):
        keras.utils.set_random_seed(3)
        g, d = build_models(model)
        gan = GAN(g, d, 16, gan_loss="dcgan", seed=5, r1_gamma=weight)
        gan.compile(keras.optimizers.SGD(0.0), keras.optimizers.SGD(0.0),
                    jit_compile=False)
        out[weight] = {k: float(v) for k, v in gan.train_step(x).items()}
    # lr 0 keeps the weights, so D's loss differs by gamma/2 * R1 = 1 and
    # G's loss not at all.
    assert out[gamma]["d_loss"] - out[0.0]["d_loss"] == pytest.approx(
        1.0, rel=1e-3)
    assert out[gamma]["g_loss"] == pytest.approx(out[0.0]["g_loss"],
                                                 rel=1e-6)
    with pytest.raises(ValueError, match="wgan_gp"):
        GAN(g, d, 16, gan_loss="wgan_gp", r1_gamma=1.0)


def test_ema_generator_averages_g_and_is_what_the_model_dir_saves(tmp_path):
    from anogan_tf.models import build_generator
    from anogan_tf.training.gan import ema_decay_at
    # The warm-up: (1 + t) / (10 + t) until it reaches the decay.
    assert float(ema_decay_at(0.999, 1)) == pytest.approx(2.0 / 11.0)
    assert float(ema_decay_at(0.5, 1000)) == pytest.approx(0.5)
    x = np.random.default_rng(0).uniform(-1, 1, (8, 32, 32, 1)).astype(
        np.float32)
    keras.utils.set_random_seed(3)
    g, d = build_models(MODEL)
    ema = build_generator(MODEL, name="generator_ema")
    gan = GAN(g, d, 16, seed=5, generator_ema=ema, ema_decay=0.9)
    gan.compile(keras.optimizers.Adam(1e-2), keras.optimizers.Adam(1e-2),
                jit_compile=False)
    start = [np.array(w) for w in g.trainable_weights]
    for a, b in zip(ema.weights, g.weights):  # the average starts at G
        np.testing.assert_array_equal(np.array(a), np.array(b))
    gan.train_step(x)
    decay = 2.0 / 11.0  # step 1 of the warm-up
    for e, w0, w1 in zip(ema.trainable_weights, start, g.trainable_weights):
        np.testing.assert_allclose(
            np.array(e), decay * w0 + (1 - decay) * np.array(w1),
            rtol=1e-5, atol=1e-7)
    assert gan.inference_generator is ema
    # Refreshing the statistics moves only BatchNorm's moving statistics.
    trainable = [np.array(w) for w in ema.trainable_weights]
    moving = [np.array(w) for w in ema.non_trainable_weights]
    gan.refresh_ema_statistics(num_batches=3, batch_size=8)
    for a, b in zip(trainable, ema.trainable_weights):
        np.testing.assert_array_equal(a, np.array(b))
    assert any(not np.allclose(a, np.array(b))
               for a, b in zip(moving, ema.non_trainable_weights))
    # The model dir's generator.keras is the EMA copy, not the last iterate.
    from anogan_tf.training import callbacks as cb
    ckpt = cb.EpochCheckpoint(str(tmp_path))
    ckpt.set_model(gan)
    ckpt.on_epoch_end(0, {})
    saved = keras.saving.load_model(str(tmp_path / "generator.keras"),
                                    compile=False)
    for a, b in zip(saved.weights, ema.weights):
        np.testing.assert_array_equal(np.array(a), np.array(b))
    assert any(not np.allclose(np.array(a), np.array(b))
               for a, b in zip(saved.trainable_weights, g.trainable_weights))


def test_training_with_ema_and_r1_resumes_and_refuses_bad_settings(tmp_path):
    md = str(tmp_path / "m")
    model = ModelConfig(image_size=32, channels=1, latent_dim=16,
                        base_filters=4, d_norm="none")
    tc = TrainConfig(model_dir=md, batch_size=8, epochs=2, steps_per_epoch=2,
                     g_ema=0.99, r1_gamma=1.0)
    result = train_gan(model, DATA, tc, verbose=0)
    assert result.epochs_done == 2
    again = train_gan(model, DATA, dataclasses.replace(tc, epochs=3),
                      verbose=0)
    assert again.initial_epoch == 2 and again.epochs_done == 3
    with pytest.raises(ConfigError, match="g_ema"):
        TrainConfig(model_dir=md, g_ema=1.0)
    with pytest.raises(ConfigError, match="r1_gamma"):
        TrainConfig(model_dir=md, r1_gamma=-1.0)
    wgan = ModelConfig(image_size=32, channels=1, latent_dim=16,
                       base_filters=4, gan_loss="wgan_gp", d_norm="none")
    with pytest.raises(ConfigError, match="--r1_gamma"):
        train_gan(wgan, DATA, TrainConfig(model_dir=str(tmp_path / "w"),
                                          batch_size=8, epochs=1,
                                          steps_per_epoch=1, r1_gamma=1.0),
                  verbose=0)


def test_binary_stage_all_trains_the_gan_then_its_encoder(tmp_path):
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    md = str(tmp_path / "M")
    p = _run(["--flagfile=flags/synthetic_oct.cfg", f"--model_dir={md}",
              "--stage=all", "--base_filters=4", "--latent_dim=16",
              "--batch_size=8", "--epochs=1", "--steps_per_epoch=2",
              "--encoder_epochs=2", "--oct_num_train=6", "--oct_height=64",
              "--oct_width=64"], repo)
    assert p.returncode == 0, p.stderr[-3000:]
    # The GAN for --epochs, then its encoder for --encoder_epochs.
    with open(os.path.join(md, "checkpoints", "state.json")) as f:
        assert json.load(f)["epoch"] == 1
    with open(os.path.join(md, "checkpoints_encoder", "state.json")) as f:
        assert json.load(f)["epoch"] == 2
    for name in ("generator.keras", "discriminator.keras", "encoder.keras",
                 "flags.cfg", "flags_encoder.cfg"):
        assert os.path.isfile(os.path.join(md, name)), name
