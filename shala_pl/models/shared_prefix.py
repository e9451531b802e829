"""Group rollouts share their prompt: run each of B prompts once and hold its keys and values once for its G answers.

``generate(num_return_sequences=G)`` and scoring the answers on ``[prompt; answer]`` rows both repeat every prompt
G times: G times the prompt's forward (and backward) work, and G copies of its keys and values that every decoding
step reads again. Here the B prompts are run once (``prefill_prompts``); a ``SharedPrefixLayer`` cache holds their
keys and values once, next to the answers' own, and ``shared_prefix_attention`` attends each answer token to both
parts, all G answers of a prompt against its keys in one matrix product. The result is the attention of the
concatenated row, computed with the prompt part shared.

``use_shared_prefix_attention(model)`` routes the model's attention through a function registered with transformers'
``AttentionInterface`` that looks at what it is given: keys from a shared cache (``PrefixSplit``) get
``shared_prefix_attention``, which builds its own masks (the prompts' left padding, causality among the answer
tokens); anything else goes to the model's own implementation (``sdpa``, ``eager``, ...) with its usual mask. Because
the choice follows the data and not a switch, a backward pass that recomputes a checkpointed layer takes the same
path as the forward did.

Gradient checkpointing recomputes each layer's forward, cache update included, during the backward pass. The cache
layers used with gradients here (``PromptLayer`` for the prompts' pass, ``SharedPrefixLayer`` without capacity for
the answers' pass) therefore set their contents on each update instead of appending, so a recompute writes the same
keys again instead of doubling them. Models the shared attention cannot serve exactly (sliding-window or other
non-standard cache layers, logit soft-capping, attention sinks) are detected by ``supports_shared_prefix``; callers
then fall back to repeating the prompt.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

ATTENTION_PREFIX = "shala_shared_prefix+"


def position_ids_from_mask(mask: Tensor) -> Tensor:
    """Positions that skip left padding, as ``generate`` computes them, so scoring matches sampling."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def prefill_prompts(model, prompt_ids: Tensor, prompt_mask: Tensor) -> tuple[Tensor, DynamicCache]:
    """Run left-padded prompts [B, L] once: the next-token logits after each prompt [B, V] and the KV cache.

    The cache holds ``PromptLayer``s (safe under gradient checkpointing) when ``supports_shared_prefix(model)``,
    else the model's own cache layers (for sampling without gradients).
    """
    if supports_shared_prefix(model):
        use_shared_prefix_attention(model)
        cache = DynamicCache()
        cache.layers = [PromptLayer() for _ in range(_num_layers(model))]
        cache.layer_class_to_replicate = None
    else:
        cache = DynamicCache(config=model.config)
    out = model(input_ids=prompt_ids, attention_mask=prompt_mask, position_ids=position_ids_from_mask(prompt_mask),
                past_key_values=cache, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values if out.past_key_values is not None else cache
    return out.logits[:, -1], cache


def supports_shared_prefix(model) -> bool:
    """Whether ``shared_prefix_attention`` computes exactly what the model's own attention would."""
    config = model.config.get_text_config(decoder=True)
    if getattr(config, "is_encoder_decoder", False) or not getattr(config, "is_causal", True):
        return False
    if any(getattr(config, name, None) for name in ("attn_logit_softcapping", "attention_chunk_size")):
        return False
    if not all(kind == "full_attention" for kind in (getattr(config, "layer_types", None) or ["full_attention"])):
        return False
    layers = DynamicCache(config=model.config).layers  # the cache the model would use: plain layers only
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _num_layers(model) -> int:
    return model.config.get_text_config(decoder=True).num_hidden_layers


class PromptLayer(DynamicLayer):
    """A cache layer for one pass over the prompts: each update sets its keys and values (a recompute under
    gradient checkpointing writes the same ones again) and attention sees exactly the keys given."""

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[Tensor, Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        self.keys, self.values = key_states, value_states
        return key_states, value_states


@dataclass
class PrefixSplit:
    """One layer's keys (or values) as ``shared_prefix_attention`` receives them."""

    prompt: Tensor  # [B, H, L, D] each prompt once
    answer: Tensor  # [B * G, H, t, D] the answer tokens so far, grouped by prompt
    prompt_mask: Tensor  # [B, L] bool, False on left padding


class SharedPrefixLayer(DynamicLayer):
    """A KV cache layer of G answers per prompt that holds each prompt's keys and values once.

    With ``capacity`` (sampling, no gradients) the answers' keys and values are written in place into storage
    allocated once for ``capacity`` answer tokens, one step after the other; without it (scoring, with gradients)
    the whole answer comes in one forward pass and each update sets it (so a checkpointed recompute is harmless).
    """

    def __init__(self, prompt_keys: Tensor, prompt_values: Tensor, prompt_mask: Tensor, group: int,
                 capacity: Optional[int] = None):
        super().__init__()
        self.prompt_keys, self.prompt_values = prompt_keys, prompt_values
        self.prompt_mask = prompt_mask.bool()
        self.group, self.capacity = group, capacity
        self.dtype, self.device = prompt_keys.dtype, prompt_keys.device
        self.is_initialized = True
        self._answer_len = 0
        self._key_store = self._value_store = None
        self.keys = self.values = None  # the answers' part (see update)
        if capacity is not None:
            rows, heads = prompt_keys.shape[0] * group, prompt_keys.shape[1]
            self._key_store = prompt_keys.new_empty(rows, heads, capacity, prompt_keys.shape[-1])
            self._value_store = prompt_values.new_empty(rows, heads, capacity, prompt_values.shape[-1])

    def update(self, key_states: Tensor, value_states: Tensor, *args, **kwargs) -> tuple[PrefixSplit, PrefixSplit]:
        start, end = self._answer_len, self._answer_len + key_states.shape[-2]
        if self._key_store is not None:
            if end > self.capacity:
                raise RuntimeError(f"KV cache overflow: {end} answer positions, {self.capacity} allocated")
            self._key_store[:, :, start:end] = key_states
            self._value_store[:, :, start:end] = value_states
            self.keys, self.values = self._key_store[:, :, :end], self._value_store[:, :, :end]
            self._answer_len = end
        else:
            self.keys, self.values = key_states, value_states
            self._answer_len = key_states.shape[-2]
        return (PrefixSplit(self.prompt_keys, self.keys, self.prompt_mask),
                PrefixSplit(self.prompt_values, self.values, self.prompt_mask))

    def get_seq_length(self) -> int:
        return self.prompt_keys.shape[-2] + self._answer_len

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.get_seq_length() + query_length, 0


def shared_prefix_cache(cache: DynamicCache, prompt_mask: Tensor, group: int,
                        capacity: Optional[int] = None) -> DynamicCache:
    """The prompts' cache [B rows] as a cache for G answers per prompt [B * G rows], the prompts held once."""
    layers = [SharedPrefixLayer(layer.keys, layer.values, prompt_mask, group, capacity) for layer in cache.layers]
    shared = DynamicCache()
    shared.layers, shared.layer_class_to_replicate = layers, None
    return shared


def use_shared_prefix_attention(model) -> None:
    """Route ``model``'s attention through ``shared_prefix_dispatch`` (once; later calls do nothing).

    Ordinary inputs still reach the model's own implementation with its own mask, so the model computes what it
    computed before; only keys from a shared cache take ``shared_prefix_attention``.
    """
    config = model.config
    base = config._attn_implementation or "eager"
    if base.startswith(ATTENTION_PREFIX):
        return
    name = ATTENTION_PREFIX + base
    if name not in ALL_ATTENTION_FUNCTIONS:
        AttentionInterface.register(name, _dispatch_to(base))
        if base in ALL_MASK_ATTENTION_FUNCTIONS:  # ordinary inputs get the mask their implementation expects
            AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS[base])
    config._attn_implementation = name


def _dispatch_to(base: str):
    def shared_prefix_dispatch(module, query, key, value, attention_mask, **kwargs):
        if isinstance(key, PrefixSplit):
            return shared_prefix_attention(module, query, key, value, attention_mask, **kwargs)
        if base == "eager":  # each architecture defines its own eager function next to its attention module
            return sys.modules[type(module).__module__].eager_attention_forward(
                module, query, key, value, attention_mask, **kwargs)
        return ALL_ATTENTION_FUNCTIONS[base](module, query, key, value, attention_mask, **kwargs)

    return shared_prefix_dispatch


def shared_prefix_attention(
    module,
    query: Tensor,  # [N, Hq, q, D], N = B * G rows grouped by prompt
    key: PrefixSplit,
    value: PrefixSplit,
    attention_mask: Optional[Tensor],  # unused: the prompt mask and causality are applied here
    scaling: Optional[float] = None,
    dropout: float = 0.0,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    s_aux: Optional[Tensor] = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """Attention of the q newest answer tokens of every row over [its prompt; its answer so far].

    Returns [N, q, Hq, D], like transformers' attention functions. Queries attend to the prompt's real tokens and,
    causally, to the answer tokens up to their own position (answer tokens after an EOS are not masked as keys: no
    token before them can see them, so the log-probabilities of the tokens up to the first EOS are unaffected).
    """
    if not isinstance(key, PrefixSplit):
        raise RuntimeError("shared_prefix_attention needs a cache from shared_prefix_cache")
    if sliding_window is not None or softcap is not None or s_aux is not None:
        raise NotImplementedError("shared_prefix_attention supports plain full attention only")
    rows, q_heads, q_len, dim = query.shape
    batch, kv_heads, prompt_len, _ = key.prompt.shape
    group, rep, answer_len = rows // batch, q_heads // kv_heads, key.answer.shape[-2]
    scaling = dim**-0.5 if scaling is None else scaling
    width = rep * q_len  # query heads that share a key/value head, side by side (transformers' repeat_kv order)
    q = query.reshape(rows, kv_heads, width, dim) * scaling

    # the prompt part: the G answers of a prompt against its keys in one product
    q_grouped = q.view(batch, group, kv_heads, width, dim).transpose(1, 2).reshape(batch, kv_heads, group * width, dim)
    prompt_scores = q_grouped @ key.prompt.transpose(-1, -2)  # [B, Hkv, G * width, L]
    prompt_scores = prompt_scores.masked_fill(~key.prompt_mask[:, None, None, :], float("-inf"))
    prompt_scores = prompt_scores.view(batch, kv_heads, group, width, prompt_len).transpose(1, 2)
    prompt_scores = prompt_scores.reshape(rows, kv_heads, width, prompt_len)

    answer_scores = q @ key.answer.transpose(-1, -2)  # [N, Hkv, width, t]
    if q_len > 1:  # query i is answer token t - q + i: it sees answer tokens up to its own
        query_pos = torch.arange(answer_len - q_len, answer_len, device=query.device)
        visible = torch.arange(answer_len, device=query.device)[None, :] <= query_pos[:, None]  # [q, t]
        answer_scores = answer_scores.view(rows, kv_heads, rep, q_len, answer_len).masked_fill(
            ~visible, float("-inf")).view(rows, kv_heads, width, answer_len)

    probs = torch.cat([prompt_scores, answer_scores], dim=-1).float().softmax(dim=-1).to(query.dtype)
    if dropout > 0.0 and module.training:
        probs = torch.nn.functional.dropout(probs, p=dropout)
    prompt_probs, answer_probs = probs.split([prompt_len, answer_len], dim=-1)
    prompt_probs = prompt_probs.reshape(batch, group, kv_heads, width, prompt_len).transpose(1, 2)
    prompt_out = prompt_probs.reshape(batch, kv_heads, group * width, prompt_len) @ value.prompt
    prompt_out = prompt_out.view(batch, kv_heads, group, width, dim).transpose(1, 2).reshape(rows, kv_heads, width, dim)
    out = prompt_out + answer_probs @ value.answer  # [N, Hkv, width, D]
    return out.view(rows, q_heads, q_len, dim).transpose(1, 2).contiguous(), None

