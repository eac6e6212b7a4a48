"""anogan-evaluate's job: score labelled test images and measure the detector.

`run_evaluate` scores the test split through the `Scorer`, calibrates the
threshold on held-out normal images (`scoring.thresholds`), and writes
metrics.json (every aggregation's, score's and map variant's AUROC from the
same mapping, the paper's iterative A(x) beside an encoder-mode score),
scores.csv, image_scores.csv and the plots.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Sequence

import numpy as np
from absl import logging

from anogan_tf.config import ConfigError, DataConfig, EvalConfig, MappingConfig
from anogan_tf.data import DataError, PatchSet, load_images
from anogan_tf.scoring import calibration as calibration_lib
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring import map_reference as reference_lib
from anogan_tf.scoring import maps as maps_lib
from anogan_tf.scoring import metrics as metrics_lib
from anogan_tf.scoring import outputs, reports, thresholds
from anogan_tf.scoring.scorer import ScoredImages, Scorer

__all__ = ["run_evaluate", "score_variants", "map_variant_metrics"]


def score_variants(mapping, lambda_weight: float) -> Dict[str, np.ndarray]:
    """Per-input scores from one mapping, for comparing them on labels.

    Returns {"anogan": (1 - lambda) R + lambda D (the paper's A(x)),
    "residual": R, "residual_sq": sum (x - G(z*))^2, "feature": D}.
    In encoder mode R and D are f-AnoGAN's image and feature MSE.
    """
    r = np.asarray(mapping.residual_score, np.float64)
    d = np.asarray(mapping.discrimination_score, np.float64)
    maps = np.asarray(mapping.residual_map, np.float64)
    return {"anogan": (1.0 - lambda_weight) * r + lambda_weight * d,
            "residual": r,
            "residual_sq": np.sum(maps ** 2, axis=tuple(range(1, maps.ndim))),
            "feature": d}


def run_evaluate(model_dir: str, data_config: DataConfig,
                 mapping_config: MappingConfig, eval_config: EvalConfig,
                 progress: bool = True, write_detector: bool = False) -> Dict:
    """anogan-evaluate: metrics.json, scores.csv and plots on labelled data.

    Calibration images (`eval_config.calibration_data`, else the dataset's
    held-out normal "calibration" split, never used in training) give the
    percentile threshold, conformal p-values (image_scores.csv "p_value",
    scores.csv "image_p_value") and, with `eval_config.target_fpr` > 0, the
    conformal threshold, which overrides threshold_rule. Without
    calibration images the percentile rule falls back to Youden's J and is
    recorded as such.

    With `eval_config.map_norm` "depth" the per-depth statistics of the
    calibration images' maps are fitted first and standardise the test
    maps; each calibration image's own score then comes from statistics
    fitted on the other half of the calibration images
    (`map_reference.cross_fitted_maps`), so the threshold is not set on
    images that look more normal than new ones.

    With `write_detector` (anogan-evaluate) the settings used and the
    threshold, with its rule and the sorted calibration scores (and the map
    reference), are written to `<model_dir>/detector.json`, which
    anogan-score then applies.

    Returns:
      The metrics dict written to metrics.json.

    Raises:
      ConfigError: target_fpr > 0 or map_norm "depth" without (enough)
        calibration images.
    """
    scorer = Scorer.from_model_dir(model_dir, data_config, mapping_config,
                                   eval_config, use_detector=False)
    data_config = scorer.data_config
    test = load_images(data_config, "test")
    if test.labels is None:
        raise DataError(
            f"anogan-evaluate needs labelled test data; {data_config.dataset} "
            f"at {data_config.data_path!r} has no labels. Use the MVTec layout "
            f"(test/good, test/<defect>), an .npz with 'labels', or "
            f"anogan-score for unlabelled images.")
    loaded = len(test)
    if eval_config.num_test:
        test = test.take(eval_config.num_test)
    logging.info("Evaluating %d test images (%d normal, %d anomalous)%s.",
                 len(test), int(np.sum(test.labels == 0)),
                 int(np.sum(test.labels == 1)),
                 f", the first {len(test)} of the {loaded} loaded (--num_test)"
                 if len(test) < loaded else "")
    rule = eval_config.threshold_rule
    target_fpr = eval_config.target_fpr
    calib = None
    depth_norm = eval_config.map_norm == "depth"
    if (rule == "percentile" or target_fpr > 0 or
            eval_config.calibration_data or depth_norm):
        calib = thresholds.load_calibration(eval_config, data_config, from_dataset=True)
    if calib is None and depth_norm:
        raise ConfigError(
            f"--map_norm=depth fits its statistics on held-out normal images, "
            f"but {data_config.dataset!r} at {data_config.data_path!r} has no "
            f"calibration split. Pass --calibration_data=<folder or file of "
            f"normal images not used in training>, or --map_norm=none.")
    if calib is None and target_fpr > 0:
        raise thresholds.no_calibration_error(
            eval_config, f"{data_config.dataset!r} at "
            f"{data_config.data_path!r} has no calibration split")
    if calib is None and rule == "percentile":
        logging.warning("No calibration data; using Youden's J.")
        rule = "youden"
    if target_fpr > 0:
        rule = "conformal"
    calib_scored = reference = None
    calib_label = "calibration (normal)"
    if depth_norm:
        calib_scored = scorer.with_settings(eval_config=dataclasses.replace(
            eval_config, map_norm="none")).score(calib, progress=progress,
                                                 label=calib_label)
        map_name = maps_lib.map_name(eval_config.map_sigma,
                                     eval_config.map_smoothing)
        reference = reference_lib.fit_map_reference(
            calib_scored.maps, calib_scored.residuals.weight,
            calib_scored.patches.roi_masks, map_name)
        scorer = scorer.with_settings(map_reference=reference)
        logging.info(
            "Fitted the map reference (--map_norm=depth) on the %s maps of "
            "%d normal calibration images: %d depth bins (%s).", map_name,
            reference.n_images, len(reference.median),
            "within the retina band" if reference.coordinate == "band"
            else "image rows")
    score = lambda s, label: scorer.score(  # noqa: E731
        s, progress=progress, label=label)
    scored = score(test, "test")

    normal_scores = p_values = None
    warning = ""
    if calib is not None:
        if calib_scored is None:
            calib_image_scores = score(calib, calib_label).image_scores
        elif eval_config.aggregate == "map_max":
            # Each calibration image standardised without its own pixels.
            cross = reference_lib.cross_fitted_maps(
                calib_scored.maps, calib_scored.residuals.weight,
                calib_scored.patches.roi_masks, reference.map)
            calib_image_scores = cross.reshape(len(cross), -1).max(
                axis=1).astype(np.float64)
        else:
            calib_image_scores = calib_scored.image_scores
        normal_scores = thresholds.finite_scores(calib_image_scores)
        if target_fpr > 0:
            thresholds.check_target_fpr(target_fpr, len(normal_scores),
                              eval_config.num_test)
        p_values = calibration_lib.conformal_p_values(normal_scores,
                                                      scored.image_scores)
        if rule in ("conformal", "percentile"):
            warning = thresholds.calibration_warning(len(normal_scores), rule,
                                           eval_config)
    labels = test.labels
    if rule == "conformal":
        threshold = calibration_lib.conformal_threshold(normal_scores,
                                                        target_fpr)
    else:
        threshold = metrics_lib.choose_threshold(
            rule, labels, scored.image_scores, normal_scores,
            eval_config.threshold_percentile)
    result = metrics_lib.image_metrics(labels, scored.image_scores, threshold)
    # Every aggregation's AUROC from the same mapping, for choosing one.
    def auroc_of_patches(values, patches: PatchSet, how: str) -> float:
        """Image AUROC of per-patch `values` aggregated per image by `how`."""
        return metrics_lib.image_metrics(labels, metrics_lib.aggregate_patch_scores(
            values, patches.image_index, len(labels), how, eval_config.topk),
            0.0)["image_auroc"]

    by_aggregate = {how: auroc_of_patches(scored.mapping.anomaly_score,
                                          scored.patches, how)
                    for how in ("max", "mean", "topk_mean")}
    by_aggregate["map_max"] = metrics_lib.image_metrics(
        labels, scored.maps.reshape(len(labels), -1).max(axis=1), 0.0)["image_auroc"]
    result["image_auroc_by_aggregate"] = by_aggregate
    # Every score's AUROC from the same mapping (the paper's A(x) always
    # among them), aggregated as the detector aggregates patches.
    patch_how = ("max" if eval_config.aggregate == "map_max"
                 else eval_config.aggregate)
    result["image_auroc_by_score"] = {
        name: auroc_of_patches(values, scored.patches, patch_how)
        for name, values in score_variants(
            scored.mapping, mapping_config.lambda_weight).items()}
    if (mapping_config.mode != "iterative" and eval_config.paper_score
            and mapping_config.steps > 0):
        # The paper's own score on the same images, always reported. Only
        # its patch scores are read, so its maps are left unsmoothed.
        paper = scorer.with_settings(
            mapping_config=dataclasses.replace(
                mapping_config, mode="iterative", score="anogan"),
            eval_config=dataclasses.replace(eval_config, map_sigma=0.0,
                                            map_norm="none")
        ).score(test, progress=progress,
                label="test, the paper's iterative A(x) (--paper_score)")
        result["image_auroc_by_score"]["paper_iterative"] = auroc_of_patches(
            paper.mapping.anomaly_score, paper.patches, patch_how)
    if test.masks is not None:
        # Artefact pixels (padding, border lines) are no evidence either way.
        result.update(metrics_lib.pixel_metrics(
            test.masks, scored.maps, valid=scored.patches.valid_masks))
    # Every map variant's metrics from the same mapping, for choosing one.
    result["metrics_by_map"] = map_variant_metrics(scored, labels, test.masks)
    result.update({
        "threshold": threshold,
        "threshold_rule": (
            thresholds.conformal_rule(target_fpr, len(normal_scores))
            if rule == "conformal" else
            f"percentile {eval_config.threshold_percentile:g} of "
            f"{len(normal_scores)} normal calibration images"
            if rule == "percentile" else
            "youden (max TPR - FPR on the test labels)"),
        "target_fpr": target_fpr,
        "fpr_normal_test": float(np.mean(
            scored.image_scores[labels == 0] >= threshold)),
        "n_calibration": 0 if normal_scores is None else len(normal_scores),
        "calibration_warning": warning or None,
        "artifact_pixel_fraction": (
            0.0 if scored.patches.valid_masks is None else
            float(np.mean(~scored.patches.valid_masks))),
        "map_region": (
            "all pixels" if scored.region is None else
            "ROI plus margin, minus artefacts"
            if scored.patches.roi_masks is not None else
            "all pixels minus artefacts"),
        "mode": mapping_config.mode,
        "n_normal": int(np.sum(labels == 0)),
        "n_anomalous": int(np.sum(labels == 1)),
        "n_patches": int(len(scored.patches.image_index)),
        "aggregate": eval_config.aggregate,
        "map": maps_lib.map_name(eval_config.map_sigma,
                                 eval_config.map_smoothing),
        "map_sigma": eval_config.map_sigma,
        "map_smoothing": eval_config.map_smoothing,
        "map_norm": eval_config.map_norm,
        "map_reference_images": (0 if reference is None else
                                 reference.n_images),
        "score": mapping_config.score,
        "mapping_steps": mapping_config.steps,
        "mapping_lr": mapping_config.lr,
        "lambda_weight": mapping_config.lambda_weight,
        "restarts": mapping_config.restarts,
        "kappa": mapping_config.kappa,
        "dataset": data_config.dataset,
        "patches_per_second": float(len(scored.patches.image_index) /
                                    max(scored.seconds, 1e-9)),
    })
    out = eval_config.output_dir
    os.makedirs(out, exist_ok=True)
    reports.write_json(os.path.join(out, "metrics.json"), result)
    outputs.write_score_files(out, scored, mapping_config.mode, threshold,
                              p_values)
    reports.plot_roc(os.path.join(out, "roc.png"), labels, scored.image_scores)
    reports.plot_pr(os.path.join(out, "pr.png"), labels, scored.image_scores)
    reports.plot_score_hist(os.path.join(out, "score_hist.png"), labels,
                            scored.image_scores, threshold)
    # The grid shows the highest-scoring anomalous and normal images.
    order = np.argsort(-scored.image_scores)
    pick = ([i for i in order if labels[i] == 1][:eval_config.max_map_images // 2]
            + [i for i in order if labels[i] == 0][:eval_config.max_map_images // 2])
    reports.save_anomaly_map_grid(
        os.path.join(out, "anomaly_maps.png"), test.images[pick],
        scored.maps[pick], None if test.masks is None else test.masks[pick],
        [test.ids[i] for i in pick], scored.image_scores[pick], labels[pick],
        map_title=_map_title(scored))
    if write_detector:
        path = detector_lib.save_detector(thresholds.detector_record(
            data_config, mapping_config, eval_config, threshold,
            result["threshold_rule"], target_fpr, normal_scores,
            reference), model_dir)
        logging.info("Recorded the scoring settings and threshold in %s.",
                     path)
    return result


def _map_title(scored: ScoredImages) -> str:
    if scored.map_sigma == 0:
        title = "residual map |x - G(z*)|"
    elif scored.map_smoothing == "signed":
        title = f"|blur(x - G(z*))|, sigma {scored.map_sigma:g} px"
    else:
        title = f"blur(|x - G(z*)|), sigma {scored.map_sigma:g} px"
    if scored.map_norm == "depth":
        title += ", / p99 of normal images at its depth"
    return title


def map_variant_metrics(scored: ScoredImages, labels: np.ndarray,
                        masks: Optional[np.ndarray] = None,
                        sigmas: Sequence[float] = maps_lib.VARIANT_SIGMAS
                        ) -> Dict[str, Dict[str, float]]:
    """Metrics of every map variant made from one mapping's residuals.

    The variants are the raw map and both smoothings at each of `sigmas`
    (`scoring.maps.map_variants`), plus the scored map's own setting.

    Args:
      scored: ScoredImages with `residuals`.
      labels: [N] image labels (1: anomalous).
      masks: Optional [N, H, W] ground truth; adds the pixel metrics.
      sigmas: Sigmas (full-image pixels) to compare.

    Returns:
      {variant name: {"image_auroc_map_max", and with masks "pixel_auroc",
      "pixel_auprc" (non-artefact pixels, as metrics.json's pixel_auroc),
      and with an ROI "pixel_auroc_in_roi" (ROI pixels only)}}.
    """
    variants = maps_lib.map_variants(sigmas)
    own = maps_lib.map_name(scored.map_sigma, scored.map_smoothing)
    if own not in {name for name, _, _ in variants}:
        variants.append((own, scored.map_sigma, scored.map_smoothing))
    n = len(labels)
    out = {}
    for name, sigma, smoothing in variants:
        maps = maps_lib.anomaly_maps(scored.residuals, sigma, smoothing)
        row = {"image_auroc_map_max": metrics_lib.image_metrics(
            labels, maps.reshape(n, -1).max(axis=1), 0.0)["image_auroc"]}
        if masks is not None:
            row.update(metrics_lib.pixel_metrics(
                masks, maps, valid=scored.patches.valid_masks))
            if scored.patches.roi_masks is not None:
                inside = metrics_lib.pixel_metrics(
                    masks, maps, valid=scored.patches.roi_masks)
                if inside:
                    row["pixel_auroc_in_roi"] = inside["pixel_auroc"]
        out[name] = row
    return out
