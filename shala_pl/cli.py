"""``python -m shala_pl {fit,validate,test,predict} --config configs/....yaml`` (entry point: ``__main__.py``).

Where a run's files go (one rule): ``trainer.default_root_dir`` decides. With a logger (TensorBoard unless the
config names another; any logger, see ``place_logger_run``) every run gets ``<default_root_dir>/version_N/`` holding
its ``checkpoints/`` and, at the end of ``fit``, ``hf_model/`` (TensorBoard's and CSV's logs too; MLflow and W&B keep
their own store); without one (``--trainer.logger false``) they go straight under
``<default_root_dir>``. A config overrides one of them by naming it: the logger's ``save_dir``,
``checkpoint.dirpath``, ``predictions.path``. ``--ckpt_path last`` is the newest run's newest state (the highest
``global_step`` among its ``last*.ckpt``), and a resumed ``fit`` keeps logging into the folder it resumes;
``--ckpt_path best`` (validate/test/predict) is the best checkpoint by ``checkpoint.monitor`` recorded in that state.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from argparse import RawDescriptionHelpFormatter
from pathlib import Path
from typing import Optional

from jsonargparse import DefaultHelpFormatter, Namespace
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn

from shala_pl.callbacks import GracefulInterrupt, JsonlPredictionWriter, MidEpochStop, ReproducibleRNG, StepProgressBar
from shala_pl.checkpoints import AtomicCheckpointIO, best_checkpoint, checkpoint_problem, newest_checkpoint
from shala_pl.data.datamodule import VoteDataModule
from shala_pl.data.sampling import requires_lockstep
from shala_pl.errors import ConfigValueError, NonFinitePredictionsError
from shala_pl.metrics.collection import NONFINITE
from shala_pl.help import subcommand_description
from shala_pl.media import run_folder_of
from shala_pl.packaged_configs import resolve_config_args
from shala_pl.precision import cpu_precision
from shala_pl.modules.base import VoteModule
from shala_pl import checks

SUMMARY_METRICS = ("jsd", "kl", "f1_macro", "accuracy", "entropy_corr", "contested_auroc")
DEFAULT_LOGGER = "lightning.pytorch.loggers.TensorBoardLogger"
VERSIONED_LOGGERS = ("TensorBoardLogger", "CSVLogger")  # they keep <save_dir>/<name>/version_N themselves


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
            callbacks.append(StepProgressBar())
        kwargs["callbacks"] = [*callbacks, MidEpochStop()]
        choice = cpu_precision(trainer.get("precision"), trainer.get("accelerator"))  # bf16 only where native
        if choice is not None:
            kwargs["precision"] = choice.precision
            rank_zero_info(choice.note)
        built = super().instantiate_trainer(**kwargs)
        if type(built.strategy.checkpoint_io) is TorchCheckpointIO:  # not a strategy's or the config's own writer
            built.strategy.checkpoint_io = AtomicCheckpointIO()
        return built

    def parse_arguments(self, parser, args) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        # run=False (a CLI built from Python to call the trainer yourself) follows the same rule as fit
        settle_run_paths(self.config[subcommand] if subcommand else self.config, subcommand or "fit")
        checks.check_run_config(self.config[subcommand] if subcommand else self.config, subcommand or "fit")
        if subcommand == "predict":
            self.save_config_callback = None  # predict has no run folder of its own to describe

    def _run_subcommand(self, subcommand: str) -> None:
        """Every stop by a signal, in any phase of the subcommand, ends with the shell's code for it (130 Ctrl-C,
        143 SIGTERM) and one line saying what was saved, so scripts can tell it from a finished run."""
        interrupt = self._interrupt()
        if interrupt is None:
            return super()._run_subcommand(subcommand)
        self._phase = subcommand
        interrupt.install()  # a signal between the trainer's runs is recorded too, and acted on at the next boundary
        try:
            super()._run_subcommand(subcommand)
        except SystemExit:  # Lightning's SIGTERMException, or its sys.exit(1) after a second Ctrl-C
            if interrupt.exit_code is None:
                raise
            self._say_what_was_saved(interrupt)
            raise SystemExit(interrupt.exit_code) from None
        finally:
            interrupt.uninstall()
        if interrupt.requested is not None:  # arrived after the last boundary (the export): everything was saved
            interrupt.signum = interrupt.requested
            rank_zero_info(f"{interrupt.stopped_by} received as the {subcommand} finished: everything was written "
                           f"(exit status {interrupt.exit_code})")
            raise SystemExit(interrupt.exit_code)

    def _interrupt(self) -> Optional[GracefulInterrupt]:
        return next((c for c in self.trainer.callbacks if isinstance(c, GracefulInterrupt)), None)

    def _say_what_was_saved(self, interrupt: GracefulInterrupt) -> None:
        """``fit``'s own stop is reported by GracefulInterrupt (it knows whether it saved); the others here."""
        stopped = f"stopped by {interrupt.stopped_by}" + (" (aborted: second Ctrl-C)" if interrupt.aborted else "")
        code = f"(exit status {interrupt.exit_code})"
        if self._phase == "fit" and not interrupt.aborted:
            return
        if self._phase == "fit":
            rank_zero_info(f"{stopped} during training: no checkpoint written for the step in progress; the "
                           f"checkpoints folder holds what was saved before {code}")
        elif self._phase == "before_fit":
            rank_zero_info(f"{stopped} during the validation before training: nothing trained, no checkpoint "
                           f"written {code}")
        elif self._phase == "after_fit":
            last = GracefulInterrupt.last_checkpoint_path(self.trainer)
            rank_zero_info(f"{stopped} during the validation after training: the trained model is in {last} (step "
                           f"{self.trainer.global_step}); the hf_model export and the summary were skipped {code}")
        else:
            rank_zero_info(f"{stopped} during {self._phase}: no results written {code}")

    def before_fit(self) -> None:
        self.before_metrics = None
        config = self.config[self.subcommand] if self.subcommand else self.config  # no subcommand: shala_pl.api
        if config.validate_before_fit and config.get("ckpt_path") is None:
            self._phase = "before_fit"
            before = self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False)
            self.before_metrics = _metrics_of(before)
        self._phase = "fit"

    def after_fit(self) -> None:
        self.exported_model: Optional[Path] = None
        self.validation_after: dict[str, float] = {}
        if self.trainer.interrupted:
            return
        self._phase = "after_fit"
        after = self.validation_after = _metrics_of(self.trainer.validate(self.model, datamodule=self.datamodule,
                                                                           verbose=False))
        export_dir = run_folder(self.trainer) / "hf_model"  # on every rank: trainer.log_dir is a collective under DDP
        if requires_lockstep(self.trainer.strategy):
            # rank 0 holds only its shard of the parameters: an export from it would be silently wrong
            rank_zero_warn("hf_model export skipped under a sharded strategy (FSDP / FSDP2 / DeepSpeed): export "
                           "from the full checkpoint instead (FSDP2's checkpoint folder: consolidate it first; see "
                           "docs/distributed.md)")
        elif self.trainer.is_global_zero:
            self.exported_model = self.model.save_pretrained(export_dir, self.datamodule, after)
        if self.trainer.is_global_zero:
            print(self._summary(self.before_metrics, after))
        refuse_nonfinite(after, "val")

    def after_validate(self) -> None:
        refuse_nonfinite(self.trainer.callback_metrics, "val")

    def after_test(self) -> None:
        refuse_nonfinite(self.trainer.callback_metrics, "test")

    def _logs_line(self) -> list[str]:
        logger = self.trainer.logger
        if logger is None:
            return []
        line = f"logs:             {getattr(logger, 'log_dir', None) or logger.save_dir}"
        if "TensorBoard" in type(logger).__name__:
            line += f"   (tensorboard --logdir {Path(logger.root_dir)})"
        return [line]

    def _summary(self, before: dict | None, after: dict) -> str:
        """Validation before and after training: one block per readout (``val/<metric>``, ``val/sampling/<metric>``),
        ``sampling``'s with the share of answers that did not parse; the count of non-finite predictions if any."""
        prefixes = list(dict.fromkeys(k.rsplit("/", 1)[0] + "/" for k in after if k.startswith("val/")))
        keys = [prefix + name for prefix in prefixes for name in (*SUMMARY_METRICS, "invalid_rate", NONFINITE)
                if prefix + name in after]
        # the non-finite count only when there is one
        keys = [k for k in keys if not k.endswith(NONFINITE) or after[k] or (before or {}).get(k)]
        width = max([12, *(len(k) - 2 for k in keys)])  # names without "val/", two spaces before the numbers
        lines = ["", "validation (label distribution vs human votes)", f"{'metric':<{width}}{'before':>10}{'after':>10}"]
        for key in keys:
            shown = "10.0f" if key.endswith(NONFINITE) else "10.4f"  # a count of rows
            was = f"{before[key]:>{shown}}" if before and key in before else f"{'-':>10}"
            lines.append(f"{key.removeprefix('val/'):<{width}}{was}{after[key]:>{shown}}")
        checkpoint = self.trainer.checkpoint_callback
        lines += [
            "",
            *self._logs_line(),
            f"checkpoints:      {checkpoint.dirpath if checkpoint else '-'}",
            f"exported model:   {self.exported_model or '- (skipped under a sharded strategy)'}",
        ]
        return "\n".join(lines)


