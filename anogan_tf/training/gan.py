"""The GAN as a keras.Model with a custom train_step (keras-io DCGAN style).

`GAN` receives its generator and discriminator, owns a SeedGenerator for the
latent draws, and has one tape and one `optimizer.apply` per player. Its
`compile` takes the two optimizers and forwards the rest (notably
`jit_compile`, always explicit) to `keras.Model.compile`. With
jit_compile=True it also switches G's and D's stride-2 layers to the
polyphase form (`models.phase_conv`): XLA:CPU turns the native transposed
convolutions into slow generic loops (`benchmarks/training.py`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from anogan_tf.training import losses

__all__ = ["GAN", "sample_prior", "draw_prior_numpy", "ema_decay_at",
           "inference_generator"]


def sample_prior(n, latent_dim: int, prior: str, seed):
    """Draws n latent codes from the training prior.

    Args:
      n: Number of codes (may be a tensor).
      latent_dim: Size of z.
      prior: "uniform" on [-1, 1] (DCGAN, the paper) or "normal" N(0, I).
      seed: A keras SeedGenerator (or anything keras.random accepts).
    """
    if prior == "uniform":
        return keras.random.uniform((n, latent_dim), -1.0, 1.0, seed=seed)
    return keras.random.normal((n, latent_dim), seed=seed)


def draw_prior_numpy(rng, n: int, latent_dim: int, prior: str):
    """n fixed latent codes [n, latent_dim] (float32) drawn with a numpy
    Generator from the training prior (for sample grids and health checks)."""
    if prior == "uniform":
        z = rng.uniform(-1.0, 1.0, (n, latent_dim))
    else:
        z = rng.standard_normal((n, latent_dim))
    return z.astype("float32")


def ema_decay_at(decay: float, step):
    """The EMA decay used after G step `step` (1, 2, ...): min(decay,
    (1 + step) / (10 + step)), the warm-up of tf.train.ExponentialMovingAverage
    with num_updates, so early steps are not averaged with the random init."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(tf.cast(decay, tf.float32), (1.0 + step) / (10.0 + step))


def inference_generator(model):
    """The G a trained model samples, checks and saves: a GAN's EMA copy
    when it keeps one, else its `generator`."""
    return getattr(model, "inference_generator", model.generator)


