"""Test-time augmentation: predict the flipped/rotated views of an image, map each back, merge.

All functions work on NHWC numpy batches and never touch TensorFlow; the model enters only as a
``predict_batch(batch) -> probabilities`` callable. ``rot90``, ``rot270`` and ``transpose`` swap height
and width. That is fine because a U-Net is fully convolutional and the image is first padded to a
multiple of 32 in both directions, so a swapped batch is just another valid input size; those views
form their own batch when the padded image is not square.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from kseg.errors import ConfigError, DataError

__all__ = ["VIEWS", "MERGES", "apply_view", "invert_view", "pad_to_multiple", "predict_image", "check_tile", "views_for_orientation", "predict_each", "mean_of",
           "predict_ensemble"]

PredictBatch = Callable[[np.ndarray], np.ndarray]

VIEWS = ("identity", "hflip", "vflip", "hvflip", "rot90", "rot180", "rot270", "transpose")
MERGES = ("mean", "gmean")

# Quarter turns counter-clockwise in the (H, W) plane; flips and transpose are their own inverse.
_ROTATIONS = {"rot90": 1, "rot180": 2, "rot270": 3}
# Geometric mean clips probabilities away from 0 so one confident "no" does not give log(0).
_GMEAN_EPS = 1e-6


def _check_view(name: str) -> None:
    if name not in VIEWS:
        raise ConfigError(f"unknown TTA view {name!r}; valid views: {', '.join(VIEWS)}")


def _check_batch(batch: np.ndarray) -> None:
    if batch.ndim != 4:
        raise DataError(f"TTA views need an NHWC batch (4 dimensions), got shape {batch.shape}")


def apply_view(name: str, batch: np.ndarray) -> np.ndarray:
    """The view ``name`` of every image of an NHWC batch."""
    _check_view(name)
    _check_batch(batch)
    if name in _ROTATIONS:
        return np.rot90(batch, k=_ROTATIONS[name], axes=(1, 2))
    if name == "hflip":
        return batch[:, :, ::-1]
    if name == "vflip":
        return batch[:, ::-1]
    if name == "hvflip":
        return batch[:, ::-1, ::-1]
    if name == "transpose":
        return batch.transpose(0, 2, 1, 3)
    return batch


def invert_view(name: str, batch: np.ndarray) -> np.ndarray:
    """Map predictions made on view ``name`` back to the original orientation."""
    _check_view(name)
    _check_batch(batch)
    if name in _ROTATIONS:
        return np.rot90(batch, k=-_ROTATIONS[name], axes=(1, 2))
    return apply_view(name, batch)


def pad_to_multiple(image: np.ndarray, multiple: int = 32) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad an HWC image at the bottom/right to a multiple of ``multiple``; crop back with ``[:h, :w]``.

    Reflection (rather than zeros) keeps the padded border looking like image, so the network does not
    predict an artificial edge next to the real one.
    """
    if image.ndim != 3:
        raise DataError(f"expected an (height, width, channels) image, got shape {image.shape}")
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ConfigError(f"padding multiple must be a positive integer, got {multiple!r}")
    height, width = image.shape[:2]
    pad_h, pad_w = -height % multiple, -width % multiple
    if pad_h == 0 and pad_w == 0:
        return image, (height, width)
    # numpy reflects repeatedly when the pad is larger than the image, so tiny images work too.
    padded = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="reflect" if min(height, width) > 1 else "edge")
    return padded, (height, width)


def _check_views_and_merge(views: Sequence[str], merge: str) -> None:
    if isinstance(views, str) or not views:
        raise ConfigError(f"TTA views must be a non-empty list of names from {', '.join(VIEWS)}, got {views!r}")
    for name in views:
        _check_view(name)
    if merge not in MERGES:
        raise ConfigError(f"unknown TTA merge {merge!r}; valid: {', '.join(MERGES)}")


def _merge(predictions: list[np.ndarray], merge: str) -> np.ndarray:
    stacked = np.stack(predictions).astype(np.float32, copy=False)
    if merge == "gmean":
        return np.exp(np.log(np.clip(stacked, _GMEAN_EPS, 1.0)).mean(axis=0))
    return stacked.mean(axis=0)


def _predict_views(predict_batch: PredictBatch, image: np.ndarray, views: Sequence[str], merge: str, multiple: int) -> np.ndarray:
    """Every view of one image, one model call per distinct view shape, merged at the image's own size."""
    padded, (height, width) = pad_to_multiple(image, multiple)
    single = padded[None]
    by_shape: dict[tuple[int, ...], list[str]] = {}
    for name in views:
        by_shape.setdefault(apply_view(name, single).shape, []).append(name)
    restored: list[np.ndarray] = []
    for names in by_shape.values():
        batch = np.ascontiguousarray(np.concatenate([apply_view(name, single) for name in names]))
        output = np.asarray(predict_batch(batch))
        if output.ndim != 4 or output.shape[:3] != batch.shape[:3]:
            raise ConfigError(
                f"the model returned shape {output.shape} for an input batch of shape {batch.shape}; "
                "TTA needs a fully convolutional model that keeps the batch size, height and width"
            )
        restored.extend(invert_view(name, output[i : i + 1])[0] for i, name in enumerate(names))
    return _merge(restored, merge)[:height, :width]


