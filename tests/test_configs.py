"""What every shipped run config promises about its data: validation never sees a test example."""

from pathlib import Path

import pytest
import yaml

from shala_pl.data.datamodule import VoteDataModule

REPO = Path(__file__).parent.parent
FIXTURES = REPO / "tests" / "fixtures"
RUN_CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
# each source's fixture in its official format, standing in for the config's (downloaded) files
FIXTURE_OF = {
    "chaosnli_snli": FIXTURES / "chaosnli/chaosNLI_snli.jsonl",
    "chaosnli_mnli": FIXTURES / "chaosnli/chaosNLI_mnli_m.jsonl",
    "chaosnli_alphanli": FIXTURES / "chaosnli/chaosNLI_alphanli.jsonl",
    "snli": FIXTURES / "snli_1.0_test_part.jsonl",
    "goemotions": FIXTURES / "goemotions",
    "msp_podcast": FIXTURES / "msp_podcast_json",
}


@pytest.mark.parametrize("config", RUN_CONFIGS, ids=lambda p: p.name)
def test_no_config_validates_on_test_examples(config, tiny_model_dir):
    data = yaml.safe_load(config.read_text())["data"]
    for key in ("path", "val_path", "test_path"):
        if data.get(key):
            data[key] = str(FIXTURE_OF[data["source"]])
    module = VoteDataModule(**data, tokenizer_path=str(tiny_model_dir))
    val, test = ({ex.uid for ex in module.examples(split)} for split in ("val", "test"))
    assert val and test and not (val & test), f"{config.name}: {len(val & test)} uids in both val and test"
