"""The f-AnoGAN encoder (issue 5): model, training, modes, export, binary."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig, TrainConfig)
from anogan_tf.export import export_model, exporter
from anogan_tf.mapping import LatentMapper, MappingParams
from anogan_tf.models import Encoder, build_encoder, load_encoder
from anogan_tf.models.io import ENCODER_FILE
from anogan_tf import scoring
from anogan_tf.training import EncoderTrainer, train_encoder, train_gan

sys.path.insert(0, os.path.dirname(__file__))
import serving_server  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
SCORE_KEYS = ("anomaly_score", "residual_score", "discrimination_score",
              "residual_map", "reconstruction", "latent")
DATA = DataConfig(dataset="synthetic_oct", image_size=32, oct_num_train=6,
                  oct_num_test=8, oct_height=64, oct_width=64, patch_stride=16)


def _samples(g, n, seed, low=-1.0, high=1.0):
    z = np.random.default_rng(seed).uniform(low, high, (n, g.latent_dim))
    z = z.astype(np.float32)
    return z, g(z, training=False).numpy()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny random GAN dir and an encoder trained briefly on G's samples.

    Returns (model_dir, config, G, D, E, untrained E, fit history).
    """
    md = str(tmp_path_factory.mktemp("model"))
    config, g, d = serving_server.make_tiny_model_dir(md, seed=0)
    _, xs = _samples(g, 512, seed=0)
    keras.utils.set_random_seed(0)
    encoder = build_encoder(config)
    untrained = build_encoder(config)
    untrained.set_weights(encoder.get_weights())
    trainer = EncoderTrainer(encoder, g, d, kappa=1.0)
    trainer.compile(keras.optimizers.Adam(1e-3), jit_compile=False)
    ds = (tf.data.Dataset.from_tensor_slices(xs).shuffle(512, seed=0)
          .repeat().batch(32, drop_remainder=True))
    history = trainer.fit(ds, epochs=5, steps_per_epoch=30, verbose=0).history
    encoder.save(os.path.join(md, ENCODER_FILE))
    return md, config, g, d, encoder, untrained, history


# --- the model ---------------------------------------------------------------

def test_encoder_shapes_prior_and_save_load(tmp_path):
    from anogan_tf.config import ModelConfig
    cfg = ModelConfig(image_size=32, latent_dim=16, base_filters=4)
    e = build_encoder(cfg)
    x = np.random.default_rng(0).uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32)
    z = e(x).numpy()
    assert z.shape == (3, 16) and np.all(np.abs(z) <= 1.0)
    # Mirrors D: 4 strided convs (b, 2b, 4b, 8b), BN on blocks 2-4 only.
    assert [c.filters for c in e.convs] == [4, 8, 16, 32]
    assert [bn is None for bn in e.bns] == [True, False, False, False]
    # Uniform prior: tanh output; normal prior: linear.
    for prior, expected in (("uniform", np.tanh(5.0)), ("normal", 5.0)):
        ep = build_encoder(ModelConfig(image_size=32, latent_dim=16,
                                       base_filters=4, prior=prior))
        ep.to_latent.kernel.assign(tf.zeros_like(ep.to_latent.kernel))
        ep.to_latent.bias.assign(tf.fill([16], 5.0))
        np.testing.assert_allclose(ep(x).numpy(), expected, rtol=1e-5)
    path = str(tmp_path / ENCODER_FILE)
    e.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert isinstance(loaded, Encoder)
    np.testing.assert_allclose(loaded(x).numpy(), z, rtol=1e-6)


# --- training ------------------------------------------------------------------

def test_encoder_training_reduces_its_loss(trained):
    history = trained[-1]
    loss = history["loss"]
    assert all(np.isfinite(loss))
    assert loss[-1] < 0.5 * loss[0], loss
    # loss = image_mse + kappa * feature_mse with kappa = 1.
    np.testing.assert_allclose(
        loss[-1], history["image_mse"][-1] + history["feature_mse"][-1],
        rtol=1e-4)


