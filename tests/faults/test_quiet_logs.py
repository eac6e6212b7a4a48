"""anogan_tf.quiet: TensorFlow's start-up noise hidden by default, shown with
--verbosity=1, and nothing else hidden (issue 14 item 6)."""

import os
import subprocess
import sys
import textwrap

import pytest

from anogan_tf import quiet

# A stand-in for a binary: quiet_logs() first, then absl's app.run; main()
# does what makes each noisy line appear -- imports TensorFlow (the C++
# start-up lines), runs an op (cuInit), fit() on a Dataset with the default
# shuffle=True (Keras' warning) and saves a signature that captures a
# variable ("Function `score` contains input name(s)" and the export's
# INFO lines).
_SCRIPT = textwrap.dedent("""
    import sys
    from absl import app, logging
    from anogan_tf import quiet
    quiet.quiet_logs()

    def main(argv):
        import numpy as np
        import tensorflow as tf
        import keras
        logging.info("own info line")
        tf.constant(1.0) + 1.0
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        model.compile("sgd", "mse", jit_compile=False)
        data = tf.data.Dataset.from_tensor_slices(
            (np.zeros((4, 2), np.float32), np.zeros((4, 1), np.float32)))
        model.fit(data.batch(2), epochs=1, verbose=0)
        v = tf.Variable(tf.ones((3,)))

        @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32)])
        def score(x):
            return {"y": x * v}

        module = tf.Module()
        module.v = v
        tf.saved_model.save(module, sys.argv[1],
                            signatures={"serving_default": score})
        logging.warning("own warning line")
        sys.stderr.write("plain stderr line\\n")

    app.run(main)
""")

# Every noisy line of issue 14 item 6, as it appears without quiet_logs().
_NOISE = {
    "absl pre-init": "All log messages before absl::InitializeLog()",
    "oneDNN": "oneDNN custom operations are on",
    "shuffle": "`shuffle=True` was passed, but will be ignored",
    "input names": "contains input name(s)",
    "sharding": "Sharding callback duration",
    "assets": "Assets written to",
    "fingerprint": "Writing fingerprint to",
}
# Lines that exist only without a CUDA driver (this CI machine).
_NO_GPU_NOISE = {
    "cudart": "Could not find cuda drivers",
    "cuInit": "failed call to cuInit",
}
_OWN = ("own info line", "own warning line", "plain stderr line")


def _run(tmp_path, *flags):
    script = tmp_path / "binary.py"
    script.write_text(_SCRIPT)
    env = {k: v for k, v in os.environ.items()
           if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL")}
    # Turns oneDNN on (this CPU has no AVX-512, so it would be off), only
    # to show that its line is hidden too.
    env["TF_ENABLE_ONEDNN_OPTS"] = "1"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / f"sm{len(flags)}"),
         *flags], capture_output=True, text=True, env=env, timeout=600,
        cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stderr


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quiet")
    return _run(tmp), _run(tmp, "--verbosity=1")


def test_default_run_hides_every_noisy_line_and_keeps_its_own(both_runs):
    quiet_err, _ = both_runs
    for name, text in {**_NOISE, **_NO_GPU_NOISE}.items():
        assert text not in quiet_err, (name, quiet_err)
    assert not any(quiet.is_noise(l) for l in quiet_err.splitlines())
    for text in _OWN:
        assert text in quiet_err, quiet_err
    assert "Traceback" not in quiet_err


def test_verbosity_1_shows_them_all(both_runs):
    _, verbose_err = both_runs
    for name, text in _NOISE.items():
        assert text in verbose_err, (name, verbose_err[-3000:])
    if not os.path.exists("/dev/nvidiactl"):
        for name, text in _NO_GPU_NOISE.items():
            assert text in verbose_err, (name, verbose_err[-3000:])
    for text in _OWN:
        assert text in verbose_err


def test_capture_passes_other_lines_on_and_drops_only_noise(capfd):
    noise = ("I0000 00:00:1796206391.776743    5649 cudart_stub.cc:31] Could "
             "not find cuda drivers on your machine, GPU will not be used.")
    with quiet._CaptureStderr():
        os.write(2, (noise + "\nkeep: a real C++ error\n").encode())
        sys.stderr.write("keep: python\n")
    # (pytest's sys.stderr is not fd 2, so the two may come in either order)
    err = capfd.readouterr().err
    assert sorted(err.splitlines()) == ["keep: a real C++ error",
                                        "keep: python"]


def test_capture_passes_everything_on_when_the_import_fails(capfd):
    line = "WARNING: All log messages before absl::InitializeLog() is called " \
           "are written to STDERR"
    assert quiet.is_noise(line)
    with pytest.raises(ImportError):
        with quiet._CaptureStderr():
            os.write(2, (line + "\n").encode())
            raise ImportError("broken install")
    assert capfd.readouterr().err == line + "\n"


@pytest.mark.parametrize("argv, verbose", [
    ([], False),
    (["--verbosity=1"], True),
    (["--verbosity", "2"], True),
    (["-v", "1"], True),
    (["-v=1"], True),
    (["--v=1"], True),
    (["--verbosity=0"], False),
    (["--verbosity=-1"], False),
    (["--verbosity=debug"], True),
    (["--verbosity=1", "--verbosity=0"], False),   # the last one wins
    (["--model_dir=-v"], False),
])
def test_verbosity_is_read_from_the_command_line(argv, verbose):
    assert quiet.verbose_requested(["prog"] + argv) is verbose


def test_verbosity_is_read_from_nested_flagfiles(tmp_path):
    inner = tmp_path / "inner.cfg"
    inner.write_text("# comment\n--verbosity=1\n")
    outer = tmp_path / "outer.cfg"
    outer.write_text(f"--epochs=1\n--flagfile={inner}\n")
    assert quiet.verbose_requested(["prog", f"--flagfile={outer}"])
    # The command line after the flagfile overrides it.
    assert not quiet.verbose_requested(
        ["prog", f"--flagfile={outer}", "--verbosity=0"])
    assert not quiet.verbose_requested(["prog", "--flagfile=/no/such.cfg"])
