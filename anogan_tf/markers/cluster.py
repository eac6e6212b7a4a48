"""Grouping regions into candidate markers, each with medoid prototypes.

Methods (`CLUSTER_METHODS`, scikit-learn):
  kmeans         KMeans (10 initialisations, seeded).
  agglomerative  Ward-linkage agglomerative clustering.
  hdbscan        HDBSCAN (sklearn.cluster.HDBSCAN): density based, finds
                 the number of clusters itself and leaves outliers
                 unassigned (marker 0).

With num_markers "auto", kmeans and agglomerative try every k in
[min_markers, max_markers] (capped at R - 1) and keep the k with the
largest silhouette (mean over regions of (b - a) / max(a, b); a: mean
distance to the own cluster, b: to the nearest other); on more than
`SILHOUETTE_SAMPLE` regions the silhouette is estimated on a seeded sample.
Markers are numbered 1..k by size, largest first.

A marker's prototypes are its medoid regions: its members sorted by their
total distance to the other members (the first is the medoid, the member
closest to all others); for members > `EXACT_MEDOID_LIMIT` the distance to
the marker's mean stands in for the total.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

import numpy as np
from sklearn import cluster as skc
from sklearn.metrics import silhouette_score

from anogan_tf.config import ConfigError

__all__ = ["CLUSTER_METHODS", "Clustering", "parse_num_markers",
           "cluster_regions", "medoid_order"]

CLUSTER_METHODS = ("kmeans", "agglomerative", "hdbscan")
SILHOUETTE_SAMPLE = 4000
EXACT_MEDOID_LIMIT = 3000


@dataclasses.dataclass(frozen=True)
class Clustering:
    """Markers of the regions.

    Attributes:
      labels: int64 [R], the marker (1..k) of each region; 0 for regions
        HDBSCAN left unassigned.
      k: Number of markers.
      method: The method.
      silhouette: Silhouette of the result (None when k < 2 or undefined).
      silhouette_by_k: {k: silhouette} of every k tried ("auto").
      centres: [k, D] mean embedding of each marker (row m - 1: marker m).
      distances: [R] Euclidean distance to the own marker's centre (NaN
        when unassigned).
      prototypes: Per marker (index m - 1), member region indices ordered
        by medoid-ness (`medoid_order`), the medoid first.
    """

    labels: np.ndarray
    k: int
    method: str
    silhouette: Optional[float]
    silhouette_by_k: Dict[int, float]
    centres: np.ndarray
    distances: np.ndarray
    prototypes: Tuple[Tuple[int, ...], ...]


def parse_num_markers(text) -> Optional[int]:
    """None for "auto", else k >= 1.

    Raises:
      ConfigError: neither "auto" nor a positive integer.
    """
    text = str(text).strip().lower()
    if text == "auto":
        return None
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise ConfigError(f"--num_markers must be 'auto' or an integer >= 1, "
                          f"got {text!r}.")
    return k


def medoid_order(points: np.ndarray) -> np.ndarray:
    """Indices of `points` [m, D] by total distance to the others (the
    medoid first); by distance to the mean beyond EXACT_MEDOID_LIMIT."""
    points = np.asarray(points, np.float64)
    m = len(points)
    if m <= EXACT_MEDOID_LIMIT:
        total = np.zeros(m)
        for start in range(0, m, 512):
            block = points[start:start + 512]
            total[start:start + 512] = np.sqrt(np.maximum(
                (block ** 2).sum(1)[:, None] + (points ** 2).sum(1)[None] -
                2 * block @ points.T, 0.0)).sum(axis=1)
    else:
        total = np.linalg.norm(points - points.mean(axis=0), axis=1)
    return np.argsort(total, kind="stable")


def _fit(method: str, coords: np.ndarray, k: int, seed: int,
         min_cluster_size: int) -> np.ndarray:
    if method == "kmeans":
        return skc.KMeans(n_clusters=k, n_init=10,
                          random_state=seed).fit_predict(coords)
    if method == "agglomerative":
        return skc.AgglomerativeClustering(n_clusters=k,
                                           linkage="ward").fit_predict(coords)
    return skc.HDBSCAN(min_cluster_size=min_cluster_size,
                       copy=True).fit_predict(coords)


def _silhouette(coords: np.ndarray, labels: np.ndarray,
                seed: int) -> Optional[float]:
    assigned = labels >= 0
    kinds = np.unique(labels[assigned])
    if len(kinds) < 2 or len(kinds) >= assigned.sum():
        return None
    sample = (SILHOUETTE_SAMPLE if assigned.sum() > SILHOUETTE_SAMPLE
              else None)
    return float(silhouette_score(coords[assigned], labels[assigned],
                                  sample_size=sample, random_state=seed))


def cluster_regions(coords: np.ndarray, method: str = "kmeans",
                    num_markers: Optional[int] = None, min_markers: int = 2,
                    max_markers: int = 8, min_cluster_size: int = 5,
                    seed: int = 0) -> Clustering:
    """Clusters region embeddings into markers.

    Args:
      coords: [R, D] the embedding.
      method: One of CLUSTER_METHODS.
      num_markers: k, or None for "auto" (silhouette; HDBSCAN always
        chooses its own number).
      min_markers, max_markers: The range "auto" searches.
      min_cluster_size: HDBSCAN's smallest cluster.
      seed: Random state of KMeans and of the silhouette sample.

    Returns:
      A Clustering. R = 0 gives k = 0; R = 1 one marker; fewer regions
      than the range needs shrink it (a warning-free, documented cap).

    Raises:
      ConfigError: an unknown method, a fixed k with hdbscan, or a bad
        range.
    """
    if method not in CLUSTER_METHODS:
        raise ConfigError(f"--cluster_method must be one of "
                          f"{'|'.join(CLUSTER_METHODS)}, got {method!r}.")
    if method == "hdbscan" and num_markers is not None:
        raise ConfigError("--cluster_method=hdbscan finds the number of "
                          "markers itself; use --num_markers=auto (and "
                          "--hdbscan_min_cluster_size to steer it), or "
                          "kmeans/agglomerative for a fixed number.")
    if not 2 <= min_markers <= max_markers:
        raise ConfigError(f"Need 2 <= --min_markers <= --max_markers, got "
                          f"{min_markers} and {max_markers}.")
    if min_cluster_size < 2:
        raise ConfigError(f"--hdbscan_min_cluster_size must be >= 2, got "
                          f"{min_cluster_size}.")
    coords = np.asarray(coords, np.float64)
    r = len(coords)
    scores: Dict[int, float] = {}
    if r == 0:
        raw = np.zeros(0, np.int64)
    elif r == 1 or (num_markers == 1):
        raw = np.zeros(r, np.int64)
    elif method == "hdbscan":
        raw = (_fit(method, coords, 0, seed, min_cluster_size)
               if r >= min_cluster_size else np.zeros(r, np.int64))
    elif num_markers is not None:
        raw = _fit(method, coords, min(num_markers, r), seed,
                   min_cluster_size)
    else:
        high = min(max_markers, r - 1)
        low = min(min_markers, high)
        best = None
        for k in range(max(2, low), high + 1):
            labels = _fit(method, coords, k, seed, min_cluster_size)
            s = _silhouette(coords, labels, seed)
            if s is None:
                continue
            scores[k] = s
            if best is None or s > best[0] + 1e-12:
                best = (s, labels)
        raw = best[1] if best is not None else np.zeros(r, np.int64)
    return _finish(coords, np.asarray(raw, np.int64), method, scores, seed)


def _finish(coords: np.ndarray, raw: np.ndarray, method: str,
            scores: Dict[int, float], seed: int) -> Clustering:
    """Renumbers clusters 1..k by size and adds centres and prototypes."""
    kinds, counts = np.unique(raw[raw >= 0], return_counts=True)
    order = kinds[np.lexsort((kinds, -counts))]
    labels = np.zeros(len(raw), np.int64)
    for new, old in enumerate(order, start=1):
        labels[raw == old] = new
    k = len(order)
    dim = coords.shape[1] if coords.ndim == 2 else 0
    centres = np.zeros((k, dim))
    distances = np.full(len(raw), np.nan)
    prototypes = []
    for m in range(1, k + 1):
        members = np.flatnonzero(labels == m)
        centres[m - 1] = coords[members].mean(axis=0)
        distances[members] = np.linalg.norm(coords[members] - centres[m - 1],
                                            axis=1)
        prototypes.append(tuple(int(members[j]) for j in
                                medoid_order(coords[members])))
    silhouette = (_silhouette(coords, np.where(labels > 0, labels, -1), seed)
                  if k >= 2 else None)
    return Clustering(labels, k, method, silhouette, dict(scores), centres,
                      distances, tuple(prototypes))
