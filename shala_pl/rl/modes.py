"""One object per rollout mode: how a batch's G answers per prompt are drawn, scored and turned into a loss.

:func:`rollout_mode` picks one from the config, once, and ``GRPOModule`` only talks to it through
:class:`RolloutMode`:

- :class:`GenerateRollouts` (``rollout.mode: generate``): free-text answers, sampled with the KV cache and parsed
  into labels; the loss is per answer token.
- :class:`LabelRollouts` (``rollout.mode: label``): labels drawn from the policy's exact distribution over the label
  words; an answer is one "token", its label's log-probability.
- :class:`ExactLabelRollouts` (label mode with ``objective: exact``, the ``shala_exact`` method): the expected loss
  over all K labels in closed form; the drawn labels are only logged.

The label modes also expose the policy's whole label distribution (:class:`LabelDistributionMode`), so the
training forward can be the rollout's own (``GRPOModule.shares_label_forward``).
"""

from __future__ import annotations

from typing import Optional, Protocol

import torch
from torch import Tensor

from shala_pl.data.batch import VoteBatch
from shala_pl.models.scoring import label_log_probs, shared_prompt_completion_log_probs
from shala_pl.rl.answer_parsing import AnswerParser
from shala_pl.rl.losses import LossOutput, LossSettings, exact_label_loss, grpo_loss
from shala_pl.rl.rewards import answer_histogram, leave_one_out_histogram
from shala_pl.rl.rollout import Rollout, RolloutSettings, end_token_ids, sample_answers, truncated_answers


class RolloutMode(Protocol):
    """What every rollout mode answers. ``prompts`` slices the batch's prompts (a micro-batch)."""

    settings: RolloutSettings
    # capability: one forward gives every label's log-prob (LabelDistributionMode's methods)
    exposes_label_distribution: bool

    def sample(self, policy, batch: VoteBatch, synced_gpus: bool = False) -> Rollout:
        """G answers per prompt of ``batch``, drawn from ``policy``."""

    def log_probs(self, model, rollout: Rollout, prompts: slice = slice(None)) -> Tensor:
        """The log-probs of the answers of ``prompts`` under ``model``, in the shape the loss takes."""

    def reward_policy_probs(self, rollout: Rollout) -> Tensor:
        """pi as the rewards see it: [B, K], or one estimate per answer [B, G, K]."""

    def loss_units(self, rollout: Rollout) -> Tensor:
        """How many units the loss averages over in this process's batch (the ``dapo`` normaliser, summed over
        ranks): answer tokens (generate), answers (label: one token each) or prompts (exact)."""

    def loss(self, rollout: Rollout, logp: Tensor, advantages: Tensor, weights: Tensor, prompts: slice,
             settings: LossSettings, global_units: Optional[Tensor] = None) -> LossOutput:
        """The loss of the answers of ``prompts``, whose log-probs under the policy are ``logp``; ``global_units``:
        ``loss_units`` of the whole optimizer batch on all ranks (``dapo``; None: these prompts' own)."""


class LabelDistributionMode(RolloutMode, Protocol):
    def label_log_probs(self, model, prompt_ids: Tensor, prompt_mask: Tensor) -> Tensor:
        """[B, K] every label's log-prob, one forward (with its graph when gradients are on)."""

    def sample_from(self, batch: VoteBatch, probs: Tensor) -> Rollout:
        """G labels per prompt drawn from ``probs`` [B, K], the policy's label distribution."""

    def answer_log_probs(self, rollout: Rollout, label_logp: Tensor, prompts: slice = slice(None)) -> Tensor:
        """``log_probs`` from every label's log-probs [b, K] of ``prompts`` (a forward already run)."""


