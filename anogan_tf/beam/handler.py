"""A Beam `ModelHandler` for anogan_tf's exported SavedModel.

Beam's stock `TFModelHandlerTensor` loads models with Keras `load_model`,
which Keras 3 refuses for SavedModel folders (apache/beam#30616), and it
imports tensorflow_hub. `SavedModelHandler` loads the export with
`tf.saved_model.load` and calls one signature on each batch that
`RunInference` builds (`beam.BatchElements` with this handler's
min/max batch size).

`load_model` returns a `SignatureRunner`, a small object with a `predict`
method, not the loaded SavedModel: with `large_model=True` or
`model_copies`, Beam hands the model to `run_inference` through a
multi-process proxy that exposes methods but hides attributes such as
`.signatures`.
"""

from __future__ import annotations

from typing import Any, Dict, Iterable, Optional, Sequence

import numpy as np
from apache_beam.metrics import Metrics
from apache_beam.ml.inference.base import ModelHandler, PredictionResult

__all__ = ["SavedModelHandler", "SignatureRunner", "METRICS_NAMESPACE"]

METRICS_NAMESPACE = "anogan_beam"


class SignatureRunner:
    """One signature of a loaded SavedModel, called on stacked batches."""

    def __init__(self, saved_model_dir: str, signature: str):
        import tensorflow as tf

        self._tf = tf
        loaded = tf.saved_model.load(saved_model_dir)
        if signature not in loaded.signatures:
            raise ValueError(
                f"{saved_model_dir} has no signature {signature!r} (it has "
                f"{', '.join(sorted(loaded.signatures))}). Re-export with "
                f"anogan-export, or pass --signature with one of these.")
        self._loaded = loaded  # keeps the variables alive
        self._fn = loaded.signatures[signature]
        _, kwargs = self._fn.structured_input_signature
        (self._input_name, spec), = kwargs.items()
        self._dtype = spec.dtype.as_numpy_dtype

    def input_dtype(self):
        return self._dtype

    def predict(self, batch: np.ndarray) -> Dict[str, np.ndarray]:
        """{output name: [N, ...] array} for the stacked inputs."""
        x = self._tf.constant(np.asarray(batch, self._dtype))
        return {k: v.numpy() for k, v in self._fn(**{self._input_name: x})
                .items()}


class SavedModelHandler(ModelHandler[np.ndarray, PredictionResult,
                                     SignatureRunner]):
    """RunInference over one signature of an anogan-export SavedModel.

    Each example is one input of the signature without the batch axis
    (for score_images: an image [H, W, C] of the signature's dtype). A batch
    is stacked, scored in one call, and split into one PredictionResult per
    example whose `inference` is {output name: that example's row}.

    The handler counts what it runs as Beam metrics in METRICS_NAMESPACE:
    "batch_size" (a distribution: one value per signature call) and
    "examples_scored" (a counter).
    """

    def __init__(self, saved_model_dir: str, signature: str = "score_images",
                 *, min_batch_size: int = 1, max_batch_size: int = 8,
                 large_model: bool = False,
                 model_copies: Optional[int] = None):
        if not 1 <= min_batch_size <= max_batch_size:
            raise ValueError(
                f"Batch sizes must satisfy 1 <= min ({min_batch_size}) <= max "
                f"({max_batch_size}); pass --min_batch_size/--max_batch_size.")
        super().__init__(min_batch_size=min_batch_size,
                         max_batch_size=max_batch_size,
                         large_model=large_model, model_copies=model_copies)
        self._saved_model_dir = saved_model_dir
        self._signature = signature
        self._batch_size = Metrics.distribution(METRICS_NAMESPACE,
                                                "batch_size")
        self._scored = Metrics.counter(METRICS_NAMESPACE, "examples_scored")

    def load_model(self) -> SignatureRunner:
        return SignatureRunner(self._saved_model_dir, self._signature)

    def run_inference(self, batch: Sequence[np.ndarray],
                      model: SignatureRunner,
                      inference_args: Optional[Dict[str, Any]] = None
                      ) -> Iterable[PredictionResult]:
        outputs = model.predict(np.stack(batch))
        self._batch_size.update(len(batch))
        self._scored.inc(len(batch))
        return [PredictionResult(example, {k: v[i] for k, v in
                                           outputs.items()})
                for i, example in enumerate(batch)]

    def get_num_bytes(self, batch: Sequence[np.ndarray]) -> int:
        return sum(np.asarray(x).nbytes for x in batch)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE
