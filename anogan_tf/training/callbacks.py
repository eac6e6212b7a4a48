"""Training callbacks: per-epoch checkpoints with resume, sample grids, and a
divergence guard.

Everything is written below the model dir (never the working directory):

  checkpoints/ckpt-<epoch>.weights.h5   GAN weights + both optimizers' slots
  checkpoints/state.json                last finished epoch, checkpoint file,
                                        SeedGenerator state, the selection
  generator.keras, discriminator.keras  the selected epoch's models (see
                                        below; G's EMA copy when training
                                        keeps one); scoring and export use
                                        them
  selection.json                        which epoch they are, and why
  history.json                          every finished epoch's metrics,
                                        kept across resumes
  samples/epoch_<epoch>.png             a fixed-z sample grid
  logs/                                 TensorBoard scalars and sample images

Model selection without anomaly labels: when the epoch logs carry the
`select_on` metric (the health callback's `coverage_ratio`: how well G
reproduces held-out normal images, lower is better), the .keras files are
rewritten only when an epoch beats the best so far, so a GAN that degrades
late in training is scored at its best epoch. Without the metric, every
epoch's models are written (the latest wins). Resume always continues from
the latest checkpoint, not from the selected one.

The f-AnoGAN encoder's training reuses `EpochCheckpoint`, `restore_latest`
and `DivergenceGuard` with its own checkpoint folder (`checkpoints_encoder/`),
its own saved model files (`encoder.keras`) and its own loss names.
"""

from __future__ import annotations

import json
import math
import os
from typing import Callable, Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from anogan_tf.data import save_image_grid
from anogan_tf.models.io import DISCRIMINATOR_FILE, GENERATOR_FILE
from anogan_tf.training.gan import draw_prior_numpy, inference_generator

__all__ = [
    "EpochCheckpoint",
    "HistoryWriter",
    "read_history",
    "SELECTION_FILE",
    "HISTORY_FILE",
    "SampleGrid",
    "DivergenceGuard",
    "EmaStatistics",
    "TrainingDivergedError",
    "restore_latest",
    "CHECKPOINT_DIR",
    "STATE_FILE",
    "GENERATOR_FILE",
    "DISCRIMINATOR_FILE",
]

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
SELECTION_FILE = "selection.json"
HISTORY_FILE = "history.json"


def _atomic_write_json(path: str, obj) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(path + ".tmp", path)


def read_history(path: str) -> list:
    """Per-epoch records [{"epoch": 1, "d_loss": ..}, ..] from a history file.

    Reads the current format ({"epochs": [...]}) and the JSON-lines files
    of earlier versions (one {"initial_epoch": k, metric: [values]} line per
    run). A missing file gives []; an unreadable one raises ValueError.
    """
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("epochs"), list):
            return list(doc["epochs"])
    except json.JSONDecodeError:
        pass
    records = {}
    try:
        for line in text.splitlines():
            if not line.strip():
                continue
            run = json.loads(line)
            start = int(run.pop("initial_epoch", 0))
            for key, values in run.items():
                for i, value in enumerate(values):
                    records.setdefault(start + i + 1, {"epoch": start + i + 1})[
                        key] = value
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a history file ({e}). Move it aside; the next "
            f"epoch starts a new one.") from e
    return [records[k] for k in sorted(records)]


class HistoryWriter(keras.callbacks.Callback):
    """Keeps `history.json` = every finished epoch's logs, across resumes.

    Rewritten atomically after each epoch: records of epochs after
    `initial_epoch` (left by a run killed after its last checkpoint) are
    replaced by this run's.
    """

    def __init__(self, path: str, initial_epoch: int):
        super().__init__()
        self.path = path
        self.records = [r for r in read_history(path)
                        if int(r.get("epoch", 0)) <= initial_epoch]

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.records = [r for r in self.records if r["epoch"] < epoch + 1]
        self.records.append(record)
        _atomic_write_json(self.path, {"epochs": self.records})


class TrainingDivergedError(RuntimeError):
    """A loss became NaN/Inf or exceeded the divergence threshold."""


