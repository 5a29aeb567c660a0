"""Metric: IoU matrix and instance score against brute-force references, edge cases, frame scoring."""
from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kseg.data import PRESETS, Schema
from kseg.errors import ConfigError, DataError, RLEError
from kseg.metric import (
    METRICS,
    TASK_METRICS,
    THRESHOLDS,
    TaskScores,
    dice,
    dice_classes,
    f2_score,
    image_score,
    iou,
    iou_matrix,
    mean_iou_classes,
    metric_by_name,
    score_frames,
    task_metric,
    task_score,
    tgs_score,
)

SARTORIUS = Schema(**PRESETS["sartorius"])

SIGNED = st.sampled_from([np.int8, np.int16, np.int32, np.int64])
UNSIGNED = st.sampled_from([np.uint8, np.uint16, np.uint32, np.uint64])
# Negative and large labels exercise the np.unique path; small non-negative ones the bincount path.
SIGNED_LABELS = st.sampled_from([0, 0, 0, 1, 2, 3, 5, 100, -7])
UNSIGNED_LABELS = st.sampled_from([0, 0, 0, 1, 2, 3, 4, 9, 200])


@st.composite
def label_image_pairs(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray]:
    shape = draw(st.tuples(st.integers(1, 12), st.integers(1, 12)))
    dtype, labels = draw(st.sampled_from([(SIGNED, SIGNED_LABELS), (UNSIGNED, UNSIGNED_LABELS)]))
    return tuple(draw(arrays(draw(dtype), shape, elements=labels)) for _ in range(2))  # type: ignore[return-value]


def object_ids(labels: np.ndarray) -> list[int]:
    return [int(k) for k in np.unique(labels) if k != 0]


def test_sparse_huge_labels_fall_back_to_consecutive_labels() -> None:
    truth = np.zeros((1, 5000), dtype=np.int64)
    truth[0, :3], truth[0, -2:] = 1, 4999  # dense indexing would need 5000 x 5000 pair bins
    pred = np.zeros_like(truth)
    pred[0, 1:3], pred[0, -3:] = 4998, 7
    np.testing.assert_allclose(iou_matrix(truth, pred), [[0.0, 2 / 3], [2 / 3, 0.0]])


