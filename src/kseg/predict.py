"""Test-time inference: every test image → fold ensemble × TTA → post-processing → validated submission."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .config import Config, output_dir, submission_path, with_values
from .data import image_reader, image_size, list_test_images, load_test_truth, n_classes_of, schema_from_config
from .errors import ConfigError, SubmissionError
from .files import child_path, write_json
from .metric import TaskScores
from .normalize import input_normaliser
from .plan import read_plan, rescale_image, restore_probabilities
from .plots import save_overlays
from .postprocess import instances_from_probs, predict_class
from .run import RunDir
from .search import SearchResult, read_search_result
from .submission import SubmissionWriter, validate_submission
from .targets import read_channels
from .tasks import task_of
from .tta import mean_of, predict_each, predict_ensemble, views_for_orientation

log = logging.getLogger(__name__)

PredictFn = Callable[[np.ndarray], np.ndarray]
N_OVERLAYS = 4


def fold_weight_files(cfg: Config) -> list[Path]:
    """Best weights of the folds named by ``predict.folds`` ('all' or a list of fold indices)."""
    run = RunDir.of(cfg)
    wanted = cfg.predict.folds
    if wanted == "all":
        # Only kseg's own fold folders (fold0, fold1, ...): a user's fold7_notes/ must not join the ensemble.
        files = [run.weights(k) for k in run.trained_folds()]
    else:
        indices = wanted if isinstance(wanted, list) else [wanted]
        files = [run.weights(int(k)) for k in indices]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise ConfigError(f"predict.folds={wanted!r}: missing weights {', '.join(missing)}")
    if not files:
        raise ConfigError(f"no fold weights (fold*/{run.weights(0).name}) under {run.root}: train first")
    return files


def load_fold_models(cfg: Config) -> list[PredictFn]:
    """One batch-predict function per fold model. Encoder weights come from the fold files, so nothing is
    downloaded (a Kaggle kernel runs offline)."""
    from .model import build_model

    channels, _ = read_channels(output_dir(cfg), cfg.data.task)
    n_channels = len(channels)
    build_cfg = with_values(cfg, {"model.encoder_weights": None, "model.init_from": None})
    fns: list[PredictFn] = []
    for weights in fold_weight_files(cfg):
        model = build_model(build_cfg, n_channels)
        model.load_weights(str(weights))
        fns.append(model.predict_on_batch)
    return fns


class FoldScores:
    """Each fold model's and the ensemble's score on the annotated test images, image by image.

    OOF images are each predicted by one fold, so only held-out annotated images can say what the ensemble
    adds over a single fold; each fold's prediction is post-processed as the ensemble's is (parameters of
    its own predicted class).
    """

    def __init__(self, truth: dict[str, np.ndarray], fold_names: list[str], chosen: SearchResult, classes: list[str],
                 task: str, metric: str = "auto", n_classes: int = 0) -> None:
        self.truth, self.chosen, self.classes, self.task = truth, chosen, classes, task
        self.ensemble = TaskScores(task, metric, n_classes)
        self.per_fold: dict[str, TaskScores] = {name: TaskScores(task, metric, n_classes) for name in fold_names}

    def add(self, image_id: str, ensemble_labels: np.ndarray, fold_probs: list[np.ndarray]) -> None:
        truth = self.truth[image_id]
        self.ensemble.add(truth, ensemble_labels)
        for scores, probs in zip(self.per_fold.values(), fold_probs):
            cls = predict_class(probs, self.classes) if self.classes else None
            scores.add(truth, instances_from_probs(probs, self.chosen.params_for(cls), self.task))

    def __len__(self) -> int:
        return len(self.ensemble.per_image)

    def write(self, path: Path) -> None:
        means = {name: scores.score for name, scores in self.per_fold.items()}
        write_json(path, {"n_images": len(self), "ensemble": self.ensemble.score, "per_fold": means})
        log.info(f"annotated test images ({len(self)}): ensemble {self.ensemble.score:.4f}; single folds "
              + ", ".join(f"{name} {value:.4f}" for name, value in means.items()))


def fold_scores_path(submission: Path) -> Path:
    """Where a prediction writes its :class:`FoldScores` when data.test_truth annotates test images (the demo,
    the benchmark sets): next to the submission they describe (``demo.csv`` → ``demo.fold_scores.json``), so
    a prediction into another file leaves the run's numbers alone."""
    return submission.with_name(f"{submission.stem}.fold_scores.json")


