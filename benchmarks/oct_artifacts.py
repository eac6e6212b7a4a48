"""Real-scan conditions on synthetic_oct: artefacts, the ROI, calibration.

The targets of issue 15, measured in one run. For each condition

  clean      synthetic_oct as the README demo uses it;
  artifacts  --oct_artifacts (padding wedges and strips, border lines,
             intensity drift, vessel shadows);
  art+norm   --oct_artifacts --intensity_norm=roi_percentile;

it trains one GAN with the demo's settings (flags/demo.cfg equivalents:
width 16, 32x32 patches with stride 16 inside the retina ROI, 12 epochs,
100 mapping steps, aggregate map_max, 32 test scans), evaluates it with
anogan-evaluate's library entry point (`run_evaluate`), and reports:

- image AUROC (map_max) with its Hanley-McNeil standard error, pixel AUROC
  and AUPRC (as metrics.json has them: artefact pixels left out), and the
  pixel AUROC counted inside the detected ROI only;
- count AUROC: the AUROC of the number of patches per test scan against the
  label (issue 15 target: |count AUROC - 0.5| < 0.05). On 32 scans its
  standard error under "no relation" is about 0.10, twice the target's
  margin, so the same ROI is also run (no mapping needed) on the first
  `--count_scans` scans of the test split (count_auroc_many), and on the
  lesion-free twin of every lesion scan (the generator renders scan i's
  normal version identically outside the lesion): the mean and largest
  |change| of a scan's patch count caused by its lesions;
- band IoU: the detected retina ROI against the true band of the same test
  scans (`generate_oct_with_truth`), mean and minimum over the scans;
- top1 in ROI: the share of the brightest 1% of map pixels (pooled over the
  test scans' non-artefact pixels) that lie inside the detected ROI;
- lesion/chance: in lesion scans, the share of those pixels on the lesion
  masks divided by the lesion share of all non-artefact pixels (image) and,
  for the top pixels inside the ROI, divided by the lesion share of the ROI
  (ROI);
- PCA: PCA(32) reconstruction error (squared) fitted on exactly the GAN's
  training patches, scored on exactly the test patches the GAN scored,
  image score the max over a scan's patches.

Map variants (issue 10: raw against smoothed residuals), all from the same
mapping of the same test scans: the raw stitched |x - G(z*)|, and per sigma
(`--variant_sigmas`, full-image pixels) blur(|r|) ("absolute_s*") and
|blur(r)| of the signed residual r = x - G(z*) ("signed_s*"), both masked
Gaussians over the scoring region (`anogan_tf/scoring/maps.py`); also the
normalised-convolution form of the signed blur ("signed_norm_s*"), and the
same maps made from PCA(32)'s reconstructions of the same patches
("pca_*"). For each: pixel AUROC/AUPRC (non-artefact pixels), pixel AUROC
inside the detected ROI, the top-1% statistics above, and the map_max image
AUROC. The evaluation itself (metrics.json, anomaly_maps.png) uses
`--map_sigma`/`--map_smoothing`.

The maps are those of `score_image_set` on the test scans with the same
configs as the evaluation (the mapping is seeded; the script checks that
its image scores equal the evaluation's). Prints a table and writes
`benchmarks/results/oct_artifacts[_quick].json` (and .csv).

  python benchmarks/oct_artifacts.py --quick                (a few minutes)
  python benchmarks/oct_artifacts.py                        (demo settings)
  python benchmarks/oct_artifacts.py --work_dir=/tmp/oct15  (keep the models)
  ... --work_dir=/tmp/oct15 --reuse_models     (score the kept models again)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import tempfile
import time
from typing import Dict, List

import numpy as np
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

from anogan_tf.config import (DataConfig, EvalConfig, MappingConfig,  # noqa: E402
                              ModelConfig, TrainConfig)
from anogan_tf.data import extract_patches, load_images, stitch_maps  # noqa: E402
from anogan_tf.data.loaders import oct_split_seed  # noqa: E402
from anogan_tf.data.synthetic_oct import generate_oct_with_truth  # noqa: E402
from anogan_tf.models.io import load_model_dir  # noqa: E402
from anogan_tf.scoring import maps as maps_lib  # noqa: E402
from anogan_tf.scoring import metrics as metrics_lib  # noqa: E402
from anogan_tf.scoring import run_evaluate  # noqa: E402
from anogan_tf.scoring.pipeline import score_image_set  # noqa: E402
from anogan_tf.training import train_gan  # noqa: E402
from anogan_tf.training.run import training_patches  # noqa: E402

# (name, oct_artifacts, intensity_norm)
CONDITIONS = (("clean", False, "none"), ("artifacts", True, "none"),
              ("art+norm", True, "roi_percentile"))
COLUMNS = ("condition", "image_auroc", "image_auroc_se", "pixel_auroc",
           "pixel_auprc", "pixel_auroc_in_roi", "count_auroc",
           "count_auroc_many", "count_change_max", "patches_per_scan",
           "band_iou_mean", "band_iou_min",
           "top1_in_roi", "lesion_vs_chance_image", "lesion_vs_chance_roi",
           "pca_image_auroc", "train_s", "eval_s")
MAP_COLUMNS = ("condition", "map", "pixel_auroc", "pixel_auprc",
               "pixel_auroc_in_roi", "top1_in_roi", "lesion_vs_chance_roi",
               "lesion_vs_chance_image", "image_auroc_map_max")


def auroc_se(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUROC."""
    q1, q2 = auc / (2 - auc), 2 * auc ** 2 / (1 + auc)
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc ** 2)
           + (n_neg - 1) * (q2 - auc ** 2)) / (n_pos * n_neg)
    return float(np.sqrt(max(var, 0.0)))


