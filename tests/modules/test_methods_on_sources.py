"""Every method trains (or, zero-shot, evaluates) a few steps on every source's fixture, through the CLI."""

import json
from pathlib import Path

import pytest

from shala_pl.cli import cli_main

REPO = Path(__file__).parents[2]
FIXTURES = REPO / "tests" / "fixtures"
METHODS = sorted(p.stem for p in (REPO / "configs" / "method").glob("*.yaml"))

SOURCES = {
    "chaosnli_snli": (FIXTURES / "chaosnli/chaosNLI_snli.jsonl", {}),
    "chaosnli_mnli": (FIXTURES / "chaosnli/chaosNLI_mnli_m.jsonl", {}),
    "chaosnli_alphanli": (FIXTURES / "chaosnli/chaosNLI_alphanli.jsonl", {}),
    "snli": (FIXTURES / "snli_1.0_test_part.jsonl", {}),
    "mnli": (FIXTURES / "multinli_1.0_dev_matched_part.jsonl", {}),
    "goemotions": (FIXTURES / "goemotions", {"taxonomy": "ekman"}),
    "msp_podcast": (FIXTURES / "msp_podcast_json", {}),
    "jsonl": (FIXTURES / "generic_votes.jsonl", {}),
    "synthetic": (None, {"n_examples": 24, "n_annotators": 5}),
}


def run(tiny_model_dir, tmp_path, method, source, extra=()):
    path, options = SOURCES[source]
    args = [
        "--config", str(REPO / "configs/quickstart.yaml"),
        "--config", str(REPO / f"configs/method/{method}.yaml"),
        "--model.init_args.name_or_path", str(tiny_model_dir),
        "--data.source", source,
        "--data.source_options", json.dumps(options),
        "--data.val_fraction", "0.25", "--data.test_fraction", "0.25",
        "--data.batch_size", "2", "--data.eval_batch_size", "4",
        "--trainer.max_steps", "2", "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(tmp_path), "--validate_before_fit", "false",
        *extra,
    ]
    if path is not None:
        args += ["--data.path", str(path)]
    if method.startswith(("shala", "grpo")) and "--model.init_args.rollout.num_generations" not in extra:
        args += ["--model.init_args.rollout.num_generations", "2"]
    cli = cli_main(args, run=False)
    if method == "zero_shot":
        return cli, cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli, None


@pytest.mark.slow
@pytest.mark.parametrize("source", sorted(SOURCES))
@pytest.mark.parametrize("method", METHODS)
def test_method_runs_on_source(tiny_model_dir, tmp_path, method, source):
    cli, results = run(tiny_model_dir, tmp_path, method, source)
    if method == "zero_shot":
        assert 0.0 <= results[0]["val/jsd"] <= 1.0
    else:
        assert cli.trainer.global_step == 2
        assert 0.0 <= cli.trainer.callback_metrics["val/jsd"] <= 1.0
    assert cli.model.label_names == cli.datamodule.label_names


@pytest.mark.parametrize("source", ["snli", "goemotions", "msp_podcast"])
def test_shala_in_generate_mode_with_sampling_readout(tiny_model_dir, tmp_path, source):
    cli, _ = run(tiny_model_dir, tmp_path, "shala", source, extra=[
        "--model.init_args.rollout.mode", "generate", "--model.init_args.rollout.max_new_tokens", "4",
        "--model.init_args.rollout.num_generations", "3",  # the generate-mode log score needs two others
        "--model.init_args.readouts", "[label_probs, sampling]", "--model.init_args.sampling.num_samples", "3",
        "--model.init_args.sampling.max_new_tokens", "4",
    ])
    metrics = cli.trainer.callback_metrics
    assert cli.trainer.global_step == 2
    assert "val/jsd" in metrics and "val/sampling/jsd" in metrics
