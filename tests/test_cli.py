"""The LightningCLI entry point: every config parses, data decides what the model is told, optimizers see only
trainable parameters."""

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import small_quickstart_run
from shala_pl.__main__ import main
from shala_pl.cli import cli_main
from shala_pl.data.example import DataError

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
    # discoverable from --help: every config, source, reward, readout, aggregation and rollout mode
    text = " ".join(out.stdout.split())  # wrapped lines joined
    for config in RUN_CONFIGS + METHOD_CONFIGS + STRATEGY_CONFIGS:
        assert str(config.relative_to(REPO)) in text
    from typing import get_args

    from shala_pl.data.sources import SOURCE_NAMES
    from shala_pl.modules.base import Readout
    from shala_pl.rl.losses import Aggregation
    from shala_pl.rl.rewards import REWARD_NAMES
    from shala_pl.rl.rollout import RolloutMode

    assert f"data.source: {', '.join(SOURCE_NAMES)}" in text
    assert f"model.rewards (weights): {', '.join(REWARD_NAMES)}" in text
    assert f"model.readouts: {', '.join(get_args(Readout))}" in text
    assert f"model.loss.aggregation: {', '.join(get_args(Aggregation))}" in text
    assert f"model.rollout.mode: {', '.join(get_args(RolloutMode))}" in text
    assert "--data.predict_split {test,val,train,all}" in text


def test_unknown_source_is_refused_at_parse_time_with_the_valid_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", str(REPO / "configs/quickstart.yaml"), "--data.source", "sst2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert 'Parser key "data.source"' in err and "'chaosnli_snli'" in err and "Got value: sst2" in err


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


# -- one-line errors ---------------------------------------------------------------------------------------------------
class FailInSetup(Callback):
    """Raises a project error from inside the trainer (``setup`` runs within ``trainer.fit``)."""

    def setup(self, trainer, pl_module, stage):
        raise DataError("bad.jsonl", 3, "votes", "raised inside the trainer")


def quick_fit(tiny_model_dir, tmp_path, *extra):
    return small_quickstart_run(tiny_model_dir, tmp_path, 1, *extra)


