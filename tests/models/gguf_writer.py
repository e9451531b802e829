"""Write a real GGUF file from a tiny Hugging Face Llama, the way llama.cpp's ``convert_hf_to_gguf.py`` lays it out.

A test helper (no tests here): the GGUF conversion path is checked on a file made offline, in a second, instead of a
downloaded one. What is written is what transformers' GGUF loader reads back for a ``llama`` file:

* metadata under llama.cpp's key names (``llama.embedding_length``, ``llama.attention.head_count``, ...);
* the byte-level BPE tokenizer as ``tokenizer.ggml.*``: ``model = "gpt2"``, tokens in id order, token types (special
  tokens CONTROL), merges, bos/eos/pad ids and the chat template;
* the weights under GGUF tensor names, with ``attn_q``/``attn_k`` rows permuted as llama.cpp permutes them (the
  loader reverses it), the tied output projection left out (the loader ties it back), in F32 or with the matrices
  quantized (Q8_0 by default) so the loader's dequantization is exercised.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

# HF parameter name (per layer, after ``model.layers.N.``) -> GGUF tensor name (after ``blk.N.``)
LAYER_TENSORS = {
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GLOBAL_TENSORS = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}


def permute_rows(weights: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k permutation: each head's rotary halves interleaved (``LlamaModel.permute``)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def gguf_tensors(model) -> dict[str, np.ndarray]:
    """The model's weights as float32 arrays under their GGUF names, q/k permuted."""
    config = model.config
    state = {name: tensor.detach().float().numpy() for name, tensor in model.state_dict().items()}
    tensors = {gguf: state[hf] for hf, gguf in GLOBAL_TENSORS.items()}
    for layer in range(config.num_hidden_layers):
        for hf, gguf in LAYER_TENSORS.items():
            weights = state[f"model.layers.{layer}.{hf}"]
            if gguf == "attn_q.weight":
                weights = permute_rows(weights, config.num_attention_heads)
            elif gguf == "attn_k.weight":
                weights = permute_rows(weights, config.num_key_value_heads)
            tensors[f"blk.{layer}.{gguf}"] = weights
    if not config.tie_word_embeddings:
        tensors["output.weight"] = state["lm_head.weight"]
    return tensors


def tokenizer_fields(tokenizer) -> dict:
    """What ``tokenizer.ggml.*`` holds for a byte-level BPE tokenizer: tokens, types, merges."""
    import gguf

    vocab = tokenizer.get_vocab()
    by_id = {index: token for token, index in vocab.items()}
    assert sorted(by_id) == list(range(len(by_id))), "token ids must be contiguous"
    tokens = [by_id[index] for index in range(len(by_id))]
    special = set(tokenizer.all_special_tokens) | {
        token.content for token in tokenizer.added_tokens_decoder.values() if token.special}
    types = [int(gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL) for token in tokens]
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in merges]
    return {"tokens": tokens, "types": types, "merges": merges}


def write_gguf(model_dir: str | Path, out_path: str | Path, quantize: str | None = None) -> Path:
    """Write the Llama saved in ``model_dir`` (and its tokenizer) to the GGUF file ``out_path``.

    ``quantize`` names a ggml type (``"Q8_0"``) the 2-D weight matrices are stored in; norms stay F32, as in
    llama.cpp's files. ``None`` keeps every tensor F32, so a loader must reproduce the model's weights bit for bit.
    """
    import gguf
    from gguf.quants import quantize as quantize_array
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir, out_path = Path(model_dir), Path(out_path)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = model.config
    if config.model_type != "llama":
        raise ValueError(f"write_gguf writes llama files only, got {config.model_type!r}")
    qtype = getattr(gguf.GGMLQuantizationType, quantize) if quantize else None

    writer = gguf.GGUFWriter(out_path, "llama")
    writer.add_name(model_dir.name)
    file_type = gguf.LlamaFileType.ALL_F32 if qtype is None else getattr(gguf.LlamaFileType, f"MOSTLY_{quantize}")
    writer.add_file_type(file_type)
    if qtype is not None:
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {"rope_theta": config.rope_theta}
    writer.add_vocab_size(config.vocab_size)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)

    fields = tokenizer_fields(tokenizer)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(fields["tokens"])
    writer.add_token_types(fields["types"])
    writer.add_token_merges(fields["merges"])
    if config.bos_token_id is not None:
        writer.add_bos_token_id(config.bos_token_id)
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)  # the tiny tokenizer adds no BOS: encodings must match
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

    for name, weights in gguf_tensors(model).items():
        if qtype is not None and weights.ndim == 2:
            writer.add_tensor(name, quantize_array(weights, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(name, np.ascontiguousarray(weights, dtype=np.float32))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out_path
