"""Competition data: a train.csv of run-length-encoded masks plus a folder of images.

Column names, RLE pixel order and the submission header differ between competitions, so they are a
:class:`Schema` built from the config (a preset plus overrides). Everything that can be wrong with the
inputs is checked here, once, and reported as a :class:`~kseg.errors.DataError` naming the file, the
CSV line (the file's own line number, header = line 1, as an editor shows it) and the value: a wrong
mask would otherwise train and score silently. Every path built from an id goes through
:func:`kseg.files.child_path`, so an id never reads or writes outside its folder.
"""
from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import cv2
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from kseg import classmaps, rle
from kseg import config as config_module
from kseg.classmaps import BACKGROUND, VOID
from kseg.errors import ConfigError, DataError, warn
from kseg.files import child_path

from .config import Config
from .tasks import task_of

__all__ = [
    "Schema", "PRESETS", "schema_from_config", "read_image", "image_size", "ImageRecord",
    "read_csv", "read_annotations", "read_submission_csv", "split_joined", "csv_lines", "read_index", "load_records", "load_test_truth", "list_test_images",
    "records_frame",
    "image_path", "check_complete_image", "UNLABELLED", "class_id", "n_classes_of", "class_names",
]

PRESETS: dict[str, dict[str, Any]] = {
    "sartorius": {
        "id_col": "id", "rle_col": "annotation", "height_col": "height", "width_col": "width",
        "rle_order": "C", "class_col": "cell_type", "group_col": "sample_id",
        "submission_cols": ("id", "predicted"),
    },
    "dsb2018": {
        "id_col": "ImageId", "rle_col": "EncodedPixels", "height_col": "Height", "width_col": "Width",
        "rle_order": "F", "class_col": None, "group_col": None,
        "submission_cols": ("ImageId", "EncodedPixels"),
    },
    # SIIM-ACR Pneumothorax (2019): train-rle.csv without a header line, relative RLE, "-1" for no
    # pneumothorax; several rows of one image (several regions) are unioned with data.task: binary.
    # Images are DICOM, so data.image_ext: .dcm (a data key, like the task, not part of the CSV layout).
    "siim": {
        "id_col": "ImageId", "rle_col": "EncodedPixels", "height_col": None, "width_col": None,
        "rle_order": "F-relative", "class_col": None, "group_col": None, "header": False,
        "submission_cols": ("ImageId", "EncodedPixels"),
    },
    # TGS Salt Identification (2018): id,rle_mask, column-major, one row per image (empty = no salt); 101x101 images,
    # so the sizes come from the images. Use it with data.task: binary and data.metric: tgs_ap_iou.
    "tgs": {
        "id_col": "id", "rle_col": "rle_mask", "height_col": None, "width_col": None,
        "rle_order": "F", "class_col": None, "group_col": None,
        "submission_cols": ("id", "rle_mask"),
    },
    # Severstal Steel Defect Detection (2019): one row per (image, class present), the class in its own column,
    # column-major RLE; the submission has the class as a third column. Pixels in no row are background.
    # Use it with data.task: multiclass (exclusive classes, softmax); unlabelled: ignore for a void label (CamVid).
    "severstal": {
        "id_col": "ImageId", "rle_col": "EncodedPixels", "height_col": None, "width_col": None,
        "rle_order": "F", "class_col": "ClassId", "group_col": None, "unlabelled": "background",
        "submission_cols": ("ImageId", "EncodedPixels", "ClassId"),
    },
    # Severstal as first released (2019): one column ImageId_ClassId ("0002cc93b.jpg_1") instead of two, every
    # (image, class) pair listed in train.csv and in the submission, empty where the class is absent. Read into
    # the severstal layout above; the submission is written back in the joined form, every pair of every image.
    "severstal2019": {
        "id_col": "ImageId", "rle_col": "EncodedPixels", "height_col": None, "width_col": None,
        "rle_order": "F", "class_col": "ClassId", "group_col": None, "unlabelled": "background",
        "submission_cols": ("ImageId", "EncodedPixels", "ClassId"), "joined_id": "ImageId_ClassId",
    },
}
# What a pixel in no row of a multiclass CSV is: background (a class of its own that gets no row, Severstal) or
# void (ignored by the loss and the metric, CamVid's "Unlabelled").
UNLABELLED = ("background", "ignore")

DICOM_SUFFIXES = (".dcm", ".dicom")
# Arrays saved with numpy (a preprocessed slice, a stack of computed channels): (H, W) or (H, W, C), C <= 4.
NPY_SUFFIX = ".npy"
# Percentiles of a 16-bit or float image that become 0 and 255 when it is read as uint8.
HIGH_DEPTH_PERCENTILES = (0.1, 99.9)

# Keys a schema cannot do without when no preset supplies them.
_REQUIRED_KEYS = ("id_col", "rle_col", "rle_order")
_OPTIONAL_KEYS = ("height_col", "width_col", "class_col", "group_col", "submission_cols", "header", "unlabelled",
                  "joined_id")

