"""The multi-label task (``data.task: multilabel``): classes that may share pixels, as Severstal's defects do. Rows
are Severstal's (one per image and class present) and may overlap; label images hold a bit per class
(``kseg.classmaps``); targets have a 1 in every class of a pixel; a sigmoid per class and its own threshold; one
row per predicted class, overlapping rows valid; scores count each class on its own mask. Checked against brute
force on hypothesis-generated masks, and end to end on real CamVid frames (``tests/fixtures/camvid``) with one
more class, ``Traffic`` (car, pedestrian or bicyclist), which overlaps three others."""
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

from conftest import TINY_RUN, tiny_args, tiny_sets
from kseg import classmaps, rle
from kseg.cli import main
from kseg.config import load_config
from kseg.data import PRESETS, Schema, load_records
from kseg.errors import DataError
from kseg.metric import VOID, TaskScores, class_map_counts, score_frames
from kseg.postprocess import class_bits, instances_from_probs, remove_small_classes
from kseg.run import RunDir
from kseg.search import command_search
from kseg.submission import submission_frame, validate_submission
from kseg.targets import make_targets

SEVERSTAL = Schema(**PRESETS["severstal"])
CAMVID = "configs/real/camvid_multiclass.yaml"
CLASSES = "[Sky, Building, Pole, Road, Pavement, Tree, SignSymbol, Fence, Car, Pedestrian, Bicyclist, Traffic]"
TRAFFIC = (9, 10, 11)  # Car, Pedestrian, Bicyclist: their union is class 12

masks_of = arrays(bool, st.tuples(st.integers(1, 3), st.integers(1, 6), st.integers(1, 6)))


def _bits(masks: np.ndarray) -> np.ndarray:
    return classmaps.paint(list(masks), list(range(1, len(masks) + 1)), masks.shape[1:], True)


# ------------------------------------------------------------------------------------------------ class maps

@given(masks_of)
def test_a_bit_per_class_keeps_every_mask_and_its_area(masks):
    labels = _bits(masks)
    for class_id, mask in enumerate(masks, start=1):
        assert np.array_equal(classmaps.class_mask(labels, class_id, True), mask)
    areas = classmaps.class_areas(np.bincount(labels.ravel()), True)
    assert [int(areas[k]) if k < areas.size else 0 for k in range(1, len(masks) + 1)] == masks.reshape(len(masks), -1).sum(1).tolist()
    assert classmaps.present_classes(labels, True) == [k for k, m in enumerate(masks, start=1) if m.any()]
    dropped = classmaps.drop_classes(labels, [1], True)
    assert not classmaps.class_mask(dropped, 1, True).any()
    assert all(np.array_equal(classmaps.class_mask(dropped, k, True), masks[k - 1]) for k in range(2, len(masks) + 1))


@given(masks_of, masks_of)
def test_overlapping_counts_equal_each_class_counted_alone(truth_masks, pred_masks):
    pred_masks = pred_masks[:, :truth_masks.shape[1], :truth_masks.shape[2]]
    if pred_masks.shape[1:] != truth_masks.shape[1:]:
        return
    truth, pred = _bits(truth_masks), _bits(pred_masks)
    counts = class_map_counts(truth, pred, 4, overlapping=True)
    for class_id in range(1, 4):
        t = truth_masks[class_id - 1] if class_id <= len(truth_masks) else np.zeros(truth.shape, bool)
        p = pred_masks[class_id - 1] if class_id <= len(pred_masks) else np.zeros(truth.shape, bool)
        assert counts[:, class_id].tolist() == [(t & p).sum(), (t | p).sum(), t.sum()]


def test_void_pixels_count_for_no_class_and_a_pixel_may_have_two_classes():
    truth = np.array([[0b01, 0b11, VOID]], np.uint16)
    pred = np.array([[0b11, 0b10, 0b11]], np.int32)
    counts = class_map_counts(truth, pred, 3, overlapping=True)
    assert counts[:, 1].tolist() == [1, 2, 2] and counts[:, 2].tolist() == [1, 2, 1]
    scores = TaskScores("multilabel", "dice_classes", 2)
    scores.add(truth, pred)
    assert scores.class_scores() == pytest.approx({1: 2 / 3, 2: 2 / 3})
    targets = make_targets(truth, "multilabel", None, 2, 0)
    assert targets[0].tolist() == [[0, 1, 0], [0, 1, 1], [0, 0, 0]]  # void: every channel 0, the loss skips it


