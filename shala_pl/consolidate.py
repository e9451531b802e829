"""One checkpoint file from the folder ``ModelParallelStrategy`` (``configs/strategy/fsdp2.yaml``) writes.

    python -m shala_pl.consolidate runs/x/checkpoints/last.ckpt [OUT]     (OUT: last.ckpt.consolidated)

The folder holds one shard file per rank (torch.distributed.checkpoint) and ``meta.pt`` (everything else Lightning
saves). The result is an ordinary Lightning checkpoint, loadable with ``torch.load(weights_only=True)``: full
weights under ``state_dict`` and the optimizer states keyed by parameter index as a single-process optimizer
saves them. ``validate``/``test``/``predict --ckpt_path OUT`` and ``tools/export_pretrained.py`` read it without a
process group. (Lightning's own ``lightning.pytorch.utilities.consolidate_checkpoint`` expects the ``model`` key of
``FSDPStrategy`` folders and fails on these with ``KeyError: 'model'``.)
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import torch

METADATA = "meta.pt"  # lightning.fabric.utilities.load._METADATA_FILENAME


def consolidate(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write ``folder``'s shards and metadata as one checkpoint file; returns its path."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = Path(folder)
    if not (folder / METADATA).is_file():
        raise FileNotFoundError(f"{folder} is not a sharded checkpoint folder (no {METADATA})")
    out = Path(out) if out is not None else folder.with_name(folder.name + ".consolidated")
    dcp_to_torch_save(folder, out)  # the shards, gathered: {"state_dict": ..., "optimizer_0": ...}
    shards = torch.load(out, weights_only=True, map_location="cpu")
    checkpoint = torch.load(folder / METADATA, weights_only=True, map_location="cpu")
    checkpoint["state_dict"] = shards.pop("state_dict")
    optimizers = sorted((k for k in shards if re.fullmatch(r"optimizer_\d+", k)), key=lambda k: int(k.split("_")[1]))
    checkpoint["optimizer_states"] = [_by_parameter_index(shards.pop(k)) for k in optimizers]
    torch.save(checkpoint, out)
    return out


def _by_parameter_index(state: dict) -> dict:
    """``get_optimizer_state_dict`` keys states and param groups by parameter name; ``Optimizer.load_state_dict``
    wants the parameters' positions in the param groups, in order."""
    index = {name: i for i, name in enumerate(name for group in state["param_groups"] for name in group["params"])}
    groups = [{**group, "params": [index[name] for name in group["params"]]} for group in state["param_groups"]]
    return {"state": {index[name]: value for name, value in state["state"].items()}, "param_groups": groups}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m shala_pl.consolidate", description=__doc__.split("\n")[0])
    parser.add_argument("folder", help="a checkpoint folder written under configs/strategy/fsdp2.yaml")
    parser.add_argument("out", nargs="?", help="output file (default: FOLDER.consolidated)")
    args = parser.parse_args(argv)
    print(consolidate(args.folder, args.out))


if __name__ == "__main__":
    main()
