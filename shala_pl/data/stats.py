"""Summary numbers of a read source (what ``shala-pl data-stats`` prints)."""

from __future__ import annotations

import math
from collections import Counter

from shala_pl.data.example import ReadResult


def data_stats(result: ReadResult) -> dict:
    examples = result.examples
    labels = list(examples[0].labels) if examples else []
    total_votes = sum(example.total_votes for example in examples)
    majorities = Counter(example.labels[example.majority] for example in examples)
    n = len(examples)
    return {
        "n_examples": n,
        "labels": labels,
        "total_votes": _plain_number(total_votes),
        "mean_votes_per_example": total_votes / n if n else None,
        # nats, like every other entropy, KL and JSD the project reports; bits alongside, named as such
        "mean_entropy_nats": sum(example.entropy for example in examples) / n if n else None,
        "mean_entropy_bits": sum(example.entropy for example in examples) / n / math.log(2) if n else None,
        "majority_label_counts": {label: majorities[label] for label in labels},
        "n_ties": sum(example.majority_is_tie for example in examples),
        "skipped": dict(sorted(result.skipped.items())),
    }


def _plain_number(x: float):
    """An int when the float is a whole number (fractional GoEmotions shares add up to whole raters)."""
    rounded = round(float(x), 9)
    return int(rounded) if rounded.is_integer() else rounded
