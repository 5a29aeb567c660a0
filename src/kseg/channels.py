"""Extra input channels computed from the image (``model.extra_channels``), identical everywhere it is read.

Small medical and microscopy sets are often one gray channel stored as three identical ones; the winning
heart-valve solution fed the network the image with a denoised copy and a threshold layer instead, so the two
spare channels carried features the network would otherwise spend its few images learning. Each name here is
one such channel; the input stays three uint8 channels (so ImageNet encoders and the uint8 training cache apply
unchanged): channel 0 is the image's gray level, then the extras in config order, then the gray level again
where fewer than two extras are named. The channels are computed after ``model.input_norm`` (and inversion) by
:func:`kseg.normalize.input_normaliser`, the one function training, OOF, prediction and the kernels call.
"""
from __future__ import annotations

from typing import Callable, Sequence

import cv2
import numpy as np

from .config import ModelSection
from .errors import ConfigError

__all__ = ["EXTRA_CHANNELS", "MAX_EXTRA_CHANNELS", "check_extra_channels", "with_extra_channels", "gray"]

# The input is three channels and the first is the image itself.
MAX_EXTRA_CHANNELS = 2


def gray(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W) luminance of a uint8 (H, W, 3) RGB image (its single channel when the three are equal)."""
    if image.shape[-1] == 1:
        return image[..., 0]
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)


def _median(level: np.ndarray) -> np.ndarray:
    """Median blur (5 x 5): speckle and sensor noise gone, edges kept."""
    return cv2.medianBlur(level, 5)


def _denoised(level: np.ndarray) -> np.ndarray:
    """Non-local-means denoising (OpenCV, filter strength 10): texture-preserving, slower than a median."""
    return cv2.fastNlMeansDenoising(level, None, h=10, templateWindowSize=7, searchWindowSize=21)


def _multi_otsu(level: np.ndarray) -> np.ndarray:
    """Three-class Otsu layer: each pixel's class (dark, middle, bright) as 0, 128, 255."""
    from skimage.filters import threshold_multiotsu

    if int(level.min()) == int(level.max()):
        return np.zeros_like(level)
    try:
        thresholds = threshold_multiotsu(level, classes=3)
    except ValueError:  # fewer than three grey levels: no three classes to separate
        return np.where(level > level.min(), 255, 0).astype(np.uint8)
    return (np.digitize(level, thresholds) * 127.5).round().astype(np.uint8)


def _yen(level: np.ndarray) -> np.ndarray:
    """Yen's threshold as a binary layer (0 / 255): the bright structures of a mostly dark image."""
    from skimage.filters import threshold_yen

    if int(level.min()) == int(level.max()):
        return np.zeros_like(level)
    return np.where(level > threshold_yen(level), 255, 0).astype(np.uint8)


EXTRA_CHANNELS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "median": _median,
    "nlmeans": _denoised,
    "multi_otsu": _multi_otsu,
    "yen": _yen,
}


def check_extra_channels(model_cfg: ModelSection) -> list[str]:
    """``model.extra_channels`` checked: a list of at most two distinct registered names."""
    names = model_cfg.extra_channels
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise ConfigError(f"model.extra_channels must be a list of names ({', '.join(EXTRA_CHANNELS)}), got {names!r}")
    unknown = [name for name in names if name not in EXTRA_CHANNELS]
    if unknown:
        raise ConfigError(f"model.extra_channels: unknown channel {unknown[0]!r}; known: {', '.join(EXTRA_CHANNELS)}")
    if len(names) > MAX_EXTRA_CHANNELS or len(set(names)) != len(names):
        raise ConfigError(f"model.extra_channels takes at most {MAX_EXTRA_CHANNELS} distinct names (the input is "
                          f"the gray image plus them, three channels), got {names!r}")
    return list(names)


def with_extra_channels(image: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """uint8 (H, W, 3) → uint8 (H, W, 3): the gray level, the ``names`` channels of it, the gray level again where
    fewer than two are named; the image itself when none are."""
    if not names:
        return image
    level = gray(image)
    layers = [level, *(EXTRA_CHANNELS[name](level) for name in names)]
    layers += [level] * (3 - len(layers))
    return np.stack(layers, axis=-1)
