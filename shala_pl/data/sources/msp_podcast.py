"""MSP-Podcast (Lotfian & Busso; MSP lab, UT Dallas): per-annotator emotion classes for podcast segments.

``path`` is the release folder::

    Labels/labels_consensus.csv   FileName,EmoClass,EmoAct,EmoVal,EmoDom,SpkrID,Gender,Split_Set
    Labels/labels_detailed.json   {"<file>.wav": {"<worker>": {"EmoClass_Major": "Angry", ...}}}
      or, without the JSON,
    Labels/labels_detailed.csv    FileName,EmoDetail  ("WORKER; Major class; secondary; A:..; V:..; D:..;")
    Transcripts/<name>.txt        the text of <name>.wav

Each annotator's major class is one vote. "Other-..." votes are kept as a 9th class ``other`` with
``keep_other=True``; otherwise each is dropped and counted (reason ``other_vote``), and a segment left without votes
is skipped (``only_other_votes``). A worker answering a segment twice (a repeated CSV row, ``duplicate_rater``) or
a key given twice in the JSON (``repeated_key``; ``json`` alone would keep the last silently) is a bad record; under
``on_invalid: skip`` the first answer is kept and the other counted.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple, Optional, Sequence

from shala_pl.data.example import DataError, OnInvalid, ReadResult, RecordSink, VoteExample, majority_index
from shala_pl.data.sources.records import JsonObject, csv_rows, read_text, repeated_key_line

CLASSES = ("angry", "sad", "happy", "surprise", "fear", "disgust", "contempt", "neutral")
OTHER = "other"
# consensus EmoClass code -> class; X means the annotators did not agree
CONSENSUS_CODES = {"A": "angry", "S": "sad", "H": "happy", "U": "surprise", "F": "fear", "D": "disgust",
                   "C": "contempt", "N": "neutral", "O": OTHER, "X": None}
SPLITS = ("Train", "Development", "Test1", "Test2", "Test3")
CONSENSUS_COLUMNS = ("FileName", "EmoClass", "EmoAct", "EmoVal", "EmoDom", "SpkrID", "Gender", "Split_Set")


class _Answer(NamedTuple):
    """One annotator's raw major class and where it was read."""

    worker: str
    major: str
    path: Path
    line: Optional[int]  # None in the JSON variant
    field: str


def read_msp_podcast(path: Path, *, on_invalid: OnInvalid = "error", splits: Optional[Sequence[str]] = None,
                     keep_other: bool = False) -> ReadResult:
    """``splits``: the ``Split_Set`` values to keep (default all)."""
    root = Path(path)
    kept_splits = _check_splits(splits)
    consensus = root / "Labels" / "labels_consensus.csv"
    if not consensus.is_file():
        raise FileNotFoundError(f"MSP-Podcast consensus labels not found: {consensus}")
    sink = RecordSink(consensus, on_invalid)
    answers, answers_path = _read_detailed(root / "Labels", sink)
    release = _Release(root, consensus, answers, answers_path, CLASSES + (OTHER,) if keep_other else CLASSES, sink)
    n_in_splits = 0
    for line, row in csv_rows(consensus, sink, CONSENSUS_COLUMNS):
        if kept_splits is not None and row["Split_Set"] not in kept_splits:
            continue
        n_in_splits += 1
        try:
            example = release.segment_example(row, line)
        except DataError as error:
            sink.invalid(error)
            continue
        if example is not None:
            sink.add(example, line)
    if kept_splits is not None and not n_in_splits:
        raise ValueError(f"{consensus}: no segment has a Split_Set in {sorted(kept_splits)}")
    return sink.finish()


def _check_splits(splits: Optional[Sequence[str]]) -> Optional[set]:
    if splits is None:
        return None
    splits = [splits] if isinstance(splits, str) else list(splits)
    unknown = [name for name in splits if name not in SPLITS]
    if unknown:
        raise ValueError(f"unknown MSP-Podcast split(s) {unknown}; Split_Set values are {list(SPLITS)}")
    return set(splits)


@dataclass
class _Release:
    root: Path
    consensus: Path
    answers: dict[str, list[_Answer]]  # FileName -> its annotators' answers
    answers_path: Path
    labels: tuple
    sink: RecordSink

    def segment_example(self, row: dict, line: int) -> Optional[VoteExample]:
        """The segment's example, or None when it is skipped for lack of (non-"Other") votes."""
        file_name = row["FileName"].strip()
        if not file_name:
            raise DataError(self.consensus, line, "FileName", "empty file name", "missing_field")
        code = row["EmoClass"].strip()
        if code not in CONSENSUS_CODES:
            raise DataError(self.consensus, line, "EmoClass",
                            f"{file_name}: unknown class code {code!r}; expected one of {list(CONSENSUS_CODES)}",
                            "unknown_label")
        if file_name not in self.answers:
            raise DataError(self.consensus, line, "FileName",
                            f"no per-annotator labels for {file_name} in {self.answers_path}", "no_annotations")
        counts: Counter = Counter()
        n_other = 0
        for answer in self.answers[file_name]:
            try:
                vote = _vote_class(answer, file_name)
            except DataError as error:
                self.sink.invalid(error)
                continue
            if vote == OTHER and OTHER not in self.labels:
                self.sink.skip("other_vote")
                n_other += 1
            else:
                counts[vote] += 1
        votes = tuple(counts[label] for label in self.labels)
        if sum(votes) == 0:
            self.sink.skip("only_other_votes" if n_other else "no_valid_votes")
            return None
        consensus_class = CONSENSUS_CODES[code]
        preferred = self.labels.index(consensus_class) if consensus_class in self.labels else None
        majority, is_tie = majority_index(votes, preferred)
        return VoteExample(uid=file_name, task="emotion_podcast",
                           fields={"transcript": self.transcript(file_name, line)}, labels=self.labels, votes=votes,
                           majority=majority, majority_is_tie=is_tie)

    def transcript(self, file_name: str, line: int) -> str:
        path = self.root / "Transcripts" / (Path(file_name).stem + ".txt")
        if not path.is_file():
            raise DataError(self.consensus, line, "transcript", f"{file_name}: missing transcript {path}",
                            "missing_transcript")
        text = read_text(path).strip()
        if not text:
            raise DataError(self.consensus, line, "transcript", f"{file_name}: empty transcript {path}",
                            "empty_transcript")
        return text


