"""detector.json: the record, its layering under flags, and the binaries.

The end-to-end test runs anogan-train -> anogan-evaluate -> anogan-score as
subprocesses on a tiny model, scoring with only --model_dir and --inputs,
then with an overriding flag, a corrupt file and no file (an old model dir).
"""

import csv
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig)
from anogan_tf.data import load_images
from anogan_tf.scoring import detector as det

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _detector(**threshold):
    return det.Detector(
        mapping=MappingConfig(steps=7, mode="hybrid", lr=0.05, restarts=2,
                              jit_compile=False),
        patches=det.PatchSettings(patch_size=32, patch_stride=16,
                                  roi="retina", resize=(96, 128)),
        image_score=det.ImageScoreSettings(aggregate="map_max", map_sigma=4.0),
        threshold=det.Threshold(**threshold) if threshold else None,
        written_by="anogan-evaluate")


# --- the record -----------------------------------------------------------------

def test_round_trip_with_and_without_threshold(tmp_path):
    for record in (_detector(), _detector(
            value=0.25, rule="percentile 95 of 3 normal calibration images",
            n_calibration=3, calibration_scores=(0.1, 0.3, 0.2))):
        path = det.save_detector(record, str(tmp_path))
        assert path == str(tmp_path / "detector.json")
        assert os.listdir(tmp_path) == ["detector.json"]  # no .tmp left
        loaded = det.load_detector(str(tmp_path))
        if record.threshold is not None:
            # Calibration scores come back sorted, ready for p-values.
            record = dataclasses.replace(record, threshold=dataclasses.replace(
                record.threshold, calibration_scores=(0.1, 0.2, 0.3)))
        assert loaded == record
    with open(path) as f:
        raw = json.load(f)
    assert raw["version"] == det.DETECTOR_VERSION == 1
    assert raw["mapping"]["steps"] == 7 and raw["patches"]["resize"] == [96, 128]
    assert raw["threshold"]["value"] == 0.25
    assert det.load_detector(str(tmp_path / "nothing")) is None


def test_non_finite_threshold_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="finite"):
        det.save_detector(_detector(value=float("nan"), rule="youden"),
                          str(tmp_path))
    assert not os.path.exists(tmp_path / "detector.json")


@pytest.mark.parametrize("text, match", [
    ("{not json", "not readable JSON"),
    ("[1, 2]", "must hold a JSON object"),
    ('{"version": 99, "mapping": {}}', "version 99"),
    ('{"version": 1}', "lacks \"mapping\""),
    ('{"version": 1, "mapping": {"stepz": 3}}', r"unknown keys \['stepz'\]"),
    ('{"version": 1, "mapping": {"steps": -1}}', "steps must be >= 0"),
    ('{"version": 1, "mapping": {}, "patches": {"resize": [1]}}',
     "resize must be null"),
    ('{"version": 1, "mapping": {}, "threshold": {"value": "x", "rule": "r"}}',
     "must be numbers"),
])
def test_corrupt_file_names_itself_and_the_fix(tmp_path, text, match):
    (tmp_path / "detector.json").write_text(text)
    with pytest.raises(ConfigError, match=match) as e:
        det.load_detector(str(tmp_path))
    message = str(e.value)
    assert str(tmp_path / "detector.json") in message
    assert "anogan-evaluate" in message and "delete" in message


def test_resolve_takes_recorded_settings_unless_a_flag_was_given():
    recorded = _detector()
    data = DataConfig(patch_stride=8)
    mapping = MappingConfig(steps=500, batch_size=32)
    ev = EvalConfig(output_dir="o", aggregate="max")
    d2, m2, e2, source = det.resolve_configs(
        recorded, data, mapping, ev,
        explicit=("mapping.steps", "patches.patch_stride"))
    assert m2.steps == 500 and d2.patch_stride == 8          # the flags
    assert m2.mode == "hybrid" and m2.restarts == 2          # the file
    assert m2.batch_size == 64 and d2.roi == "retina"
    assert d2.resize == (96, 128) and e2.aggregate == "map_max"
    assert e2.output_dir == "o" and d2.dataset == "synthetic_oct"
    assert source["mapping.steps"] == "flag"
    assert source["mapping.mode"] == "detector.json"
    assert set(source) == set(det.SETTING_KEYS)
    # No file: the configs as they are, unflagged values are defaults.
    d3, m3, e3, source = det.resolve_configs(None, data, mapping, ev,
                                             explicit=("mapping.steps",))
    assert (d3, m3, e3) == (data, mapping, ev)
    assert source["mapping.steps"] == "flag"
    assert source["mapping.mode"] == "default"
    with pytest.raises(ConfigError, match="mapping.stepz"):
        det.resolve_configs(recorded, data, mapping, ev, ("mapping.stepz",))


