"""Training: sampler weighting (pure numpy), config errors, and tiny CPU runs on synthetic demo data.

One 2-fold, 1-epoch run (resnet18 U-Net, 64 px crops of 100x120 images) is shared by the tests that
inspect its outputs; resuming and re-running work on copies of it.
"""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from kseg.config import Config, load_config, validate
from kseg.data import image_size
from kseg.demo import make_demo_data
from kseg.errors import ConfigError
from kseg.run import RunDir
from kseg.train import Sampler, check_train_config, command_train, lr_at_step, sampling_probabilities, steps_per_epoch

HEIGHT, WIDTH = 100, 120  # not multiples of 32: validation and OOF must pad and crop back


# ------------------------------------------------------------------------------------------ sampler

def sampler_for(counts: dict, class_power: float, empty_fraction=None, empty_every: int = 0, size: int = 30000):
    classes = [name for name, count in counts.items() for _ in range(count)]
    empty = [bool(empty_every) and i % empty_every == 0 for i in range(len(classes))]
    return Sampler(np.arange(len(classes)), classes, empty, class_power, empty_fraction, seed=7, fold=0,
                   epoch_size=size), classes


@pytest.mark.parametrize("class_power", [0.0, 0.5, 1.0])
def test_sampler_class_histogram_matches_requested_weighting(class_power):
    counts = {"astro": 60, "cort": 30, "shsy5y": 10}
    sampler, _ = sampler_for(counts, class_power)
    sampler.draw(0)
    drawn = sampler.histogram(0)
    weights = np.array([c ** class_power for c in counts.values()])
    expected = weights / weights.sum()
    observed = np.array([drawn[name] for name in counts]) / sampler.epoch_size
    np.testing.assert_allclose(observed, expected, atol=0.015)


def test_sampler_empty_fraction():
    sampler, _ = sampler_for({"a": 50, "b": 50}, 0.0, empty_fraction=0.4, empty_every=10)  # 10% empty
    sampler.draw(0)
    assert sampler.histogram(0)["empty"] / sampler.epoch_size == pytest.approx(0.4, abs=0.015)
    natural, _ = sampler_for({"a": 50, "b": 50}, 0.0, empty_fraction=None, empty_every=10)
    natural.draw(0)
    assert natural.histogram(0)["empty"] / natural.epoch_size == pytest.approx(0.1, abs=0.01)


def test_empty_fraction_in_a_binary_run_where_most_images_are_empty(tmp_path):
    """The CT-liver case end to end: 12 of 16 binary images hold no foreground (TGS layout, one listed with an
    empty mask, the others unlisted and trained as empty by data.unlisted), and train.sampler.empty_fraction
    0.25 draws them a quarter of the time instead of three quarters; history.csv records the draws."""
    import cv2

    from kseg import rle
    from kseg.cli import main

    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    rows = []
    for k in range(16):
        mask = np.zeros((64, 64), np.uint8)
        if k < 4:
            mask[16:40, 20:44] = 1
        cv2.imwrite(str(root / "train" / f"s{k:02d}.png"), (40 + 150 * mask).astype(np.uint8))
        if k <= 4:  # slice 4 listed with an empty mask, 5..15 not listed at all
            rows.append({"id": f"s{k:02d}", "rle_mask": rle.encode(mask, "F")})
    cv2.imwrite(str(root / "test" / "t0.png"), np.full((64, 64), 40, np.uint8))
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    sets = [f"data.root={root}", f"output.dir={tmp_path / 'run'}", f"output.submission={tmp_path / 'sub.csv'}",
            "data.train_dir=train", "data.test_dir=test", "data.unlisted=empty", "train.sampler.empty_fraction=0.25",
            "train.folds=[0]", "folds.n_splits=2",
            "model.arch=unet_scratch", "model.encoder_weights=null", "model.scratch.filters=4", "model.scratch.depth=2",
            "train.size=64", "train.epochs=1", "train.steps_per_epoch=25", "train.batch_size=4", "train.verbose=0",
            "tta=[identity]"]
    assert main(["train", "--config", "configs/tgs.yaml", *[a for s in sets for a in ("--set", s)]]) == 0
    history = pd.read_csv(tmp_path / "run" / "fold0" / "history.csv")
    share = history["drawn_empty"].iloc[0] / history["drawn_all"].iloc[0]
    assert history["drawn_all"].iloc[0] == 100 and 0.15 <= share <= 0.35  # 0.75 without empty_fraction


