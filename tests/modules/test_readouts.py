"""The sampling readout: its invalid-answer rate is logged, and predict rows carry each answer's parsed label."""

import json
from pathlib import Path

from shala_pl.cli import cli_main

REPO = Path(__file__).resolve().parents[2]


def test_sampling_readout_logs_invalid_rate_and_predict_writes_sample_labels(tiny_model_dir, tmp_path):
    preds = tmp_path / "preds.jsonl"
    cli = cli_main([
        "--config", str(REPO / "configs/quickstart.yaml"), "--config", str(REPO / "configs/method/zero_shot.yaml"),
        "--model.init_args.name_or_path", str(tiny_model_dir),
        "--model.init_args.readouts", "[label_probs, sampling]", "--model.init_args.sampling.num_samples", "4",
        "--model.init_args.sampling.max_new_tokens", "3",
        "--data.source_options", "{n_examples: 40, n_annotators: 5}", "--data.eval_batch_size", "8",
        "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path), "--predictions.path", str(preds),
    ], run=False)
    tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)[0]
    cli.trainer.predict(cli.model, datamodule=cli.datamodule, return_predictions=False)
    rows = [json.loads(line) for line in preds.read_text().splitlines()]

    labels = [label for row in rows for label in row["sample_labels"]]
    assert len(labels) == 4 * len(rows) and all(len(row["samples"]) == 4 for row in rows)
    for row in rows:  # each label is what the parser reads in the answer beside it
        for text, label in zip(row["samples"], row["sample_labels"]):
            index = cli.model.parser(text)
            assert label == (cli.model.label_names[index] if index >= 0 else None)
    # test and predict sample with the same per-batch seeds: the logged rate is the share of unparsed answers
    invalid_share = sum(label is None for label in labels) / len(labels)
    assert abs(tested["test/sampling/invalid_rate"] - invalid_share) < 1e-6
