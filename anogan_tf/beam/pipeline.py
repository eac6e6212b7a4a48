"""anogan-beam-score's pipeline: anogan-score's image_scores.csv, at scale.

  read (files, globs, TFRecords) -> decode (the library's decoder)
    -> RunInference(SavedModelHandler, the export's score_images signature)
    -> image_scores-*.csv, scores-*.csv (+ maps/<id>.npy and .png)
  every failure -> dead_letter-*.csv (input, stage, reason)

The model is the SavedModel of anogan-export, called through its
whole-image signature `score_images` (or `score_images_uint8`): it cuts the
patches, maps them in the detector's mode (iterative, encoder or hybrid),
stitches and smooths the maps, aggregates per image and applies the
detector's threshold, in one graph that tests/test_score_images.py checks
against anogan-score. So grouping patches per image and aggregating happen
inside the model, and an image is one RunInference example; the per-patch
signatures (score_fast, score_hybrid) are not used, as they would need that
grouping redone in Beam.

The CSV rows and columns are those of `scoring.outputs` (image_rows,
patch_rows, image_columns, patch_columns) and each shard is written by
`scoring.reports.write_csv`, the writer anogan-score uses. A file that
cannot be read, decoded, is not the export's image size, or whose batch
fails in the model never fails the job: it becomes a dead-letter row with
its reason (the library's own error messages), and the summary counts them.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging as py_logging
import os
import tempfile
import types
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference
from apache_beam.options.pipeline_options import PipelineOptions

from anogan_tf.data.decode import SKIP_BAD_FILES_HINT, decode_image
from anogan_tf.data.errors import DataError
from anogan_tf.beam.handler import METRICS_NAMESPACE, SavedModelHandler
from anogan_tf.serving.images import (IMAGE_EXTENSIONS, InputError,
                                      list_inputs, to_signature_dtype)

__all__ = ["ScoreJob", "ExportPlan", "load_export_plan", "resolve_saved_model",
           "expand_inputs", "build_pipeline", "run_beam_score",
           "read_dead_letters", "DEAD_LETTER_COLUMNS", "IMAGE_SIGNATURES"]

# The export's whole-image signatures (export/image_graph.py).
IMAGE_SIGNATURES = ("score_images", "score_images_uint8")
DEAD_LETTER_COLUMNS = ("input", "stage", "reason")
TFRECORD_EXTENSIONS = (".tfrecord", ".tfrec", ".tfrecords")
_GLOB_CHARS = "*?["
_log = py_logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ScoreJob:
    """What to score and where to write it.

    Attributes:
      saved_model: An anogan-export version dir (or its base dir: the
        highest version is used).
      inputs: Image files, folders, globs (local or any Beam file system,
        e.g. gs://b/x/*.png) and TFRecord files or globs.
      output_dir: Where the CSV shards, dead letters and maps go.
      signature: score_images (float32) or score_images_uint8.
      save_maps: Also write maps/<id>.npy and maps/<id>.png.
      num_shards: Shards of each CSV (0: one per 5000 images).
      min_batch_size, max_batch_size: RunInference's batching.
      large_model, model_copies: Share model copies across processes
        (Beam's ModelHandler options).
      model_dir: The model dir, for detector.json's calibration scores
        (p-values); None: the one the export records, if it exists.
    """

    saved_model: str
    inputs: Tuple[str, ...]
    output_dir: str
    signature: str = "score_images"
    save_maps: bool = False
    num_shards: int = 0
    min_batch_size: int = 1
    max_batch_size: int = 8
    large_model: bool = False
    model_copies: Optional[int] = None
    model_dir: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class ExportPlan:
    """What the export's score_images does (from anogan_export.json)."""

    version_dir: str
    image_shape: Tuple[int, int, int]
    patched: bool
    mode: str
    threshold: Optional[float]
    calibration_scores: Tuple[float, ...]


def resolve_saved_model(path: str) -> str:
    """The version dir of `path` (itself, or its highest integer folder).

    Paths go through tf.io.gfile, so gs:// and the other file systems of
    TensorFlow work as they do for tf.saved_model.load.
    """
    import tensorflow as tf

    gfile = tf.io.gfile
    join = os.path.join if "://" not in path else (
        lambda *a: "/".join(x.rstrip("/") for x in a))
    if gfile.exists(join(path, "saved_model.pb")):
        return path
    names = (gfile.listdir(path) if gfile.isdir(path) else [])
    versions = sorted(int(n.rstrip("/")) for n in names
                      if n.rstrip("/").isdigit() and
                      gfile.exists(join(path, n.rstrip("/"),
                                        "saved_model.pb")))
    if not versions:
        raise InputError(
            f"--saved_model={path!r} is not a SavedModel (no saved_model.pb) "
            f"nor a folder of numbered versions. Pass what anogan-export "
            f"wrote (<export_dir> or <export_dir>/<version>), or --model_dir "
            f"to export one.")
    return join(path, str(versions[-1]))


def load_export_plan(version_dir: str,
                     model_dir: Optional[str] = None) -> ExportPlan:
    """The export's score_images settings, and detector.json's calibration
    scores when its threshold is the one the export baked in."""
    import tensorflow as tf

    from anogan_tf.export import EXPORT_INFO_FILE
    from anogan_tf.scoring import detector as detector_lib

    info_path = (os.path.join(version_dir, EXPORT_INFO_FILE)
                 if "://" not in version_dir else
                 version_dir.rstrip("/") + "/" + EXPORT_INFO_FILE)
    try:
        with tf.io.gfile.GFile(info_path) as f:
            info = json.load(f)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise InputError(f"{info_path} cannot be read ({e}). Export the model "
                         f"with anogan-export.") from e
    plan = info.get("score_images")
    if not plan:
        raise InputError(
            f"{version_dir} has no score_images signature. Re-export it with "
            f"this version of anogan-export.")
    threshold = plan.get("threshold")
    calibration: Tuple[float, ...] = ()
    model_dir = model_dir or info.get("model_dir")
    if threshold is not None and model_dir and os.path.isdir(model_dir):
        detector = detector_lib.load_detector(model_dir)
        recorded = detector.threshold if detector is not None else None
        if recorded is not None and recorded.value == threshold:
            calibration = tuple(recorded.calibration_scores)
    return ExportPlan(version_dir=version_dir,
                      image_shape=tuple(plan["image_shape"]),
                      patched=int(plan["grid_positions"]) > 1,
                      mode=plan.get("mode", info["mapping"]["mode"]),
                      threshold=threshold, calibration_scores=calibration)


def _is_tfrecord(path: str) -> bool:
    return path.lower().endswith(TFRECORD_EXTENSIONS)


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path.rstrip("/")))[0]


