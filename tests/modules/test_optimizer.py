"""The configs' fused AdamW trains to the same weights as torch's default (per-tensor) AdamW, up to float32
rounding (the fused kernel orders its arithmetic differently: about 1e-7 per step, here 3 steps)."""

import torch
from transformers import AutoModelForCausalLM

from conftest import small_quickstart_run
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
