"""What a finished run gets right and wrong on its out-of-fold (OOF) images, as numbers.

Every OOF image is post-processed exactly as ``kseg search`` scored it (the searched array, the parameters of
its *predicted* class), so the per-fold and per-class means here are the ones in ``postprocess.json``; on
top come what the search does not keep: each image's score with and without TTA, its false positives,
misses and merges, the true and false matches at every IoU threshold, and the run's training histories,
stage times and (when the test images are annotated) single folds against the ensemble.

Errors are classified once, by :func:`classify_objects`, for the counts here and for the colours of the
overlays (``kseg.overlay``), so a picture and the numbers beside it always agree.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from tqdm.auto import tqdm

from kseg.config import Config, output_dir, submission_path
from kseg.data import ImageRecord, image_reader, load_records
from kseg.errors import DataError
from kseg.metric import THRESHOLDS, match_counts, object_overlaps, task_score
from kseg.pipeline import stage_seconds
from kseg.plan import read_plan
from kseg.postprocess import PARAM_KEYS, instances_from_probs, label_objects, predict_class
from kseg.predict import read_fold_scores
from kseg.run import RunDir
from kseg.search import OofImage, SearchResult, check_search_config, load_oof, oof_images, read_search_result
from kseg.targets import read_channels
from kseg.tasks import task_of
from kseg.tta import views_for_orientation

__all__ = ["ERROR_KINDS", "MATCH_IOU", "MERGE_SHARE", "ObjectErrors", "classify_objects", "Scoring",
           "OofPrediction", "RunOof", "read_run_oof", "OofAnalysis", "analyse_oof", "param_profiles"]

# The kinds of object an overlay colours and the analysis counts, in drawing order.
ERROR_KINDS = ("missed", "matched", "false positive", "merged")
# The competition's lowest IoU threshold: a match there is one-to-one (see metric.image_score).
MATCH_IOU = 0.5
# A true object more than this share inside one predicted object belongs to it; a prediction holding two or
# more true objects that way merged them (the watershed found one seed where there were several cells).
MERGE_SHARE = 0.5
# Starting joblib's worker processes costs seconds (each imports numpy, scipy, scikit-image and kseg), more than
# analysing a few dozen images takes: smaller runs are analysed in this process.
_PROCESSES_FROM = 50


@dataclass(frozen=True)
class ObjectErrors:
    """Labels of the predicted objects by kind (``matched``, ``false_positive``, ``merged``) and of the true
    objects nobody found (``missed``: no match and not swallowed by a merge)."""

    matched: np.ndarray
    false_positive: np.ndarray
    merged: np.ndarray
    missed: np.ndarray

    def counts(self) -> dict[str, int]:
        """Number of objects of each kind, keyed as :data:`ERROR_KINDS`."""
        return {"missed": len(self.missed), "matched": len(self.matched),
                "false positive": len(self.false_positive), "merged": len(self.merged)}


def classify_objects(truth: np.ndarray, pred: np.ndarray) -> ObjectErrors:
    """Sort the objects of a prediction against the truth (label images of one image).

    A predicted object holding more than :data:`MERGE_SHARE` of two or more true objects is a merge (even if
    it also matches one of them); otherwise it is matched when its IoU with a true object exceeds
    :data:`MATCH_IOU`, else a false positive. A true object without a match that is not part of a merge is
    missed: a split cell shows as a miss plus false positives.
    """
    pairs = object_overlaps(truth, pred)
    matches = pairs.iou() > MATCH_IOU
    inside = pairs.intersection > MERGE_SHARE * pairs.truth_area[:, None]
    merged = inside.sum(axis=0) >= 2
    found = matches.any(axis=0)
    missed = ~matches.any(axis=1) & ~(inside & merged[None, :]).any(axis=1)
    return ObjectErrors(matched=pairs.pred_ids[found & ~merged], false_positive=pairs.pred_ids[~found & ~merged],
                        merged=pairs.pred_ids[merged], missed=pairs.truth_ids[missed])


@dataclass(frozen=True)
class Scoring:
    """How a run turns an OOF image's probabilities into instances: the searched array (``key``), the class
    prediction and the chosen parameters of that class, as ``kseg search`` scored it and ``kseg predict`` does."""

    task: str
    classes: tuple[str, ...]
    n_channels: int
    chosen: SearchResult
    key: str
    metric: str = "auto"

    def probabilities(self, image: OofImage, key: str) -> np.ndarray:
        """The image's OOF array ``key`` (``plain`` or ``tta``), uint8 probabilities ×255."""
        return load_oof(image.path, key, image.truth.shape, self.n_channels)

    def predict(self, image: OofImage) -> tuple[np.ndarray, str | None, dict]:
        """(instances, predicted class, parameters used) of one OOF image."""
        probs = self.probabilities(image, self.key)
        cls = predict_class(probs, list(self.classes)) if self.classes else None
        params = self.chosen.params_for(cls)
        return instances_from_probs(probs, params, self.task), cls, params


