"""Each real set prepares into a folder kseg reads, with a held-out part that shares no image (and, unless
the set's own split column decides, no group) with training. Skipped where ../shared/data is absent."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks.baselines import (
    TrainBudget,
    fit_otsu_binary,
    fit_otsu_watershed,
    notebook_input,
    otsu_binary,
    train_for_budget,
)
from benchmarks.bench_real import Row, kseg_budget_overrides, mean_row, set_table
from benchmarks.real_sets import MARKER, SETS, SHARED, prepare
from kseg.config import load_config
from kseg.data import load_records, read_csv, schema_from_config
from kseg.model import model_arch

needs_data = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found (real data is not shipped)")
CONFIGS = Path(__file__).parents[1] / "configs" / "real"


def _config(name: str, root: Path, side: str):
    csv, folder = ("train.csv", "train") if side == "train" else ("test_truth.csv", "test")
    return load_config(CONFIGS / f"{name}.yaml", [f"data.root={root}", f"data.train_csv={csv}", f"data.train_dir={folder}"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("real")
    return {name: prepare(name, base / name, quick=True) for name in SETS}


@needs_data
@pytest.mark.parametrize("name", list(SETS))
def test_prepared_set_loads_and_holds_out_by_group(prepared, name):
    root = prepared[name]
    if not (CONFIGS / f"{name}.yaml").is_file():  # a task kseg lacks (multi-class): the folder and split only
        return _check_without_config(name, root)
    train = load_records(_config(name, root, "train"), progress=False)
    test = load_records(_config(name, root, "test"), progress=False)
    assert train and test and sum(r.n_instances for r in train) > 0
    train_ids, test_ids = {r.id for r in train}, {r.id for r in test}
    assert not train_ids & test_ids
    ext = _config(name, root, "train").data.image_ext
    id_of = (lambda p: p.name[:-len(ext)]) if ext else (lambda p: p.name)  # "": ids carry the extension (CamVid)
    assert {id_of(p) for p in (root / "test").glob(f"*{ext}")} == test_ids
    assert {id_of(p) for p in (root / "train").glob(f"*{ext}")} == train_ids
    assert all(r.group for r in train + test)
    spec = SETS[name]
    if spec.sources:  # the sources' own held-out parts decide (see the mixed-set test below)
        pass
    elif spec.split_col is None:
        assert not {r.group for r in train} & {r.group for r in test}
    else:  # the authors' split decides: every image is on the side its split column names
        schema = schema_from_config(_config(name, root, "train"))
        for csv, side in (("train.csv", train_ids), ("test_truth.csv", test_ids)):
            frame = read_csv(root / csv)
            values = set(frame.drop_duplicates(schema.id_col)[spec.split_col])
            assert len(values) == 1 and set(frame[schema.id_col]) == side
    info = json.loads((root / MARKER).read_text())
    assert (info["n_train"], info["n_test"]) == (len(train), len(test))


def _check_without_config(name: str, root: Path) -> None:
    spec = SETS[name]
    id_col = spec.schema["id_col"]
    train, test = read_csv(root / "train.csv"), read_csv(root / "test_truth.csv")
    assert set(train[id_col]) == {p.name for p in (root / "train").iterdir()}
    assert set(test[id_col]) == {p.name for p in (root / "test").iterdir()}
    assert not set(train[id_col]) & set(test[id_col]) and not set(train["group"]) & set(test["group"])
    assert spec.needs


@needs_data
def test_prepare_is_idempotent_and_full_mode_copies_source_bytes(tmp_path):
    """Full mode (phase: 15 uint16 frames) copies the source PNGs and RLE rows unchanged; a rerun is a no-op."""
    root = prepare("phase_cells_usiigaci", tmp_path / "phase")
    stamp = (root / MARKER).stat().st_mtime_ns
    assert prepare("phase_cells_usiigaci", tmp_path / "phase") == root
    assert (root / MARKER).stat().st_mtime_ns == stamp  # up to date: not rebuilt
    image = next((root / "test").glob("*.png"))
    assert image.read_bytes() == (SHARED / "phase_cells_usiigaci" / "train" / image.name).read_bytes()
    source = read_csv(SHARED / "phase_cells_usiigaci" / "train.csv")
    written = pd.concat([read_csv(root / "train.csv"), read_csv(root / "test_truth.csv")])
    assert sorted(written["annotation"]) == sorted(source["annotation"])
    assert (written["group"] == written["sample_id"]).all()
    test = load_records(_config("phase_cells_usiigaci", root, "test"), progress=False)
    assert [r.shape for r in test] == [(1022, 1024)] * 5


@needs_data
def test_mixed_set_takes_train_and_held_out_images_only_from_the_same_side_of_its_sources(prepared):
    from benchmarks.real_sets import MIXED_PARTS

    root = prepared["mixed_nuclei"]
    for csv, side in (("train.csv", "train"), ("test_truth.csv", "test")):
        frame = read_csv(root / csv)
        assert set(frame["modality"]) == {part.modality for part in MIXED_PARTS}
        for part in MIXED_PARTS:
            split = part.split(read_csv(SHARED / part.folder / "train.csv"))
            taken = {i.removeprefix(f"{part.modality}_") for i in frame.loc[frame["modality"] == part.modality, "ImageId"]}
            assert taken <= set(split.train if side == "train" else split.test)
    phase = next((root / "train").glob("phase_*.png"))
    import cv2

    assert cv2.imread(str(phase), cv2.IMREAD_UNCHANGED).dtype == np.uint16  # 16-bit kept until kseg normalises it


@needs_data
def test_prepare_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        prepare("sartorius_mini", tmp_path / "x", quick=True)


class _FakeModel:
    """Counts steps and records the learning rate, like a compiled Keras model would receive them."""

    def __init__(self) -> None:
        self.steps, self.lrs = 0, []
        model = self

        class _LR:
            def assign(self, value: float) -> None:
                model.lrs.append(value)

        self.optimizer = type("Opt", (), {"learning_rate": _LR()})()

    def train_on_batch(self, x, y) -> None:
        self.steps += 1


def test_budget_loop_stops_at_the_step_cap_or_the_time():
    batches = iter(lambda: (None, None), 0)
    capped = train_for_budget(_FakeModel(), batches, TrainBudget(seconds=60, max_steps=3), cosine=True)
    assert capped.steps == 3 and capped.model.lrs[0] == pytest.approx(1e-3)
    timed = train_for_budget(_FakeModel(), batches, TrainBudget(seconds=0.05), cosine=True)
    assert timed.steps >= 1 and timed.seconds >= 0.05  # the LR decays with elapsed time (not asserted: load-dependent)


def test_notebook_input_inverts_dark_objects_on_bright_ground():
    image = np.full((32, 32, 3), 220, np.uint8)
    image[10:14, 10:14] = 30  # a dark nucleus on a bright background
    x = notebook_input(image)
    assert x[12, 12, 0] > x[0, 0, 0] and abs(float(x.mean())) < 1e-5 and float(x.std()) == pytest.approx(1.0, abs=1e-4)


def test_classical_fit_finds_the_polarity():
    labels = np.zeros((64, 64), np.int32)
    labels[8:20, 8:20], labels[30:44, 30:44] = 1, 2
    image = np.repeat(np.where(labels > 0, 40, 200).astype(np.uint8)[..., None], 3, axis=2)
    fitted = fit_otsu_watershed([image], [labels])
    assert fitted["bright_objects"] is False and fitted["score"] > 0.9


@pytest.mark.parametrize("quick", [False, True])
def test_kseg_budget_overrides_load_on_every_real_config(quick):
    sets = kseg_budget_overrides(900, 0.5, quick)
    assert all("=" in s for s in sets)
    for path in sorted(CONFIGS.glob("*.yaml")):
        cfg = load_config(path, sets)
        assert cfg.model.encoder_weights is None and model_arch(cfg.model) == "unet_scratch"
        assert cfg.train.epochs >= 1


def test_kseg_budget_is_the_steps_its_network_makes_in_the_budget():
    cfg = load_config(CONFIGS / "he_nuclei.yaml", kseg_budget_overrides(600, 0.5))
    # 600 s at 0.5 s per step = 1200 steps, spent as kseg's plan decides over its default 5 folds.
    assert cfg.folds.n_splits == 5 and cfg.train.epochs == 4 and cfg.train.budget_steps == 1200


def test_kseg_seconds_per_step_times_the_configured_network():
    from benchmarks.bench_real import kseg_seconds_per_step

    cfg = load_config(CONFIGS / "he_nuclei.yaml", [*kseg_budget_overrides(60, 1.0, quick=True), "model.scratch.filters=4",
                                                   "model.scratch.depth=2"])
    assert 0.0 < kseg_seconds_per_step(cfg, 2, size=32, batch=2, repeats=1) < 10.0


def test_binary_classical_fit_finds_the_polarity_and_drops_speckle():
    """A dark polyp-like blob plus a dark speck: Otsu finds both, keeping the largest component scores higher."""
    mask = np.zeros((64, 64), np.int32)
    mask[8:30, 8:30] = 1
    gray = np.where(mask > 0, 40, 200).astype(np.uint8)
    gray[50:54, 50:54] = 40
    image = np.repeat(gray[..., None], 3, axis=2)
    fitted = fit_otsu_binary([image], [mask])
    assert (fitted["empty"], fitted["bright_objects"], fitted["components"]) == (False, False, "largest")
    assert fitted["score"] > 0.95 and (otsu_binary(image, fitted) == (mask > 0)).mean() > 0.99


def test_binary_classical_fit_submits_nothing_when_truth_is_empty():
    """On empty truth every Otsu mask scores 0 and the all-empty submission 1 (both empty = 1)."""
    image = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    fitted = fit_otsu_binary([image], [np.zeros((32, 32), np.int32)])
    assert fitted == {"score": 1.0, "empty": True} and not otsu_binary(image, fitted).any()


def test_test_set_scores_by_its_task():
    """Instance: mAP of the objects; binary: Dice of the foregrounds, so one object split in two is no error."""
    from benchmarks.bench_real import TestSet  # here: at module level pytest would try to collect it as tests

    truth = np.zeros((16, 16), np.int32)
    truth[2:10, 2:10] = 1
    split = truth.copy()
    split[2:10, 6:10] = 2
    empty = np.zeros_like(truth)
    binary = TestSet([np.zeros((16, 16, 3), np.uint8)] * 2, [truth, empty], [None, None], task="binary")
    instance = TestSet(binary.images, binary.truths, binary.classes, task="instance")
    assert binary.row("x", [split, empty]).score == 1.0
    assert instance.row("x", [split, empty]).score == pytest.approx(0.5)  # split: 0 of 1; empty/empty: 1


def test_set_table_names_the_baselines_kseg_does_not_beat():
    rows = [Row("classical: Otsu (x)", 0.30, 0.7, {"a": 0.2, "b": 0.4}, 1.0, "dark objects"),
            Row("plain notebook U-Net (y)", 0.10, 0.5, {"a": 0.1, "b": 0.1}, 60.0),
            Row("notebook fg+border U-Net (z)", 0.35, 0.8, {"a": 0.3, "b": 0.4}, 60.0),
            Row("**kseg run, shipped defaults**", 0.32, 0.8, {"a": 0.3, "b": 0.34}, 70.0)]
    facts = {"n_train": 4, "n_test": 2, "budget": TrainBudget(seconds=60), "overrides": ["train.epochs=1"],
             "task": "instance", "classes": ["a", "b"]}
    text = set_table("toy", rows, facts, 60, quick=False)
    assert "| method | mAP@[.5:.95] | fg Dice | mAP a | mAP b | time | notes |" in text
    assert "| **kseg run, shipped defaults** | 0.3200 | 0.8000 | 0.3000 | 0.3400 | 70s |  |" in text
    assert "**kseg does not beat** notebook fg+border U-Net on this set." in text
    assert "`train.epochs=1`" in text and "60 s of training" in text


def test_set_table_of_a_binary_set_names_its_metric_once():
    """A binary set's column is Dice (no second fg Dice column); the baselines are the rows before kseg's,
    however many a task has."""
    rows = [Row("classical: Otsu threshold (gray) or all-empty, the better on train", 0.40, 0.40, seconds=9.0),
            Row("plain notebook U-Net (resnet18, fg only, thr 0.5)", 0.70, 0.70, seconds=60.0),
            Row("**kseg run, shipped defaults**", 0.65, 0.65, seconds=80.0),
            Row("kseg stage: + TTA", 0.90, 0.90)]
    facts = {"n_train": 4, "n_test": 2, "budget": TrainBudget(seconds=60), "overrides": [], "task": "binary",
             "classes": []}
    text = set_table("toy", rows, facts, 60, quick=False)
    assert "| method | Dice | time | notes |" in text and "fg Dice" not in text
    assert "| **kseg run, shipped defaults** | 0.6500 | 80s |  |" in text
    assert "**kseg does not beat** plain notebook U-Net on this set." in text


def test_multiclass_test_set_scores_the_dataset_mean_iou_per_class():
    """Multiclass: one IoU per class from pixels summed over the images (void ignored), named by class."""
    from benchmarks.bench_real import TestSet
    from kseg.metric import VOID

    truths = [np.array([[1, 1, VOID, 2]], np.uint16), np.array([[2, 2]], np.uint16)]
    preds = [np.array([[1, 2, 2, 2]], np.int32), np.array([[2, 2]], np.int32)]
    test = TestSet([np.zeros((1, 4, 3), np.uint8), np.zeros((1, 2, 3), np.uint8)], truths, [None, None],
                   task="multiclass", pixel_classes=["road", "car"])
    row = test.row("x", preds)
    assert row.per_class == pytest.approx({"road": 0.5, "car": 0.75}) and row.score == pytest.approx(0.625)


def test_location_prior_predicts_the_most_frequent_class_per_pixel():
    from benchmarks.baselines import fit_location_prior, location_prior
    from kseg.metric import VOID

    truths = [np.array([[1, 2], [3, VOID]], np.uint16), np.array([[1, 3], [3, 2]], np.uint16),
              np.array([[2, 3], [VOID, 2]], np.uint16)]
    prior = fit_location_prior(truths, 3)
    assert prior.tolist() == [[1, 3], [3, 2]]  # void never votes (bottom row: 3 over VOID, 2 over VOID)
    assert location_prior(prior, (4, 4)).shape == (4, 4)


def test_set_table_of_a_multiclass_set_has_one_iou_column_per_class():
    rows = [Row("classical: location prior (x)", 0.20, 0.0, {"road": 0.6, "car": 0.1}, 0.0),
            Row("**kseg run, shipped defaults**", 0.30, 0.0, {"road": 0.5, "car": 0.2}, 80.0)]
    facts = {"n_train": 4, "n_test": 2, "budget": TrainBudget(seconds=60), "overrides": [], "task": "multiclass",
             "classes": ["road", "car"]}
    text = set_table("toy", rows, facts, 60, quick=False)
    assert "| method | mean IoU | IoU road | IoU car | time | notes |" in text and "fg Dice" not in text
    assert "| **kseg run, shipped defaults** | 0.3000 | 0.5000 | 0.2000 | 80s |  |" in text
    assert "kseg beats every baseline on this set." in text


def test_rows_of_several_seeds_report_the_mean_and_each_seed():
    """One short from-scratch run varies by more than most defaults change: a scoreboard row trained on
    several seeds shows their mean, with every seed's score beside it."""
    rows = [Row("notebook (x)", 0.40, 0.6, {"a": 0.2}, 10.0, "70 steps in 240s"),
            Row("notebook (x)", 0.50, 0.8, {"a": 0.4}, 20.0, "72 steps in 240s")]
    mean = mean_row(rows)
    assert (mean.method, mean.score, mean.dice, mean.seconds) == ("notebook (x)", pytest.approx(0.45),
                                                                  pytest.approx(0.7), pytest.approx(15.0))
    assert mean.per_class == {"a": pytest.approx(0.3)}
    assert mean.note == "mean of 2 seeds: 0.4000, 0.5000; first seed: 70 steps in 240s"
    assert mean_row(rows[:1]) is rows[0]
    facts = {"n_train": 4, "n_test": 2, "budget": TrainBudget(seconds=60), "overrides": [], "task": "binary",
             "classes": [], "seeds": [0, 1]}
    assert "the mean of seeds 0, 1" in set_table("toy", [mean, Row("**kseg run, shipped defaults**", 0.5, 0.5)],
                                                 facts, 60, quick=False)
