"""A synthetic vote dataset whose true label distributions are known, for tests and quick experiments.

Each example mentions one made-up concept word ("the vumako is here"); the concept alone decides the true
distribution over ("red", "green", "blue"). Concepts range from near-certain (0.96/0.02/0.02) to uniform, and every
other ambiguous concept leans towards a second label so that not all ambiguity is symmetric. Votes are
``n_annotators`` draws from the concept's distribution, so even a perfect model sits at a noise floor
(``noise_floor_jsd``). Texts are a few words long and only the concept word matters, so that a tiny model can learn
the task from scratch on a CPU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from shala_pl.data.example import OnInvalid, ReadResult, VoteExample, majority_index

LABELS = ("red", "green", "blue")
TEMPLATES = ("the {} is here", "i saw a {}", "look at the {}", "a {} again")
_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_MOST_CERTAIN = 0.06  # ambiguity of the clearest concept: 0.96 / 0.02 / 0.02


def read_synthetic(path: Optional[Path] = None, *, on_invalid: OnInvalid = "error", n_examples: int = 2000,
                   n_annotators: int = 20, n_concepts: int = 24, seed: int = 0) -> ReadResult:
    """The registry's entry point: ``path`` and ``on_invalid`` are ignored (nothing is read, nothing is invalid)."""
    return ReadResult(examples=generate_examples(n_examples, n_annotators, n_concepts, seed))


def generate_examples(n_examples: int = 2000, n_annotators: int = 20, n_concepts: int = 24,
                      seed: int = 0) -> list[VoteExample]:
    if n_examples < 1 or n_annotators < 1 or n_concepts < 2:
        raise ValueError(f"need n_examples >= 1, n_annotators >= 1 and n_concepts >= 2; got {n_examples}, "
                         f"{n_annotators}, {n_concepts}")
    words = concept_words(n_concepts, seed)
    truths = [concept_distribution(j, n_concepts) for j in range(n_concepts)]
    # separate streams, so the words do not change with the number of examples
    rng = np.random.default_rng([seed, 1])
    examples = []
    for i in range(n_examples):
        concept = i % n_concepts
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        votes = tuple(int(v) for v in rng.multinomial(n_annotators, truths[concept]))
        majority, is_tie = majority_index(votes)
        text = template.format(words[concept])
        examples.append(VoteExample(uid=f"syn-{seed}-{i}", task="generic", fields={"text": text}, labels=LABELS,
                                    votes=votes, majority=majority, majority_is_tie=is_tie,
                                    true_distribution=truths[concept]))
    return examples


def concept_words(n_concepts: int, seed: int) -> list[str]:
    """Distinct pronounceable nonce words of 2-3 consonant-vowel syllables."""
    rng = np.random.default_rng([seed, 0])
    words: list[str] = []
    while len(words) < n_concepts:
        n_syllables = int(rng.integers(2, 4))
        word = "".join(_CONSONANTS[rng.integers(len(_CONSONANTS))] + _VOWELS[rng.integers(len(_VOWELS))]
                       for _ in range(n_syllables))
        if word not in words:
            words.append(word)
    return words


def concept_distribution(j: int, n_concepts: int) -> tuple:
    """Concept j's true distribution: ambiguity rises evenly with j, the dominant label cycles with j."""
    ambiguity = _MOST_CERTAIN + (1 - _MOST_CERTAIN) * j / (n_concepts - 1)
    dominant, second, third = j % 3, (j + 1) % 3, (j + 2) % 3
    p = np.full(3, ambiguity / 3)
    p[dominant] += 1 - ambiguity
    if j % 2:
        # lean towards the second label, most at mid ambiguity, not at all at the certain or uniform ends
        shift = p[third] * 2 * ambiguity * (1 - ambiguity)
        p[second] += shift
        p[third] -= shift
    return tuple(float(x) for x in p)


def noise_floor_jsd(examples: Sequence[VoteExample]) -> float:
    """Mean Jensen-Shannon distance (scipy's, natural log) between each true distribution and its sampled votes:
    about what a model that knows the true distributions scores against these examples' votes.
    """
    from scipy.spatial.distance import jensenshannon  # imported here: scipy.spatial takes half a second to load

    return float(np.mean([jensenshannon(example.true_distribution, example.distribution)
                          for example in examples]))