# Columns of read_index and records_frame: one row per image, what folds and summaries need.
INDEX_COLUMNS = ["id", "cls", "group", "n_instances", "height", "width"]


@dataclass(frozen=True)
class Schema:
    """Where a competition keeps each piece of information in its CSVs.

    ``height_col``/``width_col`` are optional (image sizes then come from the image headers);
    ``class_col``/``group_col`` are optional (no per-class search, no grouped folds without them).
    ``rle_order`` is one of :data:`kseg.rle.ORDERS`; ``F-relative`` is SIIM's relative RLE, whose empty
    mask is ``-1`` (read and written), see :mod:`kseg.rle`. ``header`` false: the train CSV has no
    header line and holds just ``id_col, rle_col`` (SIIM); the submission always has its header.

    For ``task: multiclass`` the class is per *row* (``class_col``, positive integer ids, Severstal), the
    submission has three columns ``(id, rle, class)`` and ``unlabelled`` says what a pixel in no row is
    (:data:`UNLABELLED`); the other tasks take the class of an image from its first row.
    """

    id_col: str
    rle_col: str
    height_col: str | None
    width_col: str | None
    rle_order: str
    class_col: str | None
    group_col: str | None
    submission_cols: tuple[str, ...]
    header: bool = True
    unlabelled: str = "background"
    # The file column that joins id and class as "<id>_<class>" (Severstal 2019's ImageId_ClassId): CSVs are
    # split into id_col and class_col as they are read (:func:`split_joined`), submissions written joined.
    joined_id: str | None = None

    def check_task(self, task: str) -> None:
        """A multiclass task needs a class column and a class column in the submission; the others write two
        columns. Checked where a schema meets its task (the config, ``kseg score``)."""
        if self.joined_id and not task_of(task).class_per_pixel:
            raise ConfigError(f"data.schema.joined_id ({self.joined_id}) joins an id and a class: it needs data.task "
                              f"multiclass or multilabel, got {task}")
        if task_of(task).class_per_pixel:
            if not self.class_col:
                raise ConfigError(f"data.task {task} needs data.schema.class_col (the class of each row, e.g. "
                                  "ClassId), or data.schema.preset: severstal")
            if len(self.submission_cols) != 3:
                raise ConfigError(f"data.task {task} writes (id, rle, class) rows: data.schema.submission_cols "
                                  f"must be three column names, got {list(self.submission_cols)}")
        elif len(self.submission_cols) != 2:
            raise ConfigError(f"data.task {task} writes (id, rle) rows: data.schema.submission_cols must be two "
                              f"column names, got {list(self.submission_cols)}")


def schema_from_config(cfg: Config) -> Schema:
    """``data.schema``: the preset's values, then every non-null key of the config on top.

    Without a preset ``id_col``, ``rle_col`` and ``rle_order`` must be given; ``submission_cols``
    then defaults to ``(id_col, rle_col)``, the classic Kaggle layout.
    """
    section = cfg.data.schema_
    preset = section.preset
    if preset is not None:
        if preset not in PRESETS:
            raise ConfigError(f"data.schema.preset: unknown preset {preset!r}; valid presets: {', '.join(sorted(PRESETS))}")
        values: dict[str, Any] = dict(PRESETS[preset])
    else:
        values = {key: None for key in _REQUIRED_KEYS + _OPTIONAL_KEYS}
    values.update({key: value for key, value in section.model_dump().items() if key != "preset" and value is not None})
    for key in _REQUIRED_KEYS:
        if not values.get(key):
            raise ConfigError(f"data.schema.{key} is required when data.schema.preset is not set "
                              f"(or set data.schema.preset to one of: {', '.join(sorted(PRESETS))})")
    if values["rle_order"] not in rle.ORDERS:
        raise ConfigError(f"data.schema.rle_order must be 'C' (row-major), 'F' (column-major) or 'F-relative' "
                          f"(SIIM-ACR; also 'C-relative'), got {values['rle_order']!r}")
    if values.get("header") is None:
        values["header"] = True
    elif not isinstance(values["header"], bool):
        raise ConfigError(f"data.schema.header must be true or false (false: the train CSV has no header line), "
                          f"got {values['header']!r}")
    task = cfg.data.task
    with_class = task_of(task).class_per_pixel and values["class_col"]
    default_cols = (values["id_col"], values["rle_col"], *([values["class_col"]] if with_class else []))
    submission_cols = values["submission_cols"] or default_cols
    if (isinstance(submission_cols, str) or len(submission_cols) not in (2, 3)
            or not all(isinstance(c, str) and c for c in submission_cols)):
        raise ConfigError(f"data.schema.submission_cols must be two (id, rle) or three (id, rle, class) column names, "
                          f"got {submission_cols!r}")
    values["submission_cols"] = tuple(submission_cols)
    values["unlabelled"] = values.get("unlabelled") or "background"
    if values["unlabelled"] not in UNLABELLED:
        raise ConfigError(f"data.schema.unlabelled must be one of {', '.join(UNLABELLED)}, got {values['unlabelled']!r}")
    schema = Schema(**{key: values[key] for key in Schema.__dataclass_fields__ if key in values})
    schema.check_task(task)
    return schema


