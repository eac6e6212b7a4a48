"""The reconstruction losses and anomaly scores, as pure functions on tensors.

The one home of this maths: the latent mapping (`mapping.latent`, in
process and in the exported graphs), the scorer, and the f-AnoGAN encoder
training (`training.encoder`) all import it from here, so training does not
depend on the mapping package. (`training.losses` holds the GAN's
adversarial losses, which only training uses.)

AnoGAN, Schlegl et al. 2017, sec. 2.2 (arXiv:1703.05921):

* Residual loss (eq. 3):        L_R(z) = sum |x - G(z)|
* Discrimination loss (eq. 4):  L_D(z) = sum |f(x) - f(G(z))|, f an
  intermediate feature layer of D (feature matching). The paper's reference
  variant instead uses the sigmoid cross-entropy of D(G(z)) against the
  "real" label, L_D = sigma(D(G(z)), 1).
* Mapping loss (eq. 5):         L(z) = (1 - lambda) L_R(z) + lambda L_D(z)
* Anomaly score (eq. 6):        A(x) = (1 - lambda) R(x) + lambda D(x), with
  R(x) and D(x) the two losses at the last mapping step z*.
* Squared residual (not in the paper; f-AnoGAN's and PCA's error norm):
  sum (x - G(z*))^2 at the same z*. It ranks one-class images better than the
  L1 sum (benchmarks/oneclass.py, BENCHMARKS.md).

f-AnoGAN, Schlegl et al. 2019, eqs. 7 and 8:

* izi_f loss: 1/n ||x - G(z)||^2 + kappa * 1/n_d ||f(x) - f(G(z))||^2 (n
  pixels x channels, n_d feature map entries), the encoder's training
  objective at z = E(x) and the encoder-mode anomaly score
  (`image_mse`, `feature_mse`, `izif_loss`, `izif_losses`).

Every function reduces over all axes but the batch axis and returns one
value per image, shape [N]: summing the batch loss gives each image its own
gradient, so images in a batch never influence each other.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "SCORE_KEYS",
    "residual_loss",
    "squared_residual",
    "feature_matching_loss",
    "bce_discrimination_loss",
    "weighted_score",
    "residual_map",
    "d_output_score",
    "image_mse",
    "feature_mse",
    "izif_loss",
    "izif_losses",
]

# The names of the three per-input scores these functions give (A(x), R(x),
# D(x); in encoder mode the izi_f score and its two terms), in the order
# every mapping output, signature and CSV lists them.
SCORE_KEYS = ("anomaly_score", "residual_score", "discrimination_score")


def _sum_per_sample(t):
    t = tf.reshape(t, [tf.shape(t)[0], -1])
    return tf.reduce_sum(t, axis=1)


def _mean_per_sample(t):
    t = tf.reshape(t, [tf.shape(t)[0], -1])
    return tf.reduce_mean(t, axis=1)


def residual_loss(x, generated):
    """R = sum over pixels and channels of |x - G(z)| (eq. 3). Returns [N]."""
    return _sum_per_sample(tf.abs(x - generated))


def squared_residual(x, generated):
    """sum over pixels and channels of (x - G(z))^2. Returns [N]."""
    return _sum_per_sample(tf.square(x - generated))


def feature_matching_loss(features_x, features_generated):
    """D = sum |f(x) - f(G(z))| over the feature map (eq. 4). Returns [N]."""
    return _sum_per_sample(tf.abs(features_x - features_generated))


def bce_discrimination_loss(generated_logits):
    """Sigmoid cross-entropy of D(G(z)) against label 1. Returns [N].

    -log sigmoid(l) = softplus(-l). This is the paper's reference variant of
    L_D (sec. 2.2): it rewards a G(z) that D finds real.
    """
    return tf.reshape(tf.nn.softplus(-generated_logits), [-1])


def weighted_score(residual, discrimination, lambda_weight):
    """(1 - lambda) * residual + lambda * discrimination (eqs. 5 and 6).

    The paper weights the *residual* by (1 - lambda); some summaries print
    "lambda R + D", which is not the paper's weighting.
    """
    return (1.0 - lambda_weight) * residual + lambda_weight * discrimination


def residual_map(x, generated):
    """The pixel-level anomaly map |x - G(z*)|, same shape as x."""
    return tf.abs(x - generated)


def d_output_score(query_logits):
    """1 - D(x) = sigmoid(-logit): the discriminator's own verdict on x. [N]."""
    return tf.reshape(tf.sigmoid(-query_logits), [-1])


def image_mse(x, generated):
    """1/n ||x - G(z)||^2, n = pixels x channels: izi_f's image term. [N]."""
    return _mean_per_sample(tf.square(x - generated))


def feature_mse(features_x, features_generated):
    """1/n_d ||f(x) - f(G(z))||^2 over the feature map: izi_f's feature
    term. Returns [N]."""
    return _mean_per_sample(tf.square(features_x - features_generated))


def izif_loss(image_term, feature_term, kappa):
    """image MSE + kappa * feature MSE (f-AnoGAN eqs. 7 and 8; kappa = 1)."""
    return image_term + kappa * feature_term


def izif_losses(generator, discriminator, x, fx, z):
    """The two terms of the izi_f loss at z, with G and D frozen.

    G and D are called with training=False; D needs a `features` method
    (the feature layer f).

    Args:
      x: Images [N, H, W, C].
      fx: f(x), D's features of x (computed once by the caller).
      z: Latent codes [N, latent_dim], e.g. E(x).

    Returns:
      (G(z) [N, H, W, C], image MSE [N], feature MSE [N]); combine the two
      with `izif_loss`.
    """
    gz = generator(z, training=False)
    fgz = discriminator.features(gz, training=False)
    return gz, image_mse(x, gz), feature_mse(fx, fgz)
