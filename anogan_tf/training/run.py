"""Library entry point for GAN training: data -> models -> fit -> model dir."""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import keras
import numpy as np
from absl import logging

from anogan_tf import config as config_lib
from anogan_tf.config import DataConfig, ModelConfig, TrainConfig
from anogan_tf.data import extract_patches, load_images, make_train_dataset
from anogan_tf.model_dir import ModelDir
from anogan_tf.models import build_generator, build_models
from anogan_tf.training import callbacks as cb
from anogan_tf.training import health
from anogan_tf.training.gan import GAN

__all__ = ["TrainResult", "train_gan", "prepare_model_dir", "training_patches",
           "fit_and_record"]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What a training run did.

    Attributes:
      model_dir: The model dir written.
      initial_epoch: Epochs already finished when the run started (resume).
      epochs_done: Epochs finished when it ended.
      history: Per-epoch metrics of this run (empty if nothing was left).
      num_train_patches: Training inputs after patching and ROI filtering.
      sample_path: The last sample grid PNG, if one was written.
      warnings: Training-health warnings raised during the run.
    """

    model_dir: str
    initial_epoch: int
    epochs_done: int
    history: Dict[str, List[float]]
    num_train_patches: int
    sample_path: Optional[str]
    warnings: Tuple[str, ...] = ()


def prepare_model_dir(model_dir: str, model_config: ModelConfig,
                      flags_text: Optional[str] = None) -> None:
    """Creates the model dir, checks or writes config.json and flags.cfg
    (`ModelDir.prepare`).

    Raises:
      ConfigError: the dir already holds a model of another architecture.
    """
    ModelDir(model_dir).prepare(model_config, flags_text)


def _patches_of(images, data_config: DataConfig) -> np.ndarray:
    return extract_patches(
        images, data_config.effective_patch_size,
        data_config.effective_patch_stride, data_config.image_size,
        roi=data_config.roi, min_coverage=data_config.roi_min_coverage,
        max_patches_per_image=data_config.max_patches_per_image).patches


def training_patches(data_config: DataConfig, holdout_fraction: float = 0.0
                     ) -> Tuple[np.ndarray, np.ndarray]:
    """Loads the normal training images and cuts them into model inputs.

    Args:
      data_config: The training data.
      holdout_fraction: Share of the training *images* (not patches, so no
        held-out pixel is trained on through an overlapping patch) kept out
        of training for the health metrics; a seeded choice, at most 256
        images and never all of them.

    Returns:
      (training patches, held-out patches); the second may be empty.
    """
    images = load_images(data_config, "train")
    n = len(images.images)
    n_out = min(256, int(round(holdout_fraction * n)), max(0, n - 2))
    order = np.random.default_rng([int(data_config.seed) % 2 ** 63, 7]
                                  ).permutation(n)
    held = np.sort(order[:n_out])
    kept = np.sort(order[n_out:])
    train = _patches_of(images.subset(kept) if n_out else images, data_config)
    holdout = (_patches_of(images.subset(held), data_config) if n_out
               else train[:0])
    logging.info("Training on %d patches of %d images (%s); %d patches of %d "
                 "held-out images check G's coverage.", len(train),
                 n - n_out, data_config.dataset, len(holdout), n_out)
    return train, holdout


def _build_gan(model_config: ModelConfig, train_config: TrainConfig) -> GAN:
    if train_config.r1_gamma and model_config.gan_loss == "wgan_gp":
        raise config_lib.ConfigError(
            "--r1_gamma goes with --gan_loss=dcgan or hinge; wgan_gp has its "
            "own gradient penalty (--gp_weight). Pass --r1_gamma=0 or another "
            "--gan_loss.")
    keras.utils.set_random_seed(train_config.seed)
    generator, discriminator = build_models(model_config)
    generator_ema = (build_generator(model_config, name="generator_ema")
                     if train_config.g_ema else None)
    gan = GAN(generator, discriminator, model_config.latent_dim,
              prior=model_config.prior, gan_loss=model_config.gan_loss,
              n_critic=train_config.n_critic, gp_weight=train_config.gp_weight,
              seed=train_config.seed, mode_seeking=train_config.mode_seeking,
              r1_gamma=train_config.r1_gamma, generator_ema=generator_ema,
              ema_decay=train_config.g_ema or 0.999)
    if model_config.gan_loss == "wgan_gp":
        # Gulrajani et al.: Adam(1e-4, 0, 0.9) unless overridden.
        beta_1, beta_2 = 0.0, 0.9
    else:
        beta_1, beta_2 = train_config.beta_1, train_config.beta_2
    gan.compile(
        d_optimizer=keras.optimizers.Adam(train_config.d_lr, beta_1=beta_1,
                                          beta_2=beta_2),
        g_optimizer=keras.optimizers.Adam(train_config.g_lr, beta_1=beta_1,
                                          beta_2=beta_2),
        jit_compile=train_config.jit_compile)
    return gan


def fit_and_record(model: keras.Model, dataset, train_config: TrainConfig,
                   initial_epoch: int, steps: int, callbacks, verbose: int,
                   model_dir: ModelDir, stage: str = "gan"
                   ) -> Dict[str, List[float]]:
    """Runs `model.fit` from `initial_epoch`; returns this run's metrics.

    A resumed run skips the `initial_epoch * steps` batches the finished
    epochs drew, so that with the restored checkpoint it continues exactly
    where the interrupted run was (`dataset` must be the same seeded
    pipeline). Every finished epoch's logs (including those callbacks add,
    such as the health metrics) are kept in the stage's history file across
    resumes (`callbacks.HistoryWriter`, placed before the checkpoint
    callback so a kill between the two redoes the epoch rather than losing
    its record).
    """
    callbacks = list(callbacks)
    at = next((i for i, c in enumerate(callbacks)
               if isinstance(c, cb.EpochCheckpoint)), len(callbacks))
    callbacks.insert(at, cb.HistoryWriter(model_dir, initial_epoch, stage))
    if initial_epoch:
        dataset = dataset.skip(initial_epoch * steps)
    # The tf.data pipeline shuffles already; fit's default shuffle=True
    # would only warn that it ignores itself.
    history = model.fit(dataset, epochs=train_config.epochs,
                        initial_epoch=initial_epoch, steps_per_epoch=steps,
                        callbacks=callbacks, verbose=verbose, shuffle=False)
    return {k: [float(v) for v in vals] for k, vals in history.history.items()}


def train_gan(model_config: ModelConfig, data_config: DataConfig,
              train_config: TrainConfig, flags_text: Optional[str] = None,
              extra_callbacks: Optional[List[keras.callbacks.Callback]] = None,
              verbose: int = 1) -> TrainResult:
    """Trains the GAN on normal images, resuming from the model dir's state.

    The model dir is locked for the run (`ModelDir.lock`): a second run on
    it fails at once with a ConfigError.

    Args:
      model_config: Architecture (written to config.json).
      data_config: Training data; only normal images are used.
      train_config: Schedule; `epochs` is the total, so re-running with a
        larger value continues from the last finished epoch.
      flags_text: Resolved flags written to `flags.cfg` (binaries pass it).
      extra_callbacks: Added after the built-in callbacks.
      verbose: Keras fit verbosity (1: progress bar).

    Returns:
      A TrainResult.

    Raises:
      ConfigError: another run holds the model dir, it holds another
        architecture, or its checkpoints cannot be restored.
    """
    model_dir = ModelDir(train_config.model_dir)
    with model_dir.lock():
        return _train_gan(model_dir, model_config, data_config, train_config,
                          flags_text, extra_callbacks, verbose)


def _train_gan(model_dir: ModelDir, model_config: ModelConfig,
               data_config: DataConfig, train_config: TrainConfig,
               flags_text, extra_callbacks, verbose: int) -> TrainResult:
    model_dir.prepare(model_config, flags_text)
    # Seeds the shuffle as well as the weights, so that a resumed run's
    # batches follow the interrupted run's.
    keras.utils.set_random_seed(train_config.seed)
    patches, holdout = training_patches(data_config,
                                        train_config.holdout_fraction)
    steps = train_config.steps_per_epoch or max(
        1, len(patches) // train_config.batch_size)
    dataset = make_train_dataset(patches, train_config.batch_size,
                                 seed=data_config.seed)

    gan = _build_gan(model_config, train_config)
    checkpoint = model_dir.checkpoint("gan", gan.checkpoint_items())
    initial_epoch = checkpoint.restore(legacy_model=gan)
    if initial_epoch:
        logging.info("Resuming from epoch %d in %s.", initial_epoch, model_dir)
    if initial_epoch >= train_config.epochs:
        logging.info("Already trained for %d epochs (asked for %d); nothing to "
                     "do. Pass a larger --epochs to continue.", initial_epoch,
                     train_config.epochs)
        return TrainResult(model_dir.path, initial_epoch, initial_epoch, {},
                           len(patches), None)

    sampler = cb.SampleGrid(model_dir, model_config.latent_dim,
                            model_config.prior, seed=train_config.seed,
                            every=train_config.sample_every)
    health_cb = health.TrainingHealth(
        patches, holdout, model_config.latent_dim, model_config.prior,
        health.HealthConfig(seed=train_config.seed))
    callbacks = [
        cb.DivergenceGuard(train_config.divergence_threshold),
    ] + ([cb.EmaStatistics(train_config.seed)] if train_config.g_ema else []) + [
        health_cb,
        # Before the checkpoint: a run killed in between redoes the epoch,
        # so no epoch's sample grid is lost.
        sampler,
        cb.EpochCheckpoint(model_dir, checkpoint=checkpoint, select_on=(
            "coverage_ratio" if train_config.select_best and len(holdout)
            else None)),
        keras.callbacks.TensorBoard(model_dir.logs_dir("gan"),
                                    update_freq="epoch"),
    ] + list(extra_callbacks or [])
    hist = fit_and_record(gan, dataset, train_config, initial_epoch, steps,
                          callbacks, verbose, model_dir, "gan")
    return TrainResult(model_dir.path, initial_epoch, train_config.epochs,
                       hist, len(patches), sampler.last_path,
                       tuple(health_cb.warnings))
