"""kseg.submission: label images → rows → CSV round trip, and one test per validator rule."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kseg import rle, submission
from kseg.config import load_config
from kseg.data import Schema, schema_from_config
from kseg.errors import SubmissionError

SARTORIUS = schema_from_config(load_config(None, ["data.schema.preset=sartorius"]))
DSB = schema_from_config(load_config(None, ["data.schema.preset=dsb2018"]))
SHAPE = (6, 8)
EXPECTED = {"a": SHAPE, "b": SHAPE}


def label_images() -> dict[str, np.ndarray]:
    cells = np.zeros((20, 30), np.int32)
    cells[2:6, 3:9] = 1
    cells[10:18, 4:7] = 2
    cells[5:9, 20:29] = 3
    return {"cells": cells, "blank": np.zeros((20, 30), np.int32)}


def write_rows(path: Path, rows: list[tuple[str, str]], header: str = "id,predicted") -> Path:
    path.write_text(header + "\n" + "".join(f"{image_id},{value}\n" for image_id, value in rows))
    return path


def problems_of(path: Path, expected: dict[str, tuple[int, int]] = EXPECTED, task: str = "instance") -> list[str]:
    return submission.validate_submission(path, SARTORIUS, expected, task)


@pytest.mark.parametrize("schema", [SARTORIUS, DSB], ids=["row-major", "column-major"])
def test_frame_round_trip_is_valid_and_decodes_back(tmp_path: Path, schema: Schema) -> None:
    predictions = label_images()
    frame = submission.submission_frame(predictions, schema)
    id_col, rle_col = schema.submission_cols
    assert list(frame.columns) == [id_col, rle_col]
    assert frame[id_col].tolist() == ["blank", "cells", "cells", "cells"]
    assert frame[rle_col].iloc[0] == ""
    path = submission.write_submission(frame, tmp_path / "sub" / "submission.csv")
    expected = {image_id: labels.shape for image_id, labels in predictions.items()}
    assert submission.validate_submission(path, schema, expected) == []
    written = pd.read_csv(path, dtype=str, keep_default_na=False)
    decoded, overlap = rle.decode_labels(written[rle_col].iloc[1:].tolist(), (20, 30), schema.rle_order)
    np.testing.assert_array_equal(decoded, predictions["cells"])
    assert overlap == 0
    labels = submission.submission_labels(path, schema, expected)
    np.testing.assert_array_equal(labels["cells"], predictions["cells"])
    assert not labels["blank"].any()


def test_submission_labels_of_an_unreadable_file_name_the_problem(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "sub.csv", [("a", "1 2")], header="id,annotation")
    with pytest.raises(SubmissionError, match="header is id,annotation, expected id,predicted"):
        submission.submission_labels(path, SARTORIUS, EXPECTED)


def test_write_submission_leaves_no_temporary_file(tmp_path: Path) -> None:
    submission.write_submission(submission.submission_frame(label_images(), SARTORIUS), tmp_path / "submission.csv")
    assert [path.name for path in tmp_path.iterdir()] == ["submission.csv"]


def test_failed_write_keeps_the_previous_submission(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "submission.csv"
    target.write_text("id,predicted\nold,\n")
    frame = submission.submission_frame(label_images(), SARTORIUS)

    def write_half_then_fail(self: pd.DataFrame, path: Path, **kwargs: object) -> None:
        Path(path).write_text("id,predicted\ncells,1 ")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        submission.write_submission(frame, target)
    assert target.read_text() == "id,predicted\nold,\n"
    assert [path.name for path in tmp_path.iterdir()] == ["submission.csv"]


def test_frame_rows_follow_label_order_even_with_gaps() -> None:
    labels = np.zeros((4, 4), np.int32)
    labels[0, 0], labels[3, 3], labels[2, 1] = 7, 2, 5
    frame = submission.submission_frame({"x": labels}, SARTORIUS, "C")
    assert frame["predicted"].tolist() == ["16 1", "10 1", "1 1"]


def test_frame_rejects_a_float_prediction() -> None:
    with pytest.raises(SubmissionError, match=r"id 'x' must be a 2-D integer label image, got float32"):
        submission.submission_frame({"x": np.zeros((4, 4), np.float32)}, SARTORIUS)


def test_frame_rejects_negative_labels() -> None:
    with pytest.raises(SubmissionError, match=r"id 'x' has negative label -1"):
        submission.submission_frame({"x": -np.ones((4, 4), np.int32)}, SARTORIUS)


@pytest.mark.parametrize("schema", [SARTORIUS, DSB], ids=["row-major", "column-major"])
def test_streaming_writer_writes_the_same_csv_as_the_frame(tmp_path: Path, schema: Schema) -> None:
    predictions = label_images()
    framed = submission.write_submission(submission.submission_frame(predictions, schema), tmp_path / "frame.csv")
    target = tmp_path / "streamed.csv"
    with submission.SubmissionWriter(target, schema) as writer:
        for image_id in sorted(predictions):
            writer.add(image_id, predictions[image_id])
            writer.flush()  # rows are on disk as soon as each image is added: nothing waits in memory
            assert writer.tmp_path.read_text().count(f"\n{image_id},") >= 1
            assert not target.exists()
    assert target.read_text() == framed.read_text()
    assert (writer.n_images, writer.n_rows, writer.n_instances) == (2, 4, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame.csv", "streamed.csv"]


def test_streaming_writer_keeps_the_previous_submission_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "submission.csv"
    target.write_text("id,predicted\nold,\n")
    with pytest.raises(SubmissionError, match="id 'bad' must be a 2-D integer label image"):
        with submission.SubmissionWriter(target, SARTORIUS) as writer:
            writer.add("cells", label_images()["cells"])
            writer.add("bad", np.zeros((4, 4), np.float32))
    assert target.read_text() == "id,predicted\nold,\n"
    assert [path.name for path in tmp_path.iterdir()] == ["submission.csv"]


# --- one test per validator rule --------------------------------------------------------------------------------

def test_valid_file_has_no_problems(tmp_path: Path) -> None:
    assert problems_of(write_rows(tmp_path / "s.csv", [("a", "1 3"), ("a", "9 2"), ("b", "")])) == []


def test_missing_file(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.csv") == [f"{tmp_path / 'nope.csv'}: file not found"]


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text("")
    [problem] = problems_of(tmp_path / "s.csv")
    assert "the file is empty" in problem and "id,predicted" in problem


def test_unparseable_file(tmp_path: Path) -> None:
    (tmp_path / "s.csv").write_text('id,predicted\n"a,1 3\n')
    [problem] = problems_of(tmp_path / "s.csv")
    assert problem.startswith(f"{tmp_path / 's.csv'}: not a readable CSV")


def test_wrong_header(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "s.csv", [("a", "1 3"), ("b", "")], header="ImageId,EncodedPixels")
    assert problems_of(path) == [f"{path}: header is ImageId,EncodedPixels, expected id,predicted"]


def test_header_only(tmp_path: Path) -> None:
    problems = problems_of(write_rows(tmp_path / "s.csv", []))
    assert problems[0].endswith("no data rows")
    assert problems[1:] == ["missing id 'a': no row for this test image", "missing id 'b': no row for this test image"]


def test_missing_id(tmp_path: Path) -> None:
    assert problems_of(write_rows(tmp_path / "s.csv", [("a", "1 3")])) == ["missing id 'b': no row for this test image"]


def test_unknown_id(tmp_path: Path) -> None:
    problems = problems_of(write_rows(tmp_path / "s.csv", [("a", ""), ("zz", "1 2"), ("b", "")]))
    assert problems == ["line 3: unknown id 'zz' (not a test image)"]


def test_invalid_rle_token(tmp_path: Path) -> None:
    [problem] = problems_of(write_rows(tmp_path / "s.csv", [("a", "1 3"), ("a", "5 x"), ("b", "")]))
    assert problem.startswith("line 3 (id 'a'):") and "'x', not an integer" in problem and "value '5 x'" in problem


def test_odd_token_count(tmp_path: Path) -> None:
    [problem] = problems_of(write_rows(tmp_path / "s.csv", [("a", "1 3 7"), ("b", "")]))
    assert problem.startswith("line 2 (id 'a'):") and "odd number of tokens" in problem


def test_run_past_the_image(tmp_path: Path) -> None:
    [problem] = problems_of(write_rows(tmp_path / "s.csv", [("a", ""), ("b", "45 10")]))
    assert problem.startswith("line 3 (id 'b'):") and "past the end of the 6x8 image" in problem


def test_runs_not_sorted(tmp_path: Path) -> None:
    [problem] = problems_of(write_rows(tmp_path / "s.csv", [("a", "20 2 3 2"), ("b", "")]))
    assert problem.startswith("line 2 (id 'a'):") and "increasing order" in problem


def test_overlapping_instances_count_pixels(tmp_path: Path) -> None:
    problems = problems_of(write_rows(tmp_path / "s.csv", [("a", "1 6"), ("a", "20 3"), ("a", "3 6"), ("b", "")]))
    assert problems == ["line 4: id 'a' instance overlaps earlier instances of the image in 4 pixels (value '3 6')"]


def test_duplicate_rows(tmp_path: Path) -> None:
    problems = problems_of(write_rows(tmp_path / "s.csv", [("a", "1 2"), ("b", ""), ("a", "1 2")]))
    assert problems == ["line 4: duplicate of line 2 (id a, value '1 2')"]


def test_empty_and_non_empty_rows_for_one_image(tmp_path: Path) -> None:
    problems = problems_of(write_rows(tmp_path / "s.csv", [("a", ""), ("a", "4 2"), ("b", "")]))
    assert problems == ["line 2: id 'a' has an empty prediction but also 1 non-empty row(s) (first: line 3)"]


def test_binary_task_allows_one_row_per_image(tmp_path: Path) -> None:
    path = write_rows(tmp_path / "s.csv", [("a", "1 2"), ("a", "5 2"), ("b", "")])
    assert problems_of(path, task="instance") == []
    assert problems_of(path, task="binary") == ["line 3: id 'a' has 2 rows; task binary expects exactly one row per image"]


def test_problem_list_is_capped(tmp_path: Path) -> None:
    rows = [("a", ""), ("b", "")] + [(f"ghost{i}", "") for i in range(60)]
    problems = problems_of(write_rows(tmp_path / "s.csv", rows))
    assert len(problems) == submission.MAX_PROBLEMS + 1
    assert problems[0] == "line 4: unknown id 'ghost0' (not a test image)"
    assert problems[-1] == "... and 10 more"


# --- command_validate -------------------------------------------------------------------------------------------

@pytest.fixture
def competition(tmp_path: Path) -> dict:
    (tmp_path / "test").mkdir()
    for image_id in ("a", "b"):
        cv2.imwrite(str(tmp_path / "test" / f"{image_id}.png"), np.zeros(SHAPE, np.uint8))
    return load_config(None, [f"data.root={tmp_path}", "data.schema.preset=sartorius"])


def test_command_validate_valid(tmp_path: Path, competition: dict, capsys: pytest.CaptureFixture) -> None:
    path = write_rows(tmp_path / "s.csv", [("a", "1 3"), ("a", "9 2"), ("b", "")])
    assert submission.command_validate(path, competition) == 0
    assert capsys.readouterr().out.strip() == "valid: 3 rows, 2 images, 2 instances"


def test_command_validate_invalid(tmp_path: Path, competition: dict, capsys: pytest.CaptureFixture) -> None:
    path = write_rows(tmp_path / "s.csv", [("a", "1 3")])
    assert submission.command_validate(path, competition) == 1
    assert capsys.readouterr().out.splitlines() == [f"invalid: {path}", "  missing id 'b': no row for this test image"]
