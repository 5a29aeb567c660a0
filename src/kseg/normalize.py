"""Per-image input normalisation, applied identically in training, OOF, prediction and the kernels.

Competition images differ in intensity range by an order of magnitude between microscopes, stains and
modalities (dark fluorescence, bright brightfield, 16-bit phase contrast). A network trained on raw
pixels has to learn every range separately; stretching each image by its own percentiles, as stardist
and cellpose do, gives it one range to learn. The result is still uint8 RGB (0..255), so the backbone's
own preprocessing (and therefore ImageNet weights) apply unchanged on top, and the in-memory training
cache stays one byte per pixel.

Normalisation is per *whole image*, before cropping: statistics of a random crop (mostly background in
sparse fluorescence) would stretch noise and differ from what the full test image gets.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from .errors import ConfigError

__all__ = ["NORMS", "normalise_image", "input_normaliser", "check_norm_config"]

# none: the pixels as read; percentile: per channel, [p_low, p_high] -> [0, 255] (stardist's
# normalize(x, 1, 99.8)); standardize: per channel z-score, +-3 sigma -> [0, 255].
NORMS = ("none", "percentile", "standardize")
# model.invert: false never; true always; auto per image, when the normalised image is mostly bright (objects
# are then usually dark on a bright ground: brightfield, H&E), so that every image shows bright objects.
PERCENTILES = (1.0, 99.8)
AUTO_INVERT_MEDIAN = 0.5
_SIGMAS = 3.0


def check_norm_config(model_cfg: Mapping[str, Any]) -> tuple[str, bool | str]:
    """``(model.input_norm, model.invert)`` checked; one ConfigError naming the key otherwise."""
    norm, invert = model_cfg["input_norm"], model_cfg["invert"]
    if norm not in NORMS:
        raise ConfigError(f"model.input_norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if not (invert is True or invert is False or invert == "auto"):
        raise ConfigError(f"model.invert must be true, false or auto, got {invert!r}")
    return norm, invert


def _stretch(image: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``(image - low) / (high - low)`` per channel, clipped to [0, 1]; a flat channel becomes 0."""
    span = np.where(high > low, high - low, 1.0)
    scaled = (image - low) / span
    scaled[..., high <= low] = 0.0
    return np.clip(scaled, 0.0, 1.0)


def normalise_image(image: np.ndarray, norm: str = "percentile", invert: bool | str = False) -> np.ndarray:
    """uint8 (H, W, 3) → uint8 (H, W, 3): per-channel stretch by ``norm``, then optional inversion."""
    if image.ndim != 3:
        raise ValueError(f"expected an (height, width, channels) image, got shape {image.shape}")
    if norm == "none" and invert is False:
        return image
    pixels = image.astype(np.float32)
    if norm == "percentile":
        low, high = np.percentile(pixels, PERCENTILES, axis=(0, 1))
        scaled = _stretch(pixels, low, high)
    elif norm == "standardize":
        mean, std = pixels.mean(axis=(0, 1)), pixels.std(axis=(0, 1))
        scaled = _stretch(pixels, mean - _SIGMAS * std, mean + _SIGMAS * std)
    else:
        scaled = pixels / 255.0
    if invert is True or (invert == "auto" and float(np.median(scaled.mean(axis=2))) > AUTO_INVERT_MEDIAN):
        scaled = 1.0 - scaled
    return np.round(scaled * 255.0).astype(np.uint8)


def input_normaliser(cfg: Mapping[str, Any]) -> Callable[[np.ndarray], np.ndarray]:
    """The normalisation of ``model.input_norm`` / ``model.invert`` as an image → image function."""
    norm, invert = check_norm_config(cfg["model"])

    def normalise(image: np.ndarray) -> np.ndarray:
        return normalise_image(image, norm, invert)

    return normalise
