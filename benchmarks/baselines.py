"""The baselines kseg must beat on real data, written the way they usually appear in public notebooks.

- Classical, instance: Otsu threshold + distance-transform watershed, no learning (polarity and minimum
  area are chosen on the training images, so it is not handicapped by a bad guess; H&E uses the
  haematoxylin channel, where nuclei are the bright objects, instead of gray).
- Classical, binary: Otsu threshold keeping the largest component or all of them, or the all-empty
  submission, whichever (polarity and components included) scores the higher Dice on the training images.
- Plain U-Net: the beginner notebook — one train split, a foreground-only sigmoid output, random crops
  with flips, constant LR, threshold 0.5 (connected components for instances), no TTA, no folds, no search.
- Notebook fg+border U-Net (issue 8, instance): the strong 60-line notebook — a small from-scratch U-Net
  with foreground + border outputs, per-image standardised input with dark-on-bright images inverted,
  random crops, cosine LR, kseg's watershed with its default parameters, 4-flip TTA, one model, no search.
- Notebook fg U-Net (binary): the same notebook's tricks where a binary mask can use them — the small
  U-Net with a foreground output only, standardised input (not inverted), cosine LR, 4-flip TTA,
  threshold 0.5.
- Classical, multiclass: no learning, the location prior — each pixel gets the class most frequent at that
  position in the training class maps (road scenes: sky on top, road below), void left out.
- Plain U-Net, multiclass: the beginner notebook's softmax U-Net (resnet18, background + one channel per
  class), categorical cross-entropy (a void pixel's all-zero target adds nothing to it), constant LR, argmax.
- Notebook softmax U-Net (multiclass): the small U-Net with a softmax over background + classes,
  standardised input, categorical CE + Dice with void masked, cosine LR, 4-flip TTA, argmax.

The trained baselines run for a **wall-clock budget** (the time is checked before every step, the steps
done are recorded), so every trained row of a set gets the same seconds, whatever each step costs.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.color import rgb2hed
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label
from skimage.segmentation import watershed

from kseg.config import DEFAULTS
from kseg.metric import image_score, task_score
from kseg.model import set_bn_momentum, void_masked
from kseg.postprocess import instances_from_probs, remove_small
from kseg.targets import make_targets
from kseg.tta import predict_image

FLIPS = ["identity", "hflip", "vflip", "hvflip"]
MIN_AREAS = (0, 20, 60, 150)
# The binary classical baseline keeps all of Otsu's foreground, or only its largest component (one object per
# image, as in most binary sets, where the rest is speckle).
COMPONENTS = ("all", "largest")


# ------------------------------------------------------------------------------------------ classical

def _otsu_foreground(image: np.ndarray, bright_objects: bool, stain: str = "gray") -> np.ndarray:
    """Otsu's threshold of the lightly smoothed channel (gray, or haematoxylin for H&E), on the objects' side."""
    channel = rgb2hed(image)[..., 0] if stain == "hed" else image.mean(axis=2) / 255.0
    smooth = gaussian(channel, sigma=1.0)
    threshold = threshold_otsu(smooth)
    return smooth > threshold if bright_objects else smooth < threshold


def _otsu_candidates(image: np.ndarray, bright_objects: bool, stain: str = "gray", min_distance: int = 5) -> np.ndarray:
    """Instances from Otsu's threshold split by a watershed on the distance transform, before any area filter."""
    foreground = _otsu_foreground(image, bright_objects, stain)
    distance = ndi.distance_transform_edt(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=label(foreground), exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-distance, markers, mask=foreground)


def otsu_watershed(image: np.ndarray, bright_objects: bool, min_area: int, stain: str = "gray") -> np.ndarray:
    """The classical prediction: Otsu + distance watershed, instances under ``min_area`` pixels dropped."""
    return remove_small(_otsu_candidates(image, bright_objects, stain), min_area)


def fit_otsu_watershed(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], stain: str = "gray") -> dict:
    """Choose polarity and minimum area on the training images (grid, competition metric). One watershed
    per image and polarity; the area filter is applied to it for every ``min_area``."""
    best = {"score": -1.0}
    for bright in (True, False):
        candidates = [_otsu_candidates(image, bright, stain) for image in images]
        for min_area in MIN_AREAS:
            score = float(np.mean([image_score(t, remove_small(c, min_area)) for c, t in zip(candidates, truths)]))
            if score > best["score"]:
                best = {"score": score, "bright_objects": bright, "min_area": min_area, "stain": stain}
    return best


