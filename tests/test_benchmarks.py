"""The numpy-only benchmark sections still run (quick mode): `make bench` must not rot between runs."""
from __future__ import annotations

import pytest

from benchmarks import bench_core, bench_post


@pytest.mark.parametrize("section", [bench_core, bench_post], ids=lambda m: m.__name__)
def test_quick_section_is_a_markdown_table(section):
    text = section.run(quick=True)
    assert text.startswith("## ") and "|---" in text and "kseg" in text