def test_encoder_mode_recovers_known_latents(trained):
    _, config, g, d, encoder, untrained, _ = trained
    z0, x = _samples(g, 8, seed=5, low=-0.8, high=0.8)
    p = MappingParams.create(config, MappingConfig(mode="encoder", steps=0))

    def run(e):
        return LatentMapper(g, d, p, batch_size=8, jit_compile=False,
                            encoder=e, mode="encoder").map(x, progress=False)

    before, after = run(untrained), run(encoder)
    err_before = np.abs(before.latent - z0).mean()
    err_after = np.abs(after.latent - z0).mean()
    assert err_after < 0.6 * err_before, (err_after, err_before)
    assert after.residual_score.mean() < 0.4 * before.residual_score.mean()
    # The residual at E(x) is far lower for G's images than for noise.
    noise = np.clip(np.random.default_rng(6).normal(0, 0.4, x.shape), -1, 1)
    far = LatentMapper(g, d, p, batch_size=8, jit_compile=False, encoder=encoder,
                       mode="encoder").map(noise.astype(np.float32),
                                           progress=False)
    assert after.residual_score.max() < 0.05 * far.residual_score.min()


def test_encoder_score_is_image_mse_plus_kappa_feature_mse(trained):
    _, config, g, d, encoder, _, _ = trained
    x = np.clip(np.random.default_rng(7).normal(0, 0.3, (3, 32, 32, 1)),
                -1, 1).astype(np.float32)
    kappa = 2.5
    p = MappingParams.create(config, MappingConfig(mode="encoder", steps=0,
                                                     kappa=kappa))
    out = LatentMapper(g, d, p, batch_size=4, jit_compile=True, encoder=encoder,
                       mode="encoder").map(x, progress=False)
    z = encoder(x, training=False).numpy()
    gz = g(z, training=False).numpy()
    img = ((x - gz) ** 2).reshape(3, -1).mean(axis=1)
    feat = ((d.features(x).numpy() - d.features(gz).numpy()) ** 2
            ).reshape(3, -1).mean(axis=1)
    np.testing.assert_allclose(out.latent, z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.residual_score, img, rtol=1e-3)
    np.testing.assert_allclose(out.discrimination_score, feat, rtol=1e-3)
    np.testing.assert_allclose(out.anomaly_score, img + kappa * feat, rtol=1e-3)
    np.testing.assert_allclose(out.residual_map, np.abs(x - gz), atol=1e-4)


def test_hybrid_starts_at_encoder_and_never_ends_worse(trained):
    _, config, g, d, encoder, _, _ = trained
    rng = np.random.default_rng(8)
    _, near = _samples(g, 4, seed=9)
    x = np.concatenate([np.clip(near + rng.normal(0, 0.05, near.shape), -1, 1),
                        np.clip(rng.normal(0, 0.3, (3, 32, 32, 1)), -1, 1)])
    x = x.astype(np.float32)

    def hybrid(steps):
        # MappingConfig refuses 0 steps outside encoder mode (a user would
        # score an unmapped z); the start itself is what this test reads.
        # The mapper's mode is its own argument, so the 0-step record says
        # "encoder" while the mapper below runs "hybrid".
        p = MappingParams.create(config, MappingConfig(
            mode="hybrid" if steps else "encoder", steps=steps, lr=0.01))
        return LatentMapper(g, d, p, batch_size=7, jit_compile=False,
                            encoder=encoder, mode="hybrid").map(x, progress=False)

    start, end = hybrid(0), hybrid(20)
    np.testing.assert_allclose(start.latent, encoder(x).numpy(), atol=1e-6)
    assert np.all(end.mapping_loss <= start.mapping_loss + 1e-5), (
        end.mapping_loss, start.mapping_loss)
    assert np.mean(end.mapping_loss) < np.mean(start.mapping_loss)
    # The AnoGAN score: (1 - lambda) R + lambda D at z*.
    np.testing.assert_allclose(
        end.anomaly_score,
        0.9 * end.residual_score + 0.1 * end.discrimination_score, rtol=1e-5)


def test_iterative_results_do_not_change_with_an_encoder(trained):
    _, config, g, d, encoder, _, _ = trained
    _, x = _samples(g, 3, seed=10)
    p = MappingParams.create(config, MappingConfig(steps=5))
    a = LatentMapper(g, d, p, batch_size=3, jit_compile=False).map(
        x, progress=False)
    b = LatentMapper(g, d, p, batch_size=3, jit_compile=False, encoder=encoder,
                     mode="iterative").map(x, progress=False)
    np.testing.assert_array_equal(a.anomaly_score, b.anomaly_score)
    np.testing.assert_array_equal(a.latent, b.latent)


