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

Depth-standardised maps (`--map_norm=depth`, scoring/map_reference.py):
the evaluation standardises its maps by the calibration scans' maps at the
same band-relative depth. Whatever `--map_norm` is, every variant above is
also measured standardised ("depth_*", "pca_depth_*"): the calibration
split's scans are mapped once more (and reconstructed by the same PCA), the
per-depth statistics of each variant are fitted on them, and the test maps
are standardised by them, so GAN and PCA get the same treatment.

GAN recipe and mapping mode (issue 10): `--gan_loss`, `--d_norm`,
`--spectral_norm`, `--r1_gamma`, `--g_ema`, `--mode_seeking`, `--n_critic`,
`--g_lr`/`--d_lr` choose how G is trained (the defaults are the paper's
DCGAN with a BatchNorm D, as before); `--mode` is a comma list of
iterative (the paper's mapping), encoder (f-AnoGAN izi_f: z = E(x), one
pass) and hybrid (the iterative mapping started from E(x)). Every mode
scores the same trained model; the encoder (`train_encoder`, the library
function behind `anogan-train --stage=encoder`: all normal training scans'
patches, `--encoder_epochs`) is trained once when a mode needs it. Each
row carries its mode and a recipe label; results of a non-default recipe
or mode go to `oct_artifacts[_<tag>]_<recipe>_<modes>`. The model dir gets
a `bench_recipe.json`, and `--reuse_models` refuses a model trained with
another recipe.

