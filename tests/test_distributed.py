"""Distributed training for real: a 2-process DDP ``fit`` on CPU (gloo) through the CLI, its validation against the
single-process values, the samplers, and the strategy config fragments. FSDP and DeepSpeed need GPUs (Lightning
refuses FSDP on CPU; DeepSpeed is not installed): those tests are skipped without CUDA.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

from shala_pl.data.sampling import EvalSampler, MarkPadding, ResumableDataLoader, TrainSampler, requires_lockstep

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
STRATEGIES = REPO / "configs" / "strategy"


# -- a probe the DDP subprocess loads through its config (class_path: tests.test_distributed.DDPProbe) ---------------
class DDPProbe(Callback):
    """Records, per rank: the seed rollouts start from, the training examples seen, the number of DDP gradient
    all-reduces (a comm hook counts buckets) per optimizer step, and each validation's metrics and example count."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.record = {"validations": [], "train_indices": [], "allreduces_per_step": [], "train_metrics": []}
        self._allreduces = 0
        self._val_examples = 0

    def on_train_start(self, trainer, pl_module):
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
        from torch.nn.parallel import DistributedDataParallel

        self.record["strategy"] = type(trainer.strategy).__name__
        if isinstance(trainer.model, DistributedDataParallel):
            def counting_allreduce(state, bucket):
                self._allreduces += 1
                return default_hooks.allreduce_hook(state, bucket)

            trainer.model.register_comm_hook(None, counting_allreduce)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0:
            self.record["rollout_seed"] = torch.initial_seed()
        self._allreduces, self._step_before = 0, trainer.global_step
        self.record["train_indices"] += batch.index.tolist()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        steps = trainer.global_step - self._step_before
        self.record["allreduces_per_step"].append(self._allreduces / max(steps, 1))
        self.record["train_metrics"].append({k: float(v) for k, v in trainer.callback_metrics.items()
                                             if k.startswith(("train/", "rollout/"))})

    def on_validation_epoch_start(self, trainer, pl_module):
        self._val_examples = 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self._val_examples += int((~batch.is_padding).sum())

    def on_validation_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        self.record["validations"].append({"examples": self._val_examples, "metrics": metrics})
        self.record["world_size"], self.record["rank"] = trainer.world_size, trainer.global_rank
        path = Path(self.out_dir) / f"rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.record))


DATA_ARGS = [
    # 70 examples: 56 train (28 per rank), 7 validation: shards of 4 and 3, batches of 2 -> [2, 2] and [2, 1]
    "--data.source_options", "{n_examples: 70, n_annotators: 5}",
    "--data.batch_size", "4",
    "--data.eval_batch_size", "2",
]


def _cli_args(subcommand: str, model_dir, root, extra=()) -> list[str]:
    return [subcommand, "--config", QUICKSTART, "--model.init_args.name_or_path", str(model_dir), *DATA_ARGS,
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root), *extra]


