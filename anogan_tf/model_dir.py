"""The model dir: the one owner of its layout (DESIGN.md's contract).

  config.json              ModelConfig, the architecture (config.py's format)
  flags.cfg                resolved flags of the GAN stage, replayable with
                           --flagfile (flags_encoder.cfg: the encoder stage)
  generator.keras          the selected epoch's G and D (`selection.json`
  discriminator.keras      says which and why); scoring and export load them
  encoder.keras            the f-AnoGAN encoder, once trained
  checkpoints/             the GAN stage's training state, a
                           tf.train.CheckpointManager's files: ckpt-<epoch>
                           (.index, .data-*) and `checkpoint`, plus
                           state.json, a readable copy of the newest
                           checkpoint's record (resume reads the checkpoint)
  checkpoints_encoder/     the same for the encoder stage
  samples/                 fixed-z sample grids, epoch_<epoch>.png
  logs/                    TensorBoard (logs/encoder: the encoder stage)
  history.json             every finished GAN epoch's metrics, kept across
                           resumes (history_encoder.json: the encoder)
  detector.json            the scoring settings and calibrated threshold
                           (`scoring.detector`)
  .lock                    held by a running anogan-train; holds its pid

Writes are atomic (a temp file in the same folder, then `os.replace`), so a
killed run never leaves a half-written file under a final name. A
checkpoint counts once the CheckpointManager's `checkpoint` state file (which
TF writes last, atomically) lists it; resume takes the newest listed
checkpoint that reads back completely and falls back to older ones.
Checkpoints of earlier anogan_tf versions (`ckpt-<epoch>.weights.h5` with a
`state.json` that points at it) are still resumed; the first new checkpoint
replaces them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import os
import re
import shutil
from typing import Any, Dict, Iterator, List, Mapping, Optional

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from anogan_tf import config as config_lib
from anogan_tf.config import ConfigError, ModelConfig

__all__ = [
    "ModelDir",
    "disk_full_errors",
    "StageCheckpoint",
    "STAGES",
    "CONFIG_FILE",
    "FLAGS_FILE",
    "MODEL_FILES",
    "GENERATOR_FILE",
    "DISCRIMINATOR_FILE",
    "ENCODER_FILE",
    "SELECTION_FILE",
    "DETECTOR_FILE",
    "HISTORY_FILE",
    "STATE_FILE",
    "CHECKPOINT_DIR",
    "SAMPLES_DIR",
    "LOGS_DIR",
    "LOCK_FILE",
    "read_history_file",
    "load_keras_file",
]

STAGES = ("gan", "encoder")

CONFIG_FILE = config_lib.MODEL_CONFIG_FILE
GENERATOR_FILE = "generator.keras"
DISCRIMINATOR_FILE = "discriminator.keras"
ENCODER_FILE = "encoder.keras"
# The trained models by role.
MODEL_FILES = {"generator": GENERATOR_FILE,
               "discriminator": DISCRIMINATOR_FILE,
               "encoder": ENCODER_FILE}
SELECTION_FILE = "selection.json"
DETECTOR_FILE = "detector.json"
SAMPLES_DIR = "samples"
LOCK_FILE = ".lock"
# The GAN stage's names; the encoder stage's add "_encoder" (`_stage_name`).
FLAGS_FILE = "flags.cfg"
HISTORY_FILE = "history.json"
CHECKPOINT_DIR = "checkpoints"
LOGS_DIR = "logs"
# Inside a checkpoint folder.
STATE_FILE = "state.json"
_CHECKPOINT_NAME = "ckpt"
_TMP = ".tmp"  # suffix of a file being written (see `_atomic_write_text`)

# A file of a TF checkpoint (or of one being written) in a checkpoint folder.
_CHECKPOINT_PART = re.compile(
    rf"^{_CHECKPOINT_NAME}-(\d+)(\.index|\.data-\d+-of-\d+|_temp)$")
# What tf.train.Checkpoint.restore raises for a damaged or foreign
# checkpoint (a truncated file gives IndexError "Read less bytes").
_UNREADABLE = (tf.errors.OpError, ValueError, AssertionError, IndexError,
               KeyError)
_LEGACY_CHECKPOINT = re.compile(rf"^{_CHECKPOINT_NAME}-\d+\.weights\.h5$")


def _check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}.")
    return stage


def _stage_name(name: str, stage: str) -> str:
    """`name` for the GAN stage, with "_encoder" before its extension (or at
    its end) for the encoder stage: history.json -> history_encoder.json."""
    if _check_stage(stage) == "gan":
        return name
    root, ext = os.path.splitext(name)
    return f"{root}_{stage}{ext}"


# The files this module writes through `_atomic_write_text`, whose temp
# files a killed run can leave (a lock holder removes them).
_OWN_FILES = frozenset(
    [CONFIG_FILE, SELECTION_FILE, STATE_FILE] +
    [_stage_name(name, stage) for name in (FLAGS_FILE, HISTORY_FILE)
     for stage in STAGES])


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _is_disk_full(error: BaseException) -> bool:
    """An OSError ENOSPC/EDQUOT, or TF's error for one (TF raises its
    ResourceExhaustedError or another OpError, not OSError)."""
    if isinstance(error, OSError):
        return error.errno in _NO_SPACE
    return (isinstance(error, tf.errors.OpError) and
            ("No space left on device" in str(error) or
             "Disk quota exceeded" in str(error)))


@contextlib.contextmanager
def disk_full_errors(folder: str, what: str, flag: str):
    """Turns a full disk (or quota) while writing into one clear ConfigError.

    Args:
      folder: The folder being written to, named in the message.
      what: What was being written, e.g. "the GAN checkpoint".
      flag: The flag that chose the folder, e.g. "--model_dir".

    Raises:
      ConfigError: the body failed with ENOSPC/EDQUOT; other errors pass.
    """
    try:
        yield
    except (OSError, tf.errors.OpError) as e:
        if not _is_disk_full(e):
            raise
        raise ConfigError(
            f"No space left on device while writing {what} in {folder}. "
            f"Free space on that file system (or pass a {flag} on another "
            f"one) and re-run; what was written there before is untouched. "
            f"({type(e).__name__}: {str(e).splitlines()[0][:300]})") from e


def _atomic_write_text(path: str, text: str) -> None:
    """Writes `path` through a temp file in the same folder and os.replace
    (a full disk: ConfigError, the temp file removed)."""
    tmp = path + _TMP
    try:
        with disk_full_errors(os.path.dirname(path) or ".",
                              os.path.basename(path), "--model_dir"):
            with open(tmp, "w") as f:
                f.write(text)
    except ConfigError:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise
    os.replace(tmp, path)


def _atomic_write_json(path: str, obj) -> None:
    _atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def _keras_temp_path(path: str) -> str:
    """The hidden name a .keras file is written under before os.replace
    (Keras needs the .keras ending)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name[:-len('.keras')]}{_TMP}.keras")