def test_sampler_is_reproducible_per_epoch():
    first, _ = sampler_for({"a": 5, "b": 3}, 0.0, size=50)
    second, _ = sampler_for({"a": 5, "b": 3}, 0.0, size=50)
    second.next_epoch = 1
    np.testing.assert_array_equal(first.draw(1)[0], second.draw_next()[0])  # a resumed epoch 1 draws the same
    assert not np.array_equal(first.draw(0)[0], first.draw(1)[0])


def test_sampling_probabilities_without_classes_or_empty_images():
    probs = sampling_probabilities([None] * 4, [False] * 4, class_power=0.0, empty_fraction=0.3)
    np.testing.assert_allclose(probs, 0.25)  # nothing empty to give 30% to: everything goes to the rest


@pytest.mark.parametrize("n_train, batch, explicit, expected", [
    (27, 8, None, 50),      # a small fold: one pass would be 4 steps, the floor gives 50
    (10_000, 8, None, 1250),  # a large fold: one pass
    (27, 8, 7, 7),          # train.steps_per_epoch wins
])
def test_steps_per_epoch_has_a_floor_for_small_folds_and_is_one_pass_on_large_ones(n_train, batch, explicit, expected):
    train_cfg = validate({"train": {"steps_per_epoch": explicit, "min_steps_per_epoch": 50, "batch_size": batch}}).train
    assert steps_per_epoch(train_cfg, n_train) == expected


def test_lr_schedule_warms_up_linearly_then_decays_by_cosine_to_zero():
    total, base = 100, 1e-3
    lrs = [lr_at_step(step, total, base, warmup=0.1) for step in range(total)]
    assert lrs[0] == pytest.approx(base / 10) and lrs[9] == pytest.approx(base)
    assert lrs[10] == pytest.approx(base) and lrs[55] == pytest.approx(base / 2, rel=0.05)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < base / 100
    assert lr_at_step(0, total, base, warmup=0.0) == pytest.approx(base)


def test_sampler_needs_no_tensorflow():
    """kseg.train imports TensorFlow only inside the functions that train."""
    code = "import sys, kseg.train; assert 'tensorflow' not in sys.modules, 'tensorflow was imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------------------- config

def run_config(data_root: Path, out: Path, *overrides: str) -> Config:
    return load_config(None, [
        f"data.root={data_root}", "data.schema.preset=sartorius", "folds.n_splits=2",
        "model.backbone=resnet18", "model.encoder_weights=null", "train.size=64", "train.epochs=1",
        "train.batch_size=2", "train.steps_per_epoch=2", "train.verbose=0", f"output.dir={out}", *overrides,
    ])


@pytest.mark.parametrize("override, words", [
    ("train.size=100", r"train.size must be a positive integer multiple of 32, got 100"),
    ("train.scheduler=step", r"train.scheduler must be one of plateau, cosine or null, got 'step'"),
    ("train.sampler.empty_fraction=1.5", r"empty_fraction must be a number in \[0, 1\] or null, got 1.5"),
    ("train.sampler.class_power=high", r"class_power must be a number"),
    ("train.early_stopping=0", r"train.early_stopping must be a positive integer or null, got 0"),
    ("tta=[identity, flip]", r"tta: unknown view\(s\) 'flip'"),
    ("train.lr=0", r"train.lr must be a positive number, got 0"),
    ("train.seed=-1", r"train.seed must be a non-negative integer, got -1"),
    ("train.workers=two", r"train.workers must be a positive integer or null, got 'two'"),
    ("train.monitor=dice", r"train.monitor must be one of val_score, val_loss, got 'dice'"),
    ("train.warmup=1.0", r"train.warmup must be a number in \[0, 1\), got 1.0"),
    ("train.min_steps_per_epoch=0", r"train.min_steps_per_epoch must be a positive integer or null, got 0"),
    ("model.input_norm=zscore", r"model.input_norm must be one of none, percentile, standardize, got 'zscore'"),
    ("model.invert=maybe", r"model.invert must be true, false or auto, got 'maybe'"),
    ("postprocess.default={fg_threshold: 0.5, seed_threshold: 0.5, min_area: -1, fill_holes: true}", r"min_area' must be an integer >= 0, got -1"),
])
def test_bad_train_config(override, words, tmp_path):
    with pytest.raises(ConfigError, match=words):
        check_train_config(run_config(tmp_path, tmp_path / "run", override))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return make_demo_data(tmp_path_factory.mktemp("demo"), seed=0, n_train=8, n_test=2, height=HEIGHT, width=WIDTH)


