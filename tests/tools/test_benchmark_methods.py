"""``tools/benchmark_methods.py``: the constant baselines, the evidence (skill, paired bootstrap), one command line
per method from its config, and ``--smoke`` runs of both profiles for the shape of what they write.

Shape only in the smoke runs: a handful of optimizer steps on a few examples proves nothing about the methods.
"""

import argparse
import itertools
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from scipy.spatial.distance import jensenshannon
from shala_pl.precision import cpu_precision

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tools"))

import benchmark_common as shared  # noqa: E402
from benchmark_real import chosen_from, lr_beyond_edge, plan_data, REAL_PROFILES  # noqa: E402

BASELINES = ["uniform", "train_mean", "best_constant"]
METHODS = ["zero_shot", "sft_majority", "sft_soft", "grpo_forward_kl", "grpo_majority", "grpo_vote_share", "shala",
           "shala_exact", "shala_unweighted"]
METRICS = ["jsd", "kl", "f1_macro", "accuracy", "jsd_top_entropy", "entropy_model", "entropy_human",
           "contested_auroc"]
TOOL = str(REPO / "tools" / "benchmark_methods.py")


# -- the methods, from their configs -----------------------------------------------------------------------------------
def test_the_methods_are_the_method_configs():
    assert sorted(shared.METHODS) == sorted(p.stem for p in (REPO / "configs" / "method").glob("*.yaml"))
    assert list(shared.METHODS) == METHODS  # untrained, supervised, then RL; by name within each
    assert shared.EVAL_ONLY == ("zero_shot",)


def test_one_command_line_per_method_and_the_cli_gets_the_same_sft_clipping(tiny_model_dir, tmp_path):
    from shala_pl.cli import cli_main

    spec = {"seed": 0, "model_dir": str(tiny_model_dir), "steps": 1, "workdir": str(tmp_path), "data_args": []}
    args = shared.run_command(REPO / "configs" / "quickstart.yaml", "sft_soft", spec, ["--data.batch_size=4"])
    assert args[:4] == ["--config", str(REPO / "configs/quickstart.yaml"), "--config",
                        str(REPO / "configs/method/sft_soft.yaml")]
    assert args[-1] == "--data.batch_size=4"
    assert not any("gradient_clip" in a for a in args)  # the clipping comes from the method's config ...
    trainer = cli_main(args, run=False).trainer
    assert trainer.gradient_clip_val == 1.0  # ... so the CLI's sft_soft is the benchmark's


# -- constants and the bootstrap ---------------------------------------------------------------------------------------
def test_best_constant_beats_every_point_of_a_simplex_grid():
    rng = np.random.default_rng(0)
    human = rng.dirichlet([0.4, 0.4, 0.2], size=60)

    def mean_jsd(q):
        return np.mean([jensenshannon(h, q) for h in human])

    best = shared.best_constant(human)
    grid = [np.array([a, b, 1 - a - b]) / 1.0 for a, b in itertools.product(np.linspace(0.01, 0.98, 50), repeat=2)
            if a + b < 0.99]
    assert mean_jsd(np.array(best)) <= min(mean_jsd(q) for q in grid) + 1e-9
    constants = shared.constant_distributions(human)
    assert constants["train_mean"] == pytest.approx(human.mean(0).tolist())
    assert constants["uniform"] == [1 / 3] * 3
    assert mean_jsd(np.array(best)) <= mean_jsd(human.mean(0))


def test_paired_bootstrap_of_a_constant_shift_and_of_noise():
    rng = np.random.default_rng(1)
    b = rng.random((2, 200))
    shifted = shared.paired_bootstrap(b - 0.1, b)
    assert shifted["diff"] == pytest.approx(-0.1) and shifted["ci_low"] == pytest.approx(-0.1)
    assert shifted["ci_high"] == pytest.approx(-0.1)  # paired: the examples' own spread cancels
    noise = shared.paired_bootstrap(rng.random((1, 200)), rng.random((1, 200)))
    assert noise["ci_low"] < noise["diff"] < noise["ci_high"] and noise["ci_low"] < 0 < noise["ci_high"]
    half = shared.paired_bootstrap(b, b, factor=0.5)
    assert half["diff"] == pytest.approx(0.5 * b.mean())
    assert shared.ci_check({"a": b - 0.1, "b": b}, "a", "b")["holds"]
    assert not shared.ci_check({"a": b, "b": b + rng.normal(0, 0.3, b.shape)}, "a", "b")["holds"]


