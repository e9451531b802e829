"""The DataModule: splits, prompts through the chat template, left-padded batches with vote tensors."""

from pathlib import Path

import pytest
import torch

from shala_pl.data.batch import VoteBatch
from shala_pl.data.datamodule import VoteDataModule
from shala_pl.data.prompts import PromptSettings

FIXTURES = Path(__file__).parents[1] / "fixtures"
SNLI = FIXTURES / "snli_1.0_test_part.jsonl"


def snli(tiny_model_dir, **kwargs):
    return VoteDataModule(source="snli", path=str(SNLI), tokenizer_path=str(tiny_model_dir), **kwargs)


def test_random_split_is_seeded_disjoint_and_complete(tiny_model_dir):
    data = snli(tiny_model_dir, val_fraction=0.1, test_fraction=0.2, split_seed=3)
    uids = {name: {ex.uid for ex in data.examples(name)} for name in ("train", "val", "test")}
    assert sum(len(u) for u in uids.values()) == 1277
    assert not (uids["train"] & uids["val"]) and not (uids["train"] & uids["test"]) and not (uids["val"] & uids["test"])
    again = snli(tiny_model_dir, val_fraction=0.1, test_fraction=0.2, split_seed=3)
    assert [e.uid for e in again.examples("val")] == [e.uid for e in data.examples("val")]


def test_distributed_nli_split_uses_the_first_hundred_as_dev(tiny_model_dir):
    data = snli(tiny_model_dir, split="distributed_nli")
    assert len(data.examples("train")) == 100 and data.examples("train") == data.examples("val")
    assert len(data.examples("test")) == 1177


def test_files_split_reads_validation_and_test_from_their_own_files(tiny_model_dir):
    data = VoteDataModule(source="msp_podcast", path=str(FIXTURES / "msp_podcast_json"), split="files",
                          source_options={}, val_options={"splits": ["Development"]},
                          test_options={"splits": ["Test1"]}, tokenizer_path=str(tiny_model_dir))
    assert len(data.examples("val")) < len(data.examples("train"))


def test_batches_are_left_padded_with_votes_majority_and_uids(tiny_model_dir):
    data = snli(tiny_model_dir, batch_size=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    ids, mask = batch.prompt_ids, batch.prompt_mask
    assert ids.shape == mask.shape and ids.shape[0] == 4
    assert (mask[:, -1] == 1).all(), "left padding: every prompt ends at the last position"
    pad = data.tokenizer.pad_token_id
    assert ((ids == pad) == (mask == 0)).all()
    assert torch.allclose(batch.human.sum(-1), torch.ones(4))
    assert torch.allclose(batch.human, batch.votes / batch.votes.sum(-1, keepdim=True))
    assert batch.majority.dtype == torch.long and len(batch.uid) == 4
    example = data.examples("train")[int(batch.index[0])]
    assert example.uid == batch.uid[0]


def test_the_batch_is_one_typed_object_that_lightning_moves_to_a_device(tiny_model_dir):
    """Lightning's transfer_batch_to_device moves every tensor field of the dataclass; the uids stay as they are."""
    from lightning.pytorch import LightningModule

    data = snli(tiny_model_dir, batch_size=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    assert isinstance(batch, VoteBatch)
    moved = LightningModule().transfer_batch_to_device(batch, torch.device("meta"), 0)
    assert isinstance(moved, VoteBatch) and moved.uid == batch.uid
    tensors = [name for name, value in vars(moved).items() if isinstance(value, torch.Tensor)]
    assert len(tensors) == 8 and all(getattr(moved, name).device.type == "meta" for name in tensors)
    assert batch.human.device.type == "cpu"  # a moved copy, the original untouched


def test_prompt_goes_through_the_chat_template_and_names_the_verbalizers(tiny_model_dir):
    data = snli(tiny_model_dir, prompt=PromptSettings(verbalizers={"entailment": "true", "contradiction": "false"}))
    assert data.verbalizers == [" true", " maybe", " false"]  # NLI's own word for the label not overridden
    data.setup("validate")
    text = data.tokenizer.decode(data._dataset("val")[0]["prompt_ids"])
    assert text.startswith("<|im_start|>user") and text.endswith("<|im_start|>assistant\nAnswer:")
    assert "Reply with one word: true, maybe, or false." in text and "Premise:" in text


def test_reasoning_prompts_ask_for_the_answer_tag(tiny_model_dir):
    data = snli(tiny_model_dir, prompt=PromptSettings(reasoning=True))
    data.setup("validate")
    assert "<answer></answer>" in data._dataset("val")[0]["prompt"]


def test_long_prompts_are_truncated_from_the_left_and_counted(tiny_model_dir):
    data = snli(tiny_model_dir, max_prompt_length=16)
    data.setup("validate")
    row = data._dataset("val")[0]
    assert len(row["prompt_ids"]) == 16
    assert data.tokenizer.decode(row["prompt_ids"]).endswith("<|im_start|>assistant\nAnswer:")
    assert data.n_truncated["val"] == len(data.examples("val"))


def test_unknown_verbalizer_labels_are_rejected(tiny_model_dir):
    data = snli(tiny_model_dir, prompt=PromptSettings(verbalizers={"perhaps": "maybe"}))
    with pytest.raises(ValueError, match="unknown labels"):
        data.verbalizers


def test_empty_split_is_an_error(tiny_model_dir):
    data = VoteDataModule(source="jsonl", path=str(FIXTURES / "generic_votes.jsonl"), val_fraction=0.0,
                          tokenizer_path=str(tiny_model_dir))
    with pytest.raises(ValueError, match="empty"):
        data.examples("train")


@pytest.mark.parametrize("split", ["test", "val", "train", "all"])
def test_predict_split_chooses_what_predict_serves(tiny_model_dir, split):
    data = snli(tiny_model_dir, predict_split=split)
    served = [uid for batch in data.predict_dataloader() for uid in batch.uid]
    every = [ex.uid for ex in data.examples("all")]
    assert served == ([ex.uid for ex in data.examples(split)] if split != "all" else every)
    assert len(every) == 1277 and len(set(every)) == 1277  # all: the whole file, in file order


def test_predict_split_all_of_separate_files_holds_each_uid_once(tiny_model_dir):
    data = VoteDataModule(source="msp_podcast", path=str(FIXTURES / "msp_podcast_json"), split="files",
                          source_options={}, val_options={"splits": ["Development"]},
                          test_options={"splits": ["Development"]}, tokenizer_path=str(tiny_model_dir))
    uids = [ex.uid for ex in data.examples("all")]
    assert len(uids) == len(set(uids)) == len({ex.uid for s in ("train", "val") for ex in data.examples(s)})


def test_tokenised_splits_are_cached_by_content(tiny_model_dir, tmp_path):
    first = snli(tiny_model_dir, cache_dir=str(tmp_path))
    first.setup("validate")
    files = sorted(p.name for p in tmp_path.glob("*.arrow"))
    assert len(files) == 1 and files[0].startswith("snli-val-")
    again = snli(tiny_model_dir, cache_dir=str(tmp_path))
    again.setup("validate")
    assert sorted(p.name for p in tmp_path.glob("*.arrow")) == files  # same rows, tokenizer, limit: same file
    assert again._dataset("val")["prompt_ids"] == first._dataset("val")["prompt_ids"]
    shorter = snli(tiny_model_dir, cache_dir=str(tmp_path), max_prompt_length=16)
    shorter.setup("validate")
    assert len(list(tmp_path.glob("*.arrow"))) == 2 and shorter.n_truncated["val"] > 0