def test_crop_size_not_multiple_of_32_fails_before_reading_data(tmp_path):
    with pytest.raises(ConfigError, match="multiple of 32"):
        command_train(run_config(tmp_path / "missing", tmp_path / "run", "train.size=80"), "all")


def test_batch_larger_than_fold_is_fine_because_crops_are_drawn_with_replacement(data_root, tmp_path):
    """An epoch samples crops with replacement: 5 crops from the 4 images of a fold is valid."""
    run = tmp_path / "run"
    command_train(run_config(data_root, run, "train.batch_size=5", "train.steps_per_epoch=1", "train.size=32",
                             "tta=[identity]"), 0)
    assert (run / "fold0" / "done.json").is_file()


def test_unknown_fold(data_root, tmp_path):
    with pytest.raises(ConfigError, match=r"fold\(s\) 7 not in the folds file; available folds: 0, 1"):
        command_train(run_config(data_root, tmp_path / "run"), 7)


def test_train_folds_trains_only_the_listed_folds(data_root, tmp_path):
    """``train.folds`` is what ``kseg run`` trains when compute is short: here fold 1 alone."""
    run = tmp_path / "run"
    paths = command_train(run_config(data_root, run, "train.folds=[1]", "train.steps_per_epoch=1", "train.size=32",
                                     "tta=[identity]"))
    assert paths == [run / "fold1" / "best.weights.h5"] and not (run / "fold0").exists()


def test_a_step_budget_trains_the_planned_folds_for_the_planned_steps(data_root, tmp_path):
    """3 steps in all with at least 2 per fold: one fold of the two, 3 steps, as plan.json says."""
    import json

    run = tmp_path / "run"
    command_train(run_config(data_root, run, "train.budget_steps=3", "train.min_steps_per_fold=2",
                             "train.steps_per_epoch=null", "train.size=32", "tta=[identity]"))
    plan = json.loads((run / "plan.json").read_text())["plan"]
    assert plan["folds"] == [0] and plan["steps_per_epoch"] == 3 and not (run / "fold1").exists()
    assert json.loads((run / "fold0" / "done.json").read_text())["steps_per_epoch"] == 3


@pytest.mark.parametrize("override, words", [
    ("train.folds=[0, 2]", r"train.folds: fold\(s\) \[2\] do not exist with folds.n_splits=2 \(folds are 0..1\)"),
    ("train.folds=first", r"train.folds must be 'all', a fold index or a list of fold indices, got 'first'"),
    ("predict.folds=[3]", r"predict.folds: fold\(s\) \[3\] do not exist with folds.n_splits=2"),
])
def test_bad_fold_selection_is_rejected_at_load(override, words, tmp_path):
    with pytest.raises(ConfigError, match=words):
        run_config(tmp_path, tmp_path / "run", override)


# ---------------------------------------------------------------------------------------- real runs

@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory) -> Config:
    # At half scale, so the OOF test below shows the probabilities are restored to each image's full size.
    cfg = run_config(data_root, tmp_path_factory.mktemp("runs") / "run", "train.scale=0.5")
    command_train(cfg, "all")
    return cfg


