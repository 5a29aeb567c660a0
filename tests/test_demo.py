"""kseg.demo: the synthetic competition is deterministic, imbalanced, grouped, overlapping and learnable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kseg import data
from kseg.config import load_config
from kseg.demo import ORGANS, TRAIN_COLUMNS, make_demo_data
from kseg.errors import DataError
from kseg.metric import score_frames


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-size demo (520x704, 24 train + 6 test images), generated once for the module."""
    return make_demo_data(tmp_path_factory.mktemp("demo"))


@pytest.fixture(scope="module")
def records(demo_root: Path) -> list[data.ImageRecord]:
    cfg = load_config(None, [f"data.root={demo_root}", "data.schema.preset=sartorius"])
    return data.load_records(cfg, progress=False)


def small_demo(root: Path, seed: int) -> Path:
    return make_demo_data(root, seed=seed, n_train=5, n_test=2, height=96, width=128)


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first, second, other = small_demo(tmp_path / "1", 7), small_demo(tmp_path / "2", 7), small_demo(tmp_path / "3", 8)
    for name in ("train.csv", "test_truth.csv", "sample_submission.csv"):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    images = sorted(path.relative_to(first) for path in first.glob("*/*.png"))
    assert images == sorted(path.relative_to(second) for path in second.glob("*/*.png"))
    assert all((first / image).read_bytes() == (second / image).read_bytes() for image in images)
    assert (first / "train.csv").read_bytes() != (other / "train.csv").read_bytes()


def test_layout_and_columns(demo_root: Path) -> None:
    train = pd.read_csv(demo_root / "train.csv")
    truth = pd.read_csv(demo_root / "test_truth.csv")
    assert list(train.columns) == TRAIN_COLUMNS and list(truth.columns) == TRAIN_COLUMNS
    assert sorted(p.stem for p in (demo_root / "train").glob("*.png")) == sorted(train["id"].unique())
    test_ids = sorted(p.stem for p in (demo_root / "test").glob("*.png"))
    assert len(test_ids) == 6 and sorted(truth["id"].unique()) == test_ids
    sample = pd.read_csv(demo_root / "sample_submission.csv", keep_default_na=False)
    assert list(sample.columns) == ["id", "predicted"]
    assert sample["id"].tolist() == test_ids and (sample["predicted"] == "").all()
    assert set(test_ids).isdisjoint(train["id"])
    assert ((train["width"] == 704) & (train["height"] == 520)).all()


def test_classes_are_imbalanced_and_grouped(demo_root: Path) -> None:
    images = pd.read_csv(demo_root / "train.csv").drop_duplicates("id")
    assert images["cell_type"].value_counts().to_dict() == {"shsy5y": 14, "astro": 6, "cort": 4}
    assert (images.groupby("sample_id")["cell_type"].nunique() == 1).all()
    groups_per_class = images.groupby("cell_type")["sample_id"].nunique()
    assert (groups_per_class >= 2).all()
    assert images.groupby("sample_id").size().max() <= 4


def test_records_load_with_real_overlaps(records: list[data.ImageRecord]) -> None:
    assert len(records) == 24
    assert all(20 <= record.n_instances <= 120 for record in records)
    assert sum(record.overlap_pixels > 0 for record in records) >= 20


def test_object_size_depends_on_the_class(records: list[data.ImageRecord]) -> None:
    areas: dict[str, list[int]] = {}
    for record in records:
        areas.setdefault(record.cls, []).extend(np.bincount(record.labels.ravel())[1:].tolist())
    median = {cls: np.median(values) for cls, values in areas.items()}
    assert median["astro"] > 2 * median["shsy5y"] > 2 * median["cort"]


def test_cells_are_brighter_than_the_background(records: list[data.ImageRecord]) -> None:
    for record in records[:6]:
        image = data.read_image(record.image_path)[:, :, 0].astype(float)
        assert image[record.labels > 0].mean() > image[record.labels == 0].mean() + 40


def test_test_images_sample_submission_and_truth_agree(tmp_path: Path) -> None:
    root = make_demo_data(tmp_path, seed=2, n_train=8, n_test=2, height=96, width=128)
    cfg = load_config(None, [f"data.root={root}", "data.schema.preset=sartorius",
                             "data.sample_submission=sample_submission.csv"])
    truth = pd.read_csv(root / "test_truth.csv", dtype=str, keep_default_na=False)
    test_images = data.list_test_images(cfg)
    assert [image_id for image_id, _ in test_images] == sorted(truth["id"].unique())
    assert all(data.image_size(path) == (96, 128) for _, path in test_images)
    schema = data.schema_from_config(cfg)
    perfect = truth.rename(columns={"annotation": "predicted"})[["id", "predicted"]]
    assert score_frames(truth, perfect, schema, allow_overlap=True).score == 1.0  # demo cells overlap a little
    empty = pd.read_csv(root / "sample_submission.csv", dtype=str, keep_default_na=False)
    assert score_frames(truth, empty, schema).score == 0.0


def test_small_images_still_have_objects(tmp_path: Path) -> None:
    root = make_demo_data(tmp_path, n_train=3, n_test=1, height=48, width=48)
    annotated = set(pd.read_csv(root / "train.csv")["id"])
    assert annotated == {path.stem for path in (root / "train").glob("*.png")}