def brute_force_iou(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    result = np.zeros((len(object_ids(truth)), len(object_ids(pred))))
    for i, t in enumerate(object_ids(truth)):
        for j, p in enumerate(object_ids(pred)):
            result[i, j] = ((truth == t) & (pred == p)).sum() / ((truth == t) | (pred == p)).sum()
    return result


def reference_score(truth: np.ndarray, pred: np.ndarray) -> float:
    """The DSB 2018 definition, counted from both sides instead of assuming one-to-one matches."""
    ious = brute_force_iou(truth, pred)
    if ious.size == 0:
        return 1.0 if ious.shape == (0, 0) else 0.0
    scores = []
    for threshold in (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        matches = ious > threshold
        tp = int(matches.any(axis=1).sum())
        fn = int((~matches.any(axis=1)).sum())
        fp = int((~matches.any(axis=0)).sum())
        scores.append(tp / (tp + fp + fn))
    return float(np.mean(scores))


@settings(max_examples=200, deadline=None)
@given(pair=label_image_pairs())
def test_iou_matrix_matches_pairwise_loop(pair: tuple[np.ndarray, np.ndarray]) -> None:
    truth, pred = pair
    np.testing.assert_allclose(iou_matrix(truth, pred), brute_force_iou(truth, pred))


@settings(max_examples=200, deadline=None)
@given(pair=label_image_pairs())
def test_image_score_matches_reference(pair: tuple[np.ndarray, np.ndarray]) -> None:
    truth, pred = pair
    assert image_score(truth, pred) == pytest.approx(reference_score(truth, pred))


def two_objects() -> np.ndarray:
    labels = np.zeros((6, 6), dtype=np.int32)
    labels[0:2, 0:2] = 1
    labels[3:6, 3:6] = 2
    return labels


def test_known_scores() -> None:
    truth = two_objects()
    empty = np.zeros_like(truth)
    assert THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
    assert image_score(truth, truth) == 1.0
    assert image_score(truth, np.where(truth == 1, 7, truth * 3)) == 1.0  # label values do not matter
    assert image_score(empty, empty) == 1.0
    assert image_score(truth, empty) == 0.0
    assert image_score(empty, truth) == 0.0
    assert image_score(truth, np.where(truth == 2, 0, truth)) == 0.5  # one object missed: TP 1, FN 1


@pytest.mark.parametrize(
    ("covered", "matched_thresholds"),
    [(2, 0), (3, 5)],  # IoU exactly 2/4 = 0.5 matches nowhere; exactly 3/4 = 0.75 matches 0.5 .. 0.7
)
def test_threshold_boundaries_use_strict_greater(covered: int, matched_thresholds: int) -> None:
    truth = np.zeros((1, 6), dtype=np.int32)
    truth[0, :4] = 1
    pred = np.zeros_like(truth)
    pred[0, :covered] = 1
    score = image_score(truth, pred)
    assert score == pytest.approx(matched_thresholds / 10)  # per threshold: matched → 1, else FP 1 + FN 1 → 0


def test_iou_exactly_at_decimal_threshold_is_not_a_match() -> None:
    truth = np.zeros((1, 5), dtype=np.int32)
    truth[0, :] = 1
    pred = np.zeros_like(truth)
    pred[0, :3] = 1  # IoU exactly 0.6: matched at 0.5 and 0.55 only
    assert image_score(truth, pred) == pytest.approx(0.2)


def test_thresholds_below_one_half_are_rejected() -> None:
    with pytest.raises(ValueError, match="must be >= 0.5"):
        image_score(two_objects(), two_objects(), thresholds=np.array([0.3, 0.5]))


def test_dice_and_iou_on_binary_masks() -> None:
    truth = np.array([[1, 1, 0, 0]], dtype=bool)
    pred = np.array([[0, 1, 1, 0]], dtype=np.uint8)
    assert dice(truth, pred) == pytest.approx(0.5)
    assert iou(truth, pred) == pytest.approx(1 / 3)
    empty = np.zeros((2, 2), dtype=bool)
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(empty, ~empty) == 0.0 and iou(~empty, empty) == 0.0


def test_task_score_is_instance_map_or_foreground_dice() -> None:
    """Binary: the Dice of the foregrounds, whatever the labels (two objects merged into one are the same mask)."""
    truth = two_objects()
    merged = (truth > 0).astype(np.int32)
    assert task_score(truth, merged, "binary") == 1.0
    assert task_score(truth, merged, "instance") == image_score(truth, merged) < 1.0
    empty = np.zeros_like(truth)
    assert task_score(empty, empty, "binary") == 1.0 and task_score(truth, empty, "binary") == 0.0


@pytest.mark.parametrize("function", [iou_matrix, image_score, dice, iou])
def test_shape_mismatch_is_a_data_error(function) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match=r"shape \(2, 3\).*shape \(3, 2\)"):
        function(np.zeros((2, 3), dtype=np.int32), np.zeros((3, 2), dtype=np.int32))


# The real annotations overlap (first row wins), so the truth used as a prediction overlaps too: Kaggle
# would reject it, and these scoring tests pass allow_overlap=True.
@pytest.fixture(scope="module")
def truth_df(fixtures_dir: Path) -> pd.DataFrame:
    """Two real images: 0030fd0e6378 (395 cells) and 0f08d640930b (105 cells), relabelled to two classes."""
    first = pd.read_csv(fixtures_dir / "sartorius" / "train.csv")
    second = pd.read_csv(fixtures_dir / "sartorius" / "train_0f08d640930b_DERIVED.csv").assign(cell_type="astro")
    return pd.concat([first, second], ignore_index=True)


def as_prediction(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[["id", "annotation"]].rename(columns={"annotation": "predicted"}).reset_index(drop=True)


def test_truth_scored_against_itself_is_perfect(truth_df: pd.DataFrame) -> None:
    report = score_frames(truth_df, as_prediction(truth_df), SARTORIUS, allow_overlap=True)
    assert report.score == 1.0
    assert report.per_image == {"0030fd0e6378": 1.0, "0f08d640930b": 1.0}
    assert report.per_class == {"astro": 1.0, "shsy5y": 1.0}


def test_dropping_half_the_instances_lowers_the_score(truth_df: pd.DataFrame) -> None:
    report = score_frames(truth_df, as_prediction(truth_df.iloc[::2]), SARTORIUS, allow_overlap=True)
    assert 0.3 < report.score < 0.6  # about half of the objects are false negatives
    assert set(report.per_class) == {"astro", "shsy5y"}


def test_missing_image_counts_as_empty_prediction(truth_df: pd.DataFrame) -> None:
    prediction = as_prediction(truth_df[truth_df["id"] == "0030fd0e6378"])
    report = score_frames(truth_df, prediction, SARTORIUS, allow_overlap=True)
    assert report.per_image == {"0030fd0e6378": 1.0, "0f08d640930b": 0.0}
    assert report.score == 0.5
    assert report.per_class == {"astro": 0.0, "shsy5y": 1.0}


def test_empty_prediction_row_means_no_instance(truth_df: pd.DataFrame) -> None:
    prediction = pd.concat([as_prediction(truth_df.iloc[:395]), pd.DataFrame({"id": ["0f08d640930b"], "predicted": [""]})])
    assert score_frames(truth_df, prediction, SARTORIUS, allow_overlap=True).per_image["0f08d640930b"] == 0.0


def test_unknown_prediction_ids_are_an_error(truth_df: pd.DataFrame) -> None:
    prediction = pd.concat([as_prediction(truth_df), pd.DataFrame({"id": ["not_an_image"], "predicted": ["1 2"]})])
    with pytest.raises(DataError, match=r"submission\.csv: 1 id\(s\) not in train\.csv.*not_an_image.*line 502"):
        score_frames(truth_df, prediction, SARTORIUS, truth_name="train.csv", pred_name="submission.csv")


def test_bad_prediction_rle_names_file_row_and_id(truth_df: pd.DataFrame) -> None:
    prediction = as_prediction(truth_df)
    prediction.loc[6, "predicted"] = "12 a"
    with pytest.raises(RLEError, match=r"^submission\.csv line 8 \(id 0030fd0e6378\): token 2 is 'a'"):
        score_frames(truth_df, prediction, SARTORIUS, pred_name="submission.csv")


def test_binary_task_scores_dice_of_the_union(truth_df: pd.DataFrame) -> None:
    assert score_frames(truth_df, as_prediction(truth_df), SARTORIUS, task="binary").score == 1.0
    half = score_frames(truth_df, as_prediction(truth_df.iloc[::2]), SARTORIUS, task="binary")
    assert 0.5 < half.score < 1.0  # the union still covers a good part of the foreground


def test_shapes_mapping_is_used_without_size_columns(truth_df: pd.DataFrame) -> None:
    without_sizes = truth_df.drop(columns=["height", "width"])
    shapes = {"0030fd0e6378": (520, 704), "0f08d640930b": (520, 704)}
    assert score_frames(without_sizes, as_prediction(truth_df), SARTORIUS, shapes=shapes, allow_overlap=True).score == 1.0
    with pytest.raises(DataError, match="no image sizes"):
        score_frames(without_sizes, as_prediction(truth_df), SARTORIUS)
    with pytest.raises(DataError, match=r"no image size given for id\(s\) \['0f08d640930b'\]"):
        score_frames(without_sizes, as_prediction(truth_df), SARTORIUS, shapes={"0030fd0e6378": (520, 704)})


def test_bad_size_value_names_the_row(truth_df: pd.DataFrame) -> None:
    broken = truth_df.astype({"height": object})
    broken.loc[395, "height"] = "tall"
    with pytest.raises(DataError, match=r"train\.csv line 397 \(id 0f08d640930b\): column 'height' is 'tall'"):
        score_frames(broken, as_prediction(truth_df), SARTORIUS, truth_name="train.csv")


def test_missing_columns_empty_truth_and_bad_task_are_errors(truth_df: pd.DataFrame) -> None:
    with pytest.raises(DataError, match=r"prediction: missing column\(s\) \['predicted'\]"):
        score_frames(truth_df, truth_df[["id", "annotation"]], SARTORIUS)
    with pytest.raises(DataError, match="no rows to score against"):
        score_frames(truth_df.iloc[:0], as_prediction(truth_df), SARTORIUS)
    with pytest.raises(ConfigError, match="data.task must be one of instance, binary, multiclass, multilabel, got 'semantic'"):
        score_frames(truth_df, as_prediction(truth_df), SARTORIUS, task="semantic")


def test_numeric_core_does_not_import_tensorflow() -> None:
    code = "import sys, kseg.rle, kseg.metric; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


# ---- Metrics by name: each against a brute-force reference and its competition's edge-case table ----

THRESHOLD_FRACTIONS = [Fraction(50 + 5 * step, 100) for step in range(10)]  # exact 0.50 .. 0.95


def exact_iou(a: np.ndarray, b: np.ndarray) -> Fraction | None:
    """IoU of two boolean masks as an exact fraction, counted pixel by pixel; None when both are empty."""
    intersection = union = 0
    for x, y in zip(a.ravel().tolist(), b.ravel().tolist()):
        intersection += x and y
        union += x or y
    return None if union == 0 else Fraction(intersection, union)


def brute_dice(truth: np.ndarray, pred: np.ndarray) -> float:
    a, b = truth != 0, pred != 0
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2 * int((a & b).sum()) / total


def brute_iou(truth: np.ndarray, pred: np.ndarray) -> float:
    value = exact_iou(truth != 0, pred != 0)
    return 1.0 if value is None else float(value)


def brute_tgs(truth: np.ndarray, pred: np.ndarray) -> float:
    """TGS as its evaluation page states it: the salt mask is one object; empty/empty 1, one empty 0."""
    truth_empty, pred_empty = not (truth != 0).any(), not (pred != 0).any()
    if truth_empty and pred_empty:
        return 1.0
    if truth_empty or pred_empty:
        return 0.0
    value = exact_iou(truth != 0, pred != 0)
    return float(np.mean([1.0 if value > t else 0.0 for t in THRESHOLD_FRACTIONS]))


def brute_f2(truth: np.ndarray, pred: np.ndarray) -> float:
    """Airbus F2: matches counted from both sides with exact IoUs; no ships and no prediction = 1."""
    truth_ids, pred_ids = object_ids(truth), object_ids(pred)
    if not truth_ids and not pred_ids:
        return 1.0
    ious = [[exact_iou(truth == t, pred == p) for p in pred_ids] for t in truth_ids]
    scores = []
    for threshold in THRESHOLD_FRACTIONS:
        hit = [[value > threshold for value in row] for row in ious]
        tp = sum(any(row) for row in hit)
        fn = len(truth_ids) - tp
        fp = sum(not any(hit[i][j] for i in range(len(truth_ids))) for j in range(len(pred_ids)))
        scores.append(5 * tp / (5 * tp + 4 * fn + fp))
    return float(np.mean(scores))


def brute_mean_iou_classes(truths: list[np.ndarray], preds: list[np.ndarray], ignore_index: int | None = None) -> float:
    """Per-class IoU from per-class pixel loops over every image, averaged over classes with a non-empty union."""
    values = {int(v) for image in (*truths, *preds) for v in np.unique(image)} - {ignore_index}
    per_class = []
    for cls in sorted(values):
        intersection = union = 0
        for truth, pred in zip(truths, preds):
            counted = truth != ignore_index if ignore_index is not None else np.ones(truth.shape, bool)
            intersection += int(((truth == cls) & (pred == cls) & counted).sum())
            union += int((((truth == cls) | (pred == cls)) & counted).sum())
        if union:
            per_class.append(intersection / union)
    return float(np.mean(per_class)) if per_class else 1.0


PER_IMAGE_REFERENCES = {
    "map_iou": reference_score, "dice": brute_dice, "iou": brute_iou, "tgs_ap_iou": brute_tgs, "f2_iou": brute_f2,
}


def test_registry_names_and_unknown_name() -> None:
    assert set(METRICS) == {"map_iou", "dice", "iou", "tgs_ap_iou", "f2_iou", "mean_iou_classes", "dice_classes"}
    for name, metric in METRICS.items():
        assert metric_by_name(name) is metric and metric.name == name
        assert metric.target in ("labels", "mask", "classes") and metric.competition
        assert (metric.per_image is None) != (metric.dataset is None)
    with pytest.raises(ConfigError, match=r"^unknown metric 'tgs'; valid metrics: map_iou, dice, .*mean_iou_classes, dice_classes$"):
        metric_by_name("tgs")


@settings(max_examples=60, deadline=None)
@given(pairs=st.lists(label_image_pairs(), min_size=1, max_size=3), name=st.sampled_from(sorted(PER_IMAGE_REFERENCES)))
def test_per_image_metrics_match_brute_force(pairs: list[tuple[np.ndarray, np.ndarray]], name: str) -> None:
    metric = metric_by_name(name)
    truths, preds = [t for t, _ in pairs], [p for _, p in pairs]
    expected = [PER_IMAGE_REFERENCES[name](t, p) for t, p in pairs]
    assert metric.image_scores(truths, preds) == pytest.approx(expected)
    assert metric.score(truths, preds) == pytest.approx(np.mean(expected))


@st.composite
def class_map_sets(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray]]:
    n_images = draw(st.integers(1, 3))
    dtype = draw(st.sampled_from([np.uint8, np.int16, np.int64, np.uint64]))
    elements = st.sampled_from([0, 0, 1, 2, 3, 7])
    shapes = [draw(st.tuples(st.integers(1, 8), st.integers(1, 8))) for _ in range(n_images)]
    truths = [draw(arrays(dtype, shape, elements=elements)) for shape in shapes]
    preds = [draw(arrays(dtype, shape, elements=elements)) for shape in shapes]
    return truths, preds


@settings(max_examples=60, deadline=None)
@given(data=class_map_sets(), ignore_index=st.sampled_from([None, 7]))
def test_mean_iou_classes_matches_brute_force(data: tuple[list[np.ndarray], list[np.ndarray]], ignore_index: int | None) -> None:
    truths, preds = data
    expected = brute_mean_iou_classes(truths, preds, ignore_index)
    assert mean_iou_classes(truths, preds, ignore_index=ignore_index) == pytest.approx(expected)
    if ignore_index is None:
        assert metric_by_name("mean_iou_classes").score(truths, preds) == pytest.approx(expected)


def brute_dice_classes(truths: list[np.ndarray], preds: list[np.ndarray], n_classes: int) -> float:
    """Severstal: one Dice per (image, class id 1..n_classes) from pixel loops, both empty = 1, then the mean."""
    pairs = []
    for truth, pred in zip(truths, preds):
        for cls in range(1, n_classes + 1):
            a, b = int((truth == cls).sum()), int((pred == cls).sum())
            pairs.append(1.0 if a + b == 0 else 2 * int(((truth == cls) & (pred == cls)).sum()) / (a + b))
    return float(np.mean(pairs)) if pairs else 1.0


@settings(max_examples=60, deadline=None)
@given(data=class_map_sets(), extra=st.integers(0, 2))
def test_dice_classes_matches_brute_force(data: tuple[list[np.ndarray], list[np.ndarray]], extra: int) -> None:
    """Severstal's Dice over (image, class) pairs, by name, from a whole set and accumulated image by image; a
    class of the run that no image holds (``extra``) is a correct empty pair in every image."""
    truths, preds = data
    highest = max(int(image.max(initial=0)) for image in (*truths, *preds))
    n_classes = highest + extra
    expected = brute_dice_classes(truths, preds, n_classes)
    assert dice_classes(truths, preds, n_classes) == pytest.approx(expected)
    assert metric_by_name("dice_classes").score(truths, preds) == pytest.approx(brute_dice_classes(truths, preds, highest))
    scores = TaskScores("multiclass", "dice_classes", n_classes)
    per_image = [scores.add(truth, pred) for truth, pred in zip(truths, preds)]
    assert scores.score == pytest.approx(expected) and per_image == pytest.approx(
        [brute_dice_classes([t], [p], n_classes) for t, p in zip(truths, preds)])
    if n_classes:
        assert np.mean(list(scores.class_scores().values())) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("truth", "pred", "expected"),
    [
        ("empty", "empty", 1.0),  # four correct "no defect" rows
        ("empty", "object", 0.75),  # a false class-1 mask: that pair 0, the other three 1
        ("object", "empty", 0.75),  # a missed class-1 defect
        ("object", "object", 1.0),
    ],
)
def test_dice_classes_severstal_empty_rules(truth: str, pred: str, expected: float) -> None:
    images = _edge_images()
    assert dice_classes([images[truth]], [images[pred]], n_classes=4) == pytest.approx(expected)
    assert METRICS["dice_classes"].image(images[truth], images[pred], n_classes=4) == pytest.approx(expected)


