"""Export a training checkpoint as a Hugging Face directory (LoRA adapter or full model, plus tokenizer).

    python tools/export_pretrained.py --config configs/chaosnli_snli.yaml --ckpt_path runs/.../last.ckpt --out_dir OUT_DIR

The result loads with peft / transformers alone, without this project, from any folder (README.md: the model card). The checkpoint is read with
``weights_only=True``: it cannot execute code.
"""

from __future__ import annotations

import argparse

import torch

from shala_pl.cli import cli_main


def export(config_args: list[str], ckpt_path: str, out_dir: str) -> None:
    cli = cli_main(config_args, run=False)
    model = cli.model
    model.configure_model()
    checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    model.load_state_dict(checkpoint["state_dict"], strict=False)
    path = model.save_pretrained(out_dir, cli.datamodule)  # the card describes the data of this config
    print(f"exported {'LoRA adapter' if model.uses_lora else 'model'} and tokenizer to {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", action="append", required=True, help="run config(s), as given to fit")
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--out_dir", required=True)
    args, overrides = parser.parse_known_args(argv)
    config_args = [item for config in args.config for item in ("--config", config)] + overrides
    export(config_args, args.ckpt_path, args.out_dir)


if __name__ == "__main__":
    main()
