"""Speed against accuracy of the mapping modes, on one trained G and D.

For a trained model dir (GAN + encoder; the encoder is trained here if
missing), evaluates the same synthetic_oct test scans with iterative-500,
hybrid-10, hybrid-50 and encoder, and reports image AUROC (every
aggregation), pixel AUROC and model inputs per second, all in one run.

  python benchmarks/tradeoff.py --model_dir=runs/demo/model --encoder_epochs=5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

from anogan_tf.config import DataConfig, EvalConfig, MappingConfig, TrainConfig
from anogan_tf.models.io import load_encoder
from anogan_tf.scoring import run_evaluate
from anogan_tf.training.encoder import train_encoder


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--encoder_epochs", type=int, default=5)
    ap.add_argument("--num_test", type=int, default=32)
    ap.add_argument("--output_dir", default="benchmarks/results/tradeoff")
    args = ap.parse_args()
    data = DataConfig(dataset="synthetic_oct", image_size=32, patch_stride=16,
                      roi="retina", oct_num_train=200, oct_num_test=64)
    if load_encoder(args.model_dir) is None:
        train_encoder(args.model_dir, data,
                      TrainConfig(model_dir=args.model_dir, batch_size=64,
                                  epochs=args.encoder_epochs), verbose=2)
    runs = [("iterative-500", "iterative", 500), ("hybrid-50", "hybrid", 50),
            ("hybrid-10", "hybrid", 10), ("encoder", "encoder", 0)]
    rows = []
    for name, mode, steps in runs:
        m = run_evaluate(
            args.model_dir, data,
            MappingConfig(steps=steps, mode=mode, batch_size=128,
                          jit_compile=False),
            EvalConfig(output_dir=os.path.join(args.output_dir, name),
                       aggregate="map_max", num_test=args.num_test),
            progress=False)
        row = {"run": name, "image_auroc_map_max": m["image_auroc"],
               "image_auroc_patch_max": m["image_auroc_by_aggregate"]["max"],
               "pixel_auroc": m.get("pixel_auroc"),
               "inputs_per_second": m["patches_per_second"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    base = rows[0]["inputs_per_second"]
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "tradeoff.json"), "w") as f:
        json.dump(rows, f, indent=2)
    print("\n| mode | image AUROC (map_max) | image AUROC (patch max) | "
          "pixel AUROC | inputs/s | speed-up vs iterative-500 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['run']} | {r['image_auroc_map_max']:.3f} | "
              f"{r['image_auroc_patch_max']:.3f} | {r['pixel_auroc']:.3f} | "
              f"{r['inputs_per_second']:.1f} | "
              f"{r['inputs_per_second'] / base:.0f}x |")


if __name__ == "__main__":
    main()
