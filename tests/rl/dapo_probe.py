"""The gradient of one ``dapo`` optimizer step on a fixed rollout, for 1 process or several (DDP on CPU, gloo).

Run as a script (Lightning's DDP launcher starts the other ranks by running it again):
    python tests/rl/dapo_probe.py MODEL_DIR OUT.pt DEVICES MICRO_BATCHES
The rollout is fixed by each prompt's dataset index (answer tokens, lengths, labels), so every configuration trains
on the same answers; everything after the rollout (rewards, advantages, weights, loss, backward) is the module's.
"""

from __future__ import annotations

import sys

import torch
from lightning.pytorch import Callback, Trainer

from shala_pl.data.batch import VoteBatch
from shala_pl.data.datamodule import VoteDataModule
from shala_pl.models.loading import LoraSettings
from shala_pl.modules import GRPOModule
from shala_pl.rl.losses import LossSettings
from shala_pl.rl.rewards import answer_histogram
from shala_pl.rl.rollout import Rollout, RolloutSettings

GLOBAL_BATCH = 8
GROUP = 4
MAX_NEW_TOKENS = 6


class FixedRolloutModule(GRPOModule):
    def make_rollout(self, batch: VoteBatch) -> tuple[Rollout, None]:
        ids, lengths, choices = [], [], []
        for index in batch.index.tolist():
            generator = torch.Generator().manual_seed(index)
            ids.append(torch.randint(10, self.tokenizer.vocab_size, (GROUP, MAX_NEW_TOKENS), generator=generator))
            lengths.append(torch.randint(1, MAX_NEW_TOKENS + 1, (GROUP,), generator=generator))
            choices.append(torch.randint(0, len(self.label_names), (GROUP,), generator=generator))
        mask = (torch.arange(MAX_NEW_TOKENS) < torch.cat(lengths).unsqueeze(1)).long()  # [N, T], lengths 1..T
        choices = torch.stack(choices)  # [B, G]
        return Rollout(choices=choices, policy_probs=answer_histogram(choices, len(self.label_names), smoothing=1.0),
                       prompt_ids=batch.prompt_ids, prompt_mask=batch.prompt_mask,
                       completion_ids=torch.cat(ids), completion_mask=mask), None


class SaveGradients(Callback):
    def __init__(self, path: str):
        self.path = path

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.is_global_zero:  # under DDP the gradients are already averaged over ranks
            torch.save({n: p.grad.clone() for n, p in pl_module.policy.named_parameters() if p.requires_grad},
                       self.path)


def dapo_gradients(model_dir: str, out: str, devices: int, micro_batches: int) -> None:
    data = VoteDataModule(source="synthetic", source_options={"n_examples": 64, "n_annotators": 5},
                          tokenizer_path=model_dir, batch_size=GLOBAL_BATCH // devices)
    module = FixedRolloutModule(
        name_or_path=model_dir, label_names=data.label_names, verbalizers=data.verbalizers,
        lora=LoraSettings(r=4, alpha=8), micro_batches=micro_batches, gradient_clip_val=None,
        rollout=RolloutSettings(mode="generate", num_generations=GROUP, max_new_tokens=MAX_NEW_TOKENS),
        loss=LossSettings(aggregation="dapo"),
    )
    torch.manual_seed(0)
    module.configure_model()  # the same LoRA initialisation in every configuration
    trainer = Trainer(max_steps=1, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                      logger=False, enable_checkpointing=False, enable_progress_bar=False, limit_val_batches=0,
                      num_sanity_val_steps=0, enable_model_summary=False, callbacks=[SaveGradients(out)])
    trainer.fit(module, datamodule=data)


if __name__ == "__main__":
    dapo_gradients(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
