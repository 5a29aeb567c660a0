"""Truth against prediction, drawn: the error overlays of the report and the OOF notebook, and ``kseg overlay``.

Every object is coloured by what went wrong (``plots.ERROR_COLOURS``, classified by
``analysis.classify_objects``): matched predictions green, false positives red, merges (one predicted
object over several true ones) blue, missed true objects yellow; true outlines white, predicted outlines
in their kind's colour. ``kseg overlay`` writes these (or the truth, or a test prediction alone) as PNGs
for people who live in the terminal.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .analysis import ERROR_KINDS, classify_objects, read_run_oof
from .config import Config, data_path, output_dir, submission_path
from .data import (
    image_reader,
    image_size,
    list_test_images,
    load_records,
    load_test_truth,
    read_index,
    schema_from_config,
)
from .errors import DataError, KsegError
from .files import child_path
from .plots import ERROR_COLOURS, image_panels, overlay, overlays_figure, save_figure
from .postprocess import label_objects
from .submission import submission_labels

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["SOURCES", "error_overlay", "error_figure", "write_overlays", "command_overlay"]

# What ``kseg overlay --source`` draws: the annotation, the OOF prediction against it, or the submission's
# prediction of a test image (against data.test_truth when it annotates the image).
SOURCES = ("truth", "oof", "test")


def error_overlay(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """RGB uint8 image with the objects of ``pred`` and ``truth`` (label images) tinted by kind of error."""
    from skimage.segmentation import find_boundaries

    errors = classify_objects(truth, pred)
    rgb = image[..., :3].astype(np.float32)
    predicted_outlines = []
    for kind, labels, ids in (("missed", truth, errors.missed), ("matched", pred, errors.matched),
                              ("false positive", pred, errors.false_positive), ("merged", pred, errors.merged)):
        region = np.isin(labels, ids) & (labels > 0)
        colour = np.array(ERROR_COLOURS[kind], np.float32)
        rgb[region] = (1 - alpha) * rgb[region] + alpha * colour
        if kind != "missed":
            predicted_outlines.append((find_boundaries(np.where(region, pred, 0), mode="inner"), colour))
    rgb[find_boundaries(truth, mode="inner")] = 255.0
    for outline, colour in predicted_outlines:  # on top: the kind of a prediction stays visible at its edge
        rgb[outline] = colour
    return rgb.clip(0, 255).astype(np.uint8)


def error_figure(image: np.ndarray, truth: np.ndarray, pred: np.ndarray, title: str,
                 task: str = "instance") -> "Figure":
    """The truth (left) and the errors of the prediction (right, with a legend counting each kind)."""
    from matplotlib.patches import Patch

    truth, pred = label_objects(truth, task), label_objects(pred, task)
    counts = classify_objects(truth, pred).counts()
    fig = image_panels({f"truth: {len(np.unique(truth[truth > 0]))} objects": overlay(image, truth),
                        f"prediction: {len(np.unique(pred[pred > 0]))} objects": error_overlay(image, truth, pred)})
    fig.axes[1].legend(handles=[Patch(color=np.array(ERROR_COLOURS[kind]) / 255, label=f"{kind} ({counts[kind]})")
                                for kind in ERROR_KINDS], loc="lower right", fontsize="small", framealpha=0.8)
    fig.suptitle(title)
    return fig


def _check_ids(ids: Sequence[str], known: Sequence[str], where: str) -> None:
    known_ids = set(known)
    unknown = [image_id for image_id in ids if image_id not in known_ids]
    if unknown:
        raise DataError(f"image id {unknown[0]!r} is not in {where} ({len(known)} images, e.g. "
                        f"{', '.join(sorted(known)[:3])})")


def _test_figures(cfg: Config, ids: Sequence[str]) -> dict[str, "Figure"]:
    """The submission's prediction of each test image, against its annotation when data.test_truth has one."""
    tests = dict(list_test_images(cfg))
    _check_ids(ids, list(tests), f"the test images of {data_path(cfg, 'test_dir')}")
    submission = submission_path(cfg)
    if not submission.is_file():
        raise DataError(f"submission {submission} not found: the run is not finished (kseg run or kseg predict)")
    preds = submission_labels(submission, schema_from_config(cfg), {i: image_size(tests[i]) for i in ids})
    truth = load_test_truth(cfg) or {}
    task = cfg.data.task
    figures = {}
    read = image_reader(cfg)
    for image_id in ids:
        image = read(tests[image_id])
        if image_id in truth:
            figures[image_id] = error_figure(image, truth[image_id], preds[image_id], f"{image_id} (test)", task)
        else:
            figures[image_id] = overlays_figure(image, {f"{image_id} prediction": label_objects(preds[image_id], task)})
    return figures


def write_overlays(cfg: Config, ids: Sequence[str], source: str = "oof", out_dir: Path | None = None) -> list[Path]:
    """One PNG per id in ``out_dir`` (default ``<output.dir>/overlays/<source>/``); see :data:`SOURCES`.

    Unknown ids, and a run not far enough for the source (no OOF prediction, no submission), are a
    KsegError naming the id or the missing file, before any file is written.
    """
    if source not in SOURCES:
        raise KsegError(f"--source must be one of {', '.join(SOURCES)}, got {source!r}")
    if not ids:
        raise KsegError("no image ids given: pass --ids ID [ID ...]")
    out_dir = Path(out_dir) if out_dir is not None else output_dir(cfg) / "overlays" / source
    task = cfg.data.task
    if source == "test":
        figures = _test_figures(cfg, ids)
    else:
        _check_ids(ids, read_index(cfg)["id"].tolist(), str(data_path(cfg, "train_csv")))
        records = {record.id: record for record in load_records(cfg, progress=False)}
        if source == "truth":
            read = image_reader(cfg)
            figures = {image_id: overlays_figure(read(records[image_id].image_path), {
                f"{image_id} truth ({records[image_id].cls or task})": label_objects(records[image_id].labels, task)})
                for image_id in ids}
        else:
            run = read_run_oof(cfg, list(records.values()), require_search=False)
            figures = {}
            for image_id in ids:
                oof = run.prediction(image_id)
                figures[image_id] = error_figure(oof.image, oof.truth, oof.pred, oof.title, task)
    return [save_figure(fig, child_path(out_dir, f"{image_id}.png", "overlay of image id"))
            for image_id, fig in figures.items()]


def command_overlay(cfg: Config, ids: Sequence[str], source: str, out_dir: Path | None = None) -> list[Path]:
    """``kseg overlay``: write the overlays and print where."""
    paths = write_overlays(cfg, ids, source, out_dir)
    for path in paths:
        log.info(f"wrote {path}")
    return paths
