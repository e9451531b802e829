"""``python -m shala_pl {fit,validate,test,predict} --config configs/....yaml`` (entry point: ``__main__.py``).

Where a run's files go (one rule): ``trainer.default_root_dir`` decides. With a logger (TensorBoard unless the
config names another) every run gets ``<default_root_dir>/version_N/`` holding its logs, ``checkpoints/`` and, at
the end of ``fit``, ``hf_model/``; without one (``--trainer.logger false``) they go straight under
``<default_root_dir>``. A config overrides one of them by naming it: the logger's ``save_dir``,
``checkpoint.dirpath``, ``predictions.path``. ``--ckpt_path last`` is the newest ``last.ckpt`` of that layout, and a
resumed ``fit`` keeps logging into the folder it resumes.
"""

from __future__ import annotations

import contextlib

import logging
import re
import warnings
from argparse import RawDescriptionHelpFormatter
from pathlib import Path
from typing import Optional

from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from shala_pl.callbacks import GracefulInterrupt, JsonlPredictionWriter, ReproducibleRNG, StepProgressBar
from shala_pl.data.datamodule import VoteDataModule
from shala_pl.data.sampling import requires_lockstep
from shala_pl.errors import ConfigValueError
from shala_pl.help import subcommand_description
from shala_pl.modules.base import VoteModule
from shala_pl import checks

SUMMARY_METRICS = ("jsd", "kl", "f1_macro", "accuracy", "entropy_corr", "contested_auroc")
DEFAULT_LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"


class ShalaCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # What the data decides is stated once, in the data section, and linked into the model.
        parser.link_arguments("model.init_args.name_or_path", "data.tokenizer_path")
        parser.link_arguments("model.init_args.trust_remote_code", "data.tokenizer_trust_remote_code")
        parser.link_arguments("model.init_args.from_hub", "data.tokenizer_from_hub")
        parser.link_arguments("data.label_names", "model.init_args.label_names", apply_on="instantiate")
        parser.link_arguments("data.verbalizers", "model.init_args.verbalizers", apply_on="instantiate")
        parser.link_arguments("data.has_multilabel", "model.init_args.multilabel", apply_on="instantiate")
        parser.link_arguments("data.prompt.reasoning", "model.init_args.answer_tag_required")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # A "last" checkpoint is always kept (resume: --ckpt_path last); nothing is written when training fails
        # (NonFiniteTrainingError keeps the last good checkpoint), only on SIGTERM / Ctrl-C (see interrupt).
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_on_exception": False})
        parser.add_lightning_class_args(ReproducibleRNG, "rng")
        parser.add_lightning_class_args(GracefulInterrupt, "interrupt")
        parser.add_lightning_class_args(JsonlPredictionWriter, "predictions")
        parser.add_argument("--validate_before_fit", type=bool, default=True,
                            help="run validation once before training so the log has a 'before' point")

    def instantiate_trainer(self, **kwargs):
        """Lightning's trainer, with :class:`StepProgressBar` as the console bar unless the config disables the bar
        or brings its own."""
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        trainer = config.get("trainer") or {}
        callbacks = trainer.get("callbacks") or []
        callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else [callbacks]
        if trainer.get("enable_progress_bar") is not False and not any(isinstance(c, ProgressBar) for c in callbacks):
            kwargs["callbacks"] = [*callbacks, StepProgressBar()]
        return super().instantiate_trainer(**kwargs)

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        # run=False (a CLI built from Python to call the trainer yourself) follows the same rule as fit
        settle_run_paths(self.config[subcommand] if subcommand else self.config, subcommand or "fit")
        if subcommand == "predict":
            self.save_config_callback = None  # predict has no run folder of its own to describe

    def fit(self, **kwargs) -> None:
        """``trainer.fit``; a run stopped by a signal exits with the shell's code for it (130 Ctrl-C, 143 SIGTERM)
        once GracefulInterrupt has written its resumable checkpoint, so scripts can tell it from a finished run."""
        with self._signal_exit_codes():
            self.trainer.fit(**kwargs)

    @contextlib.contextmanager
    def _signal_exit_codes(self):
        """Lightning ends a run stopped by Ctrl-C with ``sys.exit(1)``; exit with the signal's code instead."""
        try:
            yield
        except SystemExit:
            interrupt = next((c for c in self.trainer.callbacks if isinstance(c, GracefulInterrupt)), None)
            if interrupt is None or interrupt.exit_code is None:
                raise
            raise SystemExit(interrupt.exit_code) from None

    def before_fit(self) -> None:
        self.before_metrics = None
        config = self.config[self.subcommand]
        if config.validate_before_fit and config.get("ckpt_path") is None:
            with self._signal_exit_codes():
                before = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
            self.before_metrics = _metrics_of(before)

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        after = _metrics_of(self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False))
        self._export_path = self._export_dir()  # on every rank: trainer.log_dir is a collective under DDP
        if requires_lockstep(self.trainer.strategy):
            # rank 0 holds only its shard of the parameters: an export from it would be silently wrong
            rank_zero_warn("hf_model export skipped under a sharded strategy (FSDP / FSDP2 / DeepSpeed): export "
                           "from the full checkpoint instead (FSDP2's checkpoint folder: consolidate it first; see "
                           "docs/distributed.md)")
            self._export_path = None
        elif self.trainer.is_global_zero:
            self.model.save_pretrained(self._export_path)
        if self.trainer.is_global_zero:
            print(self._summary(self.before_metrics, after))

    def _export_dir(self):
        if hasattr(self, "_export_path"):  # set at the end of fit; None when the export was skipped
            return self._export_path
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "hf_model"

    def _logs_line(self) -> list[str]:
        logger = self.trainer.logger
        if logger is None:
            return []
        line = f"logs:             {logger.log_dir}"
        if "TensorBoard" in type(logger).__name__:
            line += f"   (tensorboard --logdir {Path(logger.root_dir)})"
        return [line]

    def _summary(self, before: dict | None, after: dict) -> str:
        """Validation before and after training; with several readouts (``val/<readout>/<metric>``) one block each,
        ``sampling``'s with the share of answers that did not parse."""
        prefixes = list(dict.fromkeys(k.rsplit("/", 1)[0] + "/" for k in after if k.startswith("val/")))
        width = 12 if len(prefixes) == 1 else 24  # room for "sampling/invalid_rate"
        lines = ["", "validation (label distribution vs human votes)", f"{'metric':<{width}}{'before':>10}{'after':>10}"]
        for prefix in prefixes:
            for name in (*SUMMARY_METRICS, "invalid_rate"):
                key = prefix + name
                if key not in after:
                    continue
                was = f"{before[key]:>10.4f}" if before and key in before else f"{'-':>10}"
                lines.append(f"{key.removeprefix('val/'):<{width}}{was}{after[key]:>10.4f}")
        checkpoint = self.trainer.checkpoint_callback
        lines += [
            "",
            *self._logs_line(),
            f"checkpoints:      {checkpoint.dirpath if checkpoint else '-'}",
            f"exported model:   {self._export_dir() or '- (skipped under a sharded strategy)'}",
        ]
        return "\n".join(lines)


