"""What every shipped run config promises about its data: validation never sees a test example."""

from pathlib import Path

import pytest
import yaml

from conftest import small_quickstart_run
from shala_pl.__main__ import main
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


@pytest.mark.parametrize("option, value, message", [
    ("--trainer.max_steps", "-5", "trainer.max_steps must be a positive number of optimizer steps or -1 (no limit), "
                                  "got -5"),
    ("--trainer.max_steps", "0", "trainer.max_steps must be a positive number of optimizer steps or -1 (no limit), "
                                 "got 0"),
    ("--data.batch_size", "0", "data.batch_size must be a positive integer, got 0"),
    ("--data.eval_batch_size", "-1", "data.eval_batch_size must be a positive integer, got -1"),
    ("--data.max_prompt_length", "0", "data.max_prompt_length must be a positive integer, got 0"),
    ("--data.val_fraction", "1.5", "data.val_fraction must be in [0, 1), got 1.5"),
    ("--data.test_fraction", "0.95", "data.val_fraction + data.test_fraction must be below 1 (the rest is the "
                                     "training set), got 1.05"),
    ("--data.val_from_test", "-0.1", "data.val_from_test must be in [0, 1), got -0.1"),
])
def test_bad_values_stop_at_parse_time_naming_the_option(tiny_model_dir, tmp_path, capsys, option, value, message):
    args = small_quickstart_run(tiny_model_dir, tmp_path, 1, option, value)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"shala_pl: error: {message}"
    assert not any(tmp_path.iterdir())  # nothing ran


def test_readout_names_are_checked_by_the_parser(tiny_model_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(small_quickstart_run(tiny_model_dir, tmp_path, 1, "--model.init_args.readouts", "[label_prob]"))
    assert exit_info.value.code == 2
    assert "label_prob" in capsys.readouterr().err
