"""The main job end to end on a tiny demo competition, and on a few real binary images (polyps):
folds → train → search → predict → validate → score."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import TINY, TINY_RUN, tiny_args
from kseg.cli import main
from kseg.config import load_config
from kseg.errors import ConfigError, KsegWarning
from kseg.predict import command_predict, fold_weight_files
from kseg.run import RunDir

pytestmark = pytest.mark.slow


def test_run_writes_a_valid_scorable_submission(finished_run, capsys):
    root = finished_run
    run = root / "run"
    for name in ("folds.csv", "config.yaml", "channels.json", "postprocess.json", "search_table.csv",
                 "search_curves.png", "fold0/best.weights.h5", "fold1/curves.png", "fold1/history.csv",
                 "report.html"):
        assert (run / name).is_file(), name
    assert len(list((run / "fold0" / "oof").glob("*.npz"))) + len(list((run / "fold1" / "oof").glob("*.npz"))) == 6
    submission = pd.read_csv(root / "submission.csv", dtype=str, keep_default_na=False)
    assert list(submission.columns) == ["id", "predicted"]
    assert submission["id"].nunique() == 2
    assert main(["validate", str(root / "submission.csv"), *tiny_args(root)]) == 0
    capsys.readouterr()
    assert main(["score", str(root / "data" / "test_truth.csv"), str(root / "submission.csv"),
                 "--schema", "sartorius", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0.0 <= report["score"] <= 1.0 and set(report["per_image"]) == set(submission["id"])


def test_binary_run_on_real_polyp_frames_writes_a_valid_submission(tmp_path, fixtures_dir, capsys):
    """The shipped polyps config (TGS schema, JPEG, task binary) on 4 + 2 real Kvasir-SEG frames
    (tests/fixtures/SOURCE.md): the submission has one row per test image and ``kseg validate`` accepts it.
    The fixture's CSVs are the source rows as they are, without the prepared set's group column. The input carries
    two extra channels (model.extra_channels), computed alike for training, OOF and the test images."""
    shutil.copytree(fixtures_dir / "polyps", tmp_path / "data")
    args = tiny_args(tmp_path, ["model.backbone=resnet18", "model.encoder_weights=null", "data.schema.group_col=null",
                                "model.extra_channels=[median, yen]"],
                     config="configs/real/polyps_kvasir.yaml", tiny=TINY_RUN)
    assert main(["run", *args]) == 0
    assert json.loads((tmp_path / "run" / "channels.json").read_text())["task"] == "binary"
    submission = pd.read_csv(tmp_path / "submission.csv", dtype=str, keep_default_na=False)
    assert list(submission.columns) == ["id", "rle_mask"]
    assert sorted(submission["id"]) == sorted(p.stem for p in (tmp_path / "data" / "test").glob("*.jpg"))
    capsys.readouterr()
    assert main(["validate", str(tmp_path / "submission.csv"), *args]) == 0
    assert capsys.readouterr().out.startswith("valid: 2 rows, 2 images")


def test_search_is_at_least_as_good_as_the_defaults(finished_run):
    """The default point is part of the grid, so the chosen global parameters score at least as well on OOF."""
    run = finished_run / "run"
    table = pd.read_csv(run / "search_table.csv")
    default = load_config("configs/demo.yaml").postprocess.default
    at_default = table[(table["fg_threshold"] == default["fg_threshold"])
                       & (table["seed_threshold"] == default["seed_threshold"])
                       & (table["min_area"] == default["min_area"])]
    assert len(at_default) == 1
    chosen = json.loads(RunDir(run).postprocess.read_text())["default"]
    at_chosen = table[(table["fg_threshold"] == chosen["fg_threshold"])
                      & (table["seed_threshold"] == chosen["seed_threshold"])
                      & (table["min_area"] == chosen["min_area"])]
    assert at_chosen["score"].item() == table["score"].max() >= at_default["score"].item()


def test_rerun_skips_finished_stages(finished_run, capsys):
    capsys.readouterr()
    assert main(["run", *tiny_args(finished_run)]) == 0
    out = capsys.readouterr().out
    assert "=== train ===" not in out and "up to date" in out
    assert "submission:" in out and "test score against test_truth.csv" in out
    assert f"report: {finished_run / 'run' / 'report.html'}" in out
    assert "single fold models on the annotated test images: fold0 " in out


def test_changed_search_grid_redoes_search_and_predict_only(finished_run, capsys):
    capsys.readouterr()
    extra = ["postprocess.grid={fg_threshold: [0.5], seed_threshold: [0.6], min_area: [0]}"]
    assert main(["run", *tiny_args(finished_run, extra)]) == 0
    out = capsys.readouterr().out
    assert "=== train ===" not in out and "=== search ===" in out and "=== predict ===" in out
    chosen = json.loads(RunDir(finished_run / "run").postprocess.read_text())
    assert chosen["default"]["fg_threshold"] == 0.5 and chosen["default"]["seed_threshold"] in (0.5, 0.6)
    assert len(pd.read_csv(RunDir(finished_run / "run").search_table)) == 4  # the new point x the default's values


def test_predict_subset_of_folds_and_missing_weights(finished_run, tmp_path):
    cfg = load_config("configs/demo.yaml", [s for s in TINY] + [
        f"data.root={finished_run / 'data'}", f"output.dir={finished_run / 'run'}", "predict.folds=[1]"])
    assert [p.parent.name for p in fold_weight_files(cfg)] == ["fold1"]
    out = command_predict(cfg, tmp_path / "fold1.csv")
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))
    cfg.predict.folds = [7]
    with pytest.raises(ConfigError, match="fold7"):
        fold_weight_files(cfg)


def test_predict_without_search_uses_defaults(finished_run, tmp_path):
    run_copy = tmp_path / "run"
    shutil.copytree(finished_run / "run", run_copy)
    RunDir(run_copy).postprocess.unlink()
    cfg = load_config("configs/demo.yaml", TINY + [f"data.root={finished_run / 'data'}", f"output.dir={run_copy}"])
    with pytest.warns(KsegWarning, match="using postprocess.default"):
        command_predict(cfg, tmp_path / "sub.csv")


def test_predict_before_training_is_one_clear_error(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path / "data"), "--n-train", "2", "--n-test", "1", "--height", "64",
                 "--width", "64"]) == 0
    assert main(["predict", *tiny_args(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "channels.json" in err and "Traceback" not in err


@pytest.fixture(scope="module")
def learned_run(tmp_path_factory) -> Path:
    """A run long enough to learn the demo cells (still about a minute on 2 CPU cores)."""
    root = tmp_path_factory.mktemp("learned")
    extra = ["data.demo={seed: 5, n_train: 8, n_test: 3, height: 160, width: 192}", "folds.n_splits=2",
             "train.size=96", "train.epochs=4", "train.steps_per_epoch=12", "train.batch_size=4", "train.verbose=0",
             "tta=[identity, hflip]", f"data.root={root / 'data'}", f"output.dir={root / 'run'}",
             f"output.submission={root / 'submission.csv'}"]
    assert main(["run", "--config", "configs/demo.yaml", *[a for s in extra for a in ("--set", s)]]) == 0
    return root


def test_trained_pipeline_beats_otsu_watershed_on_its_data(learned_run, capsys):
    """The point of kseg: the whole pipeline must score above the classical baseline on held-out images."""
    import numpy as np

    from benchmarks.baselines import fit_otsu_watershed, otsu_watershed
    from kseg.data import load_records, read_image

    root = learned_run
    cfg = load_config("configs/demo.yaml", [f"data.root={root / 'data'}"])
    train = load_records(cfg, progress=False)
    cfg.data.train_csv, cfg.data.train_dir = "test_truth.csv", "test"
    test = load_records(cfg, progress=False)
    fitted = fit_otsu_watershed([read_image(r.image_path) for r in train], [r.labels for r in train])
    from kseg.metric import image_score

    otsu = float(np.mean([image_score(r.labels, otsu_watershed(read_image(r.image_path), fitted["bright_objects"],
                                                                 fitted["min_area"])) for r in test]))
    capsys.readouterr()
    assert main(["score", str(root / "data" / "test_truth.csv"), str(root / "submission.csv"),
                 "--schema", "sartorius", "--json"]) == 0
    kseg_score = json.loads(capsys.readouterr().out)["score"]
    assert kseg_score > otsu, (kseg_score, otsu)


def test_summary_warns_when_the_ensemble_scores_below_its_best_fold(finished_run, tmp_path, capsys):
    from kseg.pipeline import print_summary

    root = tmp_path / "copy"
    shutil.copytree(finished_run, root)
    cfg = load_config("configs/demo.yaml", TINY + [f"data.root={root / 'data'}", f"output.dir={root / 'run'}",
                                                   f"output.submission={root / 'submission.csv'}"])
    scores = root / "submission.fold_scores.json"
    for ensemble, warned in ((0.30, True), (0.45, False)):
        scores.write_text(json.dumps({"ensemble": ensemble, "per_fold": {"fold0": 0.25, "fold1": 0.40}}))
        print_summary(cfg, {}, root / "submission.csv")
        out = capsys.readouterr().out
        assert ("warning: the fold ensemble scores below its best fold (fold1 0.4000)" in out) is warned
        assert ("predict.folds=[1]" in out) is warned


def test_changed_tta_rewrites_the_oof_without_retraining(finished_run, capsys):
    """A new TTA list reruns oof, search and predict only; the run is left as it was (the default views)."""
    run = finished_run / "run"
    weights = RunDir(run).weights(0).read_bytes()
    capsys.readouterr()
    assert main(["run", *tiny_args(finished_run, ["tta=[identity]"])]) == 0
    out = capsys.readouterr().out
    assert "=== train ===" not in out and "=== oof ===" in out and "=== search ===" in out
    assert RunDir(run).weights(0).read_bytes() == weights
    for fold in ("fold0", "fold1"):
        assert json.loads((run / fold / "oof" / "oof.json").read_text())["views"] == ["identity"]
        for path in (run / fold / "oof").glob("*.npz"):
            arrays = np.load(path)
            np.testing.assert_array_equal(arrays["tta"], arrays["plain"])  # one view: TTA is the plain prediction
    assert main(["oof", *tiny_args(finished_run, ["tta=[identity]"])]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["run", *tiny_args(finished_run)]) == 0  # back to the default views
    assert "=== train ===" not in capsys.readouterr().out
    assert json.loads((run / "fold0" / "oof" / "oof.json").read_text())["views"] == ["identity", "hflip"]
