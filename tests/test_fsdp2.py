"""Sharded training for real: FSDP2 (``configs/strategy/fsdp2.yaml``, Lightning's ``ModelParallelStrategy``) with 2
CPU processes (gloo) through the CLI, as ``tests/test_distributed.py`` runs DDP.

Run A: label mode, full fine-tuning with a KL term (the frozen reference is sharded too), gradient checkpointing,
clipping active; 2 steps (one micro-batch: the rollout's forward is the loss's, then the reference's, then backward). Run B resumes A's checkpoint folder (``--ckpt_path last``) for a third
step in generate mode (sampling with sharded parameters, every rank in lockstep; 2 micro-batches, each a backward
through the sharded layers) and validates with both readouts.
The checkpoint, consolidated into one file, validates in a single process to the same values.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch.callbacks import Callback

REPO = Path(__file__).resolve().parent.parent
STRATEGY = str(REPO / "configs" / "strategy" / "fsdp2.yaml")
CLIP = 0.05  # run A: small enough that every step is clipped


def _full(tensor):
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _checksum(module) -> float:
    """A value of all full (gathered) parameters: a collective, called on every rank in the same order."""
    total = 0.0
    for i, p in enumerate(module.parameters()):
        full = _full(p.detach()).double()
        total += float(full.sum() + (i + 1) * (full**2).sum())
    return total


class FSDP2Probe(Callback):
    """Per rank: how the model is sharded, the global norm of the (clipped) full gradients next to the logged one,
    the weights at the start and end of training, and every validation's metrics."""

    def __init__(self, out_dir: str):
        self.out_dir = out_dir
        self.record = {"steps": [], "validations": []}

    def _dump(self, trainer):
        self.record["rank"], self.record["world_size"] = trainer.global_rank, trainer.world_size
        Path(self.out_dir, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.record))

    def on_train_start(self, trainer, pl_module):
        from torch.distributed.fsdp import FSDPModule
        from torch.distributed.tensor import DTensor, Shard

        trainable = pl_module.trainable_parameters()
        reference = getattr(pl_module, "reference", None)
        optimizer = trainer.optimizers[0]
        steps = [float(s["step"]) for s in optimizer.state.values() if "step" in s]
        self.record.update(
            strategy=type(trainer.strategy).__name__,
            global_step_at_start=trainer.global_step,
            trainable_dtensors=all(isinstance(p, DTensor) and p.placements == (Shard(0),) and p.device_mesh.size() == 2
                                   for p in trainable),
            policy_fsdp_modules=sum(isinstance(m, FSDPModule) for m in pl_module.policy.modules()),
            reference_sharded=reference is not None and isinstance(reference, FSDPModule),
            lockstep=pl_module.needs_synced_gpus,
            shares_label_forward=pl_module.shares_label_forward,
            optimizer_steps_at_start=sorted(set(steps)),
            weights_at_start=_checksum(pl_module.policy),
        )
        self._dump(trainer)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        # after the module clipped: the full gradients, gathered, and their norm computed as one process would
        grads = [_full(p.grad) for p in pl_module.trainable_parameters() if p.grad is not None]
        local = [p.grad.to_local() for p in pl_module.trainable_parameters() if p.grad is not None]
        self._clipped_norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])))
        self._shard_norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in local])))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "rollout/"))}
        self.record["steps"].append({"global_step": trainer.global_step, "grad_norm": metrics["train/grad_norm"],
                                     "clipped_full_norm": self._clipped_norm, "shard_norm": self._shard_norm,
                                     "metrics": metrics})
        self._dump(trainer)

    def on_train_end(self, trainer, pl_module):
        self.record["weights_at_end"] = _checksum(pl_module.policy)
        self.record["global_step_at_end"] = trainer.global_step
        self._dump(trainer)

    def on_validation_end(self, trainer, pl_module):
        self.record["validations"].append({k: float(v) for k, v in trainer.callback_metrics.items()
                                           if k.startswith("val/")})
        self._dump(trainer)


DATA_ARGS = [
    # 70 examples: 56 train (28 per rank), 7 validation: shards of 4 and 3, the short one topped up (lockstep)
    "--data.source_options", "{n_examples: 70, n_annotators: 5}", "--data.batch_size", "4",
    "--data.eval_batch_size", "2",
]
COMMON = ["--model.init_args.rollout.num_generations", "4", "--model.init_args.loss.beta", "0.1",
          "--model.init_args.gradient_checkpointing", "true"]


