"""Model definitions: the DCGAN generator and discriminator."""

from anogan_tf.models.dcgan import BN_MOMENTUM, Discriminator, Generator, build_models

__all__ = ["Generator", "Discriminator", "build_models", "BN_MOMENTUM"]
