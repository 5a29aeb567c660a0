"""The run folder's one owner: every path of a run comes from RunDir, and only exact ``fold<digits>`` folders
are folds (a user's ``fold7_notes/`` or ``fold-1`` is never read, moved or ensembled)."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kseg.config import folds_path, load_config
from kseg.run import RunDir


def test_layout_of_a_run(tmp_path: Path) -> None:
    run = RunDir.of(load_config(None, [f"output.dir={tmp_path}"]))
    assert run.root == tmp_path
    assert run.weights(3) == tmp_path / "fold3" / "best.weights.h5"
    assert run.oof(0) == tmp_path / "fold0" / "oof" and run.done(1).name == "done.json"
    assert {run.channels.name, run.plan.name, run.postprocess.name, run.folds_csv.name} == {
        "channels.json", "plan.json", "postprocess.json", "folds.csv"}
    assert folds_path(load_config(None, [f"output.dir={tmp_path}"])) == run.folds_csv
    assert folds_path(load_config(None, [f"output.dir={tmp_path}", "folds.file=my/folds.csv"])) == Path("my/folds.csv")


def test_only_kseg_fold_folders_count_in_index_order(tmp_path: Path) -> None:
    run = RunDir(tmp_path)
    assert run.fold_dirs() == [] and RunDir(tmp_path / "missing").trained_folds() == []
    for name in ("fold10", "fold2", "fold7_notes", "fold-1", "folds", "Fold3"):
        (tmp_path / name).mkdir()
    (tmp_path / "fold4").write_text("a file, not a fold")
    for k in (10, 2):
        run.weights(k).write_bytes(b"")
    (tmp_path / "fold7_notes" / "best.weights.h5").write_bytes(b"")
    assert [d.name for d in run.fold_dirs()] == ["fold2", "fold10"]
    assert run.trained_folds() == [2, 10] and run.folds_with("done.json") == []
    with pytest.raises(ValueError, match="not a fold folder"):
        RunDir.fold_index(tmp_path / "fold7_notes")


@given(name=st.text(alphabet="fold0123456789_-. x", min_size=1, max_size=10))
def test_fold_index_accepts_exactly_fold_and_digits(name: str) -> None:
    is_fold = name.startswith("fold") and name[4:].isdigit() and name[4:].isascii()
    if is_fold:
        assert RunDir.fold_index(Path("/run") / name) == int(name[4:])
        assert RunDir(Path("/run")).fold(int(name[4:])).name == f"fold{int(name[4:])}"
    else:
        with pytest.raises(ValueError):
            RunDir.fold_index(Path("/run") / name)
