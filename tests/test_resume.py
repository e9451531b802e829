"""Exact resume: ``fit`` 4 steps in one go equals ``fit`` 2 steps then ``fit --ckpt_path`` to step 4.

Restored: model, optimizer, LR scheduler, the global RNG states (torch/numpy/python, per rank), the training
loader's position mid-epoch, the dynamic-weighting EMA and the module's counters. Run through the CLI, in-process.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import small_quickstart_run
from shala_pl.__main__ import main
from shala_pl.cli import cli_main


def fit_args(model_dir, root, steps: int, *extra: str) -> list[str]:
    return small_quickstart_run(
        model_dir, root, steps,
        "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",  # steps 2 and 4 are mid-epoch
        "--model.init_args.weighting.dynamic_strength", "1.0",  # the EMA table is part of the state
        "--model.init_args.lr_scheduler",
        "{class_path: torch.optim.lr_scheduler.StepLR, init_args: {step_size: 1, gamma: 0.9}}",
        *extra,
    )


def trainable(cli) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in cli.model.policy.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    straight = cli_main(fit_args(tiny_model_dir, root / "straight", 4))
    first = cli_main(fit_args(tiny_model_dir, root / "first", 2))
    resumed = cli_main(fit_args(tiny_model_dir, root / "resumed", 4,
                                "--ckpt_path", str(root / "first" / "checkpoints" / "last.ckpt")))
    return root, straight, first, resumed


def test_resumed_run_equals_uninterrupted_run(runs):
    root, straight, first, resumed = runs
    assert (straight.trainer.global_step, first.trainer.global_step, resumed.trainer.global_step) == (4, 2, 4)
    expected, got = trainable(straight), trainable(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=0, msg=name)
    # the run really trained: weights moved away from the 2-step checkpoint
    assert any(not torch.allclose(expected[n], p, atol=1e-6) for n, p in trainable(first).items())
    # dynamic-weighting EMA, optimizer moments and the scheduled learning rate continue where they were
    torch.testing.assert_close(resumed.model.policy_gap.ema, straight.model.policy_gap.ema, equal_nan=True,
                               atol=1e-7, rtol=0)
    straight_ckpt = torch.load(root / "straight" / "checkpoints" / "last.ckpt", weights_only=True)
    resumed_ckpt = torch.load(root / "resumed" / "checkpoints" / "last.ckpt", weights_only=True)
    for a, b in zip(straight_ckpt["optimizer_states"][0]["state"].values(),
                    resumed_ckpt["optimizer_states"][0]["state"].values()):
        torch.testing.assert_close(b["exp_avg_sq"], a["exp_avg_sq"], atol=1e-9, rtol=1e-5)
    assert resumed_ckpt["lr_schedulers"] == straight_ckpt["lr_schedulers"]
    assert resumed_ckpt["lr_schedulers"][0]["last_epoch"] == 4  # stepped once per optimizer step
    assert resumed_ckpt["global_step"] == straight_ckpt["global_step"] == 4


def test_checkpoint_holds_the_resume_state_and_loads_weights_only(runs):
    root, *_ = runs
    # default_root_dir decides where checkpoints go, and a "last" checkpoint is always kept
    path = root / "first" / "checkpoints" / "last.ckpt"
    assert path.exists()
    checkpoint = torch.load(path, weights_only=True)  # no pickled code: plain tensors, dicts, ints, strings
    assert checkpoint["global_step"] == 2
    loader_state = checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]
    assert loader_state == {"epoch": 0, "batches": 2, "batch_size": 4, "num_replicas": 1, "seed": 0}
    rng = checkpoint["callbacks"]["ReproducibleRNG"]
    assert rng["world_size"] == 1 and {"torch", "numpy_keys", "python"} <= set(rng["rng"])
    assert all(isinstance(v, torch.Tensor) for v in rng["rng"].values())
    assert "policy_gap.ema" in checkpoint["state_dict"]
    assert torch.isfinite(checkpoint["state_dict"]["policy_gap.ema"]).sum() == 8  # the 2 batches' prompts
    assert checkpoint["grpo_counters"]["nonfinite_skipped"] == 0


def test_validate_loads_a_dynamic_weighting_checkpoint(runs, tiny_model_dir, tmp_path):
    """A fit checkpoint holds the EMA buffer; validate (no tracker of its own) must still load it strictly."""
    root, *_ = runs
    args = fit_args(tiny_model_dir, tmp_path, 1, "--ckpt_path", str(root / "first" / "checkpoints" / "last.ckpt"))
    args[0] = "validate"
    cli = cli_main(args)
    assert cli.model.policy_gap is not None and "val/jsd" in cli.trainer.callback_metrics


def test_num_iterations_counts_optimizer_steps(tiny_model_dir, tmp_path):
    """global_step counts optimizer steps: num_iterations=2 takes two per batch, so max_steps 4 is 2 batches."""
    cli = cli_main(fit_args(tiny_model_dir, tmp_path, 4, "--model.init_args.num_iterations", "2",
                            "--trainer.limit_val_batches", "0"))
    assert cli.trainer.global_step == 4
    assert cli.trainer.fit_loop.epoch_loop.batch_progress.total.completed == 2
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 4
    assert checkpoint["loops"]["fit_loop"]["state_dict"]["combined_loader"][0]["batches"] == 2
    assert checkpoint["lr_schedulers"][0]["last_epoch"] == 4


class RecordStartStep(Callback):
    def on_train_start(self, trainer, pl_module):
        self.step = trainer.global_step


def test_ckpt_path_last_continues_the_run_in_its_own_folder(tiny_model_dir, tmp_path, capsys, recwarn):
    """``default_root_dir`` decides where everything goes (logger default included), the end-of-run message says
    so, and the same command line with ``--ckpt_path last`` continues that run in the same folder."""
    def args(steps, *extra):
        return small_quickstart_run(tiny_model_dir, tmp_path, steps, "--trainer.logger", "true",
                                    "--trainer.limit_val_batches", "1", *extra)

    assert main(args(2)) == 0
    run = tmp_path / "version_0"
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "hf_model" / "config.json").is_file()
    first_events = set(run.glob("events.out.tfevents.*"))
    assert first_events
    printed = capsys.readouterr().out
    assert f"logs:             {run}   (tensorboard --logdir {tmp_path})" in printed
    assert f"checkpoints:      {run / 'checkpoints'}" in printed and f"exported model:   {run / 'hf_model'}" in printed

    resumed = cli_main(args(4, "--ckpt_path", "last", "--trainer.callbacks+=test_resume.RecordStartStep"))
    assert not [w for w in recwarn if "exists and is not empty" in str(w.message)]  # expected: said nothing
    start = next(c for c in resumed.trainer.callbacks if isinstance(c, RecordStartStep))
    assert start.step == 2 and resumed.trainer.global_step == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["version_0"]  # no second run folder
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert set(run.glob("events.out.tfevents.*")) > first_events  # the resumed run logs into the same folder

    # test and predict of that run's checkpoint write into its folder, not into new version_N folders
    for subcommand in ("test", "predict"):
        evaluate = args(4, "--ckpt_path", "last")
        evaluate[0] = subcommand
        assert main(evaluate) == 0
    assert list((run / "test").glob("events.out.tfevents.*")) and (run / "test" / "config.yaml").is_file()
    assert len((run / "predictions.jsonl").read_text().splitlines()) == 6  # the test split of 64 examples
    assert sorted(p.name for p in tmp_path.iterdir()) == ["version_0"]


@pytest.mark.parametrize("logger", ["true", "false"])
def test_ckpt_path_last_without_a_checkpoint_fails(tiny_model_dir, tmp_path, capsys, logger):
    args = small_quickstart_run(tiny_model_dir, tmp_path, 2, "--trainer.logger", logger, "--ckpt_path", "last")
    assert main(args) == 2
    where = tmp_path if logger == "true" else tmp_path / "checkpoints"
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"shala_pl: error: --ckpt_path last: no last.ckpt under {where} to resume (trainer.default_root_dir is "
        f"{tmp_path}); give a checkpoint path, or leave out --ckpt_path to start a new run")
    assert not (tmp_path / "version_0").exists()


def test_continuing_a_run_that_ended_at_max_steps_mid_epoch_equals_one_longer_run(tiny_model_dir, tmp_path):
    """``configs/quickstart.yaml`` as shipped (``val_check_interval: 50``): the 2-step run's ``last.ckpt`` is
    written as training ends, part-way through the first epoch; continued to 4 steps it must take the epoch's next
    batches (not the next epoch's), so it equals a straight 4-step run."""
    straight = cli_main(small_quickstart_run(tiny_model_dir, tmp_path / "straight", 4))
    cli_main(small_quickstart_run(tiny_model_dir, tmp_path / "first", 2))
    first_last = tmp_path / "first" / "checkpoints" / "last.ckpt"
    saved = torch.load(first_last, weights_only=True)
    assert saved["global_step"] == 2 and saved["epoch"] == 0  # still inside epoch 0
    continued = cli_main(small_quickstart_run(tiny_model_dir, tmp_path / "continued", 4, "--ckpt_path",
                                              str(first_last)))
    expected, got = trainable(straight), trainable(continued)
    assert max((expected[n] - got[n]).abs().max().item() for n in expected) <= 1e-6
    assert continued.trainer.current_epoch == straight.trainer.current_epoch


class SignalAt(Callback):
    """Sends ``signum`` to this process when optimizer step ``step`` has finished."""

    def __init__(self, step: int, signum: int = 15):
        self.step, self.signum = step, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)


