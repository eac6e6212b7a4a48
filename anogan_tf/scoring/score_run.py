"""anogan-score's job: score any images with a model dir's detector.

`run_score` loads the model dir as a `Scorer`, scores --inputs (or a
dataset's test split), adds p-values and a threshold from calibration images
or from detector.json, and writes scores.csv, image_scores.csv and maps.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from absl import logging

from anogan_tf.config import DataConfig, EvalConfig, MappingConfig
from anogan_tf.scoring import calibration as calibration_lib
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring import outputs, thresholds
from anogan_tf.scoring.inputs import load_inputs
from anogan_tf.scoring.scorer import Scorer

__all__ = ["run_score"]


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
    scorer = Scorer.from_model_dir(model_dir, data_config, mapping_config,
                                   eval_config, detector=detector)
    data_config = scorer.data_config
    calib = thresholds.load_calibration(eval_config, data_config,
                                        from_dataset=not inputs)
    if calib is None and eval_config.target_fpr > 0:
        raise thresholds.no_calibration_error(
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
        cal_scores = thresholds.finite_scores(
            score(calib, "calibration (normal)").image_scores)
        p_values = calibration_lib.conformal_p_values(cal_scores,
                                                      scored.image_scores)
        summary["n_calibration"] = len(cal_scores)
        if eval_config.target_fpr > 0:
            thresholds.check_target_fpr(eval_config.target_fpr,
                                        len(cal_scores))
            threshold = calibration_lib.conformal_threshold(
                cal_scores, eval_config.target_fpr)
            summary["calibration_warning"] = thresholds.calibration_warning(
                len(cal_scores), "conformal", eval_config)
            summary.update({
                "threshold": threshold, "target_fpr": eval_config.target_fpr,
                "threshold_rule": thresholds.conformal_rule(
                    eval_config.target_fpr, len(cal_scores))})
            if images.labels is not None and np.any(images.labels == 0):
                summary["fpr_normal_test"] = float(np.mean(
                    scored.image_scores[images.labels == 0] >= threshold))
    if threshold is None or p_values is None:
        threshold, p_values = _apply_recorded_threshold(
            scorer, scored, threshold, p_values, summary)
    out = eval_config.output_dir
    outputs.write_score_files(out, scored, mapping_config.mode, threshold,
                              p_values)
    n_maps = outputs.write_maps(out, scored) if save_maps else 0
    summary.update({"num_images": len(images.images),
                    "num_patches": len(scored.patches.image_index),
                    "maps_written": n_maps,
                    "inputs_per_second": len(scored.patches.image_index) /
                    max(scored.seconds, 1e-9), "output_dir": out})
    return summary


def _apply_recorded_threshold(scorer: Scorer, scored, threshold: Optional[float],
                              p_values: Optional[np.ndarray], summary: Dict):
    """(threshold, p_values) with detector.json's filling the missing ones,
    when the scores are on its scale; the summary records what was used."""
    recorded = scorer.recorded_threshold()
    if recorded is None:
        return threshold, p_values
    if threshold is None:
        threshold = recorded.value
        summary.update({"threshold": threshold,
                        "threshold_rule": recorded.rule,
                        "threshold_source": detector_lib.DETECTOR_FILE})
        logging.info("Threshold %.6g from %s (%s).", threshold,
                     detector_lib.DETECTOR_FILE, recorded.rule)
    if p_values is None and recorded.calibration_scores:
        p_values = scorer.p_values(scored.image_scores)
        summary["n_calibration"] = len(recorded.calibration_scores)
    return threshold, p_values
