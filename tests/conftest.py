"""Shared pytest fixtures."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytest

from kseg.console import console

# A tiny demo competition and run: every file `kseg run` writes, in about a minute on 2 CPU cores.
# TINY_RUN: the tiny run of any competition folder; TINY adds the demo competition it is generated from.
TINY_RUN = [
    "folds.n_splits=2", "train.size=64", "train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2",
    "train.verbose=0", "postprocess.grid={fg_threshold: [0.3, 0.5], seed_threshold: [0.5, 0.7], min_area: [0, 10]}",
    "tta=[identity, hflip]",
]
TINY = ["data.demo={seed: 3, n_train: 6, n_test: 2, height: 96, width: 128}", *TINY_RUN]


def tiny_sets(root: Path, extra: Sequence[str] = (), tiny: Sequence[str] = TINY) -> list[str]:
    """The ``--set`` overrides of the tiny run under ``root``: data/, run/ and submission.csv."""
    return [*tiny, f"data.root={root / 'data'}", f"output.dir={root / 'run'}",
            f"output.submission={root / 'submission.csv'}", *extra]


def tiny_args(root: Path, extra: Sequence[str] = (), config: str = "configs/demo.yaml",
              tiny: Sequence[str] = TINY) -> list[str]:
    """``--config CONFIG`` and one ``--set`` per override of :func:`tiny_sets`."""
    return ["--config", config, *[arg for s in tiny_sets(root, extra, tiny) for arg in ("--set", s)]]


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed real-data fixtures (see tests/fixtures/SOURCE.md)."""
    return Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """One tiny run finished by ``kseg run`` (see :func:`tiny_sets`), shared by every test that reads a finished
    run: training is the slowest thing a test does. Tests that change it keep it finished (a changed search
    grid reruns search and predict)."""
    from kseg.cli import main

    root = tmp_path_factory.mktemp("run")
    assert main(["run", *tiny_args(root)]) == 0
    return root


@pytest.fixture(autouse=True)
def kseg_console():
    """The CLI's console around every test, so a test that calls a stage directly reads the lines a user of
    ``kseg`` sees (``capsys``); tests of the logging itself use ``caplog`` (test_console.py)."""
    with console() as handler:
        yield handler
