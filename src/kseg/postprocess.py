"""Network probabilities → label images: seeded watershed for instances, thresholding for binary masks.

The instance model predicts a ``foreground`` and a ``border`` channel (see ``targets.channel_names``).
``energy = clip(foreground - border, 0, 1)`` is high in cell interiors and low on the lines where cells
touch, so its connected components above ``seed_threshold`` are one seed per cell, and a watershed of
``-energy`` inside ``foreground > fg_threshold`` grows every seed back out to the cell's full extent.

Every task's post-processing is one :class:`PostProcessor` (:data:`POSTPROCESSORS`), split where ``kseg.search``
reuses work: ``build`` makes candidates from its expensive parameters (``build_axes``: the watershed of
:func:`instance_candidates` depends only on ``fg_threshold`` and ``seed_threshold``), ``finish`` filters them by
the cheap ones (``filter_axes``: ``min_area`` is a filter on areas counted once, :func:`remove_small`), so a grid
search runs one build per point of the expensive axes and one filter per point of the cheap ones, and
:func:`instances_from_probs` is the same two steps. A new post-processor is one entry there (and its
parameters' checks in :func:`validate_params`).

A binary mask (``binary``) is the 8-connected components of ``foreground > fg_threshold``, less those under
``min_area``, and nothing at all when what remains covers fewer than ``empty_area`` pixels: the empty-image
rule of the TGS and SIIM solutions, where many images have no mask and a stray blob costs a whole image.

A multi-class exclusive task (``multiclass``) predicts background + one channel per class: the class map is
the per-pixel argmax (:func:`class_map`; channel k = class id k, 0 = no class), or, with a ``class_threshold``,
the most probable class where its probability reaches its threshold (the Severstal solutions' per-class
thresholds, for sigmoid outputs above all), and ``min_area`` then drops a class from an image when it covers
fewer pixels there (:func:`remove_small_classes`, Severstal's per-class minimum size). Each is one value for
every class or one per class (a list in class-id order), which the OOF search chooses class by class: a class's
pixels depend on its own threshold and area alone, so the choice per class is exact. A multilabel task
(``multilabel``) has the same parameters on a sigmoid per class: class k is wherever its own probability reaches its
threshold (0.5 by default), whatever the other classes do (:func:`class_bits`, a bit per class).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy import ndimage
from skimage.segmentation import watershed

from kseg.classmaps import MAX_OVERLAPPING_CLASSES, VOID, class_areas, drop_classes
from kseg.errors import ConfigError, DataError
from kseg.tasks import TASKS, task_of

__all__ = [
    "PARAM_KEYS",
    "validate_params",
    "as_probabilities",
    "seeds_for",
    "watershed_from_seeds",
    "fill_enclosed_holes",
    "instance_candidates",
    "binary_components",
    "remove_small",
    "label_objects",
    "instances_from_probs",
    "predict_class",
    "class_map",
    "class_bits",
    "remove_small_classes",
    "PostProcessor",
    "OPTIONAL_PARAMS",
    "POSTPROCESSORS",
]

# Keys a task may leave out of postprocess.default: no class_threshold is the argmax, no empty_area keeps any mask.
OPTIONAL_PARAMS = {"class_threshold": None, "empty_area": 0}
# 4-connectivity, the same as skimage's watershed default, so seeds, flooding and leftovers agree.
_FOUR_CONNECTED = ndimage.generate_binary_structure(2, 1)
# A binary mask's objects touching only diagonally are still one object when dropping speckle.
_EIGHT_CONNECTED = ndimage.generate_binary_structure(2, 2)


def validate_params(params: Mapping[str, Any], task: str = "instance") -> dict[str, Any]:
    """Checked copy of ``params``; a missing/unknown key or a bad value raises ``ConfigError`` naming it.

    Keys the task does not use (``seed_threshold``/``fill_holes`` for binary) are allowed, so one
    ``postprocess.default`` works for both tasks, but they are still type-checked.
    """
    task_of(task)
    if not isinstance(params, Mapping):
        raise ConfigError(f"post-processing params must be a mapping, got {params!r}")
    unknown = sorted(set(params) - set(_ALL_KEYS))
    if unknown:
        raise ConfigError(f"unknown post-processing param '{unknown[0]}' (valid: {', '.join(_ALL_KEYS)})")
    missing = [key for key in PARAM_KEYS[task] if key not in params and key not in OPTIONAL_PARAMS]
    if missing:
        raise ConfigError(f"post-processing param '{missing[0]}' is missing (task {task} needs {', '.join(PARAM_KEYS[task])})")
    checked: dict[str, Any] = {key: value for key, value in OPTIONAL_PARAMS.items() if key in PARAM_KEYS[task]}
    for key, value in params.items():
        if key in ("fg_threshold", "seed_threshold"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0 or math.isnan(value):
                raise ConfigError(f"post-processing param '{key}' must be a number in [0, 1], got {value!r}")
            checked[key] = float(value)
        elif key == "class_threshold":
            checked[key] = _class_threshold(value, task_of(task).class_per_pixel, task_of(task).classes_overlap)
        elif key == "empty_area":
            if not _is_area(value):
                raise ConfigError(f"post-processing param 'empty_area' must be an integer >= 0, got {value!r}")
            checked[key] = int(value)
        elif key == "min_area" and task_of(task).class_per_pixel and isinstance(value, (list, tuple)):
            if not value or not all(_is_area(v) for v in value):
                raise ConfigError(f"post-processing param 'min_area' must be an integer >= 0 or a list of them (one "
                                  f"per class), got {value!r}")
            checked[key] = [int(v) for v in value]
        elif key == "min_area":
            if not _is_area(value):
                raise ConfigError(f"post-processing param 'min_area' must be an integer >= 0, got {value!r}")
            checked[key] = int(value)
        else:
            if not isinstance(value, (bool, np.bool_)):
                raise ConfigError(f"post-processing param 'fill_holes' must be true or false, got {value!r}")
            checked[key] = bool(value)
    return checked


def _is_threshold(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and 0.0 <= value <= 1.0


def _class_threshold(value: Any, per_class: bool, overlapping: bool) -> float | list[float | None] | None:
    """``class_threshold``: null (the argmax, background included; for ``overlapping`` classes, which have no
    argmax, 0.5), a probability, or (multiclass, multilabel) one of them per class in class-id order."""
    unset = 0.5 if overlapping else None
    if value is None or _is_threshold(value):
        return unset if value is None else float(value)
    if per_class and isinstance(value, (list, tuple)) and value and all(v is None or _is_threshold(v) for v in value):
        return [unset if v is None else float(v) for v in value]
    raise ConfigError(f"post-processing param 'class_threshold' must be null, a number in [0, 1] or a list of them "
                      f"(one per class), got {value!r}")


def _is_area(value: Any) -> bool:
    return not isinstance(value, (bool, np.bool_)) and isinstance(value, (int, np.integer)) and bool(value >= 0)


def as_probabilities(probs: np.ndarray, task: str = "instance") -> np.ndarray:
    """(H, W, C) float32 in [0, 1] from uint8 (×255, as the OOF files store them) or float probabilities."""
    needed = task_of(task).min_channels
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[-1] < needed:
        raise DataError(
            f"probabilities must be (height, width, channels) with at least {needed} channel(s) for task {task}, "
            f"got shape {probs.shape}"
        )
    if probs.dtype == np.uint8:
        return probs.astype(np.float32) / 255.0
    if not np.issubdtype(probs.dtype, np.floating):
        raise DataError(f"probabilities must be uint8 (×255) or float in [0, 1], got dtype {probs.dtype}")
    low, high = float(np.min(probs, initial=0.0)), float(np.max(probs, initial=0.0))
    if not (0.0 <= low and high <= 1.0):  # also catches NaN
        raise DataError(f"float probabilities must lie in [0, 1], got values in [{low}, {high}]")
    return probs.astype(np.float32, copy=False)


def seeds_for(energy: np.ndarray, seed_threshold: float, fg_mask: np.ndarray) -> np.ndarray:
    """int32 markers: 4-connected components of ``energy > seed_threshold`` inside the foreground."""
    markers, _ = ndimage.label((energy > seed_threshold) & fg_mask, structure=_FOUR_CONNECTED)
    return markers.astype(np.int32, copy=False)


def watershed_from_seeds(energy: np.ndarray, markers: np.ndarray, fg_mask: np.ndarray) -> np.ndarray:
    """Grow ``markers`` over ``-energy`` inside ``fg_mask``; foreground pieces holding no seed become their own instances.

    Without the second step a small or faint cell whose interior never clears ``seed_threshold`` would
    vanish although the network clearly saw it as foreground; as its own instance it can still match
    (and ``min_area`` still removes it if it is mere speckle).
    """
    labels = watershed(-energy, markers, mask=fg_mask).astype(np.int32, copy=False)
    unseeded, n_unseeded = ndimage.label(fg_mask & (labels == 0), structure=_FOUR_CONNECTED)
    if n_unseeded:
        offset = int(labels.max())
        labels = np.where(unseeded > 0, unseeded + offset, labels).astype(np.int32)
    return labels


def fill_enclosed_holes(labels: np.ndarray) -> np.ndarray:
    """Give every background region enclosed by exactly one instance to that instance.

    Equivalent to ``binary_fill_holes`` per instance restricted to background pixels (a hole never
    swallows a neighbouring instance), computed for all instances at once: label the background's
    4-connected regions, drop those touching the image edge, find the instance labels 4-adjacent to
    each remaining region and fill the regions that have a single neighbour.
    """
    background, n_regions = ndimage.label(labels == 0, structure=_FOUR_CONNECTED)
    inner = np.ones(n_regions + 1, bool)
    inner[0] = False
    inner[np.concatenate([background[0], background[-1], background[:, 0], background[:, -1]])] = False
    if not inner.any():
        return labels
    in_hole = inner[background]
    codes = []
    stride = np.int64(labels.max()) + 1
    for hole_part, region_part, label_part in (
        (in_hole[1:], background[1:], labels[:-1]), (in_hole[:-1], background[:-1], labels[1:]),
        (in_hole[:, 1:], background[:, 1:], labels[:, :-1]), (in_hole[:, :-1], background[:, :-1], labels[:, 1:]),
    ):
        touching = hole_part & (label_part > 0)
        codes.append(region_part[touching].astype(np.int64) * stride + label_part[touching])
    region_label = np.unique(np.concatenate(codes))
    regions, neighbour_labels = region_label // stride, (region_label % stride).astype(np.int32)
    neighbours = np.bincount(regions, minlength=n_regions + 1)
    enclosing = np.zeros(n_regions + 1, np.int32)
    enclosing[regions] = neighbour_labels
    fill_with = np.where(inner & (neighbours == 1), enclosing, 0)
    filled = fill_with[background]
    return np.where(filled > 0, filled, labels).astype(np.int32)


def instance_candidates(probs: np.ndarray, fg_threshold: float, seed_threshold: float, fill_holes: bool) -> np.ndarray:
    """Instance label image before the ``min_area`` filter (``probs`` already float, see :func:`as_probabilities`)."""
    foreground = probs[..., 0]
    energy = np.clip(foreground - probs[..., 1], 0.0, 1.0)
    fg_mask = foreground > fg_threshold
    labels = watershed_from_seeds(energy, seeds_for(energy, seed_threshold, fg_mask), fg_mask)
    return fill_enclosed_holes(labels) if fill_holes else labels


def binary_components(foreground: np.ndarray, fg_threshold: float) -> np.ndarray:
    """8-connected components of ``foreground > fg_threshold`` (int32), the units ``min_area`` removes."""
    components, _ = ndimage.label(foreground > fg_threshold, structure=_EIGHT_CONNECTED)
    return components.astype(np.int32, copy=False)


def remove_small(labels: np.ndarray, min_area: int, areas: np.ndarray | None = None) -> np.ndarray:
    """Drop labels with fewer than ``min_area`` pixels and renumber the rest 1..n in their original order.

    ``areas`` (``np.bincount(labels.ravel())``) may be passed in, so a search computes it once per
    label image and filters it for every ``min_area``.
    """
    if areas is None:
        areas = np.bincount(labels.ravel())
    keep = areas >= min_area
    keep[0] = False
    new_label = np.zeros(areas.size, np.int32)
    new_label[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return new_label[labels]


def label_objects(labels: np.ndarray, task: str) -> np.ndarray:
    """The objects of a label image: itself for instances, the 8-connected components of a binary mask (the
    units ``min_area`` removes), so object counts, matches and errors mean the same for both tasks; a class map
    is itself too (each class of an image one object, the unit its ``min_area`` removes; in a multilabel map each set
    of classes that shares pixels), void pixels as background (they are nobody's object)."""
    kind = task_of(task)
    if kind.class_per_pixel:
        return np.where(labels == VOID, 0, labels).astype(np.int32)
    return binary_components(labels.astype(np.float32), 0.5) if kind.one_mask_per_image else labels


def class_map(probs: np.ndarray, threshold: float | Sequence[float | None] | None = None) -> np.ndarray:
    """int32 class map (channel k = class id k, 0 = no class).

    ``threshold`` None: the per-pixel argmax over background + class channels. Otherwise each pixel takes its
    most probable class k (background left out) where ``probs[..., k]`` reaches class k's threshold (one number
    for all, or one per class id 1..n), and no class elsewhere; a class whose threshold is None keeps the argmax
    rule (it beats the background), so a list of None is exactly the argmax.
    """
    if threshold is None:
        return np.argmax(probs, axis=-1).astype(np.int32)
    limits = _class_limits(threshold, probs.shape[-1] - 1)
    best = np.argmax(probs[..., 1:], axis=-1)
    top = np.take_along_axis(probs[..., 1:], best[..., None], axis=-1)[..., 0]
    limit = limits[best]
    keep = np.where(np.isnan(limit), top > probs[..., 0], top >= limit)
    return np.where(keep, best + 1, 0).astype(np.int32)


def _class_limits(threshold: float | Sequence[float | None], n_classes: int) -> np.ndarray:
    """``class_threshold`` as one float per class id 1..n, NaN where a class's threshold is None."""
    limits = np.array([np.nan if t is None else t for t in threshold] if isinstance(threshold, (list, tuple))
                      else [threshold] * n_classes, np.float32)
    if limits.size != n_classes:
        raise DataError(f"class_threshold has {limits.size} values for {n_classes} classes")
    return limits


def class_bits(probs: np.ndarray, threshold: float | Sequence[float | None] | None = None) -> np.ndarray:
    """int32 class map of a multilabel run, a bit per class (:mod:`kseg.classmaps`; channel k = class id k): class
    k wherever ``probs[..., k]`` reaches its threshold, whatever the other classes do (one number for all, or one
    per class id 1..n; None, for a class or all of them, is 0.5, a sigmoid's even odds)."""
    n_classes = probs.shape[-1] - 1
    if n_classes > MAX_OVERLAPPING_CLASSES:
        raise DataError(f"{n_classes} classes: a multilabel run has at most {MAX_OVERLAPPING_CLASSES}")
    limits = np.nan_to_num(_class_limits(0.5 if threshold is None else threshold, n_classes), nan=0.5)
    bits = np.zeros(probs.shape[:2], np.int32)
    for class_id in range(1, n_classes + 1):
        bits |= (probs[..., class_id] >= limits[class_id - 1]).astype(np.int32) << (class_id - 1)
    return bits


def remove_small_classes(classes: np.ndarray, min_area: int | Sequence[int], areas: np.ndarray | None = None,
                         overlapping: bool = False) -> np.ndarray:
    """Drop (no class) every class covering fewer than its ``min_area`` pixels of the image: one number for all
    classes or one per class id 1..n. ``areas`` (``np.bincount(classes.ravel())``) may be passed in, as
    :func:`remove_small` does, so the OOF search counts once per image; ``overlapping``: a bit per class."""
    if areas is None:
        areas = np.bincount(classes.ravel())
    per_class = class_areas(areas, overlapping)
    if isinstance(min_area, (list, tuple, np.ndarray)):
        limits = np.zeros(max(per_class.size, len(min_area) + 1), np.int64)
        limits[1:len(min_area) + 1] = min_area
        limits = limits[:per_class.size]
    else:
        limits = np.full(per_class.size, min_area, np.int64)
    small = [k for k in range(1, per_class.size) if 0 < per_class[k] < limits[k]]
    return drop_classes(classes, small, overlapping)


def _binary_mask(components: np.ndarray, params: Mapping[str, Any], areas: np.ndarray) -> np.ndarray:
    """The 0/1 mask of the components of at least ``min_area`` pixels, empty when they cover < ``empty_area``."""
    kept = remove_small(components, params["min_area"], areas)
    if params["empty_area"] and int(areas[1:][areas[1:] >= params["min_area"]].sum()) < params["empty_area"]:
        return np.zeros_like(kept)
    return (kept > 0).astype(np.int32)


@dataclass(frozen=True)
class PostProcessor:
    """A task's post-processing, as the OOF search reuses it: ``build(probs, params)`` the candidates of the
    ``build_axes`` values (expensive), ``finish(candidates, params, areas)`` the labels after the ``filter_axes``
    values (cheap; ``areas`` is ``np.bincount(candidates.ravel())``, counted once per candidates). ``fixed``
    parameters are part of the params but never searched."""

    build_axes: tuple[str, ...]
    filter_axes: tuple[str, ...]
    build: Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]
    finish: Callable[[np.ndarray, Mapping[str, Any], np.ndarray], np.ndarray]
    fixed: tuple[str, ...] = ()

    @property
    def axes(self) -> tuple[str, ...]:
        """The searched parameters, expensive first (the order of a grid's points)."""
        return self.build_axes + self.filter_axes

    @property
    def params(self) -> tuple[str, ...]:
        return self.axes + self.fixed


