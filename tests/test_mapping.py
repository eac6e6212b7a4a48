"""Invariants of the latent mapping (issue: AnoGAN core)."""

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from anogan_tf.config import ConfigError, MappingConfig, ModelConfig
from anogan_tf.mapping import LatentMapper, MappingParams, initial_latents, map_latents
from anogan_tf.models import build_models
from test_frozen import unit_scale_generator

CFG = ModelConfig(image_size=32, channels=1, latent_dim=16, base_filters=4)


@pytest.fixture(scope="module")
def models():
    g, d = build_models(CFG)
    # A few training-mode passes give BatchNorm non-trivial moving statistics.
    rng = np.random.default_rng(0)
    for _ in range(3):
        x = g(rng.uniform(-1, 1, (8, 16)).astype(np.float32), training=True)
        d(x, training=True)
    return g, d


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return np.clip(rng.normal(0, 0.4, (7, 32, 32, 1)), -1, 1).astype(np.float32)


def params(**kw):
    return MappingParams.create(CFG, MappingConfig(**{"steps": 20, **kw}))


def test_score_independent_of_batchmates_batch_size_and_position(models, images):
    g, d = models
    p = params()
    a = LatentMapper(g, d, p, batch_size=3, jit_compile=False).map(images, progress=False)
    perm = np.array([6, 2, 0, 5, 1, 4, 3])
    b = LatentMapper(g, d, p, batch_size=5, jit_compile=False).map(images[perm], progress=False)
    single = LatentMapper(g, d, p, batch_size=1, jit_compile=False).map(images[4:5], progress=False)
    np.testing.assert_allclose(b.anomaly_score, a.anomaly_score[perm], rtol=1e-5)
    np.testing.assert_allclose(b.latent, a.latent[perm], atol=1e-5)
    np.testing.assert_allclose(single.anomaly_score, a.anomaly_score[4:5], rtol=1e-5)


def test_initial_latents_depend_only_on_content_and_seed(images):
    p = params()
    z = initial_latents(tf.constant(images), p).numpy()
    z_rev = initial_latents(tf.constant(images[::-1]), p).numpy()
    np.testing.assert_array_equal(z_rev[::-1], z)
    assert z.min() >= -1 and z.max() <= 1 and z.std() > 0.3  # uniform prior
    assert not np.allclose(z[0], z[1])
    z_seed = initial_latents(tf.constant(images), params(seed=1)).numpy()
    assert not np.allclose(z_seed, z)
    z_r1 = initial_latents(tf.constant(images), p, restart=1).numpy()
    assert not np.allclose(z_r1, z)


def test_xla_and_non_xla_agree(models, images):
    g, d = models
    p = params()
    a = LatentMapper(g, d, p, batch_size=4, jit_compile=False).map(images, progress=False)
    b = LatentMapper(g, d, p, batch_size=4, jit_compile=True).map(images, progress=False)
    np.testing.assert_allclose(b.anomaly_score, a.anomaly_score, rtol=1e-4)
    np.testing.assert_allclose(b.residual_map, a.residual_map, atol=1e-3)


@pytest.mark.parametrize("jit", [False, True])
def test_conv_impls_give_the_same_mapping(models, images, jit):
    """The frozen graph's native and polyphase convs map to the same z*.

    Scores, G(z*) and residual maps are compared elementwise. Single latent
    coordinates are not: along directions where the loss is flat, Adam's
    normalised steps turn float rounding (different conv algorithms) into
    differences of ~1e-3 after 20 steps, so z* is compared on average.
    """
    g, d = models
    out = {impl: LatentMapper(g, d, params(conv_impl=impl), batch_size=4,
                              jit_compile=jit).map(images, progress=False)
           for impl in ("native", "phase")}
    np.testing.assert_allclose(out["phase"].anomaly_score,
                               out["native"].anomaly_score, rtol=1e-4)
    np.testing.assert_allclose(out["phase"].reconstruction,
                               out["native"].reconstruction, atol=1e-4)
    np.testing.assert_allclose(out["phase"].residual_map,
                               out["native"].residual_map, atol=1e-3)
    assert np.mean(np.abs(out["phase"].latent - out["native"].latent)) < 1e-4