def class_id(value: Any, where: str, n_classes: int | None = None) -> int:
    """The class id of one multiclass row: a positive integer (Severstal's 1..4, CamVid's 1..11), at most
    ``n_classes`` when the config names the classes. ``where`` (file, line) starts the error, which names the
    value: a class that is not an integer, or is out of range, would train a wrong channel silently."""
    text = str(value).strip()
    valid = f"1..{n_classes}" if n_classes else "a positive integer"
    if not text.isdigit() or not text.isascii():
        raise DataError(f"{where}: unknown class id {text!r}; class ids are integers ({valid})")
    number = int(text)
    if number < 1 or (n_classes is not None and number > n_classes) or number >= VOID:
        raise DataError(f"{where}: class id {number} is out of range; class ids are {valid}"
                        + (f" (data.classes names {n_classes})" if n_classes else ""))
    return number


def n_classes_of(cfg: Config) -> int | None:
    """How many classes ``data.classes`` names (class ids 1..n), or None when the CSV decides."""
    names = cfg.data.classes
    return len(names) if names is not None else None


def class_names(cfg: Config, records: Sequence["ImageRecord"]) -> list[str]:
    """The pixel classes of a multiclass run, in class-id order (class id k = ``names[k-1]``): ``data.classes``,
    or ``"1".."K"`` with K the highest class id in the records; empty for the other tasks (their classes
    are per image, :func:`kseg.train.run_classes`)."""
    if not task_of(cfg.data.task).class_per_pixel:
        return []
    if cfg.data.classes is not None:
        return [str(name) for name in cfg.data.classes]
    overlapping = task_of(cfg.data.task).classes_overlap
    highest = max((classmaps.highest_class(r.labels, overlapping) for r in records), default=0)
    return [str(k) for k in range(1, max(highest, 1) + 1)]


def read_image(path: str | Path, dicom_window: Any = None) -> np.ndarray:
    """Image as ``uint8`` (H, W, 3) RGB, whatever is on disk, so every model sees one layout.

    Gray is replicated to three channels, alpha is dropped, and 16-bit or float images are stretched
    per image from their 0.1 to 99.9 percentiles to 0..255 (their absolute range differs between microscopes
    and files). DICOM files (``.dcm``) are read with ``kseg.dicom.read_dicom`` in modality units (CT in HU
    after RescaleSlope/Intercept, MONOCHROME1 inverted) and stretched the same way, or, with a
    ``dicom_window`` (``data.dicom_window``: ``(center, width)`` in modality units, or ``"file"``), mapped
    through that window: the same HU give the same grey in every slice, as radiologists read CT.
    Use :func:`image_reader` for the run's own reading.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    if path.suffix.lower() in DICOM_SUFFIXES:
        from kseg.dicom import read_dicom

        # Modality units (HU for CT, rescale applied), kept at full depth until the percentile stretch below,
        # or windowed straight to 0..255.
        pixels = (np.asarray(read_dicom(path)) if dicom_window is None
                  else read_dicom(path, dicom_window, as_uint8=True))
    elif path.suffix.lower() == NPY_SUFFIX:
        pixels = _read_npy(path)
    else:
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if pixels is None:
            raise DataError(f"{path}: not a readable image (OpenCV could not decode it)")
        check_complete_image(path)
        if pixels.ndim == 3 and pixels.shape[2] in (3, 4):
            pixels = cv2.cvtColor(pixels[:, :, :3], cv2.COLOR_BGR2RGB)
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[:, :, 0]
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[:, :, None], 3, axis=2)
    elif pixels.ndim == 3 and pixels.shape[2] in (3, 4):
        pixels = pixels[:, :, :3]
    else:
        raise DataError(f"{path}: unsupported image layout {pixels.shape}; expected gray, RGB or RGBA")
    if pixels.dtype != np.uint8:
        pixels = _scale_to_uint8(pixels.astype(np.float64))
    return np.ascontiguousarray(pixels)


def _load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """The array of a ``.npy`` file (never pickled objects: a data file must not run code)."""
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray) or not (array.ndim == 2 or (array.ndim == 3 and 1 <= array.shape[2] <= 4)):
        shape = getattr(array, "shape", None)
        raise DataError(f"{path}: a .npy image must be (height, width) or (height, width, channels) with 1 to 4 "
                        f"channels last, got shape {shape}")
    return array


def _read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` image: bool as 0/255, other dtypes as they are (non-uint8 are stretched like 16-bit images), two
    channels padded with a zero channel, RGB channel order assumed."""
    array = _load_npy(path)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise DataError(f"{path}: a .npy image must hold numbers, got dtype {array.dtype}")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.ndim == 3 and array.shape[2] == 2:
        array = np.concatenate([array, np.zeros_like(array[..., :1])], axis=2)
    return np.asarray(array)


