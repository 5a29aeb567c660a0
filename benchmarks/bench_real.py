"""The real-data scoreboard (issues 8 and 16): on every real set, held-out test images, the same wall-clock
training budget for every trained row, kseg with its *shipped defaults* against the baselines a user
would otherwise run.

Rows per set, in one run: the classical baseline, tuned on the training images (instance: Otsu + distance
watershed; binary: Otsu threshold or the all-empty submission, whichever scores higher); the plain
notebook U-Net (foreground only, threshold 0.5, connected components for instances); a notebook U-Net
with the tricks that need no kseg (instance: issue 8's fg+border U-Net, from scratch, standardised and
polarity-corrected input, cosine LR, watershed, 4-flip TTA; binary: the same small U-Net with a
foreground output, standardised input, cosine LR, 4-flip TTA); ``kseg run`` on
``configs/real/<set>.yaml`` with only the budget overrides of :func:`kseg_budget_overrides`, scored on
its own submission; then the kseg stages recomputed from that run's fold models (fold 0 with default
post-processing, + OOF search, + TTA, + fold ensemble). Metric by the set's task, each test image scored
by ``kseg.metric.task_score`` (the score kseg's search optimises) and averaged: instance sets
mAP@[.5:.95], with foreground Dice beside it and mAP per value of the set's class / report column;
binary sets the foreground Dice (both empty = 1); the multi-class set (CamVid) the mean IoU over classes,
each class's IoU from pixels summed over all held-out images (``kseg.metric.TaskScores``; void ignored,
averaged over the classes the held-out truth has), with each class's IoU beside it. Its classical row is the
location prior (the most frequent class at each pixel position in training), its plain notebook a resnet18
softmax U-Net with argmax, its notebook variant the small softmax U-Net with standardised input, masked
CE + Dice, cosine LR and 4-flip TTA.

``python -m benchmarks.bench_real --sets he_nuclei,phase_cells_usiigaci --budget 600`` runs some sets,
keeps each set's table in ``benchmarks/results/real/<set>.md`` and reassembles BENCHMARKS.md;
``--seeds 0,1,2`` trains every trained row once per seed and reports the mean, each seed's score in its notes
(one short from-scratch run varies by more than most gaps between rows); ``--quick`` (128 px crops, 2 steps,
printed only) checks that everything runs.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

import kseg  # noqa: F401  (sets the Keras 2 environment before any TensorFlow import)
from kseg.config import Config, load_config, submission_path, with_values
from kseg.data import class_names, load_records, read_csv, read_image, schema_from_config
from kseg.files import write_text
from kseg.metric import TaskScores, dice
from kseg.pipeline import command_run
from kseg.plan import restore_probabilities
from kseg.postprocess import instances_from_probs, predict_class
from kseg.predict import load_fold_models, model_input, planned_views
from kseg.search import SearchResult, command_search, read_search_result
from kseg.submission import submission_labels
from kseg.targets import channel_names, read_channels
from kseg.train import run_classes
from kseg.tta import predict_image

from .baselines import (
    TrainBudget,
    fit_location_prior,
    fit_otsu_binary,
    fit_otsu_watershed,
    location_prior,
    otsu_binary,
    otsu_watershed,
    plain_unet_foreground,
    predict_fg_unet,
    predict_fgborder_unet,
    predict_plain_softmax_unet,
    predict_plain_unet,
    predict_softmax_unet,
    train_fg_unet,
    train_fgborder_unet,
    train_plain_softmax_unet,
    train_plain_unet,
    train_softmax_unet,
)
from .real_sets import REPO, SETS, SHARED, prepare

WORK = REPO / "runs" / "bench_real"
CONFIGS = REPO / "configs" / "real"
RESULTS = Path(__file__).parent / "results"
SET_RESULTS = RESULTS / "real"
DEFAULT_SETS = ("isbi2012_membrane", "isbi2012_binary", "sartorius_mini", "fluo_nuclei_sbsst265", "he_nuclei",
                "phase_cells_usiigaci", "mixed_nuclei", "polyps_kvasir", "camvid_multiclass")
# 9 sets x 3 trained rows x 240 s = 96 min of training; kseg's OOF, search and prediction and the stage rows take the
# rest (each set's total time is in its table; the 6 instance sets took 88 min in all on 2026-12-02).
DEFAULT_BUDGET = 240

# kseg's budget mapping. kseg gets (256 px crops, batch 8, as the baselines) as many optimizer steps as its own
# network makes in the budget — seconds per step measured on this machine in the same run, just before it trains
# (:func:`kseg_seconds_per_step`) — as `train.budget_steps`: its plan decides how many of its default 5 folds to
# train on them (plan.py). KSEG_EPOCHS epochs per fold, each ending with a whole-image validation. Its validation,
# OOF, search and prediction time comes on top and is reported in its row.
KSEG_EPOCHS = 4
# No ImageNet weights can be downloaded here, so kseg trains from scratch (model.arch auto then builds the network
# it ships for that, unet_scratch).
FROM_SCRATCH = ["model.encoder_weights=null"]
QUICK_BUDGET = TrainBudget(seconds=60, size=64, batch=2, max_steps=2)
# The set's metric by task: its column header and the prefix of its per-class columns.
METRIC_NAMES = {"instance": ("mAP@[.5:.95]", "mAP"), "binary": ("Dice", "Dice"), "multiclass": ("mean IoU", "IoU")}
PLAIN_TITLES = {"instance": "plain notebook U-Net (resnet18, fg only, thr 0.5, CC)",
                "binary": "plain notebook U-Net (resnet18, fg only, thr 0.5)",
                "multiclass": "plain notebook U-Net (resnet18, softmax, CE, argmax)"}


def kseg_seconds_per_step(cfg: Config, n_channels: int, size: int = 256, batch: int = 8, repeats: int = 5) -> float:
    """Seconds per optimizer step of kseg's configured network on this machine: ``repeats`` timed
    ``train_on_batch`` calls on random crops after two warm-up calls (graph building)."""
    from kseg.model import build_model
    from kseg.train import compile_model

    model = build_model(cfg, n_channels)
    compile_model(model, cfg, n_channels)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    y = (rng.random((batch, size, size, n_channels)) > 0.5).astype(np.float32)
    for _ in range(2):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(repeats):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / repeats


def kseg_budget_overrides(budget_seconds: float, seconds_per_step: float, quick: bool = False) -> list[str]:
    """The only ``--set`` overrides kseg gets: its training length for the wall-clock budget (all folds
    together, at ``seconds_per_step``), training from scratch (no internet for ImageNet weights here), quiet
    logs. Everything else is kseg's default."""
    common = [*FROM_SCRATCH, "train.verbose=0"]
    if quick:
        return common + ["train.size=64", "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2"]
    steps = max(KSEG_EPOCHS, int(budget_seconds / seconds_per_step))
    return common + ["train.size=256", "train.batch_size=8", f"train.epochs={KSEG_EPOCHS}", f"train.budget_steps={steps}"]


