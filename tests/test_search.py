"""OOF search on a fake run directory: outputs, honest scores, and reuse equal to the naive computation."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from kseg.config import Config, load_config, with_values
from kseg.data import ImageRecord, load_records
from kseg.demo import make_demo_data
from kseg.errors import ConfigError, DataError
from kseg.metric import dice, image_score, tgs_score
from kseg.postprocess import instances_from_probs
from kseg.search import Grid, SearchResult, command_search, read_grid, score_grid
from kseg.targets import make_targets

# Holds postprocess.default (0.5, 0.5, 16), so the searched params can never score below it.
SMALL_GRID = {"fg_threshold": [0.3, 0.5, 0.7], "seed_threshold": [0.5, 0.8], "min_area": [0, 16, 40]}


def fake_probs(labels: np.ndarray, cls_index: int | None, n_classes: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """Blurred, noisy training targets of a truth label image, uint8 ×255 like the OOF files."""
    clean = make_targets(labels, "instance", cls_index, n_classes, border_width=2)
    blurred = ndimage.gaussian_filter(clean, sigma=(1.2, 1.2, 0))
    noisy = blurred + rng.normal(0, noise, blurred.shape)
    return (np.clip(noisy, 0, 1) * 255).round().astype(np.uint8)


def write_run(cfg: Config, records: list[ImageRecord], classes: list[str], folds: dict[str, int], seed: int = 0) -> None:
    """channels.json, folds.csv and fold{K}/oof/{id}.npz as training writes them."""
    run_dir = Path(cfg.output.dir)
    rng = np.random.default_rng(seed)
    channels = ["foreground", "border", *(f"class:{c}" for c in classes)]
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "channels.json").write_text(json.dumps({"channels": channels, "classes": classes, "task": "instance"}))
    pd.DataFrame({"id": list(folds), "fold": list(folds.values())}).to_csv(run_dir / "folds.csv", index=False)
    for record in records:
        oof_dir = run_dir / f"fold{folds[record.id]}" / "oof"
        oof_dir.mkdir(parents=True, exist_ok=True)
        cls_index = classes.index(record.cls)
        np.savez_compressed(
            oof_dir / f"{record.id}.npz",
            plain=fake_probs(record.labels, cls_index, len(classes), 0.25, rng),
            tta=fake_probs(record.labels, cls_index, len(classes), 0.12, rng),
        )


@pytest.fixture(scope="module")
def demo_cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    root = tmp_path_factory.mktemp("search")
    competition = make_demo_data(root / "competition", seed=3, n_train=6, n_test=1, height=128, width=160)
    # The hand-made folds below (i % 2) are 2 folds that split wells: both must be stated, since folds are
    # checked against the config and for groups spanning folds on every read.
    return load_config(None, [f"data.root={competition}", "data.schema.preset=sartorius", f"output.dir={root / 'run'}", "postprocess.n_jobs=1",
                              f"postprocess.grid={json.dumps(SMALL_GRID)}", "folds.n_splits=2", "folds.allow_group_leak=true"])


@pytest.fixture(scope="module")
def demo_run(demo_cfg: Config) -> tuple[Config, list[ImageRecord], list[str]]:
    records = load_records(demo_cfg, progress=False)
    classes = sorted({record.cls for record in records})
    write_run(demo_cfg, records, classes, {record.id: i % 2 for i, record in enumerate(records)})
    return demo_cfg, records, classes


def test_search_writes_outputs_and_beats_the_default_params(demo_run: tuple) -> None:
    cfg, records, classes = demo_run
    result = command_search(cfg)
    run_dir = Path(cfg.output.dir)
    saved = json.loads((run_dir / "postprocess.json").read_text())
    assert SearchResult.read(run_dir / "postprocess.json", "instance") == result  # the typed result round-trips
    for key in ("default", "per_class", "classes", "oof_score", "oof_score_plain", "oof_score_default",
                "class_accuracy", "per_fold", "per_class_score"):
        assert key in saved
    assert saved["searched_on"] == "tta" and saved["n_images"] == len(records)
    assert set(saved["per_fold"]) == {"0", "1"}
    assert set(saved["per_class"]) == set(saved["per_class_score"]) == set(classes)
    assert saved["class_accuracy"] == 1.0
    assert saved["oof_score"] >= saved["oof_score_default"]
    assert saved["oof_score"] > saved["oof_score_plain"]  # the tta arrays are the less noisy ones
    for params in [saved["default"], *saved["per_class"].values()]:
        assert params["fg_threshold"] in SMALL_GRID["fg_threshold"] and params["min_area"] in SMALL_GRID["min_area"]
        assert params["fill_holes"] is True

    table = pd.read_csv(run_dir / "search_table.csv")
    assert len(table) == 3 * 2 * 3
    assert list(table.columns[:4]) == ["fg_threshold", "seed_threshold", "min_area", "score"]
    assert {f"score:{cls}" for cls in classes} <= set(table.columns)
    best_row = table.loc[table["score"].idxmax()]
    assert best_row["fg_threshold"] == saved["default"]["fg_threshold"]
    assert (run_dir / "search_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_search_that_does_not_write_leaves_the_run_s_files_as_they_are(demo_run: tuple) -> None:
    cfg, _, _ = demo_run
    run_dir = Path(cfg.output.dir)
    written = command_search(cfg)
    files = {name: (run_dir / name).read_bytes() for name in ("postprocess.json", "search_table.csv", "search_curves.png")}
    plain = command_search(cfg, use_tta=False, write=False)
    assert plain.searched_on == "plain" and written.searched_on == "tta"
    assert {name: (run_dir / name).read_bytes() for name in files} == files
    assert command_search(cfg, use_tta=False, write=False) == plain


def test_search_on_plain_predictions_and_parallel_workers(demo_run: tuple) -> None:
    cfg, records, _ = demo_run
    poor_default = {"fg_threshold": 0.7, "seed_threshold": 0.8, "min_area": 40, "fill_holes": True}
    parallel_cfg = with_values(cfg, {"postprocess.n_jobs": 2, "postprocess.per_class": False, "postprocess.default": poor_default})
    result = command_search(parallel_cfg, use_tta=False)
    assert result.searched_on == "plain"
    assert result.per_class == {}
    assert result.oof_score == pytest.approx(result.oof_score_plain)
    assert result.oof_score > result.oof_score_default + 0.05
    assert result.default != poor_default


def test_reuse_path_equals_naive_post_processing(demo_run: tuple) -> None:
    cfg, records, classes = demo_run
    grid = read_grid(cfg, "instance")
    rng = np.random.default_rng(7)
    for record in records[:2]:
        probs = fake_probs(record.labels, 0, len(classes), 0.2, rng)
        naive = [image_score(record.labels, instances_from_probs(probs, params)) for params in grid.points()]
        np.testing.assert_allclose(score_grid(record.labels, probs, grid), naive)


def test_binary_grid_ignores_seeds_and_matches_naive_dice() -> None:
    cfg = load_config(None, ["data.task=binary", f"postprocess.grid={json.dumps(SMALL_GRID)}"])
    grid = read_grid(cfg, "binary")
    assert grid.shape == (3, 3, 1) and list(grid.axes) == ["fg_threshold", "min_area", "empty_area"]
    assert all(set(params) == {"fg_threshold", "min_area", "empty_area"} for params in grid.points())
    truth = np.zeros((40, 50), np.int32)
    truth[5:25, 5:30] = 1
    rng = np.random.default_rng(2)
    probs = np.clip(ndimage.gaussian_filter(truth.astype(float), 1.5) + rng.normal(0, 0.3, truth.shape), 0, 1)[..., None]
    naive = [dice(truth, instances_from_probs(probs, params, "binary")) for params in grid.points()]
    np.testing.assert_allclose(score_grid(truth, probs, grid), naive)
    with_empty = read_grid(load_config(None, ["data.task=binary", "postprocess.grid="
                                              + json.dumps({**SMALL_GRID, "empty_area": [0, 200, 5000]})]), "binary")
    assert with_empty.shape == (3, 3, 3)
    naive = [dice(truth, instances_from_probs(probs, params, "binary")) for params in with_empty.points()]
    np.testing.assert_allclose(score_grid(truth, probs, with_empty), naive)
    assert score_grid(truth, probs, with_empty)[2] == 0.0  # empty_area 5000 > the whole mask: empty, Dice 0


def test_the_grid_is_scored_by_the_configured_metric() -> None:
    """data.metric tgs_ap_iou: every point scores as TGS does (hits over IoU thresholds), not as Dice."""
    cfg = load_config(None, ["data.task=binary", "data.metric=tgs_ap_iou", f"postprocess.grid={json.dumps(SMALL_GRID)}"])
    grid = read_grid(cfg, "binary")
    truth = np.zeros((40, 50), np.int32)
    truth[5:25, 5:30] = 1
    probs = np.clip(ndimage.gaussian_filter(truth.astype(float), 3.0), 0, 1)[..., None]
    scores = score_grid(truth, probs, grid)
    np.testing.assert_allclose(scores, [tgs_score(truth, instances_from_probs(probs, p, "binary")) for p in grid.points()])
    assert not np.allclose(scores, [dice(truth, instances_from_probs(probs, p, "binary")) for p in grid.points()])


@pytest.mark.parametrize(
    ("grid", "message"),
    [
        ({**SMALL_GRID, "min_area": []}, "postprocess.grid.min_area must be a non-empty list"),
        ({**SMALL_GRID, "fg_threshold": [0.5, 1.2]}, "postprocess.grid.fg_threshold"),
        ({**SMALL_GRID, "seed": [0.5]}, "unknown key 'seed'"),
        ({"fg_threshold": [0.5], "min_area": [0]}, "seed_threshold"),
    ],
)
def test_bad_grid_raises_config_error(grid: dict, message: str) -> None:
    cfg = load_config(None, [f"postprocess.grid={json.dumps(grid)}"])
    with pytest.raises(ConfigError, match=message):
        read_grid(cfg, "instance")


def test_missing_or_broken_oof_files_are_named(demo_run: tuple, tmp_path: Path) -> None:
    cfg, records, classes = demo_run
    broken_cfg = with_values(cfg, {"output.dir": str(tmp_path / "run")})
    with pytest.raises(DataError, match="channels.json not found"):
        command_search(broken_cfg)
    folds = {record.id: i % 2 for i, record in enumerate(records)}
    write_run(broken_cfg, records, classes, folds)
    missing = tmp_path / "run" / f"fold{folds[records[0].id]}" / "oof" / f"{records[0].id}.npz"
    missing.unlink()
    with pytest.raises(DataError, match=f"{missing.name} not found"):
        command_search(broken_cfg)
    np.savez_compressed(missing, plain=np.zeros((4, 4, 2), np.uint8), tta=np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(DataError, match=r"expected uint8 \(128, 160"):
        command_search(broken_cfg)
    np.savez_compressed(missing, plain=np.zeros((128, 160, 2 + len(classes)), np.uint8))
    with pytest.raises(DataError, match="no array 'tta'"):
        command_search(broken_cfg)
    missing.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read the OOF file"):
        command_search(broken_cfg)


def test_untrained_folds_are_skipped_and_no_oof_at_all_is_an_error(demo_run: tuple, tmp_path: Path) -> None:
    cfg, records, classes = demo_run
    partial_cfg = with_values(cfg, {"output.dir": str(tmp_path / "run")})
    folds = {record.id: i % 2 for i, record in enumerate(records)}
    write_run(partial_cfg, records, classes, folds)
    shutil.rmtree(tmp_path / "run" / "fold1")
    result = command_search(partial_cfg)
    assert result.n_images == list(folds.values()).count(0)
    assert set(result.per_fold) == {"0"}
    shutil.rmtree(tmp_path / "run" / "fold0")
    with pytest.raises(DataError, match="no OOF predictions"):
        command_search(partial_cfg)


def test_run_trained_for_another_task_is_rejected(demo_run: tuple, tmp_path: Path) -> None:
    cfg, _, _ = demo_run
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "channels.json").write_text(json.dumps({"channels": ["foreground"], "classes": [], "task": "binary"}))
    with pytest.raises(ConfigError, match="trained for task 'binary'"):
        command_search(with_values(cfg, {"output.dir": str(run_dir)}))


def test_grid_points_follow_the_flat_index_order() -> None:
    grid = Grid("instance", {"fg_threshold": (0.3, 0.5), "seed_threshold": (0.6,), "min_area": (0, 10, 20)},
                {"fill_holes": False})
    points = grid.points()
    assert grid.shape == (2, 1, 3) and len(points) == 6
    assert points[np.ravel_multi_index((1, 0, 2), grid.shape)] == {
        "fg_threshold": 0.5, "seed_threshold": 0.6, "min_area": 20, "fill_holes": False}
