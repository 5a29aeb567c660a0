"""Hostile and broken inputs (issue 9): ids never escape their folders, no command destroys work, nothing
is silently wrong, and every case is one ``error:`` line from the CLI instead of a traceback.

Each test reproduces one reported defect on a tiny competition (8x8 images) built in ``tmp_path``.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kseg import data, files, folds, pipeline, rle, submission
from kseg.cli import main
from kseg.config import Config, load_config
from kseg.errors import ConfigError, DataError, KsegError, KsegWarning

SHAPE = (8, 8)
HEADER = "id,annotation,width,height,cell_type,sample_id"
MASK_A = np.zeros(SHAPE, bool)
MASK_A[1:3, 1:3] = True
MASK_B = np.zeros(SHAPE, bool)
MASK_B[5:7, 4:7] = True
RLE_A, RLE_B = rle.encode(MASK_A), rle.encode(MASK_B)


def write_image(path: Path, value: int = 100) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(SHAPE, value, np.uint8))
    return path


def train_row(image_id: str, annotation: str = RLE_A, cls: str = "astro", group: str = "g") -> str:
    return f"{image_id},{annotation},{SHAPE[1]},{SHAPE[0]},{cls},{group}"


def competition(root: Path, train_lines: list[str], test_ids: tuple[str, ...] = ("t1",),
                sample_lines: list[str] | None = None) -> Path:
    """train.csv (given data lines), an image per plain id, test images and a sample submission."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.csv").write_text("\n".join([HEADER, *train_lines]) + "\n")
    for line in train_lines:
        image_id = line.split(",")[0]
        if image_id and "/" not in image_id and not image_id.endswith(".png"):
            write_image(root / "train" / f"{image_id}.png")
    for image_id in test_ids:
        write_image(root / "test" / f"{image_id}.png")
    sample = sample_lines if sample_lines is not None else [f"{image_id}," for image_id in test_ids]
    (root / "sample_submission.csv").write_text("\n".join(["id,predicted", *sample]) + "\n")
    return root


def config(root: Path, *overrides: str) -> Config:
    return load_config(None, [f"data.root={root}", "data.schema.preset=sartorius",
                              "data.sample_submission=sample_submission.csv", f"output.dir={root / 'run'}",
                              *overrides])


