"""Shared pytest fixtures: fixture file paths and a tiny real model built once per test session."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).parent.parent


@pytest.fixture
def fixtures_dir() -> Path:
    """``tests/fixtures``: small files in each data source's official format (see its README.md)."""
    return FIXTURES


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Qwen2 with a locally trained byte-level BPE tokenizer, saved with save_pretrained."""
    from shala_pl.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen2", architecture="qwen2")
