"""GAN training throughput: the project's `GAN.train_step` vs a keras-io style step.

Variants, all trained with `fit` on the same random 64x64 images, with fresh
G and D of the same size (the project's `Generator`/`Discriminator`) and
Adam(2e-4, beta_1=0.5) for both players:

  gan            `anogan_tf.training.gan.GAN` (dcgan loss), jit_compile=False
  gan_xla        the same, jit_compile=True
  reference      a plain keras-io style model, written for this benchmark:
                 one subclassed `keras.Model`, D trained on the concatenated
                 [fake; real] batch with noisy labels and
                 `keras.losses.BinaryCrossentropy(from_logits=True)`, then G
                 with "misleading" labels; jit_compile=False, which is what
                 keras-io's default "auto" resolves to on a CPU.
  reference_xla  the same with jit_compile=True.

Timing: one `fit` call of warm-up + timed steps; a callback stamps the end of
each batch, and the median batch time after the warm-up steps is reported.
images/s counts the real images consumed (the batch size) per step.

  python benchmarks/training.py --quick
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags

import _common

_QUICK = flags.DEFINE_boolean(
    "quick", False, "About a minute: base_filters 16, few steps.")
_BASE_FILTERS = flags.DEFINE_multi_integer(
    "base_filters", None, "Model widths (default 16 and 64; quick: 16).")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Training batch size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Image side (x16).")
_WARMUP = flags.DEFINE_integer(
    "warmup_steps", 2, "Untimed steps (tracing, XLA compilation).")
_STEPS = flags.DEFINE_integer(
    "steps", None, "Timed steps (default 10; quick: 4).")
_VARIANTS = flags.DEFINE_multi_enum(
    "variants", ["gan", "gan_xla", "reference", "reference_xla"],
    ["gan", "gan_xla", "reference", "reference_xla"], "What to time.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", _common.DEFAULT_OUTPUT_DIR, "Where CSV and JSON go.")
_TAG = flags.DEFINE_string(
    "tag", None, "Output file stem suffix: training_<tag>.* (default quick "
    "or full).")

COLUMNS = ["base_filters", "batch", "variant", "jit_compile", "step_ms",
           "step_ms_min", "img_per_s", "ratio_vs_reference", "first_step_s"]


def _reference_model_class():
    import keras
    import tensorflow as tf

    class ReferenceGAN(keras.Model):
        """A DCGAN trained the way the keras-io DCGAN example trains it."""

        def __init__(self, discriminator, generator, latent_dim, seed=0):
            super().__init__()
            self.discriminator = discriminator
            self.generator = generator
            self.latent_dim = latent_dim
            self.seed_generator = keras.random.SeedGenerator(seed)
            self.d_loss_metric = keras.metrics.Mean(name="d_loss")
            self.g_loss_metric = keras.metrics.Mean(name="g_loss")
            self.built = True

        def compile(self, d_optimizer, g_optimizer, loss_fn, **kwargs):
            super().compile(**kwargs)
            self.d_optimizer = d_optimizer
            self.g_optimizer = g_optimizer
            self.loss_fn = loss_fn

        @property
        def metrics(self):
            return [self.d_loss_metric, self.g_loss_metric]

        def train_step(self, real_images):
            n = tf.shape(real_images)[0]
            z = keras.random.uniform((n, self.latent_dim), -1.0, 1.0,
                                     seed=self.seed_generator)
            fake = self.generator(z, training=True)
            # One D pass over fakes (label 1) and reals (label 0), with a
            # little label noise as in the keras-io example.
            images = tf.concat([fake, real_images], axis=0)
            labels = tf.concat([tf.ones((n, 1)), tf.zeros((n, 1))], axis=0)
            labels += 0.05 * keras.random.uniform(tf.shape(labels),
                                                  seed=self.seed_generator)
            with tf.GradientTape() as tape:
                d_loss = self.loss_fn(
                    labels, self.discriminator(images, training=True))
            grads = tape.gradient(d_loss, self.discriminator.trainable_weights)
            self.d_optimizer.apply_gradients(
                zip(grads, self.discriminator.trainable_weights))

            # G step: fresh z, labelled "real" (0) to fool D.
            z = keras.random.uniform((n, self.latent_dim), -1.0, 1.0,
                                     seed=self.seed_generator)
            with tf.GradientTape() as tape:
                logits = self.discriminator(self.generator(z, training=True),
                                            training=True)
                g_loss = self.loss_fn(tf.zeros((n, 1)), logits)
            grads = tape.gradient(g_loss, self.generator.trainable_weights)
            self.g_optimizer.apply_gradients(
                zip(grads, self.generator.trainable_weights))
            self.d_loss_metric.update_state(d_loss)
            self.g_loss_metric.update_state(g_loss)
            return {"d_loss": self.d_loss_metric.result(),
                    "g_loss": self.g_loss_metric.result()}

    return ReferenceGAN


def _batch_timer():
    import keras

    class BatchTimer(keras.callbacks.Callback):
        """Stamps the start of fit and the end of every training batch."""

        def __init__(self):
            super().__init__()
            self.stamps: List[float] = []

        def on_train_begin(self, logs=None):
            self.stamps = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    return BatchTimer()


def time_variant(variant: str, base_filters: int, image_size: int,
                 batch: int, warmup: int, steps: int) -> Dict[str, float]:
    import keras
    import tensorflow as tf
    from anogan_tf.training.gan import GAN

    config, g, d = _common.build_models(base_filters, image_size)
    jit = variant.endswith("_xla")

    def adam():
        return keras.optimizers.Adam(2e-4, beta_1=0.5)

    if variant.startswith("gan"):
        model = GAN(g, d, config.latent_dim, config.prior, "dcgan")
        model.compile(d_optimizer=adam(), g_optimizer=adam(), jit_compile=jit)
    else:
        model = _reference_model_class()(d, g, config.latent_dim)
        model.compile(d_optimizer=adam(), g_optimizer=adam(),
                      loss_fn=keras.losses.BinaryCrossentropy(from_logits=True),
                      jit_compile=jit)
    images = _common.random_images(4 * batch, image_size, config.channels, 3)
    ds = (tf.data.Dataset.from_tensor_slices(images).repeat()
          .batch(batch, drop_remainder=True).prefetch(2))
    timer = _batch_timer()
    model.fit(ds, epochs=1, steps_per_epoch=warmup + steps, verbose=0,
              shuffle=False, callbacks=[timer])
    durations = [b - a for a, b in zip(timer.stamps, timer.stamps[1:])]
    timed = durations[warmup:]
    step = statistics.median(timed)
    return {"variant": variant, "jit_compile": jit,
            "base_filters": base_filters, "batch": batch,
            "step_ms": step * 1e3, "step_ms_min": min(timed) * 1e3,
            "img_per_s": batch / step, "first_step_s": durations[0],
            "timed_steps": len(timed)}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quick = _QUICK.value
    bases = _BASE_FILTERS.value or ([16] if quick else [16, 64])
    steps = _STEPS.value or (4 if quick else 10)
    tag = _TAG.value or ("quick" if quick else "full")
    start = time.perf_counter()
    info = _common.machine_info()
    print("Machine:\n" + _common.format_machine_info(info), flush=True)
    rows = []
    for b in bases:
        for variant in _VARIANTS.value:
            r = time_variant(variant, b, _IMAGE_SIZE.value, _BATCH_SIZE.value,
                             _WARMUP.value, steps)
            rows.append(r)
            print(f"  base {b} {variant}: {r['img_per_s']:.1f} img/s "
                  f"({r['step_ms']:.0f} ms/step)", flush=True)
        ref = [r for r in rows
               if r["base_filters"] == b and r["variant"] == "reference"]
        for r in rows:
            if r["base_filters"] == b:
                r["ratio_vs_reference"] = (r["img_per_s"] / ref[0]["img_per_s"]
                                           if ref else float("nan"))
    elapsed = time.perf_counter() - start
    info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nGAN training, {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}x1, batch "
          f"{_BATCH_SIZE.value}: median of {steps} timed steps after "
          f"{_WARMUP.value} warm-up steps (one fit call each).")
    print("ratio_vs_reference: images/s over the keras-io style reference "
          "without XLA (keras-io's 'auto' on a CPU).\n")
    print(_common.format_table(rows, COLUMNS))
    paths = _common.write_results(_OUTPUT_DIR.value, f"training_{tag}", rows,
                                  {"machine": info, "elapsed_s": elapsed})
    print(f"\nWrote {', '.join(paths)} in {elapsed:.0f} s.")


if __name__ == "__main__":
    app.run(main)
