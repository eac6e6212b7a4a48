"""Apache Beam scoring (the optional `beam` extra: pip install -e ".[beam]").

  from anogan_tf.beam import ScoreJob, run_beam_score
  run_beam_score(ScoreJob(saved_model="exports/oct", inputs=("scans/*.png",),
                          output_dir="scored"))

See anogan_tf/beam/pipeline.py and docs/scale-out.md.
"""

try:
    import apache_beam  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "anogan_tf.beam needs Apache Beam: pip install -e \".[beam]\" "
        "(apache-beam==2.77.*).") from e

from anogan_tf.beam.handler import (METRICS_NAMESPACE, SavedModelHandler,
                                    SignatureRunner)
from anogan_tf.beam.pipeline import (DEAD_LETTER_COLUMNS, IMAGE_SIGNATURES,
                                     ExportPlan, ScoreJob, build_pipeline,
                                     expand_inputs, load_export_plan,
                                     read_dead_letters, resolve_saved_model,
                                     run_beam_score)

__all__ = ["SavedModelHandler", "SignatureRunner", "METRICS_NAMESPACE",
           "ScoreJob", "ExportPlan", "run_beam_score", "build_pipeline",
           "expand_inputs", "load_export_plan", "resolve_saved_model",
           "read_dead_letters", "DEAD_LETTER_COLUMNS", "IMAGE_SIGNATURES"]
