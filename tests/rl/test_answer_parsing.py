"""The answer parser: tolerant of format, strict about ambiguity."""

import pytest

from shala_pl.rl.answer_parsing import AnswerParser

parser = AnswerParser(["entailment", "neutral", "contradiction"])


@pytest.mark.parametrize(
    "answer, expected",
    [
        ("entailment", 0),
        ("Neutral.", 1),
        ("  CONTRADICTION!", 2),
        ("Answer: neutral", 1),
        ("The answer is: contradiction", 2),
        ("**entailment**", 0),
        ("neutral, because the premise says nothing about it", 1),
        ("I think it is a contradiction here", 2),
        ("<answer>neutral</answer>", 1),
        ("Maybe entailment... <answer> Contradiction </answer>", 2),
        ("<answer>entailment</answer> then <answer>neutral</answer>", 1),
        ("", -1),
        ("banana", -1),
        ("entailment or neutral", 0),  # starts with a label: read as that label
        ("could be neutral or entailment", -1),  # several labels mentioned, none first
        ("<answer></answer>", -1),
    ],
)
def test_parses(answer, expected):
    assert parser(answer) == expected


def test_first_tag_option():
    first = AnswerParser(["entailment", "neutral", "contradiction"], use_last_tag=False)
    assert first("<answer>entailment</answer> <answer>neutral</answer>") == 0


def test_longer_verbalizer_wins_over_its_prefix():
    p = AnswerParser(["joy", "joyful"])
    assert p("joyful") == 1
    assert p("joy") == 0


def test_verbalizers_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        AnswerParser(["Yes", "yes"])
