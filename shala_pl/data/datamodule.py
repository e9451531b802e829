"""One LightningDataModule for every vote-distribution source."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Literal, Optional

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader

from shala_pl.data.batch import VoteBatch
from shala_pl.data.example import DataError, OnInvalid, VoteExample
from shala_pl.data.prompts import PromptSettings, label_continuations, render_prompt, verbalizer_words
from shala_pl.data.sampling import EvalSampler, MarkPadding, ResumableDataLoader, TrainSampler, requires_lockstep
from shala_pl.data.sources import SOURCE_NAMES
from shala_pl.errors import ConfigValueError
from shala_pl import checks

log = logging.getLogger(__name__)

Split = Literal["random", "distributed_nli", "files"]
SourceName = Literal[SOURCE_NAMES]  # the registry's names: checked when the config is parsed, listed in --help
PredictSplit = Literal["test", "val", "train", "all"]
PREDICT_SPLITS = ("test", "val", "train", "all")


def seeded_parts(examples: list, seed: int, *fractions: float) -> list[list]:
    """``examples`` cut into disjoint parts of the given fractions (sizes rounded) plus the rest, chosen by a seeded
    shuffle; each part keeps file order."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    parts, start = [], 0
    for fraction in fractions:
        size = round(len(order) * fraction)
        parts.append(order[start : start + size])
        start += size
    parts.append(order[start:])
    return [[examples[i] for i in sorted(part)] for part in parts]


