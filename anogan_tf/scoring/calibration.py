"""Split-conformal calibration of anomaly scores: p-values and thresholds.

Held-out normal images (never used in training) give calibration scores
c_1..c_n. When a test image is normal and exchangeable with them, its rank
among the n + 1 scores is uniform, which gives

  p(s) = (1 + #{i : c_i >= s}) / (n + 1)

a valid p-value for "s is a normal score": P(p <= alpha) <= alpha for every
alpha in (0, 1), with no assumption on the score distribution. Flagging
p <= alpha is the same as flagging s >= t for the threshold t returned by
`conformal_threshold` (for tie-free scores), so the false-positive rate on
normal data is at most alpha (marginally, over the draw of calibration and
test data).

References:
  V. Vovk, A. Gammerman, G. Shafer. Algorithmic Learning in a Random World.
    Springer, 2005 (conformal prediction, split/inductive variant).
  S. Bates, E. Candes, L. Lei, Y. Romano, M. Sesia. Testing for outliers with
    conformal p-values. Annals of Statistics 51(1), 2023 (eq. (2): the
    marginal conformal p-value used here).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["conformal_p_values", "conformal_threshold",
           "min_calibration_size"]

# (n + 1) * alpha is compared with integers; this absorbs float rounding
# such as 6 * (1 / 3) == 1.9999999999999998.
_EPS = 1e-9


def _calibration_array(calibration_scores) -> np.ndarray:
    c = np.asarray(calibration_scores, np.float64).reshape(-1)
    if not len(c):
        raise ValueError("No calibration scores: conformal calibration needs "
                         "scores of held-out normal images.")
    if not np.all(np.isfinite(c)):
        bad = int(np.sum(~np.isfinite(c)))
        raise ValueError(
            f"{bad} of {len(c)} calibration scores are NaN or infinite; "
            f"calibration scores must be finite (drop images without scored "
            f"patches, e.g. outside the ROI).")
    return c


def _check_alpha(target_fpr: float) -> float:
    alpha = float(target_fpr)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr!r}.")
    return alpha


def conformal_p_values(calibration_scores, scores) -> np.ndarray:
    """Split-conformal p-values (1 + #{c_i >= s}) / (n + 1).

    Args:
      calibration_scores: [n] anomaly scores of held-out normal images.
      scores: [M] (or any shape) anomaly scores to calibrate; larger means
        more anomalous.

    Returns:
      float64 p-values with the shape of `scores`, in [1/(n+1), 1]; NaN
      where the score is NaN. Ties count as "at least as anomalous", which
      keeps the p-values valid (super-uniform) when scores repeat.

    Raises:
      ValueError: no calibration scores, or a non-finite one.
    """
    c = np.sort(_calibration_array(calibration_scores))
    s = np.asarray(scores, np.float64)
    n = len(c)
    # #{c_i >= s} = n - #{c_i < s}; searchsorted(side="left") counts c_i < s.
    at_least = n - np.searchsorted(c, s.reshape(-1), side="left")
    p = ((1.0 + at_least) / (n + 1.0)).reshape(s.shape)
    return np.where(np.isnan(s), np.nan, p)


def min_calibration_size(target_fpr: float) -> int:
    """The fewest calibration scores with which FPR <= target_fpr is possible.

    The smallest p-value is 1/(n+1), so p <= alpha can only happen when
    (n + 1) * alpha >= 1, i.e. n >= 1/alpha - 1.
    """
    alpha = _check_alpha(target_fpr)
    return max(1, math.ceil(1.0 / alpha - 1.0 - _EPS))


def conformal_threshold(calibration_scores, target_fpr: float) -> float:
    """The conformal threshold for a target false-positive rate alpha.

    Returns t = the k-th smallest calibration score, k = ceil((n+1)(1-alpha)).
    Flagging s >= t then has false-positive rate m / (n + 1) <= alpha on
    normal data exchangeable with the calibration data, m = floor((n+1)alpha)
    (and >= alpha - 1/(n+1)); it is the smallest calibration score with that
    guarantee, and the same decision as conformal p-value <= alpha unless a
    test score ties t exactly (probability 0 for continuous scores).

    Args:
      calibration_scores: [n] anomaly scores of held-out normal images.
      target_fpr: alpha in (0, 1).

    Returns:
      The threshold (score >= threshold -> anomalous).

    Raises:
      ValueError: alpha is not in (0, 1), the scores are empty or not
        finite, or (n + 1) * alpha < 1 (too few calibration images; the
        message says how many are needed).
    """
    alpha = _check_alpha(target_fpr)
    c = np.sort(_calibration_array(calibration_scores))
    n = len(c)
    m = math.floor((n + 1) * alpha + _EPS)
    if m < 1:
        raise ValueError(
            f"A target FPR of {alpha:g} needs at least "
            f"{min_calibration_size(alpha)} calibration images ((n + 1) * "
            f"target_fpr >= 1), got n = {n}. Add held-out normal images "
            f"(--calibration_data) or raise --target_fpr.")
    k = n + 1 - m  # == ceil((n + 1) * (1 - alpha)), 1 <= k <= n
    return float(c[k - 1])
