"""Config values are checked when the settings are built: a wrong one stops with a message naming the option."""

from __future__ import annotations

import warnings

import pytest

from shala_pl.errors import ConfigValueError
from shala_pl.models.loading import LoraSettings
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
    # the default disable_dropout would switch the adapter's dropout off too
    ({"lora": LoraSettings(r=4, dropout=0.1)}, "lora.dropout must be 0 with disable_dropout: true"),
    # the generate-mode log score's estimate of log pi needs two other answers (tests/rl/test_rewards.py)
    ({"rollout": RolloutSettings(mode="generate", num_generations=2)},
     "rollout.num_generations must be at least 3 with the log_score reward in generate mode, got 2"),
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


# -- checks across sections, when the CLI reads the config: one line, exit 2, before the model loads -------------

REFUSED_WHEN_READ = [
    # (what, options, the one line)
    ("a negative learning rate", ["--model.init_args.optimizer.init_args.lr=-1e-4"],
     "model.init_args.optimizer.init_args: torch.optim.AdamW refuses its values: Invalid learning rate: -0.0001"),
    ("a beta of 1", ["--model.init_args.optimizer.init_args.betas", "[0.9, 1.0]"],
     "model.init_args.optimizer.init_args: torch.optim.AdamW refuses its values: Invalid beta parameter at index 1: "
     "1.0"),
    ("groups of one with the sampled objective", ["--model.init_args.rollout.num_generations", "1"],
     "model.init_args.rollout.num_generations must be at least 2 with the sampled objective, got 1 (an answer's "
     "advantage is its reward minus its group's mean: with a group of one it is 0 and nothing trains; objective: "
     "exact needs no group)"),
    ("prompts longer than the model's positions", ["--data.max_prompt_length", "513"],
     "data.max_prompt_length must be at most the model's 512 positions (max_position_embeddings), got 513 (a longer "
     "prompt runs past the model's context)"),
    ("float16 training on CPU", ["--model.init_args.dtype", "float16", "--trainer.accelerator", "cpu"],
     "model.init_args.dtype must be float32 or bfloat16 to train on CPU, got 'float16' (float16 weights and "
     "optimizer states overflow here: 3 quickstart steps turned every prediction NaN)"),
]


@pytest.mark.parametrize("what, options, line", REFUSED_WHEN_READ, ids=[case[0] for case in REFUSED_WHEN_READ])
def test_settings_that_train_nothing_or_fail_later_are_refused_when_the_config_is_read(tiny_model_dir, tmp_path,
                                                                                      capsys, what, options, line):
    from conftest import small_quickstart_run
    from shala_pl.__main__ import main

    assert main(small_quickstart_run(tiny_model_dir, tmp_path, 2, *options)) == 2
    captured = capsys.readouterr()
    assert captured.err == f"shala_pl: error: {line}\n"
    assert "Loading weights" not in captured.out and not any(tmp_path.iterdir())  # nothing loaded, nothing written


def test_the_exact_objective_trains_with_groups_of_one_and_float16_evaluates_on_cpu(tiny_model_dir, tmp_path):
    from conftest import small_quickstart_run
    from shala_pl.cli import cli_main

    exact = cli_main(small_quickstart_run(tiny_model_dir, tmp_path / "exact", 1, "--model.init_args.objective",
                                          "exact", "--model.init_args.rollout.num_generations", "1")[1:], run=False)
    assert exact.model.rollout_settings.num_generations == 1
    validated = cli_main(["validate", *small_quickstart_run(tiny_model_dir, tmp_path / "f16", 1, "--model.init_args"
                                                            ".dtype", "float16")[1:]]).trainer.callback_metrics
    assert validated["val/nonfinite_predictions"] == 0 and 0 < float(validated["val/jsd"]) < 1
