"""DCGAN Generator and Discriminator as in AnoGAN (Schlegl et al. 2017, sec. 2.1).

Both follow Radford et al.'s DCGAN, which the paper uses unchanged:

* Generator: z -> dense projection to (s/16, s/16, 8b) -> four fractionally
  strided 5x5 convolutions with widths 4b, 2b, b and `channels`; BatchNorm and
  ReLU between them and tanh at the output. With the paper's b = 64 the
  feature maps are 512-256-128-64 wide.
* Discriminator: four strided 5x5 convolutions of widths b, 2b, 4b, 8b with
  LeakyReLU(0.2), BatchNorm on all but the first (or, with `d_norm`,
  per-sample LayerNorm or nothing: a WGAN-GP critic), then a dense logit. It
  returns the logit and, for feature matching, the activations of one conv
  block (the last by default, as in the paper).

BatchNorm uses momentum 0.9 so that its moving statistics, which the frozen
models use during latent mapping (`training=False`), settle within a few dozen
steps even on short training runs.

The stride-2 layers are Keras Conv2D/Conv2DTranspose with one switch,
`conv_impl`: "native" (TF's kernels, the default) or "phase" (the polyphase
stride-1 form of `phase_conv`, the same function). `set_conv_impl` flips it;
`training.gan.GAN.compile(jit_compile=True)` picks "phase", because XLA:CPU
compiles the native transposed convolutions (G's layers and D's input
gradients) into slow generic loops. Weights and checkpoints do not change.
"""

from __future__ import annotations

from typing import Optional, Tuple

import keras
from keras import layers

from anogan_tf.config import D_NORMS, ModelConfig
from anogan_tf.models import phase_conv

__all__ = ["Generator", "Discriminator", "build_models", "build_generator",
           "BN_MOMENTUM"]

BN_MOMENTUM = 0.9
_KERNEL = 5
_WIDTHS = (8, 4, 2, 1)  # multiples of base_filters, coarse to fine in G


def _init():
    # DCGAN initialisation: N(0, 0.02).
    return keras.initializers.RandomNormal(stddev=0.02)


class _SelectableStride2:
    """Mixin: a 5x5 stride-2 'same' Keras conv layer whose `call` runs TF's
    native op or the polyphase form `_PHASE_FN` of `phase_conv`."""

    conv_impl = "native"
    _PHASE_FN = None

    def call(self, inputs):
        if self.conv_impl == "native":
            return super().call(inputs)
        y = type(self)._PHASE_FN(
            inputs, keras.ops.convert_to_tensor(self.kernel), self.conv_impl)
        return y + self.bias if self.use_bias else y


class _StridedConv2DTranspose(_SelectableStride2, layers.Conv2DTranspose):
    _PHASE_FN = staticmethod(phase_conv.conv2d_transpose_s2)


class _StridedConv2D(_SelectableStride2, layers.Conv2D):
    _PHASE_FN = staticmethod(phase_conv.conv2d_s2)


def _d_norm_layer(d_norm: str, block: int):
    """D's normalisation after conv block `block` (None for "none")."""
    if d_norm == "batch":
        return layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"bn{block}")
    if d_norm == "layer":
        # Per sample over the whole block (H, W, C), as in Gulrajani et al.'s
        # critic: no statistics are shared between the samples of a batch.
        return layers.LayerNormalization(axis=(1, 2, 3), name=f"ln{block}")
    return None


def unwrap(layer):
    """The layer a SpectralNormalization wrapper holds, else the layer.

    SpectralNormalization writes the normalised kernel into the wrapped
    layer's variable during training, so the wrapped layer's kernel is the
    one in use.
    """
    return getattr(layer, "layer", layer)


def _set_conv_impl(strided_layers, impl: str) -> None:
    if impl not in phase_conv.CONV_IMPLS:
        raise ValueError(f"conv_impl must be one of {phase_conv.CONV_IMPLS}, "
                         f"got {impl!r}.")
    for layer in strided_layers:
        unwrap(layer).conv_impl = impl


