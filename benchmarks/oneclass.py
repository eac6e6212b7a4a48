"""One-class benchmark: every class of every one-class set, against PCA.

For each set (`digits`: scikit-learn's bundled 8x8 digits, ~125 training
images a class; `glyphs`: digits rendered from fonts with random affine,
stroke and elastic distortion, 2000 training images a class) and each normal
class, at a fixed training budget:

1. trains a GAN with the recipe given by the flags (by default the one
   `flags/digits.cfg` ships) on the normal training images, with the health
   metrics and model selection of `anogan-train`;
2. maps the test images and the held-out normal calibration images once
   (iterative, the paper's objective) and scores them several ways from that
   one mapping: the paper's A(x), the L1 residual R, the squared residual,
   the feature term D, and R and D standardised by the calibration images'
   mean and standard deviation before they are added;
3. optionally trains the f-AnoGAN encoder and scores in encoder mode (the
   flagfiles' score) and in hybrid mode (mapping started at E(x));
4. in the same run, scores PCA(32) reconstruction error (squared), fitted
   on exactly the same training images, on exactly the same test images.

Prints a table per set with a mean row and writes
`benchmarks/results/oneclass[_quick].json`.

  python benchmarks/oneclass.py --quick
  python benchmarks/oneclass.py                      (all classes, both sets)
  python benchmarks/oneclass.py --sets=glyphs --classes=3,8 --train_seconds=300

The defaults are `flags/digits.cfg`'s recipe (R1 + mode seeking, 40 epochs
of 50 G steps, a 10-epoch encoder); pass e.g. `--gan_loss=wgan_gp
--n_critic=5 --r1_gamma=0 --g_lr=1e-4 --d_lr=1e-4` for the previous one.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from typing import Dict, List

import keras
import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from anogan_tf.config import (DataConfig, MappingConfig, ModelConfig,  # noqa: E402
                              TrainConfig)
from anogan_tf.common_flags import resolve_d_norm  # noqa: E402
from anogan_tf.data import load_images  # noqa: E402
from anogan_tf.mapping import LatentMapper, MappingParams  # noqa: E402
from anogan_tf.models.io import load_encoder, load_model_dir  # noqa: E402
from anogan_tf.scoring.evaluation import score_variants  # noqa: E402
from anogan_tf.training import train_gan  # noqa: E402
from anogan_tf.training.encoder import train_encoder  # noqa: E402

SCORES = ("anogan", "residual", "residual_sq", "feature", "critic",
          "standardised", "standardised_sq", "standardised_all")


class TimeBudget(keras.callbacks.Callback):
    """Stops training at the end of the first epoch past `seconds`."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.start = None

    def on_train_begin(self, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if self.seconds and time.perf_counter() - self.start > self.seconds:
            self.model.stop_training = True


def pca_scores(train: np.ndarray, test: np.ndarray, k: int = 32) -> np.ndarray:
    """Squared PCA(k) reconstruction error of `test` (PCA fitted on train)."""
    a = train.reshape(len(train), -1)
    b = test.reshape(len(test), -1)
    pca = PCA(n_components=min(k, len(a) - 1, a.shape[1]), random_state=0)
    pca.fit(a)
    recon = pca.inverse_transform(pca.transform(b))
    return np.sum((b - recon) ** 2, axis=1)


def critic_scores(discriminator, images: np.ndarray) -> np.ndarray:
    """-D(x): the critic's own verdict on the query (higher: less real)."""
    logits = [np.asarray(discriminator(images[i:i + 256], training=False))
              for i in range(0, len(images), 256)]
    return -np.concatenate(logits).reshape(-1).astype(np.float64)


def standardise(test: Dict[str, np.ndarray], cal: Dict[str, np.ndarray]
                ) -> Dict[str, np.ndarray]:
    """Adds R and D standardised by the calibration (normal) statistics."""
    def z(key):
        mu, sd = np.mean(cal[key]), np.std(cal[key]) + 1e-12
        return (test[key] - mu) / sd
    out = dict(test)
    out["standardised"] = z("residual") + z("feature")
    out["standardised_sq"] = z("residual_sq") + z("feature")
    out["standardised_all"] = z("residual_sq") + z("feature") + z("critic")
    return out


def run_class(dataset: str, normal_class: int, args, out_dir: str) -> Dict:
    data = DataConfig(dataset=dataset, image_size=32, channels=1,
                      normal_class=normal_class, seed=args.seed,
                      **({"glyphs_num_train": args.glyphs_num_train,
                          "glyphs_num_test": args.glyphs_num_test}
                         if dataset == "glyphs" else {}))
    model_config = ModelConfig(
        image_size=32, channels=1, latent_dim=args.latent_dim,
        base_filters=args.base_filters, gan_loss=args.gan_loss,
        spectral_norm=args.spectral_norm,
        d_norm=resolve_d_norm(args.d_norm, args.gan_loss, args.spectral_norm))
    n_critic = args.n_critic or (5 if args.gan_loss == "wgan_gp" else 1)
    model_dir = os.path.join(out_dir, f"{dataset}_{normal_class}")
    start = time.perf_counter()
    trained = train_gan(
        model_config, data,
        TrainConfig(model_dir=model_dir, batch_size=args.batch_size,
                    epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                    g_lr=args.g_lr, d_lr=args.d_lr,
                    n_critic=n_critic, seed=args.seed, jit_compile=False,
                    mode_seeking=args.mode_seeking,
                    select_best=not args.no_select, g_ema=args.g_ema,
                    r1_gamma=args.r1_gamma),
        extra_callbacks=[TimeBudget(args.train_seconds)], verbose=0)
    train_seconds = time.perf_counter() - start
    with open(os.path.join(model_dir, "history.json")) as f:
        history = json.load(f)["epochs"]
    last = history[-1]

    _, g, d = load_model_dir(model_dir)
    mapping = MappingConfig(steps=args.mapping_steps, batch_size=128,
                            restarts=args.restarts, jit_compile=False,
                            seed=args.seed)
    params = MappingParams.create(model_config, mapping)
    mapper = LatentMapper(g, d, params, batch_size=128,
                          restarts=args.restarts, jit_compile=False)
    train_images = load_images(data, "train")
    test = load_images(data, "test")
    cal = load_images(data, "calibration")
    labels = np.asarray(test.labels)
    start = time.perf_counter()
    test_scores = score_variants(mapper.map(test.images, progress=False),
                                 mapping.lambda_weight)
    cal_scores = score_variants(mapper.map(cal.images, progress=False),
                                mapping.lambda_weight)
    test_scores["critic"] = critic_scores(d, test.images)
    cal_scores["critic"] = critic_scores(d, cal.images)
    map_seconds = time.perf_counter() - start
    scores = standardise(test_scores, cal_scores)
    row = {"set": dataset, "class": normal_class,
           "pca": roc_auc_score(labels, pca_scores(train_images.images,
                                                   test.images))}
    row.update({s: roc_auc_score(labels, scores[s]) for s in SCORES})
    if args.encoder_epochs:
        train_encoder(model_dir, data,
                      TrainConfig(model_dir=model_dir, batch_size=args.batch_size,
                                  epochs=args.encoder_epochs,
                                  steps_per_epoch=args.steps_per_epoch,
                                  seed=args.seed, jit_compile=False),
                      verbose=0)
        enc_mapper = LatentMapper(g, d, params, batch_size=128,
                                  jit_compile=False,
                                  encoder=load_encoder(model_dir),
                                  mode="encoder")
        row["encoder"] = roc_auc_score(
            labels, enc_mapper.map(test.images, progress=False).anomaly_score)
        # Hybrid: the encoder's z as the start of the iterative mapping,
        # scored by the squared residual at z*.
        hyb_mapper = LatentMapper(g, d, params, batch_size=128,
                                  jit_compile=False,
                                  encoder=load_encoder(model_dir),
                                  mode="hybrid")
        row["hybrid_sq"] = roc_auc_score(labels, score_variants(
            hyb_mapper.map(test.images, progress=False),
            mapping.lambda_weight)["residual_sq"])
    row.update({
        "epochs": last["epoch"], "train_s": round(train_seconds, 1),
        "g_steps": last["epoch"] * args.steps_per_epoch,
        "map_s": round(map_seconds, 1),
        "diversity": last.get("diversity"),
        "coverage_ratio": last.get("coverage_ratio"),
        "selected_epoch": json.load(open(os.path.join(
            model_dir, "selection.json")))["epoch"]
        if os.path.exists(os.path.join(model_dir, "selection.json")) else None,
        "n_train": len(train_images.images), "n_test": len(labels),
        "warnings": len(trained.warnings)})
    print(json.dumps(row), flush=True)
    return row


def mean_row(rows: List[Dict], name: str) -> Dict:
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float))
            and k not in ("class",)]
    out = {"set": name, "class": "mean"}
    for k in keys:
        vals = [r[k] for r in rows if r.get(k) is not None]
        out[k] = float(np.mean(vals)) if vals else None
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sets", default="digits,glyphs")
    p.add_argument("--classes", default="all", help="all, or e.g. 3,8")
    p.add_argument("--quick", action="store_true",
                   help="2 classes a set, short training and mapping")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--train_seconds", type=float, default=0.0,
                   help="training budget per class (stops after the epoch "
                        "that passes it; 0: none)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps_per_epoch", type=int, default=50,
                   help="G steps per epoch (the same for every set, so a "
                        "small set does not get 2-step epochs)")
    p.add_argument("--base_filters", type=int, default=16)
    p.add_argument("--latent_dim", type=int, default=100)
    p.add_argument("--gan_loss", default="dcgan")
    p.add_argument("--d_norm", default="none")
    p.add_argument("--spectral_norm", action="store_true")
    p.add_argument("--n_critic", type=int, default=0)
    p.add_argument("--g_lr", type=float, default=2e-4)
    p.add_argument("--d_lr", type=float, default=2e-4)
    p.add_argument("--mode_seeking", type=float, default=1.0)
    p.add_argument("--g_ema", type=float, default=0.0,
                   help="decay of G's weight average (0: off)")
    p.add_argument("--r1_gamma", type=float, default=10.0,
                   help="R1 penalty on real images (dcgan/hinge; 0: off)")
    p.add_argument("--no_select", action="store_true",
                   help="score the last epoch instead of the selected one")
    p.add_argument("--mapping_steps", type=int, default=100)
    p.add_argument("--restarts", type=int, default=1)
    p.add_argument("--encoder_epochs", type=int, default=10)
    p.add_argument("--glyphs_num_train", type=int, default=2000)
    p.add_argument("--glyphs_num_test", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tag", default="")
    p.add_argument("--work_dir", default="")
    args = p.parse_args(argv)
    if args.quick:
        args.epochs, args.train_seconds = min(args.epochs, 3), 60.0
        args.mapping_steps, args.encoder_epochs = 30, 2
        args.glyphs_num_train, args.glyphs_num_test = 500, 100
    classes = (list(range(10)) if args.classes == "all"
               else [int(c) for c in args.classes.split(",")])
    if args.quick and args.classes == "all":
        classes = [3, 8]
    work = args.work_dir or tempfile.mkdtemp(prefix="oneclass-")
    rows, means = [], []
    for dataset in args.sets.split(","):
        set_rows = [run_class(dataset, c, args, work) for c in classes]
        rows += set_rows
        means.append(mean_row(set_rows, dataset))
    columns = (["set", "class", "pca"] + list(SCORES)
               + (["encoder", "hybrid_sq"] if args.encoder_epochs else [])
               + ["diversity", "coverage_ratio", "epochs", "g_steps",
                  "selected_epoch", "train_s", "map_s"])
    print(_common.format_table(rows + means, columns))
    name = "oneclass" + ("_quick" if args.quick else "") + (
        f"_{args.tag}" if args.tag else "")
    _common.write_results(os.path.join(os.path.dirname(__file__), "results"),
                          name, rows + means,
                          {"args": vars(args),
                           "machine": _common.machine_info()})


if __name__ == "__main__":
    main()
