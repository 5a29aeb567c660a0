"""The command line: config errors are one line with exit code 2, score/validate stay TensorFlow-free."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from kseg.cli import main
from kseg.config import load_config
from kseg.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures" / "sartorius"


def test_unknown_config_key_names_the_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train:\n  epoch: 3\n")
    assert main(["folds", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "train.epoch" in err and "Traceback" not in err


def test_set_overrides_are_typed_and_checked():
    cfg = load_config(None, ["train.epochs=2", "tta=[identity, hflip]", "data.schema.group_col=plate",
                             "model.encoder_weights=null"])
    assert cfg.train.epochs == 2 and cfg.tta == ["identity", "hflip"]
    assert cfg.data.schema_.group_col == "plate" and cfg.model.encoder_weights is None
    with pytest.raises(ConfigError, match="train.epocs"):
        load_config(None, ["train.epocs=2"])
    with pytest.raises(ConfigError, match="dotted.key=value"):
        load_config(None, ["train.epochs"])
    with pytest.raises(ConfigError, match="positive integer"):
        load_config(None, ["train.epochs=0"])


def test_missing_config_file_is_one_line(capsys):
    assert main(["folds", "--config", "does/not/exist.yaml"]) == 2
    assert "config file not found: does/not/exist.yaml" in capsys.readouterr().err


def test_score_perfect_and_partial_prediction(tmp_path, capsys):
    truth = FIXTURES / "train.csv"
    frame = pd.read_csv(truth)
    pred = tmp_path / "pred.csv"
    frame[["id", "annotation"]].iloc[::2].rename(columns={"annotation": "predicted"}).to_csv(pred, index=False)
    assert main(["score", str(truth), str(truth.with_name("train.csv")), "--schema", "sartorius", "--json"]) == 2
    capsys.readouterr()
    same = tmp_path / "same.csv"
    frame[["id", "annotation"]].rename(columns={"annotation": "predicted"}).to_csv(same, index=False)
    # The real annotations overlap, which Kaggle rejects in a submission: an error unless --allow-overlap.
    assert main(["score", str(truth), str(same), "--schema", "sartorius", "--json"]) == 2
    assert "overlaps an earlier instance" in capsys.readouterr().err
    assert main(["score", str(truth), str(same), "--schema", "sartorius", "--json", "--allow-overlap"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["score"] == pytest.approx(1.0) and "Kaggle would reject" in captured.err
    assert main(["score", str(truth), str(pred), "--schema", "sartorius", "--allow-overlap"]) == 0
    out = capsys.readouterr().out
    assert "shsy5y" in out and "all" in out
    score = float(out.strip().splitlines()[-1].split()[-1])
    assert 0.3 < score < 0.9


def test_score_needs_a_schema(tmp_path, capsys):
    assert main(["score", str(FIXTURES / "train.csv"), str(FIXTURES / "train.csv")]) == 2
    assert "--schema" in capsys.readouterr().err


def test_score_and_validate_do_not_import_tensorflow(tmp_path):
    """`kseg score` and `kseg validate` must answer in about a second: no TensorFlow import."""
    root = tmp_path / "comp"
    (root / "test").mkdir(parents=True)
    shutil.copy(FIXTURES / "train" / "0030fd0e6378.png", root / "test")
    sub = tmp_path / "sub.csv"
    frame = pd.read_csv(FIXTURES / "train.csv")
    sub.write_text("id,predicted\n0030fd0e6378," + frame["annotation"][0] + "\n")
    code = (
        "import sys; from kseg.cli import main; "
        f"a = main(['score', r'{FIXTURES / 'train.csv'}', r'{sub}', '--schema', 'sartorius']); "
        f"b = main(['validate', r'{sub}', '--config', r'{Path('configs/sartorius.yaml').resolve()}', "
        f"'--set', r'data.root={root}', '--set', 'data.sample_submission=null']); "
        "assert (a, b) == (0, 0), (a, b); assert 'tensorflow' not in sys.modules; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


def test_caveats_are_warning_lines_from_the_cli_and_silenceable_in_a_notebook(monkeypatch, capsys):
    """Library code warns with KsegWarning (never prints); the CLI shows every one as a ``warning:`` line on
    stdout, repeats included, and a notebook's filter silences them."""
    import warnings

    from kseg import cli
    from kseg.errors import KsegWarning, warn

    def handler(args):
        for _ in range(2):
            warn("folds.csv has no group column")
        return 0

    monkeypatch.setattr(cli, "_cmd_validate", handler)
    assert cli.main(["validate", "sub.csv", "--config", "configs/demo.yaml"]) == 0
    assert capsys.readouterr().out.count("warning: folds.csv has no group column\n") == 2
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=KsegWarning)
        warn("silenced")
    assert capsys.readouterr() == ("", "")