@pytest.fixture(scope="module")
def ddp_run(tiny_model_dir, tmp_path_factory):
    """``fit`` with 2 CPU processes (gloo) for 3 steps, micro_batches 2; validates before and after (uneven shards)."""
    root = tmp_path_factory.mktemp("ddp")
    probe_dir = root / "probe"
    probe_dir.mkdir()
    probe_config = root / "probe.yaml"
    probe_config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "tests.test_distributed.DDPProbe", "init_args": {"out_dir": str(probe_dir)}}]}}))
    command = [sys.executable, "-m", "shala_pl", *_cli_args("fit", tiny_model_dir, root, [
        "--config", str(STRATEGIES / "ddp.yaml"), "--config", str(probe_config),
        "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.max_steps", "3", "--trainer.val_check_interval", "1000", "--trainer.log_every_n_steps", "1",
        "--model.init_args.micro_batches", "2", "--model.init_args.rollout.num_generations", "4",
    ])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    probes = [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in (0, 1)]
    return root, probes


@pytest.mark.slow
def test_ddp_fit_two_processes_on_cpu(ddp_run):
    root, probes = ddp_run
    assert [p["strategy"] for p in probes] == ["DDPStrategy", "DDPStrategy"]
    assert [p["world_size"] for p in probes] == [2, 2]
    # the CLI's checkpoint callback always keeps a last checkpoint, at the last optimizer step
    checkpoint = torch.load(root / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == 3
    # rollouts: seeded differently on each rank, reproducibly (seed_everything 0 + rank)
    assert [p["rollout_seed"] for p in probes] == [0, 1]
    # every rank trains on its own shard of the seeded permutation
    seen = [set(p["train_indices"]) for p in probes]
    assert len(probes[0]["train_indices"]) == len(probes[1]["train_indices"]) == 3 * 4
    assert not seen[0] & seen[1]


@pytest.mark.slow
def test_ddp_micro_batches_all_reduce_once_per_optimizer_step(ddp_run):
    """micro_batches=2: the first backward runs under DDP.no_sync, so gradients are all-reduced once per step
    (the tiny model's gradients fit in one DDP bucket); syncing every micro-batch would count 2."""
    _, probes = ddp_run
    for probe in probes:
        assert probe["allreduces_per_step"] == [1.0, 1.0, 1.0]


@pytest.mark.slow
def test_ddp_validation_equals_single_process_with_uneven_shards(ddp_run, tiny_model_dir, tmp_path):
    from shala_pl.cli import cli_main

    root, probes = ddp_run
    before, after = probes[0]["validations"][0], probes[0]["validations"][-1]
    # 7 validation examples: rank 0 scores 4, rank 1 scores 3, none twice (Lightning's sampler would pad to 4 + 4)
    assert [p["validations"][0]["examples"] for p in probes] == [4, 3]
    assert len(probes[0]["validations"]) == 2  # before fit, after fit
    # both ranks hold the same synced values
    for r0, r1 in zip(probes[0]["validations"], probes[1]["validations"]):
        assert r0["metrics"] == pytest.approx(r1["metrics"], abs=1e-6, nan_ok=True)

    single_before = cli_main(_cli_args("validate", tiny_model_dir, tmp_path / "before",
                                       ["--trainer.accelerator", "cpu"])).trainer.callback_metrics
    single_after = cli_main(_cli_args("validate", tiny_model_dir, tmp_path / "after", [
        "--trainer.accelerator", "cpu", "--ckpt_path", str(root / "checkpoints" / "last.ckpt")])).trainer.callback_metrics
    for ddp, single in ((before, single_before), (after, single_after)):
        single = {k: float(v) for k, v in single.items() if k.startswith("val/")}
        assert set(ddp["metrics"]) == set(single) and single
        assert ddp["metrics"] == pytest.approx(single, abs=1e-5, nan_ok=True)
    # and training moved the model: the two validations differ
    assert before["metrics"] != pytest.approx(after["metrics"], abs=1e-6, nan_ok=True)


@pytest.mark.slow
def test_ddp_training_metrics_are_reduced_over_ranks(ddp_run):
    """Each rank samples its own answers, so its reward, KL, clip ratio and invalid rate differ; logged with
    sync_dist at log steps, both ranks hold the same (mean) values."""
    _, probes = ddp_run
    synced = ("train/reward_mean", "train/frac_reward_zero_std", "train/kl", "train/clip_ratio",
              "train/clip_ratio_low", "train/clip_ratio_high", "train/entropy", "rollout/invalid_rate",
              "train/loss", "train/reward_std")
    steps = [(r0, r1) for r0, r1 in zip(probes[0]["train_metrics"], probes[1]["train_metrics"])]
    assert len(steps) == 3
    for r0, r1 in steps:
        assert set(synced) <= set(r0)
        assert {k: r0[k] for k in synced} == pytest.approx({k: r1[k] for k in synced}, abs=1e-6)


# -- stops under DDP -----------------------------------------------------------------------------------------------
class StepProbe(Callback):
    """Writes each rank's process id when training starts and its optimizer step after each batch."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)

    def on_train_start(self, trainer, pl_module):
        (self.out_dir / f"rank{trainer.global_rank}.pid").write_text(str(os.getpid()))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        (self.out_dir / f"rank{trainer.global_rank}.step").write_text(str(trainer.global_step))


def _ddp_fit(model_dir, root, steps: int, *extra: str) -> subprocess.Popen:
    """The ``ddp_run`` fit (same data, micro-batches and answers per prompt), without the validation before it."""
    command = [sys.executable, "-m", "shala_pl", *_cli_args("fit", model_dir, root, [
        "--config", str(STRATEGIES / "ddp.yaml"), "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.max_steps", str(steps), "--trainer.val_check_interval", "1000", "--trainer.log_every_n_steps", "1",
        "--model.init_args.micro_batches", "2", "--model.init_args.rollout.num_generations", "4",
        "--validate_before_fit", "false", *extra])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


@pytest.mark.slow
@pytest.mark.parametrize("signalled", [(1,), (0, 1)], ids=["rank1", "both"])
def test_ddp_sigterm_to_any_rank_stops_every_rank_with_one_resumable_checkpoint(ddp_run, tiny_model_dir, tmp_path,
                                                                                signalled):
    """SIGTERM to rank 1 only (Lightning's handler hung both ranks there), or to both as SLURM does: both ranks
    stop at the same step boundary within 60 s, rank 0 exits 143 after one ``last.ckpt``, and continuing from it
    to step 3 gives the weights of the uninterrupted 3-step run (``ddp_run``)."""
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    probe_config = tmp_path / "probe.yaml"
    probe_config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "tests.test_distributed.StepProbe", "init_args": {"out_dir": str(probe_dir)}}]}}))
    root = tmp_path / "run"
    process = _ddp_fit(tiny_model_dir, root, 100000, "--config", str(probe_config))
    try:
        deadline = time.monotonic() + 300
        while not (probe_dir / "rank1.step").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (probe_dir / "rank1.step").exists(), process.communicate(timeout=10)[0][-3000:]
        pids = [int((probe_dir / f"rank{r}.pid").read_text()) for r in (0, 1)]
        for rank in signalled:
            os.kill(pids[rank], signal.SIGTERM)
        signalled_at = time.monotonic()
        output, _ = process.communicate(timeout=60)
        while _running(pids[1]) and time.monotonic() < signalled_at + 60:
            time.sleep(0.1)
        assert not _running(pids[1]), "rank 1 still running 60 s after the signal"
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 143, output[-4000:]
    folder = root / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == ["last.ckpt"]
    checkpoint = torch.load(folder / "last.ckpt", weights_only=True, map_location="cpu")
    step = checkpoint["global_step"]
    assert [int((probe_dir / f"rank{r}.step").read_text()) for r in (0, 1)] == [step, step]  # the same boundary
    assert f"interrupted by SIGTERM at step {step}: resumable checkpoint {folder / 'last.ckpt'}" in output
    assert checkpoint["callbacks"]["ReproducibleRNG"]["world_size"] == 2
    if signalled != (1,):
        return  # how the stop is resumed does not depend on which rank was signalled: checked once
    if step >= 3:
        pytest.skip(f"the signal landed after step {step}: nothing left to compare with the 3-step run")
    resumed = _ddp_fit(tiny_model_dir, root, 3, "--ckpt_path", "last")
    output, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, output[-4000:]
    straight = torch.load(ddp_run[0] / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    continued = torch.load(folder / "last.ckpt", weights_only=True, map_location="cpu")
    assert continued["global_step"] == 3
    for name, value in straight["state_dict"].items():
        torch.testing.assert_close(continued["state_dict"][name], value, atol=1e-6, rtol=0, msg=name)


# -- samplers ------------------------------------------------------------------------------------------------------
def test_eval_sampler_shards_without_duplicates():
    data = list(range(11))
    shards = [list(EvalSampler(data, num_replicas=3, rank=r)) for r in range(3)]
    assert shards == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    assert [len(EvalSampler(data, num_replicas=3, rank=r)) for r in range(3)] == [4, 4, 3]
    # lockstep (sharded strategies): equal lengths, the extra indices are >= N and marked as padding
    lockstep = [list(EvalSampler(data, num_replicas=3, rank=r, lockstep=True)) for r in range(3)]
    assert [len(s) for s in lockstep] == [4, 4, 4]
    assert sorted(i for s in lockstep for i in s if i < 11) == data
    padded = MarkPadding([{"x": i} for i in data])
    rows = [padded[i] for i in lockstep[2]]
    assert [r["is_padding"] for r in rows] == [False, False, False, True]
    assert not requires_lockstep(None)


def test_train_sampler_is_seeded_rank_disjoint_and_padded():
    data = list(range(10))
    samplers = [TrainSampler(data, num_replicas=3, rank=r, seed=7) for r in range(3)]
    shards = [list(s) for s in samplers]
    assert [len(s) for s in shards] == [4, 4, 4]  # every rank the same number of steps (DDP needs it)
    assert set(i for s in shards for i in s) == set(data)  # 12 slots: all 10 examples, 2 repeated
    assert shards == [list(TrainSampler(data, num_replicas=3, rank=r, seed=7)) for r in range(3)]  # reproducible
    samplers[0].set_epoch(1)
    assert list(samplers[0]) != shards[0]  # reshuffled each epoch
    samplers[0].set_epoch(0)
    samplers[0].start_at(2)
    assert list(samplers[0]) == shards[0][2:]  # skipping applies to one iteration only
    assert list(samplers[0]) == shards[0]


def test_resumable_loader_continues_mid_epoch_and_restarts_next_epoch():
    data = list(range(10))

    def loader():
        return ResumableDataLoader(data, batch_size=3, sampler=TrainSampler(data, num_replicas=1, rank=0, seed=1))

    full = [b.tolist() for b in loader()]
    first = loader()
    iterator = iter(first)
    consumed = [next(iterator).tolist(), next(iterator).tolist()]
    state = first.state_dict()
    assert state == {"epoch": 0, "batches": 2, "batch_size": 3, "num_replicas": 1, "seed": 1}
    assert all(isinstance(v, int) for v in state.values())  # weights_only-safe

    resumed = loader()
    resumed.load_state_dict(state)
    assert len(resumed) == 4  # Lightning counts the restored batches itself: the length stays the epoch's
    assert consumed + [b.tolist() for b in resumed] == full
    assert resumed.state_dict()["batches"] == 4
    # a checkpoint from a finished epoch does not skip anything in the next one
    later = loader()
    later.load_state_dict({**state, "batches": 4})
    later.sampler.set_epoch(1)
    assert sum(len(b) for b in later) == 10


# -- strategy fragments ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["ddp", "fsdp", "deepspeed_zero2", "deepspeed_zero3"])
def test_strategy_fragments_parse_and_document_the_launch(name):
    text = (STRATEGIES / f"{name}.yaml").read_text()
    assert "python -m shala_pl fit --config configs/quickstart.yaml --config configs/strategy/" in text
    assert "num_nodes" in text
    strategy = yaml.safe_load(text)["trainer"]["strategy"]
    assert strategy["class_path"].startswith("lightning.pytorch.strategies.")
    if name.startswith("deepspeed"):
        assert strategy["init_args"]["config"]["zero_optimization"]["stage"] == int(name[-1])
        assert strategy["init_args"]["config"]["gradient_clipping"] > 0
        return
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import Strategy

    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    built = parser.instantiate(parser.parse_object({"strategy": strategy})).strategy
    if name == "fsdp":
        from torch.distributed.fsdp.wrap import ModuleWrapPolicy
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

        policy = built.kwargs["auto_wrap_policy"]
        assert isinstance(policy, ModuleWrapPolicy) and Qwen2DecoderLayer in policy._module_classes
        assert Qwen2DecoderLayer in built._activation_checkpointing_kwargs["auto_wrap_policy"]._module_classes
        assert built.kwargs["use_orig_params"] is True
        assert requires_lockstep(built)
    else:
        assert not requires_lockstep(built)


# -- GPU only ----------------------------------------------------------------------------------------------------------
needs_two_gpus = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                                    reason="needs 2 CUDA GPUs (Lightning refuses FSDP on CPU; DeepSpeed is GPU-only)")


def _gpu_fit(model_dir, root, strategy: str, extra=()):
    command = [sys.executable, "-m", "shala_pl", *_cli_args("fit", model_dir, root, [
        "--config", str(STRATEGIES / f"{strategy}.yaml"), "--trainer.accelerator", "gpu", "--trainer.devices", "2",
        "--trainer.max_steps", "3", "--trainer.val_check_interval", "1000", *extra])]
    done = subprocess.run(command, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


@needs_two_gpus
@pytest.mark.slow
def test_fsdp_fit_on_two_gpus(tiny_model_dir, tmp_path):
    done = _gpu_fit(tiny_model_dir, tmp_path, "fsdp", ["--model.init_args.micro_batches", "2"])
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert checkpoint["global_step"] == 3
    # rank 0 holds a shard only: no hf_model is exported from it (tools/export_pretrained.py works from the checkpoint)
    assert not (tmp_path / "hf_model").exists() and "hf_model export skipped" in done.stdout + done.stderr


@needs_two_gpus
@pytest.mark.slow
@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_fit_on_two_gpus(tiny_model_dir, tmp_path, stage):
    pytest.importorskip("deepspeed")
    _gpu_fit(tiny_model_dir, tmp_path, f"deepspeed_zero{stage}", ["--trainer.precision", "bf16-mixed"])
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
