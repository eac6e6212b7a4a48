"""Marker discovery end to end: maps -> regions -> descriptors -> markers.

`run_discovery` takes a Scorer (or the maps of an earlier run) and the
images, and writes the outputs of `markers.report`:

1. Maps. The Scorer maps every image (and the normal calibration images)
   and stitches its residual maps per image (`ScoredImages.maps`, smoothed
   as --map_sigma/--map_smoothing say). Regions are found on the
   "normalized" discovery map (the smoothed signed residual standardised
   against normal images at the same depth by `scoring.map_reference`, the
   statistics --map_norm=depth uses, at one or more scales) or on
   the scoring maps themselves. Or `--maps_dir` reads the
   maps an earlier anogan-discover (maps/<id>.npz, calibration_maps.npz) or
   anogan-score (maps/<id>.npy) run wrote.
2. Regions (`markers.regions`): the threshold from the calibration maps,
   connected components, minimum area, ROI only.
3. Descriptors and embedding (`markers.describe`).
4. Markers (`markers.cluster`) with medoid prototypes.
5. Evaluation against known types when there are any (`markers.evaluate`).
6. Outputs (`markers.report`), plus maps/<id>.npz and calibration_maps.npz
   (unless save_maps is off) so that another run can re-cluster with
   --maps_dir without mapping again.
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from absl import logging

from anogan_tf.config import ConfigError, DataConfig
from anogan_tf.data import DataError, ImageSet, load_images
from anogan_tf.data.patches import fill_artifacts
from anogan_tf.data.roi import retina_band, scoring_region
from anogan_tf.markers import cluster as cluster_lib
from anogan_tf.markers import describe as describe_lib
from anogan_tf.markers import evaluate as evaluate_lib
from anogan_tf.markers import regions as regions_lib
from anogan_tf.markers import report as report_lib
from anogan_tf.scoring import map_reference as reference_lib
from anogan_tf.scoring import maps as maps_lib
from anogan_tf.scoring.scorer import ScoredImages, Scorer

__all__ = ["DiscoveryConfig", "MapSet", "REGION_MAPS", "mapset_from_scored",
           "mapset_from_dir", "discovery_maps", "load_discovery_inputs",
           "run_discovery"]

CALIBRATION_FILE = "calibration_maps.npz"
REGION_MAPS = ("normalized", "scoring")


@dataclasses.dataclass(frozen=True)
class DiscoveryConfig:
    """Settings of a discovery run (the --flags of anogan-discover).

    Attributes:
      output_dir: Where the outputs go.
      region_threshold: "percentile", "conformal" or a map value.
      target_pixel_fpr: The percentile rule's share of normal pixels at or
        above the threshold.
      target_region_fpr: The conformal rule's bound on the share of normal
        images with a region.
      min_region_area: Smallest region in pixels.
      region_map: "normalized" (the smoothed signed residual against
        normal images at the same depth, `scoring.map_reference`) or
        "scoring" (the Scorer's maps).
      region_sigma: Gaussian sigmas (pixels) of the residual regions are
        found on; several: the normalized map is the largest of the
        per-scale maps (each in units of its own normal 99th percentile, so
        small foci and large fluid both show); empty: the scoring maps'
        --map_sigma.
      descriptors: Descriptor blocks; empty: shape, intensity, position
        (with an ROI band), d_features (with a model) and latent (when
        scored here).
      pca_components: PCA components (0: enough for 90% of the variance,
        at most 16).
      cluster_method: "kmeans", "agglomerative" or "hdbscan".
      num_markers: "auto" or a number of markers.
      min_markers, max_markers: The range "auto" searches.
      hdbscan_min_cluster_size: HDBSCAN's smallest marker.
      prototypes: Prototype regions per marker (contact sheet size).
      feature_layer: D's conv block pooled for d_features.
      max_overlays: Per-image overlays drawn (0: all).
      save_maps: Write maps/<id>.npz and calibration_maps.npz.
      seed: Seed of KMeans, PCA and the silhouette sample.
    """

    output_dir: str
    region_threshold: str = "percentile"
    target_pixel_fpr: float = 0.005
    target_region_fpr: float = 0.1
    min_region_area: int = 10
    region_map: str = "normalized"
    region_sigma: Tuple[float, ...] = ()
    descriptors: Tuple[str, ...] = ()
    pca_components: int = 0
    cluster_method: str = "kmeans"
    num_markers: str = "auto"
    min_markers: int = 2
    max_markers: int = 8
    hdbscan_min_cluster_size: int = 5
    prototypes: int = 12
    feature_layer: int = 2
    max_overlays: int = 0
    save_maps: bool = True
    seed: int = 0

    def __post_init__(self):
        if not self.output_dir:
            raise ConfigError("anogan-discover needs --output_dir.")
        regions_lib.parse_threshold_rule(self.region_threshold)
        cluster_lib.parse_num_markers(self.num_markers)
        if self.descriptors:
            describe_lib.check_blocks(self.descriptors)
        sigmas = tuple(float(v) for v in self.region_sigma)
        object.__setattr__(self, "region_sigma", sigmas)
        # (flag, value, valid, what it must be): the first invalid one
        # raises a ConfigError naming its flag.
        checks = (
            ("target_pixel_fpr", self.target_pixel_fpr,
             0.0 < self.target_pixel_fpr < 1.0, "in (0, 1)"),
            ("target_region_fpr", self.target_region_fpr,
             0.0 < self.target_region_fpr < 1.0, "in (0, 1)"),
            ("min_region_area", self.min_region_area,
             self.min_region_area >= 1, ">= 1 pixel"),
            ("region_map", self.region_map, self.region_map in REGION_MAPS,
             "one of " + "|".join(REGION_MAPS)),
            ("region_sigma", sigmas,
             all(math.isfinite(v) and v >= 0 for v in sigmas),
             "sigmas >= 0 in pixels, e.g. --region_sigma=1,3"),
            ("region_sigma", sigmas,
             len(sigmas) <= 1 or self.region_map == "normalized",
             "a single sigma with --region_map=scoring (the scoring maps of "
             "different scales are not on one scale)"),
            ("cluster_method", self.cluster_method,
             self.cluster_method in cluster_lib.CLUSTER_METHODS,
             "one of " + "|".join(cluster_lib.CLUSTER_METHODS)),
            ("min_markers", self.min_markers,
             2 <= self.min_markers <= self.max_markers,
             f">= 2 and <= --max_markers ({self.max_markers})"),
            ("hdbscan_min_cluster_size", self.hdbscan_min_cluster_size,
             self.hdbscan_min_cluster_size >= 2, ">= 2 regions"),
            ("prototypes_per_marker", self.prototypes, self.prototypes >= 1,
             ">= 1"),
            ("marker_feature_layer", self.feature_layer,
             self.feature_layer >= 1, "a conv block of D, >= 1"),
            ("report_max_images", self.max_overlays, self.max_overlays >= 0,
             ">= 0 (0: all)"),
        )
        for flag, value, valid, expected in checks:
            if not valid:
                raise ConfigError(f"--{flag} must be {expected}, got "
                                  f"{value!r}.")


@dataclasses.dataclass(frozen=True)
class MapSet:
    """The maps of one set of images and what their descriptors read.

    Attributes:
      images: The images (raw, as loaded).
      maps: float32 [N, H, W] the maps regions are found on.
      region: Optional bool [N, H, W], where maps count (scoring region).
      roi: Optional bool [N, H, W], the ROI band.
      valid: Optional bool [N, H, W], non-artefact pixels.
      signed: Optional [N, H, W], x - G(z*) (channel mean).
      weight: Optional bool [N, H, W], the pixels the maps are defined on
        (covered by a patch, in the scoring region; `ResidualMaps.weight`).
      reconstructions: Optional [N, H, W, C] stitched G(z*).
      patches, latents: The PatchSet and its z* (scored here only).
      source: How the maps were made (for the report).
    """

    images: ImageSet
    maps: np.ndarray
    region: Optional[np.ndarray] = None
    roi: Optional[np.ndarray] = None
    valid: Optional[np.ndarray] = None
    signed: Optional[np.ndarray] = None
    weight: Optional[np.ndarray] = None
    reconstructions: Optional[np.ndarray] = None
    patches: Optional[object] = None
    latents: Optional[np.ndarray] = None
    source: str = ""

    def filled_images(self) -> np.ndarray:
        """The images with artefact pixels filled, as the model saw them."""
        if self.valid is None or self.valid.all():
            return self.images.images
        return np.stack([fill_artifacts(x, v) for x, v in
                         zip(self.images.images, self.valid)])


def mapset_from_scored(scored: ScoredImages) -> MapSet:
    """A MapSet from a Scorer's output (its maps, residuals, z*)."""
    signed = recon = weight = None
    if scored.residuals is not None:
        signed = scored.residuals.signed.mean(axis=-1)
        weight = scored.residuals.weight
        recon = np.clip(scored.images.images - scored.residuals.signed,
                        -1.0, 1.0)
    return MapSet(scored.images, np.asarray(scored.maps, np.float32),
                  scored.region, scored.patches.roi_masks,
                  scored.patches.valid_masks, signed, weight, recon,
                  scored.patches,
                  scored.mapping.latent,
                  f"scored with sigma {scored.map_sigma:g} "
                  f"({scored.map_smoothing}, map_norm {scored.map_norm})")


def _masks_for(images: ImageSet, data_config: DataConfig):
    """(region, roi, valid) as the Scorer computes them for these images."""
    if data_config.roi != "retina":
        return None, None, None
    bands = [retina_band(x) for x in images.images]
    valid = np.stack([b.valid for b in bands])
    roi = np.stack([b.mask for b in bands])
    return scoring_region(roi, valid), roi, valid


_SAVED = ("signed", "weight", "region", "roi", "valid")


def mapset_from_dir(maps_dir: str, images: ImageSet,
                    data_config: DataConfig) -> MapSet:
    """The maps an earlier run wrote for `images` (matched by id).

    anogan-discover writes maps/<id>.npz (map, signed, weight, region, roi,
    valid); anogan-score writes maps/<id>.npy (the map only; region and
    ROI are then recomputed from the images and --roi).

    Raises:
      DataError: the dir or its maps folder is missing, or an image has no
        map.
    """
    if not os.path.isdir(maps_dir):
        raise DataError(f"--maps_dir {maps_dir!r} does not exist; point it at "
                        f"the --output_dir of an earlier anogan-score or "
                        f"anogan-discover run.")
    folder = os.path.join(maps_dir, "maps")
    if not os.path.isdir(folder):
        raise DataError(f"--maps_dir {maps_dir!r} has no maps/ folder; point "
                        f"it at the --output_dir of anogan-score or "
                        f"anogan-discover (with --save_maps).")
    maps = []
    extra = {name: [] for name in _SAVED}
    kinds = set()
    for image_id in images.ids:
        stem = os.path.join(folder, report_lib.safe_name(image_id))
        if os.path.isfile(stem + ".npz"):
            with np.load(stem + ".npz", allow_pickle=False) as data:
                maps.append(data["map"])
                for name in _SAVED:
                    extra[name].append(data[name] if name in data.files
                                       else None)
            kinds.add("npz")
        elif os.path.isfile(stem + ".npy"):
            maps.append(np.load(stem + ".npy", allow_pickle=False))
            for name in _SAVED:
                extra[name].append(None)
            kinds.add("npy")
        else:
            raise DataError(
                f"--maps_dir {maps_dir!r} has no map of image {image_id!r} "
                f"(looked for {stem}.npz and .npy). Pass the same --inputs "
                f"(or --dataset flags) the maps were made from.")
    maps = np.stack(maps).astype(np.float32)
    if maps.shape[1:] != images.image_shape[:2]:
        raise DataError(f"The maps in {maps_dir!r} are {maps.shape[1:]}, the "
                        f"images {images.image_shape[:2]}; pass the same "
                        f"--resize as the run that wrote them.")
    got = {name: None if any(v is None for v in values) else np.stack(values)
           for name, values in extra.items()}
    if got["region"] is None and data_config.roi == "retina":
        got["region"], got["roi"], got["valid"] = _masks_for(images,
                                                             data_config)
    return MapSet(images, maps, got["region"], got["roi"], got["valid"],
                  got["signed"], got["weight"],
                  source=f"maps read from {maps_dir} "
                         f"({', '.join(sorted(kinds))})")


def _save_maps(output_dir: str, target: MapSet,
               calibration: Optional[MapSet], scoring_sigma: float) -> None:
    folder = os.path.join(output_dir, "maps")
    os.makedirs(folder, exist_ok=True)
    for i, image_id in enumerate(target.images.ids):
        arrays = {"map": target.maps[i]}
        for name in _SAVED:
            value = getattr(target, name)
            if value is not None:
                arrays[name] = value[i]
        np.savez_compressed(os.path.join(
            folder, report_lib.safe_name(image_id) + ".npz"), **arrays)
    if calibration is not None:
        arrays = {"maps": calibration.maps,
                  "scoring_sigma": np.float64(scoring_sigma)}
        for name in _SAVED:
            value = getattr(calibration, name)
            if value is not None:
                arrays[name] = value
        np.savez_compressed(os.path.join(output_dir, CALIBRATION_FILE),
                            **arrays)


def _calibration_from_dir(maps_dir: str) -> Tuple[Optional[MapSet],
                                                  Optional[float]]:
    """(calibration MapSet, the scoring maps' sigma) of a discover dir."""
    path = os.path.join(maps_dir, CALIBRATION_FILE)
    if not os.path.isfile(path):
        return None, None
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    maps = np.asarray(arrays["maps"], np.float32)
    n = len(maps)
    dummy = ImageSet(np.zeros((n, 1, 1, 1), np.float32),
                     tuple(f"calibration/{i}" for i in range(n)))
    sigma = (float(arrays["scoring_sigma"]) if "scoring_sigma" in arrays
             else None)
    return MapSet(dummy, maps, **{name: arrays.get(name) for name in _SAVED},
                  source=path), sigma


def _weight(m: MapSet) -> np.ndarray:
    """Where m's maps are defined: its weight, else its region, else all."""
    if m.weight is not None:
        return np.asarray(m.weight, bool)
    return (np.ones(m.maps.shape, bool) if m.region is None
            else np.asarray(m.region, bool))


def smoothed_residual_map(m: MapSet, sigma: float) -> np.ndarray:
    """|G_sigma * (x - G(z*))| on m's weight, 0 elsewhere (sigma 0: the
    unsmoothed |x - G(z*)|), as `scoring.maps.anomaly_maps` makes the
    signed-smoothed scoring map, from m's channel-mean signed residual."""
    weight = _weight(m)
    if sigma > 0:
        return np.abs(maps_lib.masked_gaussian(m.signed, weight, sigma))
    return np.where(weight, np.abs(m.signed), 0.0).astype(np.float32)


def _subset(masks: Optional[np.ndarray], keep: np.ndarray):
    return None if masks is None else masks[keep]


def discovery_maps(config: DiscoveryConfig, target: MapSet,
                   calibration: Optional[MapSet], scoring_sigma: float
                   ) -> Tuple[np.ndarray, Optional[np.ndarray],
                              Optional[np.ndarray], str]:
    """The maps regions are found on, for the images and the calibration
    images that calibrate the threshold.

    "normalized" smooths the signed residual at each --region_sigma (else
    the scoring sigma) and standardises its magnitude by depth with
    `scoring.map_reference` (the statistics of --map_norm=depth: 1 = the
    normal images' 99th percentile at that depth), fitted on the
    even-indexed calibration images; the threshold is calibrated on the
    odd-indexed ones (the threshold's guarantee needs images the reference
    did not see; with fewer than 4 calibration images both use all of
    them, and the log says so). With several scales the map is their
    pixel-wise maximum. It needs the signed residuals; maps without them
    (anogan-score's maps/*.npy) fall back to "scoring".

    Returns:
      (maps [N, H, W], threshold calibration maps or None, their weights
      or None, a description).
    """
    sigmas = config.region_sigma or (scoring_sigma,)
    mode = config.region_map
    if mode == "normalized" and (target.signed is None or (
            calibration is not None and calibration.signed is None)):
        logging.warning("--region_map=normalized needs the signed residuals,"
                        " which %s lacks; using the scoring maps.",
                        target.source or "the maps")
        mode = "scoring"
        sigmas = sigmas[:1]
    if mode == "scoring":
        maps, cal_maps = target.maps, (None if calibration is None
                                       else calibration.maps)
        text = f"the scoring maps ({target.source})"
        if config.region_sigma and target.signed is not None:
            sigma = sigmas[0]
            maps = smoothed_residual_map(target, sigma)
            cal_maps = (None if calibration is None else
                        smoothed_residual_map(calibration, sigma))
            text = f"|signed residual| smoothed with sigma {sigma:g}"
        return (maps, cal_maps,
                None if calibration is None else _weight(calibration), text)
    if calibration is None or not len(calibration.maps):
        raise ConfigError(
            "--region_map=normalized measures the residual against normal "
            "calibration images, but there are none. Pass --calibration_data"
            "=<held-out normal images>, or --region_map=scoring with a "
            "numeric --region_threshold.")
    n = len(calibration.maps)
    fit = np.arange(n) % 2 == 0 if n >= 4 else np.ones(n, bool)
    hold = ~fit if n >= 4 else fit
    if n < 4:
        logging.warning("Only %d calibration images: the depth reference "
                        "and the threshold use the same ones.", n)
    cal_weight, weight = _weight(calibration), _weight(target)
    maps = cal_maps = None
    coordinate = "row"
    for sigma in sigmas:
        cal_smooth = smoothed_residual_map(calibration, sigma)
        reference = reference_lib.fit_map_reference(
            cal_smooth[fit], cal_weight[fit], _subset(calibration.roi, fit),
            maps_lib.map_name(sigma, "signed"))
        coordinate = reference.coordinate
        scale_maps = reference_lib.standardize_maps(
            smoothed_residual_map(target, sigma), weight, target.roi,
            reference)
        scale_cal = reference_lib.standardize_maps(
            cal_smooth[hold], cal_weight[hold], _subset(calibration.roi, hold),
            reference)
        maps = scale_maps if maps is None else np.maximum(maps, scale_maps)
        cal_maps = (scale_cal if cal_maps is None
                    else np.maximum(cal_maps, scale_cal))
    text = (f"|signed residual| smoothed with sigma "
            f"{'+'.join(f'{v:g}' for v in sigmas)}"
            f"{' (the larger of the scales)' if len(sigmas) > 1 else ''}, "
            f"standardised by {coordinate} depth against {int(fit.sum())} "
            f"normal images (1 = their 99th percentile)")
    return maps, cal_maps, cal_weight[hold], text


def load_discovery_inputs(data_config: DataConfig,
                          inputs: Optional[Sequence[str]] = None,
                          calibration_data: Sequence[str] = (),
                          num_test: int = 0,
                          known_types: Optional[str] = None
                          ) -> Tuple[ImageSet, Optional[ImageSet],
                                     Optional[evaluate_lib.KnownTypes]]:
    """The images, the normal calibration images and the known types.

    Args:
      data_config: The data settings.
      inputs: --inputs (files, folders, arrays); empty: the dataset's test
        split.
      calibration_data: --calibration_data; empty: the dataset's
        calibration split when there is one (else None).
      num_test: Take the first num_test images (0: all).
      known_types: A --known_types file, or None.

    Raises:
      DataError: unreadable inputs or a bad --known_types file.
    """
    from anogan_tf.scoring import load_inputs
    images = load_inputs(list(inputs or ()), data_config)
    if num_test:
        images = images.take(num_test)
    calibration = None
    if calibration_data:
        calibration = load_inputs(list(calibration_data), data_config)
    elif not inputs:
        try:
            calibration = load_images(data_config, "calibration")
        except DataError as e:
            logging.warning("No calibration images: %s", e)
    known = evaluate_lib.known_types_for(images, data_config,
                                         from_dataset=not inputs,
                                         path=known_types, num=num_test)
    return images, calibration, known


def _auto_blocks(target: MapSet, scorer: Optional[Scorer]) -> Tuple[str, ...]:
    blocks = ["shape", "intensity"]
    if target.roi is not None and target.roi.any():
        blocks.append("position")
    if scorer is not None:
        blocks.append("d_features")
    if target.latents is not None and target.patches is not None:
        blocks.append("latent")
    return tuple(blocks)


def run_discovery(config: DiscoveryConfig, images: ImageSet,
                  scorer: Optional[Scorer] = None,
                  calibration: Optional[ImageSet] = None,
                  maps_dir: Optional[str] = None,
                  known: Optional[evaluate_lib.KnownTypes] = None,
                  data_config: Optional[DataConfig] = None,
                  progress: bool = True) -> Dict:
    """Discovers candidate markers in `images` and writes the outputs.

    Args:
      config: The settings.
      images: The images to discover markers in.
      scorer: The detector; needed unless `maps_dir` is given (then it
        only adds the d_features descriptors and scores calibration images
        the maps dir lacks).
      calibration: Held-out normal images for the threshold rules.
      maps_dir: Read the maps of an earlier run instead of scoring.
      known: Known types of `images` (evaluation).
      data_config: The data settings of a `maps_dir` run without a scorer
        (its --roi decides whether the ROI is recomputed).
      progress: Show mapping progress bars.

    Returns:
      A summary dict (counts, k, threshold, timings, evaluation, paths).

    Raises:
      ConfigError, DataError: bad settings or inputs (each names its flag).
    """
    times = {}
    start = time.perf_counter()
    rule, value = regions_lib.parse_threshold_rule(config.region_threshold)
    if scorer is None and maps_dir is None:
        raise ConfigError("anogan-discover needs --model_dir (to score the "
                          "images) or --maps_dir (maps of an earlier run).")
    if maps_dir:
        target = mapset_from_dir(
            maps_dir, images, scorer.data_config if scorer is not None
            else (data_config or DataConfig()))
        calib, recorded_sigma = _calibration_from_dir(maps_dir)
    else:
        recorded_sigma = None
        target = mapset_from_scored(scorer.score(images, progress=progress,
                                                 label="discovery"))
        calib = None
    times["maps_seconds"] = time.perf_counter() - start
    # Maps without signed residuals (anogan-score's maps/*.npy) fall back
    # to the scoring maps, which a fixed threshold needs no calibration for.
    needs_calibration = rule != "fixed" or (
        config.region_map == "normalized" and target.signed is not None)
    if calib is None and calibration is not None and needs_calibration:
        if scorer is None:
            raise ConfigError(
                f"--maps_dir {maps_dir!r} holds no {CALIBRATION_FILE}, so "
                f"the calibration images must be mapped: pass --model_dir, "
                f"or use --region_map=scoring with a numeric "
                f"--region_threshold (e.g. 0.2).")
        t0 = time.perf_counter()
        calib = mapset_from_scored(scorer.score(
            calibration, progress=progress, label="calibration"))
        times["calibration_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scoring_sigma = (scorer.eval_config.map_sigma if scorer is not None
                     else recorded_sigma or 0.0)
    maps, cal_maps, cal_region, maps_text = discovery_maps(
        config, target, calib, scoring_sigma)
    threshold = regions_lib.calibrate_threshold(
        rule, cal_maps, cal_region, config.min_region_area,
        config.target_pixel_fpr, config.target_region_fpr, value)
    logging.info("Regions: %s.", threshold.describe())
    regions = regions_lib.find_regions(maps, threshold,
                                       config.min_region_area, target.region,
                                       target.roi)
    times["regions_seconds"] = time.perf_counter() - t0
    logging.info("Found %d regions in %d of %d images.", len(regions),
                 len({r.image_index for r in regions.regions}), len(images))
    t0 = time.perf_counter()
    blocks = config.descriptors or _auto_blocks(target, scorer)
    descriptors = describe_lib.describe_regions(
        regions, target.filled_images(), maps, blocks,
        signed=target.signed, valid=target.valid, roi=target.roi,
        discriminator=None if scorer is None else scorer.discriminator,
        feature_layer=config.feature_layer,
        window=(0 if scorer is None else
                scorer.data_config.effective_patch_size),
        reconstructions=target.reconstructions, patches=target.patches,
        latents=target.latents)
    embedding = describe_lib.embed(descriptors, config.pca_components,
                                   seed=config.seed)
    times["descriptors_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    clustering = cluster_lib.cluster_regions(
        embedding.coords, config.cluster_method,
        cluster_lib.parse_num_markers(config.num_markers),
        config.min_markers, config.max_markers,
        config.hdbscan_min_cluster_size, config.seed)
    times["cluster_seconds"] = time.perf_counter() - t0
    evaluation = true_types = None
    if known is not None:
        evaluation = evaluate_lib.evaluate_markers(regions, clustering, known)
        codes = evaluate_lib.region_types(regions, known)
        true_types = [evaluate_lib.NONE if c == 0 else known.names[c - 1]
                      for c in codes]
    settings = {
        "threshold": dataclasses.asdict(threshold),
        "threshold_text": threshold.describe(),
        "min_region_area": config.min_region_area,
        "maps_text": maps_text,
        "region_map": config.region_map,
        "region_sigma": list(config.region_sigma),
        "cluster_text": (
            f"{config.cluster_method}, num_markers={config.num_markers}"
            + (f" (silhouette over k={config.min_markers}.."
               f"{config.max_markers}: chose {clustering.k}, silhouette "
               f"{clustering.silhouette:.3f})"
               if clustering.silhouette is not None and
               config.num_markers == "auto" and
               config.cluster_method != "hdbscan" else "")),
        "cluster_method": config.cluster_method,
        "num_markers": config.num_markers,
        "model_dir": None if scorer is None else scorer.model_dir,
        "mode": None if scorer is None else scorer.mapping_config.mode,
        "maps_dir": maps_dir,
    }
    discovery = report_lib.Discovery(images, maps, regions, descriptors,
                                     embedding, clustering, settings,
                                     evaluation, true_types,
                                     residual_maps=target.maps)
    t0 = time.perf_counter()
    paths = report_lib.write_outputs(config.output_dir, discovery,
                                     config.prototypes, config.max_overlays)
    if config.save_maps and not maps_dir:
        _save_maps(config.output_dir, target, calib, scoring_sigma)
    times["report_seconds"] = time.perf_counter() - t0
    times["total_seconds"] = time.perf_counter() - start
    summary = {"n_images": len(images), "n_regions": len(regions),
               "n_images_with_regions": len({r.image_index
                                             for r in regions.regions}),
               "k": clustering.k, "threshold": threshold.value,
               "threshold_text": threshold.describe(),
               "descriptor_blocks": list(descriptors.block_names()),
               "timings": times, "paths": paths, "evaluation": evaluation}
    return summary

