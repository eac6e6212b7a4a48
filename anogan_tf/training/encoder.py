"""f-AnoGAN encoder training (Schlegl et al. 2019, "izi_f" training).

With the trained G and D frozen (called with training=False, never updated),
the encoder E is trained on normal images to minimise

  L(x) = 1/n ||x - G(E(x))||^2 + kappa * 1/n_d ||f(x) - f(G(E(x)))||^2

(`anogan_tf.losses.izif_losses` and `izif_loss`, the same functions the
encoder-mode score uses), with f the discriminator features of block `feature_layer` and
kappa = 1 as in the paper. The optimiser is Adam(--encoder_lr = 1e-4,
beta_1 = 0.9, beta_2 = 0.999): a plain regression, so the DCGAN's
adversarial beta_1 = 0.5 does not apply.

Files, all below the model dir (`ModelDir`'s "encoder" stage; the GAN's own
files are only read):

  checkpoints_encoder/     resume state (E, its optimizer, the epoch), a
                           tf.train.CheckpointManager's
  encoder.keras            refreshed after every epoch
  flags_encoder.cfg, history_encoder.json, logs/encoder/
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional

import keras
import tensorflow as tf
from absl import logging

from anogan_tf import losses
from anogan_tf.config import ConfigError, DataConfig, TrainConfig
from anogan_tf.data import make_train_dataset
from anogan_tf.model_dir import ModelDir
from anogan_tf.models import build_encoder
from anogan_tf.training import callbacks as cb
from anogan_tf.training.run import (TrainResult, fit_and_record,
                                    training_patches)

__all__ = ["EncoderTrainer", "train_encoder"]


class EncoderTrainer(keras.Model):
    """Trains `encoder` against a frozen generator and discriminator.

    Metrics (reset each epoch by fit): loss = mean izi_f loss, image_mse and
    feature_mse, its two terms (feature_mse before the kappa weight).
    """

    def __init__(self, encoder, generator, discriminator, kappa: float = 1.0,
                 **kwargs):
        super().__init__(**kwargs)
        self.encoder = encoder
        self.generator = generator
        self.discriminator = discriminator
        # G and D stay fixed: only E's variables get gradients, and marking
        # them non-trainable keeps them out of any optimizer.
        self.generator.trainable = False
        self.discriminator.trainable = False
        self.kappa = float(kappa)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.image_tracker = keras.metrics.Mean(name="image_mse")
        self.feature_tracker = keras.metrics.Mean(name="feature_mse")
        # The parts arrive built; the wrapper is too, so that its weights and
        # the optimizer slots can be saved and restored.
        self.built = True

    def compile(self, optimizer, **kwargs):
        super().compile(**kwargs)
        self.e_optimizer = optimizer

    def build_optimizers(self):
        """Creates the optimizer slots (needed before restoring a checkpoint)."""
        if not self.e_optimizer.built:
            self.e_optimizer.build(self.encoder.trainable_variables)

    def checkpoint_items(self):
        """What a checkpoint holds to resume training exactly
        (`ModelDir.checkpoint`): E and its optimizer (built here). G and D
        are frozen and come from the model dir's .keras files."""
        self.build_optimizers()
        return {"encoder": self.encoder, "optimizer": self.e_optimizer}

    @property
    def metrics(self):
        return [self.loss_tracker, self.image_tracker, self.feature_tracker]

    def call(self, x, training=False):
        return self.encoder(x, training=training)

    def train_step(self, x):
        if isinstance(x, tuple):  # (images, ...) from a labelled dataset
            x = x[0]
        # f(x) does not depend on E; D is frozen (training=False).
        fx = self.discriminator.features(x, training=False)
        with tf.GradientTape() as tape:
            # training=True: E's BatchNorm uses (and learns) batch statistics.
            z = self.encoder(x, training=True)
            _, image_mse, feature_mse = losses.izif_losses(
                self.generator, self.discriminator, x, fx, z)
            loss = tf.reduce_mean(
                losses.izif_loss(image_mse, feature_mse, self.kappa))
        grads = tape.gradient(loss, self.encoder.trainable_variables)
        self.e_optimizer.apply(grads, self.encoder.trainable_variables)
        self.loss_tracker.update_state(loss)
        self.image_tracker.update_state(image_mse)
        self.feature_tracker.update_state(feature_mse)
        return {m.name: m.result() for m in self.metrics}


