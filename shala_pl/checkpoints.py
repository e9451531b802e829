"""Checkpoint files: written atomically, checked before use, and found by what they hold.

- :class:`AtomicCheckpointIO`: writes ``<name>.ckpt`` through a temporary file beside it and ``os.replace``, so
  a checkpoint on disk is always a whole one. Lightning's own writer stages the file in ``$TMPDIR`` and moves it,
  which across filesystems is a copy: a full disk then leaves a truncated checkpoint where the good one was.
- :func:`checkpoint_problem`: what is wrong with a ``--ckpt_path`` (missing, empty, truncated, not a checkpoint),
  in words, before Lightning meets it with a traceback.
- :func:`newest_checkpoint` / :func:`best_checkpoint`: what ``--ckpt_path last`` and ``--ckpt_path best`` mean
  in one run's ``checkpoints/`` folder: the highest ``global_step`` among ``last*.ckpt`` whatever their names, and
  the best checkpoint recorded by the checkpoint callback in that newest state.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import Any, Optional

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from shala_pl.errors import ShalaError, cause_of

_LAST = re.compile(r"last(-v\d+)?\.ckpt")


class CheckpointWriteError(ShalaError, OSError):
    """A checkpoint could not be written (disk full, no permission); the previous file at that path is unchanged."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer for local files, made atomic on the target's own filesystem."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Optional[Any] = None) -> None:
        if "://" in str(path):  # remote storage: fsspec's transactions are the atomic path there
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by a process killed while writing
            stale.unlink(missing_ok=True)
        temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(temporary, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, path)
        except (OSError, RuntimeError) as error:
            temporary.unlink(missing_ok=True)
            # torch's zip writer reports a failed write as a RuntimeError raised while handling the OSError
            cause = cause_of(error, OSError)
            if cause is None:
                raise
            kept = "the previous checkpoint there is unchanged" if path.exists() else "no checkpoint was kept there"
            raise CheckpointWriteError(f"could not write checkpoint {path}: {cause.strerror or cause}; {kept}") \
                from error
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)


def checkpoint_problem(path: Path) -> Optional[str]:
    """``None`` for a file that loads as a Lightning checkpoint, else what is wrong with it, in a few words."""
    if not path.exists():
        return "no such file"
    if path.is_dir():  # a sharded strategy's checkpoint (FSDP2: meta.pt; DeepSpeed: latest): that strategy checks it
        sharded = (path / "meta.pt").is_file() or (path / "latest").is_file()
        return None if sharded else "a folder that holds no sharded checkpoint (no meta.pt or latest)"
    size = path.stat().st_size
    if size == 0:
        return "the file is empty (0 bytes)"
    with open(path, "rb") as file:
        magic = file.read(4)
    if not zipfile.is_zipfile(path):
        if magic == b"PK\x03\x04":
            return f"the file is truncated or corrupt ({size} bytes, its zip index is missing)"
        return f"not a PyTorch checkpoint ({size} bytes that torch.save did not write)"
    try:
        content = torch.load(path, map_location="cpu", mmap=True, weights_only=True)
    except Exception as error:  # noqa: BLE001 - a damaged archive fails in many ways; say which
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        return f"the file is corrupt ({first_line})"
    if not isinstance(content, dict) or "state_dict" not in content or "global_step" not in content:
        return "a torch file but not a training checkpoint (no state_dict / global_step)"
    return None


def checkpoint_step(path: Path) -> int:
    """The ``global_step`` a checkpoint holds (a sharded folder keeps it in ``meta.pt``); -1 if it cannot be read."""
    target = path / "meta.pt" if path.is_dir() else path
    try:
        return int(torch.load(target, map_location="cpu", mmap=not path.is_dir(), weights_only=True)["global_step"])
    except Exception:  # noqa: BLE001 - an unreadable file is never the newest state
        return -1


def newest_checkpoint(folder: Path) -> Optional[Path]:
    """The ``last*.ckpt`` in ``folder`` holding the highest ``global_step`` (the later-written on a tie)."""
    found = [(checkpoint_step(p), p.stat().st_mtime, p) for p in folder.glob("last*.ckpt") if _LAST.fullmatch(p.name)]
    found = [entry for entry in found if entry[0] >= 0]
    return max(found, key=lambda entry: entry[:2])[2] if found else None


def best_checkpoint(last: Path) -> tuple[Optional[Path], Optional[str]]:
    """The best checkpoint the run's checkpoint callback recorded in ``last`` (its newest state) and the metric it
    monitored; ``(None, None)`` when it monitored nothing. A run folder that was moved still resolves: the file is
    looked up beside ``last`` by name."""
    target = last / "meta.pt" if last.is_dir() else last
    states = torch.load(target, map_location="cpu", mmap=not last.is_dir(), weights_only=True).get("callbacks", {})
    for key, state in states.items():
        if key.startswith("ModelCheckpoint") and state.get("monitor"):
            best = state.get("best_model_path")
            if not best:
                return None, state["monitor"]
            best = Path(best)
            return (best if best.exists() else last.parent / best.name), state["monitor"]
    return None, None
