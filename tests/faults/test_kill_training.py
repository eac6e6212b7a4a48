"""kill -9 during anogan-train at random points, resuming each time (issue 14).

One model dir goes through KILLS killed runs of `python -m anogan_tf.train
--stage=all` (the GAN, then its encoder) and one run that finishes. The kill
points are random: during start-up and restore, at a random moment of an
epoch, and right after an epoch's history record (inside the window where
the .keras files and the checkpoint are being written). One killed run is
first stopped (SIGSTOP) to check that a second run on the same dir is
refused at once while the first holds the lock.
"""

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf

from anogan_tf.config import TrainConfig
from anogan_tf.model_dir import ModelDir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
GAN_EPOCHS = 5
ENCODER_EPOCHS = 3
KILLS = 6
ARGS = ["--dataset=synthetic_oct", "--image_size=32", "--base_filters=4",
        "--latent_dim=16", "--batch_size=8", "--steps_per_epoch=2",
        "--oct_num_train=6", "--oct_height=64", "--oct_width=64",
        "--patch_stride=16", "--holdout_fraction=0", "--nojit_compile",
        "--stage=all", f"--epochs={GAN_EPOCHS}",
        f"--encoder_epochs={ENCODER_EPOCHS}"]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")


def _command(model_dir):
    return [sys.executable, "-m", "anogan_tf.train",
            f"--model_dir={model_dir}"] + ARGS


def _records(md):
    """{(stage, epoch): record} of both history files."""
    out = {}
    for stage in ("gan", "encoder"):
        for record in md.read_history(stage):
            out[(stage, record["epoch"])] = record
    return out


def _committed(md, stage):
    """The finished epochs of the newest checkpoint TF's state file names."""
    latest = tf.train.latest_checkpoint(md.checkpoint_dir(stage))
    return int(latest.rsplit("-", 1)[1]) if latest else 0


def _wait_for_records(md, proc, count, timeout=300.0):
    """Polls until the history files hold `count` records or `proc` ends.

    Returns:
      The times at which the count grew (empty: `proc` ended first).
    """
    deadline = time.monotonic() + timeout
    seen, times = len(_records(md)), []
    while proc.poll() is None and time.monotonic() < deadline:
        now = len(_records(md))
        if now > seen:
            seen, times = now, times + [time.monotonic()]
        if now >= count:
            return times
        time.sleep(0.005)
    return []


def _check_second_run_is_refused(md, holder):
    holder.send_signal(signal.SIGSTOP)  # it keeps its lock, and its epoch
    try:
        second = subprocess.run(_command(md.path), cwd=REPO, env=ENV,
                                capture_output=True, text=True, timeout=300)
    finally:
        holder.send_signal(signal.SIGKILL)
    assert second.returncode == 1, second.stderr[-2000:]
    errors = [line for line in second.stderr.splitlines()
              if line.startswith("anogan-train: error:")]
    assert len(errors) == 1, second.stderr[-2000:]
    for part in (md.path, f"pid {holder.pid}", "--model_dir"):
        assert part in errors[0], (part, errors[0])
    assert "Traceback" not in second.stderr


def _assert_checkpoints_loadable(md, stage, builder, epochs):
    folder = md.checkpoint_dir(stage)
    on_disk = sorted((name[:-len(".index")] for name in os.listdir(folder)
                      if name.endswith(".index")),
                     key=lambda name: int(name.rsplit("-", 1)[1]))
    assert on_disk == [f"ckpt-{epochs - 1}", f"ckpt-{epochs}"], on_disk
    listed = tf.train.get_checkpoint_state(folder).all_model_checkpoint_paths
    assert [os.path.basename(p) for p in listed] == on_disk  # oldest first
    for name in on_disk:  # every tensor reads back, checksums verified
        reader = tf.train.load_checkpoint(os.path.join(folder, name))
        for key in reader.get_variable_to_shape_map():
            reader.get_tensor(key)
    model = builder()
    checkpoint = md.checkpoint(stage, model.checkpoint_items())
    assert checkpoint.restore() == epochs
    # The older one restores into the same objects too.
    restored = checkpoint.checkpoint.restore(os.path.join(folder, on_disk[0]))
    restored.assert_consumed()
    assert int(checkpoint.epoch.numpy()) == epochs - 1


