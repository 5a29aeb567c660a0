"""The two baselines kseg must beat on real data, written the way they usually appear in public notebooks.

- Classical: Otsu threshold + distance-transform watershed, no learning (polarity and minimum area are
  chosen on the training images, so it is not handicapped by a bad guess).
- Plain U-Net: the notebook recipe — one train split, a foreground-only sigmoid output, random crops with
  flips, fixed epochs, threshold 0.5, connected components, no TTA, no folds, no search.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.filters import gaussian, threshold_otsu
from skimage.measure import label
from skimage.segmentation import watershed

from kseg.metric import image_score
from kseg.model import set_bn_momentum


def otsu_watershed(image: np.ndarray, bright_objects: bool, min_area: int, min_distance: int = 5) -> np.ndarray:
    """Instances from Otsu's threshold split by a watershed on the distance transform."""
    gray = gaussian(image.mean(axis=2) / 255.0, sigma=1.0)
    foreground = gray > threshold_otsu(gray) if bright_objects else gray < threshold_otsu(gray)
    distance = ndi.distance_transform_edt(foreground)
    peaks = peak_local_max(distance, min_distance=min_distance, labels=label(foreground), exclude_border=False)
    markers = np.zeros(foreground.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-distance, markers, mask=foreground)
    areas = np.bincount(labels.ravel())
    labels[areas[labels] < min_area] = 0
    return labels


def fit_otsu_watershed(images: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> dict:
    """Choose polarity and minimum area on the training images (grid, competition metric)."""
    best = {"score": -1.0}
    for bright in (True, False):
        for min_area in (0, 20, 60, 150):
            score = float(np.mean([image_score(t, otsu_watershed(i, bright, min_area)) for i, t in zip(images, truths)]))
            if score > best["score"]:
                best = {"score": score, "bright_objects": bright, "min_area": min_area}
    return best


def _random_crops(images: np.ndarray, masks: np.ndarray, size: int, batch: int, seed: int) -> Iterator:
    """The usual notebook generator: random crop + flips, one sample at a time in Python."""
    rng = np.random.default_rng(seed)
    while True:
        xs, ys = [], []
        for _ in range(batch):
            k = rng.integers(len(images))
            h, w = images[k].shape[:2]
            top, left = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            x = images[k][top:top + size, left:left + size]
            y = masks[k][top:top + size, left:left + size]
            if rng.random() < 0.5:
                x, y = x[:, ::-1], y[:, ::-1]
            if rng.random() < 0.5:
                x, y = x[::-1], y[::-1]
            xs.append(x)
            ys.append(y)
        yield np.stack(xs).astype(np.float32) / 255.0, np.stack(ys)[..., None].astype(np.float32)


def train_plain_unet(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], backbone: str, size: int,
                     epochs: int, steps: int, batch: int, lr: float, seed: int):
    """A foreground-only U-Net trained with a Python generator, as in a typical public notebook."""
    import segmentation_models as sm
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    model = sm.Unet(backbone, encoder_weights=None, classes=1, activation="sigmoid", input_shape=(None, None, 3))
    set_bn_momentum(model, 0.9)  # the same BatchNorm fix as kseg, so the baseline is not crippled by short runs
    model.compile(tf.keras.optimizers.Adam(lr), loss=sm.losses.bce_jaccard_loss)
    model.fit(_random_crops(np.stack(images), np.stack(masks), size, batch, seed), steps_per_epoch=steps,
              epochs=epochs, verbose=0)
    return model


def predict_plain_unet(model, image: np.ndarray) -> np.ndarray:
    """Threshold 0.5 and connected components, full image padded to a multiple of 32."""
    h, w = image.shape[:2]
    ph, pw = -h % 32, -w % 32
    x = np.pad(image, ((0, ph), (0, pw), (0, 0)), mode="reflect").astype(np.float32) / 255.0
    prob = model.predict_on_batch(x[None])[0, :h, :w, 0]
    return label(prob > 0.5, connectivity=1)
