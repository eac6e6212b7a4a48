"""Latent mapping (z* = argmin L(z)) and the AnoGAN anomaly score."""

from anogan_tf.mapping.latent import (MappingParams, OUTPUT_KEYS, initial_latents,
                                      map_latents)
from anogan_tf.mapping.mapper import LatentMapper, MappingResult

__all__ = ["MappingParams", "OUTPUT_KEYS", "initial_latents",
           "map_latents", "LatentMapper", "MappingResult"]
