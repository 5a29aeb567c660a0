"""Per-image input normalisation: what training caches is exactly what prediction feeds the model."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from kseg.config import load_config
from kseg.errors import ConfigError, DataError
from kseg.normalize import fit_polarity, input_normaliser, normalise_image, stretched
from kseg.plan import Plan, fingerprint, read_plan, write_plan


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


@pytest.mark.parametrize("norm", ["percentile", "standardize"])
def test_image_scope_keeps_the_colour_balance(norm):
    """``input_norm_scope: image``: one stretch for all channels, so a reddish photograph stays reddish (the
    channel scope stretches each channel to the full range and turns it grey); a gray image is the same either way."""
    image = np.concatenate([gradient(60, 200, 1), gradient(20, 90, 1), gradient(10, 60, 1)], axis=2)
    joint, separate = normalise_image(image, norm, scope="image"), normalise_image(image, norm)
    means = joint.reshape(-1, 3).mean(axis=0)
    assert means[0] > means[1] + 40 > means[2] + 40
    assert np.ptp(separate.reshape(-1, 3).mean(axis=0)) < np.ptp(means) / 3
    gray = gradient(30, 120)
    assert np.array_equal(normalise_image(gray, norm, scope="image"), normalise_image(gray, norm))
    assert np.array_equal(input_normaliser(load_config(None, [f"model.input_norm={norm}", "model.invert=false",
                                                               "model.input_norm_scope=image"]))(image), joint)


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


def nuclei(dark_on_bright: bool, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A gray fluorescence-like image (bright nuclei on black) or a pink H&E-like one (purple nuclei on a
    bright, coloured ground), and its labels."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((size, size), np.uint16)
    for k in range(1, 6):
        y, x = rng.integers(8, size - 8, 2)
        labels[y - 4:y + 4, x - 4:x + 4] = k
    inside = labels > 0
    if dark_on_bright:
        image = np.empty((size, size, 3), np.float64)
        image[:] = (235, 190, 215)
        image[inside] = (90, 40, 130)
    else:
        image = np.where(inside[..., None], 200.0, 15.0).repeat(3, axis=2)
    image += rng.normal(0, 6, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels


def samples(kinds: list[bool], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(stretched(image, "percentile"), labels)
            for image, labels in (nuclei(kind, seed + i) for i, kind in enumerate(kinds))]


def test_one_polarity_inverts_nothing():
    for kinds in ([False] * 6, [True] * 6, [True] * 19 + [False]):  # 95 % agree: one polarity
        polarity = fit_polarity(samples(kinds))
        assert polarity.mode == "none" and "one polarity" in polarity.reason


def test_mixed_polarity_learns_which_images_to_invert():
    polarity = fit_polarity(samples([False] * 8 + [True] * 4))
    assert polarity.mode == "rule" and "4 of 12" in polarity.reason
    for seed in (100, 101):  # unseen images of each kind: objects come out bright in both
        for dark_on_bright in (False, True):
            image, labels = nuclei(dark_on_bright, seed)
            out = normalise_image(image, "percentile", polarity).mean(axis=2)
            assert out[labels > 0].mean() > out[labels == 0].mean() + 100


def test_polarity_the_features_cannot_tell_apart_inverts_nothing():
    image, labels = nuclei(False, 0)
    flipped = stretched(image, "percentile")
    # the same picture labelled as bright objects and as dark ground: no rule can separate them
    pairs = [(flipped, labels), (flipped, (labels == 0).astype(np.uint16))] * 3
    polarity = fit_polarity(pairs)
    assert polarity.mode == "none" and "do not tell them apart" in polarity.reason


def test_images_without_contrast_or_objects_invert_nothing():
    flat = np.full((16, 16, 3), 0.5, np.float32)
    empty = np.zeros((16, 16), np.uint16)
    some = empty.copy()
    some[4:8, 4:8] = 1
    polarity = fit_polarity([(flat, empty), (flat, some)])
    assert polarity.mode == "none" and "no training image" in polarity.reason


def test_invert_true_false_and_auto_without_a_rule():
    bright_ground = np.full((50, 50, 3), 220, np.uint8)
    bright_ground[20:30, 20:30] = 30
    assert normalise_image(bright_ground, "percentile", True)[0, 0, 0] == 0
    assert normalise_image(bright_ground, "percentile", False)[0, 0, 0] == 255
    # a run from before polarity rules has none in plan.json: auto then inverts nothing
    normalise = input_normaliser(load_config(None, ["model.invert=auto"]))
    assert normalise(bright_ground)[0, 0, 0] == 255


def test_polarity_round_trips_through_plan_json(tmp_path):
    polarity = fit_polarity(samples([False] * 8 + [True] * 4))
    fp = fingerprint([labels for _, labels in samples([False])], [None])
    write_plan(tmp_path, fp, Plan(scale=1.0, reason="test", invert=polarity))
    assert read_plan(tmp_path).invert == polarity


@pytest.mark.parametrize("invert, words", [
    ({"mode": "sometimes"}, "polarity mode 'sometimes'"),
    ({"mode": "rule", "weights": [1.0], "mean": [0.0], "scale": [1.0]}, "3 weights"),
    ({"mode": "rule", "weights": ["x", 1, 1]}, "not a polarity rule"),
    ("none", "not a polarity rule"),
])
def test_bad_polarity_in_plan_json(tmp_path, invert, words):
    (tmp_path / "plan.json").write_text(json.dumps({"plan": {"scale": 1.0, "invert": invert}}))
    with pytest.raises(DataError, match=words) as error:
        read_plan(tmp_path)
    assert "plan.json" in str(error.value)


@pytest.mark.parametrize("override, words", [
    ("model.input_norm=zscore", "model.input_norm must be one of none, percentile, standardize"),
    ("model.invert=sometimes", "model.invert must be true, false or auto"),
    ("model.input_norm_scope=pixel", "model.input_norm_scope must be one of channel, image, got 'pixel'"),
])
def test_bad_normalisation_config(override, words):
    with pytest.raises(ConfigError, match=words):
        input_normaliser(load_config(None, [override]))


def test_normalisation_needs_no_tensorflow():
    code = "import sys, kseg.normalize; assert 'tensorflow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
