"""The registry: one entry point for every source, strict about names, options and paths."""

import pytest

from shala_pl.data.example import VoteExample
from shala_pl.data.prompts import TASK_TEMPLATES
from shala_pl.data.sources import SOURCE_NAMES, load_source, source_options

FIXTURE_OF = {
    "chaosnli_snli": ("chaosnli", {}),
    "chaosnli_mnli": ("chaosnli", {}),
    "chaosnli_alphanli": ("chaosnli", {}),
    "snli": ("snli_1.0_test_part.jsonl", {}),
    "mnli": ("multinli_1.0_dev_matched_part.jsonl", {}),
    "goemotions": ("goemotions", {"taxonomy": "ekman"}),
    "msp_podcast": ("msp_podcast_json", {"keep_other": True}),
    "jsonl": ("generic_votes.jsonl", {}),
    "synthetic": (None, {"n_examples": 30}),
}


def test_the_source_names():
    assert SOURCE_NAMES == ("chaosnli_snli", "chaosnli_mnli", "chaosnli_alphanli", "snli", "mnli", "goemotions",
                            "msp_podcast", "jsonl", "synthetic")
    assert set(FIXTURE_OF) == set(SOURCE_NAMES)


@pytest.mark.parametrize("source", SOURCE_NAMES)
def test_every_source_gives_consistent_examples_its_prompt_template_can_render(fixtures_dir, source):
    name, options = FIXTURE_OF[source]
    examples = load_source(source, fixtures_dir / name if name else None, **options).examples
    assert examples and all(isinstance(e, VoteExample) for e in examples)
    labels = examples[0].labels
    for example in examples:
        assert example.labels == labels and len(example.votes) == len(labels)
        assert 0 <= example.majority < len(labels) and example.total_votes > 0
        assert TASK_TEMPLATES[example.task].format(**example.fields)


def test_an_unknown_source_lists_the_valid_ones():
    with pytest.raises(ValueError, match="unknown source 'sst2'; valid sources: chaosnli_snli, .*synthetic"):
        load_source("sst2", "x")


def test_an_unknown_option_is_a_type_error_naming_it(fixtures_dir):
    with pytest.raises(TypeError, match=r"'snli' got unknown option\(s\) \['taxonomy'\]"):
        load_source("snli", fixtures_dir / "snli_1.0_test_part.jsonl", taxonomy="ekman")
    with pytest.raises(TypeError, match="keep_others"):
        load_source("msp_podcast", fixtures_dir / "msp_podcast_json", keep_other=True, keep_others=True)


def test_source_options_lists_what_each_source_accepts():
    assert source_options("goemotions") == {"taxonomy": "full"}
    assert source_options("msp_podcast") == {"splits": None, "keep_other": False}
    assert source_options("chaosnli_alphanli") == {}


def test_paths_must_exist(tmp_path):
    missing = tmp_path / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_source("snli", missing)
    with pytest.raises(ValueError, match="needs a path"):
        load_source("goemotions", None)


def test_on_invalid_must_be_error_or_skip(fixtures_dir):
    with pytest.raises(ValueError, match="on_invalid"):
        load_source("snli", fixtures_dir / "snli_1.0_test_part.jsonl", on_invalid="ignore")
