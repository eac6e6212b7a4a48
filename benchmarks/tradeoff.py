"""Speed against accuracy of the mapping modes, on one trained G and D.

For each model (GAN + encoder; whichever is missing is trained here first),
evaluates the same test images with iterative-500, hybrid-50, hybrid-10 and
encoder, and reports image AUROC, pixel AUROC (where masks exist) and model
inputs per second, all in one run per model.

  python benchmarks/tradeoff.py --model_dir=runs/demo/model --encoder_epochs=5
  python benchmarks/tradeoff.py --dataset=digits --model_dir=runs/tradeoff_digits
      (trains one GAN + encoder per normal class below --model_dir)
  python benchmarks/tradeoff.py --model_dir=runs/demo/model --timing_only=256
      (warm throughput of every mode on the same patches, no evaluation)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

from anogan_tf.config import (DataConfig, EvalConfig, MappingConfig,
                              ModelConfig, TrainConfig)
from anogan_tf.data import extract_patches, load_images
from anogan_tf.mapping import LatentMapper, MappingParams
from anogan_tf.models.io import load_encoder, load_model_dir
from anogan_tf.scoring import run_evaluate
from anogan_tf.training import train_gan
from anogan_tf.training.encoder import train_encoder


RUNS = [("iterative-500", "iterative", 500), ("hybrid-50", "hybrid", 50),
        ("hybrid-10", "hybrid", 10), ("encoder", "encoder", 0)]


def evaluate_modes(model_dir, data, num_test, aggregate, output_dir):
    """Rows of (mode, AUROCs, inputs/s) for one trained model."""
    rows = []
    for name, mode, steps in RUNS:
        m = run_evaluate(
            model_dir, data,
            MappingConfig(steps=steps, mode=mode, batch_size=128,
                          jit_compile=False),
            EvalConfig(output_dir=os.path.join(output_dir, name),
                       aggregate=aggregate, num_test=num_test),
            progress=False)
        row = {"run": name, "image_auroc": m["image_auroc"],
               "image_auroc_patch_max": m["image_auroc_by_aggregate"]["max"],
               "pixel_auroc": m.get("pixel_auroc"),
               "inputs_per_second": m["patches_per_second"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def ensure_trained(model_dir, data, gan_epochs, batch_size, encoder_epochs):
    if not os.path.exists(os.path.join(model_dir, "generator.keras")):
        train_gan(ModelConfig(image_size=32, base_filters=16), data,
                  TrainConfig(model_dir=model_dir, batch_size=batch_size,
                              epochs=gan_epochs), verbose=2)
    if load_encoder(model_dir) is None:
        train_encoder(model_dir, data,
                      TrainConfig(model_dir=model_dir, batch_size=batch_size,
                                  epochs=encoder_epochs), verbose=2)


def warm_throughput(model_dir, data, num_patches, batch_size=128):
    """Inputs/s of each mode on the same patches, after a warm-up call.

    run_evaluate's figure includes tracing a fresh graph, which dominates
    one-pass modes on small test sets; this one does not.
    """
    config, g, d = load_model_dir(model_dir)
    encoder = load_encoder(model_dir)
    test = load_images(data, "test")
    x = extract_patches(test, 32, data.effective_patch_stride, 32,
                        roi=data.roi).patches[:num_patches]
    rows = []
    for name, mode, steps in RUNS:
        mapper = LatentMapper(
            g, d, MappingParams.create(config, MappingConfig(steps=steps)),
            batch_size=batch_size, jit_compile=False, encoder=encoder,
            mode=mode)
        mapper.map_batch(x[:batch_size])  # trace once
        start = time.perf_counter()
        mapper.map(x, progress=False)
        rows.append({"run": name, "warm_inputs_per_second":
                     len(x) / (time.perf_counter() - start)})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["warm_inputs_per_second"]
    print(f"\n| mode | warm inputs/s ({len(x)} patches) | speed-up |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['warm_inputs_per_second']:.1f} | "
              f"{r['warm_inputs_per_second'] / base:.0f}x |")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--dataset", default="synthetic_oct",
                    choices=["synthetic_oct", "digits"])
    ap.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9")
    ap.add_argument("--encoder_epochs", type=int, default=5)
    ap.add_argument("--num_test", type=int, default=32)
    ap.add_argument("--output_dir", default="benchmarks/results/tradeoff")
    ap.add_argument("--timing_only", type=int, default=0,
                    help="Only time every mode, warm, on this many "
                         "synthetic_oct test patches of --model_dir.")
    args = ap.parse_args()
    if args.timing_only:
        warm_throughput(args.model_dir, DataConfig(
            dataset="synthetic_oct", image_size=32, patch_stride=16,
            roi="retina", oct_num_test=64), args.timing_only)
        return
    table = []
    if args.dataset == "synthetic_oct":
        data = DataConfig(dataset="synthetic_oct", image_size=32,
                          patch_stride=16, roi="retina", oct_num_train=200,
                          oct_num_test=64)
        ensure_trained(args.model_dir, data, 12, 64, args.encoder_epochs)
        for r in evaluate_modes(args.model_dir, data, args.num_test, "map_max",
                                args.output_dir):
            table.append(("synthetic_oct", r))
    else:
        for c in [int(v) for v in args.classes.split(",")]:
            data = DataConfig(dataset="digits", image_size=32, normal_class=c)
            md = os.path.join(args.model_dir, f"digits_{c}")
            ensure_trained(md, data, 30, 32, max(args.encoder_epochs, 30))
            for r in evaluate_modes(md, data, 0, "max",
                                    os.path.join(args.output_dir, f"digits_{c}")):
                table.append((f"digits_{c}", r))
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "tradeoff.json"), "w") as f:
        json.dump([{"data": d, **r} for d, r in table], f, indent=2)
    print("\n| data | mode | image AUROC | pixel AUROC | inputs/s | "
          "speed-up vs iterative-500 |")
    print("|---|---|---|---|---|---|")
    base = {}
    for d, r in table:
        base.setdefault(d, r["inputs_per_second"])
        px = "—" if r["pixel_auroc"] is None else f"{r['pixel_auroc']:.3f}"
        print(f"| {d} | {r['run']} | {r['image_auroc']:.3f} | {px} | "
              f"{r['inputs_per_second']:.1f} | "
              f"{r['inputs_per_second'] / base[d]:.0f}x |")


if __name__ == "__main__":
    main()
