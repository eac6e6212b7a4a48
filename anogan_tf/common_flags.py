"""Every absl flag of every anogan_tf binary, defined in one place.

All flags are optional here; each binary marks the ones it needs as required
(`flags.mark_flags_as_required`). The `*_config_from_flags` functions turn the
parsed flags into the frozen records of `anogan_tf.config`; the library never
reads FLAGS. Layering: defaults < `--flagfile=flags/*.cfg` < command line.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from typing import Optional, Tuple

from absl import flags, logging

from anogan_tf import config as config_lib

__all__ = [
    "FLAGS",
    "report_error",
    "data_config_from_flags",
    "model_config_from_flags",
    "resolve_d_norm",
    "train_config_from_flags",
    "mapping_config_from_flags",
    "eval_config_from_flags",
    "resolved_flags_text",
    "model_config_for_scoring",
    "scoring_configs_from_flags",
    "DETECTOR_FLAGS",
    "explicit_detector_settings",
    "detector_from_flags",
    "detector_configs_from_flags",
    "discovery_config_from_flags",
]

FLAGS = flags.FLAGS

# --- data -----------------------------------------------------------------
flags.DEFINE_enum("dataset", "synthetic_oct",
                  ["synthetic_oct", "digits", "glyphs", "folder", "npy",
                   "tfrecord", "textures"],
                  "Image source. glyphs: digits rendered from matplotlib's "
                  "fonts with random affine and elastic distortions; folder: "
                  "a plain folder, or the MVTec AD layout when "
                  "<data_path>/train/good exists; npy: a .npy or .npz file "
                  "(key 'images', optional 'labels', 'masks', 'ids'); tfrecord: "
                  "tf.train.Examples with an encoded 'image'; textures: "
                  "surface textures with typed defects (scratches, holes, "
                  "stains) for marker discovery.")
flags.DEFINE_string("data_path", None,
                    "File or folder for --dataset=folder|npy|tfrecord.")
flags.DEFINE_integer("channels", 1, "Channels the images are converted to (1 or 3).")
flags.DEFINE_integer("image_size", 64,
                     "Model input side, a multiple of 16 (the paper: 64).")
flags.DEFINE_integer("patch_size", 0,
                     "Side of patches cut from full images (0: --image_size). "
                     "Patches are resized to --image_size if they differ.")
flags.DEFINE_integer("patch_stride", 0, "Patch stride (0: patch_size // 2).")
flags.DEFINE_enum("roi", "none", ["none", "retina"],
                  "Keep only patches in a region of interest; 'retina' finds "
                  "the retina band of OCT B-scans from its layer structure, "
                  "after masking padding and border artefacts (which are "
                  "filled in patches and never score).")
flags.DEFINE_float("roi_min_coverage", 0.5,
                   "Fraction of a patch that must lie inside the ROI.")
flags.DEFINE_integer("max_patches_per_image", 4096,
                     "Stop with an error when one image would be cut into "
                     "more patches than this (each is mapped separately, so "
                     "a huge image costs hours); 0: no limit. --resize "
                     "shrinks the images instead.")
flags.DEFINE_list("resize", None,
                  "Resize every full image to H,W (e.g. 256,256). Needed when a "
                  "folder holds images of mixed sizes.")
flags.DEFINE_integer("normal_class", 0,
                     "The normal class of --dataset=digits|glyphs (0..9).")
flags.DEFINE_boolean("skip_bad_files", False,
                     "Skip unreadable or corrupt image files (and log a count) "
                     "instead of stopping with an error.")
flags.DEFINE_integer("seed", 0, "Seed of data splits, synthesis, weight init, "
                     "training draws and the mapping's initial z.")
flags.DEFINE_integer("oct_height", 128, "Height of synthetic_oct B-scans.")
flags.DEFINE_integer("oct_width", 128, "Width of synthetic_oct B-scans.")
flags.DEFINE_integer("oct_num_train", 200, "Normal synthetic_oct training B-scans.")
flags.DEFINE_integer("oct_num_test", 64, "synthetic_oct test B-scans.")
flags.DEFINE_float("oct_anomaly_fraction", 0.5,
                   "Fraction of synthetic_oct test B-scans with anomalies.")
flags.DEFINE_boolean("oct_artifacts", False,
                     "Add realistic acquisition artefacts to synthetic_oct: "
                     "saturated padding wedges, padding strips (mixed widths), "
                     "1-pixel white border lines, intensity drift between "
                     "scans and vessel shadows.")
flags.DEFINE_float("calibration_fraction", 0.1,
                   "Share of train/good an MVTec AD style folder holds out "
                   "(never trained on) to calibrate thresholds and p-values; "
                   "the log says how many images that is.")
flags.DEFINE_enum("intensity_norm", "none", ["none", "roi_percentile"],
                  "Per-scan intensity normalisation of OCT B-scans on load: "
                  "roi_percentile maps each scan's black level (1st "
                  "percentile) and its retina ROI's median to fixed values, "
                  "so scans from different devices or exports compare "
                  "(see flags/synthetic_oct.cfg).")
flags.DEFINE_integer("glyphs_num_train", 2000,
                     "Normal training images of --dataset=glyphs.")
flags.DEFINE_integer("glyphs_num_calibration", 200,
                     "Held-out normal calibration images of --dataset=glyphs.")
flags.DEFINE_integer("glyphs_num_test", 400,
                     "Test images of --dataset=glyphs (half normal, half the "
                     "other nine digits).")

# --- model ----------------------------------------------------------------
flags.DEFINE_integer("latent_dim", 100, "Size of z (the paper: 100).")
flags.DEFINE_integer("base_filters", 64,
                     "Base width b: G and D use 8b-4b-2b-b (the paper: 64).")
flags.DEFINE_integer("feature_layer", 4,
                     "D conv block (1..4) that gives f(x) for L_D; 4 = last, "
                     "as in the paper.")
flags.DEFINE_enum("prior", "uniform", ["uniform", "normal"],
                  "Latent prior: uniform on [-1, 1] (DCGAN) or N(0, I).")
flags.DEFINE_boolean("spectral_norm", False,
                     "Spectral normalisation in D (replaces D's BatchNorm).")
flags.DEFINE_enum("gan_loss", "dcgan", ["dcgan", "wgan_gp", "hinge"],
                  "GAN objective: dcgan (the paper's minimax, non-saturating G "
                  "loss), wgan_gp or hinge.")
flags.DEFINE_enum("d_norm", "auto", ["auto", "batch", "layer", "none"],
                  "Normalisation of D's conv blocks 2..4: batch (DCGAN), "
                  "layer or none. auto: none with --spectral_norm or for "
                  "wgan_gp (BatchNorm breaks the per-sample gradient penalty; "
                  "no normalisation measured better than layer, "
                  "BENCHMARKS.md), else batch.")

# --- training ---------------------------------------------------------------
flags.DEFINE_string("model_dir", None, "Model dir (config.json, flags.cfg, "
                    "generator.keras, discriminator.keras, checkpoints/, "
                    "samples/, logs/).")
flags.DEFINE_enum("stage", "gan", ["gan", "encoder", "all"],
                  "What anogan-train trains: the GAN, the f-AnoGAN encoder "
                  "for the trained GAN in --model_dir (see docs/encoder.md), "
                  "or all: the GAN, then its encoder (what --mode=encoder "
                  "and hybrid need).")
flags.DEFINE_integer("encoder_epochs", 0,
                     "Epochs of the encoder stage (--stage=encoder|all); 0: "
                     "--epochs.")
flags.DEFINE_integer("batch_size", 64, "Training batch size.")
flags.DEFINE_integer("epochs", 10, "Total epochs; a larger value resumes.")
flags.DEFINE_integer("steps_per_epoch", 0,
                     "Steps per epoch (0: one pass over the training patches).")
flags.DEFINE_float("g_lr", 2e-4, "Generator Adam learning rate (DCGAN: 2e-4).")
flags.DEFINE_float("d_lr", 2e-4, "Discriminator Adam learning rate.")
flags.DEFINE_float("beta_1", 0.5, "Adam beta_1 for training (DCGAN: 0.5).")
flags.DEFINE_float("beta_2", 0.999, "Adam beta_2 for training.")
flags.DEFINE_integer("n_critic", 0, "D updates per G update (0: 5 for "
                     "wgan_gp as in Gulrajani et al., else 1).")
flags.DEFINE_float("gp_weight", 10.0, "WGAN-GP penalty weight.")
flags.DEFINE_boolean("jit_compile", False,
                     "XLA-compile train_step. Passed explicitly to compile(); "
                     "on 2 CPU cores the un-jitted step was faster at demo size "
                     "(see BENCHMARKS.md).")
flags.DEFINE_integer("sample_every", 1, "Write a sample grid every N epochs.")
flags.DEFINE_float("encoder_lr", 1e-4,
                   "--stage=encoder: Adam learning rate of the encoder "
                   "(betas 0.9, 0.999).")
flags.DEFINE_float("kappa", 1.0,
                   "f-AnoGAN kappa: weight of the feature term in the encoder's "
                   "izi_f loss and in the --mode=encoder score.")
flags.DEFINE_float("mode_seeking", 0.0,
                   "Weight of MSGAN's mode-seeking regulariser in G's loss "
                   "(Mao et al. 2019): penalises codes that give the same "
                   "image; 0: off.")
flags.DEFINE_float("g_ema", 0.0,
                   "Decay of an exponential moving average of G's weights "
                   "(e.g. 0.999): the averaged G is what samples, health, "
                   "selection and generator.keras use; 0: off (at 1000-3000 "
                   "G steps, 0.999 did worse: BENCHMARKS.md).")
flags.DEFINE_float("r1_gamma", 0.0,
                   "R1 penalty gamma/2 E||grad D(x)||^2 on real images in D's "
                   "loss (Mescheder et al. 2018), for --gan_loss=dcgan|hinge "
                   "with --d_norm=none; 0: off.")
flags.DEFINE_float("holdout_fraction", 0.1,
                   "Share of the normal training images held out to measure "
                   "G's coverage each epoch (history.json: diversity, "
                   "coverage_residual, coverage_ratio).")
flags.DEFINE_boolean("select_best", True,
                     "Keep the epoch with the best held-out coverage as the "
                     "model dir's generator/discriminator (used by scoring and "
                     "export); false: the last epoch.")
flags.DEFINE_float("divergence_threshold", 1e4,
                   "Stop with an error when a loss exceeds this or is NaN/Inf.")

# --- mapping ----------------------------------------------------------------
flags.DEFINE_integer("mapping_steps", 500, "Latent mapping steps Gamma (the paper: 500).")
flags.DEFINE_float("mapping_lr", 0.1, "Adam learning rate on z (see the sweep "
                   "in BENCHMARKS.md).")
flags.DEFINE_float("mapping_beta_1", 0.9, "Adam beta_1 on z.")
flags.DEFINE_float("mapping_beta_2", 0.999, "Adam beta_2 on z.")
flags.DEFINE_float("lambda_weight", 0.1,
                   "lambda in (1 - lambda) L_R + lambda L_D (the paper: 0.1).")
flags.DEFINE_integer("mapping_batch_size", 64,
                     "Fixed mapping batch; the last batch is padded and masked.")
flags.DEFINE_integer("restarts", 1, "Initialisations per image; the lowest "
                     "final mapping loss wins.")
flags.DEFINE_enum("discrimination_loss", "feature", ["feature", "bce"],
                  "L_D: feature matching on D's features (the paper) or sigmoid "
                  "cross-entropy on D(G(z)) (the paper's reference variant).")
flags.DEFINE_enum("score", "anogan",
                  ["anogan", "residual", "residual_sq", "feature", "d_output",
                   "bce"],
                  "What anomaly_score holds: A(x) (anogan), R(x) (residual), "
                  "the squared residual sum (x - G(z*))^2 (residual_sq), "
                  "D(x) with feature matching (feature), 1 - D(x) on the query "
                  "(d_output), or A(x) with the bce discrimination loss (bce).")
flags.DEFINE_boolean("mapping_jit_compile", True,
                     "XLA-compile the mapping loop (in-process).")
flags.DEFINE_enum("mapping_conv_impl", "auto", ["auto", "native", "phase"],
                  "How the frozen G and D run stride-2 convolutions while "
                  "mapping: auto (polyphase under XLA and on image-side "
                  "layers), native or phase; same results, different speed "
                  "(benchmarks/mapping.py).")
flags.DEFINE_enum("mapping_compute_dtype", "float32", ["float32", "bfloat16"],
                  "Precision of the frozen G and D while mapping: float32, or "
                  "bfloat16 (mixed precision; z, Adam and losses stay float32) "
                  "for GPUs and bfloat16-capable CPUs.")
flags.DEFINE_enum("mode", "iterative", ["iterative", "encoder", "hybrid"],
                  "Mapping mode: iterative (the paper), encoder (f-AnoGAN one "
                  "pass) or hybrid (encoder init + --mapping_steps).")

# --- scoring / evaluation ---------------------------------------------------
flags.DEFINE_string("output_dir", None, "Where scores, maps and reports go.")
flags.DEFINE_list("inputs", None, "anogan-score input images: files, folders "
                  "(and --data_path/--dataset also work).")
flags.DEFINE_enum("aggregate", "max", ["max", "mean", "topk_mean", "map_max"],
                  "Image score from its patches: max, mean or topk_mean of the "
                  "patches' A(x) (the paper scores patches), or map_max, the "
                  "largest pixel of the stitched residual map (with "
                  "--roi=retina: inside the ROI plus a margin, never on "
                  "padding or border artefacts).")
flags.DEFINE_integer("topk", 3, "k for --aggregate=topk_mean.")
flags.DEFINE_enum("threshold_rule", "percentile", ["percentile", "youden"],
                  "percentile: a percentile of the scores of normal validation "
                  "images (held out from training); youden: Youden's J on the "
                  "labelled test data (optimistic).")
flags.DEFINE_float("threshold_percentile", 95.0,
                   "Percentile for --threshold_rule=percentile.")
flags.DEFINE_integer("num_test", 0, "Limit on test images (0: all).")
flags.DEFINE_list("calibration_data", None,
                  "Held-out normal images (folders, image files, .npy/.npz, "
                  ".tfrecord; loaded like --inputs) for conformal p-values and "
                  "thresholds. Default: the dataset's calibration split, when "
                  "it has one (see docs/calibration.md).")
flags.DEFINE_float("target_fpr", 0.0,
                   "> 0: threshold at the conformal threshold for this "
                   "false-positive rate on normal images (overrides "
                   "--threshold_rule); 0: off. Needs at least "
                   "ceil(1/target_fpr) - 1 calibration images (the smallest "
                   "achievable rate with n of them is 1/(n+1)).")
flags.DEFINE_boolean("save_maps", True, "Write per-image .npy maps and PNG overlays.")
flags.DEFINE_boolean("paper_score", True,
                     "anogan-evaluate with --mode=encoder|hybrid: also map "
                     "the test images iteratively (--mapping_steps) and report "
                     "the paper's A(x) AUROC in metrics.json "
                     "(image_auroc_by_score.paper_iterative).")
flags.DEFINE_float("map_sigma", 0.0,
                   "Gaussian sigma, in full-image pixels, of the anomaly maps "
                   "(map_max, pixel metrics, anomaly_maps.png, maps/*.npy); "
                   "0: the raw stitched |x - G(z*)|. Masked pixels (artefacts, "
                   "outside the ROI's scoring region) never leak in.")
flags.DEFINE_enum("map_smoothing", "signed", ["signed", "absolute"],
                  "With --map_sigma > 0: signed smooths the residual "
                  "x - G(z*) and then takes its magnitude (speckle of random "
                  "sign averages out, a lesion's one-signed residual stays); "
                  "absolute smooths |x - G(z*)|.")
flags.DEFINE_enum("map_norm", "none", ["none", "depth"],
                  "depth: standardise every anomaly-map pixel by the normal "
                  "calibration images' maps at the same depth (within the "
                  "retina band with --roi=retina, else the row), so a layer "
                  "G misfits on every scan stops outranking a lesion. "
                  "anogan-evaluate fits the statistics on the calibration "
                  "images and records them in detector.json.")

# --- export / serving ---------------------------------------------------------
flags.DEFINE_string("export_dir", None, "Export base: versions go to <export_dir>/<N>/.")
flags.DEFINE_integer("version", 0, "Export version (0: next integer).")
flags.DEFINE_boolean("export_xla", False, "Also export XLA-compiled twins "
                     "(*_xla) for in-process reuse; TF Serving uses the plain ones.")
flags.DEFINE_string("server", None, "anogan-client: host:port of a TF Serving "
                    "gRPC endpoint, or http://host:port for REST.")
flags.DEFINE_string("model_name", "anogan", "anogan-client: served model name.")
flags.DEFINE_string("signature_name", "serving_default", "anogan-client: signature.")
flags.DEFINE_float("timeout", 60.0, "anogan-client: seconds per request.")
flags.DEFINE_integer("client_batch_size", 8, "anogan-client: images per request.")
flags.DEFINE_integer("model_version", 0, "anogan-client: served model version "
                     "to call (0: the server's latest).")

# --- marker discovery (anogan-discover; docs/markers.md) ----------------------
flags.DEFINE_string("maps_dir", None,
                    "anogan-discover: discover in the maps an earlier "
                    "anogan-discover (maps/<id>.npz, calibration_maps.npz) or "
                    "anogan-score (maps/<id>.npy) run wrote into this "
                    "--output_dir, instead of mapping the images again "
                    "(--inputs/--dataset name the same images).")
flags.DEFINE_string("known_types", None,
                    "anogan-discover: an .npz with 'ids', 'type_maps' [N, H, "
                    "W] (type code k + 1, 0: none) and 'type_names' [K] to "
                    "evaluate the markers against (ARI, NMI, per-type "
                    "recall). synthetic_oct and textures test splits, and "
                    "MVTec AD style folders, bring their own.")
flags.DEFINE_string("region_threshold", "percentile",
                    "anogan-discover: anomalous pixels are map >= t with t "
                    "from the normal calibration images: 'percentile' (the "
                    "1 - --target_pixel_fpr quantile of their pixels), "
                    "'conformal' (at most --target_region_fpr of normal "
                    "images get a region, split-conformal), or a map value.")
flags.DEFINE_float("target_pixel_fpr", 0.005,
                   "anogan-discover --region_threshold=percentile: share of "
                   "normal calibration pixels at or above the threshold.")
flags.DEFINE_float("target_region_fpr", 0.1,
                   "anogan-discover --region_threshold=conformal: bound on "
                   "the share of normal images with any region.")
flags.DEFINE_integer("min_region_area", 10,
                     "anogan-discover: smallest region, in pixels.")
flags.DEFINE_enum("region_map", "normalized", ["normalized", "scoring"],
                  "anogan-discover: the map regions are found on. "
                  "normalized: the smoothed signed residual x - G(z*) "
                  "measured against normal calibration images at the same "
                  "depth in the ROI band (1 = their 99th percentile; one "
                  "bin without --roi); scoring: the scoring maps.")
flags.DEFINE_list("region_sigma", None,
                  "anogan-discover: Gaussian sigmas (pixels) of the residual "
                  "regions are found on, e.g. 1.5,4: with several, the "
                  "normalized map is the larger of the per-scale maps (small "
                  "foci and large fluid both show). Default: --map_sigma.")
flags.DEFINE_list("descriptors", None,
                  "anogan-discover: region descriptor blocks, any of shape,"
                  "intensity,position,d_features,latent. Default: shape, "
                  "intensity, position (with --roi), d_features and latent "
                  "(with --model_dir).")
flags.DEFINE_integer("pca_components", 0,
                     "anogan-discover: PCA components of the standardised "
                     "descriptors (0: enough for 90% of the variance, at "
                     "most 16).")
flags.DEFINE_enum("cluster_method", "kmeans",
                  ["kmeans", "agglomerative", "hdbscan"],
                  "anogan-discover: how regions are grouped into markers "
                  "(hdbscan finds the number itself and may leave regions "
                  "unassigned).")
flags.DEFINE_string("num_markers", "auto",
                    "anogan-discover: number of markers, or auto (the "
                    "silhouette's best k in --min_markers..--max_markers).")
flags.DEFINE_integer("min_markers", 2, "anogan-discover: smallest k tried by "
                     "--num_markers=auto.")
flags.DEFINE_integer("max_markers", 8, "anogan-discover: largest k tried by "
                     "--num_markers=auto.")
flags.DEFINE_integer("hdbscan_min_cluster_size", 5,
                     "anogan-discover --cluster_method=hdbscan: smallest "
                     "marker, in regions.")
flags.DEFINE_integer("prototypes_per_marker", 12,
                     "anogan-discover: medoid regions shown on each marker's "
                     "contact sheet and listed in markers.json.")
flags.DEFINE_integer("marker_feature_layer", 2,
                     "anogan-discover: D's conv block (1..4) whose "
                     "activations are pooled over each region (d_features).")
flags.DEFINE_integer("report_max_images", 0,
                     "anogan-discover: per-image overlays drawn in the report "
                     "(images with regions first; 0: every image).")


def _no_empty_paths(name: str) -> None:
    """--inputs/--calibration_data, when given, must name paths: an empty
    value (`--inputs=`, or `a,,b`) would silently fall back to the dataset
    flags or name no file."""
    def valid(paths) -> bool:
        return paths is None or (len(paths) > 0 and all(p.strip()
                                                        for p in paths))
    flags.register_validator(
        name, valid,
        message=f"--{name} names no path or an empty one (a stray comma?). "
                f"Pass comma-separated files or folders, e.g. "
                f"--{name}=scans/,extra.png, or leave the flag out.")


_no_empty_paths("inputs")
_no_empty_paths("calibration_data")


def _output_dir(name: str = "output_dir") -> Optional[str]:
    """The --output_dir value, refused if it is an existing file (checked
    before any work, so nothing runs only to fail at the first write)."""
    path = FLAGS[name].value
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise config_lib.ConfigError(
            f"--{name}={path} is an existing file, not a folder. Pass a "
            f"folder path (it is created if missing), or move the file.")
    return path


def _patch_flags() -> Tuple[int, int]:
    """(--patch_size, --patch_stride), refused when negative (0: default)."""
    for name in ("patch_size", "patch_stride"):
        if FLAGS[name].value < 0:
            raise config_lib.ConfigError(
                f"--{name} must be >= 0 (0: the default), got "
                f"{FLAGS[name].value}. Pass e.g. --{name}=0.")
    return FLAGS.patch_size, FLAGS.patch_stride


def _resize() -> Optional[Tuple[int, int]]:
    if not FLAGS.resize:
        return None
    try:
        h, w = (int(v) for v in FLAGS.resize)
    except ValueError as e:
        raise config_lib.ConfigError(
            f"--resize takes two integers H,W, got {FLAGS.resize}.") from e
    return (h, w)


def data_config_from_flags(image_size: Optional[int] = None,
                           channels: Optional[int] = None) -> config_lib.DataConfig:
    """DataConfig from flags; image_size/channels may come from the model."""
    patch_size, patch_stride = _patch_flags()
    return config_lib.DataConfig(
        dataset=FLAGS.dataset, data_path=FLAGS.data_path,
        channels=channels or FLAGS.channels,
        image_size=image_size or FLAGS.image_size,
        patch_size=patch_size, patch_stride=patch_stride, roi=FLAGS.roi,
        roi_min_coverage=FLAGS.roi_min_coverage,
        max_patches_per_image=FLAGS.max_patches_per_image,
        resize=_resize(), normal_class=FLAGS.normal_class,
        skip_bad_files=FLAGS.skip_bad_files, seed=FLAGS.seed,
        oct_height=FLAGS.oct_height, oct_width=FLAGS.oct_width,
        oct_num_train=FLAGS.oct_num_train, oct_num_test=FLAGS.oct_num_test,
        oct_anomaly_fraction=FLAGS.oct_anomaly_fraction,
        oct_artifacts=FLAGS.oct_artifacts,
        calibration_fraction=FLAGS.calibration_fraction,
        intensity_norm=FLAGS.intensity_norm,
        glyphs_num_train=FLAGS.glyphs_num_train,
        glyphs_num_calibration=FLAGS.glyphs_num_calibration,
        glyphs_num_test=FLAGS.glyphs_num_test)


def model_config_from_flags() -> config_lib.ModelConfig:
    return config_lib.ModelConfig(
        image_size=FLAGS.image_size, channels=FLAGS.channels,
        latent_dim=FLAGS.latent_dim, base_filters=FLAGS.base_filters,
        feature_layer=FLAGS.feature_layer, prior=FLAGS.prior,
        spectral_norm=FLAGS.spectral_norm, gan_loss=FLAGS.gan_loss,
        d_norm=resolve_d_norm(FLAGS.d_norm, FLAGS.gan_loss,
                              FLAGS.spectral_norm))


def resolve_d_norm(d_norm: str, gan_loss: str, spectral_norm: bool) -> str:
    """The D normalisation "auto" stands for (see --d_norm)."""
    if d_norm != "auto":
        return d_norm
    if spectral_norm or gan_loss == "wgan_gp":
        return "none"
    return "batch"


def train_config_from_flags() -> config_lib.TrainConfig:
    return config_lib.TrainConfig(
        model_dir=FLAGS.model_dir, batch_size=FLAGS.batch_size,
        epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch,
        g_lr=FLAGS.g_lr, d_lr=FLAGS.d_lr, beta_1=FLAGS.beta_1,
        beta_2=FLAGS.beta_2,
        n_critic=FLAGS.n_critic or (5 if FLAGS.gan_loss == "wgan_gp" else 1),
        gp_weight=FLAGS.gp_weight, jit_compile=FLAGS.jit_compile,
        seed=FLAGS.seed, sample_every=FLAGS.sample_every,
        divergence_threshold=FLAGS.divergence_threshold,
        encoder_lr=FLAGS.encoder_lr, kappa=FLAGS.kappa,
        mode_seeking=FLAGS.mode_seeking,
        holdout_fraction=FLAGS.holdout_fraction,
        select_best=FLAGS.select_best, g_ema=FLAGS.g_ema,
        r1_gamma=FLAGS.r1_gamma)


def mapping_config_from_flags() -> config_lib.MappingConfig:
    score = FLAGS.score
    discrimination = "bce" if score == "bce" else FLAGS.discrimination_loss
    return config_lib.MappingConfig(
        steps=FLAGS.mapping_steps, lr=FLAGS.mapping_lr,
        beta_1=FLAGS.mapping_beta_1, beta_2=FLAGS.mapping_beta_2,
        lambda_weight=FLAGS.lambda_weight,
        batch_size=FLAGS.mapping_batch_size, restarts=FLAGS.restarts,
        seed=FLAGS.seed, discrimination_loss=discrimination, score=score,
        jit_compile=FLAGS.mapping_jit_compile, mode=FLAGS.mode,
        kappa=FLAGS.kappa, conv_impl=FLAGS.mapping_conv_impl,
        compute_dtype=FLAGS.mapping_compute_dtype)


def eval_config_from_flags() -> config_lib.EvalConfig:
    return config_lib.EvalConfig(
        output_dir=_output_dir(), aggregate=FLAGS.aggregate,
        topk=FLAGS.topk, threshold_rule=FLAGS.threshold_rule,
        threshold_percentile=FLAGS.threshold_percentile,
        num_test=FLAGS.num_test,
        calibration_data=tuple(FLAGS.calibration_data or ()),
        target_fpr=FLAGS.target_fpr, map_sigma=FLAGS.map_sigma,
        map_smoothing=FLAGS.map_smoothing, map_norm=FLAGS.map_norm,
        paper_score=FLAGS.paper_score)


def model_config_for_scoring(model_dir: str) -> config_lib.ModelConfig:
    """Reads the model's config and checks explicit --image_size/--channels.

    Raises:
      ConfigError: an explicitly passed --image_size or --channels differs
        from the trained model's.
    """
    model_config = config_lib.load_model_config(model_dir)
    for name in ("image_size", "channels"):
        if FLAGS[name].present and FLAGS[name].value != getattr(model_config, name):
            raise config_lib.ConfigError(
                f"--{name}={FLAGS[name].value} does not match the model in "
                f"{model_dir} ({name}={getattr(model_config, name)}). Drop the "
                f"flag (it is read from config.json) or use a matching model.")
    return model_config


def scoring_configs_from_flags():
    """(ModelConfig, DataConfig, MappingConfig, EvalConfig) for score/evaluate.

    The model's own config.json fixes image_size and channels.
    """
    model_config = model_config_for_scoring(FLAGS.model_dir)
    data_config = data_config_from_flags(model_config.image_size,
                                         model_config.channels)
    return (model_config, data_config, mapping_config_from_flags(),
            eval_config_from_flags())


# The flag of every setting detector.json records ("<section>.<field>" of
# scoring.detector.SETTING_KEYS); mapping.epsilon has no flag.
DETECTOR_FLAGS = {
    "mapping.steps": "mapping_steps", "mapping.lr": "mapping_lr",
    "mapping.beta_1": "mapping_beta_1", "mapping.beta_2": "mapping_beta_2",
    "mapping.lambda_weight": "lambda_weight",
    "mapping.batch_size": "mapping_batch_size",
    "mapping.restarts": "restarts", "mapping.seed": "seed",
    "mapping.discrimination_loss": "discrimination_loss",
    "mapping.score": "score", "mapping.jit_compile": "mapping_jit_compile",
    "mapping.mode": "mode", "mapping.kappa": "kappa",
    "mapping.conv_impl": "mapping_conv_impl",
    "mapping.compute_dtype": "mapping_compute_dtype",
    "patches.patch_size": "patch_size", "patches.patch_stride": "patch_stride",
    "patches.roi": "roi", "patches.roi_min_coverage": "roi_min_coverage",
    "patches.intensity_norm": "intensity_norm", "patches.resize": "resize",
    "image_score.aggregate": "aggregate", "image_score.topk": "topk",
    "image_score.map_sigma": "map_sigma",
    "image_score.map_smoothing": "map_smoothing",
    "image_score.map_norm": "map_norm",
}


def explicit_detector_settings() -> Tuple[str, ...]:
    """Detector setting keys whose flags were given (command line or flagfile).

    --score also fixes the discrimination loss (--score=bce implies the bce
    loss), so an explicit --score takes both from the flags.
    """
    keys = {key for key, name in DETECTOR_FLAGS.items() if FLAGS[name].present}
    if "mapping.score" in keys:
        keys.add("mapping.discrimination_loss")
    return tuple(sorted(keys))


def detector_from_flags(written_by: str, base=None):
    """The detector settings the flags describe (anogan-train records them).

    Args:
      written_by: The binary recording them.
      base: The model dir's current Detector, or None; its settings stay
        where no flag was given (`detector.resolve_configs`).

    Raises:
      ConfigError: a mapping, data or evaluation flag is invalid.
    """
    from anogan_tf.scoring import detector as detector_lib
    data_config, mapping_config, eval_config = (
        data_config_from_flags(), mapping_config_from_flags(),
        eval_config_from_flags())
    if base is not None:
        data_config, mapping_config, eval_config, _ = (
            detector_lib.resolve_configs(base, data_config, mapping_config,
                                         eval_config,
                                         explicit_detector_settings()))
        mapping_config = _bce_discrimination(mapping_config)
    return detector_lib.Detector.from_configs(
        data_config, mapping_config, eval_config, written_by=written_by)


def _bce_discrimination(mapping_config):
    """--score=bce implies the bce discrimination loss (as the flags do)."""
    if (mapping_config.score == "bce" and
            mapping_config.discrimination_loss != "bce"):
        return dataclasses.replace(mapping_config, discrimination_loss="bce")
    return mapping_config


def _describe_sources(source, data_config, mapping_config, eval_config,
                      detector) -> str:
    from anogan_tf.scoring import detector as detector_lib
    values = detector_lib.Detector.from_configs(
        data_config, mapping_config, eval_config).settings()
    groups = {"flag": [], detector_lib.DETECTOR_FILE: [], "default": []}
    for key in detector_lib.SETTING_KEYS:
        name = DETECTOR_FLAGS.get(key, key)
        groups[source[key]].append(f"{name}={values[key]}")
    where = (f"{detector_lib.DETECTOR_FILE} (written by "
             f"{detector.written_by or 'an unknown binary'})")
    return (f"Scoring settings: from {where}: "
            f"{', '.join(groups[detector_lib.DETECTOR_FILE]) or 'none'}; "
            f"from flags: {', '.join(groups['flag']) or 'none'}; "
            f"defaults: {', '.join(groups['default']) or 'none'}.")


def detector_configs_from_flags():
    """Scoring configs layered as defaults < detector.json < given flags.

    Like `scoring_configs_from_flags`, but every setting that
    `<model_dir>/detector.json` records and whose flag was not given (on the
    command line or in a flagfile) comes from the file. Logs, once, where
    each value came from; a model dir without detector.json keeps the flag
    values (one log line says so).

    Returns:
      (ModelConfig, DataConfig, MappingConfig, EvalConfig, Detector or None).

    Raises:
      ConfigError: detector.json is corrupt, or see
        `scoring_configs_from_flags`.
    """
    from absl import logging

    from anogan_tf.scoring import detector as detector_lib
    model_config, data_config, mapping_config, eval_config = (
        scoring_configs_from_flags())
    detector = detector_lib.load_detector(FLAGS.model_dir)
    if detector is None:
        logging.info(
            "No %s in %s (a model dir from before the detector's settings "
            "were recorded): scoring with the flag values and defaults. "
            "anogan-evaluate records them.", detector_lib.DETECTOR_FILE,
            FLAGS.model_dir)
        return model_config, data_config, mapping_config, eval_config, None
    data_config, mapping_config, eval_config, source = (
        detector_lib.resolve_configs(detector, data_config, mapping_config,
                                     eval_config,
                                     explicit_detector_settings()))
    mapping_config = _bce_discrimination(mapping_config)
    logging.info("%s", _describe_sources(source, data_config, mapping_config,
                                         eval_config, detector))
    return model_config, data_config, mapping_config, eval_config, detector


def resolved_flags_text() -> str:
    """The anogan_tf flags as a replayable flagfile (`--flagfile=...`)."""
    module = FLAGS.find_module_defining_flag("dataset")
    lines = []
    for flag in FLAGS.get_flags_for_module(module):
        if flag.value is None:
            continue
        lines.append(flag.serialize())
    return "# Resolved anogan_tf flags; replay with --flagfile=<this file>.\n" + \
        "\n".join(sorted(lines)) + "\n"


def report_error(program: str, error: BaseException) -> None:
    """Reports a binary's fatal error once, as `<program>: error: <message>`.

    The line goes to stderr. absl logs to stderr too unless it writes a log
    file (--log_dir), so the error is logged only then: logging it as well
    printed every message twice (issue 14).

    Args:
      program: The binary's name, e.g. "anogan-train".
      error: The exception whose message is reported.
    """
    handler = logging.get_absl_handler().python_handler
    if handler.stream is not sys.stderr and not FLAGS["logtostderr"].value:
        logging.error("%s", error)
    sys.stderr.write(f"{program}: error: {error}\n")


def _floats(name: str) -> Tuple[float, ...]:
    """A list flag of numbers as floats (ConfigError naming the flag)."""
    try:
        return tuple(float(v) for v in FLAGS[name].value or ())
    except ValueError as e:
        raise config_lib.ConfigError(
            f"--{name} takes numbers, got {FLAGS[name].value}.") from e


def discovery_config_from_flags():
    """The DiscoveryConfig of anogan-discover's flags.

    Raises:
      ConfigError: a discovery flag is invalid (the message names it).
    """
    from anogan_tf.markers.pipeline import DiscoveryConfig
    return DiscoveryConfig(
        output_dir=_output_dir(), region_threshold=FLAGS.region_threshold,
        target_pixel_fpr=FLAGS.target_pixel_fpr,
        target_region_fpr=FLAGS.target_region_fpr,
        min_region_area=FLAGS.min_region_area,
        region_map=FLAGS.region_map,
        region_sigma=_floats("region_sigma"),
        descriptors=tuple(FLAGS.descriptors or ()),
        pca_components=FLAGS.pca_components,
        cluster_method=FLAGS.cluster_method, num_markers=FLAGS.num_markers,
        min_markers=FLAGS.min_markers, max_markers=FLAGS.max_markers,
        hdbscan_min_cluster_size=FLAGS.hdbscan_min_cluster_size,
        prototypes=FLAGS.prototypes_per_marker,
        feature_layer=FLAGS.marker_feature_layer,
        max_overlays=FLAGS.report_max_images, save_maps=FLAGS.save_maps,
        seed=FLAGS.seed)
