"""Bad input and misuse: one clear error, nothing on disk changed (issue 14
deliverable 2, the bad-input half; the readers' fuzzing is
test_fuzz_readers.py).

Every kind below either works (16-bit and palette PNGs, --patch_stride=0)
or raises the error type the binaries report as one line: DataError for
data, ConfigError for settings and model dirs, absl's flag error for values
a flag's parser refuses. Each asserts that the message names the file or
flag and says the fix, and that the input and output folders are byte for
byte as they were. The library is called in process (the binaries' `main`
after absl's flag parsing); two subprocess runs show what a user sees: exit
code 1, one error line, no traceback.
"""

import hashlib
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from PIL import Image

from anogan_tf import common_flags as cf
from anogan_tf import score, train
from anogan_tf.config import DataConfig
from anogan_tf.data import DataError, decode, load_images, write_tfrecord
from anogan_tf.scoring.inputs import load_inputs

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
import serving_server  # noqa: E402
from test_fuzz_readers import _no_hang, _png_claiming  # noqa: E402

FLAGS = flags.FLAGS
SIDE = 32  # the tiny model's image_size


@pytest.fixture(autouse=True)
def no_hang():
    """A case still running after 120 s fails as a hang (SIGALRM)."""
    with _no_hang(120):
        yield


def _snapshot(*roots):
    """{path: sha256} of every file (and every folder, as None) below roots."""
    state = {}
    for root in roots:
        if not os.path.exists(root):
            state[root] = "absent"
            continue
        if os.path.isfile(root):
            state[root] = hashlib.sha256(open(root, "rb").read()).hexdigest()
            continue
        for folder, dirs, files in os.walk(root):
            state[folder] = None
            for name in files:
                path = os.path.join(folder, name)
                with open(path, "rb") as f:
                    state[path] = hashlib.sha256(f.read()).hexdigest()
    return state


def _encode(array, mode=None):
    buffer = io.BytesIO()
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(buffer, "PNG")
    return buffer.getvalue()


def _gray(h=SIDE, w=SIDE):
    return np.random.default_rng(h * w).integers(0, 256, (h, w), np.uint8)


GOOD_PNG = _encode(_gray())


def _folder(tmp, files):
    root = tmp / "in"
    root.mkdir()
    for name, data in files.items():
        (root / name).write_bytes(data)
    return root


def _npy(array, pickled=False):
    def make(tmp):
        path = tmp / "in.npy"
        np.save(path, array, allow_pickle=pickled)
        return path
    return make


def _npz(**arrays):
    def make(tmp):
        path = tmp / "in.npz"
        np.savez(path, **arrays)
        return path
    return make


def _with_value(value, dtype=np.float32):
    array = np.full((2, SIDE, SIDE), 0.5, dtype)
    array[1, 3, 4] = value
    return array


def _tfrecord_without_image(tmp):
    path = tmp / "in.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        writer.write(tf.train.Example(features=tf.train.Features(feature={
            "picture": tf.train.Feature(bytes_list=tf.train.BytesList(
                value=[GOOD_PNG]))})).SerializeToString())
    return path


def _truncated_tfrecord(tmp):
    path = write_tfrecord(str(tmp / "in.tfrecord"),
                          np.stack([_gray(), _gray()]))
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:-30])
    return path


def _file(name, data):
    def make(tmp):
        path = tmp / name
        path.write_bytes(data)
        return path
    return make


def _files(files):
    return lambda tmp: _folder(tmp, files)


_IMAGES = np.zeros((2, SIDE, SIDE), np.uint8)

