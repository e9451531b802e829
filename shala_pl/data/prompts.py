"""Prompt templates per task, rendered as chat messages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

TASK_TEMPLATES = {
    "nli": (
        "Premise: {premise}\nHypothesis: {hypothesis}\n"
        "Does the premise entail the hypothesis, contradict it, or neither (neutral)?"
    ),
    "abductive_nli": (
        "Observation 1: {obs1}\nObservation 2: {obs2}\nHypothesis 1: {hyp1}\nHypothesis 2: {hyp2}\n"
        "Which hypothesis better explains what happened between the two observations?"
    ),
    "emotion_reddit": "Reddit comment: {text}\nWhich emotion does this comment express?",
    "emotion_podcast": "Podcast transcript: {transcript}\nWhich emotion does the speaker express?",
    "generic": "{text}\nWhich label fits?",
}


@dataclass
class PromptSettings:
    reasoning: bool = False  # ask for brief reasoning, then the label inside <answer></answer>
    verbalizers: dict[str, str] = field(default_factory=dict)  # label name -> the word the model says
    system_prompt: Optional[str] = None
    use_chat_template: bool = True  # when the tokenizer has one


def verbalizer_words(labels: Sequence[str], settings: PromptSettings) -> list[str]:
    unknown = set(settings.verbalizers) - set(labels)
    if unknown:
        raise ValueError(f"verbalizers given for unknown labels {sorted(unknown)}; labels are {list(labels)}")
    return [settings.verbalizers.get(label, label) for label in labels]


def answer_instruction(words: Sequence[str], reasoning: bool) -> str:
    options = ", ".join(words)
    if reasoning:
        return f"Think it through briefly, then give one of: {options}, inside <answer></answer>."
    return f"Answer with one of: {options}. Reply with the label only."


def render_prompt(task: str, fields: dict, words: Sequence[str], settings: PromptSettings, tokenizer) -> str:
    """The full prompt text, ending where the model's answer starts."""
    if task not in TASK_TEMPLATES:
        raise ValueError(f"unknown task {task!r}; templates exist for {sorted(TASK_TEMPLATES)}")
    question = TASK_TEMPLATES[task].format(**fields)
    user = f"{question}\n{answer_instruction(words, settings.reasoning)}"
    if settings.use_chat_template and getattr(tokenizer, "chat_template", None):
        messages = [{"role": "user", "content": user}]
        if settings.system_prompt:
            messages.insert(0, {"role": "system", "content": settings.system_prompt})
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    system = f"{settings.system_prompt}\n\n" if settings.system_prompt else ""
    return f"{system}{user}\nAnswer: "
