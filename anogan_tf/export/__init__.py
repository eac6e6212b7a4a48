"""SavedModel export of a trained AnoGAN for TF Serving (see docs/serving.md).

  from anogan_tf.export import export_model
  version_dir = export_model("runs/oct", "saved_models/oct", MappingConfig())
"""

from anogan_tf.export.exporter import (EXPORT_INFO_FILE, WARMUP_FILE,
                                       existing_versions, export_model,
                                       load_trained_models, next_version)
from anogan_tf.export.signatures import (ENDPOINTS, SCORE_OUTPUT_KEYS,
                                         EndpointSpec, ExportContext)

__all__ = [
    "export_model",
    "load_trained_models",
    "existing_versions",
    "next_version",
    "ENDPOINTS",
    "EndpointSpec",
    "ExportContext",
    "SCORE_OUTPUT_KEYS",
    "WARMUP_FILE",
    "EXPORT_INFO_FILE",
]
