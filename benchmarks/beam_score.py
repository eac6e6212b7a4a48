"""anogan-beam-score throughput against local workers and anogan-score.

  python benchmarks/beam_score.py [--num_images=48] [--mapping_steps=50]

In one run, on the same PNG files and the same export: anogan-score's
library call (`run_score`, in process), then the Beam pipeline
(`run_beam_score`) on FnApiRunner in process, and with
--direct_num_workers=1,2,... --direct_running_mode=multi_processing. Each
time is the whole call's wall time (model loading, tracing and, for worker
processes, their start-up included), so it is what a user waits for. The
model is a tiny random one (width --base_filters, 32x32 patches of 64x64
images, 9 patches per image): the mapping's cost, not training, is timed.
Every Beam run's image_scores rows are checked against anogan-score's
(1e-4). Writes benchmarks/results/beam_score_<tag>.csv/.json.
"""

from __future__ import annotations

import csv
import glob
import os
import sys
import tempfile
import time

from absl import app, flags

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))


import _common  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("num_images", 48, "PNG images scored by every method.")
flags.DEFINE_integer("mapping_steps", 50, "Mapping steps of the detector.")
flags.DEFINE_integer("base_filters", 8, "Width of the random model.")
flags.DEFINE_list("workers", ["1", "2"],
                  "--direct_num_workers values (multi_processing).")
flags.DEFINE_integer("max_batch_size", 8, "RunInference's largest batch.")
flags.DEFINE_string("tag", "quick", "Results file tag.")
flags.DEFINE_string("output_dir", _common.DEFAULT_OUTPUT_DIR, "Results dir.")


def _rows(path_pattern):
    rows = []
    for path in sorted(glob.glob(path_pattern)):
        with open(path, newline="") as f:
            rows += list(csv.DictReader(f))
    return {r["id"]: r for r in rows}


def main(argv):
    del argv
    from apache_beam.options.pipeline_options import PipelineOptions
    from PIL import Image

    import serving_server
    from anogan_tf.beam import ScoreJob, run_beam_score
    from anogan_tf.config import DataConfig, EvalConfig, MappingConfig
    from anogan_tf.data import load_images
    from anogan_tf.data.grids import images_to_uint8
    from anogan_tf.export import export_model
    from anogan_tf.scoring import detector as detector_lib
    from anogan_tf.scoring import run_score

    info = _common.machine_info()
    print(_common.format_machine_info(info))
    root = tempfile.mkdtemp(prefix="beam_bench_")
    model_dir = os.path.join(root, "model")
    serving_server.make_tiny_model_dir(model_dir, seed=0,
                                       base_filters=FLAGS.base_filters)
    with open(os.path.join(model_dir, "flags.cfg"), "w") as f:
        f.write("--dataset=synthetic_oct\n--oct_height=64\n--oct_width=64\n")
    data = DataConfig(dataset="folder", image_size=32, patch_size=32,
                      patch_stride=16)
    mapping = MappingConfig(steps=FLAGS.mapping_steps, lr=0.05, restarts=1,
                            seed=3, jit_compile=False)
    detector_lib.save_detector(detector_lib.Detector.from_configs(
        data, mapping, EvalConfig(output_dir="", aggregate="mean"),
        written_by="benchmark"), model_dir)
    scans = load_images(DataConfig(
        dataset="synthetic_oct", oct_height=64, oct_width=64,
        oct_num_test=FLAGS.num_images, image_size=32, seed=4), "test")
    png = os.path.join(root, "png")
    os.makedirs(png)
    for i, p in enumerate(images_to_uint8(scans.images)):
        Image.fromarray(p[..., 0]).save(os.path.join(png, f"s{i:04d}.png"))
    version_dir = export_model(model_dir, os.path.join(root, "export"))
    n = FLAGS.num_images
    results = []

    start = time.perf_counter()
    ref_dir = os.path.join(root, "anogan_score")
    run_score(model_dir, data, mapping,
              EvalConfig(output_dir=ref_dir, aggregate="mean"),
              inputs=[png], save_maps=False)
    seconds = time.perf_counter() - start
    reference = _rows(os.path.join(ref_dir, "image_scores.csv"))
    results.append({"method": "anogan-score (in process)", "workers": 1,
                    "seconds": seconds, "images_per_s": n / seconds,
                    "equal_to_anogan_score": True})

    runs = [("beam FnApiRunner (in process)", 1, [])] + [
        ("beam FnApiRunner multi_processing", int(w),
         [f"--direct_num_workers={w}",
          "--direct_running_mode=multi_processing"]) for w in FLAGS.workers]
    for name, workers, args in runs:
        out = os.path.join(root, f"beam_{len(results)}")
        start = time.perf_counter()
        summary = run_beam_score(
            ScoreJob(saved_model=version_dir,
                     inputs=(os.path.join(png, "*.png"),), output_dir=out,
                     max_batch_size=FLAGS.max_batch_size),
            PipelineOptions(args, runner="FnApiRunner"))
        seconds = time.perf_counter() - start
        mine = _rows(os.path.join(out, "image_scores-*.csv"))
        equal = mine.keys() == reference.keys() and all(
            abs(float(mine[k]["anomaly_score"]) -
                float(reference[k]["anomaly_score"])) <= 1e-4 *
            max(1.0, abs(float(reference[k]["anomaly_score"])))
            for k in reference)
        results.append({"method": name, "workers": workers,
                        "seconds": seconds, "images_per_s": n / seconds,
                        "equal_to_anogan_score": equal,
                        "dead_letters": summary["num_dead_letters"]})
        print(results[-1])
    base = results[0]["images_per_s"]
    for r in results:
        r["vs_anogan_score"] = r["images_per_s"] / base
    columns = ["method", "workers", "seconds", "images_per_s",
               "vs_anogan_score", "equal_to_anogan_score"]
    print(_common.format_table(results, columns, markdown=True))
    paths = _common.write_results(
        FLAGS.output_dir, f"beam_score_{FLAGS.tag}", results,
        {"machine": info, "num_images": n, "patches_per_image": 9,
         "mapping_steps": FLAGS.mapping_steps,
         "base_filters": FLAGS.base_filters,
         "max_batch_size": FLAGS.max_batch_size,
         "loadavg_after": _common.machine_info()["loadavg_1_5_15"]})
    print("Wrote", ", ".join(paths))


if __name__ == "__main__":
    app.run(main)
