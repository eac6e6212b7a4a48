"""The in-process latent mapper: a trainable z variable, XLA-compiled steps.

`LatentMapper` owns `z`, a `tf.Variable` of shape [batch_size, latent_dim],
and runs the engine's mapping (`latent.map_latents`, the one the exported
graphs run) in one `tf.function`: the Gamma-step Adam loop carries z as loop
state, assigns z* to the variable and scores the variable's value. With
jit_compile=True the steps are XLA-compiled in chunks of
`latent.XLA_CHUNK_STEPS`, called from a TF while loop (XLA:CPU runs
convolutions inside a compiled while loop several times slower; see
`latent.descend`). G and D run as BN-folded frozen views (`models.frozen`).
The batch size is fixed, so the functions are traced and compiled once; the
last batch of a dataset is padded and its pad rows are dropped. f(x) and
D(x) are computed once per image, before the loop. The best restart is
picked in TF (`latent.keep_best`), as in the exported graphs.

Each row of z is one image's latent: the summed loss gives each row its own
gradient and Adam is elementwise, so images never influence each other.

Modes (f-AnoGAN, with an encoder E): "encoder" replaces the loop by one pass
z = E(x) and scores with `latent.encoder_outputs`; "hybrid" starts the loop
(restart 0) at E(x) instead of a prior draw; further restarts draw from the
prior as in "iterative".
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, Optional

import keras
import numpy as np
import tensorflow as tf

from anogan_tf.mapping import latent
from anogan_tf.mapping.latent import MappingParams

__all__ = ["MappingResult", "LatentMapper", "balanced_batch_size"]


def balanced_batch_size(n_images: int, max_batch: int) -> int:
    """The smallest fixed batch that maps `n_images` in as few calls as
    `max_batch` would, so the padded last batch wastes little compute.

    E.g. 65 images at max 64: batches of 33 (2 calls, 1 pad row) instead of
    64 (2 calls, 63 pad rows); 1 image: a batch of 1. Scores do not depend on
    the batch size (tests/test_mapping.py), only the cost does.
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}.")
    if n_images < 1:
        return max_batch
    calls = -(-n_images // max_batch)
    return -(-n_images // calls)


@dataclasses.dataclass(frozen=True)
class MappingResult:
    """Per-image mapping outputs (the ScoreBatch of DESIGN.md), numpy.

    Attributes:
      anomaly_score: [N] the score selected by MappingConfig.score (A(x)).
      residual_score: [N] R(x) at z*.
      discrimination_score: [N] D(x) at z* (feature matching or bce).
      mapping_loss: [N] the final mapping loss (what restarts minimise).
      residual_map: [N, H, W, C] |x - G(z*)|.
      reconstruction: [N, H, W, C] G(z*).
      latent: [N, latent_dim] z*.
      images_per_second: Mapping throughput of this call.
    """

    anomaly_score: np.ndarray
    residual_score: np.ndarray
    discrimination_score: np.ndarray
    mapping_loss: np.ndarray
    residual_map: np.ndarray
    reconstruction: np.ndarray
    latent: np.ndarray
    images_per_second: float = 0.0


class LatentMapper:
    """Maps batches of images to z* with G and D frozen.

    Args:
      generator, discriminator: Trained models; called with training=False.
      params: The mapping constants (steps, lr, lambda, ...).
      batch_size: Fixed mapping batch size.
      restarts: Initialisations per image; the lowest final loss wins.
      jit_compile: XLA-compile the mapping steps (always explicit).
      encoder: The f-AnoGAN encoder; needed by modes "encoder" and "hybrid".
      mode: "iterative" (the paper), "encoder" or "hybrid".
    """

    def __init__(self, generator, discriminator, params: MappingParams,
                 batch_size: int = 64, restarts: int = 1,
                 jit_compile: bool = True, encoder=None,
                 mode: str = "iterative"):
        if mode not in ("iterative", "encoder", "hybrid"):
            raise ValueError(
                f"mode must be iterative|encoder|hybrid, got {mode!r}.")
        if mode != "iterative" and encoder is None:
            raise ValueError(f"mode {mode!r} needs an encoder; got None.")
        self.encoder = encoder
        self.mode = mode
        self.generator = generator
        self.discriminator = discriminator
        self.params = params
        self.batch_size = int(batch_size)
        self.restarts = int(restarts)
        self.jit_compile = bool(jit_compile)
        self.z = tf.Variable(tf.zeros([self.batch_size, params.latent_dim]),
                             trainable=True, name="z")
        image_shape = (generator.image_size, generator.image_size,
                       generator.channels)
        spec = tf.TensorSpec((self.batch_size,) + image_shape, tf.float32)
        zspec = tf.TensorSpec((self.batch_size, params.latent_dim), tf.float32)
        # Draws use fingerprints (not XLA-compilable); kept out of the loop.
        self._init = tf.function(
            lambda x, r: latent.initial_latents(x, self.params, r),
            input_signature=[spec, tf.TensorSpec((), tf.int64)],
            jit_compile=False)
        # With XLA, `latent.descend` compiles the steps in chunks: XLA:CPU is
        # several times slower on convolutions inside a compiled while loop,
        # so the loop around the chunks is plain TF.
        self._map = tf.function(self._map_batch, input_signature=[spec, zspec],
                                jit_compile=False)
        if encoder is not None:
            self._encode = tf.function(
                lambda x: latent.encode(self.encoder, x, self.params),
                input_signature=[spec], jit_compile=self.jit_compile)
            self._encoder_pass = tf.function(
                self._encoder_batch, input_signature=[spec],
                jit_compile=self.jit_compile)

    def _encoder_batch(self, x):
        g, d = latent.freeze_models(self.generator, self.discriminator,
                                    self.params, xla=self.jit_compile)
        return latent.encoder_pass(g, d, self.encoder, x, self.params)

    def _map_batch(self, x, z0):
        return latent.map_latents(self.generator, self.discriminator, x, z0,
                                  self.params, xla=self.jit_compile,
                                  z_variable=self.z)

    def map_batch(self, x: np.ndarray) -> Dict[str, np.ndarray]:
        """Maps exactly one batch (len(x) <= batch_size); pads and unpads."""
        n = len(x)
        if n == 0 or n > self.batch_size:
            raise ValueError(f"map_batch takes 1..{self.batch_size} images, got {n}.")
        xb = np.zeros((self.batch_size,) + x.shape[1:], np.float32)
        xb[:n] = x
        xb = tf.constant(xb)
        if self.mode == "encoder":  # one pass; restarts do not apply
            return {k: v.numpy()[:n] for k, v in self._encoder_pass(xb).items()}
        best = None
        for r in range(self.restarts):
            if self.mode == "hybrid" and r == 0:
                z0 = self._encode(xb)
            else:
                z0 = self._init(xb, tf.constant(r, tf.int64))
            best = latent.keep_best(best, self._map(xb, z0))
        return {k: v.numpy()[:n] for k, v in best.items()}

    def map(self, images: np.ndarray, progress: bool = True,
            label: str = "mapping", unit: str = "images") -> MappingResult:
        """Maps all `images` [N, H, W, C] (float32 in [-1, 1]) in batches.

        Args:
          images: Model-sized inputs.
          progress: Show a Keras progress bar with inputs/s.
          label: Shown before the bar.
          unit: What the inputs are, plural ("images", or "patches" when
            they were cut from larger images); the progress line counts them
            in this unit.
        """
        images = np.asarray(images, np.float32)
        n = len(images)
        rate = f"{unit}/s"
        bar = keras.utils.Progbar(
            n, unit_name={"images": "image", "patches": "patch"}.get(
                unit, "input"),
            stateful_metrics=[rate]) if progress else None
        if progress:
            steps = 0 if self.mode == "encoder" else self.params.steps
            print(f"{label}: {n} {unit}, mode {self.mode}, {steps} steps, batch "
                  f"{self.batch_size}, restarts {self.restarts}, "
                  f"XLA {self.jit_compile}", flush=True)
        parts = []
        start = time.perf_counter()
        for i in range(0, n, self.batch_size):
            parts.append(self.map_batch(images[i:i + self.batch_size]))
            if bar is not None:
                done = min(n, i + self.batch_size)
                bar.update(done, values=[
                    (rate, done / max(time.perf_counter() - start, 1e-9))])
        elapsed = time.perf_counter() - start
        keys = latent.OUTPUT_KEYS + ("mapping_loss",)
        if not parts:
            raise ValueError("No images to map: the input is empty.")
        merged = {k: np.concatenate([p[k] for p in parts]) for k in keys}
        return MappingResult(**merged, images_per_second=n / max(elapsed, 1e-9))
