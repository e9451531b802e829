"""MSP-Podcast: one vote per annotator's major class, "Other" dropped or kept, ties broken by the consensus class."""

import json
import shutil

import pytest

from shala_pl.data.example import DataError
from shala_pl.data.sources import load_source
from shala_pl.data.sources.msp_podcast import CLASSES

# labels_consensus.csv lines: 2 ..._0001_0008 (Train), 3 ..._0001_0019, 4 ..._0002_0031 (Development),
# 5 ..._0002_0044, 6 ..._0003_0002 (Test1, only "Other" votes), 7 ..._0003_0015, 8 ..._0004_0120 (Test2),
# 9 ..._0005_0007 (Test3)


def votes_of(example):
    return {label: vote for label, vote in zip(example.labels, example.votes) if vote}


def read(folder, **options):
    result = load_source("msp_podcast", folder, **options)
    return {example.uid: example for example in result.examples}, result.skipped


@pytest.fixture(params=["msp_podcast_json", "msp_podcast_csv"])
def release(request, fixtures_dir, tmp_path):
    """A writable copy of one fixture release (detailed labels as JSON or as CSV)."""
    copy = tmp_path / request.param
    shutil.copytree(fixtures_dir / request.param, copy)
    return copy


def test_both_detailed_label_formats_give_the_same_examples(fixtures_dir):
    from_json = load_source("msp_podcast", fixtures_dir / "msp_podcast_json", keep_other=True)
    from_csv = load_source("msp_podcast", fixtures_dir / "msp_podcast_csv", keep_other=True)
    assert from_json.examples == from_csv.examples and len(from_json.examples) == 8


def test_each_annotators_major_class_is_one_vote(release):
    examples, _ = read(release)
    first = examples["MSP-PODCAST_0001_0008.wav"]
    assert (first.labels, first.task) == (CLASSES, "emotion_podcast")
    assert votes_of(first) == {"neutral": 3, "happy": 1} and first.labels[first.majority] == "neutral"
    assert first.fields == {"transcript": "so that's basically how we ended up doing the show from my kitchen"}


def test_other_votes_are_dropped_and_counted_by_default(release):
    examples, skipped = read(release)
    assert votes_of(examples["MSP-PODCAST_0001_0019.wav"]) == {"happy": 3, "neutral": 2}  # and one Other-amused
    assert "MSP-PODCAST_0003_0002.wav" not in examples  # three Other-... votes and nothing else
    assert skipped == {"other_vote": 5, "only_other_votes": 1}


def test_keep_other_adds_a_ninth_class(release):
    examples, skipped = read(release, keep_other=True)
    only_other = examples["MSP-PODCAST_0003_0002.wav"]  # consensus O
    assert only_other.labels == CLASSES + ("other",)
    assert votes_of(only_other) == {"other": 3} and only_other.labels[only_other.majority] == "other"
    assert votes_of(examples["MSP-PODCAST_0001_0019.wav"]) == {"happy": 3, "neutral": 2, "other": 1}
    assert not skipped


def test_a_tie_goes_to_the_consensus_class_else_to_label_order(release):
    examples, _ = read(release)
    by_consensus = examples["MSP-PODCAST_0002_0031.wav"]  # angry 2, contempt 2, disgust 1; consensus A
    assert votes_of(by_consensus) == {"angry": 2, "contempt": 2, "disgust": 1}
    assert (by_consensus.labels[by_consensus.majority], by_consensus.majority_is_tie) == ("angry", True)
    no_agreement = examples["MSP-PODCAST_0002_0044.wav"]  # sad 2, fear 2, neutral 1; consensus X
    assert (no_agreement.labels[no_agreement.majority], no_agreement.majority_is_tie) == ("sad", True)