@pytest.mark.slow
def test_two_fold_run_writes_every_artifact(trained_run):
    run = Path(trained_run.output.dir)
    assert json.loads((run / "plan.json").read_text())["plan"]["scale"] == 0.5
    for name in ("config.yaml", "folds.csv", "env.json", "channels.json", "plan.json"):
        assert (run / name).is_file(), name
    assert yaml.safe_load((run / "config.yaml").read_text())["train"]["size"] == 64
    env = json.loads((run / "env.json").read_text())
    assert set(env["packages"]) == {"tensorflow", "tf_keras", "segmentation_models", "albumentations", "numpy"}
    assert env["packages"]["albumentations"] == "2.0.8" and env["python"]
    channels = json.loads((run / "channels.json").read_text())
    assert channels == {"channels": ["foreground", "border", "class:astro", "class:cort", "class:shsy5y"],
                        "classes": ["astro", "cort", "shsy5y"], "task": "instance"}
    for fold in (0, 1):
        fold_dir = run / f"fold{fold}"
        for name in ("best.weights.h5", "last.weights.h5", "history.csv", "curves.png", "state.json", "done.json"):
            assert (fold_dir / name).is_file(), f"fold{fold}/{name}"
        history = pd.read_csv(fold_dir / "history.csv")
        assert {"epoch", "loss", "val_loss", "val_fg_dice", "val_score", "lr", "drawn_empty"} <= set(history.columns)
        assert 0.0 <= history["val_score"].iloc[0] <= 1.0
        assert len(history) == 1 and np.isfinite(history["loss"]).all()
        drawn = history.filter(like="drawn_").drop(columns="drawn_empty")
        assert drawn.sum(axis=1).iloc[0] == 4  # one epoch = 2 steps x batch 2
        assert json.loads((fold_dir / "state.json").read_text())["epoch"] == 1


@pytest.mark.slow
def test_oof_has_one_npz_per_image_at_full_size(trained_run, data_root):
    run = Path(trained_run.output.dir)
    folds = pd.read_csv(run / "folds.csv", dtype={"id": str})
    assert len(folds) == 8
    for image_id, fold in zip(folds["id"], folds["fold"]):
        oof = np.load(run / f"fold{fold}" / "oof" / f"{image_id}.npz")
        assert set(oof.files) == {"plain", "tta"}
        expected = (*image_size(data_root / "train" / f"{image_id}.png"), 5)
        assert expected[:2] == (HEIGHT, WIDTH)
        for key in ("plain", "tta"):
            assert oof[key].shape == expected and oof[key].dtype == np.uint8
    assert sum(len(list((run / f"fold{k}" / "oof").glob("*.npz"))) for k in (0, 1)) == 8


@pytest.mark.slow
def test_resume_skips_done_folds(trained_run, capsys):
    run = Path(trained_run.output.dir)
    before = {k: (run / f"fold{k}" / "best.weights.h5").stat().st_mtime_ns for k in (0, 1)}
    paths = command_train(trained_run, "all", resume=True)
    assert paths == [run / "fold0" / "best.weights.h5", run / "fold1" / "best.weights.h5"]
    assert {k: (run / f"fold{k}" / "best.weights.h5").stat().st_mtime_ns for k in (0, 1)} == before
    assert capsys.readouterr().out.count("done.json exists, skipping") == 2


@pytest.mark.slow
def test_resume_continues_an_interrupted_fold_at_its_epoch(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run.output.dir, run)
    (run / "fold1" / "done.json").unlink()  # as if interrupted after epoch 1 of 2
    first_epoch = pd.read_csv(run / "fold1" / "history.csv").iloc[0]
    cfg = run_config(Path(trained_run.data.root), run, "train.epochs=2", "train.scale=0.5")
    command_train(cfg, 1, resume=True)
    history = pd.read_csv(run / "fold1" / "history.csv")
    assert history["epoch"].tolist() == [0, 1]
    assert history.iloc[0]["loss"] == first_epoch["loss"]  # kept, not retrained
    assert json.loads((run / "fold1" / "state.json").read_text())["epoch"] == 2
    assert (run / "fold1" / "done.json").is_file()