def test_kill_9_at_random_points_then_resume(tmp_path):
    md = ModelDir(str(tmp_path / "model"))
    rng = random.Random(14)
    snapshots = []   # the history records each killed run left
    redone = 0       # records written after the last checkpoint (redone)
    epoch_time = 0.5
    total = GAN_EPOCHS + ENCODER_EPOCHS
    log = open(tmp_path / "runs.log", "w")
    for cycle in range(KILLS):
        start_count = len(_records(md))
        proc = subprocess.Popen(_command(md.path), cwd=REPO, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=log)
        ahead = rng.randint(1, 2)
        if cycle == KILLS - 1:  # the last kill lands in the encoder stage
            ahead = max(ahead, GAN_EPOCHS + 1 - start_count)
        # Leave at least one epoch for the final run.
        ahead = min(ahead, total - start_count - 1)
        kind = ("startup" if cycle == 2 or ahead < 1 else
                "after_record" if cycle % 3 == 1 else "mid_epoch")
        if kind == "startup":
            time.sleep(rng.uniform(0.5, 4.0))
        else:
            times = _wait_for_records(md, proc, start_count + ahead)
            assert times, (
                f"cycle {cycle}: the run ended (rc {proc.poll()}) before "
                f"record {start_count + ahead}; see {tmp_path / 'runs.log'}")
            if len(times) > 1:
                epoch_time = min(2.0, times[-1] - times[-2])
            if kind == "mid_epoch":
                time.sleep(rng.uniform(0.0, epoch_time))
        if cycle == 0:
            _check_second_run_is_refused(md, proc)
        else:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, (cycle, proc.returncode)
        records = _records(md)
        snapshots.append(records)
        redone += sum(1 for stage, epoch in records
                      if epoch > _committed(md, stage))

    final = subprocess.run(_command(md.path), cwd=REPO, env=ENV,
                           capture_output=True, text=True, timeout=600)
    log.close()
    assert final.returncode == 0, final.stderr[-3000:]

    # Every epoch exactly once, in order.
    assert [r["epoch"] for r in md.read_history("gan")] == list(
        range(1, GAN_EPOCHS + 1))
    assert [r["epoch"] for r in md.read_history("encoder")] == list(
        range(1, ENCODER_EPOCHS + 1))
    # Resume continues exactly: a record a killed run wrote is what the
    # finished run has for that epoch, also for epochs redone after a kill
    # between an epoch's record and its checkpoint.
    records = _records(md)
    for snapshot in snapshots:
        for key, record in snapshot.items():
            assert record == records[key], (key, record, records[key])
    assert redone >= 1, "no kill fell between a record and its checkpoint"
    assert any(stage == "encoder" for stage, _ in snapshots[-1])

    # Every checkpoint on disk is complete and restores; no temp file is
    # left; the models load; the lock is free.
    from anogan_tf.models import build_encoder
    from anogan_tf.training import EncoderTrainer
    from anogan_tf.training.run import _build_gan
    config, g, d = md.load_gan()
    train_config = TrainConfig(model_dir=md.path, jit_compile=False)
    _assert_checkpoints_loadable(
        md, "gan", lambda: _build_gan(config, train_config), GAN_EPOCHS)

    def encoder_trainer():
        import keras
        trainer = EncoderTrainer(build_encoder(config), g, d)
        trainer.compile(keras.optimizers.Adam(1e-4), jit_compile=False)
        return trainer

    _assert_checkpoints_loadable(md, "encoder", encoder_trainer,
                                 ENCODER_EPOCHS)
    assert md.load_encoder() is not None
    leftovers = [os.path.join(root, name)
                 for root, dirs, files in os.walk(md.path)
                 for name in files + dirs
                 if ".tmp" in name or name.endswith("_temp")]
    assert leftovers == []
    assert sorted(os.listdir(md.samples_dir)) == [
        f"epoch_{e:04d}.png" for e in range(1, GAN_EPOCHS + 1)]
    with md.lock():
        pass
    np.testing.assert_array_equal(  # generator.keras is the last epoch's
        np.array(g.variables[0]),
        np.array(tf.train.load_checkpoint(os.path.join(
            md.checkpoint_dir(), f"ckpt-{GAN_EPOCHS}")).get_tensor(
                "generator/0/.ATTRIBUTES/VARIABLE_VALUE")))
