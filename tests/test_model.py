"""Model building: architectures, offline weights, losses and preprocessing (tiny resnet18 models on CPU)."""
import copy
import warnings

import numpy as np
import pytest

from kseg.config import DEFAULTS, Config, validate
from kseg.errors import ConfigError, KsegWarning
from kseg.model import (
    build_loss,
    build_model,
    channel_weights,
    check_model_config,
    describe_model,
    inverse_frequency_weights,
    model_arch,
    preprocess_fn,
    save_weights,
)


def config(train: dict | None = None, **model) -> Config:
    """A resnet18 U-Net from scratch with ``model`` (and ``train``) values on top, validated as a loaded config."""
    tree = copy.deepcopy(DEFAULTS)
    tree["model"].update({"arch": "Unet", "backbone": "resnet18", "encoder_weights": None, **model})
    tree["train"].update(train or {})
    return validate(tree)


def encoder_layer_names() -> list[str]:
    return [layer.name for layer in notop_encoder().layers if layer.weights]


def notop_encoder():
    """A classification_models ResNet18 without its classifier: what a "notop" weights file holds."""
    from classification_models.tfkeras import Classifiers

    resnet18, _ = Classifiers.get("resnet18")
    return resnet18(input_shape=(None, None, 3), weights=None, include_top=False)


def same_weights(model_a, model_b, names) -> bool:
    pairs = (zip(model_a.get_layer(n).get_weights(), model_b.get_layer(n).get_weights()) for n in names)
    return all(np.array_equal(a, b) for layer_pairs in pairs for a, b in layer_pairs)


@pytest.mark.parametrize("arch", ["Unet", "FPN", "Linknet"])
def test_architectures_take_any_size_and_output_probabilities(arch):
    model = build_model(config(arch=arch), 3)
    assert tuple(model.input_shape) == (None, None, None, 3)
    probs = model.predict_on_batch(np.random.default_rng(0).random((2, 64, 96, 3), dtype=np.float32))
    assert probs.shape == (2, 64, 96, 3) and probs.dtype == np.float32
    assert probs.min() >= 0.0 and probs.max() <= 1.0


@pytest.mark.parametrize("model_cfg, words", [
    ({"backbone": "resnet19"}, r"unknown model.backbone 'resnet19'; valid backbones: .*resnet18"),
    ({"arch": "UNet"}, r"unknown model.arch 'UNet'; valid architectures: auto, Unet, FPN, Linknet, unet_scratch"),
    ({"encoder_weights": "/nowhere/notop.h5"}, r"model.encoder_weights: weights file not found: /nowhere/notop.h5"),
    ({"init_from": "/nowhere/best.weights.h5"}, r"model.init_from: weights file not found: /nowhere/best.weights.h5"),
    ({"bn_momentum": 1.0}, r"model.bn_momentum must be a number in \[0, 1\), got 1.0"),
])
def test_bad_model_config(model_cfg, words):
    with pytest.raises(ConfigError, match=words):
        build_model(config(**model_cfg), 3)


def scratch(**flags) -> Config:
    return config(arch="unet_scratch", scratch={**DEFAULTS["model"]["scratch"], "filters": 4, "depth": 3, **flags})


@pytest.mark.parametrize("flags", [{}, {"residual": True}, {"se": True}, {"attention": True},
                                   {"residual": True, "se": True, "attention": True, "depth": 5}])
def test_scratch_unet_variants_take_any_multiple_of_32_and_output_probabilities(flags):
    model = build_model(scratch(**flags), 3)
    probs = model.predict_on_batch(np.random.default_rng(0).random((2, 64, 96, 3), dtype=np.float32))
    assert probs.shape == (2, 64, 96, 3) and probs.min() >= 0.0 and probs.max() <= 1.0
    assert describe_model(model).endswith(f"{model.count_params():,} parameters")
    for flag in ("residual", "se", "attention"):
        assert (flag in model.name) == bool(flags.get(flag))


def test_scratch_unet_flags_add_parameters_and_its_weights_round_trip(tmp_path):
    plain, full = build_model(scratch(), 2), build_model(scratch(residual=True, se=True, attention=True), 2)
    assert full.count_params() > plain.count_params()
    path = save_weights(plain, tmp_path / "best.weights.h5")
    cfg = scratch()
    cfg.model.init_from = str(path)
    restored = build_model(cfg, 2)
    assert all(np.array_equal(a, b) for a, b in zip(plain.get_weights(), restored.get_weights()))


@pytest.mark.parametrize("model_cfg, words", [
    ({"encoder_weights": "imagenet"}, r"model.arch=unet_scratch has no pretrained encoder: set model.encoder_weights to null"),
    ({"encoder_freeze": True}, r"model.encoder_freeze=true has no meaning for model.arch=unet_scratch"),
    ({"scratch": {**DEFAULTS["model"]["scratch"], "depth": 6}}, r"model.scratch.depth must be an integer in \[1, 5\], got 6"),
    ({"scratch": {**DEFAULTS["model"]["scratch"], "filters": 2.5}}, r"model.scratch.filters must be an integer in \[4, 256\]"),
    ({"scratch": {**DEFAULTS["model"]["scratch"], "se": "yes"}}, r"model.scratch.se must be true or false, got 'yes'"),
])
def test_bad_scratch_config_is_rejected_before_training(model_cfg, words):
    with pytest.raises(ConfigError, match=words):
        check_model_config(config(**{"arch": "unet_scratch", **model_cfg}))


