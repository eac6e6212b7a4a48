"""ModelDir: the layout, atomic writes, history, checkpoints and the lock."""

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

from anogan_tf.config import ConfigError, DataConfig, ModelConfig, TrainConfig
from anogan_tf.model_dir import ModelDir
from anogan_tf.models import build_encoder, build_models, load_model_dir
from anogan_tf.training import GAN, train_gan

MODEL = ModelConfig(image_size=32, channels=1, latent_dim=16, base_filters=4)
DATA = DataConfig(dataset="synthetic_oct", image_size=32, oct_num_train=6,
                  oct_height=64, oct_width=64, patch_stride=16)


def _weights(model):
    return [np.array(w) for w in model.weights]


def _gan(seed=0):
    keras.utils.set_random_seed(seed)
    g, d = build_models(MODEL)
    gan = GAN(g, d, MODEL.latent_dim, seed=seed)
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3),
                jit_compile=False)
    return gan


def _train_steps(gan, n=1, seed=0):
    x = np.random.default_rng(seed).uniform(-1, 1, (8, 32, 32, 1)).astype(
        np.float32)
    for _ in range(n):
        gan.train_step(x)


def _state(gan):
    """Every number a resumed GAN must get back."""
    return (_weights(gan) + [np.array(v) for v in gan.g_optimizer.variables]
            + [np.array(v) for v in gan.d_optimizer.variables]
            + [np.array(gan.seed_generator.state)])


def _assert_same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


# --- the layout --------------------------------------------------------------

def test_layout_names_are_the_design_contract(tmp_path):
    md = ModelDir(str(tmp_path))
    names = {
        md.config_path: "config.json", md.flags_path(): "flags.cfg",
        md.model_path("generator"): "generator.keras",
        md.model_path("discriminator"): "discriminator.keras",
        md.model_path("encoder"): "encoder.keras",
        md.checkpoint_dir(): "checkpoints", md.samples_dir: "samples",
        md.logs_dir(): "logs", md.history_path(): "history.json",
        md.detector_path: "detector.json", md.selection_path:
            "selection.json", md.lock_path: ".lock",
        md.flags_path("encoder"): "flags_encoder.cfg",
        md.history_path("encoder"): "history_encoder.json",
        md.checkpoint_dir("encoder"): "checkpoints_encoder",
        md.logs_dir("encoder"): os.path.join("logs", "encoder"),
    }
    for path, name in names.items():
        assert path == os.path.join(str(tmp_path), name)
    # scoring's detector.json path is the model dir's.
    from anogan_tf.scoring import detector
    assert detector.detector_path(str(tmp_path)) == md.detector_path
    with pytest.raises(ValueError, match="stage"):
        md.history_path("gen")
    with pytest.raises(ValueError, match="role"):
        md.model_path("critic")
    with pytest.raises(ConfigError, match="--model_dir"):
        ModelDir("")


def test_config_flags_and_models_round_trip(tmp_path):
    md = ModelDir(str(tmp_path / "m"))
    md.prepare(MODEL, "--epochs=3\n")
    assert md.read_config() == MODEL
    assert md.read_flags() == "--epochs=3\n" and md.read_flags("encoder") is None
    md.write_flags("--epochs=5\n", "encoder")
    assert md.read_flags("encoder") == "--epochs=5\n"
    # flag_values parses --name=value lines (values may hold '='), skips
    # comments and bare boolean flags; no flags.cfg gives {}.
    md.write_flags("# resolved\n--resize=128,256\n--noroi\n--note=a=b\n"
                   "  --dataset=synthetic_oct  \n", "encoder")
    assert md.flag_values("encoder") == {
        "resize": "128,256", "note": "a=b", "dataset": "synthetic_oct"}
    assert md.flag_values() == {"epochs": "3"}
    assert ModelDir(str(tmp_path / "none")).flag_values() == {}
    # The same architecture is accepted again; another is refused.
    md.prepare(MODEL)
    with pytest.raises(ConfigError, match="different architecture"):
        md.prepare(ModelConfig(image_size=32, latent_dim=16, base_filters=8))

    keras.utils.set_random_seed(0)
    g, d = build_models(MODEL)
    e = build_encoder(MODEL)
    assert md.load_encoder() is None
    for role, model in (("generator", g), ("discriminator", d),
                        ("encoder", e)):
        md.save_model(role, model)
    config, g2, d2 = md.load_gan()
    assert config == MODEL
    _assert_same(_weights(g2), _weights(g))
    _assert_same(_weights(d2), _weights(d))
    _assert_same(_weights(md.load_encoder()), _weights(e))
    # The public helpers read the same files.
    _, g3, _ = load_model_dir(md.path)
    _assert_same(_weights(g3), _weights(g))
    assert sorted(os.listdir(md.path)) == [
        "config.json", "discriminator.keras", "encoder.keras", "flags.cfg",
        "flags_encoder.cfg", "generator.keras"]
    with pytest.raises(ConfigError, match="holds a Discriminator"):
        md.load_model("discriminator", type(g))


