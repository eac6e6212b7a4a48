"""GAN training: train_step, checkpoint/resume, divergence, the binary."""

import json
import os
import subprocess
import sys

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
