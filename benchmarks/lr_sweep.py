"""Sweep of the mapping's Adam learning rate (how --mapping_lr was chosen).

For a trained model dir, maps the same normal and anomalous patches of the
synthetic_oct test split with each learning rate and reports the mean final
mapping loss L(z*) (lower = better fit: the objective of eq. 5) at each
step budget, plus the patch-level AUROC of A(x) (patches containing mask
pixels are anomalous).

  python benchmarks/lr_sweep.py --model_dir=runs/demo/model
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from sklearn.metrics import roc_auc_score

from anogan_tf.config import DataConfig, MappingConfig
from anogan_tf.data import extract_patches, load_images
from anogan_tf.mapping import LatentMapper, MappingParams
from anogan_tf.models import load_model_dir


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model_dir", required=True)
    ap.add_argument("--lrs", default="0.005,0.01,0.02,0.05,0.1,0.2")
    ap.add_argument("--steps", default="100,500")
    ap.add_argument("--num_patches", type=int, default=64)
    ap.add_argument("--output", default="benchmarks/results/lr_sweep.json")
    args = ap.parse_args()
    mc, g, d = load_model_dir(args.model_dir)
    dc = DataConfig(image_size=mc.image_size, patch_stride=mc.image_size // 2,
                    roi="retina", oct_num_test=16)
    test = load_images(dc, "test")
    p = extract_patches(test, mc.image_size, mc.image_size // 2, mc.image_size,
                        roi="retina")
    s = mc.image_size
    labels = np.array([test.masks[i, y:y + s, x:x + s].any()
                       for i, y, x in zip(p.image_index, p.ys, p.xs)], int)
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    k = args.num_patches // 2
    sel = np.concatenate([rng.choice(pos, min(k, len(pos)), replace=False),
                          rng.choice(neg, min(k, len(neg)), replace=False)])
    x, y = p.patches[sel], labels[sel]
    rows = []
    for steps in [int(v) for v in args.steps.split(",")]:
        for lr in [float(v) for v in args.lrs.split(",")]:
            params = MappingParams.create(mc, MappingConfig(steps=steps, lr=lr))
            r = LatentMapper(g, d, params, batch_size=len(x),
                             jit_compile=False).map(x, progress=False)
            row = {"steps": steps, "lr": lr,
                   "mean_final_loss_normal": float(r.mapping_loss[y == 0].mean()),
                   "mean_final_loss_all": float(r.mapping_loss.mean()),
                   "patch_auroc": float(roc_auc_score(y, r.anomaly_score))}
            rows.append(row)
            print(json.dumps(row), flush=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(rows, f, indent=2)
    print("\n| steps | lr | mean L(z*) normal | mean L(z*) all | patch AUROC |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['steps']} | {r['lr']} | {r['mean_final_loss_normal']:.1f} | "
              f"{r['mean_final_loss_all']:.1f} | {r['patch_auroc']:.3f} |")


if __name__ == "__main__":
    main()