def test_a_failed_save_keeps_the_previous_file_and_no_temp(tmp_path,
                                                          monkeypatch):
    md = ModelDir(str(tmp_path))
    keras.utils.set_random_seed(0)
    g, _ = build_models(MODEL)
    md.save_model("generator", g)
    before = _weights(md.load_model("generator"))
    assert os.listdir(md.path) == ["generator.keras"]  # no temp file

    g.to_image.bias.assign(np.full(g.to_image.bias.shape, 5.0, np.float32))

    def killed_save(self, path, *args, **kwargs):  # dies half-way
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04 partial")
        raise OSError("killed")

    monkeypatch.setattr(type(g), "save", killed_save)
    with pytest.raises(OSError, match="killed"):
        md.save_model("generator", g)
    _assert_same(_weights(md.load_model("generator")), before)
    monkeypatch.undo()
    # The next lock holder (a new training run) removes the temp file of
    # the killed write, and of other killed writes of the dir's own files.
    assert sorted(os.listdir(md.path)) == [".generator.tmp.keras",
                                           "generator.keras"]
    (tmp_path / "history.json.tmp").write_text("{")
    (tmp_path / "notes.tmp").write_text("not ours")
    with md.lock():
        pass
    assert sorted(os.listdir(md.path)) == [
        ".lock", "generator.keras", "notes.tmp"]


# --- history.json ------------------------------------------------------------

def test_history_appends_across_resumes_and_reads_the_old_format(tmp_path):
    md = ModelDir(str(tmp_path))
    for epoch in (1, 2, 3):
        md.append_history({"epoch": epoch, "d_loss": float(epoch)})
    # A run killed after epoch 3's record but before its checkpoint resumes
    # from epoch 2: the stale record goes, and the redone epoch replaces it.
    md.trim_history(2)
    assert [r["epoch"] for r in md.read_history()] == [1, 2]
    md.append_history({"epoch": 3, "d_loss": 30.0})
    md.append_history({"epoch": 4, "d_loss": 40.0})
    assert md.read_history() == [
        {"epoch": 1, "d_loss": 1.0}, {"epoch": 2, "d_loss": 2.0},
        {"epoch": 3, "d_loss": 30.0}, {"epoch": 4, "d_loss": 40.0}]
    with open(md.history_path()) as f:
        assert json.load(f) == {"epochs": md.read_history()}
    assert md.read_history("encoder") == []
    # The JSON-lines file of earlier versions is read and then rewritten
    # in the current format by the next epoch.
    with open(md.history_path("encoder"), "w") as f:
        f.write(json.dumps({"initial_epoch": 0, "loss": [1.0, 2.0]}) + "\n")
        f.write(json.dumps({"initial_epoch": 1, "loss": [3.0]}) + "\n")
    md.append_history({"epoch": 3, "loss": 4.0}, "encoder")
    assert md.read_history("encoder") == [
        {"epoch": 1, "loss": 1.0}, {"epoch": 2, "loss": 3.0},
        {"epoch": 3, "loss": 4.0}]
    assert sorted(os.listdir(md.path)) == ["history.json",
                                           "history_encoder.json"]


# --- checkpoints ---------------------------------------------------------------

