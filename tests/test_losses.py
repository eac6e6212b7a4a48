"""Hand-checked values of the mapping and GAN losses."""

import math

import numpy as np
import pytest
import tensorflow as tf

from anogan_tf import losses as ml
from anogan_tf.training import losses as gl


def test_residual_loss_sums_absolute_differences_per_image():
    x = np.zeros((2, 2, 2, 1), np.float32)
    g = np.zeros((2, 2, 2, 1), np.float32)
    x[0, 0, 0, 0], g[0, 1, 1, 0] = 0.5, -0.25   # |0.5| + |0.25| = 0.75
    x[1] = 1.0                                   # 4 pixels * |1 - 0| = 4
    np.testing.assert_allclose(ml.residual_loss(x, g), [0.75, 4.0])


def test_feature_matching_loss_and_weighted_score():
    fx = tf.constant([[[[1.0, 2.0]]], [[[0.0, 0.0]]]])
    fg = tf.constant([[[[0.0, 4.0]]], [[[-3.0, 0.0]]]])
    d = ml.feature_matching_loss(fx, fg)
    np.testing.assert_allclose(d, [3.0, 3.0])
    # The paper: A = (1 - lambda) R + lambda D, NOT lambda R + D.
    a = ml.weighted_score(tf.constant([10.0, 0.0]), d, 0.1)
    np.testing.assert_allclose(a, [0.9 * 10 + 0.1 * 3, 0.1 * 3], rtol=1e-6)


def test_bce_and_d_output_scores():
    logits = tf.constant([[0.0], [2.0]])
    np.testing.assert_allclose(ml.bce_discrimination_loss(logits),
                               [math.log(2.0), math.log1p(math.exp(-2.0))],
                               rtol=1e-6)
    np.testing.assert_allclose(ml.d_output_score(logits),
                               [0.5, 1.0 / (1.0 + math.exp(2.0))], rtol=1e-6)


def test_residual_map_is_elementwise_absolute_difference():
    x = tf.constant([[[[1.0], [-1.0]]]])
    g = tf.constant([[[[0.5], [0.5]]]])
    np.testing.assert_allclose(ml.residual_map(x, g), [[[[0.5], [1.5]]]])


def test_dcgan_losses_known_values():
    # D(x) = sigmoid(0) = 0.5 for both: -log .5 - log .5 = 2 log 2.
    z = tf.zeros([4, 1])
    assert gl.dcgan_discriminator_loss(z, z).numpy() == pytest.approx(
        2 * math.log(2.0), rel=1e-6)
    assert gl.dcgan_generator_loss(tf.constant([1.0, -1.0])).numpy() == \
        pytest.approx((math.log1p(math.exp(-1)) + math.log1p(math.exp(1))) / 2,
                      rel=1e-6)


def test_wasserstein_and_hinge_known_values():
    real = tf.constant([1.0, 3.0])
    fake = tf.constant([-1.0, 0.5])
    assert gl.wasserstein_discriminator_loss(real, fake).numpy() == \
        pytest.approx(-0.25 - 2.0)
    assert gl.wasserstein_generator_loss(fake).numpy() == pytest.approx(0.25)
    # relu(1-1)+relu(1-3) = 0 ; relu(1-1)+relu(1+.5) = 1.5 -> means 0 + .75
    assert gl.hinge_discriminator_loss(real, fake).numpy() == pytest.approx(0.75)
    assert gl.hinge_generator_loss(fake).numpy() == pytest.approx(0.25)