def expand_inputs(inputs: Sequence[str]
                  ) -> Tuple[List[Tuple[str, str]], List[str]]:
    """([(id, image path)], [TFRecord paths]) of --inputs.

    Folders and plain local files go through `serving.images.list_inputs`
    (anogan-score's ids: relative to the folder, without extension); globs
    and remote paths are matched with Beam's FileSystems, a file's id being
    its stem.

    Raises:
      InputError: nothing given, a pattern or path matches nothing (named,
        with the fix), or two images get the same id.
    """
    if not inputs:
        raise InputError("No inputs given; pass image files, folders, globs "
                         "('DIR/*.png') or TFRecords with --inputs.")
    images: List[Tuple[str, str]] = []
    records: List[str] = []
    for item in inputs:
        if os.path.isdir(item) or (os.path.isfile(item) and
                                   not _is_tfrecord(item)):
            images += list_inputs([item])
            continue
        if any(c in item for c in _GLOB_CHARS) or "://" in item or \
                os.path.isfile(item):
            matched = sorted(m.path for r in FileSystems.match([item])
                             for m in r.metadata_list)
        else:
            matched = []
        if not matched:
            raise InputError(
                f"--inputs {item!r} matches no files. Check the path; quote "
                f"a glob ('DIR/*.png') so the shell passes it as it is; "
                f"images are {', '.join(IMAGE_EXTENSIONS)}, TFRecords "
                f"{', '.join(TFRECORD_EXTENSIONS)}.")
        for path in matched:
            if _is_tfrecord(path):
                records.append(path)
            else:
                images.append((_stem(path), path))
    seen: Dict[str, str] = {}
    for image_id, path in images:
        if image_id in seen:
            raise InputError(
                f"{seen[image_id]!r} and {path!r} both get the id "
                f"{image_id!r}. Pass their common folder instead, so ids keep "
                f"their sub-folders.")
        seen[image_id] = path
    return images, records


# --- the DoFns ----------------------------------------------------------------

DEAD = "dead_letter"


def _dead(source: str, stage: str, reason: str):
    return beam.pvalue.TaggedOutput(DEAD, {"input": source, "stage": stage,
                                           "reason": reason})


