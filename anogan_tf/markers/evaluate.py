"""How well markers match known anomaly types, where types are known.

Known types are per-pixel type maps (`KnownTypes`): synthetic_oct's lesion
types, the textures' defect types, a --known_types file, or an MVTec AD
style set whose every anomalous image has one defect category.

Matching:
  * A region's true type is the type with the most pixels inside it, when
    those are at least `min_overlap` of the region's area; otherwise the
    region is a false positive ("none").
  * Lesions are the connected components (8-connected) of each type's
    pixels per image. A lesion is detected when a region of its type
    overlaps it.
  * Each marker is assigned the label most of its regions have, "none"
    included (a marker made mostly of false positives is a "none" marker).

Reported (`evaluate_markers`):
  ari, nmi       adjusted Rand index and normalised mutual information
                 between markers and true types over the regions on
                 lesions (HDBSCAN's unassigned regions count as one more
                 marker); ari_all/nmi_all over every region with "none" as a
                 type.
  per_type       per type: lesions, detection_recall (lesions detected),
                 recall (lesions detected by a region whose marker is
                 assigned that type: found as that marker, end to end) and
                 region_recall (of the regions of that type, the share in
                 markers assigned to it: the clustering alone).
  markers        per marker: the count of each true type and its
                 assignment.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from sklearn import metrics as skm

from anogan_tf.config import ConfigError, DataConfig
from anogan_tf.data import DataError, ImageSet
from anogan_tf.markers.cluster import Clustering
from anogan_tf.markers.regions import RegionSet

__all__ = ["KnownTypes", "NONE", "region_types", "evaluate_markers",
           "known_types_for", "read_known_types", "write_known_types"]

NONE = "none"


@dataclasses.dataclass(frozen=True)
class KnownTypes:
    """Per-pixel anomaly types of a set of images.

    Attributes:
      type_maps: uint8 [N, H, W]; k + 1 on pixels of type names[k], 0
        elsewhere.
      names: The type names.
      source: Where they came from (for the report).
    """

    type_maps: np.ndarray
    names: Tuple[str, ...]
    source: str = ""

    def __post_init__(self):
        maps = np.asarray(self.type_maps)
        if maps.ndim != 3:
            raise DataError(f"Type maps must be [N, H, W], got shape "
                            f"{maps.shape}.")
        if maps.size and int(maps.max()) > len(self.names):
            raise DataError(f"Type maps hold code {int(maps.max())} but only "
                            f"{len(self.names)} type names were given.")
        object.__setattr__(self, "type_maps", maps.astype(np.uint8))
        object.__setattr__(self, "names", tuple(str(n) for n in self.names))


def region_types(regions: RegionSet, known: KnownTypes,
                 min_overlap: float = 0.1) -> np.ndarray:
    """int64 [R]: each region's true type code (0: none; see the module
    docstring)."""
    out = np.zeros(len(regions), np.int64)
    n_types = len(known.names)
    for k, r in enumerate(regions.regions):
        y0, x0, y1, x1 = r.bbox
        own = regions.labels[r.image_index, y0:y1, x0:x1] == r.number
        codes = known.type_maps[r.image_index, y0:y1, x0:x1][own]
        counts = np.bincount(codes, minlength=n_types + 1)[1:]
        if counts.size and counts.max() >= max(1.0, min_overlap * r.area):
            out[k] = int(counts.argmax()) + 1
    return out


def _lesions(known: KnownTypes):
    """Yields (image index, type code, bool mask) of every lesion."""
    structure = np.ones((3, 3), bool)
    for i, types in enumerate(known.type_maps):
        for code in np.unique(types):
            if not code:
                continue
            labelled, count = ndimage.label(types == code, structure)
            for j in range(1, count + 1):
                yield i, int(code), labelled == j


def _name(code: int, names: Sequence[str]) -> str:
    return NONE if code == 0 else names[code - 1]


def evaluate_markers(regions: RegionSet, clustering: Clustering,
                     known: KnownTypes, min_overlap: float = 0.1) -> Dict:
    """ARI, NMI, per-type recall and marker composition (module docstring).

    Args:
      regions: The regions.
      clustering: Their markers.
      known: True types of the same images (same N, H, W as the regions).
      min_overlap: See `region_types`.

    Returns:
      A JSON-ready dict.

    Raises:
      DataError: the type maps do not match the regions' images.
    """
    if known.type_maps.shape != regions.labels.shape:
        raise DataError(f"The known type maps have shape "
                        f"{known.type_maps.shape}, the images "
                        f"{regions.labels.shape}.")
    truth = region_types(regions, known, min_overlap)
    labels = clustering.labels
    names = known.names
    # Each marker's assignment: its most common true label, none included.
    assignment: Dict[int, int] = {}
    markers = []
    for m in sorted(set(labels.tolist())):
        members = truth[labels == m]
        counts = np.bincount(members, minlength=len(names) + 1)
        assignment[m] = int(np.argmax(counts))
        markers.append({
            "marker": int(m), "size": int(len(members)),
            "assigned_type": _name(assignment[m], names),
            "types": {_name(c, names): int(counts[c])
                      for c in range(len(names) + 1) if counts[c]}})
    on = truth > 0
    result: Dict = {"type_source": known.source, "types": list(names),
                    "n_regions": int(len(truth)),
                    "n_regions_on_lesions": int(on.sum()),
                    "region_precision": (float(on.mean()) if len(truth)
                                         else None),
                    "min_overlap": min_overlap, "markers": markers}
    if on.sum() >= 2:
        result["ari"] = float(skm.adjusted_rand_score(truth[on], labels[on]))
        result["nmi"] = float(skm.normalized_mutual_info_score(truth[on],
                                                               labels[on]))
    else:
        result["ari"] = result["nmi"] = None
    if len(truth) >= 2:
        result["ari_all"] = float(skm.adjusted_rand_score(truth, labels))
        result["nmi_all"] = float(skm.normalized_mutual_info_score(truth,
                                                                   labels))
    per_type = {n: {"lesions": 0, "detected": 0, "found": 0} for n in names}
    for i, code, lesion in _lesions(known):
        entry = per_type[names[code - 1]]
        entry["lesions"] += 1
        hit = np.unique(regions.labels[i][lesion])
        hit = [regions.of_image_number(i, int(n)) for n in hit if n]
        hit = [k for k in hit if truth[k] == code]
        if hit:
            entry["detected"] += 1
        if any(assignment.get(int(labels[k])) == code for k in hit):
            entry["found"] += 1
    for code, n in enumerate(names, start=1):
        entry = per_type[n]
        of_type = truth == code
        entry["regions"] = int(of_type.sum())
        lesions = entry["lesions"]
        entry["detection_recall"] = (entry["detected"] / lesions
                                     if lesions else None)
        entry["recall"] = entry["found"] / lesions if lesions else None
        entry["region_recall"] = (
            float(np.mean([assignment[int(m)] == code
                           for m in labels[of_type]]))
            if of_type.any() else None)
    result["per_type"] = per_type
    recalls = [e["recall"] for e in per_type.values()
               if e["recall"] is not None]
    result["min_recall"] = min(recalls) if recalls else None
    return result


# --- where known types come from ------------------------------------------------

def write_known_types(path: str, ids: Sequence[str], type_maps: np.ndarray,
                      names: Sequence[str]) -> str:
    """Writes a --known_types file: .npz with ids, type_maps, type_names."""
    np.savez_compressed(path, ids=np.asarray(list(ids)),
                        type_maps=np.asarray(type_maps, np.uint8),
                        type_names=np.asarray(list(names)))
    return path


def read_known_types(path: str, images: ImageSet) -> KnownTypes:
    """Reads a --known_types .npz and orders it like `images` (by id).

    Raises:
      DataError: the file is missing or malformed, or an image's id is not
        in it.
    """
    if not os.path.isfile(path):
        raise DataError(f"--known_types file {path!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as data:
            ids = [str(i) for i in data["ids"]]
            maps = np.asarray(data["type_maps"])
            names = tuple(str(n) for n in data["type_names"])
    except (KeyError, ValueError, OSError) as e:
        raise DataError(
            f"--known_types {path!r} must be an .npz with 'ids' [N], "
            f"'type_maps' [N, H, W] (type code k + 1, 0: none) and "
            f"'type_names' [K] (write it with markers.evaluate."
            f"write_known_types): {e}") from e
    index = {i: k for k, i in enumerate(ids)}
    missing = [i for i in images.ids if i not in index]
    if missing:
        raise DataError(f"--known_types {path!r} has no types for image "
                        f"{missing[0]!r} ({len(missing)} of {len(images)} "
                        f"images missing).")
    maps = maps[[index[i] for i in images.ids]]
    if maps.shape[1:] != images.image_shape:
        raise DataError(f"--known_types {path!r} holds {maps.shape[1:]} maps,"
                        f" the images are {images.image_shape}.")
    return KnownTypes(maps, names, source=os.path.basename(path))


def _from_categories(images: ImageSet) -> Optional[KnownTypes]:
    """Types from single-defect categories on masks (MVTec AD layout)."""
    if images.masks is None or images.categories is None:
        return None
    anomalous = [c for c, m in zip(images.categories, images.masks)
                 if m.any()]
    if not anomalous or any("+" in c or c == "good" for c in anomalous):
        return None
    names = tuple(sorted(set(anomalous)))
    maps = np.zeros(images.masks.shape, np.uint8)
    for i, c in enumerate(images.categories):
        if images.masks[i].any():
            maps[i][images.masks[i] > 0] = names.index(c) + 1
    return KnownTypes(maps, names, source="image categories on masks")


def known_types_for(images: ImageSet, data_config: DataConfig,
                    from_dataset: bool, path: Optional[str] = None,
                    num: int = 0) -> Optional[KnownTypes]:
    """The known types of the images discovery runs on, or None.

    Args:
      images: The images (in load order).
      data_config: Their data config.
      from_dataset: True when `images` are the dataset's test split
        (`load_images(data_config, "test")`, perhaps limited to the first
        `num`), so synthetic_oct and textures can regenerate their truth.
      path: A --known_types file (wins when given).
      num: The --num_test limit applied to the images (0: none).

    Raises:
      DataError: a --known_types file is bad.
    """
    if path:
        return read_known_types(path, images)
    if from_dataset and data_config.dataset == "synthetic_oct":
        from anogan_tf.data.loaders import oct_split_seed
        from anogan_tf.data.synthetic_oct import (OCT_LESION_TYPES,
                                                  generate_oct_with_truth)
        _, truth = generate_oct_with_truth(
            data_config.oct_num_test, data_config.oct_height,
            data_config.oct_width, oct_split_seed(data_config.seed, "test"),
            data_config.oct_anomaly_fraction, data_config.oct_artifacts)
        return _resized(truth.lesion_types, images, OCT_LESION_TYPES,
                        "synthetic_oct lesion types")
    if from_dataset and data_config.dataset == "textures":
        from anogan_tf.data.textures import (TEXTURE_DEFECT_TYPES,
                                             load_textures_split)
        _, truth = load_textures_split("test", data_config.seed,
                                       with_truth=True)
        return _resized(truth.defect_types, images, TEXTURE_DEFECT_TYPES,
                        "textures defect types")
    return _from_categories(images)


def _resized(type_maps: np.ndarray, images: ImageSet, names,
             source: str) -> KnownTypes:
    maps = type_maps[:len(images)]
    if maps.shape[1:] != images.image_shape:
        h, w = images.image_shape
        zoom = (1, h / maps.shape[1], w / maps.shape[2])
        maps = ndimage.zoom(maps, zoom, order=0)
        if maps.shape[1:] != (h, w):
            raise ConfigError(f"Cannot resize the {source} to {h}x{w}.")
    return KnownTypes(maps, names, source=source)
