"""Tests of anogan_tf.export: versions, signatures, parity, checks, errors."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from anogan_tf.config import ConfigError, MappingConfig, load_model_config
from anogan_tf.export import exporter, export_model
from anogan_tf.mapping import LatentMapper
from anogan_tf.mapping.latent import MappingParams

sys.path.insert(0, os.path.dirname(__file__))
import serving_server  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
SCORE_KEYS = ("anomaly_score", "residual_score", "discrimination_score",
              "residual_map", "reconstruction", "latent")
# The fixture's export: restarts=2 so the per-image "lowest loss wins" is
# part of every parity check.
MAPPING = MappingConfig(steps=10, lr=0.05, lambda_weight=0.1, restarts=2,
                        seed=3)
CHEAP = MappingConfig(steps=1, restarts=1)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("model"))
    serving_server.make_tiny_model_dir(path, seed=0)
    return path


@pytest.fixture(scope="module")
def exported(model_dir, tmp_path_factory):
    export_dir = str(tmp_path_factory.mktemp("export"))
    version_dir = export_model(model_dir, export_dir, MAPPING, export_xla=True)
    return export_dir, version_dir, tf.saved_model.load(version_dir)


@pytest.fixture(scope="module")
def models(model_dir):
    _, g, d, _ = exporter.load_trained_models(model_dir)
    return g, d


@pytest.fixture(scope="module")
def images(models):
    """G(z) plus noise (near the manifold) and uniform noise, in [-1, 1]."""
    g, _ = models
    rng = np.random.default_rng(1)
    near = g(rng.uniform(-1, 1, (3, 16)).astype(np.float32)).numpy()
    near = np.clip(near + rng.normal(0, 0.05, near.shape), -1, 1)
    far = rng.uniform(-1, 1, (2, 32, 32, 1))
    return np.concatenate([near, far]).astype(np.float32)


def _run(fn, **inputs):
    return {k: v.numpy() for k, v in fn(**{
        k: tf.constant(v) for k, v in inputs.items()}).items()}


def _max_errors(a, b):
    diff = np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))
    return diff.max(), (diff / np.maximum(np.abs(np.asarray(b, np.float64)),
                                          1e-6)).max()


# --- versions and layout ------------------------------------------------------

def test_first_export_is_version_1_with_serving_files(exported):
    export_dir, version_dir, _ = exported
    assert version_dir == os.path.join(export_dir, "1")
    assert sorted(os.listdir(export_dir)) == ["1"]  # no temp folder left
    for name in ("saved_model.pb", "variables", exporter.WARMUP_FILE,
                 exporter.EXPORT_INFO_FILE):
        assert os.path.exists(os.path.join(version_dir, name)), name


def test_versions_count_up_refuse_overwrite_and_leave_no_temp(
        model_dir, tmp_path):
    export_dir = str(tmp_path / "models")
    assert export_model(model_dir, export_dir, CHEAP) == os.path.join(
        export_dir, "1")
    assert export_model(model_dir, export_dir, CHEAP) == os.path.join(
        export_dir, "2")
    with pytest.raises(ConfigError, match="already exists"):
        export_model(model_dir, export_dir, CHEAP, version=2)
    assert exporter.next_version(export_dir) == 3
    # Explicit versions: see the binary test below.
    assert sorted(os.listdir(export_dir)) == ["1", "2"]


def test_failed_export_leaves_neither_version_nor_temp(model_dir, tmp_path,
                                                        monkeypatch):
    export_dir = str(tmp_path / "models")

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(exporter, "_write_warmup", fail)
    with pytest.raises(OSError, match="disk full"):
        export_model(model_dir, export_dir, CHEAP)
    assert os.listdir(export_dir) == []


def test_stale_temp_folders_go_and_running_exports_keep_theirs(tmp_path):
    import fcntl
    import time
    export_dir = tmp_path / "models"
    export_dir.mkdir()
    (export_dir / "1").mkdir()
    names = {n: export_dir / f"{exporter.TEMP_PREFIX}{n}"
             for n in ("dead", "running", "old", "new")}
    for path in names.values():
        (path / "1").mkdir(parents=True)
    for name in ("dead", "running"):
        (names[name] / ".lock").write_text("")
    # Without a lock file, the age decides (a folder from before this run).
    before = time.time()
    os.utime(names["old"], (before - 60, before - 60))
    os.utime(names["new"], (before + 1, before + 1))
    # A running export holds its lock (here: this process, as another
    # process would); a dead one's lock is free.
    with open(names["running"] / ".lock", "r+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        removed = exporter.remove_stale_temp_dirs(str(export_dir), before)
    assert sorted(removed) == sorted(str(names[n]) for n in ("dead", "old"))
    assert sorted(os.listdir(export_dir)) == sorted(
        ["1", names["running"].name, names["new"].name])


def test_saved_model_cli_show_lists_signatures(exported):
    _, version_dir, _ = exported
    out = subprocess.run(
        [os.path.join(VENV_BIN, "saved_model_cli"), "show", "--dir",
         version_dir, "--all"], capture_output=True, text=True, check=True,
        timeout=120).stdout
    sections = {}
    for block in out.split("signature_def['")[1:]:
        name, rest = block.split("']", 1)
        sections[name] = rest
    assert {"serving_default", "serving_uint8", "generate",
            "serving_default_xla", "serving_uint8_xla"} <= set(sections)
    for name in ("serving_default", "serving_uint8"):
        inputs, outputs = sections[name].split("The given SavedModel "
                                               "SignatureDef contains the "
                                               "following output(s):")
        assert "inputs['images']" in inputs
        assert sorted(k for k in SCORE_KEYS if f"outputs['{k}']" in outputs) \
            == sorted(SCORE_KEYS)
    assert "dtype: DT_UINT8" in sections["serving_uint8"]
    assert "inputs['latent']" in sections["generate"]
    assert "outputs['images']" in sections["generate"]


def test_export_info_records_mapping_params(exported):
    _, version_dir, _ = exported
    with open(os.path.join(version_dir, exporter.EXPORT_INFO_FILE)) as f:
        info = json.load(f)
    assert info["mapping"]["steps"] == 10
    assert info["mapping"]["lr"] == 0.05
    assert info["mapping"]["lambda"] == 0.1
    assert info["mapping"]["seed"] == 3
    assert info["mapping"]["restarts"] == 2
    assert info["mapping"]["score"] == "anogan"
    assert info["model_config"]["image_size"] == 32
    assert info["signatures"][0] == "serving_default"


def test_warmup_file_is_a_predict_log_the_model_accepts(exported):
    from tensorflow_serving.apis import prediction_log_pb2
    _, version_dir, loaded = exported
    records = list(tf.data.TFRecordDataset(
        os.path.join(version_dir, exporter.WARMUP_FILE)).as_numpy_iterator())
    # One request per signature family: the patch mapping and whole images.
    assert len(records) == 2
    expected = (("serving_default", "anomaly_score"),
                ("score_images", "image_score"))
    for record, (name, score_key) in zip(records, expected):
        request = prediction_log_pb2.PredictionLog.FromString(
            record).predict_log.request
        assert request.model_spec.signature_name == name
        x = tf.make_ndarray(request.inputs["images"])
        # The tiny model dir records no image size: one 32x32 patch.
        assert x.shape == (exporter.WARMUP_BATCH, 32, 32, 1)
        out = _run(loaded.signatures[name], images=x)
        assert np.all(np.isfinite(out[score_key]))


def test_session_loader_runs_the_export_like_the_model_server(exported,
                                                              images):
    # TF1 Session + loader.load, XLA off: fails on uninitialised variables
    # (tensorflow/serving#2250), which tf.saved_model.load would hide. The
    # XLA twins in this export must not stop the plain signatures loading.
    _, version_dir, loaded = exported
    model = serving_server.LoopbackModel(version_dir)
    from_session = model.run("serving_default", {"images": images})
    served = _run(loaded.signatures["serving_default"], images=images)
    for key in SCORE_KEYS:
        np.testing.assert_allclose(from_session[key], served[key], rtol=1e-6,
                                   atol=1e-6, err_msg=key)


# --- parity with the in-process mapper ------------------------------------------

@pytest.fixture(scope="module")
def params(model_dir):
    return MappingParams.create(load_model_config(model_dir), MAPPING)


@pytest.mark.parametrize("jit_compile", [False, True])
def test_serving_default_matches_latent_mapper(exported, models, images,
                                               params, jit_compile):
    _, _, loaded = exported
    g, d = models
    mapped = LatentMapper(g, d, params, batch_size=4, restarts=MAPPING.restarts,
                          jit_compile=jit_compile).map(images, progress=False)
    served = _run(loaded.signatures["serving_default"], images=images)
    for key in SCORE_KEYS:
        np.testing.assert_allclose(served[key], getattr(mapped, key),
                                   rtol=1e-5, atol=1e-5, err_msg=key)
        print(f"parity XLA={jit_compile} {key}: max abs/rel error "
              f"%.3g / %.3g" % _max_errors(served[key], getattr(mapped, key)))
    if jit_compile:  # the XLA twin runs the same compiled loop
        twin = _run(loaded.signatures["serving_default_xla"], images=images)
        for key in SCORE_KEYS:
            np.testing.assert_allclose(twin[key], getattr(mapped, key),
                                       rtol=1e-5, atol=1e-5, err_msg=key)


def test_restarts_keep_the_lowest_loss_per_image(exported, models, images,
                                                 params):
    # score="anogan": anomaly_score is the final mapping loss.
    _, _, loaded = exported
    g, d = models
    single = LatentMapper(g, d, params, batch_size=8, restarts=1,
                          jit_compile=False).map(images, progress=False)
    served = _run(loaded.signatures["serving_default"], images=images)
    assert np.all(served["anomaly_score"] <= single.mapping_loss + 1e-4)
    assert np.any(served["anomaly_score"] < single.mapping_loss - 1e-3)


def test_saved_model_cli_run_matches(exported, images, tmp_path):
    _, version_dir, loaded = exported
    np.save(tmp_path / "x.npy", images)
    subprocess.run(
        [os.path.join(VENV_BIN, "saved_model_cli"), "run", "--dir",
         version_dir, "--tag_set", "serve", "--signature_def",
         "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}",
         "--outdir", str(tmp_path / "out")], capture_output=True, text=True,
        check=True, timeout=300)
    served = _run(loaded.signatures["serving_default"], images=images)
    for key in SCORE_KEYS:
        cli = np.load(tmp_path / "out" / f"{key}.npy")
        np.testing.assert_allclose(cli, served[key], rtol=1e-5, atol=1e-5,
                                   err_msg=key)
        print(f"saved_model_cli {key}: max abs/rel error %.3g / %.3g"
              % _max_errors(cli, served[key]))


def test_uint8_signature_equals_float_of_same_picture(exported):
    _, _, loaded = exported
    u8 = np.random.default_rng(2).integers(0, 256, (3, 32, 32, 1), np.uint8)
    as_float = u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)
    from_u8 = _run(loaded.signatures["serving_uint8"], images=u8)
    from_float = _run(loaded.signatures["serving_default"], images=as_float)
    for key in SCORE_KEYS:
        # Same z0 and the same loop; only float rounding may differ.
        np.testing.assert_allclose(from_u8[key], from_float[key], rtol=1e-6,
                                   atol=1e-6, err_msg=key)


def test_score_images_of_a_bare_model_dir_is_one_patch_without_threshold(
        exported, images):
    """No detector.json and no training size: score_images takes model-sized
    images (one patch each), aggregates with "max" (its one patch's score)
    and, with no calibrated threshold, answers is_anomalous = -1."""
    _, version_dir, loaded = exported
    served = _run(loaded.signatures["serving_default"], images=images)
    whole = _run(loaded.signatures["score_images"], images=images)
    np.testing.assert_allclose(whole["image_score"], served["anomaly_score"],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(whole["patch_anomaly_score"][:, 0],
                               served["anomaly_score"], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(whole["anomaly_map"],
                               served["residual_map"][..., 0], rtol=1e-6,
                               atol=1e-6)
    assert np.all(np.isnan(whole["threshold"]))
    np.testing.assert_array_equal(whole["is_anomalous"], [-1] * len(images))
    np.testing.assert_array_equal(whole["num_patches"], [1] * len(images))
    with open(os.path.join(version_dir, exporter.EXPORT_INFO_FILE)) as f:
        plan = json.load(f)["score_images"]
    assert plan["image_shape"] == [32, 32, 1] and plan["threshold"] is None


def test_generate_equals_generator(exported, models):
    _, _, loaded = exported
    g, _ = models
    z = np.random.default_rng(4).uniform(-1, 1, (3, 16)).astype(np.float32)
    out = _run(loaded.signatures["generate"], latent=z)
    assert out["images"].shape == (3, 32, 32, 1)
    np.testing.assert_allclose(out["images"], g(z, training=False).numpy(),
                               rtol=1e-6, atol=1e-6)


def test_a_row_does_not_depend_on_its_batch(exported, images):
    _, _, loaded = exported
    fn = loaded.signatures["serving_default"]
    alone = _run(fn, images=images[2:3])
    together = _run(fn, images=images)
    reordered = _run(fn, images=images[::-1].copy())
    for key in SCORE_KEYS:
        np.testing.assert_allclose(together[key][2:3], alone[key], rtol=1e-5,
                                   atol=1e-5, err_msg=key)
        np.testing.assert_allclose(reordered[key][2:3], alone[key], rtol=1e-5,
                                   atol=1e-5, err_msg=key)


# --- input checks ------------------------------------------------------------

_SHAPE = "images must be [N, 32, 32, 1] float32 in [-1, 1]; got shape"
BAD_FLOAT_INPUTS = {
    "rank3": (np.zeros((2, 32, 32), np.float32), _SHAPE),
    "rank5": (np.zeros((1, 32, 32, 1, 1), np.float32), _SHAPE),
    "height": (np.zeros((2, 16, 32, 1), np.float32), _SHAPE),
    "width": (np.zeros((2, 32, 48, 1), np.float32), _SHAPE),
    "channels": (np.zeros((2, 32, 32, 3), np.float32), _SHAPE),
    "empty": (np.zeros((0, 32, 32, 1), np.float32), "got an empty batch"),
    "nan": (np.full((1, 32, 32, 1), np.nan, np.float32), "got NaN or Inf"),
    "inf": (np.full((1, 32, 32, 1), np.inf, np.float32), "got NaN or Inf"),
    "range": (np.full((1, 32, 32, 1), 1.5, np.float32),
              "float32 in [-1, 1]; got values from"),
}


@pytest.mark.parametrize("case", sorted(BAD_FLOAT_INPUTS))
def test_bad_float_inputs_fail_with_invalid_argument(exported, case):
    _, _, loaded = exported
    x, phrase = BAD_FLOAT_INPUTS[case]
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        _run(loaded.signatures["serving_default"], images=x)
    assert phrase in e.value.message


@pytest.mark.parametrize("x, phrase", [
    (np.zeros((2, 32, 32, 3), np.uint8),
     "images must be [N, 32, 32, 1] uint8 in [0, 255]; got shape"),
    (np.zeros((0, 32, 32, 1), np.uint8), "got an empty batch"),
])
def test_bad_uint8_inputs_fail_with_invalid_argument(exported, x, phrase):
    _, _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        _run(loaded.signatures["serving_uint8"], images=x)
    assert phrase in e.value.message


@pytest.mark.parametrize("z, phrase", [
    (np.zeros((2, 8), np.float32), "latent must be [N, 16] float32"),
    (np.full((1, 16), np.nan, np.float32), "got NaN or Inf"),
])
def test_bad_latents_fail_with_invalid_argument(exported, z, phrase):
    _, _, loaded = exported
    with pytest.raises(tf.errors.InvalidArgumentError) as e:
        _run(loaded.signatures["generate"], latent=z)
    assert phrase in e.value.message


# --- bad model dirs and the binary ----------------------------------------------

def test_missing_model_dir_is_a_config_error(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(ConfigError, match="does not exist") as e:
        export_model(missing, str(tmp_path / "out"), CHEAP)
    assert missing in str(e.value)
    assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("damage, phrase", [
    ("config.json", "No config.json"),
    ("generator.keras", "No generator.keras"),
    ("discriminator.keras", "No discriminator.keras"),
])
def test_incomplete_model_dir_is_a_config_error(model_dir, tmp_path, damage,
                                                phrase):
    broken = tmp_path / "model"
    broken.mkdir()
    for name in os.listdir(model_dir):
        if name != damage:
            (broken / name).write_bytes(open(os.path.join(model_dir, name),
                                             "rb").read())
    with pytest.raises(ConfigError, match=phrase) as e:
        export_model(str(broken), str(tmp_path / "out"), CHEAP)
    assert str(broken) in str(e.value)


def test_corrupt_model_file_is_a_config_error(model_dir, tmp_path):
    broken = tmp_path / "model"
    broken.mkdir()
    for name in os.listdir(model_dir):
        (broken / name).write_bytes(open(os.path.join(model_dir, name),
                                         "rb").read())
    (broken / "generator.keras").write_bytes(b"not a zip archive")
    with pytest.raises(ConfigError, match="Could not load") as e:
        export_model(str(broken), str(tmp_path / "out"), CHEAP)
    assert str(broken / "generator.keras") in str(e.value)


def test_export_dir_that_is_a_file_is_a_clear_config_error(model_dir,
                                                          tmp_path):
    target = tmp_path / "models"
    target.write_bytes(b"keep me")
    for export_dir, phrase in ((target, "is a file"),
                               (target / "sub", "which is a file")):
        with pytest.raises(ConfigError) as e:
            export_model(model_dir, str(export_dir), CHEAP)
        message = str(e.value)
        assert f"--export_dir={str(export_dir)!r}" in message
        assert phrase in message and "expected a folder" in message
        assert "Errno" not in message
    assert target.read_bytes() == b"keep me"
    assert os.listdir(tmp_path) == ["models"]


def test_binary_exports_an_explicit_version_and_reports_errors(model_dir,
                                                               tmp_path):
    export_dir = tmp_path / "models"
    base = [sys.executable, "-m", "anogan_tf.export",
            f"--export_dir={export_dir}", "--mapping_steps=1"]
    ok = subprocess.run(base + [f"--model_dir={model_dir}", "--version=7"],
                        capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().endswith(os.path.join("models", "7"))
    with open(export_dir / "7" / exporter.EXPORT_INFO_FILE) as f:
        assert json.load(f)["mapping"]["steps"] == 1
    bad = subprocess.run(base + [f"--model_dir={tmp_path / 'nope'}"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1
    errors = [l for l in bad.stderr.splitlines()
              if l.startswith("anogan-export: error:")]
    assert len(errors) == 1 and str(tmp_path / "nope") in errors[0]
    assert sorted(os.listdir(export_dir)) == ["7"]
