"""A hardened training loop: interrupts leave a resumable checkpoint, failures leave the last good one alone, and
degenerate batches (all answers invalid, truncated prompts, an epoch's last short batch) train and are counted."""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers.logger import Logger

from shala_pl.callbacks import GracefulInterrupt, ReproducibleRNG
from conftest import small_quickstart_run
from shala_pl.__main__ import main
from shala_pl.cli import cli_main
from shala_pl.data.datamodule import VoteDataModule
from shala_pl.models.loading import LoraSettings
from shala_pl.modules import GRPOModule
from shala_pl.modules.base import VoteModule
from shala_pl.modules.grpo import NonFiniteTrainingError
from shala_pl.rl.rollout import RolloutSettings
from shala_pl.rl.weighting import AmbiguityWeighting

REPO = Path(__file__).resolve().parent.parent


def fit_args(model_dir, root, steps: int, *extra: str) -> list[str]:
    return small_quickstart_run(model_dir, root, steps, "--trainer.limit_val_batches", "0",
                                "--checkpoint.every_n_train_steps", "2", *extra)


def checkpoint_files(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.ckpt"))}


class CaptureLogger(Logger):
    def __init__(self):
        super().__init__()
        self.logged: list[tuple[int, dict]] = []

    @property
    def name(self):
        return "capture"

    @property
    def version(self):
        return 0

    def log_metrics(self, metrics, step=None):
        self.logged.append((step, {k: float(v) for k, v in metrics.items()}))

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def last(self, key: str) -> float:
        return [m[key] for _, m in self.logged if key in m][-1]


def make(model_dir, *, n_examples=64, batch_size=4, max_prompt_length=512, **module_kwargs):
    data = VoteDataModule(source="synthetic", source_options={"n_examples": n_examples, "n_annotators": 5},
                          tokenizer_path=str(model_dir), batch_size=batch_size, eval_batch_size=16,
                          max_prompt_length=max_prompt_length)
    module_kwargs.setdefault("rollout", RolloutSettings(mode="label", num_generations=4))
    module = GRPOModule(name_or_path=str(model_dir), label_names=data.label_names, verbalizers=data.verbalizers,
                        lora=LoraSettings(r=4, alpha=8), **module_kwargs)
    return data, module


def trainer(root, logger=None, **kwargs) -> Trainer:
    kwargs.setdefault("max_steps", 2)
    return Trainer(logger=logger or False, default_root_dir=str(root), enable_progress_bar=False,
                   enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, accelerator="cpu",
                   log_every_n_steps=1, **kwargs)


# -- interrupts --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sigterm_leaves_a_resumable_checkpoint(tiny_model_dir, tmp_path):
    """SIGTERM to a running ``fit`` subprocess: it stops after the current step and writes last.ckpt at that step;
    ``fit --ckpt_path last`` continues from there."""
    root = tmp_path / "run"
    command = [sys.executable, "-m", "shala_pl", *fit_args(tiny_model_dir, root, 100000)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    last = root / "checkpoints" / "last.ckpt"
    try:
        deadline = time.monotonic() + 240
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert last.exists(), "no checkpoint appeared"
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, output[-4000:]  # 128 + SIGTERM, after writing the checkpoint
    checkpoint = torch.load(last, weights_only=True)
    step = checkpoint["global_step"]
    assert step >= 2
    assert (f"interrupted by SIGTERM at step {step}: resumable checkpoint {last}; continue with the same command "
            "and --ckpt_path last (exit status 143)") in output
    assert "Received SIGTERM" not in output, output[-3000:]
    assert "weights_only" not in output, output[-3000:]
    assert "hf_model" not in os.listdir(root)  # an interrupted run is not exported as if finished

    resumed = cli_main(fit_args(tiny_model_dir, root, step + 2, "--ckpt_path", "last"))
    assert resumed.trainer.global_step == step + 2
    # last.ckpt is rewritten every 2 steps (and not at max_steps): at step + 2 or step + 1
    after = torch.load(last, weights_only=True)
    assert after["global_step"] in (step + 1, step + 2)
    loader_state = after["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    # 13 batches per epoch: the loader's position followed the steps across the interruption
    assert loader_state["epoch"] * 13 + loader_state["batches"] == after["global_step"]


class SendSignalAt(Callback):
    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum, code, by", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")])