def refuse_nonfinite(metrics: dict, stage: str) -> None:
    """Fail a run whose last evaluation met NaN or infinite model probabilities: its JSD and KL are NaN."""
    split = {"val": "validation", "test": "test"}[stage]
    found = [f"{int(value)} rows of the {split} split ({key})" for key, value in metrics.items()
             if key.startswith(f"{stage}/") and key.endswith(NONFINITE) and float(value) > 0]
    if found:
        raise NonFinitePredictionsError(f"the model's label probabilities are NaN or infinite for {'; '.join(found)}:"
                                        " its jsd and kl are NaN, not scores")


def run_folder(trainer) -> Path:
    """``<default_root_dir>/version_N`` of this run whatever the logger (module docstring); without one
    ``default_root_dir``. A collective under DDP (``trainer.log_dir``): call it on every rank."""
    log_dir = Path(trainer.log_dir or trainer.default_root_dir)  # on every rank, before the branch below
    return log_dir if type(trainer.logger).__name__ in VERSIONED_LOGGERS or trainer.logger is None \
        else run_folder_of(trainer)


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
    place_logger_run(config, subcommand, root)
    if config.get("ckpt_path") == "last":
        config.ckpt_path = str(find_last_checkpoint(config, subcommand, root))
    elif config.get("ckpt_path") == "best":
        config.ckpt_path = str(find_best_checkpoint(config, subcommand, root))
    check_sharded_checkpoint(config)
    check_checkpoint_file(config)
    if subcommand != "fit":
        place_evaluation(config, subcommand, root)


