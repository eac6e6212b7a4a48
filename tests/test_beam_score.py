"""anogan-beam-score (issue 13, deliverables 3 and 4).

On the same PNG files, the Beam pipeline (FnApiRunner) writes the
image_scores.csv and scores.csv rows of anogan-score, with the same columns
and the same values (1e-4), and the same maps; a corrupt file and a file
of the wrong size go to the dead-letter file with their reasons while the
others are scored; the model handler batches (the batch sizes are read from
the handler's Beam metrics).
"""

import csv
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

beam = pytest.importorskip("apache_beam")

from apache_beam.options.pipeline_options import PipelineOptions  # noqa: E402
from PIL import Image  # noqa: E402

from anogan_tf.beam import (DEAD_LETTER_COLUMNS, SavedModelHandler,  # noqa: E402
                            ScoreJob, expand_inputs, read_dead_letters,
                            run_beam_score)
from anogan_tf.config import DataConfig, EvalConfig, MappingConfig  # noqa: E402
from anogan_tf.data import load_images  # noqa: E402
from anogan_tf.data.grids import images_to_uint8  # noqa: E402
from anogan_tf.scoring import detector as detector_lib  # noqa: E402
from anogan_tf.scoring import run_score  # noqa: E402
from anogan_tf.serving.images import InputError  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import serving_server  # noqa: E402

VENV_BIN = os.path.dirname(sys.executable)
SIZE = 64  # B-scans of 64x64, cut into 9 patches of 32 at stride 16
DATA = DataConfig(dataset="folder", image_size=32, patch_size=32,
                  patch_stride=16)
MAPPING = MappingConfig(steps=3, lr=0.05, restarts=1, seed=3,
                        jit_compile=False)
NUMERIC = ("anomaly_score", "residual_score", "discrimination_score",
           "p_value", "threshold", "image_p_value")


def _eval(out=""):
    return EvalConfig(output_dir=str(out), aggregate="mean")


def _save_detector(model_dir, threshold=None):
    detector_lib.save_detector(detector_lib.Detector.from_configs(
        DATA, MAPPING, _eval(), threshold=threshold, written_by="test"),
        model_dir)


def _read(pattern):
    """(header, rows) of the CSV files matching pattern (one header)."""
    headers, rows = set(), []
    paths = sorted(glob.glob(pattern))
    assert paths, pattern
    for path in paths:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            headers.add(tuple(reader.fieldnames))
            rows += list(reader)
    assert len(headers) == 1, headers
    return headers.pop(), rows