class VoteDataModule(LightningDataModule):
    """Serves tokenised prompts with their human vote distributions.

    Splits: ``random`` (seeded fractions of ``path``), ``distributed_nli`` (ChaosNLI convention: the first
    ``dev_size`` examples are the dev set, used for training and validation, the rest the test set) and ``files``
    (train from ``path``, validation/test from ``val_path``/``test_path`` or from ``path`` with
    ``val_options``/``test_options`` merged into ``source_options``, e.g. MSP-Podcast's ``splits``; with
    ``val_from_test`` > 0 the validation set is that seeded fraction of the test file instead, and the test set the
    rest, so the two never share an example).

    Batches: a ``VoteBatch`` (``shala_pl/data/batch.py``): ``prompt_ids``/``prompt_mask`` [B, L] left-padded,
    ``human`` [B, K] (p), ``votes`` [B, K], ``majority`` [B], ``multilabel`` [B, K], ``index`` [B] (position in the
    split), ``uid`` (list of str), ``is_padding`` [B].

    ``predict`` writes ``predict_split``: ``test`` (default), ``val``, ``train``, or ``all`` (every example read, in
    file order, each uid once: what ``shala_pl.commands.evaluate`` expects when given the whole data file).
    """

    def __init__(
        self,
        source: SourceName,
        path: Optional[str] = None,
        source_options: Optional[dict] = None,
        split: Split = "random",
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        split_seed: int = 0,
        dev_size: int = 100,
        val_path: Optional[str] = None,
        test_path: Optional[str] = None,
        val_options: Optional[dict] = None,
        test_options: Optional[dict] = None,
        val_from_test: float = 0.0,
        tokenizer_path: str = "",
        tokenizer_trust_remote_code: bool = False,
        tokenizer_from_hub: bool = False,
        prompt: PromptSettings = PromptSettings(),
        max_prompt_length: int = 512,
        batch_size: int = 8,
        eval_batch_size: int = 32,
        on_invalid: OnInvalid = "error",
        num_workers: int = 0,
        cache_dir: Optional[str] = None,
        predict_split: PredictSplit = "test",
    ):
        super().__init__()
        self.source, self.path = source, path
        self.source_options = dict(source_options or {})
        self.split, self.val_fraction, self.test_fraction = split, val_fraction, test_fraction
        self.split_seed, self.dev_size = split_seed, dev_size
        self.val_path, self.test_path = val_path, test_path
        self.val_options, self.test_options = dict(val_options or {}), dict(test_options or {})
        self.val_from_test = val_from_test
        if val_from_test and val_path:
            raise ConfigValueError("data.val_from_test takes the validation set from the test file: leave out "
                                   f"data.val_path (got {val_path!r})")
        self.tokenizer_path, self.prompt = tokenizer_path, prompt
        # linked by the CLI from model.trust_remote_code / model.from_hub, like tokenizer_path from model.name_or_path
        self.tokenizer_trust_remote_code, self.tokenizer_from_hub = tokenizer_trust_remote_code, tokenizer_from_hub
        self.max_prompt_length, self.batch_size, self.eval_batch_size = max_prompt_length, batch_size, eval_batch_size
        self.on_invalid, self.num_workers, self.cache_dir = on_invalid, num_workers, cache_dir
        self.predict_split = predict_split
        self._check_values()
        self.splits: dict[str, list[VoteExample]] = {}
        self.skipped: Counter = Counter()
        self.n_truncated: Counter = Counter()
        self._datasets: dict = {}
        self._tokenizer = None

    def _check_values(self) -> None:
        """At construction, i.e. when the CLI instantiates the config: each message names the option."""
        for name in ("batch_size", "eval_batch_size", "max_prompt_length", "dev_size"):
            checks.positive_int(f"data.{name}", getattr(self, name))
        checks.non_negative_int("data.num_workers", self.num_workers)
        for name in ("val_fraction", "test_fraction", "val_from_test"):
            checks.fraction_below_one(f"data.{name}", getattr(self, name))
        checks.require(self.val_fraction + self.test_fraction < 1, "data.val_fraction + data.test_fraction",
                       "below 1 (the rest is the training set)", self.val_fraction + self.test_fraction)
        checks.one_of("data.split", self.split, ("random", "distributed_nli", "files"))
        checks.one_of("data.predict_split", self.predict_split, PREDICT_SPLITS)
        checks.one_of("data.on_invalid", self.on_invalid, ("error", "skip"))

    # -- what the data decides (linked into the model by the CLI) --------------------------------------------------
    @property
    def label_names(self) -> list[str]:
        return list(self.examples("train")[0].labels)

    @property
    def verbalizers(self) -> list[str]:
        """What the model says for each label right after the prompt (linked into the model)."""
        task = self.examples("train")[0].task
        return label_continuations(verbalizer_words(self.label_names, self.prompt, task), self.prompt, task)

    @property
    def has_multilabel(self) -> bool:
        return self.examples("train")[0].multilabel_target is not None

    @property
    def num_train_examples(self) -> int:
        return len(self.examples("train"))

    @property
    def tokenizer(self):
        """The model's tokenizer, loaded the one way the model loads it (left padding, a pad token)."""
        if self._tokenizer is None:
            from shala_pl.models.loading import load_tokenizer

            if not self.tokenizer_path:
                raise ConfigValueError("data.tokenizer_path is empty: set model.name_or_path (the CLI links it here)")
            self._tokenizer = load_tokenizer(self.tokenizer_path, self.tokenizer_trust_remote_code,
                                             self.tokenizer_from_hub)
        return self._tokenizer

    # -- reading and splitting -------------------------------------------------------------------------------------
    def _read(self, path, extra_options: dict) -> list[VoteExample]:
        from shala_pl.data.sources import load_source

        try:
            result = load_source(self.source, path, on_invalid=self.on_invalid,
                                 **{**self.source_options, **extra_options})
        except DataError:
            raise
        except (ValueError, TypeError, FileNotFoundError) as error:
            # the registry's own checks: unknown source, option or missing path, all fixed in the data section
            raise ConfigValueError(f"data (source {self.source!r}): {error}") from error
        if result.skipped:
            log.warning("%s %s: skipped %s", self.source, path, dict(result.skipped))
            self.skipped.update(result.skipped)
        return result.examples

    def _load_splits(self) -> None:
        if self.split == "files":
            test = self._read(self.test_path or self.path, self.test_options)
            if self.val_from_test:
                val, test = seeded_parts(test, self.split_seed, self.val_from_test)
            else:
                val = self._read(self.val_path or self.path, self.val_options)
            self.splits = {"train": self._read(self.path, {}), "val": val, "test": test}
            every: dict[str, VoteExample] = {}
            for example in self.splits["train"] + self.splits["val"] + self.splits["test"]:
                every.setdefault(example.uid, example)
            self.splits["all"] = list(every.values())
        elif self.split == "distributed_nli":
            examples = self._read(self.path, {})
            dev, test = examples[: self.dev_size], examples[self.dev_size :]
            self.splits = {"train": dev, "val": dev, "test": test, "all": examples}
        elif self.split == "random":
            examples = self._read(self.path, {})
            val, test, train = seeded_parts(examples, self.split_seed, self.val_fraction, self.test_fraction)
            self.splits = {"val": val, "test": test, "train": train, "all": examples}
        else:
            raise ConfigValueError(f"data.split must be random, distributed_nli or files; got {self.split!r}")
        empty = [name for name, split in self.splits.items() if not split]
        if empty:
            raise ConfigValueError(f"split(s) {empty} of {self.source} {self.path} are empty; adjust data.split, "
                                   "data.val_fraction/test_fraction/val_from_test or data.dev_size")

    def examples(self, split: str) -> list[VoteExample]:
        if not self.splits:
            self._load_splits()
        return self.splits[split]

    # -- tokenisation ------------------------------------------------------------------------------------------------
    def _dataset(self, split: str):
        if split in self._datasets:
            return self._datasets[split]
        from datasets import Dataset

        examples = self.examples(split)
        words = self.verbalizers
        rows = [
            {
                "uid": ex.uid,
                "index": i,
                "prompt": render_prompt(ex.task, ex.fields, words, self.prompt, self.tokenizer),
                "votes": [float(v) for v in ex.votes],
                "majority": ex.majority,
                "multilabel": [float(v) for v in (ex.multilabel_target or [0] * len(ex.labels))],
            }
            for i, ex in enumerate(examples)
        ]
        dataset = Dataset.from_list(rows)
        tokenizer, limit = self.tokenizer, self.max_prompt_length

        def tokenize(batch):
            ids = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
            return {"prompt_ids": [x[-limit:] for x in ids], "truncated": [len(x) > limit for x in ids]}

        # Our own key for the tokenised rows (datasets' public new_fingerprint): the rendered prompts, the tokenizer's
        # folder and the length limit decide the result; datasets would otherwise hash the closure.
        key = hashlib.sha256(json.dumps([rows, str(Path(self.tokenizer_path).resolve()), limit]).encode()).hexdigest()
        cache_file = None
        if self.cache_dir:
            Path(self.cache_dir).mkdir(parents=True, exist_ok=True)
            cache_file = str(Path(self.cache_dir) / f"{self.source}-{split}-{key[:16]}.arrow")
        dataset = dataset.map(tokenize, batched=True, cache_file_name=cache_file, new_fingerprint=key[:32],
                              desc=f"tokenising {split}")
        n_truncated = sum(dataset["truncated"])
        if n_truncated:
            log.warning("%s/%s: %d prompts longer than %d tokens were truncated from the left",
                        self.source, split, n_truncated, limit)
        self.n_truncated[split] = n_truncated
        self._datasets[split] = dataset
        return dataset

    def setup(self, stage: Optional[str] = None) -> None:
        needed = {"fit": ["train", "val"], "validate": ["val"], "test": ["test"], "predict": [self.predict_split]}
        for split in needed.get(stage, ["train", "val", "test"]):
            self._dataset(split)

    def collate(self, rows: list[dict]) -> VoteBatch:
        pad_id = self.tokenizer.pad_token_id
        length = max(len(r["prompt_ids"]) for r in rows)
        ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for row, r in enumerate(rows):
            n = len(r["prompt_ids"])
            ids[row, length - n :] = torch.tensor(r["prompt_ids"], dtype=torch.long)
            mask[row, length - n :] = 1
        votes = torch.tensor([r["votes"] for r in rows], dtype=torch.float32)
        return VoteBatch(
            prompt_ids=ids,
            prompt_mask=mask,
            votes=votes,
            human=votes / votes.sum(-1, keepdim=True),
            majority=torch.tensor([r["majority"] for r in rows], dtype=torch.long),
            multilabel=torch.tensor([r["multilabel"] for r in rows], dtype=torch.float32),
            index=torch.tensor([r["index"] for r in rows], dtype=torch.long),
            uid=[r["uid"] for r in rows],
            is_padding=torch.tensor([bool(r.get("is_padding", False)) for r in rows], dtype=torch.bool),
        )

    def _loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        """Training (``shuffle=True``): a seeded, resumable, rank-sharded loader. Evaluation: contiguous shards
        without duplicated examples (see ``shala_pl.data.sampling``). Rank and world size come from
        ``torch.distributed``, so this works the same under Lightning and without it."""
        dataset = self._dataset(split)
        if shuffle:
            sampler = TrainSampler(dataset, shuffle=True, seed=self.sampling_seed())
            return ResumableDataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=self.collate,
                                       num_workers=self.num_workers)
        lockstep = requires_lockstep(getattr(self.trainer, "strategy", None))
        sampler = EvalSampler(dataset, lockstep=lockstep)
        return DataLoader(MarkPadding(dataset) if lockstep else dataset, batch_size=batch_size, sampler=sampler,
                          collate_fn=self.collate, num_workers=self.num_workers,
                          generator=torch.Generator().manual_seed(0))  # evaluation never draws from the global RNG

    def sampling_seed(self) -> int:
        """The training order's seed: ``seed_everything``'s (``PL_GLOBAL_SEED``, the same on every rank), else
        ``split_seed``. Never the global RNG, so the order is reproducible and resumable."""
        return int(os.environ.get("PL_GLOBAL_SEED", self.split_seed))

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.eval_batch_size, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, self.eval_batch_size, shuffle=False)
