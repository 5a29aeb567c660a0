"""The real sets of ``../shared/data`` as kseg competition folders with a fixed, group-wise held-out part.

``python -m benchmarks.real_sets --prepare fluo_nuclei_sbsst265 [--root data/real/fluo_nuclei_sbsst265]``
writes what a Kaggle download would hold, so ``kseg run --config configs/real/<set>.yaml`` trains on it as
a user would:

- ``train/`` and ``train.csv``: only the training images, one RLE row per instance, plus a ``group``
  column that kseg's group folds use (images of one slide / field of view / block of EM slices never
  land in two folds, or in train and test);
- ``test/`` and ``test_truth.csv``: the held-out images and their truth in the same schema, never trained
  on and never seen by the post-processing search.

The held-out part is fixed per set (the set's own split column where it has one) and written down in
each builder's docstring. Images are byte copies of the source files (16-bit PNGs stay 16-bit), and the
RLE rows are the source rows unchanged, so the prepared set is the real data, not a re-encoding of it.
``quick=True`` writes the same split with every image centre-cropped to 128 px (labels re-encoded), for
smoke runs of the benchmark on a CPU.

Preparing is deterministic and idempotent: a folder whose ``PREPARED.json`` names the same set, mode,
builder version and source ``MANIFEST.sha256`` digest is left alone; otherwise it is rebuilt next to the
target and swapped in, so an interrupted run never leaves a half-written set behind.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import pandas as pd

from kseg import rle
from kseg.data import image_path, read_csv
from kseg.files import atomic_path, write_json

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
QUICK_SIZE = 128
# Bump when a builder's output changes, so prepared folders are rebuilt.
BUILDER_VERSION = 1
MARKER = "PREPARED.json"
GROUP_COL = "group"
# The schema of the folders written from label images (ISBI, Sartorius tiles): Sartorius-like, row-major.
TILE_COLUMNS = ["id", "annotation", "height", "width", GROUP_COL]
TILE_SCHEMA = {"id_col": "id", "rle_col": "annotation", "height_col": "height", "width_col": "width",
               "rle_order": "C", "group_col": GROUP_COL, "submission_cols": ["id", "predicted"]}


@dataclass(frozen=True)
class Split:
    """Which source images go where: ``train`` and ``test`` ids (disjoint) and each image's group."""

    train: list[str]
    test: list[str]
    group: dict[str, str]


@dataclass(frozen=True)
class RealSet:
    """One real set: how to prepare it and what the benchmark needs to know about it.

    ``schema`` is the ``data.schema`` of its config. ``report_col`` is a column of ``test_truth.csv`` the
    benchmark reports scores per value of (magnification, source) without making it a kseg class.
    ``stain`` picks the classical baseline's input channel (``hed``: haematoxylin for H&E).
    ``split_col`` names the set's own split column when the held-out part is the authors' split; groups
    may then occur on both sides (the authors chose so), the images never do. ``needs`` marks a set that is
    prepared but not on the scoreboard yet.
    """

    name: str
    task: str
    schema: Mapping[str, object]
    build: Callable[[Path, Path, bool], Split]
    report_col: str | None = None
    stain: str = "gray"
    split_col: str | None = None
    # What kseg (or the scoreboard) still lacks to train and score this set; None when it runs today.
    needs: str | None = None
    # A set assembled from other folders of ../shared/data: ``build`` then gets the shared folder itself.
    sources: tuple[str, ...] = ()


# ------------------------------------------------------------------------------------------ writing

