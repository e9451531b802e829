"""The batch every module, callback and tool reads: one typed object from ``VoteDataModule.collate``.

Lightning moves it to the device as one object (``transfer_batch_to_device`` applies ``.to(device)`` to each
tensor field of a dataclass; ``uid`` stays on the host) and finds its batch size from the tensor fields.
B prompts, L the padded prompt length, K labels.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class VoteBatch:
    prompt_ids: Tensor  # [B, L] long, left-padded with the tokenizer's pad id
    prompt_mask: Tensor  # [B, L] long, 1 on prompt tokens
    votes: Tensor  # [B, K] float32 vote counts
    human: Tensor  # [B, K] float32, votes normalised: the human distribution p
    majority: Tensor  # [B] long, the most-voted label
    multilabel: Tensor  # [B, K] float32 multi-label targets (zeros where the source has none)
    index: Tensor  # [B] long, each example's position in its split
    uid: list[str]  # [B] example ids
    is_padding: Tensor  # [B] bool, True for the repeated examples that even out sharded evaluation