class _GroupRollouts:
    """What the modes share: G answers per prompt, per-answer rows grouped by prompt; the clipped GRPO loss over
    each answer's tokens (the exact objective replaces it)."""

    exposes_label_distribution = False

    def __init__(self, settings: RolloutSettings):
        self.settings = settings
        self.group = settings.num_generations

    def rows(self, prompts: slice) -> slice:
        """The rows of per-answer tensors ([N, ...], grouped by prompt) that belong to ``prompts``."""
        if prompts.start is None:
            return prompts
        return slice(prompts.start * self.group, prompts.stop * self.group)

    def old_and_reference(self, rollout: Rollout, rows: slice, logp: Tensor) -> tuple[Tensor, Optional[Tensor]]:
        """The rollout-time log-probs of ``rows`` (``logp`` itself, detached, at the first of one iteration) and
        the reference's (None when beta is 0)."""
        old_logp = rollout.old_logp[rows] if rollout.old_logp is not None else logp.detach()
        ref_logp = rollout.ref_logp[rows] if rollout.ref_logp is not None else None
        return old_logp, ref_logp

    def loss(self, rollout: Rollout, logp: Tensor, advantages: Tensor, weights: Tensor, prompts: slice,
             settings: LossSettings, global_units: Optional[Tensor] = None) -> LossOutput:
        rows = self.rows(prompts)
        old_logp, ref_logp = self.old_and_reference(rollout, rows, logp)
        mask, max_length = self.loss_mask(rollout, rows, logp)
        return grpo_loss(logp, old_logp, ref_logp,
                         advantages[prompts].reshape(-1),  # [n]
                         weights[prompts].repeat_interleave(self.group),  # [n]
                         mask, settings, max_length, global_units)

    def loss_mask(self, rollout: Rollout, rows: slice, logp: Tensor) -> tuple[Tensor, int]:
        raise NotImplementedError


class GenerateRollouts(_GroupRollouts):
    """Free-text answers parsed into labels. The policy's label distribution is not exposed by free text: the
    group's answer histogram stands in for it."""

    def __init__(self, settings: RolloutSettings, tokenizer, parser: AnswerParser, num_labels: int):
        super().__init__(settings)
        self.tokenizer, self.parser, self.num_labels = tokenizer, parser, num_labels

    def sample(self, policy, batch: VoteBatch, synced_gpus: bool = False) -> Rollout:
        answers = sample_answers(policy, self.tokenizer, self.parser, batch.prompt_ids, batch.prompt_mask,
                                 self.settings, self.group, synced_gpus=synced_gpus)
        truncated = truncated_answers(answers.completion_ids, end_token_ids(policy, self.tokenizer))  # [N]
        choices, loss_mask = answers.choices, answers.completion_mask
        if self.settings.mask_truncated_completions:
            choices = choices.masked_fill(truncated.view(-1, self.group), -1)
            loss_mask = loss_mask * ~truncated.unsqueeze(-1)
        return Rollout(
            choices=choices,
            # one pseudo-answer spread over the labels; rewards use each answer's leave-one-out version instead
            policy_probs=answer_histogram(choices, self.num_labels, smoothing=1.0 / self.num_labels),
            prompt_ids=batch.prompt_ids,
            prompt_mask=batch.prompt_mask,
            completion_ids=answers.completion_ids,
            completion_mask=answers.completion_mask,
            truncated=truncated.view(-1, self.group),
            loss_mask=loss_mask,
            texts=answers.texts,
        )

    def log_probs(self, model, rollout: Rollout, prompts: slice = slice(None)) -> Tensor:
        """[n, T] each answer token's log-prob; each prompt runs once, shared by its G answers."""
        rows = self.rows(prompts)
        return shared_prompt_completion_log_probs(model, rollout.prompt_ids[prompts], rollout.prompt_mask[prompts],
                                                  rollout.completion_ids[rows], rollout.completion_mask[rows],
                                                  self.settings.temperature)

    def reward_policy_probs(self, rollout: Rollout) -> Tensor:
        """[B, G, K] each answer's leave-one-out histogram of its group, the plug-in pi of rewards that take one
        (the log score computes its own unbiased form from the answers: ``rewards.sampled_log_score``)."""
        return leave_one_out_histogram(rollout.choices, self.num_labels)

    def loss_mask(self, rollout: Rollout, rows: slice, logp: Tensor) -> tuple[Tensor, int]:
        return rollout.loss_mask[rows], self.settings.max_new_tokens

    def loss_units(self, rollout: Rollout) -> Tensor:
        return rollout.loss_mask.sum().float()


