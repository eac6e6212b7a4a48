"""In-graph twins of the OCT ROI, the artefact fill and the intensity norm.

`score_images` (export/image_graph.py) must select exactly the patches
`anogan-score` selects, so this module ports, op for op, the NumPy/SciPy
code of

  data/roi.py         `artifact_mask`, `retina_band`, `scoring_region`
  data/patches.py     `fill_artifacts`
  data/intensity.py   `normalize_scan`

to TensorFlow ops that a SavedModel can hold (no py_function). The image
size is fixed at export, so every window size, Gaussian kernel and filter
length is a Python constant computed with the NumPy code's own expressions.
Each function works on one image ([H, W] or [H, W, C]); `image_graph` maps
them over a batch with `tf.map_fn`.

How the twins stay equal (tests/test_score_images.py compares each one with
its NumPy original on synthetic_oct scans with and without artefacts):
  - all arithmetic is float64 where SciPy's is (float32 where NumPy's is:
    the intensity norm's percentile and median), in the same order;
  - SciPy's Gaussian filters (truncate 4, modes "nearest" and "constant")
    are [n, n] matrices built from SciPy's kernel formula; only the
    summation order differs (~1e-16), which moves no decision;
  - median filters, histograms (NumPy's bin rule, with its +-1 corrections),
    `np.interp`, `np.percentile` ("linear", weak q) and first-occurrence
    argmax/argmin are written out, never taken from a TF op whose ties or
    rounding differ;
  - `distance_transform_edt`'s nearest-pixel choice is reproduced: the
    nearest valid pixel, ties to the leftmost column, then the upper row.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np
import tensorflow as tf

from anogan_tf.data import intensity as intensity_lib
from anogan_tf.data import roi as roi_lib

__all__ = [
    "gaussian_matrix",
    "smooth_2d",
    "median_filter_1d",
    "artifact_mask",
    "retina_band",
    "fill_artifacts",
    "normalize_scan",
    "scoring_region",
]

_F64 = tf.float64


def _f64(value) -> tf.Tensor:
    """A float64 constant (tf.where turns Python floats into float32)."""
    return tf.constant(value, _F64)

# data/roi.py's private constants, read from the module so both agree.
_CONSTANT_RANGE = roi_lib._CONSTANT_RANGE  # pylint: disable=protected-access
_SIDE_SUPPORT = roi_lib._SIDE_SUPPORT  # pylint: disable=protected-access
_RUN_SLACK = roi_lib._RUN_SLACK  # pylint: disable=protected-access
_MAX_ARTIFACT_SHARE = roi_lib._MAX_ARTIFACT_SHARE  # pylint: disable=protected-access
_MIN_WEIGHT = roi_lib._MIN_WEIGHT  # pylint: disable=protected-access


# --- filters --------------------------------------------------------------------

def gaussian_matrix(n: int, sigma: float, mode: str) -> np.ndarray:
    """[n, n] float64 M with M @ v == scipy.ndimage.gaussian_filter1d(v, sigma,
    mode=mode) (truncate 4.0), up to summation order.

    Args:
      n: Length of the axis.
      sigma: Standard deviation in pixels; <= 1e-15 gives the identity
        (SciPy skips such axes).
      mode: "nearest" (edge pixels repeat) or "constant" (zeros outside).
    """
    if sigma <= 1e-15:
        return np.eye(n)
    radius = int(4.0 * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x ** 2)
    phi = phi / phi.sum()
    out = np.zeros((n, n))
    for i in range(n):
        for k, weight in zip(x, phi):
            j = i + k
            if mode == "nearest":
                out[i, min(max(j, 0), n - 1)] += weight
            elif mode == "constant":
                if 0 <= j < n:
                    out[i, j] += weight
            else:
                raise ValueError(f"mode must be nearest|constant, got {mode!r}")
    return out


def smooth_2d(x, sigma_hw: Tuple[float, float], mode: str):
    """Gaussian filter along the two axes after the leading ones ([..., H, W]
    float64), as `ndimage.gaussian_filter` with sigma 0 on other axes."""
    h, w = x.shape[-2], x.shape[-1]
    mh = tf.constant(gaussian_matrix(h, sigma_hw[0], mode), _F64)
    mw = tf.constant(gaussian_matrix(w, sigma_hw[1], mode), _F64)
    x = tf.einsum("ij,...jw->...iw", mh, x)  # along H first, as SciPy
    return tf.einsum("...hj,wj->...hw", x, mw)


def _clamped(n: int, offsets) -> np.ndarray:
    """[n, len(offsets)] indices i + o clipped to [0, n - 1] ("nearest")."""
    return np.clip(np.arange(n)[:, None] + np.asarray(offsets)[None, :], 0,
                   n - 1)


def median_filter_1d(values, size: int):
    """`ndimage.median_filter(values, size, mode="nearest")` of a 1-D tensor
    (odd `size`): the exact middle element of each window."""
    n = values.shape[0]
    half = size // 2
    windows = tf.gather(values, _clamped(n, range(-half, size - half)))
    return tf.sort(windows, axis=1)[:, half]


def _max_min_3x3(arr):
    """(3x3 maximum, 3x3 minimum) of [H, W] with mode "nearest"."""
    h, w = arr.shape
    rows = tf.gather(arr, _clamped(h, (-1, 0, 1)))            # [H, 3, W]
    stack = tf.gather(rows, _clamped(w, (-1, 0, 1)), axis=2)   # [H, 3, W, 3]
    return (tf.reduce_max(stack, axis=[1, 3]),
            tf.reduce_min(stack, axis=[1, 3]))


def _first_true(mask, axis: int, length: int):
    """Index of the first True along `axis`; `length` where there is none."""
    shape = [1] * mask.shape.rank
    shape[axis] = length
    index = tf.reshape(tf.range(length, dtype=tf.int64), shape)
    return tf.reduce_min(tf.where(mask, index, tf.cast(length, tf.int64)),
                         axis=axis)


def _first_argmax(values, valid):
    """First index of the largest `values` where `valid` (1-D); 0 if none."""
    n = values.shape[0]
    best = tf.reduce_max(tf.where(valid, values, -np.inf))
    hit = valid & tf.equal(values, best)
    first = _first_true(hit[None, :], 1, n)[0]
    return tf.where(first == n, tf.constant(0, tf.int64), first)


def _running(values, how: str):
    """Along axis 0: "max" of values[:i + 1], "min" of values[i:] (exact;
    a masked [n, n, ...] reduction, which traces faster than tf.scan)."""
    n = values.shape[0]
    i = np.arange(n)
    if how == "max":
        inside, fill = i[None, :] <= i[:, None], values.dtype.min
    else:
        inside, fill = i[None, :] >= i[:, None], values.dtype.max
    inside = tf.constant(inside.reshape((n, n) + (1,) * (values.shape.rank - 1)))
    spread = tf.where(inside, values[None], tf.constant(fill, values.dtype))
    reduce = tf.reduce_max if how == "max" else tf.reduce_min
    return reduce(spread, axis=1)


def _nan_maximum(a, b):
    """np.maximum: NaN when either side is NaN."""
    nan = tf.math.is_nan(a) | tf.math.is_nan(b)
    return tf.where(nan, tf.constant(np.nan, a.dtype), tf.maximum(a, b))


# --- artefact mask ----------------------------------------------------------------

def _edge_runs(candidate):
    """data/roi.py `_edge_runs`: per row, the capped leading run of True."""
    h, w = candidate.shape
    runs = _first_true(~candidate, 1, w)                     # w when all True
    support = tf.reduce_mean(tf.cast(runs > 0, _F64))
    size = max(3, (h // 8) | 1)
    capped = tf.minimum(runs, median_filter_1d(runs, size) + _RUN_SLACK)
    mask = tf.range(w, dtype=tf.int64)[None, :] < capped[:, None]
    return tf.logical_and(mask, support >= _SIDE_SUPPORT)


def artifact_mask(arr):
    """data/roi.py `artifact_mask` of one gray image [H, W] float64."""
    h, w = arr.shape
    tol = roi_lib.SATURATION_TOLERANCE
    saturated = (arr >= 1.0 - tol) | (arr <= -1.0 + tol)
    high, low = _max_min_3x3(arr)
    candidate = saturated | ((high - low) <= _CONSTANT_RANGE)
    mask = _edge_runs(candidate)
    mask |= tf.reverse(_edge_runs(tf.reverse(candidate, [1])), [1])
    mask |= tf.transpose(_edge_runs(tf.transpose(candidate)))
    mask |= tf.reverse(tf.transpose(_edge_runs(tf.transpose(
        tf.reverse(candidate, [0])))), [0])
    # binary_dilation with the 4-connected cross, border 0.
    padded = tf.pad(mask, [[1, 1], [1, 1]])
    mask = (padded[1:-1, 1:-1] | padded[:-2, 1:-1] | padded[2:, 1:-1] |
            padded[1:-1, :-2] | padded[1:-1, 2:])
    share = tf.reduce_mean(tf.cast(mask, _F64))
    return mask & (share <= _MAX_ARTIFACT_SHARE)


# --- retina band -------------------------------------------------------------------

def _linspace(start, stop, num: int):
    """np.linspace(start, stop, num) for float64 scalars, bit for bit."""
    div = num - 1
    delta = stop - start
    step = delta / div
    y = tf.range(num, dtype=_F64)
    y = tf.where(tf.equal(step, 0.0), y / div * delta, y * step) + start
    return tf.concat([y[:-1], [stop]], axis=0)


def _histogram(values, keep, bins: int):
    """np.histogram(values[keep], bins) -> (counts float64, edges)."""
    big = tf.constant(np.inf, _F64)
    lo = tf.reduce_min(tf.where(keep, values, big))
    hi = tf.reduce_max(tf.where(keep, values, -big))
    empty = ~tf.reduce_any(keep)
    lo, hi = tf.where(empty, _f64(0.0), lo), tf.where(empty, _f64(1.0), hi)
    same = tf.equal(lo, hi)
    lo, hi = tf.where(same, lo - 0.5, lo), tf.where(same, hi + 0.5, hi)
    edges = _linspace(lo, hi, bins + 1)
    v = tf.where(keep, values, lo)
    index = tf.cast(tf.floor((v - lo) / (hi - lo) * bins), tf.int64)
    index = tf.where(index == bins, index - 1, index)
    index = tf.where(v < tf.gather(edges, index), index - 1, index)
    index = tf.where((v >= tf.gather(edges, index + 1)) & (index != bins - 1),
                     index + 1, index)
    counts = tf.math.unsorted_segment_sum(tf.cast(keep, _F64), index, bins)
    return counts, edges


def _otsu_threshold(values, keep, bins: int = 128):
    """data/roi.py `otsu_threshold(values[keep])`."""
    hist, edges = _histogram(values, keep, bins)
    centers = 0.5 * (edges[:-1] + edges[1:])
    weight = tf.cumsum(hist)
    total = weight[-1]
    mean = tf.cumsum(hist * centers)
    w0, w1 = weight[:-1], total - weight[:-1]
    valid = (w0 > 0) & (w1 > 0)
    m0 = mean[:-1] / tf.where(w0 > 0, w0, _f64(1.0))
    m1 = (mean[-1] - mean[:-1]) / tf.where(w1 > 0, w1, _f64(1.0))
    between = tf.where(valid, w0 * w1 * tf.square(m0 - m1), _f64(-1.0))
    best = edges[1:][_first_argmax(between, tf.ones_like(valid))]
    return tf.where(tf.reduce_any(valid), best, centers[0])


def _sorted_kept(values, keep):
    """(ascending values[keep] padded with +inf, their count)."""
    big = tf.constant(np.inf, values.dtype)
    flat = tf.sort(tf.reshape(tf.where(keep, values, big), [-1]))
    return flat, tf.reduce_sum(tf.cast(keep, tf.int64))


def _median(values, keep):
    """np.median(values[keep]) in the values' dtype (mean of the middle two)."""
    flat, n = _sorted_kept(values, keep)
    n = tf.maximum(n, 1)
    lo = tf.gather(flat, (n - 1) // 2)
    hi = tf.gather(flat, n // 2)
    return tf.where(n % 2 == 1, lo, (lo + hi) / 2)


def _percentile(values, keep, q: float):
    """np.percentile(values[keep], q) ("linear", q a Python number, so the
    interpolation runs in the values' dtype as NumPy's weak q does)."""
    flat, n = _sorted_kept(values, keep)
    n = tf.maximum(n, 1)
    virtual = tf.cast(n - 1, _F64) * (q / 100)
    prev = tf.floor(virtual)
    at_end = virtual >= tf.cast(n - 1, _F64)
    i_prev = tf.where(at_end, n - 1, tf.cast(prev, tf.int64))
    i_next = tf.where(at_end, n - 1, i_prev + 1)
    a, b = tf.gather(flat, i_prev), tf.gather(flat, i_next)
    gamma = tf.where(at_end, _f64(0.0), virtual - prev)
    dtype = values.dtype
    diff = b - a
    low = a + diff * tf.cast(gamma, dtype)
    high = b - diff * tf.cast(1.0 - gamma, dtype)
    return tf.where(gamma >= 0.5, high, low)


def _interp_columns(values, ok):
    """np.interp(cols, cols[ok], values[ok]) over cols = 0..W-1."""
    w = values.shape[0]
    cols = tf.range(w, dtype=tf.int64)
    prev = _running(tf.where(ok, cols, -1), "max")          # last ok <= i
    nxt = _running(tf.where(ok, cols, w), "min")             # first ok >= i
    first = _first_true(ok[None, :], 1, w)[0]
    last = tf.reduce_max(tf.where(ok, cols, -1))
    safe = lambda i: tf.clip_by_value(i, 0, w - 1)  # noqa: E731
    fp, fn = tf.gather(values, safe(prev)), tf.gather(values, safe(nxt))
    slope = (fn - fp) / tf.cast(nxt - prev, _F64)
    inner = slope * tf.cast(cols - prev, _F64) + fp
    out = tf.where(prev < 0, tf.gather(values, safe(first)),
                   tf.where(nxt >= w, tf.gather(values, safe(last)), inner))
    return tf.where(ok, values, out)


def _fill_columns(values, size: int, tolerance: float):
    """data/roi.py `_fill_columns` of one curve [W]."""
    ok = tf.math.is_finite(values)
    filled = _interp_columns(values, ok)
    broad = median_filter_1d(filled, 2 * size + 1)
    ok2 = ok & (tf.abs(filled - broad) <= tolerance)
    filled = tf.where(tf.reduce_any(ok2), _interp_columns(values, ok2), filled)
    return tf.where(tf.reduce_any(ok), median_filter_1d(filled, size), values)


def _refine(grad, lo, hi, active):
    """data/roi.py `_refine` for every column (NaN where not `active`)."""
    h = grad.shape[0]
    rows = tf.range(h, dtype=tf.int64)[:, None]
    a, b = tf.maximum(lo, 1), tf.minimum(hi, h - 2)
    window = (rows >= a[None, :]) & (rows <= b[None, :]) & \
        tf.math.is_finite(grad)
    ok = active & (b >= a) & tf.reduce_any(window, axis=0)
    best = tf.reduce_max(tf.where(window, grad, -np.inf), axis=0)
    r = _first_true(window & tf.equal(grad, best[None, :]), 0, h)
    r = tf.clip_by_value(r, 1, h - 2)
    cols = tf.range(grad.shape[1], dtype=tf.int64)
    at = lambda rr: tf.gather_nd(grad, tf.stack([rr, cols], 1))  # noqa: E731
    y0, y1, y2 = at(r - 1), at(r), at(r + 1)
    denom = y0 - 2 * y1 + y2
    use = tf.math.is_finite(denom) & (denom < 0)
    shift = tf.where(use, 0.5 * (y0 - y2) / tf.where(use, denom, _f64(-1.0)),
                     _f64(0.0))
    out = tf.cast(r, _F64) + tf.clip_by_value(shift, -0.5, 0.5)
    return tf.where(ok, out, _f64(np.nan))


def _brightest_path(reward, step: int):
    """data/roi.py `_brightest_path`: one row per column, same tie rule."""
    h, w = reward.shape
    rows = tf.range(h, dtype=tf.int64)
    shifts = []
    for d in range(1, step + 1):
        shifts += [tf.minimum(rows + d, h - 1), tf.maximum(rows - d, 0)]

    def column(c, acc, back):
        best, arg = acc, rows
        for shifted in shifts:
            cand = tf.gather(acc, shifted)
            better = cand > best
            best = tf.where(better, cand, best)
            arg = tf.where(better, shifted, arg)
        return c + 1, best + reward[:, c], back.write(c, arg)

    back = tf.TensorArray(tf.int64, size=w, element_shape=[h])
    back = back.write(0, rows)
    _, acc, back = tf.while_loop(lambda c, *_: c < w, column,
                                 (tf.constant(1), reward[:, 0], back))
    back = back.stack()                                        # [W, H]
    last = _first_argmax(acc, tf.ones([h], tf.bool))

    def trace(c, row, path):
        prev = tf.gather_nd(back, tf.stack([tf.cast(c, tf.int64), row])[None])[0]
        return c - 1, prev, path.write(c - 1, prev)

    path = tf.TensorArray(tf.int64, size=w, element_shape=[])
    path = path.write(w - 1, last)
    _, _, path = tf.while_loop(lambda c, *_: c > 0, trace,
                               (tf.constant(w - 1), last, path))
    return path.stack()


def retina_band(arr, valid=None):
    """data/roi.py `retina_band` of one gray image [H, W] float64.

    Args:
      arr: The image.
      valid: bool [H, W]; default `~artifact_mask(arr)`.

    Returns:
      (top [W], bottom [W], valid [H, W], mask [H, W]) as RetinaBand's
      fields; NaN curves and an empty mask where NumPy returns its empty
      band.
    """
    h, w = arr.shape
    if valid is None:
        valid = ~artifact_mask(arr)
    big = tf.constant(np.inf, _F64)
    ptp = (tf.reduce_max(tf.where(valid, arr, -big)) -
           tf.reduce_min(tf.where(valid, arr, big)))
    found = tf.reduce_any(valid) & (ptp > 1e-6)

    sigma = (max(0.7, h / 160), max(1.0, w / 40))
    num = smooth_2d(tf.where(valid, arr, _f64(0.0)), sigma, "nearest")
    weight = smooth_2d(tf.cast(valid, _F64), sigma, "nearest")
    known = weight >= _MIN_WEIGHT
    smooth = tf.where(known, num / tf.maximum(weight, _f64(1e-12)),
                      _f64(np.nan))
    nan_row = tf.fill([1, w], tf.constant(np.nan, _F64))
    grad = tf.concat([nan_row, 0.5 * (smooth[2:] - smooth[:-2]), nan_row], 0)
    window = max(2, int(round(h / 48)))
    size = max(3, (w // 16) | 1)
    tolerance = max(2.0, h / 32)

    bright = known & (smooth > _otsu_threshold(smooth, known))
    has = tf.reduce_any(bright, axis=0)
    found &= tf.reduce_any(has)
    first = _first_true(bright, 0, h)
    first = tf.where(has, first, 0)
    above = max(3, int(round(h / 32)))
    seen = tf.concat([tf.zeros([1, w], tf.int64),
                      tf.cumsum(tf.cast(known, tf.int64), axis=0)], 0)
    start = tf.maximum(first - above, 0)
    cols = tf.range(w, dtype=tf.int64)
    at = lambda t, r: tf.gather_nd(t, tf.stack([r, cols], 1))  # noqa: E731
    has &= (first >= above) & (at(seen, first) - at(seen, start) == above)
    found &= tf.reduce_any(has)
    top = _refine(grad, first - window, first + window, has)
    top = _fill_columns(top, size, tolerance)

    level = _median(smooth, known)
    reward = tf.where(known, smooth - level, _f64(0.0))
    min_thickness = max(2, int(round(0.06 * h)))
    rows_f = tf.range(h, dtype=_F64)[:, None]
    below = rows_f >= tf.round(top)[None, :] + min_thickness
    spread = tf.reduce_max(tf.abs(reward)) + 1.0
    reward = tf.where(below, reward, -2.0 * spread)
    rpe = _brightest_path(reward, max(1, int(round(h / w))))
    bottom = _refine(-grad, rpe, rpe + max(3, int(round(h / 24))),
                     tf.ones([w], tf.bool))
    bottom = _fill_columns(bottom, size, tolerance)
    bottom = _nan_maximum(bottom, top + 1)
    inside = (rows_f >= top[None, :]) & (rows_f < bottom[None, :])
    visible = tf.reduce_any(inside & valid, axis=0)
    nan = tf.constant(np.nan, _F64)
    top = tf.where(visible & found, top, nan)
    bottom = tf.where(visible & found, bottom, nan)
    return top, bottom, valid, inside & valid & found


def gray(image):
    """[H, W, C] -> [H, W] float64, data/roi.py's `_as_2d` (mean over C)."""
    x = tf.cast(image, _F64)
    total = x[..., 0]
    for c in range(1, x.shape[-1]):
        total = total + x[..., c]
    return total / x.shape[-1]


# --- artefact fill ---------------------------------------------------------------

def _nearest_valid(valid):
    """(rows, cols) [H, W] of `distance_transform_edt(~valid,
    return_indices=True)`: the nearest valid pixel, ties to the leftmost
    column and then the upper row, as SciPy's feature transform picks."""
    h, w = valid.shape
    rows = tf.broadcast_to(tf.range(h, dtype=tf.int64)[:, None], [h, w])
    big = tf.constant(4 * (h + w), tf.int64)
    # Per column, the nearest valid row (ties: the upper one).
    up = _running(tf.where(valid, rows, -big), "max")
    down = _running(tf.where(valid, rows, big), "min")
    nearest = tf.where(rows - up <= down - rows, up, down)         # [H, W']
    # Per pixel (r, c), the best column c' by (c - c')^2 + (r - nearest)^2.
    c = tf.range(w, dtype=tf.int64)[None, :, None]
    other = tf.range(w, dtype=tf.int64)[None, None, :]
    dist = (tf.square(c - other) +
            tf.square(rows[:, :1, None] - nearest[:, None, :]))      # [H, W, W']
    has = tf.reduce_any(valid, axis=0)
    dist = tf.where(has[None, None, :], dist, tf.int64.max)
    best = tf.reduce_min(dist, axis=2, keepdims=True)
    col = _first_true(tf.equal(dist, best), 2, w)                  # [H, W]
    row = tf.gather_nd(nearest, tf.stack([rows, col], -1))
    return row, col


def fill_artifacts(image, valid):
    """data/patches.py `fill_artifacts` of one image [H, W, C] float32."""
    h, w, channels = image.shape
    sigma = max(2.0, min(h, w) / 16)
    weight = smooth_2d(tf.cast(valid, _F64), (sigma, sigma), "nearest")
    row, col = _nearest_valid(valid)
    index = tf.stack([row, col], -1)
    out = []
    for c in range(channels):
        channel = tf.cast(image[..., c], _F64)
        smooth = smooth_2d(tf.where(valid, channel, _f64(0.0)), (sigma, sigma),
                           "nearest")
        smooth = tf.where(weight > 1e-3,
                          smooth / tf.maximum(weight, _f64(1e-12)),
                          tf.gather_nd(channel, index))
        out.append(tf.where(valid, channel, smooth))
    filled = tf.cast(tf.stack(out, -1), tf.float32)
    untouched = tf.reduce_all(valid) | ~tf.reduce_any(valid)
    return tf.where(untouched, image, filled)


# --- intensity -------------------------------------------------------------------

def _soft_clip(values):
    """data/intensity.py `_soft_clip` (float64)."""
    knee, soft = intensity_lib._KNEE, intensity_lib._SOFT  # pylint: disable=protected-access
    over = tf.maximum(tf.abs(values) - knee, _f64(0.0))
    squashed = tf.sign(values) * (knee + soft * over / (over + soft))
    return tf.where(over > 0, squashed, values)


def normalize_scan(image):
    """data/intensity.py `normalize_scan` of one image [H, W, C] float32;
    returns the normalised image (float32)."""
    channels = image.shape[-1]
    g32 = image[..., 0]
    for c in range(1, channels):
        g32 = g32 + image[..., c]
    g32 = g32 / channels if channels > 1 else g32
    _, _, valid, mask = retina_band(tf.cast(g32, _F64))
    black = tf.cast(_percentile(g32, valid, 1), _F64)
    tissue = tf.cast(_median(g32, mask), _F64)
    apply = tf.reduce_any(mask) & (tissue - black > 1e-3)
    span = tf.where(apply, tissue - black, _f64(1.0))
    gain = (intensity_lib.TISSUE_LEVEL - intensity_lib.BLACK_LEVEL) / span
    offset = intensity_lib.BLACK_LEVEL - gain * black
    x = tf.cast(image, _F64)
    out = _soft_clip(gain * x + offset)
    out = tf.where(valid[..., None], out, x)
    return tf.where(apply, tf.cast(out, tf.float32), image)


# --- the scoring region ------------------------------------------------------------

def scoring_region(roi_masks, valid_masks):
    """data/roi.py `scoring_region` of [N, H, W] masks (default margin)."""
    h = roi_masks.shape[1]
    margin = max(2, int(round(h / 32)))
    padded = tf.pad(roi_masks, [[0, 0], [margin, margin], [0, 0]])
    near = roi_masks
    for d in range(-margin, margin + 1):
        near = near | padded[:, margin + d:margin + d + h]
    empty = ~tf.reduce_any(roi_masks, axis=[1, 2], keepdims=True)
    return (near | empty) & valid_masks
