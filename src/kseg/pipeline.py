"""The main job, ``kseg run``: demo data → folds → train every fold → OOF predictions → OOF search → predict →
validate, then the run's report.html.

Each stage records a fingerprint of the config sections it depends on (its own and everything upstream),
less the keys that cannot change its outputs (where the test images are, how much is logged, how many
workers), in ``<output.dir>/stages/<stage>.json``. A stage whose fingerprint matches is skipped; a changed config redoes
it and everything after it; ``--force`` redoes all. An interrupted training stage with the same fingerprint
resumes instead of starting over.

The whole config is checked before any stage runs, and retraining never deletes trained folds: the
``fold{K}`` folders kseg wrote (exactly those names) move to ``superseded/<time>/`` in the run folder.
"""
from __future__ import annotations

import inspect
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

from .config import Config, data_path, fingerprint, folds_path, output_dir, submission_path
from .errors import ConfigError
from .files import write_json
from .run import RunDir
from .tasks import task_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stage:
    name: str
    sections: tuple[str, ...]  # dotted config sections whose change makes the stage's outputs stale
    ignore: tuple[str, ...] = ()  # dotted keys inside them that do not change the outputs


# The test images and their truth are read by predict alone; logging and worker counts change no output.
_TEST_INPUTS = ("data.test_dir", "data.test_truth", "data.sample_submission")
_SPEED_ONLY = ("train.verbose", "train.workers", "postprocess.n_jobs")
STAGES = (
    Stage("folds", ("data", "folds"), _TEST_INPUTS),
    Stage("train", ("data", "folds", "model", "train"), _TEST_INPUTS + _SPEED_ONLY),
    # The OOF predictions of the trained folds, with the TTA views and the tiling of predict.tile (training
    # writes them too; after an edit of either, this stage predicts the validation images again).
    Stage("oof", ("data", "folds", "model", "train", "tta", "predict.tile"), _TEST_INPUTS + _SPEED_ONLY),
    Stage("search", ("data", "folds", "model", "train", "tta", "predict.tile", "postprocess"),
          _TEST_INPUTS + _SPEED_ONLY),
    Stage("predict", ("data", "folds", "model", "train", "tta", "postprocess", "predict", "output"), _SPEED_ONLY),
)


def stage_fingerprints(cfg: Config) -> dict[str, str]:
    """Each stage's fingerprint for ``cfg``: a stage whose fingerprint changed reruns, with every later one."""
    return {stage.name: fingerprint(cfg, *stage.sections, ignore=stage.ignore) for stage in STAGES}


def _marker(cfg: Config, stage: str) -> Path:
    return output_dir(cfg) / "stages" / f"{stage}.json"


def _read_marker(cfg: Config, stage: str) -> dict:
    path = _marker(cfg, stage)
    if not path.is_file():
        return {}
    try:
        marker = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {}  # a damaged marker means "not finished": the stage runs again
    return marker if isinstance(marker, dict) else {}


def stage_seconds(cfg: Config) -> dict[str, float]:
    """Seconds each finished stage took when it last ran (``stages/<stage>.json``), in pipeline order."""
    markers = {stage.name: _read_marker(cfg, stage.name) for stage in STAGES}
    return {name: float(marker["seconds"]) for name, marker in markers.items()
            if marker.get("finished") and isinstance(marker.get("seconds"), (int, float))}


def check_config(cfg: Config) -> None:
    """Every check a stage would make of its config section, before any stage runs or any file moves.

    A typo found by the fourth stage would otherwise come after hours of training (or, before, after
    the old folds were removed).
    """
    from .augment import build_augment
    from .data import schema_from_config
    from .demo import make_demo_data
    from .model import check_model_config
    from .search import check_search_config
    from .train import check_train_config

    schema_from_config(cfg)
    demo = cfg.data.demo
    if demo is not None:
        accepted = set(inspect.signature(make_demo_data).parameters) - {"root", "force"}
        if not isinstance(demo, Mapping) or set(demo) - accepted:
            raise ConfigError(f"data.demo must be null or a mapping of {', '.join(sorted(accepted))}, got {demo!r}")
    check_train_config(cfg)
    build_augment(cfg.train.augment, cfg.train.size, train=True)
    check_search_config(cfg, cfg.data.task)
    out = output_dir(cfg)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output.dir {out} is an existing file, not a folder")
    check_model_config(cfg)  # last: it imports TensorFlow