def read_fold_scores(submission: Path) -> dict | None:
    """The :class:`FoldScores` a prediction into ``submission`` wrote (``n_images``, ``ensemble``, ``per_fold``),
    or None when it scored no annotated test image."""
    path = fold_scores_path(submission)
    return json.loads(path.read_text()) if path.is_file() else None


def model_input(cfg: Config) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 RGB image → what the run's models take: normalised as ``model.input_norm`` says, inverted where
    ``model.invert`` (for ``auto``, the run's ``plan.json``) says, at the plan's scale, through the backbone's preprocessing. The models' probabilities come back at
    that scale; ``plan.restore_probabilities`` brings them to the image's size. Training caches exactly
    the first two steps (``train.SampleCache``), so train, OOF, prediction and kernels see the same input."""
    from .model import preprocess_fn

    plan = read_plan(output_dir(cfg))
    preprocess, normalise, scale = preprocess_fn(cfg), input_normaliser(cfg, plan.invert), plan.scale

    def prepare(image: np.ndarray) -> np.ndarray:
        return preprocess(rescale_image(normalise(image), scale))

    return prepare


def planned_views(cfg: Config) -> list[str]:
    """The ``tta`` views the run's planned orientation allows (plan.json): the views its OOF was written with."""
    return views_for_orientation(cfg.tta, read_plan(output_dir(cfg)).orientation)


def command_predict(cfg: Config, out: Path | None = None) -> Path:
    """Write the submission for every test image; it is validated before it replaces ``out``."""
    out = Path(out) if out else submission_path(cfg)
    schema = schema_from_config(cfg)
    task = cfg.data.task
    tests = list_test_images(cfg)
    channels, classes = read_channels(output_dir(cfg), task)
    chosen = read_search_result(cfg)
    models = load_fold_models(cfg)
    prepare = model_input(cfg)
    overlay_dir = output_dir(cfg) / "test_overlays"
    truth = load_test_truth(cfg)
    scores_path = fold_scores_path(out)
    scores = None
    if truth is not None:
        scores = FoldScores(truth, [weights.parent.name for weights in fold_weight_files(cfg)], chosen, classes, task,
                            cfg.data.metric, len(channels) - 1 if task_of(task).class_per_pixel else 0)
    scores_path.unlink(missing_ok=True)  # numbers of an earlier prediction must not pass for this one's
    views = planned_views(cfg)
    log.info(f"predicting {len(tests)} test images with {len(models)} fold models x {len(views)} TTA views "
          f"({', '.join(views)})")

    expected = {image_id: image_size(path) for image_id, path in tests}
    read = image_reader(cfg)
    # Rows are streamed image by image: no label image outlives its loop turn (memory flat in the test set).
    n_classes = len(channels) - 1 if task_of(task).class_per_pixel else None  # a joined schema lists every class
    with SubmissionWriter(out, schema, n_classes=n_classes, overlapping=task_of(task).classes_overlap) as writer:
        for i, (image_id, path) in enumerate(tqdm(tests, desc="predict", unit="img")):
            image = read(path)
            prepared, shape, tile = prepare(image), image.shape[:2], cfg.predict.tile
            annotated = scores is not None and image_id in scores.truth
            if annotated:  # the same ensemble, with each fold's prediction kept for its own score
                each = predict_each(models, prepared, views, tile=tile)
                ensemble = mean_of(each)
            else:
                ensemble = predict_ensemble(models, prepared, views, tile=tile)
            probs = restore_probabilities(ensemble, shape)
            cls = predict_class(probs, classes) if classes else None
            labels = instances_from_probs(probs, chosen.params_for(cls), task)
            writer.add(image_id, labels)
            if annotated:
                scores.add(image_id, labels, [restore_probabilities(fold, shape) for fold in each])
            if i < N_OVERLAYS:
                overlay = child_path(overlay_dir, f"{image_id}.png", "overlay of test image id")
                save_overlays(overlay, image, {f"prediction ({cls or task})": labels})
        writer.flush()
        problems = validate_submission(writer.tmp_path, schema, expected, task, n_classes_of(cfg))
        if problems:
            raise SubmissionError(f"the submission for {out} failed validation:\n  " + "\n  ".join(problems))
    log.info(f"submission written: {out} ({writer.n_rows} rows, {writer.n_images} images, "
          f"{writer.n_instances} instances; valid)")
    if scores is not None and len(scores):
        scores.write(scores_path)
    return out
