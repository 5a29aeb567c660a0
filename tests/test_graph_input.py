"""The graph input pipeline (``train.pipeline: graph``, kseg.graph_input): TensorFlow ops only, as a TPU needs.

It must have no Python callback in its graph, crop and pad the way the host pipeline does, move the image
and its target together, fire each transform with its probability, reproduce albumentations' pixel
transforms, apply the backbone's preprocessing, and train, resume and write the OOF like the host one.
"""
import json

import albumentations as A
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kseg.config import DEFAULT_AUGMENT
from kseg.errors import ConfigError
from kseg.graph_input import (
    GRAPH_TRANSFORMS,
    _reflect_indices,
    affine_preprocess,
    graph_augment,
    graph_train_dataset,
    python_callbacks,
)
from kseg.model import preprocess_fn
from kseg.train import SampleCache, Sampler, check_train_config, command_train, graph_dataset, train_dataset
from kseg.unet import preprocess as scratch_preprocess
from test_strategy import TINY, data_root, train_then_resume  # noqa: F401  (data_root is a module fixture)
from test_train import run_config

SIZE = 32
IDENTITY = (np.eye(3, dtype=np.float32), np.zeros(3, np.float32))


def gradient_image(height: int, width: int) -> np.ndarray:
    """Every pixel different (rows in channel 0, columns in channel 1), so any move of it shows."""
    rows, cols = np.mgrid[:height, :width]
    return np.stack([rows * 255 // max(height - 1, 1), cols * 255 // max(width - 1, 1), (rows + cols) % 256],
                    -1).astype(np.uint8)


def crops(images, spec, n=64, seed=0, targets=None, size=SIZE, preprocess=IDENTITY):
    """``n`` augmented crops (images, targets) of image 0, 1, ... in turn, as numpy arrays."""
    targets = targets if targets is not None else [image[..., :2].copy() for image in images]
    indices = np.arange(n) % len(images)
    seeds = np.random.default_rng(seed).integers(0, 2**31 - 1, n)
    dataset = graph_train_dataset(images, targets, indices, seeds, size, graph_augment(spec, size), preprocess, n)
    image, target = next(iter(dataset))
    return image.numpy(), target.numpy()


# ------------------------------------------------------------------------------------------ spec

def test_the_default_augmentation_has_a_graph_version():
    names = [transform.name for transform in graph_augment(DEFAULT_AUGMENT, 64)]
    assert names == [next(iter(item)) for item in DEFAULT_AUGMENT]
    assert set(names) <= set(GRAPH_TRANSFORMS)


@pytest.mark.parametrize("spec, words", [
    ([{"HorizontalFlip": {}}, {"GaussNoise": {"p": 0.5}}],
     r"train.augment item 2 \(GaussNoise\): train.pipeline graph has no graph version of GaussNoise; it runs "
     r"HorizontalFlip, .*Remove it or use train.pipeline host"),
    ([{"Affine": {"shear": [-5, 5]}}],
     r"train.augment item 1 \(Affine\): train.pipeline graph supports the arguments keep_ratio, p, rotate, scale of "
     r"Affine, not shear"),
    ([{"HorizontalFlip": {"q": 1}}], r"HorizontalFlip has no argument\(s\) 'q'"),  # the host pipeline's own check
])
def test_a_transform_without_a_graph_version_is_a_config_error(spec, words):
    with pytest.raises(ConfigError, match=words):
        graph_augment(spec, 64)


def test_train_pipeline_graph_fails_at_config_check_before_any_data_is_read(tmp_path):
    cfg = run_config(tmp_path / "missing", tmp_path / "run", "train.pipeline=graph",
                     "train.augment=[{CLAHE: {p: 0.5}}]")
    with pytest.raises(ConfigError, match=r"no graph version of CLAHE"):
        check_train_config(cfg)
    with pytest.raises(ConfigError, match=r"train.pipeline must be one of auto, host, graph, got 'tpu'"):
        run_config(tmp_path, tmp_path / "run", "train.pipeline=tpu")


def test_on_a_tpu_auto_fails_on_a_transform_without_a_graph_version_before_caching_images(data_root, tmp_path,  # noqa: F811
                                                                                          monkeypatch):
    import tensorflow as tf

    from kseg import train

    monkeypatch.setattr(train, "_accelerator", lambda train_cfg: train.Accelerator(
        tf.distribute.get_strategy(), "float32", "graph"))  # what auto picks under a TPUStrategy
    monkeypatch.setattr(train.SampleCache, "from_records", lambda *a, **k: pytest.fail("images were cached"))
    cfg = run_config(data_root, tmp_path / "run", "train.augment=[{CLAHE: {p: 0.5}}]")
    with pytest.raises(ConfigError, match="no graph version of CLAHE"):
        command_train(cfg, 0)


# ----------------------------------------------------------------------------------- no Python

def test_the_graph_pipeline_calls_no_python_and_the_host_one_does(tmp_path):
    images = [gradient_image(40, 50), gradient_image(20, 24)]
    cache = SampleCache(images, [image[..., :2] // 255 for image in images])
    cfg = run_config(tmp_path, tmp_path / "run", "train.size=32")
    sampler = Sampler([0, 1], [None, None], [False, False], 0.5, None, seed=0, fold=0, epoch_size=4)
    preprocess = preprocess_fn(cfg)
    assert python_callbacks(graph_dataset(cache, sampler, cfg, preprocess, first_epoch=0)) == []
    assert sampler.next_epoch == cfg.train.epochs and sorted(sampler.drawn) == list(range(cfg.train.epochs))
    assert python_callbacks(train_dataset(cache, sampler, cfg, preprocess)) != []  # the detector sees them


# ------------------------------------------------------------------------------------- crop, pad

@settings(max_examples=200, deadline=None)
@given(length=st.integers(1, 12), extra=st.integers(0, 40), data=st.data())
def test_padding_indices_reflect_like_opencv_for_any_amount(length, extra, data):
    import tensorflow as tf

    before = data.draw(st.integers(0, extra))
    got = _reflect_indices(tf, tf.constant(length), tf.constant(before), tf.constant(length + extra)).numpy()
    expected = np.pad(np.arange(length), (before, extra - before), mode="reflect") if length > 1 else np.zeros(
        length + extra, int)
    np.testing.assert_array_equal(got, expected)  # numpy's "reflect" is OpenCV's BORDER_REFLECT_101


def test_a_crop_is_a_window_of_the_image_and_a_small_image_is_reflect_padded():
    big, small = gradient_image(48, 40), gradient_image(20, 12)
    image, _ = crops([big, small], [], n=8)
    for crop in image[0::2]:  # some window of the big image
        hits = [(r, c) for r in range(48 - SIZE + 1) for c in range(40 - SIZE + 1)
                if np.array_equal(big[r:r + SIZE, c:c + SIZE], crop)]
        assert len(hits) == 1
    padded = np.pad(small, ((6, 6), (10, 10), (0, 0)), mode="reflect")  # centred, as albumentations pads
    for crop in image[1::2]:
        np.testing.assert_array_equal(crop, padded)


def test_geometric_transforms_move_image_and_target_together():
    image = gradient_image(48, 48)
    target = np.stack([image[..., 0], image[..., 1]], -1)
    spec = [{"HorizontalFlip": {}}, {"VerticalFlip": {}}, {"RandomRotate90": {}}, {"Transpose": {}}]
    out_image, out_target = crops([image], spec, n=32, targets=[target])
    np.testing.assert_array_equal(out_image[..., :2], out_target)
    assert len({crop.tobytes() for crop in out_image}) > 16  # crops and transforms vary per sample


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_a_transform_fires_with_its_probability(p):
    image = gradient_image(SIZE, SIZE)  # the crop is the whole image: a flip is the only change
    out, _ = crops([image], [{"HorizontalFlip": {"p": p}}], n=400)
    flipped = np.mean([np.array_equal(crop, image[:, ::-1]) for crop in out])
    assert np.mean([np.array_equal(crop, image) for crop in out]) + flipped == 1.0
    assert flipped == pytest.approx(p, abs=0.07)


def test_the_same_seeds_give_the_same_batch_and_other_seeds_another():
    images = [gradient_image(60, 70)]
    first, again, other = (crops(images, DEFAULT_AUGMENT, n=16, seed=seed)[0] for seed in (0, 0, 1))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)


# --------------------------------------------------------------------------------- pixel transforms

def test_affine_without_change_is_the_identity_and_a_quarter_turn_is_rot90():
    image = gradient_image(SIZE, SIZE)
    same, _ = crops([image], [{"Affine": {"scale": [1, 1], "rotate": [0, 0], "p": 1}}], n=2)
    np.testing.assert_array_equal(same[0], image)
    turned, turned_target = crops([image], [{"Affine": {"scale": 1, "rotate": [90, 90], "p": 1}}], n=2)
    np.testing.assert_array_equal(turned[0], np.rot90(image, 1))  # albumentations' +90 turns the same way
    np.testing.assert_array_equal(turned_target[0], turned[0][..., :2])  # nearest: the target moves exactly


@pytest.mark.parametrize("kwargs", [
    {"rotate": [20, 20], "scale": {"x": [0.7, 0.7], "y": [1.2, 1.2]}},
    {"rotate": [-35, -35], "scale": [1.1, 1.1], "keep_ratio": True},
])
def test_affine_matches_albumentations_on_image_and_mask(kwargs):
    image = gradient_image(SIZE, SIZE)
    mask = (image[..., :2] > 100).astype(np.uint8)
    out, target = crops([image], [{"Affine": {**kwargs, "p": 1}}], n=1, targets=[mask])
    expected = A.Affine(**kwargs, p=1)(image=image, mask=mask)
    np.testing.assert_allclose(out[0], expected["image"], atol=1.0)  # OpenCV's fixed-point bilinear rounding
    assert np.mean(target[0] != expected["mask"]) < 0.01


def test_affine_scaling_zooms_about_the_centre_with_zeros_outside():
    image = np.full((SIZE, SIZE, 3), 200, np.uint8)
    out, target = crops([image], [{"Affine": {"scale": [0.5, 0.5], "rotate": [0, 0], "p": 1}}], n=1,
                        targets=[np.ones((SIZE, SIZE, 2), np.uint8)])
    assert out[0, SIZE // 2, SIZE // 2, 0] == 200 and out[0, 0, 0, 0] == 0  # shrunk into the middle
    assert target[0].mean() == pytest.approx(0.25, abs=0.05)


@pytest.mark.parametrize("kwargs", [
    {"brightness_limit": [0.1, 0.1], "contrast_limit": [0, 0]},
    {"brightness_limit": [0, 0], "contrast_limit": [0.3, 0.3]},
    {"brightness_limit": [-0.2, -0.2], "contrast_limit": [0.1, 0.1], "brightness_by_max": False},
])
def test_brightness_contrast_matches_albumentations(kwargs):
    image = gradient_image(SIZE, SIZE)
    out, _ = crops([image], [{"RandomBrightnessContrast": {**kwargs, "p": 1}}], n=1)
    expected = A.RandomBrightnessContrast(**kwargs, p=1)(image=image)["image"]
    np.testing.assert_array_equal(out[0], expected)


def test_outputs_are_preprocessed_for_the_backbone():
    image = gradient_image(SIZE, SIZE)
    out, _ = crops([image], [], n=1, preprocess=affine_preprocess(scratch_preprocess))
    np.testing.assert_allclose(out[0], scratch_preprocess(image), atol=1e-5)


@pytest.mark.parametrize("preprocess", [
    scratch_preprocess,
    lambda x: np.asarray(x, np.float32)[..., ::-1] - np.array([103.9, 116.8, 123.7], np.float32),  # Caffe's
    lambda x: (np.asarray(x, np.float32) / 255 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
])
def test_backbone_preprocessing_is_measured_as_an_affine_map(preprocess):
    matrix, offset = affine_preprocess(preprocess)
    pixels = np.random.default_rng(1).integers(0, 256, (1, 8, 8, 3)).astype(np.uint8)
    np.testing.assert_allclose(pixels.astype(np.float32) @ matrix + offset, preprocess(pixels), rtol=1e-4, atol=1e-3)


def test_a_preprocessing_that_is_not_affine_is_a_config_error():
    with pytest.raises(ConfigError, match="not a per-pixel affine map"):
        affine_preprocess(lambda x: np.sqrt(np.asarray(x, np.float32)))


# -------------------------------------------------------------------------------------- training

def test_fit_reads_a_stream_of_several_epochs_an_epoch_at_a_time():
    """What graph_dataset relies on: with steps_per_epoch set, Keras keeps one iterator over the stream, so
    epoch 2 gets the second epoch's draws rather than the first epoch's again."""
    import tensorflow as tf
    import tf_keras as keras

    seen = tf.Variable(0.0)

    def record(x, y):
        seen.assign_add(tf.reduce_sum(x))
        return x, y

    stream = tf.data.Dataset.range(6).map(lambda i: (tf.fill([1], tf.cast(i, tf.float32)), tf.zeros([1])))
    model = keras.Sequential([keras.layers.Dense(1, input_shape=(1,))])
    model.compile("sgd", "mse")
    model.fit(stream.map(record).batch(1), steps_per_epoch=3, epochs=2, verbose=0)
    assert seen.numpy() == sum(range(6))  # 0..5 once; a new iterator per epoch would read 0, 1, 2 twice


@pytest.mark.slow
def test_the_graph_pipeline_trains_resumes_and_writes_the_oof_with_the_host_sampler_draws(data_root, tmp_path):  # noqa: F811
    graph = train_then_resume(data_root, tmp_path / "graph", "train.pipeline=graph")
    host = train_then_resume(data_root, tmp_path / "host", "train.pipeline=host")
    assert graph["done"]["pipeline"] == "graph" and host["done"]["pipeline"] == "host"
    assert graph["done"]["epochs"] == 2 and graph["oof"] == host["oof"] and len(graph["oof"]) == 4
    assert all(np.isfinite(graph["loss"]))
    draws = [pd.read_csv(tmp_path / name / "fold0" / "history.csv").filter(like="drawn") for name in ("graph", "host")]
    pd.testing.assert_frame_equal(*draws)  # the same images each epoch, resumed or not
    assert json.loads((tmp_path / "graph" / "fold0" / "state.json").read_text())["pipeline"] == "graph"
    # Straight through, fit reads the one stream of both epochs an epoch at a time: it must not run out.
    command_train(run_config(data_root, tmp_path / "straight", "train.epochs=2", *TINY, "train.pipeline=graph"), 0)
    assert len(pd.read_csv(tmp_path / "straight" / "fold0" / "history.csv")) == 2

