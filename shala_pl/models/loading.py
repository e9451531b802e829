"""Load a local Hugging Face causal LM (any architecture transformers knows), optionally with a LoRA adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@dataclass
class LoraSettings:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False):
    tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(name_or_path: str, lora: LoraSettings | None, trust_remote_code: bool = False):
    """The policy: base weights from ``name_or_path``; with ``lora`` only the adapter is trainable."""
    if not Path(name_or_path).exists():
        raise FileNotFoundError(
            f"model directory {name_or_path!r} not found; nothing is downloaded at run time. Point model.name_or_path "
            "at a local Hugging Face model directory (or build one with tools/make_tiny_model.py)."
        )
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, dtype=torch.float32
    )
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
    return model
