"""The dataset fingerprint and the plan: object sizes decide the scale, label asymmetry the orientation, and
rescaling round-trips."""
from __future__ import annotations

import json

import numpy as np
import pytest

from kseg.augment import augment_for_orientation
from kseg.config import TrainSection, load_config, validate
from kseg.errors import ConfigError, DataError
from kseg.metric import VOID
from kseg.plan import (
    ASYMMETRY_LIMIT,
    Plan,
    fingerprint,
    make_plan,
    read_plan,
    rescale_image,
    rescale_labels,
    restore_probabilities,
    write_plan,
)
from kseg.tta import views_for_orientation

TRAIN = {"scale": "auto", "target_diameter": 32, "budget_steps": None, "min_steps_per_fold": 250, "steps_per_epoch": None,
         "epochs": 4, "orientation": "auto"}


def train(**values: object) -> TrainSection:
    """The ``train`` section of a config with :data:`TRAIN` and ``values``, validated as when it loads."""
    return validate({"train": {**TRAIN, **values}}).train


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
    assert make_plan(fp, train()).scale == pytest.approx(expected, abs=0.02)


def test_explicit_scale_and_binary_task_and_few_objects():
    fp = fingerprint([discs(64, 9)] * 3, [None] * 3)
    assert make_plan(fp, train(scale=0.75)).scale == 0.75
    assert make_plan(fp, train(), task="binary").scale == 1.0
    few = fingerprint([discs(64, 2)], [None])
    assert make_plan(few, train()).scale == 1.0 and "too few objects" in make_plan(few, train()).reason


@pytest.mark.parametrize("override, words", [
    ("train.scale=big", r"train.scale must be 'auto' or a number in \[0.25, 4\], got 'big'"),
    ("train.scale=0.1", r"train.scale must be 'auto' or a number in \[0.25, 4\], got 0.1"),
    ("train.scale=true", r"train.scale must be 'auto' or a number in \[0.25, 4\], got True"),
    ("train.target_diameter=0", "train.target_diameter must be a positive number, got 0"),
    ("train.budget_steps=0", "train.budget_steps must be a positive integer or null, got 0"),
    ("train.min_steps_per_fold=2.5", "train.min_steps_per_fold must be a positive integer or null, got 2.5"),
])
def test_bad_plan_values_fail_when_the_config_loads(override, words):
    with pytest.raises(ConfigError, match=words):
        load_config(None, [override])


def test_budget_and_epoch_length_together_are_an_error():
    with pytest.raises(ConfigError, match="train.budget_steps and train.steps_per_epoch both set"):
        make_plan(fingerprint([discs(20, 4)], [None]), train(budget_steps=100, steps_per_epoch=10))


@pytest.mark.parametrize("budget, folds, steps", [
    (None, [0, 1, 2, 3, 4], None),      # no budget: every requested fold, the usual epoch length
    (432, [0], 108),                    # under 2 x 250 steps: one fold gets all of them
    (600, [0, 1], 75),                  # two folds of 300
    (10_000, [0, 1, 2, 3, 4], 500),     # plenty: every fold, 2,000 steps each
    (100, [0], 25),                     # below the minimum: still one fold
])
def test_a_step_budget_trains_as_many_folds_as_get_enough_steps(budget, folds, steps):
    plan = make_plan(fingerprint([discs(20, 9)], [None]), train(budget_steps=budget), folds=[0, 1, 2, 3, 4])
    assert plan.folds == folds and plan.steps_per_epoch == steps
    assert budget is None or f"train.budget_steps {budget}: {len(folds)} of 5 folds" in plan.reason


def test_plan_file_round_trip_and_bad_files(tmp_path):
    fp = fingerprint([discs(64, 9)] * 3, [None] * 3)
    plan = make_plan(fp, train(budget_steps=600), folds=[0, 1, 2])
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


def street_scene(seed: int, height: int = 60, width: int = 80) -> np.ndarray:
    """A class map with an up: sky (1) above, buildings (2) in between, road (3) below, a car (4) anywhere."""
    rng = np.random.default_rng(seed)
    labels = np.zeros((height, width), np.uint16)
    horizon, kerb = rng.integers(15, 25), rng.integers(35, 45)
    labels[:horizon], labels[horizon:kerb], labels[kerb:] = 1, 2, 3
    y, x = rng.integers(0, height - 10), rng.integers(0, width - 10)
    labels[y:y + 10, x:x + 10] = 4
    labels[0, :5] = VOID  # void pixels count for neither half
    return labels


def test_labels_with_an_up_plan_an_upright_orientation():
    scenes = [street_scene(seed) for seed in range(6)]
    fp = fingerprint(scenes, [None] * 6, multiclass=True)
    assert fp.vertical_asymmetry > 0.6 and fp.horizontal_asymmetry < 0.1
    plan = make_plan(fp, train(), "multiclass")
    assert plan.orientation == "upright" and "upright" in plan.reason
    # a scene that also has a side (road always on the left) keeps no flip at all
    sided = [np.where(np.arange(80)[None, :] < 40, scene, 0).astype(np.uint16) for scene in scenes]
    assert make_plan(fingerprint(sided, [None] * 6, multiclass=True), train(), "multiclass").orientation == "fixed"


def test_objects_anywhere_keep_every_flip():
    rng = np.random.default_rng(0)
    images = []
    for _ in range(8):
        labels = np.zeros((64, 64), np.uint16)
        for k in range(1, 6):
            y, x = rng.integers(0, 56, 2)
            labels[y:y + 8, x:x + 8] = k
        images.append(labels)
    fp = fingerprint(images, [None] * 8)
    assert fp.vertical_asymmetry < ASYMMETRY_LIMIT and fp.horizontal_asymmetry < ASYMMETRY_LIMIT
    assert make_plan(fp, train()).orientation == "free"
    assert make_plan(fp, train(orientation="upright")).orientation == "upright"  # the config decides


def test_orientation_filters_tta_views_and_augmentations():
    views = ["identity", "hflip", "vflip", "hvflip", "rot90"]
    assert views_for_orientation(views, "free") == views
    assert views_for_orientation(views, "upright") == ["identity", "hflip"]
    assert views_for_orientation(views, "fixed") == ["identity"]
    assert views_for_orientation(["vflip"], "fixed") == ["identity"]
    spec = [{"HorizontalFlip": {"p": 0.5}}, {"VerticalFlip": {"p": 0.5}}, {"RandomRotate90": {"p": 0.5}},
            {"Affine": {"rotate": [-15, 15]}}]
    assert augment_for_orientation(spec, "free") == spec
    assert augment_for_orientation(spec, "upright") == [spec[0], spec[3]]
    assert augment_for_orientation(spec, "fixed") == [spec[3]]


def test_bad_orientation_in_config_or_plan_json(tmp_path):
    with pytest.raises(ConfigError, match="train.orientation must be one of auto, free, upright, fixed, got 'up'"):
        make_plan(fingerprint([discs(20, 4)], [None]), train(orientation="up"))
    (tmp_path / "plan.json").write_text(json.dumps({"plan": {"scale": 1.0, "orientation": "sideways"}}))
    with pytest.raises(DataError, match="orientation 'sideways' is not one of free, upright, fixed"):
        read_plan(tmp_path)