def _vote_class(answer: _Answer, file_name: str) -> str:
    major = answer.major.strip().lower()
    if major == OTHER or major.startswith(OTHER + "-"):
        return OTHER
    if major not in CLASSES:
        raise DataError(answer.path, answer.line, answer.field,
                        f"{file_name}, worker {answer.worker}: unknown emotion class {answer.major!r}; "
                        f"expected one of {[c.capitalize() for c in CLASSES]} or Other-...", "unknown_label")
    return major


# -- per-annotator labels -----------------------------------------------------------------------------------------

def _read_detailed(labels_dir: Path, sink: RecordSink) -> tuple[dict[str, list[_Answer]], Path]:
    """``({FileName: answers}, the file read)``; the JSON when present, else the CSV."""
    json_path, csv_path = labels_dir / "labels_detailed.json", labels_dir / "labels_detailed.csv"
    if json_path.is_file():
        return _answers_from_json(json_path, sink), json_path
    if csv_path.is_file():
        return _answers_from_csv(csv_path, sink), csv_path
    raise FileNotFoundError(f"MSP-Podcast per-annotator labels not found: neither {json_path} nor {csv_path}")


def _answers_from_json(path: Path, sink: RecordSink) -> dict[str, list[_Answer]]:
    text = read_text(path)
    try:
        data = json.loads(text, object_pairs_hook=JsonObject)
    except json.JSONDecodeError as error:
        # one JSON document: nothing after a syntax error can be trusted, so this raises whatever on_invalid says
        raise DataError(path, error.lineno, None, f"malformed JSON: {error.msg}", "malformed_json") from error
    if not isinstance(data, dict):
        raise DataError(path, None, None, "expected an object keyed by file name", "malformed_json")

    def repeated(key_path: tuple, what: str) -> None:  # a repeated key: the first value is kept (or none, on error)
        sink.invalid(DataError(path, repeated_key_line(text, key_path), "/".join(key_path),
                               f"{what} appears twice (which one is meant?)", "repeated_key"))

    for file_name in data.repeated:
        repeated((file_name,), f"the segment {file_name}")
    answers: dict[str, list[_Answer]] = {}
    for file_name, workers in data.items():
        if not isinstance(workers, dict):
            sink.invalid(DataError(path, None, file_name, "expected an object keyed by worker", "malformed_json"))
            continue
        for worker in workers.repeated:
            repeated((file_name, worker), f"{file_name}: worker {worker}")
        answers[file_name] = []
        for worker, answer in workers.items():
            major = answer.get("EmoClass_Major") if isinstance(answer, dict) else None
            if isinstance(answer, JsonObject) and answer.repeated:
                repeated((file_name, worker, answer.repeated[0]), f"{file_name}, worker {worker}: a field")
                continue
            if not isinstance(major, str):
                sink.invalid(DataError(path, None, "EmoClass_Major",
                                       f"{file_name}, worker {worker}: missing or not a string", "missing_field"))
                continue
            answers[file_name].append(_Answer(worker, major, path, None, "EmoClass_Major"))
    return answers


def _answers_from_csv(path: Path, sink: RecordSink) -> dict[str, list[_Answer]]:
    answers: dict[str, list[_Answer]] = {}
    for line, row in csv_rows(path, sink, ("FileName", "EmoDetail")):
        parts = [part.strip() for part in row["EmoDetail"].split(";")]
        if len(parts) < 2 or not parts[0] or not parts[1]:
            sink.invalid(DataError(path, line, "EmoDetail",
                                   f"{row['FileName']}: expected 'WORKER; Class; ...', got {row['EmoDetail']!r}",
                                   "malformed_detail"))
            continue
        file_name = row["FileName"].strip()
        earlier = next((a for a in answers.get(file_name, ()) if a.worker == parts[0]), None)
        if earlier is not None:
            sink.invalid(DataError(path, line, "EmoDetail", f"{file_name}: worker {parts[0]} already answered at "
                                   f"line {earlier.line} (one vote per worker)", "duplicate_rater"))
            continue
        answers.setdefault(file_name, []).append(_Answer(parts[0], parts[1], path, line, "EmoDetail"))
    return answers
