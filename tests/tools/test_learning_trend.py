"""``tools/learning_trend.py``: one method validated before training and after every epoch, next to the constants
fitted on the training split, on the real profile's split of a ChaosNLI file."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURE = REPO / "tests" / "fixtures" / "chaosnli" / "chaosNLI_mnli_m.jsonl"


@pytest.mark.slow
def test_one_row_per_epoch_and_the_constants_on_the_same_validation_pairs(tmp_path, tiny_model_dir):
    out = tmp_path / "trend.json"
    proc = subprocess.run([sys.executable, "tools/learning_trend.py", "--model", str(tiny_model_dir), "--source",
                           "chaosnli_mnli", "--data", str(FIXTURE), "--method", "sft_soft", "--lr", "1e-3",
                           "--epochs", "2", "--json", str(out)], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trend = json.loads(out.read_text())
    # the 12 fixture pairs split as the real profile splits them: 6 train in batches of 8, one step an epoch
    assert [(row["epoch"], row["step"]) for row in trend["rows"]] == [(0.0, 0), (1.0, 1), (2.0, 2)]
    assert trend["rows"][0]["jsd"] != trend["rows"][-1]["jsd"]  # it trained
    assert set(trend["constants"]) == {"uniform", "train_mean", "best_constant"}
    assert trend["constant_val"]["uniform"]["jsd"] > 0 and 0 <= trend["majority_rate_val"] <= 1
    assert "best_constant" in proc.stdout and "majority-class rate on validation" in proc.stdout
