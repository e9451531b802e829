"""The LightningCLI entry point: every config parses, data decides what the model is told, optimizers see only
trainable parameters."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from shala_pl.cli import cli_main

REPO = Path(__file__).parent.parent
RUN_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml"))
METHOD_CONFIGS = sorted((REPO / "configs" / "method").glob("*.yaml"))
STRATEGY_CONFIGS = sorted((REPO / "configs" / "strategy").glob("*.yaml"))


def tiny_args(tiny_model_dir, *extra):
    return [
        "--config", str(REPO / "configs" / "quickstart.yaml"),
        *extra,
        "--model.init_args.name_or_path", str(tiny_model_dir),
        "--data.source_options", "{n_examples: 40, n_annotators: 5}",
    ]


@pytest.mark.parametrize("config", RUN_CONFIGS + METHOD_CONFIGS + STRATEGY_CONFIGS, ids=lambda p: p.name)
def test_every_config_documents_its_launch_command(config):
    assert "python -m shala_pl" in config.read_text(), f"{config} has no launch-command comment"


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=lambda p: p.name)
def test_every_run_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["fit", "--config", str(config), "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "seed_everything" in printed and "class_path: shala_pl.modules" in printed


@pytest.mark.parametrize("method", METHOD_CONFIGS, ids=lambda p: p.name)
def test_every_method_composes_with_a_run_config(method, capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(REPO / "configs/chaosnli_snli.yaml"), "--config", str(method),
                  "--print_config"])
    printed = capsys.readouterr().out
    class_path = next(line for line in method.read_text().splitlines() if "class_path" in line).split(":")[1].strip()
    assert f"class_path: {class_path}" in printed
    assert "name_or_path: models/Qwen2.5-0.5B-Instruct" in printed  # the run config's model survives


@pytest.mark.parametrize("strategy", STRATEGY_CONFIGS, ids=lambda p: p.name)
def test_strategy_fragments_compose(strategy, capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(strategy),
                  "--print_config"])
    assert "strategy" in capsys.readouterr().out


def test_help_runs_as_a_module():
    out = subprocess.run([sys.executable, "-m", "shala_pl", "fit", "--help"], capture_output=True, text=True,
                         cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "--config" in out.stdout and "--model" in out.stdout


def test_data_decides_labels_verbalizers_and_tokenizer(tiny_model_dir):
    cli = cli_main(["fit", *tiny_args(tiny_model_dir)][1:], run=False)
    assert cli.model.label_names == cli.datamodule.label_names == ["red", "green", "blue"]
    assert cli.model.verbalizers == cli.datamodule.verbalizers
    assert cli.datamodule.tokenizer_path == str(tiny_model_dir)


def test_optimizer_is_built_from_trainable_parameters_only(tiny_model_dir):
    cli = cli_main(tiny_args(tiny_model_dir, "--model.init_args.lora", "{r: 4, alpha: 8}"), run=False)
    cli.model.configure_model()
    optimizer = cli.model.configure_optimizers()
    optimizer = optimizer["optimizer"] if isinstance(optimizer, dict) else optimizer
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in cli.model.policy.parameters() if p.requires_grad}
    frozen = {id(p) for p in cli.model.policy.parameters() if not p.requires_grad}
    assert in_optimizer == trainable and frozen and not (in_optimizer & frozen)


def test_lr_scheduler_from_yaml_steps_per_optimizer_step(tiny_model_dir, tmp_path):
    cli = cli_main(
        tiny_args(
            tiny_model_dir,
            "--trainer.max_steps", "3", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(tmp_path), "--validate_before_fit", "false",
            "--trainer.limit_val_batches", "1",
            "--model.init_args.lr_scheduler", "{class_path: torch.optim.lr_scheduler.StepLR, "
                                              "init_args: {step_size: 1, gamma: 0.5}}",
        ),
        run=False,
    )
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    lr = cli.model.optimizers().param_groups[0]["lr"]
    assert cli.trainer.global_step == 3
    assert lr == pytest.approx(0.003 * 0.5**3)


def test_fit_is_reproducible_on_cpu(tiny_model_dir, tmp_path):
    def run(root):
        cli = cli_main(
            tiny_args(tiny_model_dir, "--trainer.max_steps", "2", "--trainer.logger", "false",
                      "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
                      "--validate_before_fit", "false", "--trainer.limit_val_batches", "1"),
            run=False,
        )
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        return {n: p.detach().clone() for n, p in cli.model.policy.named_parameters()}

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert all(torch.equal(first[n], second[n]) for n in first)
