"""GAN training losses as pure functions on logits.

Named `<kind>_generator_loss` / `<kind>_discriminator_loss` after TF-GAN. All
take logits of shape [N] or [N, 1] and return a scalar: the mean over the
batch.

* dcgan: the minimax objective of Goodfellow et al. (2014), which AnoGAN
  trains (Schlegl et al. 2017, eq. 1), with the usual non-saturating
  generator loss -log D(G(z)).
* wgan_gp: Gulrajani et al. (2017), critic loss E[D(G(z))] - E[D(x)] plus
  weight * E[(||grad D(x_hat)||_2 - 1)^2] at x_hat = a x + (1 - a) G(z),
  a ~ U(0, 1) per sample.
* hinge: Miyato et al. (2018) / Lim & Ye (2017).
* R1: Mescheder et al. (2018, "Which training methods for GANs do actually
  converge?", eq. 9), gamma / 2 * E[||grad_x D(x)||^2] on real images only;
  added to D's loss (usually the non-saturating dcgan loss, with a D
  without BatchNorm).
* mode seeking: Mao et al. (2019, MSGAN, eq. 3), a generator regulariser
  against mode collapse: 1 / (mean|G(z1) - G(z2)| / mean|z1 - z2| + eps),
  large when different codes give the same image.
"""

from __future__ import annotations

from typing import Callable

import tensorflow as tf

__all__ = [
    "dcgan_discriminator_loss",
    "dcgan_generator_loss",
    "wasserstein_discriminator_loss",
    "wasserstein_generator_loss",
    "hinge_discriminator_loss",
    "hinge_generator_loss",
    "gradient_penalty",
    "r1_penalty",
    "mode_seeking_loss",
    "GP_EPSILON",
    "MS_EPSILON",
]

GP_EPSILON = 1e-10
MS_EPSILON = 1e-5


def _flat(logits):
    return tf.reshape(tf.cast(logits, tf.float32), [-1])


def dcgan_discriminator_loss(real_logits, fake_logits):
    """-E[log D(x)] - E[log(1 - D(G(z)))], written with softplus for stability.

    -log sigmoid(l) = softplus(-l) and -log(1 - sigmoid(l)) = softplus(l).
    """
    return (tf.reduce_mean(tf.nn.softplus(-_flat(real_logits))) +
            tf.reduce_mean(tf.nn.softplus(_flat(fake_logits))))


def dcgan_generator_loss(fake_logits):
    """Non-saturating generator loss -E[log D(G(z))] = E[softplus(-l)]."""
    return tf.reduce_mean(tf.nn.softplus(-_flat(fake_logits)))


def wasserstein_discriminator_loss(real_logits, fake_logits):
    """Critic loss E[D(G(z))] - E[D(x)] (without the gradient penalty)."""
    return tf.reduce_mean(_flat(fake_logits)) - tf.reduce_mean(_flat(real_logits))


def wasserstein_generator_loss(fake_logits):
    """Generator loss -E[D(G(z))]."""
    return -tf.reduce_mean(_flat(fake_logits))


def hinge_discriminator_loss(real_logits, fake_logits):
    """E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]."""
    return (tf.reduce_mean(tf.nn.relu(1.0 - _flat(real_logits))) +
            tf.reduce_mean(tf.nn.relu(1.0 + _flat(fake_logits))))


def hinge_generator_loss(fake_logits):
    """-E[D(G(z))]."""
    return -tf.reduce_mean(_flat(fake_logits))


def gradient_penalty(critic: Callable, real, fake, alpha):
    """WGAN-GP penalty E[(||grad_x_hat critic(x_hat)||_2 - 1)^2].

    Args:
      critic: Maps images [N, H, W, C] to logits [N] or [N, 1].
      real, fake: Images [N, H, W, C].
      alpha: Interpolation weights [N], drawn from U(0, 1) by the caller.

    Returns:
      The scalar penalty (multiply by the penalty weight, 10 in the paper).
      The norm is sqrt(sum g^2 + eps) so its gradient stays finite at 0.
    """
    alpha = tf.reshape(tf.cast(alpha, real.dtype), [-1, 1, 1, 1])
    x_hat = alpha * real + (1.0 - alpha) * fake
    with tf.GradientTape() as tape:
        tape.watch(x_hat)
        out = tf.reduce_sum(critic(x_hat))
    grads = tape.gradient(out, x_hat)
    norms = tf.sqrt(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]) + GP_EPSILON)
    return tf.reduce_mean(tf.square(norms - 1.0))


def r1_penalty(critic: Callable, real):
    """R1 gradient penalty E[||grad_x critic(x)||_2^2] on real images.

    Mescheder et al. (2018), eq. 9: the regulariser is gamma / 2 times this
    value (the caller multiplies). It penalises D's slope on the data only,
    which keeps the non-saturating GAN near its equilibrium without the
    interpolates and the unit-norm target of WGAN-GP.

    Args:
      critic: Maps images [N, H, W, C] to logits [N] or [N, 1].
      real: Real images [N, H, W, C].

    Returns:
      The scalar mean over the batch of the squared gradient norms.
    """
    real = tf.convert_to_tensor(real)
    with tf.GradientTape() as tape:
        tape.watch(real)
        out = tf.reduce_sum(critic(real))
    grads = tape.gradient(out, real)
    return tf.reduce_mean(tf.reduce_sum(tf.square(grads), axis=[1, 2, 3]))


def mode_seeking_loss(fake_a, fake_b, z_a, z_b):
    """MSGAN's mode-seeking term 1 / (d_I / d_z + eps) (Mao et al. 2019).

    d_I = mean |G(z_a) - G(z_b)| over all pixels of the pairs and
    d_z = mean |z_a - z_b|: the ratio is how far apart two codes land per
    unit of latent distance, and it is 0 for a G that ignores z, where the
    loss is 1 / eps (its gradient then pushes the pairs apart).

    Args:
      fake_a, fake_b: Generated images [N, H, W, C] for codes z_a, z_b.
      z_a, z_b: The codes [N, latent_dim].

    Returns:
      The scalar loss (multiply by the regulariser weight).
    """
    d_image = tf.reduce_mean(tf.abs(tf.cast(fake_a, tf.float32) -
                                    tf.cast(fake_b, tf.float32)))
    d_latent = tf.reduce_mean(tf.abs(tf.cast(z_a, tf.float32) -
                                     tf.cast(z_b, tf.float32)))
    return 1.0 / (d_image / d_latent + MS_EPSILON)
