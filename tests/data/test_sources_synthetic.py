"""The synthetic source: deterministic, the concept word decides a known true distribution, votes sampled from it."""

import math

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from shala_pl.data.sources import load_source
from shala_pl.data.sources.synthetic import (LABELS, TEMPLATES, concept_distribution, concept_words,
                                             generate_examples, noise_floor_jsd)


def entropy(p):
    return -sum(x * math.log(x) for x in p if x > 0)


def test_defaults_and_shape():
    examples = load_source("synthetic", None).examples
    assert len(examples) == 2000
    first = examples[0]
    assert (first.uid, first.task, first.labels, set(first.fields)) == ("syn-0-0", "generic", LABELS, {"text"})
    assert all(e.total_votes == 20 for e in examples)
    assert all(abs(sum(e.true_distribution) - 1) < 1e-12 for e in examples)


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data():
    assert generate_examples(50, seed=3) == generate_examples(50, seed=3)
    assert [e.fields for e in generate_examples(50, seed=3)] != [e.fields for e in generate_examples(50, seed=4)]
    # more examples extend the list without changing the first ones
    assert generate_examples(200, seed=3)[:50] == generate_examples(50, seed=3)


def test_the_path_is_ignored():
    assert load_source("synthetic", "/no/such/path", n_examples=5).examples == generate_examples(5)


def test_concept_words_are_distinct_short_nonce_words():
    words = concept_words(24, seed=0)
    assert len(set(words)) == 24
    template_words = {word for template in TEMPLATES for word in template.split()}
    assert all(word.isalpha() and 4 <= len(word) <= 6 and word not in template_words for word in words)


def test_the_concept_word_alone_decides_the_true_distribution():
    words = concept_words(24, seed=0)
    truth_of = {}
    for example in generate_examples(480):
        (word,) = [w for w in example.fields["text"].split() if w in words]
        assert truth_of.setdefault(word, example.true_distribution) == example.true_distribution
    assert len(truth_of) == 24


def test_ambiguity_spreads_from_near_certain_to_uniform():
    n = 24
    truths = [concept_distribution(j, n) for j in range(n)]
    assert max(truths[0]) == pytest.approx(0.96) and min(truths[0]) == pytest.approx(0.02)
    assert truths[-1] == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    entropies = [entropy(p) for p in truths]
    assert entropies[0] < entropies[n // 3] < entropies[2 * n // 3] < entropies[-1]
    assert {int(np.argmax(p)) for p in truths[:6]} == {0, 1, 2}  # every label dominates some concept
    assert any(sorted(p)[0] != pytest.approx(sorted(p)[1]) for p in truths[1:-1])  # some asymmetric ambiguity


def test_votes_are_samples_of_the_true_distribution():
    examples = generate_examples(2400, n_annotators=20, n_concepts=24)
    for concept in (0, 11, 23):
        group = examples[concept::24]
        mean_votes = np.mean([e.distribution for e in group], axis=0)
        assert mean_votes == pytest.approx(group[0].true_distribution, abs=0.03)


def test_noise_floor_is_the_mean_jsd_between_truth_and_votes_and_shrinks_with_more_annotators():
    examples = generate_examples(300, n_annotators=20)
    expected = np.mean([jensenshannon(e.true_distribution, e.distribution) for e in examples])
    assert noise_floor_jsd(examples) == pytest.approx(expected)
    assert 0 < noise_floor_jsd(generate_examples(300, n_annotators=200)) < noise_floor_jsd(examples)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="n_concepts >= 2"):
        load_source("synthetic", None, n_concepts=1)
    with pytest.raises(TypeError, match="n_raters"):
        load_source("synthetic", None, n_raters=5)
