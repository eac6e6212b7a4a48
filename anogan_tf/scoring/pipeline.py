"""Scoring and evaluation: patch -> map -> aggregate/stitch -> files.

`scorer.Scorer` scores; `run_score` and `run_evaluate` are the library
entry points of the `anogan-score` and `anogan-evaluate` binaries. They read the model only through the model dir's documented layout.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
from absl import logging

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig, ModelConfig)
from anogan_tf.data import DataError, ImageSet, PatchSet, load_images, stitch_maps
from anogan_tf.data.decode import decode_many
from anogan_tf.data.intensity import normalize_intensity
from anogan_tf.models import load_model_dir
from anogan_tf.scoring import calibration as calibration_lib
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring import maps as maps_lib
from anogan_tf.scoring import metrics as metrics_lib
from anogan_tf.scoring import reports
from anogan_tf.scoring.scorer import (ScoredImages, Scorer, _load_encoder_for,
                                      score_image_set)

__all__ = ["ScoredImages", "score_image_set", "load_inputs", "run_score",
           "run_evaluate", "patch_rows", "image_rows", "score_variants",
           "map_variant_metrics"]

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


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


def patch_rows(scored: ScoredImages, mode: str,
               p_values: Optional[np.ndarray] = None) -> List[Dict]:
    """scores.csv rows, one per scored model input (patch).

    `p_values` are per image; each patch row repeats its image's conformal
    p-value as "image_p_value" (patches are not calibrated on their own).
    """
    p, m, im = scored.patches, scored.mapping, scored.images
    rows = []
    for k in range(len(p.image_index)):
        i = int(p.image_index[k])
        row = {
            "id": im.ids[i],
            "patch_y": int(p.ys[k]) if p.patched else "",
            "patch_x": int(p.xs[k]) if p.patched else "",
            "anomaly_score": float(m.anomaly_score[k]),
            "residual_score": float(m.residual_score[k]),
            "discrimination_score": float(m.discrimination_score[k]),
            "mode": mode,
        }
        if im.labels is not None:
            row["label"] = int(im.labels[i])
        if p_values is not None:
            row["image_p_value"] = float(p_values[i])
        rows.append(row)
    return rows


def image_rows(scored: ScoredImages, threshold: Optional[float] = None,
               p_values: Optional[np.ndarray] = None) -> List[Dict]:
    """image_scores.csv rows, one per full image (aggregated).

    Args:
      scored: The scored images.
      threshold: The image-score threshold, when one is known: fills
        "threshold" and "is_anomalous" (and its older name
        "predicted_anomalous"), 1 where the image score is >= threshold,
        the rule of anogan-evaluate's metrics.
      p_values: [N] conformal p-values of the image scores ("p_value").

    Returns:
      One dict per image.
    """
    im = scored.images
    rows = []
    for i, image_id in enumerate(im.ids):
        row = {"id": image_id,
               "anomaly_score": float(scored.image_scores[i]),
               "residual_score": float(scored.image_residual[i]),
               "discrimination_score": float(scored.image_discrimination[i]),
               "num_patches": int(np.sum(scored.patches.image_index == i))}
        if im.labels is not None:
            row["label"] = int(im.labels[i])
        if im.categories is not None:
            row["category"] = im.categories[i]
        if threshold is not None:
            flagged = int(scored.image_scores[i] >= threshold)
            row["predicted_anomalous"] = flagged
            row["threshold"] = float(threshold)
            row["is_anomalous"] = flagged
        if p_values is not None:
            row["p_value"] = float(p_values[i])
        rows.append(row)
    return rows


def _concat(sets: Sequence[ImageSet]) -> ImageSet:
    if len(sets) == 1:
        return sets[0]
    shapes = {s.images.shape[1:] for s in sets}
    if len(shapes) > 1:
        raise DataError(f"The inputs have different image shapes {sorted(shapes)}; "
                        f"pass --resize=H,W to bring them to one size.")
    return ImageSet(np.concatenate([s.images for s in sets]),
                    tuple(i for s in sets for i in s.ids))


def _load_input(data_config: DataConfig, dataset: str,
                path: str) -> ImageSet:
    """Loads one --inputs path with the dataset loader for its kind."""
    try:
        return load_images(dataclasses.replace(
            data_config, dataset=dataset, data_path=path), "test")
    except DataError as e:
        # The loaders name the flag they usually read the path from; here
        # the path came from --inputs.
        raise DataError(str(e).replace("--data_path", "--inputs")) from e


def load_inputs(inputs: Optional[Sequence[str]],
                data_config: DataConfig) -> ImageSet:
    """The images anogan-score scores.

    Args:
      inputs: Files and folders (images, .npy/.npz, .tfrecord); when empty,
        `data_config`'s dataset "test" split is used.
      data_config: Channels, resize, skip_bad_files, intensity_norm.

    Raises:
      DataError: a path is missing, unreadable or holds no images.
    """
    if not inputs:
        return load_images(data_config, "test")
    sets, files = [], []
    for path in inputs:
        if os.path.isdir(path):
            sets.append(_load_input(data_config, "folder", path))
        elif path.endswith((".npy", ".npz")):
            sets.append(_load_input(data_config, "npy", path))
        elif path.endswith((".tfrecord", ".tfrec", ".tfrecords")):
            sets.append(_load_input(data_config, "tfrecord", path))
        elif os.path.isfile(path) and path.lower().endswith(_IMAGE_EXTENSIONS):
            files.append(path)
        elif not os.path.exists(path):
            raise DataError(f"Input {path!r} does not exist. Pass existing "
                            f"image files or folders to --inputs.")
        else:
            raise DataError(
                f"Input {path!r} is not a folder, an image "
                f"({', '.join(_IMAGE_EXTENSIONS)}), .npy/.npz or .tfrecord.")
    if files:
        decoded = decode_many(files, files, data_config.channels,
                              resize=data_config.resize)
        good = [(f, d) for f, d in zip(files, decoded) if d.error is None]
        bad = [d.error for d in decoded if d.error is not None]
        if bad and not data_config.skip_bad_files:
            raise DataError(bad[0] + " (or pass --skip_bad_files)")
        if bad:
            logging.warning("Skipped %d unreadable file(s).", len(bad))
        if good:
            shapes = {d.image.shape for _, d in good}
            if len(shapes) > 1:
                raise DataError(
                    f"The input images have different sizes {sorted(shapes)}; "
                    f"pass --resize=H,W.")
            ids = tuple(os.path.splitext(os.path.basename(f))[0] for f, _ in good)
            # Folders and arrays are normalised by load_images; files here.
            sets.append(normalize_intensity(ImageSet(
                np.stack([d.image for _, d in good]) * 2.0 - 1.0, ids),
                data_config.intensity_norm))
    if not sets:
        raise DataError("No readable images in --inputs.")
    return _concat(sets)


def _write_maps(output_dir: str, scored: ScoredImages, limit: int = 0) -> int:
    """Per-image full-resolution maps as .npy and PNG overlays."""
    map_dir = os.path.join(output_dir, "maps")
    os.makedirs(map_dir, exist_ok=True)
    m = scored.mapping
    p = scored.patches
    count = 0
    for i, image_id in enumerate(scored.images.ids):
        if limit and count >= limit:
            break
        safe = image_id.replace(os.sep, "__").replace("/", "__")
        np.save(os.path.join(map_dir, f"{safe}.npy"), scored.maps[i])
        if p.patched:
            recon = _stitch_reconstruction(scored, i)
        else:
            recon = m.reconstruction[np.flatnonzero(p.image_index == i)[0]]
        reports.save_overlay(
            os.path.join(map_dir, f"{safe}.png"), scored.images.images[i],
            recon, scored.maps[i],
            title=f"{image_id}  A={scored.image_scores[i]:.2f}")
        count += 1
    return count


def _stitch_reconstruction(scored: ScoredImages, i: int) -> np.ndarray:
    sel = np.flatnonzero(scored.patches.image_index == i)
    sub = dataclasses.replace(
        scored.patches, patches=scored.patches.patches[sel],
        image_index=np.zeros(len(sel), np.int32), ys=scored.patches.ys[sel],
        xs=scored.patches.xs[sel])
    recon = scored.mapping.reconstruction[sel]
    return stitch_maps(recon, sub, 1)[0]


def _load_calibration(eval_config: EvalConfig, data_config: DataConfig,
                      from_dataset: bool) -> Optional[ImageSet]:
    """Held-out normal images for calibration, or None.

    `eval_config.calibration_data` wins (loaded like anogan-score inputs);
    otherwise, when `from_dataset`, the dataset's "calibration" split. A
    --num_test limit applies to the calibration images too.

    Raises:
      DataError: a --calibration_data path is missing or holds no images.
      ConfigError: target_fpr > 0 and too few calibration images.
    """
    if eval_config.calibration_data:
        images = load_inputs(eval_config.calibration_data, data_config)
    elif from_dataset:
        try:
            images = load_images(data_config, "calibration")
        except DataError as e:
            logging.warning("No calibration data: %s", e)
            return None
    else:
        return None
    if eval_config.num_test:
        images = images.take(eval_config.num_test)
    logging.info("Calibration: %d held-out normal images (%s).",
                 len(images.images), ", ".join(eval_config.calibration_data)
                 if eval_config.calibration_data else
                 f"the {data_config.dataset} calibration split")
    if eval_config.target_fpr > 0:
        _check_target_fpr(eval_config.target_fpr, len(images.images),
                          eval_config.num_test)
    return images


def _check_target_fpr(target_fpr: float, n: int, num_test: int = 0) -> None:
    """ConfigError naming --target_fpr when n calibration images cannot
    support it (see calibration.check_target_fpr)."""
    try:
        calibration_lib.check_target_fpr(target_fpr, n)
    except calibration_lib.CalibrationError as e:
        limit = (f" (--num_test={num_test} also limits the calibration "
                 f"images)" if num_test else "")
        raise ConfigError(f"{e}{limit}") from e


def _calibration_warning(n: int, rule: str, eval_config: EvalConfig) -> str:
    """Logs and returns the small-calibration warning ("" when n >= 20)."""
    warning = calibration_lib.calibration_warning(
        n, rule, eval_config.threshold_percentile, eval_config.target_fpr)
    if warning:
        logging.warning("%s", warning)
    return warning


def _no_calibration_error(eval_config: EvalConfig, why: str) -> ConfigError:
    return ConfigError(
        f"--target_fpr={eval_config.target_fpr:g} needs calibration scores of "
        f"held-out normal images, but {why}. Pass --calibration_data=<folder "
        f"or file of normal images not used in training>, or drop "
        f"--target_fpr.")


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    keep = np.isfinite(scores)
    if not keep.all():
        logging.warning("Dropped %d calibration image(s) without a finite "
                        "score (no scored patch).", int(np.sum(~keep)))
    return scores[keep]


def _conformal_rule(target_fpr: float, n: int) -> str:
    return f"conformal, target FPR {target_fpr:g}, {n} calibration images"


def _load_for_scoring(model_dir: str, data_config: DataConfig,
                      mapping_config: MappingConfig, eval_config: EvalConfig,
                      detector: Optional[detector_lib.Detector] = None
                      ) -> Scorer:
    """The Scorer of a model dir with exactly these settings (the binaries
    have layered detector.json under their flags already)."""
    model_config, generator, discriminator = load_model_dir(model_dir)
    encoder = _load_encoder_for(model_dir, mapping_config)
    return Scorer(model_config, generator, discriminator, data_config,
                  mapping_config, eval_config, encoder=encoder,
                  detector=detector, model_dir=model_dir)


def run_score(model_dir: str, data_config: DataConfig,
              mapping_config: MappingConfig, eval_config: EvalConfig,
              inputs: Optional[Sequence[str]] = None,
              save_maps: bool = True,
              detector: Optional[detector_lib.Detector] = None) -> Dict:
    """anogan-score: scores.csv (+ image_scores.csv, maps) for any images.

    Calibration images (`eval_config.calibration_data`, or the dataset's
    "calibration" split when `inputs` is empty) add conformal p-values; with
    `eval_config.target_fpr` > 0 also the conformal threshold and the
    "predicted_anomalous", "threshold" and "is_anomalous" columns. With
    `inputs` and no calibration_data there are no p-values from images:
    the dataset flags may have nothing to do with the inputs.

    `detector` (the model dir's detector.json, `scoring.detector`) supplies
    the threshold and the p-values' calibration scores that anogan-evaluate
    recorded, where no calibration images give them, provided the scores
    are computed on the same scale (`detector.scale_differences`: same
    mapping, patching and image score; otherwise a warning says which
    setting differs and neither is used). The caller layers its settings
    into the configs (`detector.resolve_configs`).

    Returns:
      A summary dict (num_images, num_patches, maps_written,
      inputs_per_second (model inputs, i.e. patches when images are
      patched), output_dir, n_calibration, and threshold, threshold_rule,
      target_fpr, calibration_warning when target_fpr > 0; threshold,
      threshold_rule and threshold_source "detector.json" when the
      detector's threshold is used).

    Raises:
      ConfigError: target_fpr > 0 without (enough) calibration images.
    """
    scorer = _load_for_scoring(model_dir, data_config, mapping_config,
                               eval_config, detector)
    data_config = scorer.data_config
    calib = _load_calibration(eval_config, data_config,
                              from_dataset=not inputs)
    if calib is None and eval_config.target_fpr > 0:
        raise _no_calibration_error(
            eval_config, "--inputs were given without --calibration_data"
            if inputs else f"{data_config.dataset!r} has no calibration split")
    images = load_inputs(inputs, data_config)
    if eval_config.num_test:
        images = images.take(eval_config.num_test)
    score = lambda s, label: scorer.score(s, label=label)  # noqa: E731
    scored = score(images, "mapping")
    summary = {"n_calibration": 0}
    p_values = threshold = None
    if calib is not None:
        cal_scores = _finite_scores(
            score(calib, "calibration (normal)").image_scores)
        p_values = calibration_lib.conformal_p_values(cal_scores,
                                                      scored.image_scores)
        summary["n_calibration"] = len(cal_scores)
        if eval_config.target_fpr > 0:
            _check_target_fpr(eval_config.target_fpr, len(cal_scores))
            threshold = calibration_lib.conformal_threshold(
                cal_scores, eval_config.target_fpr)
            summary["calibration_warning"] = _calibration_warning(
                len(cal_scores), "conformal", eval_config)
            summary.update({
                "threshold": threshold, "target_fpr": eval_config.target_fpr,
                "threshold_rule": _conformal_rule(eval_config.target_fpr,
                                                  len(cal_scores))})
            if images.labels is not None and np.any(images.labels == 0):
                summary["fpr_normal_test"] = float(np.mean(
                    scored.image_scores[images.labels == 0] >= threshold))
    if detector is not None and detector.threshold is not None and (
            threshold is None or p_values is None):
        threshold, p_values = _apply_detector_threshold(
            detector, data_config, mapping_config, eval_config, scored,
            threshold, p_values, summary)
    out = eval_config.output_dir
    os.makedirs(out, exist_ok=True)
    reports.write_csv(os.path.join(out, "scores.csv"),
                      patch_rows(scored, mapping_config.mode, p_values),
                      reports.SCORE_COLUMNS + ("mode",) +
                      (("label",) if images.labels is not None else ()) +
                      (("image_p_value",) if p_values is not None else ()))
    reports.write_csv(os.path.join(out, "image_scores.csv"),
                      image_rows(scored, threshold, p_values),
                      ("id", "anomaly_score", "residual_score",
                       "discrimination_score", "num_patches") +
                      (("p_value",) if p_values is not None else ()) +
                      (("predicted_anomalous",) if threshold is not None
                       else ()) +
                      (("threshold", "is_anomalous") if threshold is not None
                       else ()))
    n_maps = _write_maps(out, scored) if save_maps else 0
    summary.update({"num_images": len(images.images),
                    "num_patches": len(scored.patches.image_index),
                    "maps_written": n_maps,
                    "inputs_per_second": len(scored.patches.image_index) /
                    max(scored.seconds, 1e-9), "output_dir": out})
    return summary


def _apply_detector_threshold(detector: detector_lib.Detector,
                              data_config: DataConfig,
                              mapping_config: MappingConfig,
                              eval_config: EvalConfig, scored: ScoredImages,
                              threshold: Optional[float],
                              p_values: Optional[np.ndarray], summary: Dict):
    """(threshold, p_values) with the detector's filling the missing ones.

    The detector's are used only when the scores are on its scale; the
    summary records what was used.
    """
    recorded = detector.threshold
    differ = detector_lib.scale_differences(
        detector, detector_lib.Detector.from_configs(
            data_config, mapping_config, eval_config))
    if differ:
        logging.warning(
            "%s's threshold %.6g (%s) is not applied: these settings differ "
            "from the ones it was calibrated with, so the scores are on "
            "another scale: %s. Drop those flags, or re-run anogan-evaluate "
            "with them to calibrate a threshold for them.",
            detector_lib.DETECTOR_FILE, recorded.value, recorded.rule,
            "; ".join(differ))
        return threshold, p_values
    if threshold is None:
        threshold = recorded.value
        summary.update({"threshold": threshold,
                        "threshold_rule": recorded.rule,
                        "threshold_source": detector_lib.DETECTOR_FILE})
        logging.info("Threshold %.6g from %s (%s).", threshold,
                     detector_lib.DETECTOR_FILE, recorded.rule)
    if p_values is None and recorded.calibration_scores:
        p_values = calibration_lib.conformal_p_values(
            recorded.calibration_scores, scored.image_scores)
        summary["n_calibration"] = len(recorded.calibration_scores)
    return threshold, p_values


def _detector_record(data_config: DataConfig, mapping_config: MappingConfig,
                     eval_config: EvalConfig, threshold: float, rule: str,
                     target_fpr: float,
                     normal_scores: Optional[np.ndarray]
                     ) -> detector_lib.Detector:
    """What anogan-evaluate records in detector.json (no threshold when it
    is not finite, e.g. no image had a scored patch)."""
    recorded = None
    if np.isfinite(threshold):
        scores = (() if normal_scores is None else
                  tuple(float(v) for v in np.sort(normal_scores)))
        recorded = detector_lib.Threshold(
            value=float(threshold), rule=rule, n_calibration=len(scores),
            target_fpr=float(target_fpr), calibration_scores=scores)
    else:
        logging.warning("The threshold is %r; %s records the settings "
                        "without it.", threshold, detector_lib.DETECTOR_FILE)
    return detector_lib.Detector.from_configs(
        data_config, mapping_config, eval_config, threshold=recorded,
        written_by="anogan-evaluate")


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

    With `write_detector` (anogan-evaluate) the settings used and the
    threshold, with its rule and the sorted calibration scores, are written
    to `<model_dir>/detector.json`, which anogan-score then applies.

    Returns:
      The metrics dict written to metrics.json.

    Raises:
      ConfigError: target_fpr > 0 without (enough) calibration images.
    """
    scorer = _load_for_scoring(model_dir, data_config, mapping_config,
                               eval_config)
    data_config = scorer.data_config
    test = load_images(data_config, "test")
    if test.labels is None:
        raise DataError(
            f"anogan-evaluate needs labelled test data; {data_config.dataset} "
            f"at {data_config.data_path!r} has no labels. Use the MVTec layout "
            f"(test/good, test/<defect>), an .npz with 'labels', or "
            f"anogan-score for unlabelled images.")
    if eval_config.num_test:
        test = test.take(eval_config.num_test)
    logging.info("Evaluating %d test images (%d normal, %d anomalous)%s.",
                 len(test), int(np.sum(test.labels == 0)),
                 int(np.sum(test.labels == 1)),
                 f", the first {eval_config.num_test} (--num_test)"
                 if eval_config.num_test else "")
    rule = eval_config.threshold_rule
    target_fpr = eval_config.target_fpr
    calib = None
    if (rule == "percentile" or target_fpr > 0 or
            eval_config.calibration_data):
        calib = _load_calibration(eval_config, data_config, from_dataset=True)
    if calib is None and target_fpr > 0:
        raise _no_calibration_error(
            eval_config, f"{data_config.dataset!r} at "
            f"{data_config.data_path!r} has no calibration split")
    if calib is None and rule == "percentile":
        logging.warning("No calibration data; using Youden's J.")
        rule = "youden"
    if target_fpr > 0:
        rule = "conformal"
    score = lambda s, label: scorer.score(  # noqa: E731
        s, progress=progress, label=label)
    scored = score(test, "test")

    normal_scores = p_values = None
    warning = ""
    if calib is not None:
        normal_scores = _finite_scores(
            score(calib, "calibration (normal)").image_scores)
        if target_fpr > 0:
            _check_target_fpr(target_fpr, len(normal_scores),
                              eval_config.num_test)
        p_values = calibration_lib.conformal_p_values(normal_scores,
                                                      scored.image_scores)
        if rule in ("conformal", "percentile"):
            warning = _calibration_warning(len(normal_scores), rule,
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
            eval_config=dataclasses.replace(eval_config, map_sigma=0.0)
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
            _conformal_rule(target_fpr, len(normal_scores))
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
    reports.write_csv(os.path.join(out, "scores.csv"),
                      patch_rows(scored, mapping_config.mode, p_values),
                      reports.SCORE_COLUMNS +
                      (("image_p_value",) if p_values is not None else ()) +
                      ("label", "mode"))
    reports.write_csv(os.path.join(out, "image_scores.csv"),
                      image_rows(scored, threshold, p_values),
                      ("id", "anomaly_score", "residual_score",
                       "discrimination_score", "num_patches", "label",
                       "category", "predicted_anomalous") +
                      (("p_value",) if p_values is not None else ()) +
                      ("threshold", "is_anomalous"))
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
        path = detector_lib.save_detector(_detector_record(
            data_config, mapping_config, eval_config, threshold,
            result["threshold_rule"], target_fpr, normal_scores), model_dir)
        logging.info("Recorded the scoring settings and threshold in %s.",
                     path)
    return result


def _map_title(scored: ScoredImages) -> str:
    if scored.map_sigma == 0:
        return "residual map |x - G(z*)|"
    if scored.map_smoothing == "signed":
        return f"|blur(x - G(z*))|, sigma {scored.map_sigma:g} px"
    return f"blur(|x - G(z*)|), sigma {scored.map_sigma:g} px"


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
