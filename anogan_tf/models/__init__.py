"""Model definitions: the DCGAN generator and discriminator, and model-dir IO."""

from anogan_tf.models.dcgan import BN_MOMENTUM, Discriminator, Generator, build_models
from anogan_tf.models.io import load_model_dir

__all__ = ["Generator", "Discriminator", "build_models", "BN_MOMENTUM",
           "load_model_dir"]