def pca_reconstructions(train: np.ndarray, test: np.ndarray, k: int = 32
                        ) -> np.ndarray:
    """PCA(k) reconstructions of the test patches (fit on train), their shape."""
    a = train.reshape(len(train), -1).astype(np.float64)
    b = test.reshape(len(test), -1).astype(np.float64)
    pca = PCA(n_components=min(k, len(a) - 1, a.shape[1]), random_state=0)
    pca.fit(a)
    return pca.inverse_transform(pca.transform(b)).reshape(test.shape)


def pca_patch_errors(train: np.ndarray, test: np.ndarray, k: int = 32
                     ) -> np.ndarray:
    """Squared PCA(k) reconstruction error per test patch (fit on train)."""
    diff = test.astype(np.float64) - pca_reconstructions(train, test, k)
    return np.sum(diff.reshape(len(test), -1) ** 2, axis=1)


def map_variant_rows(residuals: maps_lib.ResidualMaps, prefix: str,
                     sigmas, valid: np.ndarray, roi: np.ndarray,
                     lesions: np.ndarray, labels: np.ndarray,
                     normalised: bool = True) -> List[Dict]:
    """One row per map variant made from `residuals` (see the docstring)."""
    n = len(labels)
    made = [(name, maps_lib.anomaly_maps(residuals, sigma, how))
            for name, sigma, how in maps_lib.map_variants(sigmas)]
    if normalised:
        for sigma in sigmas:
            made.append((f"signed_norm_s{sigma:g}", np.abs(
                maps_lib.masked_gaussian(residuals.signed, residuals.weight,
                                         sigma, normalize=True)).mean(-1)))
    rows = []
    for name, maps in made:
        pix = metrics_lib.pixel_metrics(lesions, maps, valid=valid)
        top = top_pixel_stats(maps, valid, roi, lesions, labels)
        rows.append({
            "map": prefix + name,
            "pixel_auroc": pix.get("pixel_auroc"),
            "pixel_auprc": pix.get("pixel_auprc"),
            "pixel_auroc_in_roi": metrics_lib.pixel_metrics(
                lesions, maps, valid=roi).get("pixel_auroc"),
            "top1_in_roi": top["top1_in_roi"],
            "lesion_vs_chance_roi": top["lesion_vs_chance_roi"],
            "lesion_vs_chance_image": top["lesion_vs_chance_image"],
            "image_auroc_map_max": float(roc_auc_score(
                labels, maps.reshape(n, -1).max(axis=1)))})
    return rows


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def top_pixel_stats(maps: np.ndarray, valid: np.ndarray, roi: np.ndarray,
                    lesions: np.ndarray, labels: np.ndarray,
                    share: float = 0.01) -> Dict[str, float]:
    """Where the brightest `share` of map pixels lie (pooled over the scans'
    non-artefact pixels): in the ROI, and on the lesions of lesion scans
    relative to chance."""
    thr = np.quantile(maps[valid], 1.0 - share)
    top = (maps >= thr) & valid
    lab = labels == 1
    top_l, les_l, valid_l, roi_l = top[lab], lesions[lab], valid[lab], roi[lab]
    on_lesion = (top_l & les_l).sum() / max(1, top_l.sum())
    chance = (les_l & valid_l).sum() / max(1, valid_l.sum())
    top_r = top_l & roi_l
    on_lesion_roi = (top_r & les_l).sum() / max(1, top_r.sum())
    chance_roi = (les_l & roi_l).sum() / max(1, roi_l.sum())
    return {"top1_threshold": float(thr),
            "top1_in_roi": float((top & roi).sum() / max(1, top.sum())),
            "top1_on_lesion": float(on_lesion),
            "lesion_share_valid": float(chance),
            "lesion_vs_chance_image": float(on_lesion / max(chance, 1e-12)),
            "top1_in_roi_on_lesion": float(on_lesion_roi),
            "lesion_share_roi": float(chance_roi),
            "lesion_vs_chance_roi": float(on_lesion_roi /
                                          max(chance_roi, 1e-12)),
            "lesion_pixels_in_roi": float((les_l & roi_l).sum() /
                                          max(1, les_l.sum()))}


