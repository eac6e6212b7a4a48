"""Polyphase stride-2 convolutions and the BN-folded frozen views of G and D.

Known answers: the phase forms against Keras' own Conv2D/Conv2DTranspose
layers (values, input gradients, kernel gradients, with and without XLA),
and the frozen views against the Keras models in inference mode with
non-trivial BatchNorm statistics.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from anogan_tf.config import ModelConfig
from anogan_tf.models import build_models
from anogan_tf.models import frozen
from anogan_tf.models import phase_conv

RNG = np.random.default_rng(7)


def _randn(*shape):
    return tf.constant(RNG.standard_normal(shape).astype(np.float32))


def _native_and_phase(kind, c_in, c_out):
    """(Keras layer, native fn(x, kernel), phase fn(x, kernel)) for `kind`."""
    if kind == "transposed":
        layer = keras.layers.Conv2DTranspose(c_out, 5, strides=2,
                                             padding="same", use_bias=False)

        def native(x, kernel):
            shape = [x.shape[0], 2 * x.shape[1], 2 * x.shape[2], c_out]
            return tf.nn.conv2d_transpose(x, kernel, shape, 2, "SAME")

        return layer, native, phase_conv.conv2d_transpose_s2
    layer = keras.layers.Conv2D(c_out, 5, strides=2, padding="same",
                                use_bias=False)
    return layer, lambda x, k: tf.nn.conv2d(x, k, 2, "SAME"), phase_conv.conv2d_s2


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("kind,c_in,c_out,size", [
    ("transposed", 8, 4, 4), ("transposed", 3, 5, 8), ("transposed", 1, 6, 16),
    ("conv", 4, 8, 8), ("conv", 1, 3, 16), ("conv", 6, 2, 4)])
def test_phase_form_matches_keras(jit, kind, c_in, c_out, size):
    """Values, input gradients and kernel gradients of the polyphase form
    equal Keras' stride-2 layer and TF's native op."""
    layer, native, phase = _native_and_phase(kind, c_in, c_out)
    x = _randn(2, size, size, c_in)
    expected = layer(x)
    dy = _randn(*expected.shape)
    kernel = tf.convert_to_tensor(layer.kernel)

    @tf.function(jit_compile=jit)
    def run(x, kernel):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, kernel])
            y = phase(x, kernel, "phase")
        return y, tape.gradient(y, x, dy), tape.gradient(y, kernel, dy)

    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, kernel])
        ref = native(x, kernel)
    y, dx, dk = run(x, kernel)
    np.testing.assert_allclose(y, expected, atol=1e-5)
    np.testing.assert_allclose(ref, expected, atol=1e-5)
    np.testing.assert_allclose(dx, tape.gradient(ref, x, dy), atol=1e-4)
    np.testing.assert_allclose(dk, tape.gradient(ref, kernel, dy), atol=1e-4)
    assert y.shape == expected.shape


def test_phase_kernels_reject_other_sizes_and_impls():
    with pytest.raises(ValueError, match="5x5"):
        phase_conv.conv_phase_kernel(tf.zeros([3, 3, 2, 2]))
    with pytest.raises(ValueError, match="native"):
        phase_conv.conv2d_s2(tf.zeros([1, 4, 4, 1]), tf.zeros([5, 5, 1, 1]),
                             "winograd")


def _models_with_bn_statistics(**overrides):
    """Tiny G and D whose BN layers have non-trivial gamma/beta/mean/var."""
    kwargs = dict(image_size=32, base_filters=4, latent_dim=8)
    kwargs.update(overrides)
    g, d = build_models(ModelConfig(**kwargs))
    for model in (g, d):
        for layer in model._flatten_layers():
            if isinstance(layer, keras.layers.BatchNormalization):
                n = layer.gamma.shape[0]
                layer.gamma.assign(RNG.uniform(0.5, 1.5, n).astype(np.float32))
                layer.beta.assign(RNG.normal(0, 0.3, n).astype(np.float32))
                layer.moving_mean.assign(RNG.normal(0, 0.2, n).astype(np.float32))
                layer.moving_variance.assign(
                    RNG.uniform(0.01, 0.2, n).astype(np.float32))
    return g, d


@pytest.mark.parametrize("conv_impl,xla", [("native", False), ("phase", False),
                                           ("auto", False), ("auto", True)])
def test_frozen_views_match_the_keras_models(conv_impl, xla):
    g, d = _models_with_bn_statistics(feature_layer=3)
    z = _randn(3, 8)
    x = tf.constant(RNG.uniform(-1, 1, (3, 32, 32, 1)).astype(np.float32))

    @tf.function(jit_compile=xla)
    def run(z, x):
        fg, fd = frozen.freeze(g, d, conv_impl, xla=xla)
        logits, features = fd.logits_and_features(x)
        return fg(z), logits, features, fd.features(x)

    gz, logits, features, features_only = run(z, x)
    ref_logits, ref_features = d.logits_and_features(x, training=False)
    np.testing.assert_allclose(gz, g(z, training=False), atol=2e-5)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(features, ref_features, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(features_only, ref_features, rtol=1e-4,
                               atol=1e-4)
    assert features.shape == (3, 4, 4, 16)


def test_frozen_discriminator_with_spectral_norm():
    g, d = _models_with_bn_statistics(spectral_norm=True)
    x = tf.constant(RNG.uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32))
    # One training call makes SpectralNormalization write its normalised
    # kernels; inference then uses them.
    d(x, training=True)
    fg, fd = frozen.freeze(g, d, "phase")
    ref_logits, ref_features = d.logits_and_features(x, training=False)
    logits, features = fd.logits_and_features(x)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(features, ref_features, rtol=1e-4, atol=1e-5)


def test_auto_policy_and_training_refused():
    assert frozen.choose_conv_impl("auto", 64, 128, xla=True) == "phase"
    assert frozen.choose_conv_impl("auto", 64, 128, xla=False) == "native"
    assert frozen.choose_conv_impl("auto", 1, 64, xla=False) == "phase"
    assert frozen.choose_conv_impl("native", 1, 64, xla=True) == "native"
    with pytest.raises(ValueError, match="auto"):
        frozen.choose_conv_impl("fast", 1, 1, xla=False)
    g, d = _models_with_bn_statistics()
    fg, _ = frozen.freeze(g, d)
    with pytest.raises(ValueError, match="training=False"):
        fg(tf.zeros([1, 8]), training=True)


def unit_scale_generator(g, rng):
    """Gives G variance-preserving weights and identity BN statistics, so its
    activations and output are O(1) as in a trained model (fresh N(0, 0.02)
    weights give outputs ~1e-5, too small to show precision effects)."""
    for layer in list(g.deconvs) + [g.to_image, g.project]:
        k = layer.kernel
        # A stride-2 5x5 transposed conv sums ~25/4 taps per input channel.
        fan_in = (k.shape[0] * k.shape[1] * k.shape[3] / 4 if len(k.shape) == 4
                  else k.shape[0])
        layer.kernel.assign(rng.normal(0, (1.0 / fan_in) ** 0.5,
                                       k.shape).astype(np.float32))
    for bn in [g.project_bn] + list(g.bns):
        n = bn.gamma.shape[0]
        bn.moving_mean.assign(np.zeros(n, np.float32))
        bn.moving_variance.assign(np.full(n, 0.5, np.float32))


def test_bfloat16_views_agree_with_float32():
    """Mixed precision: bf16 weights/activations, float32 in and out."""
    g, d = _models_with_bn_statistics()
    unit_scale_generator(g, RNG)
    z = _randn(4, 8)
    x = tf.constant(RNG.uniform(-1, 1, (4, 32, 32, 1)).astype(np.float32))
    f32 = frozen.freeze(g, d)
    bf16 = frozen.freeze(g, d, compute_dtype="bfloat16")
    assert bf16[0](z).dtype == tf.float32
    gz32, gz16 = f32[0](z), bf16[0](z)
    assert float(tf.reduce_max(tf.abs(gz32))) > 0.3
    assert not np.array_equal(gz16, gz32)  # really computed in bfloat16
    # bfloat16 keeps 8 bits of mantissa: ~0.4% per rounding.
    np.testing.assert_allclose(gz16, gz32, atol=0.03)
    l32, f32_features = f32[1].logits_and_features(x)
    l16, f16_features = bf16[1].logits_and_features(x)
    assert l16.dtype == tf.float32 and f16_features.dtype == tf.float32
    scale = float(tf.reduce_max(tf.abs(f32_features)))
    assert not np.array_equal(f16_features, f32_features)
    np.testing.assert_allclose(f16_features, f32_features, atol=0.03 * scale)
    with pytest.raises(ValueError, match="bfloat16"):
        frozen.freeze(g, d, compute_dtype="float16")
