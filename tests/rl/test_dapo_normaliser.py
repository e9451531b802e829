"""``dapo`` divides the summed token losses by the answer tokens of the whole optimizer batch (all micro-batches,
all ranks): the gradient does not depend on how the batch is split."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.rl.dapo_probe import dapo_gradients

PROBE = Path(__file__).with_name("dapo_probe.py")
REPO = PROBE.parent.parent.parent


def _assert_same_gradients(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and a
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-7, msg=name)


@pytest.fixture(scope="module")
def one_process(tiny_model_dir, tmp_path_factory) -> dict:
    path = tmp_path_factory.mktemp("dapo") / "single.pt"
    dapo_gradients(str(tiny_model_dir), str(path), devices=1, micro_batches=1)
    return torch.load(path)


def test_dapo_gradient_is_the_same_with_four_micro_batches(one_process, tiny_model_dir, tmp_path):
    dapo_gradients(str(tiny_model_dir), str(tmp_path / "micro.pt"), devices=1, micro_batches=4)
    _assert_same_gradients(one_process, torch.load(tmp_path / "micro.pt"))


@pytest.mark.slow
def test_dapo_gradient_is_the_same_on_two_ddp_processes(one_process, tiny_model_dir, tmp_path):
    out = tmp_path / "ddp.pt"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, str(PROBE), str(tiny_model_dir), str(out), "2", "1"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    _assert_same_gradients(one_process, torch.load(out))