def _tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Evenly spread window starts covering ``[0, size)`` with windows of ``tile`` overlapping by at least ``overlap``."""
    if size <= tile:
        return [0]
    count = math.ceil((size - tile) / (tile - overlap)) + 1
    return sorted({int(round(start)) for start in np.linspace(0, size - tile, count)})


def _ramp(length: int, overlap: int) -> np.ndarray:
    """1-D blending weight: rises linearly over ``overlap`` pixels at both ends, never reaching zero."""
    position = np.arange(length, dtype=np.float32)
    return np.minimum(1.0, np.minimum(position + 1, length - position) / max(overlap, 1))


# The views that keep an image's up (upright) and that neither mirror nor turn it (fixed): see plan.orientation_plan.
_ORIENTATION_VIEWS = {"upright": ("identity", "hflip"), "fixed": ("identity",)}


def views_for_orientation(views: Sequence[str], orientation: str) -> list[str]:
    """The TTA ``views`` a run's planned orientation allows (``free``: all of them)."""
    allowed = _ORIENTATION_VIEWS.get(orientation)
    return list(views) if allowed is None else [view for view in views if view in allowed] or ["identity"]


def check_tile(tile: Any, multiple: int = 32) -> None:
    """``predict.tile``: null or a positive multiple of the network's stride (windows must pass through it)."""
    if tile is not None and (isinstance(tile, bool) or not isinstance(tile, int) or tile < multiple or tile % multiple):
        raise ConfigError(f"predict.tile must be null or a positive integer multiple of {multiple}, got {tile!r}")


def predict_image(
    predict_batch: PredictBatch,
    image: np.ndarray,
    views: Sequence[str],
    merge: str = "mean",
    *,
    tile: int | None = None,
    multiple: int = 32,
) -> np.ndarray:
    """(H, W, C) float32 probabilities of one preprocessed HWC image, merged over the TTA ``views``.

    All views sharing a shape go through the model as one batch. With ``tile`` set, an image larger
    than ``tile`` is predicted in overlapping ``tile``×``tile`` windows (overlap ``tile // 4``) blended
    with linear ramps, which bounds memory on very large images and hides seams at window edges.
    """
    _check_views_and_merge(views, merge)
    if image.ndim != 3:
        raise DataError(f"expected an (height, width, channels) image, got shape {image.shape}")
    check_tile(tile, multiple)
    height, width = image.shape[:2]
    if tile is None or (height <= tile and width <= tile):
        return _predict_views(predict_batch, image, views, merge, multiple)
    overlap = tile // 4
    windows = [(top, left) for top in _tile_starts(height, tile, overlap) for left in _tile_starts(width, tile, overlap)]
    weighted_sum: np.ndarray | None = None  # allocated once the first window tells the channel count
    weight_sum = np.zeros((height, width, 1), np.float32)
    for top, left in windows:
        window = image[top : top + tile, left : left + tile]
        probs = _predict_views(predict_batch, window, views, merge, multiple)
        weight = np.outer(_ramp(window.shape[0], overlap), _ramp(window.shape[1], overlap))[..., None]
        if weighted_sum is None:
            weighted_sum = np.zeros((height, width, probs.shape[-1]), np.float32)
        weighted_sum[top : top + window.shape[0], left : left + window.shape[1]] += probs * weight
        weight_sum[top : top + window.shape[0], left : left + window.shape[1]] += weight
    assert weighted_sum is not None  # there is at least one window
    return weighted_sum / weight_sum


def predict_each(
    predict_fns: Sequence[PredictBatch],
    image: np.ndarray,
    views: Sequence[str],
    merge: str = "mean",
    *,
    tile: int | None = None,
    multiple: int = 32,
) -> list[np.ndarray]:
    """Each model's TTA prediction, in order: what scoring every fold model against their ensemble needs.

    Holds all of them at once; :func:`predict_ensemble` keeps only a running sum.
    """
    if not predict_fns:
        raise ConfigError("an ensemble needs at least one model")
    return [predict_image(fn, image, views, merge, tile=tile, multiple=multiple) for fn in predict_fns]


def mean_of(predictions: Iterable[np.ndarray]) -> np.ndarray:
    """The float32 mean of the predictions, summed in order; :func:`predict_ensemble` passes a generator, so
    one prediction is in memory at a time, and the ensemble of :func:`predict_each`'s list is bit for bit the same."""
    total, count = None, 0
    for prediction in predictions:
        total = prediction if total is None else total + prediction
        count += 1
    if total is None:
        raise ConfigError("an ensemble needs at least one model")
    return (total / count).astype(np.float32)


def predict_ensemble(
    predict_fns: Sequence[PredictBatch],
    image: np.ndarray,
    views: Sequence[str],
    merge: str = "mean",
    *,
    tile: int | None = None,
    multiple: int = 32,
) -> np.ndarray:
    """Arithmetic mean over models (e.g. the k fold models) of each model's TTA prediction, summed as they come
    (one prediction in memory at a time); the same numbers as ``mean_of(predict_each(...))``."""
    if not predict_fns:
        raise ConfigError("an ensemble needs at least one model")
    return mean_of(predict_image(fn, image, views, merge, tile=tile, multiple=multiple) for fn in predict_fns)
