"""Where a mapping step's time goes: each G/D conv layer, TF (oneDNN) vs XLA.

For every convolution and transposed convolution of G and D, times the
forward pass and the forward pass plus the input gradient (what one mapping
step needs from that layer) at one batch size, as a plain tf.function and
as an XLA-compiled one, and prints ms and GFLOP/s (nominal FLOPs, see
roofline.py). Dense layers are left out (well under 1 % of the FLOPs).

  python benchmarks/layers.py --base_filters=16 --batch_size=64
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags

import _common
import roofline

_BASE_FILTERS = flags.DEFINE_integer("base_filters", 16, "Model width.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Image side (x16).")
_REPS = flags.DEFINE_integer("reps", 5, "Timed calls (the fastest is reported).")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", _common.DEFAULT_OUTPUT_DIR, "Where CSV and JSON go.")
_TAG = flags.DEFINE_string("tag", None, "Output stem: layers_<tag>.* "
                           "(default b<base>_bs<batch>_<conv_impl>).")
_CONV_IMPL = flags.DEFINE_enum(
    "conv_impl", "native", ["native", "phase"],
    "How the stride-2 layers run: TF's native (transposed) conv, or the "
    "polyphase stride-1 form (anogan_tf/models/phase_conv.py).")

COLUMNS = ["layer", "input", "mflop_fwd", "fwd_ms_tf", "fwd_ms_xla",
           "fwdbwd_ms_tf", "fwdbwd_ms_xla", "xla_over_tf_fwdbwd",
           "gflops_fwdbwd_tf", "gflops_fwdbwd_xla"]


def _conv_layers(g, d, image_size: int):
    """(name, layer, input shape without batch) of every conv in G and D."""
    s0 = image_size // 16
    out = []
    h, c = s0, g.deconvs[0].kernel.shape[-1]  # transposed kernel: [k, k, out, in]
    for i, layer in enumerate(list(g.deconvs) + [g.to_image]):
        out.append((f"G/deconv{i + 1}", layer, (h, h, c)))
        h, c = 2 * h, layer.kernel.shape[-2]
    h, c = image_size, d.channels
    for i, layer in enumerate(d.convs):
        out.append((f"D/conv{i + 1}", layer, (h, h, c)))
        h, c = h // 2, layer.kernel.shape[-1]
    return out


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    import tensorflow as tf
    start = time.perf_counter()
    info = _common.machine_info()
    print("Machine:\n" + _common.format_machine_info(info), flush=True)
    b, n, size = _BASE_FILTERS.value, _BATCH_SIZE.value, _IMAGE_SIZE.value
    config, g, d = _common.build_models(b, size)
    macs = dict(roofline.layer_macs(size, b, config.channels, config.latent_dim))
    rows = []
    g.set_conv_impl(_CONV_IMPL.value)
    d.set_conv_impl(_CONV_IMPL.value)
    for name, layer, shape in _conv_layers(g, d, size):
        x = tf.constant(_common.random_images(n, shape[0], shape[2], 5))

        def fwd(x, layer=layer):
            return layer(x)

        def fwdbwd(x, layer=layer):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            # dy = y: a non-constant upstream gradient, as in the real step.
            return tape.gradient(y, x, output_gradients=y)

        row = {"layer": name, "input": "x".join(map(str, shape)),
               "mflop_fwd": 2.0 * macs[name] * n / 1e6}
        for label, fn in (("fwd", fwd), ("fwdbwd", fwdbwd)):
            for jit in (False, True):
                f = tf.function(fn, jit_compile=jit)
                t = _common.time_calls(lambda: f(x), reps=_REPS.value)
                row[f"{label}_ms_{'xla' if jit else 'tf'}"] = t["min"] * 1e3
        row["xla_over_tf_fwdbwd"] = row["fwdbwd_ms_xla"] / row["fwdbwd_ms_tf"]
        for k in ("tf", "xla"):
            row[f"gflops_fwdbwd_{k}"] = (2 * row["mflop_fwd"] * 1e6 /
                                         (row[f"fwdbwd_ms_{k}"] / 1e3) / 1e9)
        rows.append(row)
        print(f"  {name}: fwd+bwd {row['fwdbwd_ms_tf']:.1f} ms (TF) vs "
              f"{row['fwdbwd_ms_xla']:.1f} ms (XLA)", flush=True)
    total = {"layer": "total", "input": "",
             **{k: sum(r[k] for r in rows) for k in COLUMNS[2:7]}}
    total["xla_over_tf_fwdbwd"] = total["fwdbwd_ms_xla"] / total["fwdbwd_ms_tf"]
    for k in ("tf", "xla"):
        total[f"gflops_fwdbwd_{k}"] = (2 * total["mflop_fwd"] * 1e6 /
                                       (total[f"fwdbwd_ms_{k}"] / 1e3) / 1e9)
    rows.append(total)
    elapsed = time.perf_counter() - start
    print(f"\nPer-layer time, conv_impl {_CONV_IMPL.value}, base_filters {b}, "
          f"batch {n}, {size}x{size}; "
          f"fastest of {_REPS.value} calls after a warm-up call. fwdbwd = "
          f"forward + input gradient (2x mflop_fwd).")
    print(_common.format_table(rows, COLUMNS))
    tag = _TAG.value or f"b{b}_bs{n}_{_CONV_IMPL.value}"
    paths = _common.write_results(_OUTPUT_DIR.value, f"layers_{tag}", rows,
                                  {"machine": info, "elapsed_s": elapsed,
                                   "conv_impl": _CONV_IMPL.value})
    print(f"\nWrote {', '.join(paths)} in {elapsed:.0f} s.")


if __name__ == "__main__":
    app.run(main)
