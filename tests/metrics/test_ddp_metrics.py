"""Synced values under a real 2-process gloo run equal the single-process values on all the data.

Rank 0 sees 7 examples in three updates, rank 1 sees 4 in one, so the shards and the update counts differ.
"""

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from shala_pl.metrics import build_eval_metrics

K = 3
SHARDS = {0: [(0, 3), (3, 6), (6, 7)], 1: [(7, 11)]}  # rank -> update batches as [start, stop) slices


def full_data() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = 11
    human = torch.softmax(2 * torch.randn(n, K, generator=g), dim=-1)
    human[0] = torch.tensor([1.0, 0.0, 0.0])
    human[8] = torch.tensor([1 / 3, 1 / 3, 1 / 3])
    probs = torch.softmax(2 * torch.randn(n, K, generator=g), dim=-1)
    probs[3] = torch.tensor([0.0, 0.5, 0.5])
    return {
        "probs": probs,
        "human": human,
        "majority": human.argmax(-1),
        "multilabel_target": (human >= 0.3).long(),
    }


def metrics_on(batches: list[tuple[int, int]]):
    data = full_data()
    metrics = build_eval_metrics(K, multilabel=True, entropy_bins=3)
    for start, stop in batches:
        metrics.update(**{name: value[start:stop] for name, value in data.items()})
    return metrics


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_rank(rank: int, world_size: int, port: int, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        metrics = metrics_on(SHARDS[rank])
        synced = {name: value.item() for name, value in metrics.compute().items()}
        # after compute each rank is back to its own counts and can keep accumulating
        local_count = metrics["jsd"].example_count.item()
        torch.save({"synced": synced, "local_count": local_count}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_sync_equals_single_process(tmp_path):
    mp.spawn(run_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    expected = {name: value.item() for name, value in metrics_on([(0, 11)]).compute().items()}
    assert sum(expected[f"n_bin{i}"] for i in range(3)) == 11
    for rank in (0, 1):
        result = torch.load(tmp_path / f"rank{rank}.pt")
        assert set(result["synced"]) == set(expected)
        for name, value in expected.items():
            assert result["synced"][name] == pytest.approx(value, abs=1e-6, nan_ok=True), name
        assert result["local_count"] == sum(stop - start for start, stop in SHARDS[rank])


def test_the_shards_alone_give_different_values():
    # Guards the test above against data on which every shard happens to score like the whole.
    whole = metrics_on([(0, 11)]).compute()
    rank0 = metrics_on(SHARDS[0]).compute()
    assert any(abs(whole[name].item() - rank0[name].item()) > 1e-3 for name in ("jsd", "kl", "f1_macro"))
