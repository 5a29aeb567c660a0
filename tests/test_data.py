"""Data loading: schema presets, image reading, train.csv validation against the images, test image listing.

Every bad-input test checks that the message names the file, the CSV row and the offending value, since
that is what lets a user fix a broken competition folder without reading a traceback.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kseg import data, rle
from kseg.config import Config, load_config
from kseg.errors import ConfigError, DataError, KsegWarning, RLEError

FIXTURE_ID = "0030fd0e6378"
FIXTURE_SHAPE = (520, 704)
SARTORIUS_HEADER = "id,annotation,width,height,cell_type,plate_time,sample_date,sample_id,elapsed_timedelta"


def sartorius_config(root: Path, *overrides: str) -> Config:
    return load_config(None, [f"data.root={root}", "data.schema.preset=sartorius", *overrides])


def dsb_config(root: Path, *overrides: str) -> Config:
    return load_config(None, [f"data.root={root}", "data.schema.preset=dsb2018", *overrides])


@pytest.fixture
def sartorius_root(tmp_path: Path, fixtures_dir: Path) -> Path:
    """The real 395-row train.csv and its image in a competition layout that tests may modify."""
    (tmp_path / "train").mkdir()
    # copyfile, not copy: the fixtures are read-only and these copies get edited
    shutil.copyfile(fixtures_dir / "sartorius" / "train.csv", tmp_path / "train.csv")
    shutil.copyfile(fixtures_dir / "sartorius" / "train" / f"{FIXTURE_ID}.png", tmp_path / "train" / f"{FIXTURE_ID}.png")
    return tmp_path


def edit_csv_row(csv_path: Path, row: int, column: str, value: str) -> None:
    """Set one cell of a data row (1-based, header excluded), keeping every other cell's text."""
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    frame.loc[row - 1, column] = value
    frame.to_csv(csv_path, index=False)


def write_gray(path: Path, shape: tuple[int, int], value: int = 128) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, dtype=np.uint8)).save(path)


# --- schema ---------------------------------------------------------------------------------------

def test_presets_give_their_columns_and_pixel_order(tmp_path: Path) -> None:
    sartorius = data.schema_from_config(sartorius_config(tmp_path))
    assert (sartorius.id_col, sartorius.rle_col, sartorius.rle_order) == ("id", "annotation", "C")
    assert (sartorius.class_col, sartorius.group_col, sartorius.submission_cols) == ("cell_type", "sample_id", ("id", "predicted"))
    dsb = data.schema_from_config(dsb_config(tmp_path, "data.schema.rle_col=Mask"))
    assert (dsb.id_col, dsb.rle_col, dsb.rle_order, dsb.class_col) == ("ImageId", "Mask", "F", None)


