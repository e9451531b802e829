"""The RL module on a tiny real model: what one optimizer step touches, and the reference it uses."""

import dataclasses
import math

import pytest
import torch
from lightning.pytorch import Trainer
from transformers import AutoModelForCausalLM

from shala_pl.data.datamodule import VoteDataModule
from shala_pl.models.loading import LoraSettings
from shala_pl.modules import GRPOModule
from shala_pl.rl.losses import LossSettings
from shala_pl.rl.rollout import RolloutSettings


def make(tiny_model_dir, mode="label", lora=True, beta=0.0, rollout_options=None, lora_dropout=0.0, **kwargs):
    data = VoteDataModule(source="synthetic", source_options={"n_examples": 64, "n_annotators": 5},
                          tokenizer_path=str(tiny_model_dir), batch_size=4, eval_batch_size=16)
    module = GRPOModule(
        name_or_path=str(tiny_model_dir), label_names=data.label_names, verbalizers=data.verbalizers,
        lora=LoraSettings(r=4, alpha=8, dropout=lora_dropout) if lora else None,
        rollout=RolloutSettings(**{"mode": mode, "num_generations": 4, "max_new_tokens": 6, **(rollout_options or {})}),
        loss=LossSettings(beta=beta), **kwargs,
    )
    return data, module


@torch.no_grad()
def make_adapter_matter(module) -> None:
    """Random LoRA B matrices (they start at 0), as after some training: the adapter changes the log-probs."""
    for name, p in module.policy.named_parameters():
        if "lora_B" in name:
            p.normal_(0, 0.5)


def fit(data, module, steps=1, **trainer_kwargs):
    trainer = Trainer(**{"max_steps": steps, "logger": False, "enable_checkpointing": False,
                         "enable_progress_bar": False, "limit_val_batches": 0, "num_sanity_val_steps": 0,
                         "accelerator": "cpu", "enable_model_summary": False, **trainer_kwargs})
    trainer.fit(module, datamodule=data)
    return trainer


@pytest.mark.parametrize("mode", ["label", "generate"])
@pytest.mark.parametrize("gradient_checkpointing", [False, True])
def test_one_step_changes_only_the_lora_adapter(tiny_model_dir, mode, gradient_checkpointing):
    torch.manual_seed(0)
    data, module = make(tiny_model_dir, mode=mode, gradient_checkpointing=gradient_checkpointing)
    module.configure_model()
    before = {name: p.detach().clone() for name, p in module.policy.named_parameters()}
    trainer = fit(data, module)
    assert trainer.global_step == 1
    assert module.policy.base_model.model.model.gradient_checkpointing is gradient_checkpointing
    changed = {name for name, p in module.policy.named_parameters() if not torch.equal(p, before[name])}
    trainable = {name for name, p in module.policy.named_parameters() if p.requires_grad}
    assert changed, "the optimizer step changed nothing"
    assert changed <= trainable
    assert all("lora_" in name for name in trainable)


def test_beta_uses_the_adapter_disabled_base_model_as_reference(tiny_model_dir):
    torch.manual_seed(0)
    data, module = make(tiny_model_dir, beta=0.1)
    module.configure_model()
    assert module.reference is None  # LoRA: no second copy in memory
    make_adapter_matter(module)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    rollout, _ = module.make_rollout(batch)
    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    with torch.no_grad():
        expected_ref = module.rollouts.log_probs(base, rollout)
        policy_logp = module.rollouts.log_probs(module.policy, rollout)
    assert torch.allclose(rollout.ref_logp, expected_ref, atol=1e-5)
    assert not torch.allclose(rollout.ref_logp, policy_logp, atol=1e-3)