@dataclass
class Row:
    """One scoreboard row: mean scores over the test images, mAP per class, wall time, what it did."""

    method: str
    score: float
    dice: float
    per_class: dict[str, float] = field(default_factory=dict)
    seconds: float | None = None
    note: str = ""


@dataclass
class TestSet:
    """The held-out images as every row sees them (uint8 RGB from ``read_image``) with truth and class, and
    the task whose metric scores them (``kseg.metric.TaskScores``). ``pixel_classes``: a multiclass set's class
    names in class-id order (its per-class columns are each class's IoU)."""

    images: list[np.ndarray]
    truths: list[np.ndarray]
    classes: list[str | None]
    task: str = "instance"
    pixel_classes: list[str] = field(default_factory=list)

    def scores(self) -> TaskScores:
        """An empty accumulator of this set's metric."""
        return TaskScores(self.task)

    def row(self, method: str, preds: Sequence[np.ndarray], seconds: float | None = None, note: str = "") -> Row:
        scores = self.scores()
        for truth, pred in zip(self.truths, preds):
            scores.add(truth, pred)
        return self.row_from_scores(method, scores, [dice(t > 0, p > 0) for t, p in zip(self.truths, preds)],
                                    seconds, note)

    def row_from_scores(self, method: str, scores: TaskScores, dices: Sequence[float],
                        seconds: float | None = None, note: str = "") -> Row:
        per_class = {}
        if self.pixel_classes:
            per_class = {self.pixel_classes[k - 1]: v for k, v in scores.class_scores().items()
                         if 0 < k <= len(self.pixel_classes)}
        elif len(set(self.classes)) > 1:
            per_class = {str(k): float(v) for k, v in
                         pd.Series(scores.per_image).groupby(pd.Series(self.classes)).mean().items()}
        return Row(method, scores.score, float(np.mean(dices)), per_class, seconds, note)


