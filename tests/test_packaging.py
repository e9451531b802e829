"""The package as pip installs it: the wheel carries the configs and the ``shala-pl`` command, and a user in an
empty folder builds the tiny model and trains the quickstart by its config's name."""

import configparser
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import setuptools

from shala_pl.packaged_configs import resolve_config, resolve_config_args

REPO = Path(__file__).parent.parent


def test_setup_cfg_lists_every_package_of_the_tree():
    """setup.cfg lists its packages (``shala_pl.configs`` lives outside ``shala_pl/``): a new subpackage left out of
    the list would be missing from the wheel."""
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    assert listed == {*setuptools.find_packages(str(REPO), include=["shala_pl*"]), "shala_pl.configs"}


def test_a_config_name_resolves_to_the_shipped_file_and_a_path_wins(tmp_path, monkeypatch):
    shipped = REPO / "configs" / "quickstart.yaml"
    for name in ("quickstart", "quickstart.yaml", "configs/quickstart.yaml"):
        monkeypatch.chdir(tmp_path)
        assert Path(resolve_config(name)).resolve() == shipped.resolve()
    assert Path(resolve_config("smollm2/chaosnli_mnli")).resolve() == (REPO / "configs/smollm2/chaosnli_mnli.yaml")
    (tmp_path / "quickstart.yaml").write_text("seed_everything: 1\n")
    assert resolve_config("quickstart.yaml") == "quickstart.yaml"  # the user's own file in this folder
    assert resolve_config("no_such_config") == "no_such_config"  # left for jsonargparse to report
    assert resolve_config_args(["fit", "--config=method/shala", "--config", "x.yaml"]) == [
        "fit", f"--config={REPO / 'configs/method/shala.yaml'}", "--config", "x.yaml"]


def without_pythonpath() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # nothing of the clone on the path


def shala_pl_in(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = without_pythonpath()
    env["HF_HUB_OFFLINE"] = "1"
    env["XDG_CACHE_HOME"] = str(cwd / ".cache")
    return subprocess.run([str(venv / "bin" / "shala-pl"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.mark.slow
def test_the_wheel_installs_and_trains_the_quickstart_from_an_empty_folder(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(wheels), str(REPO)], check=True, capture_output=True, timeout=300)
    (wheel,) = wheels.glob("shala_pl-*.whl")
    # A fresh venv that sees this interpreter's site-packages (torch and the rest, not re-downloaded) through a
    # plain path line: that folder's .pth files, and so any editable install of the clone, stay inactive.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site_packages = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                         "print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True,
                                        check=True).stdout.strip())
    # installed before the shared folder is visible, and without PYTHONPATH: pip would take the clone's editable
    # install, or the shala_pl.egg-info that building the wheel leaves in the clone, for this package installed
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "-q",
                    "--no-deps", str(wheel)], check=True, capture_output=True, timeout=300, env=without_pythonpath())
    (site_packages / "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "work"
    work.mkdir()

    missing = shala_pl_in(venv, work, "fit", "--config", "quickstart", "--trainer.max_steps", "2")
    assert missing.returncode == 2
    assert "shala-pl make-tiny-model artifacts/tiny-qwen2" in missing.stderr.strip().splitlines()[-1]

    built = shala_pl_in(venv, work, "make-tiny-model", "artifacts/tiny-qwen2")
    assert built.returncode == 0, built.stderr
    assert (work / "artifacts/tiny-qwen2/config.json").is_file()

    done = shala_pl_in(venv, work, "fit", "--config", "quickstart", "--trainer.max_steps", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "validation (label distribution vs human votes)" in done.stdout
    run = work / "runs/quickstart/version_0"
    assert (run / "checkpoints/last.ckpt").is_file() and (run / "hf_model/config.json").is_file()
    used = subprocess.run([str(venv / "bin" / "python"), "-c", "import shala_pl; print(shala_pl.__file__)"],
                          cwd=work, env=without_pythonpath(),
                          capture_output=True, text=True).stdout
    assert Path(used).is_relative_to(venv), used  # the installed package ran, not the clone


@pytest.mark.parametrize("name", ["get-model", "make-tiny-model", "evaluate", "data-stats", "download-data"])
def test_each_tool_is_a_subcommand(name, capsys):
    from shala_pl.__main__ import main

    with pytest.raises(SystemExit) as done:
        main([name, "--help"])
    assert done.value.code == 0 and "usage:" in capsys.readouterr().out


def test_a_tool_subcommand_returns_its_exit_code(tmp_path, capsys):
    from shala_pl.__main__ import main

    assert main(["make-tiny-model", str(tmp_path / "tiny")]) == 0
    assert (tmp_path / "tiny" / "config.json").is_file()
    assert main(["data-stats", "chaosnli_snli", str(tmp_path / "missing.jsonl")]) == 2
    assert "missing.jsonl" in capsys.readouterr().err
