"""Scoring: patch aggregation, map stitching, metrics, calibration, reports."""

from anogan_tf.scoring import calibration, metrics, reports
from anogan_tf.scoring.calibration import (conformal_p_values,
                                           conformal_threshold)
from anogan_tf.scoring.evaluation import run_evaluate
from anogan_tf.scoring.inputs import load_inputs
from anogan_tf.scoring.score_run import run_score
from anogan_tf.scoring.scorer import ScoredImages, Scorer, score_image_set

__all__ = ["calibration", "metrics", "reports", "conformal_p_values",
           "conformal_threshold", "Scorer", "ScoredImages", "score_image_set",
           "load_inputs", "run_score", "run_evaluate"]
