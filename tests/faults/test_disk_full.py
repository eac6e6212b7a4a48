"""A full disk during anogan-export and a training checkpoint (issue 14).

The test mounts a small tmpfs (skipped, with the reason, where mounting is
not allowed), exports version 1 and checkpoints epoch 1 into it, fills the
rest, and then:
- runs the real anogan-export binary into it: exit code 1, one
  `anogan-export: error:` line naming the export dir and "No space left on
  device", no traceback, no temp folder left, version 1 still loads and
  scores;
- checkpoints epoch 2 of a training state there (`StageCheckpoint.save`,
  what anogan-train calls after each epoch, and whose ConfigError the
  binary reports as its one error line): a ConfigError naming the folder,
  and epoch 1 still restores;
- rewrites a scores.csv and a map there (`reports.write_csv`/`write_npy`,
  anogan-score's and anogan-evaluate's writers): a ConfigError naming the
  folder and --output_dir, the earlier files unchanged, no temp file.
"""

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import serving_server  # noqa: E402

from anogan_tf.config import ConfigError, MappingConfig  # noqa: E402
from anogan_tf.export import exporter  # noqa: E402
from anogan_tf.model_dir import ModelDir  # noqa: E402
from anogan_tf.scoring import reports  # noqa: E402

SIZE = "3m"      # a version of the tiny model takes about 1.6 MB
LEFT = 64 << 10  # bytes left free after filling


def _mount_tmpfs(path):
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root and the mount command")
    os.makedirs(path)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE}",
                           "tmpfs", path], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs CAP_SYS_ADMIN): "
                    f"{done.stderr.strip()}")


def _fill(path, left=LEFT):
    """Writes a file that leaves about `left` bytes free on path's fs."""
    stat = os.statvfs(path)
    free = stat.f_bavail * stat.f_frsize
    with open(os.path.join(path, "filler"), "wb") as f:
        f.write(b"\0" * max(0, free - left))
    stat = os.statvfs(path)
    assert stat.f_bavail * stat.f_frsize <= 2 * left


def _checkpoint(md, value):
    # 256 KiB of weights: more than LEFT, so epoch 2's cannot fit.
    variable = tf.Variable(np.full([1 << 16], value, np.float32))
    return variable, md.checkpoint("gan", {"weights": variable})


def test_full_disk_fails_clearly_and_keeps_the_previous_files(tmp_path):
    model_dir = str(tmp_path / "model")
    serving_server.make_tiny_model_dir(model_dir, seed=0)
    small = str(tmp_path / "small")
    _mount_tmpfs(small)
    try:
        export_dir = os.path.join(small, "models")
        first = exporter.export_model(model_dir, export_dir,
                                      MappingConfig(steps=2))
        md = ModelDir(os.path.join(small, "train"))
        os.makedirs(md.path)
        _, checkpoint = _checkpoint(md, 1.0)
        checkpoint.save(1, {"epoch": 1})
        out = os.path.join(small, "out")
        columns = ("id", "anomaly_score")
        csv_path = reports.write_csv(os.path.join(out, "scores.csv"),
                                     [{"id": "a", "anomaly_score": 1.5}],
                                     columns)
        npy_path = reports.write_npy(os.path.join(out, "maps", "a.npy"),
                                     np.ones([4, 4], np.float32))
        with open(csv_path) as f:
            csv_before = f.read()
        _fill(small)

        done = subprocess.run(
            [sys.executable, "-m", "anogan_tf.export",
             f"--model_dir={model_dir}", f"--export_dir={export_dir}",
             "--mapping_steps=2"],
            capture_output=True, text=True, timeout=300,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
        assert done.returncode == 1, done.stderr[-3000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        errors = [line for line in done.stderr.splitlines()
                  if line.startswith("anogan-export: error:")]
        assert len(errors) == 1, done.stderr[-3000:]
        for part in ("No space left on device", export_dir, "--export_dir",
                     "version 2"):
            assert part in errors[0], (part, errors[0])
        assert done.stdout == ""
        # The failed export cleaned up; version 1 is whole and serves.
        assert sorted(os.listdir(export_dir)) == ["1"]
        loaded = tf.saved_model.load(first)
        scores = loaded.signatures["serving_uint8"](
            images=tf.zeros([1, 32, 32, 1], tf.uint8))
        assert np.all(np.isfinite(scores["anomaly_score"].numpy()))

        # A training checkpoint on the full disk: one clear ConfigError,
        # and the previous checkpoint still restores.
        _, checkpoint = _checkpoint(md, 2.0)
        with pytest.raises(ConfigError) as raised:
            checkpoint.save(2, {"epoch": 2})
        message = str(raised.value)
        for part in ("No space left on device", md.checkpoint_dir("gan"),
                     "checkpoint 2", "--model_dir"):
            assert part in message, (part, message)
        restored, checkpoint = _checkpoint(md, 0.0)
        assert checkpoint.restore() == 1
        np.testing.assert_array_equal(restored.numpy(), np.ones([1 << 16]))

        # anogan-score's writers: the same error, the old files kept.
        rows = [{"id": f"img{i:06d}", "anomaly_score": float(i)}
                for i in range(2 * LEFT // 16)]
        with pytest.raises(ConfigError) as raised:
            reports.write_csv(csv_path, rows, columns)
        for part in ("No space left on device", out, "scores.csv",
                     "--output_dir"):
            assert part in str(raised.value), (part, str(raised.value))
        with pytest.raises(ConfigError, match="No space left on device"):
            reports.write_npy(npy_path, np.zeros([256, 256], np.float32))
        with open(csv_path) as f:
            assert f.read() == csv_before
        np.testing.assert_array_equal(np.load(npy_path, allow_pickle=False),
                                      np.ones([4, 4]))
        assert [name for _, _, files in os.walk(out) for name in files
                if name.endswith(".tmp")] == []
    finally:
        subprocess.run(["umount", "-l", small], check=False)