def place_logger_run(config: Namespace, subcommand: str, root: str) -> None:
    """Any logger, the same run folder: TensorBoard and CSV loggers left at Lightning's ``lightning_logs`` name
    write ``<root>/version_N`` like the default; for loggers with a store of their own (MLflow, W&B, ...) ``fit``
    puts checkpoints (and so ``hf_model/``) in the next free ``<root>/version_N``, and MLflow's default ``./mlruns``
    store moves to ``<root>/mlruns``. Computed at parse time on every rank, before anything is written there.
    (``--ckpt_path last`` with such a logger needs ``checkpoint.dirpath``: its folder is not known otherwise.)"""
    logger = config.trainer.logger
    if not isinstance(logger, Namespace) or getattr(logger, "init_args", None) is None:
        return
    kind, init_args = str(logger.class_path).rsplit(".", 1)[-1], logger.init_args
    if kind in VERSIONED_LOGGERS:
        if init_args.get("save_dir") is None:
            init_args.save_dir = root
        if init_args.get("name") == "lightning_logs":
            init_args.name = ""
        return
    if kind == "MLFlowLogger" and init_args.get("tracking_uri") is None and init_args.get("save_dir") == "./mlruns":
        init_args.save_dir = str(Path(root) / "mlruns")
    if subcommand == "fit" and config.checkpoint.dirpath is None and config.get("ckpt_path") != "last":
        taken = [_version(p) for p in Path(root).glob("version_*")]
        next_version = max((v for v in taken if v is not None), default=-1) + 1
        config.checkpoint.dirpath = str(Path(root) / f"version_{next_version}" / "checkpoints")


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
    """The newest run's newest state: the run is the highest ``version_N`` holding a ``last*.ckpt`` (or the one
    checkpoint folder without a logger), the state the highest ``global_step`` among its ``last*.ckpt``."""
    logger = _logger_root(config)
    if config.checkpoint.dirpath or config.trainer.logger is False:
        where = Path(config.checkpoint.dirpath or Path(root) / "checkpoints")
        found = newest_checkpoint(where) or (where / "last.ckpt" if _is_checkpoint(where / "last.ckpt") else None)
    elif logger is not None:
        init_args, where = logger
        runs = sorted((_version(p), p) for p in where.glob("version_*") if _version(p) is not None)
        found = None
        for version, run in reversed(runs):
            found = newest_checkpoint(run / "checkpoints")
            if found is None and _is_checkpoint(run / "checkpoints" / "last.ckpt"):  # a sharded folder
                found = run / "checkpoints" / "last.ckpt"
            if found is not None:
                if subcommand == "fit":
                    init_args.version = version  # keep logging (and checkpointing) into the resumed run's folder
                break
    else:
        raise ConfigValueError("--ckpt_path last: this logger's folder layout is unknown; give the checkpoint's path")
    if found is None:
        action = "resume" if subcommand == "fit" else subcommand
        raise ConfigValueError(f"--ckpt_path last: no last.ckpt under {where} to {action} (trainer.default_root_dir "
                               f"is {root}); give a checkpoint path, or leave out --ckpt_path to start a new run")
    return found


