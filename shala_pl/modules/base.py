"""The shared LightningModule: policy loading, label-distribution readouts, evaluation, predict, saving.

Used as is, it is the ``zero_shot`` method (validate / test / predict only). ``GRPOModule`` and ``SFTModule`` add
training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import MeanMetric

from shala_pl.data.batch import VoteBatch
from shala_pl.errors import ConfigValueError
from shala_pl.metrics import build_eval_metrics, compute_flat
from shala_pl.models.loading import DType, LoraSettings, load_causal_lm, load_tokenizer
from shala_pl.models.scoring import label_log_probs
from shala_pl.models.sharding import fully_shard_decoder
from shala_pl.rl.answer_parsing import AnswerParser
from shala_pl.rl.rewards import answer_histogram
from shala_pl.rl.rollout import RolloutSettings, sample_answers

log = logging.getLogger(__name__)

Readout = Literal["label_probs", "sampling"]
# A readout's metrics are logged as ``<stage>/<prefix><metric>`` whatever the other readouts are: the exact label
# distribution as ``val/jsd``, the sampled answers' histogram as ``val/sampling/jsd``.
READOUT_PREFIXES: dict[str, str] = {"label_probs": "", "sampling": "sampling/"}
FIGURE_EXAMPLES = 4  # examples drawn in the validation figure of model vs human distributions


@dataclass
class SamplingReadout:
    """The ``sampling`` readout: the model's distribution as the histogram of labels its sampled answers name.

    Args:
        num_samples: answers sampled per prompt; their label histogram is the model's distribution.
        smoothing: added to every label's count before normalising (reported with the results).
        max_new_tokens: the longest answer, in tokens.
        temperature: sampling temperature.
        top_p: nucleus-sampling mass.
        seed: evaluation sampling's own seed; it does not touch the training RNG.
    """

    num_samples: int = 16
    smoothing: float = 0.0
    max_new_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 1234

    def generation(self) -> RolloutSettings:
        return RolloutSettings(mode="generate", num_generations=self.num_samples, max_new_tokens=self.max_new_tokens,
                               temperature=self.temperature, top_p=self.top_p)


@dataclass
class ReadoutResult:
    """The model's label distribution from one readout, with the sampled answers behind it (``sampling``)."""

    probs: Tensor  # [B, K]
    texts: Optional[list[str]] = None  # B * n decoded answers, grouped by prompt
    choices: Optional[Tensor] = None  # [B, n] label index of each answer, -1 when it did not parse


def _default_optimizer(params):
    return torch.optim.AdamW(params, lr=1e-4, fused=True)