def test_the_two_by_two_contrasts_each_row_and_column_and_renders_one_row_per_direction():
    # Per-pair JSDs built so each cell is a known shift of a shared base: forward exact +0.2, forward sampled +0.1,
    # reverse exact 0, reverse sampled +0.05.
    base = np.random.default_rng(2).random((3, 50))
    shift = {"sft_soft": 0.2, "grpo_forward_kl": 0.1, "shala_exact": 0.0, "shala": 0.05}
    matrices = {method: base + value for method, value in shift.items()}
    contrasts = shared.two_by_two(matrices)
    expected = {("sampled_minus_exact", "forward"): -0.1, ("sampled_minus_exact", "reverse"): 0.05,
                ("reverse_minus_forward", "exact"): -0.2, ("reverse_minus_forward", "sampled"): -0.05}
    for (row, column), diff in expected.items():
        c = contrasts[row][column]
        assert c["diff"] == pytest.approx(diff) and c["ci_low"] == pytest.approx(diff)
        assert c["ci_high"] == pytest.approx(diff)  # a constant shift: paired resampling leaves no spread

    section = {"two_by_two": contrasts,
               "methods": {method: {"jsd": float(m.mean())} for method, m in matrices.items()}}
    table = shared.two_by_two_lines(section, markdown=True)
    assert len(table) == 5 and all(line.count("|") == 5 for line in table)  # header, rule, 2 directions, contrast row
    assert table[2].startswith("| forward KL(p‖π) | sft_soft ") and "-0.1000 [-0.1000, -0.1000]" in table[2]
    assert table[4].startswith("| reverse - forward [95% CI] | -0.2000 [")
    assert shared.two_by_two_lines({"methods": section["methods"]}, markdown=True) == []  # no 2x2 methods, no table


# -- the synthetic profile ---------------------------------------------------------------------------------------------
def _check_methods(section: dict, methods: list) -> None:
    assert list(section["methods"]) == BASELINES + methods
    for name, entry in section["methods"].items():
        for metric in METRICS:
            for key in (metric, metric + "_std"):
                assert isinstance(entry[key], float), (name, key)
        for b in range(3):  # JSD per human-entropy bin, the figure's data
            assert f"jsd_bin{b}" in entry and f"n_bin{b}" in entry
        assert entry["n_seeds"] == 1
        assert isinstance(entry["skill"], float)
        others = [o for o in shared.COMPARED if o != name and o in section["methods"]]
        assert sorted(entry["vs"]) == sorted(others)
        for value in entry["vs"].values():
            assert value["ci_low"] <= value["diff"] <= value["ci_high"]
    assert section["methods"]["best_constant"]["skill"] == 0.0
    assert section["methods"]["train_mean"]["entropy_corr"] is None  # a constant: undefined, written as null
    assert "shala_unweighted" in section["methods"]["shala"]["vs_top_entropy"]
    assert set(section["two_by_two"]) == {"sampled_minus_exact", "reverse_minus_forward"}
    assert set(section["constants"]) == set(BASELINES)
    assert all("per_example" not in run for run in section["runs"])


