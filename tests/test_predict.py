"""``predict`` writes JSONL that ``shala_pl.commands.evaluate`` scores to the same numbers as ``test``."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import small_quickstart_run
from shala_pl.__main__ import main
from shala_pl.cli import cli_main

REPO = Path(__file__).parent.parent
SNLI = REPO / "tests/fixtures/snli_1.0_test_part.jsonl"


def test_predict_round_trips_through_evaluate(tiny_model_dir, tmp_path):
    preds = tmp_path / "preds.jsonl"
    args = [
        "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(REPO / "configs/method/zero_shot.yaml"),
        "--model.init_args.name_or_path", str(tiny_model_dir),
        "--data.source", "snli", "--data.path", str(SNLI), "--data.source_options", "{}",
        "--data.test_fraction", "0.1", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--predictions.path", str(preds),
    ]
    cli = cli_main(args, run=False)
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)

    rows = [json.loads(line) for line in preds.read_text().splitlines()]
    test_uids = [ex.uid for ex in cli.datamodule.examples("test")]
    assert [r["uid"] for r in rows] == test_uids
    first = rows[0]
    assert set(first) >= {"uid", "probs", "predicted_label", "human"}
    assert len(first["probs"]) == 3 and abs(sum(first["probs"]) - 1) < 1e-5
    assert first["predicted_label"] in ("entailment", "neutral", "contradiction")

    # evaluate.py scores the whole file, so restrict the data to the test split's uids via --allow-missing
    out = subprocess.run(
        [sys.executable, "-m", "shala_pl.commands.evaluate", "--source", "snli", "--data", str(SNLI),
         "--predictions", str(preds), "--allow-missing", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    scored = json.loads(out.stdout)
    assert scored["n"] == len(rows)
    assert scored["jsd"] == pytest.approx(tested["test/jsd"], abs=1e-6)
    assert scored["kl"] == pytest.approx(tested["test/kl"], abs=1e-6)
    assert scored["accuracy"] == pytest.approx(tested["test/accuracy"], abs=1e-6)
    assert scored["f1_macro"] == pytest.approx(tested["test/f1_macro"], abs=1e-6)


CHAOSNLI = REPO / "tests/fixtures/chaosnli/chaosNLI_snli.jsonl"


def test_readme_real_data_steps_score_what_predict_wrote(tiny_model_dir, tmp_path):
    """The README's steps on a ChaosNLI file: fit, predict (--data.predict_split all, and the default test split),
    then shala_pl.commands.evaluate on the whole data file, as written."""
    data = ["--data.source", "chaosnli_snli", "--data.path", str(CHAOSNLI), "--data.source_options", "{}"]
    assert main(small_quickstart_run(tiny_model_dir, tmp_path, 1, *data, "--trainer.limit_val_batches", "0")) == 0

    def predict(path, *extra):
        args = small_quickstart_run(tiny_model_dir, tmp_path, 1, *data, "--ckpt_path", "last",
                                    "--predictions.path", str(path), *extra)
        args[0] = "predict"
        assert main(args) == 0
        return [json.loads(line)["uid"] for line in path.read_text().splitlines()]

    def evaluate(path, *extra):
        return subprocess.run([sys.executable, "-m", "shala_pl.commands.evaluate", "--source", "chaosnli_snli",
                               "--data", str(CHAOSNLI), "--predictions", str(path), "--json", *extra],
                              cwd=REPO, capture_output=True, text=True, timeout=120)

    every = [json.loads(line)["uid"] for line in CHAOSNLI.read_text().splitlines()]
    assert predict(tmp_path / "all.jsonl", "--data.predict_split", "all") == every
    out = evaluate(tmp_path / "all.jsonl")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n"] == len(every) == 12

    test_uids = predict(tmp_path / "test.jsonl")  # the default: the held-out test split only
    assert 0 < len(test_uids) < len(every)
    scored = json.loads(evaluate(tmp_path / "test.jsonl", "--allow-missing").stdout)
    assert (scored["n"], scored["missing_predictions"]) == (len(test_uids), len(every) - len(test_uids))


def test_predict_without_a_checkpoint_is_refused_unless_asked_for(tiny_model_dir, tmp_path, capsys):
    """Without --ckpt_path, predict would score the untrained model: it stops instead; --ckpt_path none asks for
    exactly that (with a warning); the zero_shot method needs no checkpoint."""
    args = small_quickstart_run(tiny_model_dir, tmp_path, 1, "--predictions.path", str(tmp_path / "p.jsonl"))
    args[0] = "predict"
    assert main(args) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"shala_pl: error: predict needs a trained model: --ckpt_path PATH, or --ckpt_path last (the newest run "
        f"under {tmp_path}); --ckpt_path none scores the untrained model (zero-shot)")
    assert not (tmp_path / "p.jsonl").exists()

    with pytest.warns(UserWarning, match="predict --ckpt_path none: scoring the untrained model"):
        assert main([*args, "--ckpt_path", "none"]) == 0
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) > 0

    zero_shot = [*args, "--config", str(REPO / "configs/method/zero_shot.yaml")]
    assert main(zero_shot) == 0