# kind: (dataset, make(tmp) -> path, what the message must also say)
DATA_CASES = {
    "missing file": ("npy", lambda tmp: tmp / "none.npy", "Check --data_path"),
    "missing folder": ("folder", lambda tmp: tmp / "none",
                       "Check --data_path"),
    "empty folder": ("folder", _files({}), "Point --data_path at a folder"),
    "only non-images": ("folder", _files({"a.txt": b"x", "b.csv": b"1,2"}),
                        "Point --data_path at a folder"),
    "corrupt png": ("folder", _files({"a.png": GOOD_PNG[:30] + b"\0" * 40 +
                                      GOOD_PNG[70:]}), "--skip_bad_files"),
    "truncated png": ("folder", _files({"a.png": GOOD_PNG[:200]}),
                      "--skip_bad_files"),
    "zero-byte file": ("folder", _files({"a.png": b""}), "--skip_bad_files"),
    "text renamed .png": ("folder", _files({"a.png": b"hello\n"}),
                          "--skip_bad_files"),
    "mixed sizes without --resize": (
        "folder", _files({"a.png": GOOD_PNG, "b.png": _encode(_gray(40, 48))}),
        "--resize=H,W"),
    "smaller than the patch": ("folder",
                               _files({"a.png": _encode(_gray(8, 8))}),
                               "--patch_size <= 8"),
    "decompression bomb": ("folder", _files({"bomb.png": _png_claiming(
        9000, 9000)}), f"{decode.MAX_IMAGE_PIXELS:,}"),
    "file as folder dataset": ("folder", _file("a.png", GOOD_PNG),
                               "--dataset=npy"),
    "folder as npy dataset": ("npy", _files({"a.png": GOOD_PNG}),
                              "--dataset=folder"),
    "wrong channels": ("npy", _npy(np.zeros((2, SIDE, SIDE, 2), np.uint8)),
                       "Re-save"),
    "pickled .npy": ("npy", _npy(np.array([{"a": 1}], dtype=object), True),
                     "pickled (object) data, which was refused"),
    "text renamed .npy": ("npy", _file("in.npy", b"1,2,3\n"),
                          "Save arrays with np.save"),
    "dtype str": ("npy", _npy(np.full((2, 4, 4), "a")), "Convert it"),
    "dtype complex": ("npy", _npy(np.zeros((2, 4, 4), np.complex64)),
                      "Convert it"),
    "NaN": ("npy", _npy(_with_value(np.nan)), "Repair or drop"),
    "inf": ("npy", _npy(_with_value(np.inf, np.float64)), "Repair or drop"),
    "float out of [0, 1]": ("npy", _npy(_with_value(3.0)), "Rescale"),
    "rank 2": ("npy", _npy(np.zeros((SIDE, SIDE), np.uint8)), "`arr[None]`"),
    "rank 5": ("npy", _npy(np.zeros((1, 2, SIDE, SIDE, 1), np.uint8)),
               "Re-save"),
    "no images in the array": ("npy",
                               _npy(np.zeros((0, SIDE, SIDE), np.uint8)),
                               "Save at least one image"),
    ".npz without 'images'": ("npy", _npz(pictures=_IMAGES),
                              "np.savez(path, images="),
    ".npz with unknown keys": ("npy", _npz(images=_IMAGES, extra=_IMAGES),
                               "Rename or drop them"),
    "labels of the wrong length": ("npy", _npz(images=_IMAGES,
                                               labels=np.array([0, 1, 0])),
                                   "one 0/1 label per image"),
    "labels not 0/1": ("npy", _npz(images=_IMAGES, labels=np.array([0, 2])),
                       "Map your classes to 0/1"),
    "masks of a wrong shape": ("npy", _npz(images=_IMAGES,
                                           masks=np.zeros((2, 16, 16))),
                               "Save masks of the images' height and width"),
    "not a TFRecord": ("tfrecord", _file("in.tfrecord", b"not a record" * 3),
                       "Re-write the file"),
    "TFRecord without 'image'": ("tfrecord", _tfrecord_without_image,
                                 "write them with write_tfrecord"),
    "truncated TFRecord": ("tfrecord", _truncated_tfrecord,
                           "Re-write the file"),
}


_DATASET_MISMATCHES = ("file as folder dataset", "folder as npy dataset")


@pytest.mark.parametrize("kind", sorted(DATA_CASES))
def test_bad_data_is_one_data_error_naming_the_file_and_the_fix(kind,
                                                                tmp_path):
    dataset, make, fix = DATA_CASES[kind]
    path = str(make(tmp_path))
    before = _snapshot(str(tmp_path))
    config = DataConfig(dataset=dataset, data_path=path, image_size=16)
    with pytest.raises(DataError) as e:
        load_images(config, "test")
    assert path in str(e.value) and fix in str(e.value)
    if kind in _DATASET_MISMATCHES:  # --inputs picks the reader by kind
        assert _snapshot(str(tmp_path)) == before
        return
    # The same path through anogan-score's --inputs names that flag.
    with pytest.raises(DataError) as e:
        load_inputs([path], config)
    message = str(e.value)
    assert path in message
    assert fix.replace("--data_path", "--inputs") in message or (
        "does not exist" in message and "--inputs" in message)
    assert "--data_path" not in message
    assert _snapshot(str(tmp_path)) == before


@pytest.mark.parametrize("mode, expected", [
    ("I;16", 40000 / 65535), ("P", None)])