def test_unknown_preset_names_it_and_the_valid_ones(tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.root={tmp_path}", "data.schema.preset=sartorius2021"])
    with pytest.raises(ConfigError, match=r"'sartorius2021'.*dsb2018, sartorius"):
        data.schema_from_config(cfg)


@pytest.mark.parametrize("missing", ["id_col", "rle_col", "rle_order"])
def test_schema_without_preset_requires_the_essential_keys(tmp_path: Path, missing: str) -> None:
    given = {"id_col": "ImageId", "rle_col": "EncodedPixels", "rle_order": "F"}
    del given[missing]
    cfg = load_config(None, [f"data.root={tmp_path}", *(f"data.schema.{key}={value}" for key, value in given.items())])
    with pytest.raises(ConfigError, match=rf"data\.schema\.{missing} is required"):
        data.schema_from_config(cfg)


def test_schema_without_preset_defaults_the_submission_header_to_id_and_rle(tmp_path: Path) -> None:
    cfg = load_config(None, [f"data.root={tmp_path}", "data.schema.id_col=img", "data.schema.rle_col=rle",
                             "data.schema.rle_order=F"])
    assert data.schema_from_config(cfg).submission_cols == ("img", "rle")


@pytest.mark.parametrize(("override", "pattern"), [
    ("data.schema.rle_order=row", r"rle_order.*'row'"),
    ("data.schema.submission_cols=[id]", r"submission_cols.*\['id'\]"),
])
def test_bad_schema_values_are_named(tmp_path: Path, override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        data.schema_from_config(sartorius_config(tmp_path, override))


# --- images ---------------------------------------------------------------------------------------

def test_read_image_replicates_gray_to_rgb(tmp_path: Path) -> None:
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    image = data.read_image(tmp_path / "gray.png")
    assert image.dtype == np.uint8 and image.shape == (3, 4, 3)
    assert all(np.array_equal(image[:, :, channel], gray) for channel in range(3))


def test_read_image_returns_rgb_not_opencv_bgr(tmp_path: Path) -> None:
    pixels = np.zeros((2, 3, 3), dtype=np.uint8)
    pixels[0, 0] = (255, 0, 0)  # pure red in RGB
    Image.fromarray(pixels, mode="RGB").save(tmp_path / "red.png")
    image = data.read_image(tmp_path / "red.png")
    assert image[0, 0].tolist() == [255, 0, 0]
    assert image[1, 2].tolist() == [0, 0, 0]


def test_read_image_drops_alpha(tmp_path: Path) -> None:
    pixels = np.zeros((2, 2, 4), dtype=np.uint8)
    pixels[..., 2] = 200  # blue
    pixels[..., 3] = 7  # nearly transparent: alpha must not leak into the colour channels
    Image.fromarray(pixels, mode="RGBA").save(tmp_path / "rgba.png")
    image = data.read_image(tmp_path / "rgba.png")
    assert image.shape == (2, 2, 3)
    assert image[0, 0].tolist() == [0, 0, 200]


def test_read_image_scales_16_bit_per_image(tmp_path: Path) -> None:
    pixels = np.tile(np.linspace(1000, 3000, 100, dtype=np.uint16), (10, 1))
    assert cv2.imwrite(str(tmp_path / "deep.png"), pixels)
    image = data.read_image(tmp_path / "deep.png")
    assert image.dtype == np.uint8
    assert image[0, 0, 0] == 0 and image[0, -1, 0] == 255 and abs(int(image[0, 50, 0]) - 129) <= 2


def test_read_image_16_bit_saturated_pixels_do_not_squeeze_the_content(tmp_path: Path) -> None:
    """Phase-contrast cameras saturate a few pixels at 65535: min-max would crush the rest to a few levels."""
    pixels = np.tile(np.linspace(4000, 8000, 200, dtype=np.uint16), (50, 1))
    pixels[0, :5] = 65535
    assert cv2.imwrite(str(tmp_path / "saturated.png"), pixels)
    image = data.read_image(tmp_path / "saturated.png")[1:, :, 0]
    assert image.min() == 0 and image.max() == 255 and len(np.unique(image)) > 150


def test_npy_images_read_like_image_files_and_their_size_from_the_header(tmp_path: Path) -> None:
    """.npy arrays (H, W) or (H, W, C): uint8 as is, other depths stretched like 16-bit files, bool as 0/255."""
    gray = np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 500
    np.save(tmp_path / "gray.npy", gray)
    image = data.read_image(tmp_path / "gray.npy")
    assert image.shape == (12, 10, 3) and image.dtype == np.uint8 and image[0, 0, 0] == 0 and image[-1, -1, 0] == 255
    rgb = np.random.default_rng(0).integers(0, 255, (8, 6, 3)).astype(np.uint8)
    np.save(tmp_path / "rgb.npy", rgb)
    assert np.array_equal(data.read_image(tmp_path / "rgb.npy"), rgb)
    np.save(tmp_path / "mask.npy", rgb[..., 0] > 100)
    assert set(np.unique(data.read_image(tmp_path / "mask.npy"))) <= {0, 255}
    np.save(tmp_path / "two.npy", rgb[..., :2].astype(np.float32))
    assert data.read_image(tmp_path / "two.npy").shape == (8, 6, 3)
    assert data.image_size(tmp_path / "rgb.npy") == (8, 6) and data.image_size(tmp_path / "gray.npy") == (12, 10)


@pytest.mark.parametrize(("array", "problem"), [
    (np.zeros((3, 8, 6), np.uint8), r"channels last, got shape \(3, 8, 6\)"),
    (np.zeros((8,), np.uint8), r"got shape \(8,\)"),
    (np.array([{"a": 1}], dtype=object), "not a readable .npy array"),
    (np.array([["a", "b"]]), "must hold numbers, got dtype <U1"),
])
def test_bad_npy_images_are_one_error_naming_the_file(tmp_path: Path, array: np.ndarray, problem: str) -> None:
    path = tmp_path / "x.npy"
    np.save(path, array, allow_pickle=True)
    with pytest.raises(DataError, match=rf"x\.npy: .*{problem}"):
        data.read_image(path)
    (tmp_path / "cut.npy").write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="cut.npy: not a readable .npy array"):
        data.image_size(tmp_path / "cut.npy")


def test_read_image_of_a_constant_16_bit_image_is_black(tmp_path: Path) -> None:
    assert cv2.imwrite(str(tmp_path / "flat.png"), np.full((2, 2), 4000, dtype=np.uint16))
    assert not data.read_image(tmp_path / "flat.png").any()


def test_unreadable_image_names_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"this is not a png" * 10)
    with pytest.raises(DataError, match=rf"{garbage}: not a readable image"):
        data.read_image(garbage)
    with pytest.raises(DataError, match=rf"{garbage}: not a readable image"):
        data.image_size(garbage)
    with pytest.raises(DataError, match=rf"image not found: {tmp_path / 'absent.png'}"):
        data.read_image(tmp_path / "absent.png")


