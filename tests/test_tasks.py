"""The task registry: every task type answers the stages' questions, and the numeric core works for each one
(tests generated over the registry, so a new task type is tested as soon as it is registered)."""
from __future__ import annotations

import numpy as np
import pytest

from kseg.config import DEFAULTS
from kseg.errors import ConfigError
from kseg.metric import METRICS, VOID, TaskScores, class_map_counts, task_metric
from kseg.postprocess import OPTIONAL_PARAMS, PARAM_KEYS, POSTPROCESSORS, instances_from_probs, validate_params
from kseg.targets import channel_names, make_targets
from kseg.tasks import TASKS, task_of

DEFAULT_PARAMS = {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 0, "fill_holes": True}


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_is_one_kind_with_its_params_and_metrics(name: str) -> None:
    task = task_of(name)
    assert task.name == name
    assert [task.separates_objects, task.class_per_pixel, task.one_mask_per_image].count(True) == 1
    processor = POSTPROCESSORS[name]  # the task's post-processing declares its parameters and searched axes
    assert processor.params == PARAM_KEYS[name] and set(validate_params(DEFAULT_PARAMS, name)) >= set(PARAM_KEYS[name])
    assert set(processor.axes) <= set(DEFAULTS["postprocess"]["grid"]) | set(OPTIONAL_PARAMS)
    assert task.metrics and all(m in METRICS for m in task.metrics)
    assert task_metric(name).name == task.metrics[0]  # data.metric: auto is the task's own


@pytest.mark.parametrize("name", list(TASKS))
def test_every_task_trains_on_its_channels_and_predicts_its_label_images(name: str) -> None:
    """Targets with at least the channels post-processing needs, and a prediction the task's metric scores:
    a perfect prediction from the targets scores 1."""
    task = task_of(name)
    labels = np.zeros((32, 32), np.int32)
    labels[4:12, 4:12], labels[18:28, 16:30] = 1, 2
    classes = ["a", "b"] if task.class_per_pixel else []
    channels = channel_names(name, classes)
    assert len(channels) >= task.min_channels
    targets = make_targets(labels, name, None, n_classes=len(classes), border_width=1)
    assert targets.shape == (32, 32, len(channels))
    pred = instances_from_probs(targets, DEFAULT_PARAMS, name)
    truth = (labels > 0).astype(np.int32) if task.one_mask_per_image else labels
    scores = TaskScores(name, "auto", len(classes))
    scores.add(truth, pred)
    assert scores.score == pytest.approx(1.0)


@pytest.mark.parametrize("name", [name for name, task in TASKS.items() if task.class_per_pixel])
def test_count_grid_equals_post_processing_at_each_class_threshold_and_min_area(name: str) -> None:
    """The OOF search's per-class counts at every grid point equal post-processing each point end to end."""
    from kseg.search import Grid, count_grid

    rng = np.random.default_rng(0)
    probs = rng.random((12, 10, 4)).astype(np.float32)
    truth = rng.integers(0, 8 if task_of(name).classes_overlap else 4, (12, 10)).astype(np.uint16)
    truth[0] = VOID
    grid = Grid(name, {"class_threshold": (None, 0.3, 0.6), "min_area": (0, 20, 40)})
    counts = count_grid(truth, probs, grid)
    assert len(counts) == len(grid.points()) == 9
    for row, params in zip(counts, grid.points()):
        expected = class_map_counts(truth, instances_from_probs(probs, params, name), 4, task_of(name).classes_overlap)
        assert np.array_equal(row, expected)


@pytest.mark.parametrize("bad", ["semantic", "", None, 3, "Instance"])
def test_an_unknown_task_is_one_config_error_naming_the_valid_ones(bad: object) -> None:
    with pytest.raises(ConfigError, match=r"data.task must be one of instance, binary, multiclass, multilabel, got "):
        task_of(bad)
