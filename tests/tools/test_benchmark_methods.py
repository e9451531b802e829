"""``tools/benchmark_methods.py --smoke``: every method on both datasets, and the shape of what it writes.

Shape only: a handful of optimizer steps on a few examples proves nothing about the methods.
"""

import json
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
METHODS = ["zero_shot", "sft_majority", "sft_soft", "grpo_majority", "grpo_vote_share", "shala_unweighted", "shala"]
METRICS = ["jsd", "kl", "f1_macro", "accuracy", "jsd_top_entropy", "entropy_model", "entropy_human"]


def _check_methods(section: dict) -> None:
    assert list(section["methods"]) == METHODS
    for name, entry in section["methods"].items():
        for metric in METRICS:
            for key in (metric, metric + "_std"):
                assert isinstance(entry[key], float), (name, key)
        for b in range(3):  # JSD per human-entropy bin, the figure's data
            assert f"jsd_bin{b}" in entry and f"n_bin{b}" in entry
        assert entry["n_seeds"] == 1


def test_smoke_writes_json_png_and_markdown(tmp_path):
    out_json, out_png, out_md = tmp_path / "bench.json", tmp_path / "bench.png", tmp_path / "README.md"
    # a README with the results markers: only the text between them is replaced
    out_md.write_text("# Project\n\n## Results\n\n<!-- benchmark_methods:start -->\nold table\n"
                      "<!-- benchmark_methods:end -->\n\n## Next section\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_methods.py"), "--smoke", "--json", str(out_json),
         "--plot", str(out_png), "--markdown", str(out_md), "--models-dir", str(tmp_path / "models")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "shala_unweighted" in proc.stdout and "JSD" in proc.stdout  # the printed table

    result = json.loads(out_json.read_text())
    for key in ("methods", "noise_floor_jsd", "dataset", "steps", "seeds", "snli", "elapsed_s", "machine"):
        assert key in result, key
    assert result["dataset"] == "synthetic" and result["seeds"] == [0]
    assert isinstance(result["noise_floor_jsd"], float) and isinstance(result["elapsed_s"], float)
    assert isinstance(result["steps"], int) and isinstance(result["machine"], str)
    _check_methods(result)
    _check_methods(result["snli"])
    assert result["snli"]["dataset"] == "snli" and result["snli"]["noise_floor_jsd"] is None
    assert set(result["bar"]) and all(isinstance(v["holds"], bool) for v in result["bar"].values())

    header = out_png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width > 100 and height > 100

    page = out_md.read_text()
    assert "benchmark_methods.py --smoke" in page and "bench.png" in page and "| shala |" in page
    assert page.startswith("# Project\n\n## Results\n\n<!-- benchmark_methods:start -->\n")
    assert page.endswith("<!-- benchmark_methods:end -->\n\n## Next section\n") and "old table" not in page

    # --render rewrites the same outputs from the JSON without running anything
    out_png.unlink()
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "benchmark_methods.py"), "--render", str(out_json),
                           "--plot", str(out_png), "--markdown", str(out_md)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out_png.exists() and out_md.read_text() == page


REAL_METHODS = METHODS + ["shala_exact"]


