"""Shared pytest fixtures."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    """``tests/fixtures``: small files in each data source's official format (see its README.md)."""
    return FIXTURES