@keras.saving.register_keras_serializable(package="anogan_tf")
class Generator(keras.Model):
    """Maps latent codes z [N, latent_dim] to images [N, s, s, C] in [-1, 1]."""

    def __init__(self, image_size: int = 64, channels: int = 1,
                 latent_dim: int = 100, base_filters: int = 64, **kwargs):
        super().__init__(**kwargs)
        self.image_size = image_size
        self.channels = channels
        self.latent_dim = latent_dim
        self.base_filters = base_filters
        s0 = image_size // 16
        b = base_filters
        self.project = layers.Dense(s0 * s0 * _WIDTHS[0] * b, use_bias=False,
                                    kernel_initializer=_init(), name="project")
        self.reshape = layers.Reshape((s0, s0, _WIDTHS[0] * b))
        self.project_bn = layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                    name="project_bn")
        self.deconvs = []
        self.bns = []
        for i, w in enumerate(_WIDTHS[1:]):
            self.deconvs.append(_StridedConv2DTranspose(
                w * b, _KERNEL, strides=2, padding="same", use_bias=False,
                kernel_initializer=_init(), name=f"deconv{i + 1}"))
            self.bns.append(layers.BatchNormalization(momentum=BN_MOMENTUM,
                                                      name=f"bn{i + 1}"))
        self.to_image = _StridedConv2DTranspose(
            channels, _KERNEL, strides=2, padding="same",
            kernel_initializer=_init(), name="deconv4")

    def set_conv_impl(self, impl: str) -> None:
        """Runs the stride-2 layers "native" or "phase" (same function)."""
        _set_conv_impl(list(self.deconvs) + [self.to_image], impl)

    def build(self, input_shape):
        # Run `call` once (not `self(...)`, which would re-enter build) so every
        # layer creates its weights before a checkpoint is loaded into them.
        self.call(keras.ops.zeros((1, self.latent_dim)))
        self.built = True

    def call(self, z, training=False):
        h = self.reshape(self.project(z))
        h = keras.ops.relu(self.project_bn(h, training=training))
        for deconv, bn in zip(self.deconvs, self.bns):
            h = keras.ops.relu(bn(deconv(h), training=training))
        return keras.ops.tanh(self.to_image(h))

    def get_config(self):
        return {"image_size": self.image_size, "channels": self.channels,
                "latent_dim": self.latent_dim,
                "base_filters": self.base_filters, "name": self.name}


@keras.saving.register_keras_serializable(package="anogan_tf")
class Discriminator(keras.Model):
    """Scores images [N, s, s, C]: `call` gives logits [N, 1].

    `logits_and_features(x)` also returns f(x), the activations of conv block
    `feature_layer` (1..4), used by the discrimination loss L_D.
    """

    def __init__(self, image_size: int = 64, channels: int = 1,
                 base_filters: int = 64, feature_layer: int = 4,
                 spectral_norm: bool = False, d_norm: Optional[str] = None,
                 **kwargs):
        super().__init__(**kwargs)
        if d_norm is None:  # saved before d_norm existed
            d_norm = "none" if spectral_norm else "batch"
        if d_norm not in D_NORMS:
            raise ValueError(f"d_norm must be one of {D_NORMS}, got {d_norm!r}.")
        self.image_size = image_size
        self.channels = channels
        self.base_filters = base_filters
        self.feature_layer = feature_layer
        self.spectral_norm = spectral_norm
        self.d_norm = d_norm
        self.convs = []
        self.bns = []
        for i, w in enumerate(reversed(_WIDTHS)):
            conv = _StridedConv2D(w * base_filters, _KERNEL, strides=2,
                                 padding="same", kernel_initializer=_init(),
                                 name=f"conv{i + 1}")
            if spectral_norm:
                conv = layers.SpectralNormalization(conv, name=f"sn_conv{i + 1}")
            self.convs.append(conv)
            # No normalisation on the first block (DCGAN).
            self.bns.append(None if i == 0 else _d_norm_layer(d_norm, i + 1))
        self.flatten = layers.Flatten()
        dense = layers.Dense(1, kernel_initializer=_init(), name="logit")
        self.logit = (layers.SpectralNormalization(dense, name="sn_logit")
                      if spectral_norm else dense)

    def set_conv_impl(self, impl: str) -> None:
        """Runs the stride-2 layers "native" or "phase" (same function)."""
        _set_conv_impl(self.convs, impl)

    def build(self, input_shape):
        self.call(keras.ops.zeros((1, self.image_size, self.image_size,
                                   self.channels)))
        self.built = True

    def logits_and_features(self, x, training=False) -> Tuple:
        """Returns (logits [N, 1], f(x) [N, h, w, c] of block feature_layer)."""
        h = x
        features = None
        for i, (conv, bn) in enumerate(zip(self.convs, self.bns)):
            h = conv(h, training=training) if self.spectral_norm else conv(h)
            if bn is not None:
                h = bn(h, training=training)
            h = keras.ops.leaky_relu(h, negative_slope=0.2)
            if i + 1 == self.feature_layer:
                features = h
        return self.logit(self.flatten(h), training=training), features

    def features(self, x, training=False):
        """f(x): activations of conv block `feature_layer`."""
        return self.logits_and_features(x, training=training)[1]

    def call(self, x, training=False):
        return self.logits_and_features(x, training=training)[0]

    def get_config(self):
        return {"image_size": self.image_size, "channels": self.channels,
                "base_filters": self.base_filters,
                "feature_layer": self.feature_layer,
                "spectral_norm": self.spectral_norm, "d_norm": self.d_norm,
                "name": self.name}


def build_generator(config: ModelConfig, name: str = "generator"
                    ) -> Generator:
    """Builds (and creates the weights of) G for `config`."""
    g = Generator(config.image_size, config.channels, config.latent_dim,
                  config.base_filters, name=name)
    g.build((None, config.latent_dim))
    return g


def build_models(config: ModelConfig) -> Tuple[Generator, Discriminator]:
    """Builds (and creates the weights of) G and D for `config`."""
    g = build_generator(config)
    d = Discriminator(config.image_size, config.channels, config.base_filters,
                      config.feature_layer, config.spectral_norm,
                      config.d_norm,
                      name="discriminator")
    d.build((None,) + config.image_shape)
    return g, d
