"""bf16 on CPU where the CPU multiplies bf16 natively, fp32 where it does not; the run says which."""

import logging
from pathlib import Path

from shala_pl import precision
from shala_pl.cli import cli_main
from shala_pl.precision import cpu_precision, native_bf16_flags

REPO = Path(__file__).parent.parent
EPYC = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512_bf16 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu avx512_bf16\n"
OLD_XEON = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni\n"
SAPPHIRE_RAPIDS = "flags\t\t: avx512f amx_bf16 amx_tile avx512_bf16\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_flags_come_from_the_cpuinfo_flags_and_features_lines():
    assert native_bf16_flags(EPYC) == ["avx512_bf16"]
    assert native_bf16_flags(SAPPHIRE_RAPIDS) == ["avx512_bf16", "amx_bf16"]
    assert native_bf16_flags(GRAVITON3) == ["bf16"]
    assert native_bf16_flags(OLD_XEON) == []  # avx512 without its bf16 extension: emulated


def test_bf16_is_kept_on_a_native_cpu_and_becomes_fp32_elsewhere():
    kept = cpu_precision("bf16-mixed", "cpu", ["avx512_bf16"])
    assert kept.precision == "bf16-mixed" and "avx512_bf16" in kept.note
    fallback = cpu_precision("bf16-mixed", "cpu", [])
    assert fallback.precision == "32-true" and "emulated" in fallback.note


def test_other_precisions_and_gpu_runs_are_left_alone():
    assert cpu_precision("32-true", "cpu", []) is None
    assert cpu_precision("16-mixed", "cpu", []) is None
    assert cpu_precision("bf16-mixed", "gpu", []) is None
    assert cpu_precision("bf16-mixed", "cuda", []) is None


def bf16_cli(tiny_model_dir):
    return cli_main(["--config", str(REPO / "configs" / "quickstart.yaml"), "--trainer.precision", "bf16-mixed",
                     "--trainer.accelerator", "cpu", "--model.init_args.name_or_path", str(tiny_model_dir),
                     "--data.source_options", "{n_examples: 40, n_annotators: 5}"], run=False)


def test_the_cli_trainer_takes_this_machines_path_and_logs_it(tiny_model_dir, caplog):
    expected = "bf16-mixed" if native_bf16_flags() else "32-true"
    with caplog.at_level(logging.INFO):
        cli = bf16_cli(tiny_model_dir)
    assert cli.trainer.precision == expected
    assert f"precision: {expected}" in caplog.text


def test_the_cli_falls_back_to_fp32_on_a_cpu_without_bf16(tiny_model_dir, tmp_path, monkeypatch, caplog):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(OLD_XEON)
    monkeypatch.setattr(precision, "CPUINFO", cpuinfo)
    with caplog.at_level(logging.INFO):
        cli = bf16_cli(tiny_model_dir)
    assert cli.trainer.precision == "32-true"
    assert "precision: 32-true (trainer.precision asks for bf16-mixed" in caplog.text
