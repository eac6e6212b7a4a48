"""The AnoGAN mapping losses and anomaly score, as pure functions on tensors.

Schlegl et al. 2017, sec. 2.2 (arXiv:1703.05921):

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

Every function reduces over all axes but the batch axis and returns one
value per image, shape [N]: summing the batch loss gives each image its own
gradient, so images in a batch never influence each other.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = [
    "residual_loss",
    "squared_residual",
    "feature_matching_loss",
    "bce_discrimination_loss",
    "weighted_score",
    "residual_map",
    "d_output_score",
]


def _sum_per_sample(t):
    t = tf.reshape(t, [tf.shape(t)[0], -1])
    return tf.reduce_sum(t, axis=1)


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
