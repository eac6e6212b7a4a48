"""Loading a trained model dir (config.json + generator.keras + discriminator.keras)."""

from __future__ import annotations

import os
from typing import Tuple

import keras

from anogan_tf.config import ConfigError, ModelConfig, load_model_config
from anogan_tf.models.dcgan import Discriminator, Generator

__all__ = ["load_model_dir", "GENERATOR_FILE", "DISCRIMINATOR_FILE"]

GENERATOR_FILE = "generator.keras"
DISCRIMINATOR_FILE = "discriminator.keras"


def _load(path: str, kind: type):
    if not os.path.isfile(path):
        raise ConfigError(
            f"Missing {path}. Train the GAN first (anogan-train "
            f"--model_dir={os.path.dirname(path)}), or pass the model dir it "
            f"wrote.")
    try:
        model = keras.saving.load_model(path)
    except Exception as e:  # keras raises many types for a damaged archive
        raise ConfigError(
            f"Cannot load {path}: {type(e).__name__}: {e}. The file is damaged "
            f"or from another version; re-run anogan-train on this model dir "
            f"to rewrite it from the last checkpoint.") from e
    if not isinstance(model, kind):
        raise ConfigError(f"{path} holds a {type(model).__name__}, expected a "
                          f"{kind.__name__}.")
    return model


def load_model_dir(model_dir: str) -> Tuple[ModelConfig, Generator, Discriminator]:
    """Loads (config, G, D) from a model dir written by anogan-train.

    Raises:
      ConfigError: the dir, config.json or a model file is missing, damaged or
        inconsistent with config.json; the message says how to fix it.
    """
    if not model_dir or not os.path.isdir(model_dir):
        raise ConfigError(
            f"model_dir {model_dir!r} does not exist. Pass --model_dir=<the "
            f"folder anogan-train wrote>.")
    config = load_model_config(model_dir)
    generator = _load(os.path.join(model_dir, GENERATOR_FILE), Generator)
    discriminator = _load(os.path.join(model_dir, DISCRIMINATOR_FILE),
                          Discriminator)
    if (generator.image_size, generator.channels, generator.latent_dim) != (
            config.image_size, config.channels, config.latent_dim):
        raise ConfigError(
            f"{model_dir}: generator.keras ({generator.image_size}px, "
            f"{generator.channels} channels, latent {generator.latent_dim}) does "
            f"not match config.json ({config.image_size}px, {config.channels} "
            f"channels, latent {config.latent_dim}).")
    return config, generator, discriminator
