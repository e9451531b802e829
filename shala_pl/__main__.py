"""``python -m shala_pl {fit,validate,test,predict} --config configs/....yaml``

This module stays light: the top-level help and a config-less call answer without importing Lightning, and the
project's own errors (:class:`shala_pl.errors.ShalaError`) end the run with one line on stderr and exit status 2
(``SHALA_DEBUG=1`` shows the traceback). Interrupted runs exit 130 (SIGINT) or 143 (SIGTERM).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SUBCOMMANDS = ("fit", "validate", "test", "predict")
QUICKSTART = "python -m shala_pl fit --config configs/quickstart.yaml"


def _configs() -> list[str]:
    """Run and method configs shipped with the repository (empty when run from an installed package)."""
    root = Path(__file__).resolve().parent.parent / "configs"
    found = []
    for folder in ("", "method", "strategy"):
        found += [str(Path("configs", folder, p.name)) for p in sorted((root / folder).glob("*.yaml"))]
    return found


def top_level_help() -> str:
    configs = _configs()
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
        "  python -m shala_pl fit --help          every option of fit, with its help text",
        "  python -m shala_pl fit --config CONFIG --print_config     the full resolved config",
        "",
        "common options:",
        "  --trainer.default_root_dir DIR   where logs, checkpoints and the exported model go",
        "  --ckpt_path last|PATH            resume (fit) or score (validate/test/predict) a checkpoint",
        "  SHALA_DEBUG=1                    show a traceback with an error message",
    ]
    if configs:
        lines += ["", "configs (compose a method or strategy after a run config):"] + [f"  {c}" for c in configs]
    return "\n".join(lines)


def _fail(message: str) -> int:
    print(f"shala_pl: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(top_level_help(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] in SUBCOMMANDS and len(argv) == 1:
        return _fail(f"'{argv[0]}' needs a config; start with: {QUICKSTART}  (all configs: python -m shala_pl --help)")

    try:
        from shala_pl.cli import cli_main

        cli_main(None if from_command_line else argv)
    except Exception as error:
        found = user_error(error)
        if found is None or os.environ.get("SHALA_DEBUG"):
            raise
        return _fail(str(found))
    return 0


def user_error(error: BaseException):
    """The :class:`ShalaError` that caused ``error``, if any. jsonargparse wraps what a class raises while it is
    instantiated (``ValueError: Does not validate against any of the Union subtypes``) and keeps the original as
    ``__cause__``; Lightning re-raises what the model or data module raised inside the trainer unchanged."""
    from shala_pl.errors import ShalaError

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, ShalaError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":
    sys.exit(main())
