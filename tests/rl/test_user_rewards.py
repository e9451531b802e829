"""A reward written in the user's own file runs from YAML by import path; a wrong name or signature is a config
error naming ``model.init_args.rewards``, raised when GRPOModule is built."""

import textwrap

import pytest
import torch
from lightning.pytorch.callbacks import Callback

from conftest import small_quickstart_run
from shala_pl.__main__ import main
from shala_pl.cli import cli_main
from shala_pl.errors import ConfigValueError
from shala_pl.rl.rewards import BUILTIN_REWARDS, REWARD_NAMES, compute_rewards, resolve_reward

USER_REWARDS = textwrap.dedent('''
    """A researcher's own scoring rules, outside shala_pl."""
    import torch

    SEEN_POLICY_SHAPES = []


    def brier(choices, human, policy_probs):
        """Negative Brier score of the answer against p: -sum_j (1[j = k] - p_j)^2."""
        SEEN_POLICY_SHAPES.append(tuple(policy_probs.shape))
        one_hot = torch.nn.functional.one_hot(choices.clamp(min=0), human.shape[1]).to(human.dtype)
        return -((one_hot - human.unsqueeze(1)) ** 2).sum(-1)


    def takes_everything(**inputs):
        return inputs["human"].gather(1, inputs["choices"].clamp(min=0))


    def wrong_names(choices, probs):
        return choices.float()


    def no_inputs(scale=1.0):
        return scale


    NOT_CALLABLE = 3
''')

HUMAN = torch.tensor([[0.6, 0.3, 0.1]])
LOGGED: list[str] = []


class RecordTrainMetrics(Callback):
    def on_train_end(self, trainer, pl_module):  # the step metrics, before a validation replaces them
        LOGGED.extend(k for k in trainer.callback_metrics if k.startswith("train/reward_"))


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """``my_scoring.py`` in a folder on sys.path, as a user's package would be."""
    (tmp_path / "my_scoring.py").write_text(USER_REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import my_scoring

    my_scoring.SEEN_POLICY_SHAPES.clear()
    return my_scoring


def test_builtins_are_registered_under_their_short_names():
    assert REWARD_NAMES == ("log_score", "forward_kl", "group_jsd", "vote_share", "majority", "format")
    assert all(resolve_reward(name) is BUILTIN_REWARDS[name] for name in REWARD_NAMES)
    assert resolve_reward("shala_pl.rl.rewards.vote_share_reward") is BUILTIN_REWARDS["vote_share"]


def test_a_user_reward_gets_the_inputs_it_names_in_either_mode(user_module):
    choices = torch.tensor([[0, 2, -1]])
    for policy in (torch.full((1, 3), 1 / 3), torch.full((1, 3, 3), 1 / 3)):  # label mode [B, K], generate [B, G, K]
        total, parts = compute_rewards({"my_scoring.brier": 2.0, "my_scoring.takes_everything": 1.0}, choices,
                                       HUMAN, torch.tensor([0]), policy)
        brier = [-(0.4 ** 2 + 0.3 ** 2 + 0.1 ** 2), -(0.6 ** 2 + 0.3 ** 2 + 0.9 ** 2)]
        # the unparseable answer gets the batch's lowest valid value, as a built-in's would
        assert parts["my_scoring.brier"][0].tolist() == pytest.approx(brier + [min(brier)])
        assert parts["my_scoring.takes_everything"][0].tolist() == pytest.approx([0.6, 0.1, 0.1])
        assert total[0].tolist() == pytest.approx([2 * b + v for b, v in zip(brier + [min(brier)], [0.6, 0.1, 0.1])])
    assert user_module.SEEN_POLICY_SHAPES == [(1, 3), (1, 3, 3)]


@pytest.mark.parametrize("mode, policy_shape", [("label", (4, 3)), ("generate", (4, 4, 3))])
def test_a_user_reward_trains_from_the_command_line(tiny_model_dir, tmp_path, user_module, mode, policy_shape):
    """Label mode hands the reward the policy's exact [B, K]; generate mode one leave-one-out estimate per answer."""
    LOGGED.clear()
    cli = cli_main(small_quickstart_run(tiny_model_dir, tmp_path / "run", 2,
                                        "--model.init_args.rewards", "{my_scoring.brier: 1.0, format: 0.1}",
                                        "--model.init_args.rollout.mode", mode,
                                        "--trainer.log_every_n_steps", "1",
                                        "--trainer.callbacks+=test_user_rewards.RecordTrainMetrics"))
    assert cli.trainer.global_step == 2
    assert cli.model.reward_weights == {"my_scoring.brier": 1.0, "format": 0.1}
    assert user_module.SEEN_POLICY_SHAPES == [policy_shape] * 2
    assert {"train/reward_my_scoring.brier", "train/reward_format"} <= set(LOGGED)  # logged under the YAML name


EXPECTED = ("one of log_score, forward_kl, group_jsd, vote_share, majority, format or an import path "
            "package.module.function")
SIGNATURE = ("callables taking some of choices, human, policy_probs, majority by keyword (other parameters with "
             "defaults) and returning [B, G]")


@pytest.mark.parametrize("name, message", [
    ("accuracy", f"{EXPECTED}, got 'accuracy'"),
    ("no_such_package.brier", f"{EXPECTED}, got 'no_such_package.brier' (unknown reward: cannot import "
                              "'no_such_package': "),
    ("my_scoring.brierr", f"{EXPECTED}, got 'my_scoring.brierr' (unknown reward: module 'my_scoring' has no "
                          "'brierr')"),
    ("my_scoring.wrong_names", f"{SIGNATURE}, got 'my_scoring.wrong_names' (wrong_names(choices, probs) has "
                               "parameter(s) probs without a default)"),
    ("my_scoring.no_inputs", f"{SIGNATURE}, got 'my_scoring.no_inputs' (no_inputs(scale=1.0) has none of the "
                             "inputs)"),
    ("my_scoring.NOT_CALLABLE", f"{SIGNATURE}, got 'my_scoring.NOT_CALLABLE' (a int)"),
])
def test_a_wrong_reward_is_refused_when_the_module_is_built(tiny_model_dir, user_module, name, message):
    from shala_pl.modules.grpo import GRPOModule

    with pytest.raises(ConfigValueError) as error:
        GRPOModule(name_or_path=str(tiny_model_dir), label_names=["a", "b"], verbalizers=["yes", "no"],
                   rewards={name: 1.0})
    assert str(error.value).startswith(f"model.init_args.rewards must be {message}")


def test_a_wrong_reward_on_the_command_line_is_one_line_before_training(tiny_model_dir, tmp_path, user_module,
                                                                         capsys):
    code = main(small_quickstart_run(tiny_model_dir, tmp_path, 1, "--model.init_args.rewards",
                                     "{my_scoring.wrong_names: 1.0}"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        f"shala_pl: error: model.init_args.rewards must be {SIGNATURE}, got 'my_scoring.wrong_names'")
    assert not list(tmp_path.rglob("*.ckpt"))  # refused at config time: no step, no checkpoint