def _cli_args(subcommand: str, model_dir, root, extra=()) -> list[str]:
    return [subcommand, "--config", str(REPO / "configs" / "quickstart.yaml"),
            "--model.init_args.name_or_path", str(model_dir), *DATA_ARGS, *COMMON,
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", str(root), *extra]


def _fit(model_dir, root, probe_dir, extra) -> subprocess.CompletedProcess:
    probe_dir.mkdir()
    probe_config = probe_dir / "probe.yaml"
    probe_config.write_text(yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "tests.test_fsdp2.FSDP2Probe", "init_args": {"out_dir": str(probe_dir)}}]}}))
    command = [sys.executable, "-m", "shala_pl", *_cli_args("fit", model_dir, root, [
        "--config", STRATEGY, "--config", str(probe_config), "--trainer.accelerator", "cpu",
        "--trainer.devices", "2", "--trainer.val_check_interval", "1000", "--trainer.log_every_n_steps", "1",
        "--validate_before_fit", "false", *extra])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    return done


def _probes(probe_dir) -> list[dict]:
    return [json.loads((probe_dir / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.fixture(scope="module")
def fsdp2_runs(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("fsdp2")
    run_a = _fit(tiny_model_dir, root, root / "probe_a", [
        "--trainer.max_steps", "2", "--model.init_args.micro_batches", "1",
        "--model.init_args.gradient_clip_val", str(CLIP)])
    run_b = _fit(tiny_model_dir, root, root / "probe_b", [
        "--trainer.max_steps", "3", "--ckpt_path", "last", "--model.init_args.gradient_clip_val", "1000",
        "--model.init_args.micro_batches", "2",
        "--model.init_args.rollout.mode", "generate", "--model.init_args.rollout.max_new_tokens", "4",
        "--model.init_args.readouts", "[label_probs, sampling]", "--model.init_args.sampling.num_samples", "4",
        "--model.init_args.sampling.max_new_tokens", "4"])
    return root, _probes(root / "probe_a"), _probes(root / "probe_b"), run_a.stdout + run_a.stderr


@pytest.mark.slow
def test_fsdp2_shards_policy_and_reference_on_two_cpu_processes(fsdp2_runs):
    root, probes_a, probes_b, output = fsdp2_runs
    for probe in probes_a + probes_b:
        assert probe["strategy"] == "ModelParallelStrategy" and probe["world_size"] == 2
        assert probe["trainable_dtensors"]  # every trainable parameter a DTensor sharded over the 2 ranks
        assert probe["policy_fsdp_modules"] == 3  # 2 decoder layers, then the root (tied embeddings in it)
        assert probe["reference_sharded"]  # full fine-tuning with beta > 0: the frozen copy sharded the same way
        assert probe["lockstep"]  # generation keeps all ranks in step
    # the checkpoint is a folder (one shard file per rank + meta.pt); no hf_model is exported from a shard
    assert sorted(p.name for p in (root / "checkpoints" / "last.ckpt").iterdir() if p.suffix == ".distcp") == \
        ["__0_0.distcp", "__1_0.distcp"]
    assert not (root / "hf_model").exists() and "hf_model export skipped" in output
    assert "exported model:   - (skipped under a sharded strategy)" in output


@pytest.mark.slow
def test_fsdp2_clips_with_the_global_norm_of_dtensor_gradients(fsdp2_runs):
    _, probes_a, probes_b, _ = fsdp2_runs
    for probes, clip in ((probes_a, CLIP), (probes_b, None)):
        steps = list(zip(probes[0]["steps"], probes[1]["steps"]))
        assert steps
        for r0, r1 in steps:
            # the logged norm: the same on both ranks (all shards' gradients, not this rank's)
            assert r0["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-6)
            assert r0["clipped_full_norm"] == pytest.approx(r1["clipped_full_norm"], rel=1e-6)
            assert r0["shard_norm"] < r0["clipped_full_norm"] and r0["shard_norm"] != pytest.approx(r1["shard_norm"])
            norm = r0["grad_norm"]
            if clip is None:  # not clipped: the norm of the full gradients computed in one process
                assert r0["clipped_full_norm"] == pytest.approx(norm, rel=1e-5)
            else:  # clipped by the global norm: the full gradients' norm is the threshold
                assert norm > clip and r0["clipped_full_norm"] == pytest.approx(clip, rel=1e-4)


@pytest.mark.slow
def test_fsdp2_checkpoint_folder_resumes(fsdp2_runs):
    _, probes_a, probes_b, _ = fsdp2_runs
    for a, b in zip(probes_a, probes_b):
        assert a["global_step_at_end"] == 2 and [s["global_step"] for s in a["steps"]] == [1, 2]
        assert b["global_step_at_start"] == 2 and b["global_step_at_end"] == 3
        assert [s["global_step"] for s in b["steps"]] == [3]
        assert b["optimizer_steps_at_start"] == [2.0]  # AdamW's moments and step counts restored
        assert b["weights_at_start"] == pytest.approx(a["weights_at_end"], rel=1e-12)
        assert b["weights_at_end"] != pytest.approx(b["weights_at_start"], rel=1e-9)  # the third step trained
    assert all(a["shares_label_forward"] for a in probes_a)  # label mode: one policy forward per step
    # run B is the generate-mode rollout with sharded parameters
    metrics = probes_b[0]["steps"][0]["metrics"]
    assert "rollout/completion_len" in metrics and 0 < metrics["rollout/completion_len"] <= 4


@pytest.mark.slow
def test_fsdp2_validation_equals_single_process(fsdp2_runs, tiny_model_dir, tmp_path):
    from shala_pl.cli import cli_main
    from shala_pl.consolidate import consolidate

    root, probes_a, probes_b, _ = fsdp2_runs
    for probes in (probes_a, probes_b):  # both ranks hold the same synced values
        assert len(probes[0]["validations"]) == len(probes[1]["validations"]) == 1  # after fit
        for r0, r1 in zip(probes[0]["validations"], probes[1]["validations"]):
            assert r0 == pytest.approx(r1, abs=1e-6, nan_ok=True)
    after = probes_b[0]["validations"][-1]  # the validation after run B's fit, at step 3
    assert any(k.startswith("val/sampling/") for k in after)  # the sampling readout ran with sharded parameters

    single_file = consolidate(root / "checkpoints" / "last.ckpt", tmp_path / "last.consolidated.ckpt")
    assert torch.load(single_file, weights_only=True)["global_step"] == 3
    single = cli_main(_cli_args("validate", tiny_model_dir, tmp_path / "single", [
        "--trainer.accelerator", "cpu", "--ckpt_path", str(single_file)])).trainer.callback_metrics
    # the run's readouts come with the checkpoint's hyper-parameters; the exact readout is compared (the sampling
    # readout seeds each batch by its first example, and the batches differ between 1 and 2 processes)
    single = {k: float(v) for k, v in single.items() if k.count("/") == 1}  # val/<metric>: the exact readout's
    sharded = {k: v for k, v in after.items() if k.count("/") == 1 and k.startswith("val/")}
    assert set(sharded) == set(single) and single
    assert sharded == pytest.approx(single, abs=1e-5, nan_ok=True)


def test_fsdp2_fragment_is_model_parallel_strategy_in_lockstep():
    from jsonargparse import ArgumentParser
    from lightning.pytorch.strategies import ModelParallelStrategy, Strategy

    from shala_pl.data.sampling import requires_lockstep

    text = Path(STRATEGY).read_text()
    assert "python -m shala_pl fit --config configs/quickstart.yaml --config configs/strategy/fsdp2.yaml" in text
    assert "num_nodes" in text and "shala_pl.consolidate" in text
    parser = ArgumentParser()
    parser.add_argument("--strategy", type=Strategy)
    strategy = yaml.safe_load(text)["trainer"]["strategy"]
    built = parser.instantiate(parser.parse_object({"strategy": strategy})).strategy
    assert isinstance(built, ModelParallelStrategy)
    assert (built._data_parallel_size, built._tensor_parallel_size) == (2, 1)
    assert requires_lockstep(built)  # generation and evaluation in lockstep under FSDP2


# -- the module's sharding and scoring paths under torch.distributed directly: LoRA, gradient checkpointing ------------
def _lora_worker(rank: int, world: int, port: int, model_dir: str, out_dir: str) -> None:
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    from shala_pl.models.loading import LoraSettings, load_causal_lm
    from shala_pl.models.scoring import label_log_probs, shared_prompt_completion_log_probs
    from shala_pl.models.sharding import fully_shard_decoder
    from shala_pl.rl.rollout import sample_completions

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)  # the same LoRA initialisation on both ranks
    model = load_causal_lm(model_dir, LoraSettings(r=4, alpha=8), gradient_checkpointing=True, dtype="float32")
    model.train()
    for name, p in model.named_parameters():  # LoRA B starts at 0: give the adapter a non-trivial value
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.02)
    generator = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    prompts = torch.randint(3, vocab, (4, 6), generator=generator)  # 2 prompts per rank
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[1, :2] = 0  # left padding
    completions = torch.randint(3, vocab, (8, 3), generator=generator)  # 2 answers per prompt
    completion_mask = torch.ones_like(completions)

    def loss_of(module, rows: slice) -> torch.Tensor:
        answers = slice(rows.start * 2, rows.stop * 2)
        token_logp = shared_prompt_completion_log_probs(module, prompts[rows], prompt_mask[rows],
                                                        completions[answers], completion_mask[answers])
        return -token_logp.mean() - label_log_probs(module, prompts[rows], prompt_mask[rows], [[5], [6], [7]])[:, 0].mean()

    import copy

    single = copy.deepcopy(model)  # one process, the whole batch
    loss_of(single, slice(0, 4)).backward()
    single_grads = {n: p.grad for n, p in single.named_parameters() if p.requires_grad}
    single_norm = float(torch.nn.utils.clip_grad_norm_([p for p in single.parameters() if p.requires_grad], 1e9))

    fully_shard_decoder(model, init_device_mesh("cpu", (world,)))
    loss_of(model, slice(2 * rank, 2 * rank + 2)).backward()  # this rank's half; FSDP2 averages over ranks
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    norm = torch.nn.utils.clip_grad_norm_([p for _, p in trainable], 1e9).full_tensor()
    max_diff = max(float((p.grad.full_tensor() - single_grads[n]).abs().max()) for n, p in trainable)
    # sampling with sharded parameters: different prompts per rank, every rank max_new_tokens forwards (lockstep)
    with torch.no_grad():
        tokens = sample_completions(model.eval(), prompts[2 * rank : 2 * rank + 2], prompt_mask[2 * rank : 2 * rank + 2],
                                    2, 5, eos_token_id=[rank + 3], pad_token_id=0, synced_gpus=True)
    Path(out_dir, f"lora{rank}.json").write_text(json.dumps({
        "sharded_norm": float(norm), "single_norm": single_norm, "max_grad_diff": max_diff,
        "lora_params": sum("lora_" in n for n, _ in trainable), "trainable": len(trainable),
        "sampled_shape": list(tokens.shape)}))
    dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp2_lora_with_checkpointing_gradients_equal_single_process(tiny_model_dir, tmp_path):
    """A peft model sharded by the module's own ``fully_shard_decoder`` (2 gloo processes), scored through the
    shared-prefix caches under gradient checkpointing: the gathered gradients equal one process's on the whole
    batch, so does the global norm ``clip_grad_norm_`` returns, and sampling runs in lockstep."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_lora_worker, args=(2, port, str(tiny_model_dir), str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    results = [json.loads((tmp_path / f"lora{r}.json").read_text()) for r in (0, 1)]
    for result in results:
        assert result["lora_params"] == result["trainable"] > 0  # only the adapter trains
        assert result["max_grad_diff"] < 1e-6
        assert result["sharded_norm"] == pytest.approx(result["single_norm"], rel=1e-5)
        assert result["sampled_shape"] == [4, 5]  # 2 prompts x 2 answers, all max_new_tokens steps
    assert results[0]["sharded_norm"] == results[1]["sharded_norm"]


def test_sharded_checkpoint_folder_outside_fsdp2_says_how_to_consolidate(tiny_model_dir, tmp_path, capsys):
    from shala_pl.__main__ import main

    folder = tmp_path / "checkpoints" / "last.ckpt"
    folder.mkdir(parents=True)
    (folder / "meta.pt").write_bytes(b"")
    assert main(_cli_args("validate", tiny_model_dir, tmp_path, ["--ckpt_path", str(folder)])) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"shala_pl: error: --ckpt_path {folder} is a sharded checkpoint folder (configs/strategy/fsdp2.yaml): load "
        f"it with that strategy, or make one file with `python -m shala_pl.consolidate {folder}` and pass that")


def test_rng_state_restores_from_a_gathered_row():
    """Checkpoints hold every rank's RNG state stacked; rank 1's row is a view at a storage offset, on which
    torch.set_rng_state segfaults (torch 2.13): a resume on 2 processes crashed rank 1 before the fix."""
    from shala_pl.callbacks import capture_rng_state, restore_rng_state

    states = [capture_rng_state()]
    expected = torch.rand(3)
    gathered = {k: torch.stack([v, v]) for k, v in states[0].items()}
    restore_rng_state({k: v[1] for k, v in gathered.items()})
    assert torch.equal(torch.rand(3), expected)
