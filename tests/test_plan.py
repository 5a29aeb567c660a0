"""The dataset fingerprint and the plan: object sizes decide the scale, and rescaling round-trips."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kseg.errors import ConfigError, DataError
from kseg.plan import (Plan, fingerprint, make_plan, read_plan, rescale_image, rescale_labels,
                       restore_probabilities, write_plan)

TRAIN = {"scale": "auto", "target_diameter": 32, "budget_steps": None, "min_steps_per_fold": 250, "steps_per_epoch": None,
         "epochs": 4}


def discs(diameter: int, count: int, size: int = 400) -> np.ndarray:
    labels = np.zeros((size, size), np.uint16)
    yy, xx = np.mgrid[:size, :size]
    step = size // int(np.ceil(np.sqrt(count)))
    k = 0
    for cy in range(step // 2, size, step):
        for cx in range(step // 2, size, step):
            if k < count:
                k += 1
                labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= (diameter / 2) ** 2] = k
    return labels


def test_fingerprint_measures_equivalent_diameters_sizes_classes_and_empty_images():
    fp = fingerprint([discs(20, 16), discs(20, 16), np.zeros((100, 50), np.uint16)], ["a", "a", None])
    assert fp.n_images == 3 and fp.n_objects == 32 and fp.empty_images == 1
    assert fp.median_diameter == pytest.approx(20, abs=1)
    assert fp.class_counts == {"a": 2, "None": 1}
    assert (fp.median_height, fp.median_width) == (400, 400)


@pytest.mark.parametrize("diameter, expected", [(16, 1.0), (32, 1.0), (64, 0.5), (400 / 3, 0.25)])
def test_auto_scale_brings_large_objects_to_the_target_and_never_upscales(diameter, expected):
    fp = fingerprint([discs(int(diameter), 9, size=800)] * 3, [None] * 3)
    assert make_plan(fp, TRAIN).scale == pytest.approx(expected, abs=0.02)


def test_explicit_scale_and_binary_task_and_few_objects():
    fp = fingerprint([discs(64, 9)] * 3, [None] * 3)
    assert make_plan(fp, {**TRAIN, "scale": 0.75}).scale == 0.75
    assert make_plan(fp, TRAIN, task="binary").scale == 1.0
    few = fingerprint([discs(64, 2)], [None])
    assert make_plan(few, TRAIN).scale == 1.0 and "too few objects" in make_plan(few, TRAIN).reason


@pytest.mark.parametrize("train, words", [
    ({"scale": "big"}, "train.scale must be 'auto' or a number"),
    ({"scale": 0.1}, "train.scale must be 'auto' or a number"),
    ({"scale": True}, "train.scale must be 'auto' or a number"),
    ({"target_diameter": 0}, "train.target_diameter must be a positive number"),
    ({"budget_steps": 0}, "train.budget_steps must be a positive integer or null, got 0"),
    ({"min_steps_per_fold": 2.5}, "train.min_steps_per_fold must be a positive integer or null, got 2.5"),
    ({"budget_steps": 100, "steps_per_epoch": 10}, "train.budget_steps and train.steps_per_epoch both set"),
])
def test_bad_plan_config(train, words):
    with pytest.raises(ConfigError, match=words):
        make_plan(fingerprint([discs(20, 4)], [None]), {**TRAIN, **train})


@pytest.mark.parametrize("budget, folds, steps", [
    (None, [0, 1, 2, 3, 4], None),      # no budget: every requested fold, the usual epoch length
    (432, [0], 108),                    # under 2 x 250 steps: one fold gets all of them
    (600, [0, 1], 75),                  # two folds of 300
    (10_000, [0, 1, 2, 3, 4], 500),     # plenty: every fold, 2,000 steps each
    (100, [0], 25),                     # below the minimum: still one fold
])
def test_a_step_budget_trains_as_many_folds_as_get_enough_steps(budget, folds, steps):
    plan = make_plan(fingerprint([discs(20, 9)], [None]), {**TRAIN, "budget_steps": budget}, folds=[0, 1, 2, 3, 4])
    assert plan.folds == folds and plan.steps_per_epoch == steps
    assert budget is None or f"train.budget_steps {budget}: {len(folds)} of 5 folds" in plan.reason


def test_plan_file_round_trip_and_bad_files(tmp_path):
    fp = fingerprint([discs(64, 9)] * 3, [None] * 3)
    plan = make_plan(fp, {**TRAIN, "budget_steps": 600}, folds=[0, 1, 2])
    write_plan(tmp_path, fp, plan)
    assert read_plan(tmp_path) == plan
    assert json.loads((tmp_path / "plan.json").read_text())["fingerprint"]["n_objects"] == 27
    assert read_plan(tmp_path / "missing").scale == 1.0  # a run from before plans: full resolution
    (tmp_path / "plan.json").write_text("{not json")
    with pytest.raises(DataError, match="plan.json: not a kseg plan file"):
        read_plan(tmp_path)


def test_rescaling_keeps_channels_and_restores_the_exact_shape():
    image = np.random.default_rng(0).integers(0, 255, (101, 77, 3), dtype=np.uint8)
    small = rescale_image(image, 0.5)
    assert small.shape == (50, 38, 3) and small.dtype == np.uint8
    labels = rescale_labels(discs(40, 4, size=101), 0.5)
    assert labels.shape == (50, 50) and set(np.unique(labels)) == {0, 1, 2, 3, 4}
    probs = np.random.default_rng(1).random((50, 38, 7)).astype(np.float32)  # more channels than OpenCV's 4
    restored = restore_probabilities(probs, (101, 77))
    assert restored.shape == (101, 77, 7) and restored.dtype == np.float32
    assert restore_probabilities(probs, (50, 38)) is probs
    one = restore_probabilities(probs[..., :1], (101, 77))
    assert one.shape == (101, 77, 1)
    assert rescale_image(image, 1.0) is image and isinstance(Plan(1.0, "").scale, float)
