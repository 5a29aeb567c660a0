"""The numpy-only benchmark sections still run (quick mode): `make bench` must not rot between runs."""
from __future__ import annotations

import pytest

from benchmarks import bench_core, bench_post


@pytest.mark.parametrize("section", [bench_core, bench_post], ids=lambda m: m.__name__)
def test_quick_section_is_a_markdown_table(section):
    text = section.run(quick=True)
    assert text.startswith("## ") and "|---" in text and "kseg" in text


def test_gpu_section_says_it_was_skipped_without_a_gpu():
    import tensorflow as tf

    from benchmarks import bench_gpu

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible: bench_gpu measures instead of skipping")
    text = bench_gpu.run(quick=True)
    assert text.startswith("## GPU training and inference") and "Skipped: no GPU is visible" in text


@pytest.mark.slow
def test_gpu_measurement_runs_on_any_device():
    """The measuring path, on this CPU as its one device: both dtype policies give a row, and kseg's own U-Net
    one without and one with XLA for each."""
    from benchmarks import bench_gpu

    text = bench_gpu.measure(["/cpu:0"], "CPU", quick=True)
    assert "| Unet resnet18 | float32 | 1 |" in text and "| Unet resnet18 | mixed_float16 | 1 |" in text
    assert "| unet_scratch, XLA | float32 | 1 |" in text and "| unet_scratch, XLA | mixed_float16 | 1 |" in text
    assert "Target: ≥ 1.5×" in text


def test_ablation_runs_the_defaults_once_and_each_variant_on_the_same_seeds(monkeypatch, tmp_path):
    """Two variants share one defaults run per seed; each table reports each seed, the means and the change,
    and a later run over another set joins the kept table instead of replacing it."""
    from benchmarks import bench_ablation

    calls = []

    def fake_score(name, overrides, steps, seed, work):
        calls.append((name, tuple(overrides), steps, seed))
        variant = 0.1 * len(overrides)
        return bench_ablation.RunScore(0.2 + variant + 0.01 * seed, {"a": 0.1 + variant * 2, "b": 0.5}, 1.0)

    monkeypatch.setattr(bench_ablation, "kseg_score", fake_score)
    monkeypatch.setattr(bench_ablation, "prepare", lambda name: "data/real/" + name)
    monkeypatch.setattr(bench_ablation, "ABLATIONS", tmp_path)
    variants = {"invert_auto": ["model.invert=auto"], "two": ["model.invert=auto", "train.ema=0.99"]}
    bench_ablation.ablate(variants, ["mixed_nuclei"], 250, [0, 1])
    assert sorted(calls) == sorted((name, o, 250, seed) for name, o in [("mixed_nuclei", ()),
                                   ("mixed_nuclei", ("model.invert=auto",)),
                                   ("mixed_nuclei", ("model.invert=auto", "train.ema=0.99"))] for seed in (0, 1))
    table = (tmp_path / "invert_auto.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| mixed_nuclei"))
    assert "| 0.2050 | 0.3050 | +0.1000 | 0.2000, 0.2100 | 0.3000, 0.3100 |" in row
    assert "a 0.100 → 0.300; b 0.500 → 0.500" in row
    assert "| mixed_nuclei | mAP@[.5:.95] | 0.2050 | 0.4050 | +0.2000 |" in (tmp_path / "two.md").read_text()
    bench_ablation.ablate({"invert_auto": ["model.invert=auto"]}, ["he_nuclei"], 250, [0, 1])
    rows = [line.split("|")[1].strip() for line in (tmp_path / "invert_auto.md").read_text().splitlines()
            if line.startswith("| ") and "---" not in line]
    assert rows == ["set", "he_nuclei", "mixed_nuclei"]


def test_ablation_reports_what_a_fold_ensemble_adds_over_its_best_fold(monkeypatch, tmp_path):
    """A variant that trains several folds gets a line per set with the ensemble against its best single fold
    (per seed and on average); a rerun of the set replaces its line, another set's line is kept."""
    from benchmarks import bench_ablation

    def fake_score(name, overrides, steps, seed, work):
        if not overrides:
            return bench_ablation.RunScore(0.3, {}, 1.0)
        return bench_ablation.RunScore(0.35, {}, 1.0, {"fold0": 0.30 + 0.01 * seed, "fold1": 0.32, "fold2": 0.31},
                                       0.35 + 0.01 * seed)

    monkeypatch.setattr(bench_ablation, "kseg_score", fake_score)
    monkeypatch.setattr(bench_ablation, "prepare", lambda name: "data/real/" + name)
    monkeypatch.setattr(bench_ablation, "ABLATIONS", tmp_path)
    variants = {"folds3": ["train.min_steps_per_fold=40"]}
    bench_ablation.ablate(variants, ["he_nuclei", "mixed_nuclei"], 120, [0, 1])
    bench_ablation.ablate(variants, ["mixed_nuclei"], 120, [0, 1])
    lines = [line for line in (tmp_path / "folds3.md").read_text().splitlines() if line.startswith("- ")]
    assert [line.split(",")[0] for line in lines] == ["- he_nuclei", "- mixed_nuclei"]
    assert lines[0].startswith("- he_nuclei, folds3: the ensemble of 3 folds scores +0.0350 against its best single fold")
    assert "seed 0: ensemble 0.3500, folds 0.3000, 0.3200, 0.3100; seed 1: ensemble 0.3600" in lines[0]
    assert not any("defaults" in line for line in lines)  # the defaults trained one fold


def test_ablation_variant_must_name_its_overrides(capsys):
    from benchmarks import bench_ablation

    with pytest.raises(SystemExit):
        bench_ablation.main(["--sets", "mixed_nuclei", "--variant", "model.invert"])
    assert "--variant must be NAME=key=value" in capsys.readouterr().err
