"""The real instruct LLM end to end: SmolLM2-135M-Instruct, built by ``shala-pl get-model`` (CI builds it first).

Two label-mode and two generate-mode training steps with gradient checkpointing on, through the CLI and the
project's configs, then the exported LoRA adapter loads with peft alone and gives the trained model's outputs.
Skipped when the model directory is absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from shala_pl.cli import cli_main

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "artifacts" / "smollm2-135m-instruct"
CHAOSNLI_MNLI = REPO / "tests" / "fixtures" / "chaosnli" / "chaosNLI_mnli_m.jsonl"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL / "config.json").exists(),
                       reason="no SmolLM2 directory: shala-pl get-model smollm2-135m-instruct"),
]


def fit(root: Path, *extra: str, generations: int = 2):
    args = [
        "fit", "--config", str(REPO / "configs/smollm2/chaosnli_mnli.yaml"), *extra,
        "--model.init_args.name_or_path", str(MODEL), "--model.init_args.gradient_checkpointing", "true",
        "--data.path", str(CHAOSNLI_MNLI), "--data.val_fraction", "0.25", "--data.test_fraction", "0.25",
        "--data.batch_size", "2", "--data.eval_batch_size", "4",
        "--model.init_args.rollout.num_generations", str(generations),
        "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1", "--trainer.logger", "false",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
        "--trainer.default_root_dir", str(root), "--validate_before_fit", "false",
    ]
    return cli_main(args)


def lora_weights(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}


def test_label_mode_trains_and_the_exported_adapter_loads_with_peft(tmp_path):
    cli = fit(tmp_path)
    module = cli.model
    assert module.global_step == 2 and module.policy.base_model.model.model.gradient_checkpointing
    trained = lora_weights(module.policy)
    assert any(("lora_A" in n) and w.abs().sum() > 0 for n, w in trained.items())

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    export = next(tmp_path.rglob("hf_model"))
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(MODEL), export).eval()
    batch = next(iter(cli.datamodule.val_dataloader()))
    module.policy.eval()
    with torch.no_grad():
        ours = module.label_probs(batch)
        theirs = module.label_probs(batch, model=reloaded)
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-4)


def test_generate_mode_trains_with_parsed_answers(tmp_path):
    cli = fit(tmp_path, "--config", str(REPO / "configs/smollm2/chaosnli_mnli_generate.yaml"),
              "--model.init_args.sampling.num_samples", "2",
              generations=3)  # the generate-mode log score needs two other answers
    module = cli.model
    assert module.global_step == 2
    # answers were sampled, decoded and parsed; the counter only counts what did not parse
    assert module.invalid_answers_total <= 2 * 2 * 3