@pytest.mark.parametrize("jit", [False, True])
def test_bfloat16_mapping_agrees_with_float32(models, images, jit):
    """Mixed-precision mapping: scores within a few percent of float32 and
    the same order for clearly separated images, on a G whose output is
    O(1)."""
    g, d = build_models(CFG)
    g.set_weights(models[0].get_weights())
    d.set_weights(models[1].get_weights())
    unit_scale_generator(g, np.random.default_rng(4))
    f32 = LatentMapper(g, d, params(), batch_size=4,
                       jit_compile=jit).map(images, progress=False)
    bf16 = LatentMapper(g, d, params(compute_dtype="bfloat16"), batch_size=4,
                        jit_compile=jit).map(images, progress=False)
    assert bf16.anomaly_score.dtype == np.float32
    assert np.abs(f32.reconstruction).max() > 0.3
    assert not np.array_equal(bf16.reconstruction, f32.reconstruction)
    np.testing.assert_allclose(bf16.anomaly_score, f32.anomaly_score,
                               rtol=0.03)
    # Every pair of images that float32 separates by more than the bf16
    # tolerance keeps its order (closer pairs may swap: a 0.5% rounding
    # error can reorder scores 0.1% apart).
    a, b = f32.anomaly_score, bf16.anomaly_score
    gap = np.abs(a[:, None] - a[None, :]) / np.maximum(a[:, None], a[None, :])
    separated = gap > 0.03
    assert separated.sum() // 2 >= 5  # enough pairs are compared (7 of 21 here)
    np.testing.assert_array_equal(
        np.sign(b[:, None] - b[None, :])[separated],
        np.sign(a[:, None] - a[None, :])[separated])
    with pytest.raises(ConfigError, match="bfloat16"):
        MappingConfig(compute_dtype="float16")


