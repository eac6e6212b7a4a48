"""Frozen, inference-only views of G and D for the latent mapping.

During the mapping, G and D are constants: BatchNorm uses its moving
statistics and no weight gets a gradient. `freeze` turns the trained Keras
models into two small callables that compute the same functions faster:

* BatchNorm folded into the preceding layer: BN(y) = s * y + t with
  s = gamma / sqrt(var + eps) and t = beta - s * mean becomes a scaled kernel
  and a bias, so neither the forward nor the backward pass touches BN.
* Each stride-2 layer runs either TF's native (transposed) convolution or the
  polyphase stride-1 form of `phase_conv`, chosen per layer (`conv_impls`).
  Under XLA the native transposed convolution is pathologically slow on CPU,
  so "auto" picks the phase form there; without XLA it keeps oneDNN's native
  kernels except on the image-side layers (1..4 channels), where the phase
  form measured faster (`python benchmarks/layers.py`).

The folded weights are computed from the models' variables when `freeze` is
called, so call it inside the traced function (once per trace, outside any
loop): the graph then reads the live variables, and SavedModels keep
exporting the original Keras variables only.

Mixed precision: with dtype=tf.bfloat16 the folded weights and the
activations are bfloat16, while inputs, outputs (G(z), logits, f(x)) and so
the losses, gradients' destination z and Adam stay float32: the
`mixed_bfloat16` recipe. It is meant for GPUs and CPUs with native bfloat16
(AVX512-BF16/AMX); scores agree with float32 to about 1% (tests/test_frozen.py).

The views expose the parts of the Keras models' interface the mapping uses:
`FrozenGenerator(z, training=False)` and
`FrozenDiscriminator.logits_and_features / features`, plus `image_size`,
`channels` and `latent_dim`; `training=True` is refused.
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import keras
import tensorflow as tf

from anogan_tf.models import phase_conv
from anogan_tf.models.dcgan import unwrap

__all__ = ["CONV_IMPL_CHOICES", "COMPUTE_DTYPES", "choose_conv_impl",
           "freeze", "FrozenGenerator", "FrozenDiscriminator"]

CONV_IMPL_CHOICES = ("auto",) + phase_conv.CONV_IMPLS
COMPUTE_DTYPES = ("float32", "bfloat16")
_IMAGE_SIDE_CHANNELS = 4


def choose_conv_impl(policy: str, c_in: int, c_out: int, xla: bool) -> str:
    """The conv implementation for one stride-2 layer under `policy`.

    "native" and "phase" force one form; "auto" picks the phase form under
    XLA, and without XLA only for image-side layers (min(c_in, c_out) <= 4).
    """
    if policy not in CONV_IMPL_CHOICES:
        raise ValueError(f"conv_impl must be one of {CONV_IMPL_CHOICES}, got "
                         f"{policy!r}.")
    if policy != "auto":
        return policy
    if xla or min(c_in, c_out) <= _IMAGE_SIDE_CHANNELS:
        return "phase"
    return "native"


def _t(variable):
    return tf.convert_to_tensor(variable)


def _cast(tensors, dtype):
    return tuple(tf.cast(t, dtype) for t in tensors)


def _bn_scale_shift(bn) -> Tuple[tf.Tensor, tf.Tensor]:
    """(s, t) with BN(y) = s * y + t in inference mode."""
    mean, var = _t(bn.moving_mean), _t(bn.moving_variance)
    s = tf.math.rsqrt(var + bn.epsilon)
    if bn.scale:
        s = s * _t(bn.gamma)
    t = -mean * s
    if bn.center:
        t = t + _t(bn.beta)
    return s, t


def _leaky_relu(h):
    """LeakyReLU(0.2) as max(h, 0.2 h): the same values and gradients.

    Written out because TF's grappler remapper fuses Conv2D + BiasAdd +
    LeakyRelu and then fails on the gradient's LeakyReluGrad, which needs the
    fused-away pre-activation ("remapper failed: ... fanout ... exist for
    missing node"); the failure drops all of the remapper's fusions.
    """
    return tf.maximum(h, 0.2 * h)


def _layer_norm(h, gamma_beta, epsilon):
    """Keras LayerNormalization(axis=(1, 2, 3)) of h [N, H, W, C]."""
    gamma, beta = gamma_beta
    mean, var = tf.nn.moments(tf.cast(h, tf.float32), axes=[1, 2, 3],
                              keepdims=True)
    inv = tf.cast(tf.math.rsqrt(var + epsilon), h.dtype)
    return (h - tf.cast(mean, h.dtype)) * inv * gamma + beta


def _check_inference(training):
    if training:
        raise ValueError("Frozen models are for inference: call them with "
                         "training=False (train the Keras models instead).")


class FrozenGenerator:
    """G with BN folded: z [N, latent_dim] -> images [N, s, s, C]."""

    def __init__(self, generator, conv_impls: Sequence[str],
                 dtype=tf.float32):
        self.dtype = tf.as_dtype(dtype)
        self.image_size = generator.image_size
        self.channels = generator.channels
        self.latent_dim = generator.latent_dim
        self.conv_impls = tuple(conv_impls)
        s0 = generator.image_size // 16
        scale, shift = _bn_scale_shift(generator.project_bn)
        self._shape0 = (s0, s0, int(scale.shape[0]))
        # Dense columns are (row, col, channel) with channel fastest.
        self._project = _t(generator.project.kernel) * tf.tile(scale, [s0 * s0])
        self._project_bias = tf.tile(shift, [s0 * s0])
        self._layers: List[Tuple[tf.Tensor, tf.Tensor]] = []
        for deconv, bn in zip(generator.deconvs, generator.bns):
            s, t = _bn_scale_shift(bn)
            # Transposed kernel [k, k, out, in]: scale the output axis.
            self._layers.append((_t(deconv.kernel) * s[:, None], t))
        last = generator.to_image
        self._layers.append((_t(last.kernel), _t(last.bias)))
        self._project, self._project_bias = _cast(
            (self._project, self._project_bias), self.dtype)
        self._layers = [_cast(w, self.dtype) for w in self._layers]

    def __call__(self, z, training=False):
        _check_inference(training)
        z = tf.cast(z, self.dtype)
        h = tf.matmul(z, self._project) + self._project_bias
        h = tf.nn.relu(tf.reshape(h, (-1,) + self._shape0))
        last = len(self._layers) - 1
        for i, ((kernel, bias), impl) in enumerate(zip(self._layers,
                                                       self.conv_impls)):
            h = tf.nn.bias_add(phase_conv.conv2d_transpose_s2(h, kernel, impl),
                               bias)
            h = tf.tanh(h) if i == last else tf.nn.relu(h)
        return tf.cast(h, tf.float32)


class FrozenDiscriminator:
    """D with BN folded; logits [N, 1] and f(x) of block `feature_layer`.

    LayerNorm (a WGAN-GP critic's `d_norm="layer"`) depends on each sample's
    own statistics, so it cannot be folded; it is computed after the conv.
    """

    def __init__(self, discriminator, conv_impls: Sequence[str],
                 dtype=tf.float32):
        self.dtype = tf.as_dtype(dtype)
        self.image_size = discriminator.image_size
        self.channels = discriminator.channels
        self.feature_layer = discriminator.feature_layer
        self.conv_impls = tuple(conv_impls)
        self._layers: List[Tuple[tf.Tensor, tf.Tensor]] = []
        self._layer_norms = []
        for conv, norm in zip(discriminator.convs, discriminator.bns):
            conv = unwrap(conv)
            kernel = _t(conv.kernel)
            bias = _t(conv.bias) if conv.use_bias else tf.zeros(kernel.shape[-1])
            layer_norm = None
            if isinstance(norm, keras.layers.BatchNormalization):
                s, t = _bn_scale_shift(norm)
                kernel, bias = kernel * s, bias * s + t
            elif norm is not None:
                layer_norm = (_cast((_t(norm.gamma), _t(norm.beta)), self.dtype),
                              float(norm.epsilon))
            self._layers.append((kernel, bias))
            self._layer_norms.append(layer_norm)
        dense = unwrap(discriminator.logit)
        self._logit = _cast((_t(dense.kernel), _t(dense.bias)), self.dtype)
        self._layers = [_cast(w, self.dtype) for w in self._layers]

    def _blocks(self, x, upto: int):
        """(last activations, f(x) as float32) after `upto` blocks."""
        features = None
        h = tf.cast(x, self.dtype)
        for i, ((kernel, bias), layer_norm, impl) in enumerate(
                zip(self._layers[:upto], self._layer_norms, self.conv_impls)):
            h = tf.nn.bias_add(phase_conv.conv2d_s2(h, kernel, impl), bias)
            if layer_norm is not None:
                h = _layer_norm(h, *layer_norm)
            h = _leaky_relu(h)
            if i + 1 == self.feature_layer:
                features = tf.cast(h, tf.float32)
        return h, features

    def logits_and_features(self, x, training=False):
        """(logits [N, 1], f(x)), as `Discriminator.logits_and_features`."""
        _check_inference(training)
        h, features = self._blocks(x, len(self._layers))
        h = tf.reshape(h, [tf.shape(h)[0], -1])
        kernel, bias = self._logit
        return tf.cast(tf.matmul(h, kernel) + bias, tf.float32), features

    def features(self, x, training=False):
        """f(x) only; the blocks after `feature_layer` are not computed."""
        _check_inference(training)
        return self._blocks(x, self.feature_layer)[1]

    def __call__(self, x, training=False):
        return self.logits_and_features(x, training=training)[0]


def _generator_channels(generator) -> List[Tuple[int, int]]:
    layers = list(generator.deconvs) + [generator.to_image]
    # Transposed kernels are [k, k, out, in].
    return [(int(l.kernel.shape[3]), int(l.kernel.shape[2])) for l in layers]


def _discriminator_channels(discriminator) -> List[Tuple[int, int]]:
    return [(int(unwrap(c).kernel.shape[2]), int(unwrap(c).kernel.shape[3]))
            for c in discriminator.convs]


def freeze(generator, discriminator, conv_impl: str = "auto",
           xla: bool = False, compute_dtype: str = "float32"
           ) -> Tuple[FrozenGenerator, FrozenDiscriminator]:
    """Frozen views (G, D) of trained models for the mapping.

    Args:
      generator, discriminator: The Keras models (`models.dcgan`).
      conv_impl: "auto", "native" or "phase" (see `choose_conv_impl`).
      xla: Whether the caller's function is XLA-compiled (steers "auto").
      compute_dtype: "float32", or "bfloat16" for mixed precision.

    Returns:
      (FrozenGenerator, FrozenDiscriminator). Call inside the traced function.
    """
    g_impls = [choose_conv_impl(conv_impl, ci, co, xla)
               for ci, co in _generator_channels(generator)]
    d_impls = [choose_conv_impl(conv_impl, ci, co, xla)
               for ci, co in _discriminator_channels(discriminator)]
    if compute_dtype not in COMPUTE_DTYPES:
        raise ValueError(f"compute_dtype must be one of {COMPUTE_DTYPES}, got "
                         f"{compute_dtype!r}.")
    return (FrozenGenerator(generator, g_impls, compute_dtype),
            FrozenDiscriminator(discriminator, d_impls, compute_dtype))
