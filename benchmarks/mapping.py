"""Latent-mapping throughput: naive eager loop vs the batched LatentMapper.

Three ways to map images to z* (Schlegl et al. 2017, sec. 2.2), all with the
project's loss `anogan_tf.mapping.latent.mapping_objective` and Adam on z:

  (a) naive     one image at a time, eager mode, a `tf.Variable` z, a new
                `keras.optimizers.Adam` per image and a GradientTape each
                step: the style of the public AnoGAN implementations.
  (b) batched   `LatentMapper(..., jit_compile=False)`: the whole loop in one
                tf.function, B images at once (TF's oneDNN kernels).
  (c) xla       `LatentMapper(..., jit_compile=True)`: the same loop compiled
                by XLA.

Timing: running 500 steps for every configuration would take hours, so each
method is timed with 0 steps (the fixed part: z0 draws, D(x), the final
G/D pass and the numpy copies) and with S steps, after an untimed warm-up
call that includes tracing and compilation. The time of 500 steps is
extrapolated as  T(0) + 500 * (T(S) - T(0)) / S  and images/s is B over that.
S is picked per configuration so that the S-step call lasts about
--target_seconds. The script prints this note with its results.

The roofline part converts the per-step time into GFLOP/s with the analytic
FLOP count of `roofline.py` (cross-checked there against TF's FLOP registry
and the XLA HLO) and compares it with an XLA-compiled 2048^3 fp32 matmul
timed in the same run.

  python benchmarks/mapping.py --quick
  python benchmarks/mapping.py                      # the full grid
"""

from __future__ import annotations

import os
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags

import _common
import roofline

_QUICK = flags.DEFINE_boolean(
    "quick", False, "About a minute: base_filters 16, batches 1 and 64.")
_BASE_FILTERS = flags.DEFINE_multi_integer(
    "base_filters", None, "Model widths (default 16, 32, 64; quick: 16).")
_BATCH_SIZES = flags.DEFINE_multi_integer(
    "batch_sizes", None, "Mapping batch sizes (default 1 4 16 64 256; quick: "
    "1 64).")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Image side (x16).")
_METHODS = flags.DEFINE_multi_enum(
    "methods", ["naive", "batched", "xla"], ["naive", "batched", "xla"],
    "Which mappers to time.")
_STEPS = flags.DEFINE_integer(
    "steps", 500, "Mapping steps the images/s figures are extrapolated to.")
_TARGET_SECONDS = flags.DEFINE_float(
    "target_seconds", None, "Wanted duration of one timed S-step call "
    "(default 4; quick: 1.5).")
_REPS = flags.DEFINE_integer(
    "reps", None, "Timed S-step calls per measurement (0-step: at least 3); "
    "the fastest is used (default 2; quick: 1).")
_MAX_CALL_SECONDS = flags.DEFINE_float(
    "max_call_seconds", 90.0, "Skip a configuration whose 2-step call is "
    "estimated (from a smaller batch) to take longer than this.")
_CONV_IMPL = flags.DEFINE_enum(
    "conv_impl", "auto", ["auto", "native", "phase"],
    "MappingConfig.conv_impl of (b) and (c): how the frozen G and D run "
    "stride-2 convs (models/frozen.py). (a) always uses the Keras layers.")
_COMPUTE_DTYPE = flags.DEFINE_enum(
    "compute_dtype", "float32", ["float32", "bfloat16"],
    "MappingConfig.compute_dtype of (b) and (c) (mixed precision).")
_FLOP_CHECK = flags.DEFINE_boolean(
    "flop_check", True, "Cross-check the analytic FLOPs with TF's registry "
    "and the XLA HLO.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", _common.DEFAULT_OUTPUT_DIR, "Where CSV, JSON and PNG go.")
_TAG = flags.DEFINE_string(
    "tag", None, "Output file stem suffix: mapping_<tag>.* (default quick or "
    "full).")

METHOD_LABELS = {"naive": "(a) naive eager, batch 1",
                 "batched": "(b) LatentMapper, no XLA",
                 "xla": "(c) LatentMapper, XLA"}
COLUMNS = ["base_filters", "batch", "method", "timed_steps", "overhead_s",
           "per_step_ms", "img_per_s_500", "ratio_vs_naive", "gflops",
           "pct_peak", "first_call_s", "note"]
EXTRAPOLATION_NOTE = (
    "images/s are EXTRAPOLATED to {steps} steps: T(0) + {steps} * (T(S) - "
    "T(0)) / S, from a 0-step and an S-step call (fastest of the timed calls, "
    "after a warm-up call).")


def _params(config, steps: int):
    from anogan_tf.config import MappingConfig
    from anogan_tf.mapping.latent import MappingParams
    return MappingParams.create(
        config, MappingConfig(steps=steps, conv_impl=_CONV_IMPL.value,
                              compute_dtype=_COMPUTE_DTYPE.value))