def patch_counts(images, data: DataConfig) -> np.ndarray:
    """Patches per image that the evaluation's ROI keeps."""
    p = extract_patches(images, data.effective_patch_size,
                        data.effective_patch_stride, data.image_size,
                        roi=data.roi, min_coverage=data.roi_min_coverage)
    return np.bincount(p.image_index, minlength=len(images))


def count_checks(data: DataConfig, num_scans: int) -> Dict[str, float]:
    """Patch counts against the label on many test-split scans, and the
    change of each lesion scan's count against its lesion-free twin."""
    many = dataclasses.replace(data, oct_num_test=num_scans)
    scans = load_images(many, "test")
    twins = load_images(dataclasses.replace(many, oct_anomaly_fraction=0.0),
                        "test")
    counts, twin_counts = patch_counts(scans, data), patch_counts(twins, data)
    lesion = np.asarray(scans.labels) == 1
    change = np.abs(counts[lesion] - twin_counts[lesion])
    return {"count_scans": num_scans,
            "count_auroc_many": float(roc_auc_score(scans.labels, counts)),
            "count_change_mean": float(change.mean()),
            "count_change_max": int(change.max()),
            "count_changed_share": float(np.mean(change > 0))}


def run_condition(name: str, artifacts: bool, norm: str, args,
                  work: str) -> Dict:
    data = DataConfig(dataset="synthetic_oct", image_size=32, patch_stride=16,
                      roi="retina", oct_num_train=args.num_train,
                      oct_num_test=args.oct_num_test, oct_artifacts=artifacts,
                      intensity_norm=norm, seed=args.seed)
    model_config = ModelConfig(image_size=32, base_filters=args.base_filters)
    train_config = TrainConfig(model_dir=os.path.join(work, name.replace(
        "+", "_"), "model"), batch_size=64, epochs=args.epochs,
        seed=args.seed, jit_compile=False)
    mapping = MappingConfig(steps=args.mapping_steps, batch_size=128,
                            jit_compile=False, seed=args.seed)
    eval_config = EvalConfig(output_dir=os.path.join(
        os.path.dirname(train_config.model_dir), "eval"), aggregate="map_max",
        num_test=args.num_test, map_sigma=args.map_sigma,
        map_smoothing=args.map_smoothing)

    t0 = time.perf_counter()
    if not (args.reuse_models and os.path.isfile(os.path.join(
            train_config.model_dir, "generator.keras"))):
        train_gan(model_config, data, train_config, verbose=0)
    t1 = time.perf_counter()
    m = run_evaluate(train_config.model_dir, data, mapping, eval_config,
                     progress=False)
    t2 = time.perf_counter()

    # The maps of the same evaluation: the test scans scored again with the
    # same configs (seeded, so the scores must agree with image_scores.csv).
    cfg, g, d = load_model_dir(train_config.model_dir)
    test = load_images(data, "test").take(args.num_test)
    s = score_image_set(test, g, d, cfg, data, mapping, aggregate="map_max",
                        progress=False, map_sigma=args.map_sigma,
                        map_smoothing=args.map_smoothing)
    with open(os.path.join(eval_config.output_dir, "image_scores.csv")) as f:
        rows = list(csv.DictReader(f))
    evaluated = np.array([float(r["anomaly_score"]) for r in rows])
    if not np.allclose(evaluated, s.image_scores, rtol=1e-4, atol=1e-5):
        raise RuntimeError(
            f"{name}: re-scoring the test scans gave other image scores than "
            f"run_evaluate (max abs difference "
            f"{np.max(np.abs(evaluated - s.image_scores)):.3g}); the maps "
            f"analysed here would not be the evaluated ones.")
    labels = np.asarray(test.labels)
    n = len(labels)
    counts = np.bincount(s.patches.image_index, minlength=n)
    valid, roi = s.patches.valid_masks, s.patches.roi_masks
    lesions = np.asarray(test.masks) > 0

    # The true band of the same scans (the loader's seed for the test split).
    _, truth = generate_oct_with_truth(
        args.oct_num_test, data.oct_height, data.oct_width,
        seed=oct_split_seed(data.seed, "test"),
        anomaly_fraction=data.oct_anomaly_fraction, artifacts=artifacts)
    band = truth.band_masks()[:n]
    ious = np.array([iou(roi[i], band[i]) for i in range(n)])
    true_artifacts = truth.artifacts[:n]

    train_patches, _ = training_patches(data, train_config.holdout_fraction)
    pca_recon = pca_reconstructions(train_patches, s.patches.patches,
                                    args.pca_k)
    pca_diff = s.patches.patches.astype(np.float64) - pca_recon
    pca_err = np.sum(pca_diff.reshape(len(pca_diff), -1) ** 2, axis=1)
    pca_image = metrics_lib.aggregate_patch_scores(
        pca_err, s.patches.image_index, n, "max", 3)

    # The stitched residual before the scoring region zeroes the maps
    # outside the ROI (+ margin): where would the brightest pixels be
    # without that restriction?
    raw = stitch_maps(s.mapping.residual_map, s.patches, n)
    raw_top = top_pixel_stats(raw, valid, roi, lesions, labels)

    counted = count_checks(data, args.count_scans)

    # Raw against smoothed maps, from this one mapping (and PCA's maps of
    # the same patches).
    sigmas = [float(v) for v in args.variant_sigmas.split(",")]
    variants = map_variant_rows(s.residuals, "", sigmas, valid, roi,
                                lesions, labels)
    pca_residuals = maps_lib.residual_maps(
        s.patches, np.abs(pca_diff), pca_recon, n, s.region)
    pca_sigmas = sorted({max(sigmas), args.map_sigma} - {0.0})
    variants += map_variant_rows(pca_residuals, "pca_", pca_sigmas, valid,
                                 roi, lesions, labels, normalised=False)
    for v in variants:
        v["condition"] = name

    image_auroc = float(m["image_auroc"])
    row = {
        "condition": name,
        "image_auroc": image_auroc,
        "image_auroc_se": auroc_se(image_auroc, int(labels.sum()),
                                   int((labels == 0).sum())),
        "pixel_auroc": m.get("pixel_auroc"),
        "pixel_auprc": m.get("pixel_auprc"),
        "pixel_auroc_in_roi": metrics_lib.pixel_metrics(
            lesions, s.maps, valid=roi).get("pixel_auroc"),
        "count_auroc": float(roc_auc_score(labels, counts)),
        **counted,
        "patches_per_scan": float(counts.mean()),
        "patches_per_scan_normal": float(counts[labels == 0].mean()),
        "patches_per_scan_lesion": float(counts[labels == 1].mean()),
        "band_iou_mean": float(ious.mean()),
        "band_iou_min": float(ious.min()),
        "artifact_recall": (float((true_artifacts & ~valid).sum() /
                                  true_artifacts.sum())
                            if true_artifacts.any() else None),
        **top_pixel_stats(s.maps, valid, roi, lesions, labels),
        "top1_in_roi_unrestricted": raw_top["top1_in_roi"],
        "lesion_vs_chance_image_unrestricted":
            raw_top["lesion_vs_chance_image"],
        "pca_image_auroc": float(roc_auc_score(labels, pca_image)),
        "image_auroc_by_aggregate": m["image_auroc_by_aggregate"],
        "threshold_rule": m["threshold_rule"],
        "sensitivity": m["sensitivity"], "specificity": m["specificity"],
        "calibration_warning": m.get("calibration_warning"),
        "artifact_pixel_fraction": m.get("artifact_pixel_fraction"),
        "n_normal": m["n_normal"], "n_anomalous": m["n_anomalous"],
        "n_test_patches": m["n_patches"],
        "n_train_patches": int(len(train_patches)),
        "train_s": round(t1 - t0, 1), "eval_s": round(t2 - t1, 1),
        "map": m.get("map"), "metrics_by_map": m.get("metrics_by_map"),
        "map_variants": variants,
    }
    print({k: row[k] for k in COLUMNS}, flush=True)
    return row


