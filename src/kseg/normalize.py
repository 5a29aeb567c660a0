"""Per-image input normalisation, applied identically in training, OOF, prediction and the kernels.

Competition images differ in intensity range by an order of magnitude between microscopes, stains and
modalities (dark fluorescence, bright brightfield, 16-bit phase contrast). A network trained on raw
pixels has to learn every range separately; stretching each image by its own percentiles, as stardist
and cellpose do, gives it one range to learn. The result is still uint8 RGB (0..255), so the backbone's
own preprocessing (and therefore ImageNet weights) apply unchanged on top, and the in-memory training
cache stays one byte per pixel.

Normalisation is per *whole image*, before cropping: statistics of a random crop (mostly background in
sparse fluorescence) would stretch noise and differ from what the full test image gets.

Polarity (``model.invert: auto``). A set that mixes modalities mixes bright objects on a dark ground
(fluorescence) with dark objects on a bright one (H&E, brightfield); a small network then learns two
problems from few images each. Inverting the dark-object images makes them one problem. Which images
to invert is learned from the training labels, not guessed from brightness: each training image's
polarity is measured (mean intensity inside its objects minus outside), and when the images disagree a
linear rule on three label-free statistics of the image (median, skew, colourfulness) is fitted to tell
them apart, so test images get the same treatment. The rule is written into ``plan.json``. A set whose
images agree (almost every competition) inverts nothing, so ``auto`` changes nothing there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable

import numpy as np

from .config import NORMS, Config
from .errors import DataError

__all__ = ["NORMS", "Polarity", "NO_INVERSION", "normalise_image", "input_normaliser", "polarity_features",
           "object_contrast", "fit_polarity", "polarity_from_dict", "stretched"]

# none: the pixels as read; percentile: per channel, [p_low, p_high] -> [0, 255] (stardist's
# normalize(x, 1, 99.8)); standardize: per channel z-score, +-3 sigma -> [0, 255].
# channel: each channel stretched by its own statistics (stardist: fluorescence channels are independent
# stains); image: one stretch from the statistics of all channels together, which keeps an RGB photograph's
# colours (H&E, endoscopy, street scenes) as they are relative to each other.
PERCENTILES = (1.0, 99.8)
_SIGMAS = 3.0
# Polarity: a training image whose objects differ from their ground by less than this (of the stretched
# [0, 1] range) says nothing about polarity (phase contrast: halo and body cancel); when at least this
# share of the decisive images agree, the set has one polarity and nothing is inverted.
DECISIVE_CONTRAST = 0.05
AGREEMENT = 0.9
POLARITY_FEATURES = ("median", "skew", "colourfulness")
POLARITY_MODES = ("none", "rule")


@dataclass(frozen=True)
class Polarity:
    """Which images ``model.invert: auto`` inverts: none, or those a fitted linear rule calls dark-object.

    The rule is ``weights · (features - mean) / scale + bias > 0`` on :func:`polarity_features` of the
    stretched image; ``reason`` says for people reading plan.json what the training labels showed."""

    mode: str
    reason: str
    weights: tuple[float, ...] = ()
    bias: float = 0.0
    mean: tuple[float, ...] = ()
    scale: tuple[float, ...] = ()

    def inverts(self, stretched: np.ndarray) -> bool:
        """Whether an image, stretched to [0, 1] (H, W, C), is inverted."""
        if self.mode == "none":
            return False
        z = (polarity_features(stretched) - np.asarray(self.mean)) / np.asarray(self.scale)
        return float(z @ np.asarray(self.weights) + self.bias) > 0.0


NO_INVERSION = Polarity("none", "model.invert is not auto")


def polarity_features(stretched: np.ndarray) -> np.ndarray:
    """Median and skew ((mean - median) / std) of the gray image, and mean colourfulness (max - min over
    channels): sparse bright nuclei give a low median and positive skew, a stained slide a high median,
    negative skew and colour. Label-free, so test images get them too."""
    gray = stretched.mean(axis=2)
    median = float(np.median(gray))
    skew = (float(gray.mean()) - median) / max(float(gray.std()), 1e-6)
    colourfulness = float((stretched.max(axis=2) - stretched.min(axis=2)).mean())
    return np.array([median, skew, colourfulness])


def object_contrast(stretched: np.ndarray, labels: np.ndarray) -> float | None:
    """Mean gray inside the objects minus outside (positive: bright objects); None without both."""
    gray = stretched.mean(axis=2)
    inside = np.asarray(labels) > 0
    if not inside.any() or inside.all():
        return None
    return float(gray[inside].mean() - gray[~inside].mean())


def fit_polarity(samples: Iterable[tuple[np.ndarray, np.ndarray]]) -> Polarity:
    """The :class:`Polarity` for training ``(stretched image in [0, 1], labels)`` pairs.

    Images with less than :data:`DECISIVE_CONTRAST` between objects and ground are left out. When at least
    :data:`AGREEMENT` of the rest share one polarity, nothing is inverted (one polarity is one problem
    already; inverting all of a dark-object set would only move ImageNet-like input away from ImageNet).
    Otherwise a logistic regression on :func:`polarity_features` separates them; it is kept only when it
    classifies at least :data:`AGREEMENT` of the training images right.
    """
    features, dark = [], []
    for stretched, labels in samples:
        contrast = object_contrast(stretched, labels)
        if contrast is not None and abs(contrast) >= DECISIVE_CONTRAST:
            features.append(polarity_features(stretched))
            dark.append(contrast < 0)
    n, n_dark = len(dark), int(sum(dark))
    counts = f"{n_dark} of {n} training images with clear contrast show dark objects"
    if n == 0:
        return Polarity("none", "no training image shows objects clearly brighter or darker than their ground: "
                                "nothing inverted")
    if max(n_dark, n - n_dark) >= AGREEMENT * n:
        return Polarity("none", f"{counts}: one polarity, nothing inverted")
    from sklearn.linear_model import LogisticRegression

    x, y = np.array(features), np.array(dark)
    mean, scale = x.mean(axis=0), np.where(x.std(axis=0) > 1e-6, x.std(axis=0), 1.0)
    model = LogisticRegression().fit((x - mean) / scale, y)
    accuracy = float(model.score((x - mean) / scale, y))
    if accuracy < AGREEMENT:
        return Polarity("none", f"{counts}, but their {', '.join(POLARITY_FEATURES)} do not tell them apart "
                                f"(a linear rule gets {accuracy:.0%} right): nothing inverted")
    return Polarity("rule", f"{counts}: those a rule on {', '.join(POLARITY_FEATURES)} calls dark-object are "
                            f"inverted ({accuracy:.0%} of the training images right)",
                    tuple(float(w) for w in model.coef_[0]), float(model.intercept_[0]),
                    tuple(float(m) for m in mean), tuple(float(s) for s in scale))


def polarity_from_dict(value: Any, where: str) -> Polarity:
    """A :class:`Polarity` read back from plan.json; one DataError naming ``where`` otherwise."""
    try:
        polarity = Polarity(mode=str(value["mode"]), reason=str(value.get("reason", "")),
                            weights=tuple(float(w) for w in value.get("weights", ())),
                            bias=float(value.get("bias", 0.0)),
                            mean=tuple(float(m) for m in value.get("mean", ())),
                            scale=tuple(float(s) for s in value.get("scale", ())))
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise DataError(f"{where}: not a polarity rule ({error!r})") from None
    n = len(POLARITY_FEATURES)
    if polarity.mode not in POLARITY_MODES or (polarity.mode == "rule" and not (
            len(polarity.weights) == len(polarity.mean) == len(polarity.scale) == n and all(polarity.scale))):
        raise DataError(f"{where}: polarity mode {polarity.mode!r} needs one of {', '.join(POLARITY_MODES)} and, "
                        f"for a rule, {n} weights, means and non-zero scales")
    return polarity


def _stretch(image: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """``(image - low) / (high - low)`` per channel, clipped to [0, 1]; a flat channel becomes 0."""
    span = np.where(high > low, high - low, 1.0)
    scaled = (image - low) / span
    scaled[..., high <= low] = 0.0
    return np.clip(scaled, 0.0, 1.0)


def normalise_image(image: np.ndarray, norm: str = "percentile", invert: bool | Polarity = False,
                    scope: str = "channel") -> np.ndarray:
    """uint8 (H, W, 3) → uint8 (H, W, 3): stretch by ``norm`` (per channel, or with ``scope="image"`` one stretch
    from all channels' pixels), then inversion (always, never, or where a fitted :class:`Polarity` says)."""
    if image.ndim != 3:
        raise ValueError(f"expected an (height, width, channels) image, got shape {image.shape}")
    if norm == "none" and (invert is False or invert == NO_INVERSION):
        return image
    pixels = image.astype(np.float32)
    channels = image.shape[-1]
    axes = (0, 1) if scope == "channel" else None

    def per_channel(value: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(value, np.float32), (channels,)).copy()

    if norm == "percentile":
        low, high = (per_channel(v) for v in np.percentile(pixels, PERCENTILES, axis=axes))
        scaled = _stretch(pixels, low, high)
    elif norm == "standardize":
        mean, std = per_channel(pixels.mean(axis=axes)), per_channel(pixels.std(axis=axes))
        scaled = _stretch(pixels, mean - _SIGMAS * std, mean + _SIGMAS * std)
    else:
        scaled = pixels / 255.0
    if invert is True or (isinstance(invert, Polarity) and invert.inverts(scaled)):
        scaled = 1.0 - scaled
    return np.round(scaled * 255.0).astype(np.uint8)


def stretched(image: np.ndarray, norm: str, scope: str = "channel") -> np.ndarray:
    """The image after ``norm``'s stretch and before any inversion, in [0, 1]: what polarity is judged on."""
    return normalise_image(image, norm, False, scope).astype(np.float32) / 255.0


def input_normaliser(cfg: Config, polarity: Polarity | None = None) -> Callable[[np.ndarray], np.ndarray]:
    """The normalisation of ``model.input_norm`` / ``model.invert`` as an image → image function, then the
    ``model.extra_channels`` (:mod:`kseg.channels`) computed from the normalised image.
    ``model.invert: auto`` needs the run's fitted ``polarity`` (plan.json); without one nothing is inverted."""
    from .channels import check_extra_channels, with_extra_channels

    norm, invert = cfg.model.input_norm, cfg.model.invert
    extras, scope = check_extra_channels(cfg.model), cfg.model.input_norm_scope
    rule: bool | Polarity = (polarity or NO_INVERSION) if invert == "auto" else bool(invert)

    def normalise(image: np.ndarray) -> np.ndarray:
        return with_extra_channels(normalise_image(image, norm, rule, scope), extras)

    return normalise
