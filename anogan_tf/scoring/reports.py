"""Readable results: scores.csv, metrics.json and PNG plots and map grids.

Column contract of scores.csv (DESIGN.md): id, patch_y, patch_x,
anomaly_score, residual_score, discrimination_score, then optional extras.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
from typing import Dict, Iterable, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics as skm  # noqa: E402

from anogan_tf.losses import SCORE_KEYS  # noqa: E402
from anogan_tf.model_dir import disk_full_errors  # noqa: E402

__all__ = ["SCORE_COLUMNS", "atomic_write", "write_csv", "write_json",
           "write_npy", "plot_roc", "plot_pr", "plot_score_hist",
           "save_overlay", "save_anomaly_map_grid", "summary_table"]

# scores.csv's contract columns (DESIGN.md).
SCORE_COLUMNS = ("id", "patch_y", "patch_x") + SCORE_KEYS


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w"):
    """Opens `path + ".tmp"` for writing; renames it to `path` on success.

    A reader (or a run killed mid-write, kill -9 included) never finds a
    partial file under `path`: it holds the previous file or the complete
    new one. On an error the temp file is removed and the error raised.

    Args:
      path: The final file name (its folder is created if missing).
      mode: "w" (text, newline="" for csv) or "wb".

    Raises:
      ConfigError: the disk is full (the message names the folder).
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    try:
        with disk_full_errors(folder, os.path.basename(path), "--output_dir"):
            os.makedirs(folder, exist_ok=True)
            with open(tmp, mode,
                      **({} if "b" in mode else {"newline": ""})) as f:
                yield f
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_csv(path: str, rows: Iterable[Dict], columns: Sequence[str]) -> str:
    """Writes rows (dicts) with `columns` first; floats with full precision."""
    with atomic_write(path) as f:
        w = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore")
        w.writeheader()
        for row in rows:
            w.writerow({k: (repr(float(v)) if isinstance(v, (float, np.floating))
                            else v) for k, v in row.items()})
    return path


def write_json(path: str, data: Dict) -> str:
    with atomic_write(path) as f:
        json.dump(data, f, indent=2, sort_keys=True, allow_nan=True)
        f.write("\n")
    return path


def write_npy(path: str, array) -> str:
    """np.save, atomically (see `atomic_write`)."""
    # Through a buffer: NumPy's own file write reports a full disk as a
    # short write without errno ("65536 requested and 16352 written").
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    with atomic_write(path, "wb") as f:
        f.write(buffer.getbuffer())
    return path


def _save(fig, path):
    try:
        with atomic_write(path, "wb") as f:
            fig.savefig(f, format=os.path.splitext(path)[1][1:] or "png",
                        dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_roc(path: str, labels, scores, title: str = "") -> str:
    fpr, tpr, _ = skm.roc_curve(labels, scores)
    auc = skm.roc_auc_score(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUROC {auc:.3f}")
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.set(xlabel="false positive rate", ylabel="true positive rate",
           title=title or "ROC (image level)")
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(path: str, labels, scores, title: str = "") -> str:
    prec, rec, _ = skm.precision_recall_curve(labels, scores)
    ap = skm.average_precision_score(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(rec, prec, label=f"AUPRC {ap:.3f}")
    ax.axhline(np.mean(labels), color="k", ls=":", lw=0.8, label="chance")
    ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02),
           title=title or "Precision-recall (image level)")
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_score_hist(path: str, labels, scores, threshold: Optional[float],
                    title: str = "") -> str:
    labels = np.asarray(labels)
    scores = np.asarray(scores)
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    bins = np.histogram_bin_edges(scores, bins=30)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="anomalous")
    if threshold is not None and math.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", lw=1, label="threshold")
    ax.set(xlabel="anomaly score", ylabel="images",
           title=title or "Anomaly scores")
    ax.legend()
    return _save(fig, path)


def _gray(img):
    img = np.asarray(img, np.float32)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    return np.clip((img + 1.0) / 2.0, 0.0, 1.0)


def save_overlay(path: str, image, reconstruction, residual,
                 title: str = "") -> str:
    """One image's input | G(z*) | residual heatmap as a PNG."""
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    cmap = "gray" if _gray(image).ndim == 2 else None
    axes[0].imshow(_gray(image), cmap=cmap, vmin=0, vmax=1)
    axes[0].set_title("input")
    axes[1].imshow(_gray(reconstruction), cmap=cmap, vmin=0, vmax=1)
    axes[1].set_title("G(z*)")
    res = np.asarray(residual, np.float32)
    if res.ndim == 3:
        res = res.mean(-1)
    im = axes[2].imshow(res, cmap="inferno")
    axes[2].set_title("|x - G(z*)|")
    fig.colorbar(im, ax=axes[2], fraction=0.046)
    for a in axes:
        a.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def save_anomaly_map_grid(path: str, images, maps, masks=None,
                          ids: Optional[List[str]] = None,
                          scores=None, labels=None,
                          map_title: str = "residual map") -> str:
    """Grid: per image the input and its anomaly map, with the ground-truth
    contour drawn in cyan over both when masks exist; `map_title` names the
    map (e.g. its smoothing) once, above the grid: every row shows the same
    map, and a per-row copy ran into the image's own title."""
    n = len(images)
    fig, axes = plt.subplots(n, 2, figsize=(6, 2.8 * n), squeeze=False,
                             layout="constrained")
    fig.suptitle(f"right: {map_title}", fontsize=8)
    vmax = float(np.percentile(np.asarray(maps), 99.5)) or 1.0
    for i in range(n):
        img = _gray(images[i])
        axes[i, 0].imshow(img, cmap="gray" if img.ndim == 2 else None,
                          vmin=0, vmax=1)
        axes[i, 1].imshow(maps[i], cmap="inferno", vmin=0, vmax=vmax)
        if masks is not None and np.any(masks[i]):
            for a in axes[i]:
                a.contour(np.asarray(masks[i], np.float32), levels=[0.5],
                          colors="cyan", linewidths=0.8)
        name = ids[i] if ids is not None else str(i)
        extra = []
        if scores is not None:
            extra.append(f"score={float(scores[i]):.4g}")
        if labels is not None:
            extra.append("anomalous" if int(labels[i]) else "normal")
        axes[i, 0].set_title(name, fontsize=8, loc="left")
        if extra:
            axes[i, 1].set_title("  ".join(extra), fontsize=8, loc="left")
        for a in axes[i]:
            a.axis("off")
    return _save(fig, path)


def summary_table(metrics: Dict, keys: Sequence[str]) -> str:
    """A two-column text table of selected metrics."""
    width = max(len(k) for k in keys)
    lines = ["-" * (width + 14)]
    for k in keys:
        if k not in metrics:
            continue
        v = metrics[k]
        text = f"{v:.4f}" if isinstance(v, float) else str(v)
        lines.append(f"{k:<{width}}  {text}")
    lines.append("-" * (width + 14))
    return "\n".join(lines)
