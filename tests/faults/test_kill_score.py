"""kill -9 while anogan-score writes its results (issue 14).

anogan-score (`scoring.run_score`) writes scores.csv and image_scores.csv
(`outputs.write_score_files`), then maps/<id>.npy and maps/<id>.png
(`outputs.write_maps`), each file through `reports.atomic_write`: into
`<name>.tmp`, renamed to `<name>` once complete. This test runs the job once
in-process on a tiny model dir, recording the arguments of those two write
calls, then repeats exactly those calls in forked children (cheap: the child
already holds the scored images) and kills each with SIGKILL at a random
point of the write, KILLS times. After every kill each file under a final
name must be complete: CSVs byte-equal to the finished run's (a header and
rows of one width), .npy files load (no pickle) and equal the finished
run's, PNGs decode. Then the real binary (`python -m anogan_tf.score`)
reruns into a killed output dir and must finish, leaving the full set and
no temp file.
"""

import csv
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import serving_server  # noqa: E402

from anogan_tf.config import DataConfig, EvalConfig, MappingConfig  # noqa: E402
from anogan_tf.scoring import outputs, run_score  # noqa: E402

KILLS = 6
NUM_IMAGES = 6
FLAGS = ["--image_size=32", "--mapping_steps=2", "--nomapping_jit_compile",
         "--restarts=1"]


def _write_images(folder):
    os.makedirs(folder)
    rng = np.random.default_rng(14)
    for i in range(NUM_IMAGES):
        Image.fromarray(rng.integers(0, 256, (32, 32), dtype=np.uint8)).save(
            os.path.join(folder, f"img{i:02d}.png"))


def _record_writes(monkeypatch):
    """Wraps the two writers run_score calls.

    Returns:
      A list that collects (writer, arguments after output_dir, keyword
      arguments) of each call run_score makes.
    """
    calls = []
    for name in ("write_score_files", "write_maps"):
        real = getattr(outputs, name)

        def wrapper(*args, _real=real, **kwargs):
            calls.append((_real, args[1:], kwargs))
            return _real(*args, **kwargs)

        monkeypatch.setattr(outputs, name, wrapper)
    return calls


def _final_files(out):
    """Every file under its final name (no .tmp), relative to `out`."""
    found = []
    for root, _, files in os.walk(out):
        for name in files:
            if not name.endswith(".tmp"):
                found.append(os.path.relpath(os.path.join(root, name), out))
    return sorted(found)


def _check_complete(out, reference):
    """Asserts every final-name file in `out` is whole; returns their names."""
    names = _final_files(out)
    for rel in names:
        path = os.path.join(out, rel)
        assert rel in reference, f"unexpected file {path}"
        if rel.endswith(".csv"):
            with open(path, newline="") as f:
                rows = list(csv.reader(f))
            assert rows and len(rows) == len(reference[rel]), (path, rows)
            assert {len(r) for r in rows} == {len(rows[0])}, path
            assert rows == reference[rel], path
        elif rel.endswith(".npy"):
            np.testing.assert_array_equal(
                np.load(path, allow_pickle=False), reference[rel])
        else:
            assert rel.endswith(".png"), path
            with Image.open(path) as image:
                image.load()  # raises on a truncated PNG
                assert image.size == reference[rel], path
    return names


def _read_reference(out):
    reference = {}
    for rel in _final_files(out):
        path = os.path.join(out, rel)
        if rel.endswith(".csv"):
            with open(path, newline="") as f:
                reference[rel] = list(csv.reader(f))
        elif rel.endswith(".npy"):
            reference[rel] = np.load(path, allow_pickle=False)
        else:
            with Image.open(path) as image:
                reference[rel] = image.size
    return reference


def _fork_writes(calls, out):
    """Runs the recorded writes into `out` in a child; returns its pid."""
    with warnings.catch_warnings():  # "multi-threaded, fork() may deadlock"
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # the child: numpy, csv and matplotlib only, no TF op
        code = 1
        try:
            for writer, args, kwargs in calls:
                writer(out, *args, **kwargs)
            code = 0
        finally:
            os._exit(code)
    return pid


def test_kill_9_while_scoring_writes_leaves_no_partial_file(tmp_path,
                                                            monkeypatch):
    model_dir = str(tmp_path / "model")
    serving_server.make_tiny_model_dir(model_dir, seed=0)
    images = str(tmp_path / "images")
    _write_images(images)
    calls = _record_writes(monkeypatch)
    reference_dir = str(tmp_path / "reference")
    summary = run_score(
        model_dir, DataConfig(dataset="folder", image_size=32),
        MappingConfig(steps=2, restarts=1, jit_compile=False),
        EvalConfig(output_dir=reference_dir), inputs=[images])
    assert summary["maps_written"] == NUM_IMAGES
    assert [c[0].__name__ for c in calls] == ["write_score_files",
                                              "write_maps"]
    reference = _read_reference(reference_dir)
    assert len(reference) == 2 + 2 * NUM_IMAGES, sorted(reference)

    # One unkilled child: the write's duration, and the child's output is
    # the in-process run's.
    start = time.monotonic()
    pid = _fork_writes(calls, str(tmp_path / "child"))
    assert os.waitpid(pid, 0)[1] == 0
    duration = time.monotonic() - start
    assert _check_complete(str(tmp_path / "child"), reference) == sorted(
        reference)

    seed = int(os.environ.get("KILL_SEED", time.time()))
    rng = random.Random(seed)
    partial_runs = []
    for k in range(KILLS):
        out = str(tmp_path / f"killed{k}")
        # Spread over the write: kill k lands in the k-th slice of it.
        delay = duration * (k + rng.random()) / KILLS
        pid = _fork_writes(calls, out)
        time.sleep(delay)
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        names = _check_complete(out, reference)
        context = f"kill {k} after {delay:.3f}s of {duration:.3f}s, seed {seed}"
        assert status in (0, signal.SIGKILL), context
        if os.WIFSIGNALED(status) and names != sorted(reference):
            partial_runs.append(out)
    # The kills did land while files were being written.
    assert len(partial_runs) >= KILLS // 2, (partial_runs, seed)

    # The real binary reruns into a killed output dir and finishes.
    out = partial_runs[-1]
    done = subprocess.run(
        [sys.executable, "-m", "anogan_tf.score", f"--model_dir={model_dir}",
         f"--inputs={images}", f"--output_dir={out}"] + FLAGS,
        capture_output=True, text=True, timeout=300,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Scored {NUM_IMAGES} images" in done.stdout
    leftovers = [name for _, _, files in os.walk(out) for name in files
                 if name.endswith(".tmp")]
    assert leftovers == []
    rerun = _read_reference(out)
    assert sorted(rerun) == sorted(reference)
    for rel in ("scores.csv", "image_scores.csv"):
        assert rerun[rel][0] == reference[rel][0]
        assert [r[0] for r in rerun[rel]] == [r[0] for r in reference[rel]]
    for rel, value in rerun.items():
        if rel.endswith(".npy"):
            assert value.shape == reference[rel].shape, rel
            assert np.all(np.isfinite(value)), rel
