"""Training targets: a label image becomes the stacked channels the network learns to predict.

Instance segmentation is learned as semantic segmentation, in the style of the DSB 2018 winners: a
``foreground`` channel, a ``border`` channel that marks where touching instances meet (so a watershed
can split them later) and, when the competition has image classes, one channel per class.

A multi-class exclusive task (``multiclass``) is learned as what it is: one channel per pixel class after a
``background`` channel, one-hot, so a softmax over the channels and a per-pixel argmax give the class map
directly (channel k = class id k); ``multilabel`` has the same channels with a 1 in every class a pixel has, for a
sigmoid per channel. Void pixels (``data.schema.unlabelled: ignore``) are all-zero in every
channel: the masked loss (``model.build_loss``) leaves them out, and the background channel is then simply
never the target.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from skimage.morphology import disk
from skimage.segmentation import find_boundaries

from .classmaps import class_mask
from .errors import ConfigError, DataError
from .run import RunDir
from .tasks import task_of

__all__ = ["channel_names", "make_targets", "check_border_width", "read_channels"]



def channel_names(task: str, classes: Sequence[str]) -> list[str]:
    """Names of the target channels, in order; a binary task has no instances to separate or classify; for
    multiclass ``classes`` are the pixel classes in class-id order (``data.class_names``)."""
    kind = task_of(task)
    if kind.one_mask_per_image:
        return ["foreground"]
    if kind.class_per_pixel:
        return ["background", *(f"class:{name}" for name in classes)]
    return ["foreground", "border", *(f"class:{name}" for name in classes)]


def check_border_width(border_width: Any) -> None:
    """``train.border_width``: how far (pixels) the border target reaches between touching instances."""
    if isinstance(border_width, bool) or not isinstance(border_width, int) or border_width < 0:
        raise ConfigError(f"train.border_width must be a non-negative integer, got {border_width!r}")


def _touching_zone(labels: np.ndarray, border_width: int) -> np.ndarray:
    """Pixels of an instance that have a *different* instance within ``border_width`` pixels.

    One max filter and one min filter over a disk: a pixel sees another instance nearby exactly when the
    largest label or the smallest non-zero label in its neighbourhood differs from its own.
    """
    footprint = disk(border_width).astype(bool)
    values = labels.astype(np.int64)
    largest = ndimage.maximum_filter(values, footprint=footprint, mode="constant", cval=0)
    background_as_max = np.where(values > 0, values, np.iinfo(np.int64).max)
    smallest = ndimage.minimum_filter(background_as_max, footprint=footprint, mode="constant",
                                      cval=np.iinfo(np.int64).max)
    return (values > 0) & ((largest != values) | (smallest != values))


def make_targets(labels: np.ndarray, task: str, cls_index: int | None, n_classes: int,
                 border_width: int) -> np.ndarray:
    """float32 (H, W, C) targets in {0, 1}, channels as :func:`channel_names`.

    ``border`` = instance contours plus the zone within ``border_width`` pixels of where two instances
    meet; it is a subset of the foreground, so ``foreground − border`` leaves one seed per instance.
    Class channel ``k`` is the foreground when the image's class index is ``k`` and empty otherwise.
    multiclass: ``labels`` is a class map (0 background, 1..n_classes, VOID) and the targets its one-hot
    over background + ``n_classes`` channels; VOID and any id above ``n_classes`` is all-zero (ignored). multilabel:
    the same channels from a bit per class (:mod:`kseg.classmaps`), several of them 1 where classes share a pixel.
    """
    kind = task_of(task)
    if labels.ndim != 2:
        raise DataError(f"a label image must be 2-D (height, width), got shape {labels.shape}")
    check_border_width(border_width)
    if kind.class_per_pixel:
        return np.stack([class_mask(labels, class_id, kind.classes_overlap) for class_id in range(n_classes + 1)],
                        axis=-1).astype(np.float32)
    foreground = labels > 0
    if kind.one_mask_per_image:
        return foreground[..., None].astype(np.float32)
    if cls_index is not None and not 0 <= cls_index < n_classes:
        raise DataError(f"class index {cls_index} is outside the {n_classes} classes of the run")
    targets = np.zeros((*labels.shape, 2 + n_classes), np.float32)
    targets[..., 0] = foreground
    contours = find_boundaries(labels, mode="inner") & foreground
    targets[..., 1] = contours | _touching_zone(labels, border_width)
    if cls_index is not None:
        targets[..., 2 + cls_index] = foreground
    return targets


def read_channels(run_dir: Path, task: str) -> tuple[list[str], list[str]]:
    """Channel names and classes a run was trained with (``channels.json``), checked against ``data.task``."""
    path = RunDir(run_dir).channels
    if not path.is_file():
        raise DataError(f"{path} not found: train the run first (kseg train) so OOF predictions exist")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: not valid JSON ({error})") from None
    channels, classes = info.get("channels"), info.get("classes", [])
    if not isinstance(channels, list) or not channels or not isinstance(classes, list):
        raise DataError(f"{path}: expected a non-empty 'channels' list and a 'classes' list, got {info!r}")
    if info.get("task", task) != task:
        raise ConfigError(f"{path}: the run was trained for task {info['task']!r} but data.task is {task!r}")
    return channels, [str(c) for c in classes]
