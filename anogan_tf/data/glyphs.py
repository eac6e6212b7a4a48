"""Rendered digit glyphs as an offline one-class image set (MNIST-like).

The ten characters "0".."9" (classes 0..9) are drawn with Pillow from the
TrueType text fonts that ship inside the matplotlib package (`FONT_FILES`:
DejaVu Sans/Serif/Mono, STIX General and Computer Modern, 21 faces in all),
so nothing is downloaded. Each image is made like an MNIST digit: white on
black, 28x28 by default, size-normalised and centred by mass. Per image,
random draws choose

  * the font face,
  * the stroke thickness (a target width of 2..4 output pixels, reached
    with Pillow's `stroke_width` on top of the face's own stroke),
  * an affine map: rotation within +-15 degrees, shear within +-0.2,
    horizontal stretch 0.85..1.25,
  * an elastic distortion (Simard et al., 2003): a smooth displacement field,
    white noise blurred with `scipy.ndimage.gaussian_filter`, with an
    amplitude of up to ~1.4 output pixels,
  * the size (the longer side of the ink's bounding box is 0.6..0.78 of the
    image side; MNIST uses 20/28 = 0.71) and a translation of up to 1.5
    output pixels (28-pixel scale) away from the centred position.

The glyph is rendered at about 2x the output resolution, warped there with
`scipy.ndimage.map_coordinates` (affine and elastic maps in one pass), then
resampled so its centre of mass lands in the image centre, and averaged down
2x2 to the output size.

Image `index` of class `c` depends only on (seed, c, index): its random draws
come from `np.random.default_rng([seed, c, index])`, so any subset can be
re-rendered alone and does not depend on how many images are drawn. The
pixels also depend on the font files and on the Pillow/FreeType version.

Speed (measured on a shared 2-core CPU, load ~2): `render_glyphs(c, 2000,
seed)` takes 1.4-1.7 s per class at 28x28, 15 s for all ten classes (the
work runs on chunks of 250 images with vectorised scipy calls; the Pillow
renders are cached per font, digit and stroke width).

`load_glyphs_split` turns the renders into the one-class task of
`--dataset=glyphs`, with the semantics of `digits.load_digits_split`: one
digit is normal; "train", "calibration" and "test" draw from disjoint index
ranges of each class (train 0.., calibration 1e6.., test 2e6..), so no image
is in two splits, whatever the split sizes.
"""

from __future__ import annotations

import functools
import os
from typing import List, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from anogan_tf.data.decode import convert_channels, resize_images
from anogan_tf.data.errors import DataError
from anogan_tf.data.records import ImageSet

__all__ = [
    "FONT_FILES",
    "GLYPHS_SPLITS",
    "SPLIT_OFFSETS",
    "font_dir",
    "render_glyphs",
    "glyph_split_plan",
    "load_glyphs_split",
]

# Text faces from matplotlib's fonts/ttf that hold the ten ASCII digits.
# Symbol and display faces (STIXSiz*, STIXNonUni*, cmex10, cmsy10, cmmi10 with
# its old-style figures, DejaVu*Display, LastResortHE) are left out.
FONT_FILES = (
    "DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
    "cmr10.ttf", "cmss10.ttf", "cmtt10.ttf", "cmb10.ttf", "cmti10.ttf",
)

GLYPHS_SPLITS = ("train", "calibration", "test")
# First image index of each split within every class; a split holds at most
# _MAX_PER_SPLIT images, so the index ranges never overlap.
SPLIT_OFFSETS = {"train": 0, "calibration": 1_000_000, "test": 2_000_000}
_MAX_PER_SPLIT = 1_000_000

_CHUNK = 250  # Images per vectorised chunk (bounds the memory use).
_SUPERSAMPLE = 2  # Work at 2x the output resolution, then average 2x2.
_MIN_SIZE = 8