def _edge_images() -> dict[str, np.ndarray]:
    empty = np.zeros((4, 4), dtype=np.int32)
    full = np.zeros_like(empty)
    full[1:3, 1:3] = 1
    return {"empty": empty, "object": full}


# (metric, truth, prediction, score) — each competition's stated empty-image rules.
EDGE_CASES = [
    ("map_iou", "empty", "empty", 1.0), ("map_iou", "empty", "object", 0.0), ("map_iou", "object", "empty", 0.0),
    ("dice", "empty", "empty", 1.0), ("dice", "empty", "object", 0.0), ("dice", "object", "empty", 0.0),
    ("iou", "empty", "empty", 1.0), ("iou", "empty", "object", 0.0), ("iou", "object", "empty", 0.0),
    ("tgs_ap_iou", "empty", "empty", 1.0), ("tgs_ap_iou", "empty", "object", 0.0), ("tgs_ap_iou", "object", "empty", 0.0),
    ("f2_iou", "empty", "empty", 1.0), ("f2_iou", "empty", "object", 0.0), ("f2_iou", "object", "empty", 0.0),
    ("tgs_ap_iou", "object", "object", 1.0), ("f2_iou", "object", "object", 1.0),
]


@pytest.mark.parametrize(("name", "truth", "pred", "expected"), EDGE_CASES)
def test_empty_image_rules(name: str, truth: str, pred: str, expected: float) -> None:
    images = _edge_images()
    assert metric_by_name(name).score([images[truth]], [images[pred]]) == expected