class DecodeFn(beam.DoFn):
    """(id, path or (name, bytes)) -> ((id, source), signature input);
    failures go to the dead-letter output."""

    def __init__(self, plan: ExportPlan, dtype: str):
        self._shape = tuple(plan.image_shape)
        self._dtype = dtype
        self._decoded = Metrics.counter(METRICS_NAMESPACE, "images_decoded")
        self._count = 0

    def process(self, element):
        image_id, source = element
        if isinstance(source, tuple):
            name, data = source
        elif "://" not in source:
            # A local file: decoded from its path, so the messages are
            # anogan-score's (Pillow names the file, not a byte buffer).
            name = data = source
        else:
            name = source
            try:
                with FileSystems.open(source) as f:
                    data = f.read()
            except Exception as e:  # a vanished or unreadable file
                yield _dead(name, "read", f"{name} cannot be read "
                            f"({type(e).__name__}: {e}).")
                return
        h, w, c = self._shape
        try:
            unit = decode_image(data, c, name=name)
        except DataError as e:
            # There is no --skip_bad_files here: bad files are dead letters.
            yield _dead(name, "decode", str(e).replace(SKIP_BAD_FILES_HINT, ""))
            return
        if unit.shape[:2] != (h, w):
            yield _dead(name, "size", (
                f"{name}: the image is {unit.shape[0]}x{unit.shape[1]}, the "
                f"export scores {h}x{w} images. Resize it to {h}x{w}, or "
                f"export for its size (anogan-export --image_height/"
                f"--image_width)."))
            return
        self._decoded.inc()
        self._count += 1
        if self._count % 100 == 0:
            _log.info("Decoded %d images in this worker.", self._count)
        yield (image_id, name), to_signature_dtype(unit, self._dtype)


class ReadRecordsFn(beam.DoFn):
    """A TFRecord file -> (id, (where, image bytes)) per record; a corrupt
    record becomes a dead letter (naming file and record) and the file's
    readable records are still scored."""

    def process(self, path):
        from anogan_tf.data.tfrecords import read_tfrecord_examples
        try:
            examples = read_tfrecord_examples(path, skip_bad=False)
        except DataError as e:
            # The library's message names the file and the record; the
            # file's readable records are still scored.
            yield _dead(path, "read", str(e))
            try:
                examples = read_tfrecord_examples(path, skip_bad=True)
            except DataError:  # the file itself cannot be read
                return
        for ex in examples:
            yield ex.id, (ex.where, ex.image)


def _view(image_id: str, out: Dict[str, np.ndarray], patched: bool):
    """The attributes `scoring.outputs.image_rows` / `patch_rows` read of a
    ScoredImages, for one image scored by score_images."""
    valid = np.asarray(out["patch_valid"], bool)
    return types.SimpleNamespace(
        images=types.SimpleNamespace(ids=(image_id,), labels=None,
                                     categories=None),
        image_scores=np.array([out["image_score"]]),
        image_residual=np.array([out["image_residual_score"]]),
        image_discrimination=np.array([out["image_discrimination_score"]]),
        patches=types.SimpleNamespace(
            image_index=np.zeros(int(valid.sum()), np.int32),
            ys=out["patch_y"][valid], xs=out["patch_x"][valid],
            patched=patched),
        mapping=types.SimpleNamespace(
            anomaly_score=out["patch_anomaly_score"][valid],
            residual_score=out["patch_residual_score"][valid],
            discrimination_score=out["patch_discrimination_score"][valid]))


class RowsFn(beam.DoFn):
    """((id, source), PredictionResult) -> tagged image and patch rows, and
    the maps when asked."""

    IMAGE, PATCH = "image", "patch"

    def __init__(self, plan: ExportPlan, output_dir: str, save_maps: bool):
        self._plan = plan
        self._output_dir = output_dir
        self._save_maps = save_maps
        self._rows = Metrics.counter(METRICS_NAMESPACE, "images_written")

    def process(self, element):
        from anogan_tf.scoring import calibration as calibration_lib
        from anogan_tf.scoring import outputs
        (image_id, _), result = element
        out = result.inference
        view = _view(image_id, out, self._plan.patched)
        p_values = None
        if self._plan.calibration_scores:
            p_values = calibration_lib.conformal_p_values(
                np.asarray(self._plan.calibration_scores),
                view.image_scores)
        row = outputs.image_rows(view, self._plan.threshold, p_values)[0]
        self._rows.inc()
        yield beam.pvalue.TaggedOutput(self.IMAGE, row)
        for patch_row in outputs.patch_rows(view, self._plan.mode, p_values):
            yield beam.pvalue.TaggedOutput(self.PATCH, patch_row)
        if self._save_maps:
            self._write_maps(image_id, result.example, out)

    def _write_maps(self, image_id: str, example: np.ndarray, out) -> None:
        from anogan_tf.scoring import reports
        safe = image_id.replace(os.sep, "__").replace("/", "__")
        base = FileSystems.join(self._output_dir, "maps", safe)
        buf = io.BytesIO()
        np.save(buf, out["anomaly_map"])
        _write_bytes(base + ".npy", buf.getvalue())
        image = np.asarray(example, np.float32)
        if example.dtype == np.uint8:
            image = image / np.float32(127.5) - np.float32(1.0)
        with tempfile.TemporaryDirectory() as tmp:
            png = reports.save_overlay(
                os.path.join(tmp, "m.png"), image, out["reconstruction"],
                out["anomaly_map"],
                title=f"{image_id}  A={float(out['image_score']):.2f}")
            with open(png, "rb") as f:
                _write_bytes(base + ".png", f.read())


