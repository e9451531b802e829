"""Help texts that answer without importing torch or Lightning (``python -m shala_pl --help``), and the
discovery block at the top of each subcommand's ``--help``."""

from __future__ import annotations

import textwrap
from pathlib import Path

SUBCOMMANDS = ("fit", "validate", "test", "predict")
QUICKSTART = "python -m shala_pl fit --config configs/quickstart.yaml"


def config_files(folder: str = "") -> list[str]:
    """``configs/<folder>/*.yaml`` as the README writes them (empty when run from an installed package)."""
    root = Path(__file__).resolve().parent.parent / "configs" / folder
    return [str(Path("configs", folder, p.name)) for p in sorted(root.glob("*.yaml"))]


def top_level_help() -> str:
    lines = [
        "usage: python -m shala_pl {fit,validate,test,predict} --config CONFIG [--config MORE] [--section.option VALUE]",
        "",
        "Train a language model to match human vote distributions (SHALA: GRPO with a log-score reward).",
        "",
        "subcommands:",
        "  fit       train (validation before and after; checkpoints, TensorBoard logs, exported model)",
        "  validate  score a checkpoint (or the untrained model) on the validation split",
        "  test      score a checkpoint on the test split",
        "  predict   write per-example label distributions as JSON lines (--data.predict_split test|val|train|all)",
        "",
        "start here:",
        f"  {QUICKSTART}",
        "  python -m shala_pl fit --help          every option of fit: sources, rewards, readouts, configs",
        "  python -m shala_pl fit --model.help GRPOModule              a method's own options",
        "  python -m shala_pl fit --config CONFIG --print_config     the full resolved config",
        "",
        "common options:",
        "  --trainer.default_root_dir DIR   where logs, checkpoints and the exported model go",
        "  --ckpt_path last|PATH|none       resume (fit) or score (validate/test/predict) a checkpoint",
        "  SHALA_DEBUG=1                    show a traceback with an error message",
    ]
    configs = config_files() + config_files("method") + config_files("strategy")
    if configs:
        lines += ["", "configs (compose a method or strategy after a run config):"] + [f"  {c}" for c in configs]
    return "\n".join(lines)


def subcommand_description(summary: str) -> str:
    """What a user needs to pick values: the shipped configs and every name the options accept, from the
    registries themselves (imported here, after Lightning, so this costs nothing extra)."""
    from typing import get_args

    from shala_pl.data.sources import SOURCE_NAMES
    from shala_pl.modules.base import Readout
    from shala_pl.rl.losses import Aggregation
    from shala_pl.rl.rewards import REWARD_NAMES
    from shala_pl.rl.rollout import RolloutMode

    def names(values, indent: int = 25) -> str:
        return textwrap.fill(", ".join(values), width=118, initial_indent=" " * indent,
                             subsequent_indent=" " * indent, break_on_hyphens=False).lstrip()

    lines = [
        summary,
        "",
        f"start:                   {QUICKSTART}",
        f"configs:                 {names(config_files()) or '-'}",
        f"methods:                 {names(config_files('method')) or '-'}",
        "                         (compose: --config RUN --config METHOD)",
        f"strategies:              {names(config_files('strategy')) or '-'}",
        f"data.source:             {names(SOURCE_NAMES)}",
        "                         (each source's data.source_options: python tools/data_stats.py --help)",
        "model:                   --model.help GRPOModule | SFTModule | VoteModule (zero-shot) lists a method's options",
        f"model.rewards (weights): {names(REWARD_NAMES)}   e.g. --model.init_args.rewards '{{log_score: 1.0}}'",
        "                         or your own: --model.init_args.rewards '{my_pkg.my_module.brier: 1.0}' "
        "(signature: shala_pl/rl/rewards.py)",
        f"model.readouts:          {names(get_args(Readout))}",
        f"model.loss.aggregation:  {names(get_args(Aggregation))}",
        f"model.rollout.mode:      {names(get_args(RolloutMode))}",
        "--ckpt_path:             PATH, last (newest run under trainer.default_root_dir), none (untrained model)",
    ]
    return "\n".join(lines)
