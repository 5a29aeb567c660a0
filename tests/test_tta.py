"""TTA: views invert exactly, merged predictions come back at the original size, bad names are named."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kseg.errors import ConfigError, DataError
from kseg.tta import VIEWS, apply_view, invert_view, mean_of, pad_to_multiple, predict_each, predict_ensemble, predict_image


def first_channel(batch: np.ndarray) -> np.ndarray:
    """An 'identity model': its prediction is the input's first channel."""
    return batch[..., :1].astype(np.float32)


def local_mean(batch: np.ndarray) -> np.ndarray:
    """A fake model equivariant to flips, rotations and transposes: a symmetric 3x3 box mean per image."""
    padded = np.pad(batch, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    height, width = batch.shape[1:3]
    windows = [padded[:, dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.mean(windows, axis=0).astype(np.float32)


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 12).map(lambda n: 2 * n + 1),
    width=st.integers(1, 12).map(lambda n: 2 * n + 1),
    view=st.sampled_from(VIEWS),
    seed=st.integers(0, 2**16),
)
def test_every_view_is_undone_by_its_inverse(height: int, width: int, view: str, seed: int) -> None:
    batch = np.random.default_rng(seed).random((2, height, width, 3))
    viewed = apply_view(view, batch)
    if view in ("rot90", "rot270", "transpose"):
        assert viewed.shape == (2, width, height, 3)
    assert np.array_equal(invert_view(view, viewed), batch)


def test_views_are_distinct_transformations() -> None:
    batch = np.arange(2 * 3 * 3).reshape(1, 3, 3, 2)
    flattened = {apply_view(view, batch).tobytes() for view in VIEWS if view != "hvflip"}
    assert len(flattened) == len(VIEWS) - 1  # hvflip is rot180 by definition; every other view differs
    assert np.array_equal(apply_view("hvflip", batch), apply_view("rot180", batch))


@pytest.mark.parametrize("views", [("identity",), VIEWS, ("rot90", "hflip"), ("transpose",), ("rot270", "vflip", "hvflip")])
def test_identity_model_returns_the_image_channel_at_original_size(views: tuple[str, ...]) -> None:
    image = np.random.default_rng(0).random((37, 53, 3)).astype(np.float32)
    probs = predict_image(first_channel, image, views)
    assert probs.shape == (37, 53, 1) and probs.dtype == np.float32
    np.testing.assert_allclose(probs[..., 0], image[..., 0], rtol=1e-6)


def test_views_with_the_same_shape_go_through_the_model_as_one_batch() -> None:
    batch_sizes: list[int] = []

    def counting(batch: np.ndarray) -> np.ndarray:
        batch_sizes.append(batch.shape[0])
        return first_channel(batch)

    image = np.zeros((40, 70, 3), np.float32)  # pads to 64x96: not square, rotations form a second batch
    predict_image(counting, image, VIEWS)
    assert sorted(batch_sizes) == [3, 5]
    batch_sizes.clear()
    predict_image(counting, np.zeros((64, 64, 3), np.float32), VIEWS)
    assert batch_sizes == [8]


def test_equivariant_model_gives_the_same_result_with_and_without_tta() -> None:
    image = np.random.default_rng(1).random((64, 96, 2)).astype(np.float32)
    plain = predict_image(local_mean, image, ["identity"])
    augmented = predict_image(local_mean, image, VIEWS)
    np.testing.assert_allclose(augmented, plain, atol=1e-6)


def test_geometric_mean_merge() -> None:
    def view_dependent(batch: np.ndarray) -> np.ndarray:
        # Image 0 of the batch predicts 0.8 everywhere, image 1 predicts 0.2.
        return np.where(np.arange(batch.shape[0])[:, None, None, None] == 0, 0.8, 0.2) * np.ones_like(batch[..., :1])

    image = np.zeros((32, 32, 3), np.float32)
    np.testing.assert_allclose(predict_image(view_dependent, image, ["identity", "hflip"], merge="gmean"), 0.4, rtol=1e-5)
    np.testing.assert_allclose(predict_image(view_dependent, image, ["identity", "hflip"], merge="mean"), 0.5, rtol=1e-5)


def test_ensemble_averages_the_models() -> None:
    image = np.random.default_rng(2).random((30, 40, 3)).astype(np.float32)

    def half(batch: np.ndarray) -> np.ndarray:
        return first_channel(batch) / 2

    probs = predict_ensemble([first_channel, half], image, ["identity", "vflip"])
    np.testing.assert_allclose(probs[..., 0], 0.75 * image[..., 0], rtol=1e-5)
    with pytest.raises(ConfigError, match="at least one model"):
        predict_ensemble([], image, ["identity"])
    each = predict_each([first_channel, half], image, ["identity", "vflip"])
    np.testing.assert_allclose(each[1], each[0] / 2, rtol=1e-6)
    np.testing.assert_array_equal(mean_of(each), probs)  # bit for bit: fold scores see the submission's ensemble


def test_tiled_prediction_matches_whole_image_prediction() -> None:
    image = np.random.default_rng(3).random((150, 200, 3)).astype(np.float32)
    tiled = predict_image(first_channel, image, ["identity", "rot90"], tile=64)
    np.testing.assert_allclose(tiled[..., 0], image[..., 0], rtol=1e-5)
    calls: list[tuple[int, ...]] = []

    def recording(batch: np.ndarray) -> np.ndarray:
        calls.append(batch.shape)
        return first_channel(batch)

    predict_image(recording, image, ["identity"], tile=64)
    assert len(calls) > 1 and all(shape[1] <= 64 and shape[2] <= 64 for shape in calls)


@pytest.mark.parametrize("height,width,multiple", [(37, 53, 32), (64, 64, 32), (5, 3, 32), (1, 7, 8), (20, 30, 1)])
def test_pad_to_multiple_shape_and_crop_back(height: int, width: int, multiple: int) -> None:
    image = np.random.default_rng(4).random((height, width, 2))
    padded, (original_h, original_w) = pad_to_multiple(image, multiple)
    assert (original_h, original_w) == (height, width)
    assert padded.shape[0] % multiple == 0 and padded.shape[1] % multiple == 0 and padded.shape[2] == 2
    assert padded.shape[0] - height < multiple and padded.shape[1] - width < multiple
    assert np.array_equal(padded[:height, :width], image)


def test_unknown_view_lists_the_valid_views() -> None:
    image = np.zeros((8, 8, 3), np.float32)
    with pytest.raises(ConfigError, match="'rot45'.*identity, hflip, vflip"):
        predict_image(first_channel, image, ["identity", "rot45"])
    with pytest.raises(ConfigError, match="rot45"):
        apply_view("rot45", image[None])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"views": []}, "non-empty"),
        ({"views": "hflip"}, "non-empty"),
        ({"merge": "max"}, "merge 'max'"),
        ({"tile": 50}, "tile"),
    ],
)
def test_bad_tta_settings_raise_config_error(kwargs: dict, message: str) -> None:
    arguments = {"views": ["identity"], **kwargs}
    with pytest.raises(ConfigError, match=message):
        predict_image(first_channel, np.zeros((8, 8, 3), np.float32), **arguments)


def test_model_that_changes_the_size_is_reported() -> None:
    def shrinking(batch: np.ndarray) -> np.ndarray:
        return batch[:, ::2, ::2, :1]

    with pytest.raises(ConfigError, match="fully convolutional"):
        predict_image(shrinking, np.zeros((32, 32, 3), np.float32), ["identity"])


def test_wrong_image_rank_is_a_data_error() -> None:
    with pytest.raises(DataError, match="shape"):
        predict_image(first_channel, np.zeros((8, 8), np.float32), ["identity"])
    with pytest.raises(DataError, match="NHWC"):
        apply_view("hflip", np.zeros((8, 8, 3)))
    with pytest.raises(ConfigError, match="multiple"):
        pad_to_multiple(np.zeros((8, 8, 3)), 0)
