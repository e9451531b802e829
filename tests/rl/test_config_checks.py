"""Config values are checked when the settings are built: a wrong one stops with a message naming the option."""

from __future__ import annotations

import warnings

import pytest

from shala_pl.errors import ConfigValueError
from shala_pl.rl.losses import LossSettings
from shala_pl.rl.rollout import RolloutSettings
from shala_pl.rl.weighting import AmbiguityWeighting


@pytest.mark.parametrize("settings, message", [
    (lambda: RolloutSettings(num_generations=-3), "rollout.num_generations must be a positive integer, got -3"),
    (lambda: RolloutSettings(num_generations=2.5), "rollout.num_generations must be a positive integer"),
    (lambda: RolloutSettings(max_new_tokens=0), "rollout.max_new_tokens must be a positive integer, got 0"),
    (lambda: RolloutSettings(mode="generate", temperature=0.0), "rollout.temperature must be a number > 0, got 0.0"),
    (lambda: RolloutSettings(mode="generate", top_p=0.0), "rollout.top_p must be in (0, 1], got 0.0"),
    (lambda: RolloutSettings(mode="generate", top_p=1.5), "rollout.top_p must be in (0, 1], got 1.5"),
    (lambda: RolloutSettings(mode="sample"), "rollout.mode must be one of generate, label, got 'sample'"),
    (lambda: RolloutSettings(max_new_tokens=4, min_new_tokens=5), "rollout.min_new_tokens must be at most"),
    (lambda: LossSettings(clip_eps_low=1.0), "loss.clip_eps_low must be in [0, 1), got 1.0"),
    (lambda: LossSettings(beta=-0.1), "loss.beta must be a number >= 0, got -0.1"),
    (lambda: LossSettings(beta=float("nan")), "loss.beta must be a number >= 0"),
    (lambda: LossSettings(aggregation="mean"), "loss.aggregation must be one of grpo, dr_grpo, dapo, bnpo"),
    (lambda: AmbiguityWeighting(strength=-1.0), "weighting.strength must be a number >= 0, got -1.0"),
    (lambda: AmbiguityWeighting(warmup_steps=-5), "weighting.warmup_steps must be an integer >= 0, got -5"),
    (lambda: AmbiguityWeighting(ema_decay=1.0), "weighting.ema_decay must be in [0, 1), got 1.0"),
])
def test_settings_refuse_bad_values_naming_the_option(settings, message):
    with pytest.raises(ConfigValueError) as error:
        settings()
    assert str(error.value).startswith(message)


def test_temperature_zero_is_refused_with_the_reason():
    with pytest.raises(ConfigValueError, match=r"rollout.temperature .*greedy decoding"):
        RolloutSettings(mode="generate", temperature=0.0)


def test_label_mode_says_temperature_does_not_apply():
    with pytest.warns(UserWarning, match="rollout.temperature and rollout.top_p do not apply in label mode"):
        RolloutSettings(mode="label", temperature=0.7)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        RolloutSettings(mode="label")
        RolloutSettings(mode="generate", temperature=0.7)


@pytest.mark.parametrize("options, message", [
    ({"rewards": {"log_scor": 1.0}}, "model.init_args.rewards must be one of log_score, forward_kl, group_jsd, "
                                     "vote_share, majority, format or an import path package.module.function, "
                                     "got 'log_scor'"),
    ({"rewards": {"log_score": float("inf")}}, "rewards.log_score must be a finite weight"),
    ({"num_iterations": 0}, "num_iterations must be a positive integer, got 0"),
    ({"micro_batches": -1}, "micro_batches must be a positive integer, got -1"),
    ({"gradient_clip_val": 0.0}, "gradient_clip_val must be a number > 0, got 0.0"),
    ({"advantage_scaling": "std"}, "advantage_scaling must be one of group, batch, none, got 'std'"),
    ({"max_consecutive_nonfinite": 0}, "max_consecutive_nonfinite must be a positive integer, got 0"),
])
def test_grpo_module_refuses_bad_values_naming_the_option(tiny_model_dir, options, message):
    from shala_pl.modules import GRPOModule

    with pytest.raises(ConfigValueError) as error:
        GRPOModule(name_or_path=str(tiny_model_dir), label_names=["a", "b"], verbalizers=["yes", "no"], **options)
    assert str(error.value).startswith(message)


def test_grpo_module_settings_are_not_shared_between_instances(tiny_model_dir):
    from shala_pl.modules import GRPOModule

    make = lambda: GRPOModule(name_or_path=str(tiny_model_dir), label_names=["a", "b"], verbalizers=["yes", "no"])  # noqa: E731
    first, second = make(), make()
    assert first.rollout_settings == second.rollout_settings
    assert first.rollout_settings is not second.rollout_settings
    assert first.loss_settings is not second.loss_settings and first.weighting is not second.weighting
