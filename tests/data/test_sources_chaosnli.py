"""ChaosNLI v1.0: votes from ``label_counter``, the file's own majority kept on ties, bad lines located."""

import json
import math

import pytest

from shala_pl.data.example import DataError
from shala_pl.data.sources import load_source

NLI_LABELS = ("entailment", "neutral", "contradiction")


def by_uid(result):
    return {example.uid: example for example in result.examples}


def copy_with_line(fixture, tmp_path, line_number, new_line):
    """A copy of ``fixture`` (same file name) whose 1-based line ``line_number`` is ``new_line``."""
    lines = fixture.read_text(encoding="utf-8").splitlines()
    lines[line_number - 1] = new_line
    copy = tmp_path / fixture.name
    copy.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return copy


@pytest.mark.parametrize("source, file_name, task, labels, fields", [
    ("chaosnli_snli", "chaosNLI_snli.jsonl", "nli", NLI_LABELS, {"premise", "hypothesis"}),
    ("chaosnli_mnli", "chaosNLI_mnli_m.jsonl", "nli", NLI_LABELS, {"premise", "hypothesis"}),
    ("chaosnli_alphanli", "chaosNLI_alphanli.jsonl", "abductive_nli", ("1", "2"), {"obs1", "obs2", "hyp1", "hyp2"}),
])
def test_every_line_becomes_an_example_with_100_votes(fixtures_dir, source, file_name, task, labels, fields):
    result = load_source(source, fixtures_dir / "chaosnli" / file_name)
    assert len(result.examples) == 12 and not result.skipped
    for example in result.examples:
        assert (example.task, example.labels, set(example.fields)) == (task, labels, fields)
        assert example.total_votes == 100


def test_a_folder_path_reads_the_variants_file(fixtures_dir):
    from_folder = load_source("chaosnli_mnli", fixtures_dir / "chaosnli")
    from_file = load_source("chaosnli_mnli", fixtures_dir / "chaosnli" / "chaosNLI_mnli_m.jsonl")
    assert from_folder.examples == from_file.examples


def test_votes_follow_label_order_whatever_the_key_order_and_missing_keys_count_zero(fixtures_dir):
    examples = by_uid(load_source("chaosnli_snli", fixtures_dir / "chaosnli"))
    assert examples["3511442016.jpg#0r1n"].votes == (30, 61, 9)  # {"n": 61, "e": 30, "c": 9}
    assert examples["3511442016.jpg#0r1c"].votes == (0, 3, 97)  # {"c": 97, "n": 3}
    assert examples["3511442016.jpg#0r1c"].fields == {
        "premise": "A man in a red jacket is shoveling snow off a driveway.",
        "hypothesis": "A man is swimming in a warm lake.",
    }


def test_on_a_tie_the_files_majority_label_is_kept_and_the_tie_flagged(fixtures_dir):
    examples = by_uid(load_source("chaosnli_snli", fixtures_dir / "chaosnli"))
    tie = examples["2274805134.jpg#3r1n"]  # e 40, n 40, c 20; majority_label "n" (not the first tied label)
    assert (tie.votes, tie.majority, tie.majority_is_tie) == ((40, 40, 20), NLI_LABELS.index("neutral"), True)
    other_tie = examples["4880023141.jpg#1r1n"]  # e 47, n 47; majority_label "e"
    assert (other_tie.majority, other_tie.majority_is_tie) == (0, True)
    clear = examples["3511442016.jpg#0r1e"]
    assert (clear.majority, clear.majority_is_tie) == (0, False)


def test_a_four_entry_old_labels_list_is_read_like_any_other(fixtures_dir):
    example = by_uid(load_source("chaosnli_snli", fixtures_dir / "chaosnli"))["2274805134.jpg#3r1c"]
    assert (example.votes, NLI_LABELS[example.majority]) == ((8, 20, 72), "contradiction")


