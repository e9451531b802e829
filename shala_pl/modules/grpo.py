"""Group-rollout RL against the human vote distribution: SHALA and the GRPO baselines.

The methods differ only in configuration: ``shala`` = the ``log_score`` distribution reward + ambiguity weighting;
``grpo_majority`` = the ``majority`` reward, no weighting; ``grpo_vote_share`` = the ``vote_share`` reward.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import contextmanager, nullcontext
from typing import Literal, Optional, get_args

import torch
from lightning.pytorch.strategies import DeepSpeedStrategy
from torch import Tensor

from shala_pl.data.batch import VoteBatch
from shala_pl.errors import ConfigValueError
from shala_pl.metrics.distribution import entropy, jensen_shannon_distance
from shala_pl.modules.base import VoteModule
from shala_pl import checks
from shala_pl.rl.advantages import AdvantageScaling
from shala_pl.rl.losses import LossOutput, LossSettings
from shala_pl.rl.modes import LabelRollouts, Rollouts, rollout_mode
from shala_pl.rl.rewards import compute_rewards, resolve_reward
from shala_pl.rl.rollout import Rollout, RolloutSettings
from shala_pl.rl.weighting import (
    AmbiguityWeighting,
    PolicyGapTracker,
    normalize_to_mean_one,
    normalized_entropy,
    raw_weights,
)


class NonFiniteTrainingError(RuntimeError):
    pass


# sampled: G labels per prompt, group-relative advantages (GRPO); exact: label mode's expectation over all K
# labels in closed form (``shala_exact``; the log-score reward only)
Objective = Literal["sampled", "exact"]


class GRPOModule(VoteModule):
    def __init__(
        self,
        rollout: Optional[RolloutSettings] = None,  # None: RolloutSettings()
        # reward -> weight: a built-in name or an import path (shala_pl/rl/rewards.py); None: {"log_score": 1.0}
        rewards: Optional[dict[str, float]] = None,
        invalid_reward: Optional[float] = None,  # reward of an unparseable answer; None: the batch's lowest
        advantage_scaling: AdvantageScaling = "none",
        weighting: Optional[AmbiguityWeighting] = None,  # None: AmbiguityWeighting()
        loss: Optional[LossSettings] = None,  # None: LossSettings()
        num_iterations: int = 1,  # mu: optimizer steps per rollout batch
        micro_batches: int = 1,  # backward passes per optimizer step (the rollout batch split by prompts)
        gradient_clip_val: Optional[float] = 1.0,
        max_consecutive_nonfinite: int = 3,
        sample_table_every_n_steps: int = 100,
        disable_dropout: bool = True,  # dropout off in the policy, so the ratio is exactly 1 at the first iteration
        objective: Objective = "sampled",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.automatic_optimization = False
        self.rollout_settings = rollout or RolloutSettings()
        self.reward_weights = dict(rewards) if rewards else {"log_score": 1.0}
        self.invalid_reward, self.advantage_scaling = invalid_reward, advantage_scaling
        self.weighting, self.loss_settings = weighting or AmbiguityWeighting(), loss or LossSettings()
        self.num_iterations, self.micro_batches = num_iterations, micro_batches
        self.gradient_clip_val, self.max_consecutive_nonfinite = gradient_clip_val, max_consecutive_nonfinite
        self.sample_table_every_n_steps = sample_table_every_n_steps
        self.disable_dropout = disable_dropout
        self.objective = objective
        self._check_options()
        # how answers are drawn, scored and trained on: shala_pl/rl/modes.py
        self.rollouts: Rollouts = rollout_mode(self.rollout_settings, objective, self.tokenizer, self.parser,
                                               self.verbalizer_ids, self.reward_weights)
        self.reference = None
        self.policy_gap: Optional[PolicyGapTracker] = None
        self.consecutive_nonfinite = 0
        self.nonfinite_skipped = 0
        self._unscaled_grad_norm: Optional[Tensor] = None  # fp16: measured in on_before_optimizer_step
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
        checks.positive_int("num_iterations", self.num_iterations)
        checks.positive_int("micro_batches", self.micro_batches)
        if self.gradient_clip_val is not None:
            checks.positive("gradient_clip_val", self.gradient_clip_val)
        checks.positive_int("max_consecutive_nonfinite", self.max_consecutive_nonfinite)
        checks.non_negative_int("sample_table_every_n_steps", self.sample_table_every_n_steps)
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
        if isinstance(strategy, DeepSpeedStrategy) and self.micro_batches > 1:
            # each micro-batch's backward would be an accumulation boundary of the engine (its
            # gradient_accumulation_steps is 1), which expects a step() after every backward
            raise ConfigValueError(
                f"micro_batches={self.micro_batches} is not supported under DeepSpeed: set micro_batches to 1 "
                "(lower data.batch_size or rollout.num_generations to fit memory) or use DDP or FSDP"
            )

    def state_dict(self, *args, **kwargs):
        # The frozen reference is rebuilt from name_or_path; keep it out of checkpoints.
        state = super().state_dict(*args, **kwargs)
        return {k: v for k, v in state.items() if not k.startswith("reference.")}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        counters = checkpoint.get("grpo_counters", {})
        self.consecutive_nonfinite = int(checkpoint.get("consecutive_nonfinite", 0))
        self.nonfinite_skipped = int(counters.get("nonfinite_skipped", 0))
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
        checkpoint["consecutive_nonfinite"] = int(self.consecutive_nonfinite)
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
        rollout = self.make_rollout(batch)  # G answers per prompt, parsed into labels
        rollout_s = time.perf_counter() - start

        rewards, components = compute_rewards(  # [B, G], scored against p, not the majority label
            self.reward_weights, rollout.choices, batch.human, batch.majority,
            self.rollouts.reward_policy_probs(rollout), self.invalid_reward,
        )
        batch_std = self._global_std(rewards) if self.advantage_scaling == "batch" else None
        # [B, G]; the exact objective: [B, K], every label's in closed form (its sampled labels are only logged)
        advantages = self.rollouts.advantages(rewards, batch.human, rollout, self.advantage_scaling, batch_std)
        weights = self.ambiguity_weights(batch, rollout)  # [B], mean 1 over the global batch

        update_start = time.perf_counter()
        for _ in range(self.num_iterations):
            loss_out, grad_norm = self.optimization_step(batch, rollout, advantages, weights)
        update_s = time.perf_counter() - update_start

        self.log_training(batch, rollout, rewards, components, weights, loss_out, grad_norm,
                          rollout_s=rollout_s, update_s=update_s)

    # -- rollout -------------------------------------------------------------------------------------------------------
    def make_rollout(self, batch: VoteBatch) -> Rollout:
        rollout = None
        if self.shares_label_forward:  # the training forward, run first: its probabilities are the rollout's too
            train_logp = self.rollouts.label_log_probs(self.policy, batch.prompt_ids, batch.prompt_mask)  # [B, K]
            rollout = self.rollouts.sample_from_training_forward(batch, train_logp)
        # the no-grad passes (sampling, old and reference log-probs) run without dropout whatever disable_dropout says
        with _eval_mode(self.policy), torch.no_grad():
            if rollout is None:
                rollout = self.rollouts.sample(self.policy, batch, synced_gpus=self.needs_synced_gpus)
            if self.num_iterations > 1:
                rollout.old_logp = self.rollouts.log_probs(self.policy, rollout)
            if self.loss_settings.beta > 0:
                rollout.ref_logp = self.reference_log_probs(rollout)
        return rollout

    @property
    def shares_label_forward(self) -> bool:
        """Label mode with one optimizer step on one micro-batch per rollout and no dropout: the label
        distribution the rollout samples from is exactly what the loss's forward computes, so one forward serves
        both (a label-mode step then runs the policy's forward once instead of twice)."""
        return (isinstance(self.rollouts, LabelRollouts) and self.num_iterations == 1 and self.micro_batches == 1
                and self.disable_dropout)

    def reference_log_probs(self, rollout: Rollout) -> Tensor:
        if self.uses_lora:
            with self.policy.disable_adapter():
                return self.rollouts.log_probs(self.policy, rollout)
        return self.rollouts.log_probs(self.reference, rollout)

    # -- ambiguity weights -------------------------------------------------------------------------------------------
    def ambiguity_weights(self, batch: VoteBatch, rollout: Rollout) -> Tensor:
        if not self.weighting.enabled:
            return torch.ones(batch.human.shape[0], device=self.device)
        gap = None
        if self.policy_gap is not None:
            # JS distance is at most sqrt(ln 2); scaled to [0, 1] like the entropy term
            current_gap = jensen_shannon_distance(batch.human, rollout.policy_probs).float() / math.sqrt(math.log(2))
            self._update_policy_gap(batch.index, current_gap)
            gap = self.policy_gap.read(batch.index)
        weights = raw_weights(normalized_entropy(batch.human), gap,
                              self.weighting.strength_at(self.global_step), self.weighting.dynamic_strength)
        total = self._global_sum(torch.stack([weights.sum(), weights.new_tensor(float(weights.numel()))]))
        return normalize_to_mean_one(weights, total[0], total[1])

    def _update_policy_gap(self, indices: Tensor, gaps: Tensor) -> None:
        if self.trainer.world_size > 1:  # every rank keeps the same EMA table
            indices = self.all_gather(indices).reshape(-1)
            gaps = self.all_gather(gaps).reshape(-1)
        self.policy_gap.update(indices, gaps)

    def _global_sum(self, value: Tensor) -> Tensor:
        if self.trainer.world_size > 1:
            return self.trainer.strategy.reduce(value, reduce_op="sum")
        return value

    def _global_std(self, values: Tensor) -> Tensor:
        stats = self._global_sum(torch.stack([values.sum(), (values**2).sum(), values.new_tensor(values.numel())]))
        mean = stats[0] / stats[2]
        return ((stats[1] / stats[2] - mean**2).clamp(min=0) * stats[2] / (stats[2] - 1).clamp(min=1)).sqrt()

    # -- update --------------------------------------------------------------------------------------------------------
    def optimization_step(self, batch: VoteBatch, rollout: Rollout, advantages: Tensor, weights: Tensor):
        """One optimizer step over the whole rollout batch, in ``micro_batches`` backward passes."""
        optimizer = self.optimizers()
        num_prompts = batch.prompt_ids.shape[0]
        bounds = torch.linspace(0, num_prompts, min(self.micro_batches, num_prompts) + 1).round().long().tolist()
        num_tokens = self._global_answer_tokens(rollout) if self.loss_settings.aggregation == "dapo" else None
        outputs, shares = [], []
        for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
            last = i == len(bounds) - 2
            with nullcontext() if last else self._no_backward_sync():
                out = self.micro_batch_loss(rollout, advantages, weights, slice(lo, hi), num_tokens)
                shares.append(self._loss_share(hi - lo, num_prompts))
                self.manual_backward(out.loss * shares[-1])
            outputs.append(out)
        loss_out = _combine_loss_outputs(outputs, shares)
        if self._grad_scaler is None:
            grad_norm = self._clip_and_measure_gradients()
            stepped = bool(torch.isfinite(grad_norm))
            if stepped:
                optimizer.step()
        else:
            # fp16: Lightning unscales the gradients, calls on_before_optimizer_step (which clips them), then the
            # scaler steps unless they overflowed and updates its scale either way
            optimizer.step()
            grad_norm = self._unscaled_grad_norm
            stepped = bool(torch.isfinite(grad_norm))
        if stepped:
            scheduler = self.lr_schedulers()
            if scheduler is not None:
                scheduler.step()
            self.consecutive_nonfinite = 0
        else:
            # under fp16 a finite loss with overflowing gradients only means the scaler lowered its scale
            overflow = self._grad_scaler is not None and bool(torch.isfinite(loss_out.loss))
            self.skip_nonfinite_update(overflow=overflow)
        optimizer.zero_grad(set_to_none=True)
        return loss_out, grad_norm

    def _loss_share(self, prompts: int, num_prompts: int) -> float:
        """A micro-batch's factor in the optimizer batch's loss. ``dapo`` losses are already divided by the token
        count of the whole batch over all ranks: they add up, times the world size to undo the gradient averaging
        of DDP, FSDP and DeepSpeed. The other aggregations average the micro-batches' losses by prompt count."""
        if self.loss_settings.aggregation == "dapo":
            return float(self.trainer.world_size)
        return prompts / num_prompts

    def _global_answer_tokens(self, rollout: Rollout) -> Tensor:
        """Answer tokens in the optimizer batch on all ranks (``dapo``'s normaliser): one all-reduce."""
        return self._global_sum(self.rollouts.answer_tokens(rollout))

    @property
    def _grad_scaler(self) -> Optional[torch.amp.GradScaler]:
        """The fp16 loss scaler of the precision plugin (``16-mixed``); None for 32-bit and bf16."""
        return getattr(self.trainer.precision_plugin, "scaler", None)

    def on_before_optimizer_step(self, optimizer) -> None:
        scaler = self._grad_scaler
        if scaler is not None:  # the gradients were just unscaled: clip the true ones
            if getattr(optimizer, "_step_supports_amp_scaling", False):
                # a fused optimizer unscales inside its step, so Lightning left the gradients scaled: unscale them
                # here (the scaler then tells the step that they are)
                scaler.unscale_(optimizer)
            self._unscaled_grad_norm = self._clip_and_measure_gradients()

    def micro_batch_loss(self, rollout: Rollout, advantages: Tensor, weights: Tensor, prompts: slice,
                         num_tokens: Optional[Tensor] = None) -> LossOutput:
        logp = self.rollouts.log_probs(self.policy, rollout, prompts)  # [n, T]; [n, 1] labels; [b, K] exact
        return self.rollouts.loss(rollout, logp, advantages, weights, prompts, self.loss_settings, num_tokens)

    def _no_backward_sync(self):
        """Context for a non-final micro-batch's backward: no gradient all-reduce under DDP (``DDP.no_sync`` via
        Lightning's ``block_backward_sync``). FSDP and DeepSpeed get a no-op: FSDP reduce-scatters each micro-batch
        (its ``no_sync`` would keep full unsharded gradients, defeating the sharding) and ZeRO-2/3 partition
        gradients during backward and refuse ``no_sync``."""
        block = getattr(self.trainer.strategy, "block_backward_sync", None)
        return block() if block is not None else nullcontext()

    def _clip_and_measure_gradients(self) -> Tensor:
        """Clip to ``gradient_clip_val`` (None: measure only) and return the global gradient norm.

        Lightning refuses norm clipping under FSDP and manual optimization, so the module does it: under FSDP(1)
        ``torch.nn.utils.clip_grad_norm_`` would only see this rank's shards, so the root FSDP module's own
        ``clip_grad_norm_`` (which all-reduces the norm) is used; DTensor parameters (FSDP2) are handled by
        ``torch.nn.utils.clip_grad_norm_`` itself. Under DeepSpeed the gradients live in the engine, which clips
        in ``step()`` by its config's ``gradient_clipping``: nothing is done here and the engine's norm of the
        previous step is returned (for logging; never non-finite, so the engine decides about skipping).
        """
        max_norm = self.gradient_clip_val if self.gradient_clip_val is not None else float("inf")
        wrapped = self.trainer.model
        if isinstance(self.trainer.strategy, DeepSpeedStrategy):
            norm = getattr(wrapped, "get_global_grad_norm", lambda: None)()
            norm = torch.as_tensor(0.0 if norm is None else float(norm), device=self.device)
            return torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))
        if _is_fsdp_root(wrapped):
            return wrapped.clip_grad_norm_(max_norm)
        norm = torch.nn.utils.clip_grad_norm_(self.trainable_parameters(), max_norm, error_if_nonfinite=False)
        # FSDP2 (ModelParallelStrategy): a DTensor whose value is the norm over all shards; the same on every rank
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm

    def skip_nonfinite_update(self, overflow: bool = False) -> None:
        """Count a skipped update; stop after ``max_consecutive_nonfinite`` in a row. An fp16 gradient overflow
        (``overflow``) is counted but never stops training: the scaler has lowered its scale for the next step."""
        self.nonfinite_skipped += 1
        if overflow:
            self.print(f"fp16 gradient overflow at step {self.global_step}: update skipped, loss scale lowered")
            return
        self.consecutive_nonfinite += 1
        self.print(f"non-finite loss or gradient at step {self.global_step}: update skipped "
                   f"({self.consecutive_nonfinite} in a row)")
        if self.consecutive_nonfinite >= self.max_consecutive_nonfinite:
            raise NonFiniteTrainingError(
                f"{self.consecutive_nonfinite} consecutive non-finite updates (max_consecutive_nonfinite="
                f"{self.max_consecutive_nonfinite}); stopping. The last checkpoint holds the last good weights."
            )

    # -- monitoring ----------------------------------------------------------------------------------------------------
    def on_train_start(self) -> None:
        """Log, once, how many prompts the DataModule truncated from the left to ``max_prompt_length``."""
        counts = getattr(self.trainer.datamodule, "n_truncated", None) or {}
        self.truncated_prompts = int(counts.get("train", 0))
        metrics = {"data/truncated_prompts": float(self.truncated_prompts),
                   "data/truncated_prompts_val": float(counts.get("val", 0))}
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def log_training(self, batch, rollout, rewards, components, weights, loss_out, grad_norm, rollout_s, update_s):
        valid = rollout.choices >= 0
        self.invalid_answers_total += (~valid).sum()  # stays on the device: no sync outside log steps
        self.all_invalid_groups_total += (~valid).all(dim=1).sum()
        full_size = getattr(self.trainer.datamodule, "batch_size", None)
        if full_size is not None and batch.human.shape[0] < full_size:
            self.short_batches += 1  # an epoch's last, smaller batch: trained on as is
        if not self._is_log_step():
            return
        size = batch.human.shape[0]
        # averaged over ranks, here only: a log step's one all-reduce
        self.log_dict(self._rank_metrics(batch, rollout, rewards, components, loss_out), on_step=True, on_epoch=False,
                      batch_size=size, sync_dist=True)
        self.log_dict({"rollout/invalid_total": self.invalid_answers_total.float(),
                       "rollout/all_invalid_groups_total": self.all_invalid_groups_total.float()},
                      on_step=True, on_epoch=False, batch_size=size, sync_dist=True, reduce_fx="sum")
        n_answers = rollout.choices.numel()
        self.log_dict({  # global already (all-reduced when computed), or this process's own
            "train/reward_std": self._global_std(rewards),
            "train/grad_norm": grad_norm,
            "train/ambiguity_weight_mean": weights.mean(),
            "train/ambiguity_weight_max": weights.max(),
            "train/ambiguity_weight_entropy_corr": _correlation(weights, normalized_entropy(batch.human)),
            "perf/rollout_s": rollout_s,
            "perf/update_s": update_s,
            "perf/completions_per_s": n_answers / max(rollout_s + update_s, 1e-9),
            "data/short_batches": float(self.short_batches),
            "data/truncated_prompts": float(self.truncated_prompts),
            "train/nonfinite_skipped": float(self.nonfinite_skipped),
            "train/lr": self.optimizers().param_groups[0]["lr"],
        }, on_step=True, on_epoch=False, batch_size=size)
        if self.sample_table_every_n_steps and self.global_step % self.sample_table_every_n_steps == 0:
            self._log_sample_table(batch, rollout, rewards)

    def _rank_metrics(self, batch, rollout, rewards, components, loss_out) -> dict[str, Tensor]:
        """This process's batch statistics, to be averaged over ranks."""
        metrics = {
            "train/loss": loss_out.loss,
            "train/reward_mean": rewards.mean(),
            "train/frac_reward_zero_std": _zero_std_groups(rewards).float().mean(),  # groups without signal
            "train/kl": loss_out.kl,
            "train/clip_ratio": loss_out.clip_ratio,
            "train/clip_ratio_low": loss_out.clip_ratio_low,
            "train/clip_ratio_high": loss_out.clip_ratio_high,
            "train/entropy": entropy(rollout.policy_probs, rescale=False).mean(),
            "train/policy_jsd": jensen_shannon_distance(batch.human, rollout.policy_probs).float().mean(),
            "rollout/invalid_rate": (rollout.choices < 0).float().mean(),
        }
        for name, value in components.items():
            metrics[f"train/reward_{name}"] = value.mean()
        if rollout.completion_mask is not None:
            metrics["rollout/completion_len"] = rollout.completion_mask.sum(-1).float().mean()
        if rollout.truncated is not None:
            metrics["rollout/truncated_rate"] = rollout.truncated.float().mean()
        return metrics

    def _is_log_step(self) -> bool:
        return self.global_step % max(self.trainer.log_every_n_steps, 1) == 0

    def _log_sample_table(self, batch, rollout, rewards) -> None:
        """A few prompts (their last characters, where the question is) with their answers, labels and rewards."""
        experiment = getattr(self.logger, "experiment", None)
        if experiment is None or not hasattr(experiment, "add_text"):
            return
        group = self.rollout_settings.num_generations
        cell = lambda text: text.replace("|", "/").replace("\n", " ").strip()  # noqa: E731
        lines = ["| uid | prompt (end) | p | answer | label | reward |", "|---|---|---|---|---|---|"]
        for b in range(min(2, rollout.choices.shape[0])):
            prompt = self.tokenizer.decode(batch.prompt_ids[b][batch.prompt_mask[b].bool()], skip_special_tokens=True)
            human = ", ".join(f"{x:.2f}" for x in batch.human[b].tolist())
            for g in range(min(4, group)):
                choice = int(rollout.choices[b, g])
                text = rollout.texts[b * group + g] if rollout.texts else self.verbalizers[choice]
                label = self.label_names[choice] if choice >= 0 else "(invalid)"
                lines.append(f"| {batch.uid[b]} | {cell(prompt)[-160:] if g == 0 else ''} | {human} | "
                             f"{cell(text)[:120]} | {label} | {float(rewards[b, g]):.3f} |")
        experiment.add_text("rollout/samples", "\n".join(lines), self.global_step)


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


