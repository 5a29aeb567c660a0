"""kseg.console: modules log to their own loggers and print nothing by themselves; the CLI's console prints
each line once, as it always has; a notebook can silence or capture them."""
from __future__ import annotations

import logging

import pandas as pd

from kseg.cli import main
from kseg.config import load_config
from kseg.console import ROOT_LOGGER, console
from kseg.demo import make_demo_data
from kseg.folds import command_folds


def _folds_cfg(tmp_path):
    root = make_demo_data(tmp_path / "data", n_train=6, n_test=1, height=48, width=48)
    return load_config("configs/demo.yaml", [f"data.root={root}", f"output.dir={tmp_path / 'run'}", "folds.n_splits=2"])


def test_a_stage_without_a_console_prints_nothing_and_logs_to_its_module(tmp_path, capsys, caplog, kseg_console):
    logging.getLogger(ROOT_LOGGER).removeHandler(kseg_console)  # as a notebook without a console
    cfg = _folds_cfg(tmp_path)
    with caplog.at_level(logging.INFO, logger=ROOT_LOGGER):
        command_folds(cfg)
    assert capsys.readouterr().out == ""
    wrote = [r for r in caplog.records if r.getMessage().startswith("wrote ")]
    assert len(wrote) == 1 and wrote[0].name == "kseg.folds" and wrote[0].levelno == logging.INFO
    logging.getLogger(ROOT_LOGGER).addHandler(kseg_console)


def test_the_console_prints_each_line_once_and_can_be_silenced(tmp_path, capsys, kseg_console):
    cfg = _folds_cfg(tmp_path)
    with console():  # nested in the test's own: still one line each
        command_folds(cfg)
    out = capsys.readouterr().out
    assert out.count("wrote ") == 1 and out.rstrip().endswith("folds.csv")
    logger = logging.getLogger(ROOT_LOGGER)
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        command_folds(cfg)
    finally:
        logger.setLevel(previous)
    assert capsys.readouterr().out == ""


def test_the_cli_prints_the_same_lines(tmp_path, capsys):
    cfg_args = ["--config", "configs/demo.yaml", "--set", f"data.root={tmp_path / 'data'}", "--set",
                f"output.dir={tmp_path / 'run'}", "--set", "folds.n_splits=2"]
    make_demo_data(tmp_path / "data", n_train=6, n_test=1, height=48, width=48)
    assert main(["folds", *cfg_args]) == 0
    out = capsys.readouterr().out
    assert out.count(f"wrote {tmp_path / 'run' / 'folds.csv'}") == 1
    assert len(pd.read_csv(tmp_path / "run" / "folds.csv")) == 6
