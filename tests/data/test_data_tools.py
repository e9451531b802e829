"""data_stats (function and `shala-pl data-stats`) and `shala-pl download-data`, all without the network."""

import hashlib
import io
import json
import math
import subprocess
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from shala_pl.data.example import ReadResult
from shala_pl.data.sources import load_source
from shala_pl.data.stats import data_stats

REPO = Path(__file__).resolve().parents[2]
STATS_KEYS = {"n_examples", "labels", "total_votes", "mean_votes_per_example", "mean_entropy_nats", "mean_entropy_bits",
              "majority_label_counts", "n_ties", "skipped"}


def run_tool(*args):
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, capture_output=True, text=True, timeout=60)


# -- data_stats ---------------------------------------------------------------------------------------------------

def test_data_stats_agrees_with_an_independent_count_of_the_snli_sample(fixtures_dir):
    path = fixtures_dir / "snli_1.0_test_part.jsonl"
    order = ["entailment", "neutral", "contradiction"]
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    majorities, ties, entropy_bits, votes = Counter(), 0, 0.0, 0
    for record in records:
        counts = Counter(record["annotator_labels"])
        n = sum(counts.values())
        votes += n
        entropy_bits -= sum(c / n * math.log2(c / n) for c in counts.values())
        tied = [label for label in order if counts[label] == max(counts.values())]
        ties += len(tied) > 1
        majorities[record["gold_label"] if record["gold_label"] in tied else tied[0]] += 1

    stats = data_stats(load_source("snli", path))
    assert stats == {
        "n_examples": len(records),
        "labels": order,
        "total_votes": votes,
        "mean_votes_per_example": pytest.approx(votes / len(records)),
        "mean_entropy_nats": pytest.approx(entropy_bits * math.log(2) / len(records)),
        "mean_entropy_bits": pytest.approx(entropy_bits / len(records)),
        "majority_label_counts": {label: majorities[label] for label in order},
        "n_ties": ties,
        "skipped": {},
    }
    assert (len(records), ties) == (1277, 23)


def test_data_stats_of_fractional_goemotions_votes(fixtures_dir):
    stats = data_stats(load_source("goemotions", fixtures_dir / "goemotions"))
    assert stats["total_votes"] == 17 and isinstance(stats["total_votes"], int)  # 17 clear raters, split shares
    assert stats["skipped"] == {"all_rows_very_unclear": 1, "very_unclear": 3}


def test_data_stats_of_a_result_with_nothing_left():
    stats = data_stats(ReadResult(examples=[], skipped=Counter(malformed_json=2)))
    assert stats["n_examples"] == 0 and stats["skipped"] == {"malformed_json": 2}
    assert stats["mean_entropy_nats"] is None and stats["mean_entropy_bits"] is None


# -- shala-pl data-stats -------------------------------------------------------------------------------------------

def test_data_stats_tool_prints_one_json_object(fixtures_dir):
    done = run_tool("-m", "shala_pl", "data-stats", "snli", fixtures_dir / "snli_1.0_test_part.jsonl")
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert set(stats) == STATS_KEYS and stats["n_examples"] == 1277


def test_data_stats_tool_passes_taxonomy_and_options(fixtures_dir):
    done = run_tool("-m", "shala_pl", "data-stats", "goemotions", fixtures_dir / "goemotions", "--taxonomy", "sentiment")
    assert json.loads(done.stdout)["labels"] == ["positive", "negative", "ambiguous", "neutral"]
    done = run_tool("-m", "shala_pl", "data-stats", "synthetic", "--option", "n_examples=40", "--option", "n_annotators=10")
    stats = json.loads(done.stdout)
    assert (stats["n_examples"], stats["total_votes"]) == (40, 400)


def test_data_stats_tool_exits_2_on_bad_data_and_skips_on_request(fixtures_dir, tmp_path):
    bad = tmp_path / "chaosNLI_snli.jsonl"
    lines = (fixtures_dir / "chaosnli" / "chaosNLI_snli.jsonl").read_text(encoding="utf-8").splitlines()
    lines[4] = lines[4].replace('"label_counter": {', '"label_counter": {"x": 3, ')
    bad.write_text("\n".join(lines) + "\n", encoding="utf-8")
    done = run_tool("-m", "shala_pl", "data-stats", "chaosnli_snli", bad)
    assert done.returncode == 2 and done.stdout == ""
    assert "chaosNLI_snli.jsonl:5: field 'label_counter'" in done.stderr
    done = run_tool("-m", "shala_pl", "data-stats", "chaosnli_snli", bad, "--on-invalid", "skip")
    stats = json.loads(done.stdout)
    assert (stats["n_examples"], stats["skipped"]) == (11, {"unknown_label": 1})


# -- shala-pl download-data --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def downloader():
    from shala_pl.commands import download_data

    return download_data


def make_zip(path, members: dict):
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(zipfile.ZipInfo(name), data)
    return path