@pytest.mark.parametrize(
    ("truth", "pred", "classes", "expected"),
    [
        ("empty", "empty", None, 1.0),  # background alone, predicted right
        ("empty", "empty", [1, 2], 1.0),  # no foreground class anywhere: nothing to get wrong
        ("empty", "object", [1, 2], 0.0),  # class 1 only predicted
        ("object", "empty", [1, 2], 0.0),  # class 1 only in the truth
        ("object", "object", [1, 2], 1.0),  # class 2 absent from both: left out, not counted as 0 or 1
        ("object", "empty", None, 0.5 * (12 / 16 + 0.0)),  # background IoU 12/16, class 1 IoU 0
    ],
)
def test_mean_iou_classes_edge_cases(truth: str, pred: str, classes: list[int] | None, expected: float) -> None:
    images = _edge_images()
    assert mean_iou_classes([images[truth]], [images[pred]], classes=classes) == pytest.approx(expected)


def test_f2_weighs_misses_four_times_false_alarms() -> None:
    truth = two_objects()
    one_missed = np.where(truth == 2, 0, truth)  # TP 1, FN 1 at every threshold: 5 / (5 + 4)
    assert f2_score(truth, one_missed) == pytest.approx(5 / 9)
    assert f2_score(one_missed, truth) == pytest.approx(5 / 6)  # TP 1, FP 1: 5 / (5 + 1)
    assert tgs_score(truth, one_missed) == 0.0  # union IoU 4/13: below every threshold


