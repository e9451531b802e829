"""What an exported ``hf_model/`` says about itself, so that it is usable without this project or its run folder.

``README.md``: the model card (base model, data and split sizes, method and its options, the final validation
metrics, the exact prompt, label words and answer prefix, and code that loads the folder with transformers and
scores a prompt). ``shala_pl.yaml``: the same prompt settings as a config fragment that ``predict`` / ``validate``
take after a run config, scoring the exported folder itself as the zero-shot ``VoteModule``:

    shala-pl predict --config RUN_CONFIG --config hf_model/shala_pl.yaml
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

import yaml

from shala_pl.data.prompts import TASK_TEMPLATES, answer_instruction, answer_prefix, template_adds_system_prompt

CONFIG_FRAGMENT = "shala_pl.yaml"


def base_model_reference(name_or_path: str, from_hub: bool) -> str:
    """How a loader finds the base model from any folder: the absolute path of a local directory, else the Hub id
    (a base that ``from_hub`` fetched)."""
    path = Path(name_or_path)
    if path.exists() or not from_hub:
        return str(path.resolve())
    return name_or_path


def write_export_description(out_dir: Path, module, datamodule=None, metrics: Optional[dict] = None) -> None:
    """``README.md`` and ``shala_pl.yaml`` of an export (``module``: the trained :class:`VoteModule`)."""
    prompt = dataclasses.asdict(datamodule.prompt) if datamodule is not None else None
    fragment = {
        "model": {"class_path": "shala_pl.modules.VoteModule",
                  "init_args": {"name_or_path": str(out_dir.resolve()), "dtype": module.model_options["dtype"]}},
    }
    if datamodule is not None:
        fragment["data"] = {"prompt": prompt, "max_prompt_length": datamodule.max_prompt_length}
    header = ("# Written by shala_pl with this export: the prompt settings the model was trained with, as a config\n"
              "# fragment. Score this folder (the zero-shot VoteModule on the exported weights):\n"
              f"#   shala-pl predict --config RUN_CONFIG --config {out_dir / CONFIG_FRAGMENT}\n"
              "# (a moved folder: add --model.init_args.name_or_path NEW_FOLDER after it)\n")
    (out_dir / CONFIG_FRAGMENT).write_text(header + yaml.safe_dump(fragment, sort_keys=False))
    (out_dir / "README.md").write_text(model_card(out_dir, module, datamodule, metrics))


def model_card(out_dir: Path, module, datamodule=None, metrics: Optional[dict] = None) -> str:
    options = module.model_options
    base = base_model_reference(module.name_or_path, options["from_hub"])
    kind = "a LoRA adapter" if module.uses_lora else "the full model"
    method_options = {k: _plain(v) for k, v in module.hparams.items()
                      if k not in ("label_names", "verbalizers", "name_or_path") and not k.startswith("_")}
    lines = [
        "---",
        f"base_model: {base}",
        "library_name: peft" if module.uses_lora else "library_name: transformers",
        "tags: [shala_pl, label-distribution]",
        "---",
        "",
        f"# {type(module).__name__} on {datamodule.source if datamodule is not None else 'its data'}",
        "",
        f"This folder holds {kind} trained with shala_pl to match the distribution of human votes over "
        f"{len(module.label_names)} labels. Base model: `{base}`"
        + (" (recorded in `adapter_config.json`, so peft finds it from any folder)." if module.uses_lora else "."),
        "",
        "## Data",
        "",
    ]
    if datamodule is not None:
        sizes = ", ".join(f"{split} {len(datamodule.examples(split))}" for split in ("train", "val", "test"))
        lines += [f"- source: `{datamodule.source}`" + (f", path `{datamodule.path}`" if datamodule.path else ""),
                  f"- split: `{datamodule.split}` (seed {datamodule.split_seed}): {sizes} examples",
                  f"- source options: `{json.dumps(datamodule.source_options)}`", ""]
    else:
        lines += ["(exported from a checkpoint without its data module: see the run's config.yaml)", ""]
    lines += ["## Method", "", f"`{type(module).__module__}.{type(module).__name__}` with:", "", "```yaml",
              yaml.safe_dump(method_options, sort_keys=False).rstrip(), "```", ""]
    if metrics:
        lines += ["## Validation at the end of training", "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4f} |" for name, value in metrics.items()]
        lines += [""]
    lines += _prompt_section(module, datamodule)
    return "\n".join(lines) + "\n"


def _prompt_section(module, datamodule) -> list[str]:
    labels = list(module.label_names)
    continuations = list(module.verbalizers)
    lines = ["## Prompt and labels", ""]
    if datamodule is None:
        return lines + [f"labels: {labels}; the model's continuation for each: {continuations}", ""]
    example = datamodule.examples("val")[0]
    task, settings, tokenizer = example.task, datamodule.prompt, datamodule.tokenizer
    words = [c.strip() for c in continuations]
    prefix = answer_prefix(settings, task)
    chat = bool(settings.use_chat_template and getattr(tokenizer, "chat_template", None))
    system = settings.system_prompt if settings.system_prompt is not None else (
        "" if chat and template_adds_system_prompt(tokenizer) else None)
    lines += [
        f"- question template (task `{task}`): `{json.dumps(TASK_TEMPLATES[task])}`",
        f"- instruction after it: `{answer_instruction(words, settings.reasoning)}`",
        f"- chat template: {'yes' if chat else 'no'}; system turn: "
        f"{'none' if system is None else json.dumps(system)}",
        f"- answer prefix (opens the model's turn): `{json.dumps(prefix)}`",
        "- labels, the word for each, and the text scored after the prompt:",
        "",
        "| label | word | continuation |",
        "|---|---|---|",
        *(f"| {label} | {word} | `{json.dumps(c)}` |" for label, word, c in zip(labels, words, continuations)),
        "",
        "## Load and score",
        "",
        "The model's label distribution is each continuation's summed token log-probability after the prompt, "
        "normalised over the labels (transformers loads " + ("the adapter with its base model; needs peft" if
        module.uses_lora else "the model") + "):",
        "",
        "```python",
        *_scoring_code(task, labels, continuations, words, settings.reasoning, chat, system, prefix,
                       datamodule.max_prompt_length),
        "```",
        "",
        f"With shala_pl: `shala-pl predict --config RUN_CONFIG --config {CONFIG_FRAGMENT}` (this folder's "
        f"`{CONFIG_FRAGMENT}` holds the prompt settings).",
    ]
    return lines


def _scoring_code(task, labels, continuations, words, reasoning, chat, system, prefix, max_length) -> list[str]:
    if chat:
        messages = '[{"role": "user", "content": user}]' if system is None else \
            f'[{{"role": "system", "content": {system!r}}}, {{"role": "user", "content": user}}]'
        opening = [f"    messages = {messages}",
                   "    opened = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)"]
    else:
        opening = [f'    opened = {(system + chr(10) * 2) if system else ""!r} + user + "\\n"']
    opening = "\n".join(opening)
    return f'''import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

FOLDER = "."  # this folder
tokenizer = AutoTokenizer.from_pretrained(FOLDER)
model = AutoModelForCausalLM.from_pretrained(FOLDER, dtype=torch.float32).eval()
LABELS = {labels!r}
CONTINUATIONS = {continuations!r}


def prompt(**fields) -> str:
    """The prompt as in training; fields: {", ".join(sorted(_fields_of(task)))}."""
    user = {TASK_TEMPLATES[task]!r}.format(**fields) + "\\n" + {answer_instruction(words, reasoning)!r}
{opening}
    return opened + {prefix!r}


@torch.no_grad()
def label_probs(text: str) -> dict[str, float]:
    prompt_ids = tokenizer(text, add_special_tokens=False)["input_ids"][-{max_length}:]
    scores = []
    for continuation in CONTINUATIONS:
        ids = tokenizer(continuation, add_special_tokens=False)["input_ids"]
        logits = model(torch.tensor([prompt_ids + ids])).logits[0, len(prompt_ids) - 1 : -1].float()
        scores.append(torch.log_softmax(logits, -1)[torch.arange(len(ids)), ids].sum())
    return dict(zip(LABELS, torch.softmax(torch.stack(scores), -1).tolist()))'''.splitlines()


def _fields_of(task: str) -> set[str]:
    import string

    return {name for _, name, _, _ in string.Formatter().parse(TASK_TEMPLATES[task]) if name}


def _plain(value):
    """A hyper-parameter as YAML writes it (dataclasses as dicts, callables by name)."""
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
