"""Prompt templates per task, rendered as chat messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

TASK_TEMPLATES = {
    "nli": "Premise: {premise}\nHypothesis: {hypothesis}\nIf the premise is true, is the hypothesis also true?",
    "abductive_nli": (
        "Observation 1: {obs1}\nObservation 2: {obs2}\nHypothesis 1: {hyp1}\nHypothesis 2: {hyp2}\n"
        "Which hypothesis better explains what happened between the two observations?"
    ),
    "emotion_reddit": "Reddit comment: {text}\nWhich emotion does this comment express?",
    "emotion_podcast": "Podcast transcript: {transcript}\nWhich emotion does the speaker express?",
    "generic": "{text}\nWhich label fits?",
}


# The words a small instruct model answers such a question with (SmolLM2-135M-Instruct answers "neutral" to every
# pair with the label names; see README, "A real LLM on CPU"). Other tasks say their label names.
TASK_VERBALIZERS = {"nli": {"entailment": "yes", "neutral": "maybe", "contradiction": "no"}}
# What opens the model's turn per task. SmolLM2 answers NLI in a word after "Answer:": 79.8% of its sampled answers
# parse into a label, against 30.1% without (100 ChaosNLI-MNLI validation pairs x 8 answers of 6 tokens:
# tools/zero_shot.py --model artifacts/smollm2-135m-instruct --source chaosnli_mnli --data PATH --split val --limit 100
# --readouts sampling --max-new-tokens 6 --answer-prefix "Answer:" "", in docs/measurements/
# answer_prefix_parse_rate_smollm2_chaosnli_mnli_val.json). Other tasks open none: on the synthetic task (a tiny model
# trained from scratch) the prefix does not help - shala's validation JSD 0.177±0.031 with, 0.172±0.026 without
# (tools/benchmark_methods.py --quick --split val --datasets synthetic --methods shala --variant
# "shala_answer_prefix=shala --data.prompt.answer_prefix=Answer:", in docs/measurements/
# answer_prefix_synthetic_val.json; 2 seeds), a difference within the seeds' spread.
TASK_ANSWER_PREFIX = {"nli": "Answer:"}


@dataclass(frozen=True)  # frozen: the DataModule uses one instance as its default
class PromptSettings:
    """How each example becomes the prompt the model answers.

    Args:
        reasoning: ask for brief reasoning, then the label inside <answer></answer>.
        verbalizers: label name -> the word the model says for it (default: the task's words in
            TASK_VERBALIZERS, else the label name).
        system_prompt: the system turn's text; null: no system turn, and a chat template's built-in one is kept
            out.
        answer_prefix: text that opens the model's turn (not with reasoning), the label word following after a
            space; null: the task's in TASK_ANSWER_PREFIX ("Answer:" for NLI).
        use_chat_template: render the prompt with the tokenizer's chat template when it has one.
    """

    reasoning: bool = False
    verbalizers: dict[str, str] = field(default_factory=dict)
    system_prompt: Optional[str] = None
    answer_prefix: Optional[str] = None
    use_chat_template: bool = True


def verbalizer_words(labels: Sequence[str], settings: PromptSettings, task: str = "") -> list[str]:
    """The word for each label, as the instruction lists it."""
    unknown = set(settings.verbalizers) - set(labels)
    if unknown:
        raise ValueError(f"data.prompt.verbalizers given for unknown labels {sorted(unknown)}; "
                         f"labels are {list(labels)}")
    words = {**TASK_VERBALIZERS.get(task, {}), **settings.verbalizers}
    return [words.get(label, label) for label in labels]


def answer_prefix(settings: PromptSettings, task: str) -> str:
    if settings.reasoning:
        return ""
    return TASK_ANSWER_PREFIX.get(task, "") if settings.answer_prefix is None else settings.answer_prefix


def label_continuations(words: Sequence[str], settings: PromptSettings, task: str = "") -> list[str]:
    """The text the model produces for each label right after the prompt: " yes" after "Answer:"."""
    prefix = answer_prefix(settings, task)
    separator = " " if prefix and not prefix[-1].isspace() else ""
    return [separator + word for word in words]


def answer_instruction(words: Sequence[str], reasoning: bool) -> str:
    words = [w.strip() for w in words]
    options = ", ".join(words[:-1]) + f", or {words[-1]}" if len(words) > 1 else words[0]
    if reasoning:
        return f"Think it through briefly, then give one of: {options}, inside <answer></answer>."
    return f"Reply with one word: {options}."


def template_adds_system_prompt(tokenizer) -> bool:
    """Whether the chat template writes a system turn of its own when the messages have none."""
    probe = "\x00"
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False)
    return "system" in rendered.split(probe)[0].lower()


def render_prompt(task: str, fields: dict, words: Sequence[str], settings: PromptSettings, tokenizer) -> str:
    """The full prompt text, ending where the model's answer starts."""
    if task not in TASK_TEMPLATES:
        raise ValueError(f"unknown task {task!r}; templates exist for {sorted(TASK_TEMPLATES)}")
    question = TASK_TEMPLATES[task].format(**fields)
    user = f"{question}\n{answer_instruction(words, settings.reasoning)}"
    if settings.use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        if settings.system_prompt is not None or template_adds_system_prompt(tokenizer):
            # an empty system turn keeps a template's built-in one ("You are a helpful AI assistant ...") out
            messages.insert(0, {"role": "system", "content": settings.system_prompt or ""})
        opened = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        system = f"{settings.system_prompt}\n\n" if settings.system_prompt else ""
        opened = f"{system}{user}\n"
    return opened + answer_prefix(settings, task)
