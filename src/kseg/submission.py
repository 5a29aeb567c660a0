"""Label images → submission CSV, and an offline validator that catches what Kaggle would reject.

A submission that fails on Kaggle costs one of the day's submissions and, for a kernel competition,
an hour of GPU time; every rule Kaggle enforces (header, ids, RLE syntax, runs inside the image,
non-overlapping instances) is therefore checked locally first, with the file line of each problem.

A multiclass submission (``data.schema.submission_cols`` of three names, Severstal's ``ImageId,EncodedPixels,
ClassId``) has one row per class predicted in an image, the class id in the third column; an image where no class
is predicted gets one empty row with an empty class, so every test id still appears.
"""
from __future__ import annotations

import contextlib
import csv
import logging
from pathlib import Path
from types import TracebackType
from typing import IO, Mapping

import numpy as np
import pandas as pd

from kseg import config as config_module
from kseg import data, rle
from kseg.classmaps import class_mask, present_classes
from kseg.data import Schema
from kseg.errors import DataError, RLEError, SubmissionError
from kseg.files import atomic_path
from kseg.tasks import task_of

from .config import Config

log = logging.getLogger(__name__)

__all__ = ["submission_frame", "image_rows", "write_submission", "SubmissionWriter", "submission_labels", "validate_submission",
           "command_validate", "MAX_PROBLEMS"]

# Enough to see the pattern of a systematic mistake without flooding the terminal.
MAX_PROBLEMS = 50


def file_columns(schema: Schema) -> tuple[str, ...]:
    """The header a submission file has: ``schema.submission_cols``, or (joined id, rle) for a joined schema."""
    return (schema.joined_id, schema.submission_cols[1]) if schema.joined_id else schema.submission_cols


def submission_frame(predictions: Mapping[str, np.ndarray], schema: Schema, order: str | None = None,
                     n_classes: int | None = None, overlapping: bool = False) -> pd.DataFrame:
    """One row per instance in label order, ids sorted; an image without instances gets one empty row
    (:func:`kseg.rle.empty_rle`: ``""``, or ``-1`` in SIIM's relative order).

    ``order`` is the RLE pixel order, ``schema.rle_order`` when not given; ``overlapping``: the class maps hold a
    bit per class (multilabel, :mod:`kseg.classmaps`).
    """
    order = order or schema.rle_order
    rows = [row for image_id in sorted(predictions)
            for row in image_rows(image_id, predictions[image_id], schema, order, n_classes, overlapping)]
    return pd.DataFrame(rows, columns=list(file_columns(schema)))


def image_rows(image_id: str, labels: np.ndarray, schema: Schema, order: str | None = None,
               n_classes: int | None = None, overlapping: bool = False) -> list[list[str]]:
    """The submission rows of one image in :func:`file_columns` order: ``[id, rle]`` per instance, or for a
    multiclass schema ``[id, rle, class id]`` per class present (the label image is a class map, a bit per class
    when ``overlapping``), or for a joined schema ``[id_class, rle]`` for every class 1..``n_classes``, empty
    where the class is absent."""
    order = order or schema.rle_order
    if len(schema.submission_cols) == 2:
        return [[image_id, value] for value in image_rles(image_id, labels, order)]
    labels = _checked_labels(image_id, labels)
    encoded = ({k: rle.encode(class_mask(labels, k, True), order) for k in present_classes(labels, True)}
               if overlapping else rle.encode_labels(labels, order))
    if schema.joined_id:
        if n_classes is None or any(k > n_classes for k in encoded):
            raise SubmissionError(f"prediction of id {image_id!r}: a joined {schema.joined_id} submission lists "
                                  f"classes 1..n_classes, got classes {sorted(encoded)} with n_classes {n_classes}")
        return [[f"{image_id}_{k}", encoded.get(k, rle.empty_rle(order))] for k in range(1, n_classes + 1)]
    return [[image_id, encoded[k], str(k)] for k in sorted(encoded)] or [[image_id, rle.empty_rle(order), ""]]


