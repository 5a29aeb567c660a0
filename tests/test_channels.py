"""model.extra_channels (kseg.channels): every registered channel, tested over the registry as albumentations
tests its transforms, keeps the input three uint8 channels of the image's size; the input normaliser that
training, OOF, prediction and the kernels share applies them; bad names are one ConfigError before any stage runs."""
from __future__ import annotations

import numpy as np
import pytest

from kseg.channels import EXTRA_CHANNELS, MAX_EXTRA_CHANNELS, gray, with_extra_channels
from kseg.config import load_config
from kseg.errors import ConfigError
from kseg.normalize import input_normaliser, normalise_image


def _cells(shape: tuple[int, int] = (40, 48), seed: int = 0) -> np.ndarray:
    """A noisy gray image with bright discs, stored as three equal channels (as microscopy PNGs are)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    level = 40 + 150 * (((y - 12) ** 2 + (x - 14) ** 2 < 60) | ((y - 28) ** 2 + (x - 34) ** 2 < 40))
    level = np.clip(level + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)
    return np.repeat(level[..., None], 3, axis=-1)


@pytest.mark.parametrize("name", sorted(EXTRA_CHANNELS))
@pytest.mark.parametrize("kind", ["cells", "flat", "two_levels"])
def test_every_channel_is_uint8_of_the_image_size(name: str, kind: str) -> None:
    image = {"cells": _cells(), "flat": np.full((9, 7, 3), 77, np.uint8),
             "two_levels": np.repeat(np.array([[0, 200] * 4] * 6, np.uint8)[..., None], 3, -1)}[kind]
    layer = EXTRA_CHANNELS[name](gray(image))
    assert layer.dtype == np.uint8 and layer.shape == image.shape[:2]
    stacked = with_extra_channels(image, [name])
    assert stacked.shape == image.shape and stacked.dtype == np.uint8
    assert np.array_equal(stacked[..., 0], gray(image)) and np.array_equal(stacked[..., 2], gray(image))
    assert np.array_equal(stacked[..., 1], layer)


def test_channels_say_what_they_compute() -> None:
    level = gray(_cells())
    assert np.abs(EXTRA_CHANNELS["median"](level).astype(int) - 40).mean() < np.abs(level.astype(int) - 40).mean()
    assert set(np.unique(EXTRA_CHANNELS["yen"](level))) == {0, 255}
    assert set(np.unique(EXTRA_CHANNELS["multi_otsu"](level))) <= {0, 128, 255}
    bright = EXTRA_CHANNELS["yen"](level) > 0
    assert level[bright].mean() > level[~bright].mean() + 100  # the discs, not the noise


def test_no_extras_is_the_image_and_two_fill_the_input() -> None:
    image = _cells()
    assert with_extra_channels(image, []) is image
    both = with_extra_channels(image, ["median", "yen"])
    assert np.array_equal(both[..., 1], EXTRA_CHANNELS["median"](gray(image)))
    assert np.array_equal(both[..., 2], EXTRA_CHANNELS["yen"](gray(image)))


def test_the_shared_input_normaliser_applies_them_after_normalisation() -> None:
    """The one image → image function of training's cache, OOF, prediction and the kernels."""
    image = _cells()
    cfg = load_config(None, ["model.extra_channels=[multi_otsu]", "model.input_norm=percentile", "model.invert=false"])
    expected = with_extra_channels(normalise_image(image, "percentile", False), ["multi_otsu"])
    assert np.array_equal(input_normaliser(cfg)(image), expected)
    plain = load_config(None, ["model.input_norm=percentile", "model.invert=false"])
    assert np.array_equal(input_normaliser(plain)(image), normalise_image(image, "percentile", False))


@pytest.mark.parametrize(("value", "message"), [
    ("[sobel]", "model.extra_channels: unknown channel 'sobel'; known: median, nlmeans, multi_otsu, yen"),
    ("median", "model.extra_channels must be a list of strings, got 'median'"),
    ("[median, yen, multi_otsu]", f"takes at most {MAX_EXTRA_CHANNELS} distinct names"),
    ("[yen, yen]", f"takes at most {MAX_EXTRA_CHANNELS} distinct names"),
])
def test_bad_extra_channels_fail_before_any_stage(tmp_path, value: str, message: str) -> None:
    from kseg.pipeline import check_config

    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):  # at load or before a stage
        check_config(load_config(None, [f"data.root={tmp_path}", "data.schema.preset=sartorius",
                                        f"model.extra_channels={value}"]))
