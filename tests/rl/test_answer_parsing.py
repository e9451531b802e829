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


def test_reasoning_answers_count_only_inside_the_tag():
    tagged = AnswerParser(["entailment", "neutral", "contradiction"], require_tag=True)
    # a truncated reasoning answer: its words are reasoning, not the answer (the plain parser reads "contradiction")
    truncated = "This is not a contradiction, because"
    assert parser(truncated) == 2
    assert tagged(truncated) == -1
    assert tagged("neutral") == -1
    assert tagged("It says nothing about it. <answer>contra") == -1  # the tag never closed
    assert tagged("No contradiction here. <answer>Neutral</answer>") == 1


def test_longer_verbalizer_wins_over_its_prefix():
    p = AnswerParser(["joy", "joyful"])
    assert p("joyful") == 1
    assert p("joy") == 0


def test_verbalizers_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        AnswerParser(["Yes", "yes"])