# --- errors --------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["encoder", "hybrid"])
def test_encoder_modes_without_an_encoder_say_how_to_train_one(tmp_path, mode):
    md = str(tmp_path / "m")
    serving_server.make_tiny_model_dir(md, seed=1)
    with pytest.raises(ConfigError, match="anogan-train --stage=encoder "
                       "--model_dir=" + md):
        scoring.run_evaluate(md, DATA, MappingConfig(mode=mode, steps=1),
                              EvalConfig(output_dir=str(tmp_path / "e"),
                                         num_test=2), progress=False)
    assert load_encoder(md) is None


def test_encoder_training_without_a_gan_says_train_the_gan_first(tmp_path):
    md = str(tmp_path / "empty")
    os.makedirs(md)
    with pytest.raises(ConfigError, match="Train the GAN first"):
        train_encoder(md, DATA, TrainConfig(model_dir=md, batch_size=8,
                                            epochs=1, steps_per_epoch=1),
                      verbose=0)


# --- export --------------------------------------------------------------------

EXPORT_MAPPING = MappingConfig(steps=5, lr=0.05, restarts=2, seed=3)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    md = trained[0]
    export_dir = str(tmp_path_factory.mktemp("export"))
    version_dir = export_model(md, export_dir, EXPORT_MAPPING)
    return version_dir, tf.saved_model.load(version_dir)


@pytest.mark.parametrize("signature,mode", [("score_fast", "encoder"),
                                            ("score_hybrid", "hybrid")])
def test_exported_encoder_signatures_match_in_process(trained, exported,
                                                      signature, mode):
    md = trained[0]
    config, g, d, encoder = exporter.load_trained_models(md)
    rng = np.random.default_rng(11)
    _, near = _samples(g, 3, seed=12)
    x = np.concatenate([np.clip(near + rng.normal(0, 0.05, near.shape), -1, 1),
                        rng.uniform(-1, 1, (2, 32, 32, 1))]).astype(np.float32)
    p = MappingParams.create(config, EXPORT_MAPPING)
    mapped = LatentMapper(g, d, p, batch_size=4,
                          restarts=EXPORT_MAPPING.restarts, jit_compile=False,
                          encoder=encoder, mode=mode).map(x, progress=False)
    _, loaded = exported
    served = {k: v.numpy() for k, v in
              loaded.signatures[signature](images=tf.constant(x)).items()}
    assert sorted(served) == sorted(SCORE_KEYS)
    for key in SCORE_KEYS:
        np.testing.assert_allclose(served[key], getattr(mapped, key),
                                   rtol=1e-5, atol=1e-5, err_msg=key)
    # Same input validation as serving_default.
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[-1, 1\]"):
        loaded.signatures[signature](images=tf.constant(x * 3.0))


def test_saved_model_cli_lists_the_encoder_signatures(exported):
    version_dir, _ = exported
    out = subprocess.run(
        [os.path.join(VENV_BIN, "saved_model_cli"), "show", "--dir",
         version_dir, "--all"], capture_output=True, text=True, check=True,
        timeout=300).stdout
    for name in ("score_fast", "score_hybrid", "serving_default"):
        assert f"signature_def['{name}']" in out
    block = out.split("signature_def['score_fast']")[1].split("signature_def[")[0]
    assert "inputs['images']" in block
    for key in SCORE_KEYS:
        assert f"outputs['{key}']" in block


# --- acceptance: GAN -> encoder binary -> evaluate -------------------------------

