"""The generic JSONL source: {"uid", text fields, "votes": {label: n}} or "label_counts" with the labels option."""

import json
import logging
import math

import pytest

from shala_pl.data.example import DataError
from shala_pl.data.sources import load_source

NLI_OPTIONS = {"labels": ["entailment", "neutral", "contradiction"], "task": "nli",
               "text_fields": ["premise", "hypothesis"]}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def test_without_labels_the_order_is_the_sorted_union_of_vote_keys(fixtures_dir):
    examples = load_source("jsonl", fixtures_dir / "generic_votes.jsonl").examples
    assert [e.uid for e in examples] == ["q1", "q2", "q3", "q4", "q5"]
    q1 = examples[0]
    assert (q1.labels, q1.votes, q1.task) == (("sarcastic", "sincere", "unsure"), (8, 2, 0), "generic")
    assert q1.fields == {"text": "Great, another meeting that could have been an email."}
    assert examples[3].votes == (10, 0, 0)  # labels missing from a record's votes count 0


def test_the_labels_option_sets_the_order(fixtures_dir):
    path = fixtures_dir / "generic_votes.jsonl"
    q1 = load_source("jsonl", path, labels=["sincere", "sarcastic", "unsure"]).examples[0]
    assert (q1.labels, q1.votes, q1.majority) == (("sincere", "sarcastic", "unsure"), (2, 8, 0), 1)


def test_ties_are_flagged_and_a_records_majority_overrides(fixtures_dir):
    examples = load_source("jsonl", fixtures_dir / "generic_votes.jsonl").examples
    q3, q5 = examples[2], examples[4]
    assert (q3.majority, q3.majority_is_tie) == (0, True)  # 5/5: first in label order
    assert (q5.labels[q5.majority], q5.majority_is_tie) == ("sincere", True)  # 4/4/2 with "majority": "sincere"


def test_label_counts_with_labels_task_and_text_fields(fixtures_dir):
    examples = load_source("jsonl", fixtures_dir / "generic_label_counts.jsonl", **NLI_OPTIONS).examples
    first = examples[0]
    assert (first.uid, first.task, first.votes, first.majority) == ("101", "nli", (6, 3, 1), 0)
    assert first.fields == {"premise": "The shop opens at nine.", "hypothesis": "The shop is open at noon."}


def test_label_counts_need_the_labels_option(fixtures_dir):
    with pytest.raises(ValueError, match="generic_label_counts.jsonl:1: field 'label_counts' needs the labels option"):
        load_source("jsonl", fixtures_dir / "generic_label_counts.jsonl", task="nli",
                    text_fields=["premise", "hypothesis"])


def test_options_are_checked_against_the_prompt_templates(fixtures_dir):
    path = fixtures_dir / "generic_votes.jsonl"
    with pytest.raises(ValueError, match="unknown task 'poetry'"):
        load_source("jsonl", path, task="poetry")
    with pytest.raises(ValueError, match=r"task 'nli' needs text fields \['hypothesis', 'premise'\]"):
        load_source("jsonl", path, task="nli")
    with pytest.raises(ValueError, match="distinct"):
        load_source("jsonl", path, labels=["a", "a"])


GOOD = {"uid": "ok", "text": "fine", "votes": {"yes": 3, "no": 1}}
BAD_RECORDS = [
    # (what is wrong, the second record, field named in the message, skip reason)
    ("unknown label", {"uid": "b", "text": "t", "votes": {"yes": 1, "perhaps": 2}}, "votes", "unknown_label"),
    ("negative votes", {"uid": "b", "text": "t", "votes": {"yes": -2, "no": 3}}, "votes", "negative_votes"),
    ("all-zero votes", {"uid": "b", "text": "t", "votes": {"yes": 0}}, "votes", "zero_votes"),
    ("infinite votes", {"uid": "b", "text": "t", "votes": {"yes": math.inf, "no": 1}}, "votes", "nonfinite_votes"),
    ("NaN votes", {"uid": "b", "text": "t", "votes": {"yes": math.nan}}, "votes", "nonfinite_votes"),
    ("a 400-digit count", {"uid": "b", "text": "t", "label_counts": [10**400, 1]}, "label_counts",
     "nonfinite_votes"),
    ("missing text", {"uid": "b", "votes": {"yes": 1}}, "text", "missing_field"),
    ("text not a string", {"uid": "b", "text": 5, "votes": {"yes": 1}}, "text", "wrong_type"),
    ("missing uid", {"text": "t", "votes": {"yes": 1}}, "uid", "missing_field"),
    ("no votes at all", {"uid": "b", "text": "t"}, "votes", "missing_field"),
    ("votes and label_counts", {"uid": "b", "text": "t", "votes": {"yes": 1}, "label_counts": [1, 0]}, "votes",
     "missing_field"),
    ("label_counts of the wrong length", {"uid": "b", "text": "t", "label_counts": [1, 2, 3]}, "label_counts",
     "wrong_length"),
    ("unknown majority", {"uid": "b", "text": "t", "votes": {"yes": 1}, "majority": "perhaps"}, "majority",
     "unknown_label"),
    ("duplicate uid", {"uid": "ok", "text": "t", "votes": {"yes": 1}}, "uid", "duplicate_uid"),
]


@pytest.mark.parametrize("what, bad_record, field, reason", BAD_RECORDS, ids=[case[0] for case in BAD_RECORDS])
def test_a_bad_record_is_a_located_error_or_a_counted_skip(tmp_path, what, bad_record, field, reason):
    path = write_jsonl(tmp_path / "mine.jsonl", [GOOD, bad_record, {**GOOD, "uid": "last"}])
    with pytest.raises(DataError, match=rf"mine\.jsonl:2: field '{field}'") as error:
        load_source("jsonl", path, labels=["yes", "no"])
    assert error.value.reason == reason
    result = load_source("jsonl", path, on_invalid="skip", labels=["yes", "no"])
    assert [e.uid for e in result.examples] == ["ok", "last"] and result.skipped == {reason: 1}


def test_malformed_json_and_empty_files(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps(GOOD) + "\n[1, 2]\n{oops\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mine\.jsonl:2: expected a JSON object"):
        load_source("jsonl", path)
    assert load_source("jsonl", path, on_invalid="skip").skipped == {"malformed_json": 2}
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"mine\.jsonl: no records"):
        load_source("jsonl", path)


MISSPELLED = [{"uid": "a", "text": "x", "votes": {"sarcastic": 3, "literal": 1}},
              {"uid": "b", "text": "y", "votes": {"sarcastc": 2, "literal": 1}}]


def test_without_labels_the_label_set_found_is_logged_with_counts_so_a_misspelling_shows(tmp_path, caplog):
    path = write_jsonl(tmp_path / "mine.jsonl", MISSPELLED)
    with caplog.at_level(logging.WARNING, logger="shala_pl.data.sources.jsonl"):
        result = load_source("jsonl", path)
    assert result.examples[0].labels == ("literal", "sarcastc", "sarcastic")  # the misspelling is a class
    assert ("labels are the votes keys found: literal (2 records, first at line 1), sarcastc (1 record, first at "
            "line 2), sarcastic (1 record, first at line 1)") in caplog.text


def test_with_labels_an_unknown_name_is_a_located_error(tmp_path, caplog):
    path = write_jsonl(tmp_path / "mine.jsonl", MISSPELLED)
    with pytest.raises(DataError, match=r"mine\.jsonl:2: field 'votes': unknown label\(s\) \['sarcastc'\]"):
        load_source("jsonl", path, labels=["sarcastic", "literal"])
    assert "votes keys found" not in caplog.text