POSTPROCESSORS: dict[str, PostProcessor] = {
    "instance": PostProcessor(
        ("fg_threshold", "seed_threshold"), ("min_area",),
        lambda probs, p: instance_candidates(probs, p["fg_threshold"], p["seed_threshold"], p["fill_holes"]),
        lambda labels, p, areas: remove_small(labels, p["min_area"], areas), fixed=("fill_holes",)),
    "binary": PostProcessor(
        ("fg_threshold",), ("min_area", "empty_area"),
        lambda probs, p: binary_components(probs[..., 0], p["fg_threshold"]), _binary_mask),
    "multiclass": PostProcessor(
        ("class_threshold",), ("min_area",),
        lambda probs, p: class_map(probs, p["class_threshold"]),
        lambda classes, p, areas: remove_small_classes(classes, p["min_area"], areas)),
    "multilabel": PostProcessor(
        ("class_threshold",), ("min_area",),
        lambda probs, p: class_bits(probs, p["class_threshold"]),
        lambda bits, p, areas: remove_small_classes(bits, p["min_area"], areas, overlapping=True)),
}
# The parameters each task's post-processing takes.
PARAM_KEYS: dict[str, tuple[str, ...]] = {name: POSTPROCESSORS[name].params for name in TASKS}
_ALL_KEYS = tuple(dict.fromkeys(key for params in PARAM_KEYS.values() for key in params))