@dataclass(frozen=True)
class OofPrediction:
    """One OOF image with its truth and its post-processed prediction, what an overlay draws."""

    id: str
    fold: int
    cls: str | None
    predicted_cls: str | None
    image: np.ndarray
    truth: np.ndarray
    pred: np.ndarray
    score: float

    @property
    def title(self) -> str:
        predicted = f", predicted {self.predicted_cls}" if self.predicted_cls is not None else ""
        return f"{self.id} (fold {self.fold}, {self.cls or 'no class'}{predicted}): score {self.score:.3f}"


@dataclass(frozen=True)
class RunOof:
    """A trained run's OOF images (with their truth and image files) and how it scores them."""

    run_dir: Path
    scoring: Scoring
    images: dict[str, OofImage]
    image_paths: dict[str, Path]
    read: Callable[[Path], np.ndarray]  # the run's image reader (data.image_reader)

    def image(self, image_id: str) -> OofImage:
        """The OOF image ``image_id``; a DataError names the id and why it has no OOF prediction."""
        if image_id not in self.images:
            raise DataError(f"image id {image_id!r} has no OOF prediction in {self.run_dir}: it is not a training "
                            f"image, or its fold is not trained yet ({len(self.images)} OOF images, e.g. "
                            f"{', '.join(sorted(self.images)[:3])})")
        return self.images[image_id]

    def prediction(self, image_id: str) -> OofPrediction:
        """Image, truth and post-processed OOF prediction of ``image_id``."""
        oof = self.image(image_id)
        pred, cls, _ = self.scoring.predict(oof)
        return OofPrediction(oof.id, oof.fold, oof.cls, cls, self.read(self.image_paths[image_id]), oof.truth, pred,
                             task_score(oof.truth, pred, self.scoring.task, self.scoring.metric))


def read_run_oof(cfg: Config, records: Sequence[ImageRecord] | None = None, *, require_search: bool = True) -> RunOof:
    """The run of ``cfg`` read for analysis; a DataError naming what is missing when it is not far enough.

    ``require_search``: the analysis and the report need ``postprocess.json`` (a run without a search is not
    finished); an overlay of OOF predictions can do with ``postprocess.default`` (with a warning).
    """
    task = cfg.data.task
    run_dir = output_dir(cfg)
    if not run_dir.is_dir():
        raise DataError(f"run folder {run_dir} (output.dir) not found: run `kseg run` with this config first")
    channels, classes = read_channels(run_dir, task)
    if require_search and not RunDir(run_dir).postprocess.is_file():
        raise DataError(f"{RunDir(run_dir).postprocess} not found: the run {run_dir} is not finished (trained but "
                        f"not searched); finish it with `kseg run` or `kseg search`")
    chosen = read_search_result(cfg)
    key = chosen.searched_on or (
        "tta" if views_for_orientation(cfg.tta, read_plan(run_dir).orientation) != ["identity"] else "plain")
    records = load_records(cfg, progress=False) if records is None else records
    images = {image.id: image for image in oof_images(cfg, records, run_dir)}
    return RunOof(run_dir, Scoring(task, tuple(classes), len(channels), chosen, key, cfg.data.metric), images,
                  {record.id: record.image_path for record in records}, image_reader(cfg))


