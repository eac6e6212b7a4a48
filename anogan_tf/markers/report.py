"""Discovery outputs: regions.csv, images.csv, markers.json, the contact
sheets and a self-contained HTML report.

Layout of an output dir (docs/markers.md explains how to read it):

  regions.csv          one row per region (`REGION_COLUMNS` first)
  images.csv           one row per image, regions or not (`IMAGE_COLUMNS`)
  markers.json         per marker: size, images it occurs in (normal vs
                       anomalous), descriptor means, prototype region ids,
                       sheet; the threshold, the settings, the evaluation
  evaluation.json      only with known types (markers.evaluate)
  report/index.html    opens from disk (no server, no network): summary,
                       marker table, embedding plot, one contact sheet per
                       marker, every image's overlay
  report/sheets/marker_<m>.png   the contact sheets
  report/overlays/<image>.png    per image: regions outlined on x | map
  report/embedding.png           the regions' first two PCA components

A contact sheet shows a marker's prototypes (its medoid regions first):
for each, a crop of x with the region outlined in the marker's colour,
and beside it the same crop of the anomaly map with the outline.
"""

from __future__ import annotations

import dataclasses
import html
import os
from typing import Dict, List, Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from scipy import ndimage  # noqa: E402

from anogan_tf.data.records import ImageSet  # noqa: E402
from anogan_tf.markers.cluster import Clustering  # noqa: E402
from anogan_tf.markers.describe import Descriptors, Embedding  # noqa: E402
from anogan_tf.markers.regions import RegionSet  # noqa: E402
from anogan_tf.scoring import reports  # noqa: E402

__all__ = ["REGION_COLUMNS", "IMAGE_COLUMNS", "Discovery", "marker_colour",
           "region_id", "safe_name", "region_rows", "image_rows",
           "marker_summaries", "save_contact_sheet", "save_image_overlay",
           "save_embedding_plot", "write_outputs"]

REGION_COLUMNS = ("image_id", "region_id", "y0", "x0", "y1", "x1", "area",
                  "centroid_y", "centroid_x", "mean_residual", "max_residual",
                  "cluster", "distance_to_centre")
IMAGE_COLUMNS = ("image_id", "label", "category", "n_regions", "markers",
                 "max_map", "overlay")
# Descriptor blocks whose means markers.json and the report show (the
# learned blocks are opaque numbers).
_READABLE_BLOCKS = ("shape", "intensity", "position")
_PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40),
            (148, 103, 189), (140, 86, 75), (227, 119, 194), (23, 190, 207),
            (188, 189, 34), (127, 127, 127))
_UNASSIGNED = (160, 160, 160)
_CELL = 96


@dataclasses.dataclass(frozen=True)
class Discovery:
    """Everything one discovery run found, as the outputs show it.

    Attributes:
      images: The images (ids, labels, categories).
      maps: [N, H, W] the anomaly maps regions were found on.
      regions: The RegionSet.
      descriptors: Region descriptors.
      embedding: Their embedding.
      clustering: The markers.
      settings: JSON-ready settings (threshold, method, ...), recorded in
        markers.json and shown in the report.
      evaluation: markers.evaluate's dict with known types, else None.
      true_types: Optional [R] true type name per region ("none": on no
        lesion).
      residual_maps: Optional [N, H, W] the detector's anomaly maps
        (regions.csv's mean/max residual); None: `maps`.
    """

    images: ImageSet
    maps: np.ndarray
    regions: RegionSet
    descriptors: Descriptors
    embedding: Embedding
    clustering: Clustering
    settings: Dict
    evaluation: Optional[Dict] = None
    true_types: Optional[Sequence[str]] = None
    residual_maps: Optional[np.ndarray] = None


def marker_colour(marker: int):
    """RGB of a marker (1-based; 0: unassigned)."""
    return _UNASSIGNED if marker <= 0 else _PALETTE[(marker - 1) %
                                                    len(_PALETTE)]


