"""Download a public data source's official release files (on a machine with internet access).

    shala-pl download-data {chaosnli,snli,mnli,goemotions,msp_podcast} DEST [--url URL ...]
        [--sha256 HEX ...] [--no-verify] [--timeout SECONDS]

Each file is checked against a sha256 before it is used: the pinned one below where a published value exists,
else the one given with ``--sha256``. Where neither exists the tool says so and prints the file's sha256 so you can
pin it. Archives are extracted into DEST (members with absolute paths or ``..`` are refused) and then deleted.
MSP-Podcast is licensed by its authors: the tool only explains how to request it.

Exit codes: 0 done, 1 checksum mismatch or unsafe archive, 2 bad arguments, 3 could not download (offline?).
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
import tarfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Sequence

EXIT_OK, EXIT_BAD_FILE, EXIT_OFFLINE = 0, 1, 3
# tarfile's own "data" filter where this Python has it (3.10.12+, 3.11.4+), on top of the checks below
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


@dataclass(frozen=True)
class RemoteFile:
    url: str
    file_name: str  # saved under this name (the URL may carry a query string)
    sha256: Optional[str]  # None where no published value could be checked


@dataclass(frozen=True)
class Dataset:
    files: tuple[RemoteFile, ...]
    extract: bool
    then: str  # how to read it afterwards


# sha256 values: SNLI, MultiNLI and GoEmotions as pinned in the download_checksums of the Hugging Face `datasets`
# loading scripts (snli, multi_nli, go_emotions); SNLI's also in NLIDatasets.jl. ChaosNLI publishes none.
DATASETS: dict[str, Dataset] = {
    "chaosnli": Dataset(
        (RemoteFile("https://www.dropbox.com/s/h4j7dqszmpt2679/chaosNLI_v1.0.zip?dl=1", "chaosNLI_v1.0.zip", None),),
        extract=True,
        then="sources chaosnli_snli / chaosnli_mnli / chaosnli_alphanli with path DEST/chaosNLI_v1.0",
    ),
    "snli": Dataset(
        (RemoteFile("https://nlp.stanford.edu/projects/snli/snli_1.0.zip", "snli_1.0.zip",
                    "afb3d70a5af5d8de0d9d81e2637e0fb8c22d1235c2749d83125ca43dab0dbd3e"),),
        extract=True,
        then="source snli with path DEST/snli_1.0/snli_1.0_{train,dev,test}.jsonl",
    ),
    "mnli": Dataset(
        (RemoteFile("https://cims.nyu.edu/~sbowman/multinli/multinli_1.0.zip", "multinli_1.0.zip",
                    "049f507b9e36b1fcb756cfd5aeb3b7a0cfcb84bf023793652987f7e7e0957822"),),
        extract=True,
        then="source mnli with path DEST/multinli_1.0/multinli_1.0_{train,dev_matched,dev_mismatched}.jsonl",
    ),
    "goemotions": Dataset(
        tuple(
            RemoteFile(f"https://storage.googleapis.com/gresearch/goemotions/data/full_dataset/goemotions_{i}.csv",
                       f"goemotions_{i}.csv", sha256)
            for i, sha256 in (
                (1, "cac049036bad5d68d1081f72b65f2cc51e4df82af05e3e22cfa747051cac1af3"),
                (2, "f699ecc5aa425c1720c1d02475f1e41815244b680bd75b282eb770d2c76cd84d"),
                (3, "467f1e7191af00f2e76cc7f425885c2dc304bea8aff284b10e8c460d22f2e1af"),
            )
        ),
        extract=False,
        then="source goemotions with path DEST",
    ),
}
MSP_PODCAST_LICENCE = """\
MSP-Podcast cannot be downloaded by this tool: the MSP lab at The University of Texas at Dallas distributes it
under a licence agreement. Request it from the lab's MSP-Podcast page:

    https://ecs.utdallas.edu/research/researchlabs/msp-lab/MSP-Podcast.html