def test_acceptance_train_encoder_binary_then_evaluate(tmp_path):
    md = str(tmp_path / "m")
    train_gan(serving_server_config(), DATA,
              TrainConfig(model_dir=md, batch_size=8, epochs=1,
                          steps_per_epoch=2), verbose=0)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-m", "anogan_tf.train", "--stage=encoder",
         f"--model_dir={md}", "--epochs=1", "--steps_per_epoch=3",
         "--batch_size=8", "--dataset=synthetic_oct", "--oct_num_train=6",
         "--oct_height=64", "--oct_width=64", "--patch_stride=16"],
        cwd=str(tmp_path), env=env, capture_output=True, text=True,
        timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert os.path.isfile(os.path.join(md, ENCODER_FILE))
    with open(os.path.join(md, "checkpoints_encoder", "state.json")) as f:
        assert json.load(f)["epoch"] == 1
    assert os.path.isfile(os.path.join(md, "flags_encoder.cfg"))
    # The GAN's own checkpoints are untouched.
    with open(os.path.join(md, "checkpoints", "state.json")) as f:
        assert json.load(f)["epoch"] == 1

    # Resume: a larger --epochs continues from the encoder's last epoch.
    resumed = train_encoder(md, DATA, TrainConfig(
        model_dir=md, batch_size=8, epochs=2, steps_per_epoch=2), verbose=0)
    assert resumed.initial_epoch == 1 and resumed.epochs_done == 2

    for mode, steps in (("encoder", 0), ("hybrid", 5)):
        out = str(tmp_path / f"eval_{mode}")
        metrics = scoring.run_evaluate(
            md, DATA, MappingConfig(mode=mode, steps=steps, jit_compile=False),
            EvalConfig(output_dir=out, num_test=6), progress=False)
        with open(os.path.join(out, "metrics.json")) as f:
            written = json.load(f)
        assert written["mode"] == mode == metrics["mode"]
        assert 0.0 <= written["image_auroc"] <= 1.0
        with open(os.path.join(out, "scores.csv")) as f:
            rows = f.read().splitlines()
        assert rows[0].startswith("id,patch_y,patch_x,anomaly_score,"
                                  "residual_score,discrimination_score")
        assert rows[1:] and all(r.split(",")[-1] == mode for r in rows[1:])


def serving_server_config():
    from anogan_tf.config import ModelConfig
    return ModelConfig(image_size=32, channels=1, latent_dim=16, base_filters=4)


def test_hybrid_xla_twin_matches_plain_and_needs_the_encoder(trained):
    from anogan_tf.export import signatures
    md = trained[0]
    config, g, d, encoder = exporter.load_trained_models(md)
    params = MappingParams.create(config, EXPORT_MAPPING)
    context = signatures.ExportContext(g, d, config, params, restarts=2,
                                       encoder=encoder)
    fns = signatures.build_endpoints(context, export_xla=True)
    assert {"score_fast", "score_hybrid", "score_hybrid_xla"} <= set(fns)
    x = tf.constant(np.random.default_rng(13).uniform(
        -0.5, 0.5, (2, 32, 32, 1)).astype(np.float32))
    plain, twin = fns["score_hybrid"](x), fns["score_hybrid_xla"](x)
    for key in SCORE_KEYS:
        np.testing.assert_allclose(twin[key].numpy(), plain[key].numpy(),
                                   rtol=1e-4, atol=1e-4, err_msg=key)
    without = signatures.build_endpoints(
        signatures.ExportContext(g, d, config, params), export_xla=True)
    assert not {"score_fast", "score_hybrid", "score_hybrid_xla"} & set(without)


@pytest.mark.parametrize("signature", ["score_fast", "score_hybrid"])
def test_encoder_signatures_round_trip_cli_and_loopback_server(
        exported, signature, tmp_path):
    """score_fast/score_hybrid through `saved_model_cli run` and through the
    loopback gRPC server (TF1 Session loader, XLA off), against the
    signature called in-process."""
    from anogan_tf.serving import connect
    version_dir, loaded = exported
    x = np.random.default_rng(21).uniform(-0.9, 0.9, (3, 32, 32, 1)).astype(
        np.float32)
    direct = {k: v.numpy() for k, v in
              loaded.signatures[signature](images=tf.constant(x)).items()}
    np.save(tmp_path / "x.npy", x)
    subprocess.run(
        [os.path.join(VENV_BIN, "saved_model_cli"), "run", "--dir",
         version_dir, "--tag_set", "serve", "--signature_def", signature,
         "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir",
         str(tmp_path / "out")], capture_output=True, text=True, check=True,
        timeout=300)
    for key in SCORE_KEYS:
        np.testing.assert_allclose(np.load(tmp_path / "out" / f"{key}.npy"),
                                   direct[key], rtol=1e-5, atol=1e-5,
                                   err_msg=key)
    model = serving_server.LoopbackModel(version_dir, name="anogan")
    server, port = serving_server.start_grpc_server(model)
    try:
        with connect(f"127.0.0.1:{port}", signature_name=signature,
                     timeout=60) as client:
            served = client.predict(x)
    finally:
        server.stop(grace=None)
    for key in SCORE_KEYS:
        np.testing.assert_allclose(served[key], direct[key], rtol=1e-5,
                                   atol=1e-5, err_msg=key)