def test_image_size_is_height_then_width(tmp_path: Path) -> None:
    write_gray(tmp_path / "wide.png", (3, 5))
    assert data.image_size(tmp_path / "wide.png") == (3, 5)


# --- train.csv on the real fixture ---------------------------------------------------------------

def test_load_records_on_real_sartorius_rows(sartorius_root: Path) -> None:
    with pytest.warns(KsegWarning, match="3354 pixels were claimed by more than one instance") as caveats:
        records = data.load_records(sartorius_config(sartorius_root), progress=False)
    assert len(records) == 1
    record = records[0]
    assert (record.id, record.shape, record.n_instances, record.overlap_pixels) == (FIXTURE_ID, FIXTURE_SHAPE, 395, 3354)
    assert (record.cls, record.group) == ("shsy5y", "shsy5y[diff]_E10-4_Vessel-714_Ph_3")
    assert record.image_path == sartorius_root / "train" / f"{FIXTURE_ID}.png"
    assert record.labels.dtype == np.uint16 and record.labels.shape == FIXTURE_SHAPE
    assert len(np.unique(record.labels)) - 1 == 395  # every cell keeps some pixels despite the overlaps
    first = pd.read_csv(sartorius_root / "train.csv", nrows=1)["annotation"].iloc[0]
    assert (record.labels[rle.decode(first, FIXTURE_SHAPE, "C")] == 1).all()  # first row wins
    assert len(caveats) == 1


def test_read_index_agrees_with_records(sartorius_root: Path) -> None:
    cfg = sartorius_config(sartorius_root)
    pd.testing.assert_frame_equal(data.read_index(cfg), data.records_frame(data.load_records(cfg, progress=False)))


def test_missing_group_column_warns_and_gives_none(tmp_path: Path, fixtures_dir: Path) -> None:
    shutil.copy(fixtures_dir / "sartorius" / "train_0f08d640930b_DERIVED.csv", tmp_path / "train.csv")
    (tmp_path / "train").mkdir()
    shutil.copy(fixtures_dir / "sartorius" / "train" / "0f08d640930b.png", tmp_path / "train")
    with pytest.warns(KsegWarning, match="no group column 'sample_id'"):
        (record,) = data.load_records(sartorius_config(tmp_path), progress=False)
    assert (record.cls, record.group, record.n_instances) == ("shsy5y", None, 105)


