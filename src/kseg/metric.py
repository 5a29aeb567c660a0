"""Competition metrics on label images: the Sartorius / DSB 2018 instance score, Dice and IoU.

The instance score of one image is the mean over IoU thresholds t = 0.50, 0.55, ..., 0.95 of
TP / (TP + FP + FN), where a true and a predicted object match when their IoU is strictly above t.
The whole IoU matrix comes from a single ``np.bincount`` of (truth label, prediction label) pairs,
so scoring costs one pass over the pixels however many objects an image holds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from kseg.errors import DataError, SubmissionError
from kseg.rle import decode, decode_labels

if TYPE_CHECKING:
    from kseg.data import Schema

__all__ = ["THRESHOLDS", "ScoreReport", "iou_matrix", "image_score", "dice", "iou", "score_frames"]

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


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every (true object, predicted object) pair, shape (n_true, n_pred), float64.

    Rows and columns follow the sorted non-zero labels of ``truth`` and ``pred``. Any integer dtype works.
    """
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
    intersection = pair_counts[np.ix_(truth_objects, pred_objects)].astype(np.float64)
    union = truth_area[truth_objects][:, None] + pred_area[pred_objects][None, :] - intersection
    return intersection / union


def image_score(truth: np.ndarray, pred: np.ndarray, thresholds: np.ndarray = THRESHOLDS) -> float:
    """Mean over ``thresholds`` of TP / (TP + FP + FN) for one pair of label images.

    A label image gives every pixel one label, so objects do not overlap and, for t >= 0.5, an object
    can have IoU > t with at most one object of the other image: matches are one-to-one and
    TP is simply the number of pairs above t. Both images empty scores 1.0, exactly one empty 0.0.
    """
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.size == 0 or thresholds.min() < 0.5:
        raise ValueError(f"IoU thresholds must be >= 0.5 so that matches are one-to-one, got {thresholds.tolist()}")
    ious = iou_matrix(truth, pred)
    n_true, n_pred = ious.shape
    if n_true == 0 and n_pred == 0:
        return 1.0
    overlapping = ious[ious > 0]
    true_positives = (overlapping[None, :] > thresholds[:, None]).sum(axis=1)
    return float(np.mean(true_positives / (n_true + n_pred - true_positives)))


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
) -> ScoreReport:
    """Score a prediction frame (``schema.submission_cols``) against a truth frame (``schema`` id/RLE columns).

    Every truth image is scored; a truth id absent from the prediction counts as an empty prediction,
    a prediction id absent from the truth is an error (it usually means the wrong file). task="instance":
    the competition's instance score per image. task="binary": the Dice of the union of each image's
    masks (the Carvana / Severstal style). Overlapping masks follow ``decode_labels`` (first row wins).
    ``truth_name``/``pred_name`` (e.g. file names) and file line numbers (see ``data.csv_lines``) appear in
    error messages. With task="instance", predicted instances that overlap (a duplicated row, say) are a
    SubmissionError, as on Kaggle, which rejects the file; with ``allow_overlap`` they are scored (first row wins) and counted in
    ``ScoreReport.overlaps``.
    """
    from kseg.data import csv_lines  # lazily: data imports OpenCV, this module stays numpy-only

    if task not in ("instance", "binary"):
        raise DataError(f"task must be 'instance' or 'binary', got {task!r}")
    pred_id_col, pred_rle_col = schema.submission_cols
    _require_columns(truth_df, [schema.id_col, schema.rle_col], truth_name)
    _require_columns(pred_df, [pred_id_col, pred_rle_col], pred_name)
    if truth_df.empty:
        raise DataError(f"{truth_name}: no rows to score against")

    truth_ids = truth_df[schema.id_col].astype(str).to_numpy()
    pred_ids = pred_df[pred_id_col].astype(str).to_numpy()
    truth_rows = _rows_by_id(truth_ids)
    pred_rows = _rows_by_id(pred_ids)
    truth_lines, pred_lines = csv_lines(truth_df), csv_lines(pred_df)
    unknown = sorted(set(pred_rows) - set(truth_rows))
    if unknown:
        first_line = int(pred_lines[pred_rows[unknown[0]][0]])
        raise DataError(f"{pred_name}: {len(unknown)} id(s) not in {truth_name}, e.g. {unknown[:5]} "
                        f"(first at line {first_line})")
    image_shapes = _image_shapes(truth_df, truth_rows, schema, shapes, truth_name, truth_lines)
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
        if overlap and task == "instance":  # binary: the rows of an image are unioned, overlap is fine
            if not allow_overlap:
                line = _first_overlapping_line(pred_rles[image_pred_rows], pred_lines[image_pred_rows],
                                               image_shapes[image_id], schema.rle_order)
                raise SubmissionError(
                    f"{pred_name} line {line} (id {image_id}): the instance overlaps an earlier instance of the "
                    f"image ({overlap} pixels claimed twice in the image); Kaggle rejects overlapping "
                    f"predictions (kseg score --allow-overlap scores them anyway, first row wins)")
            overlaps[image_id] = overlap
        per_image[image_id] = dice(truth > 0, pred > 0) if task == "binary" else image_score(truth, pred)

    per_class: dict[str, float] = {}
    if schema.class_col and schema.class_col in truth_df.columns:
        classes = truth_df[schema.class_col].to_numpy(object)
        image_classes = pd.Series({image_id: str(classes[rows[0]]) for image_id, rows in truth_rows.items()})
        class_means = pd.Series(per_image).groupby(image_classes).mean()
        per_class = {str(cls): float(mean) for cls, mean in class_means.items()}
    return ScoreReport(score=float(np.mean(list(per_image.values()))), per_image=per_image, per_class=per_class,
                       overlaps=overlaps)


def _first_overlapping_line(rles: np.ndarray, lines: np.ndarray, shape: tuple[int, int], order: str) -> int:
    """Line of the first prediction row whose mask shares a pixel with an earlier row of its image (the
    error path only: one decode per row)."""
    claimed = np.zeros(shape, dtype=bool)
    for value, line in zip(rles.tolist(), lines.tolist()):
        mask = decode(value, shape, order)
        if np.any(mask & claimed):
            return int(line)
        claimed |= mask
    return int(lines[0])