def _write_bytes(path: str, data: bytes) -> None:
    if "://" not in path:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    with FileSystems.create(path) as f:
        f.write(data)


def _shard_name(output_dir: str, name: str, shard: int, num: int) -> str:
    return FileSystems.join(output_dir,
                            f"{name}-{shard:05d}-of-{num:05d}.csv")


class WriteShards(beam.PTransform):
    """Rows -> `num` CSV shards <name>-SSSSS-of-NNNNN.csv, each written by
    `scoring.reports.write_csv` with `columns` and sorted by `sort_keys`.
    Every shard is written, header-only when it got no rows."""

    def __init__(self, output_dir: str, name: str, columns: Sequence[str],
                 num: int, sort_keys: Sequence[str]):
        super().__init__()
        self._output_dir, self._name = output_dir, name
        self._columns, self._num = tuple(columns), num
        self._sort_keys = tuple(sort_keys)

    def expand(self, rows):
        num = self._num
        keyed = rows | "Key" >> beam.Map(
            lambda r: (zlib.crc32(str(r[self._sort_keys[0]]).encode()) % num,
                       r))
        every = rows.pipeline | "Shards" >> beam.Create(
            [(k, None) for k in range(num)])
        return ({"rows": keyed, "shard": every} | "Group" >> beam.CoGroupByKey()
                | "Write" >> beam.Map(self._write))

    def _write(self, element) -> str:
        from anogan_tf.scoring import reports
        shard, groups = element
        rows = sorted(groups["rows"], key=lambda r: tuple(
            _sortable(r.get(k)) for k in self._sort_keys))
        path = _shard_name(self._output_dir, self._name, shard, self._num)
        if "://" not in path:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            return reports.write_csv(path, rows, self._columns)
        with tempfile.TemporaryDirectory() as tmp:
            local = reports.write_csv(os.path.join(tmp, "shard.csv"), rows,
                                      self._columns)
            with open(local, "rb") as f:
                _write_bytes(path, f.read())
        return path


def _sortable(v):
    return (0, v, "") if isinstance(v, (int, float)) else (1, 0, str(v))


def _inference_failures(element):
    """A failed RunInference batch -> one dead letter per image in it."""
    batch, error = element
    for item in batch:
        key = item[0] if isinstance(item, tuple) else None
        name = key[1] if isinstance(key, tuple) else str(key)
        yield {"input": name, "stage": "inference",
               "reason": f"{name}: the model failed on its batch "
                         f"({type(error).__name__}: {error})."}


