"""The network: a segmentation_models encoder–decoder, or kseg's own from-scratch U-Net (``unet.py``),
with one sigmoid output per target channel, or a softmax over the channels for the exclusive classes of
``data.task: multiclass`` (``model.activation``).

TensorFlow and segmentation_models are imported inside the functions so that ``import kseg.model`` stays
cheap; ``import kseg`` has already selected tf-keras (segmentation-models 1.0.1 needs Keras 2).
Encoder weights can come from segmentation_models' own ImageNet download, or — for offline Kaggle
kernels — from a local ``.h5`` file: either a "notop" encoder file (keras-applications /
classification_models), or the encoder part of a full kseg ``.weights.h5`` file with the same backbone
(every encoder layer's weight shapes are checked).
"""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from .config import LOSSES, Config, ModelSection
from .errors import ConfigError, warn
from .files import atomic_path
from .tasks import task_of
from .unet import SCRATCH_ARCH, build_scratch_unet, check_scratch_config
from .unet import preprocess as scratch_preprocess

log = logging.getLogger(__name__)

__all__ = ["ARCHITECTURES", "AUTO_ARCH", "model_arch", "LOSSES", "check_model_config", "check_bn_momentum", "build_model",
           "describe_model", "save_weights", "load_weights", "build_loss", "void_masked", "preprocess_fn",
           "channel_weights", "inverse_frequency_weights", "activation"]

# auto, segmentation_models' architectures (with model.backbone), then kseg's own from-scratch U-Net.
# auto is Unet with model.backbone when there are pretrained encoder weights to start from, else unet_scratch:
# a randomly initialised ResNet encoder is only a large, slow network (BENCHMARKS.md: a from-scratch resnet18
# U-Net makes a third of unet_scratch's steps in the same time and scored below it on every real set).
AUTO_ARCH = "auto"
ARCHITECTURES = (AUTO_ARCH, "Unet", "FPN", "Linknet", SCRATCH_ARCH)


def _segmentation_models() -> Any:
    import segmentation_models as sm

    return sm


def _check_backbone(sm: Any, backbone: str) -> None:
    names = sm.Backbones.models_names()
    if backbone not in names:
        raise ConfigError(f"unknown model.backbone {backbone!r}; valid backbones: {', '.join(names)}")


def _check_arch(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown model.arch {arch!r}; valid architectures: {', '.join(ARCHITECTURES)}")


def model_arch(model_cfg: ModelSection) -> str:
    """``model.arch`` with ``auto`` resolved: ``Unet`` when ``model.encoder_weights`` names pretrained weights
    (imagenet or a file), ``unet_scratch`` when it is null."""
    arch = model_cfg.arch
    _check_arch(arch)
    if arch != AUTO_ARCH:
        return arch
    return SCRATCH_ARCH if model_cfg.encoder_weights is None else "Unet"


def check_model_config(cfg: Config) -> None:
    """Reject an unknown ``model.arch`` or ``model.backbone`` (or bad ``model.scratch`` values) before any
    stage runs (``kseg run`` calls it)."""
    arch = model_arch(cfg.model)
    if not isinstance(cfg.train.channel_weights, list):  # a list's length is checked when the channels are known
        channel_weights(cfg, 0)
    if cfg.model.arch == AUTO_ARCH:
        log.info(f"model.arch auto: {arch}" + (" (no pretrained encoder weights: kseg's own U-Net)" if arch == SCRATCH_ARCH
                                            else f"/{cfg.model.backbone} (pretrained encoder)"))
    if arch == SCRATCH_ARCH:
        check_scratch_config(cfg.model)
        return
    _check_backbone(_segmentation_models(), cfg.model.backbone)
    if cfg.model.encoder_weights is None and cfg.model.init_from is None:
        warn(f"{arch}/{cfg.model.backbone} trains from scratch (model.encoder_weights: "
              f"null); without pretrained weights, model.arch={SCRATCH_ARCH} makes about 3x the steps in the same "
              "time and scored higher on the real sets measured (BENCHMARKS.md)")


def _existing_file(value: Any, key: str) -> Path:
    path = Path(str(value))
    if not path.is_file():
        raise ConfigError(f"{key}: weights file not found: {path}")
    return path


@contextlib.contextmanager
def _capturing_backbone(sm: Any) -> Iterator[list]:
    """Record the encoder model that Unet/FPN/Linknet build internally and do not return.

    Its layers are the full model's encoder layers, so loading a notop file into it fills exactly the
    encoder, by layer order, like segmentation_models' own ImageNet loading; layer names would not do,
    since some backbones (Inception) use auto-generated names that differ between builds.
    """
    built: list = []
    factory = sm.Backbones
    original = factory.get_backbone

    def get_backbone(name: str, *args: Any, **kwargs: Any) -> Any:
        backbone = original(name, *args, **kwargs)
        built.append(backbone)
        return backbone

    factory.get_backbone = get_backbone
    try:
        yield built
    finally:
        del factory.get_backbone


def _legacy_weighted_layers(handle: Any) -> list[str]:
    """Layers that carry weights in a Keras 2 ``.h5`` file (what keras-applications notop files are)."""
    group = handle["model_weights"] if "model_weights" in handle else handle
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in group.attrs["layer_names"]]
    return [name for name in names if len(group[name].attrs.get("weight_names", [])) > 0]


