"""Training health: is G learning the whole normal class?

A GAN can look healthy by its losses and still draw one image for every z
(mode collapse), and a collapsed G makes AnoGAN's score measure little more
than ink (see BENCHMARKS.md). Two numbers, computed every epoch on G in
inference mode, catch it:

* **diversity**: the mean over pixels of the standard deviation of G(z)
  across `num_samples` prior draws, divided by the same statistic of real
  normal images. A G that ignores z scores 0; one that varies as much as the
  data scores about 1. It can be fooled by a G that alternates between two
  unrelated modes, so it is always read together with coverage.
* **coverage**: how well G can reproduce held-out normal images, measured as
  the mean absolute residual |x - G(z*)| per pixel after a short
  residual-only mapping (`coverage_steps` Adam steps on z from
  `coverage_restarts` starts), and as `coverage_ratio`, that residual divided
  by the residual of the best constant image (the per-pixel median of the
  held-out images). 0 is perfect; about 1 means G does no better than the
  average image, which is what a collapsed G gives.

Both are pure functions of (G, images) here; `TrainingHealth` is the Keras
callback that logs them (to `logs` and so to history.json and TensorBoard)
and warns when diversity is still low when training ends.

The coverage mapping is the scorer's own (`mapping.LatentMapper` on the
mapping engine), with a residual-only `config.MappingConfig`: this is the one
place training uses the mapping package, because measuring coverage means
mapping images. The losses themselves live in `anogan_tf.losses`.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional

import keras
import numpy as np
from absl import logging

from anogan_tf.config import MappingConfig
from anogan_tf.mapping import LatentMapper, MappingParams
from anogan_tf.training.gan import draw_prior_numpy, inference_generator

__all__ = ["HealthConfig", "sample_diversity", "pixel_spread",
           "coverage", "TrainingHealth", "DIVERSITY_WARNING",
           "COLLAPSE_ADVICE"]

DIVERSITY_WARNING = 0.5
COLLAPSE_ADVICE = (
    "G draws nearly the same image for every z (mode collapse), so its "
    "anomaly scores will measure brightness rather than abnormality. Likely "
    "fix: train with --gan_loss=wgan_gp (its critic has no BatchNorm) and "
    "--mode_seeking=1 as flags/digits.cfg does, or train longer; check "
    "samples/ for varied images.")


@dataclasses.dataclass(frozen=True)
class HealthConfig:
    """How the health metrics are computed.

    Attributes:
      num_samples: Prior draws for the diversity (fixed z, seeded).
      coverage_steps: Adam steps of the residual-only coverage mapping.
      coverage_restarts: Starts per held-out image (the best is kept).
      coverage_lr: Adam learning rate on z for the coverage mapping.
      max_coverage_images: At most this many held-out inputs (a seeded
        choice) are mapped each epoch, so the check costs the same on a
        large set.
      warn_below: Warn when the diversity of the run's last epoch is below
        this. Early epochs are legitimately undiverse (a GAN first learns
        the mean image, then the modes: BENCHMARKS.md), so only the end of
        training is judged.
      seed: Seed of the fixed z draws and the mapping starts.
    """

    num_samples: int = 256
    coverage_steps: int = 50
    coverage_restarts: int = 2
    coverage_lr: float = 0.1
    max_coverage_images: int = 128
    warn_below: float = DIVERSITY_WARNING
    seed: int = 0


def pixel_spread(images: np.ndarray) -> float:
    """Mean over pixels of the per-pixel standard deviation across images."""
    images = np.asarray(images, np.float64)
    if len(images) < 2:
        raise ValueError(f"pixel_spread needs >= 2 images, got {len(images)}.")
    return float(np.mean(np.std(images, axis=0)))


def sample_diversity(samples: np.ndarray, real: np.ndarray) -> float:
    """pixel_spread(samples) / pixel_spread(real); 0 for a constant G.

    Raises:
      ValueError: the real images do not vary at all (nothing to compare to).
    """
    ref = pixel_spread(real)
    if ref <= 1e-12:
        raise ValueError("The real images are all identical; diversity is "
                         "undefined. Check the training data.")
    return pixel_spread(samples) / ref


def coverage(mapper: LatentMapper, images: np.ndarray) -> Dict[str, float]:
    """Mean |x - G(z*)| per pixel of `images`, and its ratio to the best
    constant image's residual (the per-pixel median of `images`).

    Args:
      mapper: A residual-only LatentMapper over the G being checked.
      images: Held-out normal images [N, H, W, C] in [-1, 1].
    """
    result = mapper.map(images, progress=False)
    residual = float(np.mean(result.residual_map))
    median = np.median(images, axis=0, keepdims=True)
    baseline = float(np.mean(np.abs(images - median)))
    return {"coverage_residual": residual,
            "coverage_ratio": residual / baseline if baseline > 0 else 0.0}


class TrainingHealth(keras.callbacks.Callback):
    """Adds diversity, coverage_residual and coverage_ratio to each epoch's
    logs (so fit's history, history.json and TensorBoard carry them), and
    warns at the end of training when G has collapsed.

    Args:
      real: Normal images for the diversity reference (training images).
      holdout: Held-out normal images for coverage (never trained on); None
        or empty: coverage is not computed.
      latent_dim, prior: The GAN's latent setup.
      config: HealthConfig.
    """

    def __init__(self, real: np.ndarray, holdout: Optional[np.ndarray],
                 latent_dim: int, prior: str,
                 config: HealthConfig = HealthConfig()):
        super().__init__()
        self.config = config
        rng = np.random.default_rng(config.seed)
        take = min(len(real), 1024)
        self.real = np.asarray(real[rng.choice(len(real), take, replace=False)]
                               if len(real) > take else real, np.float32)
        if holdout is not None and len(holdout) > config.max_coverage_images:
            holdout = holdout[np.sort(rng.choice(
                len(holdout), config.max_coverage_images, replace=False))]
        self.holdout = (None if holdout is None or len(holdout) == 0
                        else np.asarray(holdout, np.float32))
        self.z = draw_prior_numpy(rng, config.num_samples, latent_dim, prior)
        # Residual only (lambda 0), Adam's default constants, no XLA.
        self.mapping_params = MappingParams(
            mapping=MappingConfig(
                steps=config.coverage_steps, lr=config.coverage_lr,
                lambda_weight=0.0, discrimination_loss="feature",
                score="residual", seed=config.seed,
                restarts=config.coverage_restarts, jit_compile=False),
            latent_dim=latent_dim, prior=prior)
        self._mapper = None
        self.last = None
        self.warnings = []

    def _get_mapper(self) -> LatentMapper:
        if self._mapper is None:
            gan = self.model
            batch = min(len(self.holdout), 128)
            self._mapper = LatentMapper(
                inference_generator(gan), gan.discriminator,
                self.mapping_params,
                batch_size=batch, restarts=self.mapping_params.mapping.restarts,
                jit_compile=self.mapping_params.mapping.jit_compile)
        return self._mapper

    def measure(self) -> Dict[str, float]:
        """The health metrics of the model's current G."""
        samples = np.asarray(inference_generator(self.model)(
            self.z, training=False))
        out = {"diversity": sample_diversity(samples, self.real)}
        if self.holdout is not None:
            out.update(coverage(self._get_mapper(), self.holdout))
        return out

    def on_epoch_end(self, epoch, logs=None):
        metrics = self.measure()
        if logs is not None:
            logs.update(metrics)
        text = ", ".join(f"{k} {v:.3f}" for k, v in metrics.items())
        logging.info("Epoch %d health: %s", epoch + 1, text)
        self.last = (epoch + 1, metrics)

    def on_train_end(self, logs=None):
        if self.last is None:
            return
        epoch, metrics = self.last
        if metrics["diversity"] < self.config.warn_below:
            message = (f"Training ended (epoch {epoch}) with sample diversity "
                       f"{metrics['diversity']:.2f}, below "
                       f"{self.config.warn_below} of the real images' "
                       f"spread. " + COLLAPSE_ADVICE)
            self.warnings.append(message)
            logging.warning("%s", message)
