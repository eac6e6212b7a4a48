"""Training speed of the GAN recipes, measured in one run: seconds per G step.

The one-class flagfiles train with R1 + mode seeking (one D step per G step),
the previous recipe was WGAN-GP + mode seeking (5 critic steps per G step,
each with a double backward pass for the gradient penalty), and the paper's
DCGAN has one D step with BatchNorm. This script builds each recipe with the
library's own `GAN` (the `anogan-train` step, un-jitted as the flagfiles
run it), warms each up for one epoch (tracing), then times `--epochs`
epochs of `--steps` G steps on the same random 32x32 batches, interleaving
the recipes so a change in machine load hits them alike. It prints seconds
per G step, the ratio to WGAN-GP, and the time that a flagfile's budget
(`--budget_steps` G steps) takes, and writes
`benchmarks/results/recipe_speed.json`.

  python benchmarks/recipe_speed.py                 (3 epochs of 50 steps)
  python benchmarks/recipe_speed.py --epochs=1 --steps=10   (a smoke run)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from anogan_tf.config import ModelConfig  # noqa: E402
from anogan_tf.models import build_models  # noqa: E402
from anogan_tf.training import GAN  # noqa: E402

# name: (ModelConfig overrides, GAN kwargs, Adam (lr, beta_1, beta_2))
RECIPES = {
    "r1_ms (flags/digits.cfg)": (
        {"gan_loss": "dcgan", "d_norm": "none"},
        {"gan_loss": "dcgan", "r1_gamma": 10.0, "mode_seeking": 1.0},
        (2e-4, 0.5, 0.999)),
    "wgan_gp_ms (previous)": (
        {"gan_loss": "wgan_gp", "d_norm": "none"},
        {"gan_loss": "wgan_gp", "n_critic": 5, "mode_seeking": 1.0},
        (1e-4, 0.0, 0.9)),
    "dcgan_bn (the paper)": (
        {"gan_loss": "dcgan", "d_norm": "batch"},
        {"gan_loss": "dcgan"},
        (2e-4, 0.5, 0.999)),
}


def build(name: str, base_filters: int, seed: int = 0) -> GAN:
    model_kw, gan_kw, (lr, b1, b2) = RECIPES[name]
    keras.utils.set_random_seed(seed)
    g, d = build_models(ModelConfig(image_size=32, channels=1,
                                    base_filters=base_filters, **model_kw))
    gan = GAN(g, d, g.latent_dim, seed=seed, **gan_kw)
    gan.compile(keras.optimizers.Adam(lr, beta_1=b1, beta_2=b2),
                keras.optimizers.Adam(lr, beta_1=b1, beta_2=b2),
                jit_compile=False)
    return gan


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--steps", type=int, default=50, help="G steps an epoch")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--base_filters", type=int, default=16)
    p.add_argument("--budget_steps", type=int, default=2000,
                   help="G steps of a flagfile's budget (digits.cfg: 2000)")
    args = p.parse_args(argv)
    x = np.random.default_rng(0).uniform(
        -1, 1, (args.batch_size * 8, 32, 32, 1)).astype(np.float32)
    data = (tf.data.Dataset.from_tensor_slices(x).repeat()
            .batch(args.batch_size, drop_remainder=True))
    gans = {name: build(name, args.base_filters) for name in RECIPES}
    for gan in gans.values():  # warm-up: trace the train step
        gan.fit(data, epochs=1, steps_per_epoch=2, verbose=0)
    seconds = {name: [] for name in RECIPES}
    for _ in range(args.epochs):
        for name, gan in gans.items():
            start = time.perf_counter()
            gan.fit(data, epochs=1, steps_per_epoch=args.steps, verbose=0)
            seconds[name].append((time.perf_counter() - start) / args.steps)
    ref = float(np.median(seconds["wgan_gp_ms (previous)"]))
    rows = []
    for name, values in seconds.items():
        per_step = float(np.median(values))
        rows.append({"recipe": name, "s_per_g_step": per_step,
                     "ratio_to_wgan_gp": per_step / ref,
                     f"s_for_{args.budget_steps}_steps":
                         per_step * args.budget_steps})
    columns = ["recipe", "s_per_g_step", "ratio_to_wgan_gp",
               f"s_for_{args.budget_steps}_steps"]
    print(_common.format_table(rows, columns))
    _common.write_results(_common.DEFAULT_OUTPUT_DIR, "recipe_speed", rows,
                          {"args": vars(args),
                           "machine": _common.machine_info()})


if __name__ == "__main__":
    main()