def read_history_file(path: str) -> List[Dict[str, Any]]:
    """Per-epoch records [{"epoch": 1, "d_loss": ..}, ..] of a history file.

    Reads the current format ({"epochs": [...]}) and the JSON-lines files
    of earlier versions (one {"initial_epoch": k, metric: [values]} line per
    run; a later run's records replace an earlier one's).

    Args:
      path: A history.json (or history_encoder.json).

    Returns:
      The records in epoch order; [] when the file does not exist.

    Raises:
      ValueError: the file is not a history file.
    """
    if not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("epochs"), list):
            return list(doc["epochs"])
    except json.JSONDecodeError:
        pass
    records = {}
    try:
        for line in text.splitlines():
            if not line.strip():
                continue
            run = json.loads(line)
            start = int(run.pop("initial_epoch", 0))
            for key, values in run.items():
                for i, value in enumerate(values):
                    records.setdefault(start + i + 1, {"epoch": start + i + 1})[
                        key] = value
    except (json.JSONDecodeError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(
            f"{path} is not a history file ({e}). Move it aside; the next "
            f"epoch starts a new one.") from e
    return [records[k] for k in sorted(records)]


def load_keras_file(path: str, model_dir: str, kind: Optional[type] = None):
    """Loads one `.keras` file of a model dir, with errors that say the fix.

    Args:
      path: The file.
      model_dir: The model dir it belongs to (for the messages).
      kind: The class the loaded model must be, or None.

    Returns:
      The model (not compiled).

    Raises:
      ConfigError: the file is missing, unreadable, or not of class `kind`.
    """
    import anogan_tf.models  # noqa: F401  (registers the model classes)
    if not os.path.isfile(path):
        raise ConfigError(
            f"No {os.path.basename(path)} in model_dir {model_dir!r} (looked "
            f"for {path}). Pass the folder that `anogan-train --model_dir=...` "
            f"wrote after training finished, or train a model first.")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises many types for a damaged archive
        raise ConfigError(
            f"Could not load {path}: {type(e).__name__}: {e}. The file is "
            f"corrupt or from another anogan_tf version; re-run anogan-train "
            f"with --model_dir={model_dir} to rewrite it.") from e
    if kind is not None and not isinstance(model, kind):
        raise ConfigError(f"{path} holds a {type(model).__name__}, expected a "
                          f"{kind.__name__}.")
    return model


class _JsonRecord(tf.train.experimental.PythonState):
    """A JSON-serialisable dict saved inside a tf.train.Checkpoint."""

    def __init__(self):
        self.value: Dict[str, Any] = {}

    def serialize(self):
        return json.dumps(self.value)

    def deserialize(self, string_value):
        if hasattr(string_value, "numpy"):
            string_value = string_value.numpy()
        if isinstance(string_value, bytes):
            string_value = string_value.decode("utf-8")
        self.value = json.loads(string_value)


def _trackable(name: str, obj):
    """What a checkpoint saves for one training object.

    Keras models and optimizers are saved as the ordered list of their
    variables: tf.train.Checkpoint does not see Keras 3 layers held in
    Python lists (G's BatchNorm statistics would be lost), and variable
    paths carry process-dependent auto-names ("adam_3"). The order is fixed
    by the architecture, which config.json pins.
    """
    if isinstance(obj, keras.random.SeedGenerator):
        return obj.state
    if isinstance(obj, keras.optimizers.Optimizer) and not obj.built:
        raise ValueError(f"Checkpoint item {name!r}: build the optimizer "
                         f"before checkpointing it (its slots do not exist "
                         f"yet).")
    if hasattr(obj, "variables") and not isinstance(obj, tf.Variable):
        return list(obj.variables)
    return obj


class StageCheckpoint:
    """One training stage's checkpoints: a tf.train.CheckpointManager over
    the stage's models, optimizers, SeedGenerator(s) and epoch counter, plus
    a small JSON record (the model selection, the epoch's logs).

    Build it with `ModelDir.checkpoint`. Everything restorable lives in the
    checkpoint; `state.json` next to it is a readable copy of the newest
    record, written after the checkpoint.

    Attributes:
      directory: The checkpoint folder.
      manager: The tf.train.CheckpointManager.
      epoch: int64 tf.Variable, the finished epochs of the checkpoint.
    """

    def __init__(self, directory: str, items: Mapping[str, Any],
                 keep: int = 2):
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}.")
        self.directory = directory
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self._record = _JsonRecord()
        self._record_read = False
        self._items = {name: _trackable(name, obj)
                       for name, obj in items.items() if obj is not None}
        reserved = {"epoch", "record", "save_counter"} & set(self._items)
        if reserved:
            raise ValueError(f"Checkpoint item names {sorted(reserved)} are "
                             f"reserved.")
        self.checkpoint = tf.train.Checkpoint(
            epoch=self.epoch, record=self._record, **self._items)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, directory, max_to_keep=keep,
            checkpoint_name=_CHECKPOINT_NAME)

    @property
    def state_path(self) -> str:
        return os.path.join(self.directory, STATE_FILE)

    @property
    def checkpoints(self) -> List[str]:
        """The prefixes the manager lists, oldest first."""
        return list(self.manager.checkpoints)

    @property
    def record(self) -> Dict[str, Any]:
        """The record of the last checkpoint restored or saved; before
        either, that of the newest readable checkpoint on disk ({} if
        none)."""
        if not self._record_read:
            self._record.value = self._peek_record()
            self._record_read = True
        return dict(self._record.value)

    def save(self, epoch: int, record: Mapping[str, Any]) -> str:
        """Checkpoints the training state as finished epoch `epoch`.

        Args:
          epoch: Finished epochs (the checkpoint is ckpt-<epoch>).
          record: JSON-serialisable dict stored with it (e.g. "selected",
            "logs").

        Returns:
          The checkpoint prefix.
        """
        self.epoch.assign(int(epoch))
        self._record.value = json.loads(json.dumps(dict(record)))
        self._record_read = True
        with disk_full_errors(self.directory, f"checkpoint {int(epoch)}",
                              "--model_dir"):
            path = self.manager.save(checkpoint_number=int(epoch))
        _atomic_write_json(self.state_path, {
            "epoch": int(epoch), "checkpoint": os.path.basename(path),
            **self._record.value})
        for name in os.listdir(self.directory):
            if _LEGACY_CHECKPOINT.match(name):  # replaced by this format
                os.remove(os.path.join(self.directory, name))
        return path

    def restore(self, legacy_model: Optional[keras.Model] = None) -> int:
        """Restores the newest complete checkpoint into the tracked objects.

        Tries the listed checkpoints newest first (a damaged one is skipped
        with a warning), removes the files of checkpoints a killed run did
        not finish, and reads an earlier version's checkpoint through
        `legacy_model.load_weights` when no new one exists.

        Args:
          legacy_model: The keras.Model whose weights file (GAN or encoder
            trainer, optimizers built) an earlier version saved; None: such
            checkpoints are refused.

        Returns:
          The restored checkpoint's finished epochs (0: no checkpoint).

        Raises:
          ConfigError: checkpoints exist but none can be restored; the
            message lists why and how to proceed.
        """
        candidates = self._candidates()
        if not candidates:
            legacy = self._legacy_state()
            if legacy is None:
                return 0
            return self._restore_legacy(legacy, legacy_model)
        failures = []
        for prefix in candidates:
            try:
                self.checkpoint.restore(prefix).assert_consumed()
            except _UNREADABLE as e:
                reason = str(e).strip().splitlines()[0][:300]
                failures.append(f"{os.path.basename(prefix)}: "
                                f"{type(e).__name__}: {reason}")
                logging.warning("Checkpoint %s is unreadable (%s); trying an "
                                "older one.", prefix, failures[-1])
                continue
            self._record_read = True
            epoch = int(self.epoch.numpy())
            self._remove_unfinished(epoch)
            if failures:
                logging.warning(
                    "Resuming from %s (epoch %d), the newest readable "
                    "checkpoint; newer ones were damaged: %s", prefix, epoch,
                    "; ".join(failures))
            return epoch
        raise ConfigError(
            f"Cannot resume from {self.directory}: none of its checkpoints "
            f"can be restored ({'; '.join(failures)}). They are damaged, or "
            f"were written for another architecture or other training flags "
            f"(e.g. --g_ema). Resume with the run's own flags "
            f"(--flagfile=<model_dir>/flags.cfg), move {self.directory} "
            f"aside to train this stage from scratch, or pass a new "
            f"--model_dir.")

    def _candidates(self) -> List[str]:
        """Checkpoint prefixes to try, newest first: the manager's list, or
        (its state file lost) every ckpt-<n>.index on disk."""
        listed = self.checkpoints
        if listed or not os.path.isdir(self.directory):
            return listed[::-1]
        numbers = sorted(
            (int(m.group(1)) for m in map(_CHECKPOINT_PART.match,
                                          os.listdir(self.directory))
             if m and m.group(2) == ".index"), reverse=True)
        return [os.path.join(self.directory, f"{_CHECKPOINT_NAME}-{n}")
                for n in numbers]

    def _remove_unfinished(self, restored_epoch: int) -> None:
        """Deletes the files of checkpoints newer than the restored one that
        the manager does not list: a save killed before its commit."""
        listed = {os.path.basename(p) for p in self.checkpoints}
        for name in os.listdir(self.directory):
            m = _CHECKPOINT_PART.match(name)
            if (not m or int(m.group(1)) <= restored_epoch or
                    f"{_CHECKPOINT_NAME}-{m.group(1)}" in listed):
                continue
            path = os.path.join(self.directory, name)
            logging.info("Removing %s, left by a checkpoint that was never "
                         "finished.", path)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)

    def _peek_record(self) -> Dict[str, Any]:
        for prefix in self._candidates():
            peek = _JsonRecord()
            try:
                tf.train.Checkpoint(record=peek).restore(
                    prefix).expect_partial()
            except _UNREADABLE:
                continue
            return peek.value
        legacy = self._legacy_state()
        if legacy is None:
            return {}
        return {k: legacy[k] for k in ("selected", "logs") if k in legacy}

    def _legacy_state(self) -> Optional[dict]:
        """An earlier version's state.json (pointing at a .weights.h5), or
        None."""
        try:
            with open(self.state_path) as f:
                state = json.load(f)
        except (OSError, ValueError):
            return None
        if (isinstance(state, dict) and
                str(state.get("checkpoint", "")).endswith(".weights.h5")):
            return state
        return None

    def _restore_legacy(self, state: dict,
                        model: Optional[keras.Model]) -> int:
        path = os.path.join(self.directory, str(state["checkpoint"]))
        advice = (f"Move {self.directory} aside to train this stage from "
                  f"scratch, or pass a new --model_dir.")
        if model is None:
            raise ConfigError(
                f"{self.directory} holds a checkpoint of an earlier anogan_tf "
                f"version ({path}) that this caller cannot read. {advice}")
        try:
            model.load_weights(path)
            epoch = int(state["epoch"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"Cannot resume from {path} (a checkpoint of an earlier "
                f"anogan_tf version): {type(e).__name__}: {e}. It is damaged "
                f"or was written for another architecture. {advice}") from e
        seed = self._items.get("seed")
        if "seed_state" in state and seed is not None:
            seed.assign(np.asarray(state["seed_state"], dtype=seed.dtype))
        self.epoch.assign(epoch)
        self._record.value = {k: state[k] for k in ("selected", "logs")
                              if k in state}
        self._record_read = True
        logging.info("Resuming from %s, a checkpoint of an earlier version; "
                     "the next checkpoint replaces it.", path)
        return epoch


# The model dirs this process has locked: realpath -> [pid, fd, depth].
_HELD: Dict[str, List[int]] = {}


@dataclasses.dataclass(frozen=True)
class ModelDir:
    """A model dir's layout and its reads and writes.

    Attributes:
      path: The folder (it need not exist yet).
    """

    path: str

    def __post_init__(self):
        object.__setattr__(self, "path", os.fspath(self.path or ""))
        if not self.path:
            raise ConfigError(
                "model_dir is empty. Pass --model_dir=<folder> (anogan-train "
                "creates it).")

    def __fspath__(self) -> str:
        return self.path

    def __str__(self) -> str:
        return self.path

    # --- paths ---------------------------------------------------------------

    def file(self, name: str) -> str:
        """`<model_dir>/<name>`."""
        return os.path.join(self.path, name)

    @property
    def config_path(self) -> str:
        return self.file(CONFIG_FILE)

    @property
    def selection_path(self) -> str:
        return self.file(SELECTION_FILE)

    @property
    def detector_path(self) -> str:
        return self.file(DETECTOR_FILE)

    @property
    def samples_dir(self) -> str:
        return self.file(SAMPLES_DIR)

    @property
    def lock_path(self) -> str:
        return self.file(LOCK_FILE)

    def model_path(self, role: str) -> str:
        """The .keras file of "generator", "discriminator" or "encoder"."""
        if role not in MODEL_FILES:
            raise ValueError(f"role must be one of {sorted(MODEL_FILES)}, got "
                             f"{role!r}.")
        return self.file(MODEL_FILES[role])

    def flags_path(self, stage: str = "gan") -> str:
        return self.file(_stage_name(FLAGS_FILE, stage))

    def history_path(self, stage: str = "gan") -> str:
        return self.file(_stage_name(HISTORY_FILE, stage))

    def checkpoint_dir(self, stage: str = "gan") -> str:
        return self.file(_stage_name(CHECKPOINT_DIR, stage))

    def logs_dir(self, stage: str = "gan") -> str:
        _check_stage(stage)
        return self.file(LOGS_DIR if stage == "gan"
                         else os.path.join(LOGS_DIR, stage))

    def exists(self) -> bool:
        return os.path.isdir(self.path)

    def create(self) -> "ModelDir":
        os.makedirs(self.path, exist_ok=True)
        return self

    # --- config.json and flags.cfg -------------------------------------------

    def read_config(self) -> ModelConfig:
        """The ModelConfig in config.json.

        Raises:
          ConfigError: the file is missing or not a valid ModelConfig.
        """
        return config_lib.load_model_config(self.path)

    def write_config(self, model_config: ModelConfig) -> str:
        """Writes config.json atomically; returns its path."""
        return config_lib.save_model_config(model_config, self.path)

    def read_flags(self, stage: str = "gan") -> Optional[str]:
        """The stage's resolved flags, or None when none were written."""
        try:
            with open(self.flags_path(stage)) as f:
                return f.read()
        except FileNotFoundError:
            return None

    def flag_values(self, stage: str = "gan") -> Dict[str, str]:
        """{name: value} of the stage's `--name=value` lines in flags.cfg
        ({} when none were written); boolean `--name` lines are skipped."""
        out = {}
        for line in (self.read_flags(stage) or "").splitlines():
            line = line.strip()
            if line.startswith("--") and "=" in line:
                name, value = line[2:].split("=", 1)
                out[name] = value
        return out

    def write_flags(self, flags_text: str, stage: str = "gan") -> str:
        """Writes the stage's resolved flags atomically; returns the path."""
        path = self.flags_path(stage)
        self.create()
        _atomic_write_text(path, flags_text)
        return path

    def prepare(self, model_config: ModelConfig,
                flags_text: Optional[str] = None) -> None:
        """Creates the dir for GAN training: checks or writes config.json,
        writes flags.cfg.

        Raises:
          ConfigError: the dir already holds a model of another
            architecture.
        """
        self.create()
        if os.path.exists(self.config_path):
            existing = self.read_config()
            if existing != model_config:
                diff = {k: (v, getattr(model_config, k))
                        for k, v in dataclasses.asdict(existing).items()
                        if getattr(model_config, k) != v}
                raise ConfigError(
                    f"{self.path} already holds a model with a different "
                    f"architecture (field: (saved, requested)) {diff}. Resume "
                    f"with the same flags (--flagfile={self.flags_path()}) or "
                    f"choose a new --model_dir.")
        self.write_config(model_config)
        if flags_text is not None:
            self.write_flags(flags_text)

    # --- the .keras files ----------------------------------------------------

    def has_model(self, role: str) -> bool:
        return os.path.isfile(self.model_path(role))

    def save_model(self, role: str, model: keras.Model) -> str:
        """Saves `model` as the role's .keras file atomically; returns the
        path. Readers see the old file or the new one, never a part."""
        path = self.model_path(role)
        tmp = _keras_temp_path(path)
        try:
            with disk_full_errors(self.path, os.path.basename(path),
                                  "--model_dir"):
                model.save(tmp)
        except ConfigError:
            with contextlib.suppress(OSError):
                os.remove(tmp)
            raise
        os.replace(tmp, path)
        return path

    def load_model(self, role: str, kind: Optional[type] = None):
        """Loads the role's .keras file (see `load_keras_file`)."""
        return load_keras_file(self.model_path(role), self.path, kind)

    def load_gan(self):
        """(ModelConfig, Generator, Discriminator) of a trained model dir.

        Raises:
          ConfigError: the dir, config.json or a model file is missing,
            damaged or inconsistent with config.json.
        """
        # models.io delegates here, so the classes are imported late.
        from anogan_tf.models.dcgan import Discriminator, Generator
        if not self.exists():
            raise ConfigError(
                f"model_dir {self.path!r} does not exist. Pass the folder "
                f"that `anogan-train --model_dir=...` wrote.")
        config = self.read_config()
        generator = self.load_model("generator", Generator)
        discriminator = self.load_model("discriminator", Discriminator)
        if (generator.image_size, generator.channels, generator.latent_dim) != (
                config.image_size, config.channels, config.latent_dim):
            raise ConfigError(
                f"{self.path}: {GENERATOR_FILE} ({generator.image_size}px, "
                f"{generator.channels} channels, latent {generator.latent_dim})"
                f" does not match {CONFIG_FILE} ({config.image_size}px, "
                f"{config.channels} channels, latent {config.latent_dim}).")
        return config, generator, discriminator

    def load_encoder(self):
        """The encoder, or None when none was trained."""
        if not self.has_model("encoder"):
            return None
        return self.load_model("encoder")

    # --- selection.json and history.json -------------------------------------

    def write_selection(self, selection: Mapping[str, Any]) -> str:
        """Writes selection.json (which epoch the .keras files are, and
        why) atomically; returns its path."""
        _atomic_write_json(self.selection_path, dict(selection))
        return self.selection_path

    def read_selection(self) -> Optional[Dict[str, Any]]:
        """selection.json, or None when there is none."""
        try:
            with open(self.selection_path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None

    def read_history(self, stage: str = "gan") -> List[Dict[str, Any]]:
        """The stage's per-epoch records (`read_history_file`)."""
        return read_history_file(self.history_path(stage))

    def append_history(self, record: Mapping[str, Any],
                       stage: str = "gan") -> None:
        """Adds one finished epoch's record ({"epoch": n, metric: value, ..})
        to the stage's history, replacing records of epoch n and later
        (left by a run killed before its checkpoint); written atomically."""
        epoch = int(record["epoch"])
        records = [r for r in self.read_history(stage)
                   if int(r.get("epoch", 0)) < epoch]
        records.append(dict(record))
        _atomic_write_json(self.history_path(stage), {"epochs": records})

    def trim_history(self, epochs: int, stage: str = "gan") -> None:
        """Drops records after epoch `epochs` (the restored checkpoint's):
        a run killed between its history and its checkpoint wrote them."""
        records = self.read_history(stage)
        kept = [r for r in records if int(r.get("epoch", 0)) <= epochs]
        if len(kept) != len(records):
            _atomic_write_json(self.history_path(stage), {"epochs": kept})

    # --- checkpoints ---------------------------------------------------------

    def checkpoint(self, stage: str, items: Mapping[str, Any],
                   keep: int = 2) -> StageCheckpoint:
        """The stage's CheckpointManager over `items`.

        Args:
          stage: "gan" (checkpoints/) or "encoder" (checkpoints_encoder/).
          items: name -> Keras model or layer (its variables), built Keras
            optimizer (its variables and slots), keras.random.SeedGenerator
            (its state) or variable; None values are skipped. The names
            and the objects' architecture must match at restore.
          keep: Checkpoints kept (max_to_keep).
        """
        return StageCheckpoint(self.checkpoint_dir(stage), items, keep)

    # --- the lock ------------------------------------------------------------

    @contextlib.contextmanager
    def lock(self, create: bool = True) -> Iterator["ModelDir"]:
        """Holds the dir's exclusive lock (a non-blocking `flock` on .lock,
        with this process's pid written into it) for the `with` block.

        Reentrant within one process. The kernel drops the lock when its
        process dies, so a lock file left by a killed run does not block.
        Entering also removes temp files a killed run left behind.

        Args:
          create: Create the dir if needed; False: a missing dir is neither
            created nor locked (the caller reports it).

        Raises:
          ConfigError: another process holds the lock; the message names
            it and the fix.
        """
        if not create and not self.exists():
            yield self
            return
        key = os.path.realpath(self.create().path)
        held = _HELD.get(key)
        if held is not None and held[0] == os.getpid():
            held[2] += 1
            try:
                yield self
            finally:
                held[2] -= 1
            return
        fd = self._acquire()
        _HELD[key] = [os.getpid(), fd, 1]
        try:
            self._remove_stale_temp_files()
            yield self
        finally:
            del _HELD[key]
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _acquire(self) -> int:
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            raise ConfigError(
                f"Model dir {self.path} is in use by another anogan-train run "
                f"(pid {holder or 'unknown'} holds {self.lock_path}). Wait "
                f"for it to finish (or stop it), or pass another "
                f"--model_dir.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
        return fd

    def _remove_stale_temp_files(self) -> None:
        """Deletes the temp files of writes a killed run never finished."""
        for folder in (self.path, self.checkpoint_dir("gan"),
                       self.checkpoint_dir("encoder")):
            if not os.path.isdir(folder):
                continue
            for name in os.listdir(folder):
                own = name.endswith(_TMP) and name[:-len(_TMP)] in _OWN_FILES
                if own or name.endswith(_TMP + ".keras"):
                    logging.info("Removing %s, left by a killed write.",
                                 os.path.join(folder, name))
                    os.remove(os.path.join(folder, name))

