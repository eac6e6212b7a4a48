"""Helpers shared by the benchmark scripts (not part of the library).

Machine description, model construction, timing, the fp32 matmul peak, and
writing result tables as text, CSV and JSON. The scripts put this folder on
`sys.path` themselves (it is the script's own folder), so they run as
`python benchmarks/<name>.py` from the repository root.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

__all__ = [
    "DEFAULT_OUTPUT_DIR",
    "machine_info",
    "format_machine_info",
    "build_models",
    "random_images",
    "time_calls",
    "matmul_peak_gflops",
    "format_table",
    "write_results",
    "rss_mb",
]

DEFAULT_OUTPUT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                  "results")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_flags() -> List[str]:
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "fma")
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    return [w for w in wanted if w in have]
    except OSError:
        pass
    return []


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(len(os.sched_getaffinity(0)))


def machine_info() -> Dict[str, object]:
    """nproc, CPU model, library versions, date and the current load."""
    import keras
    import tensorflow as tf
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S"),
        "nproc": _nproc(),
        "cpu_model": _cpu_model(),
        "cpu_flags": " ".join(_cpu_flags()),
        "loadavg_1_5_15": " ".join(f"{v:.2f}" for v in os.getloadavg()),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "gpus": len(tf.config.list_physical_devices("GPU")),
        "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "(default: on)"),
    }


def format_machine_info(info: Dict[str, object]) -> str:
    return "\n".join(f"  {k:<15} {v}" for k, v in info.items())


def build_models(base_filters: int, image_size: int = 64, channels: int = 1,
                 latent_dim: int = 100):
    """A freshly initialised (untrained) G and D; weights do not affect speed."""
    from anogan_tf.config import ModelConfig
    from anogan_tf.models import dcgan
    config = ModelConfig(image_size=image_size, channels=channels,
                         latent_dim=latent_dim, base_filters=base_filters)
    g, d = dcgan.build_models(config)
    return config, g, d


def random_images(n: int, image_size: int, channels: int = 1,
                  seed: int = 0) -> np.ndarray:
    """Uniform noise in [-1, 1], float32 [n, s, s, c]."""
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, (n, image_size, image_size, channels)
                       ).astype(np.float32)


def time_calls(fn: Callable[[], object], reps: int,
               warmup: int = 1) -> Dict[str, float]:
    """Calls fn `warmup` times untimed, then `reps` times; seconds per call.

    Returns min, median and the first (compile-including) warm-up time. The
    median is what the scripts report; min is kept to show the noise.
    """
    first = None
    for i in range(warmup):
        t = time.perf_counter()
        fn()
        if i == 0:
            first = time.perf_counter() - t
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median": statistics.median(times), "min": min(times),
            "first": first if first is not None else float("nan"),
            "reps": reps}


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> Dict[str, float]:
    """fp32 GFLOP/s of an XLA-compiled n x n x n matmul (2 n^3 FLOPs per call).

    The best of `reps` timed calls after a compile/warm-up call; the best, not
    the median, because this is the machine's attainable peak and the machine
    is shared. The median is returned as well.
    """
    import tensorflow as tf
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((n, n), np.float32))
    b = tf.constant(rng.standard_normal((n, n), np.float32))
    mm = tf.function(tf.matmul, jit_compile=True)
    # Eager calls on the CPU return when the result is computed, so the wall
    # time of the call is the matmul's time (plus a few microseconds).
    t = time_calls(lambda: mm(a, b), reps=reps, warmup=1)
    flops = 2.0 * n ** 3
    return {"n": n, "reps": reps, "best_s": t["min"], "median_s": t["median"],
            "peak_gflops": flops / t["min"] / 1e9,
            "median_gflops": flops / t["median"] / 1e9}


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:  # nan
            return "-"
        if abs(v) >= 100:
            return f"{v:.0f}"
        if abs(v) >= 1:
            return f"{v:.2f}"
        return f"{v:.3g}"
    return str(v)


def format_table(rows: Sequence[Dict[str, object]], columns: Sequence[str],
                 markdown: bool = False) -> str:
    """Rows as an aligned text table (or a Markdown table)."""
    cells = [[_fmt(r.get(c, "")) for c in columns] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(columns) + " |",
                 "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in cells]
        return "\n".join(lines)
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c)
              for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)


def write_results(output_dir: str, name: str,
                  rows: Sequence[Dict[str, object]],
                  extra: Optional[Dict[str, object]] = None) -> List[str]:
    """Writes <name>.csv (the rows) and <name>.json (rows + extra); paths."""
    os.makedirs(output_dir, exist_ok=True)
    csv_path = os.path.join(output_dir, name + ".csv")
    json_path = os.path.join(output_dir, name + ".json")
    columns: List[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows(rows)
    with open(json_path, "w") as f:
        json.dump({**(extra or {}), "rows": list(rows)}, f, indent=2,
                  default=float)
    return [csv_path, json_path]


def rss_mb() -> Dict[str, float]:
    """Current (VmRSS) and peak (VmHWM) resident set size of this process, MB."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0]) / 1024.0  # kB -> MB
    return {"rss_mb": out["VmRSS"], "peak_rss_mb": out["VmHWM"]}
