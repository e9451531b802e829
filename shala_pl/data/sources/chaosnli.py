"""ChaosNLI v1.0 (Nie, Zhou & Bansal, EMNLP 2020): 100 new crowd votes per SNLI, MNLI and alphaNLI dev example.

Votes come from ``label_counter`` (keys in any order, a missing key is 0 votes). The file's ``majority_label`` is
kept as is: on tied counts it is the dataset's own tie-break, and ``majority_is_tie`` records that there was a tie.
``label_dist``, ``label_count``, ``entropy``, ``old_label`` and ``old_labels`` are derived or historical and not read
(some ``old_labels`` lists have 4 entries; alphaNLI has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from shala_pl.data.example import DataError, OnInvalid, ReadResult, VoteExample, check_votes, majority_index
from shala_pl.data.sources.nli import NLI_LABELS
from shala_pl.data.sources.records import read_json_lines, require

Variant = Literal["snli", "mnli", "alphanli"]


@dataclass(frozen=True)
class ChaosNLIFormat:
    file_name: str  # the file's name in the chaosNLI_v1.0 folder
    task: str
    labels: tuple
    codes: tuple  # label_counter keys and majority_label values, in label order
    text_fields: tuple  # read from the record's "example" object


_NLI_CODES = ("e", "n", "c")
FORMATS: dict[str, ChaosNLIFormat] = {
    "snli": ChaosNLIFormat("chaosNLI_snli.jsonl", "nli", NLI_LABELS, _NLI_CODES, ("premise", "hypothesis")),
    "mnli": ChaosNLIFormat("chaosNLI_mnli_m.jsonl", "nli", NLI_LABELS, _NLI_CODES, ("premise", "hypothesis")),
    "alphanli": ChaosNLIFormat("chaosNLI_alphanli.jsonl", "abductive_nli", ("1", "2"), ("1", "2"),
                               ("obs1", "obs2", "hyp1", "hyp2")),
}


def read_chaosnli(path: Path, *, variant: Variant, on_invalid: OnInvalid = "error") -> ReadResult:
    """``path`` is the variant's JSONL file or the ``chaosNLI_v1.0`` folder holding it."""
    spec = FORMATS[variant]
    path = Path(path)
    if path.is_dir():
        path = path / spec.file_name
        if not path.is_file():
            raise FileNotFoundError(f"no {spec.file_name} in the folder {path.parent}")
    return read_json_lines(path, on_invalid, lambda record, line: parse_chaosnli_record(record, spec, path, line))


def parse_chaosnli_record(record: dict, spec: ChaosNLIFormat, path: Path, line: int) -> VoteExample:
    uid = require(record, "uid", path, line, (str, int))
    counter = require(record, "label_counter", path, line, dict)
    unknown = sorted(set(counter) - set(spec.codes))
    if unknown:
        raise DataError(path, line, "label_counter", f"unknown label key(s) {unknown}; expected {list(spec.codes)}",
                        "unknown_label")
    votes = tuple(counter.get(code, 0) for code in spec.codes)
    check_votes(votes, path, line, "label_counter")
    # alphaNLI writes its majority as an int (1 or 2) while its label_counter keys are strings
    majority_code = str(require(record, "majority_label", path, line, (str, int)))
    if majority_code not in spec.codes:
        raise DataError(path, line, "majority_label",
                        f"unknown label {record['majority_label']!r}; expected one of {list(spec.codes)}",
                        "unknown_label")
    example = require(record, "example", path, line, dict)
    fields = {name: require(example, name, path, line, str, name=f"example.{name}") for name in spec.text_fields}
    _, is_tie = majority_index(votes)
    return VoteExample(uid=str(uid), task=spec.task, fields=fields, labels=spec.labels, votes=votes,
                       majority=spec.codes.index(majority_code), majority_is_tie=is_tie)