def _side_config(cfg: Config, csv: str, folder: str) -> Config:
    """The same config reading another CSV/folder pair (the held-out truth is loaded like training data)."""
    return with_values(cfg, {"data.train_csv": csv, "data.train_dir": folder})


def _test_set(cfg: Config, report_col: str | None, pixel_classes: Sequence[str] = ()) -> TestSet:
    records = load_records(_side_config(cfg, "test_truth.csv", "test"), progress=False)
    classes: list[str | None] = [r.cls for r in records]
    if report_col is not None:
        frame = read_csv(Path(cfg.data.root) / "test_truth.csv")
        first = frame.drop_duplicates(schema_from_config(cfg).id_col).set_index(schema_from_config(cfg).id_col)
        classes = [str(first.loc[r.id, report_col]) for r in records]
    return TestSet([read_image(r.image_path) for r in records], [r.labels for r in records], classes,
                   cfg.data.task, list(pixel_classes))


def _submission_labels(cfg: Config, ids: Sequence[str], shapes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
    """kseg's submission decoded back to label images (class maps for multiclass), in the order of the test
    records."""
    labels = submission_labels(submission_path(cfg), schema_from_config(cfg), dict(zip(ids, shapes)))
    return [labels[i] for i in ids]


def _stage_seconds(cfg: Config) -> float:
    """Seconds of every kseg stage of the run, from its own stage markers."""
    stages = Path(cfg.output.dir) / "stages"
    return sum(json.loads(p.read_text()).get("seconds", 0.0) for p in stages.glob("*.json"))


def _kseg_stage_rows(cfg: Config, test: TestSet) -> list[Row]:
    """Each stage added alone, from the run's fold models: one image at a time, so the K x views
    probability maps of large images are never all in memory.

    The rows without TTA are post-processed with parameters searched on the OOF without TTA (searched here,
    the run's files untouched), the rows with TTA with the run's own: each is what kseg would ship for it.
    """
    models = load_fold_models(cfg)
    prepare = model_input(cfg)
    task = cfg.data.task
    _, classes = read_channels(Path(cfg.output.dir), task)
    chosen = read_search_result(cfg)
    searched_plain = command_search(cfg, use_tta=False, write=False)
    default = cfg.postprocess.default

    def instances(probs: np.ndarray, params: Mapping[str, Any] | SearchResult) -> np.ndarray:
        cls = predict_class(probs, classes) if classes else None
        return instances_from_probs(probs, params.params_for(cls) if isinstance(params, SearchResult) else params, task)

    variants: list[tuple[str, Callable[[list, list], np.ndarray]]] = [
        ("kseg stage: fold 0 only, no TTA, default post-processing", lambda p, t: instances(p[0], default)),
        ("kseg stage: + OOF-searched post-processing (searched without TTA)", lambda p, t: instances(p[0], searched_plain)),
        ("kseg stage: + TTA", lambda p, t: instances(t[0], chosen)),
        (f"kseg stage: + fold ensemble ({len(models)} folds)", lambda p, t: instances(np.mean(t, axis=0), chosen)),
        ("kseg stage: fold ensemble without TTA", lambda p, t: instances(np.mean(p, axis=0), searched_plain)),
    ]
    scores: dict[str, TaskScores] = {title: test.scores() for title, _ in variants}
    dices: dict[str, list[float]] = {title: [] for title, _ in variants}
    tta_views = planned_views(cfg)  # the views kseg's own prediction used (its planned orientation)
    for image, truth in zip(test.images, test.truths):
        x = prepare(image)
        # One forward pass per fold and view: the TTA mean is the mean of the views (kseg merges by mean),
        # and the identity view is the no-TTA prediction.
        views = [[restore_probabilities(predict_image(fn, x, [v], tile=cfg.predict.tile), image.shape[:2])
                  for v in tta_views] for fn in models]
        tta = [np.mean(per_view, axis=0) for per_view in views]
        plain = ([per_view[tta_views.index("identity")] for per_view in views] if "identity" in tta_views else
                 [restore_probabilities(predict_image(fn, x, ["identity"], tile=cfg.predict.tile), image.shape[:2])
                  for fn in models])
        for title, make in variants:
            pred = make(plain, tta)
            scores[title].add(truth, pred)
            dices[title].append(dice(truth > 0, pred > 0))
    return [test.row_from_scores(title, scores[title], dices[title]) for title, _ in variants]


def _classical_row(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], test: TestSet, stain: str) -> Row:
    """The classical baseline of the set's task, fitted on the training images (its time includes the fit)."""
    start = time.perf_counter()
    if test.task == "multiclass":
        prior = fit_location_prior(truths, len(test.pixel_classes))
        preds = [location_prior(prior, image.shape[:2]) for image in test.images]
        return test.row("classical: location prior (the most frequent training class at each pixel)", preds,
                        time.perf_counter() - start, "no learning")
    if test.task == "binary":
        fitted = fit_otsu_binary(images, truths)
        preds = [otsu_binary(image, fitted) for image in test.images]
        chosen = ("all-empty submission" if fitted["empty"] else
                  f"Otsu, {'bright' if fitted['bright_objects'] else 'dark'} objects, "
                  f"{'all components' if fitted['components'] == 'all' else 'largest component'}")
        return test.row("classical: Otsu threshold (gray) or all-empty, the better on train", preds,
                        time.perf_counter() - start, f"{chosen}; train Dice {fitted['score']:.4f}")
    fitted = fit_otsu_watershed(images, truths, stain)
    preds = [otsu_watershed(image, fitted["bright_objects"], fitted["min_area"], stain) for image in test.images]
    return test.row(f"classical: Otsu + distance watershed ({'haematoxylin' if stain == 'hed' else 'gray'}, "
                    "tuned on train)", preds, time.perf_counter() - start,
                    f"{'bright' if fitted['bright_objects'] else 'dark'} objects, min area {fitted['min_area']}")


