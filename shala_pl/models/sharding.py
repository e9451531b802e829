"""FSDP2 sharding of a causal LM: what ``VoteModule.shard_models`` applies under ``ModelParallelStrategy``."""

from __future__ import annotations

import torch

from shala_pl.errors import ConfigValueError


def fully_shard_decoder(model: torch.nn.Module, mesh) -> None:
    """FSDP2 (``torch.distributed.fsdp.fully_shard``) on each decoder layer (the classes the model names in
    ``_no_split_modules``), then on the root, which holds the embeddings, the final norm and a tied LM head (one
    shared parameter, in the root's group). A peft model is sharded as a whole: its LoRA weights sit inside the
    layers, trainable next to the frozen base weights (FSDP2 allows both in one group). Does nothing twice."""
    from torch.distributed.fsdp import FSDPModule, fully_shard

    if isinstance(model, FSDPModule):
        return
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layer_classes = set(getattr(base, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ConfigValueError(f"{type(base).__name__} names no decoder-layer class (_no_split_modules) to shard "
                               "with FSDP2; use the DDP strategy for this model")
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
