"""The files anogan-score and anogan-evaluate write, in one place.

scores.csv (one row per scored patch; DESIGN.md's column contract: id,
patch_y, patch_x, anomaly_score, residual_score, discrimination_score, then
extras), image_scores.csv (one row per image, with threshold and
is_anomalous when a threshold is known) and maps/<id>.npy + .png.
`write_score_files` is the only writer of the two CSVs.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, List, Optional, Tuple

import numpy as np

from anogan_tf.data import stitch_maps
from anogan_tf.losses import SCORE_KEYS
from anogan_tf.scoring import reports
from anogan_tf.scoring.scorer import ScoredImages

__all__ = ["patch_rows", "image_rows", "patch_columns", "image_columns",
           "write_score_files", "write_maps"]


def patch_rows(scored: ScoredImages, mode: str,
               p_values: Optional[np.ndarray] = None) -> List[Dict]:
    """scores.csv rows, one per scored model input (patch).

    `p_values` are per image; each patch row repeats its image's conformal
    p-value as "image_p_value" (patches are not calibrated on their own).
    """
    p, m, im = scored.patches, scored.mapping, scored.images
    rows = []
    for k in range(len(p.image_index)):
        i = int(p.image_index[k])
        row = {
            "id": im.ids[i],
            "patch_y": int(p.ys[k]) if p.patched else "",
            "patch_x": int(p.xs[k]) if p.patched else "",
            "anomaly_score": float(m.anomaly_score[k]),
            "residual_score": float(m.residual_score[k]),
            "discrimination_score": float(m.discrimination_score[k]),
            "mode": mode,
        }
        if im.labels is not None:
            row["label"] = int(im.labels[i])
        if p_values is not None:
            row["image_p_value"] = float(p_values[i])
        rows.append(row)
    return rows


def image_rows(scored: ScoredImages, threshold: Optional[float] = None,
               p_values: Optional[np.ndarray] = None) -> List[Dict]:
    """image_scores.csv rows, one per full image (aggregated).

    Args:
      scored: The scored images.
      threshold: The image-score threshold, when one is known: fills
        "threshold" and "is_anomalous" (and its older name
        "predicted_anomalous"), 1 where the image score is >= threshold,
        the rule of anogan-evaluate's metrics.
      p_values: [N] conformal p-values of the image scores ("p_value").

    Returns:
      One dict per image.
    """
    im = scored.images
    rows = []
    for i, image_id in enumerate(im.ids):
        row = {"id": image_id,
               "anomaly_score": float(scored.image_scores[i]),
               "residual_score": float(scored.image_residual[i]),
               "discrimination_score": float(scored.image_discrimination[i]),
               "num_patches": int(np.sum(scored.patches.image_index == i))}
        if im.labels is not None:
            row["label"] = int(im.labels[i])
        if im.categories is not None:
            row["category"] = im.categories[i]
        if threshold is not None:
            flagged = int(scored.image_scores[i] >= threshold)
            row["predicted_anomalous"] = flagged
            row["threshold"] = float(threshold)
            row["is_anomalous"] = flagged
        if p_values is not None:
            row["p_value"] = float(p_values[i])
        rows.append(row)
    return rows


def patch_columns(labelled: bool, with_p_values: bool) -> Tuple[str, ...]:
    """scores.csv's columns: the contract's six, then the extras."""
    return (reports.SCORE_COLUMNS +
            (("label",) if labelled else ()) +
            (("image_p_value",) if with_p_values else ()) + ("mode",))


def image_columns(labelled: bool, with_categories: bool, with_p_values: bool,
                  with_threshold: bool) -> Tuple[str, ...]:
    """image_scores.csv's columns ("predicted_anomalous" is the older name
    of "is_anomalous", kept for existing readers)."""
    return (("id",) + SCORE_KEYS + ("num_patches",) +
            (("label",) if labelled else ()) +
            (("category",) if with_categories else ()) +
            (("predicted_anomalous",) if with_threshold else ()) +
            (("p_value",) if with_p_values else ()) +
            (("threshold", "is_anomalous") if with_threshold else ()))


def write_score_files(output_dir: str, scored: ScoredImages, mode: str,
                      threshold: Optional[float] = None,
                      p_values: Optional[np.ndarray] = None
                      ) -> Dict[str, str]:
    """Writes scores.csv and image_scores.csv (atomically) into output_dir.

    Args:
      output_dir: Created if missing.
      scored: The scored images.
      mode: The mapping mode, repeated in scores.csv's "mode" column.
      threshold: The image-score threshold, when known ("threshold",
        "is_anomalous": image score >= threshold).
      p_values: [N] conformal p-values of the image scores.

    Returns:
      {"scores": path, "image_scores": path}.
    """
    os.makedirs(output_dir, exist_ok=True)
    im = scored.images
    labelled = im.labels is not None
    paths = {"scores": os.path.join(output_dir, "scores.csv"),
             "image_scores": os.path.join(output_dir, "image_scores.csv")}
    reports.write_csv(paths["scores"], patch_rows(scored, mode, p_values),
                      patch_columns(labelled, p_values is not None))
    reports.write_csv(paths["image_scores"],
                      image_rows(scored, threshold, p_values),
                      image_columns(labelled, im.categories is not None,
                                    p_values is not None,
                                    threshold is not None))
    return paths


def write_maps(output_dir: str, scored: ScoredImages, limit: int = 0) -> int:
    """Per-image full-resolution maps as .npy and PNG overlays.

    Each file is written atomically (`reports.atomic_write`): a killed run
    leaves complete maps and at most `<name>.tmp` files, never a partial
    file under a final name.
    """
    map_dir = os.path.join(output_dir, "maps")
    os.makedirs(map_dir, exist_ok=True)
    m = scored.mapping
    p = scored.patches
    count = 0
    for i, image_id in enumerate(scored.images.ids):
        if limit and count >= limit:
            break
        safe = image_id.replace(os.sep, "__").replace("/", "__")
        reports.write_npy(os.path.join(map_dir, f"{safe}.npy"),
                          scored.maps[i])
        if p.patched:
            recon = stitch_reconstruction(scored, i)
        else:
            recon = m.reconstruction[np.flatnonzero(p.image_index == i)[0]]
        reports.save_overlay(
            os.path.join(map_dir, f"{safe}.png"), scored.images.images[i],
            recon, scored.maps[i],
            title=f"{image_id}  A={scored.image_scores[i]:.2f}")
        count += 1
    return count


def stitch_reconstruction(scored: ScoredImages, i: int) -> np.ndarray:
    sel = np.flatnonzero(scored.patches.image_index == i)
    sub = dataclasses.replace(
        scored.patches, patches=scored.patches.patches[sel],
        image_index=np.zeros(len(sel), np.int32), ys=scored.patches.ys[sel],
        xs=scored.patches.xs[sel])
    recon = scored.mapping.reconstruction[sel]
    return stitch_maps(recon, sub, 1)[0]