def _atomic_save_keras(model: keras.Model, path: str) -> None:
    tmp = path + ".tmp.keras"
    model.save(tmp)
    os.replace(tmp, path)


class EmaStatistics(keras.callbacks.Callback):
    """At each epoch end, recomputes the EMA generator's BatchNorm statistics
    (`GAN.refresh_ema_statistics`) before the health check, the checkpoint
    and the samples read it. Place it first among the epoch-end callbacks."""

    def __init__(self, seed: int = 0):
        super().__init__()
        self.seed = seed

    def on_epoch_end(self, epoch, logs=None):
        self.model.refresh_ema_statistics(seed=self.seed + epoch)


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the full training state after every epoch; keeps the last `keep`.

    The state file is replaced atomically after the weights are written, so
    a kill at any moment leaves the previous complete checkpoint usable.

    Args:
      model_dir: The model dir.
      keep: Checkpoints kept.
      checkpoint_dir: Folder below model_dir ("checkpoints" for the GAN).
      model_files: `model_files(trained model) -> {file name: keras.Model}`,
        the .keras files refreshed in model_dir each epoch; by default the
        GAN's generator.keras and discriminator.keras.
      select_on: A logs key to minimise: the .keras files are refreshed only
        when an epoch improves it (see the module docstring); None: every
        epoch.
    """

    def __init__(self, model_dir: str, keep: int = 2,
                 checkpoint_dir: str = CHECKPOINT_DIR,
                 model_files: Optional[
                     Callable[[keras.Model], Dict[str, keras.Model]]] = None,
                 select_on: Optional[str] = None):
        super().__init__()
        self.model_dir = model_dir
        self.ckpt_dir = os.path.join(model_dir, checkpoint_dir)
        self.keep = keep
        self.model_files = model_files or (lambda gan: {
            GENERATOR_FILE: inference_generator(gan),
            DISCRIMINATOR_FILE: gan.discriminator})
        self.select_on = select_on
        self.best = _read_selection(os.path.join(self.ckpt_dir, STATE_FILE))
        os.makedirs(self.ckpt_dir, exist_ok=True)

    def _selects(self, epoch: int, logs) -> bool:
        """Whether this epoch's models become the model dir's .keras files."""
        if self.select_on is None or self.select_on not in (logs or {}):
            return True
        value = float(logs[self.select_on])
        if not math.isfinite(value):
            return self.best is None
        return (self.best is None or self.best.get("metric") != self.select_on
                or value <= self.best["value"])

    def on_epoch_end(self, epoch, logs=None):
        gan = self.model
        name = f"ckpt-{epoch + 1:04d}.weights.h5"
        gan.save_weights(os.path.join(self.ckpt_dir, name))
        if self._selects(epoch, logs):
            for file_name, model in self.model_files(gan).items():
                _atomic_save_keras(model, os.path.join(self.model_dir, file_name))
            metric = (self.select_on if self.select_on in (logs or {})
                      else None)
            self.best = {
                "epoch": epoch + 1, "metric": metric,
                "value": float(logs[metric]) if metric else None,
                "rule": (f"lowest {metric} so far (held-out normal images)"
                         if metric else "latest epoch")}
            if self.select_on is not None:
                _atomic_write_json(
                    os.path.join(self.model_dir, SELECTION_FILE), self.best)
                logging.info("Epoch %d selected (%s).", epoch + 1,
                             self.best["rule"])
        state = {
            "epoch": epoch + 1,
            "checkpoint": name,
            "logs": {k: float(v) for k, v in (logs or {}).items()},
            "selected": self.best,
        }
        if hasattr(gan, "seed_generator"):
            state["seed_state"] = np.asarray(
                gan.seed_generator.state.numpy()).tolist()
        _atomic_write_json(os.path.join(self.ckpt_dir, STATE_FILE), state)
        # Drop old checkpoints only once the new state points elsewhere.
        ckpts = sorted(f for f in os.listdir(self.ckpt_dir)
                       if f.startswith("ckpt-") and f.endswith(".weights.h5"))
        for old in ckpts[:-self.keep]:
            os.remove(os.path.join(self.ckpt_dir, old))
        logging.info("Saved checkpoint %s (epoch %d).", name, epoch + 1)


def _read_selection(state_path: str) -> Optional[dict]:
    """The selected epoch recorded in a state file (None if there is none)."""
    try:
        with open(state_path) as f:
            return json.load(f).get("selected")
    except (OSError, ValueError, AttributeError):
        return None


def restore_latest(gan, model_dir: str,
                   checkpoint_dir: str = CHECKPOINT_DIR) -> int:
    """Restores the last finished epoch's state into `gan`.

    Args:
      gan: A compiled `GAN` (or any model with `build_optimizers()`) whose
        architecture matches the checkpoint.
      model_dir: The model dir.
      checkpoint_dir: Folder below model_dir, as given to EpochCheckpoint.

    Returns:
      The number of finished epochs (0 when there is no checkpoint).

    Raises:
      RuntimeError: the state file points at a missing or unreadable
        checkpoint; the message says how to recover.
    """
    path = os.path.join(model_dir, checkpoint_dir, STATE_FILE)
    if not os.path.exists(path):
        return 0
    try:
        with open(path) as f:
            state = json.load(f)
        ckpt = os.path.join(model_dir, checkpoint_dir, state["checkpoint"])
        gan.build_optimizers()
        gan.load_weights(ckpt)
    except (OSError, ValueError, KeyError) as e:
        raise RuntimeError(
            f"Cannot resume from {path}: {e}. The checkpoint is damaged or was "
            f"written for another architecture. Use a new --model_dir, or "
            f"delete {os.path.join(model_dir, checkpoint_dir)} to start over."
        ) from e
    if "seed_state" in state and hasattr(gan, "seed_generator"):
        gan.seed_generator.state.assign(np.asarray(
            state["seed_state"], dtype=gan.seed_generator.state.dtype))
    return int(state["epoch"])


class SampleGrid(keras.callbacks.Callback):
    """Writes G(z) for a fixed z as `samples/epoch_<n>.png` and to TensorBoard."""

    def __init__(self, model_dir: str, latent_dim: int, prior: str,
                 num: int = 36, seed: int = 0, every: int = 1):
        super().__init__()
        self.sample_dir = os.path.join(model_dir, "samples")
        os.makedirs(self.sample_dir, exist_ok=True)
        self.z = draw_prior_numpy(np.random.default_rng(seed), num,
                                  latent_dim, prior)
        self.every = max(1, every)
        self.writer = tf.summary.create_file_writer(
            os.path.join(model_dir, "logs", "samples"))
        self.last_path: Optional[str] = None

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        images = np.asarray(inference_generator(self.model)(
            self.z, training=False))
        path = os.path.join(self.sample_dir, f"epoch_{epoch + 1:04d}.png")
        save_image_grid(path, images, ncols=int(math.ceil(math.sqrt(len(images)))))
        self.last_path = path
        with self.writer.as_default():
            tf.summary.image("samples", (images[:16] + 1.0) / 2.0,
                             step=epoch + 1, max_outputs=16)
        self.writer.flush()


class DivergenceGuard(keras.callbacks.Callback):
    """Stops training with a clear error when a loss is NaN/Inf or explodes.

    It raises before the epoch's checkpoint is written, so the last good
    checkpoint is kept.
    """

    def __init__(self, threshold: float = 1e4,
                 keys: Sequence[str] = ("d_loss", "g_loss"),
                 advice: str = ("Try a lower learning rate (--g_lr/--d_lr), "
                                "--spectral_norm, or --gan_loss=wgan_gp; ")):
        super().__init__()
        self.threshold = threshold
        self.keys = tuple(keys)
        self.advice = advice

    def on_train_batch_end(self, batch, logs=None):
        for key in self.keys:
            if logs is None or key not in logs:
                continue
            value = float(logs[key])
            if not math.isfinite(value) or abs(value) > self.threshold:
                self.model.stop_training = True
                raise TrainingDivergedError(
                    f"Training diverged at batch {batch}: {key}={value} "
                    f"(limit {self.threshold}). The last good checkpoint is "
                    f"kept. {self.advice}check the input data for constant "
                    f"or corrupt images.")
