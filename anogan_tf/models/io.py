"""Loading a trained model dir (config.json + generator.keras + discriminator.keras)."""

from __future__ import annotations

import os
from typing import Optional, Tuple

import keras

from anogan_tf.config import ConfigError, ModelConfig, load_model_config
from anogan_tf.models.dcgan import Discriminator, Generator

__all__ = ["load_model_dir", "load_keras_file", "load_encoder",
           "GENERATOR_FILE", "DISCRIMINATOR_FILE", "ENCODER_FILE"]

GENERATOR_FILE = "generator.keras"
DISCRIMINATOR_FILE = "discriminator.keras"
ENCODER_FILE = "encoder.keras"


def load_keras_file(path: str, model_dir: str, kind: Optional[type] = None):
    """Loads one `.keras` file of a model dir, with errors that say the fix.

    Raises:
      ConfigError: the file is missing, unreadable, or not of class `kind`.
    """
    if not os.path.isfile(path):
        raise ConfigError(
            f"No {os.path.basename(path)} in model_dir {model_dir!r} (looked "
            f"for {path}). Pass the folder that `anogan-train --model_dir=...` "
            f"wrote after training finished, or train a model first.")
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as e:  # keras raises many types for a damaged archive
        raise ConfigError(
            f"Could not load {path}: {type(e).__name__}: {e}. The file is "
            f"corrupt or from another anogan_tf version; re-run anogan-train "
            f"with --model_dir={model_dir} to rewrite it.") from e
    if kind is not None and not isinstance(model, kind):
        raise ConfigError(f"{path} holds a {type(model).__name__}, expected a "
                          f"{kind.__name__}.")
    return model


def load_encoder(model_dir: str):
    """The encoder of a model dir, or None when none was trained."""
    path = os.path.join(model_dir, ENCODER_FILE)
    return load_keras_file(path, model_dir) if os.path.isfile(path) else None


def load_model_dir(model_dir: str) -> Tuple[ModelConfig, Generator, Discriminator]:
    """Loads (config, G, D) from a model dir written by anogan-train.

    Raises:
      ConfigError: the dir, config.json or a model file is missing, damaged or
        inconsistent with config.json; the message says how to fix it.
    """
    if not model_dir or not os.path.isdir(model_dir):
        raise ConfigError(
            f"model_dir {model_dir!r} does not exist. Pass the folder that "
            f"`anogan-train --model_dir=...` wrote.")
    config = load_model_config(model_dir)
    generator = load_keras_file(os.path.join(model_dir, GENERATOR_FILE),
                                model_dir, Generator)
    discriminator = load_keras_file(
        os.path.join(model_dir, DISCRIMINATOR_FILE), model_dir, Discriminator)
    if (generator.image_size, generator.channels, generator.latent_dim) != (
            config.image_size, config.channels, config.latent_dim):
        raise ConfigError(
            f"{model_dir}: generator.keras ({generator.image_size}px, "
            f"{generator.channels} channels, latent {generator.latent_dim}) does "
            f"not match config.json ({config.image_size}px, {config.channels} "
            f"channels, latent {config.latent_dim}).")
    return config, generator, discriminator
