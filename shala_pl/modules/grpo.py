"""Group-rollout RL against the human vote distribution: SHALA and the GRPO baselines.

The methods differ only in configuration: ``shala`` = the ``log_score`` distribution reward + ambiguity weighting;
``grpo_majority`` = the ``majority`` reward, no weighting; ``grpo_vote_share`` = the ``vote_share`` reward.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager
from functools import partial
from typing import Literal, Optional, get_args

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import Tensor

from shala_pl.data.batch import VoteBatch
from shala_pl.errors import ConfigValueError
from shala_pl.media import log_table
from shala_pl.modules.base import VoteModule
from shala_pl import checks
from shala_pl.rl.advantages import AdvantageScaling, exact_label_advantages, group_advantages
from shala_pl.rl.losses import LossOutput, LossSettings
from shala_pl.rl.modes import RolloutMode, rollout_mode
from shala_pl.rl.monitoring import SAMPLE_COLUMNS, rank_metrics, reward_and_weight_metrics, sample_rows
from shala_pl.rl.ranks import global_std
from shala_pl.rl.rewards import compute_rewards, resolve_reward
from shala_pl.rl.rollout import Rollout, RolloutSettings
from shala_pl.rl.update import NonFiniteTrainingError, Update
from shala_pl.rl.weighting import AmbiguityWeighting, PolicyGapTracker, batch_weights

__all__ = ["GRPOModule", "NonFiniteTrainingError"]


# sampled: G labels per prompt, group-relative advantages (GRPO); exact: label mode's expectation over all K
# labels in closed form (``shala_exact``; the log-score reward only)
Objective = Literal["sampled", "exact"]


class GRPOModule(VoteModule):
    """Group-rollout RL against the human vote distribution (SHALA, and the GRPO baselines by configuration).

    Args:
        rollout: How the G answers per prompt are drawn: free text or labels (None: ``RolloutSettings()``).
        rewards: Reward name -> weight; a built-in name or an import path ``package.module.function``
            (``shala_pl/rl/rewards.py``). None: ``{log_score: 1.0}``.
        invalid_reward: The reward of an unparseable answer; None: the batch's lowest of each reward.
        advantage_scaling: What the group-centred rewards are divided by: ``none`` (Dr. GRPO, the default),
            ``group`` (each group's std, GRPO) or ``batch`` (the global batch's std). With the ``log_score``
            reward ``group`` is biased: each group's own std depends on which labels it drew, so dividing by it
            moves the expected gradient's fixed point off p; with ``none`` it is p.
        weighting: Ambiguity weighting of each prompt's loss (None: ``AmbiguityWeighting()``).
        loss: Clipping, KL-to-reference coefficient and token aggregation (None: ``LossSettings()``).
        num_iterations: Optimizer steps per rollout batch (mu); above 1 the PPO ratio and clipping act.
        micro_batches: Backward passes per optimizer step: the rollout batch split by prompts, to fit memory.
        gradient_clip_val: Clip the global gradient norm to this (None: measure it only).
        max_consecutive_nonfinite: Stop after this many updates in a row skipped for a non-finite loss or
            gradient (fp16 overflows never stop training).
        sample_table_every_n_steps: Log a table of prompts, answers and rewards (to every logger) every this many
            training batches, at log steps; 0: never.
        disable_dropout: Dropout off in the policy, so the ratio is exactly 1 at the first iteration (the rollout
            and the loss then see one distribution); LoRA dropout needs it false.
        objective: ``sampled``: G labels per prompt, group-relative advantages (GRPO); ``exact``: label mode's
            expectation over all K labels in closed form (``shala_exact``; the log-score reward alone).
    """

    def __init__(
        self,
        rollout: Optional[RolloutSettings] = None,
        rewards: Optional[dict[str, float]] = None,
        invalid_reward: Optional[float] = None,
        advantage_scaling: AdvantageScaling = "none",
        weighting: Optional[AmbiguityWeighting] = None,
        loss: Optional[LossSettings] = None,
        num_iterations: int = 1,
        micro_batches: int = 1,
        gradient_clip_val: Optional[float] = 1.0,
        max_consecutive_nonfinite: int = 3,
        sample_table_every_n_steps: int = 100,
        disable_dropout: bool = True,
        objective: Objective = "sampled",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.rollout_settings = rollout or RolloutSettings()
        self.reward_weights = dict(rewards) if rewards else {"log_score": 1.0}
        self.invalid_reward, self.advantage_scaling = invalid_reward, advantage_scaling
        self.weighting, self.loss_settings = weighting or AmbiguityWeighting(), loss or LossSettings()
        self.num_iterations = num_iterations
        self.sample_table_every_n_steps = sample_table_every_n_steps
        self.disable_dropout = disable_dropout
        self.objective = objective
        self._check_options()
        # micro-batches, clipping, the optimizer step and the non-finite skip policy: shala_pl/rl/update.py
        self.update = Update(micro_batches, gradient_clip_val, max_consecutive_nonfinite)
        # how answers are drawn, scored and trained on: shala_pl/rl/modes.py
        self.rollouts: RolloutMode = rollout_mode(self.rollout_settings, objective, self.tokenizer, self.parser,
                                                  self.verbalizer_ids)
        self.reference = None
        self.policy_gap: Optional[PolicyGapTracker] = None
        self.short_batches = 0  # training batches with fewer prompts than data.batch_size (an epoch's last)
        self.truncated_prompts = 0  # set at fit start from the DataModule's count
        self.register_buffer("invalid_answers_total", torch.zeros((), dtype=torch.long), persistent=False)
        # prompts none of whose G answers parsed (they get zero advantage: no signal, no NaN)
        self.register_buffer("all_invalid_groups_total", torch.zeros((), dtype=torch.long), persistent=False)

    def _check_options(self) -> None:
        for name, weight in self.reward_weights.items():
            resolve_reward(name)  # a ConfigValueError for an unknown name or a wrong signature
            checks.require(math.isfinite(weight), f"rewards.{name}", "a finite weight", weight)
        checks.one_of("advantage_scaling", self.advantage_scaling, get_args(AdvantageScaling))
        checks.require(not ("log_score" in self.reward_weights and self.rollout_settings.mode == "generate"
                            and self.objective == "sampled" and self.rollout_settings.num_generations < 3),
                       "rollout.num_generations", "at least 3 with the log_score reward in generate mode",
                       self.rollout_settings.num_generations, "its estimate of log pi comes from the group's other "
                       "answers; with one other its expected gradient is 0: shala_pl/rl/rewards.py, sampled_log_score")
        checks.positive_int("num_iterations", self.num_iterations)
        checks.non_negative_int("sample_table_every_n_steps", self.sample_table_every_n_steps)
        lora_dropout = self.lora_settings.dropout if self.lora_settings is not None else 0.0
        checks.require(not (self.disable_dropout and lora_dropout > 0), "lora.dropout",
                       "0 with disable_dropout: true (which switches off every dropout layer, the adapter's too); "
                       "set disable_dropout: false to train with LoRA dropout", lora_dropout)
        self._check_objective()

    def _check_objective(self) -> None:
        checks.one_of("objective", self.objective, get_args(Objective))
        if self.objective != "exact":
            return
        checks.require(self.rollout_settings.mode == "label", "objective", "'sampled' unless rollout.mode is "
                       "label (the exact objective needs the policy's label distribution)", self.objective)
        checks.require(set(self.reward_weights) == {"log_score"}, "objective", "'sampled' unless rewards is "
                       "log_score alone (the closed form is the log score's)", self.objective)
        checks.require(self.advantage_scaling == "none", "objective", "'sampled' unless advantage_scaling is "
                       "none (there is no group to take a std over)", self.objective)

    # -- set-up ------------------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        self.load_policy()
        if self.disable_dropout:
            _disable_dropout(self.policy)
        if self.loss_settings.beta > 0 and not self.uses_lora and self.reference is None:
            # Full fine-tuning needs a frozen copy; with LoRA the reference is the base model, adapter disabled.
            # Copied before sharding: under FSDP2 both are then sharded the same way (shard_models).
            self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.shard_models()

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self.check_strategy(self.trainer.strategy)
        if stage == "fit" and self.weighting.dynamic_strength > 0 and self.policy_gap is None:
            self.policy_gap = PolicyGapTracker(self.trainer.datamodule.num_train_examples, self.weighting.ema_decay)

    def check_strategy(self, strategy) -> None:
        """Refuse what a strategy cannot do with this module's training loop, before any model is built."""
        micro_batches = self.update.micro_batches
        if isinstance(strategy, DeepSpeedStrategy) and micro_batches > 1:
            # each micro-batch's backward would be an accumulation boundary of the engine (its
            # gradient_accumulation_steps is 1), which expects a step() after every backward
            raise ConfigValueError(
                f"micro_batches={micro_batches} is not supported under DeepSpeed: set micro_batches to 1 "
                "(lower data.batch_size or rollout.num_generations to fit memory) or use DDP or FSDP"
            )

    def state_dict(self, *args, **kwargs):
        # The frozen reference is rebuilt from name_or_path; keep it out of checkpoints.
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith("reference.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counters = checkpoint.get("grpo_counters", {})
        self.update.consecutive_nonfinite = int(checkpoint.get("consecutive_nonfinite", 0))
        self.update.nonfinite_skipped = int(counters.get("nonfinite_skipped", 0))
        self.short_batches = int(counters.get("short_batches", 0))
        self.all_invalid_groups_total.fill_(int(counters.get("all_invalid_groups", 0)))
        self.invalid_answers_total.fill_(int(counters.get("invalid_answers", 0)))
        # The dynamic-weighting EMA is a buffer (saved in state_dict); a run that does not fit (validate, test)
        # has no tracker yet: make one of the saved size so the checkpoint loads strictly.
        ema = checkpoint.get("state_dict", {}).get("policy_gap.ema")
        if ema is not None and self.policy_gap is None:
            self.policy_gap = PolicyGapTracker(ema.shape[0], self.weighting.ema_decay)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain ints only: checkpoints load with torch.load(weights_only=True).
        checkpoint["consecutive_nonfinite"] = int(self.update.consecutive_nonfinite)
        checkpoint["grpo_counters"] = {
            "nonfinite_skipped": int(self.nonfinite_skipped),
            "short_batches": int(self.short_batches),
            "all_invalid_groups": int(self.all_invalid_groups_total),
            "invalid_answers": int(self.invalid_answers_total),
        }

    def load_state_dict(self, state_dict, strict: bool = True, **kwargs):
        if self.reference is not None:
            state_dict = {**state_dict, **{f"reference.{k}": v for k, v in self.reference.state_dict().items()}}
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    # -- one training step, top to bottom ------------------------------------------------------------------------------
    def training_step(self, batch: VoteBatch, batch_idx: int) -> None:
        start = time.perf_counter()
        # G answers per prompt, parsed into labels; and, label mode sharing it, the loss's forward [B, K]
        rollout, training_logp = self.make_rollout(batch)
        rollout_s = time.perf_counter() - start

        rewards, components = compute_rewards(  # [B, G], scored against p, not the majority label
            self.reward_weights, rollout.choices, batch.human, batch.majority,
            self.rollouts.reward_policy_probs(rollout), self.invalid_reward,
        )
        advantages = self.advantages(rewards, batch, rollout)
        weights = batch_weights(self.weighting, batch.human, rollout.policy_probs, batch.index,  # [B], mean 1
                                self.global_step, self.policy_gap, self.trainer.strategy)

        update_start = time.perf_counter()
        loss_of = partial(self.micro_batch_loss, rollout, advantages, weights, training_logp=training_logp)
        # dapo: the loss units (answer tokens, answers or prompts) of the whole optimizer batch normalise each loss
        units = self.rollouts.loss_units(rollout) if self.loss_settings.aggregation == "dapo" else None
        for _ in range(self.num_iterations):
            loss_out, grad_norm = self.update.step(self, loss_of, batch.prompt_ids.shape[0], units)
        update_s = time.perf_counter() - update_start

        self.count_rollout(batch, rollout)
        if self._is_log_step():
            self.log_training(batch, rollout, rewards, components, weights, loss_out, grad_norm,
                              rollout_s=rollout_s, update_s=update_s)

    # -- rollout -------------------------------------------------------------------------------------------------------
    def make_rollout(self, batch: VoteBatch) -> tuple[Rollout, Optional[Tensor]]:
        """The rollout, and the training forward's label log-probs [B, K] when it is the rollout's own
        (``shares_label_forward``; None otherwise)."""
        training_logp = rollout = None
        if self.shares_label_forward:  # the training forward, run first: its probabilities are the rollout's too
            training_logp = self.rollouts.label_log_probs(self.policy, batch.prompt_ids, batch.prompt_mask)
            rollout = self.rollouts.sample_from(batch, training_logp.detach().exp())
        # the no-grad passes (sampling, old and reference log-probs) run without dropout whatever disable_dropout says
        with _eval_mode(self.policy), torch.no_grad():
            if rollout is None:
                rollout = self.rollouts.sample(self.policy, batch, synced_gpus=self.needs_synced_gpus)
            if self.num_iterations > 1:
                rollout.old_logp = self.rollouts.log_probs(self.policy, rollout)
            if self.loss_settings.beta > 0:
                rollout.ref_logp = self.reference_log_probs(rollout)
        return rollout, training_logp

    @property
    def shares_label_forward(self) -> bool:
        """A mode that exposes the label distribution, one optimizer step on one micro-batch per rollout and no
        dropout: the label distribution the rollout samples from is exactly what the loss's forward computes, so
        one forward serves both (a label-mode step then runs the policy's forward once instead of twice)."""
        return (self.rollouts.exposes_label_distribution and self.num_iterations == 1
                and self.update.micro_batches == 1 and self.disable_dropout)

    def reference_log_probs(self, rollout: Rollout) -> Tensor:
        if self.uses_lora:
            with self.policy.disable_adapter():
                return self.rollouts.log_probs(self.policy, rollout)
        return self.rollouts.log_probs(self.reference, rollout)

    # -- advantages ----------------------------------------------------------------------------------------------------
    def advantages(self, rewards: Tensor, batch: VoteBatch, rollout: Rollout) -> Tensor:
        """[B, G] group-relative; the exact objective: [B, K], every label's in closed form (its sampled labels'
        rewards are only logged)."""
        if self.objective == "exact":
            return self.reward_weights["log_score"] * exact_label_advantages(batch.human, rollout.policy_probs)
        batch_std = global_std(self.trainer.strategy, rewards) if self.advantage_scaling == "batch" else None
        return group_advantages(rewards, self.advantage_scaling, batch_std)

    # -- loss ----------------------------------------------------------------------------------------------------------
    def micro_batch_loss(self, rollout: Rollout, advantages: Tensor, weights: Tensor, prompts: slice,
                         global_units: Optional[Tensor] = None, training_logp: Optional[Tensor] = None) -> LossOutput:
        """The loss of the answers of ``prompts``: their log-probs under the policy ([n, T]; [n, 1] labels; [b, K]
        exact), from ``training_logp`` (every label's, a forward already run) or a new forward."""
        if training_logp is None:
            logp = self.rollouts.log_probs(self.policy, rollout, prompts)
        else:
            logp = self.rollouts.answer_log_probs(rollout, training_logp[prompts], prompts)
        return self.rollouts.loss(rollout, logp, advantages, weights, prompts, self.loss_settings, global_units)

    def on_before_optimizer_step(self, optimizer) -> None:
        self.update.before_fp16_step(self, optimizer)

    @property
    def nonfinite_skipped(self) -> int:
        """Updates skipped for a non-finite loss or gradient (fp16 overflows included), since the run began."""
        return self.update.nonfinite_skipped

    # -- monitoring ----------------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        """Log, once, how many prompts the DataModule truncated from the left to ``max_prompt_length``."""
        counts = getattr(self.trainer.datamodule, "n_truncated", None) or {}
        self.truncated_prompts = int(counts.get("train", 0))
        metrics = {"data/truncated_prompts": float(self.truncated_prompts),
                   "data/truncated_prompts_val": float(counts.get("val", 0))}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def count_rollout(self, batch: VoteBatch, rollout: Rollout) -> None:
        """The run's counters of invalid answers, all-invalid groups and short batches."""
        valid = rollout.choices >= 0
        self.invalid_answers_total += (~valid).sum()  # stays on the device: no sync outside log steps
        self.all_invalid_groups_total += (~valid).all(dim=1).sum()
        full_size = getattr(self.trainer.datamodule, "batch_size", None)
        if full_size is not None and batch.human.shape[0] < full_size:
            self.short_batches += 1  # an epoch's last, smaller batch: trained on as is

    def log_training(self, batch, rollout, rewards, components, weights, loss_out, grad_norm, rollout_s, update_s):
        size = batch.human.shape[0]
        # averaged over ranks, here only: a log step's one all-reduce
        self.log_dict(rank_metrics(batch.human, rollout, rewards, components, loss_out), on_step=True, on_epoch=False,
                      batch_size=size, sync_dist=True)
        self.log_dict({"rollout/invalid_total": self.invalid_answers_total.float(),
                       "rollout/all_invalid_groups_total": self.all_invalid_groups_total.float()},
                      on_step=True, on_epoch=False, batch_size=size, sync_dist=True, reduce_fx="sum")
        n_answers = rollout.choices.numel()
        self.log_dict({  # global already (all-reduced when computed), or this process's own
            **reward_and_weight_metrics(self.trainer.strategy, batch.human, rewards, weights),
            "train/grad_norm": grad_norm,
            "perf/rollout_s": rollout_s,
            "perf/update_s": update_s,
            "perf/completions_per_s": n_answers / max(rollout_s + update_s, 1e-9),
            "data/short_batches": float(self.short_batches),
            "data/truncated_prompts": float(self.truncated_prompts),
            "train/nonfinite_skipped": float(self.nonfinite_skipped),
            "train/lr": self.optimizers().param_groups[0]["lr"],
        }, on_step=True, on_epoch=False, batch_size=size)
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped  # the step of this batch's scalars
        if (self.sample_table_every_n_steps and (step + 1) % self.sample_table_every_n_steps == 0
                and self.trainer.is_global_zero):
            log_table(self.trainer, "rollout/samples", SAMPLE_COLUMNS,
                      sample_rows(self.tokenizer, batch, rollout, rewards, self.verbalizers, self.label_names), step)

    def _is_log_step(self) -> bool:
        """Whether Lightning writes this batch's logged metrics, by its own batch counter, which counts every
        training batch once. (``global_step`` would not do: it stands still on a skipped update, and advances
        ``num_iterations`` times per batch.)"""
        return self.trainer._logger_connector.should_update_logs


@contextmanager
def _eval_mode(model: torch.nn.Module):
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


def _disable_dropout(model: torch.nn.Module) -> None:
    """Dropout probability 0 in every layer (TRL's ``disable_dropout``), attention dropout included."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


# Checkpoints of modules built in Python hold these in their hyper-parameters: allow torch.load(weights_only=True).
torch.serialization.add_safe_globals([AmbiguityWeighting, LossSettings])
