"""Checkpoint files through the CLI: written atomically beside their target, checked before use, and found by what
they hold (``--ckpt_path last`` / ``best``)."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import pytest
import torch
import yaml

from conftest import small_quickstart_run
from shala_pl.__main__ import main
from shala_pl.checkpoints import best_checkpoint
from shala_pl.cli import cli_main


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tmp_path_factory) -> Path:
    """A 3-step run validated at every step, keeping the best ``val/jsd`` beside ``last``."""
    root = tmp_path_factory.mktemp("trained")
    cli_main(small_quickstart_run(tiny_model_dir, root, 3, "--trainer.val_check_interval", "1",
                                  "--trainer.limit_val_batches", "1", "--checkpoint.monitor", "val/jsd",
                                  "--checkpoint.mode", "min", "--checkpoint.filename", "best-{step}"))
    return root


def evaluate_args(tiny_model_dir, root, subcommand: str, ckpt_path: str) -> list[str]:
    args = small_quickstart_run(tiny_model_dir, root, 3, "--trainer.limit_val_batches", "1",
                                "--trainer.limit_test_batches", "1", "--ckpt_path", ckpt_path)
    return [subcommand, *args[1:]]


# -- --ckpt_path that is not a checkpoint ------------------------------------------------------------------------------
@pytest.mark.parametrize("make, problem", [
    (lambda p, good: p.write_bytes(b""), "the file is empty (0 bytes)"),
    (lambda p, good: p.write_bytes(good.read_bytes()[: good.stat().st_size // 2]),
     "the file is truncated or corrupt ({size} bytes, its zip index is missing)"),
    (lambda p, good: p.write_text("model: weights\n"), "not a PyTorch checkpoint ({size} bytes that torch.save did not write)"),
    (lambda p, good: torch.save({"weight": torch.ones(2)}, p),
     "a torch file but not a training checkpoint (no state_dict / global_step)"),
    (lambda p, good: None, "no such file"),
])
def test_unusable_ckpt_path_is_one_line_with_exit_2(trained, tiny_model_dir, tmp_path, capsys, make, problem):
    path = tmp_path / "given.ckpt"
    make(path, trained / "checkpoints" / "last.ckpt")
    size = path.stat().st_size if path.exists() else 0
    for subcommand in ("fit", "validate"):
        args = evaluate_args(tiny_model_dir, tmp_path, subcommand, str(path))
        assert main(args) == 2
        err = capsys.readouterr().err
        assert err.strip().splitlines()[-1] == f"shala_pl: error: --ckpt_path {path}: {problem.format(size=size)}"
        assert "Traceback" not in err


# -- --ckpt_path best --------------------------------------------------------------------------------------------------
def test_ckpt_path_best_scores_the_best_validation_checkpoint(trained, tiny_model_dir, tmp_path):
    folder = trained / "checkpoints"
    state = next(v for k, v in torch.load(folder / "last.ckpt", weights_only=True)["callbacks"].items()
                 if k.startswith("ModelCheckpoint"))
    best = Path(state["best_model_path"])
    assert best.parent == folder and best.name.startswith("best-step=") and (folder / "last.ckpt").is_file()
    validated = cli_main(evaluate_args(tiny_model_dir, trained, "validate", "best"))
    assert validated.config.validate.ckpt_path == str(best)
    assert float(validated.trainer.callback_metrics["val/jsd"]) == pytest.approx(float(state["best_model_score"]),
                                                                                 abs=1e-6)
    for subcommand in ("test", "predict"):
        cli = cli_main(evaluate_args(tiny_model_dir, trained, subcommand, "best"))
        assert cli.config[subcommand].ckpt_path == str(best)


def test_ckpt_path_best_without_a_monitor_says_so(tiny_model_dir, tmp_path, capsys):
    cli_main(small_quickstart_run(tiny_model_dir, tmp_path, 1))
    assert main(evaluate_args(tiny_model_dir, tmp_path, "test", "best")) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"shala_pl: error: --ckpt_path best: the run of {tmp_path / 'checkpoints' / 'last.ckpt'} monitored no metric "
        "(set checkpoint.monitor, e.g. val/jsd with checkpoint.mode min, when training); use --ckpt_path last")


REPO = Path(__file__).resolve().parent.parent
REAL_DATA_CONFIGS = [REPO / "configs" / name for name in (
    "snli.yaml", "goemotions.yaml", "msp_podcast.yaml", "chaosnli_snli.yaml", "chaosnli_mnli.yaml",
    "chaosnli_alphanli.yaml", "smollm2/chaosnli_mnli.yaml")]


@pytest.mark.parametrize("config", REAL_DATA_CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_real_data_configs_keep_the_best_validation_jsd_beside_last(config, capsys):
    with pytest.raises(SystemExit):
        cli_main(["fit", "--config", str(config), "--print_config"])
    checkpoint = yaml.safe_load(capsys.readouterr().out)["checkpoint"]
    assert {k: checkpoint[k] for k in ("monitor", "mode", "save_top_k", "save_last")} == {
        "monitor": "val/jsd", "mode": "min", "save_top_k": 1, "save_last": True}


def test_val_jsd_is_the_label_probs_jsd_when_there_are_several_readouts(tiny_model_dir, tmp_path):
    """With the sampling readout beside it, ``val/jsd`` is still the label-probability readout's JSD (the sampling
    readout's is ``val/sampling/jsd``), so ``checkpoint.monitor: val/jsd`` keeps working."""
    cli_main(small_quickstart_run(tiny_model_dir, tmp_path, 2, "--trainer.val_check_interval", "1",
                                  "--trainer.limit_val_batches", "1", "--checkpoint.monitor", "val/jsd",
                                  "--checkpoint.mode", "min", "--model.init_args.readouts", "[label_probs, sampling]",
                                  "--model.init_args.sampling.num_samples", "2"))
    best, monitor = best_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert monitor == "val/jsd" and best is not None and best.is_file()