def settle_run_paths(config: Namespace, subcommand: str) -> None:
    """Apply the one placement rule (module docstring) to a parsed subcommand config, in place: the default logger
    writes under ``default_root_dir``; ``--ckpt_path last`` becomes the path of that layout's newest ``last.ckpt``
    (a resumed ``fit`` logs into the folder it resumes; none is an error); ``validate``/``test`` of a run's
    checkpoint log into ``<run>/validate`` or ``<run>/test`` and ``predict`` writes ``<run>/predictions.jsonl``,
    so neither adds a ``version_N`` folder."""
    trainer = config.trainer
    root = trainer.default_root_dir or "."
    checks.require(trainer.max_steps is None or trainer.max_steps == -1 or trainer.max_steps > 0,
                   "trainer.max_steps", "a positive number of optimizer steps or -1 (no limit)", trainer.max_steps)
    if trainer.logger is None or trainer.logger is True:
        trainer.logger = Namespace(class_path=DEFAULT_LOGGER,
                                   init_args=Namespace(save_dir=root, name="", default_hp_metric=False))
    if subcommand in ("test", "predict"):
        require_checkpoint(config, subcommand, root)
    if config.get("ckpt_path") == "last":
        config.ckpt_path = str(find_last_checkpoint(config, subcommand, root))
    check_sharded_checkpoint(config)
    if subcommand != "fit":
        place_evaluation(config, subcommand, root)


def check_sharded_checkpoint(config: Namespace) -> None:
    """A checkpoint folder of ``ModelParallelStrategy`` (FSDP2) loads under that strategy only; say how to make a
    single file instead of letting ``torch.load`` fail on a directory."""
    ckpt_path = config.get("ckpt_path")
    if not ckpt_path or Path(ckpt_path).is_file() or not _is_checkpoint(Path(ckpt_path)):
        return
    strategy = config.trainer.get("strategy")
    if "ModelParallelStrategy" not in str(getattr(strategy, "class_path", strategy)):
        raise ConfigValueError(
            f"--ckpt_path {ckpt_path} is a sharded checkpoint folder (configs/strategy/fsdp2.yaml): load it with that "
            f"strategy, or make one file with `python -m shala_pl.consolidate {ckpt_path}` and pass that")


def _logger_root(config: Namespace) -> Optional[tuple[Namespace, Path]]:
    """The logger's init_args and the folder holding its ``version_N`` runs, for loggers with that layout."""
    logger = config.trainer.logger
    init_args = getattr(logger, "init_args", None) if isinstance(logger, Namespace) else None
    if init_args is None or init_args.get("save_dir") is None:
        return None
    return init_args, Path(init_args.save_dir) / (init_args.get("name") or "")


def _version(folder: Path) -> Optional[int]:
    match = re.fullmatch(r"version_(\d+)", folder.name)
    return int(match.group(1)) if match else None