def test_tgs_scores_the_union_as_one_object() -> None:
    truth = np.zeros((1, 10), dtype=np.int32)
    truth[0, :4], truth[0, 6:] = 1, 2  # two objects, 8 pixels
    pred = np.zeros_like(truth)
    pred[0, :6] = 5  # intersection 4 (pixels 0-3), union 10: IoU 0.4 misses at every threshold
    assert tgs_score(truth, pred) == 0.0
    pred[0, :] = 1  # IoU 8/10 = 0.8: hits at 0.5 .. 0.75 only (strictly above)
    assert tgs_score(truth, pred) == pytest.approx(0.6)


def test_dataset_and_class_map_errors() -> None:
    metric = metric_by_name("dice")
    with pytest.raises(DataError, match=r"got 2 truth image\(s\) but 1 prediction\(s\)"):
        metric.score([np.zeros((2, 2))] * 2, [np.zeros((2, 2))])
    with pytest.raises(DataError, match="no images to score"):
        metric.score([], [])
    with pytest.raises(DataError, match="defined over the whole dataset"):
        metric_by_name("mean_iou_classes").image_scores([np.zeros((2, 2), int)], [np.zeros((2, 2), int)])
    with pytest.raises(DataError, match=r"prediction image 1: class id -3 is negative"):
        mean_iou_classes([np.zeros((2, 2), int)], [np.full((2, 2), -3)])
    with pytest.raises(DataError, match=r"truth image 1: class maps must hold integer class ids, got dtype float64"):
        mean_iou_classes([np.zeros((2, 2))], [np.zeros((2, 2), int)])
    with pytest.raises(DataError, match=r"truth image 2: class id 16777216 is too large"):
        mean_iou_classes([np.zeros((2, 2), int), np.full((2, 2), 1 << 24)], [np.zeros((2, 2), int)] * 2)
    assert mean_iou_classes([np.full((2, 2), -1)], [np.zeros((2, 2), int)], ignore_index=-1) == 1.0  # all void