def instances_from_probs(probs: np.ndarray, params: Mapping[str, Any], task: str = "instance") -> np.ndarray:
    """int32 label image (labels 1..n, never overlapping) for instances, a 0/1 mask for the binary task, or a
    class map (0 = no class, k = class id k; multilabel a bit per class) for the pixel-class tasks: the task's
    :class:`PostProcessor`, built and finished."""
    checked = validate_params(params, task)
    processor = POSTPROCESSORS[task]
    candidates = processor.build(as_probabilities(probs, task), checked)
    return processor.finish(candidates, checked, np.bincount(candidates.ravel()))


def predict_class(probs: np.ndarray, classes: Sequence[str]) -> str | None:
    """The image's class: argmax of the class channels (the last ``len(classes)``) summed over the foreground.

    Each pixel is weighted by its foreground probability, so the background (where the class channels
    carry no signal) does not vote; an image with no foreground at all falls back to unweighted sums.
    ``None`` when the run has no classes.
    """
    if not classes:
        return None
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[-1] < len(classes) + 1:
        raise DataError(
            f"probabilities of shape {probs.shape} cannot hold a foreground channel and {len(classes)} class channels"
        )
    values = probs.astype(np.float64)
    class_probs = values[..., -len(classes):].reshape(-1, len(classes))
    weights = values[..., 0].ravel()
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    return str(classes[int(np.argmax(weights @ class_probs))])