# Random ranges, in output pixels of a 28-pixel image unless said otherwise
# (they scale with the image size).
_THICKNESS = (2.0, 4.0)        # Stroke width.
_ROTATION_DEG = 15.0           # +- degrees.
_SHEAR = 0.2                   # +- horizontal shear factor.
_STRETCH = (0.85, 1.25)        # Horizontal stretch (aspect), log-uniform.
_BOX = (0.6, 0.78)             # Longer ink side / image side.
_SHIFT = 1.5                   # +- translation after centring by mass.
_ELASTIC = (0.3, 1.4)          # RMS displacement of the elastic field.
_ELASTIC_SIGMA = 4.0           # Smoothness (Gaussian sigma) of the field.
_MAX_STROKE = 6                # Largest Pillow stroke_width, canvas pixels.


def font_dir() -> str:
    """The folder of TrueType fonts inside the installed matplotlib.

    Returns:
      `<matplotlib data path>/fonts/ttf`.

    Raises:
      DataError: matplotlib is missing or lacks one of `FONT_FILES`.
    """
    try:
        import matplotlib  # pylint: disable=g-import-not-at-top
    except ImportError as e:
        raise DataError(
            "Dataset 'glyphs' draws digits with the fonts that ship with "
            "matplotlib, which is not installed. Run `pip install "
            "'matplotlib>=3.8'` (an install dependency of anogan_tf).") from e
    folder = os.path.join(matplotlib.get_data_path(), "fonts", "ttf")
    missing = [f for f in FONT_FILES
               if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise DataError(
            f"matplotlib {matplotlib.__version__} at {folder!r} lacks the "
            f"font files {missing}, which dataset 'glyphs' needs. Reinstall "
            f"matplotlib (`pip install --force-reinstall 'matplotlib>=3.8'`).")
    return folder


def _geometry(size: int) -> Tuple[int, int]:
    """(glyph height, canvas side) in supersampled pixels for `size`."""
    return int(round(size * 9 / 7)), int(round(size * 16 / 7))


@functools.lru_cache(maxsize=None)
def _font(font_index: int, glyph_height: int) -> ImageFont.FreeTypeFont:
    """The face at the point size whose "8" is `glyph_height` pixels tall."""
    path = os.path.join(font_dir(), FONT_FILES[font_index])
    probe = ImageFont.truetype(path, 100)
    left, top, right, bottom = probe.getbbox("8")
    if bottom - top < 10 or right - left < 5:
        raise DataError(
            f"Font {path!r} draws no digit '8' (bounding box "
            f"{(left, top, right, bottom)}); it cannot be used for glyphs.")
    return ImageFont.truetype(path, max(4, round(100 * glyph_height /
                                                 (bottom - top))))


@functools.lru_cache(maxsize=None)
def _glyph(font_index: int, char_class: int, stroke: int, glyph_height: int,
           canvas: int) -> np.ndarray:
    """float32 [canvas, canvas] in [0, 1]: the digit, its ink box centred."""
    font = _font(font_index, glyph_height)
    text = str(char_class)
    left, top, right, bottom = font.getbbox(text, stroke_width=stroke)
    w, h = right - left, bottom - top
    if w < 1 or h < 1 or w > canvas or h > canvas:
        raise DataError(
            f"Font {FONT_FILES[font_index]} drew '{text}' as a {w}x{h} box, "
            f"which does not fit the {canvas}x{canvas} canvas.")
    image = Image.new("L", (canvas, canvas), 0)
    ImageDraw.Draw(image).text(
        ((canvas - w) // 2 - left, (canvas - h) // 2 - top), text, fill=255,
        font=font, stroke_width=stroke, stroke_fill=255)
    pixels = np.asarray(image, np.float32) / 255.0
    if pixels.max() < 0.5:
        raise DataError(
            f"Font {FONT_FILES[font_index]} drew no ink for '{text}'.")
    pixels.setflags(write=False)  # Cached and shared between calls.
    return pixels


@functools.lru_cache(maxsize=None)
def _face_thickness(font_index: int, glyph_height: int,
                    canvas: int) -> float:
    """Mean stroke width of a face's digits: 2 * area / boundary length."""
    widths = []
    for c in range(10):
        ink = _glyph(font_index, c, 0, glyph_height, canvas) > 0.5
        boundary = ink & ~ndimage.binary_erosion(ink)
        widths.append(2.0 * ink.sum() / max(1, boundary.sum()))
    return float(np.mean(widths))


def _draw_params(rng: np.random.Generator, size: int, canvas: int
                 ) -> Tuple[int, float, np.ndarray, float, np.ndarray, float,
                            np.ndarray]:
    """One image's random draws, in a fixed order (see the module docstring).

    Returns (font index, thickness in canvas px, 2x2 inverse affine map,
    box side in output px, shift in output px (dy, dx), elastic RMS in
    canvas px, white noise [2, canvas, canvas]).
    """
    unit = size / 28.0  # Output pixels of a 28-pixel image.
    font = int(rng.integers(len(FONT_FILES)))
    thickness = rng.uniform(*_THICKNESS) * unit * _SUPERSAMPLE
    angle = np.deg2rad(rng.uniform(-_ROTATION_DEG, _ROTATION_DEG))
    shear = rng.uniform(-_SHEAR, _SHEAR)
    stretch = np.exp(rng.uniform(np.log(_STRETCH[0]), np.log(_STRETCH[1])))
    box = rng.uniform(*_BOX) * size
    shift = rng.uniform(-_SHIFT, _SHIFT, 2) * unit
    elastic = rng.uniform(*_ELASTIC) * unit * _SUPERSAMPLE
    noise = rng.standard_normal((2, canvas, canvas), dtype=np.float32)
    # Output -> source map on (y, x): rotate, shear x by y, stretch x.
    cos, sin = np.cos(angle), np.sin(angle)
    rotate = np.array([[cos, -sin], [sin, cos]])
    shear_m = np.array([[1.0, 0.0], [shear, 1.0]])
    scale = np.diag([1.0, 1.0 / stretch])
    return (font, thickness, rotate @ shear_m @ scale, box, shift, elastic,
            noise)


def _render_chunk(char_class: int, indices: np.ndarray, seed: int,
                  size: int) -> np.ndarray:
    """float32 [len(indices), size, size] in [0, 1]."""
    glyph_height, canvas = _geometry(size)
    n = len(indices)
    sources = np.empty((n, canvas, canvas), np.float32)
    maps = np.empty((n, 2, 2))
    boxes = np.empty(n)
    shifts = np.empty((n, 2))
    amplitude = np.empty(n, np.float32)
    noise = np.empty((n, 2, canvas, canvas), np.float32)
    for k, index in enumerate(indices):
        rng = np.random.default_rng([seed, char_class, int(index)])
        (font, thickness, maps[k], boxes[k], shifts[k], amplitude[k],
         noise[k]) = _draw_params(rng, size, canvas)
        # Pillow's stroke_width grows the outline on both sides.
        own = _face_thickness(font, glyph_height, canvas)
        stroke = int(np.clip(round((thickness - own) / 2), 0, _MAX_STROKE))
        sources[k] = _glyph(font, char_class, stroke, glyph_height, canvas)

    # Elastic field: blurred white noise scaled to the drawn RMS amplitude.
    sigma = _ELASTIC_SIGMA * _SUPERSAMPLE * size / 28.0
    field = ndimage.gaussian_filter(noise, (0, 0, sigma, sigma), truncate=3.0)
    rms = np.sqrt(np.mean(field ** 2, axis=(1, 2, 3), keepdims=True))
    field *= amplitude[:, None, None, None] / np.maximum(rms, 1e-8)

    # Pass 1: affine + elastic warp on the canvas.
    centre = (canvas - 1) / 2.0
    grid = np.mgrid[:canvas, :canvas].astype(np.float32) - centre  # [2, C, C]
    src = np.einsum("nij,jyx->niyx", maps, grid).astype(np.float32)
    src += centre + field
    batch = np.broadcast_to(
        np.arange(n, dtype=np.float32)[:, None, None], (n, canvas, canvas))
    warped = ndimage.map_coordinates(
        sources, [batch, src[:, 0], src[:, 1]], order=1, mode="constant",
        cval=0.0)

    # Pass 2: scale the ink box to the drawn size, centre by mass, shift.
    ink = warped > 0.25
    rows, cols = ink.any(axis=2), ink.any(axis=1)
    height = canvas - rows[:, ::-1].argmax(axis=1) - rows.argmax(axis=1)
    width = canvas - cols[:, ::-1].argmax(axis=1) - cols.argmax(axis=1)
    extent = np.maximum(np.maximum(height, width), 1).astype(np.float64)
    mass = np.maximum(warped.sum(axis=(1, 2)), 1e-6)
    coords = np.arange(canvas, dtype=np.float32)
    com_y = (warped.sum(axis=2) @ coords) / mass
    com_x = (warped.sum(axis=1) @ coords) / mass
    fine = size * _SUPERSAMPLE
    scale = _SUPERSAMPLE * boxes / extent  # Fine pixels per canvas pixel.
    out = np.arange(fine, dtype=np.float32) - (fine - 1) / 2.0
    ys = (out[None, :] - _SUPERSAMPLE * shifts[:, :1]) / scale[:, None] + \
        com_y[:, None]
    xs = (out[None, :] - _SUPERSAMPLE * shifts[:, 1:]) / scale[:, None] + \
        com_x[:, None]
    batch = np.broadcast_to(
        np.arange(n, dtype=np.float32)[:, None, None], (n, fine, fine))
    placed = ndimage.map_coordinates(
        warped, [batch,
                 np.broadcast_to(ys[:, :, None], (n, fine, fine)),
                 np.broadcast_to(xs[:, None, :], (n, fine, fine))],
        order=1, mode="constant", cval=0.0)
    small = placed.reshape(n, size, _SUPERSAMPLE, size, _SUPERSAMPLE)
    return np.clip(small.mean(axis=(2, 4)), 0.0, 1.0)


def _check_class(char_class, what: str = "char_class") -> None:
    if isinstance(char_class, bool) or not isinstance(
            char_class, (int, np.integer)) or char_class not in range(10):
        raise DataError(
            f"{what} must be a digit 0..9 for dataset 'glyphs', got "
            f"{char_class!r}. Pass e.g. --normal_class=0.")


def render_glyphs(char_class: int, n: int, seed: int, size: int = 28,
                  start: int = 0) -> np.ndarray:
    """Renders images `start .. start + n - 1` of one digit class.

    Args:
      char_class: The digit, 0..9.
      n: Number of images (>= 0).
      seed: Seed; image i depends only on (seed, char_class, i).
      size: Side of the square output images (>= 8; 28 like MNIST).
      start: Index of the first image (>= 0).

    Returns:
      uint8 [n, size, size]: white digits on black.

    Raises:
      DataError: a bad class, count, size or start, or missing fonts.
    """
    _check_class(char_class)
    if int(n) < 0 or int(start) < 0:
        raise DataError(
            f"render_glyphs needs n >= 0 and start >= 0, got n={n}, "
            f"start={start}.")
    if int(size) < _MIN_SIZE:
        raise DataError(
            f"render_glyphs needs size >= {_MIN_SIZE}, got {size}. Render at "
            f"28 and resize for smaller images.")
    size, seed = int(size), int(seed) % (2 ** 63)
    indices = np.arange(int(start), int(start) + int(n), dtype=np.int64)
    chunks = [_render_chunk(int(char_class), indices[i:i + _CHUNK], seed, size)
              for i in range(0, len(indices), _CHUNK)]
    if not chunks:
        return np.zeros((0, size, size), np.uint8)
    return np.round(np.concatenate(chunks) * 255.0).astype(np.uint8)


def glyph_split_plan(split: str, normal_class: int, num_train: int = 2000,
                     num_calibration: int = 200, num_test: int = 400
                     ) -> List[Tuple[int, int, int]]:
    """Which images form a split: (class, first index, count) runs, in order.

    "train" and "calibration" hold `num_train` / `num_calibration` images of
    the normal class. "test" holds `num_test // 2` normal images, then the
    other `num_test - num_test // 2` spread evenly over the nine other
    classes (the lower classes get one more when it does not divide).
    Each split reads its own index range, starting at `SPLIT_OFFSETS[split]`.

    Args:
      split: "train", "calibration" or "test".
      normal_class: The normal digit, 0..9.
      num_train: Normal training images (1..1e6).
      num_calibration: Held-out normal images (1..1e6).
      num_test: Test images (2..1e6), about half normal.

    Returns:
      A list of (class, first index, count) with count > 0.

    Raises:
      DataError: a bad split, class or count.
    """
    _check_class(normal_class, "normal_class")
    if split not in GLYPHS_SPLITS:
        raise DataError(
            f"Unknown split {split!r} for dataset 'glyphs'; expected one of "
            f"{GLYPHS_SPLITS}.")
    for name, value, low, example in (
            ("num_train", num_train, 1, 2000),
            ("num_calibration", num_calibration, 1, 200),
            ("num_test", num_test, 2, 400)):
        if (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                or not low <= value <= _MAX_PER_SPLIT):
            raise DataError(
                f"{name} must be an integer in [{low}, {_MAX_PER_SPLIT}] for "
                f"dataset 'glyphs', got {value!r}. Pass e.g. "
                f"--glyphs_{name}={example}.")
    offset = SPLIT_OFFSETS[split]
    if split == "train":
        return [(normal_class, offset, int(num_train))]
    if split == "calibration":
        return [(normal_class, offset, int(num_calibration))]
    n_normal = int(num_test) // 2
    n_other = int(num_test) - n_normal
    others = [c for c in range(10) if c != normal_class]
    plan = [(normal_class, offset, n_normal)]
    for rank, c in enumerate(others):
        count = n_other // 9 + (1 if rank < n_other % 9 else 0)
        if count:
            plan.append((c, offset, count))
    return plan


def load_glyphs_split(split: str, normal_class: int, seed: int,
                      size: Tuple[int, int], channels: int,
                      num_train: int = 2000, num_calibration: int = 200,
                      num_test: int = 400) -> ImageSet:
    """Loads one split of the one-class glyphs task, scaled to [-1, 1].

    Images are rendered at 28x28 (see the module docstring) and resized
    bilinearly to `size`. The normal digit's images have label 0 and
    category "good"; test images of the other digits have label 1 and the
    digit as category (e.g. "7").

    Args:
      split: "train", "calibration" or "test".
      normal_class: The normal digit, 0..9.
      seed: Seed of the renders.
      size: (height, width) of the returned images.
      channels: 1, or 3 (the gray value repeated).
      num_train: Images in "train".
      num_calibration: Images in "calibration".
      num_test: Images in "test" (num_test // 2 normal).

    Returns:
      An ImageSet with labels and categories; ids are
      "glyphs/<class>/<index>" with a 7-digit index, unique across splits.

    Raises:
      DataError: a bad split, class, count or channel count, or missing
        fonts.
    """
    plan = glyph_split_plan(split, normal_class, num_train, num_calibration,
                            num_test)
    pixels, ids, labels, categories = [], [], [], []
    for c, first, count in plan:
        pixels.append(render_glyphs(c, count, seed, 28, start=first))
        ids.extend(f"glyphs/{c}/{i:07d}" for i in range(first, first + count))
        label = 0 if c == normal_class else 1
        labels.extend([label] * count)
        categories.extend(["good" if label == 0 else str(c)] * count)
    images = np.concatenate(pixels).astype(np.float32)[..., None] / 127.5 - 1.0
    images = np.clip(resize_images(images, size), -1.0, 1.0)
    return ImageSet(images=convert_channels(images, channels), ids=tuple(ids),
                    labels=np.array(labels, np.int32),
                    categories=tuple(categories))
