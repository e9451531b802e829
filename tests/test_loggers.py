"""Any Lightning logger: the validation figures reach it through its own API and the run folder is the same
``<default_root_dir>/version_N/{checkpoints,hf_model}`` whatever the logger."""

import json
from pathlib import Path

import pytest

from conftest import small_quickstart_run
from shala_pl.__main__ import main
from shala_pl import media


def fit_with_logger(tiny_model_dir, root: Path, *logger_args: str) -> None:
    args = small_quickstart_run(tiny_model_dir, root, 2, "--trainer.val_check_interval", "2", "--data.eval_batch_size",
                                "16", "--model.init_args.sample_table_every_n_steps", "0")
    args.remove("--trainer.logger")
    args.remove("false")
    assert main([*args, *logger_args]) == 0


def test_csv_logger_writes_figures_beside_metrics_csv_in_the_usual_run_folder(tiny_model_dir, tmp_path):
    root = tmp_path / "runs"
    fit_with_logger(tiny_model_dir, root, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                    "--trainer.logger.save_dir", str(root), "--model.init_args.sample_table_every_n_steps", "1",
                    "--trainer.log_every_n_steps", "1")
    run = root / "version_0"
    assert (run / "metrics.csv").is_file() and (run / "checkpoints/last.ckpt").is_file()
    # the GRPO sample table of each training step, as a CSV file beside metrics.csv
    tables = sorted(run.glob("rollout_samples-*.csv"))
    assert [p.name for p in tables] == ["rollout_samples-step000000.csv", "rollout_samples-step000001.csv"]
    header, first = tables[0].read_text().splitlines()[:2]
    assert header == "uid,prompt (end),p,answer,label,reward" and first.split(",")[0]
    assert (run / "hf_model/config.json").is_file()
    figures = sorted(p.name for p in run.glob("*.png"))
    # validation after step 2 (the fit loop's point, step 1) and the closing validation (step 2)
    assert figures == ["val_jsd_by_entropy-step000001.png", "val_jsd_by_entropy-step000002.png",
                       "val_model_vs_human-step000001.png", "val_model_vs_human-step000002.png"]
    assert all((run / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in figures)
    assert not (root / "lightning_logs").exists()
    # the same layout, so --ckpt_path last finds this run's checkpoint
    args = small_quickstart_run(tiny_model_dir, root, 2, "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
                                "--trainer.logger.save_dir", str(root), "--ckpt_path", "last")
    assert main(["validate", *args[1:]]) == 0


@pytest.fixture
def file_store(monkeypatch):
    """MLflow 3 refuses its ``file:`` store unless asked: the offline store with nothing else to install."""
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return pytest.importorskip("mlflow")


def test_mlflow_logger_gets_the_figures_as_run_artifacts_and_the_run_folder_stays(tiny_model_dir, tmp_path,
                                                                                 file_store):
    mlflow = file_store
    root, store = tmp_path / "runs", tmp_path / "mlruns"
    fit_with_logger(tiny_model_dir, root, "--trainer.logger", "lightning.pytorch.loggers.MLFlowLogger",
                    "--trainer.logger.tracking_uri", f"file:{store}", "--trainer.logger.experiment_name", "shala")
    run = root / "version_0"
    assert (run / "checkpoints/last.ckpt").is_file() and (run / "hf_model/config.json").is_file()
    client = mlflow.MlflowClient(tracking_uri=f"file:{store}")
    (found,) = client.search_runs([client.get_experiment_by_name("shala").experiment_id])
    artifacts = {a.path for folder in ("val/jsd_by_entropy", "val/model_vs_human")
                 for a in client.list_artifacts(found.info.run_id, folder)}
    assert artifacts == {"val/jsd_by_entropy/step_000001.png", "val/jsd_by_entropy/step_000002.png",
                         "val/model_vs_human/step_000001.png", "val/model_vs_human/step_000002.png"}
    assert "val/jsd" in found.data.metrics


def test_a_table_goes_to_mlflow_as_json_and_to_csv_as_a_file(tmp_path, file_store):
    """``media.log_table`` (the GRPO sample table's way out) with the two loggers' real classes."""
    mlflow = file_store
    from lightning.pytorch.loggers import CSVLogger, MLFlowLogger

    csv_logger = CSVLogger(tmp_path / "csv", name="")
    mlflow_logger = MLFlowLogger(experiment_name="tables", tracking_uri=f"file:{tmp_path / 'mlruns'}")

    class Trainer:  # what log_table reads of a trainer: its loggers
        loggers = [csv_logger, mlflow_logger]
        logger, checkpoint_callback, default_root_dir = csv_logger, None, str(tmp_path)

    media.log_table(Trainer(), "rollout/samples", ["uid", "answer", "reward"], [["a", "yes", -0.5], ["b", "no", 0.1]],
                    7)
    written = Path(csv_logger.log_dir) / "rollout_samples-step000007.csv"
    assert written.read_text().splitlines() == ["uid,answer,reward", "a,yes,-0.5", "b,no,0.1"]
    client = mlflow.MlflowClient(tracking_uri=f"file:{tmp_path / 'mlruns'}")
    local = client.download_artifacts(mlflow_logger.run_id, "rollout/samples/step_000007.json", str(tmp_path))
    table = json.loads(Path(local).read_text())
    assert table["columns"] == ["uid", "answer", "reward"] and table["data"] == [["a", "yes", -0.5], ["b", "no", 0.1]]