def image_rles(image_id: str, labels: np.ndarray, order: str) -> list[str]:
    """The RLE of each instance of one label image in label order, or the empty mask's text alone when it has none."""
    encoded = rle.encode_labels(_checked_labels(image_id, labels), order)
    return [encoded[label] for label in sorted(encoded)] or [rle.empty_rle(order)]


def _checked_labels(image_id: str, labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise SubmissionError(f"prediction of id {image_id!r} must be a 2-D integer label image, "
                              f"got {labels.dtype} array of shape {labels.shape}")
    if np.issubdtype(labels.dtype, np.signedinteger) and labels.size and labels.min() < 0:
        raise SubmissionError(f"prediction of id {image_id!r} has negative label {labels.min()}")
    return labels


class SubmissionWriter:
    """Write a submission image by image: each label image is encoded and appended as it comes, so memory
    stays that of one image however large Kaggle's hidden test set is (10-100x the public one).

    Use as a context manager: rows go to a temporary file next to ``path``, which replaces ``path`` only when
    the block succeeds; :meth:`flush` makes the rows readable at :attr:`tmp_path` for validation first.
    """

    def __init__(self, path: str | Path, schema: Schema, order: str | None = None, n_classes: int | None = None,
                 overlapping: bool = False) -> None:
        self.path = Path(path)
        self.schema = schema
        self.n_classes, self.overlapping = n_classes, overlapping
        self.order = order or schema.rle_order
        self.n_images = self.n_rows = self.n_instances = 0
        self._stack = contextlib.ExitStack()
        self._file: IO[str] | None = None

    def __enter__(self) -> "SubmissionWriter":
        self.tmp_path = self._stack.enter_context(atomic_path(self.path))
        self._file = self._stack.enter_context(open(self.tmp_path, "w", newline=""))
        self._csv = csv.writer(self._file, lineterminator="\n")
        self._csv.writerow(file_columns(self.schema))
        return self

    def add(self, image_id: str, labels: np.ndarray) -> int:
        """Append the rows of one image; returns its number of instances."""
        rows = image_rows(image_id, labels, self.schema, self.order, self.n_classes, self.overlapping)
        self._csv.writerows(rows)
        n_instances = sum(1 for row in rows if not rle.is_empty(row[1], self.order))
        self.n_images += 1
        self.n_rows += len(rows)
        self.n_instances += n_instances
        return n_instances

    def flush(self) -> None:
        assert self._file is not None, "SubmissionWriter.flush() outside its with-block"
        self._file.flush()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> bool:
        return bool(self._stack.__exit__(exc_type, exc, tb))


def write_submission(frame: pd.DataFrame, path: str | Path) -> Path:
    """Write the CSV atomically, so an interrupted kernel never leaves a truncated submission behind."""
    path = Path(path)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)
    return path


def _abbreviate(value: str, limit: int = 40) -> str:
    return value if len(value) <= limit else f"{value[:limit]}..."


def _read_submission(path: Path, schema: Schema) -> tuple[pd.DataFrame | None, list[str]]:
    """The submission as text cells, or ``None`` and the reason it cannot be checked further."""
    if not path.is_file():
        return None, [f"{path}: file not found"]
    header = ",".join(file_columns(schema))
    try:
        frame = data.read_csv(path, "submission file")
    except DataError as exc:
        return None, [f"{exc}; a submission starts with the header {header}"]
    if list(frame.columns) != list(file_columns(schema)):
        return None, [f"{path}: header is {','.join(map(str, frame.columns))}, expected {header}"]
    try:
        return data.split_joined(frame, schema, path), []
    except DataError as exc:
        return None, [str(exc)]


