"""``shala_pl.api.Experiment``: the command line's run from Python, with the data's label names in the module
before anything is set up, and fit's validation, checkpoints, export and summary."""


from shala_pl.api import Experiment
from shala_pl.callbacks import GracefulInterrupt, ReproducibleRNG


def test_an_experiment_from_a_shipped_config_fits_then_tests_its_last_checkpoint(tiny_model_dir, tmp_path, capsys):
    run = Experiment("quickstart", overrides={
        "model.init_args.name_or_path": str(tiny_model_dir),
        "model.init_args.rollout.num_generations": 4,
        "data.source_options": {"n_examples": 64, "n_annotators": 5},
        "data.batch_size": 4, "data.eval_batch_size": 16,
        "trainer.max_steps": 2, "trainer.enable_progress_bar": False,
        "trainer.default_root_dir": str(tmp_path / "runs"),
    })
    assert run.module.label_names == ["red", "green", "blue"]  # linked from the data, no setup call
    assert {GracefulInterrupt, ReproducibleRNG} <= {type(c) for c in run.trainer.callbacks}

    after = run.fit()
    assert 0 <= after["val/jsd"] <= 1
    printed = capsys.readouterr().out
    assert "validation (label distribution vs human votes)" in printed
    run_dir = tmp_path / "runs" / "version_0"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file() and (run_dir / "hf_model" / "README.md").is_file()

    tested = run.test(ckpt_path=str(run_dir / "checkpoints" / "last.ckpt"))
    assert set(tested) >= {"test/jsd", "test/kl", "test/f1_macro"}
    assert run.validate()["val/jsd"] == after["val/jsd"]  # the trained weights, scored again
