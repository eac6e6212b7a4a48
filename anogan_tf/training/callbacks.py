"""Training callbacks: per-epoch checkpoints with resume, the history file,
sample grids, and a divergence guard.

Everything is written below the model dir (never the working directory),
through `anogan_tf.model_dir.ModelDir`, which owns the layout:

  checkpoints/                          the GAN's training state (models,
                                        optimizers, SeedGenerator, epoch and
                                        the selection), a
                                        tf.train.CheckpointManager's
  generator.keras, discriminator.keras  the selected epoch's models (see
                                        below; G's EMA copy when training
                                        keeps one); scoring and export use
                                        them
  selection.json                        which epoch they are, and why
  history.json                          every finished epoch's metrics,
                                        kept across resumes
  samples/epoch_<epoch>.png             a fixed-z sample grid
  logs/                                 TensorBoard scalars and sample images

At an epoch's end the sample grid and the history record are written
first, then the .keras files (when the epoch is selected), then the
checkpoint: a run killed in between resumes from the previous checkpoint
and redoes the epoch, whose files and records it replaces.

Model selection without anomaly labels: when the epoch logs carry the
`select_on` metric (the health callback's `coverage_ratio`: how well G
reproduces held-out normal images, lower is better), the .keras files are
rewritten only when an epoch beats the best so far, so a GAN that degrades
late in training is scored at its best epoch. Without the metric, every
epoch's models are written (the latest wins). Resume always continues from
the latest checkpoint, not from the selected one; the best so far is part of
the checkpoint.

The f-AnoGAN encoder's training reuses `EpochCheckpoint`, `HistoryWriter`
and `DivergenceGuard` with its own stage ("encoder": checkpoints_encoder/,
history_encoder.json), its own model file (`encoder.keras`) and its own loss
names.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Dict, Optional, Sequence, Union

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from anogan_tf.data import save_image_grid
from anogan_tf.model_dir import (CHECKPOINT_DIR, DISCRIMINATOR_FILE,
                                 GENERATOR_FILE, HISTORY_FILE, SELECTION_FILE,
                                 STATE_FILE, ModelDir, StageCheckpoint,
                                 read_history_file)
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
    "CHECKPOINT_DIR",
    "STATE_FILE",
    "GENERATOR_FILE",
    "DISCRIMINATOR_FILE",
]

read_history = read_history_file


class HistoryWriter(keras.callbacks.Callback):
    """Keeps the stage's history file = every finished epoch's logs, across
    resumes (`ModelDir.append_history`, atomic).

    At the start, records after `initial_epoch` (left by a run killed after
    its last checkpoint) are dropped; each epoch's record replaces any of the
    same epoch.
    """

    def __init__(self, model_dir: Union[str, ModelDir], initial_epoch: int,
                 stage: str = "gan"):
        super().__init__()
        self.model_dir = ModelDir(model_dir)
        self.initial_epoch = initial_epoch
        self.stage = stage

    def on_train_begin(self, logs=None):
        self.model_dir.trim_history(self.initial_epoch, self.stage)

    def on_epoch_end(self, epoch, logs=None):
        record = {"epoch": epoch + 1}
        record.update({k: float(v) for k, v in (logs or {}).items()})
        self.model_dir.append_history(record, self.stage)


class TrainingDivergedError(RuntimeError):
    """A loss became NaN/Inf or exceeded the divergence threshold."""


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
    """Checkpoints the full training state after every epoch (the last
    `keep` are kept) and refreshes the model dir's .keras files.

    Args:
      model_dir: The model dir.
      keep: Checkpoints kept (when this callback builds the checkpoint).
      stage: "gan" or "encoder" (the checkpoint folder and its files).
      model_files: `model_files(trained model) -> {role: keras.Model}`, the
        .keras files refreshed (`ModelDir.save_model`); by default the GAN's
        generator and discriminator.
      select_on: A logs key to minimise: the .keras files are refreshed only
        when an epoch improves it (see the module docstring); None: every
        epoch.
      checkpoint: The stage's `StageCheckpoint`, already restored by the
        caller; None: built at the first epoch end from the trained model's
        `checkpoint_items()`, with the best so far read from disk.
    """

    def __init__(self, model_dir: Union[str, ModelDir], keep: int = 2,
                 stage: str = "gan",
                 model_files: Optional[
                     Callable[[keras.Model], Dict[str, keras.Model]]] = None,
                 select_on: Optional[str] = None,
                 checkpoint: Optional[StageCheckpoint] = None):
        super().__init__()
        self.model_dir = ModelDir(model_dir)
        self.keep = keep
        self.stage = stage
        self.model_files = model_files or (lambda gan: {
            "generator": inference_generator(gan),
            "discriminator": gan.discriminator})
        self.select_on = select_on
        self.checkpoint = checkpoint

    @property
    def best(self) -> Optional[dict]:
        """The selected epoch so far ({"epoch", "metric", "value", "rule"}),
        as the checkpoint records it."""
        return self._stage_checkpoint().record.get("selected")

    def _stage_checkpoint(self) -> StageCheckpoint:
        if self.checkpoint is None:
            self.checkpoint = self.model_dir.checkpoint(
                self.stage, self.model.checkpoint_items(), self.keep)
        return self.checkpoint

    def _selects(self, best: Optional[dict], logs) -> bool:
        """Whether this epoch's models become the model dir's .keras files."""
        if self.select_on is None or self.select_on not in (logs or {}):
            return True
        value = float(logs[self.select_on])
        if not math.isfinite(value):
            return best is None
        return (best is None or best.get("metric") != self.select_on
                or value <= best["value"])

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        checkpoint = self._stage_checkpoint()
        best = checkpoint.record.get("selected")
        if self._selects(best, logs):
            for role, model in self.model_files(self.model).items():
                self.model_dir.save_model(role, model)
            metric = self.select_on if self.select_on in logs else None
            best = {
                "epoch": epoch + 1, "metric": metric,
                "value": logs[metric] if metric else None,
                "rule": (f"lowest {metric} so far (held-out normal images)"
                         if metric else "latest epoch")}
            if self.select_on is not None:
                self.model_dir.write_selection(best)
                logging.info("Epoch %d selected (%s).", epoch + 1,
                             best["rule"])
        path = checkpoint.save(epoch + 1, {"selected": best, "logs": logs})
        logging.info("Saved checkpoint %s (epoch %d).", path, epoch + 1)


class SampleGrid(keras.callbacks.Callback):
    """Writes G(z) for a fixed z as `samples/epoch_<n>.png` and to TensorBoard."""

    def __init__(self, model_dir: Union[str, ModelDir], latent_dim: int,
                 prior: str, num: int = 36, seed: int = 0, every: int = 1):
        super().__init__()
        model_dir = ModelDir(model_dir)
        self.sample_dir = model_dir.samples_dir
        os.makedirs(self.sample_dir, exist_ok=True)
        self.z = draw_prior_numpy(np.random.default_rng(seed), num,
                                  latent_dim, prior)
        self.every = max(1, every)
        self.writer = tf.summary.create_file_writer(
            os.path.join(model_dir.logs_dir(), "samples"))
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
