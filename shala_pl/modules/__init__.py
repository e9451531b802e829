from shala_pl.modules.base import VoteModule
from shala_pl.modules.grpo import GRPOModule
from shala_pl.modules.sft import SFTModule

__all__ = ["VoteModule", "GRPOModule", "SFTModule"]
