"""Competition metrics on label images, by name: instance mAP, Dice, IoU, TGS, Airbus F2, class mean IoU.

The instance score of one image is the mean over IoU thresholds t = 0.50, 0.55, ..., 0.95 of
TP / (TP + FP + FN), where a true and a predicted object match when their IoU is strictly above t.
The whole IoU matrix comes from a single ``np.bincount`` of (truth label, prediction label) pairs,
so scoring costs one pass over the pixels however many objects an image holds.

``METRICS`` / ``metric_by_name`` give every competition metric a config name, so a task can say
``metric: tgs_ap_iou`` instead of branching on strings; each entry says what kind of image it scores.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kseg import classmaps
from kseg.classmaps import BACKGROUND, VOID, class_mask
from kseg.errors import ConfigError, DataError, SubmissionError
from kseg.rle import decode_labels, first_overlapping_row, is_empty
from kseg.tasks import TASKS, task_of

if TYPE_CHECKING:
    from kseg.data import Schema

__all__ = [
    "THRESHOLDS", "ScoreReport", "ObjectOverlaps", "object_overlaps", "iou_matrix", "match_counts", "image_score",
    "task_score", "dice", "iou", "score_frames",
    "tgs_score", "f2_score", "mean_iou_classes", "Metric", "METRICS", "metric_by_name", "TASK_METRICS", "task_metric",
    "BACKGROUND", "VOID", "class_counts", "add_counts", "class_ious", "class_map_counts", "class_map_ious",
    "class_map_score", "class_dice", "dice_classes", "TaskScores", "dataset_score",
]

# Rounded to the exact decimals: plain arange drifts upwards (0.6000000000000001), so an IoU of exactly
# 0.6 or 0.75 would be compared with a threshold slightly different from the documented one.
THRESHOLDS = np.round(np.arange(0.5, 1.0, 0.05), 2)


@dataclass
class ScoreReport:
    """Mean score over images, each image's score, and the mean per class (empty without a class column).

    ``overlaps``: pixels claimed by more than one predicted instance, per image, when overlapping
    predictions were scored anyway (``allow_overlap=True``); Kaggle rejects such a file.
    """

    score: float
    per_image: dict[str, float] = field(default_factory=dict)
    per_class: dict[str, float] = field(default_factory=dict)
    overlaps: dict[str, int] = field(default_factory=dict)


def _check_same_shape(truth: np.ndarray, pred: np.ndarray) -> None:
    if truth.shape != pred.shape:
        raise DataError(f"truth has shape {truth.shape} but the prediction has shape {pred.shape}; they must match")


# Above this many (truth label, prediction label) bins, label values are made consecutive first.
_MAX_PAIR_BINS = 1 << 24


def _label_index(labels: np.ndarray, consecutive: bool) -> tuple[np.ndarray, np.ndarray]:
    """(candidate label values, each pixel's position among them).

    Label images normally hold small non-negative integers; their values can then serve directly as
    positions (candidates 0..max, absent ones get zero area), which skips the sort inside ``np.unique``
    and makes scoring several times faster. Negative or huge labels, or ``consecutive=True``, use ``np.unique``.
    """
    flat = labels.ravel()
    if not consecutive and flat.size and np.issubdtype(flat.dtype, np.integer):
        low, high = int(flat.min()), int(flat.max())
        if low >= 0 and high < flat.size:
            return np.arange(high + 1), flat
    values, positions = np.unique(flat, return_inverse=True)
    return values, positions.ravel()


@dataclass(frozen=True)
class ObjectOverlaps:
    """How the objects of two label images share pixels: the counts every object-matching measure starts from.

    ``truth_ids``/``pred_ids`` are the sorted non-zero labels present; ``intersection[i, j]`` is the number of
    pixels of true object ``truth_ids[i]`` labelled ``pred_ids[j]``; the areas are the objects' pixel counts.
    """

    truth_ids: np.ndarray
    pred_ids: np.ndarray
    intersection: np.ndarray
    truth_area: np.ndarray
    pred_area: np.ndarray

    def iou(self) -> np.ndarray:
        """IoU of every (true, predicted) pair, float64 (n_true, n_pred)."""
        intersection = self.intersection.astype(np.float64)
        return intersection / (self.truth_area[:, None] + self.pred_area[None, :] - intersection)


def object_overlaps(truth: np.ndarray, pred: np.ndarray) -> ObjectOverlaps:
    """The pixel counts of every (true object, predicted object) pair of two label images, any integer dtype."""
    _check_same_shape(truth, pred)
    truth_ids, truth_index = _label_index(truth, consecutive=False)
    pred_ids, pred_index = _label_index(pred, consecutive=False)
    if truth_ids.size * pred_ids.size > _MAX_PAIR_BINS:
        truth_ids, truth_index = _label_index(truth, consecutive=True)
        pred_ids, pred_index = _label_index(pred, consecutive=True)
    pair_index = truth_index.astype(np.intp)  # in-place arithmetic below: one image-sized allocation
    pair_index *= pred_ids.size
    np.add(pair_index, pred_index, out=pair_index, casting="unsafe")  # safe: indices are in 0..size-1
    pair_counts = np.bincount(pair_index, minlength=truth_ids.size * pred_ids.size).reshape(truth_ids.size, pred_ids.size)
    truth_area = pair_counts.sum(axis=1)
    pred_area = pair_counts.sum(axis=0)
    truth_objects = (truth_ids != 0) & (truth_area > 0)
    pred_objects = (pred_ids != 0) & (pred_area > 0)
    return ObjectOverlaps(truth_ids[truth_objects], pred_ids[pred_objects],
                    pair_counts[np.ix_(truth_objects, pred_objects)], truth_area[truth_objects], pred_area[pred_objects])


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every (true object, predicted object) pair, shape (n_true, n_pred), float64.

    Rows and columns follow the sorted non-zero labels of ``truth`` and ``pred``. Any integer dtype works.
    """
    return object_overlaps(truth, pred).iou()


def image_score(truth: np.ndarray, pred: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> float:
    """Mean over ``thresholds`` of TP / (TP + FP + FN) for one pair of label images.

    A label image gives every pixel one label, so objects do not overlap and, for t >= 0.5, an object
    can have IoU > t with at most one object of the other image: matches are one-to-one and
    TP is simply the number of pairs above t. Both images empty scores 1.0, exactly one empty 0.0.
    """
    true_positives, n_true, n_pred = match_counts(truth, pred, thresholds)
    if n_true == 0 and n_pred == 0:
        return 1.0
    return float(np.mean(true_positives / (n_true + n_pred - true_positives)))


def match_counts(truth: np.ndarray, pred: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(TP at each threshold, number of true objects, number of predicted objects) of two label images.

    Shared by every object-matching metric (instance mAP, Airbus F2) and the OOF analysis (where the score
    is lost by threshold), so they all count hits identically.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.size == 0 or thresholds.min() < 0.5:
        raise ValueError(f"IoU thresholds must be >= 0.5 so that matches are one-to-one, got {thresholds.tolist()}")
    ious = iou_matrix(truth, pred)
    n_true, n_pred = ious.shape
    overlapping = ious[ious > 0]
    true_positives = (overlapping[None, :] > thresholds[:, None]).sum(axis=1)
    return true_positives, n_true, n_pred


def dice(truth_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A|+|B|) of two binary masks; both empty → 1.0."""
    _check_same_shape(truth_mask, pred_mask)
    truth_mask, pred_mask = truth_mask.astype(bool), pred_mask.astype(bool)
    total = int(truth_mask.sum()) + int(pred_mask.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(truth_mask & pred_mask)) / total


def iou(truth_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """Intersection over union |A∩B| / |A∪B| of two binary masks; both empty → 1.0."""
    _check_same_shape(truth_mask, pred_mask)
    truth_mask, pred_mask = truth_mask.astype(bool), pred_mask.astype(bool)
    union = int(np.count_nonzero(truth_mask | pred_mask))
    if union == 0:
        return 1.0
    return int(np.count_nonzero(truth_mask & pred_mask)) / union


def task_score(truth: np.ndarray, pred: np.ndarray, task: str, metric: str = "auto") -> float:
    """The score kseg optimises for ``task`` on one image under ``metric`` (``data.metric``; auto: the task's
    own, see :data:`TASK_METRICS`), in one place for its validation, its OOF search, ``kseg score`` and the
    benchmarks: instance, ``image_score`` of the label images; binary, the Dice of the foregrounds (non-zero
    pixels), both empty = 1; multiclass, the image's own mean IoU over the classes of its truth
    (:func:`class_map_score`; a *set* is scored on pixel counts summed over its images, see
    :class:`TaskScores`, not as the mean of these)."""
    return task_metric(task, metric).image(truth, pred, overlapping=task_of(task).classes_overlap)


def tgs_score(truth_mask: np.ndarray, pred_mask: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> float:
    """TGS Salt Identification (Kaggle 2018) score of one image: the mean over ``thresholds`` of a hit (IoU > t).

    TGS scores the whole salt mask as one object, so at each threshold the image is a hit (precision 1)
    or a miss (0). Its empty-image rules — both empty 1, exactly one empty 0 — are exactly ``iou``'s:
    both empty gives IoU 1.0 (a hit at every t < 1) and one empty IoU 0.0 (a miss everywhere).
    Non-zero pixels are foreground, so a label image scores as the union of its objects.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    return float(np.mean(iou(truth_mask, pred_mask) > thresholds))


def f2_score(truth: np.ndarray, pred: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> float:
    """Airbus Ship Detection (Kaggle 2018) score of one pair of label images: F2 averaged over ``thresholds``.

    At each t, F2(t) = 5 TP / (5 TP + 4 FN + FP), objects matching when their IoU is above t (one-to-one,
    as in ``image_score``). Weighting FN four times FP rewards finding every ship over avoiding false alarms.
    The formula is 0/0 for an image without ships and without predictions; Airbus scores that correct
    "no ship" as 1.0. One side empty gives TP 0 and a positive FP or FN, hence 0.0.
    """
    true_positives, n_true, n_pred = match_counts(truth, pred, thresholds)
    if n_true == 0 and n_pred == 0:
        return 1.0
    false_negatives, false_positives = n_true - true_positives, n_pred - true_positives
    return float(np.mean(5 * true_positives / (5 * true_positives + 4 * false_negatives + false_positives)))


def _check_dataset(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> None:
    if len(truths) != len(preds):
        raise DataError(f"got {len(truths)} truth image(s) but {len(preds)} prediction(s); they must pair up")
    if len(truths) == 0:
        raise DataError("no images to score")


def _class_ids(image: np.ndarray, name: str, index: int, ignore_index: int | None) -> np.ndarray:
    """The flattened class map as ``int64`` class ids >= 0 (or ``ignore_index``, which may be negative)."""
    flat = image.ravel()
    if not np.issubdtype(flat.dtype, np.integer):
        raise DataError(f"{name} image {index}: class maps must hold integer class ids, got dtype {flat.dtype}")
    negative = flat < 0
    if ignore_index is not None:
        negative &= flat != ignore_index
    if negative.any():
        raise DataError(f"{name} image {index}: class id {int(flat[np.argmax(negative)])} is negative")
    largest = int(flat.max(initial=0))
    if largest >= _MAX_PAIR_BINS:
        raise DataError(f"{name} image {index}: class id {largest} is too large; class maps hold small class ids")
    return flat.astype(np.int64, copy=False)  # bincount needs a signed index type (uint64 is refused)


def class_counts(truth: np.ndarray, pred: np.ndarray, *, ignore_index: int | None = None, index: int = 1,
                 n_bins: int = 0) -> np.ndarray:
    """int64 ``(2, n)`` per class id ``0..n-1``: pixels where truth and prediction are both that class (the
    intersection), and pixels where either is (the union); ``n`` is the largest class id seen + 1, at least
    ``n_bins``.

    Both counts add up over images (:func:`add_counts`), so a dataset's per-class IoU is the ratio of the sums:
    :func:`mean_iou_classes`, the multiclass OOF search and :class:`TaskScores` all accumulate these. Pixels
    whose truth is ``ignore_index`` count for no class; a *prediction* of ``ignore_index`` counts as no class
    (a miss of the true class). ``index`` numbers the image in error messages.
    """
    _check_same_shape(truth, pred)
    truth_flat = _class_ids(truth, "truth", index, ignore_index)
    pred_flat = _class_ids(pred, "prediction", index, ignore_index)
    if ignore_index is not None:
        kept = truth_flat != ignore_index
        truth_flat, pred_flat = truth_flat[kept], pred_flat[kept]
        pred_flat = np.where(pred_flat == ignore_index, -1, pred_flat)
    n = max(int(n_bins), int(truth_flat.max(initial=-1)) + 1, int(pred_flat.max(initial=-1)) + 1)
    # One extra bin collects predictions of ignore_index: they belong to no class.
    truth_area = np.bincount(truth_flat, minlength=n + 1)[:n]
    pred_area = np.bincount(np.where(pred_flat < 0, n, pred_flat), minlength=n + 1)[:n]
    intersection = np.bincount(truth_flat[truth_flat == pred_flat], minlength=n)[:n]
    return np.stack([intersection, truth_area + pred_area - intersection]).astype(np.int64)


def add_counts(total: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sum of two count arrays (:func:`class_counts`, :func:`class_map_counts`) of possibly different class
    ranges: a class no image so far had is a zero column."""
    out = np.zeros((max(total.shape[0], counts.shape[0]), max(total.shape[1], counts.shape[1])), np.int64)
    out[:total.shape[0], :total.shape[1]] += total
    out[:counts.shape[0], :counts.shape[1]] += counts
    return out


def class_ious(counts: np.ndarray, *, classes: Sequence[int] | None = None, ignore_index: int | None = None,
               exclude: Sequence[int] = (), truth_counts: np.ndarray | None = None) -> dict[int, float]:
    """IoU of each class present, from accumulated :func:`class_counts`, by class id.

    A class is present where its union is non-empty (VOC / Cityscapes / mmseg's nan-mean: a class nobody drew
    or predicted is undefined, not perfect), or, with ``truth_counts`` (the truth pixels of each class), only
    where the truth has it. ``classes`` restricts the classes (default: every id counted); ``ignore_index`` and
    ``exclude`` (e.g. background) are never averaged, though they still count as misses and false alarms.
    """
    intersection, union = counts
    n = counts.shape[1]
    if classes is None:
        averaged = np.arange(n)
    else:
        averaged = np.array([int(c) for c in classes], dtype=np.int64)
        if (averaged < 0).any():
            raise ValueError(f"classes must be non-negative class ids, got {list(classes)}")
        averaged = averaged[averaged < n]  # a class id above every value seen is absent
    dropped = [c for c in (ignore_index, *exclude) if c is not None]
    averaged = averaged[~np.isin(averaged, dropped)]
    present = union[averaged] > 0
    if truth_counts is not None:
        in_truth = np.zeros(n, bool)
        in_truth[:min(n, truth_counts.size)] = truth_counts[:n] > 0
        present &= in_truth[averaged]
    return {int(c): float(intersection[c] / union[c]) for c in averaged[present]}


def mean_iou_classes(
    truths: Sequence[np.ndarray],
    preds: Sequence[np.ndarray],
    *,
    classes: Sequence[int] | None = None,
    ignore_index: int | None = None,
) -> float:
    """Mean over classes of each class's IoU accumulated over the whole dataset (PASCAL VOC / CamVid mIoU).

    IoU_c = TP_c / (TP_c + FP_c + FN_c), counted over all pixels of all images, so a rare class weighs as
    much as a common one but tiny images do not dominate. Classes are averaged only where present (union
    of truth and prediction over the dataset non-empty), as the VOC and Cityscapes benchmarks do: a class
    nobody drew or predicted is undefined, not perfect. ``classes`` restricts the average (e.g. to leave
    out background; default: every value seen). Pixels whose truth is ``ignore_index`` (CamVid's void)
    are left out entirely. Nothing present at all scores 1.0, like the other metrics' empty/empty case.
    kseg's ``multiclass`` task scores with :func:`class_map_score` (classes present in the truth).
    """
    _check_dataset(truths, preds)
    total = np.zeros((2, 0), np.int64)
    for index, (truth, pred) in enumerate(zip(truths, preds), start=1):
        total = add_counts(total, class_counts(truth, pred, ignore_index=ignore_index, index=index))
    ious = class_ious(total, classes=classes, ignore_index=ignore_index)
    return float(np.mean(list(ious.values()))) if ious else 1.0




def class_map_counts(truth: np.ndarray, pred: np.ndarray, n_bins: int = 0, overlapping: bool = False) -> np.ndarray:
    """:func:`class_counts` of a multiclass truth and prediction, plus a third row: each class's truth pixels
    (for averaging over the classes the truth has); VOID truth pixels count for nothing. ``overlapping``: the maps
    hold a bit per class (:mod:`kseg.classmaps`, ``multilabel``), each class counted on its own mask."""
    if overlapping:
        return _overlapping_counts(truth, pred, n_bins)
    counts = class_counts(truth, pred, ignore_index=VOID, n_bins=n_bins)
    flat = truth.ravel().astype(np.int64)
    truth_area = np.bincount(flat[flat != VOID], minlength=counts.shape[1])
    return np.vstack([counts, truth_area[None, :counts.shape[1]]])


def _overlapping_counts(truth: np.ndarray, pred: np.ndarray, n_bins: int) -> np.ndarray:
    """:func:`class_map_counts` of two bit-per-class maps: intersection, union and truth pixels of every class
    id 0..n (0: the pixels of no class), void truth pixels left out."""
    truth, pred = np.asarray(truth), np.asarray(pred)
    _check_same_shape(truth, pred)
    _class_ids(truth, "truth", 1, VOID), _class_ids(pred, "prediction", 1, VOID)
    scored = truth != VOID
    n = max(n_bins, classmaps.highest_class(truth, True) + 1, classmaps.highest_class(pred, True) + 1)
    counts = np.zeros((3, n), np.int64)
    for class_id in range(n):
        in_truth, in_pred = class_mask(truth, class_id, True), class_mask(pred, class_id, True) & scored
        counts[:, class_id] = (np.count_nonzero(in_truth & in_pred), np.count_nonzero(in_truth | in_pred),
                               np.count_nonzero(in_truth))
    return counts


def class_map_ious(counts: np.ndarray) -> dict[int, float]:
    """Per-class IoU (class id 1..K → IoU) of accumulated :func:`class_map_counts`, over the classes present
    in the truth; background (0) and void are never averaged."""
    return class_ious(counts[:2], ignore_index=VOID, exclude=(BACKGROUND,), truth_counts=counts[2])


def class_map_score(counts: np.ndarray) -> float:
    """kseg's multiclass score: mean IoU over the classes present in the truth, each class's IoU accumulated
    over every image counted in ``counts`` (the usual CamVid / SegNet mIoU; classes only predicted still lower
    the other classes' IoU, as their false alarms are the true class's misses). No class in the truth: 1.0 if
    nothing is predicted either, else 0.0 (the empty-image rules of the other metrics)."""
    ious = class_map_ious(counts)
    if ious:
        return float(np.mean(list(ious.values())))
    predicted = counts[1].copy()
    predicted[:1] = 0
    return 0.0 if predicted.any() else 1.0


def class_dice(counts: np.ndarray) -> np.ndarray:
    """Dice of every (image, class) pair, ``(images, C - 1)`` for class ids 1..C-1, from per-image
    :func:`class_map_counts` stacked as ``(images, 3, C)``: 2·I / (|truth| + |prediction|) = 2·I / (I + U), and 1.0
    where the image has the class on neither side (Severstal's rule for a correctly empty ``ImageId_ClassId``)."""
    intersection, union = counts[:, 0, 1:].astype(np.float64), counts[:, 1, 1:].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, 2 * intersection / (intersection + union), 1.0)


def _mean_iou_of_counts(counts: np.ndarray) -> float:
    return class_map_score(counts.sum(axis=0))


def _iou_per_class_of_counts(counts: np.ndarray) -> dict[int, float]:
    return class_map_ious(counts.sum(axis=0))


def _dice_of_counts(counts: np.ndarray) -> float:
    values = class_dice(counts)
    return float(values.mean()) if values.size else 1.0


def _dice_per_class_of_counts(counts: np.ndarray) -> dict[int, float]:
    values = class_dice(counts)
    return {k: float(values[:, k - 1].mean()) for k in range(1, values.shape[1] + 1)} if len(values) else {}


def _padded(counts: Sequence[np.ndarray], n_bins: int) -> np.ndarray:
    """Per-image class counts of different widths (the largest class id each image holds) as one
    ``(images, 3, C)`` array, absent classes counted as zero pixels."""
    width = max([n_bins, *(c.shape[1] for c in counts)])
    return np.stack([np.pad(c, ((0, 0), (0, width - c.shape[1]))) for c in counts])


def dice_classes(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], n_classes: int = 0) -> float:
    """Severstal Steel Defect Detection (Kaggle 2019): the mean over every (image, class) pair of the Dice of that
    class's pixels, 1.0 where the image has the class on neither side; classes 1..``n_classes`` (default: the
    highest class id either side holds). Background (0) and VOID truth pixels are no class."""
    _check_dataset(truths, preds)
    n_bins = n_classes + 1 if n_classes else 0
    counts = [class_map_counts(truth, pred, n_bins) for truth, pred in zip(truths, preds)]
    return _dice_of_counts(_padded(counts, n_bins))


class TaskScores:
    """A task's score accumulated image by image, as every place that scores a set needs it (validation during
    training, annotated test images, ``kseg score``, the benchmarks): instance and binary average the per-image
    ``metric`` (:func:`task_score`) over images; multiclass keeps each image's per-class pixel counts
    (:func:`class_map_counts`, three integers per class) and scores them with the metric's ``counts_score``:
    the dataset-level mean IoU sums them, Severstal's Dice averages its (image, class) pairs. ``n_classes`` (the
    run's pixel classes) makes a class that neither side has in an image count as a pair, as Severstal does."""

    def __init__(self, task: str, metric: str = "auto", n_classes: int = 0) -> None:
        self.task = task
        self.metric = task_metric(task, metric)
        self.n_bins = n_classes + 1 if n_classes else 0
        self.per_image: list[float] = []
        self.image_counts: list[np.ndarray] = []

    def add(self, truth: np.ndarray, pred: np.ndarray) -> float:
        """Count one image; returns its own score (for multiclass the image's score under the metric alone)."""
        if task_of(self.task).class_per_pixel:
            counts = class_map_counts(truth, pred, self.n_bins, task_of(self.task).classes_overlap)
            self.image_counts.append(counts)
            score = self.metric.counts_score(counts[None])  # type: ignore[misc]
        else:
            score = self.metric.image(truth, pred)
        self.per_image.append(score)
        return score

    @property
    def score(self) -> float:
        if not self.per_image:
            raise DataError("no images to score")
        if task_of(self.task).class_per_pixel:
            return self.metric.counts_score(_padded(self.image_counts, self.n_bins))  # type: ignore[misc]
        return float(np.mean(self.per_image))

    def class_scores(self) -> dict[int, float]:
        """Each class's score under the metric by class id (multiclass; empty for the other tasks)."""
        if not task_of(self.task).class_per_pixel or not self.image_counts:
            return {}
        return self.metric.counts_per_class(_padded(self.image_counts, self.n_bins))  # type: ignore[misc]


def dataset_score(truths: Sequence[np.ndarray], preds: Sequence[np.ndarray], task: str) -> float:
    """The score of a whole set for ``task`` (see :class:`TaskScores`)."""
    _check_dataset(truths, preds)
    scores = TaskScores(task)
    for truth, pred in zip(truths, preds):
        scores.add(truth, pred)
    return scores.score


@dataclass(frozen=True)
class Metric:
    """A competition metric by config name.

    ``target`` says what the images hold: ``"labels"`` (instance label images, 0 = background, each other
    value one object), ``"mask"`` (binary masks, non-zero = foreground) or ``"classes"`` (class-id maps).
    Per-image metrics (``per_image`` set) score a dataset as the mean over images, as every one of these
    competitions does; the others (``dataset`` set) accumulate over all pixels first. A class metric scores
    per-image :func:`class_map_counts` stacked ``(images, 3, C)`` (``counts_score``, and ``counts_per_class`` by
    class id), which is what the multiclass OOF search, validation and ``kseg score`` accumulate.
    """

    name: str
    target: str
    competition: str
    per_image: Callable[[np.ndarray, np.ndarray], float] | None = None
    dataset: Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], float] | None = None
    counts_score: Callable[[np.ndarray], float] | None = None
    counts_per_class: Callable[[np.ndarray], dict[int, float]] | None = None

    def image(self, truth: np.ndarray, pred: np.ndarray, n_classes: int = 0, overlapping: bool = False) -> float:
        """The score of one pair of images: a mask metric sees the non-zero pixels of each (a label image scores
        as the union of its objects); a class metric, the image's own counts (``n_classes``: the run's classes,
        for a metric that scores every (image, class) pair; ``overlapping``: maps of a bit per class)."""
        if self.target == "classes":
            counts = class_map_counts(truth, pred, n_classes + 1 if n_classes else 0, overlapping)
            return self.counts_score(counts[None])  # type: ignore[misc]
        return float(self.per_image(truth, pred))  # type: ignore[misc]

    def image_scores(self, truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> list[float]:
        """Each image's score, in input order (a DataError for a dataset-level metric, which has none)."""
        if self.per_image is None:
            raise DataError(f"metric {self.name!r} is defined over the whole dataset, not per image")
        _check_dataset(truths, preds)
        return [self.per_image(truth, pred) for truth, pred in zip(truths, preds)]

    def score(self, truths: Sequence[np.ndarray], preds: Sequence[np.ndarray]) -> float:
        """The dataset score of paired truth and prediction images."""
        if self.dataset is not None:
            return float(self.dataset(truths, preds))
        return float(np.mean(self.image_scores(truths, preds)))


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("map_iou", "labels", "Sartorius 2021 / DSB 2018: mean over images of mAP@[.5:.95] of object matches",
               per_image=image_score),
        Metric("dice", "mask", "Carvana 2017 / Severstal 2019: mean over images of Dice, both empty = 1", per_image=dice),
        Metric("iou", "mask", "mean over images of the mask IoU (Jaccard), both empty = 1", per_image=iou),
        Metric("tgs_ap_iou", "mask", "TGS Salt 2018: mean over images of hits at IoU > 0.5:0.05:0.95",
               per_image=tgs_score),
        Metric("f2_iou", "labels", "Airbus Ship Detection 2018: mean over images of F2 over IoU 0.5:0.05:0.95",
               per_image=f2_score),
        Metric("mean_iou_classes", "classes", "PASCAL VOC / CamVid: per-class IoU over the dataset, mean over "
               "classes present", dataset=mean_iou_classes, counts_score=_mean_iou_of_counts,
               counts_per_class=_iou_per_class_of_counts),
        Metric("dice_classes", "classes", "Severstal 2019: mean over (image, class) pairs of Dice, both empty = 1",
               dataset=dice_classes, counts_score=_dice_of_counts,
               counts_per_class=_dice_per_class_of_counts),
    )
}


# The metrics that score each task's predictions, its own first (kseg.tasks).
TASK_METRICS: dict[str, tuple[str, ...]] = {name: task.metrics for name, task in TASKS.items()}


def task_metric(task: str, name: str = "auto") -> Metric:
    """The metric ``data.metric`` names for ``task`` (``auto``: the task's own); a ConfigError naming the metrics
    that fit the task otherwise (a label metric cannot score a binary mask's components as the competition did)."""
    task_of(task)
    if name == "auto":
        return METRICS[TASK_METRICS[task][0]]
    if name not in TASK_METRICS[task]:
        known = f"{name!r} is not a metric" if name not in METRICS else f"{name!r} does not score {task} predictions"
        raise ConfigError(f"data.metric: {known}; for data.task {task}: auto, {', '.join(TASK_METRICS[task])}")
    return METRICS[name]


def metric_by_name(name: str) -> Metric:
    """The registered metric called ``name``; a ConfigError listing the valid names otherwise."""
    try:
        return METRICS[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown metric {name!r}; valid metrics: {', '.join(METRICS)}") from None


def _require_columns(frame: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {missing}; it has {list(frame.columns)}")


def _positive_size(value: object, name: str, line: int, image_id: str, column: str) -> int:
    # CSVs read as text give '520', read with inferred dtypes 520 or 520.0: all mean the same size.
    try:
        number = float(str(value).strip())
    except ValueError:
        number = 0.0
    size = int(number) if number.is_integer() else 0
    if size < 1:
        raise DataError(f"{name} line {line} (id {image_id}): column {column!r} is {value!r}, not a positive integer")
    return size


def _rows_by_id(ids: np.ndarray) -> dict[str, np.ndarray]:
    """0-based row positions of each id, ids sorted, in one grouping pass instead of a filter per id."""
    groups = pd.Series(np.arange(len(ids))).groupby(ids, sort=True).indices
    return {str(image_id): rows for image_id, rows in groups.items()}


def _image_shapes(
    truth_df: pd.DataFrame,
    rows_by_id: Mapping[str, np.ndarray],
    schema: Schema,
    shapes: Mapping[str, tuple[int, int]] | None,
    truth_name: str,
    truth_lines: np.ndarray,
) -> dict[str, tuple[int, int]]:
    """Each image's (height, width): from the truth's size columns when it has them, else from ``shapes``."""
    height_col, width_col = schema.height_col, schema.width_col
    if height_col and width_col and height_col in truth_df.columns and width_col in truth_df.columns:
        heights, widths = truth_df[height_col].to_numpy(object), truth_df[width_col].to_numpy(object)
        result = {}
        for image_id, rows in rows_by_id.items():
            first = int(rows[0])
            result[image_id] = (
                _positive_size(heights[first], truth_name, int(truth_lines[first]), image_id, height_col),
                _positive_size(widths[first], truth_name, int(truth_lines[first]), image_id, width_col),
            )
        return result
    if shapes is None:
        raise DataError(f"{truth_name}: no image sizes: it has no height/width columns and no shapes were given")
    missing = sorted(set(rows_by_id) - set(shapes))
    if missing:
        raise DataError(f"{truth_name}: no image size given for id(s) {missing[:5]}" + (" ..." if len(missing) > 5 else ""))
    return {image_id: (int(shapes[image_id][0]), int(shapes[image_id][1])) for image_id in rows_by_id}


def score_frames(
    truth_df: pd.DataFrame,
    pred_df: pd.DataFrame,
    schema: Schema,
    shapes: Mapping[str, tuple[int, int]] | None = None,
    task: str = "instance",
    *,
    truth_name: str = "truth",
    pred_name: str = "prediction",
    progress: bool = False,
    allow_overlap: bool = False,
    metric: str = "auto",
    n_classes: int = 0,
) -> ScoreReport:
    """Score a prediction frame (``schema.submission_cols``) against a truth frame (``schema`` id/RLE columns).

    Every truth image is scored; a truth id absent from the prediction counts as an empty prediction,
    a prediction id absent from the truth is an error (it usually means the wrong file). task="instance":
    the competition's instance score per image. task="binary": the Dice of the union of each image's
    masks (the Carvana / Severstal style). task="multiclass": one row per (image, class) on both sides
    (``schema.class_col`` in the truth, the third submission column in the prediction), scored by the dataset's
    ``metric`` (mean IoU over the classes of the truth by default, :class:`TaskScores`; ``per_class`` holds each
    class's score, ``per_image`` each image's own; ``n_classes``: the run's classes, for Severstal's Dice over every
    (image, class) pair); rows of one image that overlap are an error on either side. Overlapping masks follow ``decode_labels`` (first row wins).
    ``truth_name``/``pred_name`` (e.g. file names) and file line numbers (see ``data.csv_lines``) appear in
    error messages. With task="instance", predicted instances that overlap (a duplicated row, say) are a
    SubmissionError, as on Kaggle, which rejects the file; with ``allow_overlap`` they are scored (first row wins) and counted in
    ``ScoreReport.overlaps``. ``metric`` names the per-image metric (:func:`task_metric`; auto: the task's own).
    """
    scorer = task_metric(task, metric)
    if task_of(task).class_per_pixel:
        return _score_class_frames(truth_df, pred_df, schema, shapes, task, truth_name=truth_name, pred_name=pred_name,
                                   progress=progress, metric=metric, n_classes=n_classes)
    pred_id_col, pred_rle_col = schema.submission_cols
    pairs = _paired_rows(truth_df, pred_df, schema, shapes, [schema.id_col, schema.rle_col], [pred_id_col, pred_rle_col],
                         truth_name, pred_name)
    truth_rows, pred_rows, truth_lines, pred_lines, image_shapes = pairs
    truth_rles = truth_df[schema.rle_col].to_numpy(object)
    pred_rles = pred_df[pred_rle_col].to_numpy(object)
    empty_rows = np.empty(0, dtype=np.int64)

    def labels_of(rles: np.ndarray, rows: np.ndarray, name: str, lines: np.ndarray, image_id: str) -> tuple[np.ndarray, int]:
        wheres = [f"{name} line {lines[row]} (id {image_id})" for row in rows.tolist()]
        return decode_labels(rles[rows].tolist(), image_shapes[image_id], schema.rle_order, wheres=wheres)

    per_image: dict[str, float] = {}
    overlaps: dict[str, int] = {}
    for image_id, rows in tqdm(truth_rows.items(), total=len(truth_rows), desc="scoring", disable=not progress):
        truth, _ = labels_of(truth_rles, rows, truth_name, truth_lines, image_id)
        image_pred_rows = pred_rows.get(image_id, empty_rows)
        pred, overlap = labels_of(pred_rles, image_pred_rows, pred_name, pred_lines, image_id)
        if overlap and task_of(task).separates_objects:  # binary: the rows of an image are unioned, overlap is fine
            if not allow_overlap:
                line = _first_overlapping_line(pred_rles[image_pred_rows], pred_lines[image_pred_rows],
                                               image_shapes[image_id], schema.rle_order)
                raise SubmissionError(
                    f"{pred_name} line {line} (id {image_id}): the instance overlaps an earlier instance of the "
                    f"image ({overlap} pixels claimed twice in the image); Kaggle rejects overlapping "
                    f"predictions (kseg score --allow-overlap scores them anyway, first row wins)")
            overlaps[image_id] = overlap
        per_image[image_id] = scorer.image(truth, pred)

    per_class: dict[str, float] = {}
    if schema.class_col and schema.class_col in truth_df.columns:
        classes = truth_df[schema.class_col].to_numpy(object)
        image_classes = pd.Series({image_id: str(classes[rows[0]]) for image_id, rows in truth_rows.items()})
        class_means = pd.Series(per_image).groupby(image_classes).mean()
        per_class = {str(cls): float(mean) for cls, mean in class_means.items()}
    return ScoreReport(score=float(np.mean(list(per_image.values()))), per_image=per_image, per_class=per_class,
                       overlaps=overlaps)


def _paired_rows(truth_df: pd.DataFrame, pred_df: pd.DataFrame, schema: Schema,
                 shapes: Mapping[str, tuple[int, int]] | None, truth_cols: list[str], pred_cols: list[str],
                 truth_name: str, pred_name: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray,
                                                           np.ndarray, dict[str, tuple[int, int]]]:
    """The checked frames of :func:`score_frames`: each side's row positions by id (ids sorted), file lines,
    and each truth image's (height, width); a prediction id the truth lacks is an error (the wrong file)."""
    from kseg.data import csv_lines  # lazily: data imports OpenCV, this module stays numpy-only

    _require_columns(truth_df, truth_cols, truth_name)
    _require_columns(pred_df, pred_cols, pred_name)
    if truth_df.empty:
        raise DataError(f"{truth_name}: no rows to score against")
    truth_rows = _rows_by_id(truth_df[truth_cols[0]].astype(str).to_numpy())
    pred_rows = _rows_by_id(pred_df[pred_cols[0]].astype(str).to_numpy())
    truth_lines, pred_lines = csv_lines(truth_df), csv_lines(pred_df)
    unknown = sorted(set(pred_rows) - set(truth_rows))
    if unknown:
        first_line = int(pred_lines[pred_rows[unknown[0]][0]])
        raise DataError(f"{pred_name}: {len(unknown)} id(s) not in {truth_name}, e.g. {unknown[:5]} "
                        f"(first at line {first_line})")
    image_shapes = _image_shapes(truth_df, truth_rows, schema, shapes, truth_name, truth_lines)
    return truth_rows, pred_rows, truth_lines, pred_lines, image_shapes


def _score_class_frames(
    truth_df: pd.DataFrame,
    pred_df: pd.DataFrame,
    schema: Schema,
    shapes: Mapping[str, tuple[int, int]] | None,
    task: str,
    *,
    truth_name: str,
    pred_name: str,
    progress: bool,
    metric: str,
    n_classes: int,
) -> ScoreReport:
    """:func:`score_frames` of a multiclass task: class maps decoded from the rows of both frames (truth pixels in
    no row are background or VOID, per ``schema.unlabelled``), accumulated by :class:`TaskScores`; ``multilabel``
    rows of an image may overlap."""
    from kseg.data import class_id

    schema.check_task(task)
    overlapping = task_of(task).classes_overlap
    pred_id_col, pred_rle_col, pred_class_col = schema.submission_cols
    pairs = _paired_rows(truth_df, pred_df, schema, shapes, [schema.id_col, schema.rle_col, str(schema.class_col)],
                         [pred_id_col, pred_rle_col, pred_class_col], truth_name, pred_name)
    truth_rows, pred_rows, truth_lines, pred_lines, image_shapes = pairs
    empty_rows = np.empty(0, dtype=np.int64)

    def class_map(frame: pd.DataFrame, rows: np.ndarray, rle_col: str, class_col: str, name: str, lines: np.ndarray,
                  image_id: str, fill: int) -> np.ndarray:
        rles = frame[rle_col].to_numpy(object)[rows].tolist()
        wheres = [f"{name} line {lines[row]} (id {image_id})" for row in rows.tolist()]
        kept = [i for i, value in enumerate(rles) if not is_empty(value, schema.rle_order)]
        classes = frame[class_col].to_numpy(object)[rows].tolist()
        ids = [class_id(classes[i], wheres[i]) for i in kept]
        labels, overlap = classmaps.decode([rles[i] for i in kept], ids, image_shapes[image_id], schema.rle_order,
                                           overlapping, fill=fill, wheres=[wheres[i] for i in kept])
        if overlap or len(set(ids)) != len(ids):
            at = (first_overlapping_row([rles[i] for i in kept], image_shapes[image_id], schema.rle_order) if overlap
                  else next(i for i, value in enumerate(ids) if value in ids[:i]))
            problem = (f"its mask overlaps an earlier row of the image ({overlap} pixels in two rows); classes are "
                       f"exclusive" if overlap else f"class id {ids[at]} has a second row in the image")
            error = SubmissionError if name == pred_name else DataError
            raise error(f"{wheres[kept[at]]}: class id {ids[at]}: {problem}")
        return labels

    scores = TaskScores(task, metric, n_classes)
    per_image: dict[str, float] = {}
    truth_fill = VOID if schema.unlabelled == "ignore" else BACKGROUND
    for image_id, rows in tqdm(truth_rows.items(), total=len(truth_rows), desc="scoring", disable=not progress):
        truth = class_map(truth_df, rows, schema.rle_col, str(schema.class_col), truth_name, truth_lines, image_id,
                          truth_fill)
        pred = class_map(pred_df, pred_rows.get(image_id, empty_rows), pred_rle_col, pred_class_col, pred_name,
                         pred_lines, image_id, BACKGROUND)
        per_image[image_id] = scores.add(truth, pred)
    return ScoreReport(score=scores.score, per_image=per_image,
                       per_class={str(k): value for k, value in scores.class_scores().items()})


def _first_overlapping_line(rles: np.ndarray, lines: np.ndarray, shape: tuple[int, int], order: str) -> int:
    """Line of the first prediction row whose mask shares a pixel with an earlier row of its image."""
    return int(lines[first_overlapping_row(rles.tolist(), shape, order)])
