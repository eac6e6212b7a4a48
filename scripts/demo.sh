#!/usr/bin/env bash
# The main job on the embedded synthetic_oct data, sized for 2 CPU cores:
# train the DCGAN on normal B-scan patches, evaluate at image and pixel
# level (demo-sized mapping: 100 steps; the paper uses 500), print a summary
# table, and export the scoring graph for TF Serving.
#
#   bash scripts/demo.sh [RUN_DIR]        (default: runs/demo)
#
# Uses the anogan-* binaries of the active environment or of ./.venv.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN="${1:-runs/demo}"
BIN=""
if ! command -v anogan-train >/dev/null 2>&1; then BIN=".venv/bin/"; fi
export TF_CPP_MIN_LOG_LEVEL=2

start=$(date +%s)
"${BIN}anogan-train" --flagfile=flags/demo.cfg --model_dir="$RUN/model"
"${BIN}anogan-evaluate" --flagfile=flags/demo.cfg --model_dir="$RUN/model" \
    --output_dir="$RUN/eval"
"${BIN}anogan-export" --flagfile=flags/demo.cfg --model_dir="$RUN/model" \
    --export_dir=saved_models/demo
end=$(date +%s)
echo
echo "Demo finished in $((end - start)) s."
echo "  samples:      $RUN/model/samples/ (G(z) grids per epoch)"
echo "  evaluation:   $RUN/eval/ (metrics.json, scores.csv, roc.png, pr.png,"
echo "                score_hist.png, anomaly_maps.png)"
echo "  SavedModel:   saved_models/demo/<version>/ (serve with TF Serving, see docs/serving.md)"