def test_balanced_batch_size_pads_least_with_as_few_calls():
    from anogan_tf.mapping.mapper import balanced_batch_size
    assert balanced_batch_size(65, 64) == 33
    assert balanced_batch_size(1, 64) == 1
    assert balanced_batch_size(64, 64) == 64
    assert balanced_batch_size(594, 128) == 119  # 5 calls, 1 pad row
    for n in range(1, 300):
        for cap in (1, 7, 64):
            b = balanced_batch_size(n, cap)
            assert 1 <= b <= cap
            assert -(-n // b) == -(-n // cap)  # no extra calls
            assert b * -(-n // b) - n < -(-n // b)  # < 1 pad row per call
    with pytest.raises(ValueError, match="max_batch"):
        balanced_batch_size(5, 0)


def test_unknown_conv_impl_is_a_config_error():
    with pytest.raises(ConfigError, match="auto\|native\|phase"):
        MappingConfig(conv_impl="winograd")


def test_loop_state_mapper_matches_variable_mapper(models, images):
    g, d = models
    p = params()
    a = LatentMapper(g, d, p, batch_size=7, jit_compile=False).map(images, progress=False)
    fn = tf.function(lambda x: map_latents(g, d, x, initial_latents(x, p), p),
                     autograph=False)
    out = fn(tf.constant(images))
    for key in ("anomaly_score", "residual_score", "discrimination_score",
                "latent", "reconstruction"):
        np.testing.assert_allclose(out[key].numpy(), getattr(a, key),
                                   rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_mapper_z_variable_holds_the_loop_state_z_star(models, images,
                                                        jit_compile):
    # The design card's trainable z: LatentMapper.z is assigned the z* of
    # the engine's loop (z as loop state, `map_latents`) and the outputs are
    # scored at the variable's value.
    g, d = models
    p = params(steps=7)  # with XLA: one chunk of 5 and one of 2 steps
    mapper = LatentMapper(g, d, p, batch_size=5, jit_compile=jit_compile)
    out = mapper.map_batch(images[:4])
    z_var = mapper.z.numpy()
    assert z_var.shape == (5, CFG.latent_dim)
    np.testing.assert_array_equal(z_var[:4], out["latent"])
    x = tf.constant(images[:4])
    fn = tf.function(lambda x: map_latents(g, d, x, initial_latents(x, p), p,
                                           xla=jit_compile),
                     jit_compile=False)
    loop = fn(x)
    np.testing.assert_allclose(out["latent"], loop["latent"].numpy(),
                               rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out["anomaly_score"],
                               loop["anomaly_score"].numpy(), rtol=1e-5)
    # map_latents with a variable: the variable holds z*, the outputs are
    # the loop-state ones.
    z = tf.Variable(tf.zeros([4, CFG.latent_dim]))
    with_var = tf.function(
        lambda x: map_latents(g, d, x, initial_latents(x, p), p,
                              xla=jit_compile, z_variable=z),
        jit_compile=False)(x)
    np.testing.assert_array_equal(z.numpy(), with_var["latent"].numpy())
    np.testing.assert_allclose(with_var["latent"].numpy(),
                               loop["latent"].numpy(), rtol=1e-6, atol=1e-6)


def test_restart_selection_is_one_tf_function():
    from anogan_tf.mapping import latent
    a = {"mapping_loss": tf.constant([1.0, 2.0, 3.0]),
         "latent": tf.constant([[0.0], [0.0], [0.0]])}
    b = {"mapping_loss": tf.constant([0.5, 2.0, 4.0]),
         "latent": tf.constant([[1.0], [1.0], [1.0]])}
    assert latent.keep_best(None, a) is a
    best = latent.keep_best(a, b)
    # Lower loss wins; a tie keeps the earlier restart.
    np.testing.assert_array_equal(best["mapping_loss"], [0.5, 2.0, 3.0])
    np.testing.assert_array_equal(best["latent"][:, 0], [1.0, 0.0, 0.0])


def test_mapping_params_is_the_mapping_config_plus_the_latent_setup():
    mc = MappingConfig(steps=3, lr=0.2, beta_1=0.8, beta_2=0.99, epsilon=1e-6,
                       lambda_weight=0.3, discrimination_loss="bce",
                       score="residual", seed=4, kappa=2.0, conv_impl="native",
                       compute_dtype="bfloat16")
    p = MappingParams.create(CFG, mc)
    assert p.mapping is mc
    assert (p.latent_dim, p.prior) == (CFG.latent_dim, CFG.prior)
    # Every engine constant reads the one record; none is declared twice.
    for name in ("steps", "lr", "beta_1", "beta_2", "epsilon",
                 "lambda_weight", "discrimination_loss", "score", "seed",
                 "kappa", "conv_impl", "compute_dtype"):
        assert getattr(p, name) == getattr(mc, name), name
    assert {f.name for f in dataclasses.fields(MappingParams)} == {
        "mapping", "latent_dim", "prior"}
    with pytest.raises(AttributeError):
        p.steps = 5


def test_mapping_loss_falls_and_known_latent_is_recovered(models):
    g, d = models
    rng = np.random.default_rng(3)
    z0 = rng.uniform(-0.8, 0.8, (4, 16)).astype(np.float32)
    x = g(z0, training=False).numpy()
    # Zero steps give the loss at the start z. MappingConfig allows them
    # only in encoder mode; the mapper's mode (iterative) is its own.
    start = LatentMapper(g, d, params(steps=0, mode="encoder"),
                         batch_size=4,
                         jit_compile=False).map(x, progress=False)
    losses = [start.mapping_loss]
    for steps in (50, 400):
        r = LatentMapper(g, d, params(steps=steps, lr=0.05), batch_size=4,
                         jit_compile=True).map(x, progress=False)
        losses.append(r.mapping_loss)
    assert np.all(losses[1] < losses[0]) and np.all(losses[2] < losses[1])
    # G(z0) maps back to (nearly) zero residual: < 5% of the starting residual
    # and a mean absolute pixel error below 0.01.
    assert np.all(r.residual_score < 0.05 * start.residual_score)
    assert r.residual_score.max() / (32 * 32) < 0.01


def test_restarts_keep_the_lowest_loss(models, images):
    g, d = models
    one = LatentMapper(g, d, params(), batch_size=7, restarts=1,
                       jit_compile=False).map(images, progress=False)
    three = LatentMapper(g, d, params(), batch_size=7, restarts=3,
                         jit_compile=False).map(images, progress=False)
    assert np.all(three.mapping_loss <= one.mapping_loss + 1e-4)


def test_score_variants(models, images):
    g, d = models
    x = images[:3]
    base = LatentMapper(g, d, params(), batch_size=3, jit_compile=False).map(x, progress=False)
    lam = 0.1
    np.testing.assert_allclose(
        base.anomaly_score,
        (1 - lam) * base.residual_score + lam * base.discrimination_score, rtol=1e-5)
    res = LatentMapper(g, d, params(score="residual"), batch_size=3,
                       jit_compile=False).map(x, progress=False)
    np.testing.assert_allclose(res.anomaly_score, res.residual_score)
    feat = LatentMapper(g, d, params(score="feature"), batch_size=3,
                        jit_compile=False).map(x, progress=False)
    np.testing.assert_allclose(feat.anomaly_score, feat.discrimination_score)
    dout = LatentMapper(g, d, params(score="d_output"), batch_size=3,
                        jit_compile=False).map(x, progress=False)
    expected = tf.sigmoid(-d(x, training=False)).numpy().reshape(-1)
    np.testing.assert_allclose(dout.anomaly_score, expected, rtol=1e-5)
    bce = LatentMapper(g, d, params(score="bce", discrimination_loss="bce"),
                       batch_size=3, jit_compile=False).map(x, progress=False)
    logits = d(bce.reconstruction, training=False).numpy().reshape(-1)
    np.testing.assert_allclose(bce.discrimination_score,
                               np.log1p(np.exp(-logits)), rtol=1e-4)


def test_empty_input_is_rejected(models):
    g, d = models
    with pytest.raises(ValueError, match="empty"):
        LatentMapper(g, d, params(), batch_size=2, jit_compile=False).map(
            np.zeros((0, 32, 32, 1), np.float32), progress=False)


def test_synthetic_anomalies_score_higher_on_a_tiny_trained_model(tmp_path):
    """Normal OCT patches vs the same patches with a painted lesion."""
    from anogan_tf.config import DataConfig, TrainConfig
    from anogan_tf.data import extract_patches, load_images
    from anogan_tf.models import load_model_dir
    from anogan_tf.training import train_gan
    data = DataConfig(dataset="synthetic_oct", image_size=32, oct_num_train=12,
                      oct_height=64, oct_width=64, patch_stride=16, roi="retina")
    md = str(tmp_path / "m")
    train_gan(CFG, data, TrainConfig(model_dir=md, batch_size=16, epochs=1,
                                     steps_per_epoch=40, g_lr=1e-3, d_lr=1e-3),
              verbose=0)
    cfg, g, d = load_model_dir(md)
    normal = load_images(data, "calibration")
    x = extract_patches(normal, 32, 16, 32, roi="retina").patches[:16]
    lesion = x.copy()
    lesion[:, 10:20, 10:20, :] = -1.0   # a dark, fluid-like pocket
    bright = x.copy()
    bright[:, 14:18, 14:18, :] = 1.0    # a hyperreflective focus
    mapper = LatentMapper(g, d, MappingParams.create(cfg, MappingConfig(steps=30)),
                          batch_size=16, jit_compile=False)
    a_normal = mapper.map(x, progress=False).anomaly_score
    a_lesion = mapper.map(lesion, progress=False).anomaly_score
    a_bright = mapper.map(bright, progress=False).anomaly_score
    assert a_lesion.mean() > a_normal.mean()
    assert a_bright.mean() > a_normal.mean()
    # Paired: most individual patches score higher with the lesion.
    assert np.mean(a_lesion > a_normal) >= 0.75


def test_zero_mapping_steps_is_refused_unless_the_mode_is_encoder():
    for mode in ("iterative", "hybrid"):
        with pytest.raises(ConfigError) as e:
            MappingConfig(steps=0, mode=mode)
        message = str(e.value)
        assert f"--mapping_steps=0 with --mode={mode}" in message
        assert "random z" in message and "--mode=encoder" in message
        assert MappingConfig(steps=1, mode=mode).steps == 1
    # Encoder mode takes no mapping steps: z = E(x).
    assert MappingConfig(steps=0, mode="encoder").steps == 0
    with pytest.raises(ConfigError, match=">= 0"):
        MappingConfig(steps=-1, mode="encoder")
