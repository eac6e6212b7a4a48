"""FLOPs of one latent-mapping step, three ways, and the machine's matmul peak.

Convention (used for every "GFLOP/s" in the benchmarks):

* 1 multiply-add = 2 FLOPs. Only convolutions, transposed convolutions and
  dense layers are counted; BatchNorm (inference: one scale and shift),
  ReLU/LeakyReLU/tanh, |x - G(z)| and Adam on z are elementwise and add well
  under 1 % at these widths.
* One mapping step for one image is the forward pass G(z) -> D's conv blocks
  (and the logit, which the feature-matching loss does not use) plus the
  backward pass with G and D frozen: only gradients with respect to the
  activations (input gradients) are needed, never the weight gradients.
  The input gradient of a conv/dense layer costs as many multiply-adds as
  its forward pass, so a step is ~2x the forward FLOPs. A mapper that also
  computes weight gradients (eager TensorFlow does: `Conv2D`'s gradient
  function always emits both backprop ops) does ~3x the forward FLOPs.
* "Nominal" counts every kernel tap, including taps that fall on the "same"
  padding; "exact" (the XLA HLO count) skips them. For these models the
  exact count is ~16 % lower, mostly from the 4x4 and 8x8 layers.

The analytic count comes from the layer shapes. Two cross-checks: TF's own
per-op FLOP registry (`tensorflow/python/profiler/internal/flops_registry.py`,
the table tfprof's `float_ops` reads) applied to the traced step graph, and a
count of the `convolution`/`dot` instructions in the XLA-optimized HLO of
the same step (dead ops removed, padding taps skipped).

Run `python benchmarks/roofline.py` for the table alone; `mapping.py` imports
this module to turn its timings into GFLOP/s and % of peak.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Dict, List, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags

import _common

__all__ = [
    "layer_macs",
    "analytic_step_flops",
    "registry_step_flops",
    "hlo_step_flops",
    "hlo_flops",
]

_KERNEL = 5
_WIDTHS = (8, 4, 2, 1)  # mirrors anogan_tf.models.dcgan (G: coarse to fine)


def layer_macs(image_size: int, base_filters: int, channels: int = 1,
               latent_dim: int = 100) -> List[Tuple[str, int]]:
    """Nominal forward multiply-adds per image of each G and D layer."""
    s0 = image_size // 16
    b = base_filters
    k2 = _KERNEL * _KERNEL
    out = [("G/project", latent_dim * s0 * s0 * _WIDTHS[0] * b)]
    h, cin = s0, _WIDTHS[0] * b
    for i, cout in enumerate([w * b for w in _WIDTHS[1:]] + [channels]):
        # A stride-2 transposed conv scatters each input pixel over k x k
        # outputs: h*h*cin*k*k*cout multiply-adds.
        out.append((f"G/deconv{i + 1}", h * h * cin * k2 * cout))
        h, cin = 2 * h, cout
    h, cin = image_size, channels
    for i, w in enumerate(reversed(_WIDTHS)):
        h //= 2
        cout = w * b
        out.append((f"D/conv{i + 1}", h * h * cout * k2 * cin))
        cin = cout
    out.append(("D/logit", h * h * cin))
    return out


def analytic_step_flops(image_size: int, base_filters: int, channels: int = 1,
                        latent_dim: int = 100,
                        feature_layer: int = 4) -> Dict[str, float]:
    """FLOPs per image of one mapping step (feature-matching loss).

    Returns forward, backward (input gradients only) and step (= their sum),
    plus `with_weight_grads` (what an eager tape computes: + weight grads).
    """
    layers = layer_macs(image_size, base_filters, channels, latent_dim)
    fwd = sum(m for _, m in layers)
    # Backward: every G layer, and D conv1..feature_layer. The logit (and the
    # D blocks past feature_layer) do not feed the loss.
    on_path = [m for name, m in layers
               if name.startswith("G/") or
               (name.startswith("D/conv") and int(name[-1]) <= feature_layer)]
    bwd = sum(on_path)
    # Weight gradients (wasted work, but an eager tape does it): one per
    # layer on the backward path, each with the MACs of its forward pass.
    wgrad = bwd
    return {"forward": 2.0 * fwd, "backward": 2.0 * bwd,
            "step": 2.0 * (fwd + bwd),
            "with_weight_grads": 2.0 * (fwd + bwd + wgrad)}


def _step_fn(g, d, params):
    import tensorflow as tf
    from anogan_tf.mapping.latent import mapping_objective

    def step(x, fx, z):
        # The same objective and gradient as the mapper's loop body.
        with tf.GradientTape() as tape:
            tape.watch(z)
            total = tf.reduce_sum(mapping_objective(g, d, x, fx, z, params))
        return tape.gradient(total, z)
    return step


def _step_inputs(g, d, batch: int):
    import tensorflow as tf
    x = tf.constant(_common.random_images(batch, g.image_size, g.channels))
    fx = d.features(x)
    z = tf.zeros([batch, g.latent_dim])
    return x, fx, z


def registry_step_flops(g, d, params, batch: int = 1) -> Dict[str, float]:
    """FLOPs per image of one step from TF's per-op FLOP registry.

    Traces the step (loss + gradient w.r.t. z) as a graph and sums each op's
    registered "flops" statistic, by op type. The traced graph still holds
    the weight-gradient ops that the gradient functions emit (TF prunes them
    only when the graph runs), so they are reported separately:
    `Conv2DBackpropFilter` and MatMuls with transpose_a (x^T dy).
    """
    import tensorflow as tf
    from tensorflow.python.framework import ops as tf_ops
    from tensorflow.python.profiler.internal import flops_registry  # noqa: F401

    f = tf.function(_step_fn(g, d, params), jit_compile=False)
    graph = f.get_concrete_function(*_step_inputs(g, d, batch)).graph
    by_type: Dict[str, float] = {}
    weight_grads = 0.0

    def visit(graph):
        nonlocal weight_grads
        for op in graph.get_operations():
            try:
                stats = tf_ops.get_stats_for_node_def(graph, op.node_def, "flops")
            except (ValueError, KeyError):
                stats = None
            # Function-call ops (e.g. the tape's forward/backward pieces).
            for attr in ("f", "then_branch", "else_branch", "body"):
                if attr in op.node_def.attr and op.node_def.attr[attr].func.name:
                    fn = graph._get_function(op.node_def.attr[attr].func.name)  # pylint: disable=protected-access
                    if fn is not None:
                        visit(fn.graph)
            if stats is None or not stats.value:
                continue
            v = float(stats.value)
            is_wgrad = (op.type == "Conv2DBackpropFilter" or
                        (op.type == "MatMul" and op.get_attr("transpose_a")))
            if is_wgrad:
                weight_grads += v
            else:
                by_type[op.type] = by_type.get(op.type, 0.0) + v

    visit(graph)
    total = sum(by_type.values())
    return {"step": total / batch, "weight_grads_in_graph": weight_grads / batch,
            "by_type": {k: v / batch for k, v in sorted(by_type.items())}}


_SHAPE = re.compile(r"^\s*(?:ROOT\s+)?%(\S+)\s*=\s*\w+\[([\d,]*)\]")
_OPERANDS = re.compile(r"\b(convolution|dot)\((%[^,()]+)\s*,\s*(%[^,()]+)\)")


def _dims(text: str) -> List[int]:
    return [int(v) for v in text.split(",") if v]


def _valid_taps(n: int, m: int, size: int, stride: int, pad_lo: int,
                lhs_dilate: int, rhs_dilate: int) -> int:
    """(output position, window tap) pairs of one spatial dim that read a real
    input element (not padding and not a hole of the lhs dilation)."""
    last = (n - 1) * lhs_dilate
    count = 0
    for o in range(m):
        for j in range(size):
            p = o * stride + j * rhs_dilate - pad_lo
            if 0 <= p <= last and p % lhs_dilate == 0:
                count += 1
    return count


def hlo_flops(hlo_text: str) -> Dict[str, float]:
    """Exact FLOPs of the convolution and dot instructions of an HLO module."""
    shapes: Dict[str, List[int]] = {}
    for line in hlo_text.splitlines():
        m = _SHAPE.match(line)
        if m:
            shapes[m.group(1)] = _dims(m.group(2))
    conv = dot = 0.0
    for line in hlo_text.splitlines():
        m = _SHAPE.match(line)
        op = _OPERANDS.search(line)
        if not m or not op:
            continue
        out = _dims(m.group(2))
        lhs = shapes[op.group(2).strip()[1:]]
        if op.group(1) == "dot":
            contract = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", line)
            k = 1
            for i in _dims(contract.group(1)):
                k *= lhs[i]
            n_out = 1
            for v in out:
                n_out *= v
            dot += 2.0 * n_out * k
            continue
        labels = re.search(r"dim_labels=(\w+)_(\w+)->(\w+)", line)
        lhs_l, _, out_l = labels.groups()
        window = re.search(r"window=\{([^}]*)\}", line).group(1)
        attrs = dict(kv.split("=") for kv in window.split())
        size = [int(v) for v in attrs["size"].split("x")]
        nd = len(size)

        def per_dim(key, default):
            if key not in attrs:
                return [default] * nd
            return [int(v) for v in attrs[key].split("x")]

        stride = per_dim("stride", 1)
        lhs_dil = per_dim("lhs_dilate", 1)
        rhs_dil = per_dim("rhs_dilate", 1)
        pads = ([int(p.split("_")[0]) for p in attrs["pad"].split("x")]
                if "pad" in attrs else [0] * nd)
        groups = re.search(r"feature_group_count=(\d+)", line)
        groups = int(groups.group(1)) if groups else 1
        taps = 1
        for i in range(nd):
            taps *= _valid_taps(lhs[lhs_l.index(str(i))], out[out_l.index(str(i))],
                                size[i], stride[i], pads[i], lhs_dil[i],
                                rhs_dil[i])
        macs = (out[out_l.index("b")] * out[out_l.index("f")] * taps *
                lhs[lhs_l.index("f")] // groups)
        conv += 2.0 * macs
    return {"convolution": conv, "dot": dot, "total": conv + dot}


def hlo_step_flops(g, d, params, batch: int = 4) -> Dict[str, float]:
    """FLOPs per image of one step, counted in the XLA-optimized HLO."""
    import tensorflow as tf
    f = tf.function(_step_fn(g, d, params), jit_compile=True)
    text = f.experimental_get_compiler_ir(*_step_inputs(g, d, batch))(
        stage="optimized_hlo")
    counts = hlo_flops(text)
    return {k: v / batch for k, v in counts.items()}


def flop_table(image_size: int, base_filters: int) -> Dict[str, float]:
    """All three per-image step counts for one model size, in FLOPs."""
    from anogan_tf.config import MappingConfig
    from anogan_tf.mapping.latent import MappingParams
    config, g, d = _common.build_models(base_filters, image_size)
    params = MappingParams.create(config, MappingConfig())
    analytic = analytic_step_flops(image_size, base_filters, config.channels,
                                   config.latent_dim, config.feature_layer)
    registry = registry_step_flops(g, d, params)
    hlo = hlo_step_flops(g, d, params)
    return {
        "image_size": image_size, "base_filters": base_filters,
        "analytic_forward_mflop": analytic["forward"] / 1e6,
        "analytic_step_mflop": analytic["step"] / 1e6,
        "analytic_step_with_wgrad_mflop": analytic["with_weight_grads"] / 1e6,
        "tf_registry_step_mflop": registry["step"] / 1e6,
        "tf_registry_wgrad_ops_mflop": registry["weight_grads_in_graph"] / 1e6,
        "xla_hlo_step_mflop": hlo["total"] / 1e6,
    }


FLOP_COLUMNS = ["image_size", "base_filters", "analytic_forward_mflop",
                "analytic_step_mflop", "tf_registry_step_mflop",
                "xla_hlo_step_mflop", "analytic_step_with_wgrad_mflop",
                "tf_registry_wgrad_ops_mflop"]

def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    print(_common.format_machine_info(_common.machine_info()))
    rows = [flop_table(_IMAGE_SIZE.value, b) for b in _BASE_FILTERS.value]
    _common.write_results(_OUTPUT_DIR.value, "roofline_flops", rows)
    print("\nFLOPs per image of one mapping step (MFLOP; 1 MAC = 2 FLOPs):")
    print(_common.format_table(rows, FLOP_COLUMNS))
    if _PEAK.value:
        peak = _common.matmul_peak_gflops()
        print(f"\nfp32 matmul peak (XLA, 2048^3, best of {peak['reps']}): "
              f"{peak['peak_gflops']:.1f} GFLOP/s "
              f"(median {peak['median_gflops']:.1f})")


if __name__ == "__main__":
    # Defined here, not at import, because mapping.py imports this module
    # and has flags of the same names.
    _BASE_FILTERS = flags.DEFINE_multi_integer(
        "base_filters", [16, 32, 64], "Model widths to count.")
    _IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Image side.")
    _PEAK = flags.DEFINE_boolean("peak", True, "Also measure the matmul peak.")
    _OUTPUT_DIR = flags.DEFINE_string(
        "output_dir", _common.DEFAULT_OUTPUT_DIR, "Where the CSV/JSON go.")
    app.run(main)
