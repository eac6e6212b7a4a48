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

Small calibration sets. The guarantee holds for any n, but what a rule
means changes with n: with n scores the smallest p-value is 1/(n+1), so no
threshold can promise an FPR below 1/(n+1), and the realised FPR of one
calibration set scatters widely (`calibration_warning` spells this out for
n < `MIN_RELIABLE_CALIBRATION`; `check_target_fpr` refuses a target FPR n
cannot support).

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
           "min_calibration_size", "smallest_fpr", "percentile_expected_fpr",
           "conformal_fpr_spread", "calibration_warning", "check_target_fpr",
           "MIN_RELIABLE_CALIBRATION", "CalibrationError"]

# Below this many calibration images every threshold comes with a warning.
MIN_RELIABLE_CALIBRATION = 20


class CalibrationError(ValueError):
    """Too few calibration scores for the requested rule; the message says
    the smallest achievable FPR and how many normal images are needed."""

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
      ValueError: alpha is not in (0, 1), or the scores are empty or not
        finite.
      CalibrationError: (n + 1) * alpha < 1 (too few calibration images;
        the message gives the smallest achievable FPR and how many are
        needed).
    """
    alpha = _check_alpha(target_fpr)
    c = np.sort(_calibration_array(calibration_scores))
    n = len(c)
    check_target_fpr(alpha, n)
    m = math.floor((n + 1) * alpha + _EPS)
    k = n + 1 - m  # == ceil((n + 1) * (1 - alpha)), 1 <= k <= n
    return float(c[k - 1])


def smallest_fpr(n: int) -> float:
    """1 / (n + 1): the smallest p-value, hence the lowest FPR any threshold
    from n calibration scores can promise."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}.")
    return 1.0 / (n + 1)