def region_id(images: ImageSet, regions: RegionSet, k: int) -> str:
    """"<image id>#<number>", unique per region."""
    r = regions.regions[k]
    return f"{images.ids[r.image_index]}#{r.number}"


def safe_name(image_id: str) -> str:
    """A file name for an image id (path separators become "__")."""
    return image_id.replace(os.sep, "__").replace("/", "__")


def _marker_name(m: int) -> str:
    return f"M{m}" if m > 0 else "unassigned"


def _prototype_rank(clustering: Clustering, limit: int) -> Dict[int, int]:
    rank = {}
    for members in clustering.prototypes:
        for j, k in enumerate(members[:limit]):
            rank[k] = j + 1
    return rank


def region_rows(d: Discovery, prototypes: int) -> List[Dict]:
    """regions.csv rows (REGION_COLUMNS, then extras)."""
    rows = []
    desc = d.descriptors
    names = set(desc.names)
    rank = _prototype_rank(d.clustering, prototypes)
    plane = d.embedding.plane
    residual = d.maps if d.residual_maps is None else d.residual_maps
    for k, r in enumerate(d.regions.regions):
        i = r.image_index
        own = d.regions.labels[i] == r.number
        row = {"image_id": d.images.ids[i],
               "region_id": region_id(d.images, d.regions, k),
               "y0": r.bbox[0], "x0": r.bbox[1], "y1": r.bbox[2],
               "x1": r.bbox[3], "area": r.area,
               "centroid_y": round(r.centroid[0], 3),
               "centroid_x": round(r.centroid[1], 3),
               "mean_residual": float(residual[i][own].mean()),
               "max_residual": float(residual[i][own].max()),
               "max_discovery_map": float(d.maps[i][own].max()),
               "cluster": int(d.clustering.labels[k]),
               "distance_to_centre": float(d.clustering.distances[k]),
               "prototype_rank": rank.get(k, ""),
               "embedding_x": float(plane[k, 0]),
               "embedding_y": float(plane[k, 1])}
        for extra in ("signed_mean", "x_contrast", "eccentricity",
                      "solidity", "depth"):
            if extra in names:
                row[extra] = float(desc.values[k, desc.names.index(extra)])
        if d.images.labels is not None:
            row["label"] = int(d.images.labels[i])
        if d.images.categories is not None:
            row["category"] = d.images.categories[i]
        if d.true_types is not None:
            row["true_type"] = d.true_types[k]
        rows.append(row)
    return rows


def _region_extra_columns(rows: List[Dict]) -> List[str]:
    extras: List[str] = []
    for row in rows[:1]:
        extras = [c for c in row if c not in REGION_COLUMNS]
    return extras


def image_rows(d: Discovery) -> List[Dict]:
    """images.csv rows: every image, with or without regions."""
    rows = []
    for i, image_id in enumerate(d.images.ids):
        ks = d.regions.of_image(i)
        markers = sorted({int(d.clustering.labels[k]) for k in ks})
        rows.append({
            "image_id": image_id,
            "label": ("" if d.images.labels is None
                      else int(d.images.labels[i])),
            "category": ("" if d.images.categories is None
                         else d.images.categories[i]),
            "n_regions": len(ks),
            "markers": ";".join(str(m) for m in markers),
            "max_map": float(d.maps[i].max()) if d.maps[i].size else 0.0,
            "overlay": f"report/overlays/{safe_name(image_id)}.png"})
    return rows