def set_aside_folds(run_dir: Path) -> Path | None:
    """Move the ``fold{K}`` folders of an earlier training to ``superseded/<time>/``; returns that folder.

    Hours of training are not destroyed because the config changed: delete the folder by hand when the
    new run is better. Only kseg's exact names move.
    """
    run = RunDir(run_dir)
    fold_dirs = run.fold_dirs()
    if not fold_dirs:
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = run.superseded / stamp
    suffix = 1
    while target.exists():
        suffix += 1
        target = run.superseded / f"{stamp}-{suffix}"
    target.mkdir(parents=True)
    for fold_dir in fold_dirs:
        fold_dir.rename(target / fold_dir.name)
    return target


def ensure_demo_data(cfg: Config) -> None:
    """Generate the synthetic competition into data.root when the config asks for it and it is missing."""
    demo = cfg.data.demo
    csv = data_path(cfg, "train_csv")
    if demo is None or csv.is_file():
        return
    from .demo import make_demo_data

    log.info(f"[demo] generating the demo competition in {cfg.data.root}")
    make_demo_data(Path(cfg.data.root), **demo)


def _run_folds(cfg: Config, resume: bool) -> None:
    from .folds import command_folds

    command_folds(cfg)


def _run_train(cfg: Config, resume: bool) -> None:
    from .train import command_train

    if not resume:
        moved = set_aside_folds(output_dir(cfg))
        if moved is not None:
            log.info(f"[train] config changed or --force: the earlier folds moved to {moved}")
    command_train(cfg, resume=resume)  # the folds of train.folds


def _run_oof(cfg: Config, resume: bool) -> None:
    from .train import command_oof

    command_oof(cfg)


def _run_search(cfg: Config, resume: bool) -> None:
    from .search import command_search

    command_search(cfg)


def _run_predict(cfg: Config, resume: bool) -> None:
    from .predict import command_predict

    command_predict(cfg)


RUNNERS: dict[str, Callable[[Config, bool], None]] = {
    "folds": _run_folds, "train": _run_train, "oof": _run_oof, "search": _run_search, "predict": _run_predict,
}


def command_run(cfg: Config, force: bool = False) -> Path:
    """Check the whole config, run every stage that is not up to date, then validate the submission, print a
    summary and write the run's report.html."""
    check_config(cfg)
    ensure_demo_data(cfg)
    output_dir(cfg).mkdir(parents=True, exist_ok=True)
    timings: dict[str, str] = {}
    redo_downstream = force
    fingerprints = stage_fingerprints(cfg)
    for stage in STAGES:
        fp = fingerprints[stage.name]
        marker = _read_marker(cfg, stage.name)
        if not redo_downstream and marker.get("finished") and marker.get("fingerprint") == fp:
            timings[stage.name] = f"up to date ({marker.get('seconds', 0):.0f}s earlier)"
            continue
        redo_downstream = True
        # Same fingerprint but unfinished: an interrupted stage, which training can resume.
        resume = not force and marker.get("fingerprint") == fp
        write_json(_marker(cfg, stage.name), {"fingerprint": fp, "finished": False})
        log.info(f"\n=== {stage.name} ===")
        start = time.perf_counter()
        RUNNERS[stage.name](cfg, resume)
        seconds = time.perf_counter() - start
        write_json(_marker(cfg, stage.name), {"fingerprint": fp, "finished": True, "seconds": seconds})
        timings[stage.name] = f"{seconds:.0f}s"

    submission = submission_path(cfg)
    from .submission import command_validate

    log.info("\n=== validate ===")
    if command_validate(submission, cfg) != 0:
        from .errors import SubmissionError

        raise SubmissionError(f"{submission} did not validate")
    print_summary(cfg, timings, submission)
    from .report import write_report

    log.info(f"report: {write_report(cfg)}")
    return submission