def test_gradient_penalty_matches_analytic_norm():
    # A linear critic D(x) = sum(w * x) has gradient w everywhere, so the
    # penalty is (||w|| - 1)^2 whatever the interpolation.
    w = tf.constant(np.full((1, 2, 2, 1), 1.5, np.float32))  # ||w|| = 3
    critic = lambda x: tf.reduce_sum(w * x, axis=[1, 2, 3])  # noqa: E731
    real = tf.random.normal([3, 2, 2, 1], seed=1)
    fake = tf.random.normal([3, 2, 2, 1], seed=2)
    gp = gl.gradient_penalty(critic, real, fake, tf.constant([0.0, 0.3, 1.0]))
    assert gp.numpy() == pytest.approx(4.0, rel=1e-5)
    # Unit-norm gradient -> zero penalty, and a finite gradient at a zero
    # gradient (the epsilon inside the square root).
    unit = lambda x: tf.reduce_sum(0.5 * x, axis=[1, 2, 3])  # noqa: E731
    assert gl.gradient_penalty(unit, real, fake, tf.ones([3])).numpy() == \
        pytest.approx(0.0, abs=1e-6)


def test_mode_seeking_loss_known_answer_and_collapse():
    # Pairs 0.5 apart per pixel for codes 0.25 apart: ratio 2 -> 1 / (2 + eps).
    a = tf.zeros([2, 4, 4, 1])
    b = tf.fill([2, 4, 4, 1], 0.5)
    za = tf.zeros([2, 3])
    zb = tf.fill([2, 3], 0.25)
    got = float(gl.mode_seeking_loss(a, b, za, zb))
    assert got == pytest.approx(1.0 / (2.0 + gl.MS_EPSILON))
    # A G that ignores z (identical pairs) gets the largest loss, 1 / eps,
    # and its gradient pushes the pair apart.
    same = tf.Variable(tf.fill([2, 4, 4, 1], 0.1))
    other = tf.Variable(tf.fill([2, 4, 4, 1], 0.1 + 1e-6))
    with tf.GradientTape() as tape:
        loss = gl.mode_seeking_loss(same, other, za, zb)
    assert float(loss) > 0.9 / gl.MS_EPSILON * 0.25
    grad = tape.gradient(loss, other)
    assert float(tf.reduce_sum(grad)) < 0  # increasing `other` lowers it


def test_squared_residual_known_answer_and_score_selection():
    x = np.zeros((2, 2, 2, 1), np.float32)
    g = np.zeros((2, 2, 2, 1), np.float32)
    x[0, 0, 0, 0], g[0, 1, 1, 0] = 0.5, -0.25   # 0.25 + 0.0625
    x[1] = 1.0                                   # 4 pixels * 1
    np.testing.assert_allclose(ml.squared_residual(x, g), [0.3125, 4.0])
    from anogan_tf.mapping import latent
    r, d, a, logits = (tf.constant([1.0, 2.0]), tf.constant([3.0, 4.0]),
                       tf.constant([5.0, 6.0]), tf.constant([[0.0], [0.0]]))
    sq = ml.squared_residual(x, g)
    np.testing.assert_allclose(
        latent.select_score("residual_sq", r, d, a, logits, sq), [0.3125, 4.0])
    np.testing.assert_allclose(
        latent.select_score("anogan", r, d, a, logits, sq), [5.0, 6.0])


def test_r1_penalty_matches_analytic_squared_norm():
    # A linear critic D(x) = sum(w * x) has gradient w on every real image,
    # so E||grad||^2 = ||w||^2 = 4 * 1.5^2 = 9 (no square root, no target 1).
    w = tf.constant(np.full((1, 2, 2, 1), 1.5, np.float32))
    critic = lambda x: tf.reduce_sum(w * x, axis=[1, 2, 3])  # noqa: E731
    real = tf.random.normal([3, 2, 2, 1], seed=1)
    assert float(gl.r1_penalty(critic, real)) == pytest.approx(9.0, rel=1e-5)
    # A quadratic critic sum(x^2) has gradient 2x: the mean of 4 * sum(x^2).
    quad = lambda x: tf.reduce_sum(tf.square(x), axis=[1, 2, 3])  # noqa: E731
    expected = np.mean(4.0 * np.sum(np.square(real.numpy()), axis=(1, 2, 3)))
    assert float(gl.r1_penalty(quad, real)) == pytest.approx(expected,
                                                             rel=1e-5)
