"""``model.invert: auto`` end to end: a run on a set that mixes bright-object and dark-object images learns
which to invert, writes the rule into plan.json, and prediction applies it to test images."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from conftest import TINY_RUN, tiny_sets
from kseg.cli import main
from kseg.config import load_config
from kseg.data import load_records, read_image
from kseg.demo import make_demo_data
from kseg.normalize import input_normaliser
from kseg.plan import read_plan


def stain(path: Path) -> None:
    """Turn a demo image (bright cells on a dark ground) into a dark-on-bright, pink one, as H&E looks."""
    gray = read_image(path)[..., 0].astype(np.float32)
    inverted = 255.0 - gray
    rgb = np.stack([inverted, inverted * 0.75, inverted * 0.9], axis=2)  # R, G, B
    cv2.imwrite(str(path), cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR))


def test_a_mixed_polarity_run_learns_and_applies_its_inversion(tmp_path, capsys):
    data = make_demo_data(tmp_path / "data", seed=3, n_train=6, n_test=2, height=96, width=128)
    for path in sorted((data / "train").glob("*.png"))[::2] + sorted((data / "test").glob("*.png"))[:1]:
        stain(path)
    sets = tiny_sets(tmp_path, ["model.invert=auto"], tiny=TINY_RUN)
    assert main(["run", "--config", "configs/demo.yaml", *[a for s in sets for a in ("--set", s)]]) == 0
    assert "model.invert auto: 3 of 6 training images" in capsys.readouterr().out

    polarity = read_plan(tmp_path / "run").invert
    assert polarity is not None and polarity.mode == "rule"
    cfg = load_config(Path("configs/demo.yaml"), sets)
    normalise = input_normaliser(cfg, polarity)
    for record in load_records(cfg, progress=False):  # every training image, stained or not, shows bright cells
        gray = normalise(read_image(record.image_path)).mean(axis=2)
        assert gray[record.labels > 0].mean() > gray[record.labels == 0].mean()
