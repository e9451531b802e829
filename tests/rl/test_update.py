"""The update (``shala_pl/rl/update.py``) of the RL module on a tiny real model: the non-finite skip policy and fp16
clipping of the unscaled gradients."""

import pytest
import torch
from lightning.pytorch.plugins.precision import MixedPrecision

from shala_pl.rl.update import NonFiniteTrainingError
from tests.modules.test_grpo_module import fit, make


def test_nonfinite_loss_skips_the_update_and_stops_after_the_limit(tiny_model_dir):
    # The untrained model's free-text answers are unparseable; a NaN reward for them makes the loss NaN.
    data, module = make(tiny_model_dir, mode="generate", max_consecutive_nonfinite=2, invalid_reward=float("nan"))
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    with pytest.raises(NonFiniteTrainingError, match="2 consecutive non-finite"):
        fit(data, module, steps=5)
    assert module.nonfinite_skipped == 2
    assert all(torch.equal(p, before[n]) for n, p in module.policy.named_parameters())


def fp16_plugin(init_scale: float, backoff_factor: float = 0.5) -> MixedPrecision:
    """Lightning's ``16-mixed`` with a real loss scaler; Lightning refuses ``precision="16-mixed"`` on CPU only
    because it would build a CUDA scaler, and CPU autocast supports float16."""
    scaler = torch.amp.GradScaler("cpu", init_scale=init_scale, backoff_factor=backoff_factor)
    return MixedPrecision("16-mixed", "cpu", scaler=scaler)


@pytest.mark.parametrize("fused", [True, False])  # a fused AdamW unscales in its step; Lightning leaves it to it
def test_fp16_clips_and_reports_the_unscaled_gradient_norm(tiny_model_dir, fused):
    norms = {}
    for name, plugins in (("fp32", []), ("fp16", [fp16_plugin(init_scale=2.0**10)])):
        torch.manual_seed(0)
        data, module = make(tiny_model_dir, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4, fused=fused))
        trainer = fit(data, module, plugins=plugins, log_every_n_steps=1)
        assert module.nonfinite_skipped == 0
        norms[name] = float(trainer.callback_metrics["train/grad_norm"])
    # scaled gradients would measure 2^10 times larger (and be clipped to 1 / 2^10 of their size)
    assert norms["fp16"] == pytest.approx(norms["fp32"], rel=0.05)


def test_fp16_overflow_lowers_the_scale_instead_of_stopping(tiny_model_dir):
    torch.manual_seed(0)
    data, module = make(tiny_model_dir, max_consecutive_nonfinite=2)
    module.configure_model()
    before = {n: p.detach().clone() for n, p in module.policy.named_parameters()}
    plugin = fp16_plugin(init_scale=2.0**40, backoff_factor=2.0**-10)  # overflows twice, then 2^20: still too big
    trainer = fit(data, module, steps=5, plugins=[plugin])
    assert trainer.global_step == 5
    assert plugin.scaler.get_scale() < 2.0**20
    assert module.nonfinite_skipped >= 2 and module.update.consecutive_nonfinite == 0
    assert any(not torch.equal(p, before[n]) for n, p in module.policy.named_parameters())
