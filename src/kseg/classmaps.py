"""Class maps of the pixel-class tasks: one 2-D integer image per image whether its classes are exclusive or not.

- exclusive (``multiclass``): each pixel holds its class id k (1..K), 0 for background, ``VOID`` for void.
- overlapping (``multilabel``, Severstal's defects): bit k-1 is set where class k is, 0 is no class, ``VOID``
  void. A pixel of classes 1 and 3 holds 0b101 = 5. At most :data:`MAX_OVERLAPPING_CLASSES` classes, so that no
  set of classes spells ``VOID`` (every bit of a ``uint16``).

Either way a label image stays one array, so loading, caching, nearest-neighbour crops and resizing, and the
stored OOF truth do not care which; the few places that read a class out of a map (targets, post-processing,
the metric, submission rows) ask here.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from kseg import rle
from kseg.errors import DataError

__all__ = ["BACKGROUND", "VOID", "MAX_OVERLAPPING_CLASSES", "class_mask", "present_classes", "highest_class", "paint",
           "decode", "class_areas", "drop_classes"]

# 0 = no class (background, or a removed prediction); VOID = a truth pixel in no CSV row of a set whose unlabelled
# pixels are ignored (CamVid's void).
BACKGROUND = 0
VOID = int(np.iinfo(np.uint16).max)
MAX_OVERLAPPING_CLASSES = 15


def class_mask(labels: np.ndarray, class_id: int, overlapping: bool) -> np.ndarray:
    """Boolean mask of class ``class_id`` (1..K) in a class map; 0 is the pixels of no class. Void is in none."""
    labels = np.asarray(labels)
    if class_id == BACKGROUND:
        return labels == BACKGROUND
    if not overlapping:
        return labels == class_id
    return ((labels.astype(np.int64) >> (class_id - 1)) & 1).astype(bool) & (labels != VOID)


def present_classes(labels: np.ndarray, overlapping: bool) -> list[int]:
    """The class ids (1..K) that cover at least one pixel of a class map, ascending."""
    areas = class_areas(np.bincount(np.asarray(labels).ravel().astype(np.int64)), overlapping)
    return [k for k in range(1, areas.size) if areas[k]]


def highest_class(labels: np.ndarray, overlapping: bool) -> int:
    """The highest class id a class map holds (0 when it holds none)."""
    present = present_classes(labels, overlapping)
    return present[-1] if present else 0


def paint(masks: Sequence[np.ndarray], class_ids: Sequence[int], shape: tuple[int, int], overlapping: bool,
          fill: int = BACKGROUND) -> np.ndarray:
    """The ``uint16`` class map of one image from one boolean mask per class: pixels in no mask get ``fill`` (0, or
    ``VOID`` where unlabelled pixels are void). Exclusive masks must not share a pixel (the caller checks, with
    the rows' lines); overlapping ones set a bit each."""
    labels = np.zeros(shape, np.uint16)
    covered = np.zeros(shape, bool)
    for mask, class_id in zip(masks, class_ids):
        if overlapping:
            labels[mask] |= np.uint16(1 << (class_id - 1))
        else:
            labels[mask & ~covered] = class_id
        covered |= mask
    if fill != BACKGROUND:
        labels[~covered] = fill
    return labels


def decode(rles: Sequence[str | float | None], class_ids: Sequence[int], shape: tuple[int, int], order: str,
           overlapping: bool, *, fill: int = BACKGROUND, wheres: Sequence[str] | None = None) -> tuple[np.ndarray, int]:
    """The class map of one image from one RLE row per class, and how many pixels two rows claim. Exclusive: the
    first row wins a shared pixel (:func:`kseg.rle.decode_classes`; the caller decides whether that is an error);
    overlapping: every row sets its class's bit, and sharing is no overlap."""
    if not overlapping:
        return rle.decode_classes(rles, class_ids, shape, order, fill=fill, wheres=wheres)
    wheres = wheres if wheres is not None else [f"row {index}" for index in range(1, len(rles) + 1)]
    for class_id, where in zip(class_ids, wheres):
        if not 1 <= class_id <= MAX_OVERLAPPING_CLASSES:
            raise DataError(f"{where}: class id {class_id} is out of range; classes that overlap (data.task "
                            f"multilabel) are ids 1..{MAX_OVERLAPPING_CLASSES}, one bit each")
    masks = [rle.decode(value, shape, order, where=where) for value, where in zip(rles, wheres)]
    return paint(masks, class_ids, shape, True, fill), 0


def class_areas(code_areas: np.ndarray, overlapping: bool) -> np.ndarray:
    """Pixels per class id (index k = class k, index 0 = no class) from ``np.bincount`` of a class map's values,
    void left out: the areas a per-class ``min_area`` compares, counted once per map by the OOF search."""
    areas = np.asarray(code_areas, np.int64).copy()
    if areas.size > VOID:
        areas[VOID] = 0
    if not overlapping:
        return areas
    codes = np.arange(areas.size, dtype=np.int64)
    highest = int(codes[areas > 0].max(initial=0)).bit_length()
    per_class = np.zeros(highest + 1, np.int64)
    per_class[0] = areas[0]
    for class_id in range(1, highest + 1):
        per_class[class_id] = areas[((codes >> (class_id - 1)) & 1).astype(bool)].sum()
    return per_class


def drop_classes(labels: np.ndarray, class_ids: Sequence[int], overlapping: bool) -> np.ndarray:
    """The class map without the given classes (their pixels become no class, or lose that class's bit)."""
    if not len(class_ids):
        return labels
    if not overlapping:
        return np.where(np.isin(labels, class_ids), BACKGROUND, labels).astype(labels.dtype)
    cleared = sum(1 << (k - 1) for k in class_ids)
    return (labels & ~np.array(cleared, labels.dtype)).astype(labels.dtype)
