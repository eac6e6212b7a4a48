"""Scores image files through a served model and writes `scores.csv`.

`scores.csv` follows the project contract: `id, patch_y, patch_x,
anomaly_score, residual_score, discrimination_score`. The client scores
whole model-sized images, so `patch_y` and `patch_x` are empty; images of
another size are refused (anogan-score cuts big images into patches).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable, Optional, Sequence, Tuple

import numpy as np

from anogan_tf.losses import SCORE_KEYS
from anogan_tf.scoring.reports import SCORE_COLUMNS, write_csv
from anogan_tf.serving.clients import PredictClient
from anogan_tf.serving.images import InputError, list_inputs, read_image

__all__ = ["ClientScores", "SCORE_KEYS", "CSV_COLUMNS", "SCORES_FILE", "score_files",
           "write_scores_csv"]

# The three scores and scores.csv's columns: the library's (anogan-score
# writes the same columns).
CSV_COLUMNS = SCORE_COLUMNS
SCORES_FILE = "scores.csv"


@dataclasses.dataclass(frozen=True)
class ClientScores:
    """The served scores of a list of files.

    Attributes:
      ids: Image ids (folder-relative paths without extension, or stems).
      anomaly_score, residual_score, discrimination_score: float32 [N].
      csv_path: Where scores.csv was written (None if not written).
    """

    ids: Tuple[str, ...]
    anomaly_score: np.ndarray
    residual_score: np.ndarray
    discrimination_score: np.ndarray
    csv_path: Optional[str] = None


def write_scores_csv(path: str, ids: Sequence[str], scores: dict) -> str:
    """Writes scores.csv (atomically) with anogan-score's writer and
    contract columns; a served image is one model input, so patch_y and
    patch_x are empty."""
    rows = [dict({"id": image_id, "patch_y": "", "patch_x": ""},
                 **{k: float(scores[k][i]) for k in SCORE_KEYS})
            for i, image_id in enumerate(ids)]
    return write_csv(path, rows, CSV_COLUMNS)


def score_files(client: PredictClient, inputs: Sequence[str],
                output_dir: Optional[str], batch_size: int = 8,
                progress: Optional[Callable[[int, int], None]] = None
                ) -> ClientScores:
    """Reads `inputs`, sends them in batches, writes `<output_dir>/scores.csv`.

    Args:
      client: A connected predict client (gRPC or REST).
      inputs: Image files and/or folders (searched recursively).
      output_dir: Folder for scores.csv (created); None to skip writing.
      batch_size: Images per request.
      progress: Called with (done, total) after each request.

    Raises:
      InputError: unreadable inputs, or images whose size is not the model's.
      ServingError: the server refused or failed a request.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    entries = list_inputs(inputs)
    sig = client.signature()
    if sig.image_shape is None:
        raise InputError(
            f"Signature {sig.name!r} does not state an image size (no rank-4 "
            f"input or output shape); anogan-client needs an anogan_tf "
            f"export.")
    missing = [k for k in SCORE_KEYS if k not in sig.output_keys]
    if missing:
        raise InputError(
            f"Signature {sig.name!r} has no outputs {missing} (it has "
            f"{list(sig.output_keys)}); use a scoring signature such as "
            f"serving_default or serving_uint8.")
    h, w, c = sig.image_shape
    parts = {k: [] for k in SCORE_KEYS}
    for start in range(0, len(entries), batch_size):
        batch = []
        for image_id, path in entries[start:start + batch_size]:
            image = read_image(path, c, sig.input_dtype)
            if image.shape[:2] != (h, w):
                raise InputError(
                    f"{path} is {image.shape[1]}x{image.shape[0]} (WxH) but "
                    f"the served model scores {w}x{h} images. Resize it, or "
                    f"use anogan-score, which cuts big images into patches "
                    f"and aggregates their scores.")
            batch.append(image)
        outputs = client.predict(np.stack(batch), output_keys=SCORE_KEYS)
        for k in SCORE_KEYS:
            parts[k].append(np.asarray(outputs[k], np.float32).reshape(-1))
        if progress is not None:
            progress(min(start + batch_size, len(entries)), len(entries))
    scores = {k: np.concatenate(v) for k, v in parts.items()}
    ids = tuple(image_id for image_id, _ in entries)
    csv_path = None
    if output_dir:
        os.makedirs(output_dir, exist_ok=True)
        csv_path = write_scores_csv(os.path.join(output_dir, SCORES_FILE), ids,
                                    scores)
    return ClientScores(ids=ids, csv_path=csv_path, **scores)