def test_missing_class_column_warns_and_gives_none(sartorius_root: Path) -> None:
    csv_path = sartorius_root / "train.csv"
    pd.read_csv(csv_path, dtype=str).drop(columns="cell_type").to_csv(csv_path, index=False)
    with pytest.warns(KsegWarning, match="no class column 'cell_type'"):
        (record,) = data.load_records(sartorius_config(sartorius_root), progress=False)
    assert record.cls is None and record.group is not None


# --- train.csv errors ----------------------------------------------------------------------------

def test_missing_csv(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"train CSV not found: {tmp_path / 'train.csv'}"):
        data.load_records(sartorius_config(tmp_path))


def test_zero_byte_csv(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_bytes(b"")
    with pytest.raises(DataError, match=rf"{tmp_path / 'train.csv'}: the file is empty"):
        data.load_records(sartorius_config(tmp_path))


def test_header_only_csv(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text(SARTORIUS_HEADER + "\n")
    with pytest.raises(DataError, match=rf"{tmp_path / 'train.csv'}: no data rows"):
        data.load_records(sartorius_config(tmp_path))


def test_unparseable_csv(tmp_path: Path) -> None:
    (tmp_path / "train.csv").write_text('id,annotation\n"unterminated,1 2\n')
    with pytest.raises(DataError, match=rf"{tmp_path / 'train.csv'}: not a readable CSV"):
        data.load_records(sartorius_config(tmp_path))


@pytest.mark.parametrize("renamed", ["id", "annotation"])
def test_missing_id_or_rle_column_lists_the_columns_present(sartorius_root: Path, renamed: str) -> None:
    csv_path = sartorius_root / "train.csv"
    pd.read_csv(csv_path, dtype=str).rename(columns={renamed: "other"}).to_csv(csv_path, index=False)
    with pytest.raises(DataError, match=rf"{csv_path}: missing column\(s\) {renamed}; the file has columns .*other"):
        data.load_records(sartorius_config(sartorius_root))


def test_missing_image_names_id_path_and_row(sartorius_root: Path) -> None:
    csv_path = sartorius_root / "train.csv"
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    frame.loc[len(frame)] = frame.iloc[0].replace({FIXTURE_ID: "ffff00000000"})
    frame.to_csv(csv_path, index=False)
    expected = sartorius_root / "train" / "ffff00000000.png"
    with pytest.raises(DataError, match=rf"{csv_path} line 397: image of id 'ffff00000000' not found at {expected}"):
        data.load_records(sartorius_config(sartorius_root))


def test_unreadable_image_names_the_row_and_file(sartorius_root: Path) -> None:
    image = sartorius_root / "train" / f"{FIXTURE_ID}.png"
    image.write_bytes(b"\x00garbage" * 64)
    with pytest.raises(DataError, match=rf"train.csv line 2 \(id {FIXTURE_ID}\): {image}: not a readable image"):
        data.load_records(sartorius_config(sartorius_root))


def test_csv_size_swapped_with_image_size(sartorius_root: Path) -> None:
    csv_path = sartorius_root / "train.csv"
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    frame[["width", "height"]] = frame[["height", "width"]].to_numpy()  # the classic width/height mix-up
    frame.to_csv(csv_path, index=False)
    with pytest.raises(DataError, match=rf"{csv_path} line 2 \(id {FIXTURE_ID}\): CSV size 704x520 .* image size 520x704"):
        data.read_index(sartorius_config(sartorius_root))


def test_one_row_with_a_different_size_is_named(sartorius_root: Path) -> None:
    csv_path = sartorius_root / "train.csv"
    edit_csv_row(csv_path, 200, "width", "700")
    with pytest.raises(DataError, match=rf"{csv_path} line 201 \(id {FIXTURE_ID}\): CSV size 520x700 .* image size 520x704"):
        data.load_records(sartorius_config(sartorius_root))


@pytest.mark.parametrize(("value", "problem"), [("5x2", "'5x2', not an integer"), ("0", "0; it must be >= 1")])
def test_bad_size_cell_is_named(sartorius_root: Path, value: str, problem: str) -> None:
    csv_path = sartorius_root / "train.csv"
    edit_csv_row(csv_path, 3, "height", value)
    with pytest.raises(DataError, match=rf"{csv_path} line 4: height is {problem}"):
        data.load_records(sartorius_config(sartorius_root))


def test_empty_id_is_named(sartorius_root: Path) -> None:
    csv_path = sartorius_root / "train.csv"
    edit_csv_row(csv_path, 9, "id", " ")
    with pytest.raises(DataError, match=rf"{csv_path} line 10: empty id"):
        data.load_records(sartorius_config(sartorius_root))


def test_malformed_rle_is_an_rle_error_naming_file_and_row(sartorius_root: Path) -> None:
    csv_path = sartorius_root / "train.csv"
    edit_csv_row(csv_path, 5, "annotation", "118145 6 118849")
    with pytest.raises(RLEError, match=rf"{csv_path} line 6 \(id {FIXTURE_ID}\): odd number of tokens \(3\)"):
        data.load_records(sartorius_config(sartorius_root), progress=False)


# --- other schemas and tasks ---------------------------------------------------------------------

@pytest.fixture
def dsb_root(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """A DSB 2018 style folder: column-major ImageId,EncodedPixels without size columns; one image without objects."""
    first = np.zeros((6, 8), dtype=np.int32)
    first[1:3, 1:6] = 1  # a horizontal bar: its column-major and row-major encodings differ
    first[4:6, 6:8] = 2
    empty = np.zeros((5, 7), dtype=np.int32)
    rows = [("aaa", rle.encode(first == 1, "F")), ("aaa", rle.encode(first == 2, "F")), ("bbb", "")]
    pd.DataFrame(rows, columns=["ImageId", "EncodedPixels"]).to_csv(tmp_path / "train.csv", index=False)
    write_gray(tmp_path / "train" / "aaa.png", first.shape)
    write_gray(tmp_path / "train" / "bbb.png", empty.shape)
    return tmp_path, {"aaa": first, "bbb": empty}


def test_dsb_layout_takes_sizes_from_images_and_decodes_column_major(dsb_root: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, expected = dsb_root
    records = data.load_records(dsb_config(root), progress=False)
    assert [record.id for record in records] == ["aaa", "bbb"]
    for record in records:
        assert record.shape == expected[record.id].shape
        assert np.array_equal(record.labels, expected[record.id])
        assert (record.cls, record.group) == (None, None)
    assert [record.n_instances for record in records] == [2, 0]


def test_binary_task_gives_a_0_1_mask(dsb_root: tuple[Path, dict[str, np.ndarray]]) -> None:
    root, expected = dsb_root
    records = data.load_records(dsb_config(root, "data.task=binary"), progress=False)
    assert records[0].labels.dtype == np.uint8
    assert np.array_equal(records[0].labels, (expected["aaa"] > 0).astype(np.uint8))
    assert [record.n_instances for record in records] == [1, 0]


def test_ids_that_carry_their_extension(tmp_path: Path) -> None:
    """Airbus: ImageId is ``0005d01c8.jpg`` and data.image_ext is empty."""
    mask = np.zeros((4, 6), dtype=bool)
    mask[2, 1:4] = True
    pd.DataFrame({"ImageId": ["0005d01c8.jpg"], "EncodedPixels": [rle.encode(mask, "F")]}).to_csv(tmp_path / "train.csv", index=False)
    (tmp_path / "train").mkdir()
    Image.fromarray(np.zeros((4, 6, 3), dtype=np.uint8)).save(tmp_path / "train" / "0005d01c8.jpg")
    (record,) = data.load_records(dsb_config(tmp_path, "data.image_ext="), progress=False)
    assert record.id == "0005d01c8.jpg" and record.image_path == tmp_path / "train" / "0005d01c8.jpg"
    assert np.array_equal(record.labels > 0, mask)


def test_image_path_keeps_an_id_that_already_has_the_extension(tmp_path: Path) -> None:
    assert data.image_path(tmp_path, "a1b2", ".png") == tmp_path / "a1b2.png"
    assert data.image_path(tmp_path, "00003e153.jpg", ".jpg") == tmp_path / "00003e153.jpg"
    assert data.image_path(tmp_path, "00003e153.jpg", "") == tmp_path / "00003e153.jpg"


# --- test images ---------------------------------------------------------------------------------

def test_test_images_from_sample_submission(tmp_path: Path) -> None:
    for image_id in ("b2", "a1", "c3"):
        write_gray(tmp_path / "test" / f"{image_id}.png", (4, 4))
    pd.DataFrame({"id": ["b2", "a1", "a1"], "predicted": ["", "", ""]}).to_csv(tmp_path / "sample.csv", index=False)
    images = data.list_test_images(sartorius_config(tmp_path, "data.sample_submission=sample.csv"))
    assert images == [("a1", tmp_path / "test" / "a1.png"), ("b2", tmp_path / "test" / "b2.png")]  # c3 is not listed


def test_missing_test_image_names_sample_row_id_and_path(tmp_path: Path) -> None:
    write_gray(tmp_path / "test" / "a1.png", (4, 4))
    pd.DataFrame({"id": ["a1", "a1", "zz"], "predicted": ""}).to_csv(tmp_path / "sample.csv", index=False)
    cfg = sartorius_config(tmp_path, "data.sample_submission=sample.csv")
    with pytest.raises(DataError, match=rf"{tmp_path / 'sample.csv'} line 4: test image of id 'zz' not found at "
                                        rf"{tmp_path / 'test' / 'zz.png'}"):
        data.list_test_images(cfg)


def test_sample_submission_without_id_column(tmp_path: Path) -> None:
    pd.DataFrame({"image": ["a1"], "predicted": [""]}).to_csv(tmp_path / "sample.csv", index=False)
    with pytest.raises(DataError, match=r"sample.csv: missing column\(s\) id; the file has columns image, predicted"):
        data.list_test_images(sartorius_config(tmp_path, "data.sample_submission=sample.csv"))


def test_test_images_from_the_folder(tmp_path: Path) -> None:
    for name in ("b.png", "a.png", "a-b.png", ".a.png.tmp.png"):  # the last: an atomic write in progress
        write_gray(tmp_path / "test" / name, (4, 4))
    (tmp_path / "test" / "notes.txt").write_text("not an image")
    images = data.list_test_images(sartorius_config(tmp_path))
    assert images == [(image_id, tmp_path / "test" / f"{image_id}.png") for image_id in ("a", "a-b", "b")]


def test_test_images_with_ids_that_carry_their_extension(tmp_path: Path) -> None:
    (tmp_path / "test" / "subfolder").mkdir(parents=True)  # a folder is not an image even when every name matches
    for name in ("00a52cd2a.jpg", "0005d01c8.jpg"):
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(tmp_path / "test" / name)
    cfg = dsb_config(tmp_path, "data.image_ext=")
    expected = [(name, tmp_path / "test" / name) for name in ("0005d01c8.jpg", "00a52cd2a.jpg")]
    assert data.list_test_images(cfg) == expected
    pd.DataFrame({"ImageId": ["00a52cd2a.jpg", "0005d01c8.jpg"], "EncodedPixels": ""}).to_csv(tmp_path / "sample.csv", index=False)
    assert data.list_test_images(dsb_config(tmp_path, "data.image_ext=", "data.sample_submission=sample.csv")) == expected


def test_no_test_images(tmp_path: Path) -> None:
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "readme.txt").write_text("nothing here")
    with pytest.raises(DataError, match=rf"no test images in {tmp_path / 'test'}/\*\.png"):
        data.list_test_images(sartorius_config(tmp_path))
    pd.DataFrame(columns=["id", "predicted"]).to_csv(tmp_path / "sample.csv", index=False)
    with pytest.raises(DataError, match=rf"no test images in {tmp_path / 'sample.csv'}"):
        data.list_test_images(sartorius_config(tmp_path, "data.sample_submission=sample.csv"))


def test_missing_test_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=rf"test image folder not found: {tmp_path / 'test'}"):
        data.list_test_images(sartorius_config(tmp_path))


# --- images train.csv does not name (data.unlisted) -----------------------------------------------

def _severstal_root(tmp_path: Path) -> Path:
    """Severstal's layout: train.csv lists only the images with a defect, ids carry the .jpg extension."""
    for name in ("a.jpg", "b.jpg", "c.jpg", ".d.jpg"):
        write_gray(tmp_path / "train_images" / name, (4, 8))
    write_gray(tmp_path / "train_images" / "nested" / "e.jpg", (4, 8))
    mask = np.zeros((4, 8), bool)
    mask[1:3, 2:5] = True
    pd.DataFrame([["b.jpg", "3", rle.encode(mask, "F")]], columns=["ImageId", "ClassId", "EncodedPixels"]).to_csv(
        tmp_path / "train.csv", index=False)
    return tmp_path


def _severstal_config(root: Path, *overrides: str) -> Config:
    return load_config(None, [f"data.root={root}", "data.schema.preset=severstal", "data.task=multiclass",
                              "data.train_dir=train_images", "data.image_ext=.jpg", *overrides])


def test_unlisted_images_are_skipped_by_default(tmp_path: Path) -> None:
    records = data.load_records(_severstal_config(_severstal_root(tmp_path)), progress=False)
    assert [record.id for record in records] == ["b.jpg"]


def test_unlisted_images_train_as_empty_with_ids_spelled_as_the_csv(tmp_path: Path) -> None:
    """Severstal's defect-free images: every top-level image file the CSV does not name, never a hidden file (an
    atomic write in progress) or one in a subfolder; their class maps are all background."""
    cfg = _severstal_config(_severstal_root(tmp_path), "data.unlisted=empty")
    records = data.load_records(cfg, progress=False)
    assert [record.id for record in records] == ["a.jpg", "b.jpg", "c.jpg"]
    assert [record.n_instances for record in records] == [0, 1, 0]
    assert not records[0].labels.any() and records[1].labels.max() == 3 and records[0].shape == (4, 8)
    assert data.read_index(cfg)["id"].tolist() == ["a.jpg", "b.jpg", "c.jpg"]


def test_unlisted_ids_without_extension_when_the_csv_has_none(tmp_path: Path) -> None:
    """TGS spells ids without the extension: the unlisted images are named the same way."""
    for name in ("x", "y"):
        write_gray(tmp_path / "train" / f"{name}.png", (4, 4))
    pd.DataFrame([["x", ""]], columns=["id", "rle_mask"]).to_csv(tmp_path / "train.csv", index=False)
    cfg = load_config(None, [f"data.root={tmp_path}", "data.schema.preset=tgs", "data.task=binary",
                             "data.unlisted=empty"])
    assert [record.id for record in data.load_records(cfg, progress=False)] == ["x", "y"]


def test_bad_unlisted_value_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data.unlisted must be one of skip, empty, got 'keep'"):
        _severstal_config(tmp_path, "data.unlisted=keep")


def test_a_competition_of_npy_images_loads_with_image_ext_npy(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    mask = np.zeros((16, 12), bool)
    mask[2:6, 3:9] = True
    for name in ("a", "b"):
        np.save(tmp_path / "train" / f"{name}.npy", np.random.default_rng(1).random((16, 12)).astype(np.float32))
    pd.DataFrame({"id": ["a", "b"], "rle_mask": [rle.encode(mask, "F"), ""]}).to_csv(tmp_path / "train.csv", index=False)
    cfg = load_config(None, [f"data.root={tmp_path}", "data.schema.preset=tgs", "data.task=binary",
                             "data.image_ext=.npy"])
    records = data.load_records(cfg, progress=False)
    assert [(r.id, r.shape, int(r.labels.sum())) for r in records] == [("a", (16, 12), 24), ("b", (16, 12), 0)]