def _notebook_row(images: Sequence[np.ndarray], truths: Sequence[np.ndarray], test: TestSet,
                  budget: TrainBudget) -> Row:
    """The notebook U-Net with the tricks that need no kseg, for the set's task, trained for ``budget``."""
    start = time.perf_counter()
    if test.task == "multiclass":
        trained = train_softmax_unet(images, truths, len(test.pixel_classes), budget)
        preds = [predict_softmax_unet(trained.model, image) for image in test.images]
        title = "notebook softmax U-Net (small U-Net, standardised, masked CE + Dice, cosine, 4-flip TTA, argmax)"
    elif test.task == "binary":
        trained = train_fg_unet(images, [t > 0 for t in truths], budget)
        preds = [predict_fg_unet(trained.model, image) for image in test.images]
        title = "notebook fg U-Net (small U-Net, standardised, cosine, 4-flip TTA, thr 0.5)"
    else:
        trained = train_fgborder_unet(images, truths, budget)
        preds = [predict_fgborder_unet(trained.model, image) for image in test.images]
        title = "notebook fg+border U-Net (standardised, inverted, cosine, watershed, 4-flip TTA)"
    return test.row(title, preds, time.perf_counter() - start, f"{trained.steps} steps in {trained.seconds:.0f}s")


def mean_row(rows: Sequence[Row]) -> Row:
    """One row for the same method trained on several seeds: the mean of every score and time, each seed's
    score in the note (the spread says how far one run's number can be trusted)."""
    if len(rows) == 1:
        return rows[0]
    seconds = [r.seconds for r in rows if r.seconds is not None]
    per_class = {c: float(np.mean([r.per_class[c] for r in rows])) for c in rows[0].per_class}
    spread = f"mean of {len(rows)} seeds: " + ", ".join(f"{r.score:.4f}" for r in rows)
    note = f"{spread}; first seed: {rows[0].note}" if rows[0].note else spread
    return Row(rows[0].method, float(np.mean([r.score for r in rows])), float(np.mean([r.dice for r in rows])),
               per_class, float(np.mean(seconds)) if seconds else None, note)


