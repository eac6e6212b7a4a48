"""Loading a trained model dir (config.json + generator.keras +
discriminator.keras, and encoder.keras once trained).

Thin functions over `anogan_tf.model_dir.ModelDir`, which owns the layout.
"""

from __future__ import annotations

from typing import Tuple

from anogan_tf.config import ModelConfig
from anogan_tf.model_dir import (DISCRIMINATOR_FILE, ENCODER_FILE,
                                 GENERATOR_FILE, ModelDir, load_keras_file)
from anogan_tf.models.dcgan import Discriminator, Generator

__all__ = ["load_model_dir", "load_keras_file", "load_encoder",
           "GENERATOR_FILE", "DISCRIMINATOR_FILE", "ENCODER_FILE"]


def load_encoder(model_dir: str):
    """The encoder of a model dir, or None when none was trained.

    Raises:
      ConfigError: encoder.keras exists but cannot be loaded.
    """
    return ModelDir(model_dir).load_encoder()


def load_model_dir(model_dir: str) -> Tuple[ModelConfig, Generator, Discriminator]:
    """Loads (config, G, D) from a model dir written by anogan-train.

    Raises:
      ConfigError: the dir, config.json or a model file is missing, damaged or
        inconsistent with config.json; the message says how to fix it.
    """
    return ModelDir(model_dir).load_gan()
