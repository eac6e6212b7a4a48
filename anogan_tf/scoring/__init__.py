"""Scoring: patch aggregation, map stitching, metrics and reports."""

from anogan_tf.scoring import metrics, reports
from anogan_tf.scoring.pipeline import (ScoredImages, load_inputs, run_evaluate,
                                        run_score, score_image_set)

__all__ = ["metrics", "reports", "ScoredImages", "score_image_set",
           "load_inputs", "run_score", "run_evaluate"]
