"""Exports a trained model dir as a versioned SavedModel for TF Serving.

  <export_dir>/<N>/saved_model.pb, variables/
  <export_dir>/<N>/assets.extra/tf_serving_warmup_requests
  <export_dir>/<N>/assets.extra/anogan_export.json

The SavedModel is written by `keras.export.ExportArchive` (which exports the
Keras 3 variables so that Session-based loaders such as the model server see
them initialised; a plain tf.Module does not: tensorflow/serving#2250) into a
hidden temp folder inside `export_dir` (TF Serving ignores names that are not
integers) and renamed to `<N>` only once complete, so a server polling
`export_dir` never loads half a model. The exporting process holds an
exclusive lock (`fcntl.flock`) on `<temp>/.lock`; a temp folder whose lock
is free belongs to an export that died (e.g. `kill -9`), and the next
export removes it (`remove_stale_temp_dirs`).

The settings are the detector's: `Scorer.from_model_dir` layers the model
dir's detector.json under the given configs, so the per-patch signatures
map with the detector's mapping and `score_images` scores whole images with
its patching, ROI, intensity norm, map and aggregate, and its calibrated
threshold (`signatures`, `image_graph`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
import time
from typing import Collection, List, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig, ModelConfig)
from anogan_tf.export import image_graph, signatures
from anogan_tf.model_dir import FLAGS_FILE, ModelDir, disk_full_errors
from anogan_tf.mapping.latent import MappingParams
from anogan_tf.models.io import (DISCRIMINATOR_FILE, ENCODER_FILE,
                                 GENERATOR_FILE, load_encoder, load_model_dir)
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring.scorer import Scorer

try:  # POSIX; elsewhere stale temp folders are recognised by age alone.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

__all__ = [
    "export_model",
    "load_trained_models",
    "existing_versions",
    "next_version",
    "remove_stale_temp_dirs",
    "score_images_plan",
    "TEMP_PREFIX",
    "GENERATOR_FILE",
    "DISCRIMINATOR_FILE",
    "ENCODER_FILE",
    "WARMUP_FILE",
    "EXPORT_INFO_FILE",
    "WARMUP_BATCH",
]

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
EXPORT_INFO_FILE = os.path.join("assets.extra", "anogan_export.json")
WARMUP_BATCH = 2
# The hidden staging folders inside export_dir (TF Serving ignores them).
TEMP_PREFIX = ".tmp-anogan-export-"
_LOCK_FILE = ".lock"

_VERSION_RE = re.compile(r"^[0-9]+$")


def load_trained_models(model_dir: str):
    """Loads (model_config, generator, discriminator, encoder or None).

    The encoder (when the model dir has encoder.keras) backs the score_fast
    and score_hybrid signatures.

    Raises:
      ConfigError: the model dir, its config.json or a model file is missing
        or unreadable, or the models do not match config.json.
    """
    model_config, generator, discriminator = load_model_dir(model_dir)
    return model_config, generator, discriminator, load_encoder(model_dir)


def existing_versions(export_dir: str) -> Tuple[int, ...]:
    """The integer version folders in `export_dir`, ascending."""
    if not os.path.isdir(export_dir):
        return ()
    return tuple(sorted(
        int(name) for name in os.listdir(export_dir)
        if _VERSION_RE.match(name)
        and os.path.isdir(os.path.join(export_dir, name))))


def _check_export_dir(export_dir: str) -> None:
    """Fails early when `export_dir` (or a parent of it) is not a folder."""
    path = os.path.abspath(export_dir)
    while path and not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return
        path = parent
    if not os.path.isdir(path):
        what = ("is a file" if os.path.abspath(export_dir) == path
                else f"is inside {path!r}, which is a file")
        raise ConfigError(
            f"--export_dir={export_dir!r} {what}; expected a folder (existing "
            f"or to be created) that holds the numbered versions, "
            f"<export_dir>/1/, <export_dir>/2/, ... Pass a folder path, e.g. "
            f"--export_dir={os.path.join(os.path.dirname(path), 'saved_models')}"
            f", or move the file away.")


def next_version(export_dir: str) -> int:
    """1 + the highest existing version (1 for an empty export_dir)."""
    versions = existing_versions(export_dir)
    return versions[-1] + 1 if versions else 1


def _warmup_images(image_shape: Tuple[int, int, int]) -> np.ndarray:
    """Mid-grey and a gradient: valid inputs that run the whole graph."""
    shape = (WARMUP_BATCH,) + tuple(image_shape)
    images = np.zeros(shape, np.float32)
    images[1] = np.linspace(-1.0, 1.0, int(np.prod(shape[1:])),
                            dtype=np.float32).reshape(shape[1:])
    return images


def _write_warmup(path: str, model_config: ModelConfig,
                  image_plan: Optional[image_graph.ImagePlan] = None) -> None:
    """A TFRecord of PredictionLogs that TF Serving replays at load time:
    serving_default, then score_images when it is exported."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    requests = [("serving_default", model_config.image_shape)]
    if image_plan is not None:
        requests.append(("score_images", image_plan.image_shape))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for name, shape in requests:
            request = predict_pb2.PredictRequest()
            request.model_spec.signature_name = name
            request.inputs[signatures.IMAGES_KEY].CopyFrom(
                tf.make_tensor_proto(_warmup_images(shape), dtype=tf.float32))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())