def _load_legacy_encoder(backbone: Any, path: Path, file_layers: list[str], backbone_name: str) -> None:
    """Same layer count: a notop encoder file, loaded by order; otherwise a larger model's file, by name."""
    encoder_layers = [layer.name for layer in backbone.layers if layer.weights]
    try:
        if len(file_layers) == len(encoder_layers):
            backbone.load_weights(str(path))
            return
        present = set(file_layers)
        missing = [name for name in encoder_layers if name not in present]
        if missing:
            raise ConfigError(
                f"model.encoder_weights {path}: {len(missing)} of the {len(encoder_layers)} weighted encoder layers "
                f"of {backbone_name} are not in the file (e.g. {', '.join(missing[:3])}); expected a notop "
                f"encoder file or a full weights file of the same backbone"
            )
        backbone.load_weights(str(path), by_name=True)
    except ValueError as exc:
        raise ConfigError(f"model.encoder_weights {path}: does not fit the {backbone_name} encoder: {exc}") from None


def _weights_file_groups(model: Any) -> dict[int, str]:
    """``id(layer)`` → the layer's group in a ``.weights.h5`` file.

    That format does not use layer names (often auto-generated, so not reproducible): each layer of
    ``model.layers`` is stored under its snake-cased class name numbered by order, e.g. ``conv2d_3``.
    """
    from tf_keras.src.utils.generic_utils import to_snake_case

    seen: dict[str, int] = {}
    groups: dict[int, str] = {}
    for layer in model.layers:
        name = to_snake_case(type(layer).__name__)
        count = seen.get(name, -1) + 1
        seen[name] = count
        groups[id(layer)] = f"layers/{name}" if count == 0 else f"layers/{name}_{count}"
    return groups


def _load_kseg_encoder(model: Any, backbone: Any, handle: Any, path: Path, description: str) -> None:
    """Copy only the encoder layers out of a full kseg ``.weights.h5`` file with the same backbone."""
    groups = _weights_file_groups(model)
    for layer in backbone.layers:
        if not layer.weights:
            continue
        group = handle.get(f"{groups[id(layer)]}/vars")
        values = [] if group is None else [group[str(i)][()] for i in range(len(group))]
        if [v.shape for v in values] != [tuple(w.shape) for w in layer.weights]:
            raise ConfigError(f"model.encoder_weights {path}: not a kseg weights file of a {description} model "
                              f"(encoder layer {layer.name} does not match)")
        layer.set_weights(values)


def _load_encoder_weights(model: Any, backbone: Any, path: Path, description: str, backbone_name: str) -> None:
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            if "layer_names" in handle.attrs or "model_weights" in handle:
                file_layers = _legacy_weighted_layers(handle)
            elif "layers" in handle:
                _load_kseg_encoder(model, backbone, handle, path, description)
                return
            else:
                raise ConfigError(f"model.encoder_weights {path}: no Keras weights in this .h5 file")
    except OSError as exc:
        raise ConfigError(f"model.encoder_weights {path}: not a readable .h5 weights file ({exc})") from None
    _load_legacy_encoder(backbone, path, file_layers, backbone_name)


def check_bn_momentum(momentum: Any) -> None:
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum < 1.0:
        raise ConfigError(f"model.bn_momentum must be a number in [0, 1), got {momentum!r}")