def test_interrupted_fit_exits_with_the_signal_code_after_saving(tiny_model_dir, tmp_path, caplog, signum, code, by):
    """What a script sees: not 0 (finished) but 128 + the signal, once the resumable checkpoint is written."""
    send = f"{{class_path: test_hardening.SendSignalAt, init_args: {{step: 3, signum: {int(signum)}}}}}"
    with pytest.raises(SystemExit) as exit_info:
        main(fit_args(tiny_model_dir, tmp_path, 100, "--trainer.callbacks+=" + send))
    assert exit_info.value.code == code
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3
    assert (f"interrupted by {by} at step 3: resumable checkpoint {last}; continue with the same command and "
            f"--ckpt_path last (exit status {code})") in caplog.text
    assert "Received SIGTERM" not in caplog.text
    assert not (tmp_path / "hf_model").exists()


def test_first_ctrl_c_stops_gracefully_with_a_checkpoint(tiny_model_dir, tmp_path):
    handler_before = signal.getsignal(signal.SIGINT)
    cli = cli_main(fit_args(tiny_model_dir, tmp_path, 100, "--checkpoint.every_n_train_steps", "10")[1:], run=False)
    callbacks = {type(c) for c in cli.trainer.callbacks}
    assert {GracefulInterrupt, ReproducibleRNG, ModelCheckpoint} <= callbacks  # the CLI installs them
    cli.trainer.callbacks.insert(0, SendSignalAt(3, signal.SIGINT))  # before GracefulInterrupt checks at step 3
    with pytest.raises(SystemExit):  # Lightning's SIGTERMException, raised after step 3 finished
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert signal.getsignal(signal.SIGINT) is handler_before  # restored
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 3
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 3


# -- failures ------------------------------------------------------------------------------------------------------------
class PoisonLossFrom(Callback):
    """From optimizer step ``step`` on, every loss is NaN; snapshots the checkpoint folder before that."""

    def __init__(self, step: int, checkpoint_dir: Path):
        self.step, self.checkpoint_dir, self.snapshot = step, checkpoint_dir, None

    def on_train_start(self, trainer, pl_module):
        original = pl_module.micro_batch_loss

        def poisoned(*args, **kwargs):
            out = original(*args, **kwargs)
            if pl_module.global_step >= self.step:
                out = dataclasses.replace(out, loss=out.loss * float("nan"))
            return out

        pl_module.micro_batch_loss = poisoned

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and self.snapshot is None:
            self.snapshot = checkpoint_files(self.checkpoint_dir)


def test_nonfinite_training_stops_without_touching_the_last_good_checkpoint(tiny_model_dir, tmp_path):
    cli = cli_main(fit_args(tiny_model_dir, tmp_path, 100, "--model.init_args.max_consecutive_nonfinite", "2",
                            "--checkpoint.every_n_train_steps", "1")[1:], run=False)
    poison = PoisonLossFrom(2, tmp_path / "checkpoints")
    cli.trainer.callbacks.append(poison)
    with pytest.raises(NonFiniteTrainingError):
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert poison.snapshot and "last.ckpt" in poison.snapshot
    assert checkpoint_files(tmp_path / "checkpoints") == poison.snapshot  # nothing written or overwritten
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 2
    assert all(torch.isfinite(v).all() for k, v in checkpoint["state_dict"].items() if k.startswith("policy."))
    assert cli.model.nonfinite_skipped == 2 and cli.trainer.global_step == 2  # skipped updates are not steps
    assert all(torch.isfinite(p).all() for p in cli.model.policy.parameters())  # the skipped updates did nothing
    interrupt = next(c for c in cli.trainer.callbacks if isinstance(c, GracefulInterrupt))
    assert interrupt.saved_path is None