def test_full_finetuning_with_beta_keeps_a_frozen_copy_out_of_checkpoints(tiny_model_dir):
    data, module = make(tiny_model_dir, lora=False, beta=0.1)
    module.configure_model()
    assert module.reference is not None
    assert not any(p.requires_grad for p in module.reference.parameters())
    assert not any(k.startswith("reference.") for k in module.state_dict())
    fit(data, module)
    # the reference stayed the initial model while the policy moved
    ref = dict(module.reference.named_parameters())
    assert any(not torch.equal(p, ref[n]) for n, p in module.policy.named_parameters())


def test_truncated_answers_get_no_loss_and_count_as_invalid(tiny_model_dir):
    from shala_pl.rl.rollout import end_token_ids

    torch.manual_seed(0)
    # the untrained model rarely says EOS: most answers of 3 tokens are cut off, a few end
    data, module = make(tiny_model_dir, mode="generate", rollout_options={"max_new_tokens": 3,
                                                                          "mask_truncated_completions": True})
    module.configure_model()
    data.setup("fit")
    rollout, _ = module.make_rollout(next(iter(data.train_dataloader())))
    ends = torch.tensor(end_token_ids(module.policy, module.tokenizer))
    has_end = torch.isin(rollout.completion_ids, ends).any(-1)  # [N]
    assert torch.equal(rollout.truncated.reshape(-1), ~has_end)
    assert rollout.truncated.any()
    assert (rollout.choices[rollout.truncated] == -1).all()
    assert (rollout.loss_mask[~has_end] == 0).all()
    assert torch.equal(rollout.loss_mask[has_end], rollout.completion_mask[has_end])
    trainer = fit(data, module, log_every_n_steps=1)
    assert "rollout/truncated_rate" in trainer.callback_metrics


@pytest.mark.parametrize("mode", ["label", "generate"])
def test_without_dropout_old_log_probs_equal_the_training_forward(tiny_model_dir, mode):
    torch.manual_seed(0)
    data, module = make(tiny_model_dir, mode=mode, num_iterations=2, beta=0.1)
    module.configure_model()
    make_adapter_matter(module)
    data.setup("fit")
    module.policy.train()  # as in training_step
    rollout, _ = module.make_rollout(next(iter(data.train_dataloader())))
    assert module.policy.training  # the no-grad passes ran in eval mode and restored the training mode
    logp = module.rollouts.log_probs(module.policy, rollout)  # the first iteration's training forward
    assert logp.requires_grad
    torch.testing.assert_close(rollout.old_logp, logp.detach(), rtol=0, atol=1e-5)


def test_dropout_kept_on_request_stays_out_of_the_no_grad_passes(tiny_model_dir):
    torch.manual_seed(0)
    data, module = make(tiny_model_dir, lora_dropout=0.5, num_iterations=2, disable_dropout=False)
    module.configure_model()
    make_adapter_matter(module)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module.policy.train()
    (first, _), (second, _) = module.make_rollout(batch), module.make_rollout(batch)
    # the exact label distribution and the old log-probs are the same twice: no dropout mask drawn
    torch.testing.assert_close(first.policy_probs, second.policy_probs, rtol=0, atol=0)
    with torch.no_grad():
        train_mode = module.rollouts.log_probs(module.policy, first)  # dropout on: differs
    assert not torch.allclose(train_mode, first.old_logp, atol=1e-4)


