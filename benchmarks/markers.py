"""Marker discovery (issue 12): anogan-discover against the known types.

Runs the anogan-discover binary (the entry point the issue's acceptance
names) on:

  oct_clean      synthetic_oct, the clean demo model (64 test B-scans);
  oct_artifacts  synthetic_oct --oct_artifacts, the artefacts demo model;
  textures       the textures set (200 test crops, scratch/hole/stain), a
                 small model trained for it (see BENCHMARKS.md for its
                 anogan-train command);
  timed          1000 synthetic_oct B-scans (--oct_num_test=1000), timed
                 with time.perf_counter around the whole process (TF
                 import, data generation, mapping, regions, descriptors,
                 clustering, report, saved maps), encoder mode;

and, per case, cheap variants that re-cluster the same maps without mapping
again (--maps_dir): --num_markers=3 (the true number of types) instead of
the silhouette's choice; and the baseline "pca": the same discovery
pipeline on whole-image PCA residual maps (PCA fitted on the normal
training images of the split, --pca_baseline_components components), with
the same ROI/region masks, descriptors shape/intensity/position only (no
model: no d_features or latent). For a fair comparison the GAN maps are
also re-clustered without the model ("gan_nomodel", same descriptor blocks
as the PCA baseline).

Each row (ARI, NMI, per-type recall, region precision, seconds) goes to
benchmarks/results/markers_<case>.json. Run from the repository root:

  nice -n 10 .venv/bin/python benchmarks/markers.py \
      --cases=oct_clean,oct_artifacts,textures,timed
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
BIN = os.path.join(ROOT, ".venv", "bin", "anogan-discover")

OCT = ["--flagfile=flags/demo.cfg", "--num_test=64"]
TEXTURES = ["--flagfile=flags/base.cfg", "--dataset=textures", "--channels=1",
            "--image_size=32", "--patch_stride=16", "--base_filters=16",
            "--mode=encoder", "--map_sigma=2", "--map_smoothing=signed",
            "--map_norm=none", "--mapping_jit_compile=false"]


def cases(args):
    return {
        "oct_clean": dict(model=args.oct_clean_model,
                          # this model's detector.json has no map reference
                          # (last written by an iterative, map_norm=none
                          # evaluation), so the scoring maps are not
                          # depth-normalised; the discovery map
                          # (--region_map=normalized) fits its own reference.
                          flags=OCT + ["--map_norm=none"], types="oct"),
        "oct_artifacts": dict(model=args.oct_artifacts_model,
                              flags=OCT + ["--oct_artifacts"], types="oct"),
        "textures": dict(model=args.textures_model, flags=TEXTURES,
                         types="textures"),
        "timed": dict(model=args.oct_artifacts_model,
                      flags=["--flagfile=flags/demo.cfg", "--oct_artifacts",
                             "--oct_num_test=1000", "--num_test=1000"],
                      types="oct"),
    }


def run_discover(flags, output_dir, log_path):
    cmd = [BIN] + flags + [f"--output_dir={output_dir}"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    with open(log_path, "w") as f:
        f.write(" ".join(cmd) + "\n" + proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}); "
                           f"see {log_path}:\n{proc.stderr[-2000:]}")
    m = re.search(r"in ([0-9.]+) s\.", proc.stdout)
    return cmd, wall, (float(m.group(1)) if m else None), proc.stdout


def row_from(output_dir, case, variant, cmd, wall, pipeline_seconds):
    with open(os.path.join(output_dir, "markers.json")) as f:
        markers = json.load(f)
    evaluation = {}
    path = os.path.join(output_dir, "evaluation.json")
    if os.path.isfile(path):
        with open(path) as f:
            evaluation = json.load(f)
    per_type = {t: {k: e.get(k) for k in ("lesions", "detected",
                                          "detection_recall", "found",
                                          "recall")}
                for t, e in evaluation.get("per_type", {}).items()}
    recalls = [e["recall"] for e in per_type.values()]
    ari = evaluation.get("ari")
    row = {
        "case": case, "variant": variant, "command": " ".join(cmd),
        "mode": markers["settings"].get("mode"),
        "n_images": markers["n_images"], "n_regions": markers["n_regions"],
        "n_images_with_regions": markers["n_images_with_regions"],
        "n_regions_on_lesions": evaluation.get("n_regions_on_lesions"),
        "k": markers["k"], "cluster_text": markers["settings"]["cluster_text"],
        "descriptor_blocks": markers["descriptor_blocks"],
        "threshold_text": markers["settings"]["threshold_text"],
        "ari": ari, "nmi": evaluation.get("nmi"),
        "ari_all": evaluation.get("ari_all"),
        "nmi_all": evaluation.get("nmi_all"),
        "region_precision": evaluation.get("region_precision"),
        "per_type": per_type,
        "marker_types": [{"marker": m["marker"], "size": m["size"],
                          "assigned_type": m["assigned_type"],
                          "types": m["types"]}
                         for m in evaluation.get("markers", [])],
        "wall_seconds": wall, "pipeline_seconds": pipeline_seconds,
        "images_per_second_wall": markers["n_images"] / wall,
        "target_ari_met": ari is not None and ari >= 0.5,
        "target_recall_met": bool(recalls) and all(
            r is not None and r >= 0.7 for r in recalls),
    }
    return row


def _fill(x, roi_mode):
    """The image as the model saw it (artefacts filled) and its valid mask."""
    if roi_mode != "retina":
        return x, np.ones(x.shape, bool)
    from anogan_tf.data.patches import fill_artifacts
    from anogan_tf.data.roi import retina_band
    valid = retina_band(x).valid
    return fill_artifacts(x[..., None], valid)[..., 0], valid


def write_pca_maps(gan_dir, pca_dir, data_config, images, components, sigma):
    """A maps dir like gan_dir's, with PCA residuals instead of x - G(z*)."""
    from sklearn.decomposition import PCA
    from anogan_tf.data import load_images
    from anogan_tf.markers.report import safe_name
    from anogan_tf.scoring import maps as maps_lib
    roi_mode = data_config.roi
    train = load_images(data_config, "train").images[..., 0]
    filled = np.stack([_fill(x, roi_mode)[0] for x in train])
    pca = PCA(components, random_state=0).fit(filled.reshape(len(filled), -1))

    def residual(xs):
        xs = np.stack([_fill(x, roi_mode)[0] for x in xs])
        flat = xs.reshape(len(xs), -1)
        recon = pca.inverse_transform(pca.transform(flat))
        return (flat - recon).reshape(xs.shape).astype(np.float32)

    os.makedirs(os.path.join(pca_dir, "maps"), exist_ok=True)
    signed = residual(images.images[..., 0])
    for i, image_id in enumerate(images.ids):
        name = safe_name(image_id) + ".npz"
        with np.load(os.path.join(gan_dir, "maps", name)) as d:
            arrays = {k: d[k] for k in d.files}
        weight = arrays.get("weight", np.ones(signed[i].shape, bool))
        arrays["signed"] = signed[i]
        arrays["map"] = np.abs(maps_lib.masked_gaussian(
            signed[i][None], weight[None], sigma))[0].astype(np.float32)
        np.savez_compressed(os.path.join(pca_dir, "maps", name), **arrays)
    with np.load(os.path.join(gan_dir, "calibration_maps.npz")) as d:
        cal = {k: d[k] for k in d.files}
    calibration = load_images(data_config, "calibration").images[..., 0]
    cal_signed = residual(calibration)
    weight = cal.get("weight", np.ones(cal_signed.shape, bool))
    cal["signed"] = cal_signed
    cal["maps"] = np.abs(maps_lib.masked_gaussian(
        cal_signed, weight, sigma)).astype(np.float32)
    np.savez_compressed(os.path.join(pca_dir, "calibration_maps.npz"), **cal)
    return float(pca.explained_variance_ratio_.sum())