def cli_error(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run the CLI, require exit code 2 and exactly one ``error:`` line (no traceback); return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "Traceback" not in err, err
    return err


def config_file(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# --- 1. ids are never raw paths -------------------------------------------------------------------

@pytest.mark.parametrize("name, problem", [
    ("/etc/passwd", "absolute path"),
    ("../x.png", "leads outside"),
    ("a/../../x.png", "leads outside"),
    ("..", "leads outside"),
    (".", "names the folder .* itself"),
    ("a/..", "names the folder .* itself"),
    ("x\x00.png", "NUL"),
    ("", "non-empty file name"),
])
def test_child_path_rejects_names_that_leave_the_folder(tmp_path: Path, name: str, problem: str) -> None:
    with pytest.raises(DataError, match=rf"^train\.csv line 2: id .*{problem}"):
        files.child_path(tmp_path, name, "train.csv line 2: id")


def test_child_path_keeps_names_inside_and_symlinked_folders(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    linked = tmp_path / "linked"
    linked.symlink_to(real, target_is_directory=True)
    assert files.child_path(linked, "a.png", "id") == linked / "a.png"
    assert files.child_path(linked, "./sub/../b.png", "id") == linked / "b.png"
    assert files.child_path(linked, "sub/c.png", "id") == linked / "sub" / "c.png"


def test_absolute_train_id_is_an_error_not_an_image_elsewhere(tmp_path: Path) -> None:
    outside = write_image(tmp_path / "elsewhere" / "x.png")
    root = competition(tmp_path / "comp", [train_row("a"), train_row(str(outside.with_suffix("")))])
    with pytest.raises(DataError, match=r"train\.csv line 3: id '/.*elsewhere/x': an absolute path"):
        data.load_records(config(root), progress=False)


def test_climbing_test_id_is_an_error_for_listing_and_validate(tmp_path: Path, capsys) -> None:
    root = competition(tmp_path / "comp", [train_row("a")], sample_lines=["t1,", "../../outside,"])
    write_image(tmp_path / "outside.png")
    with pytest.raises(DataError, match=r"sample_submission\.csv line 3: id '\.\./\.\./outside'.*leads outside"):
        data.list_test_images(config(root))
    (root / "sub.csv").write_text("id,predicted\nt1,\n../../outside,\n")
    args = ["validate", str(root / "sub.csv"), "--config", str(config_file(tmp_path / "c.yaml", "{}")),
            "--set", f"data.root={root}", "--set", "data.schema.preset=sartorius",
            "--set", "data.sample_submission=sample_submission.csv"]
    assert "leads outside" in cli_error(capsys, args)


def stand_in_model() -> SimpleNamespace:
    """What train._write_oof asks of a model: a batch prediction (2 channels of zeros) and its replica count."""
    return SimpleNamespace(predict_on_batch=lambda batch: np.zeros((*batch.shape[:3], 2), np.float32),
                           distribute_strategy=SimpleNamespace(num_replicas_in_sync=1))


def test_oof_and_overlay_paths_stay_in_their_folders(tmp_path: Path, monkeypatch) -> None:
    """train._write_oof and predict's overlays build paths from ids: a bad id is an error, a good one
    is written inside (the model is a stand-in, nothing here needs TensorFlow)."""
    from kseg import predict, train

    cfg = config(competition(tmp_path / "comp", [train_row("a")]), "tta=[identity]")
    model = stand_in_model()
    cache = SimpleNamespace(images=[np.zeros((*SHAPE, 3), np.uint8)] * 2)
    records = [SimpleNamespace(id="good", shape=SHAPE), SimpleNamespace(id=str(tmp_path / "escaped"), shape=SHAPE)]
    oof_dir = tmp_path / "run" / "fold0" / "oof"
    train._write_oof(model, cache, records, [0], cfg, lambda image: image.astype(np.float32), oof_dir)
    assert (oof_dir / "good.npz").is_file()
    with pytest.raises(DataError, match="absolute path"):
        train._write_oof(model, cache, records, [1], cfg, lambda image: image.astype(np.float32), oof_dir)
    assert not (tmp_path / "escaped.npz").exists()

    test_image = write_image(tmp_path / "comp" / "test" / "t1.png")
    monkeypatch.setattr(predict, "list_test_images", lambda cfg: [("../../../overlay", test_image)])
    monkeypatch.setattr(predict, "read_channels", lambda run_dir, task: (["foreground", "border"], []))
    monkeypatch.setattr(predict, "load_fold_models", lambda cfg: [model.predict_on_batch])
    monkeypatch.setattr("kseg.model.preprocess_fn", lambda cfg: lambda image: image.astype(np.float32))
    with pytest.raises(DataError, match=r"overlay of test image id '\.\./\.\./\.\./overlay\.png'.*leads outside"):
        predict.command_predict(cfg, tmp_path / "sub.csv")
    assert not list(tmp_path.rglob("overlay.png"))


# --- 2. kseg run checks the config first and never destroys folds ---------------------------------

def test_run_with_a_bad_config_touches_no_fold(tmp_path: Path, capsys) -> None:
    run = tmp_path / "run"
    for name in ("fold0", "fold1", "fold7_my_notes", "fold2019-results"):
        (run / name).mkdir(parents=True)
        (run / name / "best.weights.h5").write_text("weights")
    cfg = config_file(tmp_path / "c.yaml", "{}")
    err = cli_error(capsys, ["run", "--config", str(cfg), "--set", f"output.dir={run}",
                             "--set", "data.schema.preset=sartorius", "--set", "train.scheduler=cosin"])
    assert "train.scheduler" in err
    assert sorted(p.name for p in run.iterdir()) == ["fold0", "fold1", "fold2019-results", "fold7_my_notes"]


@pytest.mark.parametrize("override, message", [
    ("postprocess.grid={fg_threshold: [2.0]}", "postprocess.grid.fg_threshold"),
    ("data.demo={n_train: 3, colour: red}", "data.demo must be null or a mapping"),
    ("train.augment=[{NoSuchTransform: {}}]", "NoSuchTransform"),
    ("postprocess.n_jobs=0", "postprocess.n_jobs must be a non-zero integer"),
    ("postprocess.default={fg_threshold: 0.5}", "'seed_threshold' is missing"),
    ("predict.tile=33", r"predict.tile must be a positive integer multiple of 32 or null, got 33"),
    ("train.border_width=-1", "train.border_width must be a non-negative integer, got -1"),
    ("model.bn_momentum=1.5", r"model.bn_momentum must be a number in \[0, 1\), got 1.5"),
])
def test_run_checks_every_stage_config_up_front(tmp_path: Path, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):  # at load (a type) or before the first stage (a rule)
        pipeline.command_run(config(tmp_path, override))
    assert not (tmp_path / "run").exists()  # nothing was written before the check


def test_superseded_folds_move_aside_with_exact_names(tmp_path: Path) -> None:
    for name in ("fold0", "fold1", "fold12", "fold7_my_notes", "fold2019-results", "folder"):
        (tmp_path / name).mkdir()
    moved = pipeline.set_aside_folds(tmp_path)
    assert moved is not None and moved.parent == tmp_path / "superseded"
    assert sorted(p.name for p in moved.iterdir()) == ["fold0", "fold1", "fold12"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fold2019-results", "fold7_my_notes", "folder", "superseded"]
    assert pipeline.set_aside_folds(tmp_path) is None


# --- 3. demo-data never overwrites files it did not write -----------------------------------------

def test_demo_data_refuses_a_folder_with_foreign_files(tmp_path: Path, capsys) -> None:
    small = ["--n-train", "2", "--n-test", "1", "--height", "16", "--width", "16"]
    (tmp_path / "train.csv").write_text("my real competition\n")
    err = cli_error(capsys, ["demo-data", str(tmp_path), *small])
    assert "files kseg did not write (train.csv)" in err and "--force" in err
    assert (tmp_path / "train.csv").read_text() == "my real competition\n"
    assert main(["demo-data", str(tmp_path), *small, "--force"]) == 0
    assert main(["demo-data", str(tmp_path), *small, "--seed", "1"]) == 0  # its own files may be replaced
    assert main(["demo-data", str(tmp_path), *small]) == 0  # seed 0's images are still kseg's
    capsys.readouterr()
    target = tmp_path / "a_file"
    target.write_text("x")
    assert "is an existing file, not a folder" in cli_error(capsys, ["demo-data", str(target), *small])


def test_demo_data_kind_from_the_cli(tmp_path: Path, capsys) -> None:
    small = ["--n-train", "2", "--n-test", "1", "--height", "32", "--width", "32"]
    assert main(["demo-data", str(tmp_path / "organs"), *small, "--kind", "multiclass"]) == 0
    assert (tmp_path / "organs" / "train.csv").read_text().startswith("ImageId,ClassId,EncodedPixels\n")
    err = cli_error(capsys, ["demo-data", str(tmp_path / "x"), *small, "--kind", "ct"])
    assert err == "error: demo data kind must be one of sartorius, multiclass, dicom, got 'ct'"
    assert not (tmp_path / "x").exists()


# --- 4. two spellings of one image ----------------------------------------------------------------

@pytest.mark.parametrize("second", ["a.png", "./a", "sub/../a"])
def test_two_spellings_of_one_train_image_are_an_error(tmp_path: Path, second: str) -> None:
    root = competition(tmp_path, [train_row("a", RLE_A), train_row("b"), train_row(second, RLE_B)])
    with pytest.raises(DataError, match=r"train\.csv line \d \(id '.*'\) and line \d \(id '.*'\) name the same image"):
        data.load_records(config(root), progress=False)


def test_two_spellings_of_one_test_image_are_an_error(tmp_path: Path) -> None:
    root = competition(tmp_path, [train_row("a")], sample_lines=["t1,", "./t1,"])
    with pytest.raises(DataError, match=r"line 2 \(id 't1'\) and line 3 \(id '\./t1'\) name the same image"):
        data.list_test_images(config(root))


# --- 5. truncated images ----------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".jpg", ".png"])
def test_truncated_image_is_an_error_naming_the_file(tmp_path: Path, ext: str) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / f"x{ext}"
    cv2.imwrite(str(path), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    assert data.read_image(path).shape == (64, 64, 3)
    complete = path.read_bytes()
    path.write_bytes(complete + b"\x00\x00trailing bytes after the end marker")  # some writers append data
    if ext == ".jpg":
        assert data.read_image(path).shape == (64, 64, 3)
    path.write_bytes(complete[: len(complete) * 2 // 3])
    with pytest.raises(DataError, match=rf"{path}: (truncated or corrupt image|not a readable image)"):
        data.read_image(path)


# --- 6. score rejects overlapping predictions -----------------------------------------------------

def test_score_rejects_duplicated_instances_unless_allowed(tmp_path: Path, capsys) -> None:
    truth = tmp_path / "truth.csv"
    truth.write_text("\n".join([HEADER, train_row("a", RLE_A), train_row("a", RLE_B)]) + "\n")
    pred = tmp_path / "pred.csv"
    pred.write_text(f"id,predicted\na,{RLE_A}\na,{RLE_B}\na,{RLE_B}\n")
    err = cli_error(capsys, ["score", str(truth), str(pred), "--schema", "sartorius"])
    assert f"{pred} line 4 (id a): the instance overlaps" in err and "--allow-overlap" in err
    assert main(["score", str(truth), str(pred), "--schema", "sartorius", "--allow-overlap", "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["score"] == 1.0 and "warning:" in captured.err
    assert main(["score", str(truth), str(pred), "--schema", "sartorius", "--task", "binary"]) == 0  # rows unioned


# --- 7. stale or leaking folds ----------------------------------------------------------------------

def grouped_competition(root: Path) -> Path:
    lines = [train_row(f"i{k}", group=f"g{k // 2}") for k in range(8)]  # 4 groups of 2 images
    return competition(root, lines)


def test_folds_made_with_other_settings_are_stale(tmp_path: Path) -> None:
    root = grouped_competition(tmp_path)
    folds.command_folds(config(root, "folds.n_splits=3"))
    ids = [f"i{k}" for k in range(8)]
    path = root / "run" / "folds.csv"
    assert json.loads(folds.sidecar_path(path).read_text())["n_splits"] == 3
    with pytest.raises(DataError, match=r"has folds 0, 1, 2 but folds.n_splits is 2"):
        folds.read_folds(path, ids, cfg=config(root, "folds.n_splits=2"))
    with pytest.raises(DataError, match=r"made with other settings than the config \(seed 42 -> 7"):
        folds.read_folds(path, ids, cfg=config(root, "folds.n_splits=3", "folds.seed=7"))
    with pytest.raises(DataError, match=r"group_col 'sample_id' -> 'plate'"):
        folds.read_folds(path, ids, cfg=config(root, "folds.n_splits=3", "data.schema.group_col=plate"))
    assert len(folds.read_folds(path, ids, cfg=config(root, "folds.n_splits=3"))) == 8


def test_a_group_in_two_folds_is_an_error_or_a_loud_warning(tmp_path: Path) -> None:
    path = tmp_path / "folds.csv"
    path.write_text("id,fold\na,0\nb,1\nc,0\nd,0\ne,1\nf,1\n")
    groups = {"a": "g1", "b": "g1", "c": "g2", "d": "g2", "e": "g3", "f": "g4"}
    cfg = config(tmp_path, "folds.n_splits=2")
    with pytest.raises(DataError, match=r"1 of 4 groups have images in more than one fold \('g1' in folds 0, 1\)"):
        folds.read_folds(path, list(groups), cfg=cfg, groups=groups)
    with pytest.warns(KsegWarning, match="continuing because folds.allow_group_leak is true"):
        folds.read_folds(path, list(groups), cfg=config(tmp_path, "folds.n_splits=2", "folds.allow_group_leak=true"),
                         groups=groups)


# --- 8, 9. config values of the wrong type ----------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("train.epochs=true", "train.epochs must be a positive integer, got True"),
    ("postprocess.per_class=maybe", "postprocess.per_class must be true or false, got 'maybe'"),
    ("folds.seed=abc", "folds.seed must be a non-negative integer, got 'abc'"),
    ("folds.n_splits=true", "folds.n_splits must be an integer"),
    ("data.root=null", "data.root must be a path"),
    ("data.root=3", "data.root must be a path"),
    ("data.train_csv=null", "data.train_csv must be a path"),
    ("data.image_ext=5", "data.image_ext must be a file extension"),
    ("output.dir=null", "output.dir must be a path"),
    ("output.dir=12", "output.dir must be a path"),
    ("folds.file=[a]", "folds.file must be a path"),
    ("predict.folds=some", "predict.folds must be 'all'"),
    ("predict.folds=[9]", "predict.folds: fold(s) [9] do not exist with folds.n_splits=5"),
    ("predict.folds=[1, 1]", "predict.folds lists a fold twice: [1, 1]"),
    ("train.folds=[0, 0]", "train.folds lists a fold twice: [0, 0]"),
    ("predict.batch_size=4", "unknown config key 'predict.batch_size'"),
    ("data.metric=tgs", "data.metric: 'tgs' is not a metric; for data.task instance: auto, map_iou, f2_iou"),
    ("data.metric=mean_iou_classes", "data.metric: 'mean_iou_classes' does not score instance predictions"),
])
def test_wrong_config_types_are_one_config_error(tmp_path: Path, capsys, override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])
    assert message in cli_error(capsys, ["folds", "--config", str(config_file(tmp_path / "c.yaml", "{}")),
                                         "--set", override])


def test_blank_image_ext_means_no_extension_and_non_utf8_is_an_error(tmp_path: Path) -> None:
    assert load_config(config_file(tmp_path / "blank.yaml", "data:\n  image_ext:\n")).data.image_ext == ""
    with pytest.raises(ConfigError, match=r"latin1\.yaml: not UTF-8 text"):
        load_config(config_file(tmp_path / "latin1.yaml", "name: caf\xe9\n".encode("latin-1")))


# --- 10. filesystem errors ---------------------------------------------------------------------------

def test_filesystem_errors_are_one_line(tmp_path: Path, capsys) -> None:
    root = grouped_competition(tmp_path / "comp")
    cfg = config_file(tmp_path / "c.yaml", "{}")
    base = ["--config", str(cfg), "--set", f"data.root={root}", "--set", "data.schema.preset=sartorius",
            "--set", "folds.n_splits=2"]
    (tmp_path / "folder.csv").mkdir()
    assert "is a folder" in cli_error(capsys, ["folds", *base, "--set", f"folds.file={tmp_path / 'folder.csv'}"])
    with pytest.raises(DataError, match="is a folder"):
        folds.read_folds(tmp_path / "folder.csv", ["i0"])
    (tmp_path / "a_file").write_text("x")
    err = cli_error(capsys, ["folds", *base, "--set", f"output.dir={tmp_path / 'a_file'}"])
    assert "cannot mkdir" in err and "a_file" in err
    err = cli_error(capsys, ["folds", *base, "--set", "output.dir=/proc/kseg-not-writable"])
    assert "cannot mkdir /proc/kseg-not-writable" in err


# --- 11. fold numbers -----------------------------------------------------------------------------------

@pytest.mark.parametrize("fold", ["\u00b2", "\u0663", "-1", "1.0"])
def test_fold_column_must_hold_ascii_integers(tmp_path: Path, fold: str) -> None:
    (tmp_path / "folds.csv").write_text(f"id,fold\na,0\nb,{fold}\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 3: fold is .*not a non-negative integer"):
        folds.read_folds(tmp_path / "folds.csv", ["a", "b"])


# --- 12. line numbers ---------------------------------------------------------------------------------

def test_errors_name_the_file_line_despite_blank_lines_and_quoted_newlines(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text('id,value\n\na,1\n\n   \nb,"two\nlines"\nc,3\n')
    assert data.read_csv(path).index.tolist() == [3, 6, 8]
    root = competition(tmp_path / "comp", [train_row("a"), "", "", train_row("b", "1 2 3")])
    with pytest.raises(DataError, match=r"train\.csv line 5 \(id b\): odd number of tokens"):
        data.load_records(config(root), progress=False)
    sub = tmp_path / "sub.csv"
    sub.write_text("id,predicted\n\na,\n\n\nzz,\n")
    problems = submission.validate_submission(sub, data.schema_from_config(config(root)), {"a": SHAPE})
    assert problems == ["line 6: unknown id 'zz' (not a test image)"]


# --- 13. stale temporaries of killed writes ---------------------------------------------------------

def test_stale_temporaries_of_kseg_are_removed_on_the_next_write(tmp_path: Path) -> None:
    old = time.time() - 2 * files.STALE_TMP_SECONDS
    stale = tmp_path / ".folds.csv.k3j_9xab.tmp.csv"
    fresh = tmp_path / ".folds.csv.abcdefgh.tmp.csv"  # a write in progress in another process
    users = [tmp_path / ".notes.tmp", tmp_path / ".folds.csv.TOOLONGNAME.tmp.csv", tmp_path / "folds.csv.k3j_9xab.tmp.csv"]
    for path in [stale, fresh, *users]:
        path.write_text("x")
        if path is not fresh:
            os.utime(path, (old, old))
    files.write_text(tmp_path / "other.txt", "new")
    assert not stale.exists() and fresh.exists() and all(path.exists() for path in users)


# --- property: random ids never reach outside the configured folders -----------------------------

_PIECES = st.sampled_from(["/", "..", ".", "../", "/..", "\x00", "a", "b.png", "é", "日本", "~", " ", "\\", "-"])
_IDS = st.one_of(
    st.lists(_PIECES, min_size=1, max_size=6).map("".join),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12),
)
_counter = itertools.count()


def _inside(path: Path, folder: Path) -> bool:
    return os.path.commonpath([os.path.normpath(os.path.abspath(path)), os.path.abspath(folder)]) == os.path.abspath(folder)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(image_id=_IDS)
def test_random_ids_never_read_or_write_outside(tmp_path: Path, monkeypatch, image_id: str) -> None:
    from kseg import train

    work = tmp_path / f"case{next(_counter)}"
    root = work / "comp"
    competition(root, [train_row("a")])
    write_image(work / "outside.png")  # what a climbing id would find
    frame = pd.DataFrame({"id": ["a", image_id], "annotation": [RLE_A, RLE_B], "width": 8, "height": 8,
                          "cell_type": "astro", "sample_id": "g"})
    frame.to_csv(root / "train.csv", index=False)
    pd.DataFrame({"id": ["t1", image_id], "predicted": ""}).to_csv(root / "sample_submission.csv", index=False)
    cfg = config(root, "tta=[identity]")
    touched: list[Path] = []
    for name in ("image_size", "read_image"):
        original = getattr(data, name)
        monkeypatch.setattr(data, name, lambda path, _original=original: (touched.append(Path(path)), _original(path))[1])
    written: list[Path] = []
    original_atomic = train.atomic_path
    monkeypatch.setattr(train, "atomic_path", lambda path: (written.append(Path(path)), original_atomic(path))[1])
    before = {p for p in work.rglob("*")}

    try:
        records = data.load_records(cfg, progress=False)
    except KsegError:
        records = []
    for record in records:
        assert _inside(record.image_path, root / "train")
    try:
        tests = data.list_test_images(cfg)
    except KsegError:
        tests = []
    for _, path in tests:
        assert _inside(path, root / "test")
    (root / "sub.csv").write_text("id,predicted\nt1,\n")
    try:
        submission.command_validate(root / "sub.csv", cfg)
    except KsegError:
        pass
    model = stand_in_model()
    oof_dir = root / "run" / "fold0" / "oof"
    try:
        train._write_oof(model, SimpleNamespace(images=[np.zeros((*SHAPE, 3), np.uint8)]),
                         [SimpleNamespace(id=image_id, shape=SHAPE)], [0], cfg, lambda image: image.astype(np.float32), oof_dir)
    except KsegError:
        pass
    overlay_dir = root / "run" / "test_overlays"
    try:
        assert _inside(files.child_path(overlay_dir, f"{image_id}.png", "overlay of test image id"), overlay_dir)
    except KsegError:
        pass

    assert all(_inside(path, root / "train") or _inside(path, root / "test") for path in touched), touched
    assert all(_inside(path, oof_dir) for path in written), written
    created = {p for p in work.rglob("*")} - before
    assert all(_inside(path, root / "run") or path == root / "sub.csv" for path in created), created


@pytest.mark.parametrize("fold", ["x", "\u00b2", "-1"])
def test_bad_fold_argument_is_one_line(tmp_path: Path, capsys, fold: str) -> None:
    err = cli_error(capsys, ["train", "--config", str(config_file(tmp_path / "c.yaml", "{}")), "--fold", fold])
    assert "--fold expects a fold index" in err


def test_prediction_ensembles_only_kseg_fold_folders(tmp_path):
    """A user's fold7_my_notes/best.weights.h5 next to the run's folds never joins the ensemble."""
    from kseg.config import load_config
    from kseg.predict import fold_weight_files

    for name in ("fold0", "fold1", "fold10", "fold7_my_notes", "fold2019-results"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.weights.h5").write_bytes(b"")
    cfg = load_config(None, [f"output.dir={tmp_path}"])
    assert [p.parent.name for p in fold_weight_files(cfg)] == ["fold0", "fold1", "fold10"]


@pytest.mark.parametrize("content, message", [
    ("{not json", r"postprocess.json: not valid JSON"),
    ("[1, 2]", r"postprocess.json: expected a mapping with 'default' and 'per_class', got list"),
    ('{"task": "binary", "default": {"fg_threshold": 0.5, "min_area": 0}}',
     r"postprocess.json: searched for data.task 'binary', but the config's task is 'instance'"),
    ('{"default": {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 0}, "per_class": []}',
     r"postprocess.json: 'per_class' must be a mapping"),
    ('{"default": {"fg_threshold": 1.5, "seed_threshold": 0.5, "min_area": 0, "fill_holes": true}}',
     r"postprocess.json: default: post-processing param 'fg_threshold' must be a number in \[0, 1\], got 1.5"),
    ('{"default": {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 0, "fill_holes": true},'
     ' "per_class": {"astro": {"fg_threshold": 0.5}}}', r"postprocess.json: per_class.astro: post-processing param"),
    ('{"per_class": {}}', r"postprocess.json: default: post-processing param 'fg_threshold' is missing"),
    ('{"default": {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 0, "fill_holes": true}, "oof_scor": 0.5}',
     r"postprocess.json: unknown key\(s\) 'oof_scor'; a search result has"),
    ('{"default": {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 0, "fill_holes": true}, "oof_score": "0.5"}',
     r"postprocess.json: oof_score must be a number or null, got '0.5'"),
    ('{"default": {"fg_threshold": 0.5, "seed_threshold": 0.5, "min_area": 0, "fill_holes": true}, "per_fold": [0.5]}',
     r"postprocess.json: per_fold must map names to scores, got \[0.5\]"),
])
def test_a_broken_search_result_is_named_before_prediction(tmp_path: Path, content: str, message: str) -> None:
    from kseg.run import RunDir
    from kseg.search import read_search_result

    cfg = load_config(None, [f"output.dir={tmp_path}"])
    RunDir.of(cfg).postprocess.write_text(content)
    with pytest.raises(DataError, match=message):
        read_search_result(cfg)