def _assert_rows_equal(mine, theirs, key):
    assert len(mine) == len(theirs)
    by_key = {key(r): r for r in theirs}
    assert len(by_key) == len(theirs)
    for row in mine:
        want = by_key[key(row)]
        assert row.keys() == want.keys()
        for col, value in row.items():
            if col in NUMERIC and want[col] != "":
                np.testing.assert_allclose(float(value), float(want[col]),
                                           rtol=1e-4, atol=1e-4, err_msg=col)
            else:
                assert value == want[col], (col, row, want)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A tiny model dir with a threshold and calibration scores, 4 PNG
    scans and anogan-score's outputs on them."""
    root = tmp_path_factory.mktemp("beam_score")
    model_dir = str(root / "model")
    serving_server.make_tiny_model_dir(model_dir, seed=0)
    with open(os.path.join(model_dir, "flags.cfg"), "w") as f:
        f.write(f"--dataset=synthetic_oct\n--oct_height={SIZE}\n"
                f"--oct_width={SIZE}\n")
    scans = load_images(DataConfig(
        dataset="synthetic_oct", oct_height=SIZE, oct_width=SIZE,
        oct_num_test=4, image_size=32, seed=4), "test")
    good = root / "good"
    good.mkdir()
    ids = [f"scan{i}" for i in range(4)]
    for i, p in zip(ids, images_to_uint8(scans.images)):
        Image.fromarray(p[..., 0]).save(good / f"{i}.png")
    # A first run for the scores, to put the threshold between them.
    _save_detector(model_dir)
    run_score(model_dir, DATA, MAPPING, _eval(root / "first"),
              inputs=[str(good)], save_maps=False)
    with open(root / "first" / "image_scores.csv", newline="") as f:
        first = sorted(float(r["anomaly_score"]) for r in csv.DictReader(f))
    threshold = float(np.median(first))
    _save_detector(model_dir, detector_lib.Threshold(
        value=threshold, rule="test median", n_calibration=4,
        calibration_scores=tuple(first)))
    reference = root / "reference"
    run_score(model_dir, DATA, MAPPING, _eval(reference), inputs=[str(good)],
              save_maps=True)
    # The Beam inputs: the same files, a corrupt PNG and one of another size.
    mixed = root / "mixed"
    mixed.mkdir()
    for i in ids:
        (mixed / f"{i}.png").write_bytes((good / f"{i}.png").read_bytes())
    (mixed / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png")
    Image.fromarray(np.zeros((32, 48), np.uint8)).save(mixed / "small.png")
    return {"root": root, "model_dir": model_dir, "ids": ids, "good": good, "mixed": mixed, "reference": reference,
            "threshold": threshold}


@pytest.fixture(scope="module")
def cli_run(case):
    """The acceptance command: anogan-beam-score --model_dir=M
    --inputs='DIR/*.png' --output_dir=O --runner=DirectRunner (it exports
    M to O/saved_model, which the other tests reuse)."""
    out = case["root"] / "cli"
    done = subprocess.run(
        [os.path.join(VENV_BIN, "anogan-beam-score"),
         f"--model_dir={case['model_dir']}",
         f"--inputs={case['mixed'] / '*.png'}", f"--output_dir={out}",
         "--runner=DirectRunner", "--nosave_maps"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    versions = glob.glob(str(out / "saved_model" / "*" / "saved_model.pb"))
    assert len(versions) == 1
    return out, done, os.path.dirname(versions[0])


@pytest.fixture(scope="module")
def beam_run(case, cli_run):
    """The library on FnApiRunner, over the CLI's export: 2 shards, maps,
    batches of at most 3."""
    out = case["root"] / "beam"
    summary = run_beam_score(
        ScoreJob(saved_model=str(cli_run[2]),
                 inputs=(str(case["mixed"] / "*.png"),), output_dir=str(out),
                 save_maps=True, num_shards=2, min_batch_size=1,
                 max_batch_size=3, model_dir=case["model_dir"]),
        PipelineOptions(runner="FnApiRunner"))
    return out, summary


def test_image_scores_equal_anogan_score(case, beam_run):
    out, summary = beam_run
    header, rows = _read(str(out / "image_scores-*-of-00002.csv"))
    want_header, want = _read(str(case["reference"] / "image_scores.csv"))
    assert header == want_header
    assert {"threshold", "is_anomalous", "p_value"} <= set(header)
    _assert_rows_equal(rows, want, lambda r: r["id"])
    assert sorted(r["id"] for r in rows) == case["ids"]
    assert {r["is_anomalous"] for r in rows} == {"0", "1"}
    assert summary["num_images"] == 4
    assert len(summary["image_scores"]) == 2


def test_patch_scores_and_maps_equal_anogan_score(case, beam_run):
    out, _ = beam_run
    header, rows = _read(str(out / "scores-*.csv"))
    want_header, want = _read(str(case["reference"] / "scores.csv"))
    assert header == want_header
    assert len(rows) == 4 * 9
    _assert_rows_equal(rows, want,
                       lambda r: (r["id"], r["patch_y"], r["patch_x"]))
    for i in case["ids"]:
        np.testing.assert_allclose(
            np.load(out / "maps" / f"{i}.npy"),
            np.load(case["reference"] / "maps" / f"{i}.npy"),
            rtol=1e-4, atol=1e-4)
        assert (out / "maps" / f"{i}.png").stat().st_size > 0


def test_bad_files_are_dead_letters_with_their_reason(case, beam_run):
    out, summary = beam_run
    path = out / "dead_letter-00000-of-00001.csv"
    assert summary["dead_letters"] == str(path)
    rows = read_dead_letters(str(path))
    assert tuple(rows[0].keys()) == DEAD_LETTER_COLUMNS
    by_name = {os.path.basename(r["input"]): r for r in rows}
    assert set(by_name) == {"corrupt.png", "small.png"}
    assert summary["num_dead_letters"] == 2
    corrupt = by_name["corrupt.png"]
    assert corrupt["stage"] == "decode"
    assert corrupt["reason"].startswith(
        f"{corrupt['input']}: cannot decode image (UnidentifiedImageError: "
        f"cannot identify image file {corrupt['input']!r})")
    assert "--skip_bad_files" not in corrupt["reason"]
    small = by_name["small.png"]
    assert small["stage"] == "size"
    assert f"the image is 32x48, the export scores {SIZE}x{SIZE}" in \
        small["reason"]


def test_the_handler_batches(case, cli_run, beam_run):
    _, summary = beam_run
    (count, total, smallest, largest), = summary["batch_sizes"]
    assert total == 4  # every decoded image, once
    assert largest <= 3 and count >= 2 and smallest >= 1
    # A batch gives each image the answer it gets alone.
    handler = SavedModelHandler(cli_run[2], "score_images",
                                max_batch_size=4)
    assert handler.batch_elements_kwargs() == {"min_batch_size": 1,
                                               "max_batch_size": 4}
    model = handler.load_model()
    rng = np.random.default_rng(0)
    images = [rng.uniform(-1, 1, (SIZE, SIZE, 1)).astype(np.float32)
              for _ in range(2)]
    batch = handler.run_inference(images, model)
    assert len(batch) == 2
    for image, result in zip(images, batch):
        assert result.example is image
        alone = handler.run_inference([image], model)[0].inference
        for key in ("image_score", "anomaly_map", "patch_anomaly_score"):
            np.testing.assert_allclose(result.inference[key], alone[key],
                                       rtol=1e-5, atol=1e-5)
        assert result.inference["anomaly_map"].shape == (SIZE, SIZE)


def test_inputs_that_match_nothing_are_named_with_the_fix(case):
    pattern = str(case["root"] / "nowhere" / "*.png")
    with pytest.raises(InputError) as e:
        expand_inputs([pattern])
    assert repr(pattern) in str(e.value)
    assert "quote a glob" in str(e.value)
    images, records = expand_inputs([str(case["mixed"] / "scan*.png")])
    assert [i for i, _ in images] == case["ids"] and records == []


def test_cli_with_model_dir_and_direct_runner(case, cli_run):
    """The acceptance: the CLI's image_scores-*.csv equals anogan-score's,
    and the bad files are counted as dead letters, not failures."""
    out, done, _ = cli_run
    assert "--runner=DirectRunner: running on Beam's in-process FnApiRunner" \
        in done.stdout
    assert "Scored 4 images" in done.stdout
    assert "2 input(s) could not be scored; see " in done.stdout
    header, rows = _read(str(out / "image_scores-*.csv"))
    want_header, want = _read(str(case["reference"] / "image_scores.csv"))
    assert header == want_header
    _assert_rows_equal(rows, want, lambda r: r["id"])
    assert len(read_dead_letters(
        str(out / "dead_letter-00000-of-00001.csv"))) == 2



def test_cli_names_a_glob_that_matches_nothing(tmp_path, capsys):
    """One error line naming the pattern and the fix, exit 1 (in process:
    the binary's main, before any model is loaded)."""
    from absl import flags
    from anogan_tf import beam_score
    missing = str(tmp_path / "none" / "*.png")
    argv = beam_score._parse([
        "anogan-beam-score", f"--saved_model={tmp_path}",
        f"--inputs={missing}", f"--output_dir={tmp_path / 'out'}",
        "--direct_num_workers=2"])
    try:
        assert argv[1:] == ["--direct_num_workers=2"]  # Beam's, passed on
        assert beam_score.main(argv) == 1
    finally:
        flags.FLAGS.unparse_flags()
    err = capsys.readouterr().err
    assert f"anogan-beam-score: error: --inputs {missing!r} matches no " \
        f"files" in err
    assert "quote a glob" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_tfrecords_are_scored_and_a_corrupt_tail_is_a_dead_letter(
        case, cli_run, tmp_path):
    """The 4 scans as PNG Examples with their ids, then bytes that break the
    record framing: the 4 records score as anogan-score scored the files,
    and the corrupt rest of the file is one dead letter naming it."""
    from anogan_tf.data import write_tfrecord
    pixels = np.stack([np.asarray(Image.open(case["good"] / f"{i}.png"))
                       for i in case["ids"]])
    path = write_tfrecord(str(tmp_path / "scans.tfrecord"), pixels,
                          ids=case["ids"])
    with open(path, "ab") as f:
        f.write(b"\x00" * 20)  # a truncated 5th record
    out = tmp_path / "out"
    summary = run_beam_score(
        ScoreJob(saved_model=str(cli_run[2]),
                 inputs=(str(tmp_path / "*.tfrecord"),), output_dir=str(out),
                 max_batch_size=4, model_dir=case["model_dir"]),
        PipelineOptions(runner="FnApiRunner"))
    _, rows = _read(str(out / "image_scores-*.csv"))
    _, want = _read(str(case["reference"] / "image_scores.csv"))
    _assert_rows_equal(rows, want, lambda r: r["id"])
    dead = read_dead_letters(summary["dead_letters"])
    assert len(dead) == 1 and dead[0]["input"] == path
    assert dead[0]["stage"] == "read"
    assert f"{path} record 4 is corrupt" in dead[0]["reason"]


def test_a_batch_that_fails_in_the_model_is_dead_letters(case, cli_run,
                                                         tmp_path):
    """A model error on one image's batch: that image is a dead letter of
    stage inference with the error, the others are scored."""
    from anogan_tf.beam import build_pipeline, load_export_plan
    from anogan_tf.serving.images import read_image

    poison = read_image(str(case["good"] / "scan2.png"), 1, np.float32)

    class Failing(SavedModelHandler):
        def run_inference(self, batch, model, inference_args=None):
            if any(np.array_equal(x, poison) for x in batch):
                raise ValueError("poisoned batch")
            return super().run_inference(batch, model, inference_args)

    plan = load_export_plan(str(cli_run[2]), case["model_dir"])
    out = tmp_path / "out"
    job = ScoreJob(saved_model=plan.version_dir, inputs=(), output_dir=str(out),
                   max_batch_size=1, model_dir=case["model_dir"])
    images, _ = expand_inputs([str(case["good"])])
    with beam.Pipeline(runner="FnApiRunner") as p:
        build_pipeline(p, job, plan, images, [], "float32",
                       handler=Failing(plan.version_dir, max_batch_size=1))
    _, rows = _read(str(out / "image_scores-*.csv"))
    assert sorted(r["id"] for r in rows) == ["scan0", "scan1", "scan3"]
    dead = read_dead_letters(str(out / "dead_letter-00000-of-00001.csv"))
    assert [(d["input"], d["stage"]) for d in dead] == [
        (str(case["good"] / "scan2.png"), "inference")]
    assert "ValueError: poisoned batch" in dead[0]["reason"]