def set_bn_momentum(model: Any, momentum: float) -> None:
    """Set the moving-average momentum of every BatchNormalization layer.

    Keras' 0.99 needs thousands of steps before the inference-mode statistics match the data. The
    classification_models encoders normalise raw 0..255 pixels with a BatchNormalization layer whose moving
    variance starts at 1, so after a short run (a CPU demo, a few epochs on a small competition) the
    validation and OOF predictions saturate although the training loss looks fine. 0.9 (PyTorch's
    default) converges within ~50 steps and costs nothing on long runs.
    """
    import tf_keras as keras

    check_bn_momentum(momentum)
    for layer in model.submodules:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def activation(cfg: Config) -> str:
    """``model.activation``: ``auto`` is softmax for multiclass (one class per pixel, the probabilities sum to 1)
    and a sigmoid per channel for the other tasks (foreground and border overlap, so do multilabel classes; a binary
    mask is one channel)."""
    value = cfg.model.activation
    if value == "auto":
        task = task_of(cfg.data.task)
        return "softmax" if task.class_per_pixel and not task.classes_overlap else "sigmoid"
    return str(value)


def build_model(cfg: Config, n_channels: int) -> Any:
    """keras.Model with input (None, None, 3) and ``n_channels`` sigmoid (or softmax, :func:`activation`)
    outputs, weights per ``model.*``.

    The activation is a separate float32 layer so that under mixed precision the probabilities (and the
    loss computed from them) stay in float32; without mixed precision it is an ordinary activation.
    """
    model_cfg = cfg.model
    arch, backbone_name = model_arch(model_cfg), model_cfg.backbone
    init_file = _existing_file(model_cfg.init_from, "model.init_from") if model_cfg.init_from else None
    if arch == SCRATCH_ARCH:
        network, built, encoder_file, description = build_scratch_unet(model_cfg, n_channels), [], None, SCRATCH_ARCH
    else:
        network, built, encoder_file = _segmentation_models_network(model_cfg, arch, n_channels)
        description = f"{arch}/{backbone_name}"

    import tf_keras as keras

    probabilities = keras.layers.Activation(activation(cfg), dtype="float32", name="probabilities")(network.output)
    model = keras.Model(network.input, probabilities, name=network.name if arch == SCRATCH_ARCH else f"{arch}_{backbone_name}")
    set_bn_momentum(model, model_cfg.bn_momentum)
    if encoder_file is not None:
        _load_encoder_weights(model, built[0], encoder_file, description, backbone_name)
    if init_file is not None:
        try:
            model.load_weights(str(init_file))
        except (ValueError, OSError, KeyError) as exc:
            raise ConfigError(f"model.init_from {init_file}: does not fit a {description} model with "
                              f"{n_channels} channels: {exc}") from None
    return model


def describe_model(model: Any) -> str:
    """One line for the logs: the network's name and its parameter count."""
    return f"{model.name}: {model.count_params():,} parameters"


def _segmentation_models_network(model_cfg: ModelSection, arch: str,
                                 n_channels: int) -> tuple[Any, list, Path | None]:
    """segmentation_models' ``arch`` with ``backbone`` and linear outputs; the encoder it built internally
    (for loading a local encoder file) and that file, if ``encoder_weights`` names one."""
    backbone_name = model_cfg.backbone
    sm = _segmentation_models()
    _check_backbone(sm, backbone_name)
    encoder_weights = model_cfg.encoder_weights
    encoder_file = None
    if encoder_weights not in (None, "imagenet"):
        encoder_file = _existing_file(encoder_weights, "model.encoder_weights")
    with _capturing_backbone(sm) as built:
        try:
            network = getattr(sm, arch)(
                backbone_name, input_shape=(None, None, 3), classes=n_channels, activation="linear",
                encoder_weights=None if encoder_file else encoder_weights,
                encoder_freeze=bool(model_cfg.encoder_freeze),
            )
        except Exception as exc:  # keras' get_file raises a bare Exception when the download fails
            if encoder_weights == "imagenet" and "URL fetch failure" in str(exc):
                raise ConfigError(
                    f"model.encoder_weights=imagenet: the {backbone_name} ImageNet weights could not be downloaded "
                    f"({exc}). Offline (e.g. a Kaggle kernel with the internet off), set model.encoder_weights to a "
                    f"local .h5 file from an attached dataset, or train from scratch with model.arch={SCRATCH_ARCH} "
                    "and model.encoder_weights=null.") from None
            raise
    return network, built, encoder_file


