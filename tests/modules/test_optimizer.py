"""The configs' fused AdamW trains to the same weights as torch's default (per-tensor) AdamW, up to float32
rounding (the fused kernel orders its arithmetic differently: about 1e-7 per step, here 3 steps)."""

import torch
from transformers import AutoModelForCausalLM

from lightning.pytorch import Callback

from conftest import REPO, small_quickstart_run
from shala_pl.cli import cli_main


def trained_weights(tiny_model_dir, root, fused: str) -> dict[str, torch.Tensor]:
    cli = cli_main(small_quickstart_run(tiny_model_dir, root, 3, "--model.init_args.optimizer.init_args.fused", fused))
    assert cli.model.optimizers().optimizer.defaults["fused"] is (fused == "true")
    return {n: p.detach().clone() for n, p in cli.model.policy.named_parameters()}


def test_fused_adamw_gives_the_default_adamws_weights(tiny_model_dir, tmp_path):
    fused = trained_weights(tiny_model_dir, tmp_path / "fused", "true")
    default = trained_weights(tiny_model_dir, tmp_path / "default", "false")
    initial = dict(AutoModelForCausalLM.from_pretrained(tiny_model_dir).named_parameters())
    assert max(float((fused[n] - initial[n]).abs().max()) for n in fused) > 1e-3  # three steps moved the weights
    for name in fused:
        if name.endswith("k_proj.bias"):
            # its gradient is zero up to rounding (a bias shared by all keys of a query cancels in the softmax), and
            # Adam scales rounding noise up to full steps: both optimizers move it by noise, differently
            continue
        torch.testing.assert_close(fused[name], default[name], atol=1e-6, rtol=1e-5, msg=name)


def test_sft_soft_under_bf16_with_fused_adamw_clips_its_gradients(tiny_model_dir, tmp_path):
    """Lightning's mixed-precision plugin refuses gradient clipping with a fused optimizer (for fp16's scaler);
    the SmolLM2 configs run sft_soft at bf16-mixed with fused AdamW and clipping, so the module clips itself."""
    clip = 1e-3
    args = small_quickstart_run(tiny_model_dir, tmp_path, 2, "--config", str(REPO / "configs" / "method" / "sft_soft.yaml"),
                                "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", str(clip),
                                "--model.init_args.optimizer.init_args.fused", "true")
    cli = cli_main(args[1:], run=False)  # without the subcommand: fitted below with the recording callback
    norms = []

    class Record(Callback):  # after the optimizer step the gradients it used are still there: clipped, or not
        def on_train_batch_end(self, trainer, module, *_):
            grads = [p.grad for p in module.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    cli.trainer.callbacks.append(Record())
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert cli.trainer.global_step == 2 and len(norms) == 2
    assert max(norms) <= clip * 1.01, norms