# -- degenerate batches ------------------------------------------------------------------------------------------------
def test_all_invalid_answers_train_to_zero_advantage_and_are_counted(tiny_model_dir, tmp_path):
    torch.manual_seed(0)
    data, module = make(tiny_model_dir, rollout=RolloutSettings(mode="generate", num_generations=4,
                                                                max_new_tokens=3))
    module.configure_model()
    module.parser = lambda text: -1  # no answer parses
    logger = CaptureLogger()
    trainer(tmp_path, logger, max_steps=1).fit(module, datamodule=data)
    assert int(module.all_invalid_groups_total) == 4  # every prompt of the batch
    assert int(module.invalid_answers_total) == 4 * 4
    assert logger.last("rollout/all_invalid_groups_total") == 4
    assert logger.last("rollout/invalid_rate") == 1.0
    assert logger.last("train/loss") == 0.0 and logger.last("train/grad_norm") == 0.0
    assert module.nonfinite_skipped == 0


def test_truncated_prompts_keep_their_end_and_are_logged_at_fit_start(tiny_model_dir, tmp_path):
    data, module = make(tiny_model_dir, max_prompt_length=8)
    full, _ = make(tiny_model_dir)
    data.setup("fit")
    full.setup("fit")
    n_train = data.num_train_examples
    assert data.n_truncated["train"] == n_train  # every prompt is longer than 8 tokens
    for i in (0, 5):
        assert data._dataset("train")[i]["prompt_ids"] == full._dataset("train")[i]["prompt_ids"][-8:]
    logger = CaptureLogger()
    trainer(tmp_path, logger, max_steps=1).fit(module, datamodule=data)
    first_step, first = logger.logged[0]
    assert first_step == 0 and first["data/truncated_prompts"] == n_train
    assert module.truncated_prompts == n_train and logger.last("data/truncated_prompts") == n_train


def test_short_last_batch_trains_and_is_counted(tiny_model_dir, tmp_path):
    """16 training examples in batches of 5: the last batch has 1 prompt, fewer than the group size (4) and the
    number of micro-batches (2), with batch-level advantage scaling and dynamic weighting."""
    data, module = make(tiny_model_dir, n_examples=20, batch_size=5, micro_batches=2, advantage_scaling="batch",
                        weighting=AmbiguityWeighting(strength=1.0, dynamic_strength=1.0))
    logger = CaptureLogger()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    trainer(tmp_path, logger, max_steps=-1, max_epochs=1, callbacks=[checkpoint]).fit(module, datamodule=data)
    assert data.num_train_examples == 16
    assert module.trainer.global_step == 4 and module.short_batches == 1
    assert logger.last("data/short_batches") == 1
    assert module.nonfinite_skipped == 0
    assert all(torch.isfinite(p).all() for p in module.policy.parameters())
    # a module built in Python keeps dataclasses in its hyper-parameters: still loadable without pickled code
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["hyper_parameters"]["weighting"].dynamic_strength == 1.0


# -- nothing executes code ---------------------------------------------------------------------------------------------
def test_configs_instantiate_only_the_expected_types(tiny_model_dir, tmp_path):
    target = tmp_path / "pwned"
    hostile = f"[{{class_path: subprocess.Popen, init_args: {{args: [touch, {target}]}}}}]"
    with pytest.raises(SystemExit):  # jsonargparse: not a Callback subclass, refused at parse time
        cli_main(fit_args(tiny_model_dir, tmp_path, 1, "--trainer.callbacks", hostile)[1:], run=False)
    assert not target.exists()
    assert inspect.signature(VoteModule.__init__).parameters["trust_remote_code"].default is False