def _center_crop(array: np.ndarray, size: int) -> np.ndarray:
    h, w = array.shape[:2]
    top, left = max(0, (h - size) // 2), max(0, (w - size) // 2)
    return array[top:top + size, left:left + size]


def instance_rows(labels: np.ndarray, order: str) -> list[dict[str, str]]:
    """One RLE row per instance id (DSB / Sartorius); an empty crop gets one empty row (DSB convention)."""
    return [{"rle": s} for s in rle.encode_labels(labels, order).values()] or [{"rle": ""}]


def binary_rows(labels: np.ndarray, order: str) -> list[dict[str, str]]:
    """One row per image holding its foreground (TGS)."""
    return [{"rle": rle.encode(labels > 0, order)}]


def _write_from_csv(source: Path, root: Path, frame: pd.DataFrame, schema: Mapping[str, object], split: Split,
                    quick: bool, ext: str = ".png", mask_dir: str = "masks",
                    encode: Callable[[np.ndarray, str], list[dict[str, str]]] = instance_rows) -> None:
    """Copy the images and the source RLE rows of each side; add the group column.

    Quick mode decodes the source label PNG (``<mask_dir>/<id>.png``), crops it and the image to the centre
    ``QUICK_SIZE`` square and re-encodes the rows with ``encode`` (label crop, order → rows with ``rle``
    and any other column to set, e.g. a class id); the other columns come from the image's first row.
    """
    import cv2

    id_col, rle_col, order = str(schema["id_col"]), str(schema["rle_col"]), str(schema["rle_order"])
    size_cols = [schema.get("height_col"), schema.get("width_col")]
    frame = frame.assign(**{GROUP_COL: frame[id_col].map(split.group)})
    for side, ids, csv_name in (("train", split.train, "train.csv"), ("test", split.test, "test_truth.csv")):
        (root / side).mkdir(parents=True, exist_ok=True)
        parts = []
        for image_id in ids:
            rows = frame[frame[id_col] == image_id]
            src, dst = image_path(source / "train", image_id, ext), image_path(root / side, image_id, ext)
            if not quick:
                shutil.copyfile(src, dst)
                parts.append(rows)
                continue
            mask = image_path(source / mask_dir, image_id.removesuffix(ext), ".png")
            labels = _center_crop(cv2.imread(str(mask), cv2.IMREAD_UNCHANGED), QUICK_SIZE)
            cv2.imwrite(str(dst), _center_crop(cv2.imread(str(src), cv2.IMREAD_UNCHANGED), QUICK_SIZE))
            encoded = encode(labels, order)
            meta = rows.iloc[[0] * len(encoded)].reset_index(drop=True)
            for column, values in pd.DataFrame(encoded).rename(columns={"rle": rle_col}).items():
                meta[column] = values.to_numpy()
            for column, value in zip(size_cols, labels.shape):
                if column:
                    meta[column] = str(value)
            parts.append(meta)
        with atomic_path(root / csv_name) as tmp:
            pd.concat(parts, ignore_index=True).to_csv(tmp, index=False)


def _write_from_labels(root: Path, train: dict[str, tuple[np.ndarray, np.ndarray, str]],
                       test: dict[str, tuple[np.ndarray, np.ndarray, str]]) -> Split:
    """A competition folder from (image, label image, group) items: PNGs and row-major RLE CSVs."""
    import cv2

    for side, items, csv_name in (("train", train, "train.csv"), ("test", test, "test_truth.csv")):
        (root / side).mkdir(parents=True, exist_ok=True)
        rows = []
        for image_id, (image, labels, group) in items.items():
            cv2.imwrite(str(root / side / f"{image_id}.png"), image)
            h, w = labels.shape
            rows += [(image_id, s, h, w, group) for s in rle.encode_labels(labels, "C").values()] or [(image_id, "", h, w, group)]
        with atomic_path(root / csv_name) as tmp:
            pd.DataFrame(rows, columns=TILE_COLUMNS).to_csv(tmp, index=False)
    group = {k: v[2] for k, v in {**train, **test}.items()}
    return Split(sorted(train), sorted(test), group)


def _image_ids(frame: pd.DataFrame, id_col: str) -> list[str]:
    return sorted(frame[id_col].unique())


# ------------------------------------------------------------------------------------------ builders

DSB_SCHEMA = {"preset": "dsb2018", "group_col": GROUP_COL}
SARTORIUS_SCHEMA = {"preset": "sartorius", "group_col": GROUP_COL}
_DSB_COLUMNS = {"id_col": "ImageId", "rle_col": "EncodedPixels", "height_col": "Height", "width_col": "Width",
                "rle_order": "F"}
_TGS_COLUMNS = {"id_col": "id", "rle_col": "rle_mask", "rle_order": "F"}
TGS_SCHEMA = {**_TGS_COLUMNS, "group_col": GROUP_COL, "submission_cols": ["id", "rle_mask"]}
_SEVERSTAL_COLUMNS = {"id_col": "ImageId", "rle_col": "EncodedPixels", "rle_order": "F"}
# CamVid's void label is in no row: ignored by kseg's loss and metric (data.schema.unlabelled: ignore).
SEVERSTAL_SCHEMA = {"preset": "severstal", "unlabelled": "ignore", "group_col": GROUP_COL}
_SARTORIUS_COLUMNS = {"id_col": "id", "rle_col": "annotation", "height_col": "height", "width_col": "width",
                      "rle_order": "C"}


FLUO_TEST_EVERY = 3


def fluo_split(frame: pd.DataFrame) -> Split:
    """S-BSST265's held-out part: every third of the authors' ``train_testset_split == test`` (37 images, which
    include the 10x and 40x magnifications that training lacks: that is their test design). Group =
    ``diagnosis|preparation`` (SOURCE.md: images of one preparation probably share slides); it drives kseg's
    folds inside the 42 training images (5 groups). The authors' split puts some groups on both sides; it is
    kept because it is the set's official holdout."""
    first = frame.drop_duplicates("ImageId").set_index("ImageId")
    group = (first["diagnosis"] + "|" + first["preparation"]).to_dict()
    # Every third of the authors' 37 test images (1024x1280 each: five fold models x 4 TTA views on all of them
    # would take most of the scoreboard's CPU time); sorted ids, so every diagnosis stays represented.
    test = sorted(first.index[first["train_testset_split"] == "test"])[::FLUO_TEST_EVERY]
    train = sorted(first.index[first["train_testset_split"] == "train"])
    return Split(train, test, group)


def build_fluo(source: Path, root: Path, quick: bool) -> Split:
    """S-BSST265 fluorescence nuclei, split by :func:`fluo_split`."""
    frame = read_csv(source / "train.csv")
    split = fluo_split(frame)
    _write_from_csv(source, root, frame, _DSB_COLUMNS, split, quick)
    return split


HE_TEST_CPM = ("cpm15_image05", "cpm15_image06", "cpm15_image07",  # 20x
               "cpm15_image13", "cpm15_image14", "cpm15_image15")  # 40x
HE_GBM_BLOCK = 8


def he_split(frame: pd.DataFrame) -> Split:
    """H&E's held-out part, both sources in train and test. Groups: each CPM-15 tile is its own group
    (SOURCE.md: no slide ids); GBM40 has no slide ids either, so its 40 patches are cut into blocks of 8
    consecutive numbers (``gbm40_b0`` … ``gbm40_b4``), on the guess that neighbouring numbers are the
    likeliest to share a slide. Held out: CPM-15 images 05–07 (20x) and 13–15 (40x), and GBM40 block 4
    (patches 33–40): 14 test images, 41 training images in 13 groups."""
    ids = _image_ids(frame, "ImageId")
    group = {i: i if i.startswith("cpm15") else f"gbm40_b{(int(i.split('_')[1]) - 1) // HE_GBM_BLOCK}" for i in ids}
    test_groups = set(HE_TEST_CPM) | {"gbm40_b4"}
    return Split([i for i in ids if group[i] not in test_groups], [i for i in ids if group[i] in test_groups], group)


def build_he(source: Path, root: Path, quick: bool) -> Split:
    """H&E nuclei, CPM-15 + GBM40, split by :func:`he_split`."""
    frame = read_csv(source / "train.csv")
    split = he_split(frame)
    _write_from_csv(source, root, frame, _DSB_COLUMNS, split, quick)
    return split


def phase_split(frame: pd.DataFrame) -> Split:
    """Usiigaci's held-out part: the repo's ``split == val`` (set46–50); group = ``sample_id`` (one field of
    view per set): 10 training, 5 test images."""
    first = frame.drop_duplicates("id").set_index("id")
    return Split(sorted(first.index[first["split"] == "train"]), sorted(first.index[first["split"] == "val"]),
                 first["sample_id"].to_dict())


def build_phase(source: Path, root: Path, quick: bool) -> Split:
    """Usiigaci phase contrast, uint16 frames copied as they are, split by :func:`phase_split`."""
    frame = read_csv(source / "train.csv")
    split = phase_split(frame)
    _write_from_csv(source, root, frame, _SARTORIUS_COLUMNS, split, quick)
    return split


@dataclass(frozen=True)
class MixedPart:
    """One modality of the mixed set: the source folder, its split, which of its training and held-out
    images are taken (every ``train_every``-th / ``test_every``-th in sorted order) and the centre crop."""

    modality: str
    folder: str
    split: Callable[[pd.DataFrame], Split]
    train_every: int
    test_every: int
    crop: int


# The DSB 2018 stage-1 situation the issue-8 report describes: fluorescence dominates the training images,
# histology and phase contrast are rare, sizes and bit depths differ, and one modality (H&E) is dark on bright.
MIXED_PARTS = (
    MixedPart("fluorescence", "fluo_nuclei_sbsst265", fluo_split, 2, 2, 512),
    MixedPart("histology", "he_nuclei", he_split, 4, 2, 448),
    MixedPart("phase", "phase_cells_usiigaci", phase_split, 3, 2, 384),
)
MIXED_COLUMNS = ["ImageId", "EncodedPixels", "Height", "Width", "modality", GROUP_COL]


def build_mixed(shared: Path, root: Path, quick: bool) -> Split:
    """Mixed-modality nuclei (DSB 2018 schema, ``modality`` as the class): centre crops of fluorescence
    (S-BSST265, 512 px), H&E (448 px) and 16-bit phase contrast (Usiigaci, 384 px, kept 16-bit), labels
    cropped from each set's label PNGs and re-encoded column-major. Training images come only from each
    source's training side and held-out images only from its held-out side (:data:`MIXED_PARTS` says which),
    so nothing held out in a source set is trained on here; groups are the sources' groups, prefixed by the
    modality. 35 training images (21 / 10 / 4), 17 held out (7 / 7 / 3)."""
    import cv2

    size = QUICK_SIZE if quick else None
    split_train, split_test, groups = [], [], {}
    for side, csv_name in (("train", "train.csv"), ("test", "test_truth.csv")):
        (root / side).mkdir(parents=True, exist_ok=True)
        rows = []
        for part in MIXED_PARTS:
            source = shared / part.folder
            frame = read_csv(source / "train.csv")
            split = part.split(frame)
            ids = split.train[::part.train_every] if side == "train" else split.test[::part.test_every]
            for source_id in ids:
                image_id = f"{part.modality}_{source_id}"
                crop = size or part.crop
                image = _center_crop(cv2.imread(str(image_path(source / "train", source_id, ".png")), cv2.IMREAD_UNCHANGED), crop)
                labels = _center_crop(cv2.imread(str(image_path(source / "masks", source_id, ".png")), cv2.IMREAD_UNCHANGED), crop)
                cv2.imwrite(str(root / side / f"{image_id}.png"), image)
                group = f"{part.modality}|{split.group[source_id]}"
                groups[image_id] = group
                (split_train if side == "train" else split_test).append(image_id)
                h, w = labels.shape[:2]
                encoded = [r["rle"] for r in instance_rows(labels, "F")]
                rows += [(image_id, e, h, w, part.modality, group) for e in encoded]
        with atomic_path(root / csv_name) as tmp:
            pd.DataFrame(rows, columns=MIXED_COLUMNS).to_csv(tmp, index=False)
    return Split(sorted(split_train), sorted(split_test), groups)


ISBI_BLOCK = 5


def build_isbi(source: Path, root: Path, quick: bool) -> Split:
    """30 consecutive EM slices in 6 blocks of 5 (a block is a group: neighbours are near-duplicates).
    Instances are the cells: 4-connected components of the interior label. The last block (slices 25–29)
    is the test set; 25 training slices in 5 groups, so kseg's default 5 group folds exist."""
    import cv2
    from skimage.measure import label

    items = {}
    for i in range(30):
        image = cv2.imread(str(source / "train" / "image" / f"{i}.png"), cv2.IMREAD_GRAYSCALE)
        interior = cv2.imread(str(source / "train" / "label" / f"{i}.png"), cv2.IMREAD_GRAYSCALE) > 127
        if quick:
            image, interior = _center_crop(image, QUICK_SIZE), _center_crop(interior, QUICK_SIZE)
        items[f"slice{i:02d}"] = (image, label(interior, connectivity=1), f"block{i // ISBI_BLOCK}")
    test_group = f"block{29 // ISBI_BLOCK}"
    return _write_from_labels(root, {k: v for k, v in items.items() if v[2] != test_group},
                              {k: v for k, v in items.items() if v[2] == test_group})


def build_isbi_binary(shared: Path, root: Path, quick: bool) -> Split:
    """The same slices, blocks and held-out block as :func:`build_isbi`, for the binary task: its config unions
    each slice's cell rows into the cell-interior mask (the complement of the challenge's membrane map)."""
    return build_isbi(shared / "isbi2012_membrane", root, quick)


def build_sartorius(source: Path, root: Path, quick: bool) -> Split:
    """The two fully annotated real images, each cut into 2x3 tiles of 260x234 (a tile is a group, so
    kseg's default 5 folds exist): 0030fd0e6378 (395 cells) is the training set, 0f08d640930b (105 cells)
    the test set."""
    import cv2

    sources = {"0030fd0e6378": "train.csv", "0f08d640930b": "train_0f08d640930b_DERIVED.csv"}
    cols = np.linspace(0, 704, 4).astype(int)
    tiles: dict[str, dict] = {image_id: {} for image_id in sources}
    for image_id, csv_name in sources.items():
        labels, _ = rle.decode_labels(read_csv(source / csv_name)["annotation"].tolist(), (520, 704), "C")
        image = cv2.imread(str(source / "train" / f"{image_id}.png"), cv2.IMREAD_GRAYSCALE)
        for r in range(2):
            for c in range(3):
                window = (slice(r * 260, (r + 1) * 260), slice(cols[c], cols[c + 1]))
                tile_labels, tile_image = labels[window], image[window]
                if quick:
                    tile_labels, tile_image = _center_crop(tile_labels, QUICK_SIZE), _center_crop(tile_image, QUICK_SIZE)
                tile_id = f"{image_id}_{r}{c}"
                tiles[image_id][tile_id] = (tile_image, tile_labels, tile_id)
    return _write_from_labels(root, tiles["0030fd0e6378"], tiles["0f08d640930b"])


POLYP_TEST_EVERY = 5


def build_polyps(source: Path, root: Path, quick: bool) -> Split:
    """Kvasir-SEG polyps, binary, TGS schema, JPEG frames copied as they are. SOURCE.md knows no patient or
    video id, so each image is its own group; held out: every 5th id in sorted order (200 of 998)."""
    frame = read_csv(source / "train.csv")
    ids = _image_ids(frame, "id")
    test = set(ids[::POLYP_TEST_EVERY])
    split = Split([i for i in ids if i not in test], sorted(test), {i: i for i in ids})
    _write_from_csv(source, root, frame, _TGS_COLUMNS, split, quick, ext=".jpg", encode=binary_rows)
    return split


CAMVID_TEST_SEQUENCE = "Seq05VD"


def _camvid_rows(labels: np.ndarray, order: str) -> list[dict[str, str]]:
    """One row per class present: ClassId k is label value k-1, 11 is void (no row), Severstal style."""
    return [{"rle": rle.encode(labels == value, order), "ClassId": str(value + 1)}
            for value in range(11) if (labels == value).any()]


def build_camvid(source: Path, root: Path, quick: bool) -> Split:
    """CamVid, 11 exclusive classes + void, Severstal schema. Group = ``sequence``; held out: the whole
    Seq05VD sequence (35 images, upstream test-only), 111 training images in the other 3 sequences (so kseg's
    group folds are 3: configs/real/camvid_multiclass.yaml). A whole sequence, because frames of one sequence
    are strongly correlated (SOURCE.md) and upstream's own SegNet split is not group-safe (it puts 0001TP and
    0016E5 on both sides, by time); Seq05VD is the sequence upstream never trains on, and at 35 frames it is a
    quarter of the set with every class present."""
    frame = read_csv(source / "train.csv")
    first = frame.drop_duplicates("ImageId").set_index("ImageId")
    group = first["sequence"].to_dict()
    ids = sorted(group)
    split = Split([i for i in ids if group[i] != CAMVID_TEST_SEQUENCE], [i for i in ids if group[i] == CAMVID_TEST_SEQUENCE],
                  group)
    _write_from_csv(source, root, frame, _SEVERSTAL_COLUMNS, split, quick, mask_dir="labels", encode=_camvid_rows)
    return split


SETS: dict[str, RealSet] = {s.name: s for s in (
    RealSet("isbi2012_membrane", "instance", TILE_SCHEMA, build_isbi),
    RealSet("isbi2012_binary", "binary", TILE_SCHEMA, build_isbi_binary, sources=("isbi2012_membrane",)),
    RealSet("sartorius_mini", "instance", TILE_SCHEMA, build_sartorius),
    RealSet("fluo_nuclei_sbsst265", "instance", DSB_SCHEMA, build_fluo, report_col="magnification",
            split_col="train_testset_split"),
    RealSet("he_nuclei", "instance", DSB_SCHEMA, build_he, report_col="source", stain="hed"),
    RealSet("phase_cells_usiigaci", "instance", SARTORIUS_SCHEMA, build_phase, split_col="split"),
    RealSet("mixed_nuclei", "instance", {"preset": "dsb2018", "class_col": "modality", "group_col": GROUP_COL},
            build_mixed, sources=tuple(part.folder for part in MIXED_PARTS)),
    RealSet("polyps_kvasir", "binary", TGS_SCHEMA, build_polyps),
    RealSet("camvid_multiclass", "multiclass", SEVERSTAL_SCHEMA, build_camvid),
)}


# ------------------------------------------------------------------------------------------ preparing

def source_digest(*sources: Path) -> str:
    """sha256 of the sources' MANIFEST.sha256 files: they list every source file's hash, so any change shows."""
    digest = hashlib.sha256()
    for source in sources:
        digest.update((source / "MANIFEST.sha256").read_bytes())
    return digest.hexdigest()


def default_root(name: str) -> Path:
    """Where ``configs/real/<name>.yaml`` expects the prepared set (relative to the repository)."""
    return REPO / "data" / "real" / name


def prepare(name: str, root: Path | None = None, quick: bool = False, shared: Path = SHARED) -> Path:
    """Prepare set ``name`` under ``root`` (default ``data/real/<name>``) unless it is already up to date."""
    if name not in SETS:
        raise KeyError(f"unknown real set {name!r}; known: {', '.join(SETS)}")
    spec = SETS[name]
    source = shared if spec.sources else shared / name
    root = Path(root) if root is not None else default_root(name)
    digest = source_digest(*(shared / folder for folder in spec.sources)) if spec.sources else source_digest(source)
    marker = {"set": name, "quick": quick, "builder_version": BUILDER_VERSION, "source_manifest": digest}
    marker_path = root / MARKER
    if marker_path.is_file():
        done = json.loads(marker_path.read_text())
        if {k: done.get(k) for k in marker} == marker:
            return root
    elif root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} exists, is not empty and was not prepared by real_sets (no {MARKER}); "
                              f"remove it or choose another root")
    tmp = root.with_name(f".{root.name}.preparing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    split = spec.build(source, tmp, quick)
    write_json(tmp / MARKER, {**marker, "n_train": len(split.train), "n_test": len(split.test),
                              "train_groups": sorted({split.group[i] for i in split.train}),
                              "test_groups": sorted({split.group[i] for i in split.test})})
    if root.exists():
        shutil.rmtree(root)
    tmp.rename(root)
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prepare", required=True, help=f"comma-separated sets or 'all' ({', '.join(SETS)})")
    parser.add_argument("--root", help="target folder (one set only); default data/real/<set>")
    parser.add_argument("--quick", action="store_true", help="128 px centre crops, for smoke runs")
    args = parser.parse_args(argv)
    names = list(SETS) if args.prepare == "all" else args.prepare.split(",")
    if args.root and len(names) != 1:
        parser.error("--root needs exactly one set")
    for name in names:
        root = prepare(name, Path(args.root) if args.root else None, quick=args.quick)
        info = json.loads((root / MARKER).read_text())
        print(f"{name}: {root} ({info['n_train']} train, {info['n_test']} test images)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
