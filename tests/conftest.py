"""Shared pytest fixtures."""
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The committed real-data fixtures (see tests/fixtures/SOURCE.md)."""
    return Path(__file__).parent / "fixtures"