def find_best_checkpoint(config: Namespace, subcommand: str, root: str) -> Path:
    """The best checkpoint (by ``checkpoint.monitor``) that the newest run recorded in its newest state."""
    if subcommand == "fit":
        raise ConfigValueError("--ckpt_path best is for validate, test and predict; fit resumes the newest state: "
                               "--ckpt_path last")
    last = find_last_checkpoint(config, subcommand, root)
    best, monitor = best_checkpoint(last)
    if monitor is None:
        raise ConfigValueError(f"--ckpt_path best: the run of {last} monitored no metric (set checkpoint.monitor, "
                               "e.g. val/jsd with checkpoint.mode min, when training); use --ckpt_path last")
    if best is None or not best.is_file():
        raise ConfigValueError(f"--ckpt_path best: the run of {last} has no best checkpoint for {monitor} yet "
                               f"{'(' + str(best) + ' is missing) ' if best else ''}(it is written at a validation)")
    return best


def check_checkpoint_file(config: Namespace) -> None:
    """A ``--ckpt_path`` that is missing, empty, truncated or not a training checkpoint: one line, not a traceback."""
    ckpt_path = config.get("ckpt_path")
    if not ckpt_path or "://" in str(ckpt_path):
        return
    problem = checkpoint_problem(Path(ckpt_path))
    if problem is not None:
        raise ConfigValueError(f"--ckpt_path {ckpt_path}: {problem}")



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
    for name, dropped in (("lightning.pytorch.utilities.rank_zero", _DropTips),
                          ("lightning.pytorch.trainer.connectors.signal_connector", _DropSigtermNotice)):
        logger = logging.getLogger(name)
        if not any(isinstance(f, dropped) for f in logger.filters):
            logger.addFilter(dropped())


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()  # Lightning's advertisement for its cloud logger


class _DropSigtermNotice(logging.Filter):
    """"Received SIGTERM: 15" from Lightning's handler, which is active for a moment at the start of each trainer
    run before GracefulInterrupt replaces it; GracefulInterrupt states what happened instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Received SIGTERM" not in record.getMessage()


def cli_main(args=None, run: bool = True) -> ShalaCLI:
    """The command line (``args``: the arguments after the program name, default ``sys.argv[1:]``); a ``--config``
    that names no file may name a shipped config (``quickstart``, ``smollm2/chaosnli_mnli``)."""
    quiet_known_noise()
    if args is None:  # Lightning reads sys.argv itself (and DDP's launcher re-runs it): resolve it in place
        sys.argv[1:] = resolve_config_args(sys.argv[1:])
    else:
        args = resolve_config_args(list(args))
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