Once you have the release, point source msp_podcast at its folder (the one holding Labels/labels_consensus.csv,
Labels/labels_detailed.json or .csv, and Transcripts/)."""


class UnsafeArchiveError(Exception):
    """An archive member would land outside the destination folder, or is a link or special file."""


class ChecksumError(Exception):
    pass


# -- safe extraction ----------------------------------------------------------------------------------------------

def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Extract a zip or tar archive into ``dest`` after checking every member; returns the paths written.

    Nothing is extracted when any member has an absolute path, a ``..`` component or (tar) is not a plain file or
    folder. macOS ``__MACOSX/`` metadata is left out.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not _is_mac_metadata(m.filename)]
            for member in members:
                _check_member_path(member.filename, dest)
            return [Path(zipped.extract(member, dest)) for member in members]
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tarred:
            members = [m for m in tarred.getmembers() if not _is_mac_metadata(m.name)]
            for member in members:
                _check_member_path(member.name, dest)
                if not (member.isfile() or member.isdir()):
                    raise UnsafeArchiveError(f"{archive}: member {member.name!r} is a link or special file")
            for member in members:
                tarred.extract(member, dest, set_attrs=False, **_TAR_FILTER)
            return [dest / member.name for member in members]
    raise UnsafeArchiveError(f"{archive} is neither a zip nor a tar archive")


def _check_member_path(name: str, dest: Path) -> None:
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"[A-Za-z]:", posix):
        raise UnsafeArchiveError(f"archive member {name!r} has an absolute path")
    if ".." in PurePosixPath(posix).parts:
        raise UnsafeArchiveError(f"archive member {name!r} contains '..'")
    root = dest.resolve()
    if not (root / posix).resolve().is_relative_to(root):
        raise UnsafeArchiveError(f"archive member {name!r} would land outside {dest}")


def _is_mac_metadata(name: str) -> bool:
    return name.replace("\\", "/").split("/", 1)[0] == "__MACOSX"


# -- download -----------------------------------------------------------------------------------------------------

def download(url: str, target: Path, expected_sha256: Optional[str], timeout: float) -> str:
    """Stream ``url`` to ``target`` and return its sha256; on a mismatch nothing is left behind.

    Raises urllib's errors (URLError, HTTPError) and OSError as they come.
    """
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        actual = digest.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256.lower():
            raise ChecksumError(f"{target.name}: sha256 {actual} does not match the expected {expected_sha256}; "
                                "the file was deleted")
        partial.replace(target)
        return actual
    finally:
        partial.unlink(missing_ok=True)


def fetch(name: str, dest: Path, urls: Sequence[str], sha256s: Sequence[Optional[str]], verify: bool,
          timeout: float) -> None:
    dataset = DATASETS[name]
    dest.mkdir(parents=True, exist_ok=True)
    for remote, url, pinned in zip(dataset.files, urls, sha256s):
        expected = pinned if verify else None
        target = dest / remote.file_name
        print(f"downloading {url} -> {target}", file=sys.stderr)
        actual = download(url, target, expected, timeout)
        if not verify:
            print(f"WARNING: {remote.file_name} not verified (--no-verify); its sha256 is {actual}", file=sys.stderr)
        elif expected is None:
            print(f"WARNING: no published sha256 for {remote.file_name}, so it could not be verified; its sha256 is "
                  f"{actual} (pin it with --sha256 once you trust it)", file=sys.stderr)
        if dataset.extract:
            written = safe_extract(target, dest)
            target.unlink()
            print(f"extracted {len(written)} entries into {dest}", file=sys.stderr)
    print(f"done: read it with {dataset.then.replace('DEST', str(dest))}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="shala-pl download-data", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=[*DATASETS, "msp_podcast"])
    parser.add_argument("dest", type=Path, help="folder to download into")
    parser.add_argument("--url", action="append", help="replace the URL(s), one per file, in order (e.g. a mirror)")
    parser.add_argument("--sha256", action="append", help="expected sha256, one per file, in order")
    parser.add_argument("--no-verify", action="store_true", help="skip the checksum check (prints a warning)")
    parser.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    args = parser.parse_args(argv)
    if args.dataset == "msp_podcast":
        print(MSP_PODCAST_LICENCE)
        return EXIT_OK
    files = DATASETS[args.dataset].files
    for flag, given in (("--url", args.url), ("--sha256", args.sha256)):
        if given is not None and len(given) != len(files):
            parser.error(f"{args.dataset} has {len(files)} file(s); give {flag} {len(files)} time(s), not {len(given)}")
    if args.no_verify and args.sha256:
        parser.error("--sha256 and --no-verify contradict each other")
    urls = args.url or [remote.url for remote in files]
    sha256s = args.sha256 or [remote.sha256 for remote in files]
    try:
        fetch(args.dataset, args.dest, urls, sha256s, not args.no_verify, args.timeout)
    except urllib.error.HTTPError as error:
        print(f"download failed: {error.url} answered HTTP {error.code} {error.reason} (moved? try --url)",
              file=sys.stderr)
        return EXIT_OFFLINE
    except urllib.error.URLError as error:
        print(f"cannot reach the download server ({error.reason}): this machine looks offline or the host is "
              f"blocked. Download on a machine with internet access and copy the folder here.", file=sys.stderr)
        return EXIT_OFFLINE
    except (ChecksumError, UnsafeArchiveError) as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_BAD_FILE
    except (TimeoutError, ConnectionError) as error:
        print(f"download interrupted: {error}; check the connection and retry", file=sys.stderr)
        return EXIT_OFFLINE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
