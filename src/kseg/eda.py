"""A competition's training data at a glance, for any config: the numbers behind ``notebooks/01_eda.ipynb``.

Class balance, instances per image, instance sizes and shapes, image sizes and the channels of the files,
intensities per class inside and outside the objects, how much the annotations overlap, and how the folds
split classes and groups. Everything is measured on the records training uses (``data.load_records``: the
same decoding, the same first-row-wins rule for overlaps, the same uint8 RGB images), so the notebook shows
what the network will be trained on, not a second reading of the CSV.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from PIL import Image
from skimage.measure import regionprops_table

from kseg.config import Config, folds_path
from kseg.data import DICOM_SUFFIXES, ImageRecord, image_reader, load_records, records_frame
from kseg.folds import MISSING_CLASS, fold_table, make_folds, read_folds
from kseg.postprocess import label_objects

__all__ = ["DatasetStats", "dataset_stats", "file_layout"]

# Grey levels of the intensity histograms: read_image gives uint8 images.
_LEVELS = 256


@dataclass(frozen=True)
class DatasetStats:
    """What :func:`dataset_stats` measured.

    ``images``: one row per image (id, cls, group, fold, height, width, file_channels, file_mode, n_instances,
    foreground_share, overlap_pixels, overlap_share). ``instances``: one row per object (id, cls, area,
    diameter, eccentricity, aspect_ratio). ``intensity``: the share of pixels at each grey level (index
    0..255), columns ``(class, "objects" | "background")``. ``folds``: ``folds.fold_table`` of the folds
    described by ``folds_note``.
    """

    images: pd.DataFrame
    instances: pd.DataFrame
    intensity: pd.DataFrame
    folds: pd.DataFrame
    folds_note: str

    def per_class(self) -> pd.DataFrame:
        """Images, instances and their typical sizes per class: the class balance in one table."""
        by_image = self.images.groupby("cls")
        by_instance = self.instances.groupby("cls")
        table = pd.DataFrame({
            "images": by_image.size(),
            "instances": by_image["n_instances"].sum(),
            "instances per image (median)": by_image["n_instances"].median(),
            "empty images": by_image["n_instances"].apply(lambda n: int((n == 0).sum())),
            "images with overlaps": by_image["overlap_pixels"].apply(lambda n: int((n > 0).sum())),
            "median area (px)": by_instance["area"].median(),
            "median diameter (px)": by_instance["diameter"].median(),
        })
        return table.fillna({"median area (px)": 0, "median diameter (px)": 0})


def file_layout(path: Path) -> tuple[int, str]:
    """(channels, mode) of an image file as stored, from its header: ``read_image`` turns every file into
    uint8 RGB, which hides whether the competition ships gray, RGBA or 16-bit images."""
    if path.suffix.lower() in DICOM_SUFFIXES:
        import pydicom

        header = pydicom.dcmread(path, stop_before_pixels=True)
        return int(header.get("SamplesPerPixel", 1)), f"DICOM {header.get('BitsStored', '?')}-bit"
    with Image.open(path) as image:
        return len(image.getbands()), image.mode


def _instance_rows(record: ImageRecord, cls: str, task: str) -> pd.DataFrame:
    props = regionprops_table(label_objects(record.labels, task).astype(np.int32),
                              properties=("area", "eccentricity", "axis_major_length", "axis_minor_length"))
    major, minor = props["axis_major_length"], props["axis_minor_length"]
    return pd.DataFrame({
        "id": record.id, "cls": cls, "area": props["area"].astype(int),
        "diameter": np.sqrt(4.0 * props["area"] / np.pi), "eccentricity": props["eccentricity"],
        "aspect_ratio": np.divide(major, minor, out=np.full(len(major), np.nan), where=minor > 0),
    })


def _folds(cfg: Config, records: Sequence[ImageRecord]) -> tuple[pd.DataFrame, str]:
    """The run's folds file when it exists (checked against the config), else the folds ``kseg folds`` makes."""
    path = folds_path(cfg)
    ids = [record.id for record in records]
    if path.is_file():
        return read_folds(path, ids, cfg=cfg), f"from {path}"
    made = make_folds(records_frame(list(records)), cfg.folds.n_splits, cfg.folds.seed)
    return made, f"{path} not written yet: the folds `kseg folds` will make"


def dataset_stats(cfg: Config, records: Sequence[ImageRecord] | None = None) -> DatasetStats:
    """Measure the training data of ``cfg`` (``records`` from ``data.load_records`` when already loaded).

    Reads every image once (for the intensities); cheap next to one training epoch.
    """
    records = load_records(cfg, progress=False) if records is None else records
    task = cfg.data.task
    read = image_reader(cfg)
    folds, folds_note = _folds(cfg, records)
    fold_of = dict(zip(folds["id"], folds["fold"]))
    image_rows, instance_frames = [], []
    histograms: dict[tuple[str, str], np.ndarray] = {}
    for record in records:
        cls = record.cls if record.cls is not None else MISSING_CLASS
        channels, mode = file_layout(record.image_path)
        foreground = record.labels > 0
        n_foreground = int(foreground.sum())
        image_rows.append({
            "id": record.id, "cls": cls, "group": record.group, "fold": int(fold_of[record.id]),
            "height": record.shape[0], "width": record.shape[1], "file_channels": channels, "file_mode": mode,
            "n_instances": record.n_instances, "foreground_share": n_foreground / foreground.size,
            "overlap_pixels": record.overlap_pixels,
            "overlap_share": record.overlap_pixels / n_foreground if n_foreground else 0.0,
        })
        instance_frames.append(_instance_rows(record, cls, task))
        grey = np.rint(read(record.image_path).mean(axis=2)).astype(np.uint8)
        for part, mask in (("objects", foreground), ("background", ~foreground)):
            counts = np.bincount(grey[mask], minlength=_LEVELS)
            histograms[(cls, part)] = histograms.get((cls, part), 0) + counts
    intensity = pd.DataFrame({key: counts / max(int(counts.sum()), 1) for key, counts in sorted(histograms.items())})
    intensity.index.name = "grey level"
    frame = records_frame(list(records))
    return DatasetStats(images=pd.DataFrame(image_rows), instances=pd.concat(instance_frames, ignore_index=True),
                        intensity=intensity, folds=fold_table(frame, folds), folds_note=folds_note)
