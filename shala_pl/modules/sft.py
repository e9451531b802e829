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

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        # Lightning's mixed-precision plugin refuses to clip with a fused optimizer, for fp16's gradient scaler (the
        # optimizer would unscale after the clip); bf16 has no scaler, so there the gradients are clipped here
        if not str(self.trainer.precision).startswith("bf16") or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(parameters, gradient_clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)
