"""The shipped experiment configs load, and the DSB-schema config reads a column-major ImageId,EncodedPixels
competition with RGBA images of different sizes through the same commands."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kseg import classmaps, rle
from kseg.cli import main
from kseg.config import load_config
from kseg.data import PRESETS, load_records, read_image
from kseg.errors import DataError
from kseg.metric import tgs_score

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))
REAL_CONFIGS = sorted((Path(__file__).parents[1] / "configs" / "real").glob("*.yaml"))
# What a real-data config may set: the scoreboard measures kseg's defaults for everything else. ``folds`` only
# as ``n_splits``, where the set has fewer training groups than the default 5 folds (CamVid: 3 sequences).
REAL_ALLOWED = {"name", "data", "output", "folds"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.data.schema_.preset in PRESETS or cfg.data.schema_.rle_col
    assert cfg.train.size % 32 == 0


@pytest.mark.parametrize("task", ["binary", "instance"])
def test_isbi_config_reads_the_prepared_slices_as_either_task(tmp_path, fixtures_dir, task):
    """configs/isbi2012.yaml on the layout benchmarks.real_sets prepares, here from the two real fixture slices:
    binary unions the cell rows into the interior mask, instance keeps each 4-connected cell an object."""
    from skimage.measure import label

    root = tmp_path / "isbi"
    (root / "train").mkdir(parents=True)
    interior = cv2.imread(str(fixtures_dir / "isbi" / "label" / "0.png"), cv2.IMREAD_GRAYSCALE) > 127
    cells = label(interior, connectivity=1)  # the fixture labels slice 0; both slices here carry its cells
    rows = []
    for k in range(2):
        cv2.imwrite(str(root / "train" / f"slice{k:02d}.png"),
                    cv2.imread(str(fixtures_dir / "isbi" / "image" / f"{k}.png"), cv2.IMREAD_GRAYSCALE))
        rows += [(f"slice{k:02d}", rle.encode(cells == c, "C"), 512, 512, "block0") for c in range(1, cells.max() + 1)]
    pd.DataFrame(rows, columns=["id", "annotation", "height", "width", "group"]).to_csv(root / "train.csv", index=False)
    cfg = load_config("configs/isbi2012.yaml", [f"data.root={root}", f"data.task={task}"])
    records = load_records(cfg, progress=False)
    assert [r.group for r in records] == ["block0", "block0"]
    assert np.array_equal(records[0].labels > 0, interior)
    assert int(records[0].labels.max()) == (1 if task == "binary" else int(cells.max()))


@pytest.mark.parametrize("path", REAL_CONFIGS, ids=lambda p: p.name)
def test_real_config_loads_and_sets_only_data(path):
    import yaml

    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert set(raw) <= REAL_ALLOWED, f"{path.name} sets {set(raw) - REAL_ALLOWED}: those must come from the defaults"
    assert set(raw.get("folds", {})) <= {"n_splits"}, f"{path.name}: folds may only say how many groups allow"
    assert cfg.data.root == f"data/real/{path.stem}"
    assert cfg.data.test_truth and cfg.data.schema_.group_col == "group"


def test_every_real_set_has_a_config():
    from benchmarks.real_sets import SETS
    from kseg.tasks import TASKS

    assert sorted(p.stem for p in REAL_CONFIGS) == sorted(n for n, s in SETS.items() if s.task in TASKS)


def _dsb_competition(root: Path) -> dict[str, np.ndarray]:
    """Three RGBA images of different sizes with disc nuclei, labels in column-major ImageId,EncodedPixels."""
    rng = np.random.default_rng(0)
    rows, truths = [], {}
    (root / "train").mkdir(parents=True)
    for k, (h, w) in enumerate([(64, 80), (96, 64), (72, 72)]):
        labels = np.zeros((h, w), np.int32)
        yy, xx = np.mgrid[:h, :w]
        for n in range(1, 6):
            cy, cx = rng.integers(8, h - 8), rng.integers(8, w - 8)
            labels[((yy - cy) ** 2 + (xx - cx) ** 2 < 25) & (labels == 0)] = n
        image_id = f"nucleus{k}"
        rgba = np.dstack([np.where(labels > 0, 200, 30)] * 3 + [np.full((h, w), 255)]).astype(np.uint8)
        cv2.imwrite(str(root / "train" / f"{image_id}.png"), rgba)
        rows += [(image_id, s) for s in rle.encode_labels(labels, "F").values()]
        truths[image_id] = labels
    pd.DataFrame(rows, columns=["ImageId", "EncodedPixels"]).to_csv(root / "stage1_train_labels.csv", index=False)
    return truths


def test_dsb_config_reads_column_major_rgba_images_of_varying_sizes(tmp_path):
    truths = _dsb_competition(tmp_path / "dsb")
    sets = [f"data.root={tmp_path / 'dsb'}", f"output.dir={tmp_path / 'run'}", "folds.n_splits=3"]
    cfg = load_config("configs/dsb2018.yaml", sets)
    records = load_records(cfg, progress=False)
    assert {r.id: r.shape for r in records} == {k: v.shape for k, v in truths.items()}
    for record in records:
        assert record.n_instances == len(np.unique(truths[record.id])) - 1
        assert np.array_equal(record.labels > 0, truths[record.id] > 0)
        assert read_image(record.image_path).shape == (*record.shape, 3)
    args = ["folds", "--config", "configs/dsb2018.yaml", *[a for s in sets for a in ("--set", s)]]
    assert main(args) == 0
    assert sorted(pd.read_csv(tmp_path / "run" / "folds.csv")["fold"]) == [0, 1, 2]


def test_tgs_config_reads_the_kaggle_layout_and_scores_by_tgs_hits(tmp_path, capsys):
    """configs/tgs.yaml on a TGS-shaped competition: id,rle_mask without sizes (taken from the 101 px images),
    empty masks allowed, and ``kseg score`` with the config scores by data.metric tgs_ap_iou, not Dice."""
    root = tmp_path / "tgs"
    masks = {}
    for side in ("train", "test"):
        (root / side / "images").mkdir(parents=True)
    for k in range(3):
        mask = np.zeros((101, 101), np.uint8)
        if k:
            mask[10:10 + 20 * k, 30:70] = 1
        masks[f"s{k}"] = mask
        for side in ("train", "test"):
            cv2.imwrite(str(root / side / "images" / f"s{k}.png"), (mask * 150 + 40).astype(np.uint8))
    encode = {i: rle.encode(m, "F") for i, m in masks.items()}
    pd.DataFrame({"id": list(encode), "rle_mask": list(encode.values())}).to_csv(root / "train.csv", index=False)
    sets = [f"data.root={root}", f"output.dir={tmp_path / 'run'}", "folds.n_splits=3"]
    cfg = load_config("configs/tgs.yaml", sets)
    records = {r.id: r for r in load_records(cfg, progress=False)}
    assert {i: r.shape for i, r in records.items()} == {i: (101, 101) for i in masks}
    assert all(np.array_equal(records[i].labels > 0, m > 0) for i, m in masks.items())
    shrunk = masks["s2"].copy()
    shrunk[10:26] = 0  # 24 of 40 rows kept: IoU 0.6, a hit at 0.5 and 0.55 only
    pred = {"s0": "", "s1": encode["s1"], "s2": rle.encode(shrunk, "F")}
    pd.DataFrame({"id": list(pred), "rle_mask": list(pred.values())}).to_csv(tmp_path / "pred.csv", index=False)
    assert main(["score", str(root / "train.csv"), str(tmp_path / "pred.csv"), "--config", "configs/tgs.yaml", "--json",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["per_image"] == {"s0": 1.0, "s1": 1.0, "s2": pytest.approx(tgs_score(masks["s2"], shrunk))}
    assert report["per_image"]["s2"] == pytest.approx(0.2)
    assert main(["score", str(root / "train.csv"), str(tmp_path / "pred.csv"), "--config", "configs/tgs.yaml", "--json",
                 "--metric", "dice", *[a for s in sets for a in ("--set", s)]]) == 0
    assert json.loads(capsys.readouterr().out)["per_image"]["s2"] == pytest.approx(2 * 24 / 64)


@pytest.mark.slow
def test_empty_fraction_rebalances_a_binary_set_of_mostly_empty_images(tmp_path):
    """``train.sampler.empty_fraction`` on a TGS-shaped binary set where 15 of 20 images have no mask (the CT-liver
    and SIIM case): the draws of an epoch (``history.csv``) follow the training fold's natural share of empty images
    without it and the asked 25 % with it."""
    root = tmp_path / "tgs"
    rng = np.random.default_rng(0)
    (root / "train" / "images").mkdir(parents=True)
    masks = {}
    for k in range(20):
        mask = np.zeros((64, 64), np.uint8)
        if k < 5:
            mask[10:40, 20:50] = 1
        masks[f"s{k}"] = mask
        image = (mask * 120 + rng.integers(20, 60, (64, 64))).astype(np.uint8)
        cv2.imwrite(str(root / "train" / "images" / f"s{k}.png"), image)
    pd.DataFrame({"id": list(masks), "rle_mask": [rle.encode(m, "F") for m in masks.values()]}).to_csv(
        root / "train.csv", index=False)
    empty_share = {}
    for fraction in ("null", "0.25"):
        out = tmp_path / f"run_{fraction}"
        sets = [f"data.root={root}", f"output.dir={out}", "folds.n_splits=5", "train.size=64", "train.epochs=1",
                "train.steps_per_epoch=100", "train.batch_size=2", "train.verbose=0", "train.val_images=1",
                "model.arch=unet_scratch", "model.encoder_weights=null", "model.scratch.filters=4",
                "model.scratch.depth=2", f"train.sampler.empty_fraction={fraction}"]
        assert main(["train", "--config", "configs/tgs.yaml", "--fold", "0", *[a for s in sets for a in ("--set", s)]]) == 0
        history = pd.read_csv(out / "fold0" / "history.csv")
        empty_share[fraction] = history["drawn_empty"].iloc[0] / history["drawn_all"].iloc[0]
        folds = pd.read_csv(out / "folds.csv", dtype={"id": str})
        training = folds.loc[folds["fold"] != 0, "id"]
        natural = float(np.mean([not masks[i].any() for i in training]))
    assert 0.5 <= natural < 1 and abs(empty_share["null"] - natural) < 0.12 and abs(empty_share["0.25"] - 0.25) < 0.12


def test_severstal_config_trains_on_unlisted_images_and_scores_by_pair_dice(tmp_path, capsys):
    """configs/severstal.yaml on a Severstal-shaped competition: train.csv names only the image with a defect
    (ids with .jpg), the defect-free image trains as empty (data.unlisted: empty), and ``kseg score`` with the
    config scores the mean Dice over every (image, class 1..4) pair, a correctly empty pair scoring 1."""
    root = tmp_path / "severstal"
    for side in ("train_images", "test_images"):
        (root / side).mkdir(parents=True)
    mask = np.zeros((32, 64), bool)
    mask[4:12, 8:40] = True
    for name in ("0a.jpg", "0b.jpg"):
        for side in ("train_images", "test_images"):
            cv2.imwrite(str(root / side / name), np.full((32, 64, 3), 90, np.uint8))
    truth = pd.DataFrame([["0b.jpg", "2", rle.encode(mask, "F")]], columns=["ImageId", "ClassId", "EncodedPixels"])
    shared = np.zeros_like(mask)
    shared[8:16, 30:50] = True  # a class-3 defect on part of the class-2 one: multilabel rows may overlap
    pd.concat([truth, pd.DataFrame([["0b.jpg", "3", rle.encode(shared, "F")]], columns=truth.columns)]).to_csv(
        root / "train.csv", index=False)
    pd.DataFrame({"ImageId": ["0a.jpg", "0b.jpg"], "EncodedPixels": ["", ""], "ClassId": ["1", "1"]}).to_csv(
        root / "sample_submission.csv", index=False)
    sets = [f"data.root={root}", f"output.dir={tmp_path / 'run'}", "folds.n_splits=2"]
    records = load_records(load_config("configs/severstal.yaml", sets), progress=False)
    assert [(r.id, classmaps.present_classes(r.labels, True)) for r in records] == [("0a.jpg", []), ("0b.jpg", [2, 3])]
    assert np.array_equal(classmaps.class_mask(records[1].labels, 2, True), mask)
    assert np.array_equal(classmaps.class_mask(records[1].labels, 3, True), shared)
    half = mask.copy()
    half[:, 24:] = False  # half the defect found: Dice 2 * 128 / (256 + 128) = 2/3
    pred = pd.DataFrame([["0a.jpg", rle.encode(mask, "F"), "4"], ["0b.jpg", rle.encode(half, "F"), "2"]],
                        columns=["ImageId", "EncodedPixels", "ClassId"])
    pred.to_csv(tmp_path / "pred.csv", index=False)
    pd.concat([truth, pd.DataFrame([["0a.jpg", "1", ""]], columns=truth.columns)]).to_csv(tmp_path / "truth.csv",
                                                                                          index=False)
    assert main(["score", str(tmp_path / "truth.csv"), str(tmp_path / "pred.csv"), "--config",
                 "configs/severstal.yaml", "--json", *[a for s in sets for a in ("--set", s)]]) == 0
    report = json.loads(capsys.readouterr().out)
    # 0a: a false class-4 defect, its other three pairs right; 0b: class 2 half found, the other three right.
    assert report["per_image"] == pytest.approx({"0a.jpg": 0.75, "0b.jpg": (3 + 2 / 3) / 4})
    assert report["per_class"] == pytest.approx({"1": 1.0, "2": (1 + 2 / 3) / 2, "3": 1.0, "4": 0.5})
    assert report["score"] == pytest.approx((0.75 + (3 + 2 / 3) / 4) / 2)


def test_severstal_2019_joined_ids_read_write_validate_and_score(tmp_path, capsys):
    """preset severstal2019 (ImageId_ClassId joined, every pair listed, empty where absent): train.csv reads into
    class maps, the submission lists every (image, class) pair joined, validates, and scores as the split form."""
    from kseg.data import schema_from_config
    from kseg.submission import submission_frame, validate_submission

    root = tmp_path / "severstal"
    for side in ("train_images", "test_images"):
        (root / side).mkdir(parents=True)
        for name in ("0a.jpg", "0b.jpg"):
            cv2.imwrite(str(root / side / name), np.full((32, 64, 3), 90, np.uint8))
    mask = np.zeros((32, 64), bool)
    mask[4:12, 8:40] = True
    pairs = [[f"{name}_{k}", rle.encode(mask, "F") if (name, k) == ("0b.jpg", 2) else ""]
             for name in ("0a.jpg", "0b.jpg") for k in range(1, 5)]
    pd.DataFrame(pairs, columns=["ImageId_ClassId", "EncodedPixels"]).to_csv(root / "train.csv", index=False)
    pd.DataFrame([[pair, ""] for pair, _ in pairs], columns=["ImageId_ClassId", "EncodedPixels"]).to_csv(
        root / "sample_submission.csv", index=False)
    sets = [f"data.root={root}", f"output.dir={tmp_path / 'run'}", "folds.n_splits=2", "data.schema.preset=severstal2019",
            "data.unlisted=skip"]
    cfg = load_config("configs/severstal.yaml", sets)
    records = load_records(cfg, progress=False)
    assert [(r.id, classmaps.present_classes(r.labels, True)) for r in records] == [("0a.jpg", []), ("0b.jpg", [2])]
    assert np.array_equal(classmaps.class_mask(records[1].labels, 2, True), mask)

    schema = schema_from_config(cfg)
    half = mask.copy()
    half[:, 24:] = False
    frame = submission_frame({"0a.jpg": np.zeros((32, 64), np.int32), "0b.jpg": half.astype(np.int32) << 1}, schema,
                             n_classes=4, overlapping=True)
    assert list(frame.columns) == ["ImageId_ClassId", "EncodedPixels"] and len(frame) == 8
    assert frame["ImageId_ClassId"].tolist() == [pair for pair, _ in pairs]
    path = tmp_path / "pred.csv"
    frame.to_csv(path, index=False)
    expected = {"0a.jpg": (32, 64), "0b.jpg": (32, 64)}
    assert validate_submission(path, schema, expected, "multilabel", 4) == []
    frame.drop(index=3).to_csv(tmp_path / "short.csv", index=False)
    assert validate_submission(tmp_path / "short.csv", schema, expected, "multilabel", 4) == [
        "id '0a.jpg' has no ImageId_ClassId row for class(es) 4; a joined submission lists every class of every image"]
    assert main(["score", str(root / "train.csv"), str(path), "--config", "configs/severstal.yaml", "--json",
                 *[a for s in sets for a in ("--set", s)]]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["per_image"] == pytest.approx({"0a.jpg": 1.0, "0b.jpg": (3 + 2 / 3) / 4})
    pd.DataFrame([["0a.jpg1", ""]], columns=["ImageId_ClassId", "EncodedPixels"]).to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv line 2: ImageId_ClassId '0a.jpg1' is not <id>_<class>"):
        load_records(cfg, progress=False)
