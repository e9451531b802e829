"""Turn a GGUF file into an ordinary Hugging Face model directory that ``from_pretrained(path)`` loads.

transformers reads GGUF files (with the ``gguf`` package) and dequantizes the weights to float, but marks the model
as quantized, so ``save_pretrained`` refuses it. The weights in memory are plain tensors by then: dropping the
quantizer marks lets the model save as a normal directory whose logits equal the GGUF model's.
"""

from __future__ import annotations

from pathlib import Path

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
CHECK_TEXT = "The quick brown fox jumps over the lazy dog."


def load_gguf(gguf_path: str | Path, dtype: torch.dtype = torch.float32):
    """The model and tokenizer a GGUF file holds, dequantized to ``dtype``."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=dtype, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name, local_files_only=True)
    return model.eval(), tokenizer


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: str = "float32") -> Path:
    """Save the GGUF's model, tokenizer and generation config to ``out_dir`` and check the saved copy.

    The check reloads ``out_dir`` and compares its logits on a fixed text with the GGUF model's (exactly equal in
    float32) and renders the chat template, if the tokenizer has one.
    """
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    out_dir = Path(out_dir)
    model, tokenizer = load_gguf(gguf_path, DTYPES[dtype])
    model.hf_quantizer = None
    model.config.quantization_config = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.is_quantized = False
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    check_conversion(model, out_dir)
    return out_dir


@torch.no_grad()
def check_conversion(reference_model, out_dir: str | Path) -> float:
    """Reload ``out_dir`` and return the largest logit difference to ``reference_model`` (raises when not equal)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    saved = AutoModelForCausalLM.from_pretrained(out_dir, dtype=reference_model.dtype, local_files_only=True).eval()
    ids = torch.tensor([tokenizer(CHECK_TEXT, add_special_tokens=False)["input_ids"]])
    difference = float((saved(input_ids=ids).logits - reference_model(input_ids=ids).logits).abs().max())
    if difference != 0.0:
        raise RuntimeError(f"{out_dir}: the saved model's logits differ from the GGUF model's by {difference:.3g}")
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False,
                                             add_generation_prompt=True)
        if "Hi" not in text:
            raise RuntimeError(f"{out_dir}: the chat template does not render the user's message")
    return difference
