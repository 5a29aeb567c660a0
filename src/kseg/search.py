"""Choose post-processing parameters on out-of-fold (OOF) predictions, globally and per class.

Every OOF image is scored at every point of ``postprocess.grid`` (fg_threshold × seed_threshold × min_area)
with the competition metric. The expensive part, the watershed, depends only on the two thresholds,
and ``min_area`` only filters the resulting instances by area, so each image costs one watershed per
threshold pair plus one cheap area filter and score per ``min_area``. Images are scored in parallel
(joblib); each worker returns its image's score row, so the search itself is an argmax over the
(n_images, n_grid) score array.

Parameters are chosen per ground-truth class, but the reported OOF score applies the parameters of the
*predicted* class (``postprocess.predict_class``), exactly as ``kseg predict`` will on the test set.

The pixel-class tasks (multiclass, multilabel) are scored on the whole OOF set (mean IoU over classes, per-class
pixel counts summed over images), so each image returns its per-class counts at every grid point (``class_threshold`` × ``min_area``)
instead of a score (one class map and one area count per threshold, one filter per ``min_area``). A class's
threshold and its ``min_area`` only turn some of its own pixels into "no class" (which its true class already
counted as missed or not; "no class" is not scored), so with ``postprocess.per_class`` each class's pair is
chosen on its own IoU, exactly, and the chosen values are lists in class-id order. No ``class_threshold`` in
the grid searches the argmax alone.
"""
from __future__ import annotations

import itertools
import json
import logging
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from kseg import config as config_module
from kseg.data import ImageRecord, load_records
from kseg.errors import ConfigError, DataError, warn
from kseg.files import atomic_path, child_path, write_json
from kseg.folds import read_folds
from kseg.metric import class_map_counts, task_metric, task_score
from kseg.plan import read_plan
from kseg.postprocess import (
    OPTIONAL_PARAMS,
    POSTPROCESSORS,
    as_probabilities,
    instances_from_probs,
    predict_class,
    validate_params,
)
from kseg.run import RunDir
from kseg.targets import read_channels
from kseg.tasks import task_of
from kseg.tta import views_for_orientation

from .config import Config

log = logging.getLogger(__name__)

__all__ = ["Grid", "read_grid", "check_search_config", "grid_labels", "score_grid", "count_grid", "OofImage", "oof_images", "load_oof",
           "SearchResult", "read_search_result", "command_search"]

OOF_KEYS = ("plain", "tta")


@dataclass(frozen=True)
class SearchResult:
    """What ``kseg search`` chose (``postprocess.json``): the parameters prediction applies, and the OOF scores
    they were chosen by, which the summary, the analysis and the report show.

    ``default`` is applied to images of no class or of a class without its own entry in ``per_class``. A
    result read without a search (:func:`read_search_result` falling back to ``postprocess.default``) has
    only the parameters: ``searched`` is False and every score is None.
    """

    task: str
    default: dict[str, Any]
    per_class: dict[str, dict[str, Any]] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    searched_on: str | None = None
    n_images: int | None = None
    oof_score: float | None = None
    oof_score_plain: float | None = None
    oof_score_default: float | None = None
    class_accuracy: float | None = None
    per_fold: dict[str, float] = field(default_factory=dict)
    per_class_score: dict[str, float] = field(default_factory=dict)

    @property
    def searched(self) -> bool:
        return self.oof_score is not None

    def params_for(self, cls: str | None) -> dict[str, Any]:
        """The parameters for an image predicted as ``cls`` (None: no class)."""
        return self.per_class.get(cls, self.default) if cls is not None else self.default

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: Path, task: str) -> SearchResult:
        """The result in ``path``, checked as it is read (a hand edit, a run of another task, a truncated copy
        in a Kaggle dataset): a DataError names the file and the key, instead of a KeyError in the middle of
        predicting. A file from before ``task`` was recorded is taken to be of ``task``."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError(f"{path}: not valid JSON ({error}); rerun kseg search") from None
        if not isinstance(raw, dict):
            raise DataError(f"{path}: expected a mapping with 'default' and 'per_class', got {type(raw).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise DataError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; a search result has "
                            f"{', '.join(sorted(known))}")
        raw = {"task": task, "per_class": {}, **raw}
        if raw["task"] != task:
            raise DataError(f"{path}: searched for data.task {raw['task']!r}, but the config's task is {task!r}; "
                            f"rerun kseg search")
        if not isinstance(raw["per_class"], dict):
            raise DataError(f"{path}: 'per_class' must be a mapping of class -> parameters, got {raw['per_class']!r}")
        for where, params in [("default", raw.get("default")), *((f"per_class.{c}", p) for c, p in raw["per_class"].items())]:
            try:
                validate_params(params if params is not None else {}, task)
            except ConfigError as error:
                raise DataError(f"{path}: {where}: {error}") from None
        for name in ("oof_score", "oof_score_plain", "oof_score_default", "class_accuracy", "n_images"):
            value = raw.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise DataError(f"{path}: {name} must be a number or null, got {value!r}")
        for name in ("per_fold", "per_class_score"):
            value = raw.get(name, {})
            if not isinstance(value, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                      for v in value.values()):
                raise DataError(f"{path}: {name} must map names to scores, got {value!r}")
        if not isinstance(raw.get("classes", []), list):
            raise DataError(f"{path}: classes must be a list, got {raw['classes']!r}")
        return cls(**raw)


def read_search_result(cfg: Config) -> SearchResult:
    """The run's search result, or ``postprocess.default`` (with a warning) when no search was run."""
    path = RunDir.of(cfg).postprocess
    if path.is_file():
        return SearchResult.read(path, cfg.data.task)
    warn(f"{path} not found; using postprocess.default (run kseg search for tuned parameters)")
    return SearchResult(task=cfg.data.task, default=dict(cfg.postprocess.default))


