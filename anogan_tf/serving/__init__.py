"""Clients for an exported anogan_tf model behind TF Serving (gRPC or REST).

  from anogan_tf.serving import connect, score_files
  with connect("localhost:8500", timeout=60) as client:
      scores = score_files(client, ["images/"], "out/", batch_size=8)

See docs/serving.md. (A Beam batch-scoring pipeline may join later.)
"""

from anogan_tf.serving.clients import (GrpcPredictClient, PredictClient,
                                       RestPredictClient, connect)
from anogan_tf.serving.images import (InputError, list_inputs, read_image,
                                      to_signature_dtype)
from anogan_tf.serving.score import (CSV_COLUMNS, SCORE_KEYS, SCORES_FILE,
                                     ClientScores, score_files,
                                     write_scores_csv)
from anogan_tf.serving.signature import ServingError, SignatureInfo, signature_info

__all__ = [
    "PredictClient",
    "GrpcPredictClient",
    "RestPredictClient",
    "connect",
    "SignatureInfo",
    "ServingError",
    "signature_info",
    "InputError",
    "list_inputs",
    "read_image",
    "to_signature_dtype",
    "ClientScores",
    "score_files",
    "write_scores_csv",
    "SCORE_KEYS",
    "CSV_COLUMNS",
    "SCORES_FILE",
]
