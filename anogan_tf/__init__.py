"""anogan_tf: AnoGAN (Schlegl et al. 2017, arXiv:1703.05921) in TensorFlow/Keras 3.

The package reads like the pipeline:

  data      -> decode, validate, patch and scale images; tf.data pipelines
  models    -> DCGAN Generator and Discriminator (logit + features)
  training  -> the GAN keras.Model with a custom train_step, callbacks
  mapping   -> latent mapping z* = argmin L(z), the anomaly score
  scoring   -> aggregation, stitching, metrics and reports
  export    -> SavedModel signatures for TF Serving
  serving   -> gRPC / REST client

Binaries (`anogan_tf.train`, `.score`, `.evaluate`, `.export`, `.client`) only
parse flags and call the library.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
