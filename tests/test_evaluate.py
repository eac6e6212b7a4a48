"""End to end: a tiny trained model, anogan-evaluate and anogan-score."""

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig, ModelConfig, TrainConfig)
from anogan_tf.data import DataError, load_images
from anogan_tf.scoring import run_evaluate, run_score
from anogan_tf.training import train_gan

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ModelConfig(image_size=32, channels=1, latent_dim=16, base_filters=4)
DATA = DataConfig(dataset="synthetic_oct", image_size=32, oct_num_train=8,
                  oct_num_test=8, oct_height=64, oct_width=64, patch_stride=16)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    md = str(tmp_path_factory.mktemp("model"))
    train_gan(MODEL, DATA, TrainConfig(model_dir=md, batch_size=16, epochs=1,
                                       steps_per_epoch=4), verbose=0)
    return md


def _scores(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_evaluate_writes_every_file_and_is_batch_size_invariant(model_dir, tmp_path):
    outs = []
    for b in (5, 16):
        out = str(tmp_path / f"E{b}")
        metrics = run_evaluate(
            model_dir, DATA,
            MappingConfig(steps=5, batch_size=b, jit_compile=False),
            EvalConfig(output_dir=out, num_test=8), progress=False)
        for name in ("metrics.json", "scores.csv", "image_scores.csv", "roc.png",
                     "pr.png", "score_hist.png", "anomaly_maps.png"):
            assert os.path.getsize(os.path.join(out, name)) > 0, name
        outs.append(out)
    with open(os.path.join(outs[0], "metrics.json")) as f:
        m = json.load(f)
    for key in ("image_auroc", "image_auprc", "sensitivity", "specificity",
                "threshold", "pixel_auroc", "pixel_auprc"):
        assert np.isfinite(m[key]), key
    assert m["threshold_rule"].startswith("percentile 95")
    by_agg = m["image_auroc_by_aggregate"]
    assert set(by_agg) == {"max", "mean", "topk_mean", "map_max"}
    assert by_agg["max"] == pytest.approx(m["image_auroc"])  # the default
    by_score = m["image_auroc_by_score"]
    assert set(by_score) == {"anogan", "residual", "residual_sq", "feature"}
    # The default --score=anogan with --aggregate=max is the headline AUROC.
    assert by_score["anogan"] == pytest.approx(m["image_auroc"])
    assert m["mode"] == "iterative" and m["n_normal"] == 4 and m["n_anomalous"] == 4
    a, b = _scores(os.path.join(outs[0], "scores.csv")), _scores(
        os.path.join(outs[1], "scores.csv"))
    assert list(a[0])[:6] == ["id", "patch_y", "patch_x", "anomaly_score",
                              "residual_score", "discrimination_score"]
    assert [r["id"] for r in a] == [r["id"] for r in b] and len(a) > 8
    for col in ("anomaly_score", "residual_score", "discrimination_score"):
        np.testing.assert_allclose([float(r[col]) for r in a],
                                   [float(r[col]) for r in b], rtol=1e-4)
    # Patched full images: coordinates present and inside the 64x64 scan.
    ys = [int(r["patch_y"]) for r in a]
    assert min(ys) == 0 and max(ys) == 64 - 32


def test_score_folder_of_pngs(model_dir, tmp_path):
    folder = tmp_path / "pngs"
    folder.mkdir()
    images = load_images(DATA, "test").images[:3]
    for i, img in enumerate(images):
        Image.fromarray(((img[..., 0] + 1) * 127.5).round().astype(np.uint8)).save(
            folder / f"scan{i}.png")
    out = str(tmp_path / "S")
    summary = run_score(model_dir, DATA, MappingConfig(steps=3, batch_size=8,
                                                       jit_compile=False),
                        EvalConfig(output_dir=out), inputs=[str(folder)])
    rows = _scores(os.path.join(out, "scores.csv"))
    assert summary["num_images"] == 3
    assert {r["id"] for r in rows} == {"scan0", "scan1", "scan2"}
    for i in range(3):
        assert np.load(os.path.join(out, "maps", f"scan{i}.npy")).shape == (64, 64)
        assert os.path.getsize(os.path.join(out, "maps", f"scan{i}.png")) > 0


def test_bad_model_dirs_and_inputs(model_dir, tmp_path):
    mc = MappingConfig(steps=1, batch_size=4, jit_compile=False)
    ec = EvalConfig(output_dir=str(tmp_path / "o"))
    with pytest.raises(ConfigError, match="does not exist"):
        run_score(str(tmp_path / "nope"), DATA, mc, ec)
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "discriminator.keras"):
        (broken / name).write_bytes(open(os.path.join(model_dir, name), "rb").read())
    (broken / "generator.keras").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match="generator.keras"):
        run_score(str(broken), DATA, mc, ec)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        run_score(model_dir, DATA, mc, ec, inputs=[str(empty)])
    rgb = tmp_path / "rgb.npy"
    np.save(rgb, np.zeros((2, 64, 64, 3), np.uint8))
    import dataclasses
    with pytest.raises(ConfigError, match="channel"):
        from anogan_tf.scoring.scorer import score_image_set
        from anogan_tf.models import load_model_dir
        cfg, g, d = load_model_dir(model_dir)
        imgs = load_images(dataclasses.replace(DATA, dataset="npy",
                                               data_path=str(rgb), channels=3), "test")
        score_image_set(imgs, g, d, cfg, DATA, mc, progress=False)


