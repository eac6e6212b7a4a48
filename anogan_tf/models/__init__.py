"""Model definitions: the DCGAN generator and discriminator, the f-AnoGAN
encoder, and model-dir IO."""

from anogan_tf.models.dcgan import (BN_MOMENTUM, Discriminator, Generator,
                                    build_generator, build_models)
from anogan_tf.models.encoder import Encoder, build_encoder
from anogan_tf.models.io import load_encoder, load_model_dir

__all__ = ["Generator", "Discriminator", "build_models", "build_generator",
           "BN_MOMENTUM",
           "Encoder", "build_encoder", "load_model_dir", "load_encoder"]
