"""Small synthetic competitions, so the whole pipeline runs without Kaggle data: Sartorius-format cells
(``kind="sartorius"``, the demo), Severstal-format organs as PNG (``kind="multiclass"``) or as CT DICOM slices
(``kind="dicom"``).

It imitates what makes the real data hard rather than looking pretty: three imbalanced cell types with
different object size and shape, images grouped by well (``sample_id``), dense touching and partly
overlapping cells (so train.csv has real annotation overlaps), textured interiors, uneven illumination
and noise. Cells are brighter than the background with a dark rim, so a small U-Net trained for a few
CPU epochs can separate them and reach a meaningful score.

The multiclass set imitates the organ competitions (chest X-ray, abdominal CT): five exclusive classes in a body
section, from a liver in every image to a small lesion inside it in a third of them, so class imbalance, position
and shape matter; brightness ranges overlap, so no threshold separates the classes. Its ``train.csv`` is
``ImageId,ClassId,EncodedPixels`` (column-major, one row per class an image shows, ids with the ``.png``).
The DICOM kind writes the same sections as CT slices in Hounsfield units (signed 16-bit, RescaleIntercept -1024,
a soft-tissue WindowCenter/WindowWidth of 40/400, air outside the body), ids with the ``.dcm``.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from kseg import rle
from kseg.errors import DataError
from kseg.files import atomic_path, is_temporary, write_json

__all__ = ["make_demo_data", "CELL_TYPES", "TRAIN_COLUMNS", "ORGANS", "KINDS"]

KINDS = ("sartorius", "multiclass", "dicom")
# The soft-tissue window the organ brightnesses are defined in: brightness b is -160 + 400 b HU.
_CT_WINDOW = (40.0, 400.0)
_AIR_HU = -1000.0
_CT_NOISE_HU = 12.0

TRAIN_COLUMNS = ["id", "annotation", "width", "height", "cell_type", "plate_time", "sample_date",
                 "sample_id", "elapsed_timedelta"]

# Object counts are given for the real 520x704 frame and scaled with the image area.
_REFERENCE_AREA = 520 * 704
_MIN_OBJECT_PIXELS = 15
# Share of cells placed next to an earlier cell rather than anywhere.
_COLONY_FRACTION = 0.6
# The list of files a demo generation wrote, so a rerun knows which files it may replace.
MANIFEST = ".kseg-demo.json"


@dataclass(frozen=True)
class CellType:
    """How one synthetic cell type looks: share of images, objects per image, size, shape, brightness."""

    name: str
    share: float
    sample_prefix: str
    objects: tuple[int, int]
    semi_major: tuple[float, float]
    aspect: tuple[float, float]  # minor / major semi-axis
    wobble: float  # amplitude of the low-frequency outline perturbation (0 = perfect ellipse)
    brightness: tuple[float, float]


CELL_TYPES = (
    CellType("shsy5y", 0.60, "shsy5y[diff]", (60, 120), (12.0, 26.0), (0.25, 0.45), 0.06, (0.62, 0.78)),
    CellType("astro", 0.25, "astros[hippo]", (20, 40), (24.0, 42.0), (0.60, 0.90), 0.22, (0.58, 0.70)),
    CellType("cort", 0.15, "cort[pre-treat]", (40, 80), (7.0, 11.0), (0.80, 1.00), 0.05, (0.70, 0.85)),
)


@dataclass(frozen=True)
class Organ:
    """One class of the multiclass demo: how often an image shows it, where, how large, how bright."""

    name: str
    presence: float  # share of images that show it
    center: tuple[float, float]  # mean (row, column) as fractions of the image
    semi_major: tuple[float, float]  # as fractions of the image's shorter side
    aspect: tuple[float, float]
    brightness: tuple[float, float]


# Class id k = ORGANS[k - 1]; painted in this order, so a later organ covers an earlier one (the lesion lies in
# the liver). Image left is the body's right, as radiology shows it: the set is not mirror-symmetric.
ORGANS = (
    Organ("liver", 1.00, (0.48, 0.33), (0.20, 0.26), (0.55, 0.75), (0.58, 0.66)),
    Organ("spleen", 0.80, (0.42, 0.72), (0.08, 0.12), (0.50, 0.70), (0.62, 0.72)),
    Organ("kidney_right", 0.90, (0.66, 0.37), (0.06, 0.08), (0.45, 0.60), (0.70, 0.80)),
    Organ("kidney_left", 0.90, (0.66, 0.65), (0.06, 0.08), (0.45, 0.60), (0.70, 0.80)),
    Organ("lesion", 0.35, (0.48, 0.33), (0.025, 0.045), (0.70, 1.00), (0.40, 0.48)),
)
_LESION = len(ORGANS)
_ORGAN_COLUMNS = ["ImageId", "ClassId", "EncodedPixels"]


@dataclass(frozen=True)
class _Cell:
    top: int
    left: int
    mask: np.ndarray  # bool, the cell's bounding box
    brightness: float


@dataclass(frozen=True)
class _Sample:
    sample_id: str
    plate_time: str
    sample_date: str
    elapsed_timedelta: str


def _class_counts(n_images: int) -> list[int]:
    """Images per cell type by largest remainder of the shares, at least one each when possible."""
    shares = np.array([cell_type.share for cell_type in CELL_TYPES])
    counts = np.floor(shares * n_images).astype(int)
    if n_images >= len(CELL_TYPES):
        counts = np.maximum(counts, 1)
    while counts.sum() < n_images:
        counts[np.argmax(shares * n_images - counts)] += 1
    while counts.sum() > n_images:
        counts[np.argmax(counts)] -= 1
    return counts.tolist()


def _well_sizes(rng: np.random.Generator, n_images: int) -> list[int]:
    """Images per well: 2-4, but at least two wells once a cell type has two images, so folds can stratify."""
    largest = min(4, max(1, n_images // 2))
    sizes: list[int] = []
    while sum(sizes) < n_images:
        sizes.append(min(n_images - sum(sizes), int(rng.integers(min(2, largest), largest, endpoint=True))))
    return sizes


def _new_sample(rng: np.random.Generator, cell_type: CellType) -> _Sample:
    well = f"{'ABCDEFGH'[rng.integers(8)]}{rng.integers(1, 13)}-{rng.integers(1, 5)}"
    hours = int(rng.integers(8, 96))
    minutes = int(rng.choice([0, 30]))
    day = int(rng.integers(1, 29))
    return _Sample(
        sample_id=f"{cell_type.sample_prefix}_{well}_Vessel-{rng.integers(300, 800)}_Ph_{rng.integers(1, 5)}",
        plate_time=f"{hours}h{minutes:02d}m00s",
        sample_date=f"2019-{int(rng.integers(6, 10)):02d}-{day:02d}",
        elapsed_timedelta=f"{hours // 24} days {hours % 24:02d}:{minutes:02d}:00",
    )


def _blob_mask(rng: np.random.Generator, semi_major_range: tuple[float, float], aspect: tuple[float, float],
               wobble: float) -> np.ndarray:
    """Bool mask of one blob in its own box: a rotated ellipse whose outline wobbles with harmonics 2-4."""
    semi_major = rng.uniform(*semi_major_range)
    semi_minor = semi_major * rng.uniform(*aspect)
    angle = rng.uniform(0, np.pi)
    amplitudes = wobble * rng.uniform(0.3, 1.0, size=3) / np.arange(1, 4)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    half = int(np.ceil(semi_major * (1 + amplitudes.sum()))) + 1
    y, x = np.mgrid[-half:half + 1, -half:half + 1].astype(np.float64)
    u = (x * np.cos(angle) + y * np.sin(angle)) / semi_major
    v = (-x * np.sin(angle) + y * np.cos(angle)) / semi_minor
    theta = np.arctan2(v, u)
    outline = 1 + sum(a * np.cos(k * theta + p) for k, a, p in zip((2, 3, 4), amplitudes, phases))
    return np.hypot(u, v) <= outline


def _place_cells(rng: np.random.Generator, cell_type: CellType, height: int, width: int) -> list[_Cell]:
    """Cells in loose colonies: most grow next to an earlier cell, so many touch and some overlap a little."""
    target = max(3, round(int(rng.integers(*cell_type.objects, endpoint=True)) * height * width / _REFERENCE_AREA))
    cells: list[_Cell] = []
    centers = np.empty((0, 2))
    radii = np.empty(0)
    for _ in range(target * 20):
        if len(cells) == target:
            break
        mask = _blob_mask(rng, cell_type.semi_major, cell_type.aspect, cell_type.wobble)
        radius = np.sqrt(mask.sum() / np.pi)
        if len(cells) and rng.random() < _COLONY_FRACTION:
            neighbour = int(rng.integers(len(cells)))
            direction = rng.uniform(0, 2 * np.pi)
            distance = rng.uniform(0.75, 1.05) * (radii[neighbour] + radius)
            center = centers[neighbour] + distance * np.array([np.sin(direction), np.cos(direction)])
            if not (0 <= center[0] < height and 0 <= center[1] < width):
                continue
        else:
            center = rng.uniform((0, 0), (height, width))
        if len(centers) and np.any(np.hypot(*(centers - center).T) < 0.7 * (radii + radius)):
            continue
        half = mask.shape[0] // 2
        top, left = int(center[0]) - half, int(center[1]) - half
        clipped = mask[max(0, -top):height - top, max(0, -left):width - left]
        if clipped.sum() < _MIN_OBJECT_PIXELS:
            continue
        cells.append(_Cell(max(0, top), max(0, left), clipped, rng.uniform(*cell_type.brightness)))
        centers = np.vstack([centers, center])
        radii = np.append(radii, radius)
    return cells


def _render(rng: np.random.Generator, cells: list[_Cell], height: int, width: int) -> np.ndarray:
    """8-bit grayscale image: textured bright cells with dark rims on a textured, unevenly lit background."""
    texture = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 1.5)
    texture /= texture.std() + 1e-6
    canvas = 0.35 + 0.03 * texture
    kernel = np.ones((3, 3), np.uint8)
    # Painted last to first so the first annotation is on top, as the first-row-wins labels assume.
    for cell in reversed(cells):
        rows = slice(cell.top, cell.top + cell.mask.shape[0])
        cols = slice(cell.left, cell.left + cell.mask.shape[1])
        rim = cell.mask & ~cv2.erode(cell.mask.astype(np.uint8), kernel).astype(bool)
        region = canvas[rows, cols]
        region[cell.mask] = cell.brightness + 0.08 * texture[rows, cols][cell.mask]
        region[rim] = 0.15
    return _lit_and_noisy(rng, canvas)


def _lit_and_noisy(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """8-bit image of a [0, 1] canvas as a microscope or scanner records it: slightly blurred, lit unevenly
    along a random direction, with sensor noise."""
    height, width = canvas.shape
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.8)
    direction = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    ramp = (np.cos(direction) * (x / width - 0.5) + np.sin(direction) * (y / height - 0.5))
    canvas *= 1 + rng.uniform(0.3, 0.6) * ramp
    canvas += rng.normal(0, 0.035, size=canvas.shape).astype(np.float32)
    return np.round(np.clip(canvas, 0, 1) * 255).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise DataError(f"could not write image {path}")


def _write_csv(path: Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _make_split(rng: np.random.Generator, folder: Path, n_images: int, height: int, width: int,
                used_ids: set[str]) -> tuple[list[str], pd.DataFrame]:
    """Render ``n_images`` images into ``folder``; return their ids and annotation rows (train.csv format).

    Images of a cell type come in wells (``sample_id``) of 2-4 images, as in the real data.
    """
    folder.mkdir(parents=True, exist_ok=True)
    image_ids: list[str] = []
    rows: list[dict[str, object]] = []
    for cell_type, count in zip(CELL_TYPES, _class_counts(n_images)):
        wells = [(_new_sample(rng, cell_type), size) for size in _well_sizes(rng, count)]
        for sample in [sample for sample, size in wells for _ in range(size)]:
            image_id = f"{int(rng.integers(0, 2**48)):012x}"
            while image_id in used_ids:
                image_id = f"{int(rng.integers(0, 2**48)):012x}"
            used_ids.add(image_id)
            image_ids.append(image_id)
            cells = _place_cells(rng, cell_type, height, width)
            _write_png(folder / f"{image_id}.png", _render(rng, cells, height, width))
            for cell in cells:
                full = np.zeros((height, width), dtype=bool)
                full[cell.top:cell.top + cell.mask.shape[0], cell.left:cell.left + cell.mask.shape[1]] = cell.mask
                rows.append({
                    "id": image_id, "annotation": rle.encode(full, "C"), "width": width, "height": height,
                    "cell_type": cell_type.name, "plate_time": sample.plate_time, "sample_date": sample.sample_date,
                    "sample_id": sample.sample_id, "elapsed_timedelta": sample.elapsed_timedelta,
                })
    frame = pd.DataFrame(rows, columns=TRAIN_COLUMNS).sort_values("id", kind="stable").reset_index(drop=True)
    return sorted(image_ids), frame


def _paste(canvas: np.ndarray, mask: np.ndarray, center: tuple[float, float]) -> np.ndarray:
    """A full-size bool mask with the box ``mask`` centred at ``center`` (clipped at the borders)."""
    height, width = canvas.shape
    half_rows, half_cols = mask.shape[0] // 2, mask.shape[1] // 2
    top, left = int(center[0]) - half_rows, int(center[1]) - half_cols
    full = np.zeros((height, width), bool)
    rows = slice(max(0, top), min(height, top + mask.shape[0]))
    cols = slice(max(0, left), min(width, left + mask.shape[1]))
    full[rows, cols] = mask[rows.start - top:rows.stop - top, cols.start - left:cols.stop - left]
    return full


def _organ_section(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One body section: the class map (uint8, class id k = ``ORGANS[k - 1]``, 0 = background), its tissue
    brightness in [0, 1] before any recording, and the body's mask."""
    side = min(height, width)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    body = ((y / height - 0.5) / 0.46) ** 2 + ((x / width - 0.5) / 0.47) ** 2 <= 1
    texture = cv2.GaussianBlur(rng.standard_normal((height, width)).astype(np.float32), (0, 0), 1.5)
    texture /= texture.std() + 1e-6
    canvas = np.where(body, 0.33 + 0.03 * texture, 0.04).astype(np.float32)
    classes = np.zeros((height, width), np.uint8)
    for class_id, organ in enumerate(ORGANS, start=1):
        if rng.random() >= organ.presence:
            continue
        mask = _blob_mask(rng, (organ.semi_major[0] * side, organ.semi_major[1] * side), organ.aspect, 0.12)
        if class_id == _LESION:  # somewhere inside the liver, if this image has room for it
            inside = cv2.erode((classes == 1).astype(np.uint8), np.ones((mask.shape[0],) * 2, np.uint8)) > 0
            if not inside.any():
                continue
            candidates = np.argwhere(inside)
            center = tuple(candidates[int(rng.integers(len(candidates)))].astype(float))
        else:
            center = (organ.center[0] * height + rng.normal(0, 0.03 * side),
                      organ.center[1] * width + rng.normal(0, 0.03 * side))
        region = _paste(classes, mask, center) & body
        classes[region] = class_id
        canvas[region] = rng.uniform(*organ.brightness) + 0.06 * texture[region]
    return classes, canvas, body