def image_reader(cfg: Config) -> Callable[[str | Path], np.ndarray]:
    """:func:`read_image` as the run reads every image (``data.dicom_window``): training, OOF, prediction,
    the kernels and the reports call this one, so a window changes them all alike."""
    from kseg.dicom import check_window

    window = check_window(cfg.data.dicom_window, "data.dicom_window")
    return functools.partial(read_image, dicom_window=window)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_JPEG_START, _JPEG_END = b"\xff\xd8", b"\xff\xd9"


def check_complete_image(path: str | Path) -> None:
    """DataError when a JPEG or PNG file is truncated.

    OpenCV decodes a truncated JPEG partly and fills the missing rows with flat grey (only libjpeg's
    stderr says so), which would train and predict on a wrong image. The check is cheap: a complete
    file ends with its end marker (JPEG EOI, PNG IEND); only a file that does not (some writers append
    bytes after EOI) is decoded fully by PIL, which raises on a truncated one. Other formats pass.
    """
    path = Path(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        handle.seek(0, 2)
        handle.seek(max(0, handle.tell() - len(_PNG_END)))
        tail = handle.read()
    if head.startswith(_PNG_SIGNATURE):
        complete = tail == _PNG_END
    elif head.startswith(_JPEG_START):
        complete = tail.rstrip(b"\x00\r\n").endswith(_JPEG_END)
    else:
        return
    if complete:
        return
    try:
        with Image.open(path) as image:
            image.load()
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{path}: truncated or corrupt image ({exc}); re-download or remove it") from None


def _scale_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Stretch a high-bit-depth image's 0.1..99.9 percentiles to 0..255.

    Min-max scaling would let a few saturated pixels (16-bit phase contrast has thousands at 65535)
    squeeze the content into a few dozen of the 256 levels; the percentiles keep it spread out. A
    constant image becomes all zeros rather than a division by zero.
    """
    pixels = np.nan_to_num(pixels, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = (float(v) for v in np.percentile(pixels, HIGH_DEPTH_PERCENTILES))
    if high <= low:
        low, high = float(pixels.min()), float(pixels.max())
    if high <= low:
        return np.zeros(pixels.shape, dtype=np.uint8)
    return np.round(np.clip((pixels - low) * (255.0 / (high - low)), 0.0, 255.0)).astype(np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` read from the file header only, so checking thousands of images is cheap."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"image not found: {path}")
    if path.suffix.lower() in DICOM_SUFFIXES:
        from kseg.dicom import dicom_size

        return dicom_size(path)
    if path.suffix.lower() == NPY_SUFFIX:
        height, width = _load_npy(path, mmap=True).shape[:2]
        return int(height), int(width)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: not a readable image ({exc})") from None
    return height, width


def image_path(folder: Path, image_id: str, image_ext: str, what: str = "image id") -> Path:
    """Path of an image id; ids that already carry the extension (Airbus: ``00003e153.jpg``) are kept as is.

    The id must name a file inside ``folder`` (see :func:`kseg.files.child_path`); ``what`` says where the
    id comes from in the error, e.g. ``"train.csv line 5: id"``.
    """
    child_path(folder, image_id, what)  # the id itself, so the error shows the value as the CSV has it
    name = image_id if image_id.endswith(image_ext) else f"{image_id}{image_ext}"
    return child_path(folder, name, what)


@dataclass
class ImageRecord:
    """One training image and its decoded annotation.

    ``labels`` is ``uint16`` when at most 65535 instances (half the memory of ``int32`` for a whole
    dataset held in RAM), else ``int32``; for ``task: binary`` it is a ``uint8`` 0/1 mask; for ``task: multiclass``
    a ``uint16`` class map (class id k, 0 = background, ``metric.VOID`` = void) and ``cls`` is None (the classes
    are per row).
    ``n_instances`` counts the non-empty RLE rows (binary: 1 if there is any foreground).
    """

    id: str
    image_path: Path
    shape: tuple[int, int]
    cls: str | None
    group: str | None
    labels: np.ndarray
    n_instances: int
    overlap_pixels: int


@dataclass(frozen=True)
class _TrainTable:
    """The validated train.csv: its rows (with their file line numbers in ``_line``) and one index row per image."""

    csv_path: Path
    schema: Schema
    rows: pd.DataFrame
    index: pd.DataFrame
    image_paths: dict[str, Path]


# Name of the index of a frame from read_csv: the file line number of each row.
LINE_INDEX = "line"


def read_csv(path: Path, what: str = "CSV file", *, names: tuple[str, ...] | None = None) -> pd.DataFrame:
    """Every cell as text (ids such as ``0123`` must not become numbers, empty RLE must stay ``''``).

    The index is each row's line number in the file (header = line 1), so errors name the line an
    editor shows even when pandas skipped blank lines or a quoted cell spans several lines. With
    ``names`` the file has no header line (SIIM's train-rle.csv): its records are these columns, the
    first on line 1. A UTF-8 byte-order mark (SIIM's files start with one) is dropped either way.
    """
    path = Path(path)
    if path.is_dir():
        raise DataError(f"{what} {path} is a folder, not a CSV file")
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, header=None if names else "infer")
    except pd.errors.EmptyDataError:
        expected = "data rows" if names else "a header and data rows"
        raise DataError(f"{path}: the file is empty (expected {expected})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV ({exc})") from None
    if names:
        _name_headerless_columns(frame, path, names)
    frame.index = pd.Index(_record_lines(path, len(frame), header=not names), name=LINE_INDEX)
    return frame


def _name_headerless_columns(frame: pd.DataFrame, path: Path, names: tuple[str, ...]) -> None:
    """Give a headerless frame its column names, refusing a file whose layout says otherwise: another
    column count would put values under the wrong names, and a header line would become a data row."""
    if frame.shape[1] != len(names):
        raise DataError(f"{path} line 1: {frame.shape[1]} column(s), expected {len(names)} ({', '.join(names)}) "
                        f"in a CSV without a header line (data.schema.header: false)")
    frame.columns = list(names)
    if len(frame) and [str(cell).strip() for cell in frame.iloc[0]] == list(names):
        raise DataError(f"{path} line 1: {','.join(frame.iloc[0])!r} is a header line, but data.schema.header is "
                        f"false; set it to true")


def _record_lines(path: Path, n_rows: int, header: bool = True) -> np.ndarray:
    """First file line of each of the ``n_rows`` data records pandas read (it skips blank lines)."""
    first = 2 if header else 1
    raw = path.read_bytes()
    n_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
    if b'"' not in raw and b"\r" not in raw and n_lines == n_rows + first - 1:
        return np.arange(first, n_rows + first)  # the common case: one record per line, no blank line
    starts: list[int] = []
    with open(path, newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        previous = 0
        for index, record in enumerate(reader):
            start, previous = previous + 1, reader.line_num
            if (header and index == 0) or not record or (len(record) == 1 and not record[0].strip()):
                continue  # the header, or a blank line pandas skips
            starts.append(start)
    if len(starts) != n_rows:  # a dialect csv reads differently from pandas: count records instead
        return np.arange(first, n_rows + first)
    return np.asarray(starts, dtype=np.int64)


def read_annotations(path: Path, schema: Schema, what: str = "train CSV") -> pd.DataFrame:
    """A CSV in the train layout of ``schema`` (train.csv, a test truth): with or without its header line, a
    joined id/class column split (:func:`split_joined`)."""
    names = None if schema.header else (schema.joined_id or schema.id_col, schema.rle_col)
    return split_joined(read_csv(path, what, names=names), schema, path)


def read_submission_csv(path: Path, schema: Schema, what: str = "submission file") -> pd.DataFrame:
    """A CSV in the submission layout of ``schema`` (a submission, a sample submission), a joined id/class column
    split (:func:`split_joined`)."""
    return split_joined(read_csv(path, what), schema, path)


def split_joined(frame: pd.DataFrame, schema: Schema, path: Path) -> pd.DataFrame:
    """``schema.joined_id`` ("0002cc93b.jpg_1") split at its last "_" into ``id_col`` and ``class_col``, in their
    place; a frame without the joined column is returned as it is (its header is checked where it is used).
    A value without "_" is a DataError naming the line."""
    joined = schema.joined_id
    if not joined or joined not in frame.columns:
        return frame
    assert schema.class_col is not None  # check_task: a joined id needs multiclass, which needs a class column
    parts = frame[joined].str.rpartition("_")
    bad = parts[1] != ""
    if not bad.all():
        line = csv_lines(frame)[int(np.argmin(bad.to_numpy()))]
        value = frame[joined].to_numpy()[int(np.argmin(bad.to_numpy()))]
        raise DataError(f"{path} line {line}: {joined} {value!r} is not <id>_<class>")
    # The id where the joined column was, the class after the RLE (the submission's column order).
    split = frame.assign(**{joined: parts[0]}).rename(columns={joined: schema.id_col})
    columns = list(split.columns)
    at = columns.index(schema.rle_col) + 1 if schema.rle_col in columns else len(columns)
    split.insert(at, schema.class_col, parts[2])
    return split


def csv_lines(frame: pd.DataFrame) -> np.ndarray:
    """File line number of each row: the index of a :func:`read_csv` frame; a frame built in memory is
    numbered as the CSV it would be written to (header on line 1, first row on line 2)."""
    if frame.index.name == LINE_INDEX:
        return frame.index.to_numpy(dtype=np.int64)
    return np.arange(2, len(frame) + 2)


def _require_columns(frame: pd.DataFrame, path: Path, columns: list[str]) -> None:
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; the file has columns "
                        f"{', '.join(map(str, frame.columns))} (check data.schema)")


def _optional_column(frame: pd.DataFrame, path: Path, column: str | None, role: str) -> str | None:
    """A class/group column the CSV lacks is tolerated (e.g. derived CSVs without sample_id), with a warning."""
    if column is None or column in frame.columns:
        return column
    warn(f"{path} has no {role} column {column!r}; continuing without {role}s")
    return None


def _positive_int(value: str, path: Path, line: int, column: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise DataError(f"{path} line {line}: {column} is {value!r}, not an integer") from None
    if number < 1:
        raise DataError(f"{path} line {line}: {column} is {number}; it must be >= 1")
    return number


def _read_train_table(cfg: Config) -> _TrainTable:
    """Read and validate train.csv against the images, without decoding any mask."""
    schema = schema_from_config(cfg)
    csv_path = config_module.data_path(cfg, "train_csv")
    train_dir = config_module.data_path(cfg, "train_dir")
    image_ext = cfg.data.image_ext
    rows = read_annotations(csv_path, schema)
    _require_columns(rows, csv_path, [schema.id_col, schema.rle_col])
    if rows.empty:
        raise DataError(f"{csv_path}: no data rows (only a header)")
    class_col = _optional_column(rows, csv_path, schema.class_col, "class")
    group_col = _optional_column(rows, csv_path, schema.group_col, "group")
    size_cols = (schema.height_col, schema.width_col)
    has_sizes = all(column is not None and column in rows.columns for column in size_cols)
    # Which rows hold no mask ("" everywhere, also "-1" in SIIM's relative order), decided once for all rows.
    rows = rows.assign(_line=csv_lines(rows),
                       _empty=rows[schema.rle_col].map(lambda value: rle.is_empty(value, schema.rle_order)))
    empty_ids = rows["_line"][rows[schema.id_col].str.strip() == ""]
    if len(empty_ids):
        raise DataError(f"{csv_path} line {empty_ids.iloc[0]}: empty {schema.id_col}")
    multiclass = task_of(cfg.data.task).class_per_pixel
    if multiclass:
        rows = rows.assign(_class=_row_classes(rows, csv_path, class_col, n_classes_of(cfg)))

    index_rows: list[dict[str, Any]] = []
    image_paths: dict[str, Path] = {}
    spelled: dict[Path, tuple[str, int]] = {}
    for image_id, image_rows in rows.groupby(schema.id_col, sort=True):
        first_line = int(image_rows["_line"].iloc[0])
        path = image_path(train_dir, image_id, image_ext, f"{csv_path} line {first_line}: {schema.id_col}")
        _check_one_spelling(spelled, path, image_id, first_line, csv_path)
        if not path.is_file():
            raise DataError(f"{csv_path} line {first_line}: image of id {image_id!r} not found at {path}")
        try:
            height, width = image_size(path)
        except DataError as exc:
            raise DataError(f"{csv_path} line {first_line} (id {image_id}): {exc}") from None
        if has_sizes:
            _check_csv_sizes(image_rows, schema, csv_path, image_id, (height, width))
        n_foreground_rows = int((~image_rows["_empty"]).sum())
        if task_of(cfg.data.task).one_mask_per_image:
            n_foreground_rows = min(n_foreground_rows, 1)
        index_rows.append({
            "id": image_id,
            "cls": None if multiclass else _first_value(image_rows, class_col),
            "group": _first_value(image_rows, group_col),
            "n_instances": n_foreground_rows,
            "height": height,
            "width": width,
        })
        image_paths[image_id] = path
    if cfg.data.unlisted == "empty":
        for image_id, path in _unlisted_images(train_dir, image_ext, image_paths):
            height, width = image_size(path)
            index_rows.append({"id": image_id, "cls": None, "group": None, "n_instances": 0,
                               "height": height, "width": width})
            image_paths[image_id] = path
        index_rows.sort(key=lambda row: row["id"])
    return _TrainTable(csv_path, schema, rows, pd.DataFrame(index_rows, columns=INDEX_COLUMNS), image_paths)


def _unlisted_images(train_dir: Path, image_ext: str, listed: Mapping[str, Path]) -> list[tuple[str, Path]]:
    """``(id, path)`` of the ``*<image_ext>`` files in ``train_dir`` that no CSV row names (``data.unlisted:
    empty``), each id spelled as the CSV spells its ids: with the extension when every listed id carries it
    (Severstal's ``0002cc93b.jpg``), else without. Hidden files (atomic writes in progress) are skipped."""
    named = {path.resolve() for path in listed.values()}
    with_ext = bool(image_ext) and all(image_id.endswith(image_ext) for image_id in listed)
    return sorted((path.name if with_ext else _id_of_file(path.name, image_ext), path)
                  for path in train_dir.glob(f"*{image_ext}")
                  if path.is_file() and not path.name.startswith(".") and path.resolve() not in named)


def _row_classes(rows: pd.DataFrame, csv_path: Path, class_col: str | None, n_classes: int | None) -> list[int]:
    """The class id of every row of a multiclass CSV (0 for an empty row, which holds no pixel), each checked
    by :func:`class_id`; a CSV without its class column cannot say which class a mask is."""
    if class_col is None:
        raise DataError(f"{csv_path}: data.task multiclass needs the class column of data.schema.class_col in the "
                        f"CSV; the file has columns {', '.join(c for c in rows.columns if not c.startswith('_'))}")
    return [0 if empty else class_id(value, f"{csv_path} line {line} ({class_col})", n_classes)
            for value, line, empty in zip(rows[class_col], rows["_line"], rows["_empty"])]


def _check_one_spelling(spelled: dict[Path, tuple[str, int]], path: Path, image_id: str, line: int,
                        csv_path: Path) -> None:
    """Two ids naming one file (``X`` and ``X.png``, ``X`` and ``./X``) would become two records of the
    same image, each with part of its instances and the rest labelled background."""
    if path in spelled:
        other_id, other_line = spelled[path]
        first, second = sorted([(other_line, other_id), (line, image_id)])
        raise DataError(f"{csv_path} line {first[0]} (id {first[1]!r}) and line {second[0]} (id {second[1]!r}) "
                        f"name the same image {path}; spell each id one way")
    spelled[path] = (image_id, line)


def _check_csv_sizes(image_rows: pd.DataFrame, schema: Schema, csv_path: Path, image_id: str,
                     image_shape: tuple[int, int]) -> None:
    """Every row's height/width must equal the image's: a mismatch means the RLE would decode wrongly."""
    for line, height_text, width_text in zip(image_rows["_line"], image_rows[schema.height_col], image_rows[schema.width_col]):
        csv_shape = (_positive_int(height_text, csv_path, line, schema.height_col),
                     _positive_int(width_text, csv_path, line, schema.width_col))
        if csv_shape != image_shape:
            raise DataError(f"{csv_path} line {line} (id {image_id}): CSV size {csv_shape[0]}x{csv_shape[1]} "
                            f"(height x width) differs from the image size {image_shape[0]}x{image_shape[1]}")


def _first_value(image_rows: pd.DataFrame, column: str | None) -> str | None:
    if column is None:
        return None
    value = str(image_rows[column].iloc[0]).strip()
    return value or None


def read_index(cfg: Config) -> pd.DataFrame:
    """One row per training image (``id, cls, group, n_instances, height, width``), sorted by id.

    Validates the CSV and image sizes exactly as :func:`load_records` does but decodes no mask,
    so making folds does not load every label image.
    """
    return _read_train_table(cfg).index


def load_records(cfg: Config, *, progress: bool = True) -> list[ImageRecord]:
    """Validate train.csv and decode every image's instances, sorted by id.

    Rows with an empty RLE contribute nothing (DSB/TGS/Airbus write one empty row for an image
    without objects, SIIM one ``-1`` row). Overlapping annotations keep the first row's label; the total is printed once.
    """
    table = _read_train_table(cfg)
    schema, csv_path = table.schema, table.csv_path
    task = task_of(cfg.data.task)
    binary, multiclass = task.one_mask_per_image, task.class_per_pixel
    records: list[ImageRecord] = []
    rows_by_id = dict(tuple(table.rows.groupby(schema.id_col, sort=True)))
    no_rows = table.rows.iloc[:0]  # an image of data.unlisted: empty
    for entry in tqdm(table.index.itertuples(index=False), total=len(table.index), desc="decode masks",
                      disable=not progress):
        image_rows = rows_by_id.get(entry.id, no_rows)
        image_rows = image_rows[~image_rows["_empty"]]
        wheres = [f"{csv_path} line {line} (id {entry.id})" for line in image_rows["_line"]]
        shape = (int(entry.height), int(entry.width))
        if multiclass:
            labels, overlap = _class_map(image_rows, schema, shape, wheres, csv_path, task.classes_overlap)
        else:
            labels, overlap = rle.decode_labels(image_rows[schema.rle_col].tolist(), shape, schema.rle_order,
                                                wheres=wheres)
        if binary:
            labels = (labels > 0).astype(np.uint8)
        elif not multiclass and len(image_rows) <= np.iinfo(np.uint16).max:
            labels = labels.astype(np.uint16)
        records.append(ImageRecord(
            id=entry.id, image_path=table.image_paths[entry.id], shape=shape, cls=entry.cls, group=entry.group,
            labels=labels, n_instances=int(entry.n_instances), overlap_pixels=overlap,
        ))
    overlapping = [record.overlap_pixels for record in records if record.overlap_pixels]
    if overlapping:
        warn(f"{sum(overlapping)} pixels were claimed by more than one instance in "
              f"{len(overlapping)} images; the first row wins")
    return records


def _class_map(image_rows: pd.DataFrame, schema: Schema, shape: tuple[int, int], wheres: list[str],
               csv_path: Path, overlapping: bool) -> tuple[np.ndarray, int]:
    """The class map (uint16, :mod:`kseg.classmaps`) of one image of a multiclass or multilabel CSV: class id k
    (or its bit) where row k's mask is, and where no row covers a pixel 0 (background) or VOID (``schema.unlabelled:
    ignore``). Exclusive classes cannot share a pixel, and a class has one row per image: either would make the
    truth ambiguous, so both are errors naming the file, the line and the class id; ``overlapping`` classes
    (multilabel) may share pixels."""
    classes = image_rows["_class"].tolist()
    lines = image_rows["_line"].tolist()
    seen: dict[int, int] = {}
    for value, line in zip(classes, lines):
        if value in seen:
            raise DataError(f"{csv_path} line {line} (id {image_rows[schema.id_col].iloc[0]}): class id {value} has "
                            f"a second row in the image (first at line {seen[value]}); write one row per class")
        seen[value] = line
    fill = VOID if schema.unlabelled == "ignore" else BACKGROUND
    rles = image_rows[schema.rle_col].tolist()
    labels, overlap = classmaps.decode(rles, classes, shape, schema.rle_order, overlapping, fill=fill, wheres=wheres)
    if overlap:
        at = rle.first_overlapping_row(rles, shape, schema.rle_order)
        raise DataError(f"{wheres[at]}: the mask of class id {classes[at]} overlaps an earlier row of the image "
                        f"({overlap} pixels in two rows); data.task multiclass has exclusive classes, one per pixel "
                        f"(data.task multilabel: classes that may share pixels)")
    return labels, 0


def load_test_truth(cfg: Config) -> dict[str, np.ndarray] | None:
    """Label image of every test image ``data.test_truth`` annotates (same schema as train.csv), by id;
    ``None`` when the config has none or the file is missing (a real competition hides it).

    The demo and the benchmark sets have one: with it a run can say how each fold model and their
    ensemble do on held-out images, and the overlays can show the test errors.
    """
    path = config_module.data_path(cfg, "test_truth")
    if path is None or not path.is_file():
        return None
    truth_cfg = config_module.with_values(cfg, {"data.train_csv": str(path), "data.train_dir": cfg.data.test_dir})
    return {record.id: record.labels for record in load_records(truth_cfg, progress=False)}


def _id_of_file(file_name: str, image_ext: str) -> str:
    """The file name without ``image_ext``; with ``image_ext`` ``""`` (Airbus ids carry their extension) the whole name."""
    return file_name[: len(file_name) - len(image_ext)]


def list_test_images(cfg: Config) -> list[tuple[str, Path]]:
    """``(id, path)`` of every test image, sorted by id.

    Ids come from ``data.sample_submission`` when it is set and exists (its images must exist), else
    from every ``*<image_ext>`` file in ``data.test_dir``; hidden files (such as the temporary files of
    an atomic write in progress) are skipped.
    """
    test_dir = config_module.data_path(cfg, "test_dir")
    image_ext = cfg.data.image_ext
    sample_path = config_module.data_path(cfg, "sample_submission")
    if sample_path is not None and sample_path.is_file():
        id_col = schema_from_config(cfg).submission_cols[0]
        sample = read_submission_csv(sample_path, schema_from_config(cfg), "sample submission")
        _require_columns(sample, sample_path, [id_col])
        first_rows = sample.assign(_line=csv_lines(sample)).drop_duplicates(id_col)
        images = []
        spelled: dict[Path, tuple[str, int]] = {}
        for image_id, line in sorted(zip(first_rows[id_col], first_rows["_line"])):
            path = image_path(test_dir, image_id, image_ext, f"{sample_path} line {line}: {id_col}")
            _check_one_spelling(spelled, path, image_id, int(line), sample_path)
            if not path.is_file():
                raise DataError(f"{sample_path} line {line}: test image of id {image_id!r} not found at {path}")
            images.append((image_id, path))
        source = str(sample_path)
    else:
        if not test_dir.is_dir():
            raise DataError(f"test image folder not found: {test_dir}")
        images = sorted((_id_of_file(path.name, image_ext), path) for path in test_dir.glob(f"*{image_ext}")
                        if path.is_file() and not path.name.startswith("."))
        source = f"{test_dir}/*{image_ext}"
    if not images:
        raise DataError(f"no test images in {source}")
    return images


def records_frame(records: list[ImageRecord]) -> pd.DataFrame:
    """One row per record with the same columns as :func:`read_index`, e.g. to build folds from records."""
    return pd.DataFrame(
        [{"id": r.id, "cls": r.cls, "group": r.group, "n_instances": r.n_instances,
          "height": r.shape[0], "width": r.shape[1]} for r in records],
        columns=INDEX_COLUMNS,
    )