def _load_gan(model_dir: ModelDir):
    try:
        return model_dir.load_gan()
    except ConfigError as e:
        raise ConfigError(
            f"--stage=encoder needs a trained GAN in {model_dir.path!r}: {e} "
            f"Train the GAN first (anogan-train --stage=gan "
            f"--model_dir={model_dir} ...), then run anogan-train "
            f"--stage=encoder --model_dir={model_dir}.") from e


def train_encoder(model_dir: str, data_config: DataConfig,
                  train_config: TrainConfig, flags_text: Optional[str] = None,
                  extra_callbacks: Optional[List[keras.callbacks.Callback]] = None,
                  verbose: int = 1) -> TrainResult:
    """Trains the f-AnoGAN encoder of the GAN in `model_dir`, with resume.

    The model dir is locked for the run (`ModelDir.lock`).

    Args:
      model_dir: A model dir with a trained GAN (config.json,
        generator.keras, discriminator.keras); encoder.keras is written here.
      data_config: Training data (normal images); image_size and channels
        are taken from the model's config.json.
      train_config: batch_size, epochs (the total: re-running continues from
        the last finished epoch), steps_per_epoch, encoder_lr, kappa,
        jit_compile, seed and divergence_threshold are used.
      flags_text: Resolved flags, written to `flags_encoder.cfg`.
      extra_callbacks: Added after the built-in callbacks.
      verbose: Keras fit verbosity (1: progress bar).

    Returns:
      A TrainResult (sample_path is None).

    Raises:
      ConfigError: the model dir holds no trained GAN, another run holds
        it, or its encoder checkpoints cannot be restored.
    """
    md = ModelDir(model_dir)
    with md.lock(create=False):
        return _train_encoder(md, data_config, train_config, flags_text,
                              extra_callbacks, verbose)


def _train_encoder(model_dir: ModelDir, data_config: DataConfig,
                   train_config: TrainConfig, flags_text, extra_callbacks,
                   verbose: int) -> TrainResult:
    model_config, generator, discriminator = _load_gan(model_dir)
    data_config = dataclasses.replace(data_config,
                                      image_size=model_config.image_size,
                                      channels=model_config.channels)
    if flags_text is not None:
        model_dir.write_flags(flags_text, "encoder")
    # Seeds the shuffle as well as the weights (see run.fit_and_record).
    keras.utils.set_random_seed(train_config.seed)
    patches, _ = training_patches(data_config)
    steps = train_config.steps_per_epoch or max(
        1, len(patches) // train_config.batch_size)
    dataset = make_train_dataset(patches, train_config.batch_size,
                                 seed=data_config.seed)

    trainer = EncoderTrainer(build_encoder(model_config), generator,
                             discriminator, kappa=train_config.kappa)
    trainer.compile(keras.optimizers.Adam(train_config.encoder_lr,
                                          beta_1=0.9, beta_2=0.999),
                    jit_compile=train_config.jit_compile)
    checkpoint = model_dir.checkpoint("encoder", trainer.checkpoint_items())
    initial_epoch = checkpoint.restore(legacy_model=trainer)
    if initial_epoch:
        logging.info("Resuming the encoder from epoch %d in %s.",
                     initial_epoch, model_dir)
    if initial_epoch >= train_config.epochs:
        logging.info("The encoder already trained for %d epochs (asked for "
                     "%d); nothing to do. Pass a larger --epochs to continue.",
                     initial_epoch, train_config.epochs)
        return TrainResult(model_dir.path, initial_epoch, initial_epoch, {},
                           len(patches), None)

    callbacks = [
        cb.DivergenceGuard(train_config.divergence_threshold, keys=("loss",),
                           advice="Try a lower --encoder_lr; "),
        cb.EpochCheckpoint(model_dir, stage="encoder", checkpoint=checkpoint,
                           model_files=lambda t: {"encoder": t.encoder}),
        keras.callbacks.TensorBoard(model_dir.logs_dir("encoder"),
                                    update_freq="epoch"),
    ] + list(extra_callbacks or [])
    hist = fit_and_record(trainer, dataset, train_config, initial_epoch, steps,
                          callbacks, verbose, model_dir, "encoder")
    return TrainResult(model_dir.path, initial_epoch, train_config.epochs,
                       hist, len(patches), None)