def _write_ct_slice(path: Path, rng: np.random.Generator, canvas: np.ndarray, body: np.ndarray) -> None:
    """The section as a CT slice: brightness b is -160 + 400 b HU inside the body (b = 0..1 spans the soft-tissue
    window), air outside, scanner noise; stored as signed 16-bit with RescaleIntercept -1024, written atomically."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    center, width = _CT_WINDOW
    hu = np.where(body, center - width / 2 + width * canvas, _AIR_HU)
    hu = hu + rng.normal(0, _CT_NOISE_HU, size=hu.shape)
    stored = np.clip(np.round(hu + 1024), -32768, 32767).astype(np.int16)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name])  # same name, same bytes
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyDate = "CT", path.stem, "20260101"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
    ds.WindowCenter, ds.WindowWidth = center, width
    ds.PixelData = stored.tobytes()
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)


def _make_organ_split(rng: np.random.Generator, folder: Path, n_images: int, height: int, width: int,
                      used_ids: set[str], dicom: bool = False) -> tuple[list[str], pd.DataFrame]:
    """Render ``n_images`` body sections into ``folder`` (PNG images, or CT slices with ``dicom``); return their file
    names (the ids) and the rows of the classes each shows (Severstal's train.csv format)."""
    folder.mkdir(parents=True, exist_ok=True)
    suffix = ".dcm" if dicom else ".png"
    names: list[str] = []
    rows: list[list[object]] = []
    for _ in range(n_images):
        name = f"{int(rng.integers(0, 2**48)):012x}{suffix}"
        while name in used_ids:
            name = f"{int(rng.integers(0, 2**48)):012x}{suffix}"
        used_ids.add(name)
        names.append(name)
        classes, canvas, body = _organ_section(rng, height, width)
        if dicom:
            _write_ct_slice(folder / name, rng, canvas, body)
        else:
            _write_png(folder / name, _lit_and_noisy(rng, canvas))
        rows += [[name, class_id, rle.encode(classes == class_id, "F")]
                 for class_id in range(1, len(ORGANS) + 1) if (classes == class_id).any()]
    frame = pd.DataFrame(rows, columns=_ORGAN_COLUMNS).sort_values(["ImageId", "ClassId"]).reset_index(drop=True)
    return sorted(names), frame


def _demo_files(root: Path) -> set[str]:
    """Files (relative to ``root``) that earlier demo generations wrote, per the manifest."""
    manifest = root / MANIFEST
    if not manifest.is_file():
        return set()
    try:
        files = json.loads(manifest.read_text()).get("files", [])
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return set()
    return {str(name) for name in files} if isinstance(files, list) else set()


def _foreign_files(root: Path) -> list[str]:
    """Files under ``root`` that no earlier demo generation wrote, relative to root."""
    ours = _demo_files(root)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if not p.is_dir() and p.name != MANIFEST and not is_temporary(p.name)
                  and str(p.relative_to(root)) not in ours)