def test_scale_differences_ignore_settings_that_keep_the_score():
    recorded = _detector()
    same = dataclasses.replace(recorded, mapping=dataclasses.replace(
        recorded.mapping, batch_size=5, jit_compile=True, conv_impl="phase"))
    assert det.scale_differences(recorded, same) == []
    steps = dataclasses.replace(recorded, mapping=dataclasses.replace(
        recorded.mapping, steps=8))
    assert det.scale_differences(recorded, steps) == ["mapping.steps: 7 -> 8"]
    # topk only counts for topk_mean, map smoothing only for map_max.
    topk = dataclasses.replace(recorded, image_score=dataclasses.replace(
        recorded.image_score, topk=9))
    assert det.scale_differences(recorded, topk) == []
    mean = dataclasses.replace(recorded, image_score=det.ImageScoreSettings(
        aggregate="mean", map_sigma=0.0))
    assert det.scale_differences(recorded, mean) == [
        "image_score.aggregate: 'map_max' -> 'mean'"]


def test_training_keeps_a_threshold_only_while_it_holds():
    old = _detector(value=0.5, rule="youden")
    new = dataclasses.replace(old, threshold=None, written_by="anogan-train")
    kept, note = det.carry_threshold(old, new, models_unchanged=True)
    assert kept.threshold == old.threshold and kept.written_by == "anogan-train"
    assert note.startswith("Kept")
    dropped, note = det.carry_threshold(old, new, models_unchanged=False)
    assert dropped.threshold is None and "the models changed" in note
    other = dataclasses.replace(new, mapping=dataclasses.replace(
        new.mapping, lambda_weight=0.5))
    dropped, note = det.carry_threshold(old, other, models_unchanged=True)
    assert dropped.threshold is None and "mapping.lambda_weight" in note
    assert det.carry_threshold(None, new, True) == (new, "")


# --- the binaries -----------------------------------------------------------------

DATA_FLAGS = ["--dataset=synthetic_oct", "--oct_num_train=8",
              "--oct_num_test=8", "--oct_height=64", "--oct_width=64"]


def _run(module, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, "-m", f"anogan_tf.{module}"] + args,
                       cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=900)
    return p