def _keep_components(foreground: np.ndarray, components: str) -> np.ndarray:
    """All of the foreground, or its largest 8-connected component (kseg's binary connectivity)."""
    if components == "all":
        return foreground
    labels = label(foreground, connectivity=2)
    areas = np.bincount(labels.ravel())
    areas[0] = 0
    return labels == int(areas.argmax()) if labels.max() else foreground


def otsu_binary(image: np.ndarray, fitted: Mapping[str, Any]) -> np.ndarray:
    """The binary classical prediction (bool mask) of :func:`fit_otsu_binary`'s choice."""
    if fitted["empty"]:
        return np.zeros(image.shape[:2], bool)
    return _keep_components(_otsu_foreground(image, fitted["bright_objects"]), fitted["components"])


def fit_otsu_binary(images: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> dict:
    """Choose on the training images, by mean Dice (``task_score``, as kseg scores a binary set), between the
    all-empty submission (what a set of mostly empty images rewards) and Otsu's threshold with either
    polarity and either :data:`COMPONENTS` rule. Empty wins ties: it is the simpler submission."""
    best = {"score": float(np.mean([task_score(m, np.zeros_like(m), "binary") for m in masks])), "empty": True}
    for bright in (True, False):
        foregrounds = [_otsu_foreground(image, bright) for image in images]
        for components in COMPONENTS:
            score = float(np.mean([task_score(m, _keep_components(f, components), "binary")
                                   for f, m in zip(foregrounds, masks)]))
            if score > best["score"]:
                best = {"score": score, "empty": False, "bright_objects": bright, "components": components}
    return best


# ------------------------------------------------------------------------------------------ training loop

@dataclass(frozen=True)
class TrainBudget:
    """Wall-clock seconds of training, and the crops: ``max_steps`` caps the steps (quick runs)."""

    seconds: float
    size: int = 256
    batch: int = 8
    lr: float = 1e-3
    max_steps: int | None = None
    seed: int = 42


@dataclass
class Trained:
    """A trained baseline model and what its budget bought."""

    model: Any
    steps: int
    seconds: float


def _random_crops(inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], size: int, batch: int,
                  seed: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The usual notebook generator: random crop + flips, one sample at a time in Python. Images of any
    size (reflect-padded when smaller than the crop)."""
    rng = np.random.default_rng(seed)
    while True:
        xs, ys = [], []
        for _ in range(batch):
            k = rng.integers(len(inputs))
            x, y = inputs[k], targets[k]
            ph, pw = max(0, size - x.shape[0]), max(0, size - x.shape[1])
            if ph or pw:
                x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="reflect")
                y = np.pad(y, ((0, ph), (0, pw), (0, 0)), mode="reflect")
            top, left = rng.integers(0, x.shape[0] - size + 1), rng.integers(0, x.shape[1] - size + 1)
            x, y = x[top:top + size, left:left + size], y[top:top + size, left:left + size]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(x)
            ys.append(y)
        yield np.stack(xs).astype(np.float32), np.stack(ys).astype(np.float32)


def train_for_budget(model: Any, batches: Iterator, budget: TrainBudget, cosine: bool) -> Trained:
    """``train_on_batch`` until ``budget.seconds`` are spent (checked before each step; at least one step).
    With ``cosine`` the LR follows a cosine over the *elapsed fraction of the budget*, so it reaches ~0
    when the time is up however fast the steps are."""
    start, steps = time.perf_counter(), 0
    while True:
        elapsed = time.perf_counter() - start
        if steps and (elapsed >= budget.seconds or (budget.max_steps is not None and steps >= budget.max_steps)):
            break
        if cosine:
            fraction = min(1.0, elapsed / budget.seconds)
            model.optimizer.learning_rate.assign(budget.lr * 0.5 * (1.0 + math.cos(math.pi * fraction)))
        model.train_on_batch(*next(batches))
        steps += 1
    return Trained(model, steps, time.perf_counter() - start)


# ------------------------------------------------------------------------------------------ plain U-Net

def _plain_input(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255.0


def train_plain_unet(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], budget: TrainBudget,
                     backbone: str = "resnet18") -> Trained:
    """A foreground-only segmentation_models U-Net trained with a Python generator at constant LR."""
    import segmentation_models as sm
    import tensorflow as tf

    tf.keras.utils.set_random_seed(budget.seed)
    model = sm.Unet(backbone, encoder_weights=None, classes=1, activation="sigmoid", input_shape=(None, None, 3))
    set_bn_momentum(model, 0.9)  # the same BatchNorm fix as kseg, so the baseline is not crippled by short runs
    model.compile(tf.keras.optimizers.Adam(budget.lr), loss=sm.losses.bce_jaccard_loss)
    batches = _random_crops([_plain_input(i) for i in images], [m[..., None].astype(np.float32) for m in masks],
                            budget.size, budget.batch, budget.seed)
    return train_for_budget(model, batches, budget, cosine=False)


def plain_unet_foreground(model: Any, image: np.ndarray) -> np.ndarray:
    """Threshold 0.5 on the whole image (padded to a multiple of 32), no TTA: the binary prediction."""
    return predict_image(model.predict_on_batch, _plain_input(image), ["identity"])[..., 0] > 0.5


def predict_plain_unet(model: Any, image: np.ndarray) -> np.ndarray:
    """The instance prediction: connected components of :func:`plain_unet_foreground`."""
    return label(plain_unet_foreground(model, image), connectivity=1)


# ------------------------------------------------------------------------------------------ fg+border U-Net

def standardise(image: np.ndarray) -> np.ndarray:
    """Per-image standardisation (zero mean, unit variance over all pixels and channels)."""
    x = image.astype(np.float32)
    return (x - x.mean()) / max(float(x.std()), 1e-6)


def notebook_input(image: np.ndarray) -> np.ndarray:
    """:func:`standardise`; dark-on-bright images (median above mean: the bright background is most of the
    pixels) are inverted first, so objects are always bright."""
    x = image.astype(np.float32)
    gray = x.mean(axis=2)
    if np.median(gray) > gray.mean():
        x = 255.0 - x
    return standardise(x)


def small_unet(filters: int = 16, depth: int = 4, out_channels: int = 2, activation: str = "sigmoid") -> Any:
    """The plain Keras U-Net of the notebooks: (conv3x3-BN-ReLU)x2 per level, max-pool down, transposed
    conv up, skip concatenation, sigmoid (or softmax) outputs. Input sizes must be multiples of ``2**depth``."""
    import tensorflow as tf

    layers = tf.keras.layers

    def block(x: Any, n: int) -> Any:
        for _ in range(2):
            x = layers.Conv2D(n, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9)(x)
            x = layers.Activation("relu")(x)
        return x

    inputs = layers.Input((None, None, 3))
    x, skips = inputs, []
    for level in range(depth):
        x = block(x, filters * 2 ** level)
        skips.append(x)
        x = layers.MaxPooling2D()(x)
    x = block(x, filters * 2 ** depth)
    for level in reversed(range(depth)):
        x = layers.Conv2DTranspose(filters * 2 ** level, 2, strides=2, padding="same")(x)
        x = block(layers.Concatenate()([x, skips[level]]), filters * 2 ** level)
    outputs = layers.Conv2D(out_channels, 1, activation=activation)(x)
    return tf.keras.Model(inputs, outputs, name="notebook_unet")


def _train_small_unet(inputs: Sequence[np.ndarray], targets: Sequence[np.ndarray], budget: TrainBudget,
                      loss: Any = None, activation: str = "sigmoid") -> Trained:
    """:func:`small_unet` with one output per target channel, BCE + Dice (or ``loss``), Adam with a cosine LR
    over the time budget."""
    import segmentation_models as sm
    import tensorflow as tf

    tf.keras.utils.set_random_seed(budget.seed)
    model = small_unet(out_channels=targets[0].shape[-1], activation=activation)
    model.compile(tf.keras.optimizers.Adam(budget.lr), loss=loss or sm.losses.bce_dice_loss)
    batches = _random_crops(inputs, targets, budget.size, budget.batch, budget.seed)
    return train_for_budget(model, batches, budget, cosine=True)


def train_fgborder_unet(images: Sequence[np.ndarray], labels: Sequence[np.ndarray], budget: TrainBudget,
                        border_width: int = 2) -> Trained:
    """Foreground + border targets (kseg's own, so the watershed reads them the same way)."""
    targets = [make_targets(lab, "instance", None, 0, border_width) for lab in labels]
    return _train_small_unet([notebook_input(i) for i in images], targets, budget)


def predict_fgborder_unet(model: Any, image: np.ndarray) -> np.ndarray:
    """4-flip TTA mean of the probabilities, then kseg's watershed with its default parameters (no search)."""
    probs = predict_image(model.predict_on_batch, notebook_input(image), FLIPS, multiple=16)
    return instances_from_probs(probs, DEFAULTS["postprocess"]["default"])


# ------------------------------------------------------------------------------------------ fg U-Net (binary)

def train_fg_unet(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], budget: TrainBudget) -> Trained:
    """The fg+border notebook's recipe on a binary mask: one foreground output. The input is standardised but
    never inverted: a binary set's images (colonoscopy frames, say) have no dark-object convention, and the
    median-above-mean test would flip frames with a black corner box at random."""
    return _train_small_unet([standardise(i) for i in images], [m[..., None].astype(np.float32) for m in masks],
                             budget)


def predict_fg_unet(model: Any, image: np.ndarray) -> np.ndarray:
    """4-flip TTA mean of the foreground probability, threshold 0.5 (bool mask)."""
    return predict_image(model.predict_on_batch, standardise(image), FLIPS, multiple=16)[..., 0] > 0.5


# ------------------------------------------------------------------------------------------ multiclass

def fit_location_prior(truths: Sequence[np.ndarray], n_classes: int, shape: tuple[int, int] | None = None) -> np.ndarray:
    """The class map of the most frequent class at each pixel position over the training class maps (resized to
    ``shape``, nearest, when sizes differ; default the first map's size), void and background left out."""
    import cv2

    shape = shape or truths[0].shape
    votes = np.zeros((*shape, n_classes + 1), np.int32)
    for truth in truths:
        if truth.shape != shape:
            truth = cv2.resize(truth, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)
        values = truth.astype(np.int64)
        valid = (values >= 1) & (values <= n_classes)
        rows, cols = np.nonzero(valid)
        np.add.at(votes, (rows, cols, values[valid]), 1)
    return np.argmax(votes, axis=-1).astype(np.int32)


def location_prior(prior: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The prior at an image's size (nearest-neighbour resize)."""
    import cv2

    if prior.shape == tuple(shape):
        return prior
    return cv2.resize(prior, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def train_plain_softmax_unet(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], n_classes: int,
                             budget: TrainBudget, backbone: str = "resnet18") -> Trained:
    """The beginner notebook's multiclass U-Net: segmentation_models' Unet with a softmax over background +
    ``n_classes``, one-hot targets (void all-zero), categorical cross-entropy, constant LR."""
    import segmentation_models as sm
    import tensorflow as tf

    tf.keras.utils.set_random_seed(budget.seed)
    model = sm.Unet(backbone, encoder_weights=None, classes=n_classes + 1, activation="softmax",
                    input_shape=(None, None, 3))
    set_bn_momentum(model, 0.9)
    model.compile(tf.keras.optimizers.Adam(budget.lr), loss=sm.losses.categorical_crossentropy)
    targets = [make_targets(t, "multiclass", None, n_classes, 0) for t in truths]
    batches = _random_crops([_plain_input(i) for i in images], targets, budget.size, budget.batch, budget.seed)
    return train_for_budget(model, batches, budget, cosine=False)


def predict_plain_softmax_unet(model: Any, image: np.ndarray) -> np.ndarray:
    """Argmax of the whole image's softmax (padded to a multiple of 32), no TTA: the class map."""
    return np.argmax(predict_image(model.predict_on_batch, _plain_input(image), ["identity"]), axis=-1).astype(np.int32)


def train_softmax_unet(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], n_classes: int,
                       budget: TrainBudget) -> Trained:
    """The fg+border notebook's recipe for exclusive classes: the small U-Net with a softmax, standardised input,
    categorical CE + Dice with void pixels masked out (as kseg's loss does), cosine LR."""
    import segmentation_models as sm

    masked = void_masked(sm.losses.CategoricalCELoss() + sm.losses.DiceLoss())
    targets = [make_targets(t, "multiclass", None, n_classes, 0) for t in truths]
    return _train_small_unet([standardise(i) for i in images], targets, budget, loss=masked, activation="softmax")


def predict_softmax_unet(model: Any, image: np.ndarray) -> np.ndarray:
    """4-flip TTA mean of the softmax, argmax (the class map)."""
    return np.argmax(predict_image(model.predict_on_batch, standardise(image), FLIPS, multiple=16), axis=-1).astype(np.int32)