def transposed_markdown(rows: List[Dict]) -> str:
    """One line per measure, one column per condition (for BENCHMARKS.md)."""
    lines = ["| measure | " + " | ".join(r["condition"] for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for c in COLUMNS[1:]:
        lines.append(f"| {c} | " + " | ".join(
            _common.format_table([r], [c]).splitlines()[-1].strip()
            for r in rows) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="width 8, 2 epochs, 40 training and 8 test scans, "
                        "20 mapping steps, 64 count scans: checks the "
                        "script, not the targets")
    p.add_argument("--base_filters", type=int, default=16)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--num_train", type=int, default=200,
                   help="normal training scans (--oct_num_train)")
    p.add_argument("--oct_num_test", type=int, default=64)
    p.add_argument("--num_test", type=int, default=32,
                   help="test scans evaluated (--num_test), half with lesions")
    p.add_argument("--mapping_steps", type=int, default=100)
    p.add_argument("--pca_k", type=int, default=32)
    p.add_argument("--count_scans", type=int, default=512,
                   help="test-split scans whose patch counts are checked "
                        "against the label (ROI only, no mapping)")
    p.add_argument("--conditions", default=",".join(c[0] for c in CONDITIONS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--map_sigma", type=float, default=0.0,
                   help="the evaluation's --map_sigma (metrics.json, "
                        "anomaly_maps.png); variants are measured anyway")
    p.add_argument("--map_smoothing", default="signed",
                   choices=("signed", "absolute"))
    p.add_argument("--variant_sigmas", default="1,2,3,4,6",
                   help="sigmas (full-image pixels) of the map variants")
    p.add_argument("--tag", default="",
                   help="results go to benchmarks/results/oct_artifacts_<tag>")
    p.add_argument("--reuse_models", action="store_true",
                   help="skip training where --work_dir already holds a "
                        "condition's model (its train_s is then ~0)")
    p.add_argument("--work_dir", default="",
                   help="where models and evaluations go (default: a new "
                        "temporary folder)")
    args = p.parse_args(argv)
    if args.quick:
        args.base_filters, args.epochs = 8, 2
        args.num_train, args.oct_num_test, args.num_test = 40, 16, 8
        args.mapping_steps, args.count_scans = 20, 64
    wanted = args.conditions.split(",")
    unknown = sorted(set(wanted) - {c[0] for c in CONDITIONS})
    if unknown:
        p.error(f"unknown --conditions {unknown}; choose from "
                f"{[c[0] for c in CONDITIONS]}")
    work = args.work_dir or tempfile.mkdtemp(prefix="oct_artifacts-")
    print(f"Models and evaluations in {work}", flush=True)
    rows: List[Dict] = [run_condition(name, art, norm, args, work)
                        for name, art, norm in CONDITIONS if name in wanted]
    print()
    print(_common.format_table(rows, COLUMNS))
    print()
    print(transposed_markdown(rows))
    variant_rows = [v for r in rows for v in r["map_variants"]]
    print()
    print(_common.format_table(variant_rows, MAP_COLUMNS))
    name = ("oct_artifacts" + (f"_{args.tag}" if args.tag else "") +
            ("_quick" if args.quick else ""))
    paths = _common.write_results(
        _common.DEFAULT_OUTPUT_DIR, name,
        [{k: v for k, v in r.items() if not isinstance(v, (dict, list))}
         for r in rows],
        {"args": vars(args), "machine": _common.machine_info(),
         "by_aggregate": {r["condition"]: r["image_auroc_by_aggregate"]
                          for r in rows},
         "map_variants": variant_rows})
    print("Wrote", ", ".join(paths))


if __name__ == "__main__":
    main()
