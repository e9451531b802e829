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
    done = subprocess.run([sys.executable, "tools/export_pretrained.py", *common, "--ckpt_path", str(ckpt), "--out_dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
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
