"""Data: decode, validate, patch and scale images; tf.data pipelines.

Everything the rest of anogan_tf needs from the data stage is re-exported
here:

  load_images(config, split) -> ImageSet      images in [-1, 1] + metadata
  extract_patches(...) -> PatchSet            model-sized patches + coords
  stitch_maps / stitch_coverage               per-patch maps -> full images
  make_train_dataset(...)                     tf.data batches for training
  validate_model_input(...)                   checks before the model
  generate_oct(...)                           synthetic OCT B-scans
  generate_textures(...)                      textures with typed defects
  render_glyphs(...)                          MNIST-like font digits (uint8)
  write_tfrecord(...)                         the TFRecord format we read
  images_to_uint8 / save_image_grid           display helpers

Every bad-input error is a `DataError` (a ValueError) whose message names
the file or array and says how to fix it.
"""

from anogan_tf.data.errors import DataError
from anogan_tf.data.glyphs import render_glyphs
from anogan_tf.data.grids import images_to_uint8, save_image_grid
from anogan_tf.data.loaders import load_images
from anogan_tf.data.patches import (extract_patches, retina_roi_mask,
                                    stitch_coverage, stitch_maps)
from anogan_tf.data.pipeline import make_train_dataset, validate_model_input
from anogan_tf.data.records import ImageSet, PatchSet
from anogan_tf.data.synthetic_oct import generate_oct
from anogan_tf.data.textures import generate_textures
from anogan_tf.data.tfrecords import write_tfrecord

__all__ = [
    "DataError",
    "ImageSet",
    "PatchSet",
    "load_images",
    "extract_patches",
    "stitch_maps",
    "stitch_coverage",
    "retina_roi_mask",
    "make_train_dataset",
    "validate_model_input",
    "generate_oct",
    "generate_textures",
    "render_glyphs",
    "write_tfrecord",
    "images_to_uint8",
    "save_image_grid",
]
