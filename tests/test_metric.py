"""Metric: IoU matrix and instance score against brute-force references, edge cases, frame scoring."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from kseg.data import PRESETS, Schema
from kseg.errors import DataError, RLEError
from kseg.metric import THRESHOLDS, dice, image_score, iou, iou_matrix, score_frames

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
    with pytest.raises(DataError, match="task must be 'instance' or 'binary'"):
        score_frames(truth_df, as_prediction(truth_df), SARTORIUS, task="semantic")


def test_numeric_core_does_not_import_tensorflow() -> None:
    code = "import sys, kseg.rle, kseg.metric; print('tensorflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