The maps are those of `score_image_set` on the test scans with the same
configs as the evaluation (the mapping is seeded; the script checks that
its image scores equal the evaluation's). Prints a table and writes
`benchmarks/results/oct_artifacts[_quick].json` (and .csv).

  python benchmarks/oct_artifacts.py --quick                (a few minutes)
  python benchmarks/oct_artifacts.py                        (demo settings)
  python benchmarks/oct_artifacts.py --work_dir=/tmp/oct15  (keep the models)
  ... --work_dir=/tmp/oct15 --reuse_models     (score the kept models again)
  ... --mode=iterative,encoder --gan_loss=dcgan --d_norm=none --r1_gamma=10 \
      --g_ema=0.999 --mode_seeking=1                (issue 10's new recipe)
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
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

from anogan_tf.common_flags import resolve_d_norm  # noqa: E402
from anogan_tf.config import (DataConfig, EvalConfig, MappingConfig,  # noqa: E402
                              ModelConfig, TrainConfig)
from anogan_tf.data import extract_patches, load_images, stitch_maps  # noqa: E402
from anogan_tf.data.loaders import oct_split_seed  # noqa: E402
from anogan_tf.data.synthetic_oct import generate_oct_with_truth  # noqa: E402
from anogan_tf.models.io import load_encoder, load_model_dir  # noqa: E402
from anogan_tf.scoring import detector as detector_lib  # noqa: E402
from anogan_tf.scoring import map_reference as reference_lib  # noqa: E402
from anogan_tf.scoring import maps as maps_lib  # noqa: E402
from anogan_tf.scoring import metrics as metrics_lib  # noqa: E402
from anogan_tf.scoring import run_evaluate  # noqa: E402
from anogan_tf.scoring.scorer import score_image_set  # noqa: E402
from anogan_tf.training import train_gan  # noqa: E402
from anogan_tf.training.encoder import train_encoder  # noqa: E402
from anogan_tf.training.run import training_patches  # noqa: E402

# (name, oct_artifacts, intensity_norm)
CONDITIONS = (("clean", False, "none"), ("artifacts", True, "none"),
              ("art+norm", True, "roi_percentile"))
MODES = ("iterative", "encoder", "hybrid")
RECIPE_FILE = "bench_recipe.json"
COLUMNS = ("condition", "mode", "image_auroc", "image_auroc_se", "pixel_auroc",
           "pixel_auprc", "pixel_auroc_in_roi", "count_auroc",
           "count_auroc_many", "count_change_max", "patches_per_scan",
           "band_iou_mean", "band_iou_min",
           "top1_in_roi", "lesion_vs_chance_image", "lesion_vs_chance_roi",
           "pca_image_auroc", "train_s", "encoder_s", "eval_s")
MAP_COLUMNS = ("condition", "mode", "map", "pixel_auroc", "pixel_auprc",
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
                     normalised: bool = True, calib=None) -> List[Dict]:
    """One row per map variant made from `residuals` (see the docstring).

    `calib`: (ResidualMaps, ROI masks) of the calibration scans; each
    variant is then also measured standardised by depth ("depth_*")."""
    n = len(labels)
    made = [(name, maps_lib.anomaly_maps(residuals, sigma, how))
            for name, sigma, how in maps_lib.map_variants(sigmas)]
    if calib is not None:
        calib_res, calib_roi = calib
        for name, sigma, how in maps_lib.map_variants(sigmas):
            ref = reference_lib.fit_map_reference(
                maps_lib.anomaly_maps(calib_res, sigma, how),
                calib_res.weight, calib_roi, name)
            made.append((f"depth_{name}", reference_lib.standardize_maps(
                maps_lib.anomaly_maps(residuals, sigma, how),
                residuals.weight, roi, ref)))
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


def recipe_of(args) -> Dict:
    """The GAN recipe the flags ask for, with "auto" values resolved."""
    return {"gan_loss": args.gan_loss,
            "d_norm": resolve_d_norm(args.d_norm, args.gan_loss,
                                     args.spectral_norm),
            "spectral_norm": bool(args.spectral_norm),
            "r1_gamma": float(args.r1_gamma), "g_ema": float(args.g_ema),
            "mode_seeking": float(args.mode_seeking),
            "n_critic": args.n_critic or (5 if args.gan_loss == "wgan_gp"
                                          else 1),
            "g_lr": float(args.g_lr), "d_lr": float(args.d_lr),
            "base_filters": args.base_filters, "epochs": args.epochs}


def recipe_label(r: Dict) -> str:
    """A short name of a recipe: "dcgan_batch" is the paper's (the default)."""
    parts = [r["gan_loss"], r["d_norm"]]
    if r["spectral_norm"]:
        parts.append("sn")
    for key, short, default in (("r1_gamma", "r1g", 0.0), ("g_ema", "ema", 0.0),
                                ("mode_seeking", "ms", 0.0)):
        if r[key] != default:
            parts.append(f"{short}{r[key]:g}")
    if r["n_critic"] != (5 if r["gan_loss"] == "wgan_gp" else 1):
        parts.append(f"nc{r['n_critic']}")
    if (r["g_lr"], r["d_lr"]) != (2e-4, 2e-4):
        parts.append(f"lr{r['g_lr']:g}-{r['d_lr']:g}")
    return "_".join(parts)


def check_reused_model(model_dir: str, recipe: Dict) -> None:
    """Raises when the kept model was trained with another recipe."""
    path = os.path.join(model_dir, RECIPE_FILE)
    if os.path.isfile(path):
        with open(path) as f:
            kept = json.load(f)
        differ = {k: (kept.get(k), v) for k, v in recipe.items()
                  if kept.get(k) != v}
        where = path
    else:
        # Models trained before the recipe was recorded: only config.json
        # tells, and only the paper's training settings can be assumed.
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        differ = {k: (cfg.get(k), recipe[k]) for k in
                  ("gan_loss", "d_norm", "spectral_norm", "base_filters")
                  if cfg.get(k) != recipe[k]}
        paper = recipe_of(argparse.Namespace(
            gan_loss=recipe["gan_loss"], d_norm="auto", spectral_norm=False,
            r1_gamma=0.0, g_ema=0.0, mode_seeking=0.0, n_critic=0,
            g_lr=2e-4, d_lr=2e-4, base_filters=recipe["base_filters"],
            epochs=recipe["epochs"]))
        differ.update({k: ("not recorded", recipe[k]) for k in
                       ("r1_gamma", "g_ema", "mode_seeking", "n_critic",
                        "g_lr", "d_lr") if recipe[k] != paper[k]})
        where = os.path.join(model_dir, "config.json")
    if differ:
        raise SystemExit(
            f"--reuse_models: {model_dir} was trained with another recipe "
            f"(kept, asked for): {differ} (from {where}). Use another "
            f"--work_dir for this recipe, or drop --reuse_models.")


def run_condition(name: str, artifacts: bool, norm: str, args,
                  work: str) -> List[Dict]:
    """Trains (or reuses) one condition's GAN and scores it in every mode."""
    recipe = recipe_of(args)
    label = recipe_label(recipe)
    modes = args.mode.split(",")
    data = DataConfig(dataset="synthetic_oct", image_size=32, patch_stride=16,
                      roi="retina", oct_num_train=args.num_train,
                      oct_num_test=args.oct_num_test, oct_artifacts=artifacts,
                      intensity_norm=norm, seed=args.seed)
    model_config = ModelConfig(
        image_size=32, base_filters=args.base_filters,
        gan_loss=recipe["gan_loss"], d_norm=recipe["d_norm"],
        spectral_norm=recipe["spectral_norm"])
    train_config = TrainConfig(model_dir=os.path.join(work, name.replace(
        "+", "_"), "model"), batch_size=64, epochs=args.epochs,
        seed=args.seed, jit_compile=False, g_lr=recipe["g_lr"],
        d_lr=recipe["d_lr"], n_critic=recipe["n_critic"],
        r1_gamma=recipe["r1_gamma"], g_ema=recipe["g_ema"],
        mode_seeking=recipe["mode_seeking"])
    model_dir = train_config.model_dir

    t0 = time.perf_counter()
    reused = args.reuse_models and os.path.isfile(os.path.join(
        model_dir, "generator.keras"))
    if reused:
        check_reused_model(model_dir, recipe)
    else:
        train_gan(model_config, data, train_config, verbose=0)
        with open(os.path.join(model_dir, RECIPE_FILE), "w") as f:
            json.dump(recipe, f, indent=2)
    train_s = time.perf_counter() - t0
    encoder_s, encoder_epochs = None, None
    if any(m != "iterative" for m in modes):
        # The library function of anogan-train --stage=encoder: G and D
        # frozen, all normal training scans' patches (the GAN held 10% of
        # the scans out for its health metrics), resumes a kept encoder.
        t0 = time.perf_counter()
        train_encoder(model_dir, data, TrainConfig(
            model_dir=model_dir, batch_size=64, epochs=args.encoder_epochs,
            seed=args.seed, jit_compile=False), verbose=0)
        encoder_s = time.perf_counter() - t0
        with open(os.path.join(model_dir, "history_encoder.json")) as f:
            encoder_epochs = len(json.load(f)["epochs"])
        if encoder_epochs != args.encoder_epochs:
            print(f"{name}: the kept encoder has {encoder_epochs} epochs, "
                  f"not --encoder_epochs={args.encoder_epochs}", flush=True)

    # What does not depend on the mode, computed once: the test scans, their
    # true band and lesion-free twins, the training patches for PCA.
    test = load_images(data, "test").take(args.num_test)
    labels = np.asarray(test.labels)
    n = len(labels)
    lesions = np.asarray(test.masks) > 0
    _, truth = generate_oct_with_truth(
        args.oct_num_test, data.oct_height, data.oct_width,
        seed=oct_split_seed(data.seed, "test"),
        anomaly_fraction=data.oct_anomaly_fraction, artifacts=artifacts)
    band = truth.band_masks()[:n]
    true_artifacts = truth.artifacts[:n]
    train_patches, _ = training_patches(data, train_config.holdout_fraction)
    counted = count_checks(data, args.count_scans)
    sigmas = [float(v) for v in args.variant_sigmas.split(",")]
    cfg, g, d = load_model_dir(model_dir)
    encoder = load_encoder(model_dir) if encoder_s is not None else None

    rows = []
    for mode in modes:
        mapping = MappingConfig(steps=args.mapping_steps, batch_size=128,
                                jit_compile=False, seed=args.seed, mode=mode)
        eval_config = EvalConfig(output_dir=os.path.join(
            os.path.dirname(model_dir),
            "eval" if mode == "iterative" else f"eval_{mode}"),
            aggregate="map_max", num_test=args.num_test,
            map_sigma=args.map_sigma, map_smoothing=args.map_smoothing,
            map_norm=args.map_norm,
            # The iterative mode has its own row; no second mapping inside
            # the encoder/hybrid evaluations (eval_s times the mode alone).
            paper_score=False)
        t1 = time.perf_counter()
        m = run_evaluate(model_dir, data, mapping, eval_config,
                         progress=False,
                         write_detector=args.map_norm != "none")
        t2 = time.perf_counter()
        rows.append(score_mode(
            name, mode, m, t2 - t1, args, data, mapping, eval_config, test,
            cfg, g, d, encoder, labels, lesions, band, true_artifacts,
            train_patches, counted, sigmas) | {
                "recipe": label, **{f"recipe_{k}": v
                                    for k, v in recipe.items()},
                "model_reused": bool(reused), "train_s": round(train_s, 1),
                "encoder_s": (round(encoder_s, 1) if encoder_s is not None
                              else None),
                "encoder_epochs": encoder_epochs})
        print({k: rows[-1].get(k) for k in COLUMNS}, flush=True)
    return rows


def score_mode(name, mode, m, eval_s, args, data, mapping, eval_config, test,
               cfg, g, d, encoder, labels, lesions, band, true_artifacts,
               train_patches, counted, sigmas) -> Dict:
    """The row of one condition scored in one mode (`m`: its metrics.json)."""
    # The maps of the same evaluation: the test scans scored again with the
    # same configs (seeded, so the scores must agree with image_scores.csv).
    reference = (detector_lib.load_detector(os.path.join(os.path.dirname(
        eval_config.output_dir), "model")).map_reference
        if args.map_norm != "none" else None)
    score = lambda images: score_image_set(  # noqa: E731
        images, g, d, cfg, data, mapping, aggregate="map_max",
        progress=False, map_sigma=args.map_sigma,
        map_smoothing=args.map_smoothing,
        encoder=encoder if mode != "iterative" else None)
    s = score(test)
    if reference is not None:
        s = dataclasses.replace(s, maps=reference_lib.standardize_maps(
            s.maps, s.residuals.weight, s.patches.roi_masks, reference))
        s = dataclasses.replace(s, image_scores=s.maps.reshape(
            len(s.maps), -1).max(axis=1).astype(np.float64))
    with open(os.path.join(eval_config.output_dir, "image_scores.csv")) as f:
        rows = list(csv.DictReader(f))
    evaluated = np.array([float(r["anomaly_score"]) for r in rows])
    if not np.allclose(evaluated, s.image_scores, rtol=1e-4, atol=1e-5):
        raise RuntimeError(
            f"{name}/{mode}: re-scoring the test scans gave other image "
            f"scores than run_evaluate (max abs difference "
            f"{np.max(np.abs(evaluated - s.image_scores)):.3g}); the maps "
            f"analysed here would not be the evaluated ones.")
    n = len(labels)
    counts = np.bincount(s.patches.image_index, minlength=n)
    valid, roi = s.patches.valid_masks, s.patches.roi_masks
    ious = np.array([iou(roi[i], band[i]) for i in range(n)])

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

    # Raw against smoothed maps, from this one mapping (and PCA's maps of
    # the same patches).
    # The calibration scans (the evaluation's: --num_test applies), mapped
    # and PCA-reconstructed, for the depth-standardised variants.
    calib = load_images(data, "calibration").take(args.num_test)
    c = score(calib)
    c_recon = pca_reconstructions(train_patches, c.patches.patches,
                                  args.pca_k)
    c_diff = c.patches.patches.astype(np.float64) - c_recon
    c_pca = maps_lib.residual_maps(c.patches, np.abs(c_diff), c_recon,
                                   len(calib.images), c.region)
    variants = map_variant_rows(s.residuals, "", sigmas, valid, roi,
                                lesions, labels,
                                calib=(c.residuals, c.patches.roi_masks))
    pca_residuals = maps_lib.residual_maps(
        s.patches, np.abs(pca_diff), pca_recon, n, s.region)
    pca_sigmas = sorted({max(sigmas), args.map_sigma} - {0.0})
    variants += map_variant_rows(pca_residuals, "pca_", pca_sigmas, valid,
                                 roi, lesions, labels, normalised=False,
                                 calib=(c_pca, c.patches.roi_masks))
    for v in variants:
        v["condition"], v["mode"] = name, mode

    image_auroc = float(m["image_auroc"])
    return {
        "condition": name,
        "mode": mode,
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
        "eval_s": round(eval_s, 1),
        "map": m.get("map"), "metrics_by_map": m.get("metrics_by_map"),
        "map_variants": variants,
    }


def transposed_markdown(rows: List[Dict]) -> str:
    """One line per measure, one column per condition and mode (for
    BENCHMARKS.md)."""
    lines = ["| measure | " + " | ".join(
        f"{r['condition']} {r['recipe']} {r['mode']}" for r in rows) + " |",
             "|---|" + "---|" * len(rows)]
    for c in COLUMNS[2:]:
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
    p.add_argument("--mode", default="iterative",
                   help="comma list of mapping modes scored on the same "
                        f"model: {', '.join(MODES)}")
    p.add_argument("--encoder_epochs", type=int, default=20,
                   help="epochs of the f-AnoGAN encoder (modes encoder, "
                        "hybrid)")
    # The GAN recipe (defaults: the paper's DCGAN with a BatchNorm D).
    p.add_argument("--gan_loss", default="dcgan",
                   choices=("dcgan", "wgan_gp", "hinge"))
    p.add_argument("--d_norm", default="auto",
                   help="D's normalisation (auto: batch for dcgan/hinge "
                        "without spectral norm, else none)")
    p.add_argument("--spectral_norm", action="store_true")
    p.add_argument("--r1_gamma", type=float, default=0.0,
                   help="R1 penalty on real images (0: off)")
    p.add_argument("--g_ema", type=float, default=0.0,
                   help="decay of G's weight average (0: off)")
    p.add_argument("--mode_seeking", type=float, default=0.0)
    p.add_argument("--n_critic", type=int, default=0,
                   help="D steps per G step (0: 5 for wgan_gp, else 1)")
    p.add_argument("--g_lr", type=float, default=2e-4)
    p.add_argument("--d_lr", type=float, default=2e-4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--map_sigma", type=float, default=0.0,
                   help="the evaluation's --map_sigma (metrics.json, "
                        "anomaly_maps.png); variants are measured anyway")
    p.add_argument("--map_smoothing", default="signed",
                   choices=("signed", "absolute"))
    p.add_argument("--map_norm", default="none", choices=("none", "depth"),
                   help="the evaluation's --map_norm (depth-standardised "
                        "variants are measured anyway)")
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
        args.encoder_epochs = min(args.encoder_epochs, 2)
    wanted = args.conditions.split(",")
    unknown = sorted(set(wanted) - {c[0] for c in CONDITIONS})
    if unknown:
        p.error(f"unknown --conditions {unknown}; choose from "
                f"{[c[0] for c in CONDITIONS]}")
    bad_modes = sorted(set(args.mode.split(",")) - set(MODES))
    if bad_modes:
        p.error(f"unknown --mode {bad_modes}; choose from {list(MODES)}")
    work = args.work_dir or tempfile.mkdtemp(prefix="oct_artifacts-")
    print(f"Models and evaluations in {work}", flush=True)
    rows: List[Dict] = [row for name, art, norm in CONDITIONS
                        if name in wanted
                        for row in run_condition(name, art, norm, args, work)]
    print()
    print(_common.format_table(rows, COLUMNS))
    print()
    print(transposed_markdown(rows))
    variant_rows = [v for r in rows for v in r["map_variants"]]
    print()
    print(_common.format_table(variant_rows, MAP_COLUMNS))
    label = recipe_label(recipe_of(args))
    name = ("oct_artifacts" + (f"_{args.tag}" if args.tag else "") +
            (f"_{label}_{args.mode.replace(',', '-')}"
             if (label, args.mode) != ("dcgan_batch", "iterative") else "") +
            ("_quick" if args.quick else ""))
    paths = _common.write_results(
        _common.DEFAULT_OUTPUT_DIR, name,
        [{k: v for k, v in r.items() if not isinstance(v, (dict, list))}
         for r in rows],
        {"args": vars(args), "machine": _common.machine_info(),
         "by_aggregate": {(r["condition"] if "," not in args.mode else
                           f"{r['condition']}/{r['mode']}"):
                          r["image_auroc_by_aggregate"] for r in rows},
         "map_variants": variant_rows})
    print("Wrote", ", ".join(paths))


if __name__ == "__main__":
    main()
