"""Physical bounds of a training step's phases, measured on this machine, for ``tools/bench_throughput.py``.

A phase's *work* is counted from the model's shapes and the batch's token counts; its *bound* is the time the same
work takes in isolation on this machine, in the same process and dtype:

- FLOP-bound phases (scoring forward, backward, evaluation): the decoder's linear layers and the LM head as plain
  matmuls at the model's own shapes, with the phase's row count, timed (``time_linears``). Model FLOPs count the
  linear layers only (2 x rows x in x out per matmul; attention scores, norms and activations are left out: about
  3% more at SmolLM2's ~100-token contexts).
- decoding: each new token reads every weight once, so the bound is the weight bytes over a measured read
  bandwidth (``read_bandwidth``: the sum of a 256 MiB tensor); with 32 rows per step it is compute-bound as well,
  and both bounds are given.
- the optimizer step: fused AdamW reads parameter, gradient and both moments and writes three of them
  (28 bytes per fp32 parameter) against a measured copy bandwidth.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

ADAMW_BYTES_PER_PARAM = 28  # read p, g, m, v and write p, m, v: 7 fp32 values


@dataclass(frozen=True)
class ModelShape:
    layers: int
    hidden: int
    kv: int  # key/value projection width: kv heads x head dim
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, config) -> "ModelShape":
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        return cls(config.num_hidden_layers, config.hidden_size, kv_heads * head_dim, config.intermediate_size,
                   config.vocab_size)

    def layer_linears(self) -> list[tuple[int, int]]:
        """(in, out) of one decoder layer's matmuls: q, k, v, o, gate, up, down."""
        d, kv, ff = self.hidden, self.kv, self.intermediate
        return [(d, d), (d, kv), (d, kv), (d, d), (d, ff), (d, ff), (ff, d)]

    def forward_flops(self, rows: int, head_rows: int) -> float:
        """Matmul FLOPs of a forward over ``rows`` tokens with the LM head on ``head_rows`` of them."""
        per_row = sum(2 * i * o for i, o in self.layer_linears()) * self.layers
        return float(per_row * rows + 2 * self.hidden * self.vocab * head_rows)


def median_time(fn, repeats: int = 3) -> float:
    """Median seconds of ``repeats`` calls of ``fn`` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_linears(shape: ModelShape, rows: int, head_rows: int, dtype, backward: bool = False,
                 weight_grads: bool = True) -> float:
    """Seconds for the forward matmuls of all layers over ``rows`` tokens plus the LM head over ``head_rows``;
    ``backward``: the backward's matmuls instead (input gradients, and weight gradients when ``weight_grads``)."""
    import torch

    def cost(i: int, o: int, n: int) -> float:
        if n == 0:
            return 0.0
        x, w, gy = torch.randn(n, i, dtype=dtype), torch.randn(o, i, dtype=dtype), torch.randn(n, o, dtype=dtype)
        if not backward:
            return median_time(lambda: torch.nn.functional.linear(x, w))
        if weight_grads:
            return median_time(lambda: (gy @ w, gy.t() @ x))
        return median_time(lambda: gy @ w)

    with torch.no_grad():
        layer = sum(cost(i, o, rows) for i, o in shape.layer_linears())
        return layer * shape.layers + cost(shape.hidden, shape.vocab, head_rows)


def read_bandwidth(mib: int = 256) -> float:
    """Bytes per second read by a reduction over a tensor far larger than the caches."""
    import torch

    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    return x.numel() * 4 / median_time(lambda: x.sum(), repeats=5)


def copy_bandwidth(mib: int = 256) -> float:
    """Bytes per second moved (read + written) by a copy between two tensors far larger than the caches."""
    import torch

    src = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    return 2 * src.numel() * 4 / median_time(lambda: dst.copy_(src), repeats=5)


def flop_row(phase: str, seconds: float, flops: float, bound_s: float) -> dict:
    return {"phase": phase, "seconds": seconds, "work": flops, "unit": "GFLOP/s", "rate": flops / seconds / 1e9,
            "bound_rate": flops / bound_s / 1e9, "bound_s": bound_s, "of_bound": bound_s / seconds}


def bytes_row(phase: str, seconds: float, num_bytes: float, bandwidth: float, unit: str = "GB/s") -> dict:
    bound_s = num_bytes / bandwidth
    return {"phase": phase, "seconds": seconds, "work": num_bytes, "unit": unit, "rate": num_bytes / seconds / 1e9,
            "bound_rate": bandwidth / 1e9, "bound_s": bound_s, "of_bound": bound_s / seconds}