# ------------------------------------------------------------------------------------------------ post-processing

def test_each_class_has_its_own_threshold_and_min_area():
    probs = np.zeros((4, 4, 3), np.float32)
    probs[..., 1] = 0.6
    probs[:2, :2, 2] = 0.4  # class 2 shares its pixels with class 1
    assert (instances_from_probs(probs, {"min_area": 0}, "multilabel") == 1).all()  # 0.5 by default
    both = instances_from_probs(probs, {"class_threshold": [None, 0.3], "min_area": 0}, "multilabel")
    assert (both[:2, :2] == 0b11).all() and (both[2:] == 0b01).all()
    assert np.array_equal(class_bits(probs, [0.7, 0.3]), np.where(probs[..., 2] >= 0.3, 0b10, 0))
    small = instances_from_probs(probs, {"class_threshold": 0.3, "min_area": [0, 5]}, "multilabel")
    assert (small == 0b01).all()  # class 2 (4 px) < 5 px: its bit cleared, class 1 kept underneath
    assert remove_small_classes(np.array([[3, 1, 1]]), [3, 2], overlapping=True).tolist() == [[1, 1, 1]]


# ------------------------------------------------------------------------------------------------ rows

def test_submission_rows_overlap_and_validate_for_multilabel_only(tmp_path):
    bits = np.zeros((3, 4), np.int32)
    bits[:, :2] = 0b100
    bits[0, :3] |= 0b001  # class 1 shares two pixels with class 3
    frame = submission_frame({"a.png": bits, "b.png": np.zeros((3, 4), np.int32)}, SEVERSTAL, overlapping=True)
    class_1, class_3 = (bits & 1) > 0, (bits & 4) > 0
    assert frame.values.tolist() == [["a.png", rle.encode(class_1, "F"), "1"], ["a.png", rle.encode(class_3, "F"), "3"],
                                     ["b.png", "", ""]]
    path = tmp_path / "sub.csv"
    frame.to_csv(path, index=False)
    shapes = {"a.png": (3, 4), "b.png": (3, 4)}
    assert validate_submission(path, SEVERSTAL, shapes, "multilabel", 4) == []
    assert any("class mask overlaps earlier class masks" in p for p in validate_submission(path, SEVERSTAL, shapes,
                                                                                            "multiclass", 4))
    report = score_frames(frame, frame, SEVERSTAL, shapes, task="multilabel", n_classes=4)
    assert report.per_image["a.png"] == pytest.approx(1.0)  # each class matches; absent pairs count 1


def _multilabel_camvid(root: Path, fixtures_dir: Path) -> Path:
    """The CamVid fixture plus a row per image for class 12, Traffic: the union of its car, pedestrian and
    bicyclist rows, which it overlaps."""
    data_dir = root / "data"
    shutil.copytree(fixtures_dir / "camvid", data_dir)
    for name in ("train.csv", "test_truth.csv"):
        frame = pd.read_csv(data_dir / name, dtype=str, keep_default_na=False)
        extra = []
        for image_id, rows in frame.groupby("ImageId", sort=False):
            shape = (90, 120)
            union = np.zeros(shape, bool)
            for value in rows.loc[rows["ClassId"].astype(int).isin(TRAFFIC), "EncodedPixels"]:
                union |= rle.decode(value, shape, "F")
            if union.any():
                extra.append({"ImageId": image_id, "ClassId": "12", "EncodedPixels": rle.encode(union, "F"),
                              "sequence": rows["sequence"].iloc[0]})
        pd.concat([frame, pd.DataFrame(extra)]).to_csv(data_dir / name, index=False)
    return data_dir


