"""Region descriptors, and their standardised, PCA-reduced embedding.

Each region is described by blocks of numbers (`DESCRIPTOR_BLOCKS`):

  shape      area, log area, bbox height and width, extent (area / bbox
             area), eccentricity sqrt(1 - l2 / l1) and major/minor axis
             lengths 4 sqrt(l) from the eigenvalues l1 >= l2 of the pixel
             coordinates' covariance (0 for a single pixel, 1 for a line),
             solidity (area / area of the convex hull of the pixel squares;
             1 for a filled rectangle).
  intensity  the image x (in [-1, 1], mean over channels) in the region:
             mean, std, min, max; its mean in the ring around it (pixels
             within `ring_width` of the region, not in it, not artefacts)
             and the contrast region - ring; the anomaly map's mean and max
             in the region and its mean in the ring; and, when the signed
             residual x - G(z*) is known, its mean in the region and ring
             (negative: darker than the model expects, e.g. fluid; positive:
             brighter, e.g. hyperreflective foci).
  position   with an ROI band (OCT: the retina from the vitreous to the
             RPE), the relative depth (y - top) / (bottom - top) of the
             centroid, of the region's highest and lowest pixels, and the
             region's height over the band's thickness
             (`scoring.map_reference.depth_coordinates`); without a band,
             the centroid's row and column over the image size.
  d_features D's block-`feature_layer` activations over a model-sized
             window centred on the region, average-pooled with the region's
             share of each feature cell as weight: f(x), and
             f(x) - f(G(z*)) when the reconstruction is known.
  latent     z* of the patch that covers most of the region (the mapping's
             latent code of that patch).

`embed` z-scores every column (constant columns are dropped), weights each
block by 1 / sqrt(its number of columns) so that every block carries the
same total variance whatever its size (64 D features do not drown 10 shape
numbers), and reduces with PCA.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError
from sklearn.decomposition import PCA

from anogan_tf.config import ConfigError
from anogan_tf.data.records import PatchSet
from anogan_tf.markers.regions import RegionSet
from anogan_tf.scoring.map_reference import depth_coordinates

__all__ = ["DESCRIPTOR_BLOCKS", "Descriptors", "Embedding",
           "check_blocks", "shape_descriptors",
           "describe_regions", "discriminator_features", "covering_patches",
           "embed"]

DESCRIPTOR_BLOCKS = ("shape", "intensity", "position", "d_features",
                     "latent")
_CHUNK = 256


def check_blocks(blocks: Sequence[str]) -> Tuple[str, ...]:
    """The descriptor blocks, validated.

    Raises:
      ConfigError: an unknown block name or an empty list.
    """
    blocks = tuple(b.strip() for b in blocks if b.strip())
    unknown = sorted(set(blocks) - set(DESCRIPTOR_BLOCKS))
    if unknown or not blocks:
        raise ConfigError(
            f"--descriptors takes a comma-separated list of "
            f"{','.join(DESCRIPTOR_BLOCKS)}, got {','.join(blocks) or '(none)'}"
            f"{' (unknown: ' + ', '.join(unknown) + ')' if unknown else ''}.")
    return blocks


@dataclasses.dataclass(frozen=True)
class Descriptors:
    """Per-region descriptor values.

    Attributes:
      values: float64 [R, D].
      names: The D column names.
      blocks: (block, start, stop) column ranges, in DESCRIPTOR_BLOCKS
        order, of the blocks computed.
    """

    values: np.ndarray
    names: Tuple[str, ...]
    blocks: Tuple[Tuple[str, int, int], ...]

    def column(self, name: str) -> np.ndarray:
        """The values of one named column."""
        return self.values[:, self.names.index(name)]

    def block_names(self) -> Tuple[str, ...]:
        return tuple(b for b, _, _ in self.blocks)


def shape_descriptors(mask: np.ndarray) -> Dict[str, float]:
    """Shape numbers of one region (see the module docstring).

    Args:
      mask: bool [h, w], the region (e.g. cropped to its bbox); not empty.

    Returns:
      {"area", "log_area", "bbox_height", "bbox_width", "extent",
      "eccentricity", "major_axis", "minor_axis", "solidity"}.
    """
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if not len(ys):
        raise ValueError("shape_descriptors needs a non-empty region.")
    area = float(len(ys))
    h = float(ys.max() - ys.min() + 1)
    w = float(xs.max() - xs.min() + 1)
    if len(ys) > 1:
        cov = np.cov(np.stack([ys, xs]).astype(np.float64), bias=True)
        small, large = np.clip(np.linalg.eigvalsh(cov), 0.0, None)
    else:
        small = large = 0.0
    eccentricity = math.sqrt(1.0 - small / large) if large > 0 else 0.0
    corners = np.concatenate([np.stack([ys + dy, xs + dx], axis=1)
                              for dy in (-0.5, 0.5) for dx in (-0.5, 0.5)])
    try:
        hull = ConvexHull(np.unique(corners, axis=0)).volume
    except QhullError:
        hull = area
    return {"area": area, "log_area": math.log(area), "bbox_height": h,
            "bbox_width": w, "extent": area / (h * w),
            "eccentricity": eccentricity,
            "major_axis": 4.0 * math.sqrt(large),
            "minor_axis": 4.0 * math.sqrt(small),
            "solidity": min(1.0, area / hull)}


def covering_patches(regions: RegionSet, patches: PatchSet) -> np.ndarray:
    """Per region, the index of the patch that covers most of it.

    Ties go to the patch whose centre is nearest the region's centroid.

    Returns:
      int64 [R] indices into `patches` (-1 when no patch of its image
      overlaps it).
    """
    out = np.full(len(regions), -1, np.int64)
    size = patches.patch_size
    by_image: Dict[int, np.ndarray] = {}
    for k, r in enumerate(regions.regions):
        if r.image_index not in by_image:
            by_image[r.image_index] = np.flatnonzero(
                patches.image_index == r.image_index)
        candidates = by_image[r.image_index]
        if not len(candidates):
            continue
        mask = regions.mask(k)
        integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1),
                          ((1, 0), (1, 0)))
        ys, xs = patches.ys[candidates], patches.xs[candidates]
        cover = (integral[ys + size, xs + size] - integral[ys, xs + size] -
                 integral[ys + size, xs] + integral[ys, xs])
        distance = np.hypot(ys + size / 2 - r.centroid[0],
                            xs + size / 2 - r.centroid[1])
        best = np.lexsort((distance, -cover))[0]
        if cover[best] > 0:
            out[k] = candidates[best]
    return out


def _windows(regions: RegionSet, size: int,
             shape: Tuple[int, int]) -> np.ndarray:
    """[R, 2] top-left corners of size x size windows centred on each
    region's centroid, inside the image."""
    h, w = shape
    corners = np.zeros((len(regions), 2), np.int64)
    for k, r in enumerate(regions.regions):
        corners[k, 0] = min(max(int(round(r.centroid[0] - size / 2)), 0),
                            h - size)
        corners[k, 1] = min(max(int(round(r.centroid[1] - size / 2)), 0),
                            w - size)
    return corners