def marker_summaries(d: Discovery, prototypes: int) -> List[Dict]:
    """markers.json's per-marker entries (unassigned regions last)."""
    labels = d.clustering.labels
    out = []
    readable = [(b, s, e) for b, s, e in d.descriptors.blocks
                if b in _READABLE_BLOCKS]
    present = sorted(set(labels.tolist()), key=lambda m: (m <= 0, m))
    for m in present:
        members = np.flatnonzero(labels == m)
        image_index = sorted({d.regions.regions[k].image_index
                              for k in members})
        entry = {"marker": int(m), "name": _marker_name(int(m)),
                 "size": int(len(members)), "n_images": len(image_index),
                 "colour": "#%02x%02x%02x" % marker_colour(int(m))}
        if d.images.labels is not None:
            lab = d.images.labels[image_index]
            entry["n_images_normal"] = int((lab == 0).sum())
            entry["n_images_anomalous"] = int((lab == 1).sum())
        means = {}
        for _, start, stop in readable:
            for c in range(start, stop):
                means[d.descriptors.names[c]] = float(
                    d.descriptors.values[members, c].mean())
        entry["descriptor_means"] = means
        if m > 0:
            order = d.clustering.prototypes[m - 1][:prototypes]
            entry["prototype_region_ids"] = [region_id(d.images, d.regions, k)
                                             for k in order]
            entry["sheet"] = f"report/sheets/marker_{m:02d}.png"
        else:
            entry["prototype_region_ids"] = []
        if d.true_types is not None:
            kinds, counts = np.unique(np.asarray(d.true_types)[members],
                                      return_counts=True)
            entry["true_types"] = {str(a): int(b) for a, b in
                                   zip(kinds, counts)}
        out.append(entry)
    return out


# --- pictures --------------------------------------------------------------------

