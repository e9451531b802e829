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


def small_quickstart_run(model_dir, root, steps: int, *extra: str) -> list[str]:
    """CLI arguments for a few-step ``fit`` of the quickstart config: 64 synthetic examples, batches of 4, 4
    answers per prompt, no logger or progress bar. Later arguments override earlier ones."""
    return [
        "fit", "--config", str(REPO / "configs" / "quickstart.yaml"), "--model.init_args.name_or_path", str(model_dir),
        # 52 training examples, batches of 4: 13 batches per epoch
        "--data.source_options", "{n_examples: 64, n_annotators: 5}", "--data.batch_size", "4",
        "--data.eval_batch_size", "16", "--trainer.max_steps", str(steps),
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root),
        "--validate_before_fit", "false", "--model.init_args.rollout.num_generations", "4", *extra,
    ]
