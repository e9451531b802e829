"""What a training step reports: the rollout's, rewards', weights' and loss's batch statistics, and a sample table."""

from __future__ import annotations

import torch
from torch import Tensor

from shala_pl.data.batch import VoteBatch
from shala_pl.metrics.distribution import entropy, jensen_shannon_distance
from shala_pl.rl.losses import LossOutput
from shala_pl.rl.ranks import global_std
from shala_pl.rl.rollout import Rollout
from shala_pl.rl.weighting import normalized_entropy


def rank_metrics(human: Tensor, rollout: Rollout, rewards: Tensor, components: dict[str, Tensor],
                 loss_out: LossOutput) -> dict[str, Tensor]:
    """This process's batch statistics, to be averaged over ranks."""
    metrics = {
        "train/loss": loss_out.loss,
        "train/reward_mean": rewards.mean(),
        "train/frac_reward_zero_std": zero_std_groups(rewards).float().mean(),  # groups without signal
        "train/kl": loss_out.kl,
        "train/clip_ratio": loss_out.clip_ratio,
        "train/clip_ratio_low": loss_out.clip_ratio_low,
        "train/clip_ratio_high": loss_out.clip_ratio_high,
        "train/entropy": entropy(rollout.policy_probs, rescale=False).mean(),
        "train/policy_jsd": jensen_shannon_distance(human, rollout.policy_probs).float().mean(),
        "rollout/invalid_rate": (rollout.choices < 0).float().mean(),
    }
    for name, value in components.items():
        metrics[f"train/reward_{name}"] = value.mean()
    if rollout.completion_mask is not None:
        metrics["rollout/completion_len"] = rollout.completion_mask.sum(-1).float().mean()
    if rollout.truncated is not None:
        metrics["rollout/truncated_rate"] = rollout.truncated.float().mean()
    return metrics


def reward_and_weight_metrics(strategy, human: Tensor, rewards: Tensor, weights: Tensor) -> dict[str, Tensor]:
    """The rewards' std over all ranks (one all-reduce) and the ambiguity weights' statistics (global already:
    they are normalised over all ranks)."""
    return {
        "train/reward_std": global_std(strategy, rewards),
        "train/ambiguity_weight_mean": weights.mean(),
        "train/ambiguity_weight_max": weights.max(),
        "train/ambiguity_weight_entropy_corr": correlation(weights, normalized_entropy(human)),
    }


def zero_std_groups(rewards: Tensor) -> Tensor:
    """[B] True where all G rewards of a prompt are equal: zero advantage, no learning signal."""
    return torch.isclose(rewards.amax(dim=1), rewards.amin(dim=1))


def correlation(a: Tensor, b: Tensor) -> Tensor:
    a, b = a.float() - a.float().mean(), b.float() - b.float().mean()
    denom = (a.norm() * b.norm()).clamp(min=1e-12)
    return (a * b).sum() / denom


SAMPLE_COLUMNS = ["uid", "prompt (end)", "p", "answer", "label", "reward"]


def sample_rows(tokenizer, batch: VoteBatch, rollout: Rollout, rewards: Tensor, verbalizers: list[str],
                label_names: list[str], prompts: int = 2, answers: int = 4) -> list[list]:
    """A few prompts (their last characters, where the question is) with their answers, labels and rewards, one
    row per answer in ``SAMPLE_COLUMNS`` order."""
    group = rollout.choices.shape[1]
    rows = []
    for b in range(min(prompts, rollout.choices.shape[0])):
        prompt = tokenizer.decode(batch.prompt_ids[b][batch.prompt_mask[b].bool()], skip_special_tokens=True)
        human = ", ".join(f"{x:.2f}" for x in batch.human[b].tolist())
        for g in range(min(answers, group)):
            choice = int(rollout.choices[b, g])
            text = rollout.texts[b * group + g] if rollout.texts else verbalizers[choice]
            label = label_names[choice] if choice >= 0 else "(invalid)"
            rows.append([batch.uid[b], prompt.replace("\n", " ").strip()[-160:] if g == 0 else "", human,
                         text.replace("\n", " ").strip()[:120], label, f"{float(rewards[b, g]):.3f}"])
    return rows
