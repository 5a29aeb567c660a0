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