def brute_class_map_score(truths: list[np.ndarray], preds: list[np.ndarray]) -> float:
    """kseg's multiclass score by pixel loops: void (VOID) truth pixels dropped, per-class IoU summed over the
    images, averaged over the classes 1.. the truth has; no class in the truth: 1 if nothing predicted, else 0."""
    from kseg.metric import VOID

    pairs = [(t[t != VOID], p[t != VOID]) for t, p in zip(truths, preds)]
    in_truth = sorted({int(v) for t, _ in pairs for v in np.unique(t)} - {0})
    if not in_truth:
        return 0.0 if any((p > 0).any() for _, p in pairs) else 1.0
    ious = []
    for cls in in_truth:
        intersection = sum(int(((t == cls) & (p == cls)).sum()) for t, p in pairs)
        union = sum(int(((t == cls) | (p == cls)).sum()) for t, p in pairs)
        ious.append(intersection / union)
    return float(np.mean(ious))


@st.composite
def multiclass_sets(draw: st.DrawFn) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from kseg.metric import VOID

    n_images = draw(st.integers(1, 3))
    shapes = [draw(st.tuples(st.integers(1, 6), st.integers(1, 6))) for _ in range(n_images)]
    truths = [draw(arrays(np.uint16, shape, elements=st.sampled_from([0, 1, 2, 5, VOID, VOID]))) for shape in shapes]
    preds = [draw(arrays(np.uint16, shape, elements=st.sampled_from([0, 1, 2, 3, 5]))) for shape in shapes]
    return truths, preds