def _training_lines(run: Path) -> list[str]:
    """The plan's scale and, over every fold and epoch, how many training images each class got."""
    import pandas as pd

    lines = []
    plan_path = RunDir(run).plan
    if plan_path.is_file():
        lines.append(f"plan: {json.loads(plan_path.read_text())['plan']['reason']}")
    drawn: dict[str, int] = {}
    for history_path in (RunDir(run).history(k) for k in RunDir(run).folds_with("history.csv")):
        history = pd.read_csv(history_path)
        for column in history.columns:
            if column.startswith("drawn_") and column != "drawn_empty":
                drawn[column[len("drawn_"):]] = drawn.get(column[len("drawn_"):], 0) + int(history[column].sum())
    if drawn:
        total = sum(drawn.values()) or 1
        lines.append("training images drawn per class (all folds): "
                     + ", ".join(f"{cls} {n} ({n / total:.0%})" for cls, n in sorted(drawn.items())))
    return lines


def print_summary(cfg: Config, timings: dict[str, str], submission: Path) -> None:
    """OOF score per fold and class, TTA gain, chosen parameters, stage times, test score if known."""
    from .search import SearchResult

    pp_path = RunDir.of(cfg).postprocess
    lines = ["", "=== summary ==="]
    if pp_path.is_file():
        pp = SearchResult.read(pp_path, cfg.data.task)
        if pp.searched:
            assert pp.oof_score_plain is not None and pp.oof_score_default is not None  # written together
            lines.append(f"OOF score (TTA, searched params): {pp.oof_score:.4f}")
            lines.append(f"OOF score without TTA:           {pp.oof_score_plain:.4f}  "
                         f"(TTA gain {pp.oof_score - pp.oof_score_plain:+.4f})")
            lines.append(f"OOF score with default params:   {pp.oof_score_default:.4f}  "
                         f"(search gain {pp.oof_score - pp.oof_score_default:+.4f})")
        for fold, value in sorted(pp.per_fold.items()):
            lines.append(f"  fold {fold}: {value:.4f}")
        for cls, value in sorted(pp.per_class_score.items()):
            lines.append(f"  class {cls}: {value:.4f}")
        if pp.class_accuracy is not None:
            lines.append(f"class prediction accuracy on OOF: {pp.class_accuracy:.3f}")
        lines.append(f"chosen parameters: default {pp.default}")
        for cls, params in sorted(pp.per_class.items()):
            lines.append(f"  {cls}: {params}")
    lines += _training_lines(output_dir(cfg))
    truth = data_path(cfg, "test_truth")
    if truth is not None and truth.is_file():
        from .data import image_size, list_test_images, read_annotations, read_submission_csv, schema_from_config
        from .metric import score_frames

        schema = schema_from_config(cfg)
        names: dict[str, str] = {}
        if task_of(cfg.data.task).class_per_pixel:  # per-class scores by class id: named as the run's channels
            from .targets import read_channels

            channels, _ = read_channels(output_dir(cfg), cfg.data.task)
            names = {str(k): f"{k} {channel.removeprefix('class:')}" for k, channel in enumerate(channels) if k}
        # The test images' sizes, for schemas without size columns (TGS, Severstal): their RLE needs the shape.
        shapes = {image_id: image_size(path) for image_id, path in list_test_images(cfg)}
        report = score_frames(read_annotations(truth, schema, "test truth"), read_submission_csv(submission, schema),
                              schema, shapes, task=cfg.data.task, metric=cfg.data.metric,
                              n_classes=len(names))
        lines.append(f"test score against {truth.name}: {report.score:.4f}")
        order = (lambda item: (len(item[0]), item[0])) if names else (lambda item: item[0])  # class ids by number
        for cls, value in sorted(report.per_class.items(), key=order):
            lines.append(f"  class {names.get(cls, cls)}: {value:.4f}")
    from .predict import read_fold_scores

    scores = read_fold_scores(submission)
    if scores is not None:
        lines.append("single fold models on the annotated test images: "
                     + ", ".join(f"{name} {value:.4f}" for name, value in scores["per_fold"].items())
                     + f" (ensemble {scores['ensemble']:.4f})")
        best_name, best = max(scores["per_fold"].items(), key=lambda item: item[1], default=(None, None))
        if best is not None and len(scores["per_fold"]) > 1 and scores["ensemble"] < best:
            lines.append(f"warning: the fold ensemble scores below its best fold ({best_name} {best:.4f}) on these "
                         f"images: predict.folds=[{best_name.removeprefix('fold')}] predicts with that fold alone")
    lines.append("stage times: " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    lines.append(f"folds file: {folds_path(cfg)}")
    lines.append(f"submission: {submission}")
    log.info("\n".join(lines))