def test_splits_keeps_only_the_named_split_sets(release):
    assert list(read(release, splits=["Development", "Test2"])[0]) == [
        "MSP-PODCAST_0002_0031.wav", "MSP-PODCAST_0002_0044.wav", "MSP-PODCAST_0004_0120.wav"]
    assert list(read(release, splits=["Test3"])[0]) == ["MSP-PODCAST_0005_0007.wav"]
    with pytest.raises(ValueError, match="Validation"):
        load_source("msp_podcast", release, splits=["Validation"])
    consensus = release / "Labels" / "labels_consensus.csv"
    consensus.write_text(consensus.read_text().replace(",Test3\n", ",Test2\n"))
    with pytest.raises(ValueError, match=r"no segment has a Split_Set in \['Test3'\]"):
        load_source("msp_podcast", release, splits=["Test3"])


def test_a_missing_transcript_names_the_segment(release):
    (release / "Transcripts" / "MSP-PODCAST_0004_0120.txt").unlink()
    with pytest.raises(DataError, match=r"labels_consensus\.csv:8: field 'transcript': MSP-PODCAST_0004_0120\.wav"):
        load_source("msp_podcast", release)
    examples, skipped = read(release, on_invalid="skip")
    assert len(examples) == 6 and skipped["missing_transcript"] == 1


def test_an_unknown_consensus_code_is_located(release):
    consensus = release / "Labels" / "labels_consensus.csv"
    consensus.write_text(consensus.read_text().replace("MSP-PODCAST_0003_0015.wav,S,", "MSP-PODCAST_0003_0015.wav,Z,"))
    with pytest.raises(DataError, match=r"labels_consensus\.csv:7: field 'EmoClass': MSP-PODCAST_0003_0015\.wav"):
        load_source("msp_podcast", release)
    assert read(release, on_invalid="skip")[1]["unknown_label"] == 1


def test_a_segment_without_annotations_is_located(release):
    consensus = release / "Labels" / "labels_consensus.csv"
    consensus.write_text(consensus.read_text() + "MSP-PODCAST_0009_0001.wav,N,4.0,4.0,4.0,900,Male,Train\n")
    with pytest.raises(DataError, match=r"labels_consensus\.csv:10: field 'FileName': no per-annotator labels for "
                                        r"MSP-PODCAST_0009_0001\.wav"):
        load_source("msp_podcast", release)


def test_an_unknown_class_in_the_detailed_csv_names_file_line_and_segment(fixtures_dir, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(fixtures_dir / "msp_podcast_csv", release)
    detailed = release / "Labels" / "labels_detailed.csv"
    lines = detailed.read_text().splitlines()
    assert lines[2].startswith("MSP-PODCAST_0001_0008.wav,WORKER00000040; Neutral;")
    lines[2] = lines[2].replace("; Neutral;", "; Bored;")
    detailed.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"labels_detailed\.csv:3: field 'EmoDetail': MSP-PODCAST_0001_0008\.wav, "
                                        r"worker WORKER00000040: unknown emotion class 'Bored'"):
        load_source("msp_podcast", release)
    examples, skipped = read(release, on_invalid="skip")
    assert votes_of(examples["MSP-PODCAST_0001_0008.wav"]) == {"neutral": 2, "happy": 1}  # the bad vote dropped
    assert skipped["unknown_label"] == 1