def test_ckpt_path_last_is_the_newest_state_after_an_interrupt_and_a_resume(tiny_model_dir, tmp_path):
    """SIGTERM before the first periodic save, then a resume: the interrupt's last.ckpt is the checkpoint callback's
    own, so the resumed run rewrites it (no ``last-v1.ckpt``) and ``--ckpt_path last`` scores the final model."""
    def args(steps, *extra):
        return small_quickstart_run(tiny_model_dir, tmp_path, steps, "--checkpoint.every_n_train_steps", "200",
                                    "--trainer.limit_val_batches", "1", *extra)

    with pytest.raises(SystemExit) as stopped:
        main(args(100, "--trainer.callbacks+={class_path: test_resume.SignalAt, init_args: {step: 3}}"))
    assert stopped.value.code == 143
    folder = tmp_path / "checkpoints"
    assert [p.name for p in folder.glob("*.ckpt")] == ["last.ckpt"]
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 3
    assert main(args(5, "--ckpt_path", "last")) == 0
    assert sorted(p.name for p in folder.glob("*.ckpt")) == ["last.ckpt"]  # one file, rewritten
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 5
    tested = cli_main(["test", *args(5, "--ckpt_path", "last")[1:]])
    assert tested.config.test.ckpt_path == str(folder / "last.ckpt")


def test_ckpt_path_last_picks_the_highest_global_step_whatever_the_names(tiny_model_dir, tmp_path):
    """Folders written by older versions hold ``last.ckpt`` and ``last-v1.ckpt``; the newer state wins, not the
    shorter name."""
    cli_main(small_quickstart_run(tiny_model_dir, tmp_path / "a", 1))
    cli_main(small_quickstart_run(tiny_model_dir, tmp_path / "b", 2))
    folder = tmp_path / "mixed" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copy(tmp_path / "b" / "checkpoints" / "last.ckpt", folder / "last-v1.ckpt")  # step 2
    shutil.copy(tmp_path / "a" / "checkpoints" / "last.ckpt", folder / "last.ckpt")  # step 1, written later
    tested = cli_main(["test", *small_quickstart_run(tiny_model_dir, tmp_path / "mixed", 2, "--ckpt_path", "last")[1:]])
    assert tested.config.test.ckpt_path == str(folder / "last-v1.ckpt")
