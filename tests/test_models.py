"""DCGAN shapes, feature layers, spectral norm and .keras round trips."""

import keras
import numpy as np
import pytest

from anogan_tf.config import ConfigError, ModelConfig
from anogan_tf.models import build_models


@pytest.mark.parametrize("size,channels", [(32, 1), (64, 3), (128, 1)])
def test_output_shapes(size, channels):
    cfg = ModelConfig(image_size=size, channels=channels, latent_dim=8,
                      base_filters=4)
    g, d = build_models(cfg)
    z = np.random.default_rng(0).uniform(-1, 1, (2, 8)).astype(np.float32)
    x = g(z)
    assert x.shape == (2, size, size, channels)
    assert float(np.max(np.abs(x))) <= 1.0  # tanh output
    logits, f = d.logits_and_features(x)
    assert logits.shape == (2, 1)
    # Last conv block: s/16 spatial, 8 * base_filters channels.
    assert f.shape == (2, size // 16, size // 16, 32)


def test_generator_widths_follow_the_paper():
    g, d = build_models(ModelConfig(image_size=64, base_filters=64, latent_dim=100))
    widths = [l.filters for l in g.deconvs]
    assert widths == [256, 128, 64]
    assert g.project.units == 4 * 4 * 512
    assert [c.filters for c in d.convs] == [64, 128, 256, 512]


@pytest.mark.parametrize("layer,shape", [(1, (16, 16, 4)), (2, (8, 8, 8)),
                                         (3, (4, 4, 16)), (4, (2, 2, 32))])
def test_feature_layer_is_selectable(layer, shape):
    _, d = build_models(ModelConfig(image_size=32, base_filters=4, latent_dim=8,
                                    feature_layer=layer))
    f = d.features(np.zeros((3, 32, 32, 1), np.float32))
    assert f.shape == (3,) + shape


def test_spectral_norm_and_round_trip(tmp_path):
    cfg = ModelConfig(image_size=32, base_filters=4, latent_dim=8,
                      spectral_norm=True)
    g, d = build_models(cfg)
    assert any(isinstance(c, keras.layers.SpectralNormalization) for c in d.convs)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 1)).astype(np.float32)
    z = np.random.default_rng(2).uniform(-1, 1, (2, 8)).astype(np.float32)
    g.save(tmp_path / "g.keras")
    d.save(tmp_path / "d.keras")
    g2 = keras.saving.load_model(tmp_path / "g.keras")
    d2 = keras.saving.load_model(tmp_path / "d.keras")
    np.testing.assert_array_equal(g2(z), g(z))
    for a, b in zip(d2.logits_and_features(x), d.logits_and_features(x)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kwargs,phrase", [
    ({"image_size": 40}, "multiple of 16"),
    ({"channels": 2}, "channels must be 1"),
    ({"feature_layer": 5}, "feature_layer"),
    ({"prior": "laplace"}, "prior"),
])
def test_bad_model_config(kwargs, phrase):
    with pytest.raises(ConfigError, match=phrase):
        ModelConfig(**kwargs)
