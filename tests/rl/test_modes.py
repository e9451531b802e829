"""The rollout modes (``shala_pl/rl/modes.py``) on a tiny real model: what each draws, scores and trains on."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from shala_pl.data.datamodule import VoteDataModule
from shala_pl.rl.answer_parsing import AnswerParser
from shala_pl.rl.losses import LossSettings
from shala_pl.rl.modes import ExactLabelRollouts, GenerateRollouts, LabelRollouts, rollout_mode
from shala_pl.rl.rewards import leave_one_out_histogram
from shala_pl.rl.rollout import RolloutSettings, sample_answers

GROUP = 4


@pytest.fixture(scope="module")
def parts(tiny_model_dir):
    data = VoteDataModule(source="synthetic", source_options={"n_examples": 32, "n_annotators": 5},
                          tokenizer_path=str(tiny_model_dir), batch_size=3, eval_batch_size=3)
    data.setup("fit")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    verbalizer_ids = [tokenizer(w, add_special_tokens=False)["input_ids"] for w in data.verbalizers]
    return model, tokenizer, AnswerParser(data.verbalizers), verbalizer_ids, next(iter(data.train_dataloader()))


def make_mode(parts, mode: str, objective: str = "sampled", **settings):
    _, tokenizer, parser, verbalizer_ids, _ = parts
    rollout = RolloutSettings(mode=mode, num_generations=GROUP, max_new_tokens=5, **settings)
    return rollout_mode(rollout, objective, tokenizer, parser, verbalizer_ids)


def test_the_config_picks_one_mode_and_its_capability(parts):
    generate, label = make_mode(parts, "generate"), make_mode(parts, "label")
    exact = make_mode(parts, "label", objective="exact")
    assert type(generate) is GenerateRollouts and not generate.exposes_label_distribution  # free text: no pi
    assert type(label) is LabelRollouts and label.exposes_label_distribution
    assert type(exact) is ExactLabelRollouts and exact.exposes_label_distribution


def test_label_rollouts_draw_from_the_exact_label_distribution(parts):
    model, *_, batch = parts
    mode = make_mode(parts, "label")
    rollout = mode.sample(model, batch)
    num_prompts, num_labels = batch.human.shape
    assert rollout.choices.shape == (num_prompts, GROUP) and (rollout.choices >= 0).all()
    torch.testing.assert_close(rollout.policy_probs.sum(-1), torch.ones(num_prompts))
    logp = mode.log_probs(model, rollout)  # [B*G, 1]: each answer's label log-prob
    expected = rollout.policy_probs.log().gather(1, rollout.choices).reshape(-1, 1)
    torch.testing.assert_close(logp, expected, rtol=1e-5, atol=1e-5)
    assert mode.reward_policy_probs(rollout) is rollout.policy_probs
    assert float(mode.loss_units(rollout)) == num_prompts * GROUP  # an answer is one token


@pytest.mark.parametrize("objective", ["sampled", "exact"])
def test_a_forward_already_run_gives_the_log_probs_a_new_one_would(parts, objective):
    """The training forward shared with the rollout (``GRPOModule.shares_label_forward``) is passed to the loss
    explicitly: the rollout drawn from it is plain data, without its graph."""
    model, *_, batch = parts
    mode = make_mode(parts, "label", objective=objective)
    label_logp = mode.label_log_probs(model, batch.prompt_ids, batch.prompt_mask)  # [B, K], with its graph
    rollout = mode.sample_from(batch, label_logp.detach().exp())
    assert not any(isinstance(v, torch.Tensor) and v.requires_grad for v in vars(rollout).values())
    prompts = slice(1, 3)
    shared = mode.answer_log_probs(rollout, label_logp[prompts], prompts)
    assert shared.requires_grad
    torch.testing.assert_close(shared, mode.log_probs(model, rollout, prompts), rtol=0, atol=1e-6)


def test_exact_rollouts_score_every_label_of_each_prompt(parts):
    model, *_, batch = parts
    mode = make_mode(parts, "label", objective="exact")
    rollout = mode.sample(model, batch)
    num_prompts, num_labels = batch.human.shape
    assert mode.log_probs(model, rollout).shape == (num_prompts, num_labels)
    assert mode.log_probs(model, rollout, slice(1, 2)).shape == (1, num_labels)
    assert float(mode.loss_units(rollout)) == num_prompts  # the exact loss averages over prompts


def test_generate_rollouts_sample_what_the_sampling_readout_samples(parts):
    model, tokenizer, parser, _, batch = parts
    mode = make_mode(parts, "generate")
    torch.manual_seed(3)
    rollout = mode.sample(model, batch)
    torch.manual_seed(3)
    answers = sample_answers(model, tokenizer, parser, batch.prompt_ids, batch.prompt_mask, mode.settings, GROUP)
    assert torch.equal(rollout.completion_ids, answers.completion_ids)
    assert torch.equal(rollout.choices, answers.choices) and rollout.texts == answers.texts
    assert rollout.choices.shape == (batch.human.shape[0], GROUP)
    # pi as the rewards see it: each answer's leave-one-out histogram of its group
    torch.testing.assert_close(mode.reward_policy_probs(rollout),
                               leave_one_out_histogram(rollout.choices, batch.human.shape[1]))
    logp = mode.log_probs(model, rollout)
    assert logp.shape == rollout.completion_ids.shape
    assert float(mode.loss_units(rollout)) == float(rollout.completion_mask.sum())  # answer tokens


def test_generate_loss_covers_only_the_answers_of_its_prompts(parts):
    """A micro-batch's loss reads the rows of its own prompts' answers (prompt b's answers are rows b*G..b*G+G-1)."""
    model, *_, batch = parts
    mode = make_mode(parts, "generate")
    torch.manual_seed(0)
    rollout = mode.sample(model, batch)
    num_prompts = batch.human.shape[0]
    advantages, weights = torch.randn(num_prompts, GROUP), torch.ones(num_prompts)
    settings = LossSettings(aggregation="grpo")
    whole = mode.loss(rollout, mode.log_probs(model, rollout), advantages, weights, slice(None), settings).loss
    parts_loss = [mode.loss(rollout, mode.log_probs(model, rollout, slice(b, b + 1)), advantages, weights,
                            slice(b, b + 1), settings).loss for b in range(num_prompts)]
    torch.testing.assert_close(torch.stack(parts_loss).mean(), whole, rtol=1e-5, atol=1e-6)
