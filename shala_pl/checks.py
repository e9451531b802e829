"""Up-front checks of config values: each failure is a ``ConfigValueError`` naming the option and the value."""

from __future__ import annotations

import math
from typing import Any, Iterable

from shala_pl.errors import ConfigValueError


def require(ok: bool, option: str, expected: str, value: Any, note: str = "") -> None:
    if not ok:
        raise ConfigValueError(f"{option} must be {expected}, got {value!r}" + (f" ({note})" if note else ""))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def positive_int(option: str, value: Any) -> None:
    require(_is_int(value) and value > 0, option, "a positive integer", value)


def non_negative_int(option: str, value: Any) -> None:
    require(_is_int(value) and value >= 0, option, "an integer >= 0", value)


def positive(option: str, value: Any, note: str = "") -> None:
    require(_is_number(value) and value > 0, option, "a number > 0", value, note)


def non_negative(option: str, value: Any) -> None:
    require(_is_number(value) and value >= 0, option, "a number >= 0", value)


def probability(option: str, value: Any) -> None:
    """In (0, 1]."""
    require(_is_number(value) and 0 < value <= 1, option, "in (0, 1]", value)


def fraction_below_one(option: str, value: Any) -> None:
    """In [0, 1)."""
    require(_is_number(value) and 0 <= value < 1, option, "in [0, 1)", value)


def one_of(option: str, value: Any, choices: Iterable[str]) -> None:
    choices = tuple(choices)
    require(value in choices, option, f"one of {', '.join(choices)}", value)


# -- checks across sections of a parsed CLI config (``ShalaCLI.parse_arguments``), before anything is built ---------

def check_run_config(config, subcommand: str) -> None:
    """What no single class can see on its own: the optimizer's values, the model's dtype on this machine, the
    group size the objective needs, the prompt length the model can take. ``config``: one subcommand's Namespace."""
    model = config.model.get("init_args") or {}
    optimizer_values(model.get("optimizer"))
    grpo_group_size(config.model.get("class_path"), model)
    model_config = _local_model_config(model.get("name_or_path"))
    if model_config is not None:
        prompt_fits_positions(config.data.get("max_prompt_length"), model_config)
        if subcommand == "fit":
            trainable_dtype(model.get("dtype") or "auto", model_config, config.trainer.get("accelerator"))


def optimizer_values(optimizer) -> None:
    """The optimizer class checks its own values (torch's do: lr, eps, betas, weight_decay ...) when built; build it
    once now on a stand-in parameter, so a bad value is one line before the model loads, not a traceback after."""
    class_path = getattr(optimizer, "class_path", None)
    if class_path is None:  # the module's default optimizer
        return
    import torch

    values = dict(vars(optimizer.get("init_args") or {}))
    try:
        _imported(class_path)([torch.nn.Parameter(torch.zeros(1))], **values)
    except ValueError as error:
        raise ConfigValueError(f"model.init_args.optimizer.init_args: {class_path} refuses its values: {error}") \
            from None


def grpo_group_size(class_path, model) -> None:
    """The sampled objective's advantages are each answer's reward minus its group's mean: with one answer per
    prompt they are 0 for ever, and the model never changes."""
    if class_path is None:
        return
    from shala_pl.modules.grpo import GRPOModule

    module_class = _imported(class_path) if isinstance(class_path, str) else class_path
    if not (isinstance(module_class, type) and issubclass(module_class, GRPOModule)):
        return
    rollout = model.get("rollout")
    generations = rollout.get("num_generations") if rollout is not None else None
    if (model.get("objective") or "sampled") == "sampled" and generations == 1:
        raise ConfigValueError("model.init_args.rollout.num_generations must be at least 2 with the sampled "
                               "objective, got 1 (an answer's advantage is its reward minus its group's mean: with "
                               "a group of one it is 0 and nothing trains; objective: exact needs no group)")


def _imported(class_path: str):
    """The class a parsed config names (the parser has already checked that it imports)."""
    import importlib

    module_name, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module_name), name)


def _local_model_config(name_or_path):
    """The model directory's config.json as a dict (a multimodal model's ``text_config``); None when there is none
    to read, a Hub id included: loading the model then says what is wrong with the path."""
    import json
    from pathlib import Path

    path = Path(name_or_path or "") / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if name_or_path and path.is_file() else None
    except ValueError:
        return None
    if not isinstance(config, dict):
        return None
    return config.get("text_config") or config


def prompt_fits_positions(max_prompt_length, model_config: dict) -> None:
    positions = model_config.get("max_position_embeddings") or model_config.get("n_positions")
    if isinstance(positions, int) and _is_int(max_prompt_length):
        require(max_prompt_length <= positions, "data.max_prompt_length", f"at most the model's {positions} "
                "positions (max_position_embeddings)", max_prompt_length,
                "a longer prompt runs past the model's context")


def trainable_dtype(dtype: str, model_config: dict, accelerator) -> None:
    """float16 weights do not train on CPU: with float16 parameters and optimizer states (Adam's eps of 1e-8 is
    below float16's smallest number) the quickstart's weights grew to hundreds within 3 steps and every prediction
    was NaN. Refused for ``fit`` on CPU; evaluation in float16 works."""
    import torch

    if dtype == "auto":
        dtype = str(model_config.get("dtype") or model_config.get("torch_dtype") or "float32")
    on_cpu = accelerator == "cpu" or (accelerator in (None, "auto") and not torch.cuda.is_available()
                                      and not torch.backends.mps.is_available())
    if dtype == "float16" and on_cpu:
        raise ConfigValueError("model.init_args.dtype must be float32 or bfloat16 to train on CPU, got 'float16' "
                               "(float16 weights and optimizer states overflow here: 3 quickstart steps turned every "
                               "prediction NaN)")