@dataclass(frozen=True)
class Grid:
    """The searched values of each parameter of the task's :class:`~kseg.postprocess.PostProcessor` (sorted,
    distinct, the default's value included; None, the argmax, first), in its axis order (expensive first), with
    its ``fixed`` parameters (``fill_holes``) and ``metric`` (``data.metric``), what every point is scored by."""

    task: str
    axes: dict[str, tuple[Any, ...]]
    fixed: dict[str, Any] = field(default_factory=dict)
    metric: str = "auto"

    @property
    def shape(self) -> tuple[int, ...]:
        """The number of values per axis; a flat grid index is row-major over this shape."""
        return tuple(len(values) for values in self.axes.values())

    def points(self) -> list[dict[str, Any]]:
        """Every grid point as a params dict, in flat-index order (the last axis varies fastest)."""
        names = list(self.axes)
        return [{**dict(zip(names, values)), **self.fixed} for values in itertools.product(*self.axes.values())]


def read_grid(cfg: Config, task: str) -> Grid:
    """``postprocess.grid`` checked: each searched parameter of the task a non-empty list of valid values, plus
    the default's value; a parameter the task may leave out (``class_threshold``, ``empty_area``) searches its
    neutral value alone when the grid leaves it out; the other tasks' parameters are ignored."""
    default = validate_params(cfg.postprocess.default, task)
    grid = cfg.postprocess.grid
    if not isinstance(grid, Mapping):
        raise ConfigError(f"postprocess.grid must be a mapping of parameter -> list of values, got {grid!r}")
    searchable = tuple(dict.fromkeys(key for processor in POSTPROCESSORS.values() for key in processor.axes))
    unknown = sorted(set(grid) - set(searchable))
    if unknown:
        raise ConfigError(f"postprocess.grid: unknown key '{unknown[0]}' (searchable: {', '.join(searchable)})")
    processor = POSTPROCESSORS[task]
    axes: dict[str, tuple[Any, ...]] = {}
    for key in processor.axes:
        values = grid.get(key, [OPTIONAL_PARAMS[key]] if key in OPTIONAL_PARAMS else None)
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"postprocess.grid.{key} must be a non-empty list, got {values!r}")
        checked = []
        for value in values:
            try:
                checked.append(validate_params({**default, key: value}, task)[key])  # multilabel: None is 0.5
            except ConfigError as error:
                raise ConfigError(f"postprocess.grid.{key}: {error}") from None
        # The default point is always searched too, so the search never picks worse than it on OOF (a per-class
        # default list of a multiclass run adds each of its values); None sorts first, so a tie keeps the argmax.
        defaults = default[key] if isinstance(default[key], list) else [default[key]]
        axes[key] = tuple(sorted(set(checked) | set(defaults), key=lambda v: (v is not None, v or 0)))
    return Grid(task=task, axes=axes, fixed={key: default[key] for key in processor.fixed},
                metric=cfg.data.metric)