@pytest.mark.parametrize("weights, arch", [(None, "unet_scratch"), ("imagenet", "Unet"), ("encoder.h5", "Unet")])
def test_auto_arch_is_unet_scratch_without_pretrained_weights(weights, arch, capsys):
    cfg = config(arch="auto", encoder_weights=weights)
    assert model_arch(cfg.model) == arch
    assert model_arch(config(arch="FPN", encoder_weights=weights).model) == "FPN"  # an explicit choice stays
    if weights is None:
        check_model_config(cfg)
        assert "model.arch auto: unet_scratch" in capsys.readouterr().out
        small = scratch()
        small.model.arch = "auto"
        assert build_model(small, 2).name.startswith("unet_scratch")


def test_a_segmentation_models_network_from_scratch_points_to_unet_scratch():
    with pytest.warns(KsegWarning, match="model.arch=unet_scratch"):
        check_model_config(config())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_model_config(scratch())


def test_scratch_preprocessing_scales_to_minus_one_one_without_touching_the_input():
    image = np.array([[[0, 127, 255]]], np.uint8)
    x = preprocess_fn(scratch())(image)
    assert x.dtype == np.float32 and np.allclose(x, [[[-1.0, 127 / 127.5 - 1, 1.0]]]) and image[0, 0, 2] == 255


def test_short_training_gives_matching_inference_statistics():
    """With bn_momentum 0.9, 15 steps bring inference-mode BatchNorm close to training mode; with Keras'
    0.99 the raw-pixel input normalisation is still far off and predictions drift (measured 0.17 vs 0.47)."""
    import tf_keras as keras

    rng = np.random.default_rng(0)
    x = rng.random((2, 32, 32, 3), dtype=np.float32) * 255
    y = (x[..., :1] > 128).astype(np.float32)
    gaps = {}
    for momentum in (0.9, 0.99):
        keras.utils.set_random_seed(0)
        model = build_model(config(bn_momentum=momentum), 1)
        model.compile(keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        model.fit(x, y, epochs=15, batch_size=2, verbose=0)
        gaps[momentum] = float(np.abs(model(x, training=True).numpy() - model.predict_on_batch(x)).mean())
    assert gaps[0.9] < 0.5 * gaps[0.99]


def test_offline_weights_reproduce_the_saved_model(tmp_path):
    image = np.random.default_rng(1).random((1, 64, 64, 3), dtype=np.float32)
    original = build_model(config(), 3)
    full_file = save_weights(original, tmp_path / "model.weights.h5")
    encoder = notop_encoder()
    notop_file = tmp_path / "resnet18_notop.h5"
    encoder.save_weights(str(notop_file))

    from_notop = build_model(config(encoder_weights=str(notop_file)), 3)
    assert same_weights(encoder, from_notop, encoder_layer_names())

    restored = build_model(config(encoder_weights=str(notop_file), init_from=str(full_file)), 3)
    np.testing.assert_array_equal(restored.predict_on_batch(image), original.predict_on_batch(image))


def test_encoder_taken_from_a_full_kseg_weights_file(tmp_path):
    original = build_model(config(), 3)
    full_file = save_weights(original, tmp_path / "best.weights.h5")
    # Another architecture and channel count: only the encoder comes from the file.
    model = build_model(config(arch="FPN", encoder_weights=str(full_file)), 5)
    assert same_weights(original, model, encoder_layer_names())
    assert model.output_shape[-1] == 5


def test_weights_of_another_backbone_are_rejected(tmp_path):
    full_file = save_weights(build_model(config(), 3), tmp_path / "best.weights.h5")
    with pytest.raises(ConfigError, match=r"not a kseg weights file of a Unet/resnet34 model"):
        build_model(config(backbone="resnet34", encoder_weights=str(full_file)), 3)
    with pytest.raises(ConfigError, match=r"init_from .*best.weights.h5: does not fit a Unet/resnet18 model with 4"):
        build_model(config(init_from=str(full_file)), 4)


def test_notop_file_of_another_network_is_rejected(tmp_path):
    import tf_keras as keras

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="dense_head")])
    other.save_weights(str(tmp_path / "other_notop.h5"))
    with pytest.raises(ConfigError, match=r"other_notop.h5: \d+ of the \d+ weighted encoder layers of resnet18 are not"):
        build_model(config(encoder_weights=str(tmp_path / "other_notop.h5")), 3)


def test_non_keras_file_is_rejected(tmp_path):
    bogus = tmp_path / "notop.h5"
    bogus.write_text("not hdf5")
    with pytest.raises(ConfigError, match=r"notop.h5: not a readable .h5 weights file"):
        build_model(config(encoder_weights=str(bogus)), 3)


