"""Calibrating a threshold from held-out normal images, as the binaries do.

The maths is in `scoring.calibration` (pure functions of score arrays); this
module loads the calibration images, checks that their number supports the
rule asked for, warns when it is small, and builds detector.json's record.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from absl import logging

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig)
from anogan_tf.data import DataError, ImageSet, load_images
from anogan_tf.scoring import calibration as calibration_lib
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring.inputs import load_inputs

__all__ = ["load_calibration", "check_target_fpr", "calibration_warning",
           "no_calibration_error", "finite_scores", "conformal_rule",
           "detector_record"]


def load_calibration(eval_config: EvalConfig, data_config: DataConfig,
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
    loaded = len(images.images)
    if eval_config.num_test:
        images = images.take(eval_config.num_test)
    logging.info("Calibration: %d held-out normal images (%s)%s.",
                 len(images.images), ", ".join(eval_config.calibration_data)
                 if eval_config.calibration_data else
                 f"the {data_config.dataset} calibration split",
                 f", the first {len(images.images)} of the {loaded} loaded "
                 f"(--num_test)" if len(images.images) < loaded else "")
    if eval_config.target_fpr > 0:
        check_target_fpr(eval_config.target_fpr, len(images.images),
                         eval_config.num_test)
    return images


def check_target_fpr(target_fpr: float, n: int, num_test: int = 0) -> None:
    """ConfigError naming --target_fpr when n calibration images cannot
    support it (see calibration.check_target_fpr)."""
    try:
        calibration_lib.check_target_fpr(target_fpr, n)
    except calibration_lib.CalibrationError as e:
        limit = (f" (--num_test={num_test} also limits the calibration "
                 f"images)" if num_test else "")
        raise ConfigError(f"{e}{limit}") from e


def calibration_warning(n: int, rule: str, eval_config: EvalConfig) -> str:
    """Logs and returns the small-calibration warning ("" when n >= 20)."""
    warning = calibration_lib.calibration_warning(
        n, rule, eval_config.threshold_percentile, eval_config.target_fpr)
    if warning:
        logging.warning("%s", warning)
    return warning


def no_calibration_error(eval_config: EvalConfig, why: str) -> ConfigError:
    return ConfigError(
        f"--target_fpr={eval_config.target_fpr:g} needs calibration scores of "
        f"held-out normal images, but {why}. Pass --calibration_data=<folder "
        f"or file of normal images not used in training>, or drop "
        f"--target_fpr.")


def finite_scores(scores: np.ndarray) -> np.ndarray:
    keep = np.isfinite(scores)
    if not keep.all():
        logging.warning("Dropped %d calibration image(s) without a finite "
                        "score (no scored patch).", int(np.sum(~keep)))
    return scores[keep]


def conformal_rule(target_fpr: float, n: int) -> str:
    return f"conformal, target FPR {target_fpr:g}, {n} calibration images"


def detector_record(data_config: DataConfig, mapping_config: MappingConfig,
                     eval_config: EvalConfig, threshold: float, rule: str,
                     target_fpr: float,
                     normal_scores: Optional[np.ndarray],
                     map_reference=None) -> detector_lib.Detector:
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
        written_by="anogan-evaluate", map_reference=map_reference)