def test_real_profile_smoke_tunes_on_validation_and_writes_the_real_section(tmp_path, tiny_model_dir):
    """``--profile real --smoke``: all eight methods on the ChaosNLI fixture with the tiny model, the sweep written
    down, and a README section of its own next to the synthetic results."""
    out_json, out_png, out_md = tmp_path / "real.json", tmp_path / "real.png", tmp_path / "README.md"
    out_md.write_text("# Project\n\n<!-- benchmark_methods:start -->\nsynthetic table\n"
                      "<!-- benchmark_methods:end -->\n\n## Next section\n")
    data = REPO / "tests" / "fixtures" / "chaosnli" / "chaosNLI_mnli_m.jsonl"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_methods.py"), "--profile", "real", "--smoke",
         "--model", str(tiny_model_dir), "--source", "chaosnli_mnli", "--data", str(data),
         "--methods", ",".join(REAL_METHODS), "--json", str(out_json), "--plot", str(out_png),
         "--markdown", str(out_md)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out_json.read_text())
    assert result["profile"] == "real-smoke" and result["dataset"] == "chaosnli_mnli"
    section = result["real"]
    assert list(section["methods"]) == REAL_METHODS
    for name, entry in section["methods"].items():
        for metric in METRICS:
            assert isinstance(entry[metric], float), (name, metric)
    assert (section["n_train"], section["n_val"], section["n_test"]) == (6, 3, 3)  # the 12 fixture pairs
    assert section["noise_floor_jsd"] is not None and 0 < section["noise_floor_jsd"] < 0.2  # 100 votes a pair
    settings = result["settings"]
    assert settings["steps"] == 2 and settings["learning_rates"] == [1e-4]
    assert settings["chosen"]["sft_soft"] == [{"lr": 1e-4}] and settings["chosen"]["zero_shot"] == [{}]
    sweep = settings["sweeps"]["shala_exact"]["0"]["sweep"]
    assert len(sweep) == 1 and isinstance(sweep[0]["val_jsd"], float) and sweep[0]["global_step"] == 2
    assert set(result["bar"]) >= {"jsd_at_most_0.75x_grpo_majority", "jsd_below_zero_shot"}

    page = out_md.read_text()
    assert page.startswith("# Project\n\n<!-- benchmark_methods:start -->\nsynthetic table\n"
                           "<!-- benchmark_methods:end -->\n\n## Results on a real LLM\n")
    assert page.endswith("<!-- benchmark_real:end -->\n\n## Next section\n")
    assert "| shala_exact |" in page and "lr 0.0001" in page and "real.png" in page
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_split_val_scores_every_run_on_the_validation_split(tmp_path):
    """``--split val``: the runs are scored on the validation split (for choices), said so in the output; no bar."""
    out_json, out_md = tmp_path / "val.json", tmp_path / "val.md"
    proc = subprocess.run(
        [sys.executable, str(REPO / "tools" / "benchmark_methods.py"), "--smoke", "--split", "val",
         "--datasets", "synthetic", "--methods", "zero_shot,shala",
         "--variant", "shala_b=shala --data.prompt.answer_prefix=Answer:",
         "--json", str(out_json), "--markdown", str(out_md), "--models-dir", str(tmp_path / "models")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "synthetic: val split of 12 examples" in proc.stdout and "bar:" not in proc.stdout
    result = json.loads(out_json.read_text())
    assert result["split"] == "val" and result["bar"] == {}
    section = result["synthetic"]
    assert section["n_val"] == 12 and "n_test" not in section
    assert list(section["methods"]) == ["zero_shot", "shala", "shala_b"]
    for run in section["runs"]:
        assert run["n_val"] == 12 and abs(run["jsd_check"] - run["jsd"]) < 1e-4  # validate and predict: one split
    assert "metrics on the validation split" in out_md.read_text()


def test_a_best_learning_rate_at_an_end_of_the_grid_is_followed_past_that_end():
    sys.path.insert(0, str(REPO / "tools"))
    from benchmark_real import lr_beyond_edge

    assert lr_beyond_edge([1e-4, 5e-4], 5e-4) == 2.5e-3  # the top end: times the grid's outer ratio
    assert lr_beyond_edge([1e-4, 5e-4], 1e-4) == 2e-5  # the bottom end
    assert lr_beyond_edge([1e-4, 5e-4, 2.5e-3], 2.5e-3) == 1.25e-2  # an extension is an end too
    assert lr_beyond_edge([5e-5, 1.5e-4, 5e-4], 1.5e-4) is None  # inside the grid: known to be a local best
    assert lr_beyond_edge([1e-4], 1e-4) is None  # one value: no ratio to follow