def test_encoder_signatures_under_concurrent_requests(exported):
    """4 threads x 10 mixed-size requests per encoder signature on the
    loopback server: no errors, results identical to sequential calls."""
    import concurrent.futures
    from anogan_tf.serving import connect
    version_dir, _ = exported
    rng = np.random.default_rng(5)
    pool = rng.uniform(-0.9, 0.9, (8, 32, 32, 1)).astype(np.float32)
    requests = [rng.choice(len(pool), int(rng.integers(1, 5)), replace=False)
                for _ in range(40)]
    model = serving_server.LoopbackModel(version_dir, name="anogan")
    server, port = serving_server.start_grpc_server(model)
    try:
        for signature in ("score_fast", "score_hybrid"):
            with connect(f"127.0.0.1:{port}", signature_name=signature,
                         timeout=60) as client:
                send = lambda rows: client.predict(  # noqa: E731
                    pool[rows], output_keys=("anomaly_score", "latent"))
                sequential = [send(r) for r in requests]
                with concurrent.futures.ThreadPoolExecutor(4) as ex:
                    parallel = list(ex.map(send, requests))
            for seq, par in zip(sequential, parallel):
                for key in ("anomaly_score", "latent"):
                    np.testing.assert_array_equal(par[key], seq[key],
                                                  err_msg=f"{signature} {key}")
    finally:
        server.stop(grace=None)


def test_evaluate_in_encoder_mode_also_reports_the_papers_iterative_score(
        trained, tmp_path):
    """metrics.json of an encoder-mode evaluation carries the AUROC of the
    paper's iterative A(x) on the same test images: the same number an
    iterative evaluation with the same steps reports as its A(x)."""
    md = trained[0]
    data = DataConfig(dataset="synthetic_oct", image_size=32, oct_num_test=8,
                      oct_height=64, oct_width=64, patch_stride=16)
    runs = {}
    for mode in ("encoder", "iterative"):
        runs[mode] = scoring.run_evaluate(
            md, data, MappingConfig(mode=mode, steps=3, jit_compile=False),
            EvalConfig(output_dir=str(tmp_path / mode), num_test=6),
            progress=False)
    paper = runs["encoder"]["image_auroc_by_score"]["paper_iterative"]
    assert paper == pytest.approx(
        runs["iterative"]["image_auroc_by_score"]["anogan"], abs=1e-9)
    assert "paper_iterative" not in runs["iterative"]["image_auroc_by_score"]
    off = scoring.run_evaluate(
        md, data, MappingConfig(mode="encoder", steps=3, jit_compile=False),
        EvalConfig(output_dir=str(tmp_path / "off"), num_test=6,
                   paper_score=False), progress=False)
    assert "paper_iterative" not in off["image_auroc_by_score"]


def test_export_in_an_encoder_mode_needs_the_encoder_and_names_its_signature(
        trained, tmp_path):
    """A flagfile's --mode=encoder|hybrid exports: serving_default stays the
    iterative score and the mode's own signature is there; without an
    encoder the error says how to train one."""
    md = trained[0]
    for mode, signature in (("encoder", "score_fast"),
                            ("hybrid", "score_hybrid")):
        version_dir = export_model(
            md, str(tmp_path / mode), MappingConfig(mode=mode, steps=2,
                                                    restarts=1))
        loaded = tf.saved_model.load(version_dir)
        assert {"serving_default", signature} <= set(loaded.signatures)
    bare = tmp_path / "no_encoder"
    serving_server.make_tiny_model_dir(str(bare), seed=0)
    with pytest.raises(ConfigError, match="score_fast.*--stage=encoder"):
        export_model(str(bare), str(tmp_path / "x"),
                     MappingConfig(mode="encoder", steps=2, restarts=1))
    assert not os.path.exists(tmp_path / "x")