@pytest.mark.parametrize("objective", ["sampled", "exact"])
def test_label_mode_trains_on_the_rollouts_own_forward(tiny_model_dir, objective):
    """One iteration on one micro-batch: the forward the labels are sampled from is the loss's forward (the policy
    runs once per step), and training ends where two separate forwards (two micro-batches) end."""
    def trained(micro_batches: int):
        torch.manual_seed(0)
        data, module = make(tiny_model_dir, lora=False, micro_batches=micro_batches, objective=objective)
        module.configure_model()
        forwards = []
        module.policy.model.register_forward_pre_hook(lambda *_: forwards.append(1))
        fit(data, module, steps=2)
        return module, len(forwards), {n: p.detach().clone() for n, p in module.policy.named_parameters()}

    shared, shared_forwards, shared_weights = trained(1)
    separate, separate_forwards, separate_weights = trained(2)
    assert shared.shares_label_forward and not separate.shares_label_forward
    # per step one pass over the prompts and the label words' tokens: the rollout's scoring only, against the
    # rollout's and then one per micro-batch
    assert shared_forwards == 2 and separate_forwards == 2 * (1 + 2)
    for name, weight in shared_weights.items():
        torch.testing.assert_close(weight, separate_weights[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("mode", ["label", "generate"])
def test_the_sample_table_shows_each_prompts_end_with_its_answers(tiny_model_dir, tmp_path, mode):
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    data, module = make(tiny_model_dir, mode=mode, sample_table_every_n_steps=1)
    logger = TensorBoardLogger(str(tmp_path), name="run")
    fit(data, module, logger=logger, log_every_n_steps=1)
    events = EventAccumulator(logger.log_dir, size_guidance={"tensors": 0}).Reload()
    table = events.Tensors("rollout/samples/text_summary")[0].tensor_proto.string_val[0].decode()
    header, _, first, *rest = table.splitlines()
    assert header.split(" | ")[:2] == ["| uid", "prompt (end)"]
    # every synthetic prompt ends with the instruction and the opened assistant turn
    assert first.split(" | ")[1].endswith("Reply with one word: red, green, or blue. assistant")
    assert len(rest) == min(4, module.rollout_settings.num_generations) * 2 - 1  # two prompts, their answers
    assert all(line.split(" | ")[1] == "" for line in rest[:3])  # the prompt once per group


@pytest.mark.parametrize("case", ["skipped_update", "two_iterations"])
def test_each_written_row_holds_the_batch_it_is_written_at(tiny_model_dir, tmp_path, case):
    """Lightning writes a training batch's metrics by its own batch counter; the module computes them for exactly
    those batches. After a skipped non-finite update (global_step stands still) the next row is not the skipped
    batch's, and with num_iterations 2 (global_step advances twice per batch) no row is computed for nothing."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    skip = case == "skipped_update"
    data, module = make(tiny_model_dir, num_iterations=1 if skip else 2)
    loss_at, computed = {}, []  # the loss of each batch's last update, by Lightning's step; log_training calls
    original_loss, original_step, original_log = module.micro_batch_loss, module.update.step, module.log_training
    batch_step = lambda: module.trainer.fit_loop.epoch_loop._batches_that_stepped  # noqa: E731

    def poisoned_loss(*args, **kwargs):  # the first batch's loss is NaN: its update is skipped
        out = original_loss(*args, **kwargs)
        return dataclasses.replace(out, loss=out.loss * float("nan")) if skip and batch_step() == 0 else out

    def recorded_step(*args, **kwargs):
        loss_out, grad_norm = original_step(*args, **kwargs)
        loss_at[batch_step()] = float(loss_out.loss)
        return loss_out, grad_norm

    def counted_log(*args, **kwargs):
        computed.append(batch_step())
        return original_log(*args, **kwargs)

    module.micro_batch_loss, module.update.step, module.log_training = poisoned_loss, recorded_step, counted_log
    logger = TensorBoardLogger(str(tmp_path), name="run")
    # 4 batches either way: 3 updates after the skip, or 2 optimizer steps per batch
    fit(data, module, steps=3 if skip else 8, logger=logger, log_every_n_steps=2 if skip else 4)
    events = EventAccumulator(logger.log_dir).Reload()
    written = {e.step: e.value for e in events.Scalars("train/loss")}
    assert sorted(loss_at) == [0, 1, 2, 3]
    assert sorted(written) == ([1, 3] if skip else [3]) == computed
    for step, value in written.items():
        assert value == pytest.approx(loss_at[step], rel=1e-6), step
    if skip:
        assert math.isnan(loss_at[0]) and module.nonfinite_skipped == 1
        skipped = {e.step: e.value for e in events.Scalars("train/nonfinite_skipped")}
        assert skipped == {1: 1.0, 3: 1.0}
