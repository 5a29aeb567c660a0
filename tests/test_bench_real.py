"""Each real set prepares into a folder kseg reads, with a held-out part that shares no image (and, unless
the set's own split column decides, no group) with training. Skipped where ../shared/data is absent."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from benchmarks.real_sets import MARKER, SETS, SHARED, prepare
from kseg.config import load_config
from kseg.data import load_records, read_csv, schema_from_config

pytestmark = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found (real data is not shipped)")
CONFIGS = Path(__file__).parents[1] / "configs" / "real"


def _config(name: str, root: Path, side: str):
    csv, folder = ("train.csv", "train") if side == "train" else ("test_truth.csv", "test")
    return load_config(CONFIGS / f"{name}.yaml", [f"data.root={root}", f"data.train_csv={csv}", f"data.train_dir={folder}"])


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("real")
    return {name: prepare(name, base / name, quick=True) for name in SETS}


@pytest.mark.parametrize("name", list(SETS))
def test_prepared_set_loads_and_holds_out_by_group(prepared, name):
    root = prepared[name]
    train = load_records(_config(name, root, "train"), progress=False)
    test = load_records(_config(name, root, "test"), progress=False)
    assert train and test and sum(r.n_instances for r in train) > 0
    train_ids, test_ids = {r.id for r in train}, {r.id for r in test}
    assert not train_ids & test_ids
    assert {p.stem for p in (root / "test").glob("*.png")} == test_ids
    assert {p.stem for p in (root / "train").glob("*.png")} == train_ids
    assert all(r.group for r in train + test)
    spec = SETS[name]
    if spec.split_col is None:
        assert not {r.group for r in train} & {r.group for r in test}
    else:  # the authors' split decides: every image is on the side its split column names
        schema = schema_from_config(_config(name, root, "train"))
        for csv, side in (("train.csv", train_ids), ("test_truth.csv", test_ids)):
            frame = read_csv(root / csv)
            values = set(frame.drop_duplicates(schema.id_col)[spec.split_col])
            assert len(values) == 1 and set(frame[schema.id_col]) == side
    info = json.loads((root / MARKER).read_text())
    assert (info["n_train"], info["n_test"]) == (len(train), len(test))


def test_prepare_is_idempotent_and_full_mode_copies_source_bytes(tmp_path):
    """Full mode (phase: 15 uint16 frames) copies the source PNGs and RLE rows unchanged; a rerun is a no-op."""
    root = prepare("phase_cells_usiigaci", tmp_path / "phase")
    stamp = (root / MARKER).stat().st_mtime_ns
    assert prepare("phase_cells_usiigaci", tmp_path / "phase") == root
    assert (root / MARKER).stat().st_mtime_ns == stamp  # up to date: not rebuilt
    image = next((root / "test").glob("*.png"))
    assert image.read_bytes() == (SHARED / "phase_cells_usiigaci" / "train" / image.name).read_bytes()
    source = read_csv(SHARED / "phase_cells_usiigaci" / "train.csv")
    written = pd.concat([read_csv(root / "train.csv"), read_csv(root / "test_truth.csv")])
    assert sorted(written["annotation"]) == sorted(source["annotation"])
    assert (written["group"] == written["sample_id"]).all()
    test = load_records(_config("phase_cells_usiigaci", root, "test"), progress=False)
    assert [r.shape for r in test] == [(1022, 1024)] * 5


def test_prepare_refuses_a_foreign_folder(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        prepare("sartorius_mini", tmp_path / "x", quick=True)
