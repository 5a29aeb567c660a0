"""The run folder (``output.dir``): every file kseg writes there is named here, and nowhere else.

Stages, kernels and tests read and write a run only through :class:`RunDir`, so the layout is one thing to
change, and a stage cannot disagree with another about where a fold's weights or the search result live::

    output.dir/
      channels.json  plan.json  folds.csv  postprocess.json  config.yaml  env.json
      fold{K}/  best.weights.h5  last.weights.h5  state.json  done.json  history.csv  curves.png
                oof/  <image id>.npz  oof.json
      superseded/<time>/fold{K}/   (folds an earlier training left, see pipeline.set_aside_folds)

Only folders named exactly ``fold<digits>`` are kseg's folds: a user's ``fold7_notes/`` is never read as one,
never moved and never ensembled.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # config imports this module
    from .config import Config

__all__ = ["RunDir", "FOLD_DIR", "SUPERSEDED", "RUN_FILES_REQUIRED", "RUN_FILES_OPTIONAL"]

FOLD_DIR = re.compile(r"fold\d+")
SUPERSEDED = "superseded"
# What an inference kernel needs of a run besides the fold weights (kernels bundle them as a dataset).
RUN_FILES_REQUIRED = ("channels.json",)
RUN_FILES_OPTIONAL = ("postprocess.json", "plan.json", "config.yaml", "folds.csv", "env.json")


@dataclass(frozen=True)
class RunDir:
    """The paths of one run folder; nothing is created or read until a caller does."""

    root: Path

    @classmethod
    def of(cls, cfg: Config) -> RunDir:
        """The run folder of a config (``output.dir``)."""
        return cls(Path(cfg.output.dir))

    # -- run-level files
    @property
    def channels(self) -> Path:
        return self.root / "channels.json"

    @property
    def plan(self) -> Path:
        return self.root / "plan.json"

    @property
    def folds_csv(self) -> Path:
        """The run's own copy of the folds (``folds.file`` may name another)."""
        return self.root / "folds.csv"

    @property
    def postprocess(self) -> Path:
        """The OOF search result (``kseg search``)."""
        return self.root / "postprocess.json"

    @property
    def search_table(self) -> Path:
        """Every OOF image's score at every searched point."""
        return self.root / "search_table.csv"

    @property
    def search_curves(self) -> Path:
        return self.root / "search_curves.png"

    @property
    def superseded(self) -> Path:
        return self.root / SUPERSEDED

    # -- one fold
    def fold(self, k: int) -> Path:
        return self.root / f"fold{int(k)}"

    def weights(self, k: int) -> Path:
        """The fold's kept checkpoint (best ``train.monitor``), what OOF, prediction and kernels load."""
        return self.fold(k) / "best.weights.h5"

    def last_weights(self, k: int) -> Path:
        return self.fold(k) / "last.weights.h5"

    def state(self, k: int) -> Path:
        return self.fold(k) / "state.json"

    def done(self, k: int) -> Path:
        return self.fold(k) / "done.json"

    def history(self, k: int) -> Path:
        return self.fold(k) / "history.csv"

    def curves(self, k: int) -> Path:
        return self.fold(k) / "curves.png"

    def oof(self, k: int) -> Path:
        return self.fold(k) / "oof"

    # -- the folds present
    @staticmethod
    def fold_index(fold_dir: Path) -> int:
        """``fold3`` -> 3 (a ValueError for a folder that is not one of kseg's folds)."""
        if not FOLD_DIR.fullmatch(fold_dir.name):
            raise ValueError(f"{fold_dir} is not a fold folder (fold<digits>)")
        return int(fold_dir.name[len("fold"):])

    def fold_dirs(self) -> list[Path]:
        """kseg's fold folders in the run, by fold index (none when the run folder does not exist)."""
        if not self.root.is_dir():
            return []
        return sorted((d for d in self.root.iterdir() if d.is_dir() and FOLD_DIR.fullmatch(d.name)), key=self.fold_index)

    def folds_with(self, name: str) -> list[int]:
        """Indices of the folds holding ``name`` (``best.weights.h5``, ``done.json``, ``oof``, ...)."""
        return [self.fold_index(d) for d in self.fold_dirs() if (d / name).exists()]

    def trained_folds(self) -> list[int]:
        """Folds with kept weights: what prediction ensembles and an inference kernel bundles."""
        return self.folds_with(self.weights(0).name)