def _trained_rows(name: str, root: Path, work: Path, train_images: Sequence[np.ndarray], train_truths: Sequence[np.ndarray],
                  test: TestSet, budget: TrainBudget, overrides: list[str], stages: bool,
                  keep_run: bool = False) -> list[Row]:
    """The rows that train, on ``budget.seed`` (kseg: ``train.seed``): plain notebook, notebook with tricks,
    kseg's run and (``stages``) its stage rows. ``overrides``: kseg's budget overrides; ``keep_run``: resume
    the kseg run an interrupted benchmark left (its finished stages are kept)."""
    start = time.perf_counter()
    if test.task == "multiclass":
        plain = train_plain_softmax_unet(train_images, train_truths, len(test.pixel_classes), budget)
        preds = [predict_plain_softmax_unet(plain.model, image) for image in test.images]
    else:
        plain = train_plain_unet(train_images, [t > 0 for t in train_truths], budget)
        predict = predict_plain_unet if test.task == "instance" else plain_unet_foreground
        preds = [predict(plain.model, image) for image in test.images]
    rows = [test.row(PLAIN_TITLES[test.task], preds, time.perf_counter() - start,
                     f"{plain.steps} steps in {plain.seconds:.0f}s"),
            _notebook_row(train_images, train_truths, test, budget)]

    if not keep_run:
        shutil.rmtree(work / "kseg", ignore_errors=True)  # nothing from an earlier run or seed may leak in
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.root={root}", f"output.dir={work / 'kseg'}", *overrides,
                                                 f"train.seed={budget.seed}"])
    command_run(cfg)
    tests = load_records(_side_config(cfg, "test_truth.csv", "test"), progress=False)
    preds = _submission_labels(cfg, [r.id for r in tests], [r.shape for r in tests])
    rows.append(test.row("**kseg run, shipped defaults**", preds, _stage_seconds(cfg), "all folds, searched, TTA"))
    return rows + (_kseg_stage_rows(cfg, test) if stages else [])


