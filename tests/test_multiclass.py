"""The multi-class exclusive task (``data.task: multiclass``): Severstal-style rows (one per image and class
present), class maps with void, softmax targets, argmax + per-class minimum area, one row per predicted class in
the submission; bad inputs named by file, line and value; and one tiny end-to-end run on real CamVid frames
(``tests/fixtures/camvid``, 4× downscaled, see tests/fixtures/SOURCE.md) ending in a valid submission."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import TINY_RUN, tiny_args
from kseg import rle
from kseg.cli import main
from kseg.config import Config, load_config
from kseg.data import PRESETS, Schema, load_records, schema_from_config
from kseg.errors import ConfigError, DataError, SubmissionError
from kseg.metric import VOID, TaskScores, class_map_counts, class_map_score, score_frames, task_score
from kseg.postprocess import class_map, instances_from_probs, remove_small_classes, validate_params
from kseg.run import RunDir
from kseg.submission import submission_frame, validate_submission
from kseg.targets import channel_names, make_targets

CONFIG = "configs/real/camvid_multiclass.yaml"
SEVERSTAL = Schema(**PRESETS["severstal"])
# The tiny run of the CamVid fixture: the shipped config on its folder, kseg's small from-scratch U-Net.
CAMVID_RUN = [*TINY_RUN, "model.arch=unet_scratch", "model.encoder_weights=null", "model.scratch.filters=4", "model.scratch.depth=2",
              "data.schema.group_col=sequence"]


def _camvid(root: Path, fixtures_dir: Path) -> list[str]:
    shutil.copytree(fixtures_dir / "camvid", root / "data")
    return tiny_args(root, config=CONFIG, tiny=CAMVID_RUN)


def _cfg(root: Path, *extra: str) -> Config:
    return load_config(CONFIG, [f"data.root={root}", "data.schema.group_col=sequence", *extra])


# ------------------------------------------------------------------------------------------------ core

def test_targets_are_one_hot_with_void_all_zero():
    labels = np.array([[0, 1, 2], [VOID, 2, 1]], np.uint16)
    targets = make_targets(labels, "multiclass", None, 2, 2)
    assert targets.shape == (2, 3, 3) and channel_names("multiclass", ["a", "b"]) == ["background", "class:a", "class:b"]
    assert targets[0, 0].tolist() == [1, 0, 0] and targets[0, 2].tolist() == [0, 0, 1]
    assert targets[1, 0].tolist() == [0, 0, 0]  # void: no channel, so the masked loss ignores it


def test_argmax_and_per_class_min_area():
    probs = np.zeros((4, 4, 3), np.float32)
    probs[..., 1] = 0.6  # class 1 everywhere but one pixel
    probs[0, 0] = [0.1, 0.2, 0.7]  # class 2: one pixel
    assert instances_from_probs(probs, {"min_area": 0}, "multiclass")[0, 0] == 2
    assert instances_from_probs(probs, {"min_area": 2}, "multiclass")[0, 0] == 0  # too small: no class, no row
    kept = instances_from_probs(probs, {"min_area": [20, 0]}, "multiclass")  # class 1 (15 px) < 20, class 2 kept
    assert kept[0, 0] == 2 and (kept[1:] == 0).all()
    assert remove_small_classes(np.array([[1, 1, 2]]), [0, 5]).tolist() == [[1, 1, 0]]
    with pytest.raises(ConfigError, match="min_area"):
        validate_params({"min_area": [1, -1]}, "multiclass")


def test_task_scores_accumulate_pixels_over_images():
    a = np.array([[1, 1, VOID, 2]], np.uint16)
    b = np.array([[1, 2, 2, 2]], np.uint16)
    scores = TaskScores("multiclass")
    scores.add(a, b)  # class 1: 1/2; class 2: 1/2 (the void pixel counts for nothing)
    scores.add(np.array([[2, 2]], np.uint16), np.array([[2, 2]], np.uint16))  # class 2 now 3/4
    assert scores.class_scores() == pytest.approx({1: 0.5, 2: 0.75})
    assert scores.score == pytest.approx(0.625)
    assert task_score(a, b, "multiclass") == pytest.approx(0.5)
    # A class only predicted is not averaged (classes of the truth), but its pixels are the true class's misses.
    assert class_map_score(class_map_counts(np.array([[1, 1]]), np.array([[1, 3]]))) == pytest.approx(0.5)
    assert class_map_score(class_map_counts(np.array([[VOID]]), np.array([[0]]))) == 1.0  # nothing anywhere


def test_submission_rows_per_class_and_their_validation(tmp_path):
    classes = np.zeros((3, 4), np.int32)
    classes[:, :2], classes[0, 3] = 4, 1
    frame = submission_frame({"a.png": classes, "b.png": np.zeros((3, 4), np.int32)}, SEVERSTAL)
    assert list(frame.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert frame.values.tolist() == [["a.png", rle.encode(classes == 1, "F"), "1"],
                                     ["a.png", rle.encode(classes == 4, "F"), "4"], ["b.png", "", ""]]
    path = tmp_path / "sub.csv"
    frame.to_csv(path, index=False)
    shapes = {"a.png": (3, 4), "b.png": (3, 4)}
    assert validate_submission(path, SEVERSTAL, shapes, "multiclass", 11) == []
    assert validate_submission(path, SEVERSTAL, shapes, "multiclass", 3) == [
        "line 3 (ClassId): class id 4 is out of range; class ids are 1..3 (data.classes names 3)"]
    bad = pd.DataFrame([["a.png", "1 2", "x"], ["a.png", "2 2", "2"], ["b.png", "1 1", "2"], ["b.png", "5 1", "2"],
                        ["b.png", "", "3"]], columns=frame.columns)
    bad.to_csv(path, index=False)
    problems = validate_submission(path, SEVERSTAL, shapes, "multiclass", 11)
    assert "line 2 (ClassId): unknown class id 'x'; class ids are integers (1..11)" in problems
    assert any(p.startswith("line 3: id 'a.png' class mask overlaps earlier class masks") for p in problems)
    assert any(p.startswith("line 5: id 'b.png' has class 2 twice (first at line 4)") for p in problems)
    assert any(p.startswith("line 6: id 'b.png' has an empty mask with class '3'") for p in problems)


def test_score_frames_multiclass_against_truth_rows():
    truth = np.array([[1, 1], [2, 0]], np.uint16)
    truth_df = pd.DataFrame([["a", "1", rle.encode(truth == 1, "F")], ["a", "2", rle.encode(truth == 2, "F")]],
                            columns=["ImageId", "ClassId", "EncodedPixels"])
    pred = np.array([[1, 2], [2, 0]], np.uint16)
    pred_df = submission_frame({"a": pred}, SEVERSTAL)
    report = score_frames(truth_df, pred_df, SEVERSTAL, {"a": (2, 2)}, task="multiclass")
    assert report.per_class == pytest.approx({"1": 0.5, "2": 0.5}) and report.score == pytest.approx(0.5)
    ignoring = Schema(**{**PRESETS["severstal"], "unlabelled": "ignore"})  # pixel (1, 1) void: same here
    assert score_frames(truth_df, pred_df, ignoring, {"a": (2, 2)}, task="multiclass").score == pytest.approx(0.5)
    overlapping = pd.concat([pred_df, pred_df.assign(ClassId="3")])
    with pytest.raises(SubmissionError, match=r"prediction line 4 \(id a\): class id 3: its mask overlaps"):
        score_frames(truth_df, overlapping, SEVERSTAL, {"a": (2, 2)}, task="multiclass")


def test_schema_and_config_checks():
    with pytest.raises(ConfigError, match="submission_cols must be three column names"):
        schema_from_config(load_config(CONFIG, ["data.schema.submission_cols=[ImageId, EncodedPixels]"]))
    with pytest.raises(ConfigError, match="data.schema.unlabelled must be one of background, ignore"):
        schema_from_config(load_config(CONFIG, ["data.schema.unlabelled=void"]))
    with pytest.raises(ConfigError, match="needs data.schema.class_col"):
        schema_from_config(load_config(CONFIG, ["data.schema.preset=null", "data.schema.id_col=ImageId",
                                                "data.schema.rle_col=EncodedPixels", "data.schema.rle_order=F"]))
    with pytest.raises(ConfigError, match="data.classes must be null or a list of distinct class names"):
        load_config(CONFIG, ["data.classes=[a, a]"])
    with pytest.raises(ConfigError, match="model.activation must be one of auto, sigmoid, softmax"):
        load_config(CONFIG, ["model.activation=relu"])


# ------------------------------------------------------------------------------------------------ bad input

def _bad_csv(root: Path, fixtures_dir: Path, line: int, column: str, value: str) -> Path:
    shutil.copytree(fixtures_dir / "camvid", root)
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    frame.loc[line - 2, column] = value
    frame.to_csv(root / "train.csv", index=False)
    return root / "train.csv"


@pytest.mark.parametrize(("value", "message"), [
    ("car", "line 5 (ClassId): unknown class id 'car'; class ids are integers (1..11)"),
    ("2.5", "line 5 (ClassId): unknown class id '2.5'; class ids are integers (1..11)"),
    ("12", "line 5 (ClassId): class id 12 is out of range; class ids are 1..11 (data.classes names 11)"),
    ("0", "line 5 (ClassId): class id 0 is out of range; class ids are 1..11"),
])
def test_bad_class_ids_name_file_line_and_value(tmp_path, fixtures_dir, value, message):
    csv_path = _bad_csv(tmp_path / "data", fixtures_dir, 5, "ClassId", value)
    with pytest.raises(DataError) as error:
        load_records(_cfg(tmp_path / "data"), progress=False)
    assert str(error.value).startswith(f"{csv_path} {message}")


def test_overlapping_class_rows_are_an_error(tmp_path, fixtures_dir):
    root = tmp_path / "data"
    shutil.copytree(fixtures_dir / "camvid", root)
    frame = pd.read_csv(root / "train.csv", dtype=str, keep_default_na=False)
    first = frame["ImageId"] == frame["ImageId"].iloc[0]
    frame.loc[first.idxmax() + 1, "EncodedPixels"] = frame.loc[first.idxmax(), "EncodedPixels"]  # class 2 = class 1's mask
    frame.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError) as error:
        load_records(_cfg(root), progress=False)
    assert str(error.value).startswith(f"{root / 'train.csv'} line 3 (id {frame['ImageId'].iloc[0]}): the mask of class "
                                       f"id {frame['ClassId'].iloc[1]} overlaps an earlier row of the image")
    frame.loc[1, "ClassId"] = frame.loc[0, "ClassId"]
    frame.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match=r"line 3 \(id .*\): class id 1 has a second row in the image \(first at line 2\)"):
        load_records(_cfg(root), progress=False)


def test_bad_class_id_is_one_error_line_from_the_command_line(tmp_path, fixtures_dir, capsys):
    csv_path = _bad_csv(tmp_path / "data", fixtures_dir, 7, "ClassId", "99")
    args = ["folds", "--config", CONFIG, "--set", f"data.root={tmp_path / 'data'}", "--set",
            "data.schema.group_col=sequence", "--set", f"output.dir={tmp_path / 'run'}", "--set", "folds.n_splits=2"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {csv_path} line 7 (ClassId): class id 99 is out of range; class ids are 1..11 "
                   f"(data.classes names 11)"]


@given(arrays(np.uint8, (6, 5, 4), elements=st.integers(0, 4)))  # few levels: many exact ties
def test_class_thresholds_of_none_are_exactly_the_argmax(levels):
    probs = levels.astype(np.float32) / 4
    assert np.array_equal(class_map(probs, [None, None, None]), class_map(probs))
    # A threshold per class: the most probable class where it reaches its own threshold, no class elsewhere.
    thresholded = class_map(probs, [0.5, None, 1.0])
    best = np.argmax(probs[..., 1:], axis=-1) + 1
    top = probs[..., 1:].max(axis=-1)
    expected = np.where(best == 1, np.where(top >= 0.5, 1, 0),
                        np.where(best == 2, np.where(top > probs[..., 0], 2, 0), np.where(top >= 1.0, 3, 0)))
    assert np.array_equal(thresholded, expected)


def test_class_threshold_is_checked_and_keeps_a_low_sigmoid_class():
    probs = np.zeros((4, 4, 3), np.float32)
    probs[..., 0] = 0.8  # sigmoid outputs: the background channel is confident everywhere
    probs[:2, :, 2] = 0.4  # class 2 is present but under-confident
    assert (instances_from_probs(probs, {"min_area": 0}, "multiclass") == 0).all()  # the argmax loses it
    kept = instances_from_probs(probs, {"class_threshold": [0.5, 0.3], "min_area": 0}, "multiclass")
    assert (kept[:2] == 2).all() and (kept[2:] == 0).all()
    for bad in (1.5, [0.5, "x"], [], True):
        with pytest.raises(ConfigError, match="class_threshold"):
            validate_params({"class_threshold": bad, "min_area": 0}, "multiclass")
    with pytest.raises(ConfigError, match="class_threshold"):  # a list per class is for classes
        validate_params({"fg_threshold": 0.5, "min_area": 0, "class_threshold": [0.5]}, "binary")


def test_camvid_fixture_loads_as_class_maps_with_void(fixtures_dir):
    records = load_records(_cfg(fixtures_dir / "camvid"), progress=False)
    assert [r.id for r in records][:1] == ["0001TP_006690.png"] and all(r.cls is None for r in records)
    for record in records:
        assert record.labels.dtype == np.uint16 and record.shape == (90, 120)
        values = set(np.unique(record.labels).tolist())
        assert values <= set(range(1, 12)) | {VOID} and VOID in values and 0 not in values


# ------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_multiclass_run_on_real_camvid_frames_writes_a_valid_submission(tmp_path, fixtures_dir, capsys):
    """The shipped CamVid config (Severstal schema, void ignored, softmax) on 4 + 2 real frames, 4x downscaled:
    folds by sequence, one epoch of a tiny U-Net, OOF search of min_area, one row per predicted class per test
    image; ``kseg validate`` accepts it and ``kseg score`` scores it by mean IoU. Class weights ``auto`` come
    from the training fold's pixel counts: one per channel, printed and recorded with the fold."""
    args = _camvid(tmp_path, fixtures_dir)
    assert main(["run", *args, "--set", "train.channel_weights=auto"]) == 0
    weights_line = next(line for line in capsys.readouterr().out.splitlines() if "channel weights" in line)
    assert len(weights_line.split(": channel weights ")[1].split(" (")[0].split(", ")) == 12
    run = tmp_path / "run"
    channels = json.loads(RunDir(run).channels.read_text())
    assert channels["task"] == "multiclass" and channels["channels"][:2] == ["background", "class:Sky"]
    assert len(channels["channels"]) == 12 and channels["classes"] == []
    chosen = json.loads(RunDir(run).postprocess.read_text())
    assert len(chosen["default"]["min_area"]) == 11 and 0.0 <= chosen["oof_score"] <= 1.0
    submission = pd.read_csv(tmp_path / "submission.csv", dtype=str, keep_default_na=False)
    assert list(submission.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert set(submission["ImageId"]) == {p.name for p in (tmp_path / "data" / "test").iterdir()}
    assert not submission.duplicated(["ImageId", "ClassId"]).any()
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "submission.csv"), *args]) == 0
    assert capsys.readouterr().out.startswith(f"valid: {len(submission)} rows, 2 images")
    assert main(["score", str(tmp_path / "data" / "test_truth.csv"), str(tmp_path / "submission.csv"), *args[:2],
                 *[a for s in CAMVID_RUN[-1:] for a in ("--set", s)], "--set", f"data.root={tmp_path / 'data'}",
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["score"] <= 1.0 and set(report["per_image"]) == set(submission["ImageId"])
    # Severstal's metric by name: the OOF search scores and tabulates each class by its (image, class) Dice.
    assert main(["search", *args, "--set", "data.metric=dice_classes"]) == 0
    chosen = json.loads(RunDir(run).postprocess.read_text())
    table = pd.read_csv(RunDir(run).search_table)
    assert 0.0 <= chosen["oof_score"] <= 1.0 and len(chosen["per_class_score"]) == 11
    assert "dice_classes:Sky" in table.columns and "iou:Sky" not in table.columns


def test_softmax_model_and_void_masked_loss():
    """``model.activation: auto`` is a softmax for multiclass; the loss ignores void pixels (all-zero targets):
    changing the prediction there changes nothing, and it stays finite (sm's CE divides by the channel sum)."""
    import tensorflow as tf

    from kseg.model import build_loss, build_model

    cfg = load_config(CONFIG, ["model.arch=unet_scratch", "model.encoder_weights=null", "model.scratch.filters=4",
                               "model.scratch.depth=2"])
    model = build_model(cfg, 3)
    probs = np.asarray(model.predict_on_batch(np.zeros((1, 32, 32, 3), np.float32)))
    assert np.allclose(probs.sum(axis=-1), 1.0, atol=1e-5)
    loss = build_loss(cfg, 3)
    target = np.zeros((1, 2, 2, 3), np.float32)
    target[0, 0, 0, 1] = target[0, 0, 1, 2] = 1.0  # bottom row void
    pred = np.full((1, 2, 2, 3), 1 / 3, np.float32)
    other = pred.copy()
    other[0, 1] = [1.0, 0.0, 0.0]
    first, second = float(loss(tf.constant(target), tf.constant(pred))), float(loss(tf.constant(target), tf.constant(other)))
    assert np.isfinite(first) and first == pytest.approx(second, abs=1e-5)
    assert float(loss(tf.constant(np.zeros_like(target)), tf.constant(pred))) == pytest.approx(
        float(loss(tf.constant(np.zeros_like(target)), tf.constant(other))), abs=1e-5)  # all void: finite, constant