def find_last_checkpoint(config: Namespace, subcommand: str, root: str) -> Path:
    logger = _logger_root(config)
    if config.checkpoint.dirpath or config.trainer.logger is False:
        where = Path(config.checkpoint.dirpath or Path(root) / "checkpoints")
        found = where / "last.ckpt" if _is_checkpoint(where / "last.ckpt") else None
    elif logger is not None:
        init_args, where = logger
        versions = sorted((_version(p.parent.parent), p) for p in where.glob("version_*/checkpoints/last.ckpt")
                          if _version(p.parent.parent) is not None and _is_checkpoint(p))
        found = versions[-1][1] if versions else None
        if found is not None and subcommand == "fit":
            init_args.version = versions[-1][0]  # keep logging (and checkpointing) into the resumed run's folder
    else:
        raise ConfigValueError("--ckpt_path last: this logger's folder layout is unknown; give the checkpoint's path")
    if found is None:
        action = "resume" if subcommand == "fit" else subcommand
        raise ConfigValueError(f"--ckpt_path last: no last.ckpt under {where} to {action} (trainer.default_root_dir "
                               f"is {root}); give a checkpoint path, or leave out --ckpt_path to start a new run")
    return found


def _is_checkpoint(path: Path) -> bool:
    """A checkpoint file, or the folder a sharded strategy writes (ModelParallelStrategy: shards + meta.pt)."""
    return path.is_file() or (path / "meta.pt").is_file()


def place_evaluation(config: Namespace, subcommand: str, root: str) -> None:
    ckpt_path = config.get("ckpt_path")
    run_dir = Path(ckpt_path).parent.parent if ckpt_path and Path(ckpt_path).parent.name == "checkpoints" else None
    if subcommand == "predict":
        config.trainer.logger = False  # predict logs nothing
        if config.predictions.path is None:
            config.predictions.path = str((run_dir or Path(root)) / "predictions.jsonl")
        return
    logger = _logger_root(config)
    if (run_dir is None or logger is None or _version(run_dir) is None
            or config.trainer.logger.class_path != DEFAULT_LOGGER):
        return
    init_args, logger_root = logger
    if init_args.get("version") is None and run_dir.parent.resolve() == logger_root.resolve():
        init_args.version, init_args.sub_dir = _version(run_dir), subcommand


def require_checkpoint(config: Namespace, subcommand: str, root: str) -> None:
    """``test`` and ``predict`` score a trained checkpoint: without ``--ckpt_path`` they would silently score the
    untrained model. ``--ckpt_path none`` (or the ``zero_shot`` method, ``VoteModule``) asks for that explicitly."""
    ckpt_path = config.get("ckpt_path")
    zero_shot = str(config.model.get("class_path", "")).rsplit(".", 1)[-1] == "VoteModule"
    if isinstance(ckpt_path, str) and ckpt_path.lower() == "none":
        config.ckpt_path = None
        if not zero_shot:
            rank_zero_warn(f"{subcommand} --ckpt_path none: scoring the untrained model (zero-shot)")
    elif ckpt_path is None and not zero_shot:
        raise ConfigValueError(
            f"{subcommand} needs a trained model: --ckpt_path PATH, or --ckpt_path last (the newest run under {root}); "
            "--ckpt_path none scores the untrained model (zero-shot)")


def _metrics_of(results: list[dict]) -> dict:
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


class _HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help, with the subcommand description's lines kept as written."""


SUMMARIES = {
    "fit": "Train a method (validation before and after; checkpoints, TensorBoard logs, the exported model).",
    "validate": "Score the model on the validation split.",
    "test": "Score a checkpoint (--ckpt_path) on the test split.",
    "predict": "Write per-example label distributions of a checkpoint (--ckpt_path) as JSON lines.",
}


def quiet_known_noise() -> None:
    """Targeted filters for messages that tell a user nothing they can act on (each matched by its text)."""
    for message in (r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's pytree use, torch >= 2.10
                    r".*is_gradient_checkpointing",  # transformers' deprecation, raised inside peft/Lightning
                    r"The dirpath has changed from",  # a checkpoint resumed from another folder: expected here
                    r"Checkpoint directory .* exists and is not empty"):  # a resumed run continues its own folder
        warnings.filterwarnings("ignore", message=message)
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropTips) for f in tips.filters):
        tips.addFilter(_DropTips())


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()  # Lightning's advertisement for its cloud logger


def cli_main(args=None, run: bool = True) -> ShalaCLI:
    quiet_known_noise()
    parser_kwargs = {"formatter_class": _HelpFormatter, "prog": "python -m shala_pl"}
    if run:
        parser_kwargs.update({
            name: {"description": subcommand_description(summary), "formatter_class": _HelpFormatter,
                   "usage": f"python -m shala_pl {name} --config CONFIG [--config MORE] [--section.option VALUE ...]"}
            for name, summary in SUMMARIES.items()
        })
    return ShalaCLI(
        VoteModule,
        VoteDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        parser_kwargs=parser_kwargs,
        args=args,
        run=run,
    )