def test_smoke_writes_json_png_and_markdown(tmp_path):
    out_json, out_png, out_md = tmp_path / "bench.json", tmp_path / "bench.png", tmp_path / "README.md"
    # a README with the results markers: only the text between them is replaced
    out_md.write_text("# Project\n\n## Results\n\n<!-- benchmark_methods:start -->\nold table\n"
                      "<!-- benchmark_methods:end -->\n\n## Next section\n")
    proc = subprocess.run(
        [sys.executable, TOOL, "--smoke", "--json", str(out_json), "--plot", str(out_png), "--markdown", str(out_md),
         "--models-dir", str(tmp_path / "models")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "shala_unweighted" in proc.stdout and "ΔJSD vs best_constant" in proc.stdout  # the printed table

    result = json.loads(out_json.read_text())
    for key in ("profile", "seeds", "synthetic", "snli", "elapsed_s", "machine", "command"):
        assert key in result, key
    assert "methods" not in result  # each value once: in its dataset's section
    assert result["seeds"] == [0] and isinstance(result["elapsed_s"], float)
    synthetic = result["synthetic"]
    assert isinstance(synthetic["noise_floor_jsd"], float) and isinstance(synthetic["steps"], int)
    _check_methods(synthetic, METHODS)
    _check_methods(result["snli"], METHODS)
    assert result["snli"]["dataset"] == "snli" and result["snli"]["noise_floor_jsd"] is None
    bar = synthetic["bar"]
    assert set(bar) >= {"jsd_below_best_constant", "jsd_at_most_half_of_grpo_majority",
                        "weighting_beats_unweighted_on_ambiguous_third"}
    for check in bar.values():  # a JSD claim holds only when its whole interval is below 0
        assert isinstance(check["holds"], bool)
        if "ci_high" in check:
            assert check["holds"] == (check["ci_high"] < 0)

    header = out_png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width > 100 and height > 100

    page = out_md.read_text()
    assert "benchmark_methods.py --smoke" in page and "bench.png" in page and "| shala |" in page
    assert "| best_constant |" in page and "95% CI" in page and "| forward KL(p‖π) | sft_soft " in page
    assert page.startswith("# Project\n\n## Results\n\n<!-- benchmark_methods:start -->\n")
    assert page.endswith("<!-- benchmark_methods:end -->\n\n## Next section\n") and "old table" not in page

    # --render rewrites the same outputs from the JSON without running anything
    out_png.unlink()
    proc = subprocess.run([sys.executable, TOOL, "--render", str(out_json), "--plot", str(out_png),
                           "--markdown", str(out_md)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out_png.exists() and out_md.read_text() == page


def test_split_val_scores_every_run_on_the_validation_split(tmp_path):
    """``--split val``: the runs are scored on the validation split (for choices), said so in the output; no bar."""
    out_json, out_md = tmp_path / "val.json", tmp_path / "val.md"
    proc = subprocess.run(
        [sys.executable, TOOL, "--smoke", "--split", "val", "--datasets", "synthetic", "--methods", "zero_shot,shala",
         "--variant", "shala_b=shala --data.prompt.answer_prefix=Answer:",
         "--json", str(out_json), "--markdown", str(out_md), "--models-dir", str(tmp_path / "models")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "synthetic: val split of 12 examples" in proc.stdout and "bar:" not in proc.stdout
    result = json.loads(out_json.read_text())
    assert result["split"] == "val"
    section = result["synthetic"]
    assert "bar" not in section
    assert section["n_val"] == 12 and "n_test" not in section
    assert list(section["methods"]) == BASELINES + ["zero_shot", "shala", "shala_b"]
    for run in section["runs"]:
        assert run["n_val"] == 12 and abs(run["jsd_check"] - run["jsd"]) < 1e-4  # validate and predict: one split
    assert "metrics on the validation split" in out_md.read_text()


# -- the real profiles -------------------------------------------------------------------------------------------------
REAL_DATA = REPO / "tests" / "fixtures" / "chaosnli" / "chaosNLI_mnli_m.jsonl"
REAL_QUICK = ["zero_shot", "sft_soft", "grpo_majority", "shala", "shala_exact"]


def real_smoke(tmp_path, tiny_model_dir, methods, *extra):
    return subprocess.run(
        [sys.executable, TOOL, "--profile", "real", "--smoke", "--model", str(tiny_model_dir), "--source",
         "chaosnli_mnli", "--data", str(REAL_DATA), "--methods", ",".join(methods), *extra],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_real_profile_smoke_tunes_on_validation_and_writes_the_real_section(tmp_path, tiny_model_dir):
    """``--profile real --smoke``: the bar's methods and the constants on the ChaosNLI fixture with the tiny model,
    the sweep written down, a README section of its own next to the synthetic results; a second run with the same
    cache trains nothing and reports the same numbers."""
    out_json, out_png, out_md = tmp_path / "real.json", tmp_path / "real.png", tmp_path / "README.md"
    out_md.write_text("# Project\n\n<!-- benchmark_methods:start -->\nsynthetic table\n"
                      "<!-- benchmark_methods:end -->\n\n## Next section\n")
    cache = ["--cache-dir", str(tmp_path / "cache")]
    proc = real_smoke(tmp_path, tiny_model_dir, REAL_QUICK, "--json", str(out_json), "--plot", str(out_png),
                      "--markdown", str(out_md), *cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out_json.read_text())
    assert result["profile"] == "real-smoke" and result["dataset"] == "chaosnli_mnli"
    assert "real" not in result  # the section's values at the top level, once
    assert list(result["methods"]) == BASELINES + REAL_QUICK
    for name, entry in result["methods"].items():  # what the hidden bar reads
        for metric in ("jsd", "f1_macro", "entropy_corr", "contested_auroc", "skill", "vs"):
            assert metric in entry, (name, metric)
        assert isinstance(entry["jsd"], float) and isinstance(entry["skill"], float)
    assert set(result["methods"]["shala"]["vs"]) == {"best_constant", "grpo_majority", "sft_soft"}
    assert (result["n_train"], result["n_val"], result["n_test"]) == (6, 3, 3)  # the 12 fixture pairs
    assert result["noise_floor_jsd"] is not None and 0 < result["noise_floor_jsd"] < 0.2  # 100 votes a pair
    settings = result["settings"]
    assert result["steps"] == 2 and settings["learning_rates"] == [1e-4]
    # the run config asks for bf16-mixed; the trainer gets it where this CPU multiplies bf16 natively
    assert settings["precision"] == cpu_precision("bf16-mixed", "cpu").precision
    assert settings["lora"].startswith("r=16, alpha=32, target_modules=q_proj/k_proj/v_proj/o_proj")
    assert settings["sweeps"]["sft_soft"]["0"]["chosen"] == {"lr": 1e-4}
    assert settings["sweeps"]["zero_shot"]["0"]["chosen"] == {}
    sweep = settings["sweeps"]["shala_exact"]["0"]["sweep"]
    assert len(sweep) == 1 and isinstance(sweep[0]["val_jsd"], float) and sweep[0]["global_step"] == 2
    assert set(result["bar"]) >= {"jsd_below_best_constant", "jsd_at_most_0.75x_grpo_majority",
                                  "jsd_below_zero_shot", "shala_jsd_below_sft_soft"}

    page = out_md.read_text()
    assert page.startswith("# Project\n\n<!-- benchmark_methods:start -->\nsynthetic table\n"
                           "<!-- benchmark_methods:end -->\n\n## Results on a real LLM\n")
    assert page.endswith("<!-- benchmark_real:end -->\n\n## Next section\n")
    assert "| shala_exact |" in page and "| best_constant |" in page and "lr 0.0001" in page and "real.png" in page
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    again_json = tmp_path / "again.json"
    proc = real_smoke(tmp_path, tiny_model_dir, ["zero_shot", "shala"], "--json", str(again_json), *cache)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "predictions written" not in proc.stdout + proc.stderr  # nothing trained or tested again
    again = json.loads(again_json.read_text())
    for name in ("zero_shot", "shala"):
        assert again["methods"][name]["jsd"] == result["methods"][name]["jsd"]


def test_train_extra_adds_pairs_to_training_only(tmp_path, tiny_model_dir):
    args = argparse.Namespace(data=REAL_DATA, split_seed=0, source="chaosnli_mnli", source_options="{}",
                              model=tiny_model_dir, train_extra=None)
    profile = REAL_PROFILES["smoke"]
    for folder in ("plain", "extra"):
        (tmp_path / folder).mkdir()
    _, plain, _, _ = plan_data(args, profile, tmp_path / "plain")
    args.train_extra = REPO / "tests" / "fixtures" / "snli_1.0_test_part.jsonl"
    common, extended, _, _ = plan_data(args, profile, tmp_path / "extra")
    assert "--data.split=files" in common
    uids = {split: [ex.uid for ex in plain.examples(split)] for split in ("train", "val", "test")}
    assert [ex.uid for ex in extended.examples("val")] == uids["val"]
    assert [ex.uid for ex in extended.examples("test")] == uids["test"]
    train = extended.examples("train")
    assert [ex.uid for ex in train[:len(uids["train"])]] == uids["train"]
    assert len(train) > len(uids["train"]) + 1000 and {ex.total_votes for ex in train[len(uids["train"]):]} == {5}


def test_a_best_learning_rate_at_an_end_of_the_grid_is_followed_past_that_end():
    assert lr_beyond_edge([1e-4, 5e-4], 5e-4) == 2.5e-3  # the top end: times the grid's outer ratio
    assert lr_beyond_edge([1e-4, 5e-4], 1e-4) == 2e-5  # the bottom end
    assert lr_beyond_edge([1e-4, 5e-4, 2.5e-3], 2.5e-3) == 1.25e-2  # an extension is an end too
    assert lr_beyond_edge([5e-5, 1.5e-4, 5e-4], 1.5e-4) is None  # inside the grid: known to be a local best
    assert lr_beyond_edge([1e-4], 1e-4) is None  # one value: no ratio to follow


def test_the_long_profile_trains_whole_epochs_with_three_seeds():
    long, quick = REAL_PROFILES["long"], REAL_PROFILES["quick"]
    assert long.seeds == 3 and long.cached and long.epochs >= 2 and long.steps_for(400) == long.epochs * 50
    # the quick profile's split, so that its choices (--chosen-from) were made on the same validation pairs
    assert (long.n_train, long.n_val, long.n_test) == (quick.n_train, quick.n_val, quick.n_test)
    # the bar's methods, both KL directions with both gradients (the 2x2), and the weighting off
    assert set(long.methods) == {"zero_shot", "sft_soft", "grpo_majority", "shala", "shala_exact",
                                 "grpo_forward_kl", "shala_unweighted"}
    assert yaml.safe_load((REPO / "configs/method/grpo_forward_kl.yaml").read_text())["model"]["init_args"][
        "rewards"] == {"forward_kl": 1.0}


def _earlier_run(tmp_path, sweeps, source="chaosnli_mnli", split_seed=0) -> Path:
    path = tmp_path / "earlier.json"
    path.write_text(json.dumps({"settings": {"source": source, "split_seed": split_seed, "sweeps": sweeps}}))
    return path


class _ParserError(Exception):
    pass


class _Parser:
    def error(self, message):
        raise _ParserError(message)


def test_chosen_from_takes_seed_0s_choice_of_an_earlier_run_on_the_same_split(tmp_path):
    sweeps = {"shala": {"0": {"chosen": {"lr": 5e-4}}, "1": {"chosen": {"lr": 1e-4}}},
              "sft_soft": {"0": {"chosen": {"lr": 2.5e-3}}}, "zero_shot": {"0": {"chosen": {}}}}
    args = argparse.Namespace(chosen_from=_earlier_run(tmp_path, sweeps), source="chaosnli_mnli", split_seed=0)
    assert chosen_from(args, ["zero_shot", "shala", "sft_soft"], _Parser()) == {
        "shala": {"lr": 5e-4}, "sft_soft": {"lr": 2.5e-3}}
    with pytest.raises(_ParserError, match=r"no seed-0 choice for \['shala_exact'\]"):
        chosen_from(args, ["shala", "shala_exact"], _Parser())
    args.split_seed = 1
    with pytest.raises(_ParserError, match="its settings.split_seed is 0, this run's 1"):
        chosen_from(args, ["shala"], _Parser())
    args.chosen_from = None
    assert chosen_from(args, ["shala"], _Parser()) == {}


@pytest.mark.slow
def test_real_profile_with_chosen_from_runs_the_earlier_choice_without_a_sweep(tmp_path, tiny_model_dir):
    earlier = _earlier_run(tmp_path, {"shala_exact": {"0": {"chosen": {"lr": 3e-4}}}})  # not in the smoke grid
    out_json = tmp_path / "real.json"
    proc = real_smoke(tmp_path, tiny_model_dir, ["shala_exact"], "--chosen-from", str(earlier), "--json",
                      str(out_json))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    settings = json.loads(out_json.read_text())["settings"]
    entry = settings["sweeps"]["shala_exact"]["0"]
    assert entry["chosen"] == {"lr": 3e-4} and [c["lr"] for c in entry["sweep"]] == [3e-4]
    assert settings["chosen_from"] == str(earlier) and settings["how"].startswith("no sweep")