def test_16_bit_and_palette_pngs_load(mode, expected, tmp_path):
    pixels = (np.full((SIDE, SIDE), 40000, np.uint16) if mode == "I;16"
              else _gray())
    root = _folder(tmp_path, {"a.png": _encode(pixels, None if mode == "I;16"
                                               else mode)})
    before = _snapshot(str(root))
    images = load_images(DataConfig(dataset="folder", data_path=str(root),
                                    image_size=16), "test").images
    assert images.shape == (1, SIDE, SIDE, 1) and images.dtype == np.float32
    want = (np.full((SIDE, SIDE), expected) if expected is not None
            else pixels / 255.0)
    np.testing.assert_allclose(images[0, ..., 0], want * 2 - 1, atol=1e-5)
    assert _snapshot(str(root)) == before


# kind: (--inputs, what the message must say)
INPUT_CASES = {
    "an empty path": (lambda root: ["", str(root / "a.png")],
                      "--inputs holds an empty path"),
    "a file of no image kind": (lambda root: [str(root / "notes.txt")],
                                "Pass only such files or folders to --inputs"),
    "a missing .npy": (lambda root: [str(root / "none.npy")],
                       "does not exist. Pass existing image files"),
    "a corrupt image file": (lambda root: [str(root / "bad.png")],
                             "--skip_bad_files"),
    "image files of mixed sizes": (lambda root: [str(root / "a.png"),
                                                 str(root / "big.png")],
                                   "--resize=H,W"),
}


@pytest.mark.parametrize("kind", sorted(INPUT_CASES))
def test_bad_inputs_flag_values_name_the_path_and_the_fix(kind, tmp_path):
    root = _folder(tmp_path, {"a.png": GOOD_PNG, "big.png": _encode(_gray(48)),
                              "bad.png": b"\x89PNG junk", "notes.txt": b"x"})
    inputs, fix = INPUT_CASES[kind]
    inputs = inputs(root)
    before = _snapshot(str(tmp_path))
    with pytest.raises(DataError) as e:
        load_inputs(inputs, DataConfig(image_size=16))
    assert fix in str(e.value)
    assert any(p and p in str(e.value) for p in inputs) or not all(inputs)
    assert _snapshot(str(tmp_path)) == before


# --- the binaries' flags, in process ----------------------------------------

@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """A tiny model dir, and copies with generator.keras missing, config.json
    and detector.json corrupt (no training)."""
    base = tmp_path_factory.mktemp("models")
    good = str(base / "good")
    serving_server.make_tiny_model_dir(good)
    dirs = {"good": good}
    for name, damage in (("no generator", ("generator.keras", None)),
                         ("corrupt config", ("config.json", b"{not json")),
                         ("corrupt detector", ("detector.json", b'{"a": '))):
        path = str(base / name.replace(" ", "_"))
        shutil.copytree(good, path)
        target = os.path.join(path, damage[0])
        if damage[1] is None:
            os.remove(target)
        else:
            with open(target, "wb") as f:
                f.write(damage[1])
        dirs[name] = path
    images = base / "images"
    images.mkdir()
    (images / "a.png").write_bytes(GOOD_PNG)
    dirs["images"] = str(images)
    return dirs


def _main(module, args):
    """module.main after absl parses `args` (as app.run does); its code."""
    try:
        FLAGS(["prog", *args])
        return module.main(["prog"])
    finally:
        FLAGS.unparse_flags()


