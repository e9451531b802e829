"""Supervised baselines: cross-entropy on the label verbalizers.

``target="majority"`` (sft_majority) trains on the majority label's verbalizer; ``target="soft"`` (sft_soft, the
Distributed-NLI soft-label baseline) on the human distribution: loss = -sum_k p_k log P(verbalizer_k | x), with P
the model's full-vocabulary probability of the verbalizer tokens.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from shala_pl.data.batch import VoteBatch
from shala_pl.models.scoring import verbalizer_log_probs
from shala_pl.modules.base import VoteModule


class SFTModule(VoteModule):
    """Cross-entropy on the label verbalizers (module docstring); every :class:`VoteModule` option applies.

    Args:
        target: soft trains on the human vote distribution (sft_soft), majority on the majority label's
            verbalizer (sft_majority).
    """

    def __init__(self, target: Literal["majority", "soft"] = "soft", **kwargs):
        super().__init__(**kwargs)
        if target not in ("majority", "soft"):
            raise ValueError(f"target must be 'majority' or 'soft', got {target!r}")
        self.target = target

    def training_step(self, batch: VoteBatch, batch_idx: int) -> torch.Tensor:
        logp = verbalizer_log_probs(self.policy, batch.prompt_ids, batch.prompt_mask, self.verbalizer_ids)
        if self.target == "majority":
            targets = F.one_hot(batch.majority, logp.shape[-1]).to(logp.dtype)
        else:
            targets = batch.human.to(logp.dtype)
        loss = -(targets * logp).sum(-1).mean()
        self.log("train/loss", loss, on_step=True, batch_size=logp.shape[0])
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], on_step=True, batch_size=logp.shape[0])
        return loss
