"""``python -m shala_pl {fit,validate,test,predict} --config configs/....yaml``"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.utilities.rank_zero import rank_zero_warn

from shala_pl.callbacks import GracefulInterrupt, JsonlPredictionWriter, ReproducibleRNG
from shala_pl.data.datamodule import VoteDataModule
from shala_pl.data.sampling import requires_lockstep
from shala_pl.modules.base import VoteModule

SUMMARY_METRICS = ("jsd", "kl", "f1_macro", "accuracy")


class ShalaCLI(LightningCLI):
    def add_arguments_to_parser(self, parser) -> None:
        # What the data decides is stated once, in the data section, and linked into the model.
        parser.link_arguments("model.init_args.name_or_path", "data.tokenizer_path")
        parser.link_arguments("data.label_names", "model.init_args.label_names", apply_on="instantiate")
        parser.link_arguments("data.verbalizers", "model.init_args.verbalizers", apply_on="instantiate")
        parser.link_arguments("data.has_multilabel", "model.init_args.multilabel", apply_on="instantiate")
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
        # A "last" checkpoint is always kept (resume: --ckpt_path last); nothing is written when training fails
        # (NonFiniteTrainingError keeps the last good checkpoint), only on SIGTERM / Ctrl-C (see interrupt).
        parser.set_defaults({"checkpoint.save_last": True, "checkpoint.save_on_exception": False})
        parser.add_lightning_class_args(ReproducibleRNG, "rng")
        parser.add_lightning_class_args(GracefulInterrupt, "interrupt")
        parser.add_lightning_class_args(JsonlPredictionWriter, "predictions")
        parser.add_argument("--validate_before_fit", type=bool, default=True,
                            help="run validation once before training so the log has a 'before' point")

    def before_fit(self) -> None:
        self.before_metrics = None
        config = self.config[self.subcommand]
        if config.validate_before_fit and config.get("ckpt_path") is None:
            self.before_metrics = _metrics_of(self.trainer.validate(self.model, datamodule=self.datamodule,
                                                                    verbose=False))

    def after_fit(self) -> None:
        if self.trainer.interrupted:
            return
        after = _metrics_of(self.trainer.validate(self.model, datamodule=self.datamodule, verbose=False))
        self._export_path = self._export_dir()  # on every rank: trainer.log_dir is a collective under DDP
        if requires_lockstep(self.trainer.strategy):
            # rank 0 holds only its shard of the parameters: an export from it would be silently wrong
            rank_zero_warn("hf_model export skipped under a sharded strategy (FSDP / DeepSpeed): export from the "
                           "full checkpoint instead (see docs/distributed.md)")
        elif self.trainer.is_global_zero:
            self.model.save_pretrained(self._export_path)
        if self.trainer.is_global_zero:
            print(self._summary(self.before_metrics, after))

    def _export_dir(self):
        if getattr(self, "_export_path", None) is not None:
            return self._export_path
        return Path(self.trainer.log_dir or self.trainer.default_root_dir) / "hf_model"

    def _summary(self, before: dict | None, after: dict) -> str:
        lines = ["", "validation (label distribution vs human votes)", f"{'metric':<12}{'before':>10}{'after':>10}"]
        for name in SUMMARY_METRICS:
            key = next((k for k in after if k.endswith("/" + name)), None)
            if key is None:
                continue
            was = f"{before[key]:>10.4f}" if before and key in before else f"{'-':>10}"
            lines.append(f"{name:<12}{was}{after[key]:>10.4f}")
        checkpoint = self.trainer.checkpoint_callback
        lines += [
            "",
            f"TensorBoard logs: {self._export_dir().parent}   (tensorboard --logdir {self.trainer.default_root_dir})",
            f"checkpoints:      {checkpoint.dirpath if checkpoint else '-'}",
            f"exported model:   {self._export_dir()}",
        ]
        return "\n".join(lines)


def _metrics_of(results: list[dict]) -> dict:
    return {k: float(v) for k, v in (results[0] if results else {}).items()}


def cli_main(args=None, run: bool = True) -> ShalaCLI:
    return ShalaCLI(
        VoteModule,
        VoteDataModule,
        subclass_mode_model=True,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )
