"""SIIM-ACR Pneumothorax's annotation CSV through ``data.schema.preset: siim``, on SIIM's real sample.

The sample (tests/fixtures/dicom/siim, see SOURCE.md) is SIIM's own file: no header, a UTF-8 BOM, the
relative RLE, ``-1`` for no pneumothorax. Every mask kseg reads from it must equal the same mask written
in the standard encoding by the data's curator, and what kseg writes in SIIM form must validate, score
and read back. Only one of the ten DICOMs is committed: the train and test folders use it under every
id, since loading and validating read only the image size (1024x1024 for all ten, as SOURCE.md lists).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kseg import data, rle
from kseg.cli import main
from kseg.config import Config, load_config
from kseg.errors import ConfigError, DataError, RLEError
from kseg.metric import score_frames
from kseg.submission import SubmissionWriter, validate_submission

pytest.importorskip("pydicom")

SIIM_SHAPE = (1024, 1024)
DICOM_ID = "1.2.276.0.7230010.3.1.4.8323329.12743.1517875241.599591"
SAMPLE = "train-rle-sample.csv"
BOM = "\ufeff"


def siim_config(root: Path, *overrides: str) -> Config:
    return load_config(None, [f"data.root={root}", "data.schema.preset=siim", f"data.train_csv={SAMPLE}",
                              "data.image_ext=.dcm", "data.task=binary", "data.sample_submission=null", *overrides])


@pytest.fixture(scope="module")
def siim_dir(fixtures_dir: Path) -> Path:
    return fixtures_dir / "dicom" / "siim"


@pytest.fixture(scope="module")
def standard_masks(siim_dir: Path) -> dict[str, np.ndarray]:
    """The curator's standard-RLE copy of the sample (header, 1-indexed absolute starts, plain ``F`` order)."""
    frame = pd.read_csv(siim_dir / "siim_rle_standard.csv", dtype=str, keep_default_na=False)
    return {image_id: rle.decode(text, SIIM_SHAPE, "F") for image_id, text in frame.itertuples(index=False)}


@pytest.fixture
def siim_root(tmp_path: Path, siim_dir: Path, standard_masks: dict[str, np.ndarray]) -> Path:
    """A SIIM competition folder: SIIM's CSV verbatim, a DICOM for each of its ids in train/ and test/."""
    shutil.copyfile(siim_dir / SAMPLE, tmp_path / SAMPLE)
    for folder in ("train", "test"):
        (tmp_path / folder).mkdir()
        for image_id in standard_masks:
            (tmp_path / folder / f"{image_id}.dcm").symlink_to(siim_dir / f"{DICOM_ID}.dcm")
    return tmp_path


def replace_line(path: Path, line: int, text: str) -> None:
    """Set one line of a text file (1-based), keeping the BOM and the missing final newline as SIIM ships them."""
    lines = path.read_text(encoding="utf-8").split("\n")
    lines[line - 1] = text
    path.write_text("\n".join(lines), encoding="utf-8")


def test_siim_preset() -> None:
    schema = data.schema_from_config(load_config(None, ["data.schema.preset=siim"]))
    assert (schema.id_col, schema.rle_col, schema.rle_order, schema.header) == ("ImageId", "EncodedPixels",
                                                                                "F-relative", False)
    assert schema.submission_cols == ("ImageId", "EncodedPixels")
    assert (schema.height_col, schema.width_col, schema.class_col, schema.group_col) == (None,) * 4
    assert data.schema_from_config(load_config(None, ["data.schema.preset=dsb2018"])).header is True


def test_real_sample_loads_like_the_standard_csv(siim_root: Path, siim_dir: Path,
                                                 standard_masks: dict[str, np.ndarray]) -> None:
    import cv2

    records = data.load_records(siim_config(siim_root), progress=False)
    assert [record.id for record in records] == sorted(standard_masks)
    for record in records:
        assert record.shape == SIIM_SHAPE and record.labels.dtype == np.uint8
        assert np.array_equal(record.labels, standard_masks[record.id])
    areas = sorted(int(record.labels.sum()) for record in records if record.n_instances)
    assert areas == [2071, 2486, 5232, 9418, 29079]  # as SOURCE.md counts
    assert sum(record.n_instances == 0 and not record.labels.any() for record in records) == 5  # the "-1" rows
    png = cv2.imread(str(siim_dir / f"{DICOM_ID}_mask.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(next(r.labels for r in records if r.id == DICOM_ID), png > 0)


def test_headerless_lines_start_at_1_and_the_bom_is_gone(siim_dir: Path) -> None:
    schema = data.schema_from_config(load_config(None, ["data.schema.preset=siim"]))
    frame = data.read_annotations(siim_dir / SAMPLE, schema)
    assert list(frame.columns) == ["ImageId", "EncodedPixels"] and len(frame) == 10
    assert data.csv_lines(frame).tolist() == list(range(1, 11))
    assert frame["ImageId"].iloc[0] == "1.2.276.0.7230010.3.1.4.8323329.1000.1517875165.878027"  # no "\ufeff"


def test_several_regions_of_one_image_are_unioned(siim_root: Path, standard_masks: dict[str, np.ndarray]) -> None:
    """The full SIIM set has one row per pneumothorax region; task binary unions them, as the standard CSV does."""
    mask = standard_masks[DICOM_ID]
    top, bottom = mask.copy(), mask.copy()
    top[mask.shape[0] // 2 + 40:] = bottom[:mask.shape[0] // 2] = False  # two regions sharing some rows
    assert top.any() and bottom.any() and not np.array_equal(top, mask)
    rows = [(image_id, "-1") for image_id in sorted(standard_masks) if image_id != DICOM_ID]
    rows += [(DICOM_ID, f" {rle.encode(top, 'F-relative')}"), (DICOM_ID, f" {rle.encode(bottom, 'F-relative')}")]
    (siim_root / SAMPLE).write_bytes(b"\xef\xbb\xbf" + "\n".join(f"{i},{v}" for i, v in rows).encode())
    record = next(r for r in data.load_records(siim_config(siim_root), progress=False) if r.id == DICOM_ID)
    assert np.array_equal(record.labels, mask) and record.n_instances == 1
    instance = next(r for r in data.load_records(siim_config(siim_root, "data.task=instance"), progress=False)
                    if r.id == DICOM_ID)
    assert instance.n_instances == 2 and np.array_equal(instance.labels > 0, mask)


@pytest.mark.parametrize(("line", "value", "problem"), [
    (6, " 175349 7 -1013 12", "run 2 has offset -1013; offsets after the first count the background pixels"),
    (6, " 1048570 7", "run 1 covers 0-based pixels 1048570-1048576, past the end of the 1024x1024 image"),
    (1, " 0 1048576 0 1", "run 2 covers 0-based pixels 1048576-1048576, past the end"),
    (2, "-2", "odd number of tokens (1)"),
])
def test_malformed_relative_rle_names_file_line_and_value(siim_root: Path, line: int, value: str,
                                                          problem: str) -> None:
    csv_path = siim_root / SAMPLE
    image_id = csv_path.read_text(encoding="utf-8-sig").split("\n")[line - 1].split(",")[0]
    replace_line(csv_path, line, f"{BOM if line == 1 else ''}{image_id},{value}")
    with pytest.raises(DataError) as raised:
        data.load_records(siim_config(siim_root), progress=False)
    assert isinstance(raised.value, RLEError)
    assert str(raised.value).startswith(f"{csv_path} line {line} (id {image_id}): {problem}")


def test_header_mistakes_are_named(siim_root: Path, siim_dir: Path) -> None:
    csv_path = siim_root / SAMPLE
    csv_path.write_bytes(b"ImageId, EncodedPixels\n" + (siim_dir / SAMPLE).read_bytes())  # the full set's header
    with pytest.raises(DataError, match=rf"^{csv_path} line 1: 'ImageId, EncodedPixels' is a header line, "
                                        r"but data.schema.header is false; set it to true"):
        data.load_records(siim_config(siim_root), progress=False)
    csv_path.write_text("a,1 2,extra\nb,-1,\n")
    with pytest.raises(DataError, match=rf"^{csv_path} line 1: 3 column\(s\), expected 2 \(ImageId, EncodedPixels\) "
                                        r"in a CSV without a header line"):
        data.load_records(siim_config(siim_root), progress=False)
    csv_path.write_bytes(b"")
    with pytest.raises(DataError, match=r"the file is empty \(expected data rows\)"):
        data.load_records(siim_config(siim_root), progress=False)


@pytest.mark.parametrize(("override", "pattern"), [
    ("data.schema.header=maybe", r"^--set data\.schema\.header=maybe: data\.schema\.header must be true, false or null, "
                                 r"got 'maybe'$"),
    ("data.schema.rle_order=relative", r"^--set data\.schema\.rle_order=relative: data\.schema\.rle_order must be one of "
                                       r"C, F, F-relative or null, got 'relative'$"),
])
def test_bad_schema_values_name_the_key(override: str, pattern: str) -> None:
    with pytest.raises(ConfigError, match=pattern):
        data.schema_from_config(load_config(None, ["data.schema.preset=siim", override]))


def test_submission_in_siim_form_validates_scores_and_reads_back(
        siim_root: Path, siim_dir: Path, standard_masks: dict[str, np.ndarray],
        capsys: pytest.CaptureFixture[str]) -> None:
    cfg = siim_config(siim_root)
    schema = data.schema_from_config(cfg)
    path = siim_root / "submission.csv"
    with SubmissionWriter(path, schema) as writer:
        for image_id in sorted(standard_masks):
            writer.add(image_id, standard_masks[image_id].astype(np.uint8))
    assert (writer.n_images, writer.n_rows, writer.n_instances) == (10, 10, 5)
    written = data.read_csv(path, "submission")
    assert path.read_text().startswith("ImageId,EncodedPixels\n")
    assert (written["EncodedPixels"] == "-1").sum() == 5  # SIIM's empty mask, not ""
    # Every row is SIIM's own text again (its file has a space after the comma on positive rows).
    sample = dict(data.read_annotations(siim_dir / SAMPLE, schema).itertuples(index=False))
    assert all(sample[image_id].strip() == text for image_id, text in written.itertuples(index=False))
    for image_id, text in written.itertuples(index=False):
        assert np.array_equal(rle.decode(text, SIIM_SHAPE, schema.rle_order), standard_masks[image_id])

    assert validate_submission(path, schema, {image_id: SIIM_SHAPE for image_id in standard_masks}, "binary") == []
    capsys.readouterr()
    config = siim_root / "siim.yaml"
    config.write_text(f"data: {{root: {siim_root}, image_ext: .dcm, task: binary, schema: {{preset: siim}}}}\n")
    assert main(["validate", str(path), "--config", str(config)]) == 0
    assert capsys.readouterr().out.strip() == "valid: 10 rows, 10 images, 5 masks"  # a binary row is one image's mask

    truth = data.read_annotations(siim_root / SAMPLE, schema, "truth")
    report = score_frames(truth, written, schema, {image_id: SIIM_SHAPE for image_id in standard_masks}, "binary")
    assert report.score == 1.0 and len(report.per_image) == 10


def test_validator_names_a_bad_relative_row(siim_root: Path, standard_masks: dict[str, np.ndarray]) -> None:
    schema = data.schema_from_config(siim_config(siim_root))
    ids = sorted(standard_masks)
    path = siim_root / "submission.csv"
    path.write_text("ImageId,EncodedPixels\n" + "".join(f"{image_id},-1\n" for image_id in ids[:-1])
                    + f"{ids[-1]},5 3 -2 1\n")
    problems = validate_submission(path, schema, {image_id: SIIM_SHAPE for image_id in ids}, "binary")
    assert problems == [f"line 11 (id {ids[-1]!r}): run 2 has offset -2; offsets after the first count the background "
                        f"pixels since the end of run 1 and must be >= 0 (value '5 3 -2 1')"]