def test_checkpoint_restores_models_optimizers_seed_and_epoch(tmp_path):
    md = ModelDir(str(tmp_path))
    gan = _gan(0)
    ckpt = md.checkpoint("gan", gan.checkpoint_items(), keep=2)
    for epoch in (1, 2, 3):
        _train_steps(gan, seed=epoch)
        ckpt.save(epoch, {"selected": {"epoch": 1}, "logs": {"d_loss": 0.5}})
    saved = _state(gan)
    # max_to_keep: the two newest stay, and TF's state file lists them.
    files = sorted(os.listdir(md.checkpoint_dir()))
    assert files == ["checkpoint", "ckpt-2.data-00000-of-00001",
                     "ckpt-2.index", "ckpt-3.data-00000-of-00001",
                     "ckpt-3.index", "state.json"]
    with open(os.path.join(md.checkpoint_dir(), "state.json")) as f:
        assert json.load(f) == {"epoch": 3, "checkpoint": "ckpt-3",
                                "selected": {"epoch": 1},
                                "logs": {"d_loss": 0.5}}

    other = _gan(1)  # other initial weights and seed
    again = md.checkpoint("gan", other.checkpoint_items())
    assert again.record["selected"] == {"epoch": 1}  # read before restoring
    assert again.restore() == 3
    _assert_same(_state(other), saved)
    # The restored GAN continues exactly like the saved one.
    _train_steps(gan, seed=9)
    _train_steps(other, seed=9)
    _assert_same(_state(other), _state(gan))