def naive_map_one(g, d, x, params, steps: int):
    """Maps one image [1, s, s, c] the way the public AnoGAN code does.

    Eager: every step re-runs G and D op by op, and the tape computes the
    weight gradients of the conv layers too (TF's Conv2D gradient function
    always emits both backprop ops), which are thrown away.
    """
    import keras
    import tensorflow as tf
    from anogan_tf.mapping import latent
    fx = d.features(x, training=False)
    z = tf.Variable(latent.initial_latents(x, params), trainable=True)
    opt = keras.optimizers.Adam(learning_rate=params.lr, beta_1=params.beta_1,
                                beta_2=params.beta_2, epsilon=params.epsilon)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(
                latent.mapping_objective(g, d, x, fx, z, params))
        grads = tape.gradient(loss, [z])
        opt.apply_gradients(zip(grads, [z]))
        z.assign(latent.project_to_prior(z, params.prior))
    return z.numpy()


def _choose_steps(per_step_guess: float, target: float) -> int:
    return int(min(200, max(2, round(target / max(per_step_guess, 1e-4)))))


def time_naive(g, d, config, image_size: int, steps: int, target: float,
               reps: int) -> Dict[str, float]:
    import tensorflow as tf
    x = tf.constant(_common.random_images(1, image_size, config.channels, 1))
    params = _params(config, steps)  # naive_map_one loops `s` times itself
    t0 = _common.time_calls(lambda: naive_map_one(g, d, x, params, 0), reps=3)
    # Warm up with 2 steps and use that to choose S.
    t2 = _common.time_calls(lambda: naive_map_one(g, d, x, params, 2), reps=1)
    s = _choose_steps(max(t2["median"] - t0["median"], 1e-4) / 2, target)
    ts = _common.time_calls(lambda: naive_map_one(g, d, x, params, s),
                            reps=reps, warmup=0)
    return _extrapolate(1, steps, s, t0, ts, t2["first"])


def time_mapper(g, d, config, image_size: int, batch: int, jit: bool,
                steps: int, target: float, reps: int) -> Dict[str, float]:
    from anogan_tf.mapping.mapper import LatentMapper
    x = _common.random_images(batch, image_size, config.channels, 2)
    m0 = LatentMapper(g, d, _params(config, 0), batch_size=batch,
                      jit_compile=jit)
    t0 = _common.time_calls(lambda: m0.map_batch(x), reps=max(3, reps))
    # The 0-step call (~1.5 forward passes of G and D) took about as long as
    # one step in trial runs; only used to choose S.
    s = _choose_steps(t0["median"], target)
    ms = LatentMapper(g, d, _params(config, s), batch_size=batch,
                      jit_compile=jit)
    ts = _common.time_calls(lambda: ms.map_batch(x), reps=reps)
    return _extrapolate(batch, steps, s, t0, ts, ts["first"])


def _extrapolate(batch, steps, s, t0, ts, first) -> Dict[str, float]:
    # The fastest of the timed calls: on a shared machine the other load only
    # ever adds time, so the minimum is the least disturbed estimate.
    t_0, t_s = t0["min"], ts["min"]
    note = ""
    if t_s > t_0:
        per_step = (t_s - t_0) / s
    else:  # load changed between the two measurements: use a bound
        per_step = t_s / s
        note = "T(S)<=T(0): per step = T(S)/S (upper bound)"
    total = t_0 + steps * per_step
    return {"timed_steps": s, "overhead_s": t_0,
            "per_step_ms": per_step * 1e3, "img_per_s_500": batch / total,
            "t_0_median": t0["median"], "t_s_median": ts["median"],
            "t_s_min": ts["min"], "first_call_s": first, "note": note}


