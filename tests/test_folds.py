"""kseg.folds: grouped + stratified folds, fallbacks, folds.csv round trip and its validation."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kseg import data, folds
from kseg.config import load_config
from kseg.demo import make_demo_data
from kseg.errors import DataError, KsegWarning


def image_frame(n_images: int = 40, n_groups: int = 10, classes: tuple[str, ...] = ("a", "a", "b", "c")) -> pd.DataFrame:
    """Images in groups of equal size; every group has one class, cycling through ``classes``."""
    group_of = np.arange(n_images) % n_groups
    return pd.DataFrame({
        "id": [f"img{i:03d}" for i in range(n_images)],
        "cls": [classes[g % len(classes)] for g in group_of],
        "group": [f"well{g}" for g in group_of],
        "n_instances": np.arange(n_images) % 7 + 1,
        "height": 64,
        "width": 64,
    })


def test_groups_never_straddle_folds_and_classes_spread() -> None:
    frame = image_frame()
    assigned = folds.make_folds(frame, 5, seed=1)
    assert list(assigned.columns) == ["id", "fold"]
    assert assigned["id"].tolist() == sorted(frame["id"])
    merged = frame.merge(assigned, on="id")
    assert (merged.groupby("group")["fold"].nunique() == 1).all()
    assert sorted(merged["fold"].unique()) == [0, 1, 2, 3, 4]
    groups_per_class = merged.groupby("cls")["group"].nunique()
    assert (merged.groupby("cls")["fold"].nunique() == groups_per_class.clip(upper=5)).all()


def test_same_seed_same_folds_whatever_the_row_order() -> None:
    frame = image_frame()
    shuffled = frame.sample(frac=1.0, random_state=7)
    pd.testing.assert_frame_equal(folds.make_folds(frame, 4, seed=3), folds.make_folds(shuffled, 4, seed=3))


def test_different_seed_gives_a_different_assignment() -> None:
    frame = image_frame()
    first, second = folds.make_folds(frame, 5, seed=1), folds.make_folds(frame, 5, seed=2)
    assert (first["fold"] != second["fold"]).any()


@pytest.mark.parametrize("n_splits", [3, 5])
def test_many_imbalanced_groups_never_straddle_folds(n_splits: int) -> None:
    rng = np.random.default_rng(0)
    group_of = rng.integers(0, 80, size=300)
    class_of_group = rng.choice(["shsy5y", "astro", "cort"], size=80, p=[0.6, 0.25, 0.15])
    frame = pd.DataFrame({"id": [f"img{i:03d}" for i in range(300)], "group": [f"well{g}" for g in group_of],
                          "cls": class_of_group[group_of], "n_instances": 1})
    merged = frame.merge(folds.make_folds(frame, n_splits, seed=0), on="id")
    assert (merged.groupby("group")["fold"].nunique() == 1).all()
    assert (merged.groupby("cls")["fold"].nunique() == n_splits).all()  # every fold sees every class


def test_without_groups_falls_back_to_stratified() -> None:
    with pytest.warns(KsegWarning, match="no group column"):
        assigned = folds.make_folds(image_frame(), 4, seed=0, group_col=None)
    merged = image_frame().merge(assigned, on="id")
    assert (merged.groupby("fold")["cls"].nunique() == 3).all()


def test_without_classes_falls_back_to_group_kfold() -> None:
    frame = image_frame().assign(cls=None)
    with pytest.warns(KsegWarning, match="GroupKFold"):
        assigned = folds.make_folds(frame, 5, seed=0)
    assert (frame.merge(assigned, on="id").groupby("group")["fold"].nunique() == 1).all()


def test_without_groups_and_classes_falls_back_to_kfold() -> None:
    with pytest.warns(KsegWarning, match=re.escape("no group column ('group') and no class column ('cls'); folds are "
                                                   "plain random splits (KFold)")):
        assigned = folds.make_folds(image_frame().drop(columns=["group", "cls"]), 3, seed=0)
    assert assigned["fold"].value_counts().sort_index().tolist() == [14, 13, 13]


def test_classes_too_small_to_stratify_fall_back_to_kfold() -> None:
    frame = image_frame(n_images=6, classes=("a", "b", "c", "d", "e", "f")).assign(group=None)
    with pytest.warns(KsegWarning, match=re.escape("every class has fewer than 3 images; folds are plain random splits")):
        folds.make_folds(frame, 3, seed=0)


def test_classes_too_small_to_stratify_keep_the_groups() -> None:
    frame = image_frame(n_images=6, n_groups=3, classes=("a", "b", "c"))
    with pytest.warns(KsegWarning, match=re.escape("every class has fewer than 3 images; folds are grouped by 'group'")):
        assigned = folds.make_folds(frame, 3, seed=0)
    assert (frame.merge(assigned, on="id").groupby("group")["fold"].nunique() == 1).all()


def test_missing_group_values_are_their_own_groups() -> None:
    frame = image_frame(n_images=8, n_groups=2)
    frame.loc[frame.index[:4], "group"] = None
    assigned = folds.make_folds(frame, 4, seed=0)
    assert sorted(assigned["fold"].unique()) == [0, 1, 2, 3]


def test_more_folds_than_images_or_groups_is_explained() -> None:
    with pytest.raises(DataError, match=r"cannot make 6 folds from 5 images"):
        folds.make_folds(image_frame(n_images=5, n_groups=5), 6, seed=0)
    with pytest.raises(DataError, match=r"cannot make 5 folds from 4 groups of column 'group'.*at most 4"):
        folds.make_folds(image_frame(n_images=40, n_groups=4), 5, seed=0)


def test_fold_table_counts_add_up() -> None:
    frame = image_frame()
    table = folds.fold_table(frame, folds.make_folds(frame, 5, seed=0))
    assert table.loc["total", "images"] == 40
    assert table.loc["total", "instances"] == frame["n_instances"].sum()
    assert table.loc["total", "groups"] == 10
    assert table.drop(index="total")[["images:a", "images:b", "images:c"]].to_numpy().sum() == 40


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("demo"), seed=5, n_train=14, n_test=1, height=64, width=80)


@pytest.mark.filterwarnings("ignore:The least populated class")
def test_command_folds_is_reproducible_and_grouped(demo_root: Path, tmp_path: Path) -> None:
    paths = []
    for name in ("first.csv", "second.csv"):
        cfg = load_config(None, [f"data.root={demo_root}", "data.schema.preset=sartorius", "folds.n_splits=3",
                                 f"folds.file={tmp_path / name}"])
        paths.append(folds.command_folds(cfg))
    assert paths[0].read_bytes() == paths[1].read_bytes()
    index = data.read_index(cfg)
    written = folds.read_folds(paths[0], index["id"])
    assert (index.merge(written, on="id").groupby("group")["fold"].nunique() == 1).all()


# --- read_folds -------------------------------------------------------------------------------------------

def test_read_folds_returns_requested_ids_sorted(tmp_path: Path) -> None:
    (tmp_path / "folds.csv").write_text("id,fold\nb,1\na,0\nc,2\n")
    table = folds.read_folds(tmp_path / "folds.csv", ["b", "a"])
    assert table.to_dict("list") == {"id": ["a", "b"], "fold": [0, 1]}


@pytest.mark.parametrize("text, message", [
    ("", r"the file is empty"),
    ("id,split\na,0\n", r"missing column\(s\) fold; the file has columns id, split"),
    ("id,fold\na,0\nb,x\n", r"line 3: fold is 'x', not a non-negative integer"),
    ("id,fold\na,0\nb,1\na,1\n", r"line 4: id 'a' appears more than once"),
    ("id,fold\na,0\n", r"1 training image\(s\) have no fold, e\.g\. b; .*stale"),
])
def test_read_folds_rejects_bad_files(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "folds.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        folds.read_folds(tmp_path / "folds.csv", ["a", "b"])


def test_read_folds_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"folds file not found: .*nope\.csv"):
        folds.read_folds(tmp_path / "nope.csv", ["a"])