@settings(max_examples=80, deadline=None)
@given(data=multiclass_sets())
def test_multiclass_score_matches_brute_force(data: tuple[list[np.ndarray], list[np.ndarray]]) -> None:
    from kseg.metric import TaskScores, dataset_score

    truths, preds = data
    assert dataset_score(truths, preds, "multiclass") == pytest.approx(brute_class_map_score(truths, preds))
    scores = TaskScores("multiclass")
    per_image = [scores.add(t, p) for t, p in zip(truths, preds)]
    assert per_image == pytest.approx([brute_class_map_score([t], [p]) for t, p in zip(truths, preds)])
    assert set(scores.class_scores()) <= {1, 2, 5}  # classes of the truth only; never background, void or 3


@pytest.mark.parametrize(("truth", "pred", "expected"), [
    ([[0, 0]], [[0, 0]], 1.0),  # no class anywhere (all background)
    ([[0, 0]], [[0, 3]], 0.0),  # a class predicted on an image whose truth has none
    ([[65535, 65535]], [[4, 4]], 1.0),  # all void: nothing counts
    ([[1, 1]], [[1, 0]], 0.5),  # a class removed by min_area (0): its pixels are misses
    ([[1, 2]], [[1, 3]], 0.5),  # class 2 missed (IoU 0), class 3 only predicted: not averaged
    ([[1, 65535]], [[1, 2]], 1.0),  # the prediction on void counts for nothing
])
def test_multiclass_edge_cases(truth: list, pred: list, expected: float) -> None:
    assert task_score(np.array(truth, np.uint16), np.array(pred, np.uint16), "multiclass") == pytest.approx(expected)


