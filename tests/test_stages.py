"""Which config edits rerun which stages of ``kseg run``: only the stages whose outputs an edit can change
(and every stage after the first of them), never a retraining for a log level or a new test folder."""
from __future__ import annotations

import pytest

from kseg.config import load_config
from kseg.pipeline import STAGES, stage_fingerprints

ALL = [stage.name for stage in STAGES]


def rerun(override: str) -> list[str]:
    """The stages `kseg run` redoes after a finished run when ``override`` is added to the config."""
    before = stage_fingerprints(load_config("configs/demo.yaml"))
    after = stage_fingerprints(load_config("configs/demo.yaml", [override]))
    first = next((i for i, name in enumerate(ALL) if before[name] != after[name]), len(ALL))
    return ALL[first:]


@pytest.mark.parametrize("override, stages", [
    ("train.verbose=0", []),
    ("train.workers=3", []),
    ("postprocess.n_jobs=1", []),
    ("data.test_dir=other_test", ["predict"]),
    ("data.test_truth=null", ["predict"]),
    ("data.sample_submission=null", ["predict"]),
    ("output.submission=elsewhere.csv", ["predict"]),
    ("predict.folds=[0]", ["predict"]),
    ("predict.tile=256", ["oof", "search", "predict"]),  # the OOF predictions are tiled too
    ("tta=[identity]", ["oof", "search", "predict"]),  # OOF is written with the TTA views, not retrained
    ("postprocess.grid={min_area: [0]}", ["search", "predict"]),
    ("train.epochs=7", ["train", "oof", "search", "predict"]),
    ("model.invert=false", ["train", "oof", "search", "predict"]),
    ("folds.n_splits=4", ALL),
    ("data.train_csv=other.csv", ALL),
])
def test_an_edit_reruns_only_the_stages_it_changes(override, stages):
    assert rerun(override) == stages
