"""Answers end at the first of any end-of-sequence id: the generation config may list several (Llama-3, Gemma)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from shala_pl.rl.rollout import RolloutSettings, completion_mask_from_eos, end_token_ids, generate_answers


def test_mask_ends_at_the_first_of_several_end_ids():
    ids = torch.tensor([[5, 7, 3, 9], [5, 3, 7, 9], [5, 6, 8, 9]])
    assert completion_mask_from_eos(ids, [3, 7]).tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]
    assert completion_mask_from_eos(ids, 3).tolist() == [[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


@pytest.fixture(scope="module")
def model_and_tokenizer(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir, padding_side="left")
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(), tokenizer


def test_end_ids_join_the_generation_config_and_the_tokenizer(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    eos = tokenizer.eos_token_id
    model.generation_config.eos_token_id = [11, 12]
    assert end_token_ids(model, tokenizer) == [11, 12, eos]
    model.generation_config.eos_token_id = eos
    assert end_token_ids(model, tokenizer) == [eos]


def test_sampling_stops_on_every_end_id_of_the_generation_config(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = tokenizer(["Premise: a cat. Answer:", "Which label fits?"], return_tensors="pt", padding=True)
    with torch.no_grad():
        first = model(**prompts).logits[:, -1].argmax(-1)  # [B] each prompt's most likely first answer token
    assert not torch.isin(first, torch.tensor(tokenizer.eos_token_id)).any()
    settings = RolloutSettings(mode="generate", max_new_tokens=8, top_p=1e-6)  # the nucleus is the top token
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, *first.tolist()]
    ids, mask = generate_answers(model, tokenizer, prompts["input_ids"], prompts["attention_mask"], settings, 3)
    # every answer is that one end token: sampling stopped at once and the mask holds only it
    assert ids.shape == (6, 1)
    assert ids.squeeze(1).tolist() == first.repeat_interleave(3).tolist()
    assert mask.tolist() == [[1]] * 6
