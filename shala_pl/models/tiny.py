"""Tiny causal LMs built from a config, with a byte-level BPE tokenizer trained locally.

Saved with ``save_pretrained`` so they load through exactly the ``from_pretrained`` path a real model uses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

# ChatML, the format Qwen uses; `add_generation_prompt` opens the assistant turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]

# Enough English for the prompt templates and the label words of every source.
DEFAULT_CORPUS = """\
You are an annotator. Read the text and answer with one label.
Premise: A man is playing a guitar on stage. Hypothesis: A person performs music.
Does the premise entail the hypothesis, contradict it, or is it neutral?
Answer with one of: entailment, neutral, contradiction. Put the answer in <answer></answer>.
Observation 1 and observation 2. Which hypothesis explains them best, 1 or 2?
What emotion does this Reddit comment express? What emotion does the speaker express in this podcast transcript?
admiration amusement anger annoyance approval caring confusion curiosity desire disappointment disapproval
disgust embarrassment excitement fear gratitude grief joy love nervousness optimism pride realization relief
remorse sadness surprise neutral positive negative ambiguous angry sad happy contempt other
Which label fits the text? red green blue. The word is here. Answer: red. Answer: green. Answer: blue.
Think step by step, then give the final answer.
"""


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(texts), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
        chat_template=CHAT_TEMPLATE,
        padding_side="left",
    )


def build_tiny_model(
    out_dir: str | Path,
    architecture: Literal["qwen2", "llama"] = "qwen2",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    vocab_size: int = 1024,
    texts: Iterable[str] | None = None,
    seed: int = 0,
) -> Path:
    """Build, initialise and save a tiny causal LM plus tokenizer to ``out_dir``."""
    import torch

    out_dir = Path(out_dir)
    corpus = list(texts) if texts is not None else []
    tokenizer = train_tokenizer(DEFAULT_CORPUS.splitlines() + corpus, vocab_size)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
    )
    torch.manual_seed(seed)
    if architecture == "qwen2":
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    elif architecture == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        raise ValueError(f"architecture must be 'qwen2' or 'llama', got {architecture!r}")
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir


def ensure_tiny_model(out_dir: str | Path, **kwargs) -> Path:
    """Build the tiny model once; later calls reuse the saved directory."""
    out_dir = Path(out_dir)
    if not (out_dir / "config.json").exists():
        build_tiny_model(out_dir, **kwargs)
    return out_dir
