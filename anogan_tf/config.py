"""Typed, frozen configuration records handed between pipeline stages.

Binaries turn absl flags into these records; the library only ever sees the
records, never FLAGS. `ModelConfig` is written to `<model_dir>/config.json`
so that scoring and export never have to guess the architecture.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any, Optional, Tuple

__all__ = [
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "MappingConfig",
    "EvalConfig",
    "ConfigError",
    "save_model_config",
    "load_model_config",
    "MODEL_CONFIG_FILE",
    "MAP_SMOOTHINGS",
    "MAP_NORMS",
]

MODEL_CONFIG_FILE = "config.json"

PRIORS = ("uniform", "normal")
GAN_LOSSES = ("dcgan", "wgan_gp", "hinge")
D_NORMS = ("batch", "layer", "none")
# What an anomaly map smooths (EvalConfig.map_smoothing; scoring/maps.py).
MAP_SMOOTHINGS = ("signed", "absolute")
# How an anomaly map is compared with normal images (EvalConfig.map_norm;
# scoring/map_reference.py).
MAP_NORMS = ("none", "depth")


class ConfigError(ValueError):
    """A configuration value is invalid; the message says how to fix it."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture of the DCGAN pair (everything needed to rebuild G and D).

    Attributes:
      image_size: Side of the square model input, a multiple of 16.
      channels: Image channels (1 grayscale, 3 RGB).
      latent_dim: Dimension of z (the paper uses 100).
      base_filters: Width of the first D conv layer; G and D use
        (8, 4, 2, 1) x base_filters. The paper's 64 gives 512-256-128-64.
      feature_layer: Which D conv block (1..4) provides f(x) for the
        discrimination loss; 4 (the last block) as in the paper.
      prior: Latent prior, "uniform" on [-1, 1] (DCGAN) or "normal".
      spectral_norm: Spectral normalisation of D's conv and dense kernels.
      gan_loss: Training objective, "dcgan" (the paper), "wgan_gp" or "hinge".
      d_norm: Normalisation of D's conv blocks 2..4: "batch" (DCGAN, the
        paper), "layer" (per-sample LayerNorm over each block's activations)
        or "none". A WGAN-GP critic must not use BatchNorm: the gradient
        penalty is per sample and BatchNorm mixes the samples of a batch
        (Gulrajani et al. 2017, sec. 4). Model dirs written before this
        field existed load as "batch" ("none" with spectral_norm).
    """

    image_size: int = 64
    channels: int = 1
    latent_dim: int = 100
    base_filters: int = 64
    feature_layer: int = 4
    prior: str = "uniform"
    spectral_norm: bool = False
    gan_loss: str = "dcgan"
    d_norm: str = "batch"

    def __post_init__(self):
        if self.image_size < 16 or self.image_size % 16:
            raise ConfigError(
                f"image_size must be a multiple of 16 (32, 64, 128), got "
                f"{self.image_size}. Pass --image_size=64 (the paper) or 32.")
        if self.channels not in (1, 3):
            raise ConfigError(
                f"channels must be 1 (grayscale) or 3 (RGB), got {self.channels}.")
        if self.latent_dim < 1:
            raise ConfigError(f"latent_dim must be >= 1, got {self.latent_dim}.")
        if self.base_filters < 1:
            raise ConfigError(
                f"base_filters must be >= 1, got {self.base_filters}.")
        if self.feature_layer not in (1, 2, 3, 4):
            raise ConfigError(
                f"feature_layer must name a D conv block 1..4 (4 is the last, as "
                f"in the paper), got {self.feature_layer}.")
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {PRIORS}, got {self.prior!r}.")
        if self.gan_loss not in GAN_LOSSES:
            raise ConfigError(
                f"gan_loss must be one of {GAN_LOSSES}, got {self.gan_loss!r}.")
        if self.d_norm not in D_NORMS:
            raise ConfigError(
                f"d_norm must be one of {D_NORMS}, got {self.d_norm!r}.")

    @property
    def image_shape(self) -> Tuple[int, int, int]:
        return (self.image_size, self.image_size, self.channels)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where images come from and how they are cut into model inputs.

    Attributes:
      dataset: "synthetic_oct", "digits", "glyphs" (rendered font digits,
        anogan_tf.data.glyphs), "folder" (a plain folder, or the MVTec AD
        layout when `train/good` exists), "npy" (.npy/.npz), "tfrecord" or
        "textures" (surface textures with typed defects, data/textures.py).
      data_path: File or folder for the file-based datasets.
      channels: Channels after conversion (1 or 3).
      image_size: Model input side; patches are resized to it if
        `patch_size` differs.
      patch_size: Side of the patches cut from full images (0: image_size).
      patch_stride: Stride between patches (0: patch_size // 2).
      roi: "none", or "retina" to keep only patches inside the retina
        band of OCT B-scans (data/roi.py: padding and border artefacts are
        masked first, filled in patches and never score).
      roi_min_coverage: Fraction of a patch that must lie in the ROI.
      max_patches_per_image: Refuse images that tile into more patches
        than this (a cost guard against huge images; 0: no limit).
      resize: Optional (height, width) every full image is resized to.
      normal_class: The normal class (digit 0..9) of `digits` and `glyphs`.
      skip_bad_files: Skip (and count) unreadable files instead of failing.
      seed: Seed of every random choice in the data (splits, synthesis).
      oct_height, oct_width: Size of the synthetic B-scans.
      oct_num_train: Number of normal synthetic training B-scans.
      oct_num_test: Number of synthetic test B-scans.
      oct_anomaly_fraction: Fraction of anomalous test B-scans.
      oct_artifacts: Add realistic acquisition artefacts to the synthetic
        B-scans (padding wedges and strips, border lines, intensity drift,
        vessel shadows; see data/synthetic_oct.py).
      calibration_fraction: Share of `train/good` an MVTec AD style folder
        holds out as the "calibration" split (never trained on), in (0, 1).
      intensity_norm: Per-scan intensity normalisation of OCT B-scans,
        applied on load to every split: "none", or "roi_percentile" (the
        scan's black level and its retina ROI's median are mapped to fixed
        values; data/intensity.py).
      glyphs_num_train: Normal training images of `glyphs`.
      glyphs_num_calibration: Held-out normal images of `glyphs`.
      glyphs_num_test: Test images of `glyphs`; half of them (rounded down)
        normal, the rest spread over the nine other digits.
    """

    dataset: str = "synthetic_oct"
    data_path: Optional[str] = None
    channels: int = 1
    image_size: int = 64
    patch_size: int = 0
    patch_stride: int = 0
    roi: str = "none"
    roi_min_coverage: float = 0.5
    max_patches_per_image: int = 4096
    resize: Optional[Tuple[int, int]] = None
    normal_class: int = 0
    skip_bad_files: bool = False
    seed: int = 0
    oct_height: int = 128
    oct_width: int = 128
    oct_num_train: int = 200
    oct_num_test: int = 64
    oct_anomaly_fraction: float = 0.5
    oct_artifacts: bool = False
    calibration_fraction: float = 0.1
    intensity_norm: str = "none"
    glyphs_num_train: int = 2000
    glyphs_num_calibration: int = 200
    glyphs_num_test: int = 400

    def __post_init__(self):
        if self.max_patches_per_image < 0:
            raise ConfigError(
                f"max_patches_per_image must be >= 0 (0: no limit), got "
                f"{self.max_patches_per_image}. Pass e.g. "
                f"--max_patches_per_image=4096.")
        if not 0.0 < self.calibration_fraction < 1.0:
            raise ConfigError(
                f"calibration_fraction must be in (0, 1) (0.1 holds out 10% "
                f"of train/good), got {self.calibration_fraction}. Pass e.g. "
                f"--calibration_fraction=0.2.")
        if self.intensity_norm not in ("none", "roi_percentile"):
            raise ConfigError(
                f"intensity_norm must be 'none' or 'roi_percentile', got "
                f"{self.intensity_norm!r}.")

    @property
    def effective_patch_size(self) -> int:
        return self.patch_size or self.image_size

    @property
    def effective_patch_stride(self) -> int:
        return self.patch_stride or max(1, self.effective_patch_size // 2)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """GAN training schedule.

    Attributes:
      model_dir: Output folder (see DESIGN.md for its layout).
      batch_size: Images per step.
      epochs: Total epochs; re-running with a larger value resumes.
      steps_per_epoch: Steps per epoch (0: one pass over the data).
      g_lr, d_lr: Adam learning rates (the paper's DCGAN: 2e-4).
      beta_1, beta_2: Adam moments (DCGAN: 0.5, 0.999).
      n_critic: D updates per G update (WGAN-GP uses 5).
      gp_weight: Gradient-penalty weight for wgan_gp.
      jit_compile: XLA for train_step; always explicit.
      seed: Seed of the model's SeedGenerator and weight init.
      sample_every: Write a sample grid every this many epochs.
      divergence_threshold: Stop when a loss exceeds it (or is NaN/Inf).
      encoder_lr: Adam learning rate of the f-AnoGAN encoder
        (`--stage=encoder`; Adam betas 0.9, 0.999).
      kappa: kappa in the encoder's izi_f loss
        MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x)))) (f-AnoGAN: 1).
      mode_seeking: Weight of MSGAN's mode-seeking regulariser in G's loss
        (0: off), against mode collapse.
      holdout_fraction: Share of the normal training images kept out of
        training to measure G's coverage each epoch (training/health.py).
      select_best: Make the epoch with the best held-out coverage the model
        dir's generator.keras/discriminator.keras (what scoring and export
        load); False: the last epoch.
      g_ema: Decay of an exponential moving average of G's weights, kept
        during training and used for samples, health, selection and the
        saved generator.keras (0: off, the last iterate; 0.999 typical).
      r1_gamma: gamma of the R1 penalty gamma/2 E||grad D(x)||^2 on real
        images added to D's loss (Mescheder et al. 2018; gan_loss dcgan or
        hinge; 0: off).
    """

    model_dir: str
    batch_size: int = 64
    epochs: int = 10
    steps_per_epoch: int = 0
    g_lr: float = 2e-4
    d_lr: float = 2e-4
    beta_1: float = 0.5
    beta_2: float = 0.999
    n_critic: int = 1
    gp_weight: float = 10.0
    jit_compile: bool = False
    seed: int = 0
    sample_every: int = 1
    divergence_threshold: float = 1e4
    encoder_lr: float = 1e-4
    kappa: float = 1.0
    mode_seeking: float = 0.0
    holdout_fraction: float = 0.1
    select_best: bool = True
    g_ema: float = 0.0
    r1_gamma: float = 0.0

    def __post_init__(self):
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}.")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}.")
        if self.steps_per_epoch < 0:
            raise ConfigError(
                f"steps_per_epoch must be >= 0 (0: one pass), got "
                f"{self.steps_per_epoch}.")
        if self.n_critic < 1:
            raise ConfigError(f"n_critic must be >= 1, got {self.n_critic}.")
        if self.kappa < 0:
            raise ConfigError(f"kappa must be >= 0 (f-AnoGAN: 1), got "
                              f"{self.kappa}.")
        if self.mode_seeking < 0 or (self.mode_seeking > 0
                                     and self.batch_size < 2):
            raise ConfigError(
                f"mode_seeking must be >= 0 and needs batch_size >= 2 (it "
                f"compares the two halves of each batch); got mode_seeking="
                f"{self.mode_seeking}, batch_size={self.batch_size}. Pass "
                f"--batch_size=32 or --mode_seeking=0.")
        if not 0.0 <= self.g_ema < 1.0:
            raise ConfigError(
                f"g_ema is the decay of G's weight average and must be in "
                f"[0, 1) (0: off; 0.999 is typical), got {self.g_ema}.")
        if self.r1_gamma < 0:
            raise ConfigError(f"r1_gamma must be >= 0 (0: off; 10 is "
                              f"typical), got {self.r1_gamma}.")
        if not 0.0 <= self.holdout_fraction < 1.0:
            raise ConfigError(
                f"holdout_fraction must be in [0, 1) (0.1 keeps 10% of the "
                f"training images for the health metrics), got "
                f"{self.holdout_fraction}.")


@dataclasses.dataclass(frozen=True)
class MappingConfig:
    """Latent mapping z* = argmin_z (1-lambda) L_R + lambda L_D (paper, eq. 3-5).

    Attributes:
      steps: Gradient steps Gamma (the paper: 500); >= 1 unless mode is
        "encoder" (which takes none).
      lr: Adam learning rate on z.
      beta_1, beta_2, epsilon: Adam constants.
      lambda_weight: lambda in (1-lambda) L_R + lambda L_D (the paper: 0.1).
      batch_size: Fixed mapping batch; the last batch is padded and masked.
      restarts: Independent initialisations; the lowest final loss wins.
      seed: Global seed mixed with each image's content fingerprint.
      discrimination_loss: "feature" (feature matching, the paper) or
        "bce" (sigmoid cross-entropy on D(G(z)), the reference variant).
      score: Which value fills `anomaly_score`: "anogan" (A(x)), "residual",
        "residual_sq" (sum of squared residuals at z*), "feature",
        "d_output" or "bce".
      jit_compile: XLA for the mapping loop; always explicit.
      mode: "iterative" (the paper); "encoder" (f-AnoGAN: one pass
        z = E(x)) or "hybrid" (z0 = E(x), then `steps` mapping steps); both
        need `<model_dir>/encoder.keras`.
      kappa: kappa of the encoder-mode score
        MSE(x, G(E(x))) + kappa * MSE(f(x), f(G(E(x)))) (f-AnoGAN: 1).
      conv_impl: How the frozen G and D run their stride-2 convolutions
        during mapping and scoring: "auto" (polyphase form under XLA and on
        the image-side layers, TF's native kernels otherwise; see
        `models.frozen`), "native" or "phase". Same function either way.
      compute_dtype: "float32", or "bfloat16" for mixed precision in the
        frozen G and D (z, Adam and the losses stay float32); for GPUs and
        CPUs with native bfloat16. Scores agree with float32 to about 1%.
    """

    steps: int = 500
    lr: float = 0.1
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    lambda_weight: float = 0.1
    batch_size: int = 64
    restarts: int = 1
    seed: int = 0
    discrimination_loss: str = "feature"
    score: str = "anogan"
    jit_compile: bool = True
    mode: str = "iterative"
    kappa: float = 1.0
    conv_impl: str = "auto"
    compute_dtype: str = "float32"

    def __post_init__(self):
        if self.steps < 0:
            raise ConfigError(
                f"--mapping_steps must be >= 0 (and >= 1 unless "
                f"--mode=encoder), got {self.steps}. Pass e.g. "
                f"--mapping_steps=500 (the paper).")
        if not 0.0 <= self.lambda_weight <= 1.0:
            raise ConfigError(
                f"--lambda_weight must lie in [0, 1] (the paper: 0.1), got "
                f"{self.lambda_weight}. Pass e.g. --lambda_weight=0.1.")
        if self.batch_size < 1:
            raise ConfigError(
                f"mapping_batch_size must be >= 1, got {self.batch_size}.")
        if self.restarts < 1:
            raise ConfigError(f"restarts must be >= 1, got {self.restarts}.")
        if self.discrimination_loss not in ("feature", "bce"):
            raise ConfigError(
                f"discrimination_loss must be 'feature' or 'bce', got "
                f"{self.discrimination_loss!r}.")
        if self.score not in ("anogan", "residual", "residual_sq", "feature",
                              "d_output", "bce"):
            raise ConfigError(
                f"score must be anogan|residual|residual_sq|feature|d_output|"
                f"bce, got "
                f"{self.score!r}.")
        if self.mode not in ("iterative", "encoder", "hybrid"):
            raise ConfigError(
                f"mode must be iterative|encoder|hybrid, got {self.mode!r}.")
        if self.steps == 0 and self.mode != "encoder":
            # Zero steps would score the random initial z, not z*.
            raise ConfigError(
                f"--mapping_steps=0 with --mode={self.mode} would score a "
                f"random z instead of the mapped z*; expected >= 1 steps "
                f"(the paper: 500). Pass e.g. --mapping_steps=100, or "
                f"--mode=encoder to score z = E(x) without mapping steps.")
        if self.conv_impl not in ("auto", "native", "phase"):
            raise ConfigError(
                f"mapping_conv_impl must be auto|native|phase, got "
                f"{self.conv_impl!r}.")
        if self.compute_dtype not in ("float32", "bfloat16"):
            raise ConfigError(
                f"mapping_compute_dtype must be float32 or bfloat16, got "
                f"{self.compute_dtype!r}.")
        if self.kappa < 0:
            raise ConfigError(f"kappa must be >= 0 (f-AnoGAN: 1), got "
                              f"{self.kappa}.")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation and reporting.

    Attributes:
      output_dir: Where scores.csv, metrics.json and plots are written.
      aggregate: Patch-to-image score aggregation: "max", "mean",
        "topk_mean" of the patches' anomaly scores A(x), or "map_max", the
        largest value of the stitched full-resolution residual map (with
        roi="retina" only inside the ROI plus a few rows, and never on
        acquisition artefacts).
      topk: k for topk_mean.
      threshold_rule: "percentile" of normal validation scores (default) or
        "youden" (Youden's J on the labelled test data).
      threshold_percentile: Percentile for the "percentile" rule. With
        fewer than 20 calibration images the run warns what it means at
        that size (metrics.json "calibration_warning").
      num_test: Limit on test images (0: all).
      max_map_images: Images shown in anomaly_maps.png.
      calibration_data: Files/folders of held-out normal images (images,
        .npy/.npz, .tfrecord) whose scores calibrate p-values and thresholds;
        empty: the dataset's "calibration" split (see docs/calibration.md).
      target_fpr: > 0: the threshold is the conformal threshold for this
        false-positive rate on normal data (overrides threshold_rule);
        0: off.
      map_sigma: Gaussian sigma, in full-image pixels, of the anomaly maps
        that map_max, the pixel metrics, anomaly_maps.png and maps/*.npy
        read (0: the raw stitched |x - G(z*)|).
      map_smoothing: What is smoothed when map_sigma > 0: "signed", the
        residual x - G(z*) before its magnitude is taken (speckle of random
        sign averages out, a lesion's one-signed residual stays), or
        "absolute", |x - G(z*)| (see anogan_tf/scoring/maps.py).
      map_norm: "none", or "depth": every map pixel is standardised by
        the normal calibration images' maps at the same depth (within the
        retina band with an ROI, else the row): m / p99 of the normal
        pixels at that depth. anogan-evaluate fits the statistics and records
        them in detector.json (scoring/map_reference.py).
      paper_score: When the mode is not iterative, also map the test images
        the paper's way (iterative, the same steps, A(x)) and report that
        AUROC in metrics.json (image_auroc_by_score["paper_iterative"]), so
        the paper's score is always reported beside the detector's.
    """

    output_dir: str
    aggregate: str = "max"
    topk: int = 3
    threshold_rule: str = "percentile"
    threshold_percentile: float = 95.0
    num_test: int = 0
    max_map_images: int = 8
    calibration_data: Tuple[str, ...] = ()
    target_fpr: float = 0.0
    map_sigma: float = 0.0
    map_smoothing: str = "signed"
    map_norm: str = "none"
    paper_score: bool = True

    def __post_init__(self):
        if (not isinstance(self.map_sigma, (int, float)) or
                not math.isfinite(self.map_sigma) or self.map_sigma < 0):
            raise ConfigError(
                f"--map_sigma must be a finite number of pixels >= 0 (0: the "
                f"raw residual map), got {self.map_sigma!r}. Pass e.g. "
                f"--map_sigma=2.")
        if self.map_smoothing not in MAP_SMOOTHINGS:
            raise ConfigError(
                f"--map_smoothing must be one of {'|'.join(MAP_SMOOTHINGS)}, "
                f"got {self.map_smoothing!r}: 'signed' blurs x - G(z*) before "
                f"taking its magnitude, 'absolute' blurs |x - G(z*)|.")
        if self.map_norm not in MAP_NORMS:
            raise ConfigError(
                f"--map_norm must be one of {'|'.join(MAP_NORMS)}, got "
                f"{self.map_norm!r}: 'depth' standardises the maps by the "
                f"normal calibration images' maps at the same depth.")
        if not 0.0 <= self.target_fpr < 1.0:
            raise ConfigError(
                f"--target_fpr must be in [0, 1) (0: off), got "
                f"{self.target_fpr}. Pass a false-positive rate, e.g. "
                f"--target_fpr=0.05.")
        if self.aggregate not in ("max", "mean", "topk_mean", "map_max"):
            raise ConfigError(
                f"aggregate must be max|mean|topk_mean|map_max, got "
                f"{self.aggregate!r}.")
        if self.threshold_rule not in ("percentile", "youden"):
            raise ConfigError(
                f"threshold_rule must be 'percentile' or 'youden', got "
                f"{self.threshold_rule!r}.")