def check_search_config(cfg: Config, task: str) -> int:
    """Reject a bad ``postprocess`` section before any work (``kseg run`` calls it up front); returns n_jobs."""
    read_grid(cfg, task)
    validate_params(cfg.postprocess.default, task)
    return int(cfg.postprocess.n_jobs)


def grid_labels(probs: np.ndarray, grid: Grid) -> Iterator[np.ndarray]:
    """The post-processed labels of one image at every grid point, in flat order (:meth:`Grid.points`).

    Reuse: one ``build`` (a watershed, a class map) per point of the expensive axes, its areas counted once,
    and one cheap ``finish`` (area filters) per point of the others; :func:`kseg.postprocess.instances_from_probs`
    is the same two steps, so every point equals post-processing with its params."""
    processor = POSTPROCESSORS[grid.task]
    probs = as_probabilities(probs, grid.task)
    build, finish = processor.build_axes, processor.filter_axes
    for build_values in itertools.product(*(grid.axes[name] for name in build)):
        params = {**grid.fixed, **dict(zip(build, build_values))}
        candidates = processor.build(probs, params)
        areas = np.bincount(candidates.ravel())
        for finish_values in itertools.product(*(grid.axes[name] for name in finish)):
            yield processor.finish(candidates, {**params, **dict(zip(finish, finish_values))}, areas)


def score_grid(truth: np.ndarray, probs: np.ndarray, grid: Grid) -> np.ndarray:
    """Score of one image at every grid point (flat order of :meth:`Grid.points`), float64; a multiclass run's
    per-class counts instead (:func:`count_grid`: its metric sums them over the set)."""
    if task_of(grid.task).class_per_pixel:
        return count_grid(truth, probs, grid)
    metric = task_metric(grid.task, grid.metric)
    return np.array([metric.image(truth, labels) for labels in grid_labels(probs, grid)], np.float64)


def count_grid(truth: np.ndarray, probs: np.ndarray, grid: Grid) -> np.ndarray:
    """Per-class counts (:func:`kseg.metric.class_map_counts`, int64 ``(n_grid, 3, n_channels)``) of one image of a
    multiclass or multilabel run at every grid point."""
    overlapping = task_of(grid.task).classes_overlap
    return np.stack([class_map_counts(truth, labels, probs.shape[-1], overlapping) for labels in grid_labels(probs, grid)])


def _score_params(truth: np.ndarray, probs: np.ndarray, params: Mapping[str, Any], task: str, metric: str) -> float:
    """The metric of one image post-processed end to end with ``params`` (no reuse)."""
    return task_score(truth, instances_from_probs(probs, params, task), task, metric)


def load_oof(path: Path, key: str, shape: tuple[int, int], n_channels: int) -> np.ndarray:
    """One validated OOF array (uint8 probabilities ×255) from a training npz."""
    try:
        with np.load(path) as archive:
            names = list(archive.files)
            probs = archive[key] if key in names else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read the OOF file ({error})") from None
    if probs is None:
        raise DataError(f"{path}: no array '{key}' (it has {', '.join(names) or 'none'}); expected {', '.join(OOF_KEYS)}")
    expected = (*shape, n_channels)
    if probs.dtype != np.uint8 or probs.shape != expected:
        raise DataError(f"{path}: array '{key}' is {probs.dtype} {probs.shape}; expected uint8 {expected} "
                        "(the image's size × the run's channels from channels.json)")
    return probs


@dataclass(frozen=True)
class OofImage:
    """What a worker needs for one OOF image (arrays are loaded inside the worker)."""

    id: str
    fold: int
    cls: str | None
    path: Path
    truth: np.ndarray


def _search_one(image: OofImage, key: str, grid: Grid, classes: Sequence[str], n_channels: int) -> tuple[np.ndarray, str | None]:
    probs = load_oof(image.path, key, image.truth.shape, n_channels)
    return score_grid(image.truth, probs, grid), predict_class(probs, classes)


