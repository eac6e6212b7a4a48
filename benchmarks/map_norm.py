"""--map_norm=depth against raw maps, for the GAN and PCA(32), same run.

Scores synthetic_oct's 64 test scans and 40 calibration scans with a model
dir's own settings (detector.json; the mode from argv), fits PCA(32) on the
same training patches (benchmarks/oct_artifacts.py's), and for the signed
maps at sigma 2, 4, 6 prints the map_max image AUROC, the pixel AUROC over
non-artefact pixels and inside the ROI, for: raw; std_clip,
max(0, (m - median_b) / (p99_b - median_b)) (shipped until the ratio
replaced it); std_noclip, the same unclipped; centre, (m - median_b) /
pooled spread; ratio, m / p99_b (what --map_norm=depth applies now). Statistics per
band-relative depth bin from the calibration scans (scoring/map_reference.py).

  python benchmarks/map_norm.py MODEL_DIR ARTIFACTS(0|1) MODE
  (MODEL_DIR from: anogan-train --flagfile=flags/demo.cfg --model_dir=MODEL_DIR)
"""
import os, sys, dataclasses
import numpy as np
from sklearn.metrics import roc_auc_score
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from anogan_tf.data import load_images, extract_patches
from anogan_tf.scoring.scorer import Scorer
from anogan_tf.scoring import maps as maps_lib, map_reference as mr
from anogan_tf.scoring import metrics as metrics_lib
import oct_artifacts as oa

model_dir, art, mode = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
sc = Scorer.from_model_dir(model_dir)
sc = sc.with_settings(mapping_config=dataclasses.replace(sc.mapping_config, mode=mode))
dc = dataclasses.replace(sc.data_config, dataset="synthetic_oct", oct_height=128, oct_width=128,
                         oct_num_train=200, oct_num_test=64, oct_artifacts=art)
sc.data_config = dc
test = load_images(dc, "test"); cal = load_images(dc, "calibration"); train = load_images(dc, "train")
st = sc.score(test, progress=False); scal = sc.score(cal, progress=False)
y = test.labels
tp = extract_patches(train, dc.effective_patch_size, dc.effective_patch_stride, 32, roi=dc.roi,
                     min_coverage=dc.roi_min_coverage).patches
def pca_res(s):
    rec = oa.pca_reconstructions(tp, s.patches.patches, 32)
    d = s.patches.patches.astype(np.float64) - rec
    return maps_lib.residual_maps(s.patches, np.abs(d), rec, len(s.images.images), s.region)
def img_auc(m): return roc_auc_score(y, m.reshape(len(m), -1).max(1))
def pix(m, v): return metrics_lib.pixel_metrics(test.masks, m, valid=v)["pixel_auroc"]
def variants(tm, cm, tw, cw):
    ref = mr.fit_map_reference(cm, cw, scal.patches.roi_masks, "x")
    d = mr.depth_coordinates(tm.shape, st.patches.roi_masks)
    b = mr._bins(d, np.asarray(ref.edges))
    med, spr = np.asarray(ref.median)[b], np.asarray(ref.spread)[b]
    pooled = np.percentile(cm[cw], 99) - np.median(cm[cw])
    out = {"raw": tm, "std_clip": np.where(tw, np.maximum((tm - med) / spr, 0), 0),
           "std_noclip": np.where(tw, (tm - med) / spr, -10),
           "centre": np.where(tw, np.maximum((tm - med) / pooled, 0), 0),
           "ratio": np.where(tw, tm / np.maximum(med + spr, 1e-6), 0)}
    return out
res = {"gan": (st.residuals, scal.residuals), "pca": (pca_res(st), pca_res(scal))}
for who, (tr, cr) in res.items():
    for sigma in (2.0, 4.0, 6.0):
        tm, cm = maps_lib.anomaly_maps(tr, sigma, "signed"), maps_lib.anomaly_maps(cr, sigma, "signed")
        for name, m in variants(tm, cm, tr.weight, cr.weight).items():
            print(f"{who} s{sigma:g} {name:10s} img {img_auc(m):.3f} pix {pix(m, st.patches.valid_masks):.3f} roi {pix(m, st.patches.roi_masks):.3f}", flush=True)