def evaluate_set(name: str, budget_seconds: float, quick: bool, resume: bool = False,
                 stages: bool = True, crop: int = 256, batch: int = 8,
                 seeds: Sequence[int] = (TrainBudget.seed,)) -> tuple[list[Row], dict]:
    """All rows of one set, and facts for the table header (split sizes, budgets). Every trained row is
    trained once per seed and reported as the mean (:func:`mean_row`). ``stages=False`` skips
    the stage rows: they predict every test image again with every fold and view (on 1024x1280 images on
    this CPU, about as long as kseg's own prediction)."""
    spec = SETS[name]
    work = WORK / ("quick" if quick else "full") / name
    root = prepare(name, work / "data" if quick else None, quick=quick)
    # The data, the test set and kseg's network come from this config; its step budget (here at a placeholder
    # 1 s per step) is replaced once kseg's network has been timed, below.
    overrides = kseg_budget_overrides(budget_seconds, 1.0, quick)
    cfg = load_config(CONFIGS / f"{name}.yaml", [f"data.root={root}", f"output.dir={work / 'kseg'}", *overrides])
    train_records = load_records(cfg, progress=False)
    train_truths = [r.labels for r in train_records]
    test = _test_set(cfg, spec.report_col, class_names(cfg, train_records))
    train_images = [read_image(r.image_path) for r in train_records]
    budget = QUICK_BUDGET if quick else TrainBudget(seconds=budget_seconds, size=crop, batch=batch)
    rows = [_classical_row(train_images, train_truths, test, spec.stain)]

    # kseg trains as many steps of its network, on the same crops and batch, as fit in the budget on this machine.
    if not quick:
        task = cfg.data.task
        n_channels = len(channel_names(task, class_names(cfg, train_records) or run_classes(train_records, task)))
        overrides = kseg_budget_overrides(budget_seconds, kseg_seconds_per_step(cfg, n_channels, budget.size,
                                                                                budget.batch))
    per_seed = [_trained_rows(name, root, work, train_images, train_truths, test, replace(budget, seed=seed),
                              overrides, stages, keep_run=resume) for seed in seeds]
    rows += [mean_row(same) for same in zip(*per_seed)]
    facts = {"n_train": len(train_records), "n_test": len(test.images), "budget": budget, "overrides": overrides,
             "task": test.task, "seeds": list(seeds),
             "classes": test.pixel_classes or (sorted({str(c) for c in test.classes}) if len(set(test.classes)) > 1
                                               else [])}
    return rows, facts


def _commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def set_table(name: str, rows: list[Row], facts: dict, budget_seconds: float, quick: bool) -> str:
    """The markdown of one set: what ran where, then one row per method."""
    from .run import machine_line

    budget: TrainBudget = facts["budget"]
    classes = facts["classes"]
    metric, short = METRIC_NAMES[facts["task"]]
    # A binary set's metric is the foreground Dice itself; a multiclass set has no foreground (void is not one).
    with_dice = facts["task"] == "instance"
    header = ["method", metric, *(["fg Dice"] if with_dice else []), *(f"{short} {c}" for c in classes), "time", "notes"]
    lines = [f"### {name}", "",
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit `{_commit()}`, {machine_line()}"
             f"{', QUICK smoke run' if quick else ''}. "
             f"{facts['n_train']} training / {facts['n_test']} held-out images. "
             + (f"Quick: the baselines train at most {budget.max_steps} steps of {budget.batch} x {budget.size} px crops. "
                if quick else
                f"Every trained row gets {budget_seconds:.0f} s of training: the baselines train on {budget.size} px "
                f"crops, batch {budget.batch}, until the time is spent; kseg gets as many optimizer steps on the same "
                "crops and batch as its own network makes in that time on this machine (timed just before it trains), "
                "over the folds it trains; its input pipeline, validation, OOF, search and prediction come on top "
                "(its row's time). ")
             + f"kseg's only overrides: `{' '.join(facts['overrides'])}`."
             + (f" Every trained row is the mean of seeds {', '.join(map(str, facts['seeds']))} (the baselines' "
                "crops and initialisation, kseg's `train.seed`); each seed's score is in its notes."
                if len(facts.get("seeds", ())) > 1 else ""), "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [row.method, f"{row.score:.4f}", *([f"{row.dice:.4f}"] if with_dice else []),
                 *(f"{row.per_class.get(c, float('nan')):.4f}" for c in classes),
                 "" if row.seconds is None else f"{row.seconds:.0f}s", row.note]
        lines.append("| " + " | ".join(cells) + " |")
    at = next(i for i, r in enumerate(rows) if r.method.startswith("**kseg"))
    others = [r for r in rows[:at] if r.score >= rows[at].score]  # the baselines: every row before kseg's
    lines += ["", "kseg beats every baseline on this set." if not others else
              "**kseg does not beat** " + ", ".join(r.method.split(" (")[0] for r in others) + " on this set."]
    return "\n".join(lines)


