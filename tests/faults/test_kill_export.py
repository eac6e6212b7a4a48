"""kill -9 during anogan-export (issue 14, item 4 and the kill tests).

An export stages the SavedModel in a hidden `.tmp-anogan-export-*` folder
and renames it to `<export_dir>/<N>` only when complete, so a server polling
the folder never sees a partial version; the next export removes the temp
folders that killed exports left behind. This test kills the real binary
(`python -m anogan_tf.export`) at random points while a watcher thread
checks every numbered folder the moment it appears.
"""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import serving_server  # noqa: E402

from anogan_tf.config import DataConfig, EvalConfig, MappingConfig  # noqa: E402
from anogan_tf.export import exporter  # noqa: E402
from anogan_tf.scoring import detector as detector_lib  # noqa: E402

KILLS = 3
_REQUIRED = ("saved_model.pb", os.path.join("variables", "variables.index"),
             exporter.WARMUP_FILE, exporter.EXPORT_INFO_FILE)


def _complete(version_dir: str) -> bool:
    return all(os.path.exists(os.path.join(version_dir, name))
               for name in _REQUIRED)


class _Watcher(threading.Thread):
    """Polls `export_dir`; records any numbered folder seen incomplete."""

    def __init__(self, export_dir: str):
        super().__init__(daemon=True)
        self.export_dir = export_dir
        self.partial = []
        self.seen = set()
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            for version in exporter.existing_versions(self.export_dir):
                path = os.path.join(self.export_dir, str(version))
                if version not in self.seen:
                    self.seen.add(version)
                    if not _complete(path):
                        self.partial.append(path)
            time.sleep(0.002)


def _temp_dirs(export_dir):
    if not os.path.isdir(export_dir):
        return []
    return [n for n in os.listdir(export_dir)
            if n.startswith(exporter.TEMP_PREFIX)]


def test_kill_9_during_export_never_shows_a_partial_version(tmp_path):
    model_dir = str(tmp_path / "model")
    serving_server.make_tiny_model_dir(model_dir, seed=0)
    # The detector the binary must take its settings from (no flags given).
    detector_lib.save_detector(detector_lib.Detector.from_configs(
        DataConfig(dataset="folder", image_size=32),
        MappingConfig(steps=2, restarts=1, seed=7),
        EvalConfig(output_dir=""),
        threshold=detector_lib.Threshold(value=123.5, rule="test")),
        model_dir)
    export_dir = str(tmp_path / "models")
    command = [sys.executable, "-m", "anogan_tf.export",
               f"--model_dir={model_dir}", f"--export_dir={export_dir}"]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    seed = int(os.environ.get("KILL_SEED", time.time()))
    rng = random.Random(seed)
    watcher = _Watcher(export_dir)
    watcher.start()
    killed_in_staging = 0
    try:
        for _ in range(KILLS):
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=env)
            # Kill while it writes: once its temp folder exists, after a
            # random delay (the write itself takes a few seconds).
            known = set(_temp_dirs(export_dir))
            deadline = time.time() + 300
            while (proc.poll() is None and time.time() < deadline and
                   not set(_temp_dirs(export_dir)) - known):
                time.sleep(0.005)
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed_in_staging += 1
            proc.wait(timeout=60)
        left = _temp_dirs(export_dir)
        assert killed_in_staging, f"no kill landed while staging (seed {seed})"
        assert left, f"the killed exports left no temp folder (seed {seed})"
        done = subprocess.run(command + ["--verbosity=0"], capture_output=True,
                              text=True, env=env, timeout=300)
    finally:
        time.sleep(0.05)
        watcher.stop.set()
        watcher.join()
    assert done.returncode == 0, done.stderr
    assert watcher.partial == [], f"partial versions seen (seed {seed})"
    # The next export cleaned up after the killed ones and said so.
    assert _temp_dirs(export_dir) == []
    assert "stale temp folder" in done.stderr
    for name in left:
        assert name in done.stderr
    versions = exporter.existing_versions(export_dir)
    assert versions and all(_complete(os.path.join(export_dir, str(v)))
                            for v in versions)
    final = done.stdout.strip().splitlines()[-1]
    assert final == os.path.join(export_dir, str(versions[-1]))
    # The binary exported the detector's settings, threshold included.
    with open(os.path.join(final, exporter.EXPORT_INFO_FILE)) as f:
        info = json.load(f)
    assert info["mapping"]["steps"] == 2 and info["mapping"]["seed"] == 7
    assert info["score_images"]["threshold"] == 123.5