def _is_fsdp_root(module) -> bool:
    if module is None:
        return False
    try:
        from torch.distributed.fsdp import FullyShardedDataParallel
    except ImportError:  # torch without distributed support
        return False
    return isinstance(module, FullyShardedDataParallel)


def _combine_loss_outputs(outputs: list[LossOutput], shares: list[float]) -> LossOutput:
    """The optimizer batch's loss terms (each micro-batch's times its share, summed); mean clipping ratios."""
    total = lambda name: sum(share * getattr(o, name).detach() for o, share in zip(outputs, shares))  # noqa: E731
    mean = lambda name: torch.stack([getattr(o, name).detach() for o in outputs]).mean()  # noqa: E731
    return LossOutput(loss=total("loss"), policy_loss=total("policy_loss"), kl=total("kl"),
                      clip_ratio=mean("clip_ratio"), clip_ratio_low=mean("clip_ratio_low"),
                      clip_ratio_high=mean("clip_ratio_high"))


def _zero_std_groups(rewards: Tensor) -> Tensor:
    """[B] True where all G rewards of a prompt are equal: zero advantage, no learning signal."""
    return torch.isclose(rewards.amax(dim=1), rewards.amin(dim=1))


def _correlation(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.float() - a.float().mean(), b.float() - b.float().mean()
    denom = (a.norm() * b.norm()).clamp(min=1e-12)
    return (a * b).sum() / denom


# Checkpoints of modules built in Python hold these in their hyper-parameters: allow torch.load(weights_only=True).
torch.serialization.add_safe_globals([AmbiguityWeighting, LossSettings])