@pytest.mark.slow
def test_same_seed_gives_the_same_first_epoch_loss(trained_run, tmp_path):
    first_run = Path(trained_run.output.dir)
    cfg = run_config(Path(trained_run.data.root), tmp_path / "again", f"folds.file={first_run / 'folds.csv'}",
                     "train.scale=0.5")
    command_train(cfg, 0)
    again = pd.read_csv(tmp_path / "again" / "fold0" / "history.csv")
    original = pd.read_csv(first_run / "fold0" / "history.csv")
    assert again["loss"].iloc[0] == pytest.approx(original["loss"].iloc[0], rel=1e-6)
    assert again["val_loss"].iloc[0] == pytest.approx(original["val_loss"].iloc[0], rel=1e-5)


@pytest.mark.slow
def test_overfits_a_single_batch(data_root, tmp_path):
    from kseg.data import load_records
    from kseg.model import build_model, preprocess_fn
    from kseg.targets import channel_names
    from kseg.train import SampleCache, compile_model, run_classes, train_dataset

    cfg = run_config(data_root, tmp_path / "run", "train.augment=[]", "train.lr=0.01", "train.batch_size=2")
    records = load_records(cfg, progress=False)
    classes = run_classes(records, "instance")
    n_channels = len(channel_names("instance", classes))
    cache = SampleCache.from_records(records, "instance", classes, 2, progress=False)
    sampler = Sampler(range(len(records)), [r.cls for r in records], [r.n_instances == 0 for r in records],
                      0.0, None, seed=0, fold=0, epoch_size=2)
    one_batch = train_dataset(cache, sampler, cfg, preprocess_fn(cfg)).take(1).cache().repeat()
    model = build_model(cfg, n_channels)
    compile_model(model, cfg, n_channels)
    losses = model.fit(one_batch, steps_per_epoch=5, epochs=10, verbose=0).history["loss"]
    assert losses[-1] < 0.5 * losses[0], losses


def test_checkpoint_follows_the_validation_metric_not_the_loss(tmp_path):
    """best.weights.h5 is the epoch with the best val_score even when val_loss is lowest elsewhere."""
    import tf_keras as keras

    from kseg.train import FoldRecorder

    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False)])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")
    epochs = iter([{"val_loss": 0.5, "val_score": 0.2}, {"val_loss": 0.9, "val_score": 0.6},
                   {"val_loss": 0.1, "val_score": 0.4}])
    sampler = Sampler(np.arange(3), [None] * 3, [False] * 3, 0.5, None, seed=0, fold=0, epoch_size=3)
    run = RunDir(tmp_path)
    recorder = FoldRecorder(run, 0, model, sampler, lambda _: next(epochs), "val_score", pd.DataFrame(), 0, None, None)
    for epoch in range(3):
        model.layers[0].set_weights([np.full((1, 1), float(epoch), np.float32)])
        sampler.draw(epoch)
        recorder.on_epoch_end(epoch, {"loss": 1.0})
    assert recorder.best_epoch == 1 and recorder.best_value == 0.6
    model.load_weights(str(run.weights(0)))
    assert model.layers[0].get_weights()[0][0, 0] == 1.0
    history = pd.read_csv(run.history(0))
    assert history["val_score"].tolist() == [0.2, 0.6, 0.4]
    assert json.loads(run.state(0).read_text())["monitor"] == "val_score"


def test_validation_images_fill_a_pixel_budget():
    """auto scores as many whole validation images as fit in VAL_PIXELS, at least VAL_MIN_IMAGES; a number or
    null (all) is taken as given."""
    from types import SimpleNamespace

    from kseg.train import VAL_MIN_IMAGES, VAL_PIXELS, validation_count

    small = SimpleNamespace(images=[np.zeros((256, 256, 3), np.uint8)] * 200)
    large = SimpleNamespace(images=[np.zeros((1024, 1280, 3), np.uint8)] * 20)
    assert validation_count(small, range(200), "auto") == VAL_PIXELS // (256 * 256)
    assert validation_count(large, range(20), "auto") == VAL_MIN_IMAGES
    assert validation_count(small, range(200), 5) == 5 and validation_count(small, range(200), None) is None
    with pytest.raises(ConfigError, match="train.val_images must be 'auto', a positive integer or null, got 0"):
        check_train_config(load_config(None, ["train.val_images=0"]))
