"""Turn a free-text answer into a label index, tolerantly; -1 when no label can be read."""

from __future__ import annotations

import re
from typing import Sequence

_ANSWER_TAG = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
_PREFIX = re.compile(r"^\s*(final answer|answer|label|prediction|emotion)\s*(is)?\s*[:\-=]?\s*", re.IGNORECASE)
_EDGE_PUNCT = " \t\n\"'`*.,;:!?()[]{}"


def _normalise(text: str) -> str:
    text = _PREFIX.sub("", text.strip())
    return " ".join(text.strip(_EDGE_PUNCT).lower().split())


class AnswerParser:
    """Maps answers to label indices.

    Accepted, in order: the content of the last ``<answer>...</answer>`` tag; otherwise, unless ``require_tag``
    (prompts that ask for reasoning first, whose untagged text is the reasoning: "this is not a contradiction,
    because ..." is no answer), the whole answer. Within that span: an exact verbalizer match (case, surrounding
    punctuation and prefixes like "Answer:" ignored), else the verbalizer the span starts with, else the only
    verbalizer mentioned as a whole word. Anything else (none or several mentioned) is invalid.
    """

    def __init__(self, verbalizers: Sequence[str], require_tag: bool = False):
        self.verbalizers = [_normalise(v) for v in verbalizers]
        if len(set(self.verbalizers)) != len(self.verbalizers):
            raise ValueError(f"verbalizers must be distinct after normalisation: {list(verbalizers)}")
        self.require_tag = require_tag
        self._by_length = sorted(range(len(self.verbalizers)), key=lambda i: -len(self.verbalizers[i]))
        self._words = [re.compile(rf"(?<![\w]){re.escape(v)}(?![\w])") for v in self.verbalizers]

    def __call__(self, answer: str) -> int:
        tags = _ANSWER_TAG.findall(answer)
        if not tags and self.require_tag:
            return -1
        span = _normalise(tags[-1] if tags else answer)
        if not span:
            return -1
        for i in self._by_length:
            if span == self.verbalizers[i]:
                return i
        for i in self._by_length:
            if span.startswith(self.verbalizers[i]) and not span[len(self.verbalizers[i]):][:1].isalnum():
                return i
        mentioned = [i for i, word in enumerate(self._words) if word.search(span)]
        return mentioned[0] if len(mentioned) == 1 else -1