def _analyse_one(image: OofImage, scoring: Scoring) -> tuple[dict[str, Any], np.ndarray]:
    """One OOF image's row (scores, object counts by kind) and its true positives at every IoU threshold."""
    pred, cls, params = scoring.predict(image)
    plain = pred if scoring.key == "plain" else instances_from_probs(scoring.probabilities(image, "plain"), params,
                                                                     scoring.task)
    truth_objects, pred_objects = label_objects(image.truth, scoring.task), label_objects(pred, scoring.task)
    true_positives, n_true, n_pred = match_counts(truth_objects, pred_objects, THRESHOLDS)
    row = {"id": image.id, "fold": image.fold, "cls": image.cls, "predicted_cls": cls,
           "score": task_score(image.truth, pred, scoring.task, scoring.metric),
           "score_plain": task_score(image.truth, plain, scoring.task, scoring.metric),
           "n_true": n_true, "n_pred": n_pred, **classify_objects(truth_objects, pred_objects).counts()}
    return row, true_positives


def param_profiles(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Score against each post-processing parameter, the others held at their best (per score column).

    ``table`` is the run's ``search_table.csv``; each result is indexed by the parameter's values with one
    column for all images (``all``) and one per class, each through that column's own best point, which is
    how the search chooses the global and the per-class parameters.
    """
    params = [key for key in PARAM_KEYS["instance"] if key in table.columns]
    score_columns = {"all": "score", **{c[len("score:"):]: c for c in table.columns if c.startswith("score:")}}
    profiles: dict[str, pd.DataFrame] = {}
    for param in params:
        columns = {}
        for name, column in score_columns.items():
            best = table.loc[table[column].idxmax()]
            at_best = pd.Series(True, index=table.index)
            for other in params:
                if other != param:
                    at_best &= table[other] == best[other]
            columns[name] = table[at_best].set_index(param)[column].sort_index()
        profiles[param] = pd.DataFrame(columns)
    return profiles


@dataclass(frozen=True)
class OofAnalysis:
    """The OOF analysis of one run. ``images`` has one row per OOF image (id, fold, cls, predicted_cls, score,
    score_plain, n_true, n_pred and the counts of :data:`ERROR_KINDS`); ``by_threshold`` the true positives,
    false positives and false negatives summed over images at each IoU threshold."""

    run: RunOof
    images: pd.DataFrame
    by_threshold: pd.DataFrame
    search_table: pd.DataFrame | None
    histories: dict[str, pd.DataFrame]
    stage_seconds: dict[str, float]
    fold_scores: dict | None
    plan: str

    @property
    def chosen(self) -> SearchResult:
        """``postprocess.json``: the chosen parameters and the search's own scores."""
        return self.run.scoring.chosen

    def _means(self, by: str) -> pd.DataFrame:
        grouped = self.images.groupby(by)
        table = pd.DataFrame({"images": grouped.size(), "score": grouped["score"].mean(),
                              "score_plain": grouped["score_plain"].mean()})
        table["tta_gain"] = table["score"] - table["score_plain"]
        return table

    def per_fold(self) -> pd.DataFrame:
        """Images, OOF score (searched array), score without TTA and the TTA gain of each fold."""
        return self._means("fold")

    def per_class(self) -> pd.DataFrame | None:
        """As :meth:`per_fold`, by true class; ``None`` for a run without classes."""
        return self._means("cls") if self.run.scoring.classes else None

    def confusion(self) -> pd.DataFrame | None:
        """Images of each true class (rows) predicted as each class (columns); ``None`` without classes."""
        if not self.run.scoring.classes:
            return None
        classes = list(self.run.scoring.classes)
        table = pd.crosstab(self.images["cls"], self.images["predicted_cls"])
        table = table.reindex(index=classes, columns=classes, fill_value=0)
        return table.rename_axis(index="true", columns="predicted")

    def worst(self, n: int = 4) -> list[str]:
        """Ids of the ``n`` lowest-scoring OOF images (ties by id)."""
        return self.images.sort_values(["score", "id"])["id"].head(n).tolist()

    def param_profiles(self) -> dict[str, pd.DataFrame]:
        """:func:`param_profiles` of the run's search table (empty when the table is missing)."""
        return {} if self.search_table is None else param_profiles(self.search_table)

    def summary(self) -> pd.DataFrame:
        """The headline numbers, one per row (``what``, ``value``), for a notebook or the report."""
        chosen, images = self.chosen, self.images
        score, plain = images["score"].mean(), images["score_plain"].mean()
        if task_of(self.run.scoring.task).class_per_pixel:  # a set's mean IoU (summed pixels) is not the mean of its images'
            score, plain = chosen.oof_score, chosen.oof_score_plain
        rows = [("OOF images (folds)", f"{len(images)} ({', '.join(map(str, sorted(images['fold'].unique())))})"),
                (f"OOF score ({self.run.scoring.key} predictions, searched parameters)", f"{score:.4f}"),
                ("without TTA (TTA gain)", f"{plain:.4f} ({score - plain:+.4f})")]
        if chosen.oof_score_default is not None:
            rows.append(("with postprocess.default (search gain)",
                         f"{chosen.oof_score_default:.4f} ({score - chosen.oof_score_default:+.4f})"))
        if self.run.scoring.classes:
            rows.append(("class prediction accuracy", f"{(images['cls'] == images['predicted_cls']).mean():.3f}"))
        if self.fold_scores:
            best_fold = max(self.fold_scores["per_fold"].items(), key=lambda item: item[1])
            rows.append((f"annotated test images ({self.fold_scores['n_images']}): ensemble (best single fold)",
                         f"{self.fold_scores['ensemble']:.4f} ({best_fold[0]} {best_fold[1]:.4f})"))
        rows.append(("plan", self.plan))
        rows.append(("parameters (all images)", _params_text(chosen.default)))
        for cls, params in sorted(chosen.per_class.items()):
            rows.append((f"parameters ({cls})", _params_text(params)))
        return pd.DataFrame(rows, columns=["what", "value"])


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{key} {value}" for key, value in params.items())


def _histories(run_dir: Path) -> dict[str, pd.DataFrame]:
    run = RunDir(run_dir)
    return {run.fold(k).name: pd.read_csv(run.history(k)) for k in run.folds_with(run.history(0).name)}


def analyse_oof(cfg: Config, records: Sequence[ImageRecord] | None = None, *, progress: bool = True) -> OofAnalysis:
    """The OOF analysis of the finished run of ``cfg`` (see :class:`OofAnalysis`); images in parallel
    (``postprocess.n_jobs``), each post-processed once or twice (with and without TTA), a fraction of what the
    search costs."""
    run = read_run_oof(cfg, records)
    images = [run.images[image_id] for image_id in sorted(run.images)]
    n_jobs = check_search_config(cfg, run.scoring.task)
    if len(images) < _PROCESSES_FROM:
        n_jobs = 1
    results = list(tqdm(Parallel(n_jobs=n_jobs, return_as="generator")(
        delayed(_analyse_one)(image, run.scoring) for image in images),
        total=len(images), desc="analyse OOF", unit="img", disable=not progress))
    rows = pd.DataFrame([row for row, _ in results])
    true_positives = np.sum([tp for _, tp in results], axis=0)
    n_true, n_pred = int(rows["n_true"].sum()), int(rows["n_pred"].sum())
    by_threshold = pd.DataFrame({"tp": true_positives, "fp": n_pred - true_positives, "fn": n_true - true_positives},
                                index=pd.Index(THRESHOLDS, name="iou_threshold"))
    table_path = RunDir(run.run_dir).search_table
    return OofAnalysis(
        run=run, images=rows, by_threshold=by_threshold,
        search_table=pd.read_csv(table_path) if table_path.is_file() else None,
        histories=_histories(run.run_dir), stage_seconds=stage_seconds(cfg),
        fold_scores=read_fold_scores(submission_path(cfg)),
        plan=read_plan(run.run_dir).reason,
    )
