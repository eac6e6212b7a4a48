"""Mapping memory: peak RSS vs batch size, and a leak check.

1. Sweep: for each mapping batch size (and XLA on/off) a fresh Python
   process imports TensorFlow, builds G and D, records its RSS (the
   baseline), maps one batch with `LatentMapper.map_batch` (this includes
   tracing/compiling) and reports its peak RSS (VmHWM from
   /proc/self/status). The increment over the baseline is fitted with a line
   in the batch size; the slope is the memory per image.
2. Leak check: one process maps one untimed warm-up batch, then 20
   consecutive batches of new images, and records the RSS after each;
   max/min over the 20 should stay within 1.05.

No dependency is added: RSS comes from /proc/self/status.

  python benchmarks/memory.py --quick
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from absl import app
from absl import flags

import _common

_QUICK = flags.DEFINE_boolean(
    "quick", False, "Batches 1 16 64 without XLA; leak check at batch 16.")
_BASE_FILTERS = flags.DEFINE_integer("base_filters", 16, "Model width.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 64, "Image side (x16).")
_BATCH_SIZES = flags.DEFINE_multi_integer(
    "batch_sizes", None, "Sweep batch sizes (default 1 4 16 64 256; quick: "
    "1 16 64).")
_JIT = flags.DEFINE_multi_enum(
    "jit_compile", None, ["false", "true"],
    "Sweep XLA settings (default both; quick: false).")
_STEPS = flags.DEFINE_integer(
    "steps", 2, "Mapping steps per batch (memory does not grow with steps: "
    "the loop is a graph loop with fixed state).")
_LEAK_BATCH = flags.DEFINE_integer(
    "leak_batch", None, "Batch size of the leak check (default 64; quick: 16).")
_LEAK_CALLS = flags.DEFINE_integer("leak_calls", 20, "Batches in the leak check.")
_LEAK_JIT = flags.DEFINE_multi_enum(
    "leak_jit_compile", ["false", "true"], ["false", "true"],
    "XLA settings of the leak check.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", _common.DEFAULT_OUTPUT_DIR, "Where CSV and JSON go.")
_TAG = flags.DEFINE_string(
    "tag", None, "Output file stem suffix: memory_<tag>.* (default quick or "
    "full).")
# Internal: what a child process does.
_CHILD = flags.DEFINE_enum("child", None, ["sweep", "leak"],
                           "Internal: run one measurement and print JSON.")
_CHILD_BATCH = flags.DEFINE_integer("child_batch", 1, "Internal.")
_CHILD_JIT = flags.DEFINE_boolean("child_jit", False, "Internal.")

SWEEP_COLUMNS = ["jit_compile", "batch", "baseline_rss_mb", "peak_rss_mb",
                 "increment_mb", "fit_mb", "rss_after_mb", "seconds"]
LEAK_COLUMNS = ["jit_compile", "batch", "calls", "rss_first_mb",
                "rss_last_mb", "rss_min_mb", "rss_max_mb", "max_over_min",
                "growth_pct", "flat_within_5pct"]


def _mapper(batch: int, jit: bool):
    from anogan_tf.config import MappingConfig
    from anogan_tf.mapping.latent import MappingParams
    from anogan_tf.mapping.mapper import LatentMapper
    config, g, d = _common.build_models(_BASE_FILTERS.value, _IMAGE_SIZE.value)
    params = MappingParams.create(config, MappingConfig(steps=_STEPS.value))
    return config, LatentMapper(g, d, params, batch_size=batch,
                                jit_compile=jit)


def child_sweep(batch: int, jit: bool) -> Dict:
    start = time.perf_counter()
    config, mapper = _mapper(batch, jit)
    base = _common.rss_mb()
    x = _common.random_images(batch, _IMAGE_SIZE.value, config.channels, 4)
    mapper.map_batch(x)
    after = _common.rss_mb()
    return {"jit_compile": jit, "batch": batch,
            "baseline_rss_mb": base["rss_mb"],
            "baseline_peak_mb": base["peak_rss_mb"],
            "peak_rss_mb": after["peak_rss_mb"],
            "increment_mb": after["peak_rss_mb"] - base["rss_mb"],
            "rss_after_mb": after["rss_mb"],
            "seconds": time.perf_counter() - start}


def child_leak(batch: int, jit: bool, calls: int) -> Dict:
    config, mapper = _mapper(batch, jit)
    mapper.map_batch(_common.random_images(batch, _IMAGE_SIZE.value,
                                           config.channels, 100))
    warm = _common.rss_mb()["rss_mb"]
    rss = []
    for i in range(calls):
        mapper.map_batch(_common.random_images(batch, _IMAGE_SIZE.value,
                                               config.channels, 101 + i))
        rss.append(_common.rss_mb()["rss_mb"])
    ratio = max(rss) / min(rss)
    return {"jit_compile": jit, "batch": batch, "calls": calls,
            "rss_after_warmup_mb": warm, "rss_first_mb": rss[0],
            "rss_last_mb": rss[-1], "rss_min_mb": min(rss),
            "rss_max_mb": max(rss), "max_over_min": ratio,
            "growth_pct": 100.0 * (ratio - 1.0),
            "flat_within_5pct": ratio <= 1.05, "rss_mb": rss}


def _run_child(kind: str, batch: int, jit: bool) -> Dict:
    cmd = [sys.executable, os.path.abspath(__file__), f"--child={kind}",
           f"--child_batch={batch}", f"--child_jit={str(jit).lower()}",
           f"--base_filters={_BASE_FILTERS.value}",
           f"--image_size={_IMAGE_SIZE.value}", f"--steps={_STEPS.value}",
           f"--leak_calls={_LEAK_CALLS.value}"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"Child {cmd} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _linear_fit(xs: List[float], ys: List[float]) -> Dict[str, float]:
    import numpy as np
    x = np.asarray(xs, float)
    y = np.asarray(ys, float)
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * x + intercept
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum())
    return {"slope_mb_per_image": float(slope), "intercept_mb": float(intercept),
            "r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
            "pred": pred.tolist()}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if _CHILD.value:
        jit = _CHILD_JIT.value
        if _CHILD.value == "sweep":
            out = child_sweep(_CHILD_BATCH.value, jit)
        else:
            out = child_leak(_CHILD_BATCH.value, jit, _LEAK_CALLS.value)
        print("RESULT " + json.dumps(out), flush=True)
        return

    quick = _QUICK.value
    batches = sorted(_BATCH_SIZES.value or ([1, 16, 64] if quick else
                                            [1, 4, 16, 64, 256]))
    jits = [j == "true" for j in (_JIT.value or (["false"] if quick else
                                                 ["false", "true"]))]
    leak_batch = _LEAK_BATCH.value or (16 if quick else 64)
    tag = _TAG.value or ("quick" if quick else "full")
    start = time.perf_counter()
    info = _common.machine_info()
    print("Machine:\n" + _common.format_machine_info(info), flush=True)

    sweep, fits = [], {}
    for jit in jits:
        rows = []
        for batch in batches:
            r = _run_child("sweep", batch, jit)
            rows.append(r)
            print(f"  sweep jit={jit} batch {batch}: peak {r['peak_rss_mb']:.0f}"
                  f" MB (+{r['increment_mb']:.0f} MB)", flush=True)
        fit = _linear_fit([r["batch"] for r in rows],
                          [r["increment_mb"] for r in rows])
        for r, p in zip(rows, fit.pop("pred")):
            r["fit_mb"] = p
        fits[str(jit)] = fit
        sweep += rows

    leaks = []
    for jit in [j == "true" for j in _LEAK_JIT.value]:
        r = _run_child("leak", leak_batch, jit)
        leaks.append(r)
        print(f"  leak jit={jit} batch {leak_batch}: max/min "
              f"{r['max_over_min']:.4f}", flush=True)

    elapsed = time.perf_counter() - start
    print(f"\nPeak RSS of one mapping call in a fresh process, base_filters "
          f"{_BASE_FILTERS.value}, {_IMAGE_SIZE.value}x{_IMAGE_SIZE.value}, "
          f"{_STEPS.value} steps. increment = peak - RSS after building G, D.")
    print(_common.format_table(sweep, SWEEP_COLUMNS))
    for jit, fit in fits.items():
        print(f"  jit_compile={jit}: increment ~ {fit['intercept_mb']:.1f} MB "
              f"+ {fit['slope_mb_per_image']:.3f} MB/image, R^2 "
              f"{fit['r2']:.4f}")
    print(f"\nLeak check: RSS after each of {_LEAK_CALLS.value} consecutive "
          f"batches (after one warm-up batch).")
    print(_common.format_table(leaks, LEAK_COLUMNS))
    for r in leaks:
        print(f"  jit={r['jit_compile']} RSS MB: "
              + " ".join(f"{v:.0f}" for v in r["rss_mb"]))
    paths = _common.write_results(
        _OUTPUT_DIR.value, f"memory_{tag}", sweep,
        {"machine": info, "fits": fits, "leak": leaks, "steps": _STEPS.value,
         "base_filters": _BASE_FILTERS.value, "elapsed_s": elapsed})
    print(f"\nWrote {', '.join(paths)} in {elapsed:.0f} s.")


if __name__ == "__main__":
    app.run(main)
