"""A generic JSON-lines format for your own vote data.

One JSON object per line::

    {"uid": "a1", "text": "...", "votes": {"yes": 7, "no": 3}}
    {"uid": "a2", "text": "...", "label_counts": [2, 8], "majority": "no"}

``votes`` maps label names to counts (a missing label is 0); ``label_counts`` lists counts in the order of the
``labels`` option, which it requires. Without ``labels`` the label order is the sorted union of all ``votes`` keys
in the file, and the reader logs that set with each name's record count (a misspelled name would be a class of its
own); with ``labels`` any other name is an error. ``majority`` (optional) names the majority label and overrides the top vote. The text fields are
``text_fields`` (default ``["text"]``) and must cover the placeholders of ``task``'s prompt template.
"""

from __future__ import annotations

import logging
import string
from collections import Counter
from pathlib import Path
from typing import Optional, Sequence

from shala_pl.data.example import DataError, OnInvalid, ReadResult, RecordSink, VoteExample, check_votes, majority_index
from shala_pl.data.prompts import TASK_TEMPLATES
from shala_pl.data.sources.records import json_lines, require

log = logging.getLogger(__name__)


def read_jsonl(path: Path, *, on_invalid: OnInvalid = "error", labels: Optional[Sequence[str]] = None,
               task: str = "generic", text_fields: Sequence[str] = ("text",)) -> ReadResult:
    text_fields = _check_text_fields(task, text_fields)
    if labels is not None and (isinstance(labels, str) or not labels or len(set(labels)) != len(labels)):
        raise ValueError(f"labels must be a non-empty list of distinct names, got {labels!r}")
    sink = RecordSink(path, on_invalid)
    records = list(json_lines(path, sink))
    label_order = tuple(labels) if labels is not None else _vote_keys(records)
    if labels is None:
        log.warning("%s", found_labels_note(path, records))
    for line, record in records:
        try:
            example = _parse(record, path, line, label_order, labels is not None, task, text_fields)
        except DataError as error:
            sink.invalid(error)
            continue
        sink.add(example, line)
    return sink.finish()


def _check_text_fields(task: str, text_fields: Sequence[str]) -> tuple:
    if task not in TASK_TEMPLATES:
        raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASK_TEMPLATES)}")
    text_fields = (text_fields,) if isinstance(text_fields, str) else tuple(text_fields)
    needed = {name for _, name, _, _ in string.Formatter().parse(TASK_TEMPLATES[task]) if name}
    if not needed <= set(text_fields):
        raise ValueError(f"task {task!r} needs text fields {sorted(needed)}; text_fields is {list(text_fields)}")
    return text_fields


def _vote_keys(records: list[tuple[int, dict]]) -> tuple:
    return tuple(sorted({key for _, record in records if isinstance(record.get("votes"), dict)
                         for key in record["votes"]}))


def found_labels_note(path: Path, records: list[tuple[int, dict]]) -> str:
    """The label set read from the votes keys, each with the records naming it and its first line: without the
    ``labels`` option a misspelled name is a class of its own, and this is where it shows."""
    counts: Counter = Counter()
    first_line: dict[str, int] = {}
    for line, record in records:
        if isinstance(record.get("votes"), dict):
            for key in record["votes"]:
                counts[key] += 1
                first_line.setdefault(key, line)
    found = ", ".join(f"{key} ({counts[key]} record{'s' if counts[key] != 1 else ''}, first at line "
                      f"{first_line[key]})" for key in sorted(counts))
    return (f"{path}: no labels option, so the labels are the votes keys found: {found}; set "
            "data.source_options.labels to the intended names to have any other name rejected")


def _parse(record: dict, path: Path, line: int, labels: tuple, labels_given: bool, task: str,
           text_fields: tuple) -> VoteExample:
    uid = require(record, "uid", path, line, (str, int))
    fields = {name: require(record, name, path, line, str) for name in text_fields}
    votes = _votes(record, path, line, labels, labels_given)
    check_votes(votes, path, line, "votes" if "votes" in record else "label_counts")
    majority, is_tie = majority_index(votes)
    if record.get("majority") is not None:
        named = require(record, "majority", path, line, str)
        if named not in labels:
            raise DataError(path, line, "majority", f"unknown label {named!r}; labels are {list(labels)}",
                            "unknown_label")
        majority = labels.index(named)
    return VoteExample(uid=str(uid), task=task, fields=fields, labels=labels, votes=votes, majority=majority,
                       majority_is_tie=is_tie)


def _votes(record: dict, path: Path, line: int, labels: tuple, labels_given: bool) -> tuple:
    if ("votes" in record) == ("label_counts" in record):
        raise DataError(path, line, "votes", "give exactly one of 'votes' ({label: count}) or 'label_counts' ([...])",
                        "missing_field")
    if "votes" in record:
        votes = require(record, "votes", path, line, dict)
        unknown = sorted(set(votes) - set(labels))
        if unknown:
            raise DataError(path, line, "votes", f"unknown label(s) {unknown}; labels are {list(labels)}",
                            "unknown_label")
        return tuple(votes.get(label, 0) for label in labels)
    if not labels_given:
        raise ValueError(f"{path}:{line}: field 'label_counts' needs the labels option (the order of the counts)")
    counts = require(record, "label_counts", path, line, list)
    if len(counts) != len(labels):
        raise DataError(path, line, "label_counts", f"expected {len(labels)} counts for labels {list(labels)}, "
                        f"got {len(counts)}", "wrong_length")
    return tuple(counts)