def _final_one(image: OofImage, key: str, chosen: Mapping[str, Any], default: Mapping[str, Any], grid: Grid,
               n_channels: int) -> tuple[float, float]:
    """(score without TTA at the chosen params, score on ``key`` at the config's default params)."""
    plain = load_oof(image.path, "plain", image.truth.shape, n_channels)
    searched = load_oof(image.path, key, image.truth.shape, n_channels)
    return (_score_params(image.truth, plain, chosen, grid.task, grid.metric),
            _score_params(image.truth, searched, default, grid.task, grid.metric))


def oof_images(cfg: Config, records: Sequence[ImageRecord], run_dir: Path) -> list[OofImage]:
    """OOF images of every trained fold (a fold counts as trained when ``fold{K}/oof`` exists)."""
    folds = read_folds(config_module.folds_path(cfg), [record.id for record in records], cfg=cfg,
                       groups={record.id: record.group for record in records})
    fold_of = dict(zip(folds["id"], folds["fold"].astype(int)))
    run = RunDir(run_dir)
    trained = sorted(k for k in set(fold_of.values()) if run.oof(k).is_dir())
    if not trained:
        raise DataError(f"no OOF predictions under {run_dir} (expected fold*/oof/*.npz): train the folds first")
    skipped = sorted(set(fold_of.values()) - set(trained))
    if skipped:
        warn(f"folds {skipped} have no OOF predictions yet; searching on folds {trained}")
    images = []
    for record in records:
        fold = fold_of[record.id]
        if fold not in trained:
            continue
        path = child_path(run.oof(fold), f"{record.id}.npz", "OOF file of image id")
        if not path.is_file():
            raise DataError(f"{path} not found: fold {fold} has OOF predictions but none for image {record.id}")
        images.append(OofImage(record.id, fold, record.cls, path, np.asarray(record.labels)))
    return images


def _best_index(scores: np.ndarray) -> int:
    """Flat grid index of the best mean score (the first one on ties, i.e. the lowest thresholds)."""
    return int(np.argmax(scores.mean(axis=0)))


def _write_table(path: Path, grid: Grid, scores: np.ndarray, images: Sequence[OofImage], classes: Sequence[str]) -> None:
    table = pd.DataFrame(grid.points()).drop(columns=["fill_holes"], errors="ignore")
    table["score"] = scores.mean(axis=0)
    true_classes = np.array([image.cls for image in images], dtype=object)
    for cls in classes:
        members = true_classes == cls
        if members.any():
            table[f"score:{cls}"] = scores[members].mean(axis=0)
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6f")


def _value_name(value: Any) -> str:
    return "argmax" if value is None else f"{value:g}"


