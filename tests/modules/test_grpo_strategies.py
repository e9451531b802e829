"""What the module refuses under a strategy, before a model is built."""

from __future__ import annotations

import pytest
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

from shala_pl.errors import ConfigValueError
from shala_pl.modules import GRPOModule


def _module(tiny_model_dir, micro_batches: int) -> GRPOModule:
    return GRPOModule(name_or_path=str(tiny_model_dir), label_names=["a", "b"], verbalizers=["yes", "no"],
                      micro_batches=micro_batches)


def test_deepspeed_refuses_micro_batches(tiny_model_dir):
    # DeepSpeed is not installed here: the strategy object is made without its constructor, which checks for it
    deepspeed = DeepSpeedStrategy.__new__(DeepSpeedStrategy)
    with pytest.raises(ConfigValueError, match="micro_batches=2 is not supported under DeepSpeed"):
        _module(tiny_model_dir, micro_batches=2).check_strategy(deepspeed)
    _module(tiny_model_dir, micro_batches=1).check_strategy(deepspeed)
    _module(tiny_model_dir, micro_batches=2).check_strategy(DDPStrategy())
