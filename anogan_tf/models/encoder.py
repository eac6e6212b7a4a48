"""The f-AnoGAN encoder E: x -> z (Schlegl et al. 2019, sec. 2.3).

E mirrors the discriminator's convolution stack (four strided 5x5
convolutions of widths b, 2b, 4b, 8b, LeakyReLU(0.2), BatchNorm on all but
the first block) and ends in a dense layer of size latent_dim. For the
uniform prior on [-1, 1] the output goes through tanh, so E(x) always lies
in the prior's support; for the normal prior it is linear.

E is trained after the GAN, with G and D frozen (`training.encoder`), and
saved as `<model_dir>/encoder.keras`.
"""

from __future__ import annotations

import keras
from keras import layers

from anogan_tf.config import ModelConfig
from anogan_tf.models.dcgan import BN_MOMENTUM, _KERNEL, _WIDTHS, _init

__all__ = ["Encoder", "build_encoder"]


@keras.saving.register_keras_serializable(package="anogan_tf")
class Encoder(keras.Model):
    """Maps images [N, s, s, C] in [-1, 1] to latent codes [N, latent_dim]."""

    def __init__(self, image_size: int = 64, channels: int = 1,
                 latent_dim: int = 100, base_filters: int = 64,
                 prior: str = "uniform", **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.channels = channels
        self.latent_dim = latent_dim
        self.base_filters = base_filters
        self.prior = prior
        self.convs = []
        self.bns = []
        for i, w in enumerate(reversed(_WIDTHS)):
            self.convs.append(layers.Conv2D(
                w * base_filters, _KERNEL, strides=2, padding="same",
                kernel_initializer=_init(), name=f"conv{i + 1}"))
            # No BN on the first block, as in D (DCGAN).
            self.bns.append(None if i == 0 else layers.BatchNormalization(
                momentum=BN_MOMENTUM, name=f"bn{i + 1}"))
        self.flatten = layers.Flatten()
        self.to_latent = layers.Dense(latent_dim, kernel_initializer=_init(),
                                      name="to_latent")

    def build(self, input_shape):
        # Run `call` once (not `self(...)`) so every layer creates its weights.
        self.call(keras.ops.zeros((1, self.image_size, self.image_size,
                                   self.channels)))
        self.built = True

    def call(self, x, training=False):
        h = x
        for conv, bn in zip(self.convs, self.bns):
            h = conv(h)
            if bn is not None:
                h = bn(h, training=training)
            h = keras.ops.leaky_relu(h, negative_slope=0.2)
        z = self.to_latent(self.flatten(h))
        # tanh keeps E(x) inside the uniform prior's support [-1, 1].
        return keras.ops.tanh(z) if self.prior == "uniform" else z

    def get_config(self):
        return {"image_size": self.image_size, "channels": self.channels,
                "latent_dim": self.latent_dim,
                "base_filters": self.base_filters, "prior": self.prior,
                "name": self.name}


def build_encoder(config: ModelConfig) -> Encoder:
    """Builds (and creates the weights of) E for `config`."""
    encoder = Encoder(config.image_size, config.channels, config.latent_dim,
                      config.base_filters, config.prior, name="encoder")
    encoder.build((None,) + config.image_shape)
    return encoder