def _write_info(path: str, model_dir: str, model_config: ModelConfig,
                mapping_config: MappingConfig, version: int,
                endpoint_names,
                image_plan: Optional[image_graph.ImagePlan] = None) -> None:
    info = {
        "version": version,
        "model_dir": os.path.abspath(model_dir),
        "signatures": list(endpoint_names),
        "mapping": {
            "steps": mapping_config.steps,
            "lr": mapping_config.lr,
            "beta_1": mapping_config.beta_1,
            "beta_2": mapping_config.beta_2,
            "epsilon": mapping_config.epsilon,
            "lambda": mapping_config.lambda_weight,
            "restarts": mapping_config.restarts,
            "seed": mapping_config.seed,
            "discrimination_loss": mapping_config.discrimination_loss,
            "score": mapping_config.score,
            "mode": mapping_config.mode,
            "kappa": mapping_config.kappa,
        },
        "model_config": dataclasses.asdict(model_config),
        "score_images": (None if image_plan is None
                         else image_plan.describe()),
    }
    with open(path, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)


# The signature that scores like each non-iterative --mode.
_MODE_SIGNATURES = {"encoder": "score_fast", "hybrid": "score_hybrid"}


def _image_size(model_dir: str, data_config: DataConfig,
                image_shape: Optional[Tuple[int, int]]
                ) -> Tuple[Tuple[int, int], str]:
    """((H, W), where it came from) of the images score_images takes."""
    if image_shape is not None:
        return (int(image_shape[0]), int(image_shape[1])), "the export"
    if data_config.resize is not None:
        return tuple(data_config.resize), "--resize"
    trained = ModelDir(model_dir).flag_values()
    try:
        if trained.get("resize"):
            h, w = (int(v) for v in trained["resize"].split(","))
            return (h, w), f"--resize in {FLAGS_FILE}"
        if trained.get("dataset") == "synthetic_oct":
            return ((int(trained["oct_height"]), int(trained["oct_width"])),
                    f"--oct_height/--oct_width in {FLAGS_FILE}")
    except (KeyError, ValueError):
        pass
    p = data_config.effective_patch_size
    return (p, p), "the patch size (no training image size is recorded)"


def score_images_plan(scorer: Scorer, model_dir: str,
                      image_shape: Optional[Tuple[int, int]] = None
                      ) -> image_graph.ImagePlan:
    """The whole-image settings of `scorer` for the score_images signature.

    The image size is, in order: `image_shape`; the data config's resize
    (detector.json's or a --resize flag); the training's --resize or
    synthetic_oct size from the model dir's flags.cfg; else one patch.

    Raises:
      ConfigError: the images would be smaller than a patch, or tile into
        more patches than --max_patches_per_image.
    """
    dc, ec = scorer.data_config, scorer.eval_config
    map_reference = scorer.applied_map_reference()
    (h, w), source = _image_size(model_dir, dc, image_shape)
    threshold = scorer.recorded_threshold()
    plan = image_graph.ImagePlan(
        image_shape=(h, w, scorer.model_config.channels),
        model_size=scorer.model_config.image_size,
        patch_size=dc.effective_patch_size, stride=dc.effective_patch_stride,
        roi=dc.roi, min_coverage=dc.roi_min_coverage,
        intensity_norm=dc.intensity_norm, aggregate=ec.aggregate,
        topk=ec.topk, map_sigma=float(ec.map_sigma),
        map_smoothing=ec.map_smoothing,
        map_reference=map_reference,
        mode=scorer.mapping_config.mode,
        threshold=None if threshold is None else threshold.value,
        threshold_rule="" if threshold is None else threshold.rule)
    count = len(plan.grid)
    if dc.max_patches_per_image and count > dc.max_patches_per_image:
        raise ConfigError(
            f"score_images would cut each {h}x{w} image into {count} patches "
            f"of {plan.patch_size}x{plan.patch_size} at stride {plan.stride},"
            f" more than --max_patches_per_image={dc.max_patches_per_image}."
            f" Export a smaller image size (--resize=H,W), a larger "
            f"--patch_stride, or raise --max_patches_per_image={count}.")
    logging.info(
        "score_images takes %dx%d images (size from %s): %d patch positions "
        "of %d px at stride %d, roi %s, intensity norm %s, aggregate %s, map "
        "sigma %g (%s), mode %s, threshold %s.", h, w, source, count,
        plan.patch_size, plan.stride, plan.roi, plan.intensity_norm,
        plan.aggregate, plan.map_sigma, plan.map_smoothing, plan.mode,
        "none recorded (is_anomalous = -1)" if threshold is None else
        f"{threshold.value:.6g} ({threshold.rule})")
    return plan