def _plot_curves(path: Path, grid: Grid, mean_scores: np.ndarray, best: int) -> None:
    """Score along each searched parameter, the others at the best point (one panel per parameter)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cube = mean_scores.reshape(grid.shape)
    best_at = np.unravel_index(best, grid.shape)
    names = list(grid.axes)
    fig, panels = plt.subplots(1, len(names), figsize=(4.5 * len(names), 4), squeeze=False)
    for i, (name, axis) in enumerate(zip(names, panels[0])):
        along: list[Any] = list(best_at)
        along[i] = slice(None)
        labels = [_value_name(value) for value in grid.axes[name]]
        axis.plot(range(len(labels)), cube[tuple(along)], marker="o")
        axis.set_xticks(range(len(labels)), labels)
        others = ", ".join(f"{other} {_value_name(grid.axes[other][best_at[j]])}"
                           for j, other in enumerate(names) if j != i)
        axis.set(xlabel=name, ylabel="mean OOF score", title=others or grid.task)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _means_by(values: np.ndarray, keys: Sequence[Any]) -> dict[str, float]:
    return {str(k): float(v) for k, v in pd.Series(values).groupby(np.asarray(keys, dtype=object)).mean().items()}


def command_search(cfg: Config, use_tta: bool | None = None, write: bool = True) -> SearchResult:
    """Grid-search post-processing on the run's OOF predictions; write postprocess.json, search_table.csv, search_curves.png.

    ``use_tta`` picks the OOF array searched and reported as ``oof_score``: ``None`` follows the config
    (the ``tta`` array unless ``tta`` is just ``[identity]``), i.e. what ``kseg predict`` will produce.
    ``write=False`` only returns the result, leaving the run's files as they are (e.g. the parameters that
    predictions without TTA would need, beside the run's own).
    """
    task = cfg.data.task
    run_dir = config_module.output_dir(cfg)
    channels, classes = read_channels(run_dir, task)
    grid = read_grid(cfg, task)
    default = validate_params(cfg.postprocess.default, task)
    if use_tta is None:  # the views of the run's planned orientation (plan.json), as its OOF was written
        use_tta = views_for_orientation(cfg.tta, read_plan(run_dir).orientation) != ["identity"]
    key = "tta" if use_tta else "plain"
    n_jobs = check_search_config(cfg, task)
    if task_of(task).class_per_pixel:
        return _search_class_maps(cfg, run_dir, channels, grid, default, key, n_jobs, write)

    images = oof_images(cfg, load_records(cfg), run_dir)
    points = grid.points()
    log.info(f"searching {len(points)} parameter sets on {len(images)} OOF images ({key} predictions, {n_jobs} jobs)")
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    searched = list(tqdm(
        parallel(delayed(_search_one)(image, key, grid, classes, len(channels)) for image in images),
        total=len(images), desc="search", unit="img",
    ))
    scores = np.stack([row for row, _ in searched])
    predicted = [cls for _, cls in searched]

    best = _best_index(scores)
    true_classes = [image.cls for image in images]
    per_class_index: dict[str, int] = {}
    if classes and cfg.postprocess.per_class:
        for cls in classes:
            members = np.array([c == cls for c in true_classes])
            if members.any():
                per_class_index[cls] = _best_index(scores[members])
    chosen_index = np.array([per_class_index.get(cls, best) if cls is not None else best for cls in predicted])
    final = scores[np.arange(len(images)), chosen_index]

    finals = list(tqdm(
        parallel(delayed(_final_one)(image, key, points[index], default, grid, len(channels))
                 for image, index in zip(images, chosen_index)),
        total=len(images), desc="score", unit="img",
    ))
    plain_scores = np.array([plain for plain, _ in finals])
    default_scores = np.array([at_default for _, at_default in finals])

    result = SearchResult(
        task=task,
        default=points[best],
        per_class={cls: points[index] for cls, index in per_class_index.items()},
        classes=list(classes),
        searched_on=key,
        n_images=len(images),
        oof_score=float(final.mean()),
        oof_score_plain=float(plain_scores.mean()),
        oof_score_default=float(default_scores.mean()),
        class_accuracy=float(np.mean([p == t for p, t in zip(predicted, true_classes)])) if classes else None,
        per_fold=_means_by(final, [image.fold for image in images]),
        per_class_score=_means_by(final, true_classes) if classes else {},
    )
    if write:
        result.write(RunDir(run_dir).postprocess)
        _write_table(RunDir(run_dir).search_table, grid, scores, images, classes)
        _plot_curves(RunDir(run_dir).search_curves, grid, scores.mean(axis=0), best)
    _print_summary(result, scores, best, per_class_index, true_classes)
    return result


def _count_one(image: OofImage, key: str, grid: Grid, n_channels: int) -> np.ndarray:
    return count_grid(image.truth, load_oof(image.path, key, image.truth.shape, n_channels), grid)


def _counts_at(image: OofImage, key: str, params: Mapping[str, Any], n_channels: int, task: str) -> np.ndarray:
    """Counts of one OOF image post-processed end to end with ``params`` (no reuse)."""
    probs = load_oof(image.path, key, image.truth.shape, n_channels)
    return class_map_counts(image.truth, instances_from_probs(probs, params, task), n_channels,
                            task_of(task).classes_overlap)


def _search_class_maps(cfg: Config, run_dir: Path, channels: Sequence[str], grid: Grid,
                       default: Mapping[str, Any], key: str, n_jobs: int, write: bool = True) -> SearchResult:
    """:func:`command_search` for the pixel-class tasks: ``min_area`` chosen on the OOF set's ``data.metric`` (mean IoU, or
    Severstal's Dice), per class when ``postprocess.per_class`` (see the module docstring), and the same outputs as
    the other tasks. Every metric scores the per-image class counts, so each grid point is counted once."""
    n_channels = len(channels)
    metric = task_metric(grid.task, cfg.data.metric)
    score_of, per_class_of = metric.counts_score, metric.counts_per_class
    assert score_of is not None and per_class_of is not None  # every class metric scores counts
    names = [channel.removeprefix("class:") for channel in channels[1:]]
    images = oof_images(cfg, load_records(cfg), run_dir)
    points = grid.points()
    log.info(f"searching {len(points)} parameter sets on {len(images)} OOF images ({key} predictions, {n_jobs} jobs)")
    parallel = Parallel(n_jobs=n_jobs, return_as="generator")
    counts = np.stack(list(tqdm(parallel(delayed(_count_one)(image, key, grid, n_channels) for image in images),
                                total=len(images), desc="search", unit="img")))  # (images, grid, 3, channels)
    scores = np.array([score_of(counts[:, g]) for g in range(len(points))])
    class_scores = [per_class_of(counts[:, g]) for g in range(len(points))]
    best = int(np.argmax(scores))  # the first on ties: the smallest min_area
    chosen_index = np.full(n_channels, best)
    if cfg.postprocess.per_class:
        for k in range(1, n_channels):
            per_point = [class_scores[g].get(k) for g in range(len(points))]
            if all(value is not None for value in per_point):
                chosen_index[k] = int(np.argmax(np.array(per_point, dtype=float)))
        chosen = {key: [points[g][key] for g in chosen_index[1:]] for key in grid.axes}
    else:
        chosen = points[best]
    # Classes are independent (module docstring), so the chosen counts are each class's column at its own index.
    chosen_counts = counts[:, chosen_index, :, np.arange(n_channels)].transpose(1, 2, 0)  # (images, 3, channels)
    finals = list(tqdm(parallel(delayed(_counts_at)(image, name, params, n_channels, grid.task)
                                for image in images for name, params in (("plain", chosen), (key, default))),
                       total=2 * len(images), desc="score", unit="img"))
    plain, at_default = np.stack(finals[0::2]), np.stack(finals[1::2])
    folds = np.array([image.fold for image in images])
    per_class = per_class_of(chosen_counts)
    result = SearchResult(
        task=grid.task,
        default=chosen,
        searched_on=key,
        n_images=len(images),
        oof_score=score_of(chosen_counts),
        oof_score_plain=score_of(plain),
        oof_score_default=score_of(at_default),
        per_fold={str(k): score_of(chosen_counts[folds == k]) for k in sorted(set(folds.tolist()))},
        per_class_score={names[k - 1]: value for k, value in per_class.items() if 0 < k <= len(names)},
    )
    table = pd.DataFrame(points)
    table["score"] = scores
    prefix = "iou" if metric.name == "mean_iou_classes" else metric.name
    for k, name in enumerate(names, start=1):
        table[f"{prefix}:{name}"] = [class_scores[g].get(k, np.nan) for g in range(len(points))]
    if write:
        result.write(RunDir(run_dir).postprocess)
        with atomic_path(RunDir(run_dir).search_table) as tmp:
            table.to_csv(tmp, index=False, float_format="%.6f")
        _plot_curves(RunDir(run_dir).search_curves, grid, scores, best)
    log.info(table.to_string(index=False, float_format="%.4f"))
    log.info(f"OOF {metric.name} {result.oof_score:.4f} ({key}, class_threshold {chosen['class_threshold']}, "
             f"min_area {chosen['min_area']})")
    log.info(f"  without TTA {result.oof_score_plain:.4f}; with postprocess.default {result.oof_score_default:.4f}")
    return result


def _print_summary(result: SearchResult, scores: np.ndarray, best: int, per_class_index: Mapping[str, int],
                   true_classes: Sequence[str | None]) -> None:
    rows = [{"params for": "all images", **result.default, "score (true class)": scores[:, best].mean()}]
    for cls, index in per_class_index.items():
        members = np.array([c == cls for c in true_classes])
        rows.append({"params for": cls, **result.per_class[cls], "score (true class)": scores[members, index].mean()})
    log.info(pd.DataFrame(rows).drop(columns=["fill_holes"], errors="ignore").to_string(index=False, float_format="%.4f"))
    accuracy = result.class_accuracy
    log.info(f"OOF score {result.oof_score:.4f} ({result.searched_on}, params of the predicted class"
          + (f", class accuracy {accuracy:.3f}" if accuracy is not None else "") + ")")
    log.info(f"  without TTA {result.oof_score_plain:.4f}; with postprocess.default {result.oof_score_default:.4f}")
