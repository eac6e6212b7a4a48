"""Detection accuracy of AnoGAN on the embedded datasets (not a test).

Trains a GAN and evaluates it with anogan-evaluate's library entry point, for
synthetic_oct and for every normal class of digits, and writes a table.

  python benchmarks/accuracy.py --output_dir=benchmarks/results/accuracy
  python benchmarks/accuracy.py --quick      # digits classes 0 and 1 only

Settings come from flags/demo.cfg and flags/digits.cfg equivalents below, so
the numbers match what the README demo produces.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from anogan_tf.config import (DataConfig, EvalConfig, MappingConfig,
                              ModelConfig, TrainConfig)
from anogan_tf.scoring import run_evaluate
from anogan_tf.training import train_gan


def run_one(name, model, data, train, mapping, out_root, aggregate="max"):
    model_dir = os.path.join(out_root, name, "model")
    eval_dir = os.path.join(out_root, name, "eval")
    t0 = time.perf_counter()
    train_gan(model, data, dataclasses.replace(train, model_dir=model_dir),
              verbose=2)
    t1 = time.perf_counter()
    m = run_evaluate(model_dir, data, mapping,
                     EvalConfig(output_dir=eval_dir, aggregate=aggregate,
                                num_test=data_num_test(data)), progress=False)
    t2 = time.perf_counter()
    row = {"name": name, "image_auroc": m["image_auroc"],
           "pixel_auroc": m.get("pixel_auroc"), "n_normal": m["n_normal"],
           "n_anomalous": m["n_anomalous"], "train_s": round(t1 - t0, 1),
           "eval_s": round(t2 - t1, 1),
           "patches_per_second": m["patches_per_second"]}
    print(json.dumps(row), flush=True)
    return row


def data_num_test(data):
    return 32 if data.dataset == "synthetic_oct" else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--output_dir", default="benchmarks/results/accuracy")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mapping_steps", type=int, default=100)
    ap.add_argument("--skip_oct", action="store_true")
    args = ap.parse_args()
    mapping = MappingConfig(steps=args.mapping_steps, batch_size=128,
                            jit_compile=False)
    rows = []
    if not args.skip_oct:
        rows.append(run_one(
            "synthetic_oct",
            ModelConfig(image_size=32, base_filters=16),
            DataConfig(dataset="synthetic_oct", image_size=32, patch_stride=16,
                       roi="retina", oct_num_train=200, oct_num_test=64),
            TrainConfig(model_dir="", batch_size=64, epochs=8),
            mapping, args.output_dir))
    classes = [0, 1] if args.quick else list(range(10))
    for c in classes:
        rows.append(run_one(
            f"digits_{c}", ModelConfig(image_size=32, base_filters=16),
            DataConfig(dataset="digits", image_size=32, normal_class=c),
            TrainConfig(model_dir="", batch_size=32, epochs=30),
            mapping, args.output_dir))
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "accuracy.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print("\n| run | image AUROC | pixel AUROC | normal/anomalous | train s | eval s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        px = "—" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.3f}"
        print(f"| {r['name']} | {r['image_auroc']:.3f} | {px} | "
              f"{r['n_normal']}/{r['n_anomalous']} | {r['train_s']} | {r['eval_s']} |")


if __name__ == "__main__":
    main()
