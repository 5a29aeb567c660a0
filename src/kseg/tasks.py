"""The task types kseg trains, each described once by what it does, so the stages ask a task what it does
(``task_of(name).separates_objects``) rather than compare its name.

- ``instance``: separate objects (Sartorius, DSB 2018): a foreground and a border channel, watershed seeds,
  object sizes that plan the scale; one RLE row per object, and the rows of an image must not overlap.
- ``binary``: one mask per image (TGS salt, polyps, SIIM pneumothorax): one foreground channel, no seeds; the
  rows of an image are unioned into its mask.
- ``multiclass``: exclusive classes (CamVid, organs): a softmax over background + one channel per class,
  class maps, one RLE row per class present, void pixels left out, scored on the whole set's pixel counts.
- ``multilabel``: classes that may share a pixel (Severstal's defects, the Understanding Clouds patterns): a
  sigmoid per class, per-class thresholds, one RLE row per class present, the rows of an image may overlap; its
  label images hold a bit per class (:mod:`kseg.classmaps`).

A new task type is a new entry here, its post-processing an entry of ``kseg.postprocess.POSTPROCESSORS`` (its
parameters and the axes the OOF search reuses), and the branches it needs where it differs from these.
"""
from __future__ import annotations

from dataclasses import dataclass

from kseg.errors import ConfigError

__all__ = ["Task", "TASKS", "task_of"]


@dataclass(frozen=True)
class Task:
    """What a task type does, by the questions the stages ask of it."""

    name: str
    # Objects are told apart: a border channel and watershed seeds, object sizes plan the scale, and the
    # rows of an image may not overlap.
    separates_objects: bool
    # Pixels have classes, not objects: class maps, one RLE row per class, void pixels, class-level metrics
    # over the whole set, no class per image (one class per pixel unless classes_overlap).
    class_per_pixel: bool
    # The classes of a pixel are a set, not one class: a sigmoid per class, label images hold a bit per class
    # (kseg.classmaps), the rows of an image may overlap.
    classes_overlap: bool
    # One mask per image: its rows are unioned, one row per image in a submission, no seeds.
    one_mask_per_image: bool
    # What one submission row encodes, for messages.
    row_noun: str
    # The probability channels post-processing needs (instance: foreground + border; multiclass: background +
    # a class).
    min_channels: int
    # The metrics (kseg.metric.METRICS) that can score its predictions, its own first (``data.metric: auto``): an
    # instance run predicts label images (a mask metric scores their union: Dice, TGS), a binary run masks, a
    # multiclass run class maps.
    metrics: tuple[str, ...]


TASKS: dict[str, Task] = {
    "instance": Task("instance", separates_objects=True, class_per_pixel=False, classes_overlap=False,
                     one_mask_per_image=False,
                     row_noun="instance", min_channels=2,
                     metrics=("map_iou", "f2_iou", "dice", "iou", "tgs_ap_iou")),
    "binary": Task("binary", separates_objects=False, class_per_pixel=False, classes_overlap=False,
                   one_mask_per_image=True,
                   row_noun="mask", min_channels=1,
                   metrics=("dice", "iou", "tgs_ap_iou")),
    "multiclass": Task("multiclass", separates_objects=False, class_per_pixel=True, classes_overlap=False,
                       one_mask_per_image=False, row_noun="class mask", min_channels=2,
                       metrics=("mean_iou_classes", "dice_classes")),
    "multilabel": Task("multilabel", separates_objects=False, class_per_pixel=True, classes_overlap=True,
                       one_mask_per_image=False, row_noun="class mask", min_channels=2,
                       metrics=("dice_classes", "mean_iou_classes")),
}


def task_of(name: object) -> Task:
    """The task called ``name`` (``data.task``); a ConfigError naming the valid ones otherwise."""
    task = TASKS.get(name) if isinstance(name, str) else None
    if task is None:
        raise ConfigError(f"data.task must be one of {', '.join(TASKS)}, got {name!r}")
    return task