def save_model_config(config: ModelConfig, model_dir: str) -> str:
    """Writes `config` as JSON to `<model_dir>/config.json`; returns the path."""
    os.makedirs(model_dir, exist_ok=True)
    path = os.path.join(model_dir, MODEL_CONFIG_FILE)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(dataclasses.asdict(config), f, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path


def load_model_config(model_dir: str) -> ModelConfig:
    """Reads `<model_dir>/config.json`.

    Raises:
      ConfigError: the file is missing or not a valid ModelConfig.
    """
    path = os.path.join(model_dir, MODEL_CONFIG_FILE)
    if not os.path.isfile(path):
        raise ConfigError(
            f"No {MODEL_CONFIG_FILE} in model_dir {model_dir!r}. Pass the folder "
            f"that `anogan-train --model_dir=...` wrote, or train a model first.")
    try:
        with open(path) as f:
            raw: Any = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(
            f"{path} is not readable JSON ({e}). Re-train, or restore the file "
            f"from the run's flags.cfg.") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(raw).__name__}.")
    if "d_norm" not in raw:
        # Written before d_norm existed: D had BatchNorm unless spectral norm.
        raw["d_norm"] = "none" if raw.get("spectral_norm") else "batch"
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(
            f"{path} has unknown keys {unknown}; it was written by a different "
            f"anogan_tf version. Known keys: {sorted(known)}.")
    return ModelConfig(**raw)
