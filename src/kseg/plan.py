"""A dataset fingerprint and the written plan derived from it (after nnU-Net): what a run decides by itself.

Competitions differ in image size, object size and class balance by an order of magnitude, and defaults
that are fixed numbers fit only some of them. kseg measures the training images once (the fingerprint)
and turns that into a plan: the scale at which the network sees the images, chosen so that the
median object has about ``train.target_diameter`` pixels, and, for a compute budget
(``train.budget_steps``), how many folds to train and for how long. Large cells (phase contrast, EM) are then
downscaled, which gives a crop more context and makes training and inference several times cheaper,
while small nuclei stay at full resolution (kseg never upscales unless asked). Both are written to the
run directory as ``plan.json`` (inspectable, and read back by prediction and the kernels) and printed.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from kseg.tasks import task_of

from .classmaps import VOID
from .config import MAX_SCALE, MIN_SCALE, ORIENTATIONS, Config, TrainSection
from .errors import ConfigError, DataError
from .files import write_json
from .normalize import Polarity, polarity_from_dict
from .run import RunDir

__all__ = ["Fingerprint", "Plan", "ORIENTATIONS", "label_asymmetry", "orientation_plan", "fingerprint", "make_plan", "scale_plan", "budget_plan", "planned_folds", "write_plan", "read_plan", "rescale_image",
           "rescale_labels", "restore_probabilities"]

# train.orientation: auto (from the labels), free (every flip and quarter turn), upright (up stays up: no
# vertical flip, no quarter turn), fixed (no flip or turn at all).
ASYMMETRY_LIMIT = 0.3
# Objects per image at which the diameter estimate is trusted: a set of a few huge objects per image says
# little about the scale at which a network should see them.
_MIN_OBJECTS = 20


@dataclass(frozen=True)
class Fingerprint:
    """What the training images look like: sizes, object sizes (equivalent diameters), classes, emptiness."""

    n_images: int
    median_height: int
    median_width: int
    n_objects: int
    median_diameter: float | None
    diameter_p10: float | None
    diameter_p90: float | None
    class_counts: dict[str, int]
    empty_images: int
    # How much the labelled pixels prefer one half of the image (0: none, 1: all in one half), see
    # :func:`label_asymmetry`: street scenes have an up (sky above, road below), microscopy has none.
    vertical_asymmetry: float = 0.0
    horizontal_asymmetry: float = 0.0


@dataclass(frozen=True)
class Plan:
    """The decisions a run takes from its fingerprint and budget; ``reason`` says why, for people reading
    plan.json. ``folds`` and ``steps_per_epoch`` are set when ``train.budget_steps`` decided them, ``invert``
    when ``model.invert: auto`` fitted a polarity rule on the training images (normalize.fit_polarity)."""

    scale: float
    reason: str
    folds: list[int] | None = None
    steps_per_epoch: int | None = None
    invert: Polarity | None = None
    orientation: str = "free"


def label_asymmetry(labels: Sequence[np.ndarray], multiclass: bool = False) -> tuple[float, float]:
    """(vertical, horizontal) asymmetry of the labels: per class (multiclass: each class value; otherwise the
    foreground), |pixels in the top half - bottom half| / its pixels, pooled over the images and averaged over
    classes weighted by their pixels; the same for left and right. Void pixels do not count."""
    halves = np.zeros((4, 0), np.int64)  # top, bottom, left, right pixel counts per class value
    for image in labels:
        values = np.asarray(image).astype(np.int64)
        if not multiclass:
            values = (values > 0).astype(np.int64)
        values = np.where(values == VOID, -1, values)
        height, width = values.shape
        parts = (values[: height // 2], values[height - height // 2:], values[:, : width // 2], values[:, width - width // 2:])
        counts = [np.bincount(part[part > 0].ravel(), minlength=halves.shape[1]) for part in parts]
        size = max(len(c) for c in counts)
        halves = np.pad(halves, ((0, 0), (0, size - halves.shape[1])))
        halves += np.stack([np.pad(c, (0, size - len(c))) for c in counts])

    def asymmetry(first: np.ndarray, second: np.ndarray) -> float:
        total = first + second
        return float(np.abs(first - second).sum() / total.sum()) if total.sum() else 0.0

    return round(asymmetry(halves[0], halves[1]), 3), round(asymmetry(halves[2], halves[3]), 3)


def fingerprint(labels: Sequence[np.ndarray], classes: Sequence[str | None], multiclass: bool = False) -> Fingerprint:
    """Measure label images (instance labels, binary masks or class maps) and the image classes."""
    if not labels:
        raise DataError("a fingerprint needs at least one training image")
    areas: list[np.ndarray] = []
    for image in labels:
        counts = np.bincount(np.asarray(image).ravel().astype(np.int64))
        areas.append(counts[1:][counts[1:] > 0])
    all_areas = np.concatenate(areas) if areas else np.zeros(0)
    diameters = np.sqrt(4.0 * all_areas / math.pi)
    heights = [int(np.asarray(image).shape[0]) for image in labels]
    widths = [int(np.asarray(image).shape[1]) for image in labels]

    def stat(q: float) -> float | None:
        return round(float(np.percentile(diameters, q)), 1) if len(diameters) else None

    class_counts: dict[str, int] = {}
    for cls in classes:
        class_counts[str(cls)] = class_counts.get(str(cls), 0) + 1
    vertical, horizontal = label_asymmetry(labels, multiclass)
    return Fingerprint(
        n_images=len(labels), median_height=int(np.median(heights)), median_width=int(np.median(widths)),
        n_objects=int(len(diameters)), median_diameter=stat(50), diameter_p10=stat(10), diameter_p90=stat(90),
        class_counts=class_counts, empty_images=int(sum(len(a) == 0 for a in areas)),
        vertical_asymmetry=vertical, horizontal_asymmetry=horizontal,
    )


def orientation_plan(fp: Fingerprint, train_cfg: TrainSection) -> tuple[str, str]:
    """``train.orientation`` as given, or (``auto``) from the labels' asymmetry: ``upright`` (no vertical flip
    or quarter turn, in augmentation and TTA) when the labelled pixels prefer the top or the bottom half by at
    least :data:`ASYMMETRY_LIMIT`, ``fixed`` (no flip or turn at all) when they prefer a side, else
    ``free``. Measured on the real sets: CamVid 0.83 vertical; every microscopy set, Kvasir polyps and ISBI
    at most 0.06 vertical and 0.18 horizontal."""
    wanted = train_cfg.orientation
    if wanted not in ORIENTATIONS:
        raise ConfigError(f"train.orientation must be one of {', '.join(ORIENTATIONS)}, got {wanted!r}")
    if wanted != "auto":
        return wanted, f"train.orientation {wanted} set in the config"
    vertical, horizontal = fp.vertical_asymmetry, fp.horizontal_asymmetry
    measured = f"label asymmetry vertical {vertical:g}, horizontal {horizontal:g} (limit {ASYMMETRY_LIMIT:g})"
    if horizontal >= ASYMMETRY_LIMIT:  # a side matters: no mirror image either
        return "fixed", f"{measured}: fixed, every flip and quarter turn dropped"
    if vertical >= ASYMMETRY_LIMIT:
        return "upright", f"{measured}: upright, vertical flips and quarter turns dropped"
    return "free", f"{measured}: every flip and quarter turn kept"


def check_plan_config(train_cfg: TrainSection) -> None:
    """The rule across the training-length keys (their types were checked by :func:`kseg.config.load_config`)."""
    if train_cfg.budget_steps is not None and train_cfg.steps_per_epoch is not None:
        raise ConfigError("train.budget_steps and train.steps_per_epoch both set the training length: set one "
                          f"(got {train_cfg.budget_steps!r} and {train_cfg.steps_per_epoch!r})")


def budget_plan(train_cfg: TrainSection, folds: Sequence[int]) -> tuple[list[int], int | None, str]:
    """The folds to train and the steps per epoch for ``train.budget_steps`` optimizer steps in all.

    An under-trained model is worse than no ensemble: from scratch, a U-Net needs a few hundred steps
    before its probabilities sit where fixed thresholds work (BENCHMARKS.md: 144 steps per fold of three
    lost to one notebook model of 403 on ISBI). So the budget trains as many of ``folds`` (in order) as
    get ``train.min_steps_per_fold`` steps each, at least one, and splits the steps evenly between them.
    Without a budget every requested fold trains ``train.epochs`` x ``train.steps_per_epoch``.
    """
    budget = train_cfg.budget_steps
    if budget is None:
        return list(folds), None, ""
    minimum = int(train_cfg.min_steps_per_fold or 1)
    n_folds = max(1, min(len(folds), budget // minimum))
    per_fold = budget // n_folds
    steps = max(1, math.ceil(per_fold / train_cfg.epochs))
    reason = (f"train.budget_steps {budget}: {n_folds} of {len(folds)} folds (each at least {minimum} steps), "
              f"{train_cfg.epochs} epochs x {steps} steps per fold")
    return list(folds)[:n_folds], steps, reason


def planned_folds(cfg: Config) -> tuple[list[int], int | None]:
    """The folds a run trains (``train.folds``, then the budget) and their steps per epoch (None: the usual
    rule). Known from the config alone, so Kaggle train kernels fan out over exactly these folds."""
    wanted = cfg.train.folds
    folds = (list(range(cfg.folds.n_splits)) if wanted == "all"
             else [int(k) for k in (wanted if isinstance(wanted, list) else [wanted])])
    chosen, steps, _ = budget_plan(cfg.train, folds)
    return chosen, steps


def make_plan(fp: Fingerprint, train_cfg: TrainSection, task: str = "instance",
              folds: Sequence[int] | None = None) -> Plan:
    """The scale (:func:`scale_plan`) and, for the requested ``folds``, the budget (:func:`budget_plan`)."""
    scale, reason = scale_plan(fp, train_cfg, task)
    orientation, orientation_reason = orientation_plan(fp, train_cfg)
    reason = f"{reason}; {orientation_reason}"
    if folds is None or train_cfg.budget_steps is None:
        return Plan(scale, reason, None if folds is None else list(folds), orientation=orientation)
    chosen, steps, budget_reason = budget_plan(train_cfg, folds)
    return Plan(scale, f"{reason}; {budget_reason}", chosen, steps, orientation=orientation)


def scale_plan(fp: Fingerprint, train_cfg: TrainSection, task: str = "instance") -> tuple[float, str]:
    """``train.scale`` as given, or (``auto``) ``target_diameter / median diameter`` capped at 1.

    A binary task has no instances whose size says anything about resolution (one mask may cover half
    the image), so ``auto`` keeps it at full resolution.
    """
    check_plan_config(train_cfg)
    if train_cfg.scale != "auto":
        return float(train_cfg.scale), "train.scale set in the config"
    if not task_of(task).separates_objects:
        return 1.0, f"task {task}: no instance sizes to plan by, full resolution"
    target = float(train_cfg.target_diameter)
    if fp.median_diameter is None or fp.n_objects < _MIN_OBJECTS:
        return 1.0, f"too few objects ({fp.n_objects}) to measure their size: full resolution"
    raw = target / fp.median_diameter
    if raw >= 1.0:
        return 1.0, f"median object diameter {fp.median_diameter:g} px <= target {target:g} px: full resolution"
    scale = max(MIN_SCALE, round(raw, 2))
    return scale, f"median object diameter {fp.median_diameter:g} px, target {target:g} px: images scaled by {scale:g}"


def write_plan(run_dir: Path, fp: Fingerprint, plan: Plan) -> Path:
    path = RunDir(run_dir).plan
    write_json(path, {"fingerprint": asdict(fp), "plan": asdict(plan)})
    return path


def read_plan(run_dir: Path) -> Plan:
    """The plan a run was trained with; a run without one (older kseg) was trained at full resolution."""
    path = RunDir(run_dir).plan
    if not path.is_file():
        return Plan(scale=1.0, reason=f"{path} not found: full resolution")
    try:
        plan = json.loads(path.read_text())["plan"]
        scale = float(plan["scale"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise DataError(f"{path}: not a kseg plan file ({error})") from None
    if not MIN_SCALE <= scale <= MAX_SCALE:
        raise DataError(f"{path}: scale {scale} is outside [{MIN_SCALE}, {MAX_SCALE:g}]")
    invert = plan.get("invert")
    orientation = plan.get("orientation", "free")  # plans from before orientations: every view was used
    if orientation not in ORIENTATIONS[1:]:
        raise DataError(f"{path}: orientation {orientation!r} is not one of {', '.join(ORIENTATIONS[1:])}")
    return Plan(scale=scale, reason=str(plan.get("reason", "")), folds=plan.get("folds"),
                steps_per_epoch=plan.get("steps_per_epoch"),
                invert=None if invert is None else polarity_from_dict(invert, f"{path}: invert"), orientation=orientation)


def _scaled_shape(shape: tuple[int, ...], scale: float) -> tuple[int, int]:
    return max(1, int(round(shape[0] * scale))), max(1, int(round(shape[1] * scale)))


def rescale_image(image: np.ndarray, scale: float) -> np.ndarray:
    """An HWC image at ``scale`` (area averaging when shrinking, so thin structures fade rather than alias)."""
    if scale == 1.0:
        return image
    height, width = _scaled_shape(image.shape, scale)
    interpolation = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
    out = cv2.resize(image, (width, height), interpolation=interpolation)
    return out.reshape(height, width, *image.shape[2:])


def rescale_labels(labels: np.ndarray, scale: float) -> np.ndarray:
    """A label image at ``scale`` by nearest neighbour (labels are ids, not intensities)."""
    if scale == 1.0:
        return labels
    height, width = _scaled_shape(labels.shape, scale)
    source = labels.astype(np.int32) if labels.dtype not in (np.uint8, np.uint16, np.int16, np.float32) else labels
    return cv2.resize(source, (width, height), interpolation=cv2.INTER_NEAREST).astype(labels.dtype)


def restore_probabilities(probs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w, C) probabilities back to the image's own ``shape`` (bilinear), so post-processing and the
    metric always run at full resolution."""
    if probs.shape[:2] == tuple(shape):
        return probs
    out = cv2.resize(probs.astype(np.float32), (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return out.reshape(shape[0], shape[1], *probs.shape[2:])