def build_pipeline(pipeline: beam.Pipeline, job: ScoreJob, plan: ExportPlan,
                   images: Sequence[Tuple[str, str]],
                   records: Sequence[str], dtype: str,
                   handler: Optional[SavedModelHandler] = None) -> None:
    """Adds the scoring transforms for `job` to `pipeline` (`handler`:
    the job's SavedModelHandler unless given)."""
    from anogan_tf.scoring import outputs

    num = job.num_shards or max(1, -(-len(images) // 5000))
    p = pipeline
    sources = [p | "ListImages" >> beam.Create(list(images))]
    dead = []
    if records:
        recs = (p | "ListRecords" >> beam.Create(list(records))
                | "ReadRecords" >> beam.ParDo(ReadRecordsFn())
                .with_outputs(DEAD, main="records"))
        sources.append(recs.records)
        dead.append(recs[DEAD])
    decoded = (tuple(sources) | "AllInputs" >> beam.Flatten()
               | "Reshuffle" >> beam.Reshuffle()
               | "Decode" >> beam.ParDo(DecodeFn(plan, dtype))
               .with_outputs(DEAD, main="images"))
    dead.append(decoded[DEAD])
    handler = handler or SavedModelHandler(
        plan.version_dir, job.signature, min_batch_size=job.min_batch_size,
        max_batch_size=job.max_batch_size, large_model=job.large_model,
        model_copies=job.model_copies)
    scored, failed = (decoded.images | "Score" >> RunInference(
        KeyedModelHandler(handler)).with_exception_handling())
    dead.append(failed.failed_inferences
                | "InferenceFailures" >> beam.FlatMap(_inference_failures))
    rows = (scored | "Rows" >> beam.ParDo(
        RowsFn(plan, job.output_dir, job.save_maps))
        .with_outputs(RowsFn.IMAGE, RowsFn.PATCH))
    with_p = bool(plan.calibration_scores)
    with_t = plan.threshold is not None
    rows[RowsFn.IMAGE] | "WriteImageScores" >> WriteShards(
        job.output_dir, "image_scores",
        outputs.image_columns(False, False, with_p, with_t), num, ("id",))
    rows[RowsFn.PATCH] | "WritePatchScores" >> WriteShards(
        job.output_dir, "scores", outputs.patch_columns(False, with_p), num,
        ("id", "patch_y", "patch_x"))
    (tuple(dead) | "AllDead" >> beam.Flatten()
     | "WriteDeadLetters" >> WriteShards(
         job.output_dir, DEAD, DEAD_LETTER_COLUMNS, 1, ("input", "stage")))


def _metric(result, name: str, kind: str = "counters"):
    found = result.metrics().query(
        MetricsFilter().with_namespace(METRICS_NAMESPACE).with_name(name))
    values = [m.committed for m in found[kind] if m.committed is not None]
    if kind == "counters":
        return int(sum(values))
    return values


def read_dead_letters(path: str) -> List[Dict[str, str]]:
    """The rows of a dead-letter CSV."""
    import csv
    with FileSystems.open(path) as f:
        return list(csv.DictReader(io.TextIOWrapper(f, encoding="utf-8",
                                                    newline="")))


def run_beam_score(job: ScoreJob,
                   options: Optional[PipelineOptions] = None) -> Dict:
    """Runs the pipeline to the end; returns a summary.

    Returns:
      {"num_images" (rows written), "num_dead_letters", "num_inputs"
      (image files listed; TFRecords add their records), "output_dir",
      "image_scores" (the shard paths), "dead_letters" (path),
      "batch_sizes" ([(count, sum, min, max)] of the model calls), and
      "signature", "saved_model"}.

    Raises:
      InputError: the inputs or the export are unusable (before running).
      ValueError: an unknown signature.
    """
    if job.signature not in IMAGE_SIGNATURES:
        raise ValueError(
            f"--signature={job.signature!r}: anogan-beam-score calls a "
            f"whole-image signature ({' or '.join(IMAGE_SIGNATURES)}), which "
            f"patches, maps in the detector's mode (score_fast/score_hybrid "
            f"for encoder/hybrid detectors are used inside it), aggregates "
            f"and thresholds in the graph.")
    version_dir = resolve_saved_model(job.saved_model)
    plan = load_export_plan(version_dir, job.model_dir)
    images, records = expand_inputs(job.inputs)
    dtype = "uint8" if job.signature.endswith("uint8") else "float32"
    _log.info("Scoring %d image files and %d TFRecord files with %s (%s), "
              "%dx%dx%d images.", len(images), len(records), version_dir,
              job.signature, *plan.image_shape)
    if not FileSystems.exists(job.output_dir):
        FileSystems.mkdirs(job.output_dir)
    pipeline = beam.Pipeline(options=options or PipelineOptions())
    build_pipeline(pipeline, job, plan, images, records, dtype)
    result = pipeline.run()
    result.wait_until_finish()
    shards = sorted(m.path for r in FileSystems.match(
        [FileSystems.join(job.output_dir, "image_scores-*.csv")])
        for m in r.metadata_list)
    dead = _shard_name(job.output_dir, DEAD, 0, 1)
    batches = [(d.count, d.sum, d.min, d.max)
               for d in _metric(result, "batch_size", "distributions")]
    return {"num_images": _metric(result, "images_written"),
            "num_dead_letters": len(read_dead_letters(dead)),
            "num_inputs": len(images), "output_dir": job.output_dir,
            "image_scores": shards, "dead_letters": dead,
            "batch_sizes": batches, "signature": job.signature,
            "saved_model": version_dir}
