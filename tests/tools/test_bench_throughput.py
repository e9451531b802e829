"""``tools/bench_throughput.py --quick``: runs our modes, each in its own process, times their phases against
bounds measured in the same process, and writes the documented JSON.

Shape only (a test-sized model for a few steps measures nothing); TRL is not needed here.
"""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_quick_run_writes_the_documented_json(tmp_path):
    out = tmp_path / "throughput.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench_throughput.py"), "--quick", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result) == {"shala", "trl", "trl_default", "shala_label", "shala_lora", "trl_lora", "phases",
                           "settings"}
    assert result["trl"] is None and result["shala_lora"] is None  # not asked for (--vs-trl, --lora)
    settings = result["settings"]
    assert settings["precision"] in ("bf16-mixed", "32-true") and settings["precision_note"] in proc.stdout
    assert len(settings["load_average_start"]) == 3
    for system in ("shala", "shala_label"):
        figures = result[system]
        for key in ("completions_per_s", "step_s", "peak_rss_mb"):
            assert isinstance(figures[key], float) and figures[key] > 0, (system, key)
        run = figures["runs"][0]
        assert len(figures["runs"]) == settings["repeats"] and len(run["step_s_all"]) == settings["steps"]
        assert set(run["load_average"]) == {"start", "end"}
    # generate mode answers run to max_new_tokens (EOS blocked), as they must for an equal-work comparison
    assert result["shala"]["mean_completion_length"] == settings["max_new_tokens"]
    assert "shala" in proc.stdout and "compl/s" in proc.stdout


def test_phases_are_parts_of_the_step_and_each_has_a_measured_bound(tmp_path):
    """The phase times are taken inside the measured steps, so together they cannot exceed the step; every phase's
    bound is a positive time measured in the same process, and the update row is backward plus optimizer."""
    out = tmp_path / "throughput.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench_throughput.py"), "--quick", "--systems",
                           "shala", "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {row["phase"]: row for row in result["phases"] if row["system"] == "shala"}
    assert set(rows) == {"sampling/decoding: matmuls", "sampling/decoding: weight bytes", "scoring forward",
                         "backward", "optimizer (fused AdamW, clipping)", "update (backward + optimizer)"}
    parts = (rows["sampling/decoding: matmuls"]["seconds"] + rows["scoring forward"]["seconds"]
             + rows["update (backward + optimizer)"]["seconds"])
    assert parts <= max(result["shala"]["runs"][0]["step_s_all"]) * 1.01
    for row in rows.values():
        assert row["seconds"] > 0 and row["bound_s"] > 0 and row["of_bound"] == row["bound_s"] / row["seconds"]
    update = rows["update (backward + optimizer)"]
    assert update["seconds"] == rows["backward"]["seconds"] + rows["optimizer (fused AdamW, clipping)"]["seconds"]
    assert "of bound" in proc.stdout


def test_matmul_flops_count_every_linear_layer_and_the_head():
    """SmolLM2-135M's shapes: 30 layers of q/k/v/o (576 -> 576, 192, 192, 576) and a 1536-wide MLP, a 49,152-word
    head: 2 x 106.2M multiply-adds per token through the layers (its ~134.5M parameters less the tied embedding)."""
    sys.path.insert(0, str(REPO / "tools"))
    from bench_bounds import ModelShape

    shape = ModelShape(layers=30, hidden=576, kv=192, intermediate=1536, vocab=49152)
    per_token = 2 * 30 * (2 * 576 * 576 + 2 * 576 * 192 + 3 * 576 * 1536)
    assert per_token == 2 * 106_168_320
    assert shape.forward_flops(10, 2) == 10 * per_token + 2 * 2 * 576 * 49152


def test_vs_trl_without_trl_says_how_to_install_it(tmp_path):
    proc = subprocess.run([sys.executable, "-c", "import sys; sys.modules['trl'] = None; sys.argv[1:] = "
                           "['--quick', '--vs-trl']; sys.path.insert(0, 'tools'); import bench_throughput as b; "
                           "sys.exit(b.main())"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert ".[bench]" in proc.stderr


def test_model_directory_run_measures_the_real_task_and_the_readout(tmp_path, tiny_model_dir):
    """``--model DIR``: that directory on the NLI sample's prompts and label words, plus the ``--readout`` timing of
    label_probs against the plain computation (which must give the same probabilities)."""
    out = tmp_path / "throughput.json"
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "bench_throughput.py"), "--quick", "--model",
                           str(tiny_model_dir), "--readout", "8", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    settings = result["settings"]
    assert settings["model"] == str(tiny_model_dir) and settings["source"] == "snli"
    assert settings["label_words"] == [" yes", " maybe", " no"]  # NLI's words, not the synthetic task's
    assert result["shala"]["mean_completion_length"] == settings["max_new_tokens"]
    readout = result["readout"]
    assert readout["prompts"] == 8 and readout["ours_s"] > 0 and readout["plain_s"] > 0
    assert readout["max_abs_diff"] < 1e-5
