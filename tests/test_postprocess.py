"""Post-processing: watershed separates touching cells, filters behave, bad params are named."""
from __future__ import annotations

import numpy as np
import pytest
from skimage.segmentation import find_boundaries

from kseg.errors import ConfigError, DataError
from kseg.metric import image_score
from kseg.postprocess import (
    fill_enclosed_holes,
    instance_candidates,
    instances_from_probs,
    predict_class,
    remove_small,
    validate_params,
)

PARAMS = {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 0, "fill_holes": True}


def disc_labels(shape: tuple[int, int], centres: list[tuple[int, int]], radius: float) -> np.ndarray:
    """Label image of discs; where two discs would share a pixel the earlier disc keeps it."""
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    labels = np.zeros(shape, np.int32)
    for label, (row, col) in enumerate(centres, start=1):
        inside = (rows - row) ** 2 + (cols - col) ** 2 < radius**2
        labels[inside & (labels == 0)] = label
    return labels


def probs_of(labels: np.ndarray) -> np.ndarray:
    """Perfect foreground/border channels of a label image (border = every instance contour)."""
    foreground = (labels > 0).astype(np.float32)
    border = find_boundaries(labels, mode="inner").astype(np.float32)
    return np.stack([foreground, border], axis=-1)


@pytest.fixture
def touching_discs() -> np.ndarray:
    # Centres 24 px apart with radius 13: each disc shares a straight contact line with its two neighbours.
    return disc_labels((96, 96), [(36, 36), (36, 60), (60, 36), (60, 60)], 13)


def assert_valid_labels(labels: np.ndarray) -> None:
    assert labels.dtype == np.int32
    present = np.unique(labels[labels > 0])
    assert present.tolist() == list(range(1, present.size + 1))


def test_without_a_border_channel_touching_discs_merge(touching_discs: np.ndarray) -> None:
    no_border = probs_of(touching_discs)
    no_border[..., 1] = 0.0
    assert instance_candidates(no_border, 0.5, 0.5, fill_holes=False).max() == 1


def test_watershed_separates_touching_discs(touching_discs: np.ndarray) -> None:
    labels = instances_from_probs(probs_of(touching_discs), PARAMS)
    assert labels.max() == 4
    assert_valid_labels(labels)
    assert image_score(touching_discs, labels) > 0.9


def test_noisy_probabilities_still_give_valid_separated_instances(touching_discs: np.ndarray) -> None:
    rng = np.random.default_rng(0)
    noisy = np.clip(probs_of(touching_discs) + rng.normal(0, 0.1, (96, 96, 2)), 0, 1).astype(np.float32)
    labels = instances_from_probs(noisy, {**PARAMS, "min_area": 30})
    assert_valid_labels(labels)
    assert labels.max() == 4
    assert image_score(touching_discs, labels) > 0.8


def test_unseeded_foreground_is_kept_as_its_own_instance() -> None:
    labels = disc_labels((64, 64), [(20, 20), (45, 45)], 8)
    probs = probs_of(labels)
    # The second cell is faint: foreground 0.6, so its energy never reaches the seed threshold 0.7.
    probs[..., 0][labels == 2] = 0.6
    probs[..., 1][labels == 2] = 0.0
    result = instances_from_probs(probs, {**PARAMS, "seed_threshold": 0.7})
    assert result.max() == 2
    assert image_score(labels, result) > 0.9


def test_min_area_removes_small_blobs_and_relabels_consecutively() -> None:
    labels = disc_labels((80, 80), [(20, 20), (60, 60), (20, 62)], 10)
    labels[labels == 3] = 0
    labels[18:21, 60:63] = 3  # a 9-pixel speck between two real cells
    probs = probs_of(labels)
    kept_all = instances_from_probs(probs, {**PARAMS, "min_area": 0})
    filtered = instances_from_probs(probs, {**PARAMS, "min_area": 10})
    assert kept_all.max() == 3
    assert filtered.max() == 2
    assert_valid_labels(filtered)
    assert not filtered[18:21, 60:63].any()


def test_remove_small_keeps_order_and_accepts_precomputed_areas() -> None:
    labels = np.array([[1, 1, 0, 3], [2, 0, 0, 3], [5, 5, 5, 3]], np.int32)
    expected = np.array([[1, 1, 0, 2], [0, 0, 0, 2], [3, 3, 3, 2]], np.int32)
    assert np.array_equal(remove_small(labels, 2), expected)
    assert np.array_equal(remove_small(labels, 2, np.bincount(labels.ravel())), expected)
    assert not remove_small(labels, 4).any()


def test_fill_holes_fills_only_regions_enclosed_by_one_instance() -> None:
    labels = np.zeros((12, 20), np.int32)
    labels[1:8, 1:8] = 1
    labels[3:5, 3:5] = 0  # hole inside instance 1
    labels[1:8, 10:17] = 2
    labels[3:6, 13:15] = 3  # instance 3 nested inside instance 2
    labels[3:6, 12] = 0  # background between 2 and 3: enclosed, but by two instances
    filled = fill_enclosed_holes(labels)
    assert (filled[3:5, 3:5] == 1).all()
    assert (filled[3:6, 12] == 0).all()
    assert (filled[3:6, 13:15] == 3).all()
    assert (filled[9:] == 0).all()
    probs = probs_of(labels)
    assert (instances_from_probs(probs, {**PARAMS, "fill_holes": False})[3:5, 3:5] == 0).all()


