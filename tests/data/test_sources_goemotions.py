"""GoEmotions raw rater CSVs: one vote per clear rater, split over its (mapped) labels; unclear rows counted."""

import csv
import shutil

import pytest

from shala_pl.data.example import DataError
from shala_pl.data.sources import load_source
from shala_pl.data.sources.goemotions import EMOTIONS, TAXONOMIES


def nonzero_votes(example):
    return {label: vote for label, vote in zip(example.labels, example.votes) if vote}


def marked(example):
    return {label for label, target in zip(example.labels, example.multilabel_target) if target}


@pytest.fixture
def folder(fixtures_dir):
    return fixtures_dir / "goemotions"


def read(folder, **options):
    result = load_source("goemotions", folder, **options)
    return {example.uid: example for example in result.examples}, result.skipped


def test_full_taxonomy_votes_split_evenly_over_the_emotions_a_rater_marked(folder):
    examples, _ = read(folder)
    assert list(examples) == ["eew5j0j", "ed2mah1", "eeibobj", "eczazk1", "ed7ypvh", "eew9hwq"]
    assert examples["eew5j0j"].labels == EMOTIONS and examples["eew5j0j"].task == "emotion_reddit"
    assert nonzero_votes(examples["eew5j0j"]) == {"sadness": 2, "disappointment": 1}
    assert nonzero_votes(examples["eeibobj"]) == {"gratitude": 1.5, "joy": 1.0, "love": 0.5}
    # raters of one comment may sit in different files
    assert nonzero_votes(examples["ed7ypvh"]) == {"confusion": 0.5, "curiosity": 1.5, "surprise": 1.0}


def test_multilabel_target_marks_labels_chosen_by_at_least_two_raters(folder):
    examples, _ = read(folder)
    assert marked(examples["ed2mah1"]) == {"amusement", "annoyance"}
    assert marked(examples["eeibobj"]) == {"gratitude", "joy"}
    assert marked(examples["eczazk1"]) == {"neutral"}


def test_split_votes_can_tie_and_the_tie_goes_to_label_order(folder):
    examples, _ = read(folder)
    tie = examples["ed2mah1"]  # amusement+annoyance, amusement, annoyance
    assert nonzero_votes(tie) == {"amusement": 1.5, "annoyance": 1.5}
    assert (tie.labels[tie.majority], tie.majority_is_tie) == ("amusement", True)


def test_very_unclear_rows_are_dropped_and_counted(folder):
    examples, skipped = read(folder)
    assert "ef4qmod" not in examples  # both its rows are very unclear ("True" and "true")
    assert skipped == {"very_unclear": 3, "all_rows_very_unclear": 1}
    assert examples["eczazk1"].total_votes == 3  # 4 rows, one of them unclear


def test_texts_keep_commas_quotes_and_newlines(folder):
    examples, _ = read(folder)
    assert examples["ed2mah1"].fields == {"text": 'He said "never again", and then did it again. Classic.'}
    assert examples["eeibobj"].fields == {"text": "Thank you so much!\nThis made my day."}


def test_ekman_maps_a_raters_emotions_to_groups_before_splitting(folder):
    examples, _ = read(folder, taxonomy="ekman")
    assert examples["eew5j0j"].labels == ("anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral")
    assert nonzero_votes(examples["eeibobj"]) == {"joy": 3}  # gratitude+joy, gratitude, joy+love: one joy vote each
    assert nonzero_votes(examples["ed7ypvh"]) == {"surprise": 3}
    assert nonzero_votes(examples["eew9hwq"]) == {"anger": 1.5, "disgust": 0.5}
    assert marked(examples["eeibobj"]) == {"joy"}


def test_sentiment_taxonomy(folder):
    examples, _ = read(folder, taxonomy="sentiment")
    tie = examples["ed2mah1"]
    assert tie.labels == ("positive", "negative", "ambiguous", "neutral")
    assert nonzero_votes(tie) == {"positive": 1.5, "negative": 1.5} and tie.majority == 0 and tie.majority_is_tie
    assert nonzero_votes(examples["ed7ypvh"]) == {"ambiguous": 3}


def test_a_single_file_path_reads_only_that_file(folder):
    examples, _ = read(folder / "goemotions_2.csv")
    assert nonzero_votes(examples["ed2mah1"]) == {"annoyance": 1}


@pytest.mark.parametrize("taxonomy", sorted(TAXONOMIES))
def test_every_taxonomy_places_each_of_the_28_emotions_in_exactly_one_group(taxonomy):
    members = [emotion for group in TAXONOMIES[taxonomy].values() for emotion in group]
    assert sorted(members) == sorted(EMOTIONS)


def test_unknown_taxonomy_is_rejected(folder):
    with pytest.raises(ValueError, match="taxonomy 'plutchik'"):
        load_source("goemotions", folder, taxonomy="plutchik")


def test_a_folder_without_goemotions_files_is_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="goemotions_"):
        load_source("goemotions", tmp_path)


# -- bad rows: a copy of the fixture folder whose goemotions_1.csv has one row changed. That file's rows start on
# lines 2, 3, 4, 5 (a two-line text), 7, 8, ... so the row of rater 1 on comment eczazk1 (row index 5) is on line 8.