def test_a_malformed_emodetail_is_located(fixtures_dir, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(fixtures_dir / "msp_podcast_csv", release)
    detailed = release / "Labels" / "labels_detailed.csv"
    detailed.write_text(detailed.read_text() + "MSP-PODCAST_0001_0008.wav,garbage\n")
    with pytest.raises(DataError, match=r"labels_detailed\.csv:\d+: field 'EmoDetail': MSP-PODCAST_0001_0008\.wav"):
        load_source("msp_podcast", release)
    assert read(release, on_invalid="skip")[1]["malformed_detail"] == 1


def test_an_unknown_class_in_the_detailed_json_names_segment_and_worker(fixtures_dir, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(fixtures_dir / "msp_podcast_json", release)
    detailed = release / "Labels" / "labels_detailed.json"
    data = json.loads(detailed.read_text())
    data["MSP-PODCAST_0005_0007.wav"]["WORKER00000046"]["EmoClass_Major"] = "Bored"
    detailed.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"labels_detailed\.json: field 'EmoClass_Major': MSP-PODCAST_0005_0007\.wav, "
                                        r"worker WORKER00000046"):
        load_source("msp_podcast", release)


def test_malformed_detailed_json_is_an_error(fixtures_dir, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(fixtures_dir / "msp_podcast_json", release)
    (release / "Labels" / "labels_detailed.json").write_text('{"MSP-PODCAST_0001_0008.wav": {')
    with pytest.raises(DataError, match=r"labels_detailed\.json:1: malformed JSON"):
        load_source("msp_podcast", release)


def test_missing_label_files_are_not_found(fixtures_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="labels_consensus.csv"):
        load_source("msp_podcast", tmp_path)
    release = tmp_path / "release"
    shutil.copytree(fixtures_dir / "msp_podcast_csv", release)
    (release / "Labels" / "labels_detailed.csv").unlink()
    with pytest.raises(FileNotFoundError, match="labels_detailed"):
        load_source("msp_podcast", release)


def test_a_worker_listed_twice_in_the_detailed_csv_is_located(fixtures_dir, tmp_path):
    release = tmp_path / "release"
    shutil.copytree(fixtures_dir / "msp_podcast_csv", release)
    detailed = release / "Labels" / "labels_detailed.csv"
    lines = detailed.read_text().splitlines()
    assert len(lines) == 39 and lines[1].startswith("MSP-PODCAST_0001_0008.wav,WORKER00000012; Neutral;")
    detailed.write_text("\n".join([*lines, lines[1]]) + "\n")
    with pytest.raises(DataError, match=r"labels_detailed\.csv:40: field 'EmoDetail': MSP-PODCAST_0001_0008\.wav: "
                                        r"worker WORKER00000012 already answered at line 2") as error:
        load_source("msp_podcast", release)
    assert error.value.reason == "duplicate_rater"
    examples, skipped = read(release, on_invalid="skip")
    assert votes_of(examples["MSP-PODCAST_0001_0008.wav"]) == {"neutral": 3, "happy": 1}  # counted once
    assert skipped["duplicate_rater"] == 1


REPEATED_KEYS = [
    # (what, how the JSON text changes, the key path named, its line, the first segment's votes when skipping)
    ("a worker", lambda text: text.replace('  "WORKER00000012": {', '  "WORKER00000012": {"EmoClass_Major": "Angry"},'
                                           '\n  "WORKER00000012": {', 1),
     "MSP-PODCAST_0001_0008.wav/WORKER00000012", 4, {"angry": 1, "neutral": 2, "happy": 1}),
    ("a segment", lambda text: text.replace('{\n "MSP-PODCAST_0001_0008.wav": {',
                                            '{\n "MSP-PODCAST_0001_0008.wav": {"W1": {"EmoClass_Major": "Sad"}},'
                                            '\n "MSP-PODCAST_0001_0008.wav": {', 1),
     "MSP-PODCAST_0001_0008.wav", 3, {"sad": 1}),
]


@pytest.mark.parametrize("what, edit, key_path, line, votes", REPEATED_KEYS, ids=[case[0] for case in REPEATED_KEYS])
def test_a_key_given_twice_in_the_detailed_json_is_located_not_overwritten(fixtures_dir, tmp_path, what, edit,
                                                                           key_path, line, votes):
    # json.loads keeps the last of two equal keys without a word: a segment's or a worker's votes would vanish
    release = tmp_path / "release"
    shutil.copytree(fixtures_dir / "msp_podcast_json", release)
    detailed = release / "Labels" / "labels_detailed.json"
    detailed.write_text(edit(detailed.read_text()))
    with pytest.raises(DataError, match=rf"labels_detailed\.json:{line}: field '{key_path}': .* appears twice") as error:
        load_source("msp_podcast", release)
    assert error.value.reason == "repeated_key"
    examples, skipped = read(release, on_invalid="skip")
    assert votes_of(examples["MSP-PODCAST_0001_0008.wav"]) == votes and skipped["repeated_key"] == 1
