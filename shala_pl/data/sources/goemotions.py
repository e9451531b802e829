"""GoEmotions raw per-rater CSVs (Demszky et al., ACL 2020): ``goemotions_1.csv`` ... ``goemotions_3.csv``.

One row per rater per Reddit comment; rows are grouped by the comment ``id`` across all files read. Each rater
casts one vote, split evenly over the labels it marked (after mapping emotions to the chosen taxonomy's groups, so a
rater marking joy and love casts one whole ``joy`` vote under ``ekman``). Rows flagged ``example_very_unclear`` are
dropped and counted (reason ``very_unclear``); a comment left with no rows is counted too (``all_rows_very_unclear``).
A second row of the same rater on a comment (``duplicate_rater``) and a row whose text differs from the first row
under its id (``conflicting_text``) are bad records: an error, or skipped and counted with ``on_invalid: skip``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Literal, Optional

from shala_pl.data.example import DataError, OnInvalid, ReadResult, RecordSink, VoteExample, majority_index
from shala_pl.data.sources.records import csv_rows

Taxonomy = Literal["full", "ekman", "sentiment"]

EMOTIONS = (
    "admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity", "desire",
    "disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear", "gratitude", "grief", "joy",
    "love", "nervousness", "optimism", "pride", "realization", "relief", "remorse", "sadness", "surprise", "neutral",
)
METADATA_COLUMNS = ("text", "id", "author", "subreddit", "link_id", "parent_id", "created_utc", "rater_id",
                    "example_very_unclear")

# group name -> the GoEmotions emotions it gathers; dict order is label order
TAXONOMIES: dict[str, dict[str, tuple[str, ...]]] = {
    "full": {emotion: (emotion,) for emotion in EMOTIONS},
    "ekman": {
        "anger": ("anger", "annoyance", "disapproval"),
        "disgust": ("disgust",),
        "fear": ("fear", "nervousness"),
        "joy": ("joy", "amusement", "approval", "excitement", "gratitude", "love", "optimism", "relief", "pride",
                "admiration", "desire", "caring"),
        "sadness": ("sadness", "disappointment", "embarrassment", "grief", "remorse"),
        "surprise": ("surprise", "realization", "confusion", "curiosity"),
        "neutral": ("neutral",),
    },
    "sentiment": {
        "positive": ("amusement", "excitement", "joy", "love", "desire", "optimism", "caring", "pride", "admiration",
                     "gratitude", "relief", "approval"),
        "negative": ("fear", "nervousness", "remorse", "embarrassment", "disappointment", "sadness", "grief",
                     "disgust", "anger", "annoyance", "disapproval"),
        "ambiguous": ("realization", "surprise", "curiosity", "confusion"),
        "neutral": ("neutral",),
    },
}
FILE_PATTERN = "goemotions_*.csv"
_TRUE, _FALSE = "true", "false"


@dataclass
class _Comment:
    text: str
    file: Path
    line: int  # where its first row starts
    rater_groups: list = field(default_factory=list)  # per clear rater: the frozenset of groups it marked
    rater_rows: dict = field(default_factory=dict)  # rater_id -> "file:line" of its row


def read_goemotions(path: Path, *, on_invalid: OnInvalid = "error", taxonomy: Taxonomy = "full") -> ReadResult:
    """``path`` is one CSV file or a folder of ``goemotions_*.csv`` files (read in sorted order)."""
    if taxonomy not in TAXONOMIES:
        raise ValueError(f"unknown GoEmotions taxonomy {taxonomy!r}; expected one of {sorted(TAXONOMIES)}")
    groups = TAXONOMIES[taxonomy]
    group_of = {emotion: group for group, members in groups.items() for emotion in members}
    labels = tuple(groups)
    sink = RecordSink(path, on_invalid)
    comments: dict[str, _Comment] = {}
    for file in goemotions_files(Path(path)):
        for line, row in csv_rows(file, sink, METADATA_COLUMNS + EMOTIONS):
            try:
                uid, unclear, marked = _parse_rater_row(row, file, line)
            except DataError as error:
                sink.invalid(error)
                continue
            comment = comments.setdefault(uid, _Comment(row["text"], file, line))
            error = _repeated_row(comment, uid, row, file, line)
            if error is not None:
                sink.invalid(error)
                continue
            comment.rater_rows[row["rater_id"]] = f"{file}:{line}"
            if unclear:
                sink.skip("very_unclear")
            else:
                comment.rater_groups.append(frozenset(group_of[emotion] for emotion in marked))
    for uid, comment in comments.items():
        if not comment.rater_groups:
            sink.skip("all_rows_very_unclear")
            continue
        sink.add(_comment_example(uid, comment, labels), comment.line)
    return sink.finish()


def _repeated_row(comment: _Comment, uid: str, row: dict[str, str], file: Path, line: int) -> Optional[DataError]:
    """A row that would count a rater twice, or put a second text under the comment's id."""
    if row["text"] != comment.text:
        return DataError(file, line, "text", f"comment id {uid} has a different text at {comment.file}:"
                         f"{comment.line} (two comments under one id?)", "conflicting_text")
    if row["rater_id"] in comment.rater_rows:
        return DataError(file, line, "rater_id", f"rater {row['rater_id']} already rated comment {uid} at "
                         f"{comment.rater_rows[row['rater_id']]} (one vote per rater)", "duplicate_rater")
    return None


def goemotions_files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    files = sorted(path.glob(FILE_PATTERN))
    if not files:
        raise FileNotFoundError(f"no {FILE_PATTERN} files in the folder {path}")
    return files


def _parse_rater_row(row: dict[str, str], path: Path, line: int) -> tuple[str, bool, list[str]]:
    """``(comment id, very unclear?, emotions marked)`` of one rater's row."""
    uid = row["id"].strip()
    if not uid:
        raise DataError(path, line, "id", "empty comment id", "missing_field")
    unclear = row["example_very_unclear"].strip().lower()
    if unclear not in (_TRUE, _FALSE):
        raise DataError(path, line, "example_very_unclear", f"expected True or False, got {unclear!r}", "bad_value")
    for emotion in EMOTIONS:
        if row[emotion] not in ("0", "1"):
            raise DataError(path, line, emotion, f"expected 0 or 1, got {row[emotion]!r}", "bad_value")
    marked = [emotion for emotion in EMOTIONS if row[emotion] == "1"]
    if unclear == _FALSE and not marked:
        raise DataError(path, line, "emotions", f"rater {row['rater_id']} marked no emotion (all 28 columns are 0)",
                        "no_emotion")
    return uid, unclear == _TRUE, marked


def _comment_example(uid: str, comment: _Comment, labels: tuple) -> VoteExample:
    # exact fractions so that equal shares compare equal when looking for ties
    shares = dict.fromkeys(labels, Fraction(0))
    raters = dict.fromkeys(labels, 0)
    for marked in comment.rater_groups:
        for group in marked:
            shares[group] += Fraction(1, len(marked))
            raters[group] += 1
    votes = tuple(float(shares[label]) for label in labels)
    majority, is_tie = majority_index(votes)
    return VoteExample(uid=uid, task="emotion_reddit", fields={"text": comment.text}, labels=labels, votes=votes,
                       majority=majority, majority_is_tie=is_tie,
                       multilabel_target=tuple(int(raters[label] >= 2) for label in labels))