def _section(tables: Sequence[str]) -> str:
    return "\n\n".join(["## Real-data scoreboard", __doc__.split("\n\n")[1].replace("\n", " "), *tables])


def run(quick: bool = False, sets: Sequence[str] = DEFAULT_SETS, budget_seconds: float = DEFAULT_BUDGET,
        resume: bool = False, stages: bool = True, crop: int = 256, batch: int = 8,
        seeds: Sequence[int] = (TrainBudget.seed,)) -> str:
    """The section for BENCHMARKS.md. Full runs keep each set's table in ``results/real/<set>.md`` and the
    section holds every set's latest table, so ``--sets`` reruns some sets without losing the others."""
    if not SHARED.is_dir():
        return f"## Real-data scoreboard\n\nSkipped: {SHARED} not found (the real-data folder is not shipped with kseg)."
    tables = {}
    for name in sets:
        if SETS[name].needs:  # prepared, but neither kseg nor these rows handle its task yet
            tables[name] = f"### {name}\n\nNot on the scoreboard yet: needs {SETS[name].needs}."
            continue
        start = time.perf_counter()
        print(f"[bench_real] {name} ...", flush=True)
        rows, facts = evaluate_set(name, budget_seconds, quick, resume, stages, crop, batch, seeds)
        tables[name] = set_table(name, rows, facts, budget_seconds, quick) + \
            f"\n\n_({name}: {time.perf_counter() - start:.0f} s in all)_"
        if not quick:
            write_text(SET_RESULTS / f"{name}.md", tables[name] + "\n")
        print(tables[name], flush=True)
    if not quick:
        tables = {p.stem: p.read_text().strip() for p in sorted(SET_RESULTS.glob("*.md"))}
        tables.update({n: f"### {n}\n\nNot on the scoreboard yet: needs {s.needs}." for n, s in SETS.items() if s.needs})
    order = list(SETS)
    return _section([tables[n] for n in sorted(tables, key=lambda n: (order.index(n) if n in order else len(order), n))])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sets", default=",".join(DEFAULT_SETS), help=f"comma-separated, from {', '.join(SETS)}")
    parser.add_argument("--budget", type=float, default=DEFAULT_BUDGET, help="training seconds per trained row")
    parser.add_argument("--quick", action="store_true", help="128 px crops, 2 steps; printed only")
    parser.add_argument("--resume", action="store_true", help="keep the kseg run of an interrupted full run")
    parser.add_argument("--crop", type=int, default=256, help="the baselines' crop size")
    parser.add_argument("--batch", type=int, default=8, help="the baselines' crops per step")
    parser.add_argument("--no-stages", action="store_true", help="skip the kseg stage rows (saves a full re-prediction)")
    parser.add_argument("--seeds", default=str(TrainBudget.seed),
                        help="comma-separated seeds: every trained row is trained once per seed and reported as the mean")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: comma-separated integers")
    if not seeds:
        parser.error("--seeds: at least one seed")
    if args.resume and len(seeds) > 1:
        parser.error("--resume keeps one interrupted kseg run: it cannot be combined with several --seeds")
    sets = [s for s in args.sets.split(",") if s]
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        parser.error(f"unknown set(s) {', '.join(unknown)}; known: {', '.join(SETS)}")
    start = time.perf_counter()
    section = run(args.quick, sets, args.budget, args.resume, not args.no_stages, args.crop, args.batch, seeds)
    if args.quick:
        return 0
    from . import run as bench_run

    stamp = f"_(bench_real: {time.perf_counter() - start:.0f} s, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)_"
    write_text(RESULTS / "bench_real.md", f"{section}\n\n{stamp}\n")
    return bench_run.main(["--out", str(REPO / "BENCHMARKS.md"), "--only"])  # reassemble BENCHMARKS.md from every section


if __name__ == "__main__":
    sys.exit(main())
