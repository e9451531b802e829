"""SNLI 1.0 / MultiNLI 1.0: votes are the annotator labels; "-" pairs are kept; ties fall back to gold, then order."""

import json

import pytest

from shala_pl.data.example import DataError
from shala_pl.data.sources import load_source

NLI_LABELS = ("entailment", "neutral", "contradiction")


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


def pair(uid, labels, gold, **extra):
    return {"annotator_labels": labels, "gold_label": gold, "pairID": uid, "sentence1": "A cat sleeps.",
            "sentence2": "An animal rests.", **extra}


def test_the_real_snli_sample_keeps_every_pair_including_no_gold_ones(fixtures_dir):
    result = load_source("snli", fixtures_dir / "snli_1.0_test_part.jsonl")
    assert len(result.examples) == 1277 and not result.skipped
    first = result.examples[0]
    assert first.uid == "2705099033.jpg#1r1c"
    assert first.votes == (0, 1, 4) and NLI_LABELS[first.majority] == "contradiction"
    assert first.fields == {
        "premise": "Four young men sit on the floor close to a television that is showing Elmo from Sesame Street.",
        "hypothesis": "Four males are playing out in the yard.",
    }
    assert (first.task, first.labels) == ("nli", NLI_LABELS)


def test_mnli_fixture_reads_genre_files_and_keeps_the_no_gold_pair(fixtures_dir):
    examples = {e.uid: e for e in load_source("mnli", fixtures_dir / "multinli_1.0_dev_matched_part.jsonl").examples}
    assert len(examples) == 8
    split = examples["12419n"]  # gold "-": n, e, c, n, e
    assert split.votes == (2, 2, 1) and split.majority_is_tie and NLI_LABELS[split.majority] == "entailment"
    four = examples["12419e"]  # only 4 annotator labels
    assert four.votes == (3, 1, 0) and four.total_votes == 4


def test_a_tie_goes_to_the_gold_label_when_the_source_names_one(tmp_path):
    path = write_jsonl(tmp_path / "snli_1.0_dev.jsonl", [
        pair("p1", ["entailment", "neutral", "neutral", "entailment"], "neutral"),
        pair("p2", ["contradiction", "neutral", "neutral", "contradiction", "entailment"], "-"),
        pair("p3", ["neutral"], "neutral"),  # SNLI train: a single label
    ])
    p1, p2, p3 = load_source("snli", path).examples
    assert (NLI_LABELS[p1.majority], p1.majority_is_tie) == ("neutral", True)
    assert (NLI_LABELS[p2.majority], p2.majority_is_tie) == ("neutral", True)  # no gold: first tied in label order
    assert (p3.votes, p3.majority, p3.majority_is_tie) == ((0, 1, 0), 1, False)


BAD_RECORDS = [
    # (what is wrong, the second record, field named in the message, skip reason)
    ("unknown annotator label", pair("b", ["entailment", "maybe"], "entailment"), "annotator_labels",
     "unknown_label"),
    ("no annotator labels", pair("b", [], "-"), "annotator_labels", "zero_votes"),
    ("unknown gold label", pair("b", ["neutral"], "unsure"), "gold_label", "unknown_label"),
    ("missing gold label", {k: v for k, v in pair("b", ["neutral"], "-").items() if k != "gold_label"}, "gold_label",
     "missing_field"),
    ("missing sentence2", {k: v for k, v in pair("b", ["neutral"], "-").items() if k != "sentence2"}, "sentence2",
     "missing_field"),
    ("null pairID", pair("b", ["neutral"], "-", pairID=None), "pairID", "missing_field"),
    ("duplicate pairID", pair("a", ["neutral"], "neutral"), "uid", "duplicate_uid"),
]


@pytest.mark.parametrize("what, bad_record, field, reason", BAD_RECORDS, ids=[case[0] for case in BAD_RECORDS])
def test_a_bad_record_is_a_located_error_or_a_counted_skip(tmp_path, what, bad_record, field, reason):
    path = write_jsonl(tmp_path / "multinli_1.0_dev_matched.jsonl",
                       [pair("a", ["neutral"] * 5, "neutral"), bad_record, pair("c", ["entailment"] * 5, "entailment")])
    with pytest.raises(DataError, match=rf"multinli_1\.0_dev_matched\.jsonl:2: field '{field}'") as error:
        load_source("mnli", path)
    assert error.value.reason == reason
    result = load_source("mnli", path, on_invalid="skip")
    assert [e.uid for e in result.examples] == ["a", "c"] and result.skipped == {reason: 1}


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "snli_1.0_test.jsonl"
    path.write_text(json.dumps(pair("a", ["neutral"], "neutral")) + "\n\n{\"pairID\": \n", encoding="utf-8")
    with pytest.raises(DataError, match=r"snli_1\.0_test\.jsonl:3: malformed JSON"):
        load_source("snli", path)
    assert load_source("snli", path, on_invalid="skip").skipped == {"malformed_json": 1}