def _rows(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def _pngs(folder, images):
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(((img[..., 0] + 1) * 127.5).round().astype(
            np.uint8)).save(folder / f"scan{i}.png")
    return str(folder)


def test_train_evaluate_score_uses_the_recorded_settings(tmp_path):
    md = str(tmp_path / "model")
    p = _run("train", DATA_FLAGS + [
        f"--model_dir={md}", "--image_size=32", "--latent_dim=16",
        "--base_filters=4", "--batch_size=8", "--epochs=1",
        "--steps_per_epoch=2", "--patch_stride=32", "--mapping_steps=3",
        "--mapping_batch_size=16", "--mapping_jit_compile=false",
        "--aggregate=mean"])
    assert p.returncode == 0, p.stderr[-3000:]
    trained = det.load_detector(md)
    assert trained.written_by == "anogan-train" and trained.threshold is None
    assert trained.mapping.steps == 3 and not trained.mapping.jit_compile
    assert trained.image_score.aggregate == "mean"
    assert trained.patches.patch_stride == 32

    # Evaluate without scoring flags: the recorded ones, then the threshold.
    ev = str(tmp_path / "E")
    p = _run("evaluate", DATA_FLAGS + [f"--model_dir={md}",
                                       f"--output_dir={ev}"])
    assert p.returncode == 0, p.stderr[-3000:]
    with open(os.path.join(ev, "metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["mapping_steps"] == 3 and metrics["aggregate"] == "mean"
    evaluated = det.load_detector(md)
    assert evaluated.written_by == "anogan-evaluate"
    assert evaluated.threshold.value == metrics["threshold"]
    assert evaluated.threshold.rule == metrics["threshold_rule"]
    n = metrics["n_calibration"]
    assert n > 0 and evaluated.threshold.n_calibration == n
    assert len(evaluated.threshold.calibration_scores) == n
    rows = _rows(os.path.join(ev, "image_scores.csv"))
    assert list(rows[0])[-2:] == ["threshold", "is_anomalous"]
    assert all(r["is_anomalous"] == r["predicted_anomalous"] for r in rows)

    # Score with only --model_dir, --inputs and --output_dir.
    inputs = _pngs(tmp_path / "in", load_images(
        DataConfig(dataset="synthetic_oct", image_size=32, oct_num_train=8,
                   oct_num_test=8, oct_height=64, oct_width=64),
        "test").images[:3])
    out = str(tmp_path / "S")
    p = _run("score", [f"--model_dir={md}", f"--inputs={inputs}",
                       f"--output_dir={out}"])
    assert p.returncode == 0, p.stderr[-3000:]
    log = [line for line in p.stderr.splitlines()
           if "Scoring settings: from detector.json" in line]
    assert len(log) == 1, p.stderr[-3000:]
    from_file = log[0].split("from flags:")[0]
    for value in ("mapping_steps=3", "aggregate=mean",
                  "mapping_jit_compile=False", "patch_stride=32",
                  "mode=iterative"):
        assert value in from_file, log[0]
    rows = _rows(os.path.join(out, "image_scores.csv"))
    assert list(rows[0])[:5] == ["id", "anomaly_score", "residual_score",
                                 "discrimination_score", "num_patches"]
    assert list(rows[0])[-2:] == ["threshold", "is_anomalous"]
    assert len(rows) == 3
    for r in rows:
        assert float(r["threshold"]) == metrics["threshold"]
        assert int(r["is_anomalous"]) == int(
            float(r["anomaly_score"]) >= metrics["threshold"])
        assert 1 / (n + 1) <= float(r["p_value"]) <= 1.0
    # 64x64 scans, 32x32 patches at stride 32: 4 patches each.
    assert all(r["num_patches"] == "4" for r in rows)
    assert "Threshold" in p.stdout

    # An explicit flag wins over the file; the threshold of another scale
    # is then not applied, and the log says why.
    # (A flag in a flagfile counts as given.)
    out2 = str(tmp_path / "S2")
    flagfile = tmp_path / "override.cfg"
    flagfile.write_text("# Patch maximum instead of the recorded mean.\n"
                        "--aggregate=max\n")
    p = _run("score", [f"--model_dir={md}", f"--inputs={inputs}",
                       f"--output_dir={out2}", f"--flagfile={flagfile}"])
    assert p.returncode == 0, p.stderr[-3000:]
    log = [line for line in p.stderr.splitlines()
           if "Scoring settings:" in line][0]
    assert "aggregate=max" in log.split("from flags:")[1]
    assert "mapping_steps=3" in log.split("from flags:")[0]
    assert "is not applied" in p.stderr and "'mean' -> 'max'" in p.stderr
    rows = _rows(os.path.join(out2, "image_scores.csv"))
    assert "is_anomalous" not in rows[0] and "threshold" not in rows[0]
    by_id = {r["id"]: r for r in _rows(os.path.join(out, "scores.csv"))}
    # Same recorded mapping: the same patch scores, only aggregated by max.
    patches2 = _rows(os.path.join(out2, "scores.csv"))
    for r in rows:
        mine = [float(q["anomaly_score"]) for q in patches2 if q["id"] == r["id"]]
        assert float(r["anomaly_score"]) == pytest.approx(max(mine))
    assert set(by_id) == {r["id"] for r in rows}

    # A corrupt file: a clear error naming it and the fix, no traceback.
    with open(os.path.join(md, "detector.json"), "w") as f:
        f.write('{"version": 1, "mapping": ')
    p = _run("score", [f"--model_dir={md}", f"--inputs={inputs}",
                       f"--output_dir={out2}"])
    assert p.returncode == 1
    assert "anogan-score: error:" in p.stderr
    assert os.path.join(md, "detector.json") in p.stderr
    assert "delete" in p.stderr and "Traceback" not in p.stderr

    # A model dir from before detector.json (the layout is otherwise the
    # same): the flag values and defaults as before, and one line says so.
    os.remove(os.path.join(md, "detector.json"))
    out3 = str(tmp_path / "S3")
    p = _run("score", [f"--model_dir={md}", f"--inputs={inputs}",
                       f"--output_dir={out3}", "--mapping_steps=2",
                       "--mapping_jit_compile=false"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stderr.count("No detector.json in") == 1
    assert "Scoring settings:" not in p.stderr
    rows = _rows(os.path.join(out3, "image_scores.csv"))
    assert list(rows[0]) == ["id", "anomaly_score", "residual_score",
                             "discrimination_score", "num_patches"]
    # The default stride 16 again: 3 x 3 patches of 32 in a 64x64 scan.
    assert [r["num_patches"] for r in rows] == ["9", "9", "9"]
    assert not os.path.exists(os.path.join(md, "detector.json"))