class LabelRollouts(_GroupRollouts):
    """Labels sampled from the policy's exact distribution over the label words, one forward per prompt."""

    exposes_label_distribution = True

    def __init__(self, settings: RolloutSettings, verbalizer_ids: list[list[int]]):
        super().__init__(settings)
        self.verbalizer_ids = verbalizer_ids

    def label_log_probs(self, model, prompt_ids: Tensor, prompt_mask: Tensor) -> Tensor:
        return label_log_probs(model, prompt_ids, prompt_mask, self.verbalizer_ids)  # [B, K]

    def sample(self, policy, batch: VoteBatch, synced_gpus: bool = False) -> Rollout:
        with torch.no_grad():
            probs = self.label_log_probs(policy, batch.prompt_ids, batch.prompt_mask).exp()  # [B, K]
        return self.sample_from(batch, probs)

    def sample_from(self, batch: VoteBatch, probs: Tensor) -> Rollout:
        choices = torch.multinomial(probs, self.group, replacement=True)  # [B, G]
        return Rollout(choices=choices, policy_probs=probs, prompt_ids=batch.prompt_ids, prompt_mask=batch.prompt_mask)

    def log_probs(self, model, rollout: Rollout, prompts: slice = slice(None)) -> Tensor:
        label_logp = self.label_log_probs(model, rollout.prompt_ids[prompts], rollout.prompt_mask[prompts])
        return self.answer_log_probs(rollout, label_logp, prompts)

    def answer_log_probs(self, rollout: Rollout, label_logp: Tensor, prompts: slice = slice(None)) -> Tensor:
        """[n, 1] each answer's label log-prob."""
        return label_logp.gather(1, rollout.choices[prompts]).reshape(-1, 1)

    def reward_policy_probs(self, rollout: Rollout) -> Tensor:
        return rollout.policy_probs  # [B, K] exact

    def loss_mask(self, rollout: Rollout, rows: slice, logp: Tensor) -> tuple[Tensor, int]:
        return torch.ones_like(logp, dtype=torch.long), 1

    def loss_units(self, rollout: Rollout) -> Tensor:
        return torch.tensor(float(rollout.choices.numel()), device=rollout.choices.device)


class ExactLabelRollouts(LabelRollouts):
    """Label mode's objective in closed form: every label's probability in the loss, no sampling noise (the
    advantages are every label's too: ``exact_label_advantages``)."""

    def rows(self, prompts: slice) -> slice:
        return prompts  # one row per prompt: [B, K]

    def answer_log_probs(self, rollout: Rollout, label_logp: Tensor, prompts: slice = slice(None)) -> Tensor:
        return label_logp  # [b, K]

    def loss_units(self, rollout: Rollout) -> Tensor:
        return torch.tensor(float(rollout.choices.shape[0]), device=rollout.choices.device)

    def loss(self, rollout: Rollout, logp: Tensor, advantages: Tensor, weights: Tensor, prompts: slice,
             settings: LossSettings, global_units: Optional[Tensor] = None) -> LossOutput:
        old_logp, ref_logp = self.old_and_reference(rollout, prompts, logp)
        return exact_label_loss(logp, old_logp, ref_logp, advantages[prompts], weights[prompts], settings,
                                global_units)


def rollout_mode(settings: RolloutSettings, objective: str, tokenizer, parser: AnswerParser,
                 verbalizer_ids: list[list[int]]) -> RolloutMode:
    """The rollout mode for ``rollout.mode`` and ``objective`` (checked by the module before this is called)."""
    if settings.mode == "generate":
        return GenerateRollouts(settings, tokenizer, parser, num_labels=len(verbalizer_ids))
    if objective == "exact":
        return ExactLabelRollouts(settings, verbalizer_ids)
    return LabelRollouts(settings, verbalizer_ids)