@pytest.mark.parametrize(("task", "name"), [("instance", "map_iou"), ("binary", "dice"), ("multiclass", "mean_iou_classes")])
def test_each_task_is_scored_by_its_own_metric_unless_data_metric_names_another(task: str, name: str) -> None:
    assert task_metric(task) is METRICS[name] and TASK_METRICS[task][0] == name
    for other in TASK_METRICS[task]:
        assert task_metric(task, other) is METRICS[other]


@pytest.mark.parametrize(("task", "name", "message"), [
    ("binary", "map_iou", r"data.metric: 'map_iou' does not score binary predictions; for data.task binary: auto, dice, iou, tgs_ap_iou"),
    ("multiclass", "dice", r"'dice' does not score multiclass predictions"),
    ("instance", "tgs", r"data.metric: 'tgs' is not a metric; for data.task instance: auto, map_iou, f2_iou"),
])
def test_a_metric_that_cannot_score_the_task_is_a_config_error(task: str, name: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        task_metric(task, name)


@settings(max_examples=40, deadline=None)
@given(pair=label_image_pairs(), name=st.sampled_from(TASK_METRICS["instance"]))
def test_task_scores_follow_the_named_metric(pair: tuple[np.ndarray, np.ndarray], name: str) -> None:
    """Validation, the search and ``kseg score`` all score through ``task_score``/``TaskScores``: under a named
    metric they give its brute-force value, mask metrics on the union of the objects."""
    truth, pred = pair
    expected = PER_IMAGE_REFERENCES[name](truth, pred)
    assert task_score(truth, pred, "instance", name) == pytest.approx(expected)
    scores = TaskScores("instance", name)
    scores.add(truth, pred)
    assert scores.score == pytest.approx(expected)
    if name in TASK_METRICS["binary"]:
        assert task_score(truth > 0, pred > 0, "binary", name) == pytest.approx(PER_IMAGE_REFERENCES[name](truth > 0, pred > 0))