def test_alphanli_has_an_int_majority_and_string_counter_keys(fixtures_dir):
    examples = by_uid(load_source("chaosnli_alphanli", fixtures_dir / "chaosnli"))
    first = examples["0c1d7f52-6a3e-4b9e-8f21-5a7d2e9c4b10-1"]  # {"2": 12, "1": 88}, majority_label 1
    assert (first.votes, first.labels[first.majority], first.majority_is_tie) == ((88, 12), "1", False)
    assert first.fields["obs1"] == "Tom left his bike unlocked outside the store."
    even = examples["1e2f8a63-7b4f-4cae-9032-6b8e3fad5c21-1"]  # 50/50, majority_label 2
    assert (even.votes, even.labels[even.majority], even.majority_is_tie) == ((50, 50), "2", True)


BAD_LINE_3 = [
    # (what is wrong, how line 3 becomes it, field named in the message, skip reason)
    ("malformed JSON", lambda r: json.dumps(r)[:-5], None, "malformed_json"),
    ("missing label_counter", lambda r: json.dumps({k: v for k, v in r.items() if k != "label_counter"}),
     "label_counter", "missing_field"),
    ("unknown label key", lambda r: json.dumps({**r, "label_counter": {"e": 50, "x": 50}}), "label_counter",
     "unknown_label"),
    ("negative votes", lambda r: json.dumps({**r, "label_counter": {"e": -1, "n": 101}}), "label_counter",
     "negative_votes"),
    ("all-zero votes", lambda r: json.dumps({**r, "label_counter": {"e": 0}}), "label_counter", "zero_votes"),
    ("non-numeric votes", lambda r: json.dumps({**r, "label_counter": {"e": "90", "n": 10}}), "label_counter",
     "non_numeric_votes"),
    # JSON reads all three; one such record used to turn a training batch's weights NaN (or raise OverflowError)
    ("Infinity votes", lambda r: json.dumps({**r, "label_counter": {"e": math.inf, "n": 10}}), "label_counter",
     "nonfinite_votes"),
    ("1e400 votes", lambda r: json.dumps({**r, "label_counter": {"e": 1, "n": 10}}).replace('"e": 1,', '"e": 1e400,'),
     "label_counter", "nonfinite_votes"),
    ("400-digit votes", lambda r: json.dumps({**r, "label_counter": {"e": 10**400, "n": 10}}), "label_counter",
     "nonfinite_votes"),
    ("votes summing past float range", lambda r: json.dumps({**r, "label_counter": {"e": 1e308, "n": 1e308}}),
     "label_counter", "nonfinite_votes"),
    ("a key given twice", lambda r: json.dumps({**r, "label_counter": {"e": 1, "n": 10}}).replace(
        '"n": 10', '"n": 10, "e": 90'), "label_counter.e", "repeated_key"),
    ("unknown majority", lambda r: json.dumps({**r, "majority_label": "x"}), "majority_label", "unknown_label"),
    ("missing premise", lambda r: json.dumps({**r, "example": {"hypothesis": "h"}}), "example.premise",
     "missing_field"),
    ("duplicate uid", lambda r: json.dumps({**r, "uid": "3511442016.jpg#0r1e"}), "uid", "duplicate_uid"),
]


@pytest.mark.parametrize("what, edit, field, reason", BAD_LINE_3, ids=[case[0] for case in BAD_LINE_3])
def test_a_bad_line_is_a_located_error_or_a_counted_skip(fixtures_dir, tmp_path, what, edit, field, reason):
    fixture = fixtures_dir / "chaosnli" / "chaosNLI_snli.jsonl"
    record = json.loads(fixture.read_text(encoding="utf-8").splitlines()[2])
    bad = copy_with_line(fixture, tmp_path, 3, edit(record))
    with pytest.raises(DataError) as error:
        load_source("chaosnli_snli", bad)
    message = str(error.value)
    assert message.startswith(f"{bad}:3:")
    if field:
        assert f"field '{field}'" in message
    assert error.value.reason == reason
    skipped = load_source("chaosnli_snli", bad, on_invalid="skip")
    assert len(skipped.examples) == 11 and skipped.skipped == {reason: 1}


def test_an_empty_file_is_an_error(tmp_path):
    empty = tmp_path / "chaosNLI_snli.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="chaosNLI_snli.jsonl: no records"):
        load_source("chaosnli_snli", empty)


def test_a_folder_without_the_variants_file_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="chaosNLI_alphanli.jsonl"):
        load_source("chaosnli_alphanli", tmp_path)