def _feature_twin(discriminator, block: int):
    """A copy of D (same weights) whose `features` is conv block `block`."""
    config = dict(discriminator.get_config())
    if not 1 <= block <= len(discriminator.convs):
        raise ConfigError(
            f"--marker_feature_layer must be a conv block of D in 1.."
            f"{len(discriminator.convs)}, got {block}.")
    config["feature_layer"] = block
    twin = type(discriminator)(**config)
    twin.build((None, discriminator.image_size, discriminator.image_size,
                discriminator.channels))
    twin.set_weights(discriminator.get_weights())
    return twin


def _resize(batch: np.ndarray, size: int) -> np.ndarray:
    if batch.shape[1] == size:
        return batch
    import tensorflow as tf
    return tf.image.resize(batch, (size, size), method="area").numpy()


def discriminator_features(discriminator, crops: np.ndarray,
                           weights: np.ndarray, block: int) -> np.ndarray:
    """D's block activations of `crops`, pooled with `weights`.

    Args:
      discriminator: The trained D (`models.dcgan.Discriminator`).
      crops: float32 [R, s, s, C] windows in [-1, 1] (resized to D's input
        size when s differs).
      weights: [R, s, s] pooling weights (the region's pixels in each
        window); a window without weight is pooled uniformly.
      block: D's conv block (1..4).

    Returns:
      float64 [R, channels of the block].
    """
    twin = _feature_twin(discriminator, block)
    size = discriminator.image_size
    out = []
    for start in range(0, len(crops), _CHUNK):
        x = _resize(np.asarray(crops[start:start + _CHUNK], np.float32), size)
        f = np.asarray(twin.features(x, training=False), np.float64)
        wts = _resize(np.asarray(weights[start:start + _CHUNK],
                                 np.float32)[..., None], size)[..., 0]
        fh, fw = f.shape[1:3]
        pooled = wts.reshape(len(wts), fh, size // fh, fw,
                             size // fw).mean(axis=(2, 4))
        total = pooled.sum(axis=(1, 2), keepdims=True)
        pooled = np.where(total > 0, pooled / np.maximum(total, 1e-12),
                          1.0 / (fh * fw))
        out.append(np.einsum("rhw,rhwc->rc", pooled, f))
    if not out:
        return np.zeros((0, 0))
    return np.concatenate(out)


def _ring(mask: np.ndarray, width: int) -> np.ndarray:
    return ndimage.binary_dilation(mask, iterations=width) & ~mask


def describe_regions(regions: RegionSet, images: np.ndarray,
                     maps: np.ndarray, blocks: Sequence[str],
                     signed: Optional[np.ndarray] = None,
                     valid: Optional[np.ndarray] = None,
                     roi: Optional[np.ndarray] = None,
                     discriminator=None, feature_layer: int = 2,
                     window: int = 0,
                     reconstructions: Optional[np.ndarray] = None,
                     patches: Optional[PatchSet] = None,
                     latents: Optional[np.ndarray] = None,
                     ring_width: int = 0) -> Descriptors:
    """Computes the descriptor blocks of every region.

    Args:
      regions: The RegionSet.
      images: float32 [N, H, W, C] in [-1, 1], the scored images (with
        artefact pixels filled, as the model saw them).
      maps: [N, H, W] the anomaly maps the regions were found on.
      blocks: Which of DESCRIPTOR_BLOCKS to compute; "d_features" needs
        `discriminator` and "latent" `patches` and `latents` (they are
        skipped, with a ConfigError, when missing).
      signed: Optional [N, H, W] signed residual x - G(z*) (channel mean).
      valid: Optional bool [N, H, W], non-artefact pixels (rings leave the
        others out).
      roi: Optional bool [N, H, W] ROI band masks (position block).
      discriminator: D, for "d_features".
      feature_layer: D's conv block pooled.
      window: Side of the windows D sees, in image pixels (0: D's input
        size).
      reconstructions: Optional [N, H, W, C] stitched G(z*), for
        f(x) - f(G(z*)).
      patches, latents: The PatchSet and its [P, d] z*, for "latent".
      ring_width: Ring width in pixels (0: max(2, round(H / 40))).

    Returns:
      Descriptors with the requested blocks in DESCRIPTOR_BLOCKS order.

    Raises:
      ConfigError: a block needs an input that was not given.
    """
    blocks = check_blocks(blocks)
    n, h, w = maps.shape
    if "d_features" in blocks and discriminator is None:
        raise ConfigError("The d_features descriptors need the trained D: "
                          "pass --model_dir, or drop d_features from "
                          "--descriptors.")
    if "latent" in blocks and (patches is None or latents is None):
        raise ConfigError("The latent descriptors need the mapping's z* of "
                          "every patch, which only a scoring run gives: pass "
                          "--model_dir (not --maps_dir), or drop latent from "
                          "--descriptors.")
    ring_width = ring_width or max(2, int(round(h / 40)))
    gray = np.asarray(images, np.float64).mean(axis=-1)
    valid = np.ones((n, h, w), bool) if valid is None else valid
    edges = {}
    columns: List[Tuple[str, List[str], np.ndarray]] = []
    r_count = len(regions)

    def add(block: str, names: List[str], values) -> None:
        columns.append((block, names, np.asarray(values, np.float64)
                        .reshape(r_count, len(names))))

    for block in DESCRIPTOR_BLOCKS:
        if block not in blocks:
            continue
        if block == "shape":
            rows = []
            for r in regions.regions:
                y0, x0, y1, x1 = r.bbox
                rows.append(shape_descriptors(
                    regions.labels[r.image_index, y0:y1, x0:x1] == r.number))
            names = list(rows[0]) if rows else list(shape_descriptors(
                np.ones((1, 1), bool)))
            add(block, names, [[row[k] for k in names] for row in rows])
        elif block == "intensity":
            names = ["x_mean", "x_std", "x_min", "x_max", "x_ring_mean",
                     "x_contrast", "map_mean", "map_max", "map_ring_mean"]
            if signed is not None:
                names += ["signed_mean", "signed_ring_mean"]
            rows = []
            for r in regions.regions:
                i = r.image_index
                y0, x0, y1, x1 = r.bbox
                pad = ring_width + 1
                sl = (slice(max(0, y0 - pad), min(h, y1 + pad)),
                      slice(max(0, x0 - pad), min(w, x1 + pad)))
                own = regions.labels[i][sl] == r.number
                ring = _ring(own, ring_width) & valid[i][sl]
                if not ring.any():
                    ring = own
                x, m = gray[i][sl], np.asarray(maps[i][sl], np.float64)
                row = [x[own].mean(), x[own].std(), x[own].min(),
                       x[own].max(), x[ring].mean(),
                       x[own].mean() - x[ring].mean(), m[own].mean(),
                       m[own].max(), m[ring].mean()]
                if signed is not None:
                    s = np.asarray(signed[i][sl], np.float64)
                    row += [s[own].mean(), s[ring].mean()]
                rows.append(row)
            add(block, names, rows)
        elif block == "position":
            use_band = roi is not None and roi.any()
            names = (["depth", "depth_top", "depth_bottom", "height_in_band"]
                     if use_band else ["row", "column"])
            rows = []
            for k, r in enumerate(regions.regions):
                cy, cx = r.centroid
                if not use_band:
                    rows.append([cy / h, cx / w])
                    continue
                i = r.image_index
                if i not in edges:
                    edges[i] = (depth_coordinates((1, h, w), roi[i][None])[0]
                                if roi[i].any() else None)
                if edges[i] is None:  # no band found in this image
                    rows.append([cy / h, r.bbox[0] / h, r.bbox[2] / h,
                                 (r.bbox[2] - r.bbox[0]) / h])
                    continue
                depth = edges[i]
                ys, xs = np.nonzero(regions.mask(k))
                rel = depth[ys, xs]
                col = int(np.clip(round(cx), 0, w - 1))
                # the depth is linear in y down a column: (y - top) / thick
                step = depth[1, col] - depth[0, col] if h > 1 else 1.0
                rows.append([depth[0, col] + cy * step, rel.min(), rel.max(),
                             (r.bbox[2] - r.bbox[0]) * step])
            add(block, names, rows)
        elif block == "d_features":
            size = window or discriminator.image_size
            if size > min(h, w):
                size = min(h, w)
            corners = _windows(regions, size, (h, w))
            crops, weights, recon = [], [], []
            for k, r in enumerate(regions.regions):
                y, x = corners[k]
                sl = (r.image_index, slice(y, y + size), slice(x, x + size))
                crops.append(images[sl])
                weights.append(regions.labels[sl] == r.number)
                if reconstructions is not None:
                    recon.append(reconstructions[sl])
            crops = np.asarray(crops, np.float32).reshape(
                (r_count, size, size, images.shape[-1]))
            weights = np.asarray(weights, np.float32).reshape(
                (r_count, size, size))
            fx = discriminator_features(discriminator, crops, weights,
                                        feature_layer)
            c = fx.shape[1] if r_count else 0
            names = [f"d_x_{j}" for j in range(c)]
            values = fx
            if reconstructions is not None:
                fg = discriminator_features(
                    discriminator, np.asarray(recon, np.float32).reshape(
                        crops.shape), weights, feature_layer)
                names += [f"d_diff_{j}" for j in range(c)]
                values = np.concatenate([fx, fx - fg], axis=1)
            add(block, names, values)
        elif block == "latent":
            cover = covering_patches(regions, patches)
            d = latents.shape[1]
            z = np.zeros((r_count, d))
            z[cover >= 0] = latents[cover[cover >= 0]]
            add(block, [f"z_{j}" for j in range(d)], z)
    names: List[str] = []
    spans = []
    for block, block_names, _ in columns:
        spans.append((block, len(names), len(names) + len(block_names)))
        names += block_names
    values = (np.concatenate([v for _, _, v in columns], axis=1) if columns
              else np.zeros((r_count, 0)))
    return Descriptors(values, tuple(names), tuple(spans))


@dataclasses.dataclass(frozen=True)
class Embedding:
    """Standardised, block-weighted, PCA-reduced descriptors.

    Attributes:
      coords: float64 [R, k], the PCA coordinates clustering works in.
      explained_variance: [k] the share of the weighted variance each
        component explains.
      used_columns: Names of the descriptor columns used (constant ones
        dropped).
      mean, scale: [D_used] the z-scoring of those columns.
    """

    coords: np.ndarray
    explained_variance: np.ndarray
    used_columns: Tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray

    @property
    def plane(self) -> np.ndarray:
        """[R, 2] the first two components (zeros where fewer exist)."""
        out = np.zeros((len(self.coords), 2))
        k = min(2, self.coords.shape[1])
        out[:, :k] = self.coords[:, :k]
        return out


def embed(descriptors: Descriptors, n_components: int = 0,
          variance: float = 0.9, max_components: int = 16,
          seed: int = 0) -> Embedding:
    """Standardises, weights each block by 1 / sqrt(its width), and PCA.

    Args:
      descriptors: The region descriptors.
      n_components: PCA components (0: the fewest that explain `variance`
        of the weighted variance, at most `max_components`).
      variance: See n_components.
      max_components: Cap for the automatic choice.
      seed: PCA's random state (the randomised solver).

    Returns:
      The Embedding (k <= min(R, columns used)).

    Raises:
      ConfigError: n_components < 0.
    """
    if n_components < 0:
        raise ConfigError(f"--pca_components must be >= 0 (0: automatic), "
                          f"got {n_components}.")
    x = np.asarray(descriptors.values, np.float64)
    r = len(x)
    mean = x.mean(axis=0) if r else np.zeros(x.shape[1])
    scale = x.std(axis=0) if r else np.zeros(x.shape[1])
    keep = scale > 1e-12 * np.maximum(1.0, np.abs(mean))
    weights = np.zeros(x.shape[1])
    for _, start, stop in descriptors.blocks:
        used = int(keep[start:stop].sum())
        if used:
            weights[start:stop] = 1.0 / math.sqrt(used)
    names = tuple(n for n, k in zip(descriptors.names, keep) if k)
    z = ((x[:, keep] - mean[keep]) / scale[keep]) * weights[keep]
    if r < 2 or not z.shape[1]:
        return Embedding(np.zeros((r, 1)), np.ones(1), names, mean[keep],
                         scale[keep])
    limit = min(r, z.shape[1])
    pca = PCA(n_components=limit, random_state=seed).fit(z)
    ratio = pca.explained_variance_ratio_
    if n_components:
        k = min(n_components, limit)
    else:
        k = int(np.searchsorted(np.cumsum(ratio), variance - 1e-12) + 1)
        k = max(2, min(k, max_components, limit)) if limit >= 2 else 1
    coords = pca.transform(z)[:, :k]
    return Embedding(coords, ratio[:k], names, mean[keep], scale[keep])
