"""``tools/bench_throughput.py --quick``: runs our two modes, each in its own process, and writes the documented JSON.

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
    assert set(result) == {"shala", "trl", "shala_label", "settings"}
    assert result["trl"] is None  # not asked for (--vs-trl)
    per_step = result["settings"]["prompts_per_step"] * result["settings"]["num_generations"]
    for system in ("shala", "shala_label"):
        figures = result[system]
        for key in ("completions_per_s", "step_s", "peak_rss_mb"):
            assert isinstance(figures[key], float) and figures[key] > 0, (system, key)
        assert abs(figures["completions_per_s"] * figures["step_s"] - per_step) < 1e-6
        assert len(figures["runs"]) == result["settings"]["repeats"]
    # generate mode answers run to max_new_tokens (EOS blocked), as they must for an equal-work comparison
    assert result["shala"]["mean_completion_length"] == result["settings"]["max_new_tokens"]
    assert "shala" in proc.stdout and "compl/s" in proc.stdout


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