def test_bad_inputs_paths_name_the_inputs_flag(tmp_path):
    from anogan_tf.scoring.inputs import load_inputs
    empty = tmp_path / "nothing_here"
    empty.mkdir()
    (empty / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as e:
        load_inputs([str(empty)], DATA)
    message = str(e.value)
    assert str(empty) in message and "no image files" in message
    assert "--inputs" in message and "--data_path" not in message
    array = np.zeros((0, 32, 32, 1), np.uint8)
    np.save(tmp_path / "none.npy", array)
    for path in (str(tmp_path / "none.npy"), str(tmp_path / "gone.npz")):
        with pytest.raises(DataError) as e:
            load_inputs([path], DATA)
        assert path in str(e.value) and "--data_path" not in str(e.value)


def _run(module, args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-m", f"anogan_tf.{module}"] + args,
                          cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


def test_evaluate_binary_acceptance(model_dir, tmp_path):
    out = str(tmp_path / "E")
    p = _run("evaluate", ["--dataset=synthetic_oct", f"--model_dir={model_dir}",
                          "--mapping_steps=3", "--num_test=4", "--oct_height=64",
                          "--oct_width=64", "--patch_stride=16",
                          "--mapping_jit_compile=false", f"--output_dir={out}"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert "image_auroc" in p.stdout and "pixel_auroc" in p.stdout
    with open(os.path.join(out, "metrics.json")) as f:
        assert np.isfinite(json.load(f)["pixel_auroc"])
    # A size that contradicts the model is refused with the fix.
    p = _run("evaluate", ["--dataset=synthetic_oct", f"--model_dir={model_dir}",
                          "--image_size=64", f"--output_dir={out}"])
    assert p.returncode == 1 and "does not match the model" in p.stderr
    assert "Traceback" not in p.stderr
    p = _run("score", [f"--model_dir={tmp_path / 'missing'}", f"--output_dir={out}"])
    assert p.returncode == 1 and "anogan-score: error:" in p.stderr


def test_score_variants_known_answer():
    from anogan_tf.scoring.evaluation import score_variants

    class Mapping:
        residual_score = np.array([2.0, 4.0])
        discrimination_score = np.array([10.0, 0.0])
        residual_map = np.array([[[[1.0], [2.0]]], [[[0.5], [0.5]]]])

    v = score_variants(Mapping(), 0.1)
    np.testing.assert_allclose(v["anogan"], [0.9 * 2 + 1.0, 0.9 * 4])
    np.testing.assert_allclose(v["residual"], [2.0, 4.0])
    np.testing.assert_allclose(v["residual_sq"], [5.0, 0.5])
    np.testing.assert_allclose(v["feature"], [10.0, 0.0])
