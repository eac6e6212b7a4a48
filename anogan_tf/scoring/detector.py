"""The detector's settings in the model dir: `<model_dir>/detector.json`.

`anogan-train` records how the model is meant to be scored (the mapping,
the patching, the image score and its map), and `anogan-evaluate` rewrites
the file with the settings it used plus the threshold it calibrated, so that
`anogan-score --model_dir=M --inputs=DIR` scores like the evaluation did and
flags the same images. The layers, lowest first: the flag defaults, this
file, then flags given on the command line or in a flagfile
(`resolve_configs` does the layering; the binaries say which flags were
given).

The file (version 1)::

  {"version": 1, "written_by": "anogan-evaluate",
   "mapping": {MappingConfig fields},
   "patches": {PatchSettings fields},
   "image_score": {ImageScoreSettings fields},
   "threshold": null or {Threshold fields},
   "map_reference": null or {MapReference fields}}

The map reference (image_score.map_norm "depth", scoring/map_reference.py)
is fitted by anogan-evaluate on the same calibration images as the
threshold, and travels with it: anogan-train drops both when the models
change.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Collection, Dict, List, Optional, Tuple

import numpy as np

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig)
from anogan_tf.model_dir import DETECTOR_FILE
from anogan_tf.scoring.map_reference import MapReference

__all__ = ["DETECTOR_FILE", "DETECTOR_VERSION", "PatchSettings",
           "ImageScoreSettings", "Threshold", "Detector", "detector_path",
           "save_detector", "load_detector", "resolve_configs",
           "scale_differences", "carry_threshold", "SETTING_KEYS"]

DETECTOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class PatchSettings:
    """How full images become model inputs (the DataConfig part scoring needs).

    Attributes:
      patch_size: Side of the patches (0: the model's image_size).
      patch_stride: Patch stride (0: patch_size // 2).
      roi: "none" or "retina" (data/roi.py).
      roi_min_coverage: Fraction of a patch that must lie in the ROI.
      intensity_norm: "none" or "roi_percentile" (data/intensity.py).
      resize: (height, width) every full image is resized to, or None.
    """

    patch_size: int = 0
    patch_stride: int = 0
    roi: str = "none"
    roi_min_coverage: float = 0.5
    intensity_norm: str = "none"
    resize: Optional[Tuple[int, int]] = None


@dataclasses.dataclass(frozen=True)
class ImageScoreSettings:
    """How patch scores and residuals become an image score and a map.

    Attributes:
      aggregate: "max", "mean", "topk_mean" or "map_max" (EvalConfig).
      topk: k of "topk_mean".
      map_sigma: Gaussian sigma of the anomaly maps (0: raw).
      map_smoothing: "signed" or "absolute".
      map_norm: "none" or "depth" (scoring/map_reference.py).
    """

    aggregate: str = "max"
    topk: int = 3
    map_sigma: float = 0.0
    map_smoothing: str = "signed"
    map_norm: str = "none"


@dataclasses.dataclass(frozen=True)
class Threshold:
    """The calibrated image-score threshold: an image is anomalous when its
    score is >= `value` (the rule of anogan-evaluate's metrics).

    Attributes:
      value: The threshold on the image score.
      rule: How it was chosen (metrics.json "threshold_rule").
      n_calibration: Held-out normal images it was calibrated on (0: none,
        e.g. Youden's J on the test labels).
      target_fpr: The conformal target false-positive rate (0: not used).
      calibration_scores: Sorted image scores of the calibration images,
        from which anogan-score computes conformal p-values (empty: none).
    """

    value: float
    rule: str
    n_calibration: int = 0
    target_fpr: float = 0.0
    calibration_scores: Tuple[float, ...] = ()


@dataclasses.dataclass(frozen=True)
class Detector:
    """Everything `anogan-score` needs beyond the weights and config.json.

    Attributes:
      mapping: The mapping settings (mode, steps, lr, lambda, restarts,
        score, discrimination loss, XLA, conv form, batch size, ...).
      patches: Patching, ROI and intensity normalisation.
      image_score: Aggregation and map smoothing.
      threshold: The calibrated threshold, once anogan-evaluate has run.
      map_reference: The normal maps' per-depth statistics that
        image_score.map_norm "depth" applies, once anogan-evaluate has
        fitted them.
      written_by: The binary that wrote the file ("anogan-train",
        "anogan-evaluate").
      version: File format version.
    """

    mapping: MappingConfig
    patches: PatchSettings = PatchSettings()
    image_score: ImageScoreSettings = ImageScoreSettings()
    threshold: Optional[Threshold] = None
    written_by: str = ""
    version: int = DETECTOR_VERSION
    map_reference: Optional[MapReference] = None

    @classmethod
    def from_configs(cls, data_config: DataConfig,
                     mapping_config: MappingConfig, eval_config: EvalConfig,
                     threshold: Optional[Threshold] = None,
                     written_by: str = "",
                     map_reference: Optional[MapReference] = None
                     ) -> "Detector":
        """The record of the settings in these configs."""
        return cls(
            mapping=mapping_config,
            patches=PatchSettings(**{
                f.name: getattr(data_config, f.name)
                for f in dataclasses.fields(PatchSettings)}),
            image_score=ImageScoreSettings(**{
                f.name: getattr(eval_config, f.name)
                for f in dataclasses.fields(ImageScoreSettings)}),
            threshold=threshold, written_by=written_by,
            map_reference=map_reference)

    def settings(self) -> Dict[str, Any]:
        """{"<section>.<field>": value} of every recorded setting."""
        out = {}
        for section in ("mapping", "patches", "image_score"):
            record = getattr(self, section)
            for f in dataclasses.fields(record):
                out[f"{section}.{f.name}"] = getattr(record, f.name)
        return out


# Every setting the file records, as "<section>.<field>".
SETTING_KEYS: Tuple[str, ...] = tuple(
    f"{section}.{f.name}" for section, record in (
        ("mapping", MappingConfig), ("patches", PatchSettings),
        ("image_score", ImageScoreSettings))
    for f in dataclasses.fields(record))

# Settings that do not change a score (batch size is padded and masked; the
# conv forms compute the same function; XLA compiles the same graph).
_SCALE_FREE = frozenset({"mapping.batch_size", "mapping.jit_compile",
                         "mapping.conv_impl"})


def detector_path(model_dir: str) -> str:
    """`<model_dir>/detector.json`."""
    from anogan_tf.model_dir import ModelDir  # the layout's one owner
    return ModelDir(model_dir).detector_path


def _to_json(detector: Detector) -> Dict[str, Any]:
    raw = dataclasses.asdict(detector)
    if raw["patches"]["resize"] is not None:
        raw["patches"]["resize"] = list(raw["patches"]["resize"])
    if raw["threshold"] is not None:
        raw["threshold"]["calibration_scores"] = list(
            raw["threshold"]["calibration_scores"])
    raw["map_reference"] = (None if detector.map_reference is None else
                            detector.map_reference.to_json())
    return raw


def save_detector(detector: Detector, model_dir: str) -> str:
    """Writes `detector` to `<model_dir>/detector.json` atomically.

    Args:
      detector: The record.
      model_dir: An existing model dir.

    Returns:
      The path written.

    Raises:
      ConfigError: the threshold or a calibration score is not finite.
    """
    t = detector.threshold
    if t is not None and not (math.isfinite(t.value) and all(
            math.isfinite(c) for c in t.calibration_scores)):
        raise ConfigError(
            f"The detector's threshold ({t.value!r}) and calibration scores "
            f"must be finite to be recorded in {detector_path(model_dir)}; "
            f"got a NaN or infinite value. Check that the calibration images "
            f"have scored patches (e.g. inside the ROI).")
    path = detector_path(model_dir)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(_to_json(detector), f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)
    return path


def _fix_hint(path: str) -> str:
    return (f"Re-run `anogan-evaluate --model_dir={os.path.dirname(path)} "
            f"...` (or anogan-train) to rewrite it, or delete {path} to score "
            f"with the flag defaults.")


def _record(cls, raw: Any, path: str, section: str):
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{path}: \"{section}\" must be a JSON object, got "
            f"{type(raw).__name__} ({raw!r:.80}). {_fix_hint(path)}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{path}: \"{section}\" has unknown keys {unknown}; expected some "
            f"of {sorted(known)} (written by a different anogan_tf version?)."
            f" {_fix_hint(path)}")
    try:
        return cls(**raw)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path}: invalid \"{section}\": {e} "
                          f"{_fix_hint(path)}") from e


def load_detector(model_dir: str) -> Optional[Detector]:
    """Reads `<model_dir>/detector.json`.

    Args:
      model_dir: The model dir.

    Returns:
      The Detector, or None when the model dir has no detector.json (model
      dirs written before the file existed).

    Raises:
      ConfigError: the file is not valid JSON, has an unknown version or
        keys, or holds invalid settings; the message names the file and the
        fix.
    """
    path = detector_path(model_dir)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            raw = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path} is not readable JSON ({e}). "
                          f"{_fix_hint(path)}") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object, got "
                          f"{type(raw).__name__}. {_fix_hint(path)}")
    version = raw.get("version")
    if version != DETECTOR_VERSION:
        raise ConfigError(
            f"{path} has version {version!r}; this anogan_tf reads version "
            f"{DETECTOR_VERSION}. {_fix_hint(path)}")
    known = {f.name for f in dataclasses.fields(Detector)}
    unknown = sorted(set(raw) - known)
    if unknown or "mapping" not in raw:
        raise ConfigError(
            f"{path} has unknown keys {unknown} or lacks \"mapping\"; "
            f"expected the keys {sorted(known)}. {_fix_hint(path)}")
    patches = dict(raw.get("patches") or {})
    if patches.get("resize") is not None:
        resize = patches["resize"]
        if (not isinstance(resize, list) or len(resize) != 2 or
                not all(isinstance(v, int) for v in resize)):
            raise ConfigError(f"{path}: patches.resize must be null or "
                              f"[height, width], got {resize!r}. "
                              f"{_fix_hint(path)}")
        patches["resize"] = tuple(resize)
    threshold = raw.get("threshold")
    if threshold is not None:
        threshold = _record(Threshold, threshold, path, "threshold")
        try:
            scores = tuple(float(c) for c in threshold.calibration_scores)
            value = float(threshold.value)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{path}: the threshold and calibration scores "
                              f"must be numbers ({e}). {_fix_hint(path)}") from e
        threshold = dataclasses.replace(threshold, value=value,
                                        calibration_scores=tuple(sorted(scores)))
    reference = raw.get("map_reference")
    if reference is not None:
        if not isinstance(reference, dict):
            raise ConfigError(f"{path}: \"map_reference\" must be null or a "
                              f"JSON object. {_fix_hint(path)}")
        try:
            reference = MapReference.from_json(reference)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e
    return Detector(
        mapping=_record(MappingConfig, raw["mapping"], path, "mapping"),
        patches=_record(PatchSettings, patches, path, "patches"),
        image_score=_record(ImageScoreSettings, raw.get("image_score") or {},
                            path, "image_score"),
        threshold=threshold, written_by=str(raw.get("written_by", "")),
        version=version, map_reference=reference)


def resolve_configs(detector: Optional[Detector], data_config: DataConfig,
                    mapping_config: MappingConfig, eval_config: EvalConfig,
                    explicit: Collection[str]
                    ) -> Tuple[DataConfig, MappingConfig, EvalConfig,
                               Dict[str, str]]:
    """Layers the detector's settings under explicitly given ones.

    Args:
      detector: The model dir's Detector, or None (then the configs are
        returned unchanged).
      data_config, mapping_config, eval_config: Configs from the flags
        (defaults where a flag was not given).
      explicit: Keys of SETTING_KEYS whose flags were given (command line or
        flagfile); these keep the configs' values.

    Returns:
      (data_config, mapping_config, eval_config, source): the configs with
      every other recorded setting taken from the detector, and source, for
      every key of SETTING_KEYS, "flag", "detector.json" or "default".

    Raises:
      ConfigError: `explicit` names an unknown key, or the layered settings
        are inconsistent (e.g. a mapping mode with a score it cannot give).
    """
    unknown = sorted(set(explicit) - set(SETTING_KEYS))
    if unknown:
        raise ConfigError(f"Unknown detector setting(s) {unknown}; expected "
                          f"keys of SETTING_KEYS, e.g. 'mapping.steps'.")
    source = {k: ("flag" if k in explicit else
                  "default" if detector is None else DETECTOR_FILE)
              for k in SETTING_KEYS}
    if detector is None:
        return data_config, mapping_config, eval_config, source
    recorded = detector.settings()
    taken: Dict[str, Dict[str, Any]] = {"mapping": {}, "patches": {},
                                        "image_score": {}}
    for key in SETTING_KEYS:
        if source[key] == DETECTOR_FILE:
            section, name = key.split(".", 1)
            taken[section][name] = recorded[key]
    try:
        return (dataclasses.replace(data_config, **taken["patches"]),
                dataclasses.replace(mapping_config, **taken["mapping"]),
                dataclasses.replace(eval_config, **taken["image_score"]),
                source)
    except ConfigError as e:
        raise ConfigError(
            f"The flags given and {DETECTOR_FILE}'s settings do not fit "
            f"together: {e} Pass the related flags too, or neither.") from e


def scale_differences(recorded: Detector, current: Detector) -> List[str]:
    """Settings that put `current`'s scores on another scale than `recorded`'s.

    A recorded threshold and calibration scores only apply to scores
    computed the same way. Batch size, XLA and the conv form do not change a
    score; topk matters only for "topk_mean", and the map smoothing only for
    "map_max".

    Args:
      recorded: The detector the threshold was calibrated with.
      current: The settings scores are computed with now
        (`Detector.from_configs`).

    Returns:
      ["<key>: <recorded> -> <current>", ...], empty when the scales agree.
    """
    now, then = current.settings(), recorded.settings()
    aggregate = now["image_score.aggregate"]
    skip = set(_SCALE_FREE)
    if aggregate != "topk_mean":
        skip.add("image_score.topk")
    if aggregate != "map_max":
        skip |= {"image_score.map_sigma", "image_score.map_smoothing",
                 "image_score.map_norm"}
    return [f"{k}: {then[k]!r} -> {now[k]!r}" for k in SETTING_KEYS
            if k not in skip and not _same(then[k], now[k])]


def carry_threshold(old: Optional[Detector], new: Detector,
                    models_unchanged: bool) -> Tuple[Detector, str]:
    """`new` with `old`'s threshold when it still holds (anogan-train).

    A threshold holds while the models it was calibrated on are unchanged
    and scores are computed on the same scale (`scale_differences`).

    Args:
      old: The model dir's Detector before training, or None.
      new: The settings being recorded (no threshold).
      models_unchanged: No model the scores depend on was trained (no GAN
        epoch; for the encoder stage, also a mode that does not use E).

    Returns:
      (detector, note): the record to write, and "" or a sentence on the
      threshold kept or dropped (for the log).
    """
    if old is None or (old.threshold is None and old.map_reference is None):
        return new, ""
    differ = scale_differences(old, new)
    if models_unchanged and not differ:
        return (dataclasses.replace(new, threshold=old.threshold,
                                    map_reference=old.map_reference),
                f"Kept the calibrated threshold {old.threshold.value:.6g} "
                f"({old.threshold.rule})." if old.threshold is not None else
                "Kept the fitted map reference.")
    why = "; ".join(differ) if differ else "the models changed"
    return new, (f"Dropped the threshold anogan-evaluate recorded ({why}); "
                 f"re-run anogan-evaluate to calibrate one"
                 + (" and to fit the map reference (--map_norm=depth)."
                    if old.map_reference is not None else "."))


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        try:
            return bool(np.isclose(float(a), float(b), rtol=1e-9, atol=0.0))
        except (TypeError, ValueError):
            return False
    return a == b
