"""Targets: channel layout, the border between touching instances, class channels, bad input."""
import numpy as np
import pytest
from scipy import ndimage

from kseg.errors import ConfigError, DataError
from kseg.targets import channel_names, make_targets


def touching_discs() -> np.ndarray:
    """Two discs of radius 10 whose centres are 20 px apart, so they meet along a vertical line."""
    rows, cols = np.mgrid[:40, :60]
    labels = np.zeros((40, 60), np.int32)
    labels[(rows - 20) ** 2 + (cols - 19) ** 2 <= 100] = 1
    labels[((rows - 20) ** 2 + (cols - 40) ** 2 <= 100) & (labels == 0)] = 2
    return labels


def test_channel_names():
    assert channel_names("instance", []) == ["foreground", "border"]
    assert channel_names("instance", ["astro", "shsy5y"]) == ["foreground", "border", "class:astro", "class:shsy5y"]
    assert channel_names("binary", ["astro"]) == ["foreground"]


def test_touching_discs_get_a_border_between_them():
    labels = touching_discs()
    assert labels[20, 29] == 1 and labels[20, 30] == 2  # they touch on row 20
    targets = make_targets(labels, "instance", None, 0, border_width=2)
    assert targets.shape == (40, 60, 2) and targets.dtype == np.float32
    foreground, border = targets[..., 0], targets[..., 1]
    np.testing.assert_array_equal(foreground, labels > 0)
    # Within 2 px of the other disc on both sides of the contact line, but not deeper inside.
    assert border[20, 28:32].tolist() == [1, 1, 1, 1]
    assert border[20, 26] == 0 and border[20, 33] == 0
    assert border[20, 19] == 0 and border[20, 40] == 0  # centres are seeds
    assert np.all(foreground[border > 0] == 1)  # border is a subset of the foreground
    # Removing the border splits the pair into two separate seeds.
    _, n_seeds = ndimage.label((foreground - border) > 0)
    assert n_seeds == 2


def test_border_width_sets_touching_zone_exactly():
    labels = np.zeros((20, 30), np.int32)
    labels[5:16, 5:16] = 1
    labels[5:16, 16:27] = 2
    border = make_targets(labels, "instance", None, 0, border_width=2)[..., 1]
    # Row 10 is inside both squares: contour columns 5 and 26, touching zone 14..17.
    assert np.flatnonzero(border[10]).tolist() == [5, 14, 15, 16, 17, 26]
    border_zero = make_targets(labels, "instance", None, 0, border_width=0)[..., 1]
    assert np.flatnonzero(border_zero[10]).tolist() == [5, 15, 16, 26]  # contours only


def test_isolated_instance_border_is_its_contour():
    labels = np.zeros((20, 20), np.uint16)
    labels[5:15, 5:15] = 7
    border = make_targets(labels, "instance", None, 0, border_width=3)[..., 1]
    ring = np.zeros((20, 20), bool)
    ring[5:15, 5:15] = True
    ring[6:14, 6:14] = False
    np.testing.assert_array_equal(border > 0, ring)


def test_class_channel_is_the_foreground_of_the_image_class():
    labels = touching_discs()
    targets = make_targets(labels, "instance", 1, 3, border_width=2)
    assert targets.shape == (40, 60, 5)
    np.testing.assert_array_equal(targets[..., 3], labels > 0)
    assert targets[..., 2].sum() == 0 and targets[..., 4].sum() == 0
    assert make_targets(labels, "instance", None, 3, border_width=2)[..., 2:].sum() == 0


def test_binary_task_has_one_channel():
    labels = (touching_discs() > 0).astype(np.uint8)
    targets = make_targets(labels, "binary", None, 0, border_width=2)
    assert targets.shape == (40, 60, 1)
    np.testing.assert_array_equal(targets[..., 0], labels)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"task": "semantic"}, ConfigError, "semantic"),
    ({"border_width": -1}, ConfigError, "border_width"),
    ({"cls_index": 3, "n_classes": 3}, DataError, "class index 3"),
])
def test_bad_arguments(kwargs, error, words):
    call = {"labels": touching_discs(), "task": "instance", "cls_index": None, "n_classes": 0, "border_width": 2}
    call.update(kwargs)
    with pytest.raises(error, match=words):
        make_targets(**call)


def test_label_image_must_be_2d():
    with pytest.raises(DataError, match="2-D"):
        make_targets(np.zeros((4, 4, 3), np.int32), "instance", None, 0, 2)
