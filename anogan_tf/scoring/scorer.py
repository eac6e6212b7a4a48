"""The Scorer: one trained detector, loaded once, that scores images.

`Scorer.from_model_dir(model_dir)` loads config.json, G, D and (when the
mode uses one) the f-AnoGAN encoder, layers the model dir's recorded
scoring settings (detector.json) under any settings the caller gives, and
`Scorer.score(images)` returns `ScoredImages`: per-patch rows (ids,
coordinates, the three scores, residual maps, reconstructions, latents) and
stitched per-image maps and scores. anogan-score, anogan-evaluate, the
benchmarks and marker discovery all score through it; `score_image_set` is
its stateless core for callers that hold the models themselves.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Collection, Optional, Union

import numpy as np
from absl import logging

from anogan_tf.config import (ConfigError, DataConfig, EvalConfig,
                              MappingConfig, ModelConfig)
from anogan_tf.data import DataError, ImageSet, PatchSet, extract_patches
from anogan_tf.data.roi import scoring_region
from anogan_tf.mapping import LatentMapper, MappingParams, MappingResult
from anogan_tf.mapping.mapper import balanced_batch_size
from anogan_tf.models import load_encoder, load_model_dir
from anogan_tf.scoring import calibration as calibration_lib
from anogan_tf.scoring import detector as detector_lib
from anogan_tf.scoring import map_reference as reference_lib
from anogan_tf.scoring import maps as maps_lib
from anogan_tf.scoring import metrics as metrics_lib

__all__ = ["Scorer", "ScoredImages", "score_image_set", "as_image_set"]


@dataclasses.dataclass(frozen=True)
class ScoredImages:
    """Scores of an ImageSet at patch and image level.

    Attributes:
      images: The scored ImageSet.
      patches: Its PatchSet (one patch per image when not patched).
      mapping: Per-patch MappingResult.
      image_scores: [N] aggregated anomaly scores.
      image_residual: [N] aggregated residual scores.
      image_discrimination: [N] aggregated discrimination scores.
      maps: [N, H, W] full-resolution anomaly maps (the overlap-averaged
        residual, smoothed as `map_sigma` and `map_smoothing` say), 0
        outside `region`; map_max, pixel metrics, anomaly_maps.png and
        maps/*.npy all read these.
      seconds: Wall time of the mapping.
      region: Optional bool [N, H, W], where the maps count (map_max reads
        only these pixels): with an ROI, the ROI widened by a few rows minus
        the acquisition artefacts (`data.roi.scoring_region`); None: every
        pixel.
      residuals: The stitched absolute and signed residuals the maps were
        made from (for comparing map variants from the same mapping).
      map_sigma, map_smoothing: How `maps` were smoothed
        (`scoring.maps.anomaly_maps`; sigma 0: the raw residual).
      map_norm: "depth" when `maps` were standardised by a MapReference
        (`scoring.map_reference`), else "none".
    """

    images: ImageSet
    patches: PatchSet
    mapping: MappingResult
    image_scores: np.ndarray
    image_residual: np.ndarray
    image_discrimination: np.ndarray
    maps: np.ndarray
    seconds: float
    region: Optional[np.ndarray] = None
    residuals: Optional[maps_lib.ResidualMaps] = None
    map_sigma: float = 0.0
    map_smoothing: str = "signed"
    map_norm: str = "none"


def _check_compatible(images: ImageSet, model_config: ModelConfig,
                      data_config: DataConfig) -> None:
    if not len(images.images):
        raise DataError("No images to score: the input is empty. Point "
                        "--inputs/--data_path at a folder or file with images.")
    c = images.images.shape[-1]
    if c != model_config.channels:
        raise ConfigError(
            f"The images have {c} channel(s) but the model expects "
            f"{model_config.channels}. Pass --channels={model_config.channels} "
            f"(images are converted on load).")
    if data_config.image_size != model_config.image_size:
        raise ConfigError(
            f"Data image_size {data_config.image_size} != the model's "
            f"{model_config.image_size}.")


def _check_mode(mapping_config: MappingConfig, encoder,
                model_dir: Optional[str] = None) -> None:
    """Raises ConfigError when the mode needs an encoder that is missing."""
    mode = mapping_config.mode
    if mode == "iterative":
        return
    where = model_dir or "<model_dir>"
    if encoder is None:
        raise ConfigError(
            f"--mode={mode} needs the f-AnoGAN encoder, but {where} has no "
            f"encoder.keras. Train one for this GAN with `anogan-train "
            f"--stage=encoder --model_dir={where}` (same data flags as the GAN),"
            f" or use --mode=iterative.")
    if mode == "encoder" and mapping_config.score == "bce":
        raise ConfigError(
            "--score=bce needs the iterative mapping's bce discrimination "
            "loss; --mode=encoder scores with image MSE + kappa * feature MSE."
            " Use --score=anogan (or residual/feature/d_output), or "
            "--mode=hybrid.")


def _load_encoder_for(model_dir: str, mapping_config: MappingConfig):
    """The model dir's encoder when the mode uses one (else None)."""
    if mapping_config.mode == "iterative":
        return None
    encoder = load_encoder(model_dir)
    _check_mode(mapping_config, encoder, model_dir)
    return encoder


def score_image_set(images: ImageSet, generator, discriminator,
                    model_config: ModelConfig, data_config: DataConfig,
                    mapping_config: MappingConfig, aggregate: str = "max",
                    topk: int = 3, progress: bool = True,
                    label: str = "mapping", encoder=None,
                    map_sigma: float = 0.0,
                    map_smoothing: str = "signed",
                    map_reference: Optional[reference_lib.MapReference] = None
                    ) -> ScoredImages:
    """Patches, maps and scores every image of `images`.

    Args:
      images: Full images in [-1, 1].
      generator, discriminator: The trained models.
      model_config: Their config.
      data_config: Patch size/stride/ROI.
      mapping_config: Mapping settings; mode "encoder" and "hybrid" need
        `encoder`.
      aggregate, topk: Patch -> image aggregation.
      progress: Show the mapping progress bar.
      label: Progress bar label.
      encoder: The f-AnoGAN encoder (modes "encoder" and "hybrid").
      map_sigma: Gaussian sigma of the anomaly maps in full-image pixels
        (0: the raw stitched |x - G(z*)|).
      map_smoothing: "signed" smooths x - G(z*) before taking its
        magnitude, "absolute" smooths |x - G(z*)| (`scoring.maps`).
      map_reference: Per-depth statistics of normal maps; the maps (and
        map_max) are then standardised by them (`scoring.map_reference`).
        They must describe this map (`map_sigma`, `map_smoothing`).

    Returns:
      ScoredImages. In mode "encoder" the residual and discrimination
      scores hold the image and feature MSE at z = E(x) and the anomaly
      score their sum image MSE + kappa * feature MSE (f-AnoGAN).

    Raises:
      ConfigError: the mode needs an encoder and none was given, or the map
        settings are invalid.
    """
    _check_compatible(images, model_config, data_config)
    _check_mode(mapping_config, encoder)
    try:
        maps_lib.check_map_smoothing(map_sigma, map_smoothing)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    name = maps_lib.map_name(map_sigma, map_smoothing)
    if map_reference is not None and map_reference.map != name:
        raise ConfigError(
            f"The map reference was fitted on {map_reference.map!r} maps but "
            f"these are {name!r} (--map_sigma/--map_smoothing). Score with "
            f"the settings it was fitted with, re-run anogan-evaluate "
            f"--map_norm=depth with these, or pass --map_norm=none.")
    patches = extract_patches(images, data_config.effective_patch_size,
                              data_config.effective_patch_stride,
                              model_config.image_size, roi=data_config.roi,
                              min_coverage=data_config.roi_min_coverage,
                              max_patches_per_image=(
                                  data_config.max_patches_per_image))
    mapper = LatentMapper(generator, discriminator,
                          MappingParams.create(model_config, mapping_config),
                          # Same scores at any batch size; this one pads least.
                          batch_size=balanced_batch_size(
                              len(patches.patches), mapping_config.batch_size),
                          restarts=mapping_config.restarts,
                          jit_compile=mapping_config.jit_compile,
                          encoder=encoder, mode=mapping_config.mode)
    n = len(images.images)
    start = time.perf_counter()
    result = mapper.map(
        patches.patches, progress=progress,
        label=f"{label} ({n} image{'s' if n != 1 else ''})" if patches.patched
        else label, unit="patches" if patches.patched else "images")
    seconds = time.perf_counter() - start
    region = None
    if patches.valid_masks is not None:
        region = (patches.valid_masks if patches.roi_masks is None else
                  scoring_region(patches.roi_masks, patches.valid_masks))
    residuals = maps_lib.residual_maps(patches, result.residual_map,
                                       result.reconstruction, n, region)
    maps = maps_lib.anomaly_maps(residuals, map_sigma, map_smoothing)
    if map_reference is not None:
        maps = reference_lib.standardize_maps(maps, residuals.weight,
                                              patches.roi_masks, map_reference)
    # "map_max" ranks images by their strongest pixel of the stitched
    # residual map; the residual and discrimination columns then use "max".
    patch_how = "max" if aggregate == "map_max" else aggregate
    agg = lambda s: metrics_lib.aggregate_patch_scores(  # noqa: E731
        s, patches.image_index, n, patch_how, topk)
    image_scores = (maps.reshape(n, -1).max(axis=1).astype(np.float64)
                    if aggregate == "map_max" else agg(result.anomaly_score))
    return ScoredImages(images, patches, result, image_scores,
                        agg(result.residual_score),
                        agg(result.discrimination_score), maps, seconds,
                        region, residuals, float(map_sigma), map_smoothing,
                        "none" if map_reference is None else "depth")



def as_image_set(images: Union[ImageSet, np.ndarray],
                 id_prefix: str = "image") -> ImageSet:
    """An ImageSet from an ImageSet or an array of whole images.

    Args:
      images: An ImageSet, or an array [N, H, W, C] (or [N, H, W] for one
        channel): uint8 in [0, 255], or float in [-1, 1].
      id_prefix: Ids of array inputs are "<id_prefix>/<index>".

    Raises:
      DataError: the array has the wrong rank, dtype or range.
    """
    if isinstance(images, ImageSet):
        return images
    x = np.asarray(images)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4:
        raise DataError(f"Scorer.score takes an ImageSet or images [N, H, W, C]"
                        f", got an array of shape {x.shape}.")
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 127.5 - 1.0
    elif np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
        finite = x[np.isfinite(x)]
        if finite.size != x.size:
            raise DataError("The images hold NaN or infinite values; pass "
                            "finite pixels.")
        if finite.size and (finite.min() < -1.0 - 1e-6 or
                            finite.max() > 1.0 + 1e-6):
            raise DataError(
                f"Float images must be scaled to [-1, 1], got values in "
                f"[{finite.min():.3g}, {finite.max():.3g}]. Pass uint8 pixels"
                f" or scale with x / 127.5 - 1.")
    else:
        raise DataError(f"Images of dtype {x.dtype} are not supported; pass "
                        f"uint8 in [0, 255] or float in [-1, 1].")
    return ImageSet(x, tuple(f"{id_prefix}/{i}" for i in range(len(x))))


class Scorer:
    """A trained detector: the models loaded once, with its scoring settings.

    Attributes:
      model_config, data_config, mapping_config, eval_config: The settings
        every `score` call uses (data_config is sized to the model).
      generator, discriminator, encoder: The models (encoder None when the
        mode does not use one).
      detector: The model dir's detector.json record, or None.
      model_dir: Where the models came from (None when built in memory).
      map_reference: The per-depth statistics `eval_config.map_norm`
        "depth" applies (detector.json's, unless given), or None.
    """

    def __init__(self, model_config: ModelConfig, generator, discriminator,
                 data_config: DataConfig, mapping_config: MappingConfig,
                 eval_config: EvalConfig, encoder=None,
                 detector: Optional[detector_lib.Detector] = None,
                 model_dir: Optional[str] = None,
                 map_reference: Optional[reference_lib.MapReference] = None):
        _check_mode(mapping_config, encoder, model_dir)
        try:
            maps_lib.check_map_smoothing(eval_config.map_sigma,
                                         eval_config.map_smoothing)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.model_config = model_config
        self.generator = generator
        self.discriminator = discriminator
        self.encoder = encoder
        self.data_config = dataclasses.replace(
            data_config, image_size=model_config.image_size,
            channels=model_config.channels)
        self.mapping_config = mapping_config
        self.eval_config = eval_config
        self.detector = detector
        self.model_dir = model_dir
        if map_reference is None and detector is not None:
            map_reference = detector.map_reference
        self.map_reference = map_reference

    @classmethod
    def from_model_dir(cls, model_dir: str,
                       data_config: Optional[DataConfig] = None,
                       mapping_config: Optional[MappingConfig] = None,
                       eval_config: Optional[EvalConfig] = None,
                       overrides: Optional[Collection[str]] = None,
                       use_detector: bool = True,
                       detector: Optional[detector_lib.Detector] = None
                       ) -> "Scorer":
        """Loads a model dir as a Scorer.

        Args:
          model_dir: A folder written by anogan-train.
          data_config, mapping_config, eval_config: Settings to score with
            (defaults where None).
          overrides: Keys of `detector.SETTING_KEYS` (e.g. "mapping.steps")
            whose values in the given configs win over detector.json. None:
            every field of a config that was passed wins (a config passed is
            used as it is); the settings of configs left None come from
            detector.json.
          use_detector: False ignores detector.json (settings and
            threshold).
          detector: A record already loaded from the model dir (it is not
            read again), or None.

        Raises:
          ConfigError: the model dir is missing or damaged, detector.json is
            corrupt, or the mode needs an encoder the dir does not have.
        """
        model_config, generator, discriminator = load_model_dir(model_dir)
        if detector is None and use_detector:
            detector = detector_lib.load_detector(model_dir)
        given = {"mapping": mapping_config is not None,
                 "patches": data_config is not None,
                 "image_score": eval_config is not None}
        data_config = data_config or DataConfig(
            dataset="folder", image_size=model_config.image_size,
            channels=model_config.channels)
        mapping_config = mapping_config or MappingConfig()
        eval_config = eval_config or EvalConfig(output_dir="")
        if overrides is None:
            overrides = [k for k in detector_lib.SETTING_KEYS
                         if given[k.split(".", 1)[0]]]
        data_config, mapping_config, eval_config, _ = (
            detector_lib.resolve_configs(detector, data_config,
                                         mapping_config, eval_config,
                                         overrides))
        encoder = _load_encoder_for(model_dir, mapping_config)
        return cls(model_config, generator, discriminator, data_config,
                   mapping_config, eval_config, encoder=encoder,
                   detector=detector, model_dir=model_dir)

    def with_settings(self, mapping_config: Optional[MappingConfig] = None,
                      eval_config: Optional[EvalConfig] = None,
                      map_reference: Optional[reference_lib.MapReference] = None
                      ) -> "Scorer":
        """The same models scoring with other settings (no reload; an
        encoder mode needs the encoder this Scorer already holds)."""
        return Scorer(self.model_config, self.generator, self.discriminator,
                      self.data_config, mapping_config or self.mapping_config,
                      eval_config or self.eval_config, encoder=self.encoder,
                      detector=self.detector, model_dir=self.model_dir,
                      map_reference=map_reference or self.map_reference)

    def score(self, images: Union[ImageSet, np.ndarray], progress: bool = True,
              label: str = "mapping") -> ScoredImages:
        """Patches, maps and scores whole images with this detector's settings.

        Args:
          images: An ImageSet in [-1, 1], or an array of whole images
            (`as_image_set`).
          progress: Show the mapping progress bar.
          label: Its label.

        Raises:
          ConfigError: map_norm "depth" without a fitted map reference.
        """
        reference = self.applied_map_reference()
        return score_image_set(
            as_image_set(images), self.generator, self.discriminator,
            self.model_config, self.data_config, self.mapping_config,
            self.eval_config.aggregate, self.eval_config.topk,
            progress=progress, label=label, encoder=self.encoder,
            map_sigma=self.eval_config.map_sigma,
            map_smoothing=self.eval_config.map_smoothing,
            map_reference=reference)

    def applied_map_reference(self
                              ) -> Optional[reference_lib.MapReference]:
        """The map reference `score` applies: None with map_norm "none".

        Raises:
          ConfigError: map_norm "depth" without a fitted map reference.
        """
        if self.eval_config.map_norm != "depth":
            return None
        if self.map_reference is None:
            where = self.model_dir or "<model_dir>"
            raise ConfigError(
                f"--map_norm=depth needs the per-depth statistics of normal "
                f"maps, which {where} does not have yet. Run "
                f"`anogan-evaluate --model_dir={where} --map_norm=depth` (it "
                f"fits them on the calibration images and records them in "
                f"detector.json), or pass --map_norm=none.")
        return self.map_reference

    def recorded_threshold(self) -> Optional[detector_lib.Threshold]:
        """detector.json's calibrated threshold when it applies to this
        Scorer's scores (same mapping, patching and image score), else None
        (a warning says which setting differs)."""
        if self.detector is None or self.detector.threshold is None:
            return None
        differ = detector_lib.scale_differences(
            self.detector, detector_lib.Detector.from_configs(
                self.data_config, self.mapping_config, self.eval_config))
        if differ:
            logging.warning(
                "%s's threshold %.6g (%s) is not applied: these settings "
                "differ from the ones it was calibrated with, so the scores "
                "are on another scale: %s. Drop those flags, or re-run "
                "anogan-evaluate with them to calibrate a threshold for "
                "them.", detector_lib.DETECTOR_FILE,
                self.detector.threshold.value, self.detector.threshold.rule,
                "; ".join(differ))
            return None
        return self.detector.threshold

    def p_values(self, image_scores: np.ndarray) -> Optional[np.ndarray]:
        """Conformal p-values of image scores from the recorded calibration
        scores (None when there are none that apply)."""
        recorded = self.recorded_threshold()
        if recorded is None or not recorded.calibration_scores:
            return None
        return calibration_lib.conformal_p_values(
            np.asarray(recorded.calibration_scores), image_scores)