@pytest.mark.parametrize("name", ["bce_dice", "bce_jaccard", "focal_dice", "focal_jaccard", "bce"])
def test_every_loss_is_small_for_a_perfect_prediction(name):
    import tensorflow as tf

    cfg = config()
    cfg.train.loss = name
    truth = tf.constant((np.random.default_rng(2).random((2, 16, 16, 3)) > 0.5).astype(np.float32))
    loss = build_loss(cfg, 3)
    perfect, wrong = float(loss(truth, truth)), float(loss(truth, 1.0 - truth))
    assert np.isfinite(perfect) and perfect < 0.01 < wrong


def test_channel_weights_select_channels():
    import tensorflow as tf

    cfg = config()
    cfg.train.channel_weights = [1.0, 0.0]
    rng = np.random.default_rng(3)
    truth = tf.constant((rng.random((2, 16, 16, 2)) > 0.5).astype(np.float32))
    prediction = rng.random((2, 16, 16, 2)).astype(np.float32)
    changed = prediction.copy()
    changed[..., 1] = 1.0 - changed[..., 1]
    loss = build_loss(cfg, 2)
    assert float(loss(truth, tf.constant(prediction))) == pytest.approx(float(loss(truth, tf.constant(changed))))
    np.testing.assert_allclose(channel_weights(cfg, 2), [2.0, 0.0])  # scaled to mean 1


def test_inverse_frequency_weights_favour_rare_classes_with_mean_one():
    counts = np.array([900, 90, 10, 0])
    full = inverse_frequency_weights(counts, 1.0)
    assert full.mean() == pytest.approx(1.0)
    assert full[1] / full[0] == pytest.approx(10.0) and full[2] / full[1] == pytest.approx(9.0)
    assert full[3] == full[2]  # a class absent from the fold: the largest weight of the others
    np.testing.assert_allclose(inverse_frequency_weights(counts, 0.0), 1.0)
    half = inverse_frequency_weights(counts, 0.5)
    assert half[1] / half[0] == pytest.approx(np.sqrt(10.0))


def test_auto_channel_weights_come_from_the_training_fold_only():
    from kseg.train import SampleCache, fold_channel_weights

    cfg = config()
    cfg.data.task, cfg.train.channel_weights, cfg.train.channel_weight_power = "multiclass", "auto", 1.0
    targets = [np.zeros((4, 4, 3), np.uint8) for _ in range(3)]
    targets[0][..., 0], targets[1][:2, :, 1], targets[1][2:, :, 0] = 1, 1, 1  # class 2 only in image 2
    targets[2][..., 2] = 1
    cache = SampleCache([np.zeros((4, 4, 3), np.uint8)] * 3, targets)
    weights = fold_channel_weights(cfg, cache, [0, 1], 3)  # 24 background, 8 class 1, no class 2 pixel
    np.testing.assert_allclose(weights / weights[0], [1.0, 3.0, 3.0])
    assert channel_weights(cfg, 3) is None  # before any image is read: nothing to count yet


@pytest.mark.parametrize("train_cfg, words", [
    ({"channel_weights": "auto"}, r"train.channel_weights: auto weighs the classes of a multiclass task .*data.task is "
                                  r"instance"),
    ({"channel_weight_power": 2}, r"train.channel_weight_power must be a number in \[0, 1\], got 2"),
    ({"channel_weight_power": True}, r"train.channel_weight_power must be a number"),
    ({"channel_weights": [1.0, 1.0]}, r"train.channel_weights must be a list of 3 numbers"),
    ({"channel_weights": [1.0, -1.0, 1.0]}, r"non-negative"),
    ({"channel_weights": [1.0, "x", 1.0]}, r"must contain numbers"),
    ({"loss": "dice"}, r"train.loss must be one of bce_dice, .*, got 'dice'"),
])
def test_bad_loss_config(train_cfg, words):
    with pytest.raises(ConfigError, match=words):
        build_loss(config(train=train_cfg), 3)


def test_preprocessing_is_the_backbones_and_leaves_input_alone():
    images = np.full((2, 4, 4, 3), 255, np.uint8)
    mobilenet = preprocess_fn(config(backbone="mobilenetv2"))(images)
    assert mobilenet.dtype == np.float32
    np.testing.assert_allclose(mobilenet, 1.0)  # keras-applications "tf" mode: x / 127.5 - 1
    as_float = images.astype(np.float32)
    preprocess_fn(config(backbone="mobilenetv2"))(as_float)
    assert as_float.max() == 255.0
    with pytest.raises(ConfigError, match="unknown model.backbone"):
        preprocess_fn(config(backbone="resnet19"))


def test_imagenet_download_failure_is_one_clear_error(monkeypatch, tmp_path):
    """The real segmentation_models download path runs; only the network underneath it fails."""
    import urllib.error

    from tf_keras.src.utils import data_utils

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # an empty weights cache: nothing downloaded before counts
    monkeypatch.setattr(data_utils, "urlretrieve", no_network)
    with pytest.raises(ConfigError, match=r"model.encoder_weights=imagenet: the resnet18 ImageNet weights could "
                                          r"not be downloaded .*local .h5 file"):
        build_model(config(encoder_weights="imagenet"), 3)