def test_overlapping_rows_load_as_bits_and_are_an_error_for_exclusive_classes(tmp_path, fixtures_dir):
    data_dir = _multilabel_camvid(tmp_path, fixtures_dir)
    sets = [f"data.root={data_dir}", "data.schema.group_col=sequence", f"data.classes={CLASSES}"]
    records = load_records(load_config(CAMVID, [*sets, "data.task=multilabel"]), progress=False)
    frame = pd.read_csv(data_dir / "train.csv", dtype=str, keep_default_na=False)
    for record in records:
        rows = frame[frame["ImageId"] == record.id]
        for class_id, value in zip(rows["ClassId"].astype(int), rows["EncodedPixels"]):
            assert np.array_equal(classmaps.class_mask(record.labels, class_id, True), rle.decode(value, record.shape, "F"))
    traffic = frame.index[frame["ClassId"] == "12"][0] + 2
    with pytest.raises(DataError, match=rf"train.csv line {traffic} \(id .*\): the mask of class id 12 overlaps an "
                                        r"earlier row .*data.task multilabel"):
        load_records(load_config(CAMVID, sets), progress=False)
    frame.loc[0, "ClassId"] = "16"
    frame.to_csv(data_dir / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv line 2 \(id 0001TP_006690.png\): class id 16 is out of range"):
        load_records(load_config(CAMVID, [*sets[:2], "data.classes=null", "data.task=multilabel"]), progress=False)


# ------------------------------------------------------------------------------------------------ end to end

@pytest.mark.slow
def test_multilabel_run_on_real_frames_writes_a_valid_submission(tmp_path, fixtures_dir, capsys):
    """``kseg run`` with ``data.task: multilabel`` on 4 + 2 real CamVid frames with the overlapping Traffic class:
    sigmoid channels, OOF search of a threshold and min_area per class, a submission ``kseg validate`` accepts and
    ``kseg score`` scores by Severstal's Dice."""
    data_dir = _multilabel_camvid(tmp_path, fixtures_dir)
    tiny = [*TINY_RUN, "model.arch=unet_scratch", "model.encoder_weights=null", "model.scratch.filters=4",
            "model.scratch.depth=2", "data.schema.group_col=sequence", "data.task=multilabel", f"data.classes={CLASSES}",
            "postprocess.grid={class_threshold: [0.3, 0.5], min_area: [0, 10]}"]
    args = tiny_args(tmp_path, config=CAMVID, tiny=tiny)
    assert main(["run", *args]) == 0
    run = tmp_path / "run"
    channels = json.loads(RunDir(run).channels.read_text())
    assert channels["task"] == "multilabel" and channels["channels"][-1] == "class:Traffic" and len(channels["channels"]) == 13
    chosen = json.loads(RunDir(run).postprocess.read_text())
    assert len(chosen["default"]["class_threshold"]) == 12 and len(chosen["default"]["min_area"]) == 12
    written = {path: path.read_bytes() for path in (RunDir(run).postprocess, RunDir(run).search_table)}
    plain = command_search(load_config(CAMVID, tiny_sets(tmp_path, (), tiny)), use_tta=False, write=False)
    assert plain.searched_on == "plain" and {path: path.read_bytes() for path in written} == written
    submission = pd.read_csv(tmp_path / "submission.csv", dtype=str, keep_default_na=False)
    assert list(submission.columns) == ["ImageId", "EncodedPixels", "ClassId"]
    assert not submission.duplicated(["ImageId", "ClassId"]).any()
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "submission.csv"), *args]) == 0
    assert capsys.readouterr().out.startswith(f"valid: {len(submission)} rows, 2 images")
    assert main(["score", str(data_dir / "test_truth.csv"), str(tmp_path / "submission.csv"), *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["score"] <= 1.0 and set(report["per_image"]) == set(submission["ImageId"])


@pytest.mark.parametrize(("task", "expected"), [("multilabel", "sigmoid"), ("multiclass", "softmax"), ("binary", "sigmoid")])
def test_auto_activation_is_a_sigmoid_per_class_when_classes_overlap(task, expected):
    from kseg.model import activation

    assert activation(load_config(CAMVID, [f"data.task={task}"] if task != "binary" else [
        "data.task=binary", "data.schema.preset=tgs", "data.classes=null"])) == expected
