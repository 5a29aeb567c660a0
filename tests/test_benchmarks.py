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
    """The measuring path, on this CPU as its one device: both dtype policies give a row."""
    from benchmarks import bench_gpu

    text = bench_gpu.measure(["/cpu:0"], "CPU", quick=True)
    assert "| float32 | 1 |" in text and "| mixed_float16 | 1 |" in text and "Target: ≥ 1.5×" in text


def test_ablation_table_compares_means_over_the_same_seeds(monkeypatch):
    """The defaults and the variant run on the same seeds; the table reports each seed, the means and the change."""
    from benchmarks import bench_ablation

    calls = []

    def fake_score(name, overrides, steps, seed, work):
        calls.append((name, tuple(overrides), steps, seed))
        variant = bool(overrides)
        return 0.2 + 0.1 * variant + 0.01 * seed, {"a": 0.1 + variant * 0.2, "b": 0.5}, 1.0

    monkeypatch.setattr(bench_ablation, "kseg_score", fake_score)
    monkeypatch.setattr(bench_ablation, "prepare", lambda name: "data/real/" + name)
    table = bench_ablation.ablation_table("invert_auto", ["model.invert=auto"], ["mixed_nuclei"], 250, [0, 1])
    assert sorted(c[3] for c in calls) == [0, 0, 1, 1] and {c[2] for c in calls} == {250}
    row = next(line for line in table.splitlines() if line.startswith("| mixed_nuclei"))
    assert "| 0.2050 | 0.3050 | +0.1000 | 0.2000, 0.2100 | 0.3000, 0.3100 |" in row
    assert "a 0.100 → 0.300; b 0.500 → 0.500" in row


def test_ablation_variant_must_name_its_overrides(capsys):
    from benchmarks import bench_ablation

    with pytest.raises(SystemExit):
        bench_ablation.main(["--sets", "mixed_nuclei", "--variant", "model.invert"])
    assert "--variant must be NAME=key=value" in capsys.readouterr().err
