"""Load a local Hugging Face causal LM (any architecture transformers knows), optionally with a LoRA adapter."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from shala_pl.errors import ConfigValueError, ModelPathError

DType = Literal["auto", "float32", "bfloat16", "float16"]
HOW_TO_GET_A_MODEL = ("build one with `shala-pl get-model smollm2-135m-instruct` (a real instruct LLM, "
                      "offline) or `shala-pl make-tiny-model {path}` (a tiny test model), or point "
                      "model.name_or_path at a local Hugging Face model directory")


@dataclass
class LoraSettings:
    """A LoRA adapter (peft) on the base model; only the adapter trains.

    Args:
        r: the adapter's rank.
        alpha: its scaling numerator (the update is scaled by alpha / r).
        dropout: dropout on the adapter's input (inactive under GRPO's default disable_dropout: true).
        target_modules: the linear layers that get an adapter, by name.
    """

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


def resolve_model_path(name_or_path: str, from_hub: bool = False) -> str:
    """``name_or_path`` when it is a usable local model directory; a one-line ``ModelPathError`` otherwise.

    A Hub id is only passed on (to be downloaded by transformers) with ``from_hub``.
    """
    if from_hub and not Path(name_or_path).exists():
        return name_or_path
    path = Path(name_or_path)
    if not path.is_dir():
        raise ModelPathError(f"model directory {name_or_path!r} does not exist (model.name_or_path); "
                             f"{HOW_TO_GET_A_MODEL.format(path=name_or_path)}")
    if not (path / "config.json").is_file() and not (path / "adapter_config.json").is_file():  # an export's adapter
        raise ModelPathError(f"{name_or_path!r} is not a Hugging Face model directory: it has no config.json "
                             f"(model.name_or_path); {HOW_TO_GET_A_MODEL.format(path=name_or_path)}")
    return str(path)


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False, from_hub: bool = False):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name_or_path, from_hub),
                                              trust_remote_code=trust_remote_code, local_files_only=not from_hub)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def torch_dtype(dtype: DType):
    """The ``dtype`` option as transformers takes it ("auto": the checkpoint's own dtype)."""
    if dtype == "auto":
        return "auto"
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigValueError(f"model.dtype must be one of auto, float32, bfloat16, float16; got {dtype!r}")
    return getattr(torch, dtype)


def load_causal_lm(
    name_or_path: str,
    lora: LoraSettings | None,
    trust_remote_code: bool = False,
    dtype: DType = "auto",
    attn_implementation: str = "sdpa",
    gradient_checkpointing: bool = False,
    from_hub: bool = False,
):
    """The policy: base weights from ``name_or_path``; with ``lora`` only the adapter is trainable."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        resolve_model_path(name_or_path, from_hub), trust_remote_code=trust_remote_code, dtype=torch_dtype(dtype),
        attn_implementation=attn_implementation, local_files_only=not from_hub,
    )
    if gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft reads transformers' deprecated `is_gradient_checkpointing`
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = get_peft_model(model, config)
    return model


def enable_gradient_checkpointing(model) -> None:
    """Recompute each decoder layer's activations in the backward pass instead of keeping them.

    transformers' non-reentrant checkpointing (no ``enable_input_require_grads`` needed for LoRA). Its layers drop
    a KV cache under checkpointing, as a cache that appends would be written twice by the recompute; the caches
    this project passes with gradients set their contents on each update (``shala_pl.models.shared_prefix``), so
    the layers are told to keep them.
    """
    from transformers.modeling_layers import GradientCheckpointingLayer

    if not getattr(model, "supports_gradient_checkpointing", False):
        raise ConfigValueError(f"model.gradient_checkpointing: {type(model).__name__} does not support it")
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    for module in model.modules():
        if isinstance(module, GradientCheckpointingLayer):
            module._can_checkpoint_with_cache = True