def _scoring_mode(model_dir: str, mapping_config: Optional[MappingConfig],
                  overrides: Optional[Collection[str]]) -> str:
    """The mapping mode `Scorer.from_model_dir` will resolve to."""
    given = mapping_config or MappingConfig()
    detector = detector_lib.load_detector(model_dir)
    if detector is None:
        return given.mode
    explicit = (overrides if overrides is not None
                else detector_lib.SETTING_KEYS if mapping_config else ())
    return given.mode if "mapping.mode" in explicit else detector.mapping.mode


def _lock(path: str):
    """Creates `path` and holds an exclusive flock on it; returns the fd."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def remove_stale_temp_dirs(export_dir: str, before: float) -> List[str]:
    """Removes the temp folders of exports that died; returns their paths.

    A `.tmp-anogan-export-*` folder is stale when its `.lock` is not held
    (the exporting process is gone: locks die with their process, even on
    kill -9), or, without a lock file, when it was last modified before
    `before` (the start of the current run). Folders of running exports
    are left alone.

    Args:
      export_dir: The export base folder.
      before: A time.time() value; unlocked folders older than it go.
    """
    removed = []
    try:
        names = sorted(os.listdir(export_dir))
    except OSError:
        return removed
    for name in names:
        path = os.path.join(export_dir, name)
        if not name.startswith(TEMP_PREFIX) or not os.path.isdir(path):
            continue
        lock_path = os.path.join(path, _LOCK_FILE)
        fd = None
        try:
            if os.path.exists(lock_path) and fcntl is not None:
                fd = os.open(lock_path, os.O_RDWR)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a running export holds it
            elif os.path.getmtime(path) >= before:
                continue
            shutil.rmtree(path, ignore_errors=True)
            if not os.path.exists(path):
                removed.append(path)
        except OSError:
            continue
        finally:
            if fd is not None:
                os.close(fd)
    if removed:
        logging.warning("Removed %d stale temp folder(s) left by interrupted "
                        "exports: %s", len(removed), ", ".join(removed))
    return removed


def export_model(model_dir: str, export_dir: str,
                 mapping_config: Optional[MappingConfig] = None,
                 version: int = 0, export_xla: bool = False,
                 data_config: Optional[DataConfig] = None,
                 eval_config: Optional[EvalConfig] = None,
                 overrides: Optional[Collection[str]] = None,
                 image_shape: Optional[Tuple[int, int]] = None) -> str:
    """Exports the model in `model_dir` to `<export_dir>/<version>/`.

    Signatures (mapping constants fixed from the mapping settings):
    `serving_default` (float32 images in [-1, 1]), `serving_uint8` (uint8
    images in [0, 255]), `generate` (latent -> images), `score_fast` and
    `score_hybrid` when the model dir has an encoder, and `score_images` /
    `score_images_uint8` (whole images, the detector end to end); with
    `export_xla` also `serving_default_xla`, `serving_uint8_xla` and
    `score_hybrid_xla`, for in-process use only (TF Serving has no XLA).

    The settings are layered like anogan-score's (`Scorer.from_model_dir`):
    the model dir's detector.json under the configs given here.

    Args:
      model_dir: A trained model dir (config.json, generator.keras,
        discriminator.keras; detector.json and encoder.keras when present).
      export_dir: The base folder TF Serving watches (created if missing).
      mapping_config: Mapping steps, lr, lambda, restarts, seed, score, ...
        (`mode` "encoder" or "hybrid" needs the model dir's encoder and
        names the signature that scores like the detector, score_fast or
        score_hybrid; serving_default is the iterative mapping in every
        mode, score_images maps in the mode; `batch_size` and
        `jit_compile` do not apply: any batch size is accepted and TF
        Serving has no XLA). None: detector.json's (or the defaults).
      version: The version folder; 0 picks 1 + the highest existing one.
      export_xla: Also export the XLA-compiled `*_xla` twins.
      data_config: Patching, ROI, intensity norm and resize for
        score_images (None: detector.json's).
      eval_config: Aggregate, topk and map smoothing (None: detector.json's).
      overrides: detector setting keys whose given values win over
        detector.json (see `Scorer.from_model_dir`; None: every field of
        each config given).
      image_shape: (H, W) of the images score_images takes; None: the
        training size (see `score_images_plan`).

    Returns:
      The written version folder, `<export_dir>/<version>`.

    Raises:
      ConfigError: the model dir is missing or corrupt, `export_dir` is a
        file (or inside one) or cannot be created, the version exists
        already or is negative, the mapping mode needs an encoder, the
        score_images settings do not fit the image size, or the disk is
        full (the message names `export_dir`; no partial version is left).
    """
    run_start = time.time()
    if version < 0:
        raise ConfigError(f"version must be >= 0 (0: the next integer), got "
                          f"{version}.")
    _check_export_dir(export_dir)
    # A missing model dir is Scorer.from_model_dir's error to report.
    encoder = load_encoder(model_dir) if os.path.isdir(model_dir) else None
    mode = (_scoring_mode(model_dir, mapping_config, overrides)
            if os.path.isdir(model_dir) else "iterative")
    if mode != "iterative" and encoder is None:
        raise ConfigError(
            f"--mode={mode} is scored by the signature "
            f"{_MODE_SIGNATURES[mode]}, which needs the f-AnoGAN encoder, "
            f"but {model_dir} has no encoder.keras. Train one with "
            f"`anogan-train --stage=encoder --model_dir={model_dir}`, or "
            f"export with --mode=iterative.")
    if overrides is None:  # the configs given win, as from_model_dir does
        given = {"mapping": mapping_config is not None,
                 "patches": data_config is not None,
                 "image_score": eval_config is not None}
        overrides = [k for k in detector_lib.SETTING_KEYS
                     if given[k.split(".", 1)[0]]]
    # EvalConfig has no default output dir; export writes no score files.
    scorer = Scorer.from_model_dir(model_dir, data_config, mapping_config,
                                   eval_config or EvalConfig(output_dir=""),
                                   overrides)
    mapping_config = scorer.mapping_config
    model_config = scorer.model_config
    generator, discriminator = scorer.generator, scorer.discriminator
    if mapping_config.mode != "iterative":
        # serving_default is always the paper's iterative score; the
        # encoder modes are their own signatures.
        logging.info(
            "The detector scores in --mode=%s: clients call the signature "
            "%s (or score_images); serving_default keeps the paper's "
            "iterative mapping (%d steps).", mapping_config.mode,
            _MODE_SIGNATURES[mapping_config.mode], mapping_config.steps)
    plan = score_images_plan(scorer, model_dir, image_shape)
    if version == 0:
        version = next_version(export_dir)
    final_dir = os.path.join(export_dir, str(version))
    if os.path.exists(final_dir):
        raise ConfigError(
            f"{final_dir} already exists; an exported version is never "
            f"overwritten. Pass --version={next_version(export_dir)} (or "
            f"--version=0 for the next one), or delete the folder.")
    try:
        os.makedirs(export_dir, exist_ok=True)
    except OSError as e:
        raise ConfigError(
            f"Cannot create the export folder {export_dir!r}: {e}. Pass an "
            f"--export_dir you can write to.") from e
    remove_stale_temp_dirs(export_dir, run_start)

    params = MappingParams.create(model_config, mapping_config)
    context = signatures.ExportContext(
        generator=generator, discriminator=discriminator,
        model_config=model_config, params=params,
        restarts=mapping_config.restarts, encoder=encoder, image_plan=plan)
    functions = signatures.build_endpoints(context, export_xla=export_xla)

    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.track(discriminator)
    if encoder is not None:
        archive.track(encoder)
    for name, fn in functions.items():
        archive.add_endpoint(name, fn)

    # A hidden temp folder on the same file system, so the rename is atomic
    # and TF Serving never sees (or loads) a partial version. Its lock tells
    # a later export whether this one is still running.
    # A full disk is one ConfigError naming export_dir; the temp folder
    # goes, the versions exported before stay as they were.
    with disk_full_errors(export_dir, f"version {version}", "--export_dir"):
        tmp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=export_dir)
    lock_fd = _lock(os.path.join(tmp_dir, _LOCK_FILE))
    try:
        staged = os.path.join(tmp_dir, str(version))
        with disk_full_errors(export_dir, f"version {version}",
                              "--export_dir"):
            archive.write_out(staged, verbose=False)
            _write_warmup(os.path.join(staged, WARMUP_FILE), model_config,
                          plan)
            _write_info(os.path.join(staged, EXPORT_INFO_FILE), model_dir,
                        model_config, mapping_config, version, functions,
                        plan)
        if os.path.exists(final_dir):  # another export won the race
            raise ConfigError(
                f"{final_dir} appeared while exporting; it is left untouched. "
                f"Re-run with --version=0 for the next free version.")
        os.rename(staged, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        os.close(lock_fd)
    logging.info("Exported %s (signatures: %s)", final_dir,
                 ", ".join(functions))
    return final_dir