def save_weights(model: Any, path: str | Path) -> Path:
    """Write the model's weights atomically, without the optimizer's state.

    Keras chooses the file format from the file name (``.weights.h5`` → the structural format that
    ``load_weights`` expects for that name), so the staging file ends with the target's name too. Keras
    also stores Adam's two moment slots there, tripling the file (172 MB instead of 58 MB for a resnet18
    U-Net) that a Kaggle weights dataset has to upload; only the model's own groups are copied over.
    """
    import h5py

    path = Path(path)
    with atomic_path(path) as tmp:
        staging = tmp.with_name(f"{tmp.name}.{path.name}")
        try:
            model.save_weights(str(staging))
            with h5py.File(staging, "r") as src, h5py.File(tmp, "w") as dst:
                for key, value in src.attrs.items():
                    dst.attrs[key] = value
                for key in src:
                    if key != "optimizer":
                        src.copy(src[key], dst, name=key)
        finally:
            staging.unlink(missing_ok=True)
    return path


class _ArrayStore:
    """A weights store that hands out numpy arrays instead of h5py datasets (see :func:`load_weights`)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, path: str) -> dict[str, np.ndarray]:
        return {key: value[()] for key, value in self.store.get(path).items()}


def load_weights(model: Any, path: str | Path) -> None:
    """Load a :func:`save_weights` file into a compiled model's layers, under any strategy and dtype policy.

    ``model.load_weights`` also restores the optimizer and the compiled metrics' running totals. The file
    has no optimizer state, and a ``LossScaleOptimizer`` (mixed_float16) crashes on the mismatch while
    formatting its warning; a metric total is a SUM-synchronised variable under MirroredStrategy, whose
    cross-replica assign divides the raw h5py dataset by the replica count and fails. Neither is state
    worth restoring, so both are skipped, and values are read as numpy arrays before they are assigned.
    """
    from tf_keras.src.saving import saving_lib

    skipped = {id(tracked) for tracked in (getattr(model, "optimizer", None), *model.metrics) if tracked is not None}
    store = saving_lib.H5IOStore(str(path), mode="r")
    try:
        saving_lib._load_state(model, weights_store=_ArrayStore(store), assets_store=None, inner_path="",
                               visited_trackables=skipped)
    finally:
        store.close()


def inverse_frequency_weights(pixel_counts: np.ndarray, power: float) -> np.ndarray:
    """Per-channel weights ``(1 / frequency) ** power`` from the channels' target pixel counts, mean 1.

    Rare classes (a bicyclist is 0.25 % of CamVid's pixels, the road 30 %) otherwise add almost nothing to the
    loss, while the mean IoU over classes counts each class the same. ``power`` softens the ratio (0: no
    weighting, 1: full inverse frequency; the chest X-ray solutions used about 0.35). A channel without a pixel
    in the fold gets the largest weight of the others.
    """
    counts = np.asarray(pixel_counts, dtype=np.float64)
    present = counts > 0
    if not present.any():
        return np.ones(len(counts), np.float32)
    weights = np.zeros(len(counts))
    weights[present] = (counts.sum() / counts[present]) ** power
    weights[~present] = weights[present].max()
    return (weights * (len(counts) / weights.sum())).astype(np.float32)


def channel_weights(cfg: Config, n_channels: int, pixel_counts: np.ndarray | None = None) -> np.ndarray | None:
    """``train.channel_weights`` scaled to mean 1 (so the loss keeps its usual range), or None.

    ``auto`` (multiclass only): :func:`inverse_frequency_weights` of the training fold's ``pixel_counts`` at
    ``train.channel_weight_power``; without counts (the config check before any image is read) None.
    """
    weights = cfg.train.channel_weights
    power = cfg.train.channel_weight_power
    if weights is None:
        return None
    if weights == "auto":
        if not task_of(cfg.data.task).class_per_pixel:
            raise ConfigError("train.channel_weights: auto weighs the classes of a multiclass task by their pixel "
                              f"frequency; data.task is {cfg.data.task}: give a list of {n_channels} numbers or null")
        return None if pixel_counts is None else inverse_frequency_weights(pixel_counts, float(power))
    if not isinstance(weights, list) or len(weights) != n_channels:
        raise ConfigError(f"train.channel_weights must be a list of {n_channels} numbers (one per channel), "
                          f"got {weights!r}")
    try:
        values = np.asarray(weights, dtype=np.float32)
    except (TypeError, ValueError):
        raise ConfigError(f"train.channel_weights must contain numbers, got {weights!r}") from None
    if np.any(values < 0) or not np.isfinite(values).all() or values.sum() <= 0:
        raise ConfigError(f"train.channel_weights must be finite, non-negative and not all zero, got {weights!r}")
    return values * (n_channels / values.sum())


def build_loss(cfg: Config, n_channels: int, weights: np.ndarray | None = None) -> Any:
    """The ``train.loss`` combination of segmentation_models losses, weighted per channel if asked.

    sm's Dice/Jaccard losses take class weights; its BCE and focal losses do not, so with weights
    they are evaluated per channel and averaged with the same weights. ``weights``: the resolved
    :func:`channel_weights` (``auto`` needs the fold's pixel counts); None reads the config's list.

    Under a softmax (multiclass) the pixel term is categorical: ``bce`` → categorical cross-entropy,
    ``focal`` → categorical focal loss. For multiclass the whole loss is masked (:func:`void_masked`): a
    void pixel (all-zero target) contributes nothing to either term.
    """
    name = cfg.train.loss
    sm = _segmentation_models()
    from segmentation_models.base import Loss

    if weights is None:
        weights = channel_weights(cfg, n_channels)

    class PerChannelLoss(Loss):
        def __init__(self, loss: Any, weights: np.ndarray) -> None:
            super().__init__(name=f"weighted_{loss.name}")
            self.loss, self.weights = loss, [float(w) for w in weights]

        def __call__(self, gt: Any, pr: Any) -> Any:
            terms = [w * self.loss(gt[..., c:c + 1], pr[..., c:c + 1]) for c, w in enumerate(self.weights) if w]
            return sum(terms) / len(self.weights)

    pixel_name, _, region_name = name.partition("_")
    if activation(cfg) == "softmax":
        pixel = sm.losses.CategoricalCELoss() if pixel_name == "bce" else sm.losses.CategoricalFocalLoss()
    else:
        pixel = sm.losses.BinaryCELoss() if pixel_name == "bce" else sm.losses.BinaryFocalLoss()
    if weights is not None:
        pixel = PerChannelLoss(pixel, weights)
    loss = pixel
    if region_name:
        region_class = sm.losses.DiceLoss if region_name == "dice" else sm.losses.JaccardLoss
        loss = pixel + region_class(class_weights=weights)
    return void_masked(loss) if task_of(cfg.data.task).class_per_pixel else loss


def void_masked(loss: Any) -> Any:
    """``loss`` with void pixels left out: where the target is all-zero (``data.schema.unlabelled: ignore``,
    augmentation borders) the prediction is replaced by a constant epsilon in every channel, so the pixel terms
    are 0 there (CE of a zero target; BCE of epsilon against 0) and Dice/Jaccard count no false positive, and no
    gradient reaches the network from void. Not exactly 0: sm's categorical CE divides the prediction by its sum
    over the channels, 0/0 there. The cross-entropy mean still divides by every pixel, void ones included (a
    constant factor per batch)."""
    from segmentation_models.base import Loss

    class VoidMaskedLoss(Loss):
        def __init__(self) -> None:
            super().__init__(name=f"void_masked_{loss.name}")

        def __call__(self, gt: Any, pr: Any) -> Any:
            import tensorflow as tf

            valid = tf.cast(tf.reduce_max(gt, axis=-1, keepdims=True), pr.dtype)
            epsilon = tf.constant(1e-7, pr.dtype)
            return loss(gt, pr * valid + (1.0 - valid) * epsilon)

    return VoidMaskedLoss()


def preprocess_fn(cfg: Config) -> Callable[[np.ndarray], np.ndarray]:
    """The backbone's input normalisation: uint8 RGB (batch or single image) → float32, input untouched."""
    if model_arch(cfg.model) == SCRATCH_ARCH:
        return scratch_preprocess
    sm = _segmentation_models()
    backbone_name = cfg.model.backbone
    _check_backbone(sm, backbone_name)
    normalise = sm.get_preprocessing(backbone_name)

    def preprocess(images: np.ndarray) -> np.ndarray:
        # Copy first: keras-applications normalisations work in place on float arrays.
        return np.asarray(normalise(np.array(images, dtype=np.float32)), dtype=np.float32)

    return preprocess