class VoteModule(LightningModule):
    """The policy and its label distribution, scored against the human votes (the zero-shot method on its own).

    Args:
        name_or_path: the base model: a local Hugging Face folder (shala-pl get-model, shala-pl
            make-tiny-model), a LoRA adapter folder of an export, or a Hub id with from_hub.
        label_names: the labels in the data's order (linked from the data module).
        verbalizers: the text the model says for each label right after the prompt (linked from the data module).
        multilabel: also score multi-label targets (linked from the data module: GoEmotions).
        answer_tag_required: free-text answers count only inside <answer></answer> (linked from
            data.prompt.reasoning).
        lora: train a LoRA adapter instead of every weight ({r: 16, alpha: 32}); null trains the full model.
        dtype: the weights' dtype (auto: the checkpoint's own).
        attn_implementation: transformers' attention kernel (sdpa, eager, flash_attention_2).
        gradient_checkpointing: recompute activations in the backward pass, trading time for memory.
        trust_remote_code: run the model folder's own Python code (models transformers does not ship).
        from_hub: allow downloading name_or_path from the Hugging Face Hub (else local files only).
        readouts: how the model's distribution is read at evaluation: label_probs (exact, one forward pass
            over the verbalizers) and/or sampling (histogram of sampled answers); the first is the main one.
        sampling: settings of the sampling readout.
        entropy_bins: validation JSD is also reported in this many bins of normalised human entropy.
        optimizer: the optimizer over the trainable parameters (default AdamW, lr 1e-4).
        lr_scheduler: an optional scheduler, stepped every optimizer step.
    """

    def __init__(
        self,
        name_or_path: str,
        label_names: list[str] = (),
        verbalizers: list[str] = (),
        multilabel: bool = False,
        answer_tag_required: bool = False,
        lora: Optional[LoraSettings] = None,
        dtype: DType = "auto",
        attn_implementation: str = "sdpa",
        gradient_checkpointing: bool = False,
        trust_remote_code: bool = False,
        from_hub: bool = False,
        readouts: list[Readout] = ("label_probs",),
        sampling: Optional[SamplingReadout] = None,
        entropy_bins: int = 3,
        optimizer: OptimizerCallable = _default_optimizer,
        lr_scheduler: Optional[LRSchedulerCallable] = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        if not label_names or len(label_names) != len(verbalizers):
            raise ValueError("label_names and verbalizers must be given, one verbalizer per label "
                             "(the CLI links both from the data module)")
        self.name_or_path, self.lora_settings, self.trust_remote_code = name_or_path, lora, trust_remote_code
        self.model_options = dict(dtype=dtype, attn_implementation=attn_implementation,
                                  gradient_checkpointing=gradient_checkpointing, from_hub=from_hub)
        self.label_names, self.verbalizers = list(label_names), list(verbalizers)
        self.readouts, self.sampling = list(readouts), sampling or SamplingReadout()
        self.optimizer_factory, self.lr_scheduler_factory = optimizer, lr_scheduler
        self.tokenizer = load_tokenizer(name_or_path, trust_remote_code, from_hub)
        self.verbalizer_ids = [self.tokenizer(w, add_special_tokens=False)["input_ids"] for w in self.verbalizers]
        self.parser = AnswerParser(self.verbalizers, require_tag=answer_tag_required)
        self.policy = None
        num_labels = len(self.label_names)
        make = lambda: torch.nn.ModuleDict(  # noqa: E731
            {r: build_eval_metrics(num_labels, multilabel=multilabel, entropy_bins=entropy_bins) for r in self.readouts}
        )
        self.val_metrics, self.test_metrics = make(), make()
        self.invalid_rate = torch.nn.ModuleDict({"val": MeanMetric(), "test": MeanMetric()})  # sampling readout
        self.multilabel = multilabel

    # -- model -----------------------------------------------------------------------------------------------------
    def configure_model(self) -> None:
        self.load_policy()
        self.shard_models()

    def load_policy(self) -> None:
        if self.policy is None:
            self.policy = load_causal_lm(self.name_or_path, self.lora_settings, self.trust_remote_code,
                                         **self.model_options)
            self.policy.train()  # from_pretrained returns eval mode; Lightning switches modes around validation

    def shard_models(self) -> None:
        """Under ``ModelParallelStrategy`` (``configs/strategy/fsdp2.yaml``): FSDP2 over the data-parallel mesh,
        each decoder layer then the root, for the policy and a frozen ``reference`` copy if the module has one.
        Idempotent (Lightning calls ``configure_model`` for every validate/fit of the same module)."""
        from lightning.pytorch.strategies import ModelParallelStrategy

        if self._trainer is None or not isinstance(self.trainer.strategy, ModelParallelStrategy):
            return
        mesh = self.device_mesh
        if mesh["tensor_parallel"].size() != 1:
            raise ConfigValueError(
                f"trainer.strategy.init_args.tensor_parallel_size={mesh['tensor_parallel'].size()}: this project "
                "applies FSDP2 only; set tensor_parallel_size to 1 and data_parallel_size to devices x num_nodes")
        for model in (self.policy, getattr(self, "reference", None)):
            if model is not None:
                fully_shard_decoder(model, mesh["data_parallel"])

    @property
    def uses_lora(self) -> bool:
        return self.lora_settings is not None

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.parameters() if p.requires_grad]

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.trainable_parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- readouts: the model's label distribution ------------------------------------------------------------------
    def label_probs(self, batch: VoteBatch, model=None) -> Tensor:
        """Exact label distribution from one forward pass over the verbalizers, [B, K]."""
        model = model if model is not None else self.policy
        return label_log_probs(model, batch.prompt_ids, batch.prompt_mask, self.verbalizer_ids).exp()

    def sampled_probs(self, batch: VoteBatch) -> "ReadoutResult":
        """Histogram of parsed sampled answers, [B, K], with the answers and their labels (num_samples each)."""
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(self.sampling.seed + int(batch.index[0]))
            answers = sample_answers(self.policy, self.tokenizer, self.parser, batch.prompt_ids, batch.prompt_mask,
                                     self.sampling.generation(), self.sampling.num_samples,
                                     synced_gpus=self.needs_synced_gpus)
        probs = answer_histogram(answers.choices, len(self.label_names), self.sampling.smoothing)
        return ReadoutResult(probs, answers.texts, answers.choices)

    @property
    def needs_synced_gpus(self) -> bool:
        """Sharded strategies must keep every rank in generate() until all ranks finish."""
        from shala_pl.data.sampling import requires_lockstep

        return self._trainer is not None and requires_lockstep(self.trainer.strategy)

    def readout_probs(self, batch: VoteBatch) -> dict[str, "ReadoutResult"]:
        out = {}
        for readout in self.readouts:
            if readout == "label_probs":
                out[readout] = ReadoutResult(self.label_probs(batch))
            else:
                out[readout] = self.sampled_probs(batch)
        return out

    # -- evaluation ----------------------------------------------------------------------------------------------
    def _evaluate(self, batch: VoteBatch, stage: str, batch_idx: int) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        with torch.no_grad():
            for readout, result in self.readout_probs(batch).items():
                probs = result.probs
                if batch_idx == 0 and readout == self.readouts[0]:
                    n = min(FIGURE_EXAMPLES, probs.shape[0])
                    self._figure_examples = (batch.uid[:n], probs[:n].tolist(), batch.human[:n].tolist())
                # Rows marked is_padding only keep sharded ranks in lockstep (shala_pl.data.sampling): not scored.
                keep = ~batch.is_padding
                metrics[readout].update(probs[keep].float(), batch.human[keep], batch.majority[keep],
                                        multilabel_target=batch.multilabel[keep] if self.multilabel else None)
                if result.choices is not None:
                    self.invalid_rate[stage].update((result.choices[keep] < 0).float())

    def _log_metrics(self, stage: str) -> dict[str, float]:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        logged = {}
        for readout, collection in metrics.items():
            prefix = metric_prefix(stage, readout)
            for name, value in compute_flat(collection).items():
                logged[prefix + name] = value
            if readout == "sampling":  # answers that did not parse into a label
                logged[prefix + "invalid_rate"] = self.invalid_rate[stage].compute()
            with torch.inference_mode(False):  # fresh states must not be inference tensors: fit validates under no_grad
                collection.reset()
        with torch.inference_mode(False):
            self.invalid_rate[stage].reset()
        self.log_dict(logged, sync_dist=False, rank_zero_only=False)  # already synced by torchmetrics
        return logged

    def validation_step(self, batch: VoteBatch, batch_idx: int) -> None:
        self._evaluate(batch, "val", batch_idx)

    def on_validation_epoch_end(self) -> None:
        logged = self._log_metrics("val")
        self._log_figures(logged)

    def _log_figures(self, logged: dict[str, float]) -> None:
        """JSD by human-entropy bin and a few examples' distributions, to every logger (``shala_pl.media``)."""
        if not self.trainer.is_global_zero or not self.loggers:
            return
        from shala_pl import media, plots

        # the step Lightning gives this validation's scalars (its logger connector's default), so that figures and
        # scalars share one axis: during fit that is one less than global_step
        step = self.trainer.fit_loop.epoch_loop._batches_that_stepped
        prefix = metric_prefix("val", self.readouts[0])
        bins = sorted(k for k in logged if k.startswith(prefix + "jsd_bin"))
        if bins:
            counts = [logged[k.replace("jsd_bin", "n_bin")] for k in bins]
            media.log_figure(self.trainer, "val/jsd_by_entropy",
                             plots.jsd_by_entropy_bin([logged[k] for k in bins], counts), step)
        if getattr(self, "_figure_examples", None):
            uids, model, human = self._figure_examples
            media.log_figure(self.trainer, "val/model_vs_human",
                             plots.model_vs_human(self.label_names, uids, model, human), step)

    def test_step(self, batch: VoteBatch, batch_idx: int) -> None:
        self._evaluate(batch, "test", batch_idx)

    def on_test_epoch_end(self) -> None:
        self._log_metrics("test")

    def training_step(self, batch: VoteBatch, batch_idx: int):
        raise RuntimeError("VoteModule is the zero-shot method: use validate, test or predict, "
                           "or pick a training method (GRPOModule, SFTModule)")

    def predict_step(self, batch: VoteBatch, batch_idx: int) -> list[dict]:
        with torch.no_grad():
            readouts = self.readout_probs(batch)
        main_readout = self.readouts[0]
        probs = readouts[main_readout].probs
        rows = []
        for i, uid in enumerate(batch.uid):
            if bool(batch.is_padding[i]):
                continue
            row = {
                "uid": uid,
                "probs": [float(x) for x in probs[i]],
                "predicted_label": self.label_names[int(probs[i].argmax())],
                "human": [float(x) for x in batch.human[i]],
                "readout": main_readout,
            }
            if "sampling" in readouts:
                sampled, n = readouts["sampling"], self.sampling.num_samples
                row["samples"] = sampled.texts[i * n : (i + 1) * n]
                row["sample_labels"] = [self.label_names[c] if c >= 0 else None for c in sampled.choices[i].tolist()]
                if main_readout != "sampling":
                    row["sampling_probs"] = [float(x) for x in sampled.probs[i]]
            rows.append(row)
        return rows

    # -- export ------------------------------------------------------------------------------------------------------
    def save_pretrained(self, out_dir: str | Path, datamodule=None, metrics: Optional[dict] = None) -> Path:
        """The LoRA adapter (or the full model) and tokenizer, loadable by peft/transformers alone from any folder:
        the adapter names its base model by absolute path (or Hub id), and ``README.md`` / ``shala_pl.yaml``
        describe the data, method, ``metrics`` and the prompt (``shala_pl.model_card``). ``datamodule``: the one
        trained on (default: the trainer's)."""
        from shala_pl.model_card import base_model_reference, write_export_description

        out_dir = Path(out_dir)
        if self.uses_lora:
            for config in self.policy.peft_config.values():
                config.base_model_name_or_path = base_model_reference(self.name_or_path,
                                                                      self.model_options["from_hub"])
        self.policy.save_pretrained(out_dir)
        self.tokenizer.save_pretrained(out_dir)
        if datamodule is None and self._trainer is not None:
            datamodule = self.trainer.datamodule
        write_export_description(out_dir, self, datamodule, metrics)
        return out_dir


def metric_prefix(stage: str, readout: str) -> str:
    """``val/`` for the label-probability readout, ``val/sampling/`` for the sampling readout."""
    return f"{stage}/{READOUT_PREFIXES[readout]}"


# Checkpoints of modules built in Python hold these in their hyper-parameters: allow torch.load(weights_only=True).
torch.serialization.add_safe_globals([SamplingReadout, RolloutSettings, LoraSettings])