class CtrlCWhenValidationStarts(Callback):
    """Presses Ctrl-C on this process as the first validation starts."""

    def on_validation_start(self, trainer, pl_module):
        os.kill(os.getpid(), signal.SIGINT)


def test_ctrl_c_during_validation_before_fit_exits_130(tiny_model_dir, tmp_path):
    """Lightning ends a run it saw Ctrl-C in with status 1; the CLI reports the shell's code for Ctrl-C."""
    args = small_quickstart_run(tiny_model_dir, tmp_path, 2, "--validate_before_fit", "true",
                                "--trainer.callbacks", "[{class_path: tests.test_hardening.CtrlCWhenValidationStarts}]")
    with pytest.raises(SystemExit) as stopped:
        main(args)
    assert stopped.value.code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Lightning's SIG_IGN is not left behind


@pytest.mark.parametrize("signum, code, last_line", [
    (signal.SIGINT, 130, "shala_pl: interrupted"),
    (signal.SIGTERM, 143, "shala_pl: stopped by SIGTERM during start-up, nothing to save"),
], ids=["ctrl-c", "sigterm"])
def test_a_stop_during_start_up_is_one_line_and_the_shells_code(signum, code, last_line):
    """Before training starts there is nothing to save: no traceback, the shell's code for the signal."""
    process = subprocess.Popen([sys.executable, "-m", "shala_pl", "fit", "--config", "configs/quickstart.yaml"],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # importing Lightning takes several seconds
    process.send_signal(signum)
    out, err = process.communicate(timeout=60)
    assert process.returncode == code, err[-2000:]
    assert err.strip().splitlines()[-1] == last_line and "Traceback" not in err


# -- non-finite predictions: NaN scores and a failed command, never a perfect JSD ------------------------------------
def test_a_fit_whose_model_diverges_reports_the_nonfinite_rows_and_fails(tiny_model_dir, tmp_path, capsys):
    """A learning rate of 1e30 blows the weights up in one step: the validation after fit used to print jsd 0.0000
    and exit 0 (ChaosNLI's NaN-as-0 applied to NaN predictions)."""
    args = small_quickstart_run(tiny_model_dir, tmp_path, 1, "--validate_before_fit", "true",
                                "--model.init_args.optimizer.init_args.lr", "1e30")
    assert main(args) == 2
    captured = capsys.readouterr()
    table = captured.out.split("vs human votes)\n", 1)[1].split("\n\n", 1)[0]
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    assert rows["jsd"][1] == "nan" and rows["kl"][1] == "nan" and float(rows["jsd"][0]) > 0
    assert rows["nonfinite_predictions"] == ["0", "6"]  # all 6 validation examples
    assert captured.err.endswith("\nshala_pl: error: the model's label probabilities are NaN or infinite for 6 rows of the "
                            "validation split (val/nonfinite_predictions): its jsd and kl are NaN, not scores\n")


@pytest.mark.parametrize("subcommand, split, key", [("validate", "validation", "val"), ("test", "test", "test")])
def test_validate_and_test_of_a_model_with_nan_weights_fail_saying_how_many_rows(tiny_model_dir, tmp_path, capsys,
                                                                                subcommand, split, key):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "nan-model"
    shutil.copytree(tiny_model_dir, broken)
    weights = load_file(broken / "model.safetensors")
    weights["model.norm.weight"] = torch.full_like(weights["model.norm.weight"], math.nan)
    save_file(weights, broken / "model.safetensors", metadata={"format": "pt"})
    args = small_quickstart_run(broken, tmp_path / "run", 1)
    args[0] = subcommand
    assert main([*args, *(["--ckpt_path", "none"] if subcommand == "test" else [])]) == 2
    assert capsys.readouterr().err.endswith(
        f"\nshala_pl: error: the model's label probabilities are NaN or infinite for 6 rows of the {split} split "
        f"({key}/nonfinite_predictions): its jsd and kl are NaN, not scores\n")
