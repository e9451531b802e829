"""A checkpoint exports to a directory that peft and transformers load on their own."""

import subprocess
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).parents[2]


def test_lora_checkpoint_exports_a_loadable_adapter(tiny_model_dir, tmp_path):
    common = [
        "--config", "configs/quickstart.yaml",
        "--model.init_args.name_or_path", str(tiny_model_dir),
        "--model.init_args.lora", "{r: 4, alpha: 8}",
        "--data.source_options", "{n_examples: 40, n_annotators: 5}",
    ]
    fit = [sys.executable, "-m", "shala_pl", "fit", *common, "--trainer.max_steps", "2",
           "--trainer.val_check_interval", "2", "--trainer.limit_val_batches", "1",
           "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false",
           "--trainer.enable_progress_bar", "false", "--validate_before_fit", "false"]
    done = subprocess.run(fit, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ckpt = next((tmp_path / "run").rglob("last.ckpt"))
    out = tmp_path / "export"
    done = subprocess.run([sys.executable, "tools/export_pretrained.py", *common, "--ckpt_path", str(ckpt),
                           "--out_dir", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "adapter_config.json").exists()

    base = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    model = PeftModel.from_pretrained(base, str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    lora_key = next(k for k in state if "lora_B" in k)
    exported = dict(model.named_parameters())[lora_key.removeprefix("policy.")]
    assert torch.equal(exported, state[lora_key]) and exported.abs().sum() > 0  # trained, not the zero init
    assert tokenizer.chat_template


def test_fit_export_is_self_contained_its_card_scores_like_the_module_from_any_folder(tiny_model_dir, tmp_path):
    """``hf_model/`` of a LoRA run, moved to another folder: the model card's own code, with transformers and peft
    alone (shala_pl not importable, the Hub offline), gives the validation label_probs that ``predict`` of the
    checkpoint writes, within 1e-5; ``predict`` with the export's ``shala_pl.yaml`` scores the folder the same."""
    import json
    import os
    import re
    import shutil

    from conftest import small_quickstart_run
    from shala_pl.__main__ import main
    from shala_pl.data.datamodule import VoteDataModule

    root = tmp_path / "run"
    data = ["--data.source_options", "{n_examples: 64, n_annotators: 5}"]
    assert main(small_quickstart_run(tiny_model_dir, root, 2, "--model.init_args.lora", "{r: 4, alpha: 8}")) == 0
    predicted = tmp_path / "val.jsonl"
    predict = ["predict", "--config", "quickstart", "--model.init_args.name_or_path", str(tiny_model_dir), *data,
               "--data.predict_split", "val", "--trainer.enable_progress_bar", "false"]
    assert main([*predict, "--model.init_args.lora", "{r: 4, alpha: 8}", "--predictions.path", str(predicted),
                 "--ckpt_path", str(root / "checkpoints/last.ckpt")]) == 0
    expected = {row["uid"]: row["probs"] for row in map(json.loads, predicted.read_text().splitlines())}

    elsewhere = tmp_path / "elsewhere"
    shutil.move(root / "hf_model", elsewhere / "model")
    card = (elsewhere / "model/README.md").read_text()
    assert str(tiny_model_dir.resolve()) in json.loads((elsewhere / "model/adapter_config.json").read_text())[
        "base_model_name_or_path"]
    for heading in ("## Data", "## Method", "## Validation at the end of training", "## Prompt and labels",
                    "## Load and score"):
        assert heading in card
    assert "split: `random` (seed 0): train 52, val 6, test 6 examples" in card
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1).replace('FOLDER = "."', 'FOLDER = "model"')
    module = VoteDataModule("synthetic", source_options={"n_examples": 64, "n_annotators": 5},
                            tokenizer_path=str(tiny_model_dir))
    fields = {ex.uid: ex.fields for ex in module.examples("val")}
    script = ("import sys, json\nsys.modules['shala_pl'] = None  # the card must not need this project\n" + code +
              f"\nprint(json.dumps({{uid: list(label_probs(prompt(**f)).values()) for uid, f in {fields!r}.items()}}))")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], cwd=elsewhere, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    scored = json.loads(done.stdout.strip().splitlines()[-1])
    assert scored.keys() == expected.keys()
    assert max(abs(a - b) for uid in expected for a, b in zip(scored[uid], expected[uid])) < 1e-5

    from_fragment = tmp_path / "fragment.jsonl"
    assert main([*predict, "--config", str(elsewhere / "model/shala_pl.yaml"), "--model.init_args.name_or_path",
                 str(elsewhere / "model"), "--predictions.path", str(from_fragment)]) == 0
    rows = {row["uid"]: row["probs"] for row in map(json.loads, from_fragment.read_text().splitlines())}
    assert max(abs(a - b) for uid in expected for a, b in zip(rows[uid], expected[uid])) < 1e-5
