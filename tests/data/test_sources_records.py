"""What every reader shares: text is UTF-8 with or without a byte-order mark, any other byte is located, and a JSON
key given twice in one object is an error rather than a silently dropped value."""

import json
import shutil

import pytest

from shala_pl.data.example import DataError
from shala_pl.data.sources import load_source

RECORD = {"uid": "a", "text": "caf\u00e9", "votes": {"yes": 3, "no": 1}}


def test_a_utf8_byte_order_mark_is_read_not_malformed(tmp_path, fixtures_dir):
    # Windows tools (Notepad, Excel's "CSV UTF-8") start files with EF BB BF; line 1 used to be "malformed JSON"
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps(RECORD) + "\n").encode())
    assert load_source("jsonl", jsonl).examples[0].fields == {"text": "caf\u00e9"}
    folder = tmp_path / "goemotions"
    shutil.copytree(fixtures_dir / "goemotions", folder)
    first = folder / "goemotions_1.csv"
    first.write_bytes(b"\xef\xbb\xbf" + first.read_bytes())  # the header's first column is "text", not "\ufefftext"
    assert load_source("goemotions", folder).examples == load_source("goemotions", fixtures_dir / "goemotions").examples


def test_a_byte_that_is_not_utf8_names_file_line_and_column(tmp_path, fixtures_dir):
    jsonl = tmp_path / "mine.jsonl"
    latin1 = json.dumps({**RECORD, "uid": "b"}, ensure_ascii=False).encode("latin-1")  # é as the single byte E9
    jsonl.write_bytes(b"\xef\xbb\xbf" + (json.dumps(RECORD) + "\n").encode() + latin1 + b"\n")
    with pytest.raises(DataError, match=r"mine\.jsonl:2: not UTF-8: byte 0xe9 at column 26") as error:
        load_source("jsonl", jsonl, on_invalid="skip")  # not a bad record: the file's encoding is wrong
    assert error.value.reason == "not_utf8"
    release = tmp_path / "release"
    shutil.copytree(fixtures_dir / "msp_podcast_json", release)
    transcript = release / "Transcripts" / "MSP-PODCAST_0001_0008.txt"
    transcript.write_bytes(b"so that's\nbasically \xff\n")
    with pytest.raises(DataError, match=r"MSP-PODCAST_0001_0008\.txt:2: not UTF-8: byte 0xff at column 11"):
        load_source("msp_podcast", release)


def test_a_key_given_twice_in_a_jsonl_record_is_located(tmp_path):
    jsonl = tmp_path / "mine.jsonl"
    jsonl.write_text(json.dumps(RECORD) + '\n{"uid": "b", "text": "t", "votes": {"yes": 3, "yes": 1}}\n')
    with pytest.raises(DataError, match=r"mine\.jsonl:2: field 'votes\.yes': the key appears twice") as error:
        load_source("jsonl", jsonl)
    assert error.value.reason == "repeated_key"
    assert load_source("jsonl", jsonl, on_invalid="skip").skipped == {"repeated_key": 1}
