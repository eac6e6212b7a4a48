"""Exports a trained model dir as a versioned SavedModel for TF Serving.

  <export_dir>/<N>/saved_model.pb, variables/
  <export_dir>/<N>/assets.extra/tf_serving_warmup_requests
  <export_dir>/<N>/assets.extra/anogan_export.json

The SavedModel is written by `keras.export.ExportArchive` (which exports the
Keras 3 variables so that Session-based loaders such as the model server see
them initialised; a plain tf.Module does not: tensorflow/serving#2250) into a
hidden temp folder inside `export_dir` (TF Serving ignores names that are not
integers) and renamed to `<N>` only once complete, so a server polling
`export_dir` never loads half a model.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from typing import Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from anogan_tf.config import ConfigError, MappingConfig, ModelConfig
from anogan_tf.export import signatures
from anogan_tf.mapping.latent import MappingParams
from anogan_tf.models.io import (DISCRIMINATOR_FILE, ENCODER_FILE,
                                 GENERATOR_FILE, load_encoder, load_model_dir)

__all__ = [
    "export_model",
    "load_trained_models",
    "existing_versions",
    "next_version",
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

_VERSION_RE = re.compile(r"^[0-9]+$")


def load_trained_models(model_dir: str):
    """Loads (model_config, generator, discriminator, encoder or None).

    Raises:
      ConfigError: the model dir, its config.json or a model file is missing
        or unreadable, or the models do not match config.json.
    """
    model_config, generator, discriminator = load_model_dir(model_dir)
    # No encoder signature exists yet (see signatures.ENDPOINTS); loading it
    # here lets a later issue register score_fast/score_hybrid.
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


def _write_warmup(path: str, model_config: ModelConfig) -> None:
    """A TFRecord of PredictionLogs that TF Serving replays at load time."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = "serving_default"
    # Mid-grey and a gradient: valid inputs that run the whole mapping graph.
    shape = (WARMUP_BATCH,) + model_config.image_shape
    images = np.zeros(shape, np.float32)
    images[1] = np.linspace(-1.0, 1.0, int(np.prod(shape[1:])),
                            dtype=np.float32).reshape(shape[1:])
    request.inputs[signatures.IMAGES_KEY].CopyFrom(
        tf.make_tensor_proto(images, dtype=tf.float32))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        writer.write(log.SerializeToString())


def _write_info(path: str, model_dir: str, model_config: ModelConfig,
                mapping_config: MappingConfig, version: int,
                endpoint_names) -> None:
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
        },
        "model_config": dataclasses.asdict(model_config),
    }
    with open(path, "w") as f:
        json.dump(info, f, indent=2, sort_keys=True)


# The signature that scores like each non-iterative --mode.
_MODE_SIGNATURES = {"encoder": "score_fast", "hybrid": "score_hybrid"}


def export_model(model_dir: str, export_dir: str,
                 mapping_config: MappingConfig, version: int = 0,
                 export_xla: bool = False) -> str:
    """Exports the model in `model_dir` to `<export_dir>/<version>/`.

    Signatures (mapping constants fixed from `mapping_config`):
    `serving_default` (float32 images in [-1, 1]), `serving_uint8` (uint8
    images in [0, 255]) and `generate` (latent -> images); with `export_xla`
    also `serving_default_xla` and `serving_uint8_xla`, for in-process use
    only (TF Serving runs without XLA).

    Args:
      model_dir: A trained model dir (config.json, generator.keras,
        discriminator.keras).
      export_dir: The base folder TF Serving watches (created if missing).
      mapping_config: Mapping steps, lr, lambda, restarts, seed, score, ...
        (`mode` "encoder" or "hybrid" needs the model dir's encoder and
        names the signature that scores like the detector, score_fast or
        score_hybrid; serving_default is the iterative mapping in every
        mode; `batch_size` and `jit_compile` do not apply: any batch size
        is accepted and TF Serving has no XLA).
      version: The version folder; 0 picks 1 + the highest existing one.
      export_xla: Also export the XLA-compiled `*_xla` twins.

    Returns:
      The written version folder, `<export_dir>/<version>`.

    Raises:
      ConfigError: the model dir is missing or corrupt, `export_dir` is a
        file (or inside one) or cannot be created, the version exists
        already or is negative, or the mapping mode needs an encoder.
    """
    if version < 0:
        raise ConfigError(f"version must be >= 0 (0: the next integer), got "
                          f"{version}.")
    _check_export_dir(export_dir)
    model_config, generator, discriminator, encoder = load_trained_models(
        model_dir)
    if mapping_config.mode != "iterative":
        # serving_default is always the paper's iterative score; the
        # encoder modes are their own signatures.
        if encoder is None:
            raise ConfigError(
                f"--mode={mapping_config.mode} is scored by the signature "
                f"{_MODE_SIGNATURES[mapping_config.mode]}, which needs the "
                f"f-AnoGAN encoder, but {model_dir} has no encoder.keras. "
                f"Train one with `anogan-train --stage=encoder "
                f"--model_dir={model_dir}`, or export with --mode=iterative.")
        logging.info(
            "The detector scores in --mode=%s: clients call the signature "
            "%s; serving_default keeps the paper's iterative mapping (%d "
            "steps).", mapping_config.mode,
            _MODE_SIGNATURES[mapping_config.mode], mapping_config.steps)
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

    params = MappingParams.create(model_config, mapping_config)
    context = signatures.ExportContext(
        generator=generator, discriminator=discriminator,
        model_config=model_config, params=params,
        restarts=mapping_config.restarts, encoder=encoder)
    functions = signatures.build_endpoints(context, export_xla=export_xla)

    archive = keras.export.ExportArchive()
    archive.track(generator)
    archive.track(discriminator)
    if encoder is not None:
        archive.track(encoder)
    for name, fn in functions.items():
        archive.add_endpoint(name, fn)

    # A hidden temp folder on the same file system, so the rename is atomic
    # and TF Serving never sees (or loads) a partial version.
    tmp_dir = tempfile.mkdtemp(prefix=".tmp-anogan-export-", dir=export_dir)
    try:
        staged = os.path.join(tmp_dir, str(version))
        archive.write_out(staged, verbose=False)
        _write_warmup(os.path.join(staged, WARMUP_FILE), model_config)
        _write_info(os.path.join(staged, EXPORT_INFO_FILE), model_dir,
                    model_config, mapping_config, version, functions)
        if os.path.exists(final_dir):  # another export won the race
            raise ConfigError(
                f"{final_dir} appeared while exporting; it is left untouched. "
                f"Re-run with --version=0 for the next free version.")
        os.rename(staged, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    logging.info("Exported %s (signatures: %s)", final_dir,
                 ", ".join(functions))
    return final_dir