def test_rejects_impossible_sizes(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"n_train=0"):
        make_demo_data(tmp_path, n_train=0)
    with pytest.raises(DataError, match=r"height=8"):
        make_demo_data(tmp_path, height=8)


# --- the multiclass kind (Severstal format, organ-like classes) ---------------------------------------

@pytest.fixture(scope="module")
def organ_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("organs"), n_train=30, n_test=4, height=128, width=128,
                          kind="multiclass")


def test_multiclass_kind_is_deterministic(tmp_path: Path) -> None:
    first = make_demo_data(tmp_path / "a", seed=3, n_train=3, n_test=1, height=64, width=64, kind="multiclass")
    second = make_demo_data(tmp_path / "b", seed=3, n_train=3, n_test=1, height=64, width=64, kind="multiclass")
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    assert all((first / f).read_bytes() == (second / f).read_bytes() for f in files)


def test_multiclass_kind_loads_as_exclusive_imbalanced_classes(organ_root: Path) -> None:
    """Severstal columns, ids with their extension; five classes, the liver in every image, the lesion (inside
    the liver, so it always touches it) in some, and pixel counts spanning two orders of magnitude."""
    frame = pd.read_csv(organ_root / "train.csv", dtype=str, keep_default_na=False)
    assert list(frame.columns) == ["ImageId", "ClassId", "EncodedPixels"]
    assert set(frame["ImageId"]) == {p.name for p in (organ_root / "train").glob("*.png")}
    cfg = load_config("configs/demo_multiclass.yaml", [f"data.root={organ_root}"])
    records = data.load_records(cfg, progress=False)
    assert len(records) == 30
    pixels = np.sum([np.bincount(r.labels.ravel(), minlength=len(ORGANS) + 1) for r in records], axis=0)
    shown = np.sum([np.bincount(np.unique(r.labels), minlength=len(ORGANS) + 1) for r in records], axis=0)
    assert shown[1] == 30 and 0 < shown[5] < 30 and all(shown[1:] > 0)
    assert pixels[1] > 50 * pixels[5] > 0
    for record in records:
        lesion = record.labels == 5
        if lesion.any():
            grown = np.zeros_like(lesion)
            rows, cols = np.nonzero(lesion)
            grown[max(rows.min() - 1, 0):rows.max() + 2, max(cols.min() - 1, 0):cols.max() + 2] = True
            assert (record.labels[grown & ~lesion] == 1).any()


def test_multiclass_kind_test_truth_and_sample_submission(organ_root: Path) -> None:
    """The empty sample submission is a valid one for the test images, and scoring the truth against itself is 1."""
    from kseg.submission import validate_submission

    cfg = load_config("configs/demo_multiclass.yaml", [f"data.root={organ_root}"])
    schema = data.schema_from_config(cfg)
    shapes = {image_id: data.image_size(path) for image_id, path in data.list_test_images(cfg)}
    assert validate_submission(organ_root / "sample_submission.csv", schema, shapes, "multiclass", 5) == []
    truth = pd.read_csv(organ_root / "test_truth.csv", dtype=str, keep_default_na=False)
    perfect = truth[["ImageId", "EncodedPixels", "ClassId"]]
    assert score_frames(truth, perfect, schema, shapes, task="multiclass").score == 1.0


def test_dicom_kind_writes_ct_slices_in_hounsfield_units(tmp_path: Path) -> None:
    """The same sections as CT: signed 16-bit with a rescale intercept, air (-1000 HU) outside the body, the organs
    in the soft-tissue window; configs/demo_dicom.yaml reads them through that window, and their class maps are
    those of the CSV. Same seed, same bytes (the UIDs come from the file names)."""
    from kseg.dicom import read_dicom

    first = make_demo_data(tmp_path / "a", seed=1, n_train=3, n_test=1, height=64, width=64, kind="dicom")
    second = make_demo_data(tmp_path / "b", seed=1, n_train=3, n_test=1, height=64, width=64, kind="dicom")
    slices = sorted((first / "train").glob("*.dcm"))
    assert len(slices) == 3 and all(p.read_bytes() == (second / "train" / p.name).read_bytes() for p in slices)
    hu = read_dicom(slices[0])
    assert hu.dtype == np.float32 and hu[0, 0] < -900 and -160 < float(np.median(hu[24:40, 24:40])) < 240
    cfg = load_config("configs/demo_dicom.yaml", [f"data.root={first}"])
    records = data.load_records(cfg, progress=False)
    assert [r.id for r in records] == [p.name for p in slices] and records[0].labels.max() >= 1
    image = data.image_reader(cfg)(records[0].image_path)
    assert image.shape == (64, 64, 3) and image[0, 0, 0] == 0  # air is below the window
    liver = records[0].labels == 1
    assert image[..., 0][liver].mean() > image[..., 0][(records[0].labels == 0) & (image[..., 0] > 0)].mean()


def test_unknown_demo_kind_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="demo data kind must be one of sartorius, multiclass, dicom, got 'mri'"):
        make_demo_data(tmp_path, kind="mri")