def test_binary_task_thresholds_and_drops_small_components() -> None:
    foreground = np.zeros((40, 40), np.float32)
    foreground[5:20, 5:20] = 0.9
    foreground[30:32, 30:32] = 0.8  # 4-pixel speck
    foreground[25, 5] = 0.4  # below the threshold
    params = {"fg_threshold": 0.5, "min_area": 5}
    mask = instances_from_probs(foreground[..., None], params, task="binary")
    assert mask.dtype == np.int32 and set(np.unique(mask)) == {0, 1}
    assert mask.sum() == 15 * 15
    assert instances_from_probs(foreground[..., None], {**params, "min_area": 0}, task="binary").sum() == 15 * 15 + 4


def test_binary_empty_area_predicts_an_empty_image_below_its_size() -> None:
    """TGS/SIIM's empty-image rule: a mask covering fewer than empty_area pixels (after min_area) is no mask."""
    foreground = np.zeros((40, 40), np.float32)
    foreground[5:10, 5:10] = 0.9  # 25 px
    foreground[30:32, 30:32] = 0.8  # 4 px
    params = {"fg_threshold": 0.5, "min_area": 0}
    assert instances_from_probs(foreground[..., None], {**params, "empty_area": 29}, "binary").sum() == 29
    assert instances_from_probs(foreground[..., None], {**params, "empty_area": 30}, "binary").sum() == 0
    # min_area first: the speck is gone, so 25 px remain, under 26
    assert instances_from_probs(foreground[..., None], {"fg_threshold": 0.5, "min_area": 5, "empty_area": 26},
                                "binary").sum() == 0
    with pytest.raises(ConfigError, match="empty_area"):
        validate_params({**params, "empty_area": -1}, "binary")


def test_uint8_input_equals_float_input(touching_discs: np.ndarray) -> None:
    rng = np.random.default_rng(1)
    probs_uint8 = np.clip(probs_of(touching_discs) * 255 + rng.normal(0, 30, (96, 96, 2)), 0, 255).astype(np.uint8)
    from_uint8 = instances_from_probs(probs_uint8, PARAMS)
    from_float = instances_from_probs(probs_uint8.astype(np.float32) / 255.0, PARAMS)
    assert np.array_equal(from_uint8, from_float)


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"seed_threshold": 0.5, "min_area": 0, "fill_holes": True}, "fg_threshold"),
        ({**PARAMS, "fg_treshold": 0.5}, "fg_treshold"),
        ({**PARAMS, "fg_threshold": 1.5}, "fg_threshold"),
        ({**PARAMS, "seed_threshold": "high"}, "seed_threshold"),
        ({**PARAMS, "min_area": -1}, "min_area"),
        ({**PARAMS, "min_area": 2.5}, "min_area"),
        ({**PARAMS, "fill_holes": "yes"}, "fill_holes"),
    ],
)
def test_bad_params_raise_config_error_naming_the_key(params: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        instances_from_probs(np.zeros((8, 8, 2), np.float32), params)


def test_binary_params_need_no_seed_threshold_but_instance_params_do() -> None:
    assert validate_params({"fg_threshold": 0.5, "min_area": 3}, "binary") == {"fg_threshold": 0.5, "min_area": 3,
                                                                                "empty_area": 0}
    with pytest.raises(ConfigError, match="seed_threshold"):
        validate_params({"fg_threshold": 0.5, "min_area": 3, "fill_holes": False}, "instance")
    with pytest.raises(ConfigError, match="task"):
        validate_params(PARAMS, "panoptic")


@pytest.mark.parametrize(
    ("probs", "message"),
    [
        (np.zeros((8, 8), np.float32), "shape"),
        (np.zeros((8, 8, 1), np.float32), "at least 2"),
        (np.full((8, 8, 2), 2.0, np.float32), r"\[0, 1\]"),
        (np.full((8, 8, 2), np.nan, np.float32), r"\[0, 1\]"),
        (np.zeros((8, 8, 2), np.int64), "dtype"),
    ],
)
def test_bad_probabilities_raise_data_error(probs: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        instances_from_probs(probs, PARAMS)


def test_predict_class_votes_inside_the_foreground() -> None:
    probs = np.zeros((10, 10, 5), np.float32)
    probs[:3, :3, 0] = 1.0  # small foreground that says class "b"
    probs[:3, :3, 3] = 0.9
    probs[5:, 5:, 2] = 1.0  # large background area voting "a" must be ignored
    assert predict_class(probs, ["a", "b", "c"]) == "b"
    assert predict_class(probs, []) is None
    no_foreground = probs.copy()
    no_foreground[..., 0] = 0
    assert predict_class(no_foreground, ["a", "b", "c"]) == "a"
    with pytest.raises(DataError, match="class channels"):
        predict_class(probs[..., :2], ["a", "b", "c"])
