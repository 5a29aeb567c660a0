"""Per-image input normalisation: what training caches is exactly what prediction feeds the model."""
from __future__ import annotations

import sys
import subprocess

import numpy as np
import pytest

from kseg.config import load_config
from kseg.errors import ConfigError
from kseg.normalize import input_normaliser, normalise_image


def gradient(low: int, high: int, channels: int = 3) -> np.ndarray:
    row = np.linspace(low, high, 200).round().astype(np.uint8)
    return np.repeat(np.tile(row, (20, 1))[..., None], channels, axis=2)


def test_percentile_stretches_each_image_to_the_full_range():
    dim, bright = normalise_image(gradient(10, 40), "percentile"), normalise_image(gradient(100, 250), "percentile")
    for image in (dim, bright):
        assert image.dtype == np.uint8 and image.min() == 0 and image.max() == 255
    # two exposures of the same scene look the same after normalisation
    assert np.abs(dim.astype(int) - bright.astype(int)).max() <= 8


def test_percentile_is_per_channel():
    image = np.concatenate([gradient(0, 50, 1), gradient(100, 200, 1), gradient(5, 6, 1)], axis=2)
    out = normalise_image(image, "percentile")
    assert out[..., 0].max() == 255 and out[..., 1].max() == 255 and out[..., 1].min() == 0


def test_flat_image_does_not_divide_by_zero():
    assert not normalise_image(np.full((4, 4, 3), 77, np.uint8), "percentile").any()
    assert not normalise_image(np.full((4, 4, 3), 77, np.uint8), "standardize").any()


def test_standardize_maps_three_sigmas_to_the_range():
    out = normalise_image(gradient(0, 255), "standardize")
    # a uniform ramp spans +-1.7 sigma: inside the +-3 sigma window, centred
    assert 40 < out.min() < 70 and 185 < out.max() < 215 and abs(float(out.mean()) - 127.5) < 2


def test_none_without_inversion_is_the_identity():
    image = gradient(3, 90)
    assert normalise_image(image, "none") is image


def test_invert_auto_turns_dark_on_bright_images_only():
    bright_ground = np.full((50, 50, 3), 220, np.uint8)
    bright_ground[20:30, 20:30] = 30  # a dark nucleus on a bright (H&E, brightfield) ground
    dark_ground = 255 - bright_ground
    inverted = normalise_image(bright_ground, "percentile", "auto")
    assert inverted[25, 25, 0] == 255 and inverted[0, 0, 0] == 0
    np.testing.assert_array_equal(normalise_image(dark_ground, "percentile", "auto"), inverted)
    assert normalise_image(bright_ground, "percentile", True)[0, 0, 0] == 0
    assert normalise_image(bright_ground, "percentile", False)[0, 0, 0] == 255


@pytest.mark.parametrize("override, words", [
    ("model.input_norm=zscore", "model.input_norm must be one of none, percentile, standardize"),
    ("model.invert=sometimes", "model.invert must be true, false or auto"),
])
def test_bad_normalisation_config(override, words):
    with pytest.raises(ConfigError, match=words):
        input_normaliser(load_config(None, [override]))


def test_normalisation_needs_no_tensorflow():
    code = "import sys, kseg.normalize; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
