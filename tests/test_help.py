"""Option help that documents: each option's meaning (docstring ``Args:``) shows in ``--help`` and
``--model.help``; a repeated help request is answered from the cache without importing torch."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent


def help_run(tmp_path, *args):
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "shala_pl", *args], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ, "XDG_CACHE_HOME": str(tmp_path),
                                                      "COLUMNS": "120"})
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    return " ".join(out.stdout.split()), imported


@pytest.mark.slow
def test_fit_help_explains_options_and_is_answered_from_the_cache_the_second_time(tmp_path):
    first, imported_first = help_run(tmp_path, "fit", "--help")
    for meaning in ("text that opens the model's turn (not with reasoning)",  # data.prompt.answer_prefix
                    "prompts per training batch (per process)",  # data.batch_size
                    "a bad row is an error (file, line and field named) or is skip-ped"):  # data.on_invalid
        assert meaning in first
    second, imported_second = help_run(tmp_path, "fit", "--help")
    assert second == first
    assert "torch" in imported_first and "torch" not in imported_second and "lightning" not in imported_second


@pytest.mark.slow
def test_a_method_help_lists_its_own_options_with_their_meaning(tmp_path):
    text, _ = help_run(tmp_path, "fit", "--model.help", "SFTModule")
    assert "soft trains on the human vote distribution (sft_soft)" in text
    assert "train a LoRA adapter instead of every weight" in text  # the VoteModule options it inherits