def make_demo_data(root: str | Path, seed: int = 0, n_train: int = 24, n_test: int = 6, height: int = 520,
                   width: int = 704, kind: str = "sartorius", *, force: bool = False) -> Path:
    """Write a synthetic competition of ``kind`` (:data:`KINDS`) into ``root`` and return ``root``; same seed,
    same bytes.

    Layout: ``train.csv``, ``train/*.png``, ``test/*.png``, ``sample_submission.csv`` (empty predictions) and
    ``test_truth.csv`` (the test annotations in train.csv format, to score demo submissions). ``sartorius``: the
    nine Sartorius columns, row-major RLE, ``id,predicted``; ``multiclass`` and ``dicom`` (``.dcm`` CT slices):
    ``ImageId,ClassId,EncodedPixels``, column-major, ``ImageId,EncodedPixels,ClassId``
    (``configs/demo_multiclass.yaml``, ``configs/demo_dicom.yaml``). Every file is written
    atomically and listed in ``.kseg-demo.json``: a later generation replaces those, but refuses (DataError) a
    folder holding any other file, such as a real competition's train.csv, unless ``force``.
    """
    if kind not in KINDS:
        raise DataError(f"demo data kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if n_train < 1 or n_test < 1 or height < 16 or width < 16:
        raise DataError(f"demo data needs n_train, n_test >= 1 and images of at least 16x16 pixels; got "
                        f"n_train={n_train}, n_test={n_test}, height={height}, width={width}")
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"demo data folder {root} is an existing file, not a folder")
    if root.is_dir() and not force:
        foreign = _foreign_files(root)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise DataError(f"{root} holds files kseg did not write ({shown}); choose an empty folder, or pass "
                            f"--force to overwrite files of the demo's names")
    rng = np.random.default_rng(seed)
    used_ids: set[str] = set()
    earlier = _demo_files(root) if root.is_dir() else set()
    def make_split(folder: Path, n_images: int) -> tuple[list[str], pd.DataFrame]:
        if kind == "sartorius":
            return _make_split(rng, folder, n_images, height, width, used_ids)
        return _make_organ_split(rng, folder, n_images, height, width, used_ids, dicom=kind == "dicom")

    train_ids, train = make_split(root / "train", n_train)
    test_ids, test = make_split(root / "test", n_test)
    if kind == "sartorius":
        files = [f"{image_id}.png" for image_id in (*train_ids, *test_ids)]
        sample = pd.DataFrame({"id": test_ids, "predicted": [""] * len(test_ids)})
    else:
        files = [*train_ids, *test_ids]
        sample = pd.DataFrame({"ImageId": test_ids, "EncodedPixels": "", "ClassId": ""})
    _write_csv(root / "train.csv", train)
    _write_csv(root / "test_truth.csv", test)
    _write_csv(root / "sample_submission.csv", sample)
    written = {"train.csv", "test_truth.csv", "sample_submission.csv",
               *(f"{'train' if k < len(train_ids) else 'test'}/{name}" for k, name in enumerate(files))}
    # Images of an earlier seed stay kseg's: a later generation may still replace them.
    kept = {name for name in earlier if (root / name).is_file()}
    write_json(root / MANIFEST, {"files": sorted(written | kept)})
    return root