def plot(rows: List[Dict], path: str, steps: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    bases = sorted({r["base_filters"] for r in rows})
    fig, axes = plt.subplots(1, len(bases), figsize=(5 * len(bases), 4),
                             squeeze=False)
    for ax, b in zip(axes[0], bases):
        for method, style in (("batched", "o-"), ("xla", "s-")):
            pts = sorted((r["batch"], r["img_per_s_500"]) for r in rows
                         if r["base_filters"] == b and r["method"] == method
                         and r.get("img_per_s_500") == r.get("img_per_s_500"))
            if pts:
                ax.plot(*zip(*pts), style, label=METHOD_LABELS[method])
        naive = [r for r in rows
                 if r["base_filters"] == b and r["method"] == "naive"]
        if naive:
            ax.axhline(naive[0]["img_per_s_500"], color="gray", ls="--",
                       label=METHOD_LABELS["naive"])
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("mapping batch size")
        ax.set_ylabel(f"images/s at {steps} steps (extrapolated)")
        ax.set_title(f"base_filters={b}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    quick = _QUICK.value
    bases = _BASE_FILTERS.value or ([16] if quick else [16, 32, 64])
    batches = sorted(_BATCH_SIZES.value or ([1, 64] if quick else
                                            [1, 4, 16, 64, 256]))
    target = _TARGET_SECONDS.value or (1.5 if quick else 4.0)
    reps = _REPS.value or (1 if quick else 2)
    tag = _TAG.value or ("quick" if quick else "full")
    steps = _STEPS.value
    size = _IMAGE_SIZE.value
    start = time.perf_counter()

    info = _common.machine_info()
    print("Machine:\n" + _common.format_machine_info(info), flush=True)
    # The machine is shared: the peak is measured at the start and again at
    # the end of the run, and the higher of the two is the reference.
    peak_start = _common.matmul_peak_gflops()
    print(f"fp32 matmul peak (XLA 2048^3, best of {peak_start['reps']}): "
          f"{peak_start['peak_gflops']:.1f} GFLOP/s (median "
          f"{peak_start['median_gflops']:.1f})", flush=True)

    flop_rows = []
    rows: List[Dict] = []
    skipped: List[str] = []
    for b in bases:
        config, g, d = _common.build_models(b, size)
        step_flops = roofline.analytic_step_flops(
            size, b, config.channels, config.latent_dim,
            config.feature_layer)["step"]
        if _FLOP_CHECK.value:
            flop_rows.append(roofline.flop_table(size, b))
        naive_rate = None
        if "naive" in _METHODS.value:
            r = time_naive(g, d, config, size, steps, target, reps)
            r.update(base_filters=b, batch=1, method="naive")
            naive_rate = r["img_per_s_500"]
            rows.append(r)
            print(f"  base {b} naive: {r['img_per_s_500']:.3g} img/s "
                  f"({r['per_step_ms']:.1f} ms/step)", flush=True)
        for method in ("batched", "xla"):
            if method not in _METHODS.value:
                continue
            last = None  # (batch, per-step seconds) of the previous batch
            for batch in batches:
                if last is not None:
                    guess = last[1] * batch / last[0]  # linear in B (upper)
                    # Two steps plus the fixed part (~1.5 steps).
                    estimate = 3.5 * guess
                    if estimate > _MAX_CALL_SECONDS.value:
                        msg = (f"base {b} {method} batch {batch}: skipped, a "
                               f"2-step call is estimated at {estimate:.0f} s"
                               f" > --max_call_seconds="
                               f"{_MAX_CALL_SECONDS.value:.0f} (linear from "
                               f"batch {last[0]})")
                        skipped.append(msg)
                        print("  " + msg, flush=True)
                        continue
                r = time_mapper(g, d, config, size, batch, method == "xla",
                                steps, target, reps)
                r.update(base_filters=b, batch=batch, method=method)
                last = (batch, r["per_step_ms"] / 1e3)
                rows.append(r)
                print(f"  base {b} {method} batch {batch}: "
                      f"{r['img_per_s_500']:.3g} img/s ({r['per_step_ms']:.1f}"
                      f" ms/step, S={r['timed_steps']})", flush=True)
        for r in rows:
            if r["base_filters"] != b:
                continue
            r["ratio_vs_naive"] = (r["img_per_s_500"] / naive_rate
                                   if naive_rate else float("nan"))
            r["gflops"] = step_flops * r["batch"] / (r["per_step_ms"] / 1e3) / 1e9
            r["step_mflop_per_image"] = step_flops / 1e6

    peak_end = _common.matmul_peak_gflops()
    peak = max(peak_start, peak_end, key=lambda p: p["peak_gflops"])
    peak = {**peak, "start_gflops": peak_start["peak_gflops"],
            "end_gflops": peak_end["peak_gflops"]}
    for r in rows:
        r["pct_peak"] = 100.0 * r["gflops"] / peak["peak_gflops"]
    elapsed = time.perf_counter() - start
    info["loadavg_end"] = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nfp32 matmul peak: {peak_start['peak_gflops']:.1f} GFLOP/s at "
          f"the start, {peak_end['peak_gflops']:.1f} at the end; pct_peak "
          f"uses {peak['peak_gflops']:.1f}.")
    print(f"\nLatent mapping, {size}x{size}x1 images, feature-matching loss, "
          f"conv_impl {_CONV_IMPL.value}, {_COMPUTE_DTYPE.value} for (b) and "
          f"(c).")
    print(EXTRAPOLATION_NOTE.format(steps=steps))
    print("gflops: analytic FLOPs of the S-step loop (input gradients only, "
          "see roofline.py) / its time; pct_peak: of the matmul peak above.")
    print("ratio_vs_naive: images/s over (a)'s at the same base_filters.\n")
    print(_common.format_table(rows, COLUMNS))
    if flop_rows:
        print("\nFLOPs per image of one mapping step (MFLOP):")
        print(_common.format_table(flop_rows, roofline.FLOP_COLUMNS))
    for msg in skipped:
        print("SKIPPED: " + msg)

    stem = f"mapping_{tag}"
    paths = _common.write_results(
        _OUTPUT_DIR.value, stem, rows,
        {"machine": info, "matmul_peak": peak, "flops": flop_rows,
         "note": EXTRAPOLATION_NOTE.format(steps=steps), "skipped": skipped,
         "image_size": size, "elapsed_s": elapsed,
         "conv_impl": _CONV_IMPL.value,
         "compute_dtype": _COMPUTE_DTYPE.value})
    png = os.path.join(_OUTPUT_DIR.value, stem + ".png")
    plot(rows, png, steps)
    print(f"\nWrote {', '.join(paths + [png])} in {elapsed:.0f} s.")


if __name__ == "__main__":
    app.run(main)