def _corrupt(path):
    with open(path, "r+b") as f:
        f.truncate(max(1, os.path.getsize(path) // 2))


def test_resume_falls_back_past_a_damaged_newest_checkpoint(tmp_path, caplog):
    md = ModelDir(str(tmp_path))
    gan = _gan(0)
    ckpt = md.checkpoint("gan", gan.checkpoint_items(), keep=3)
    states = {}
    for epoch in (1, 2, 3):
        _train_steps(gan, seed=epoch)
        ckpt.save(epoch, {"selected": None})
        states[epoch] = _state(gan)
    folder = md.checkpoint_dir()
    _corrupt(os.path.join(folder, "ckpt-3.data-00000-of-00001"))
    fresh = _gan(1)
    with caplog.at_level("WARNING"):
        assert md.checkpoint("gan", fresh.checkpoint_items()).restore() == 2
    _assert_same(_state(fresh), states[2])
    assert any("ckpt-3" in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)

    # Every checkpoint damaged: a clear error that says how to proceed.
    os.remove(os.path.join(folder, "ckpt-2.index"))
    (tmp_path / "checkpoints" / "ckpt-1.index").write_bytes(b"garbage")
    with pytest.raises(ConfigError) as e:
        md.checkpoint("gan", _gan(2).checkpoint_items()).restore()
    message = str(e.value)
    for part in ("ckpt-1", "ckpt-2", "ckpt-3", folder, "--model_dir"):
        assert part in message, (part, message)


def test_resume_removes_a_checkpoint_that_was_never_committed(tmp_path):
    md = ModelDir(str(tmp_path))
    gan = _gan(0)
    ckpt = md.checkpoint("gan", gan.checkpoint_items())
    _train_steps(gan)
    ckpt.save(1, {})
    expected = _state(gan)
    folder = md.checkpoint_dir()
    with open(os.path.join(folder, "checkpoint")) as f:
        committed = f.read()
    # A kill after TF wrote ckpt-2's files but before the state file named
    # it (TF writes the state file last): ckpt-1 is still the latest.
    _train_steps(gan)
    ckpt.save(2, {})
    with open(os.path.join(folder, "checkpoint"), "w") as f:
        f.write(committed)
    os.makedirs(os.path.join(folder, "ckpt-2_temp"))  # a merge never done
    fresh = _gan(1)
    assert md.checkpoint("gan", fresh.checkpoint_items()).restore() == 1
    _assert_same(_state(fresh), expected)
    assert sorted(os.listdir(folder)) == [
        "checkpoint", "ckpt-1.data-00000-of-00001", "ckpt-1.index",
        "state.json"]


# --- the lock ------------------------------------------------------------------

_HOLDER = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(120)
"""


@contextlib.contextmanager
def _locked_by_another_process(md):
    """Yields the process that holds `md`'s lock; SIGKILLs it after."""
    md.create()
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, md.lock_path],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_lock_refuses_a_second_holder_and_a_killed_one_does_not_block(
        tmp_path):
    md = ModelDir(str(tmp_path / "m"))
    with _locked_by_another_process(md) as holder:
        with pytest.raises(ConfigError) as e:
            with md.lock():
                pass
        message = str(e.value)
        for part in (md.path, f"pid {holder.pid}", "Wait for it",
                     "--model_dir"):
            assert part in message, (part, message)
    # The killed holder's lock file (with its pid) remains, but the kernel
    # released its lock.
    with open(md.lock_path) as f:
        assert f.read() == str(holder.pid)
    with md.lock():
        with open(md.lock_path) as f:
            assert f.read().strip() == str(os.getpid())
        with md.lock():  # reentrant within a process
            pass
        with open(md.lock_path) as f:
            assert f.read().strip() == str(os.getpid())
    with open(md.lock_path) as f:
        assert f.read() == ""  # released
    # A missing dir is not created by lock(create=False).
    missing = ModelDir(str(tmp_path / "none"))
    with missing.lock(create=False):
        assert not missing.exists()


def test_train_gan_refuses_a_locked_model_dir(tmp_path):
    md = ModelDir(str(tmp_path / "m"))
    with _locked_by_another_process(md) as holder:
        tc = TrainConfig(model_dir=md.path, batch_size=8, epochs=1,
                         steps_per_epoch=1)
        with pytest.raises(ConfigError, match=f"pid {holder.pid}"):
            train_gan(MODEL, DATA, tc, verbose=0)
    assert sorted(os.listdir(md.path)) == [".lock"]  # nothing written


# --- model dirs of earlier versions ------------------------------------------

def test_an_earlier_versions_model_dir_loads_and_resumes(tmp_path):
    """What anogan_tf wrote before ModelDir: config.json without d_norm,
    the .keras files, checkpoints/ckpt-<epoch>.weights.h5 with a state.json
    that points at it, and a JSON-lines history."""
    md = ModelDir(str(tmp_path / "old"))
    folder = md.checkpoint_dir()
    os.makedirs(folder)
    raw = {k: v for k, v in dataclasses.asdict(MODEL).items()
           if k != "d_norm"}
    with open(md.config_path, "w") as f:
        json.dump(raw, f)
    gan = _gan(0)
    gan.build_optimizers()
    _train_steps(gan)
    gan.generator.save(md.model_path("generator"))
    gan.discriminator.save(md.model_path("discriminator"))
    gan.save_weights(os.path.join(folder, "ckpt-0002.weights.h5"))
    with open(os.path.join(folder, "state.json"), "w") as f:
        json.dump({"epoch": 2, "checkpoint": "ckpt-0002.weights.h5",
                   "logs": {}, "selected": {"epoch": 2, "metric": None,
                                            "value": None,
                                            "rule": "latest epoch"},
                   "seed_state": np.asarray(
                       gan.seed_generator.state).tolist()}, f)
    with open(md.history_path(), "w") as f:
        f.write(json.dumps({"initial_epoch": 0, "d_loss": [1.0, 2.0]}) + "\n")
    saved = _weights(gan.generator)

    # Scoring needs only config.json and the .keras files.
    config, g, _ = load_model_dir(md.path)
    assert config == MODEL
    _assert_same(_weights(g), saved)

    # Resume reads the old checkpoint, then writes the new format.
    seen = {}

    class Probe(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["start"] = _weights(self.model.generator)
            seen["seed"] = np.array(self.model.seed_generator.state)

    tc = TrainConfig(model_dir=md.path, batch_size=8, epochs=3,
                     steps_per_epoch=1, holdout_fraction=0.0)
    result = train_gan(MODEL, DATA, tc, extra_callbacks=[Probe()], verbose=0)
    assert result.initial_epoch == 2 and result.epochs_done == 3
    _assert_same(seen["start"], saved)
    np.testing.assert_array_equal(seen["seed"], gan.seed_generator.state)
    assert [r["epoch"] for r in md.read_history()] == [1, 2, 3]
    assert sorted(os.listdir(folder)) == [
        "checkpoint", "ckpt-3.data-00000-of-00001", "ckpt-3.index",
        "state.json"]

    # A damaged old checkpoint is refused with the way forward.
    broken = ModelDir(str(tmp_path / "broken"))
    os.makedirs(broken.checkpoint_dir())
    with open(os.path.join(broken.checkpoint_dir(), "state.json"), "w") as f:
        json.dump({"epoch": 1, "checkpoint": "ckpt-0001.weights.h5"}, f)
    with open(os.path.join(broken.checkpoint_dir(),
                           "ckpt-0001.weights.h5"), "w") as f:
        f.write("not hdf5")
    other = _gan(1)
    with pytest.raises(ConfigError, match="earlier anogan_tf version.*"
                                          "--model_dir"):
        broken.checkpoint("gan", other.checkpoint_items()).restore(
            legacy_model=other)