# kind: (binary, flags, what the error line must say after "<binary>: error: ")
FLAG_CASES = {
    "--mapping_steps=0": ("score", ["--mapping_steps=0"],
                          "--mapping_steps=0 with --mode=iterative"),
    "--mapping_steps=-1": ("score", ["--mapping_steps=-1"],
                           "--mapping_steps must be >= 0"),
    "--mapping_steps=-1 (train)": ("train", ["--mapping_steps=-1"],
                                   "Pass e.g. --mapping_steps=500"),
    "--image_size=33 (train)": ("train", ["--image_size=33"],
                                "Pass --image_size=64"),
    "--image_size=33 (score)": ("score", ["--image_size=33"],
                                "--image_size=33 does not match the model"),
    "--patch_stride=-1": ("score", ["--patch_stride=-1"],
                          "Pass e.g. --patch_stride=0"),
    "--patch_size=-1 (train)": ("train", ["--patch_size=-1"],
                                "Pass e.g. --patch_size=0"),
    "--lambda_weight=1.5": ("score", ["--lambda_weight=1.5"],
                            "Pass e.g. --lambda_weight=0.1"),
    "--target_fpr=2": ("score", ["--target_fpr=2"],
                       "Pass a false-positive rate, e.g. --target_fpr=0.05"),
    "--resize=0,10": ("score", ["--resize=0,10"],
                      "Pass e.g. --resize=256,256"),
    "--resize=10": ("train", ["--resize=10"], "--resize takes two integers"),
    "--calibration_fraction=1.0": ("train", ["--calibration_fraction=1.0"],
                                   "Pass e.g. --calibration_fraction=0.2"),
    "--output_dir is a file": ("score", ["--output_dir={file}"],
                               "--output_dir={file} is an existing file"),
    "model dir does not exist": ("score", ["--model_dir={missing}"],
                                 "No config.json in model_dir"),
    "model dir without generator.keras": (
        "score", ["--model_dir={no generator}"], "No generator.keras in"),
    "corrupt config.json": ("score", ["--model_dir={corrupt config}"],
                            "config.json is not readable JSON"),
    "corrupt detector.json": ("score", ["--model_dir={corrupt detector}"],
                              "or delete {corrupt detector}/detector.json"),
}
BINARIES = {"score": score, "train": train}


def _paths(model_dirs, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    return dict(model_dirs, file=str(afile), missing=str(tmp_path / "none"),
                out=str(tmp_path / "out"), trained=str(tmp_path / "trained"))


@pytest.mark.parametrize("kind", sorted(FLAG_CASES))
def test_bad_flag_values_are_one_error_line_before_any_write(
        kind, model_dirs, tmp_path, capsys):
    binary, extra, fix = FLAG_CASES[kind]
    paths = _paths(model_dirs, tmp_path)
    if binary == "score":
        args = ["--model_dir={good}", "--inputs={images}",
                "--output_dir={out}", "--mapping_jit_compile=false"]
    else:
        args = ["--model_dir={trained}", "--dataset=folder",
                "--data_path={images}", "--epochs=1"]
    args = [a.format(**paths) for a in args + extra]
    before = _snapshot(*model_dirs.values(), str(tmp_path))
    assert _main(BINARIES[binary], args) == 1
    lines = [line for line in capsys.readouterr().err.splitlines()
             if f"anogan-{binary}: error:" in line]
    assert len(lines) == 1
    assert lines[0].startswith(f"anogan-{binary}: error: ")
    assert fix.format(**paths) in lines[0]
    assert _snapshot(*model_dirs.values(), str(tmp_path)) == before


@pytest.mark.parametrize("args, message", [
    (["--mode=bogus"], "flag --mode=bogus: value should be one of"),
    (["--dataset=bogus"], "flag --dataset=bogus: value should be one of"),
    (["--inputs="], "--inputs names no path or an empty one"),
    (["--calibration_data=a,,b"], "--calibration_data names no path"),
])
def test_values_the_flag_parsers_refuse_name_the_flag(args, message):
    try:
        with pytest.raises(flags.IllegalFlagValueError) as e:
            FLAGS(["prog", *args])
    finally:
        FLAGS.unparse_flags()
    assert message in str(e.value)


def test_patch_stride_zero_is_the_documented_default_not_an_error():
    config = DataConfig(image_size=32, patch_size=32, patch_stride=0)
    assert config.effective_patch_stride == 16
    try:
        FLAGS(["prog", "--patch_stride=0", "--patch_size=32"])
        assert cf.data_config_from_flags().effective_patch_stride == 16
    finally:
        FLAGS.unparse_flags()


# --- what a user sees: two real runs ----------------------------------------

@pytest.mark.parametrize("extra, first_line", [
    (["--mode=bogus"], "FATAL Flags parsing error: flag --mode=bogus"),
    (["--inputs={bad}"], "anogan-score: error: {bad}: cannot decode image"),
])
def test_binary_exits_1_with_one_error_line_and_no_traceback(
        extra, first_line, model_dirs, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    args = [f"--model_dir={model_dirs['good']}", f"--output_dir={out}",
            "--mapping_jit_compile=false"] + [
                a.format(bad=bad) for a in extra]
    before = _snapshot(model_dirs["good"], str(tmp_path))
    binary = os.path.join(os.path.dirname(sys.executable), "anogan-score")
    proc = subprocess.run([binary, *args], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines()
              if "error" in line.lower()]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(first_line.format(bad=bad))
    assert _snapshot(model_dirs["good"], str(tmp_path)) == before