def _rgb(image: np.ndarray) -> np.ndarray:
    """[H, W, C] in [-1, 1] -> uint8 [H, W, 3]."""
    x = np.asarray(image, np.float64)
    x = x.mean(axis=-1) if x.shape[-1] != 3 else x
    x = np.clip((x + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return np.repeat(x[..., None], 3, axis=-1) if x.ndim == 2 else x


def _heat(values: np.ndarray, vmax: float) -> np.ndarray:
    """[H, W] -> uint8 RGB through matplotlib's inferno, 0..vmax."""
    scaled = np.clip(np.asarray(values, np.float64) / max(vmax, 1e-12), 0, 1)
    return (plt.get_cmap("inferno")(scaled)[..., :3] * 255).astype(np.uint8)


def _edge(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def _draw_outlines(rgb: np.ndarray, outlines) -> np.ndarray:
    out = rgb.copy()
    for mask, colour in outlines:
        out[_edge(mask)] = colour
    return out


def _upscale(rgb: np.ndarray, factor: int) -> Image.Image:
    img = Image.fromarray(rgb)
    if factor > 1:
        img = img.resize((rgb.shape[1] * factor, rgb.shape[0] * factor),
                         Image.NEAREST)
    return img


def save_contact_sheet(path: str, d: Discovery, marker: int,
                       indices: Sequence[int], columns: int = 4) -> str:
    """One marker's contact sheet: per region, x and the map, outlined.

    Args:
      path: Output PNG.
      d: The Discovery.
      marker: The marker (its colour outlines the regions).
      indices: Region indices to show, in order (prototypes).
      columns: Regions per row.
    """
    images = d.images.images
    h, w = d.images.image_shape
    vmax = float(np.percentile(d.maps[d.maps > 0], 99.5)) if (
        d.maps > 0).any() else 1.0
    colour = marker_colour(marker)
    cells = []
    for k in indices:
        r = d.regions.regions[k]
        side = int(min(min(h, w), max(32, 2 * max(r.bbox[2] - r.bbox[0],
                                                  r.bbox[3] - r.bbox[1]))))
        y = int(min(max(round(r.centroid[0] - side / 2), 0), h - side))
        x = int(min(max(round(r.centroid[1] - side / 2), 0), w - side))
        sl = (slice(y, y + side), slice(x, x + side))
        mask = d.regions.labels[r.image_index][sl] == r.number
        left = _draw_outlines(_rgb(images[r.image_index][sl]),
                              [(mask, colour)])
        right = _draw_outlines(_heat(d.maps[r.image_index][sl], vmax),
                               [(mask, (255, 255, 255))])
        factor = max(1, _CELL // side)
        pair = Image.new("RGB", (2 * side * factor + 4, side * factor + 14),
                         (255, 255, 255))
        pair.paste(_upscale(left, factor), (0, 0))
        pair.paste(_upscale(right, factor), (side * factor + 4, 0))
        pair = pair.resize((2 * _CELL + 4, _CELL + 14)) if (
            side * factor != _CELL) else pair
        ImageDraw.Draw(pair).text(
            (2, _CELL + 1), region_id(d.images, d.regions, k)[-34:],
            fill=(0, 0, 0))
        cells.append(pair)
    if not cells:
        cells = [Image.new("RGB", (2 * _CELL + 4, _CELL + 14),
                           (255, 255, 255))]
    cols = min(columns, len(cells))
    rows = -(-len(cells) // cols)
    cw, ch = cells[0].size
    sheet = Image.new("RGB", (cols * (cw + 8) + 8, rows * (ch + 8) + 30),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    draw.rectangle([0, 0, sheet.size[0], 22], fill=colour)
    draw.text((8, 5), f"{_marker_name(marker)}: {len(indices)} prototype "
                      f"region(s), medoid first; x | anomaly map",
              fill=(255, 255, 255))
    for j, cell in enumerate(cells):
        sheet.paste(cell, (8 + (j % cols) * (cw + 8),
                           30 + (j // cols) * (ch + 8)))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    sheet.save(path)
    return path


def save_image_overlay(path: str, d: Discovery, index: int,
                       vmax: float) -> str:
    """One image: its regions outlined in their markers' colours on x, and
    the anomaly map with the same outlines."""
    ks = d.regions.of_image(index)
    outlines = [(d.regions.mask(k),
                 marker_colour(int(d.clustering.labels[k]))) for k in ks]
    left = _draw_outlines(_rgb(d.images.images[index]), outlines)
    right = _draw_outlines(_heat(d.maps[index], vmax), [
        (m, (255, 255, 255)) for m, _ in outlines])
    h, w = left.shape[:2]
    factor = max(1, 256 // max(h, w))
    canvas = Image.new("RGB", (2 * w * factor + 4, h * factor),
                       (255, 255, 255))
    canvas.paste(_upscale(left, factor), (0, 0))
    canvas.paste(_upscale(right, factor), (w * factor + 4, 0))
    draw = ImageDraw.Draw(canvas)
    for k in ks:
        r = d.regions.regions[k]
        draw.text((r.bbox[3] * factor + 1, max(0, r.bbox[0] * factor - 10)),
                  _marker_name(int(d.clustering.labels[k])),
                  fill=marker_colour(int(d.clustering.labels[k])))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    canvas.save(path)
    return path


def save_embedding_plot(path: str, d: Discovery) -> str:
    """The regions' first two PCA components, coloured by marker, with
    each marker's medoid ringed."""
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    plane = d.embedding.plane
    labels = d.clustering.labels
    for m in sorted(set(labels.tolist())):
        sel = labels == m
        colour = np.array(marker_colour(int(m))) / 255.0
        ax.scatter(plane[sel, 0], plane[sel, 1], s=14, color=colour,
                   alpha=0.75, label=f"{_marker_name(int(m))} "
                                     f"({int(sel.sum())})")
        if m > 0:
            k = d.clustering.prototypes[m - 1][0]
            ax.scatter(plane[k, 0], plane[k, 1], s=120, facecolors="none",
                       edgecolors="black", linewidths=1.5)
    ratio = d.embedding.explained_variance
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% of the variance)"
                  if len(ratio) else "PC1")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}%)" if len(ratio) > 1
                  else "PC2")
    ax.set_title("Regions by their descriptors (rings: medoids)")
    if len(labels):
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# --- the HTML page ---------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;
color:#222;background:#fafafa}
header{background:#263238;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:22px} header p{margin:4px 0 0;color:#cfd8dc}
main{padding:12px 24px;max-width:1400px}
section{background:#fff;border:1px solid #e0e0e0;border-radius:6px;
padding:12px 18px;margin:14px 0}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#eceff1} td.l,th.l{text-align:left}
.sw{display:inline-block;width:14px;height:14px;border-radius:3px;
vertical-align:middle;margin-right:4px}
.gallery{display:flex;flex-wrap:wrap;gap:10px}
figure{margin:0;border:1px solid #e0e0e0;padding:4px;background:#fff}
figcaption{font-size:12px;max-width:520px;word-break:break-all}
.filters button{margin:2px;padding:3px 8px;border:1px solid #aaa;
border-radius:4px;background:#fff;cursor:pointer}
.filters button.on{background:#263238;color:#fff}
.note{color:#555;font-size:13px}
"""

_JS = """
function countLoaded(){
  var imgs=document.images, ok=0;
  for(var i=0;i<imgs.length;i++){
    if(imgs[i].complete&&imgs[i].naturalWidth>0){ok++;}
  }
  document.getElementById('images-loaded').textContent=String(ok);
  document.getElementById('images-total').textContent=String(imgs.length);
  document.body.setAttribute('data-images-loaded',String(ok));
  document.body.setAttribute('data-images-total',String(imgs.length));
}
function showMarker(m,btn){
  var figs=document.querySelectorAll('#gallery figure');
  for(var i=0;i<figs.length;i++){
    var ms=(figs[i].getAttribute('data-markers')||'').split(';');
    figs[i].style.display=(m==='all'||ms.indexOf(m)>=0||
      (m==='none'&&ms[0]===''))?'':'none';
  }
  var bs=document.querySelectorAll('.filters button');
  for(var j=0;j<bs.length;j++){bs[j].className='';}
  btn.className='on';
}
window.addEventListener('load',countLoaded);
"""


def _fmt(value, digits: int = 3) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:.0f}"
    return html.escape(str(value))


def _table(header: Sequence[str], rows: Sequence[Sequence], left: int = 1
           ) -> str:
    out = ["<table><tr>"]
    out += [f"<th class='{'l' if j < left else ''}'>{html.escape(h)}</th>"
            for j, h in enumerate(header)]
    out.append("</tr>")
    for row in rows:
        out.append("<tr>" + "".join(
            f"<td class='{'l' if j < left else ''}'>{cell}</td>"
            for j, cell in enumerate(row)) + "</tr>")
    out.append("</table>")
    return "".join(out)


def _html(d: Discovery, markers: List[Dict], images: List[Dict]) -> str:
    s = d.settings
    labelled = d.images.labels is not None
    n_with = sum(1 for r in images if r["n_regions"])
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>Marker discovery report</title>",
        f"<style>{_CSS}</style><script>{_JS}</script></head><body>",
        "<header><h1>Candidate markers</h1>",
        f"<p>{len(d.images)} images, {len(d.regions)} anomalous regions in "
        f"{n_with} of them, grouped into {d.clustering.k} marker(s) by "
        f"{html.escape(d.clustering.method)}. Images loaded: "
        f"<span id='images-loaded'>?</span> of "
        f"<span id='images-total'>?</span>.</p></header><main>"]
    summary = [
        ("Threshold", html.escape(s.get("threshold_text", ""))),
        ("Minimum region area", f"{d.regions.min_area} px"),
        ("Maps", html.escape(s.get("maps_text", ""))),
        ("Descriptors", html.escape(", ".join(d.descriptors.block_names()))
         + f" ({len(d.descriptors.names)} numbers; PCA to "
           f"{d.embedding.coords.shape[1]} components, "
           f"{100 * float(np.sum(d.embedding.explained_variance)):.0f}% of "
           f"the variance)"),
        ("Clustering", html.escape(s.get("cluster_text", ""))),
        ("Model", html.escape(str(
            s.get("model_dir") or
            f"none: maps read from {s.get('maps_dir')}"))),
    ]
    parts.append("<section><h2>Summary</h2>" + _table(
        ["setting", "value"], [(f"<b>{a}</b>", b) for a, b in summary],
        left=2) +
        "</section>")
    header = ["Marker", "Regions", "Images"]
    if labelled:
        header += ["in normal images", "in anomalous images"]
    header += ["area (px)", "x contrast", "signed residual", "depth",
               "eccentricity"]
    if d.true_types is not None:
        header.append("true types")
    rows = []
    for entry in markers:
        means = entry["descriptor_means"]
        name = (f"<span class='sw' style='background:{entry['colour']}'>"
                f"</span><a href='#marker-{entry['marker']}'>"
                f"{html.escape(entry['name'])}</a>")
        row = [name, entry["size"], entry["n_images"]]
        if labelled:
            row += [entry.get("n_images_normal", "-"),
                    entry.get("n_images_anomalous", "-")]
        row += [_fmt(means.get("area")), _fmt(means.get("x_contrast")),
                _fmt(means.get("signed_mean")), _fmt(means.get("depth")),
                _fmt(means.get("eccentricity"))]
        if d.true_types is not None:
            row.append(html.escape(", ".join(
                f"{k}: {v}" for k, v in sorted(
                    entry.get("true_types", {}).items(),
                    key=lambda kv: -kv[1]))))
        rows.append(row)
    parts.append(
        "<section><h2>Markers</h2><p class='note'>A marker is a group of "
        "regions with similar descriptors: a candidate imaging marker for "
        "an expert to review. depth: 0 at the top of the retina band, 1 at "
        "its bottom; signed residual &lt; 0: darker than the model "
        "expects.</p>" + _table(header, rows, left=1) + "</section>")
    if d.evaluation is not None:
        ev = d.evaluation
        erows = [(html.escape(t), e["lesions"], e["regions"],
                  _fmt(e["detection_recall"]), _fmt(e["recall"]),
                  _fmt(e["region_recall"]))
                 for t, e in ev["per_type"].items()]
        parts.append(
            "<section><h2>Against known types</h2>"
            f"<p>Types from {html.escape(ev.get('type_source', ''))}. "
            f"ARI {_fmt(ev.get('ari'))}, NMI {_fmt(ev.get('nmi'))} over the "
            f"{ev['n_regions_on_lesions']} regions on lesions; "
            f"{ev['n_regions'] - ev['n_regions_on_lesions']} regions lie on "
            f"no lesion (ARI with them as a type: "
            f"{_fmt(ev.get('ari_all'))}).</p>" + _table(
                ["type", "lesions", "regions", "detected", "recall (found "
                 "as its marker)", "regions in its marker"], erows) +
            "</section>")
    parts.append(
        "<section><h2>Embedding</h2><img src='embedding.png' alt='embedding'"
        " width='640'></section>")
    for entry in markers:
        if entry["marker"] <= 0:
            continue
        m = entry["marker"]
        where = (f", in {entry['n_images']} images"
                 + (f" ({entry['n_images_normal']} normal, "
                    f"{entry['n_images_anomalous']} anomalous)"
                    if labelled else ""))
        parts.append(
            f"<section id='marker-{m}'><h2><span class='sw' style='background"
            f":{entry['colour']}'></span>{entry['name']}: {entry['size']} "
            f"regions{where}</h2><img src='sheets/marker_{m:02d}.png' "
            f"alt='contact sheet of {entry['name']}'></section>")
    buttons = ["<button class='on' onclick=\"showMarker('all',this)\">all"
               "</button>"]
    buttons += [f"<button onclick=\"showMarker('{e['marker']}',this)\">"
                f"{e['name']}</button>" for e in markers]
    buttons.append("<button onclick=\"showMarker('none',this)\">no region"
                   "</button>")
    figs = []
    order = sorted(range(len(images)),
                   key=lambda i: (-images[i]["n_regions"], i))
    for i in order:
        row = images[i]
        markers_text = ", ".join(_marker_name(int(m)) for m in
                                 row["markers"].split(";") if m) or \
            "no region"
        label = ("" if row["label"] == "" else
                 (" normal" if row["label"] == 0 else " anomalous"))
        picture = ("" if not row["overlay"] else
                   f"<img src='{html.escape(os.path.relpath(row['overlay'], 'report'))}'"
                   f" alt='{html.escape(row['image_id'])}'>")
        figs.append(
            f"<figure data-markers='{row['markers']}'>{picture}"
            f"<figcaption>{html.escape(row['image_id'])}{label}"
            f"{' (' + html.escape(row['category']) + ')' if row['category'] else ''}"
            f": {row['n_regions']} region(s), {markers_text}"
            f"</figcaption></figure>")
    parts.append(
        "<section><h2>Where they occur</h2><p class='note'>Every image: "
        "x with its regions outlined in their markers' colours | the "
        "anomaly map.</p><div class='filters'>" + "".join(buttons) +
        "</div><div class='gallery' id='gallery'>" + "".join(figs) +
        "</div></section>")
    parts.append("</main></body></html>")
    return "".join(parts)


def write_outputs(output_dir: str, d: Discovery, prototypes: int = 12,
                  max_overlays: int = 0) -> Dict[str, str]:
    """Writes every output file (module docstring) and returns their paths.

    Args:
      output_dir: The output dir.
      d: The Discovery.
      prototypes: Regions per contact sheet (and prototype ids per marker).
      max_overlays: Overlays to draw (0: every image); images beyond it
        keep their rows in images.csv and the report lists them without a
        picture.
    """
    os.makedirs(output_dir, exist_ok=True)
    report_dir = os.path.join(output_dir, "report")
    rows = region_rows(d, prototypes)
    paths = {"regions": reports.write_csv(
        os.path.join(output_dir, "regions.csv"), rows,
        list(REGION_COLUMNS) + _region_extra_columns(rows))}
    markers = marker_summaries(d, prototypes)
    image_list = image_rows(d)
    paths["images"] = reports.write_csv(
        os.path.join(output_dir, "images.csv"), image_list, IMAGE_COLUMNS)
    for entry in markers:
        if entry["marker"] > 0:
            m = entry["marker"]
            save_contact_sheet(
                os.path.join(report_dir, "sheets", f"marker_{m:02d}.png"), d,
                m, d.clustering.prototypes[m - 1][:prototypes])
    positive = d.maps[d.maps > 0]
    vmax = float(np.percentile(positive, 99.5)) if positive.size else 1.0
    drawn = []
    order = sorted(range(len(d.images)),
                   key=lambda i: (-len(d.regions.of_image(i)), i))
    for j, i in enumerate(order):
        if max_overlays and j >= max_overlays:
            image_list[i]["overlay"] = ""
            continue
        save_image_overlay(os.path.join(output_dir, image_list[i]["overlay"]),
                           d, i, vmax)
        drawn.append(i)
    if max_overlays:
        image_list = [r for r in image_list if r["overlay"]] + [
            r for r in image_list if not r["overlay"]]
        paths["images"] = reports.write_csv(
            os.path.join(output_dir, "images.csv"), image_list,
            IMAGE_COLUMNS)
    save_embedding_plot(os.path.join(report_dir, "embedding.png"), d)
    record = {"n_images": len(d.images), "n_regions": len(d.regions),
              "n_images_with_regions": sum(1 for r in image_list
                                           if r["n_regions"]),
              "k": d.clustering.k, "method": d.clustering.method,
              "silhouette": d.clustering.silhouette,
              "silhouette_by_k": {str(k): v for k, v in
                                  d.clustering.silhouette_by_k.items()},
              "descriptor_blocks": list(d.descriptors.block_names()),
              "descriptor_columns": list(d.descriptors.names),
              "pca_components": int(d.embedding.coords.shape[1]),
              "pca_explained_variance": [float(v) for v in
                                         d.embedding.explained_variance],
              "settings": d.settings, "markers": markers}
    if d.evaluation is not None:
        record["evaluation"] = d.evaluation
        paths["evaluation"] = reports.write_json(
            os.path.join(output_dir, "evaluation.json"), d.evaluation)
    paths["markers"] = reports.write_json(
        os.path.join(output_dir, "markers.json"), record)
    page = _html(d, markers, image_list)
    index = os.path.join(report_dir, "index.html")
    with open(index + ".tmp", "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(index + ".tmp", index)
    paths["report"] = index
    return paths