def percentile_expected_fpr(n: int, percentile: float) -> float:
    """About how often a new normal image reaches np.percentile(c, q).

    np.percentile interpolates linearly between order statistics, at
    position (n - 1) q / 100 (0-based) of the sorted scores. A new
    exchangeable score exceeds the j-th smallest of n (1-based) with
    probability (n + 1 - j) / (n + 1); interpolating between the two
    neighbouring order statistics gives (n - (n - 1) q / 100) / (n + 1). It
    tends to 1 - q / 100 for large n, and is 1/(n+1) at best: for n = 2 and
    q = 95 the "95th percentile" sits 95% of the way from the lower to the
    higher of the two scores (essentially their maximum) and about 35% of
    normal images reach it, not 5%.

    Args:
      n: Number of calibration scores, >= 1.
      percentile: q in [0, 100].

    Returns:
      The approximate expected false-positive rate, in [1/(n+1), 1].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    if not 0.0 <= percentile <= 100.0:
        raise ValueError(f"percentile must be in [0, 100], got {percentile}.")
    position = (n - 1) * percentile / 100.0
    return float(min(1.0, max(smallest_fpr(n),
                              (n - position) / (n + 1.0))))


def conformal_fpr_spread(n: int, target_fpr: float) -> tuple:
    """(mean, sd) of the FPR that one calibration set of n scores yields
    with the conformal threshold.

    Given the calibration set, the FPR of the k-th smallest of n scores is
    Beta(n + 1 - k, k) distributed (k = n + 1 - m, m = floor((n+1) alpha)),
    with mean m / (n + 1) and variance m (n + 1 - m) / ((n + 1)^2 (n + 2)).

    Raises:
      CalibrationError: (n + 1) alpha < 1.
    """
    check_target_fpr(target_fpr, n)
    m = math.floor((n + 1) * target_fpr + _EPS)
    mean = m / (n + 1.0)
    var = m * (n + 1.0 - m) / ((n + 1.0) ** 2 * (n + 2.0))
    return float(mean), float(math.sqrt(var))


def check_target_fpr(target_fpr: float, n: int,
                     flag: str = "--target_fpr") -> None:
    """Refuses a target FPR that n calibration scores cannot support.

    Args:
      target_fpr: alpha in (0, 1).
      n: Number of calibration scores.
      flag: How the caller names the setting in the message.

    Raises:
      CalibrationError: (n + 1) alpha < 1. The message gives the smallest
        achievable FPR, 1/(n+1), and the number of normal images needed,
        ceil(1/alpha) - 1.
    """
    alpha = _check_alpha(target_fpr)
    need = min_calibration_size(alpha)
    if n >= need:
        return
    smallest = smallest_fpr(n)
    raise CalibrationError(
        f"{flag}={alpha:g} needs at least {need} calibration images "
        f"((n + 1) * target_fpr >= 1), got {n}. With {n} normal "
        f"calibration images the smallest achievable false-positive rate "
        f"is 1/(n+1) = {smallest:.3g}: a threshold cannot promise less. "
        f"Add {need - n} more held-out normal images (--calibration_data, "
        f"or a larger --calibration_fraction for an MVTec AD folder), or "
        f"pass {flag} >= {smallest:.3g}.")


def calibration_warning(n: int, rule: str, percentile: float = 95.0,
                        target_fpr: float = 0.0) -> str:
    """What a threshold from n < MIN_RELIABLE_CALIBRATION scores means.

    Args:
      n: Number of calibration scores.
      rule: "percentile" or "conformal" (the rule that used them).
      percentile: q of the percentile rule.
      target_fpr: alpha of the conformal rule.

    Returns:
      "" when n >= MIN_RELIABLE_CALIBRATION, else a warning for the log
      and metrics.json.
    """
    if n >= MIN_RELIABLE_CALIBRATION:
        return ""
    head = (f"Only {n} normal image(s) calibrate the threshold (fewer than "
            f"{MIN_RELIABLE_CALIBRATION}).")
    tail = (f" p-values come in steps of 1/(n+1) = {smallest_fpr(n):.3g}. "
            f"Add held-out normal images (--calibration_data, or a larger "
            f"--calibration_fraction for an MVTec AD folder).")
    if rule == "percentile":
        fpr = percentile_expected_fpr(max(n, 1), percentile)
        position = (max(n, 1) - 1) * percentile / 100.0
        j = int(math.floor(position))
        where = (f"is the single score" if n <= 1 else
                 f"is the {_ordinal(j + 1)} smallest of the {n} scores" +
                 (" (their maximum)" if j + 1 == n else "")
                 if position == j else
                 f"lies {position - j:.0%} of the way from the "
                 f"{_ordinal(j + 1)} to the {_ordinal(j + 2)} smallest of the "
                 f"{n} scores" + (" (essentially their maximum)"
                                  if j + 2 == n and position - j >= 0.9
                                  else ""))
        rate = 1.0 - percentile / 100.0
        advice = ""
        overshoots = fpr > rate + 0.005
        if rate > 0 and overshoots:
            need = min_calibration_size(rate)
            advice = (f" A rate of {rate:.3g} needs at least {need} normal "
                      f"images; --target_fpr={rate:.3g} then holds it "
                      f"(conformal), where this percentile overshoots it.")
        return (f"{head} The \"{percentile:g}th percentile\" {where}, so "
                f"about {fpr:.0%} of new normal images will be flagged"
                f"{f', not {100 - percentile:g}%' if overshoots else ''} "
                f"(1/(n+1) = {smallest_fpr(n):.0%} at best).{advice}" + tail)
    mean, sd = conformal_fpr_spread(n, target_fpr)
    return (f"{head} The conformal threshold keeps the false-positive rate "
            f"at {mean:.3g} <= {target_fpr:g} on average over calibration "
            f"sets, but for this one set it is a Beta draw with sd {sd:.2g}: "
            f"the realised rate may well be anywhere in "
            f"[{max(0.0, mean - 2 * sd):.2g}, {min(1.0, mean + 2 * sd):.2g}]."
            + tail)


def _ordinal(k: int) -> str:
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(
        k % 10, "th")
    return f"{k}{suffix}"
