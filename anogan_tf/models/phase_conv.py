"""Stride-2 5x5 'same' convolutions rewritten as stride-1 3x3 convolutions.

DCGAN's G upsamples with stride-2 transposed convolutions and D downsamples
with stride-2 convolutions. The latent mapping differentiates through both,
and the input gradient of a strided convolution is a transposed one. XLA on
CPU lowers transposed convolutions ("lhs dilation") to a slow generic loop:
`benchmarks/layers.py` measured 105 ms for G's first layer at base 16, batch
64, against 5 ms in TF's oneDNN kernel. The polyphase form below avoids the
pattern entirely, and computes the same function (up to float rounding):

* transposed conv, stride 2, kernel 5, 'same' (input H -> output 2H): output
  pixel (2m + a, 2n + b) of phase (a, b) only meets kernel taps of one parity,
  so the four phases are four 3x3 stride-1 convolutions of the input. They are
  stacked as one conv with 4 x C_out channels and interleaved by
  `depth_to_space(2)`.
* conv, stride 2, kernel 5, 'same' (even input 2H -> output H): after
  `space_to_depth(2)` the input's four phases are channels, and the strided
  conv is one 3x3 stride-1 conv with 4 x C_in input channels.

In one dimension, TF's 'same' padding for these shapes puts 1 pad row before
and 2 after, so with kernel taps w0..w4:
  conv:        y[i] = sum_k x[2i + k - 1] w[k]
  transposed:  out[j] = sum_{i, k: 2i + k - 1 = j} in[i] w[k]
The phase kernels below are read off these two sums; `tests/test_models.py`
checks them against the Keras layers. Zero taps cost 36/25 of the nominal
FLOPs, which pays for itself wherever the native form is slow.

All functions are pure, differentiable in both the input and the kernel (the
rearrangement is gathers and stacks), and XLA-compilable.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["CONV_IMPLS", "transposed_phase_kernel", "conv_phase_kernel",
           "conv2d_transpose_s2", "conv2d_s2"]

CONV_IMPLS = ("native", "phase")

# For output parity a (0 even, 1 odd) of the transposed conv, the original
# kernel tap used at offset t - 1 (t = 0, 1, 2) of the 3x3 phase kernel.
_TRANSPOSED_TAPS = ((3, 1, None), (4, 2, 0))
# For input parity a of the strided conv (after space_to_depth), the original
# tap used at block offset t - 1.
_CONV_TAPS = ((None, 1, 3), (0, 2, 4))


def _tap(kernel, i, j):
    """kernel[i, j] ([C1, C2]), or zeros where a tap is absent (None)."""
    if i is None or j is None:
        return tf.zeros_like(kernel[0, 0])
    return kernel[i, j]


def _check_kernel(kernel):
    if kernel.shape[0] != 5 or kernel.shape[1] != 5:
        raise ValueError(f"Phase form needs a 5x5 kernel, got {kernel.shape}.")


def transposed_phase_kernel(kernel):
    """[5, 5, C_out, C_in] transposed kernel -> [3, 3, C_in, 4 C_out].

    Output channel (2a + b) * C_out + c is phase (a, b) of channel c, the
    order `tf.nn.depth_to_space` expects.
    """
    _check_kernel(kernel)
    c_out, c_in = kernel.shape[2], kernel.shape[3]
    phases = []
    for a in range(2):
        for b in range(2):
            phases.append(tf.stack([
                tf.stack([_tap(kernel, _TRANSPOSED_TAPS[a][ti],
                               _TRANSPOSED_TAPS[b][tj]) for tj in range(3)])
                for ti in range(3)]))  # [3, 3, C_out, C_in]
    w = tf.stack(phases, axis=2)  # [3, 3, 4, C_out, C_in]
    w = tf.transpose(w, [0, 1, 4, 2, 3])  # [3, 3, C_in, 4, C_out]
    return tf.reshape(w, [3, 3, c_in, 4 * c_out])


def conv_phase_kernel(kernel):
    """[5, 5, C_in, C_out] conv kernel -> [3, 3, 4 C_in, C_out].

    Input channel (2a + b) * C_in + c is phase (a, b) of channel c, the order
    `tf.nn.space_to_depth` produces.
    """
    _check_kernel(kernel)
    rows = []
    for ti in range(3):
        cols = []
        for tj in range(3):
            cols.append(tf.concat([
                _tap(kernel, _CONV_TAPS[a][ti], _CONV_TAPS[b][tj])
                for a in range(2) for b in range(2)], axis=0))
        rows.append(tf.stack(cols))
    return tf.stack(rows)


def conv2d_transpose_s2(x, kernel, impl: str = "native"):
    """Transposed conv, stride 2, 'same', no bias: [N, H, W, C_in] -> 2H x 2W.

    Args:
      x: Input [N, H, W, C_in].
      kernel: [5, 5, C_out, C_in] (the Keras Conv2DTranspose layout).
      impl: "native" (tf.nn.conv2d_transpose) or "phase" (see module doc).
    """
    if impl == "phase":
        y = tf.nn.conv2d(x, transposed_phase_kernel(kernel), 1, "SAME")
        return tf.nn.depth_to_space(y, 2)
    if impl != "native":
        raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}.")
    shape = tf.shape(x)
    out = tf.stack([shape[0], 2 * shape[1], 2 * shape[2],
                    tf.shape(kernel)[2]])
    return tf.nn.conv2d_transpose(x, kernel, out, 2, "SAME")


def conv2d_s2(x, kernel, impl: str = "native"):
    """Conv, stride 2, 'same', no bias: [N, 2H, 2W, C_in] -> [N, H, W, C_out].

    Args:
      x: Input with even height and width.
      kernel: [5, 5, C_in, C_out] (the Keras Conv2D layout).
      impl: "native" (tf.nn.conv2d) or "phase" (see module doc).
    """
    if impl == "phase":
        return tf.nn.conv2d(tf.nn.space_to_depth(x, 2),
                            conv_phase_kernel(kernel), 1, "SAME")
    if impl != "native":
        raise ValueError(f"conv impl must be one of {CONV_IMPLS}, got {impl!r}.")
    return tf.nn.conv2d(x, kernel, 2, "SAME")