def edited_copy(folder, tmp_path, edit):
    """The folder's copy in tmp_path, with ``edit`` applied to that row; returns the edited file."""
    shutil.copy(folder / "goemotions_2.csv", tmp_path)
    with open(folder / "goemotions_1.csv", newline="", encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    header = list(rows[0])
    edit(rows[5])
    copy = tmp_path / "goemotions_1.csv"
    with open(copy, "w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([row[column] for column in header if column in row] for row in rows)
    return copy


BAD_ROWS = [
    # (what is wrong, edit of the row, field named in the message, skip reason)
    ("a clear row marking no emotion", lambda row: row.update(neutral="0"), "emotions", "no_emotion"),
    ("an emotion column that is not 0/1", lambda row: row.update(joy="2"), "joy", "bad_value"),
    ("an unreadable unclear flag", lambda row: row.update(example_very_unclear="maybe"), "example_very_unclear",
     "bad_value"),
    ("an empty id", lambda row: row.update(id=""), "id", "missing_field"),
]


@pytest.mark.parametrize("what, edit, field, reason", BAD_ROWS, ids=[case[0] for case in BAD_ROWS])
def test_a_bad_row_is_a_located_error_or_a_counted_skip(folder, tmp_path, what, edit, field, reason):
    bad = edited_copy(folder, tmp_path, edit)
    with pytest.raises(DataError, match=rf"goemotions_1\.csv:8: field '{field}'") as error:
        load_source("goemotions", bad)
    assert error.value.reason == reason
    examples, skipped = read(tmp_path, on_invalid="skip")
    assert skipped == {reason: 1, "very_unclear": 3, "all_rows_very_unclear": 1}
    assert nonzero_votes(examples["eczazk1"]) == {"approval": 1, "neutral": 1}  # without the bad row's vote


def test_a_row_with_the_wrong_number_of_fields_is_malformed(folder, tmp_path):
    bad = edited_copy(folder, tmp_path, lambda row: row.pop("neutral"))
    with pytest.raises(DataError, match=r"goemotions_1\.csv:8: expected 37 fields, got 36") as error:
        load_source("goemotions", bad)
    assert error.value.reason == "malformed_csv"
    assert read(bad, on_invalid="skip")[1]["malformed_csv"] == 1


def test_broken_quoting_is_malformed_and_reading_goes_on(folder, tmp_path):
    lines = (folder / "goemotions_1.csv").read_text(encoding="utf-8").splitlines()
    lines[7] = '"I guess" that\'s fine.' + lines[7][len("I guess that's fine."):]  # the row on line 8
    bad = tmp_path / "goemotions_1.csv"
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"goemotions_1\.csv:8: malformed CSV"):
        load_source("goemotions", bad)
    examples, skipped = read(bad, on_invalid="skip")
    assert skipped["malformed_csv"] == 1 and "ed7ypvh" in examples


def test_a_header_missing_a_column_fails_even_when_skipping(folder, tmp_path):
    copy = tmp_path / "goemotions_1.csv"
    shutil.copy(folder / "goemotions_1.csv", copy)
    copy.write_text(copy.read_text(encoding="utf-8").replace(",neutral\n", ",neutralish\n", 1), encoding="utf-8")
    with pytest.raises(DataError, match=r"goemotions_1\.csv:1: field 'neutral': missing column"):
        load_source("goemotions", copy, on_invalid="skip")


# -- rows that would miscount: rater 1's row on comment eew5j0j (line 2 of goemotions_1.csv) appended again as
# line 15, as is or changed

def with_extra_row(folder, tmp_path, edit=lambda line: line):
    shutil.copy(folder / "goemotions_2.csv", tmp_path)
    lines = (folder / "goemotions_1.csv").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 14 and lines[1].startswith("That game hurt.,eew5j0j,")
    (tmp_path / "goemotions_1.csv").write_text("\n".join([*lines, edit(lines[1])]) + "\n", encoding="utf-8")
    return tmp_path


REPEATED_ROWS = [
    # (what, edit of the copied row, field, reason, message)
    ("the same rater twice", lambda line: line, "rater_id", "duplicate_rater",
     r"rater 1 already rated comment eew5j0j at \S*goemotions_1\.csv:2 \(one vote per rater\)"),
    ("another text under the same id",
     lambda line: line.replace("That game hurt.", "That game was great.").replace(",1,False,", ",9,False,"), "text",
     "conflicting_text", r"comment id eew5j0j has a different text at \S*goemotions_1\.csv:2"),
]


@pytest.mark.parametrize("what, edit, field, reason, message", REPEATED_ROWS, ids=[case[0] for case in REPEATED_ROWS])
def test_a_row_that_would_count_a_rater_twice_or_merge_two_texts_is_located(folder, tmp_path, what, edit, field,
                                                                             reason, message):
    copy = with_extra_row(folder, tmp_path, edit)
    with pytest.raises(DataError, match=rf"goemotions_1\.csv:15: field '{field}': {message}") as error:
        load_source("goemotions", copy)
    assert error.value.reason == reason
    examples, skipped = read(copy, on_invalid="skip")
    assert skipped == {reason: 1, "very_unclear": 3, "all_rows_very_unclear": 1}
    assert nonzero_votes(examples["eew5j0j"]) == {"sadness": 2, "disappointment": 1}  # as without the extra row
    assert examples["eew5j0j"].fields == {"text": "That game hurt."}