def submission_labels(path: str | Path, schema: Schema, shapes: Mapping[str, tuple[int, int]]) -> dict[str, np.ndarray]:
    """The predicted label image of each id of ``shapes`` (its ``(height, width)``) decoded from a submission,
    instances numbered in row order; an id without rows gets an empty image. A file that cannot be read
    as a submission is a SubmissionError naming why."""
    path = Path(path)
    frame, problems = _read_submission(path, schema)
    if frame is None:
        raise SubmissionError(problems[0])
    id_col, rle_col = schema.submission_cols[:2]
    lines = data.csv_lines(frame)
    rows_of: dict[str, list[int]] = {}
    for position, image_id in enumerate(frame[id_col]):
        if image_id in shapes:
            rows_of.setdefault(image_id, []).append(position)
    labels = {}
    for image_id, shape in shapes.items():
        rows = rows_of.get(image_id, [])
        rles = frame[rle_col].iloc[rows].tolist()
        wheres = [f"{path} line {lines[row]} (id {image_id})" for row in rows]
        if len(schema.submission_cols) == 3:  # multiclass: a class map (its rows checked by validate_submission)
            kept = [i for i, value in enumerate(rles) if not rle.is_empty(value, schema.rle_order)]
            classes = [data.class_id(frame[schema.submission_cols[2]].iloc[rows[i]], wheres[i]) for i in kept]
            labels[image_id], _ = rle.decode_classes([rles[i] for i in kept], classes, shape, schema.rle_order,
                                                     wheres=[wheres[i] for i in kept])
        else:
            labels[image_id], _ = rle.decode_labels(rles, shape, schema.rle_order, wheres=wheres)
    return labels


def validate_submission(path: str | Path, schema: Schema, expected: Mapping[str, tuple[int, int]],
                        task: str = "instance", n_classes: int | None = None) -> list[str]:
    """Every problem Kaggle would reject, each naming the row and value; an empty list means valid.

    ``expected`` maps every test image id to its ``(height, width)``. Checked: header, missing and
    unknown ids, duplicate rows, RLE syntax and runs (sorted, inside the image), an image with both an
    empty and non-empty rows, overlapping instances of one image, and for ``task="binary"`` one row
    per image. For ``task="multiclass"`` every non-empty row's class id must be an integer 1..``n_classes``
    (any positive integer when None), once per image, and an empty row must have an empty class; the rows of
    an image must not overlap (exclusive classes; ``multilabel`` rows may). At most :data:`MAX_PROBLEMS` problems are listed, then a
    count of the rest.
    """
    path = Path(path)
    frame, problems = _read_submission(path, schema)
    if frame is None:
        return problems
    id_col, rle_col = schema.submission_cols[:2]
    if frame.empty:
        problems.append(f"{path}: no data rows")
    lines = data.csv_lines(frame)
    values = frame[rle_col].tolist()
    # One row per (image, class): two classes may have one mask (multilabel), an image two empty joined rows.
    classes = frame[schema.submission_cols[2]].tolist() if len(schema.submission_cols) == 3 else [""] * len(frame)
    if task_of(task).class_per_pixel:
        problems.extend(_class_problems(frame, schema, lines, n_classes))
    positions_of: dict[str, list[int]] = {}
    first_line_of: dict[tuple[str, str, str], int] = {}
    for position, (line, image_id, value) in enumerate(zip(lines.tolist(), frame[id_col], values)):
        if image_id not in expected:
            problems.append(f"line {line}: unknown id {image_id!r} (not a test image)")
            continue
        key = (image_id, value.strip(), classes[position])
        if key in first_line_of:
            problems.append(f"line {line}: duplicate of line {first_line_of[key]} (id {image_id}, "
                            f"value '{_abbreviate(value)}')")
            continue
        first_line_of[key] = line
        positions_of.setdefault(image_id, []).append(position)
    problems.extend(f"missing id {image_id!r}: no row for this test image" for image_id in sorted(set(expected) - set(positions_of)))
    for image_id, positions in positions_of.items():
        rows = [(int(lines[p]), values[p]) for p in positions]
        problems.extend(_image_problems(rows, image_id, expected[image_id], schema.rle_order, task,
                                        mixed_ok=schema.joined_id is not None))
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more"]
    return problems