# -- atomic writes on a real, small filesystem ------------------------------------------------------------------------
@pytest.fixture
def small_filesystem(tmp_path):
    """A tmpfs of ``size`` mounted under tmp_path (root in a container that allows mounts; skipped elsewhere)."""
    mounted = []

    def mount(name: str, size: str) -> Path:
        point = tmp_path / name
        point.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", str(point)], check=False)


def test_checkpoints_are_not_staged_in_the_temp_folder(tiny_model_dir, tmp_path, small_filesystem, monkeypatch):
    """A $TMPDIR too small for a checkpoint does not matter: the file is written beside its target."""
    monkeypatch.setattr(tempfile, "tempdir", str(small_filesystem("tmp", "256k")))
    assert main(small_quickstart_run(tiny_model_dir, tmp_path / "run", 1)) == 0
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1


def test_a_full_disk_keeps_the_previous_checkpoint_and_stops_with_one_line(tiny_model_dir, tmp_path, capsys,
                                                                        small_filesystem):
    disk = small_filesystem("disk", "3m")
    folder = disk / "checkpoints"

    def args(steps, *extra):
        return small_quickstart_run(tiny_model_dir, tmp_path, steps, "--checkpoint.dirpath", str(folder), *extra)

    assert main(args(1)) == 0
    last = folder / "last.ckpt"
    size = last.stat().st_size
    free = 3 * 2**20 - size
    (disk / "filler").write_bytes(b"\0" * (free - size // 2))  # room for half a checkpoint
    capsys.readouterr()
    assert main(args(2, "--ckpt_path", str(last))) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == (f"shala_pl: error: could not write checkpoint {last}: No space left on "
                                            "device; the previous checkpoint there is unchanged")
    assert "Traceback" not in err
    assert torch.load(last, weights_only=True)["global_step"] == 1
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]  # no temporary file left behind
