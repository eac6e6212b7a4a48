"""Image- and pixel-level metrics and threshold rules (scikit-learn based)."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np
from sklearn import metrics as skm

__all__ = ["aggregate_patch_scores", "choose_threshold", "image_metrics",
           "pixel_metrics"]


def aggregate_patch_scores(scores: np.ndarray, image_index: np.ndarray,
                           num_images: int, how: str = "max",
                           topk: int = 3) -> np.ndarray:
    """Image score from its patches' scores.

    Args:
      scores: [P] patch scores.
      image_index: [P] image of each patch.
      num_images: N.
      how: "max", "mean" or "topk_mean" (mean of the k highest).
      topk: k for topk_mean (fewer patches: all of them).

    Returns:
      float64 [N]; NaN for an image without patches.
    """
    out = np.full(num_images, np.nan)
    scores = np.asarray(scores, np.float64)
    for i in range(num_images):
        s = scores[image_index == i]
        if not len(s):
            continue
        if how == "max":
            out[i] = s.max()
        elif how == "mean":
            out[i] = s.mean()
        elif how == "topk_mean":
            out[i] = np.sort(s)[-topk:].mean()
        else:
            raise ValueError(f"aggregate must be max|mean|topk_mean, got {how!r}.")
    return out


def choose_threshold(rule: str, labels: np.ndarray, scores: np.ndarray,
                     normal_scores: Optional[np.ndarray] = None,
                     percentile: float = 95.0) -> float:
    """The decision threshold (score >= threshold -> anomalous).

    Rules:
      percentile: the `percentile`-th percentile of the scores of held-out
        normal validation images (`normal_scores`); the test labels are not
        used, so the test metrics stay honest.
      youden: the ROC point maximising sensitivity + specificity - 1 on the
        labelled data (optimistic: it looks at the test labels).
    """
    if rule == "percentile":
        if normal_scores is None or not len(normal_scores):
            raise ValueError("The percentile rule needs scores of normal "
                             "validation images.")
        return float(np.percentile(normal_scores, percentile))
    if rule == "youden":
        fpr, tpr, thr = skm.roc_curve(labels, scores)
        best = int(np.argmax(tpr - fpr))
        return float(min(thr[best], np.max(scores)))
    raise ValueError(f"threshold_rule must be percentile|youden, got {rule!r}.")


def image_metrics(labels: np.ndarray, scores: np.ndarray,
                  threshold: float) -> Dict[str, float]:
    """AUROC, AUPRC, sensitivity and specificity at `threshold`.

    Raises:
      ValueError: labels do not contain both classes.
    """
    labels = np.asarray(labels).astype(int)
    scores = np.asarray(scores, np.float64)
    if len(np.unique(labels)) < 2:
        raise ValueError(
            f"Image metrics need normal and anomalous test images; got only "
            f"label(s) {sorted(set(labels.tolist()))}. Raise --num_test or use "
            f"a labelled test set.")
    pred = scores >= threshold
    pos = labels == 1
    return {
        "image_auroc": float(skm.roc_auc_score(labels, scores)),
        "image_auprc": float(skm.average_precision_score(labels, scores)),
        "sensitivity": float(pred[pos].mean()),
        "specificity": float((~pred[~pos]).mean()),
    }


def pixel_metrics(masks: np.ndarray, maps: np.ndarray,
                  max_pixels: int = 4_000_000, seed: int = 0,
                  valid: Optional[np.ndarray] = None) -> Dict[str, float]:
    """Pixel AUROC/AUPRC of anomaly maps against ground-truth masks.

    All pixels count (also those no patch covered, which score 0), except
    those outside `valid` (acquisition artefacts such as padding, which
    carry no tissue). Above `max_pixels` a fixed random subsample keeps
    memory bounded.

    Args:
      masks: [N, H, W] ground truth (> 0: anomalous).
      maps: [N, H, W] anomaly maps.
      max_pixels: Subsample above this many pixels.
      seed: Seed of the subsample.
      valid: Optional bool [N, H, W]; False pixels are left out.

    Returns:
      {"pixel_auroc", "pixel_auprc"}, or {} when the counted pixels hold
      only one class.

    Raises:
      ValueError: the shapes differ.
    """
    y = (np.asarray(masks) > 0).reshape(-1)
    s = np.asarray(maps, np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"masks {np.shape(masks)} and maps {np.shape(maps)} "
                         f"differ in shape.")
    if valid is not None:
        keep = np.asarray(valid, bool).reshape(-1)
        if keep.shape != y.shape:
            raise ValueError(f"valid {np.shape(valid)} and masks "
                             f"{np.shape(masks)} differ in shape.")
        y, s = y[keep], s[keep]
    if y.all() or not y.any():
        return {}
    if len(y) > max_pixels:
        idx = np.random.default_rng(seed).choice(len(y), max_pixels, replace=False)
        y, s = y[idx], s[idx]
    return {"pixel_auroc": float(skm.roc_auc_score(y, s)),
            "pixel_auprc": float(skm.average_precision_score(y, s))}
