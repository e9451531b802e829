"""SNLI 1.0 and MultiNLI 1.0 JSONL: the original 5 (dev/test) or 1 (train) annotator labels per pair.

Pairs whose ``gold_label`` is ``"-"`` (no 3-of-5 agreement) are kept: their split votes are the point.
"""

from __future__ import annotations

from pathlib import Path

from shala_pl.data.example import DataError, OnInvalid, ReadResult, VoteExample, check_votes, majority_index
from shala_pl.data.sources.records import read_json_lines, require

NLI_LABELS = ("entailment", "neutral", "contradiction")
NO_GOLD = "-"


def read_nli(path: Path, *, on_invalid: OnInvalid = "error") -> ReadResult:
    return read_json_lines(path, on_invalid, lambda record, line: parse_nli_record(record, path, line))


def parse_nli_record(record: dict, path: Path, line: int) -> VoteExample:
    uid = require(record, "pairID", path, line, (str, int))
    annotator_labels = require(record, "annotator_labels", path, line, list)
    unknown = [label for label in annotator_labels if label not in NLI_LABELS]
    if unknown:
        raise DataError(path, line, "annotator_labels", f"unknown label(s) {unknown}; expected {list(NLI_LABELS)}",
                        "unknown_label")
    votes = tuple(annotator_labels.count(label) for label in NLI_LABELS)
    check_votes(votes, path, line, "annotator_labels")
    gold = require(record, "gold_label", path, line, str)
    if gold != NO_GOLD and gold not in NLI_LABELS:
        raise DataError(path, line, "gold_label", f"unknown label {gold!r}; expected {list(NLI_LABELS)} or '-'",
                        "unknown_label")
    # a tie (e.g. 2-2-1) is broken by the source's gold label when it names one, else by label order
    preferred = NLI_LABELS.index(gold) if gold in NLI_LABELS else None
    majority, is_tie = majority_index(votes, preferred)
    fields = {
        "premise": require(record, "sentence1", path, line, str),
        "hypothesis": require(record, "sentence2", path, line, str),
    }
    return VoteExample(uid=str(uid), task="nli", fields=fields, labels=NLI_LABELS, votes=votes, majority=majority,
                       majority_is_tie=is_tie)