def data_config_for(flags):
    """The DataConfig the binary builds from these flags."""
    from absl import flags as absl_flags
    from anogan_tf import common_flags as cf
    FLAGS = absl_flags.FLAGS
    FLAGS.unparse_flags()
    FLAGS(["markers"] + [f for f in flags if not f.startswith("--model_dir")])
    return cf.data_config_from_flags()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="oct_clean,oct_artifacts,textures,"
                        "timed")
    parser.add_argument("--oct_clean_model", default="/tmp/oct_depth/clean/model")
    parser.add_argument("--oct_artifacts_model",
                        default="/tmp/oct_depth/artifacts/model")
    parser.add_argument("--textures_model", default="/tmp/mk/tex/model")
    parser.add_argument("--work_dir", default="/tmp/mk/bench")
    parser.add_argument("--results_dir", default=os.path.join(HERE, "results"))
    parser.add_argument("--no_variants", action="store_true",
                        help="skip the --num_markers=3, gan_nomodel and pca "
                             "re-clusterings")
    parser.add_argument("--pca_baseline_components", type=int, default=16)
    args = parser.parse_args()
    os.makedirs(args.work_dir, exist_ok=True)
    os.makedirs(args.results_dir, exist_ok=True)
    table = cases(args)
    for case in args.cases.split(","):
        spec = table[case]
        flags = spec["flags"] + [f"--model_dir={spec['model']}"]
        out = os.path.join(args.work_dir, case)
        rows = []
        cmd, wall, secs, stdout = run_discover(flags, out, out + ".log")
        rows.append(row_from(out, case, "default", cmd, wall, secs))
        print(stdout.strip().splitlines()[-1], flush=True)
        if not args.no_variants and case != "timed":
            variants = [("k3", flags + [f"--maps_dir={out}", "--num_markers=3"]),
                        ("gan_nomodel", spec["flags"] + [f"--maps_dir={out}"])]
            data_config = data_config_for(spec["flags"])
            from anogan_tf.markers import load_discovery_inputs
            images, _, _ = load_discovery_inputs(
                data_config, (), (), 64 if spec["types"] == "oct" else 0)
            pca_dir = out + "_pcamaps"
            sigma = 4.0 if spec["types"] == "oct" else 2.0
            var = write_pca_maps(out, pca_dir, data_config, images,
                                 args.pca_baseline_components, sigma)
            variants.append(("pca", spec["flags"] + [f"--maps_dir={pca_dir}"]))
            variants.append(("pca_k3", spec["flags"] + [
                f"--maps_dir={pca_dir}", "--num_markers=3"]))
            for name, vflags in variants:
                vout = f"{out}_{name}"
                cmd, wall, secs, stdout = run_discover(vflags, vout,
                                                       vout + ".log")
                row = row_from(vout, case, name, cmd, wall, secs)
                if name.startswith("pca"):
                    row["pca_components"] = args.pca_baseline_components
                    row["pca_explained_variance"] = var
                rows.append(row)
                print(f"  {name}: {stdout.strip().splitlines()[-1]}",
                      flush=True)
        from _common import machine_info
        result = {"machine": machine_info(), "rows": rows}
        path = os.path.join(args.results_dir, f"markers_{case}.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=1, default=str)
        for r in rows:
            recall = ", ".join(f"{t} {e['recall']:.2f}"
                               for t, e in r["per_type"].items()
                               if e["recall"] is not None)
            print(f"{case:14s} {r['variant']:12s} n={r['n_images']} "
                  f"regions={r['n_regions']} k={r['k']} ari={r['ari']} "
                  f"nmi={r['nmi']} prec={r['region_precision']} "
                  f"recall [{recall}] wall={r['wall_seconds']:.1f}s",
                  flush=True)
        print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