@pytest.mark.parametrize("evil", ["../evil.txt", "data/../../evil.txt", "/tmp/evil.txt", "C:/evil.txt"])
def test_safe_extract_refuses_zip_members_outside_the_destination(downloader, tmp_path, evil):
    archive = make_zip(tmp_path / "bad.zip", {"ok/readme.txt": b"fine", evil: b"gotcha"})
    dest = tmp_path / "dest"
    with pytest.raises(downloader.UnsafeArchiveError, match="evil"):
        downloader.safe_extract(archive, dest)
    assert list(dest.iterdir()) == []  # checked before anything is written
    assert not (tmp_path / "evil.txt").exists()


def test_safe_extract_refuses_tar_members_outside_the_destination_and_links(downloader, tmp_path):
    for name, kind in (("../evil.txt", tarfile.REGTYPE), ("link", tarfile.SYMTYPE)):
        archive = tmp_path / "bad.tar"
        with tarfile.open(archive, "w") as tarred:
            member = tarfile.TarInfo(name)
            member.type = kind
            member.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
            tarred.addfile(member, io.BytesIO(b"") if kind == tarfile.REGTYPE else None)
        with pytest.raises(downloader.UnsafeArchiveError):
            downloader.safe_extract(archive, tmp_path / "dest")


def test_safe_extract_writes_a_clean_archive_and_leaves_out_macos_metadata(downloader, tmp_path):
    archive = make_zip(tmp_path / "good.zip", {"set/a.jsonl": b"{}\n", "__MACOSX/set/._a.jsonl": b"junk"})
    written = downloader.safe_extract(archive, tmp_path / "dest")
    assert written == [tmp_path / "dest" / "set" / "a.jsonl"]
    assert not (tmp_path / "dest" / "__MACOSX").exists()


def test_every_pinned_checksum_is_a_sha256(downloader):
    pinned = [f.sha256 for dataset in downloader.DATASETS.values() for f in dataset.files if f.sha256]
    assert len(pinned) == 5 and all(len(h) == 64 and int(h, 16) >= 0 for h in pinned)


@pytest.fixture
def snli_zip(tmp_path, fixtures_dir):
    """A stand-in for snli_1.0.zip, served from a file:// URL; returns (url, its sha256)."""
    archive = make_zip(tmp_path / "snli_1.0.zip", {
        "snli_1.0/snli_1.0_dev.jsonl": (fixtures_dir / "snli_1.0_test_part.jsonl").read_bytes()})
    return archive.as_uri(), hashlib.sha256(archive.read_bytes()).hexdigest()


def test_download_checks_the_sha256_then_extracts(tmp_path, snli_zip):
    url, sha256 = snli_zip
    dest = tmp_path / "data"
    done = run_tool("-m", "shala_pl", "download-data", "snli", dest, "--url", url, "--sha256", sha256)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in dest.iterdir()) == ["snli_1.0"]  # the archive is removed after extraction
    assert len(load_source("snli", dest / "snli_1.0" / "snli_1.0_dev.jsonl").examples) == 1277


def test_a_checksum_mismatch_leaves_nothing_behind(downloader, tmp_path, snli_zip, capsys):
    url, _ = snli_zip
    dest = tmp_path / "data"
    assert downloader.main(["snli", str(dest), "--url", url, "--sha256", "0" * 64]) == 1
    assert "does not match" in capsys.readouterr().err
    assert list(dest.iterdir()) == []


def test_the_pinned_checksum_applies_when_only_the_url_is_replaced(downloader, tmp_path, snli_zip):
    url, _ = snli_zip  # our stand-in zip is not the real snli_1.0.zip
    assert downloader.main(["snli", str(tmp_path / "data"), "--url", url]) == 1


def test_no_verify_downloads_with_a_warning(downloader, tmp_path, snli_zip, capsys):
    url, sha256 = snli_zip
    assert downloader.main(["snli", str(tmp_path / "data"), "--url", url, "--no-verify"]) == 0
    assert f"not verified (--no-verify); its sha256 is {sha256}" in capsys.readouterr().err


def test_an_unreachable_url_says_offline_and_exits_3(downloader, tmp_path, capsys):
    missing = (tmp_path / "no-such.zip").as_uri()  # fails at once, like a machine without network
    assert downloader.main(["snli", str(tmp_path / "data"), "--url", missing]) == 3
    assert "offline" in capsys.readouterr().err


def test_msp_podcast_explains_the_licence_and_downloads_nothing(tmp_path):
    done = run_tool("-m", "shala_pl", "download-data", "msp_podcast", tmp_path / "msp")
    assert done.returncode == 0 and "licence" in done.stdout and "utdallas.edu" in done.stdout
    assert not (tmp_path / "msp").exists()


def test_url_overrides_must_match_the_number_of_files(downloader, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        downloader.main(["goemotions", str(tmp_path), "--url", "file:///one.csv"])
    assert exit_.value.code == 2
