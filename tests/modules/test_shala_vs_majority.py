"""The method's claim in miniature: on the synthetic task, SHALA ends closer to the human distributions than
majority-label GRPO after the same short CPU run. (tools/benchmark_methods.py measures the full bar.)"""

from pathlib import Path

import pytest

from shala_pl.cli import cli_main

REPO = Path(__file__).parents[2]


def validation_jsd(tiny_model_dir, tmp_path, method):
    cli = cli_main([
        "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(REPO / f"configs/method/{method}.yaml"),
        "--model.init_args.name_or_path", str(tiny_model_dir),
        "--data.source_options", "{n_examples: 600, n_annotators: 20}",
        "--trainer.max_steps", "80", "--trainer.val_check_interval", "80",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / method), "--validate_before_fit", "false",
    ], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return float(cli.trainer.callback_metrics["val/jsd"])


@pytest.mark.slow
def test_shala_beats_majority_grpo_on_validation_jsd(tiny_model_dir, tmp_path):
    shala = validation_jsd(tiny_model_dir, tmp_path, "shala")
    majority = validation_jsd(tiny_model_dir, tmp_path, "grpo_majority")
    assert shala < majority, f"shala JSD {shala:.4f} vs grpo_majority {majority:.4f}"