def _class_problems(frame: pd.DataFrame, schema: Schema, lines: np.ndarray, n_classes: int | None) -> list[str]:
    """Class-column problems of a multiclass submission: a bad class id, a class twice in one image, a class on an
    empty row."""
    if len(schema.submission_cols) != 3:
        return [f"a pixel-class task needs a class column in the submission; data.schema.submission_cols is "
                f"{list(schema.submission_cols)}"]
    id_col, rle_col, class_col = schema.submission_cols
    problems: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    joined = schema.joined_id is not None
    for line, image_id, value, cls in zip(lines.tolist(), frame[id_col], frame[rle_col], frame[class_col]):
        if rle.is_empty(value, schema.rle_order) and not joined:
            if str(cls).strip():
                problems.append(f"line {line}: id {image_id!r} has an empty mask with class {cls!r}; an image without "
                                f"any class has one empty row with an empty {class_col}")
            continue
        try:
            number = data.class_id(cls, f"line {line} ({class_col})", n_classes)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if (image_id, number) in seen:
            problems.append(f"line {line}: id {image_id!r} has class {number} twice (first at line "
                            f"{seen[image_id, number]}); one row per class and image")
            continue
        seen[image_id, number] = line
    if joined and n_classes is not None:  # every (image, class) pair, as the competition's sample lists them
        for image_id in dict.fromkeys(frame[id_col]):
            missing = [k for k in range(1, n_classes + 1) if (image_id, k) not in seen]
            if missing:
                problems.append(f"id {image_id!r} has no {schema.joined_id} row for class(es) "
                                f"{', '.join(map(str, missing))}; a joined submission lists every class of every image")
    return problems


def _image_problems(rows: list[tuple[int, str]], image_id: str, shape: tuple[int, int],
                    order: str, task: str, mixed_ok: bool = False) -> list[str]:
    """Problems among the ``(line, value)`` rows of one image: empty-vs-instance mix (``mixed_ok``: a joined
    submission lists every class, empty ones too), bad RLE, overlap (allowed between multilabel classes), binary
    row count."""
    problems: list[str] = []
    empty_rows = [(line, value) for line, value in rows if rle.is_empty(value, order)]
    instance_rows = [(line, value) for line, value in rows if not rle.is_empty(value, order)]
    if empty_rows and instance_rows and not mixed_ok:
        problems.append(f"line {empty_rows[0][0]}: id {image_id!r} has an empty prediction but also "
                        f"{len(instance_rows)} non-empty row(s) (first: line {instance_rows[0][0]})")
    if task_of(task).one_mask_per_image and len(rows) > 1:
        problems.append(f"line {rows[1][0]}: id {image_id!r} has {len(rows)} rows; task binary expects exactly one row per image")
    claimed = np.zeros(shape, dtype=bool)
    for line, value in instance_rows:
        try:
            mask = rle.decode(value, shape, order)
        except RLEError as exc:
            problems.append(f"line {line} (id {image_id!r}): {exc} (value '{_abbreviate(value)}')")
            continue
        overlap = int(np.count_nonzero(mask & claimed))
        if overlap and not task_of(task).classes_overlap:
            what = task_of(task).row_noun
            problems.append(f"line {line}: id {image_id!r} {what} overlaps earlier {what}s of the image in "
                            f"{overlap} pixels (value '{_abbreviate(value)}')")
        claimed |= mask
    return problems


def command_validate(path: str | Path | None, cfg: Config) -> int:
    """Validate a submission against the test images of the config; print a summary or the problems.

    ``path`` defaults to the config's submission path. Returns the exit code: 0 valid, 1 invalid.
    """
    path = Path(path) if path is not None else config_module.submission_path(cfg)
    schema = data.schema_from_config(cfg)
    expected = {image_id: data.image_size(image_file) for image_id, image_file in data.list_test_images(cfg)}
    problems = validate_submission(path, schema, expected, cfg.data.task, data.n_classes_of(cfg))
    if problems:
        log.info(f"invalid: {path}")
        for problem in problems:
            log.info(f"  {problem}")
        return 1
    frame = data.read_submission_csv(Path(path), schema)
    n_instances = sum(not rle.is_empty(value, schema.rle_order) for value in frame[schema.submission_cols[1]])
    what = f"{task_of(cfg.data.task).row_noun}s"
    log.info(f"valid: {len(frame)} rows, {frame[schema.submission_cols[0]].nunique()} images, {n_instances} {what}")
    return 0
