"""kseg.analysis and kseg.eda: errors classified by kind, the OOF analysis agrees with the search, dataset stats."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_sets
from kseg.analysis import analyse_oof, classify_objects, param_profiles
from kseg.config import load_config
from kseg.eda import dataset_stats
from kseg.overlay import error_overlay
from kseg.plots import ERROR_COLOURS
from kseg.postprocess import label_objects
from kseg.run import RunDir


def scene() -> tuple[np.ndarray, np.ndarray]:
    """Truth: 1 found, 2 and 3 merged by one prediction, 4 missed; prediction 9 is a false positive."""
    truth = np.zeros((20, 40), np.int32)
    truth[1:5, 1:5] = 1
    truth[8:12, 1:5] = 2
    truth[8:12, 6:10] = 3
    truth[15:19, 30:34] = 4
    pred = np.zeros_like(truth)
    pred[1:5, 1:6] = 5
    pred[8:12, 1:10] = 7
    pred[1:4, 30:33] = 9
    return truth, pred


def test_classify_objects_sorts_every_kind() -> None:
    truth, pred = scene()
    errors = classify_objects(truth, pred)
    assert errors.matched.tolist() == [5] and errors.merged.tolist() == [7]
    assert errors.false_positive.tolist() == [9] and errors.missed.tolist() == [4]
    assert errors.counts() == {"missed": 1, "matched": 1, "false positive": 1, "merged": 1}
    empty = classify_objects(np.zeros_like(truth), np.zeros_like(pred)).counts()
    assert set(empty.values()) == {0}


def test_binary_masks_are_compared_as_their_components() -> None:
    truth, pred = scene()
    truth_objects, pred_objects = label_objects(truth > 0, "binary"), label_objects(pred > 0, "binary")
    assert truth_objects.max() == 4 and pred_objects.max() == 3
    assert classify_objects(truth_objects, pred_objects).counts() == {
        "missed": 1, "matched": 1, "false positive": 1, "merged": 1}


def test_error_overlay_paints_each_kind_in_its_colour() -> None:
    truth, pred = scene()
    rgb = error_overlay(np.zeros((*truth.shape, 3), np.uint8), truth, pred, alpha=1.0)
    for (row, col), kind in {(2, 2): "matched", (10, 5): "merged", (2, 31): "false positive",
                             (17, 32): "missed"}.items():
        assert tuple(rgb[row, col]) == ERROR_COLOURS[kind], kind
    assert tuple(rgb[15, 30]) == (255, 255, 255)  # true outlines are white (predicted ones in their colour)
    assert tuple(rgb[1, 5]) == ERROR_COLOURS["matched"]
    assert tuple(rgb[0, 20]) == (0, 0, 0)


def test_param_profiles_run_through_each_columns_best_point() -> None:
    table = pd.DataFrame({"fg_threshold": [0.4, 0.4, 0.6, 0.6], "min_area": [0, 10, 0, 10],
                          "score": [0.1, 0.5, 0.3, 0.2], "score:a": [0.9, 0.1, 0.2, 0.3]})
    profiles = param_profiles(table)
    assert profiles["fg_threshold"]["all"].to_dict() == {0.4: 0.5, 0.6: 0.2}  # at min_area 10, the best
    assert profiles["fg_threshold"]["a"].to_dict() == {0.4: 0.9, 0.6: 0.2}   # class a's best is min_area 0
    assert profiles["min_area"]["all"].to_dict() == {0: 0.1, 10: 0.5}


@pytest.mark.slow
def test_analysis_reproduces_the_search_and_counts_every_object(finished_run: Path) -> None:
    cfg = load_config("configs/demo.yaml", tiny_sets(finished_run))
    analysis = analyse_oof(cfg, progress=False)
    chosen = json.loads(RunDir(finished_run / "run").postprocess.read_text())
    images = analysis.images
    assert len(images) == chosen["n_images"] == 6
    assert images["score"].mean() == pytest.approx(chosen["oof_score"])
    assert images["score_plain"].mean() == pytest.approx(chosen["oof_score_plain"])
    assert {str(k): v for k, v in analysis.per_fold()["score"].items()} == pytest.approx(chosen["per_fold"])
    assert analysis.per_class()["score"].to_dict() == pytest.approx(chosen["per_class_score"])
    assert (images["cls"] == images["predicted_cls"]).mean() == pytest.approx(chosen["class_accuracy"])
    counts = analysis.by_threshold
    assert ((counts["tp"] + counts["fn"]) == images["n_true"].sum()).all()
    assert ((counts["tp"] + counts["fp"]) == images["n_pred"].sum()).all()
    assert counts["tp"].is_monotonic_decreasing
    assert int(analysis.confusion().to_numpy().sum()) == 6
    assert list(analysis.histories) == ["fold0", "fold1"] and set(analysis.stage_seconds) == {
        "folds", "train", "oof", "search", "predict"}
    assert set(analysis.fold_scores["per_fold"]) == {"fold0", "fold1"}
    assert "OOF score (tta predictions, searched parameters)" in analysis.summary()["what"].tolist()


@pytest.mark.slow
def test_dataset_stats_measure_every_image_and_instance(finished_run: Path) -> None:
    cfg = load_config("configs/demo.yaml", tiny_sets(finished_run))
    stats = dataset_stats(cfg)
    assert len(stats.images) == 6 and stats.images["file_channels"].isin([1, 3, 4]).all()
    assert stats.folds.loc["total", "images"] == 6 and stats.folds_note.startswith("from ")
    assert len(stats.instances) == stats.images["n_instances"].sum()
    assert (stats.instances["area"] > 0).all()
    np.testing.assert_allclose(stats.intensity.sum().to_numpy(), 1.0)
    per_class = stats.per_class()
    assert per_class["images"].sum() == 6 and per_class["instances"].sum() == len(stats.instances)