def test_data_error_is_one_line_with_exit_2(tiny_model_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"uid": "a", "text": "x", "votes": {"yes": "many"}}\n')
    code = main(quick_fit(tiny_model_dir, tmp_path, "--data.source", "jsonl", "--data.path", str(bad),
                          "--data.source_options", "{}"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip().splitlines()[-1] == f"shala_pl: error: {bad}:1: field 'votes': votes must be numbers, got ['many']"
    assert "Traceback" not in err


def test_error_raised_inside_the_trainer_is_one_line(tiny_model_dir, tmp_path, capsys):
    code = main(quick_fit(tiny_model_dir, tmp_path, "--trainer.callbacks+=test_cli.FailInSetup"))
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"shala_pl: error: {DataError('bad.jsonl', 3, 'votes', 'raised inside the trainer')}")


@pytest.mark.parametrize("option, message", [
    ("--model.init_args.name_or_path", "model directory '{missing}' does not exist (model.name_or_path)"),
    ("--data.path", "data (source 'snli'): snli: no such file or folder: {missing}"),
])
def test_missing_model_or_data_is_one_line(tiny_model_dir, tmp_path, capsys, option, message):
    missing = str(tmp_path / "nowhere")
    args = quick_fit(tiny_model_dir, tmp_path, "--data.source", "snli", "--data.source_options", "{}",
                     "--data.path", str(REPO / "tests/fixtures/snli_1.0_test_part.jsonl"), option, missing)
    assert main(args) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("shala_pl: error: " + message.format(missing=missing))


def test_unknown_source_option_names_the_data_section(tiny_model_dir, tmp_path, capsys):
    assert main(quick_fit(tiny_model_dir, tmp_path, "--data.source_options", "{n_raters: 3}")) == 2
    assert "shala_pl: error: data (source 'synthetic'): source 'synthetic' got unknown option(s) ['n_raters']" in (
        capsys.readouterr().err)


def test_debug_shows_the_traceback(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SHALA_DEBUG", "1")
    with pytest.raises(DataError, match="raised inside the trainer"):
        main(quick_fit(tiny_model_dir, tmp_path, "--trainer.callbacks+=test_cli.FailInSetup"))


def run_importtime(*args):
    out = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    message = [line for line in out.stderr.splitlines() if not line.startswith("import time:")]
    return out, imported, message


def test_bare_subcommand_points_at_the_quickstart():
    """The real entry point, as a user types it: exit status 2 and one line, without importing Lightning."""
    out, imported, message = run_importtime("-m", "shala_pl", "fit")
    assert out.returncode == 2 and out.stdout == ""
    assert message == ["shala_pl: error: 'fit' needs a config; start with: python -m shala_pl fit --config "
                       "configs/quickstart.yaml  (all configs: python -m shala_pl --help)"]
    assert "lightning" not in imported and "torch" not in imported


@pytest.mark.parametrize("command", [("-m", "shala_pl", "--help"), ("-m", "shala_pl", "evaluate", "--help"),
                                     ("-m", "shala_pl", "data-stats", "--help")], ids=" ".join)
def test_help_answers_without_importing_torch(command):
    out, imported, _ = run_importtime(*command)
    assert out.returncode == 0 and "usage:" in out.stdout
    assert "torch" not in imported and "lightning" not in imported and "torchmetrics" not in imported


def test_top_level_help_lists_subcommands_and_configs(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "python -m shala_pl fit --config configs/quickstart.yaml" in out
    for config in RUN_CONFIGS + METHOD_CONFIGS + STRATEGY_CONFIGS:
        assert str(config.relative_to(REPO)) in out
    assert main([]) == 2 and "subcommands:" in capsys.readouterr().err


# -- console -----------------------------------------------------------------------------------------------------------
def test_console_shows_steps_reward_and_jsd_without_known_noise(tiny_model_dir, tmp_path, capsys, caplog, recwarn):
    args = small_quickstart_run(tiny_model_dir, tmp_path, 4, "--trainer.enable_progress_bar", "true",
                                "--trainer.log_every_n_steps", "1", "--trainer.val_check_interval", "2",
                                "--trainer.limit_val_batches", "1", "--trainer.logger", "true")
    assert main(args) == 0
    captured = capsys.readouterr()
    err = (captured.out + captured.err).replace("\r", "\n")  # Lightning's bars write to stdout
    bars = [line.strip() for line in err.splitlines() if line.strip().startswith("step:")]
    assert bars and "4/4" in bars[-1] and "reward=" in bars[-1] and "val_jsd=" in bars[-1]
    assert "v_num" not in err and "Epoch" not in err
    assert "litlogger" not in caplog.text + err
    noise = ("LeafSpec", "is_gradient_checkpointing", "dirpath has changed")
    assert not [str(w.message) for w in recwarn if any(n in str(w.message) for n in noise)]

    # TensorBoard: validation scalars and figures on one step axis
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = set(), set()
    for events in (tmp_path / "version_0").glob("events.out.tfevents.*"):
        run = EventAccumulator(str(events), size_guidance={"images": 0, "scalars": 0})
        run.Reload()
        if "val/jsd" in run.Tags()["scalars"]:
            scalars |= {e.step for e in run.Scalars("val/jsd")}
        for tag in ("val/jsd_by_entropy", "val/model_vs_human"):
            if tag in run.Tags()["images"]:
                images |= {(tag, e.step) for e in run.Images(tag)}
    assert len(scalars) >= 2  # in-fit validations and the one after fit
    assert images == {(tag, step) for tag in ("val/jsd_by_entropy", "val/model_vs_human") for step in scalars}


def test_data_module_loads_the_tokenizer_with_the_model_settings(tiny_model_dir):
    """One loader for the tokenizer: the DataModule gets model.trust_remote_code / from_hub through the CLI's links
    and loads with shala_pl.models.loading.load_tokenizer (left padding, a pad token), as the model does."""
    cli = cli_main(tiny_args(tiny_model_dir, "--model.init_args.trust_remote_code", "true"), run=False)
    data = cli.datamodule
    assert (data.tokenizer_trust_remote_code, data.tokenizer_from_hub) == (True, False)
    assert data.tokenizer.padding_side == "left" and data.tokenizer.pad_token is not None
    assert data.tokenizer.get_vocab() == cli.model.tokenizer.get_vocab()


@pytest.mark.parametrize("readouts", [["label_probs"], ["label_probs", "sampling"]])
def test_fit_ends_with_validation_before_and_after_for_each_readout(tiny_model_dir, tmp_path, capsys, readouts):
    args = small_quickstart_run(tiny_model_dir, tmp_path, 1, "--validate_before_fit", "true",
                                "--trainer.limit_val_batches", "1", "--model.init_args.readouts", str(readouts),
                                "--model.init_args.sampling.num_samples", "2")
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.split("vs human votes)\n", 1)[1].splitlines()[1:]
            if line.strip() and not line.startswith(("logs:", "checkpoints:", "exported"))}
    shown = ("jsd", "kl", "f1_macro", "accuracy", "entropy_corr", "contested_auroc")
    if len(readouts) == 1:
        assert list(rows) == list(shown)
    else:  # one block per readout; the sampling readout's parse failures next to its metrics
        assert list(rows) == list(shown) + [f"sampling/{m}" for m in (*shown, "invalid_rate")]
    assert all(len(values) == 2 for values in rows.values())
    for name, values in rows.items():  # a correlation lies in [-1, 1] (nan for a constant prediction)
        low = -1.0 if name.endswith("entropy_corr") else 0.0
        assert all(math.isnan(float(v)) or low <= float(v) for v in values), name


# -- stops around fit --------------------------------------------------------------------------------------------------
class SignalInValidation(Callback):
    """Sends ``signum`` to this process at the end of the last batch of the validation before training
    (``when="before"``), after it (``when="after"``) or of the one inside it at step 2 (``when="during"``)."""

    def __init__(self, when: str, signum: int = 15):
        self.when, self.signum = when, signum

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.state.fn == "fit":
            phase = "during" if trainer.global_step == 2 else None
        else:
            phase = "after" if trainer.global_step > 0 else "before"
        if phase == self.when and batch_idx == trainer.num_val_batches[0] - 1:
            os.kill(os.getpid(), self.signum)


def signal_in_validation(when: str, signum: int) -> str:
    return f"--trainer.callbacks+={{class_path: test_cli.SignalInValidation, init_args: {{when: {when}, " \
           f"signum: {int(signum)}}}}}"


def test_a_stop_during_the_validation_before_fit_trains_nothing_and_says_so(tiny_model_dir, tmp_path, caplog):
    """The signal lands on the validation's last batch: it is not dropped (training does not start)."""
    args = small_quickstart_run(tiny_model_dir, tmp_path, 2, "--validate_before_fit", "true",
                                "--trainer.limit_val_batches", "1", signal_in_validation("before", signal.SIGTERM))
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 143
    assert not (tmp_path / "checkpoints").exists()
    assert ("stopped by SIGTERM during the validation before training: nothing trained, no checkpoint written "
            "(exit status 143)") in caplog.text


@pytest.mark.parametrize("signum, code, by", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_a_stop_during_the_validation_after_fit_names_the_checkpoint_and_skips_the_export(
        tiny_model_dir, tmp_path, caplog, capsys, signum, code, by):
    args = small_quickstart_run(tiny_model_dir, tmp_path, 2, "--trainer.limit_val_batches", "1",
                                signal_in_validation("after", signum))
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == code
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert not (tmp_path / "hf_model").exists() and "validation (label distribution" not in capsys.readouterr().out
    assert (f"stopped by {by} during the validation after training: the trained model is in {last} (step 2); the "
            f"hf_model export and the summary were skipped (exit status {code})") in caplog.text
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the CLI's handlers are removed again


def test_a_stop_during_a_validation_inside_fit_keeps_that_validations_best_checkpoint(tiny_model_dir, tmp_path):
    """The validation finishes and the checkpoint callback saves for it before the run stops."""
    from shala_pl.checkpoints import best_checkpoint

    args = small_quickstart_run(tiny_model_dir, tmp_path, 50, "--trainer.limit_val_batches", "1",
                                "--trainer.val_check_interval", "1", "--checkpoint.monitor", "val/jsd",
                                "--checkpoint.mode", "min", "--checkpoint.save_top_k", "-1",
                                signal_in_validation("during", signal.SIGTERM))
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 143
    folder = tmp_path / "checkpoints"
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt",
                                                             "last.ckpt"]
    best, monitor = best_checkpoint(folder / "last.ckpt")
    assert monitor == "val/jsd" and best.is_file()


class SignalAtFirstPrediction(Callback):
    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_stopped_predict_leaves_no_partial_file(tiny_model_dir, tmp_path, caplog):
    predictions = tmp_path / "predictions.jsonl"
    args = small_quickstart_run(tiny_model_dir, tmp_path, 1, "--ckpt_path", "none", "--data.eval_batch_size", "2",
                                "--predictions.path", str(predictions),
                                "--trainer.callbacks+=test_cli.SignalAtFirstPrediction")
    with pytest.raises(SystemExit) as stopped:
        main(["predict", *args[1:]])
    assert stopped.value.code == 143
    assert not predictions.exists()
    assert "stopped by SIGTERM during predict: no results written (exit status 143)" in caplog.text