class GAN(keras.Model):
    """Trains a generator and discriminator with the chosen GAN objective.

    `mode_seeking` > 0 adds MSGAN's mode-seeking regulariser to G's loss
    with that weight (`losses.mode_seeking_loss`), against mode collapse.
    `r1_gamma` > 0 adds gamma / 2 times the R1 penalty on real images to D's
    loss (dcgan or hinge; `losses.r1_penalty`).

    `generator_ema` (optional, built like `generator`) is an exponential
    moving average of G's weights with decay `ema_decay` (Karras et al.
    2018; Yazici et al. 2019), updated after every G step. It is what the
    sample grids, the health metrics, model selection and the saved
    generator.keras use (`inference_generator`). Averaging usually helps
    long runs; at the CPU budgets of benchmarks/oneclass.py (1000-3000 G
    steps, decay 0.999) it reproduced held-out images worse than the last
    iterate (BENCHMARKS.md), so it is off by default. Its BatchNorm
    statistics are recomputed for its own weights by
    `refresh_ema_statistics` (a callback calls it at each epoch end).

    Metrics (reset each epoch by fit): d_loss, g_loss, d_real = mean D(x) and
    d_fake = mean D(G(z)), as sigmoid probabilities (for wgan_gp/hinge the
    sigmoid of the critic value, useful only as a trend).
    """

    def __init__(self, generator, discriminator, latent_dim: int,
                 prior: str = "uniform", gan_loss: str = "dcgan",
                 n_critic: int = 1, gp_weight: float = 10.0, seed: int = 0,
                 mode_seeking: float = 0.0, r1_gamma: float = 0.0,
                 generator_ema=None, ema_decay: float = 0.999, **kwargs):
        super().__init__(**kwargs)
        if r1_gamma and gan_loss == "wgan_gp":
            raise ValueError("r1_gamma goes with gan_loss dcgan or hinge; "
                             "wgan_gp has its own gradient penalty.")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = latent_dim
        self.prior = prior
        self.gan_loss = gan_loss
        self.n_critic = n_critic
        self.gp_weight = gp_weight
        self.mode_seeking = float(mode_seeking)
        self.r1_gamma = float(r1_gamma)
        self.generator_ema = generator_ema
        self.ema_decay = float(ema_decay)
        if generator_ema is not None:
            # Start the average at G's initial weights.
            for e, w in zip(generator_ema.weights, generator.weights):
                e.assign(w)
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")
        # G and D arrive built; mark the wrapper built so its weights (and the
        # optimizer slots) can be saved and restored.
        self.built = True

    def compile(self, d_optimizer, g_optimizer, conv_impl: str = "auto",
                **kwargs):
        """Args: the optimizers; conv_impl "auto" (phase under jit_compile,
        else native), "native" or "phase"; the rest goes to keras."""
        super().compile(**kwargs)
        if conv_impl == "auto":
            conv_impl = "phase" if kwargs.get("jit_compile") is True else "native"
        self.generator.set_conv_impl(conv_impl)
        self.discriminator.set_conv_impl(conv_impl)
        if self.generator_ema is not None:
            self.generator_ema.set_conv_impl(conv_impl)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer

    def build_optimizers(self):
        """Creates the optimizer slots (needed before restoring a checkpoint)."""
        if not self.d_optimizer.built:
            self.d_optimizer.build(self.discriminator.trainable_variables)
        if not self.g_optimizer.built:
            self.g_optimizer.build(self.generator.trainable_variables)

    def checkpoint_items(self):
        """What a checkpoint holds to resume training exactly
        (`ModelDir.checkpoint`): G, D, the EMA copy, both optimizers (built
        here) and the SeedGenerator of the latent draws."""
        self.build_optimizers()
        return {"generator": self.generator,
                "discriminator": self.discriminator,
                "generator_ema": self.generator_ema,
                "d_optimizer": self.d_optimizer,
                "g_optimizer": self.g_optimizer,
                "seed": self.seed_generator}

    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker,
                self.d_real_tracker, self.d_fake_tracker]

    def call(self, z, training=False):
        return self.generator(z, training=training)

    @property
    def inference_generator(self):
        """The G to sample, check and save: the EMA copy when there is one."""
        return (self.generator if self.generator_ema is None
                else self.generator_ema)

    def _update_ema(self):
        """generator_ema <- d * generator_ema + (1 - d) * generator (trainable
        weights; BatchNorm statistics are refreshed separately)."""
        d = ema_decay_at(self.ema_decay, self.g_optimizer.iterations)
        for e, w in zip(self.generator_ema.trainable_weights,
                        self.generator.trainable_weights):
            e.assign(d * e + (1.0 - d) * w)

    def refresh_ema_statistics(self, num_batches: int = 40,
                               batch_size: int = 64, seed: int = 0) -> None:
        """Recomputes the EMA generator's BatchNorm moving statistics for its
        own weights: `num_batches` forward passes in training mode on seeded
        prior draws (momentum 0.9 forgets the old statistics to 0.9^40 =
        1.5%). No-op without an EMA generator. Trainable weights do not
        change."""
        if self.generator_ema is None:
            return
        rng = np.random.default_rng([seed, 11])
        for _ in range(num_batches):
            z = draw_prior_numpy(rng, batch_size, self.latent_dim, self.prior)
            self.generator_ema(z, training=True)

    def _d_loss(self, real, fake, real_logits, fake_logits):
        if self.gan_loss in ("dcgan", "hinge"):
            loss = (losses.dcgan_discriminator_loss(real_logits, fake_logits)
                    if self.gan_loss == "dcgan" else
                    losses.hinge_discriminator_loss(real_logits, fake_logits))
            if self.r1_gamma:
                loss += 0.5 * self.r1_gamma * losses.r1_penalty(
                    lambda x: self.discriminator(x, training=True), real)
            return loss
        # wgan_gp: alpha ~ U(0, 1) per sample (not normal: a known slip).
        alpha = keras.random.uniform((tf.shape(real)[0],), 0.0, 1.0,
                                     seed=self.seed_generator)
        gp = losses.gradient_penalty(
            lambda x: self.discriminator(x, training=True), real, fake, alpha)
        return (losses.wasserstein_discriminator_loss(real_logits, fake_logits)
                + self.gp_weight * gp)

    def _g_loss(self, fake_logits):
        if self.gan_loss == "dcgan":
            return losses.dcgan_generator_loss(fake_logits)
        if self.gan_loss == "hinge":
            return losses.hinge_generator_loss(fake_logits)
        return losses.wasserstein_generator_loss(fake_logits)

    def train_step(self, real):
        if isinstance(real, tuple):  # (images, ...) from a labelled dataset
            real = real[0]
        n = tf.shape(real)[0]
        # Discriminator / critic update(s). n_critic > 1 reuses the batch.
        for _ in range(self.n_critic):
            z = sample_prior(n, self.latent_dim, self.prior, self.seed_generator)
            with tf.GradientTape() as tape:
                fake = self.generator(z, training=True)
                real_logits = self.discriminator(real, training=True)
                fake_logits = self.discriminator(fake, training=True)
                d_loss = self._d_loss(real, fake, real_logits, fake_logits)
            grads = tape.gradient(d_loss, self.discriminator.trainable_variables)
            self.d_optimizer.apply(grads, self.discriminator.trainable_variables)

        # Generator update, on fresh z so G is not fit to D's last batch.
        z = sample_prior(n, self.latent_dim, self.prior, self.seed_generator)
        with tf.GradientTape() as tape:
            fake = self.generator(z, training=True)
            fake_logits = self.discriminator(fake, training=True)
            g_loss = self._g_loss(fake_logits)
            if self.mode_seeking:
                # MSGAN: the batch's two halves are the code pairs.
                half = n // 2
                g_loss += self.mode_seeking * losses.mode_seeking_loss(
                    fake[:half], fake[half:2 * half], z[:half], z[half:2 * half])
        grads = tape.gradient(g_loss, self.generator.trainable_variables)
        self.g_optimizer.apply(grads, self.generator.trainable_variables)
        if self.generator_ema is not None:
            self._update_ema()

        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.d_real_tracker.update_state(tf.sigmoid(real_logits))
        self.d_fake_tracker.update_state(tf.sigmoid(fake_logits))
        return {m.name: m.result() for m in self.metrics}
